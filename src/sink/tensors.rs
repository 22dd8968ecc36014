//! Pretext dataset files: one row per sample with its key, task, epoch, source size and every
//! input and target tensor of the task, so trainers written elsewhere (PyTorch, JAX) can read the
//! pseudo-labels sslpipe made.
//!
//! Each tensor is a column of Arrow's canonical `arrow.fixed_shape_tensor` extension type: storage
//! `fixed_size_list<T>[∏shape]`, row-major, with the per-sample shape in the extension metadata —
//! pyarrow reads it back as a tensor of that shape. `uint8` where the data is 8-bit pixels,
//! `float32` or `int64` otherwise. Row groups are sized by bytes, since a row can be large.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray, UInt8Array,
    UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::parts::PartFiles;
use super::{Sink, SinkError};
use crate::pretext::{DType, PretextSample, Signature, TensorData, TensorSpec};

/// Bytes of tensor data per row group: large enough for readers, small enough to bound memory.
const ROW_GROUP_BYTES: usize = 32 << 20;

#[derive(Debug, Clone)]
pub struct TensorSinkSpec {
    pub dir: PathBuf,
    pub task: String,
    pub signature: Signature,
    pub rows_per_file: usize,
    /// Upper bound; the writer also keeps a row group under about 32 MiB of tensor data.
    pub row_group_rows: usize,
    pub metadata: Vec<(String, String)>,
}

/// One pretext sample and where it came from: a row of a pretext dataset file.
#[derive(Debug, Clone)]
pub struct TensorRow {
    pub key: String,
    /// The pass over the input that drew this sample.
    pub epoch: u64,
    /// Size of the source image.
    pub width: u32,
    pub height: u32,
    pub sample: PretextSample,
}

pub struct TensorWriter {
    spec: TensorSinkSpec,
    schema: SchemaRef,
    files: PartFiles,
    group_rows: usize,
    rows_total: u64,
    keys: Vec<String>,
    epochs: Vec<u32>,
    widths: Vec<u32>,
    heights: Vec<u32>,
    tensors: Vec<TensorData>,
}

impl TensorWriter {
    pub fn create(spec: TensorSinkSpec) -> Result<Self, SinkError> {
        let all: Vec<&TensorSpec> = spec
            .signature
            .inputs
            .iter()
            .chain(&spec.signature.targets)
            .collect();
        let schema = Arc::new(schema(&all));
        let row_bytes: usize = all
            .iter()
            .map(|t| t.len() * byte_width(t.dtype))
            .sum::<usize>()
            .max(1);
        let group_rows = spec
            .row_group_rows
            .min((ROW_GROUP_BYTES / row_bytes).max(16));
        let mut metadata = spec.metadata.clone();
        metadata.push(("sslpipe.pretext".to_string(), spec.task.clone()));
        metadata.push((
            "sslpipe.signature".to_string(),
            serde_json::to_string(&spec.signature).unwrap_or_default(),
        ));
        let files = PartFiles::new(
            &spec.dir,
            schema.clone(),
            spec.rows_per_file,
            group_rows,
            &metadata,
        )?;
        let tensors = all
            .iter()
            .map(|t| match t.dtype {
                DType::U8 => TensorData::U8(Vec::new()),
                DType::F32 => TensorData::F32(Vec::new()),
                DType::I64 => TensorData::I64(Vec::new()),
            })
            .collect();
        Ok(Self {
            spec,
            schema,
            files,
            group_rows,
            rows_total: 0,
            keys: Vec::new(),
            epochs: Vec::new(),
            widths: Vec::new(),
            heights: Vec::new(),
            tensors,
        })
    }

