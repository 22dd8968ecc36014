//! `watch` source: a folder watched for new image files, until Ctrl-C (or `idle_exit_s` without a
//! new file). Each file is taken once, and only once it is completely written.
//!
//! "Completely written" is decided by stillness: a file is taken once its size and modification
//! time have not changed for `settle_ms` (observed by polling every `poll_ms`). A writer that
//! pauses longer than `settle_ms` in the middle of a file would be read early; such writers should
//! write under a hidden name (`.name.jpg`, skipped like every hidden entry) or another extension
//! and rename into place, which is atomic. Keys are paths relative to the folder, as in `dir`, so a
//! file's key is the same whenever it arrives; files are taken in key order within each poll.
//!
//! Guarantees: a key is listed at most once per run; a run that restarts on the same output
//! skips the keys whose rows an earlier run already published ([`SourceKind::resume`]); memory
//! grows by 16 bytes per file taken (a key fingerprint) plus the files still settling. The source
//! is single-pass and continuous: pipelines that would read it twice are refused by `config`, and
//! the embed run appends to its output instead of replacing it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use super::dir::{check_folder, default_extensions, walk, yes};
use super::list::fingerprint;
use super::{Problem, SourceError, SourceKind, StopFlag, Visit, read_file};

/// `[source] kind = "watch"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// The folder to watch (relative paths are relative to the pipeline file).
    pub path: PathBuf,
    /// Extensions of the files taken, without the dot, any case.
    #[serde(default = "default_extensions")]
    pub extensions: Vec<String>,
    /// Watch subfolders too.
    #[serde(default = "yes")]
    pub recursive: bool,
    /// A file is taken once its size and modification time have not changed for this long.
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
    /// How often the folder is listed.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// End the run after this many seconds without a new file (default: run until Ctrl-C).
    pub idle_exit_s: Option<f64>,
    /// Fingerprints of keys an earlier run published (set by the run, never by the pipeline).
    #[serde(skip)]
    pub published: Option<Arc<HashSet<u128>>>,
}

fn default_settle_ms() -> u64 {
    1000
}
fn default_poll_ms() -> u64 {
    250
}

impl SourceKind for WatchConfig {
    fn check(&mut self, resolve: &dyn Fn(&Path) -> PathBuf) -> Vec<Problem> {
        let mut problems = check_folder(&mut self.path, &mut self.extensions, resolve);
        if self.settle_ms > 3_600_000 {
            problems.push((
                "source.settle_ms",
                format!("{} is more than an hour (0–3,600,000)", self.settle_ms),
            ));
        }
        if !(10..=60_000).contains(&self.poll_ms) {
            problems.push((
                "source.poll_ms",
                format!("{} is outside 10–60,000", self.poll_ms),
            ));
        }
        if let Some(s) = self.idle_exit_s
            && !(s > 0.0 && s.is_finite())
        {
            problems.push(("source.idle_exit_s", format!("must be positive, found {s}")));
        }
        problems
    }

    fn single_pass(&self) -> Option<&'static str> {
        Some("a watched folder is followed once, as files arrive")
    }

    fn continuous(&self) -> bool {
        true
    }

    fn resume(&mut self, published: Arc<HashSet<u128>>) {
        self.published = Some(published);
    }

    fn list(&self, stop: &StopFlag, visit: Visit) -> Result<(), SourceError> {
        let settle = Duration::from_millis(self.settle_ms);
        let poll = Duration::from_millis(self.poll_ms);
        let idle_exit = self.idle_exit_s.map(Duration::from_secs_f64);
        let published = self.published.clone().unwrap_or_default();
        let mut taken: HashSet<u128> = HashSet::new();
        // Files seen but not yet taken: their last (size, mtime) and since when it has held.
        let mut settling: HashMap<String, ((u64, Option<SystemTime>), Instant)> = HashMap::new();
        let mut last_new = Instant::now();
        loop {
            let mut ready = Vec::new();
            let mut present = HashSet::new();
            walk(
                &self.path,
                &self.extensions,
                self.recursive,
                stop,
                &mut |key, path| {
                    let print = fingerprint(&key);
                    if taken.contains(&print) || published.contains(&print) {
                        return true;
                    }
                    let Ok(meta) = std::fs::metadata(&path) else {
                        return true; // gone between listing and looking: seen again if it comes back
                    };
                    let now = Instant::now();
                    let state = (meta.len(), meta.modified().ok());
                    present.insert(key.clone());
                    let entry = settling.entry(key.clone()).or_insert((state, now));
                    if entry.0 != state {
                        *entry = (state, now);
                    } else if now.duration_since(entry.1) >= settle {
                        ready.push((key, print, path));
                    }
                    true
                },
            )?;
            settling.retain(|key, _| present.contains(key));
            for (key, print, path) in ready {
                settling.remove(&key);
                taken.insert(print);
                last_new = Instant::now();
                if !visit(key, Box::new(move || read_file(&path))) {
                    return Ok(());
                }
            }
            if stop.is_stopped() {
                return Ok(());
            }
            if idle_exit.is_some_and(|idle| settling.is_empty() && last_new.elapsed() >= idle) {
                return Ok(());
            }
            sleep_unless_stopped(poll, stop);
        }
    }
}

