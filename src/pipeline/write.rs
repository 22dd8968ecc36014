//! The sink stage: a [`Sink`] and the errors file beside it, written by one owner — the sink
//! thread when embedding, the consumer itself when exporting.
//!
//! Guarantees: both files are published when the input ends — also when an earlier stage failed
//! — so rows already computed are never lost; the first failure is the one reported. Only an
//! abort (second Ctrl-C) leaves `.tmp` files behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_channel::Receiver;

use std::time::Duration;

use super::PipelineError;
use super::engine::{Received, Ticker};
use super::stats::{Clock, Stage};
use crate::sink::{ErrorRecord, ErrorsFile, Sink};

/// What the sink thread receives: rows for the sink, or an image that was skipped.
pub enum SinkMsg<B> {
    Rows(B),
    Skipped(ErrorRecord),
}

/// What a run published.
#[derive(Debug, Default)]
pub struct Written {
    pub files: Vec<PathBuf>,
    pub rows: u64,
    pub errors_file: Option<PathBuf>,
    pub errors: u64,
}

/// A sink with its errors file.
pub struct SinkStage<S: Sink> {
    sink: S,
    errors: ErrorsFile,
}

impl<S: Sink> SinkStage<S> {
    /// Opens the sink, and the errors file in `dir`.
    pub fn open(spec: S::Spec, dir: &Path) -> Result<Self, PipelineError> {
        let sink = S::open(spec)?;
        let errors = ErrorsFile::create(dir)?;
        Ok(Self { sink, errors })
    }

    /// Opens the sink of a run that appends to `dir`: the errors file keeps the earlier records.
    pub fn continuing(spec: S::Spec, dir: &Path) -> Result<Self, PipelineError> {
        let sink = S::open(spec)?;
        let errors = ErrorsFile::continuing(dir)?;
        Ok(Self { sink, errors })
    }

    pub fn write(&mut self, batch: &S::Batch) -> Result<(), PipelineError> {
        Ok(self.sink.write(batch)?)
    }

    pub fn skipped(&mut self, record: &ErrorRecord) -> Result<(), PipelineError> {
        Ok(self.errors.write(record)?)
    }

    /// Publishes by time what is due (see [`Sink::roll`]).
    pub fn roll(&mut self) -> Result<(), PipelineError> {
        Ok(self.sink.roll()?)
    }

    /// Publishes the errors file and the sink's files, also after `result` failed; a failure to
    /// publish is added to `result` unless it already holds one.
    pub fn finish(self, result: &mut Result<(), PipelineError>) -> Written {
        let mut written = Written {
            errors: self.errors.count(),
            rows: self.sink.rows(),
            ..Written::default()
        };
        let mut keep_first = |e: crate::sink::SinkError| {
            *result = std::mem::replace(result, Ok(())).and(Err(e.into()));
        };
        match self.errors.finish() {
            Ok(path) => written.errors_file = Some(path),
            Err(e) => keep_first(e),
        }
        match self.sink.commit() {
            Ok(files) => written.files = files,
            Err(e) => keep_first(e),
        }
        written
    }
}

/// The sink thread: writes what arrives until the input ends (or writing fails), then publishes.
/// With `tick`, the sink also publishes by time ([`Sink::roll`]) after each message and whenever
/// nothing arrived for a tick. Returns what was published even when the stage failed part-way.
pub fn run<S: Sink>(
    mut out: SinkStage<S>,
    input: Receiver<SinkMsg<S::Batch>>,
    stage: Arc<Stage>,
    rows_of: impl Fn(&S::Batch) -> usize,
    tick: Option<Duration>,
) -> (Written, Result<(), PipelineError>) {
    let mut clock = Clock::default();
    let mut result = Ok(());
    let ticker = match tick.map(Ticker::new).transpose() {
        Ok(ticker) => ticker,
        Err(e) => return (Written::default(), Err(e)),
    };
    loop {
        let received = clock.wait_in(|| match &ticker {
            Some(ticker) => ticker.recv(&input),
            None => input
                .recv_blocking()
                .map_or(Received::Closed, Received::Item),
        });
        let msg = match received {
            Received::Item(msg) => Some(msg),
            Received::Idle => None,
            Received::Closed => break,
        };
        let step = clock.busy(|| {
            match &msg {
                Some(SinkMsg::Rows(batch)) => out.write(batch)?,
                Some(SinkMsg::Skipped(record)) => out.skipped(record)?,
                None => {}
            }
            if ticker.is_some() {
                out.roll()?;
            }
            Ok(())
        });
        if let Some(SinkMsg::Rows(batch)) = &msg {
            clock.items += rows_of(batch) as u64;
        }
        if let Err(e) = step {
            result = Err(e);
            break; // dropping `input` tells the stages upstream to stop
        }
    }
    drop(input);
    let written = out.finish(&mut result);
    stage.merge(clock);
    (written, result)
}
