//! Part files: the file half of every Parquet sink. Takes Arrow record batches of one schema and
//! writes them as `part-NNNNN.parquet`, one row group per batch, a new file every
//! `rows_per_file` rows (or earlier, when the sink closes it by time; a run that appends numbers
//! its files after the existing ones), each file written as `.tmp` and renamed when closed — so a reader never
//! sees half a file, and an aborted run leaves only `.tmp` files.

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::{SinkError, io_err};
use crate::atomic::Staged;

pub const PART_PREFIX: &str = "part-";

pub struct PartFiles {
    dir: PathBuf,
    schema: SchemaRef,
    props: WriterProperties,
    rows_per_file: usize,
    open: Option<OpenFile>,
    next_file: usize,
    published: Vec<PathBuf>,
}

struct OpenFile {
    staged: Staged,
    writer: ArrowWriter<std::fs::File>,
    opened: std::time::Instant,
    rows: usize,
}

impl PartFiles {
    /// `metadata` goes into every file's key-value metadata.
    pub fn new(
        dir: &Path,
        schema: SchemaRef,
        rows_per_file: usize,
        max_row_group_rows: usize,
        metadata: &[(String, String)],
    ) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let metadata = metadata
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("3 is a valid zstd level"),
            ))
            .set_max_row_group_row_count(Some(max_row_group_rows.max(1)))
            .set_key_value_metadata(Some(metadata))
            .set_created_by(format!("sslpipe {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Self {
            dir: dir.to_path_buf(),
            schema,
            props,
            rows_per_file: rows_per_file.max(1),
            open: None,
            next_file: 0,
            published: Vec::new(),
        })
    }

    /// Rows the open file can still take before it is rotated.
    pub fn room(&self) -> usize {
        self.rows_per_file - self.open.as_ref().map_or(0, |f| f.rows)
    }

    /// Writes `batch` as one row group (the caller keeps batches within [`room`](Self::room)).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.open.is_none() {
            self.open = Some(self.open_file()?);
        }
        let file = self.open.as_mut().expect("opened above");
        let tmp = file.staged.tmp().to_path_buf();
        let perr = |e: parquet::errors::ParquetError| SinkError::Parquet {
            path: tmp.clone(),
            reason: e.to_string(),
        };
        file.writer.write(batch).map_err(perr)?;
        file.writer.flush().map_err(perr)?;
        file.rows += batch.num_rows();
        if file.rows >= self.rows_per_file {
            self.close_file()?;
        }
        Ok(())
    }

    fn open_file(&mut self) -> Result<OpenFile, SinkError> {
        let path = self
            .dir
            .join(format!("{PART_PREFIX}{:05}.parquet", self.next_file));
        self.next_file += 1;
        let (staged, file) = Staged::create(&path)?;
        match ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone())) {
            Ok(writer) => Ok(OpenFile {
                staged,
                writer,
                opened: std::time::Instant::now(),
                rows: 0,
            }),
            Err(e) => {
                let path = staged.tmp().to_path_buf();
                staged.abort();
                Err(SinkError::Parquet {
                    path,
                    reason: e.to_string(),
                })
            }
        }
    }

    fn close_file(&mut self) -> Result<(), SinkError> {
        let Some(OpenFile { staged, writer, .. }) = self.open.take() else {
            return Ok(());
        };
        let file = match writer.into_inner() {
            Ok(file) => file,
            Err(e) => {
                let path = staged.tmp().to_path_buf();
                staged.abort();
                return Err(SinkError::Parquet {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        self.published.push(staged.commit(file)?);
        Ok(())
    }

    /// Numbers the next file `first` (a run that appends to earlier part files starts after them).
    pub fn starting_at(mut self, first: usize) -> Self {
        self.next_file = first;
        self
    }

    /// How long the open file has been open (`None`: no file is open).
    pub fn open_for(&self) -> Option<std::time::Duration> {
        self.open.as_ref().map(|f| f.opened.elapsed())
    }

    /// Closes and publishes the open file now (time-based rotation); the next write opens a new one.
    pub fn close(&mut self) -> Result<(), SinkError> {
        self.close_file()
    }

    /// Removes the open file's temporary; files already published stay.
    pub fn abort(mut self) {
        if let Some(open) = self.open.take() {
            drop(open.writer);
            open.staged.abort();
        }
    }

    /// Every file published so far.
    pub fn published(&self) -> &[PathBuf] {
        &self.published
    }

    /// Closes and publishes the open file; returns every published file.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, SinkError> {
        self.close_file()?;
        Ok(self.published)
    }
}

/// The number after the highest `part-NNNNN.parquet` in `dir` (0 when there is none): where a run
/// that appends to `dir` starts numbering.
pub fn next_part_number(dir: &Path) -> Result<usize, SinkError> {
    let mut next = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let name = entry.map_err(|e| io_err(dir, e))?.file_name();
        let number = name
            .to_str()
            .and_then(|n| n.strip_prefix(PART_PREFIX)?.strip_suffix(".parquet"))
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(n) = number {
            next = next.max(n + 1);
        }
    }
    Ok(next)
}

/// Removes what an earlier run left in `dir` (`part-*.parquet`, the errors file, their `.tmp`
/// forms), so a rerun replaces its output instead of mixing with it. Other files are kept.
pub fn remove_previous_outputs(dir: &Path) -> Result<(), SinkError> {
    remove_outputs(dir, false)
}

/// Removes only the unfinished files (`.tmp`) an interrupted run left in `dir`: what a run that
/// appends to `dir` starts with.
pub fn remove_unfinished_outputs(dir: &Path) -> Result<(), SinkError> {
    remove_outputs(dir, true)
}

fn remove_outputs(dir: &Path, only_unfinished: bool) -> Result<(), SinkError> {
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let unfinished = name.ends_with(".tmp");
        let part = name.starts_with(PART_PREFIX)
            && (name.ends_with(".parquet") || name.ends_with(".parquet.tmp"));
        let errors =
            name == super::ErrorsFile::NAME || name == format!("{}.tmp", super::ErrorsFile::NAME);
        if (part || errors) && (unfinished || !only_unfinished) {
            std::fs::remove_file(entry.path()).map_err(|e| io_err(&entry.path(), e))?;
        }
    }
    Ok(())
}
