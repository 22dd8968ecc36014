//! `list` source: the image paths written in a text file, one per line, in file order.
//!
//! Blank lines and lines starting with `#` are ignored. Relative paths are relative to the list
//! file's folder. The key is the path exactly as written, so it is stable however the list file is
//! moved. A path listed twice would break key uniqueness: the second one is reported as an error
//! record instead of being read again.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Problem, ReadLater, SourceError, SourceKind, StopFlag, Visit, check_file, read_file};

/// `[source] kind = "list"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListConfig {
    /// A text file with one image path per line (relative paths are relative to the list file).
    pub path: PathBuf,
}

impl SourceKind for ListConfig {
    fn check(&mut self, resolve: &dyn Fn(&Path) -> PathBuf) -> Vec<Problem> {
        check_file(&mut self.path, "list file", resolve)
    }

    fn list(&self, stop: &StopFlag, visit: Visit) -> Result<(), SourceError> {
        run(&self.path, stop, visit)
    }
}

fn run(
    file: &Path,
    stop: &StopFlag,
    out: &mut dyn FnMut(String, ReadLater) -> bool,
) -> Result<(), SourceError> {
    let reader = std::fs::File::open(file).map_err(|e| SourceError::Input {
        action: "read the list file",
        path: file.to_path_buf(),
        reason: e.to_string(),
    })?;
    let base = file.parent().unwrap_or(Path::new(""));
    let origin = Origin {
        action: "read the list file",
        path: file,
    };
    read_paths(std::io::BufReader::new(reader), base, origin, stop, out)
}

/// Where a list of paths comes from, for messages: the failed action and the file (or `-`).
pub(super) struct Origin<'a> {
    pub action: &'static str,
    pub path: &'a Path,
}

/// Lists the image paths read from `reader`, one per line (blank lines and `#` comments
/// ignored), each keyed as written; relative paths are relative to `base`. A path listed again is
/// an error record. Shared by `list` and `stdin` with `format = "paths"`.
pub(super) fn read_paths(
    reader: impl BufRead,
    base: &Path,
    origin: Origin,
    stop: &StopFlag,
    out: &mut dyn FnMut(String, ReadLater) -> bool,
) -> Result<(), SourceError> {
    // 128-bit fingerprints rather than the keys themselves: a long list costs 16 bytes a line.
    let mut seen: HashSet<u128> = HashSet::new();
    for entry in lines(reader) {
        let entry = entry.map_err(|e| SourceError::Input {
            action: origin.action,
            path: origin.path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if stop.is_stopped() {
            return Ok(());
        }
        let read: ReadLater = if seen.insert(fingerprint(&entry)) {
            let path = Path::new(&entry);
            let path = if path.is_absolute() {
                path.to_path_buf()
            } else {
                base.join(path)
            };
            Box::new(move || read_file(&path))
        } else {
            let reason = format!("listed more than once in {}", origin.path.display());
            Box::new(move || Err(reason))
        };
        if !out(entry, read) {
            return Ok(());
        }
    }
    Ok(())
}

/// The entries of a list: each line trimmed, blank lines and lines starting with `#` left out.
pub(super) fn lines(reader: impl BufRead) -> impl Iterator<Item = std::io::Result<String>> {
    reader.lines().filter_map(|line| match line {
        Ok(line) => {
            let entry = line.trim();
            (!entry.is_empty() && !entry.starts_with('#')).then(|| Ok(entry.to_string()))
        }
        Err(e) => Some(Err(e)),
    })
}

/// A 128-bit fingerprint of a key, for duplicate checks that do not keep the keys.
pub fn fingerprint(key: &str) -> u128 {
    // Two independent FNV-1a passes; collisions at 2^-64 per pair are far below any real risk.
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    for &byte in key.as_bytes() {
        a = (a ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
        b = (b ^ byte as u64)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(5);
    }
    ((a as u128) << 64) | b as u128
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Emit, Order, SourceConfig};

    #[test]
    fn reads_listed_files_relative_to_the_list_and_flags_duplicates() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a.png"), b"A").unwrap();
        let list = t.path().join("list.txt");
        std::fs::write(&list, "# comment\na.png\n\nmissing.png\na.png\n").unwrap();
        let mut got = vec![];
        struct C<'a>(&'a mut Vec<(String, Result<Vec<u8>, String>)>);
        impl Emit for C<'_> {
            fn emit(&mut self, key: String, bytes: Result<Vec<u8>, String>) -> bool {
                self.0.push((key, bytes));
                true
            }
        }
        let spec = SourceConfig::List(ListConfig { path: list })
            .check(&Path::to_path_buf)
            .unwrap();
        crate::source::run(
            &spec,
            Order::default(),
            &StopFlag::default(),
            &mut C(&mut got),
        )
        .unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].1.as_deref().unwrap(), b"A");
        assert!(got[1].1.as_ref().unwrap_err().contains("cannot read"));
        assert!(got[2].1.as_ref().unwrap_err().contains("more than once"));
    }
}
