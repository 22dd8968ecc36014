//! Reading feature files and joining them with the labels.
//!
//! A features path is one Parquet file or a folder of `part-*.parquet` files (see
//! [`crate::sink::inspect::parquet_files`]); several paths are read one after another. Only the
//! `key` (utf8) and `embedding` (`fixed_size_list<float32>[D]`, `list<float32>` or
//! `large_list<float32>`; float16/float64 values are converted) columns are read.
//!
//! Guarantees: every row is checked, labeled or not — a duplicate key (across all files), an
//! embedding of another length than the first one, a null, or a non-finite value is an
//! [`EvalError`] that names the file and the key. Only the embeddings of labeled keys are kept in
//! memory; unlabeled rows are counted.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, Float32Array, GenericListArray, OffsetSizeTrait};
use arrow::datatypes::{DataType, Float32Type};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::EvalError;

/// The labeled part of the feature files, plus counts of the rest.
#[derive(Debug, Clone, Default)]
pub struct Features {
    /// Every Parquet file read, in order.
    pub files: Vec<PathBuf>,
    /// Embedding length (0 if there were no rows).
    pub dim: usize,
    /// Rows in all files.
    pub rows: usize,
    /// Rows whose key is not in the labels.
    pub unlabeled: usize,
    /// For each label row: the index of its embedding in `values` (in units of `dim`), if any.
    pub of_label: Vec<Option<usize>>,
    /// Embeddings of labeled keys, in reading order, `dim` values each.
    pub values: Vec<f32>,
}

