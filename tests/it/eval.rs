//! `sslpipe eval` as a user runs it: feature Parquet files and a labels file made here, the
//! binary's exit code, stdout (JSON) and stderr (messages naming the bad key or column).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int64Array, ListArray, RecordBatch, StringArray,
    UInt32Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::support::*;

/// Writes `rows` (key, embedding) as a feature file with a `fixed_size_list<float32>[D]`
/// embedding (or `list<float32>` when `list` is set, which also allows ragged rows) and an extra
/// `width` column that eval must ignore. Snappy-compressed: pyarrow's default, what features made
/// by other tools usually are (sslpipe itself writes zstd).
fn write_features(path: &Path, rows: &[(String, Vec<f32>)], list: bool) {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let values = Float32Array::from(rows.iter().flat_map(|r| r.1.clone()).collect::<Vec<_>>());
    let (embedding, data_type): (ArrayRef, DataType) = if list {
        let offsets = OffsetBuffer::from_lengths(rows.iter().map(|r| r.1.len()));
        (
            Arc::new(ListArray::new(
                item.clone(),
                offsets,
                Arc::new(values),
                None,
            )),
            DataType::List(item),
        )
    } else {
        let dim = rows[0].1.len() as i32;
        (
            Arc::new(FixedSizeListArray::new(
                item.clone(),
                dim,
                Arc::new(values),
                None,
            )),
            DataType::FixedSizeList(item, dim),
        )
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("embedding", data_type, false),
        Field::new("width", DataType::UInt32, false),
    ]));
    let keys = StringArray::from(rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>());
    let widths = UInt32Array::from(vec![64u32; rows.len()]);
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(keys), embedding, Arc::new(widths)],
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// `per_class` keys of each of three well-separated classes in 16 dimensions; key `img-c-i`.
fn blobs(per_class: usize) -> Vec<(String, Vec<f32>, &'static str)> {
    let names = ["cat", "dog", "bird"];
    let mut rows = Vec::new();
    for i in 0..per_class {
        for (c, name) in names.iter().enumerate() {
            let embedding = (0..16)
                .map(|j| {
                    let centre = if j % 3 == c { 6.0 } else { 0.0 };
                    // Small deterministic jitter.
                    let h = (i * 131 + j * 17 + c * 7) % 23;
                    centre + (h as f32 / 23.0 - 0.5)
                })
                .collect();
            rows.push((format!("img-{c}-{i:03}"), embedding, *name));
        }
    }
    rows
}

fn labels_csv(path: &Path, rows: &[(String, Vec<f32>, &str)], split: bool) {
    let mut text = String::from(if split {
        "key,label,split\n"
    } else {
        "key,label\n"
    });
    for (n, (key, _, label)) in rows.iter().enumerate() {
        if split {
            let side = if n % 4 == 0 { "test" } else { "train" };
            text.push_str(&format!("{key},{label},{side}\n"));
        } else {
            text.push_str(&format!("{key},{label}\n"));
        }
    }
    std::fs::write(path, text).unwrap();
}

fn features_of(rows: &[(String, Vec<f32>, &str)]) -> Vec<(String, Vec<f32>)> {
    rows.iter().map(|r| (r.0.clone(), r.1.clone())).collect()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}):\n{}", text(&out.stdout)))
}

