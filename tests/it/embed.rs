//! End-to-end embedding runs: a folder of mixed, partly broken images → Parquet features.

use std::path::Path;

use crate::support::*;

/// A small, fast pipeline over `images`, writing to `out`.
fn small_pipeline(dir: &Path, images: &Path, out: &Path, extra: &str) -> std::path::PathBuf {
    pipeline(
        dir,
        "p.toml",
        &format!(
            r#"
[pipeline]
workers = 2
queue = 4
{extra}
[source]
kind = "dir"
path = "{}"

[decode]
size = 32

[model]
kind = "builtin"
width = 8
stages = [1, 1]
embedding_dim = 32

[embed]
batch_size = 4

[output]
dir = "{}"
rows_per_file = 7
"#,
            images.display(),
            out.display()
        ),
    )
}

fn summary_json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "run failed: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

#[test]
fn embeds_a_mixed_folder_and_lists_the_broken_files() {
    let t = tempfile::tempdir().unwrap();
    let (images, out) = (t.path().join("images"), t.path().join("out"));
    let (good, broken) = mixed_folder(&images);
    let p = small_pipeline(t.path(), &images, &out, "");
    let summary = summary_json(&run_cli(&["run", "--json", "-q", p.to_str().unwrap()]));
    assert_eq!(summary["images"]["read"], good.len() + broken.len());
    assert_eq!(summary["images"]["ok"], good.len());
    assert_eq!(summary["images"]["failed"], broken.len());

    let rows = read_features(&out);
    let mut keys: Vec<String> = rows.iter().map(|r| r.key.clone()).collect();
    keys.sort();
    assert_eq!(keys, good, "one row per good image, keyed by relative path");
    let model_id = sslpipe::model::model_id(&std::fs::read(out.join("encoder.onnx")).unwrap());
    for r in &rows {
        assert_eq!(r.embedding.len(), 32);
        assert!(
            r.embedding.iter().all(|v| v.is_finite()),
            "{}: non-finite embedding",
            r.key
        );
        assert_eq!(
            r.model_id, model_id,
            "model_id is the hash of the encoder file"
        );
        assert_eq!(r.pretext, "none");
    }
    let a = rows.iter().find(|r| r.key == "a.jpg").unwrap();
    assert_eq!(
        (a.width, a.height),
        (120, 90),
        "source size, not working size"
    );
    let distinct = rows
        .iter()
        .filter(|r| r.embedding != rows[0].embedding)
        .count();
    assert!(
        distinct >= rows.len() - 1,
        "different images give different embeddings"
    );

    let errors = read_errors(&out);
    let mut error_keys: Vec<String> = errors.iter().map(|e| e.0.clone()).collect();
    error_keys.sort();
    assert_eq!(error_keys, broken);
    assert!(
        errors
            .iter()
            .all(|(_, stage, reason)| stage == "decode" && !reason.is_empty())
    );

    let names = file_names(&out);
    assert!(
        names.iter().all(|n| !n.ends_with(".tmp")),
        "no temporary files left: {names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| n.starts_with("part-")).count(),
        3,
        "15 rows at 7 per file: {names:?}"
    );
}

#[test]
fn reruns_are_bit_identical_whatever_the_thread_count() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    mixed_folder(&images);
    let out1 = t.path().join("out1");
    let p = small_pipeline(t.path(), &images, &out1, "");
    summary_json(&run_cli(&["run", "--json", "-q", p.to_str().unwrap()]));
    let first = read_features(&out1);

    let out2 = t.path().join("out2");
    let p = small_pipeline(t.path(), &images, &out2, "");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("workers = 2", "workers = 1");
    std::fs::write(&p, text).unwrap();
    summary_json(&run_cli(&["run", "--json", "-q", p.to_str().unwrap()]));
    let second = read_features(&out2);
    assert_eq!(first, second, "same rows, same order, same bits");
}