fn read_err(path: &Path, e: impl std::fmt::Display) -> EvalError {
    EvalError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Reads every file behind `paths`; `label_index` maps a labeled key to its label row
/// (`label_rows` rows in all).
pub fn read_features(
    paths: &[PathBuf],
    label_index: &HashMap<String, usize>,
    label_rows: usize,
) -> Result<Features, EvalError> {
    let mut out = Features {
        of_label: vec![None; label_rows],
        ..Default::default()
    };
    for path in paths {
        if !path.exists() {
            return Err(read_err(path, "no such file or folder"));
        }
        let files = crate::sink::inspect::parquet_files(path)?;
        out.files.extend(files);
    }
    // Key → file index, to name both files of a duplicate.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut first_key = String::new();
    for (f, file) in out.files.clone().iter().enumerate() {
        read_file(f, file, label_index, &mut seen, &mut first_key, &mut out)?;
    }
    Ok(out)
}

fn read_file(
    file_index: usize,
    path: &Path,
    label_index: &HashMap<String, usize>,
    seen: &mut HashMap<String, usize>,
    first_key: &mut String,
    out: &mut Features,
) -> Result<(), EvalError> {
    let handle = std::fs::File::open(path).map_err(|e| read_err(path, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(handle).map_err(|e| read_err(path, e))?;
    let schema = builder.schema().clone();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let missing = |name: &str| EvalError::MissingColumn {
        path: path.to_path_buf(),
        missing: name.to_string(),
        found: names.join(", "),
    };
    let key_col = names
        .iter()
        .position(|&n| n == "key")
        .ok_or_else(|| missing("key"))?;
    let emb_col = names
        .iter()
        .position(|&n| n == "embedding")
        .ok_or_else(|| missing("embedding"))?;
    let column_type = |col: usize, expected: &'static str| EvalError::ColumnType {
        path: path.to_path_buf(),
        column: names[col].to_string(),
        expected,
        found: schema.field(col).data_type().to_string(),
    };
    if !matches!(
        schema.field(key_col).data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        return Err(column_type(key_col, "a string"));
    }
    let float_item =
        |t: &DataType| matches!(t, DataType::Float32 | DataType::Float16 | DataType::Float64);
    match schema.field(emb_col).data_type() {
        DataType::FixedSizeList(item, _) | DataType::List(item) | DataType::LargeList(item)
            if float_item(item.data_type()) => {}
        _ => return Err(column_type(emb_col, "a list of float32")),
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), [key_col, emb_col]);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(|e| read_err(path, e))?;
    let (key_pos, emb_pos) = if key_col < emb_col { (0, 1) } else { (1, 0) };
    for batch in reader {
        let batch = batch.map_err(|e| read_err(path, e))?;
        let keys = arrow::compute::cast(batch.column(key_pos), &DataType::Utf8)
            .map_err(|e| read_err(path, e))?;
        let keys = keys.as_string::<i32>();
        let (values, ranges) = embedding_rows(path, batch.column(emb_pos).as_ref())?;
        let raw = values.values();
        for (r, range) in ranges.into_iter().enumerate() {
            if keys.is_null(r) {
                return Err(EvalError::Null {
                    path: path.to_path_buf(),
                    row: out.rows + 1,
                    column: "key".into(),
                });
            }
            let key = keys.value(r);
            let Some(range) = range else {
                return Err(EvalError::Null {
                    path: path.to_path_buf(),
                    row: out.rows + 1,
                    column: format!("embedding (key {key:?})"),
                });
            };
            if let Some(prev) = seen.insert(key.to_string(), file_index) {
                let place = if prev == file_index {
                    format!("features file {}", path.display())
                } else {
                    format!(
                        "features (files {} and {})",
                        out.files[prev].display(),
                        path.display()
                    )
                };
                return Err(EvalError::DuplicateKey {
                    key: key.to_string(),
                    place,
                });
            }
            if out.rows == 0 {
                out.dim = range.len();
                *first_key = key.to_string();
            } else if range.len() != out.dim {
                return Err(EvalError::Dimension {
                    path: path.to_path_buf(),
                    key: key.to_string(),
                    expected: out.dim,
                    found: range.len(),
                    first_key: first_key.clone(),
                });
            }
            let embedding = &raw[range.clone()];
            let bad = embedding.iter().position(|v| !v.is_finite()).or_else(|| {
                values
                    .nulls()
                    .and_then(|n| range.clone().position(|i| n.is_null(i)))
            });
            if let Some(index) = bad {
                return Err(EvalError::NonFinite {
                    path: path.to_path_buf(),
                    key: key.to_string(),
                    index,
                });
            }
            out.rows += 1;
            match label_index.get(key) {
                Some(&l) => {
                    out.of_label[l] = Some(out.values.len() / out.dim.max(1));
                    out.values.extend_from_slice(embedding);
                }
                None => out.unlabeled += 1,
            }
        }
    }
    Ok(())
}

/// The float32 values of an embedding column and each row's range in them (`None` for a null).
type EmbeddingRows = (Float32Array, Vec<Option<Range<usize>>>);

/// Each row's range of values in a (large) list column; `None` for a null row.
fn list_ranges<O: OffsetSizeTrait>(list: &GenericListArray<O>) -> Vec<Option<Range<usize>>> {
    let offsets = list.value_offsets();
    (0..list.len())
        .map(|i| (!list.is_null(i)).then(|| offsets[i].as_usize()..offsets[i + 1].as_usize()))
        .collect()
}

/// Splits an embedding column into [`EmbeddingRows`].
fn embedding_rows(path: &Path, column: &dyn Array) -> Result<EmbeddingRows, EvalError> {
    let floats = |values: &dyn Array| -> Result<Float32Array, EvalError> {
        let cast =
            arrow::compute::cast(values, &DataType::Float32).map_err(|e| read_err(path, e))?;
        Ok(cast.as_primitive::<Float32Type>().clone())
    };
    let row = |i: usize, r: Range<usize>| (!column.is_null(i)).then_some(r);
    match column.data_type() {
        DataType::FixedSizeList(_, size) => {
            let list = column.as_fixed_size_list();
            let size = (*size).max(0) as usize;
            let ranges = (0..list.len())
                .map(|i| {
                    let start = list.value_offset_at(i);
                    row(i, start..start + size)
                })
                .collect();
            Ok((floats(list.values().as_ref())?, ranges))
        }
        DataType::List(_) => {
            let list = column.as_list::<i32>();
            Ok((floats(list.values().as_ref())?, list_ranges(list)))
        }
        DataType::LargeList(_) => {
            let list = column.as_list::<i64>();
            Ok((floats(list.values().as_ref())?, list_ranges(list)))
        }
        other => Err(read_err(
            path,
            format!("embedding column is {other}, expected a list of float32"),
        )),
    }
}
