//! Parquet feature files: one row per embedded image, in the output contract's columns.
//!
//! Rows are buffered up to one row group, then handed to [`PartFiles`], which writes, rotates and
//! publishes the files. Memory is bounded by one row group of embeddings. The embedding length
//! may be left open (`dim = 0`): a model may keep it dynamic, so the first batch decides it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, ListArray, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt32Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::parts::PartFiles;
use super::{FeatureRows, Sink, SinkError};
use crate::config::EmbeddingType;

/// Everything fixed for the whole output.
#[derive(Debug, Clone)]
pub struct FeatureSinkSpec {
    pub dir: PathBuf,
    /// Values per embedding; 0: taken from the first batch written.
    pub dim: usize,
    pub embedding_type: EmbeddingType,
    pub rows_per_file: usize,
    pub row_group_rows: usize,
    pub model_id: String,
    /// The pretext task the encoder was trained with (`none` for an untrained encoder).
    pub pretext: String,
    /// Key-value metadata stored in every file (pipeline text, version, ...).
    pub metadata: Vec<(String, String)>,
    /// Publish rows at the latest this long after the first unpublished one ([`Sink::roll`]).
    pub roll: Option<std::time::Duration>,
    /// Number of the first part file (0, or after the parts an earlier run left when appending).
    pub first_part: usize,
}

pub struct FeatureWriter {
    spec: FeatureSinkSpec,
    /// The schema and the files, made once the embedding length is known.
    open: Option<(SchemaRef, PartFiles)>,
    rows_total: u64,
    keys: Vec<String>,
    values: Vec<f32>,
    widths: Vec<u32>,
    heights: Vec<u32>,
    timestamps: Vec<i64>,
    /// When the oldest row not yet in a published file was pushed.
    unpublished_since: Option<std::time::Instant>,
}

impl FeatureWriter {
    pub fn create(spec: FeatureSinkSpec) -> Result<Self, SinkError> {
        let mut writer = Self {
            open: None,
            rows_total: 0,
            keys: Vec::new(),
            values: Vec::new(),
            widths: Vec::new(),
            heights: Vec::new(),
            timestamps: Vec::new(),
            unpublished_since: None,
            spec,
        };
        if writer.spec.dim > 0 {
            writer.open_files()?;
        }
        Ok(writer)
    }

    fn open_files(&mut self) -> Result<&mut (SchemaRef, PartFiles), SinkError> {
        if self.open.is_none() {
            let spec = &self.spec;
            let schema = Arc::new(schema(spec.dim, spec.embedding_type));
            let mut metadata = spec.metadata.clone();
            metadata.push(("sslpipe.model_id".to_string(), spec.model_id.clone()));
            metadata.push(("sslpipe.pretext".to_string(), spec.pretext.clone()));
            let files = PartFiles::new(
                &spec.dir,
                schema.clone(),
                spec.rows_per_file,
                spec.row_group_rows,
                &metadata,
            )?
            .starting_at(spec.first_part);
            self.open = Some((schema, files));
        }
        Ok(self.open.as_mut().expect("opened above"))
    }

    /// Adds one row. `timestamp_us` is microseconds since the Unix epoch, UTC.
    pub fn push(
        &mut self,
        key: &str,
        embedding: &[f32],
        width: u32,
        height: u32,
        timestamp_us: i64,
    ) -> Result<(), SinkError> {
        if self.spec.dim == 0 {
            self.spec.dim = embedding.len();
        }
        let room = self.open_files()?.1.room();
        if embedding.len() != self.spec.dim {
            return Err(SinkError::Dimension {
                key: key.to_string(),
                expected: self.spec.dim,
                found: embedding.len(),
            });
        }
        self.keys.push(key.to_string());
        self.values.extend_from_slice(embedding);
        self.widths.push(width);
        self.heights.push(height);
        self.timestamps.push(timestamp_us);
        self.rows_total += 1;
        self.unpublished_since
            .get_or_insert_with(std::time::Instant::now);
        if self.keys.len() >= self.spec.row_group_rows.min(room) {
            self.flush_row_group()?;
        }
        Ok(())
    }

