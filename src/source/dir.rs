//! `dir` source: every image file below a folder, depth-first in sorted name order.
//!
//! The key is the path relative to the root with `/` separators, so it is the same on every
//! machine and unique by construction. Memory is bounded by the widest folder listing, not by the
//! number of files: folders are listed one at a time as the walk reaches them. Hidden entries
//! (names starting with `.`) and symbolic links to folders are skipped, which avoids cycles.

use std::path::{Path, PathBuf};

use super::{ReadLater, SourceError, StopFlag, read_file};

pub(super) fn run(
    root: &Path,
    extensions: &[String],
    recursive: bool,
    stop: &StopFlag,
    out: &mut dyn FnMut(String, ReadLater) -> bool,
) -> Result<(), SourceError> {
    // Stack of pending folder listings; each is sorted descending so `pop` yields ascending order.
    let mut stack: Vec<Vec<(String, PathBuf, bool)>> = vec![list(root, "")?];
    while let Some(top) = stack.last_mut() {
        let Some((key, path, is_dir)) = top.pop() else {
            stack.pop();
            continue;
        };
        if stop.is_stopped() {
            return Ok(());
        }
        if is_dir {
            if recursive {
                stack.push(list(&path, &key)?);
            }
            continue;
        }
        if !has_extension(&key, extensions) {
            continue;
        }
        if !out(key, Box::new(move || read_file(&path))) {
            return Ok(());
        }
    }
    Ok(())
}

/// Lists one folder as `(key, path, is_dir)`, sorted so that popping gives byte order of keys.
fn list(dir: &Path, prefix: &str) -> Result<Vec<(String, PathBuf, bool)>, SourceError> {
    let walk_err = |e: std::io::Error| SourceError::Walk {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(walk_err)? {
        let entry = entry.map_err(walk_err)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            tracing::warn!(
                "skipping {}: the name is not valid UTF-8",
                entry.path().display()
            );
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let file_type = entry.file_type().map_err(walk_err)?;
        let is_dir = file_type.is_dir();
        // A link is followed only when it points at a file: following folder links can loop.
        let is_file = file_type.is_file() || (file_type.is_symlink() && entry.path().is_file());
        if !is_dir && !is_file {
            continue;
        }
        let key = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        entries.push((key, entry.path(), is_dir));
    }
    entries.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(entries)
}

fn has_extension(key: &str, extensions: &[String]) -> bool {
    let Some((_, ext)) = key.rsplit_once('.') else {
        return false;
    };
    extensions.iter().any(|e| e.eq_ignore_ascii_case(ext))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Emit, Order, SourceSpec};

    fn walk(root: &Path, exts: &[String], recursive: bool, stop: &StopFlag, out: &mut dyn Emit) {
        let spec = SourceSpec::Dir {
            root: root.to_path_buf(),
            extensions: exts.to_vec(),
            recursive,
        };
        crate::source::run(&spec, Order::default(), stop, out).unwrap();
    }

    struct Collect(Vec<(String, bool)>);
    impl Emit for Collect {
        fn emit(&mut self, key: String, bytes: Result<Vec<u8>, String>) -> bool {
            self.0.push((key, bytes.is_ok()));
            true
        }
    }

    #[test]
    fn walks_sorted_recursive_and_filters() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("b/sub")).unwrap();
        std::fs::create_dir_all(r.join(".hidden")).unwrap();
        for f in [
            "z.JPG",
            "a.png",
            "b/sub/c.webp",
            "b/a.txt",
            "b/x.jpeg",
            ".hidden/h.jpg",
            "a2.png",
        ] {
            std::fs::write(r.join(f), b"x").unwrap();
        }
        let exts: Vec<String> = ["jpg", "jpeg", "png", "webp"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut c = Collect(vec![]);
        walk(r, &exts, true, &StopFlag::default(), &mut c);
        let keys: Vec<_> = c.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["a.png", "a2.png", "b/sub/c.webp", "b/x.jpeg", "z.JPG"]
        );

        let mut flat = Collect(vec![]);
        walk(r, &exts, false, &StopFlag::default(), &mut flat);
        assert_eq!(flat.0.len(), 3);
    }

    #[test]
    fn stop_flag_ends_the_walk() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..10 {
            std::fs::write(t.path().join(format!("{i}.png")), b"x").unwrap();
        }
        let stop = StopFlag::default();
        struct StopAfter<'a>(usize, &'a StopFlag);
        impl Emit for StopAfter<'_> {
            fn emit(&mut self, _: String, _: Result<Vec<u8>, String>) -> bool {
                self.0 += 1;
                if self.0 == 3 {
                    self.1.stop();
                }
                true
            }
        }
        let mut e = StopAfter(0, &stop);
        walk(t.path(), &["png".to_string()], true, &stop, &mut e);
        assert_eq!(e.0, 3);
    }
}
