//! Sources: where images come from. A source turns a location into a stream of [`Sample`]s.
//!
//! Guarantees:
//! - Keys are unique and stable: the same input gives the same keys in the same order, on any
//!   machine. Keys are the row identity downstream (Parquet `key` column, errors file).
//! - Every sample carries a sequence number in source order; the engine uses it to keep output
//!   order (and batch composition, hence bit-identical embeddings) independent of thread timing.
//! - A file that cannot be read is not fatal: it becomes a [`Sample`] whose `bytes` is the error,
//!   counted and reported downstream with its key like a decode failure.
//! - Sources stop when `stop` is set; that is how Ctrl-C ends a run cleanly.
//!
//! A new source kind is one new file here, one [`SourceSpec`] variant and one match arm.

mod dir;
mod list;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use thiserror::Error;

/// File extensions read by the `dir` source unless the pipeline lists its own.
pub const DEFAULT_EXTENSIONS: &[&str] =
    &["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// A validated source description (built by `config`).
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// Every file under `root` whose extension is in `extensions`, in sorted path order.
    Dir {
        root: PathBuf,
        extensions: Vec<String>,
        recursive: bool,
    },
    /// The paths listed in a text file, one per line.
    List { file: PathBuf },
}

/// One input image as read from its source.
#[derive(Debug)]
pub struct Sample {
    /// Position in source order, from 0, without gaps (across epochs).
    pub seq: u64,
    pub key: String,
    /// Which pass over the input this is (0 unless a training run loops over its data).
    pub epoch: u64,
    /// The encoded file, or why it could not be read.
    pub bytes: Result<Vec<u8>, String>,
}

#[derive(Debug, Error)]
pub enum SourceError {
    #[error("cannot list {path}: {reason}")]
    Walk { path: PathBuf, reason: String },
    #[error("cannot read the list file {path}: {reason}")]
    List { path: PathBuf, reason: String },
}

/// Set once to stop the source at the next sample boundary (Ctrl-C).
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Where a source sends what it reads; returns `false` when the receiving side is gone, which
/// ends the source quietly (a later stage failed and is reporting it).
pub trait Emit {
    fn emit(&mut self, key: String, bytes: Result<Vec<u8>, String>) -> bool;
}

/// Runs the source to completion on the calling thread: walks/reads and emits every sample in
/// order. Blocking by design: file reads are blocking syscalls, and a dedicated thread keeps
/// them off the async runtime and off the decode workers.
pub fn run(spec: &SourceSpec, stop: &StopFlag, out: &mut dyn Emit) -> Result<(), SourceError> {
    match spec {
        SourceSpec::Dir {
            root,
            extensions,
            recursive,
        } => dir::run(root, extensions, *recursive, stop, out),
        SourceSpec::List { file } => list::run(file, stop, out),
    }
}

/// Reads a whole file, describing a failure in words for the errors file.
fn read_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}