#[test]
fn a_user_onnx_file_gives_the_same_features_as_the_builtin_it_came_from() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    mixed_folder(&images);
    let out1 = t.path().join("out1");
    let p = small_pipeline(t.path(), &images, &out1, "");
    summary_json(&run_cli(&["run", "--json", "-q", p.to_str().unwrap()]));
    let builtin = read_features(&out1);

    let out2 = t.path().join("out2");
    let p = pipeline(
        t.path(),
        "onnx.toml",
        &format!(
            "[source]\nkind = \"dir\"\npath = \"{}\"\n[decode]\nsize = 32\n[model]\nkind = \"onnx\"\npath = \"{}\"\n[embed]\nbatch_size = 4\n[output]\ndir = \"{}\"\n",
            images.display(),
            out1.join("encoder.onnx").display(),
            out2.display()
        ),
    );
    let v = run_cli(&["validate", p.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v.stderr));
    summary_json(&run_cli(&["run", "--json", "-q", p.to_str().unwrap()]));
    assert_eq!(read_features(&out2), builtin);
    assert!(
        !out2.join("encoder.onnx").exists(),
        "a user model is not copied"
    );
}

/// A pipeline body embedding `images` at 32 px with a two-stage, width-8 built-in encoder whose
/// `[model]` section ends with `model` (line 10 is its first line).
fn builtin_body(images: &Path, model: &str, out: &Path) -> String {
    format!(
        "[source]\nkind = \"dir\"\npath = \"{}\"\n[decode]\nsize = 32\n[model]\nkind = \"builtin\"\nwidth = 8\nstages = [1, 1]\n{model}[output]\ndir = \"{}\"\n",
        images.display(),
        out.display()
    )
}

#[test]
fn stage_features_concatenate_every_stage_and_refuse_an_embedding_dim() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    mixed_folder(&images);
    let body = |extra: &str, out: &Path| {
        builtin_body(&images, &format!("features = \"stages\"\n{extra}"), out)
    };
    let out = t.path().join("out");
    let p = pipeline(t.path(), "stages.toml", &body("", &out));
    summary_json(&run_cli(&["run", "--json", "-q", p.to_str().unwrap()]));
    // 32 px: stage 0 is 8x8 (8 channels), stage 1 4x4 (16): 2x2 cells of each.
    let rows = read_features(&out);
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r.embedding.len() == 4 * 8 + 4 * 16));

    let p = pipeline(t.path(), "bad.toml", &body("embedding_dim = 64\n", &out));
    let v = run_cli(&["validate", p.to_str().unwrap()]);
    assert_eq!(v.status.code(), Some(2));
    let err = text(&v.stderr);
    assert!(
        err.contains("bad.toml:11: model.embedding_dim: with features = \"stages\""),
        "{err}"
    );
}