#[test]
fn eval_separable_features_score_full_accuracy_and_write_report_files() {
    let t = tempfile::tempdir().unwrap();
    let rows = blobs(40);
    // Two part files in a folder, plus five unlabeled rows.
    let dir = t.path().join("features");
    std::fs::create_dir(&dir).unwrap();
    let mut feats = features_of(&rows);
    for i in 0..5 {
        feats.push((format!("unlabeled-{i}"), vec![0.5; 16]));
    }
    let (a, b) = feats.split_at(70);
    write_features(&dir.join("part-00000.parquet"), a, false);
    write_features(&dir.join("part-00001.parquet"), b, false);
    std::fs::write(dir.join("notes.txt"), b"not a part file").unwrap();
    let labels = t.path().join("labels.csv");
    labels_csv(&labels, &rows, true);
    let out_dir = t.path().join("report");

    let out = run_cli(&[
        "eval",
        "--features",
        dir.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--per-class",
        "5,all",
        "--json",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = json(&out);
    assert_eq!(report["classes"], serde_json::json!(["bird", "cat", "dog"]));
    assert_eq!(report["dim"], 16);
    assert_eq!(report["feature_rows"], 125);
    assert_eq!(report["unlabeled"], 5);
    assert_eq!(report["labeled"], 120);
    assert_eq!(report["split"]["source"], "column");
    assert_eq!(report["split"]["test"], 30);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "2 probes × 2 sizes");
    for r in results {
        let acc = r["accuracy_mean"].as_f64().unwrap();
        assert!(
            acc >= 0.99,
            "{} at {}: accuracy {acc}",
            r["probe"],
            r["per_class"]
        );
        assert_eq!(r["test_examples"], 30);
        let png = out_dir.join(r["confusion_png"].as_str().unwrap());
        let img = image::open(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(img.width() > 100 && img.height() > 100);
        let confusion = r["confusion"].as_array().unwrap();
        assert_eq!(confusion.len(), 3);
    }
    let five = results
        .iter()
        .find(|r| r["probe"] == "linear" && r["per_class"] == 5)
        .unwrap();
    assert_eq!(five["repeats"], 3);
    assert_eq!(five["train_examples"], 15);
    assert_eq!(five["accuracies"].as_array().unwrap().len(), 3);
    let all = results
        .iter()
        .find(|r| r["probe"] == "knn" && r["per_class"] == "all")
        .unwrap();
    assert_eq!(all["repeats"], 1);
    assert_eq!(all["train_examples"], 90);
    assert_eq!(all["k"], 20);
    // eval.json is the same document; the PNG names are the expected ones.
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("eval.json")).unwrap()).unwrap();
    assert_eq!(saved, report);
    let names = file_names(&out_dir);
    assert!(
        names.contains(&"confusion-linear-5.png".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"confusion-knn-all.png".to_string()),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");

    // The text report: a table row per result and the class names.
    let out = run_cli(&[
        "eval",
        "--features",
        dir.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--probe",
        "knn",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("knn") && shown.contains("1.0000"), "{shown}");
    assert!(
        !shown.contains("linear "),
        "only the kNN probe ran:\n{shown}"
    );
    assert!(
        shown.contains("confusion") && shown.contains("bird"),
        "{shown}"
    );
}

#[test]
fn eval_is_deterministic_and_reads_parquet_labels_with_integer_classes() {
    let t = tempfile::tempdir().unwrap();
    let rows = blobs(30);
    let features = t.path().join("features.parquet");
    write_features(&features, &features_of(&rows), true);
    // Parquet labels (gzip): integer classes, no split column (a seeded stratified split).
    let labels = t.path().join("labels.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("label", DataType::Int64, false),
    ]));
    let class = |name: &str| match name {
        "cat" => 10,
        "dog" => 2,
        _ => 7,
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| class(r.2)).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::GZIP(Default::default()))
        .build();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(&labels).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let args = [
        "eval",
        "--features",
        features.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--per-class",
        "3,all",
        "--seed",
        "11",
        "--json",
    ];
    let first = run_cli(&args);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let second = run_cli(&args);
    let strip = |mut v: serde_json::Value| {
        for r in v["results"].as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("seconds");
        }
        v
    };
    let (a, b) = (strip(json(&first)), strip(json(&second)));
    assert_eq!(a, b, "same seed, same report");
    assert_eq!(
        a["classes"],
        serde_json::json!(["2", "7", "10"]),
        "numeric order"
    );
    assert_eq!(a["split"]["source"], "stratified");
    assert_eq!(a["split"]["test_per_class"], serde_json::json!([6, 6, 6]));
    for r in a["results"].as_array().unwrap() {
        assert!(r["accuracy_mean"].as_f64().unwrap() >= 0.99, "{r}");
    }
}

