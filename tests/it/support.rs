//! Fixtures and helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use arrow::array::{Array, FixedSizeListArray, Float32Array, StringArray, UInt32Array};
use image::{DynamicImage, ImageBuffer, Rgb};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub fn sslpipe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sslpipe"))
}

pub fn run_cli(args: &[&str]) -> Output {
    sslpipe()
        .args(args)
        .output()
        .expect("the sslpipe binary runs")
}

/// Starts `sslpipe ARGS…` in the background with stdout and stderr captured (for tests that
/// signal a run while it works).
pub fn spawn_cli(args: &[&str]) -> Child {
    sslpipe()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sslpipe binary starts")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A deterministic photo-like image: smooth gradients plus a little texture.
pub fn synthetic(width: u32, height: u32, seed: u32) -> DynamicImage {
    let img = ImageBuffer::from_fn(width, height, |x, y| {
        let n = (x.wrapping_mul(73_856_093)
            ^ y.wrapping_mul(19_349_663)
            ^ seed.wrapping_mul(83_492_791))
            % 23;
        Rgb([
            ((x * 255 / width.max(1)) as u8).wrapping_add(n as u8),
            ((y * 255 / height.max(1)) as u8).wrapping_add((seed * 40) as u8),
            (((x + y) * 128 / (width + height).max(1)) as u8).wrapping_add(n as u8 * 2),
        ])
    });
    DynamicImage::ImageRgb8(img)
}

/// Writes a mixed folder: good images in six formats and three colour layouts, plus broken files.
/// Returns (good keys, broken keys), both sorted.
pub fn mixed_folder(root: &Path) -> (Vec<String>, Vec<String>) {
    std::fs::create_dir_all(root.join("nested/deeper")).unwrap();
    let mut good = Vec::new();
    let save = |rel: &str, img: &DynamicImage, fmt: image::ImageFormat| {
        img.save_with_format(root.join(rel), fmt).unwrap();
    };
    let cases: [(&str, image::ImageFormat); 6] = [
        ("a.jpg", image::ImageFormat::Jpeg),
        ("b.png", image::ImageFormat::Png),
        ("nested/c.webp", image::ImageFormat::WebP),
        ("nested/d.gif", image::ImageFormat::Gif),
        ("nested/deeper/e.bmp", image::ImageFormat::Bmp),
        ("f.tiff", image::ImageFormat::Tiff),
    ];
    for (i, (rel, fmt)) in cases.iter().enumerate() {
        save(
            rel,
            &synthetic(120 + 17 * i as u32, 90 + 11 * i as u32, i as u32),
            *fmt,
        );
        good.push(rel.to_string());
    }
    save(
        "grey.png",
        &DynamicImage::ImageLuma8(synthetic(64, 80, 7).to_luma8()),
        image::ImageFormat::Png,
    );
    save(
        "rgba.png",
        &DynamicImage::ImageRgba8(synthetic(70, 50, 8).to_rgba8()),
        image::ImageFormat::Png,
    );
    save(
        "deep16.png",
        &DynamicImage::ImageRgb16(synthetic(50, 70, 9).to_rgb16()),
        image::ImageFormat::Png,
    );
    good.extend(["grey.png", "rgba.png", "deep16.png"].map(String::from));
    for i in 0..6 {
        let rel = format!("nested/many_{i:02}.jpg");
        save(&rel, &synthetic(200, 150, 20 + i), image::ImageFormat::Jpeg);
        good.push(rel);
    }

    let jpeg = std::fs::read(root.join("a.jpg")).unwrap();
    std::fs::write(root.join("broken_truncated.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    std::fs::write(root.join("broken_text.jpg"), b"this is not an image at all").unwrap();
    std::fs::write(root.join("nested/broken_empty.png"), b"").unwrap();
    std::fs::write(root.join("notes.txt"), b"ignored: not an image extension").unwrap();
    let mut broken = vec![
        "broken_truncated.jpg",
        "broken_text.jpg",
        "nested/broken_empty.png",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    good.sort();
    broken.sort();
    (good, broken)
}

/// Writes a pipeline file in `dir` and returns its path.
pub fn pipeline(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

/// A small pipeline (8-wide encoder, 32 px, batches of 4) whose `[source]` section is `source`,
/// writing to `out`: what the source tests compare kinds with.
pub fn source_pipeline(dir: &Path, name: &str, source: &str, out: &Path) -> PathBuf {
    pipeline(
        dir,
        name,
        &format!(
            "[pipeline]\nworkers = 2\nqueue = 4\n[source]\n{source}\n[decode]\nsize = 32\n[model]\nkind = \"builtin\"\nwidth = 8\nstages = [1, 1]\nembedding_dim = 32\n[embed]\nbatch_size = 4\n[output]\ndir = \"{}\"\n",
            out.display()
        ),
    )
}

/// One row of a feature file.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: String,
    pub embedding: Vec<f32>,
    pub width: u32,
    pub height: u32,
    pub model_id: String,
    pub pretext: String,
}

/// Reads every `part-*.parquet` in `dir` (sorted), checking the output contract's column types.
pub fn read_features(dir: &Path) -> Vec<Row> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-")
                && p.extension().is_some_and(|e| e == "parquet")
        })
        .collect();
    files.sort();
    let mut rows = Vec::new();
    for file in files {
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap()).unwrap();
        let schema = reader.schema().clone();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "key",
                "embedding",
                "width",
                "height",
                "model_id",
                "pretext",
                "event_timestamp"
            ]
        );
        assert!(
            matches!(
                schema.field(1).data_type(),
                arrow::datatypes::DataType::FixedSizeList(_, _)
            ),
            "embedding is a fixed_size_list: {:?}",
            schema.field(1).data_type()
        );
        for batch in reader.build().unwrap() {
            let batch = batch.unwrap();
            let keys = batch
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            let emb = batch
                .column(1)
                .as_any()
                .downcast_ref::<FixedSizeListArray>()
                .unwrap();
            let w = batch
                .column(2)
                .as_any()
                .downcast_ref::<UInt32Array>()
                .unwrap();
            let h = batch
                .column(3)
                .as_any()
                .downcast_ref::<UInt32Array>()
                .unwrap();
            let m = batch
                .column(4)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            let p = batch
                .column(5)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            for r in 0..batch.num_rows() {
                let e = emb.value(r);
                let e = e.as_any().downcast_ref::<Float32Array>().unwrap();
                rows.push(Row {
                    key: keys.value(r).to_string(),
                    embedding: e.values().to_vec(),
                    width: w.value(r),
                    height: h.value(r),
                    model_id: m.value(r).to_string(),
                    pretext: p.value(r).to_string(),
                });
            }
        }
    }
    rows
}

/// The `errors.jsonl` records as (key, stage, reason).
pub fn read_errors(dir: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(dir.join("errors.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["key"].as_str().unwrap().into(),
                v["stage"].as_str().unwrap().into(),
                v["reason"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// Names of the files in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