#[test]
fn stem_and_grid_shape_the_stage_features() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    mixed_folder(&images);
    let out = t.path().join("out");
    let model = "stem = \"strided\"\nfeatures = \"stages\"\ngrid = 4\n";
    let p = pipeline(t.path(), "grid.toml", &builtin_body(&images, model, &out));
    summary_json(&run_cli(&["run", "--json", "-q", p.to_str().unwrap()]));
    // 32 px through the strided stem: stage 0 is 16x16 (8 channels), stage 1 8x8 (16): 4x4 cells.
    let rows = read_features(&out);
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r.embedding.len() == 16 * 8 + 16 * 16));

    // A grid only pools stage features: with "last" it is refused at its line; so is an unknown
    // stem, named by its key.
    for (file, model, expected) in [
        (
            "bad.toml",
            "grid = 4\n",
            "bad.toml:10: model.grid: grid sets the pooling of features = \"stages\"",
        ),
        (
            "stem.toml",
            "stem = \"tiny\"\n",
            "stem.toml:10: model.stem: unknown variant `tiny`",
        ),
    ] {
        let p = pipeline(t.path(), file, &builtin_body(&images, model, &out));
        let v = run_cli(&["validate", p.to_str().unwrap()]);
        assert_eq!(v.status.code(), Some(2));
        let err = text(&v.stderr);
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn a_model_for_another_input_size_is_refused_with_the_line_to_fix() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    mixed_folder(&images);
    let out1 = t.path().join("out1");
    let p = small_pipeline(t.path(), &images, &out1, "");
    summary_json(&run_cli(&["run", "--json", "-q", p.to_str().unwrap()]));

    let body = format!(
        "[source]\nkind = \"dir\"\npath = \"{}\"\n\n[decode]\nsize = 48\n\n[model]\nkind = \"onnx\"\npath = \"{}\"\n\n[output]\ndir = \"{}\"\n",
        images.display(),
        out1.join("encoder.onnx").display(),
        t.path().join("out2").display()
    );
    let p = pipeline(t.path(), "wrong.toml", &body);
    let v = run_cli(&["validate", p.to_str().unwrap()]);
    assert_eq!(v.status.code(), Some(2));
    let err = text(&v.stderr);
    assert!(
        err.contains("wrong.toml:10: model.path"),
        "names file, line and field: {err}"
    );
    assert!(
        err.contains("[N, 3, 48, 48]"),
        "says what was expected: {err}"
    );
    let r = run_cli(&["run", "-q", p.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
}

#[test]
fn on_error_fail_stops_at_the_first_bad_image_and_keeps_the_rows_before_it() {
    let t = tempfile::tempdir().unwrap();
    let (images, out) = (t.path().join("images"), t.path().join("out"));
    mixed_folder(&images);
    let p = small_pipeline(t.path(), &images, &out, "on_error = \"fail\"");
    let r = run_cli(&["run", "-q", p.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
    let err = text(&r.stderr);
    // Walk order is a.jpg, b.png, broken_text.jpg, ...: the first bad one is broken_text.jpg.
    assert!(
        err.contains("\"broken_text.jpg\"") && err.contains("decode"),
        "{err}"
    );
    let keys: Vec<String> = read_features(&out).into_iter().map(|r| r.key).collect();
    assert_eq!(
        keys,
        ["a.jpg", "b.png"],
        "rows before the bad image are written, none after"
    );
    assert!(file_names(&out).iter().all(|n| !n.ends_with(".tmp")));
}

#[test]
fn list_source_reads_the_listed_files_with_their_written_keys() {
    let t = tempfile::tempdir().unwrap();
    let (images, out) = (t.path().join("images"), t.path().join("out"));
    mixed_folder(&images);
    std::fs::write(
        t.path().join("list.txt"),
        "images/b.png\n# a comment\nimages/nested/c.webp\nimages/missing.jpg\n",
    )
    .unwrap();
    let p = pipeline(
        t.path(),
        "list.toml",
        &format!(
            "[source]\nkind = \"list\"\npath = \"list.txt\"\n[decode]\nsize = 32\n[model]\nkind = \"builtin\"\nwidth = 8\nstages = [1]\nembedding_dim = 16\n[output]\ndir = \"{}\"\n",
            out.display()
        ),
    );
    let s = summary_json(&run_cli(&["run", "--json", "-q", p.to_str().unwrap()]));
    assert_eq!(s["images"]["failed"], 1);
    let keys: Vec<String> = read_features(&out).into_iter().map(|r| r.key).collect();
    assert_eq!(keys, ["images/b.png", "images/nested/c.webp"]);
    let errors = read_errors(&out);
    assert_eq!(errors[0].0, "images/missing.jpg");
    assert_eq!(errors[0].1, "read");
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_the_source_drains_and_publishes_complete_files() {
    let t = tempfile::tempdir().unwrap();
    let (images, out) = (t.path().join("images"), t.path().join("out"));
    std::fs::create_dir_all(&images).unwrap();
    let jpeg = {
        let mut buf = std::io::Cursor::new(Vec::new());
        synthetic(320, 240, 1)
            .write_to(&mut buf, image::ImageFormat::Jpeg)
            .unwrap();
        buf.into_inner()
    };
    let total = 4000;
    for i in 0..total {
        std::fs::write(images.join(format!("{i:05}.jpg")), &jpeg).unwrap();
    }
    let p = small_pipeline(t.path(), &images, &out, "");
    let text_body = std::fs::read_to_string(&p).unwrap().replace(
        "rows_per_file = 7",
        "rows_per_file = 100000\nrow_group_rows = 8",
    );
    std::fs::write(&p, text_body).unwrap();
    let child = spawn_cli(&["run", "--json", "-q", p.to_str().unwrap()]);
    // Wait until rows are being written, then press Ctrl-C once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !out.join("part-00000.parquet.tmp").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never started writing"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let result = child.wait_with_output().unwrap();
    assert_eq!(
        result.status.code(),
        Some(130),
        "stderr: {}",
        text(&result.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(summary["stopped_early"], true);
    let rows = read_features(&out);
    assert!(
        !rows.is_empty() && rows.len() < total,
        "stopped part-way: {} rows",
        rows.len()
    );
    assert_eq!(
        summary["images"]["ok"],
        rows.len(),
        "every image read was embedded and written"
    );
    assert_eq!(summary["images"]["read"], rows.len());
    assert!(
        file_names(&out).iter().all(|n| !n.ends_with(".tmp")),
        "files published: {:?}",
        file_names(&out)
    );
}

use std::process::Command;

/// The output contract as third-party readers see it: pyarrow, DuckDB and polars read the files
/// (their Python packages are installed once into .deps/venv-readers by the check script).
#[test]
fn pyarrow_duckdb_and_polars_read_the_features() {
    let t = tempfile::tempdir().unwrap();
    let (images, out) = (t.path().join("images"), t.path().join("out"));
    let (good, _) = mixed_folder(&images);
    let p = small_pipeline(t.path(), &images, &out, "");
    summary_json(&run_cli(&["run", "--json", "-q", p.to_str().unwrap()]));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dev/check_readers.sh");
    let r = Command::new("bash")
        .arg(script)
        .arg(&out)
        .arg(good.len().to_string())
        .output()
        .unwrap();
    assert!(
        r.status.success(),
        "{}\n{}",
        text(&r.stdout),
        text(&r.stderr)
    );
    let s = text(&r.stdout);
    assert!(
        s.contains("duckdb: 15 rows, embedding length 32") && s.contains("polars: 15 rows"),
        "{s}"
    );
}

/// `optimization = "all"` (the default, for speed) computes the same embeddings as "extended".
#[test]
fn optimisation_levels_agree() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    mixed_folder(&images);
    let mut rows = Vec::new();
    for level in ["extended", "all"] {
        let out = t.path().join(level);
        let p = small_pipeline(t.path(), &images, &out, "");
        let body = std::fs::read_to_string(&p).unwrap().replace(
            "[embed]",
            &format!("[runtime]\noptimization = \"{level}\"\n[embed]"),
        );
        std::fs::write(&p, body).unwrap();
        summary_json(&run_cli(&["run", "--json", "-q", p.to_str().unwrap()]));
        rows.push(read_features(&out));
    }
    assert_eq!(rows[0].len(), rows[1].len());
    for (a, b) in rows[0].iter().zip(&rows[1]) {
        assert_eq!(a.key, b.key);
        let worst = a
            .embedding
            .iter()
            .zip(&b.embedding)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "{}: levels differ by {worst}", a.key);
    }
}

/// A second Ctrl-C aborts at once: nothing is published, unfinished output stays `.tmp`.
#[cfg(unix)]
#[test]
fn a_second_ctrl_c_aborts_and_leaves_only_tmp_files() {
    let t = tempfile::tempdir().unwrap();
    let (images, out) = (t.path().join("images"), t.path().join("out"));
    std::fs::create_dir_all(&images).unwrap();
    let mut jpeg = std::io::Cursor::new(Vec::new());
    synthetic(320, 240, 2)
        .write_to(&mut jpeg, image::ImageFormat::Jpeg)
        .unwrap();
    for i in 0..3000 {
        std::fs::write(images.join(format!("{i:05}.jpg")), jpeg.get_ref()).unwrap();
    }
    // A wide encoder at a large working size with a large batch and queue: while the first batch
    // runs, decoded images pile up in the queue, so after the first Ctrl-C a batch of them is still
    // to embed and draining takes long enough (about a second) to press again.
    let p = pipeline(
        t.path(),
        "slow.toml",
        &format!(
            "[pipeline]\nqueue = 1024\n[source]\nkind = \"dir\"\npath = \"{}\"\n[decode]\nsize = 224\n[model]\nkind = \"builtin\"\nwidth = 64\n[embed]\nbatch_size = 256\n[output]\ndir = \"{}\"\nrow_group_rows = 64\n",
            images.display(),
            out.display()
        ),
    );
    let child = spawn_cli(&["run", "-q", p.to_str().unwrap()]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !out.join("part-00000.parquet.tmp").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never started writing"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(std::time::Duration::from_millis(100));
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let result = child.wait_with_output().unwrap();
    assert_eq!(
        result.status.code(),
        Some(130),
        "stderr: {}",
        text(&result.stderr)
    );
    assert!(
        text(&result.stderr).contains("aborted"),
        "{}",
        text(&result.stderr)
    );
    let names = file_names(&out);
    assert!(
        names.contains(&"part-00000.parquet.tmp".to_string()),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.ends_with(".parquet")),
        "nothing published after an abort: {names:?}"
    );
}
