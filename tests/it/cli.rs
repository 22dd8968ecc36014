//! The command line as a user meets it: validation messages, inspect, a missing ONNX Runtime.

use crate::support::*;

#[test]
fn validate_reports_every_problem_with_file_line_and_field() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("blocker"), b"a file where a folder should be").unwrap();
    let p = pipeline(
        t.path(),
        "bad.toml",
        r#"[pipeline]
on_error = "skip"
worker_nice = 25

[source]
kind = "dir"
path = "no/such/folder"
recursiv = true

[decode]
size = "big"

[model]
kind = "builtin"
width = 0

[embed]
batch_size = 0

[runtime]
device = "tpu"

[output]
dir = "blocker/out"

[extras]
x = 1
"#,
    );
    let out = run_cli(&["validate", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let expect = [
        "bad.toml:3: pipeline.worker_nice: 25 is outside 0–19",
        "bad.toml:8: source.recursiv: unknown field `recursiv`",
        "bad.toml:11: decode.size: invalid type",
        "bad.toml:18: embed.batch_size: must be between 1 and 4096",
        "bad.toml:21: runtime.device: expected \"cpu\", \"cuda\" or \"cuda:N\", found \"tpu\"",
        "bad.toml:24: output.dir:",
        "bad.toml:26: extras: unknown section `[extras]`",
    ];
    for e in expect {
        assert!(err.contains(e), "missing {e:?} in:\n{err}");
    }
    assert!(err.contains("not a folder"), "{err}");
}

#[test]
fn validate_names_an_unknown_key_once() {
    // Plain sections ([runtime]) and tagged ones ([source]) reach serde's error differently.
    let t = tempfile::tempdir().unwrap();
    let p = pipeline(
        t.path(),
        "typo.toml",
        "[source]\nkind = \"dir\"\npath = \".\"\nrecurse = true\n\n[runtime]\nbatch_size = 64\n",
    );
    let out = run_cli(&["validate", p.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(
        err.contains("typo.toml:4: source.recurse: unknown field `recurse`"),
        "{err}"
    );
    assert!(
        err.contains("typo.toml:7: runtime.batch_size: unknown field `batch_size`"),
        "{err}"
    );
}

#[test]
fn validate_reports_a_missing_folder_and_a_bad_model_together() {
    let t = tempfile::tempdir().unwrap();
    let p = pipeline(
        t.path(),
        "p.toml",
        "[source]\nkind = \"dir\"\npath = \"nowhere\"\n\n[model]\nkind = \"builtin\"\nwidth = 0\n\n[output]\ndir = \"out\"\n",
    );
    let err = text(&run_cli(&["validate", p.to_str().unwrap()]).stderr);
    assert!(
        err.contains("p.toml:3: source.path:") && err.contains("is not a folder"),
        "{err}"
    );
    assert!(err.contains("p.toml:5: model:"), "{err}");
    assert!(err.contains("2 problems"), "{err}");
}

#[test]
fn a_syntax_error_names_its_line() {
    let t = tempfile::tempdir().unwrap();
    let p = pipeline(t.path(), "p.toml", "[source]\nkind = \"dir\"\npath = \n");
    let out = run_cli(&["validate", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("p.toml:3: not valid TOML"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_missing_onnx_runtime_says_how_to_get_it() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    mixed_folder(&images);
    let p = pipeline(
        t.path(),
        "p.toml",
        &format!(
            "[source]\nkind = \"dir\"\npath = \"images\"\n[output]\ndir = \"{}\"\n",
            t.path().join("out").display()
        ),
    );
    let out = sslpipe()
        .args(["run", "-q", p.to_str().unwrap()])
        .env_remove("ORT_DYLIB_PATH")
        .env("SSLPIPE_HOME", t.path().join("empty-home"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("was not found") && err.contains("scripts/setup.sh"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let out = run_cli(&[
        "run",
        "-q",
        "--ort-lib",
        "/no/such/libonnxruntime.so",
        p.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no such file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn inspect_shows_schema_metadata_and_rows() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    mixed_folder(&images);
    let out_dir = t.path().join("out");
    let p = pipeline(
        t.path(),
        "p.toml",
        &format!(
            "[source]\nkind = \"dir\"\npath = \"images\"\n[decode]\nsize = 32\n[model]\nkind = \"builtin\"\nwidth = 8\nstages = [1]\nembedding_dim = 16\n[output]\ndir = \"{}\"\n",
            out_dir.display()
        ),
    );
    assert!(
        run_cli(&["run", "-q", p.to_str().unwrap()])
            .status
            .success()
    );
    let out = run_cli(&["inspect", "--rows", "2", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("embedding: FixedSizeList"), "{s}");
    assert!(
        s.contains("sslpipe.pipeline: |") && s.contains("kind = \"builtin\""),
        "pipeline text in metadata: {s}"
    );
    assert!(s.contains("row 1:") && !s.contains("row 2:"), "{s}");
    assert!(s.contains("total rows: 15"), "{s}");
}

/// Asking for CUDA where it cannot load is an error naming the field, never a silent CPU run.
#[test]
fn cuda_without_its_provider_is_refused_not_run_on_the_cpu() {
    let t = tempfile::tempdir().unwrap();
    mixed_folder(&t.path().join("images"));
    let out = t.path().join("out");
    let p = pipeline(
        t.path(),
        "p.toml",
        &format!(
            "[source]\nkind = \"dir\"\npath = \"images\"\n[runtime]\ndevice = \"cuda\"\n[output]\ndir = \"{}\"\n",
            out.display()
        ),
    );
    let v = run_cli(&["validate", p.to_str().unwrap()]);
    assert_eq!(v.status.code(), Some(2));
    assert!(
        text(&v.stderr)
            .contains("p.toml:5: runtime.device: the CUDA execution provider could not be used"),
        "{}",
        text(&v.stderr)
    );
    let r = run_cli(&["run", "-q", p.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        !out.join("part-00000.parquet").exists(),
        "nothing was computed on the CPU instead"
    );
}
