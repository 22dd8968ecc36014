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
//! - [`Order`] decides the order of one pass: the source's own (sorted) order, or a shuffle that is
//!   a pure function of a seed (training), and how many leading samples to pass over without
//!   reading them (resuming). Shuffling holds at most [`SHUFFLE_WINDOW`] *unread* entries (a path
//!   or a record number each, never image bytes), so memory stays bounded on any input.
//!
//! A new source kind is one new file here, one [`SourceSpec`] variant and one match arm. A kind
//! lists entries (a key and a way to read the bytes later); reading happens here, in pass order.

mod dir;
mod idx;
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
    /// The images of an IDX file (MNIST / Fashion-MNIST layout), one sample per record.
    Idx { file: PathBuf },
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
    #[error("cannot read the IDX file {path}: {reason}")]
    Idx { path: PathBuf, reason: String },
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

/// How one pass over a source is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Order {
    /// `Some(seed)`: shuffle the pass (windows of [`SHUFFLE_WINDOW`] entries) with this seed.
    pub shuffle: Option<u64>,
    /// Pass over this many leading samples (in the pass's order) without reading them.
    pub skip: u64,
    /// Which samples the pass contains; the others are neither read nor counted.
    pub subset: Subset,
}

/// A part of the input chosen by key, the same on every pass and every machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Subset {
    #[default]
    All,
    /// Only the held-out keys.
    Only(Holdout),
    /// Every key but the held-out ones.
    Without(Holdout),
}

/// The held-out keys: those whose hash falls below a threshold. Whether a key is held out depends
/// on the key alone (not on the order, the seed or the pass), so it is the same on every pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holdout {
    threshold: u64,
}

impl Holdout {
    /// Lists `spec` once (nothing is read; 8 bytes a key) and holds out exactly the
    /// `count(total)` keys with the smallest hashes (fewer only if hashes collide). Returns the
    /// held-out set, the number of keys listed and the number held out.
    pub fn choose(
        spec: &SourceSpec,
        count: impl FnOnce(u64) -> u64,
        stop: &StopFlag,
    ) -> Result<(Self, u64, u64), SourceError> {
        let mut hashes = Vec::new();
        list(spec, stop, &mut |key, _| {
            hashes.push(Self::hash(&key));
            true
        })?;
        let total = hashes.len() as u64;
        let count = (count(total) as usize).min(hashes.len());
        let threshold = if count == 0 {
            0
        } else if count == hashes.len() {
            u64::MAX
        } else {
            *hashes.select_nth_unstable(count).1
        };
        Ok((Holdout { threshold }, total, count as u64))
    }

    fn hash(key: &str) -> u64 {
        crate::rng::Rng::for_key(0x0048_454c_444f_5554, key).next_u64()
    }

    pub fn contains(&self, key: &str) -> bool {
        Self::hash(key) < self.threshold
    }
}

impl Subset {
    fn contains(&self, key: &str) -> bool {
        match self {
            Subset::All => true,
            Subset::Only(h) => h.contains(key),
            Subset::Without(h) => !h.contains(key),
        }
    }
}

/// Entries shuffled together: a full shuffle for inputs up to this size, a windowed one beyond.
/// An entry is a key and a path or record number (~100 bytes), so a window costs a few MB.
pub const SHUFFLE_WINDOW: usize = 65_536;

/// Reads an entry's bytes when its turn comes (never earlier: skipped entries are never read).
pub(crate) type ReadLater = Box<dyn FnOnce() -> Result<Vec<u8>, String> + Send>;

/// Runs one pass of the source on the calling thread: lists the entries, puts them in `order`,
/// reads and emits each in turn. Blocking by design: file reads are blocking syscalls, and a
/// dedicated thread keeps them off the async runtime and off the decode workers.
pub fn run(
    spec: &SourceSpec,
    order: Order,
    stop: &StopFlag,
    out: &mut dyn Emit,
) -> Result<(), SourceError> {
    let mut pass = Pass {
        order,
        window: Vec::new(),
        position: 0,
        out,
        stop,
        closed: false,
    };
    list(spec, stop, &mut |key, read| pass.push(key, read))?;
    pass.flush();
    Ok(())
}

/// Lists the entries of one pass in the source's own order.
fn list(
    spec: &SourceSpec,
    stop: &StopFlag,
    visit: &mut dyn FnMut(String, ReadLater) -> bool,
) -> Result<(), SourceError> {
    match spec {
        SourceSpec::Dir {
            root,
            extensions,
            recursive,
        } => dir::run(root, extensions, *recursive, stop, visit),
        SourceSpec::List { file } => list::run(file, stop, visit),
        SourceSpec::Idx { file } => idx::run(file, stop, visit),
    }
}

/// One pass in progress: orders the listed entries, skips, reads and emits.
struct Pass<'a> {
    order: Order,
    window: Vec<(String, ReadLater)>,
    /// Entries released so far in this pass (skipped ones included).
    position: u64,
    out: &'a mut dyn Emit,
    stop: &'a StopFlag,
    closed: bool,
}

impl Pass<'_> {
    /// Takes one listed entry; returns `false` when the pass should end.
    fn push(&mut self, key: String, read: ReadLater) -> bool {
        if self.order.shuffle.is_none() {
            return self.release(key, read);
        }
        self.window.push((key, read));
        if self.window.len() >= SHUFFLE_WINDOW {
            self.flush();
        }
        !self.closed
    }

    /// Releases the buffered window in shuffled order.
    fn flush(&mut self) {
        let Some(seed) = self.order.shuffle else {
            return;
        };
        let mut window = std::mem::take(&mut self.window);
        // A distinct stream per window, so window k of every epoch is shuffled independently.
        let mut rng =
            crate::rng::Rng::new(seed ^ self.position.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for i in (1..window.len()).rev() {
            let j = rng.index(i + 1);
            window.swap(i, j);
        }
        for (key, read) in window {
            if !self.release(key, read) {
                return;
            }
        }
    }

    fn release(&mut self, key: String, read: ReadLater) -> bool {
        if self.closed || self.stop.is_stopped() {
            self.closed = true;
            return false;
        }
        if !self.order.subset.contains(&key) {
            return true;
        }
        self.position += 1;
        if self.position <= self.order.skip {
            return true;
        }
        self.closed = !self.out.emit(key, read());
        !self.closed
    }
}

/// Reads a whole file, describing a failure in words for the errors file.
fn read_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}
