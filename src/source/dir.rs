//! `dir` source: every image file below a folder, depth-first in sorted name order.
//!
//! The key is the path relative to the root with `/` separators, so it is the same on every
//! machine and unique by construction. Memory is bounded by the widest folder listing, not by the
//! number of files: folders are listed one at a time as the walk reaches them. Hidden entries
//! (names starting with `.`) and symbolic links to folders are skipped, which avoids cycles.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Problem, ReadLater, SourceError, SourceKind, StopFlag, Visit, read_file};

/// File extensions read by the `dir` source unless the pipeline lists its own.
pub const DEFAULT_EXTENSIONS: &[&str] =
    &["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// `[source] kind = "dir"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirConfig {
    /// The folder to walk (relative paths are relative to the pipeline file).
    pub path: PathBuf,
    /// Extensions of the files read, without the dot, any case (checked: lowercase, no dot).
    #[serde(default = "default_extensions")]
    pub extensions: Vec<String>,
    /// Walk subfolders too.
    #[serde(default = "yes")]
    pub recursive: bool,
}

/// Normalises `source.extensions` (lowercase, no dot) and reports it if empty.
pub(super) fn check_extensions(extensions: &mut [String]) -> Option<Problem> {
    for e in extensions.iter_mut() {
        *e = e.trim_start_matches('.').to_ascii_lowercase();
    }
    extensions.is_empty().then(|| {
        (
            "source.extensions",
            "is empty: no file would be read".to_string(),
        )
    })
}

pub(super) fn default_extensions() -> Vec<String> {
    DEFAULT_EXTENSIONS.iter().map(|s| s.to_string()).collect()
}

pub(super) fn yes() -> bool {
    true
}

/// The check of a kind that reads a folder (`dir`, `watch`): resolves `path` and reports it unless
/// it is a folder; normalises `extensions`.
pub(super) fn check_folder(
    path: &mut PathBuf,
    extensions: &mut [String],
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    *path = resolve(path);
    if !path.is_dir() {
        problems.push(("source.path", format!("{} is not a folder", path.display())));
    }
    problems.extend(check_extensions(extensions));
    problems
}

impl SourceKind for DirConfig {
    fn check(&mut self, resolve: &dyn Fn(&Path) -> PathBuf) -> Vec<Problem> {
        check_folder(&mut self.path, &mut self.extensions, resolve)
    }

    fn list(&self, stop: &StopFlag, visit: Visit) -> Result<(), SourceError> {
        run(&self.path, &self.extensions, self.recursive, stop, visit)
    }
}

fn run(
    root: &Path,
    extensions: &[String],
    recursive: bool,
    stop: &StopFlag,
    out: &mut dyn FnMut(String, ReadLater) -> bool,
) -> Result<(), SourceError> {
    walk(root, extensions, recursive, stop, &mut |key, path| {
        out(key, Box::new(move || read_file(&path)))
    })
}

/// Visits every image file below `root` as `(key, path)`, depth-first in sorted key order, until
/// `visit` returns `false` or `stop` is set (the walk of the `dir` and `watch` sources).
pub(super) fn walk(
    root: &Path,
    extensions: &[String],
    recursive: bool,
    stop: &StopFlag,
    out: &mut dyn FnMut(String, PathBuf) -> bool,
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
        if !out(key, path) {
            return Ok(());
        }
    }
    Ok(())
}

/// Lists one folder as `(key, path, is_dir)`, sorted so that popping gives byte order of keys.
fn list(dir: &Path, prefix: &str) -> Result<Vec<(String, PathBuf, bool)>, SourceError> {
    let walk_err = |e: std::io::Error| SourceError::Input {
        action: "list",
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

pub(super) fn has_extension(key: &str, extensions: &[String]) -> bool {
    let Some((_, ext)) = key.rsplit_once('.') else {
        return false;
    };
    extensions.iter().any(|e| e.eq_ignore_ascii_case(ext))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Emit, Order, SourceConfig};

    fn walk(root: &Path, exts: &[String], recursive: bool, stop: &StopFlag, out: &mut dyn Emit) {
        let spec = SourceConfig::Dir(DirConfig {
            path: root.to_path_buf(),
            extensions: exts.to_vec(),
            recursive,
        })
        .check(&Path::to_path_buf)
        .unwrap();
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

    #[test]
    fn check_resolves_the_folder_and_normalises_extensions() {
        let t = tempfile::tempdir().unwrap();
        let resolve = |p: &Path| t.path().join(p);
        let mut config: DirConfig =
            toml::from_str("path = \".\"\nextensions = [\".JPG\"]").unwrap();
        assert!(config.check(&resolve).is_empty());
        assert_eq!(config.extensions, ["jpg"]);
        assert_eq!(config.path, t.path().join("."));

        let mut config: DirConfig = toml::from_str("path = \"nowhere\"\nextensions = []").unwrap();
        let fields: Vec<_> = config.check(&resolve).into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["source.path", "source.extensions"]);

        let config: DirConfig = toml::from_str("path = \"x\"").unwrap();
        assert_eq!(config.extensions, DEFAULT_EXTENSIONS);
        assert!(config.recursive);
    }
}
