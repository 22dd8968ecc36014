//! Every pipeline shipped in `pipelines/` validates and runs on the bundled photos; the README's
//! main one (`colorize.toml`) runs end to end exactly as shipped.

use std::path::{Path, PathBuf};

use sslpipe::pipeline::{self, RunOptions};

fn shipped() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

fn photos_present() {
    let photos = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/photos");
    assert!(
        photos.is_dir(),
        "{} is missing: run scripts/setup.sh first",
        photos.display()
    );
}

#[test]
fn every_shipped_pipeline_validates() {
    photos_present();
    for file in shipped() {
        let plan = sslpipe::config::load(&file).unwrap_or_else(|e| panic!("{e}"));
        pipeline::validate(&plan).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn the_main_pipeline_pretrains_and_embeds_the_bundled_photos() {
    photos_present();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/colorize.toml");
    let mut plan = sslpipe::config::load(&file).unwrap();
    let out = tempfile::tempdir().unwrap();
    plan.output.dir = out.path().to_path_buf();
    let summary = pipeline::run(&plan, RunOptions::default()).unwrap();
    let pretrain = summary.pretrain.as_ref().expect("a pretraining pipeline");
    assert_eq!(
        pretrain.steps,
        plan.pretrain().unwrap().budget.steps.unwrap()
    );
    let eval = pretrain
        .eval
        .as_ref()
        .expect("held-out images were evaluated");
    assert!(
        eval.loss.is_finite() && eval.baseline.is_some(),
        "{summary}"
    );
    for artefact in ["log.csv", "curve.png", "predictions.png"] {
        assert!(
            out.path().join("pretrain").join(artefact).is_file(),
            "{artefact}"
        );
    }
    let rows = crate::support::read_features(out.path());
    assert!(
        rows.len() >= 10,
        "the bundled photos are embedded: {summary}"
    );
    assert!(rows.iter().all(|r| r.pretext == "colorize"
        && r.embedding.len() == 256
        && r.embedding.iter().all(|v| v.is_finite())));
}

#[test]
fn every_shipped_pretraining_pipeline_runs_a_few_steps() {
    photos_present();
    for file in shipped() {
        let mut plan = sslpipe::config::load(&file).unwrap();
        let sslpipe::config::Mode::Pretrain { spec: pretrain, .. } = &mut plan.mode else {
            continue;
        };
        pretrain.budget.steps = Some(2);
        pretrain.batch_size = 4;
        let out = tempfile::tempdir().unwrap();
        plan.output.dir = out.path().to_path_buf();
        let summary = pipeline::run(&plan, RunOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            summary.pretrain.as_ref().unwrap().steps,
            2,
            "{}",
            file.display()
        );
        assert!(summary.images.ok >= 10, "{}: {summary}", file.display());
    }
}

#[test]
fn the_embed_only_pipeline_runs_on_the_bundled_photos() {
    photos_present();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/embed.toml");
    let mut plan = sslpipe::config::load(&file).unwrap();
    let out = tempfile::tempdir().unwrap();
    plan.output.dir = out.path().to_path_buf();
    let summary = pipeline::run(&plan, RunOptions::default()).unwrap();
    assert!(
        summary.images.ok >= 10,
        "the bundled photos are embedded: {summary}"
    );
    assert_eq!(summary.images.failed, 0, "{summary}");
    let rows = crate::support::read_features(out.path());
    assert_eq!(rows.len() as u64, summary.images.ok);
    assert!(
        rows.iter()
            .all(|r| r.embedding.len() == 256 && r.embedding.iter().all(|v| v.is_finite()))
    );
}

#[test]
fn the_tar_pipeline_gives_the_rows_of_the_folder_pipeline_but_for_their_keys() {
    photos_present();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("data/shards/photos-000000.tar").is_file(),
        "data/shards is missing: run scripts/setup.sh first"
    );
    let run = |name: &str| {
        let mut plan = sslpipe::config::load(&root.join("pipelines").join(name)).unwrap();
        let out = tempfile::tempdir().unwrap();
        plan.output.dir = out.path().to_path_buf();
        let summary = pipeline::run(&plan, RunOptions::default()).unwrap();
        assert_eq!(summary.images.failed, 0, "{name}: {summary}");
        crate::support::read_features(out.path())
    };
    let (dir, tar) = (run("embed.toml"), run("embed-tar.toml"));
    assert_eq!(dir.len(), 16);
    assert_eq!(tar.len(), dir.len());
    for (i, (d, t)) in dir.iter().zip(&tar).enumerate() {
        let stem = d.key.rsplit_once('.').unwrap().0;
        assert_eq!(t.key, format!("photos-{:06}/{stem}", i / 8));
        assert_eq!(
            (&t.embedding, t.width, t.height, &t.model_id),
            (&d.embedding, d.width, d.height, &d.model_id),
            "{}",
            t.key
        );
    }
}

#[test]
fn every_shipped_pretext_export_runs_on_the_bundled_photos() {
    photos_present();
    for file in shipped().into_iter().filter(|f| {
        f.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("pretext-")
    }) {
        let mut plan = sslpipe::config::load(&file).unwrap();
        let out = tempfile::tempdir().unwrap();
        plan.output.dir = out.path().to_path_buf();
        let summary = pipeline::run(&plan, RunOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            summary.images.ok >= 10 && summary.images.failed == 0,
            "{}: {summary}",
            file.display()
        );
    }
}