/// Sleeps for `total`, waking early when `stop` is set (Ctrl-C ends a watch promptly).
fn sleep_unless_stopped(total: Duration, stop: &StopFlag) {
    let until = Instant::now() + total;
    while !stop.is_stopped() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Emit, Order, SourceConfig};
    use std::io::Write;

    fn config(dir: &Path, idle_exit_s: f64) -> WatchConfig {
        WatchConfig {
            path: dir.to_path_buf(),
            extensions: default_extensions(),
            recursive: true,
            settle_ms: 300,
            poll_ms: 20,
            idle_exit_s: Some(idle_exit_s),
            published: None,
        }
    }

    /// Records each key with the bytes read and when it was taken.
    struct Taken(Vec<(String, Vec<u8>, Instant)>);
    impl Emit for Taken {
        fn emit(&mut self, key: String, bytes: Result<Vec<u8>, String>) -> bool {
            self.0.push((key, bytes.unwrap(), Instant::now()));
            true
        }
    }

    fn watch(config: WatchConfig) -> Vec<(String, Vec<u8>, Instant)> {
        let spec = SourceConfig::Watch(config)
            .check(&Path::to_path_buf)
            .unwrap();
        let mut taken = Taken(Vec::new());
        crate::source::run(&spec, Order::default(), &StopFlag::default(), &mut taken).unwrap();
        taken.0
    }

    #[test]
    fn a_file_written_slowly_is_taken_once_complete_and_only_once() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a.png"), b"already here").unwrap();
        std::fs::write(t.path().join("notes.txt"), b"not an image").unwrap();
        let dir = t.path().to_path_buf();
        let writer = std::thread::spawn(move || {
            let mut f = std::fs::File::create(dir.join("b.jpg")).unwrap();
            let mut last_write = Instant::now();
            for chunk in 0..5u8 {
                std::thread::sleep(Duration::from_millis(100)); // shorter than settle_ms
                f.write_all(&[chunk; 1000]).unwrap();
                f.flush().unwrap();
                last_write = Instant::now();
            }
            last_write
        });
        // A second of stillness against writes every 100 ms: a loaded machine cannot make the
        // writer look finished early.
        let taken = watch(WatchConfig {
            settle_ms: 1000,
            ..config(t.path(), 1.5)
        });
        let last_write = writer.join().unwrap();
        let keys: Vec<&str> = taken.iter().map(|(k, ..)| k.as_str()).collect();
        assert_eq!(keys, ["a.png", "b.jpg"]);
        assert_eq!(
            taken[1].1.len(),
            5000,
            "the whole file, never a partial one"
        );
        assert!(taken[1].2 >= last_write + Duration::from_millis(1000));
    }

    #[test]
    fn published_keys_are_skipped_and_bad_settings_are_named() {
        let t = tempfile::tempdir().unwrap();
        for name in ["a.png", "b.png"] {
            std::fs::write(t.path().join(name), name).unwrap();
        }
        let mut c = config(t.path(), 0.5);
        c.resume(Arc::new([fingerprint("a.png")].into_iter().collect()));
        let keys: Vec<String> = watch(c).into_iter().map(|(k, ..)| k).collect();
        assert_eq!(keys, ["b.png"]);

        let mut bad: WatchConfig =
            toml::from_str("path = \"nowhere\"\npoll_ms = 1\nidle_exit_s = -1.0").unwrap();
        let fields: Vec<_> = bad
            .check(&Path::to_path_buf)
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            ["source.path", "source.poll_ms", "source.idle_exit_s"]
        );
    }
}
