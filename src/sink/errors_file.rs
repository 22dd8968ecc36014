//! The errors file: one JSON object per line for every image that was skipped, with its key, the
//! stage that refused it and why. Written beside the feature files as `errors.jsonl` (via `.tmp`
//! and a rename, like every output), so the user gets the list of what was skipped.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{SinkError, io_err, publish};

/// One skipped image.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ErrorRecord {
    pub key: String,
    /// `read` or `decode` (later: `pretext`).
    pub stage: String,
    pub reason: String,
}

pub struct ErrorsFile {
    path: PathBuf,
    tmp: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    count: u64,
}

impl ErrorsFile {
    pub const NAME: &'static str = "errors.jsonl";

    pub fn create(dir: &Path) -> Result<Self, SinkError> {
        let path = dir.join(Self::NAME);
        let tmp = dir.join(format!("{}.tmp", Self::NAME));
        let file = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        Ok(Self {
            path,
            tmp,
            out: std::io::BufWriter::new(file),
            count: 0,
        })
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
        let file = self
            .out
            .into_inner()
            .map_err(|e| io_err(&self.tmp, e.error()))?;
        file.sync_all().map_err(|e| io_err(&self.tmp, e))?;
        drop(file);
        publish(&self.tmp, &self.path)?;
        Ok(self.path)
    }
}
