//! Pretraining pipelines: a pretext task trained for a few steps on generated photos, then the
//! embed phase with the trained encoder; checkpoints, resuming, Ctrl-C, bad input.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// `count` synthetic photos of varied sizes in `dir`.
fn photos(dir: &Path, count: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..count {
        synthetic(60 + 7 * (i % 5), 48 + 5 * (i % 3), i)
            .save(dir.join(format!("img{i:03}.png")))
            .unwrap();
    }
}

/// A pretraining pipeline on `images` with a tiny encoder; `pretext` and `pretrain` are the
/// sections' bodies.
fn pretrain_pipeline(
    dir: &Path,
    name: &str,
    images: &Path,
    out: &Path,
    pretext: &str,
    pretrain: &str,
) -> PathBuf {
    pipeline(
        dir,
        name,
        &format!(
            "[pipeline]\nworkers = 2\nseed = 3\n[source]\nkind = \"dir\"\npath = \"{}\"\n[decode]\nsize = 32\n[pretext]\n{pretext}\n[model]\nkind = \"builtin\"\nwidth = 8\nstages = [1, 1]\nembedding_dim = 16\n[pretrain]\nbatch_size = 8\nholdout = 4\n{pretrain}\n[embed]\nbatch_size = 16\n[output]\ndir = \"{}\"\n",
            images.display(),
            out.display()
        ),
    )
}

fn run_json(args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = run_cli(args);
    let stderr = text(&out.stderr);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), json, stderr)
}