    fn flush_row_group(&mut self) -> Result<(), SinkError> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let batch = self.take_batch()?;
        self.open_files()?.1.write(&batch)
    }

    fn take_batch(&mut self) -> Result<RecordBatch, SinkError> {
        let n = self.keys.len();
        let dim = self.spec.dim;
        let values = Float32Array::from(std::mem::take(&mut self.values));
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let embedding: ArrayRef = match self.spec.embedding_type {
            EmbeddingType::FixedSizeList => Arc::new(FixedSizeListArray::new(
                item,
                dim as i32,
                Arc::new(values),
                None,
            )),
            EmbeddingType::List => {
                let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(dim, n));
                Arc::new(ListArray::new(item, offsets, Arc::new(values), None))
            }
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(std::mem::take(&mut self.keys))),
            embedding,
            Arc::new(UInt32Array::from(std::mem::take(&mut self.widths))),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.heights))),
            Arc::new(StringArray::from(vec![self.spec.model_id.as_str(); n])),
            Arc::new(StringArray::from(vec![self.spec.pretext.as_str(); n])),
            Arc::new(
                TimestampMicrosecondArray::from(std::mem::take(&mut self.timestamps))
                    .with_timezone("UTC"),
            ),
        ];
        let schema = self.open_files()?.0.clone();
        RecordBatch::try_new(schema, columns).map_err(|e| SinkError::Parquet {
            path: self.spec.dir.clone(),
            reason: e.to_string(),
        })
    }
}

impl Sink for FeatureWriter {
    type Spec = FeatureSinkSpec;
    type Batch = FeatureRows;

    fn open(spec: FeatureSinkSpec) -> Result<Self, SinkError> {
        Self::create(spec)
    }

    fn write(&mut self, rows: &FeatureRows) -> Result<(), SinkError> {
        let dim = rows.dim;
        if rows.keys.len() != rows.sizes.len() || rows.values.len() != rows.keys.len() * dim {
            return Err(SinkError::Tensor {
                key: rows.keys.first().cloned().unwrap_or_default(),
                reason: format!(
                    "a batch of {} keys came with {} sizes and {} values of {dim} per row",
                    rows.keys.len(),
                    rows.sizes.len(),
                    rows.values.len()
                ),
            });
        }
        for (i, key) in rows.keys.iter().enumerate() {
            let (width, height) = rows.sizes[i];
            let embedding = &rows.values[i * dim..(i + 1) * dim];
            self.push(key, embedding, width, height, rows.timestamp_us)?;
        }
        Ok(())
    }

    fn rows(&self) -> u64 {
        self.rows_total
    }

    fn roll(&mut self) -> Result<(), SinkError> {
        let (Some(roll), Some(since)) = (self.spec.roll, self.unpublished_since) else {
            return Ok(());
        };
        if since.elapsed() < roll {
            return Ok(());
        }
        self.flush_row_group()?;
        if let Some((_, files)) = self.open.as_mut() {
            files.close()?;
        }
        self.unpublished_since = None;
        Ok(())
    }

    /// Writes what is buffered, closes and publishes the open file; returns every published file.
    fn commit(mut self) -> Result<Vec<PathBuf>, SinkError> {
        if let Err(e) = self.flush_row_group() {
            self.abort(); // the open file cannot be completed: leave no temporary behind
            return Err(e);
        }
        match self.open {
            Some((_, files)) => files.finish(),
            None => Ok(Vec::new()),
        }
    }

    fn abort(self) {
        if let Some((_, files)) = self.open {
            files.abort();
        }
    }
}

