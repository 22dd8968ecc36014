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
//! - A [`SourceSpec`] only comes out of [`SourceConfig::check`]: the engine runs checked settings
//!   and never validates them again.
//!
//! A new source kind is one new file here holding its `[source]` settings (a serde struct that
//! denies unknown fields) and their [`SourceKind`] impl — checking the settings and listing the
//! entries of one pass (a key and a way to read the bytes later) — plus one line in the
//! `sources!` registry below, which declares its [`SourceConfig`] variant and its `kind` name.
//! Reading happens here, in pass order; `config` only calls [`SourceConfig::check`].

pub mod dir;
pub mod idx;
pub mod list;
pub mod s3;
pub mod stdin;
pub mod tar;
pub mod watch;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Deserialize;
use thiserror::Error;

pub use dir::DEFAULT_EXTENSIONS;
pub use list::fingerprint as key_fingerprint;

/// A problem in the `[source]` section: the dotted field (`source.path`) and what is wrong.
pub type Problem = (&'static str, String);

/// What every source kind's `[source]` settings implement.
pub trait SourceKind {
    /// Makes relative paths absolute with `resolve` (relative to the pipeline file), normalises
    /// the settings and reports every problem with them. Runs once, before any pass.
    fn check(&mut self, resolve: &dyn Fn(&Path) -> PathBuf) -> Vec<Problem>;
    /// Lists the entries of one pass in the source's own order: a key and a way to read the bytes
    /// later, handed to `visit` until it returns `false` or `stop` is set. Nothing is read here
    /// but what listing needs.
    fn list(&self, stop: &StopFlag, visit: Visit) -> Result<(), SourceError>;
    /// Lists the entries of a pass that reads them: like [`list`](Self::list), and `in_order`
    /// says that every listed entry will be read, in listing order, as soon as it is listed
    /// (unless the pass ends early) — no shuffle, no skip, no held-out subset. Only then may a
    /// kind start reading the next entries before their turn (the `s3` source's GETs in flight);
    /// otherwise an entry must be read only when its `ReadLater` is called.
    fn list_pass(&self, in_order: bool, stop: &StopFlag, visit: Visit) -> Result<(), SourceError> {
        let _ = in_order;
        self.list(stop, visit)
    }
    /// Why the input can be listed only once (standard input), or `None` when every pass can list
    /// it again. `config` refuses a pipeline that would make several passes over a single-pass
    /// source.
    fn single_pass(&self) -> Option<&'static str> {
        None
    }
    /// Whether the input keeps arriving (a watched folder): the run then appends to its output
    /// and, on a restart, resumes ([`SourceKind::resume`]) instead of replacing it.
    fn continuous(&self) -> bool {
        false
    }
    /// A continuous source's restart: keys whose fingerprints are in `published` (rows an earlier
    /// run published) are not listed again. Other kinds replace their output and ignore this.
    fn resume(&mut self, _published: Arc<HashSet<u128>>) {}
}

/// Declares [`SourceConfig`], one variant per source kind, each with its config name.
macro_rules! sources {
    ($($variant:ident($config:ty) = $name:literal,)*) => {
        /// `[source]` in a pipeline: the kind, tagged by `kind`, with its own settings.
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(tag = "kind")]
        pub enum SourceConfig {
            $(#[serde(rename = $name)] $variant($config),)*
        }

        impl SourceConfig {
            fn kind(&self) -> &dyn SourceKind {
                match self {
                    $(SourceConfig::$variant(c) => c,)*
                }
            }
            fn kind_mut(&mut self) -> &mut dyn SourceKind {
                match self {
                    $(SourceConfig::$variant(c) => c,)*
                }
            }
        }
    };
}

// The registry: one line per source kind.
sources! {
    Dir(dir::DirConfig) = "dir",
    List(list::ListConfig) = "list",
    Idx(idx::IdxConfig) = "idx",
    Tar(tar::TarConfig) = "tar",
    Stdin(stdin::StdinConfig) = "stdin",
    Watch(watch::WatchConfig) = "watch",
    S3(s3::S3Config) = "s3",
}

impl SourceConfig {
    /// Resolves relative paths and checks the settings (see [`SourceKind::check`]): the spec the
    /// engine runs, or every problem found.
    pub fn check(mut self, resolve: &dyn Fn(&Path) -> PathBuf) -> Result<SourceSpec, Vec<Problem>> {
        let problems = self.kind_mut().check(resolve);
        if problems.is_empty() {
            Ok(SourceSpec(self))
        } else {
            Err(problems)
        }
    }
}

