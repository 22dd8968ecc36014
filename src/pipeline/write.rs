//! The sink stage: one thread owns the Parquet writer and the errors file. Files are finished and
//! published when the input ends — also when an earlier stage failed — so rows already computed
//! are never lost; only an abort (second Ctrl-C) leaves `.tmp` files behind.

use std::path::PathBuf;
use std::sync::Arc;

use async_channel::Receiver;

use super::PipelineError;
use super::stats::{Clock, Stage};
use crate::sink::{ErrorRecord, ErrorsFile, FeatureSinkSpec, FeatureWriter};

pub enum SinkMsg {
    Rows {
        keys: Vec<String>,
        sizes: Vec<(u32, u32)>,
        values: Vec<f32>,
        dim: usize,
        timestamp_us: i64,
    },
    Skipped(ErrorRecord),
}

#[derive(Debug, Default)]
pub struct Written {
    pub files: Vec<PathBuf>,
    pub rows: u64,
    pub errors_file: Option<PathBuf>,
    pub errors: u64,
}

impl Written {
    /// Publishes the errors file and the data files (`finish_files`) of a sink stage, also after
    /// the stage failed; a failure to publish is added to `result` unless it already holds one.
    pub fn publish(
        errors: ErrorsFile,
        rows: u64,
        finish_files: impl FnOnce() -> Result<Vec<PathBuf>, crate::sink::SinkError>,
        result: &mut Result<(), PipelineError>,
    ) -> Written {
        let mut written = Written {
            errors: errors.count(),
            rows,
            ..Written::default()
        };
        match errors.finish() {
            Ok(path) => written.errors_file = Some(path),
            Err(e) => *result = std::mem::replace(result, Ok(())).and(Err(e.into())),
        }
        match finish_files() {
            Ok(files) => written.files = files,
            Err(e) => *result = std::mem::replace(result, Ok(())).and(Err(e.into())),
        }
        written
    }
}

/// `spec.dim` is taken from the first batch: a model may leave its embedding size dynamic.
/// Returns what was published even when the stage failed part-way.
pub fn run(
    spec: FeatureSinkSpec,
    input: Receiver<SinkMsg>,
    stage: Arc<Stage>,
) -> (Written, Result<(), PipelineError>) {
    let mut clock = Clock::default();
    let mut errors = match ErrorsFile::create(&spec.dir) {
        Ok(e) => e,
        Err(e) => return (Written::default(), Err(e.into())),
    };
    let mut writer: Option<FeatureWriter> = None;
    let mut result = Ok(());
    while let Ok(msg) = clock.wait_in(|| input.recv_blocking()) {
        let started = std::time::Instant::now();
        let step = match msg {
            SinkMsg::Rows {
                keys,
                sizes,
                values,
                dim,
                timestamp_us,
            } => {
                clock.items += keys.len() as u64;
                write_rows(
                    &mut writer,
                    &spec,
                    &keys,
                    &sizes,
                    &values,
                    dim,
                    timestamp_us,
                )
            }
            SinkMsg::Skipped(record) => errors.write(&record).map_err(PipelineError::from),
        };
        clock.busy += started.elapsed();
        if let Err(e) = step {
            result = Err(e);
            break; // dropping `input` tells the stages upstream to stop
        }
    }
    drop(input);
    let rows = writer.as_ref().map_or(0, FeatureWriter::rows);
    let written = Written::publish(
        errors,
        rows,
        || writer.map_or(Ok(Vec::new()), FeatureWriter::finish),
        &mut result,
    );
    stage.merge(clock);
    (written, result)
}

fn write_rows(
    writer: &mut Option<FeatureWriter>,
    spec: &FeatureSinkSpec,
    keys: &[String],
    sizes: &[(u32, u32)],
    values: &[f32],
    dim: usize,
    timestamp_us: i64,
) -> Result<(), PipelineError> {
    if writer.is_none() {
        *writer = Some(FeatureWriter::create(FeatureSinkSpec {
            dim,
            ..spec.clone()
        })?);
    }
    let w = writer.as_mut().expect("created above");
    for (i, key) in keys.iter().enumerate() {
        w.push(
            key,
            &values[i * dim..(i + 1) * dim],
            sizes[i].0,
            sizes[i].1,
            timestamp_us,
        )?;
    }
    Ok(())
}
