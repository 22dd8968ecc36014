//! Every pipeline shipped in `pipelines/` validates, and the README's main one runs end to end.

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
fn the_main_pipeline_runs_end_to_end_on_the_bundled_photos() {
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