#[test]
fn eval_fails_on_labeled_keys_without_features_unless_allowed() {
    let t = tempfile::tempdir().unwrap();
    let rows = blobs(12);
    let features = t.path().join("f.parquet");
    write_features(&features, &features_of(&rows), false);
    let labels = t.path().join("labels.csv");
    labels_csv(&labels, &rows, true);
    let mut text_labels = std::fs::read_to_string(&labels).unwrap();
    text_labels.push_str("ghost-1,cat,train\nghost-2,dog,test\n");
    std::fs::write(&labels, text_labels).unwrap();
    let base = [
        "eval",
        "--features",
        features.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--probe",
        "knn",
    ];
    let out = run_cli(&base);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("2 labeled key(s)")
            && err.contains("\"ghost-1\"")
            && err.contains("--allow-missing"),
        "{err}"
    );

    let mut allowed = base.to_vec();
    allowed.push("--allow-missing");
    let out = run_cli(&allowed);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("skipped 2") && err.contains("ghost-2"),
        "{err}"
    );
}

#[test]
fn eval_reports_duplicate_keys_bad_embeddings_and_missing_columns() {
    let t = tempfile::tempdir().unwrap();
    let rows = blobs(6);
    let labels = t.path().join("labels.csv");
    labels_csv(&labels, &rows, true);
    let run = |features: &Path, labels: &Path| {
        let out = run_cli(&[
            "eval",
            "--features",
            features.to_str().unwrap(),
            "--labels",
            labels.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        text(&out.stderr)
    };

    // A key twice in the features.
    let dup = t.path().join("dup.parquet");
    let mut feats = features_of(&rows);
    feats.push(feats[4].clone());
    write_features(&dup, &feats, false);
    let err = run(&dup, &labels);
    assert!(
        err.contains("duplicate key \"img-1-001\"") && err.contains("dup.parquet"),
        "{err}"
    );

    // A key twice in the labels.
    let good = t.path().join("good.parquet");
    write_features(&good, &features_of(&rows), false);
    let dup_labels = t.path().join("dup.csv");
    let mut body = std::fs::read_to_string(&labels).unwrap();
    body.push_str("img-0-002,dog,train\n");
    std::fs::write(&dup_labels, body).unwrap();
    let err = run(&good, &dup_labels);
    assert!(
        err.contains("\"img-0-002\"") && err.contains("dup.csv"),
        "{err}"
    );

    // Ragged and non-finite embeddings name their key.
    let ragged = t.path().join("ragged.parquet");
    let mut feats = features_of(&rows);
    feats[7].1.push(1.0);
    write_features(&ragged, &feats, true);
    let err = run(&ragged, &labels);
    assert!(
        err.contains(&format!("{:?}", feats[7].0)) && err.contains("17 values, expected 16"),
        "{err}"
    );
    let nan = t.path().join("nan.parquet");
    let mut feats = features_of(&rows);
    feats[3].1[5] = f32::NAN;
    write_features(&nan, &feats, false);
    let err = run(&nan, &labels);
    assert!(
        err.contains(&format!("{:?}", feats[3].0)) && err.contains("non-finite"),
        "{err}"
    );

    // A labels file without a label column.
    let no_label = t.path().join("nolabel.csv");
    std::fs::write(&no_label, "key,class\nimg-0-000,cat\n").unwrap();
    let err = run(&good, &no_label);
    assert!(
        err.contains("nolabel.csv")
            && err.contains("no `label` column")
            && err.contains("key, class"),
        "{err}"
    );

    // More examples per class than the pool holds.
    let out = run_cli(&[
        "eval",
        "--features",
        good.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--per-class",
        "50",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("fewer than the 50 per class"), "{err}");
}