/// Fingerprints ([`crate::source::key_fingerprint`]) of the keys in the part files of `dir`: the
/// rows an earlier run published, which a resumed continuous run does not compute again. Only
/// the `key` column is read.
pub fn published_keys(dir: &Path) -> Result<HashSet<u128>, SinkError> {
    let mut keys = HashSet::new();
    let Ok(files) = super::inspect::parquet_files(dir) else {
        return Ok(keys); // no part files yet
    };
    for file in files {
        let bad = |e: &dyn std::fmt::Display| SinkError::Read {
            path: file.clone(),
            reason: e.to_string(),
        };
        let handle = std::fs::File::open(&file).map_err(|e| bad(&e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(handle).map_err(|e| bad(&e))?;
        let mask = ProjectionMask::columns(builder.parquet_schema(), ["key"]);
        for batch in builder.with_projection(mask).build().map_err(|e| bad(&e))? {
            let batch = batch.map_err(|e| bad(&e))?;
            let column = batch
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| bad(&"its `key` column is not utf8"))?;
            keys.extend(column.iter().flatten().map(crate::source::key_fingerprint));
        }
    }
    Ok(keys)
}

/// The feature schema for embeddings of `dim` values.
pub fn schema(dim: usize, embedding_type: EmbeddingType) -> Schema {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let embedding = match embedding_type {
        EmbeddingType::FixedSizeList => DataType::FixedSizeList(item, dim as i32),
        EmbeddingType::List => DataType::List(item),
    };
    Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("embedding", embedding, false),
        Field::new("width", DataType::UInt32, false),
        Field::new("height", DataType::UInt32, false),
        Field::new("model_id", DataType::Utf8, false),
        Field::new("pretext", DataType::Utf8, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::remove_previous_outputs;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::path::Path;

    fn spec(dir: &Path, rows_per_file: usize, row_group_rows: usize) -> FeatureSinkSpec {
        FeatureSinkSpec {
            dir: dir.to_path_buf(),
            dim: 3,
            embedding_type: EmbeddingType::FixedSizeList,
            rows_per_file,
            row_group_rows,
            model_id: "m1".into(),
            pretext: "none".into(),
            metadata: vec![("sslpipe.version".into(), "test".into())],
            roll: None,
            first_part: 0,
        }
    }

    #[test]
    fn rotates_files_and_round_trips_values() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("part-00009.parquet"), b"stale").unwrap();
        std::fs::write(t.path().join("keep.txt"), b"mine").unwrap();
        remove_previous_outputs(t.path()).unwrap();
        assert!(t.path().join("keep.txt").exists());
        let mut w = FeatureWriter::create(spec(t.path(), 5, 2)).unwrap();
        for i in 0..12 {
            w.push(
                &format!("k{i}"),
                &[i as f32, 0.5, -1.0],
                10 + i,
                20,
                1_700_000_000_000_000,
            )
            .unwrap();
        }
        let files = w.commit().unwrap();
        assert_eq!(files.len(), 3, "12 rows at 5 per file");
        assert!(
            !t.path().join("part-00009.parquet").exists(),
            "stale part removed"
        );
        let mut keys = vec![];
        for f in &files {
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap()).unwrap();
            let kv = reader
                .metadata()
                .file_metadata()
                .key_value_metadata()
                .unwrap()
                .clone();
            assert!(
                kv.iter()
                    .any(|k| k.key == "sslpipe.model_id" && k.value.as_deref() == Some("m1"))
            );
            for batch in reader.build().unwrap() {
                let batch = batch.unwrap();
                let k = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap();
                let e = batch
                    .column(1)
                    .as_any()
                    .downcast_ref::<FixedSizeListArray>()
                    .unwrap();
                for r in 0..batch.num_rows() {
                    let v = e.value(r);
                    let v = v.as_any().downcast_ref::<Float32Array>().unwrap();
                    let i: usize = k.value(r)[1..].parse().unwrap();
                    assert_eq!(v.values(), &[i as f32, 0.5, -1.0]);
                    keys.push(i);
                }
            }
        }
        assert_eq!(keys, (0..12).collect::<Vec<_>>());
        assert!(
            std::fs::read_dir(t.path()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp"))
        );
    }

    #[test]
    fn an_unfinished_writer_leaves_only_tmp_files() {
        let t = tempfile::tempdir().unwrap();
        let mut w = FeatureWriter::create(spec(t.path(), 100, 2)).unwrap();
        for i in 0..4 {
            w.push(&format!("k{i}"), &[0.0; 3], 1, 1, 0).unwrap();
        }
        drop(w); // an abort: never finished
        let names: Vec<String> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["part-00000.parquet.tmp"]);
    }

    #[test]
    fn an_aborted_writer_keeps_its_published_files_and_removes_the_open_one() {
        let t = tempfile::tempdir().unwrap();
        let mut w = FeatureWriter::create(spec(t.path(), 5, 2)).unwrap();
        for i in 0..12 {
            w.push(&format!("k{i}"), &[0.0; 3], 1, 1, 0).unwrap();
        }
        w.abort();
        let mut names: Vec<String> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["part-00000.parquet", "part-00001.parquet"]);
    }

    #[test]
    fn wrong_dimension_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let mut w = FeatureWriter::create(spec(t.path(), 100, 2)).unwrap();
        assert!(matches!(
            w.push("a", &[1.0], 1, 1, 0),
            Err(SinkError::Dimension { .. })
        ));
    }
}
