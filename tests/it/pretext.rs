//! Pretext datasets and previews: the pseudo-labels as other tools and people see them.

use std::path::Path;

use arrow::array::{RecordBatch, StringArray, UInt32Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::support::*;

fn export_pipeline(
    dir: &Path,
    images: &Path,
    out: &Path,
    workers: usize,
    pretext: &str,
    size: u32,
    epochs: u64,
) -> std::path::PathBuf {
    pipeline(
        dir,
        &format!("export-{workers}.toml"),
        &format!(
            "[pipeline]\nworkers = {workers}\nqueue = 2\nseed = 7\n[source]\nkind = \"dir\"\npath = \"{}\"\n[decode]\nsize = {size}\n[pretext]\n{pretext}\n[export]\nepochs = {epochs}\n[output]\ndir = \"{}\"\nrows_per_file = 9\n",
            images.display(),
            out.display()
        ),
    )
}

/// Every row of every part file, as record batches.
fn read_batches(dir: &Path) -> Vec<RecordBatch> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap())
                .unwrap()
                .build()
                .unwrap()
                .map(|b| b.unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn export_is_identical_with_1_and_8_workers_and_each_epoch_draws_anew() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    let (good, broken) = mixed_folder(&images);
    let task = "kind = \"jigsaw\"\npermutations = 10";
    let (out1, out8) = (t.path().join("out1"), t.path().join("out8"));
    for (workers, out) in [(1, &out1), (8, &out8)] {
        let p = export_pipeline(t.path(), &images, out, workers, task, 96, 2);
        let r = run_cli(&["run", "-q", "--json", p.to_str().unwrap()]);
        assert!(r.status.success(), "{}", text(&r.stderr));
        let s: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        assert_eq!(
            s["images"]["ok"],
            2 * good.len(),
            "two epochs of every good image"
        );
        assert_eq!(s["images"]["failed"], 2 * broken.len());
    }
    let perms =
        sslpipe::pretext::jigsaw::PermutationSet::load(&out1.join("permutations.json")).unwrap();
    assert_eq!(
        perms.len(),
        10,
        "the permutation set the labels index is written beside the data"
    );
    let (a, b) = (read_batches(&out1), read_batches(&out8));
    let rows = |v: &[RecordBatch]| v.iter().map(|b| b.num_rows()).sum::<usize>();
    assert_eq!(rows(&a), 2 * good.len());
    assert_eq!(
        a, b,
        "same (seed, key, epoch) → identical tensors whatever the thread count"
    );

    // The same image in epoch 0 and epoch 1: a new draw (jigsaw permutation and/or jitter).
    let all = arrow::compute::concat_batches(&a[0].schema(), &a).unwrap();
    let keys = all
        .column_by_name("key")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let epochs = all
        .column_by_name("epoch")
        .unwrap()
        .as_any()
        .downcast_ref::<UInt32Array>()
        .unwrap();
    let tiles = all.column_by_name("tiles").unwrap();
    let i0 = (0..all.num_rows())
        .find(|&i| keys.value(i) == "a.jpg" && epochs.value(i) == 0)
        .unwrap();
    let i1 = (0..all.num_rows())
        .find(|&i| keys.value(i) == "a.jpg" && epochs.value(i) == 1)
        .unwrap();
    assert_ne!(
        tiles.slice(i0, 1).to_data(),
        tiles.slice(i1, 1).to_data(),
        "epoch is part of the per-sample seed"
    );
}

