//! `sslpipe feast`: the feature repository it writes for a real feature output, and what it
//! refuses. (The round trip through the Feast SDK itself is `scripts/dev/feast-roundtrip.sh`.)

use std::process::Command;

use crate::support::{pipeline, run_cli, synthetic, text};

/// Embeds three synthetic images with `embedding_type`; returns the feature folder.
fn features(root: &std::path::Path, embedding_type: &str) -> std::path::PathBuf {
    let images = root.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for i in 0..3 {
        synthetic(64, 48, i)
            .save(images.join(format!("img{i}.png")))
            .unwrap();
    }
    let out = root.join(format!("features-{embedding_type}"));
    let p = pipeline(
        root,
        &format!("{embedding_type}.toml"),
        &format!(
            "[source]\nkind = \"dir\"\npath = \"{}\"\n[decode]\nsize = 32\n[model]\nkind = \"builtin\"\nwidth = 8\n[output]\ndir = \"{}\"\nembedding_type = \"{embedding_type}\"\n",
            images.display(),
            out.display()
        ),
    );
    let run = run_cli(&["run", "-q", p.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    out
}

#[test]
fn a_repository_names_the_features_with_an_explicit_schema() {
    let t = tempfile::tempdir().unwrap();
    for embedding_type in ["fixed_size_list", "list"] {
        let dir = features(t.path(), embedding_type);
        let repo = t.path().join(format!("repo-{embedding_type}"));
        let out = run_cli(&[
            "feast",
            dir.to_str().unwrap(),
            "--out",
            repo.to_str().unwrap(),
            "--view",
            "photos_v1",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let yaml = std::fs::read_to_string(repo.join("feature_store.yaml")).unwrap();
        assert!(
            yaml.contains("project: sslpipe\n") && yaml.contains("type: sqlite"),
            "{yaml}"
        );
        let py = std::fs::read_to_string(repo.join("photos_v1.py")).unwrap();
        let source = std::path::absolute(&dir).unwrap();
        for expected in [
            format!("path={:?},", source.to_str().unwrap()),
            "timestamp_field=\"event_timestamp\"".to_string(),
            "join_keys=[\"key\"]".to_string(),
            "Field(name=\"embedding\", dtype=Array(Float32))".to_string(),
            "name=\"photos_v1\"".to_string(),
        ] {
            assert!(py.contains(&expected), "{expected} missing from\n{py}");
        }
        assert!(repo.join("data").is_dir());
        // Valid Python (the definitions are imported by `feast apply`).
        let parsed = Command::new("python3")
            .args(["-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())"])
            .arg(repo.join("photos_v1.py"))
            .status()
            .unwrap();
        assert!(parsed.success());
    }
}

#[test]
fn what_is_not_a_feature_output_or_not_a_name_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let dir = features(t.path(), "list");
    let repo = t.path().join("repo");
    let bad_name = run_cli(&[
        "feast",
        dir.to_str().unwrap(),
        "--out",
        repo.to_str().unwrap(),
        "--entity",
        "my-image",
    ]);
    assert_eq!(bad_name.status.code(), Some(1));
    assert!(text(&bad_name.stderr).contains("Python identifier"));
    assert!(!repo.exists(), "nothing written for a refused name");

    // A Parquet file without the feature columns (a pretext dataset export).
    let export = t.path().join("export");
    let p = pipeline(
        t.path(),
        "export.toml",
        &format!(
            "[source]\nkind = \"dir\"\npath = \"{}\"\n[decode]\nsize = 32\n[pretext]\nkind = \"rotation\"\n[export]\n[output]\ndir = \"{}\"\n",
            t.path().join("images").display(),
            export.display()
        ),
    );
    assert!(
        run_cli(&["run", "-q", p.to_str().unwrap()])
            .status
            .success()
    );
    let not_features = run_cli(&[
        "feast",
        export.to_str().unwrap(),
        "--out",
        repo.to_str().unwrap(),
    ]);
    assert_eq!(not_features.status.code(), Some(1));
    let err = text(&not_features.stderr);
    assert!(
        err.contains("not an sslpipe feature file") && err.contains("embedding"),
        "{err}"
    );
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let none = run_cli(&[
        "feast",
        empty.to_str().unwrap(),
        "--out",
        repo.to_str().unwrap(),
    ]);
    assert!(text(&none.stderr).contains("no part-*.parquet files"));
}