    pub fn push(
        &mut self,
        key: &str,
        epoch: u64,
        width: u32,
        height: u32,
        sample: &PretextSample,
    ) -> Result<(), SinkError> {
        let specs = self
            .spec
            .signature
            .inputs
            .iter()
            .chain(&self.spec.signature.targets);
        let values = sample.inputs.iter().chain(&sample.targets);
        for ((spec, value), column) in specs.zip(values).zip(self.tensors.iter_mut()) {
            let ok = value.len() == spec.len();
            match (column, value) {
                (TensorData::U8(c), TensorData::U8(v)) if ok => c.extend_from_slice(v),
                (TensorData::F32(c), TensorData::F32(v)) if ok => c.extend_from_slice(v),
                (TensorData::I64(c), TensorData::I64(v)) if ok => c.extend_from_slice(v),
                _ => {
                    return Err(SinkError::Tensor {
                        key: key.to_string(),
                        reason: format!(
                            "tensor {:?} is {:?} × {}, expected {:?} × {}",
                            spec.name,
                            value.dtype(),
                            value.len(),
                            spec.dtype,
                            spec.len()
                        ),
                    });
                }
            }
        }
        self.keys.push(key.to_string());
        self.epochs.push(epoch as u32);
        self.widths.push(width);
        self.heights.push(height);
        self.rows_total += 1;
        if self.keys.len() >= self.group_rows.min(self.files.room()) {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        let n = self.keys.len();
        if n == 0 {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(std::mem::take(&mut self.keys))),
            Arc::new(StringArray::from(vec![self.spec.task.as_str(); n])),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.epochs))),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.widths))),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.heights))),
        ];
        let specs = self
            .spec
            .signature
            .inputs
            .iter()
            .chain(&self.spec.signature.targets);
        for (spec, column) in specs.zip(self.tensors.iter_mut()) {
            let item = Arc::new(Field::new("item", arrow_type(spec.dtype), true));
            let values: ArrayRef = match column {
                TensorData::U8(v) => Arc::new(UInt8Array::from(std::mem::take(v))),
                TensorData::F32(v) => Arc::new(Float32Array::from(std::mem::take(v))),
                TensorData::I64(v) => Arc::new(Int64Array::from(std::mem::take(v))),
            };
            columns.push(Arc::new(FixedSizeListArray::new(
                item,
                spec.len() as i32,
                values,
                None,
            )));
        }
        let batch =
            RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| SinkError::Parquet {
                path: self.spec.dir.clone(),
                reason: e.to_string(),
            })?;
        self.files.write(&batch)
    }
}

impl Sink for TensorWriter {
    type Spec = TensorSinkSpec;
    type Batch = TensorRow;

    fn open(spec: TensorSinkSpec) -> Result<Self, SinkError> {
        Self::create(spec)
    }

    fn write(&mut self, row: &TensorRow) -> Result<(), SinkError> {
        self.push(&row.key, row.epoch, row.width, row.height, &row.sample)
    }

    fn rows(&self) -> u64 {
        self.rows_total
    }

    fn commit(mut self) -> Result<Vec<PathBuf>, SinkError> {
        if let Err(e) = self.flush() {
            self.abort(); // the open file cannot be completed: leave no temporary behind
            return Err(e);
        }
        self.files.finish()
    }

    fn abort(self) {
        self.files.abort();
    }
}

fn byte_width(d: DType) -> usize {
    match d {
        DType::U8 => 1,
        DType::F32 => 4,
        DType::I64 => 8,
    }
}

fn arrow_type(d: DType) -> DataType {
    match d {
        DType::U8 => DataType::UInt8,
        DType::F32 => DataType::Float32,
        DType::I64 => DataType::Int64,
    }
}

fn schema(tensors: &[&TensorSpec]) -> Schema {
    let mut fields = vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("task", DataType::Utf8, false),
        Field::new("epoch", DataType::UInt32, false),
        Field::new("width", DataType::UInt32, false),
        Field::new("height", DataType::UInt32, false),
    ];
    for t in tensors {
        // Nullable items: the canonical extension's storage type is exactly
        // `fixed_size_list<item: T>` and readers compare it field by field.
        let item = Arc::new(Field::new("item", arrow_type(t.dtype), true));
        let shape = t
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let metadata = [
            (
                "ARROW:extension:name".to_string(),
                "arrow.fixed_shape_tensor".to_string(),
            ),
            (
                "ARROW:extension:metadata".to_string(),
                format!("{{\"shape\":[{shape}]}}"),
            ),
        ];
        fields.push(
            Field::new(
                &t.name,
                DataType::FixedSizeList(item, t.len() as i32),
                false,
            )
            .with_metadata(
                metadata
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            ),
        );
    }
    Schema::new(fields)
}