#[test]
fn pyarrow_reads_the_pretext_tensors_with_their_shape_and_values() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    let (good, _) = mixed_folder(&images);
    let out = t.path().join("out");
    let p = export_pipeline(
        t.path(),
        &images,
        &out,
        2,
        "kind = \"rotation\"\nall_four = true",
        32,
        1,
    );
    assert!(
        run_cli(&["run", "-q", p.to_str().unwrap()])
            .status
            .success()
    );

    // What the library says the first image's tensors are.
    let plan = sslpipe::config::load(&p).unwrap();
    let task = sslpipe::pretext::build(plan.pretext().unwrap(), 32).unwrap();
    let mut decoder = sslpipe::decode::Decoder::new(plan.decode.clone());
    let mut rgb = Vec::new();
    decoder
        .decode_into(&std::fs::read(images.join("a.jpg")).unwrap(), &mut rgb)
        .unwrap();
    let view = sslpipe::pretext::RgbView {
        width: 32,
        height: 32,
        pixels: &rgb,
    };
    let sample = task.make(view, &mut sslpipe::rng::Rng::for_sample(7, "a.jpg", 0));
    let sslpipe::pretext::TensorData::U8(pixels) = &sample.inputs[0] else {
        panic!("rotation input is u8")
    };
    let expected_sum: u64 = pixels.iter().map(|&v| v as u64).sum();

    let script = format!(
        r#"
import glob, pyarrow as pa, pyarrow.parquet as pq
t = pq.read_table(sorted(glob.glob("{out}/part-*.parquet")))
col = t.column("image").combine_chunks()
assert isinstance(col.type, pa.FixedShapeTensorType), col.type
arr = col.to_numpy_ndarray()
labels = t.column("label").combine_chunks().to_numpy_ndarray()
keys = t.column("key").to_pylist()
i = keys.index("a.jpg")
print("shape", list(arr.shape), arr.dtype, "labels", labels[i].tolist(), "sum", int(arr[i].astype("int64").sum()))
"#,
        out = out.display()
    );
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/venv-readers/bin/python");
    if !python.exists() {
        // The readers' venv is made by the check script; build it the same way.
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dev/check_readers.sh");
        let _ = std::process::Command::new("bash")
            .arg(script)
            .arg("/nonexistent")
            .output();
    }
    let r = std::process::Command::new(&python)
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python from .deps/venv-readers");
    assert!(r.status.success(), "{}", text(&r.stderr));
    let s = text(&r.stdout);
    assert!(
        s.contains(&format!("shape [{}, 4, 3, 32, 32] uint8", good.len())),
        "{s}"
    );
    assert!(s.contains("labels [0, 1, 2, 3]"), "{s}");
    assert!(
        s.contains(&format!("sum {expected_sum}")),
        "values as the library made them: {s}"
    );
}

#[test]
fn preview_draws_one_row_per_sample_and_needs_a_pretext() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    mixed_folder(&images);
    let out = t.path().join("out");
    let p = export_pipeline(t.path(), &images, &out, 2, "kind = \"inpaint\"", 64, 1);
    let png = t.path().join("sheet.png");
    let r = run_cli(&[
        "preview",
        p.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
        "--count",
        "3",
    ]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert!(
        text(&r.stdout).contains("3 samples: a.jpg, b.png, deep16.png"),
        "{}",
        text(&r.stdout)
    );
    let sheet = image::open(&png).unwrap();
    assert!(
        sheet.height() >= 3 * 64 && sheet.width() >= 2 * 64,
        "{}x{}",
        sheet.width(),
        sheet.height()
    );

    let plain = pipeline(
        t.path(),
        "plain.toml",
        &format!(
            "[source]\nkind = \"dir\"\npath = \"images\"\n[output]\ndir = \"{}\"\n",
            out.display()
        ),
    );
    let r = run_cli(&[
        "preview",
        plain.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        text(&r.stderr).contains("no [pretext] section"),
        "{}",
        text(&r.stderr)
    );
}

#[test]
fn a_pretext_that_does_not_fit_the_image_size_is_a_config_error() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    mixed_folder(&images);
    let p = export_pipeline(
        t.path(),
        &images,
        &t.path().join("out"),
        1,
        "kind = \"mask\"\npatch = 10",
        96,
        1,
    );
    let r = run_cli(&["validate", p.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2));
    let err = text(&r.stderr);
    assert!(
        err.contains(":10: pretext:") && err.contains("patch"),
        "{err}"
    );
}
