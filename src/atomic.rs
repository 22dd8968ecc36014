//! Atomic file writes: the one way sslpipe publishes a file (feature parts, the errors file,
//! `encoder.onnx`, checkpoints, plots, permutation sets, eval reports).
//!
//! Guarantees:
//! - A reader never sees half a file: the bytes go to `NAME.tmp` in the target's folder, are
//!   synced to disk, and the temporary is renamed over `NAME` only when complete. A crash or an
//!   abort leaves at most a `.tmp` file, which readers ignore.
//! - Durable once published: the file is synced before the rename and the folder after it.
//! - The temporary is created with `O_EXCL | O_NOFOLLOW`: a symlink (or anything else) planted at
//!   `NAME.tmp` is removed as a name, never followed, so no file outside the output is written.
//! - The target must be a regular file or absent: a FIFO, a device node, a folder or a symlink at
//!   `NAME` is refused with an error instead of being replaced.
//! - A file that is abandoned (an error while writing, [`Staged::abort`]) is removed, not left
//!   as a stale `.tmp`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// A write that could not be done, with the file it concerns.
#[derive(Debug, Error)]
#[error("cannot write {}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl WriteError {
    pub fn new(path: &Path, source: std::io::Error) -> Self {
        Self {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The temporary of a file being written, not yet visible under its name.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    path: PathBuf,
}

/// `path` with `.tmp` appended (`part-00000.parquet` → `part-00000.parquet.tmp`).
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

impl Staged {
    /// Creates `path.tmp` for writing (see the module guarantees) and returns it with its file.
    pub fn create(path: &Path) -> Result<(Staged, File), WriteError> {
        refuse_non_regular(path)?;
        let tmp = tmp_path(path);
        // A leftover of an aborted run, or something planted there: removed as a name (unlink
        // never follows a symlink). If another one appears before the open, O_EXCL refuses it.
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(WriteError::new(&tmp, e)),
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644)
            .open(&tmp)
            .map_err(|e| WriteError::new(&tmp, e))?;
        let staged = Staged {
            tmp,
            path: path.to_path_buf(),
        };
        Ok((staged, file))
    }

    /// The temporary's path (for messages).
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// The name the file gets when committed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Syncs `file` (the one [`create`](Self::create) returned, written to the end) and renames
    /// the temporary to its name. On failure the temporary is removed.
    pub fn commit(self, file: File) -> Result<PathBuf, WriteError> {
        let result = file
            .sync_all()
            .map_err(|e| WriteError::new(&self.tmp, e))
            .and_then(|()| {
                drop(file);
                refuse_non_regular(&self.path)
            })
            .and_then(|()| {
                std::fs::rename(&self.tmp, &self.path).map_err(|e| WriteError::new(&self.path, e))
            });
        match result {
            Ok(()) => {
                sync_folder(&self.path);
                Ok(self.path)
            }
            Err(e) => {
                self.abort();
                Err(e)
            }
        }
    }

    /// Abandons the file: the temporary is removed and nothing appears under the name.
    pub fn abort(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Writes `bytes` to `path` atomically (see the module guarantees).
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let (staged, mut file) = Staged::create(path)?;
    if let Err(e) = file.write_all(bytes) {
        let tmp = staged.tmp.clone();
        staged.abort();
        return Err(WriteError::new(&tmp, e));
    }
    staged.commit(file).map(drop)
}

/// Makes a rename in `path`'s folder durable. Best effort: not every filesystem lets a folder be
/// synced, and the file itself is already on disk.
fn sync_folder(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
}

/// Errors unless `path` is absent or a regular file (not followed if it is a symlink).
fn refuse_non_regular(path: &Path) -> Result<(), WriteError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(WriteError::new(path, e)),
        Ok(m) if m.file_type().is_file() => Ok(()),
        Ok(m) => {
            let what = if m.file_type().is_symlink() {
                "a symbolic link"
            } else if m.is_dir() {
                "a folder"
            } else {
                "not a regular file (a device, FIFO or socket)"
            };
            Err(WriteError::new(
                path,
                std::io::Error::other(format!(
                    "the path is {what}; sslpipe only replaces regular files"
                )),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn writes_through_a_temporary_and_replaces_an_older_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.bin");
        write(&p, b"old").unwrap();
        write(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert!(!tmp_path(&p).exists());
    }

    #[test]
    fn a_symlink_planted_at_the_temporary_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim.txt");
        std::fs::write(&victim, b"precious").unwrap();
        let p = t.path().join("encoder.onnx");
        std::os::unix::fs::symlink(&victim, tmp_path(&p)).unwrap();
        write(&p, b"model").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&p).unwrap(), b"model");
        assert!(!tmp_path(&p).exists());
    }

    #[test]
    fn targets_that_are_not_regular_files_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim.txt");
        std::fs::write(&victim, b"precious").unwrap();
        let link = t.path().join("link.png");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let fifo = t.path().join("fifo.png");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let folder = t.path().join("folder.png");
        std::fs::create_dir(&folder).unwrap();
        for (target, what) in [
            (&link, "symbolic link"),
            (&fifo, "FIFO"),
            (&folder, "folder"),
        ] {
            let e = write(target, b"x").unwrap_err();
            let message = format!("{e}: {}", e.source);
            assert!(message.contains(what), "{message}");
            assert!(message.contains(&*target.to_string_lossy()), "{message}");
            assert!(!tmp_path(target).exists());
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(
            std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo()
        );
    }

    #[test]
    fn an_aborted_file_leaves_nothing_behind() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("part.parquet");
        let (staged, mut file) = Staged::create(&p).unwrap();
        file.write_all(b"half").unwrap();
        assert!(staged.tmp().exists());
        staged.abort();
        assert!(!p.exists() && !tmp_path(&p).exists());
    }
}
