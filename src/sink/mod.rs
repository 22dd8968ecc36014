//! Sinks: where results go — Parquet feature files, pretext dataset files, and the errors file
//! beside them. Every output implements [`Sink`]; every file is published through
//! [`crate::atomic`].
//!
//! Guarantees (the output contract downstream readers rely on, see DESIGN.md):
//! - A reader never sees half a file: each file is written as `NAME.tmp` and renamed when
//!   complete. An aborted run leaves only `.tmp` files, which readers ignore; a sink that is
//!   aborted ([`Sink::abort`]) removes its unpublished temporary.
//! - Feature files have the columns `key`, `embedding` (`fixed_size_list<float32>[D]`, or
//!   `list<float32>` on request), `width`, `height`, `model_id`, `pretext`, `event_timestamp`
//!   (UTC), and carry the pipeline text and sslpipe's version in their key-value metadata.
//! - Memory is bounded by one row group, whatever the number of rows.
//! - With a roll interval (`[output] roll_seconds`), a row is published at most that long after
//!   it is written (plus a tick), whether or not more rows follow.
//!
//! A new output is one new file here implementing [`Sink`] for the batches it takes
//! ([`FeatureRows`] for features), and one arm where the run picks its sink.

mod errors_file;
pub mod feast;
mod features;
pub mod inspect;
mod parts;
mod tensors;

use std::path::PathBuf;

use thiserror::Error;

pub use errors_file::{ErrorRecord, ErrorsFile};
pub use features::{FeatureSinkSpec, FeatureWriter, published_keys, schema};
pub use parts::{
    PART_PREFIX, PartFiles, next_part_number, remove_previous_outputs, remove_unfinished_outputs,
};
pub use tensors::{TensorRow, TensorSinkSpec, TensorWriter};

#[derive(Debug, Error)]
pub enum SinkError {
    #[error("cannot write {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("cannot write Parquet file {path}: {reason}")]
    Parquet { path: PathBuf, reason: String },
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("sample {key:?}: {reason}")]
    Tensor { key: String, reason: String },
    #[error("embedding of key {key:?} has {found} values, expected {expected}")]
    Dimension {
        key: String,
        expected: usize,
        found: usize,
    },
    #[error(transparent)]
    Write(#[from] crate::atomic::WriteError),
}

/// An output that takes batches of rows and publishes them atomically. The lifecycle is
/// open → write* → commit, or abort at any point after open.
pub trait Sink: Send + Sized {
    /// Everything fixed for the whole output (folder, schema parameters, metadata).
    type Spec;
    /// What one [`write`](Sink::write) takes.
    type Batch;
    /// Prepares the output; nothing is visible to readers yet.
    fn open(spec: Self::Spec) -> Result<Self, SinkError>;
    /// Adds rows. Files fill and are published as they are complete (by rows per file).
    fn write(&mut self, batch: &Self::Batch) -> Result<(), SinkError>;
    /// Rows accepted so far.
    fn rows(&self) -> u64;
    /// Publishes what was written if its oldest row has waited the sink's roll interval (outputs
    /// that roll by time; called between batches and while input is idle). Default: by rows only.
    fn roll(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    /// Publishes everything accepted; returns every file this sink published.
    fn commit(self) -> Result<Vec<PathBuf>, SinkError>;
    /// Discards what is not yet published (the open file's temporary is removed); files already
    /// published stay. Used when the sink itself failed, so nothing half-written is left.
    fn abort(self);
}

/// A batch of embedded images, in source order: `values` holds `dim` floats per key.
#[derive(Debug, Clone, Default)]
pub struct FeatureRows {
    pub keys: Vec<String>,
    /// Width and height of each source image.
    pub sizes: Vec<(u32, u32)>,
    pub values: Vec<f32>,
    pub dim: usize,
    /// Microseconds since the Unix epoch, UTC, for every row of the batch.
    pub timestamp_us: i64,
}

pub fn io_err(path: &std::path::Path, e: impl std::fmt::Display) -> SinkError {
    SinkError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Writes `bytes` to `path` atomically (see [`crate::atomic`]).
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<(), SinkError> {
    Ok(crate::atomic::write(path, bytes)?)
}