/// A checked source description (built by [`SourceConfig::check`], which `config` calls).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec(SourceConfig);

impl SourceSpec {
    /// Why the input can be read only once, if it can (see [`SourceKind::single_pass`]).
    pub fn single_pass(&self) -> Option<&'static str> {
        self.0.kind().single_pass()
    }

    /// Whether the input keeps arriving (see [`SourceKind::continuous`]).
    pub fn continuous(&self) -> bool {
        self.0.kind().continuous()
    }

    /// This source, resuming after the keys an earlier run published (see
    /// [`SourceKind::resume`]); `published` holds key fingerprints ([`key_fingerprint`]).
    pub fn resuming(&self, published: Arc<HashSet<u128>>) -> SourceSpec {
        let mut spec = self.clone();
        spec.0.kind_mut().resume(published);
        spec
    }

    /// Lists the entries of one pass in the source's own order.
    fn list(&self, stop: &StopFlag, visit: Visit) -> Result<(), SourceError> {
        self.0.kind().list(stop, visit)
    }

    /// Lists the entries of a pass that reads them (see [`SourceKind::list_pass`]).
    fn list_pass(&self, in_order: bool, stop: &StopFlag, visit: Visit) -> Result<(), SourceError> {
        self.0.kind().list_pass(in_order, stop, visit)
    }
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
    /// A kind could not list its input (`action`: "list", "read the IDX file", …). This ends the
    /// pass; an entry that cannot be read does not (it becomes an error sample).
    #[error("cannot {action} {path}: {reason}")]
    Input {
        action: &'static str,
        path: PathBuf,
        reason: String,
    },
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
        spec.list(stop, &mut |key, _| {
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
pub type ReadLater = Box<dyn FnOnce() -> Result<Vec<u8>, String> + Send>;

/// Takes one listed entry (its key and how to read it); `false` ends the listing.
pub type Visit<'a> = &'a mut dyn FnMut(String, ReadLater) -> bool;

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
    let in_order = order.shuffle.is_none() && order.skip == 0 && order.subset == Subset::All;
    spec.list_pass(in_order, stop, &mut |key, read| pass.push(key, read))?;
    pass.flush();
    Ok(())
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
fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The check of a kind that reads one file at `source.path`: resolves it and reports it unless it
/// is a file (`what` names it in the message: "list file", "IDX file").
fn check_file(path: &mut PathBuf, what: &str, resolve: &dyn Fn(&Path) -> PathBuf) -> Vec<Problem> {
    *path = resolve(path);
    if path.is_file() {
        Vec::new()
    } else {
        vec![(
            "source.path",
            format!("{what} {} does not exist", path.display()),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<SourceConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_registry_names_every_kind_and_each_kind_denies_unknown_keys() {
        let e = config("kind = \"zip\"\npath = \"x\"").unwrap_err();
        assert!(
            e.contains(
                "unknown variant `zip`, expected one of `dir`, `list`, `idx`, `tar`, `stdin`, `watch`, `s3`"
            ),
            "{e}"
        );
        let e = config("kind = \"list\"\npath = \"x\"\nrecursive = true").unwrap_err();
        assert!(e.contains("unknown field `recursive`"), "{e}");
        assert!(matches!(
            config("kind = \"idx\"\npath = \"x\""),
            Ok(SourceConfig::Idx(_))
        ));
    }

    #[test]
    fn check_resolves_paths_and_reports_every_problem_with_its_field() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("list.txt"), "a.png\n").unwrap();
        let resolve = |p: &Path| t.path().join(p);
        let spec = config("kind = \"list\"\npath = \"list.txt\"")
            .unwrap()
            .check(&resolve)
            .unwrap();
        assert_eq!(
            spec.0,
            SourceConfig::List(list::ListConfig {
                path: t.path().join("list.txt")
            })
        );
        let problems = config("kind = \"idx\"\npath = \"missing\"")
            .unwrap()
            .check(&resolve)
            .unwrap_err();
        assert_eq!(
            problems,
            [(
                "source.path",
                format!(
                    "IDX file {} does not exist",
                    t.path().join("missing").display()
                )
            )]
        );
    }
}
