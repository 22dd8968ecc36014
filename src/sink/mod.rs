//! Sinks: where results go. Today, Parquet feature files and the errors file beside them.
//!
//! Guarantees (the output contract downstream readers rely on, see DESIGN.md):
//! - A reader never sees half a file: each file is written as `NAME.tmp` and renamed when
//!   complete. An aborted run leaves only `.tmp` files, which readers ignore.
//! - Feature files have the columns `key`, `embedding` (`fixed_size_list<float32>[D]`, or
//!   `list<float32>` on request), `width`, `height`, `model_id`, `pretext`, `event_timestamp`
//!   (UTC), and carry the pipeline text and sslpipe's version in their key-value metadata.
//! - Memory is bounded by one row group, whatever the number of rows.

mod errors_file;
mod features;
pub mod inspect;
mod parts;
mod tensors;

use std::path::PathBuf;

use thiserror::Error;

pub use errors_file::{ErrorRecord, ErrorsFile};
pub use features::{FeatureSinkSpec, FeatureWriter, schema};
pub use parts::{PART_PREFIX, PartFiles, remove_previous_outputs};
pub use tensors::{TensorSinkSpec, TensorWriter};

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
}

pub fn io_err(path: &std::path::Path, e: impl std::fmt::Display) -> SinkError {
    SinkError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Renames `path.tmp` to `path`: the moment a file becomes visible to readers.
pub(crate) fn publish(tmp: &std::path::Path, path: &std::path::Path) -> Result<(), SinkError> {
    std::fs::rename(tmp, path).map_err(|e| io_err(path, e))
}

/// Writes `bytes` to `path` through `path.tmp` and a rename, so `path` is never half-written.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<(), SinkError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| io_err(&tmp, e))?;
    publish(&tmp, path)
}
