//! The engine: wires source → decode workers → embed (ONNX Runtime) → sink with bounded channels,
//! runs them, and reports what happened.
//!
//! Guarantees:
//! - Memory is bounded by channel capacities (and one batch, one row group), never by the input.
//!   A slow stage blocks the one before it, back to the source.
//! - Output order and batch composition follow source order, so a rerun gives bit-identical
//!   embeddings whatever the thread timing.
//! - Stopping (Ctrl-C, or the `StopFlag`) stops only the source; every stage drains and the sink
//!   publishes complete files. A failing stage stops the run with an error naming the stage and
//!   the sample key; rows already computed are still published.
//! - A bad image is an error record (key, stage, reason) in `errors.jsonl`, not a failure, unless
//!   the pipeline says `on_error = "fail"`.

mod embed;
mod encoder;
mod progress;
mod reorder;
mod stats;
mod summary;
mod workers;
mod write;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use thiserror::Error;

pub use encoder::{Encoder, load as load_encoder};
pub use stats::{Counters, StageSummary};
pub use summary::{ImageCounts, RunSummary};

use crate::config::{ConfigErrors, ModelSpec, Pipeline};
use crate::sink::{FeatureSinkSpec, SinkError};
use crate::source::{Emit, Sample, SourceError, StopFlag};

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("model {path}: {reason}")]
    ModelSignature { path: PathBuf, reason: String },
    #[error(
        "stopped at the first bad image (on_error = \"fail\"): {stage} failed for {key:?}: {reason}"
    )]
    BadImage {
        stage: &'static str,
        key: String,
        reason: String,
    },
    #[error("the {stage} stage failed{}: {reason}", .key.as_ref().map(|k| format!(" at {k:?}")).unwrap_or_default())]
    Stage {
        stage: &'static str,
        key: Option<String>,
        reason: String,
    },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

impl PipelineError {
    pub(crate) fn model(path: PathBuf, reason: impl Into<String>) -> Self {
        PipelineError::ModelSignature {
            path,
            reason: reason.into(),
        }
    }
    pub(crate) fn stage(stage: &'static str, key: Option<String>, reason: String) -> Self {
        PipelineError::Stage { stage, key, reason }
    }
}

/// How `run` behaves around the pipeline itself.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Install the Ctrl-C handler: first press stops the source, second aborts the process.
    pub handle_signals: bool,
    /// Progress on stderr: a bar on a terminal, periodic lines otherwise.
    pub progress: bool,
    /// Set by the caller to stop the source early (tests, embedding applications).
    pub stop: StopFlag,
}

/// Checks everything `run` would need before reading any image: the pipeline file (already
/// parsed into `plan`), the ONNX Runtime library and the model's signature. Problems are reported
/// like configuration errors, with the line of the field to fix.
pub fn validate(plan: &Pipeline) -> Result<(), ConfigErrors> {
    let line_of = |field: &str| plan.locator.line(field);
    let problem = |field: &str, message: String| crate::config::ConfigError {
        file: plan.file.clone(),
        line: line_of(field),
        field: field.to_string(),
        message,
    };
    match load_encoder(plan) {
        Ok(_) => Ok(()),
        Err(PipelineError::Runtime(e)) => {
            Err(ConfigErrors(vec![problem("runtime", e.to_string())]))
        }
        Err(e @ (PipelineError::ModelSignature { .. } | PipelineError::Model(_))) => {
            let field = if matches!(plan.model, ModelSpec::Onnx { .. }) {
                "model.path"
            } else {
                "model"
            };
            Err(ConfigErrors(vec![problem(field, e.to_string())]))
        }
        Err(e) => Err(ConfigErrors(vec![problem("", e.to_string())])),
    }
}

