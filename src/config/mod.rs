//! Pipeline files: TOML → raw section structs (form) → a validated [`Pipeline`] (meaning).
//!
//! Guarantees:
//! - Every problem found is reported at once, each with the file, the line and the field
//!   (`pipelines/x.toml:12: model.width: ...`). A syntax error stops parsing (nothing else can be
//!   trusted after it); a malformed section does not hide problems in the other sections.
//! - Relative paths in a pipeline are relative to the pipeline file's folder, so a pipeline runs
//!   the same from any working directory.
//! - A validated `Pipeline` holds only checked values; the engine never re-validates.

mod locate;
mod plan;
pub mod raw;

use std::fmt;
use std::path::{Path, PathBuf};

pub use locate::Locator;
pub use plan::{
    Budget, EmbedSpec, Mode, ModelSpec, Normalization, OutputSpec, Pipeline, PretrainSpec,
    RuntimeSpec, Schedule,
};
pub use raw::{EmbeddingType, OnError};

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// Dotted path of the field (`model.width`); empty for whole-file problems.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All problems found in one pipeline file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the pipeline:",
            if n == 1 { "" } else { "s" }
        )?;
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors for one file, attaching lines from the locator.
pub(crate) struct Problems<'a> {
    file: &'a Path,
    locator: &'a Locator,
    errors: Vec<ConfigError>,
}

impl<'a> Problems<'a> {
    pub(crate) fn new(file: &'a Path, locator: &'a Locator) -> Self {
        Self {
            file,
            locator,
            errors: Vec::new(),
        }
    }

    pub(crate) fn add(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line: self.locator.line(field),
            field: field.to_string(),
            message: message.into(),
        });
    }

    pub(crate) fn add_at(&mut self, line: Option<usize>, field: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// `Ok` when nothing was recorded, else every recorded problem.
    pub(crate) fn finish(mut self) -> Result<(), ConfigErrors> {
        // In file order, as a person fixes them; problems without a line last.
        self.errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}

/// Reads and validates a pipeline file.
pub fn load(path: &Path) -> Result<Pipeline, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            field: String::new(),
            message: format!("cannot read the pipeline file: {e}"),
        }])
    })?;
    parse(path, &text)
}

/// Validates pipeline text as if it were the file `path` (used by `load` and by tests).
pub fn parse(path: &Path, text: &str) -> Result<Pipeline, ConfigErrors> {
    plan::build(path, text)
}