fn log_steps(out: &Path) -> Vec<u64> {
    let log = std::fs::read_to_string(out.join("pretrain/log.csv")).unwrap();
    log.lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn rotation_pretrains_then_embeds_with_the_trained_encoder() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    photos(&images, 40);
    let out = t.path().join("out");
    let p = pretrain_pipeline(
        t.path(),
        "rot.toml",
        &images,
        &out,
        "kind = \"rotation\"",
        "steps = 6\neval_every = 3\nlog_every = 2\ncheckpoint_every = 2\nkeep_checkpoints = 2",
    );
    let (code, summary, stderr) = run_json(&["run", "--json", "-q", p.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let pre = &summary["pretrain"];
    assert_eq!(pre["task"], "rotation");
    assert_eq!(pre["steps"], 6);
    assert_eq!(pre["images"], 48);
    assert_eq!(pre["interrupted"], false);
    // 4 held-out images: evaluated (a batch of 8 repeats them), chance baseline ln 4.
    let eval = &pre["eval"];
    assert_eq!(eval["step"], 6);
    assert!((eval["baseline"].as_f64().unwrap() - 4f64.ln()).abs() < 1e-6);
    assert!(eval["loss"].as_f64().unwrap().is_finite());
    assert_eq!(log_steps(&out), [2, 3, 4, 6]);
    let ckpts = file_names(&out.join("pretrain/checkpoints"));
    assert_eq!(
        ckpts,
        ["step-00000004.safetensors", "step-00000006.safetensors"]
    );
    assert!(out.join("pretrain/curve.png").is_file());
    assert!(
        !out.join("pretrain/predictions.png").exists(),
        "rotation has no picture to predict"
    );

    // The features come from the trained encoder, written beside them.
    let rows = read_features(&out);
    assert_eq!(rows.len(), 40);
    let onnx = std::fs::read(out.join("encoder.onnx")).unwrap();
    let id = sslpipe::model::model_id(&onnx);
    assert!(
        rows.iter()
            .all(|r| r.model_id == id && r.pretext == "rotation")
    );
    assert!(rows.iter().all(|r| r.embedding.len() == 16));
    assert_eq!(summary["model_id"], id.as_str());
}

#[test]
fn resume_continues_from_the_newest_checkpoint_and_a_broken_one_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    photos(&images, 30);
    let out = t.path().join("out");
    let short = pretrain_pipeline(
        t.path(),
        "short.toml",
        &images,
        &out,
        "kind = \"rotation\"",
        "steps = 4\nschedule = \"constant\"\nwarmup_steps = 0\ncheckpoint_every = 2\nlog_every = 1\n[runtime]\nintra_threads = 1",
    );
    let (code, _, stderr) = run_json(&["run", "--json", "-q", short.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let long = pretrain_pipeline(
        t.path(),
        "long.toml",
        &images,
        &out,
        "kind = \"rotation\"",
        "steps = 7\nschedule = \"constant\"\nwarmup_steps = 0\ncheckpoint_every = 2\nlog_every = 1\n[runtime]\nintra_threads = 1",
    );
    let (code, summary, stderr) =
        run_json(&["run", "--json", "-q", "--resume", long.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(summary["pretrain"]["resumed_from"], 4);
    assert_eq!(summary["pretrain"]["steps"], 7);
    assert_eq!(
        log_steps(&out),
        [1, 2, 3, 4, 5, 6, 7],
        "no step logged twice"
    );

    // Same result as one uninterrupted run of 7 steps: same stream, same updates (a constant
    // learning rate, so the shorter first budget does not change the schedule).
    let out2 = t.path().join("out2");
    let straight = pretrain_pipeline(
        t.path(),
        "straight.toml",
        &images,
        &out2,
        "kind = \"rotation\"",
        "steps = 7\nschedule = \"constant\"\nwarmup_steps = 0\ncheckpoint_every = 2\nlog_every = 1\n[runtime]\nintra_threads = 1",
    );
    let (code, _, stderr) = run_json(&["run", "--json", "-q", straight.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let loss_of = |dir: &Path| {
        let log = std::fs::read_to_string(dir.join("pretrain/log.csv")).unwrap();
        log.lines()
            .last()
            .unwrap()
            .split(',')
            .nth(5)
            .unwrap()
            .to_string()
    };
    assert_eq!(loss_of(&out), loss_of(&out2));

    // A truncated checkpoint: refused, named, nothing loaded.
    let newest = out.join("pretrain/checkpoints/step-00000007.safetensors");
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let (code, _, stderr) = run_json(&["run", "--json", "-q", "--resume", long.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("step-00000007.safetensors"), "{stderr}");
}

#[test]
fn ctrl_c_during_pretraining_writes_a_checkpoint_and_resume_finishes() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    photos(&images, 30);
    let out = t.path().join("out");
    let p = pretrain_pipeline(
        t.path(),
        "long.toml",
        &images,
        &out,
        "kind = \"rotation\"",
        "steps = 100000\nlog_every = 1\ncheckpoint_every = 100000",
    );
    let child = spawn_cli(&["run", "--json", "-q", p.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let log = out.join("pretrain/log.csv");
    while std::fs::read_to_string(&log).map_or(0, |l| l.lines().count()) < 3 {
        assert!(Instant::now() < deadline, "pretraining never logged a step");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let result = child.wait_with_output().unwrap();
    assert_eq!(result.status.code(), Some(130), "{}", text(&result.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(summary["pretrain"]["interrupted"], true);
    let steps = summary["pretrain"]["steps"].as_u64().unwrap();
    let ckpts = file_names(&out.join("pretrain/checkpoints"));
    assert_eq!(ckpts, [format!("step-{steps:08}.safetensors")]);
    assert!(
        !out.join("encoder.onnx").exists(),
        "no embed phase after an interruption"
    );

    let finish = pretrain_pipeline(
        t.path(),
        "finish.toml",
        &images,
        &out,
        "kind = \"rotation\"",
        &format!("steps = {}\nlog_every = 1", steps + 2),
    );
    let (code, summary, stderr) =
        run_json(&["run", "--json", "-q", "--resume", finish.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(summary["pretrain"]["resumed_from"], steps);
    assert_eq!(read_features(&out).len(), 30);
}

#[test]
fn dense_tasks_train_draw_predictions_and_export_a_working_encoder() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    photos(&images, 24);
    for (task, extra) in [
        ("colorize", "downsample = 4"),
        ("inpaint", ""),
        ("mask", "patch = 8"),
    ] {
        let out = t.path().join(format!("out-{task}"));
        let p = pipeline(
            t.path(),
            &format!("{task}.toml"),
            &format!(
                "[source]\nkind = \"dir\"\npath = \"{}\"\n[decode]\nsize = 32\n[pretext]\nkind = \"{task}\"\n{extra}\n[model]\nkind = \"builtin\"\nwidth = 8\nstages = [1, 1]\nembedding_dim = 16\n[pretrain]\nsteps = 3\nbatch_size = 4\nholdout = 2\n[output]\ndir = \"{}\"\n",
                images.display(),
                out.display()
            ),
        );
        let (code, summary, stderr) = run_json(&["run", "--json", "-q", p.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{task}: {stderr}");
        let eval = &summary["pretrain"]["eval"];
        assert!(eval["baseline"].as_f64().unwrap() > 0.0, "{task}: {eval}");
        assert_eq!(
            out.join("pretrain/predictions.png").is_file(),
            task != "mask",
            "{task}"
        );
        let rows = read_features(&out);
        assert_eq!(rows.len(), 24, "{task}");
        assert!(
            rows.iter()
                .all(|r| r.embedding.iter().all(|v| v.is_finite())),
            "{task}"
        );
    }
}

#[test]
fn bad_images_during_pretraining_are_listed_once_and_skipped() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    photos(&images, 20);
    std::fs::write(images.join("broken.png"), b"not a png").unwrap();
    let out = t.path().join("out");
    let p = pretrain_pipeline(
        t.path(),
        "bad.toml",
        &images,
        &out,
        "kind = \"rotation\"",
        "steps = 8",
    );
    let body = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, body.replace("[embed]\n", "[embed]\nenabled = false\n")).unwrap();
    let (code, summary, stderr) = run_json(&["run", "--json", "-q", p.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(summary["pretrain"]["skipped_images"].as_u64().unwrap() >= 1);
    let errors = read_errors(&out.join("pretrain"));
    assert_eq!(
        errors.len(),
        1,
        "listed once however many passes: {errors:?}"
    );
    assert_eq!(errors[0].0, "broken.png");
    assert!(out.join("encoder.onnx").is_file());
    assert!(
        read_features_if_any(&out).is_empty(),
        "embed phase disabled"
    );
}

fn read_features_if_any(dir: &Path) -> Vec<String> {
    file_names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".parquet"))
        .collect()
}

#[test]
fn pretrain_sections_are_validated_with_lines() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    photos(&images, 2);
    let p = pipeline(
        t.path(),
        "bad.toml",
        &format!(
            "[source]\nkind = \"dir\"\npath = \"{}\"\n[model]\nkind = \"onnx\"\npath = \"{}\"\n[pretrain]\nbatch_size = 1\noptimizer = \"adam\"\n[output]\ndir = \"{}\"\n",
            images.display(),
            p_any(&images).display(),
            t.path().join("out").display()
        ),
    );
    let out = run_cli(&["validate", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    for needle in [
        "bad.toml:7: pretrain: needs a budget",
        "bad.toml:8: pretrain.batch_size",
        "bad.toml:9: pretrain.optimizer",
        "pretrain: needs a [pretext] section",
        "model.kind: pretraining trains the built-in encoder",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

fn p_any(images: &Path) -> PathBuf {
    images.join("img000.png")
}