/// Runs the pipeline to the end of its input (or until stopped) and returns the summary. The
/// summary is returned on success only; on failure the error names the stage and key, and the
/// files already published stay valid.
pub fn run(plan: &Pipeline, options: RunOptions) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let encoder = load_encoder(plan)?;
    let out_dir = plan.output.dir.clone();
    std::fs::create_dir_all(&out_dir).map_err(|e| crate::sink::io_err(&out_dir, e))?;
    if matches!(plan.model, ModelSpec::Builtin { .. }) {
        // The encoder that made the features, as a file users can take elsewhere; model_id is its hash.
        crate::sink::write_atomically(&out_dir.join("encoder.onnx"), &encoder.onnx)?;
    }
    let sink_spec = FeatureSinkSpec {
        dir: out_dir.clone(),
        dim: encoder.dim.unwrap_or(0),
        embedding_type: plan.output.embedding_type,
        rows_per_file: plan.output.rows_per_file,
        row_group_rows: plan.output.row_group_rows,
        model_id: encoder.model_id.clone(),
        pretext: "none".to_string(),
        metadata: vec![
            (
                "sslpipe.version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
            ("sslpipe.pipeline".to_string(), plan.text.clone()),
            ("sslpipe.pipeline_name".to_string(), plan.name.clone()),
        ],
    };
    crate::sink::remove_previous_outputs(&out_dir)?;

    let counters = Arc::new(Counters::default());
    let stages = summary::Stages::new(plan.workers);
    let stop = options.stop.clone();
    let model_id = encoder.model_id.clone();
    let model_origin = encoder.origin.clone();

    let (sample_tx, sample_rx) = async_channel::bounded::<Sample>(2 * plan.workers + 2);
    let (decoded_tx, decoded_rx) = async_channel::bounded(plan.queue);
    let (sink_tx, sink_rx) = async_channel::bounded(4);

    let spawn_err = |e: std::io::Error| {
        PipelineError::stage("engine", None, format!("cannot start a thread: {e}"))
    };
    let sink = {
        let stage = stages.sink.clone();
        std::thread::Builder::new()
            .name("sink".into())
            .spawn(move || write::run(sink_spec, sink_rx, stage))
            .map_err(spawn_err)?
    };
    let embed = {
        let stage = embed::EmbedStage {
            encoder,
            batch_size: plan.embed.batch_size,
            size: plan.decode.size as usize,
            on_error: plan.on_error,
            stop: stop.clone(),
            stage: stages.embed.clone(),
            counters: counters.clone(),
        };
        std::thread::Builder::new()
            .name("embed".into())
            .spawn(move || stage.run(decoded_rx, sink_tx))
            .map_err(spawn_err)?
    };
    let workers = workers::spawn(
        plan.workers,
        plan.decode.clone(),
        plan.model.normalization(),
        sample_rx,
        decoded_tx,
        stages.decode.clone(),
        counters.clone(),
    )
    .map_err(spawn_err)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(spawn_err)?;
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let source_result = runtime.block_on(async {
        if options.handle_signals {
            tokio::spawn(progress::watch_ctrl_c(stop.clone(), interrupted.clone()));
        }
        let ticker = options
            .progress
            .then(|| tokio::spawn(progress::report(counters.clone(), started)));
        let source = {
            let (spec, stop, counters, stage) = (
                plan.source.clone(),
                stop.clone(),
                counters.clone(),
                stages.source.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                let mut emit = ChannelEmit {
                    tx: sample_tx,
                    seq: 0,
                    counters,
                    clock: Default::default(),
                };
                let r = crate::source::run(&spec, &stop, &mut emit);
                // Listing and reading files is the source's work; the rest of its time it waited.
                emit.clock.busy = t.elapsed().saturating_sub(emit.clock.wait_out);
                stage.merge(emit.clock);
                r
            })
        };
        let result = source.await;
        // The source has ended; the other stages drain on their own threads.
        let joined = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
            (embed.join(), sink.join())
        })
        .await;
        if let Some(t) = ticker {
            t.abort();
            progress::finish();
        }
        (result, joined)
    });
    let (source_result, joined) = source_result;
    let (embed_result, sink_result) =
        joined.map_err(|e| PipelineError::stage("engine", None, e.to_string()))?;
    let embed_result = embed_result.unwrap_or_else(|_| {
        Err(PipelineError::stage(
            "embed",
            None,
            "the thread panicked".into(),
        ))
    });
    let (written, sink_status) = sink_result.unwrap_or_else(|_| {
        (
            Default::default(),
            Err(PipelineError::stage(
                "sink",
                None,
                "the thread panicked".into(),
            )),
        )
    });
    let source_status =
        source_result.map_err(|e| PipelineError::stage("source", None, e.to_string()))?;

    // The first failure in flow order is the cause; later ones are its consequences.
    source_status?;
    embed_result?;
    sink_status?;

    let wall = started.elapsed();
    Ok(RunSummary::new(
        plan,
        &counters,
        &stages,
        wall,
        written,
        model_id,
        model_origin,
        interrupted.load(std::sync::atomic::Ordering::SeqCst) || stop.is_stopped(),
    ))
}

/// Numbers samples in source order and sends them to the decode workers.
struct ChannelEmit {
    tx: async_channel::Sender<Sample>,
    seq: u64,
    counters: Arc<Counters>,
    clock: stats::Clock,
}

impl Emit for ChannelEmit {
    fn emit(&mut self, key: String, bytes: Result<Vec<u8>, String>) -> bool {
        let sample = Sample {
            seq: self.seq,
            key,
            bytes,
        };
        self.seq += 1;
        self.clock.items += 1;
        Counters::add(&self.counters.read, 1);
        let tx = &self.tx;
        self.clock.wait_out(|| tx.send_blocking(sample)).is_ok()
    }
}
