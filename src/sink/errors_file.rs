//! The errors file: one JSON object per line for every image that was skipped, with its key, the
//! stage that refused it and why. Written beside the feature files as `errors.jsonl` (via `.tmp`
//! and a rename, like every output), so the user gets the list of what was skipped.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{SinkError, io_err};
use crate::atomic::Staged;

/// One skipped image.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ErrorRecord {
    pub key: String,
    /// `read` or `decode` (later: `pretext`).
    pub stage: String,
    pub reason: String,
}

pub struct ErrorsFile {
    staged: Staged,
    tmp: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    count: u64,
}

impl ErrorsFile {
    pub const NAME: &'static str = "errors.jsonl";

    pub fn create(dir: &Path) -> Result<Self, SinkError> {
        let (staged, file) = Staged::create(&dir.join(Self::NAME))?;
        Ok(Self {
            tmp: staged.tmp().to_path_buf(),
            staged,
            out: std::io::BufWriter::new(file),
            count: 0,
        })
    }

    /// The errors file of a run that appends to `dir`: the records of the earlier run are kept (copied
    /// into the new file first), the new ones follow.
    pub fn continuing(dir: &Path) -> Result<Self, SinkError> {
        let mut file = Self::create(dir)?;
        let earlier = dir.join(Self::NAME);
        match std::fs::File::open(&earlier) {
            Ok(old) => {
                let mut old = std::io::BufReader::new(old);
                std::io::copy(&mut old, &mut file.out).map_err(|e| io_err(&file.tmp, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&earlier, e)),
        }
        Ok(file)
    }

    pub fn write(&mut self, record: &ErrorRecord) -> Result<(), SinkError> {
        serde_json::to_writer(&mut self.out, record).map_err(|e| io_err(&self.tmp, e))?;
        self.out
            .write_all(b"\n")
            .map_err(|e| io_err(&self.tmp, e))?;
        self.count += 1;
        Ok(())
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Flushes, syncs and publishes the file; returns its path.
    pub fn finish(self) -> Result<PathBuf, SinkError> {
        match self.out.into_inner() {
            Ok(file) => Ok(self.staged.commit(file)?),
            Err(e) => {
                let e = io_err(&self.tmp, e.error());
                self.staged.abort();
                Err(e)
            }
        }
    }
}
