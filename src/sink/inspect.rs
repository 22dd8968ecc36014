//! `sslpipe inspect`: what a feature file holds — schema, row count, the pipeline metadata and a
//! few rows — without any other tool. Accepts one file or a folder of part files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use arrow::array::{Array, FixedSizeListArray, Float32Array, ListArray, TimestampMicrosecondArray};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{PART_PREFIX, SinkError};

/// The Parquet files `path` stands for: itself, or the part files in a folder, sorted.
pub fn parquet_files(path: &Path) -> Result<Vec<PathBuf>, SinkError> {
    let read_err = |e: std::io::Error| SinkError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(PART_PREFIX) && n.ends_with(".parquet"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(SinkError::Read {
            path: path.to_path_buf(),
            reason: "no part-*.parquet files in this folder".into(),
        });
    }
    Ok(files)
}

/// A human-readable description of the file(s) at `path`, with the first `rows` rows.
pub fn describe(path: &Path, rows: usize) -> Result<String, SinkError> {
    let files = parquet_files(path)?;
    let mut out = String::new();
    let mut total = 0i64;
    let mut shown = 0usize;
    for (i, file) in files.iter().enumerate() {
        let read_err = |e: &dyn std::fmt::Display| SinkError::Read {
            path: file.clone(),
            reason: e.to_string(),
        };
        let handle = std::fs::File::open(file).map_err(|e| read_err(&e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(handle).map_err(|e| read_err(&e))?;
        let meta = builder.metadata().clone();
        let file_rows = meta.file_metadata().num_rows();
        total += file_rows;
        if i == 0 {
            let _ = writeln!(out, "schema:");
            for field in builder.schema().fields() {
                let _ = writeln!(
                    out,
                    "  {}: {}{}",
                    field.name(),
                    field.data_type(),
                    if field.is_nullable() { "" } else { " not null" }
                );
            }
            let _ = writeln!(out, "metadata:");
            for kv in meta
                .file_metadata()
                .key_value_metadata()
                .into_iter()
                .flatten()
            {
                if kv.key == "ARROW:schema" {
                    continue;
                }
                let value = kv.value.as_deref().unwrap_or("");
                if value.contains('\n') {
                    let _ = writeln!(out, "  {}: |", kv.key);
                    for line in value.lines() {
                        let _ = writeln!(out, "    {line}");
                    }
                } else {
                    let _ = writeln!(out, "  {}: {value}", kv.key);
                }
            }
        }
        let _ = writeln!(
            out,
            "file {}: {} rows in {} row groups",
            file.display(),
            file_rows,
            meta.num_row_groups()
        );
        if shown < rows {
            let reader = builder
                .with_batch_size(rows - shown)
                .build()
                .map_err(|e| read_err(&e))?;
            for batch in reader {
                let batch = batch.map_err(|e| read_err(&e))?;
                for r in 0..batch.num_rows().min(rows - shown) {
                    let mut cells = Vec::new();
                    for (c, field) in batch.schema().fields().iter().enumerate() {
                        cells.push(format!(
                            "{}={}",
                            field.name(),
                            cell(batch.column(c).as_ref(), r)
                        ));
                    }
                    let _ = writeln!(out, "  row {shown}: {}", cells.join(" "));
                    shown += 1;
                }
                if shown >= rows {
                    break;
                }
            }
        }
    }
    let _ = writeln!(out, "total rows: {total} in {} file(s)", files.len());
    Ok(out)
}

/// One cell as text; embeddings show their length and first values instead of hundreds of floats.
fn cell(column: &dyn Array, row: usize) -> String {
    let floats = |values: &dyn Array| {
        let v = values
            .as_any()
            .downcast_ref::<Float32Array>()
            .map(|a| a.values().to_vec())
            .unwrap_or_default();
        let head: Vec<String> = v.iter().take(4).map(|x| format!("{x:.4}")).collect();
        format!(
            "[{}{}] (len {})",
            head.join(", "),
            if v.len() > 4 { ", …" } else { "" },
            v.len()
        )
    };
    if let Some(list) = column.as_any().downcast_ref::<FixedSizeListArray>() {
        return floats(list.value(row).as_ref());
    }
    if let Some(list) = column.as_any().downcast_ref::<ListArray>() {
        return floats(list.value(row).as_ref());
    }
    // Arrow's formatter needs a time-zone database for named zones; ours are always UTC.
    if let Some(ts) = column.as_any().downcast_ref::<TimestampMicrosecondArray>() {
        return chrono::DateTime::from_timestamp_micros(ts.value(row))
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
            .unwrap_or_else(|| ts.value(row).to_string());
    }
    ArrayFormatter::try_new(column, &FormatOptions::default())
        .map(|f| f.value(row).to_string())
        .unwrap_or_else(|_| "?".into())
}
