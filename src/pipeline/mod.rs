//! The engine's wiring: for the run's [`Mode`] it connects source → decode workers (with the
//! mode's per-image preparation fused on the same thread) → the one ordered consumer loop
//! (`consume.rs`) driving the mode's consumer — the embed stage (ONNX Runtime) and its sink
//! thread, the pretext-dataset export, or a pretraining session (`crate::pretrain`) — with
//! bounded channels, runs them under Ctrl-C supervision, and reports what happened. What the
//! stages compute lives in the modules they call; this module holds threads, channels and order.
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

mod consume;
mod dataset;
mod embed;
mod embed_model;
mod engine;
mod pretrain;
mod preview;
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

pub use embed_model::{Encoder, load as load_encoder};
pub use preview::write_preview;
pub use stats::{Counters, StageSummary};
pub use summary::{ImageCounts, RunSummary};

use crate::config::{ConfigErrors, Mode, ModelSpec, Pipeline};
use crate::sink::{FeatureSinkSpec, FeatureWriter, SinkError};
use crate::source::{SourceError, StopFlag};
use write::SinkStage;

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
    #[error("the embed stage failed at {key:?}")]
    Embed {
        key: String,
        #[source]
        source: ort::Error,
    },
    #[error(
        "the embed stage failed at {key:?}: the model returned {values} values for {images} images (declared embedding size {declared:?})"
    )]
    EmbeddingSize {
        key: String,
        values: usize,
        images: usize,
        declared: Option<usize>,
    },
    #[error("{count} images never came back from decoding (a decode worker stopped early)")]
    Lost { count: usize },
    /// Seen by a stage whose downstream ended; the downstream's own error is the cause reported.
    #[error("the sink stopped accepting rows")]
    SinkClosed,
    #[error("the {stage} thread panicked")]
    Panicked { stage: &'static str },
    #[error("cannot start a thread")]
    Spawn(#[source] std::io::Error),
    #[error("the pretrain stage failed")]
    Pretrain(#[from] crate::pretrain::PretrainError),
    #[error("the pipeline has no [pretext] section to preview")]
    NoPretext,
    #[error("no decodable image in the source")]
    NothingToPreview,
    #[error(transparent)]
    Png(#[from] crate::pretext::draw::PngError),
    #[error(transparent)]
    Pretext(#[from] crate::pretext::PretextError),
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
    /// Continue pretraining from the newest checkpoint instead of starting afresh.
    pub resume: bool,
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
    if matches!(plan.mode, Mode::Export { .. }) {
        return Ok(()); // no model runs in an export; the task was checked with the config
    }
    if matches!(plan.mode, Mode::Pretrain { .. }) {
        // The embed phase will run the trained encoder; what can fail is the model for the task.
        if let Err(e) = crate::pretrain::model(plan) {
            return Err(ConfigErrors(vec![problem(
                "pretrain",
                crate::error::chain(&e),
            )]));
        }
        if let Err(e) = crate::runtime::environment(plan.runtime.library.as_deref()) {
            return Err(ConfigErrors(vec![problem(
                "runtime",
                crate::error::chain(&e),
            )]));
        }
        return Ok(());
    }
    match load_encoder(plan) {
        Ok(_) => Ok(()),
        Err(PipelineError::Runtime(e)) => {
            let field = match e {
                crate::runtime::RuntimeError::CudaUnavailable { .. } => "runtime.device",
                _ => "runtime",
            };
            Err(ConfigErrors(vec![problem(field, crate::error::chain(&e))]))
        }
        Err(e @ (PipelineError::ModelSignature { .. } | PipelineError::Model(_))) => {
            let field = if matches!(plan.model, ModelSpec::Onnx { .. }) {
                "model.path"
            } else {
                "model"
            };
            Err(ConfigErrors(vec![problem(field, crate::error::chain(&e))]))
        }
        Err(e) => Err(ConfigErrors(vec![problem("", crate::error::chain(&e))])),
    }
}

/// Runs the pipeline to the end of its input (or until stopped) and returns the summary. On
/// failure the error names the stage and key, and the files already published stay valid.
pub fn run(plan: &Pipeline, options: RunOptions) -> Result<RunSummary, PipelineError> {
    match &plan.mode {
        Mode::Embed { .. } => embed_run(plan, options, None),
        Mode::Export { task, epochs } => dataset::run(plan, task, *epochs, options),
        Mode::Pretrain { then_embed, .. } => pretrain_then_embed(plan, options, *then_embed),
    }
}

/// Pretraining, then (with `then_embed`) the embed phase with the trained encoder.
fn pretrain_then_embed(
    plan: &Pipeline,
    options: RunOptions,
    then_embed: bool,
) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let (pretrained, stages) = pretrain::run(plan, &options, options.resume)?;
    let report = pretrained.report;
    let out_dir = plan.output.dir.clone();
    // Interrupted (no encoder: the checkpoint waits for --resume), or pretraining only.
    let onnx = match pretrained.encoder_onnx {
        Some(onnx) if then_embed => onnx,
        onnx => {
            let model = match &onnx {
                Some(bytes) => {
                    crate::sink::write_atomically(&out_dir.join("encoder.onnx"), bytes)?;
                    let origin = format!("pretrained by {}", report.task);
                    Some((crate::model::model_id(bytes), origin))
                }
                None => None,
            };
            let mut summary = RunSummary::new(
                plan,
                &Counters::default(),
                &stages.iter().collect::<Vec<_>>(),
                started.elapsed(),
                Default::default(),
                model,
                report.interrupted,
            );
            summary.pretrain = Some(report);
            return Ok(summary);
        }
    };
    let origin = format!(
        "built-in encoder pretrained by {} ({} steps)",
        report.task, report.steps
    );
    let encoder = embed_model::from_bytes(plan, onnx, origin)?;
    let mut summary = embed_run(plan, options, Some(encoder))?;
    summary.pretrain = Some(report);
    Ok(summary)
}

/// The embed phase: images → encoder → feature files. `encoder`: the one pretraining made;
/// `None`: the pipeline's `[model]`.
fn embed_run(
    plan: &Pipeline,
    options: RunOptions,
    encoder: Option<Encoder>,
) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let encoder = match encoder {
        Some(e) => e,
        None => load_encoder(plan)?,
    };
    let out_dir = plan.output.dir.clone();
    std::fs::create_dir_all(&out_dir).map_err(|e| crate::sink::io_err(&out_dir, e))?;
    // A continuous source (a watched folder) appends: a restart keeps the published rows and
    // skips their keys. Every other run replaces its output.
    let continuous = plan.source.continuous();
    let resumed;
    let (plan, first_part) = if continuous {
        crate::sink::remove_unfinished_outputs(&out_dir)?;
        let published = crate::sink::published_keys(&out_dir)?;
        resumed = Pipeline {
            source: plan.source.resuming(Arc::new(published)),
            ..plan.clone()
        };
        (&resumed, crate::sink::next_part_number(&out_dir)?)
    } else {
        crate::sink::remove_previous_outputs(&out_dir)?;
        (plan, 0)
    };
    if matches!(plan.model, ModelSpec::Builtin { .. }) {
        // The encoder that made the features, as a file users can take elsewhere; model_id is its hash.
        crate::sink::write_atomically(&out_dir.join("encoder.onnx"), &encoder.onnx)?;
    }
    let sink_spec = FeatureSinkSpec {
        dir: out_dir.clone(),
        dim: 0, // from the first batch: a model may leave its embedding size dynamic
        embedding_type: plan.output.embedding_type,
        rows_per_file: plan.output.rows_per_file,
        row_group_rows: plan.output.row_group_rows,
        model_id: encoder.model_id.clone(),
        pretext: match &plan.mode {
            Mode::Pretrain { task, .. } => task.name().to_string(),
            _ => "none".to_string(),
        },
        metadata: run_metadata(plan),
        roll: plan.output.roll,
        first_part,
    };
    let out = if continuous {
        SinkStage::<FeatureWriter>::continuing(sink_spec, &out_dir)?
    } else {
        SinkStage::<FeatureWriter>::open(sink_spec, &out_dir)?
    };

    let counters = Arc::new(Counters::new("embedded"));
    let stages = summary::Stages::new(plan.workers);
    let stop = options.stop.clone();
    let (model_id, model_origin) = (encoder.model_id.clone(), encoder.origin.clone());

    let normalize = embed::Normalize(plan.model.normalization());
    let (items, upstream) = engine::start(
        plan,
        normalize,
        engine::Passes::once(),
        &stop,
        &counters,
        &stages.source,
        &stages.decode,
    )?;
    let (sink_tx, sink_rx) = async_channel::bounded(4);
    // Rows must become visible by time: the sink checks its roll interval on a tick, and the
    // embed stage embeds a partial batch when its input is idle.
    let tick = plan
        .output
        .roll
        .map(|roll| (roll / 4).clamp(IDLE_TICK_MIN, IDLE_TICK_MAX));
    let sink = {
        let stage = stages.sink.clone();
        std::thread::Builder::new()
            .name("sink".into())
            .spawn(move || write::run(out, sink_rx, stage, |rows| rows.keys.len(), tick))
            .map_err(PipelineError::Spawn)?
    };
    let embed_stage = embed::EmbedStage {
        encoder,
        batch_size: plan.embed.batch_size,
        size: plan.decode.size as usize,
        on_error: plan.on_error,
        stop: stop.clone(),
        stage: stages.embed.clone(),
        counters: counters.clone(),
        idle_flush: tick,
    };
    let embed = std::thread::Builder::new()
        .name("embed".into())
        .spawn(move || embed_stage.run(items, sink_tx))
        .map_err(PipelineError::Spawn)?;

    let ((upstream_result, embed_result, sink_result), interrupted) = engine::supervise(
        options.handle_signals,
        options.progress,
        &counters,
        &stop,
        move || {
            let embed_result = embed.join();
            let sink_result = sink.join();
            (upstream.join(), embed_result, sink_result)
        },
    )?;
    let embed_result = embed_result.unwrap_or(Err(PipelineError::Panicked { stage: "embed" }));
    let (written, sink_status) = sink_result.unwrap_or_else(|_| {
        (
            Default::default(),
            Err(PipelineError::Panicked { stage: "sink" }),
        )
    });
    first_failure(upstream_result, embed_result, sink_status)?;

    Ok(RunSummary::new(
        plan,
        &counters,
        &[&stages.source, &stages.decode, &stages.embed, &stages.sink],
        started.elapsed(),
        written,
        Some((model_id, model_origin)),
        interrupted || stop.is_stopped(),
    ))
}

/// The error a run reports when its stages ended like this. The first failure in flow order is
/// the cause and later ones its consequences — except that a stage stopped because its sink
/// stopped reports the sink's own failure (a full disk, say).
fn first_failure(
    upstream: Result<(), PipelineError>,
    consumer: Result<(), PipelineError>,
    sink: Result<(), PipelineError>,
) -> Result<(), PipelineError> {
    upstream?;
    match consumer {
        Err(PipelineError::SinkClosed) => sink.and(Err(PipelineError::SinkClosed)),
        consumer => consumer.and(sink),
    }
}

/// Bounds of the tick at which stages of a run whose output rolls by time act while idle.
const IDLE_TICK_MIN: std::time::Duration = std::time::Duration::from_millis(20);
const IDLE_TICK_MAX: std::time::Duration = std::time::Duration::from_millis(250);

/// Key-value metadata every output file of a run carries.
fn run_metadata(plan: &Pipeline) -> Vec<(String, String)> {
    vec![
        (
            "sslpipe.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        ("sslpipe.pipeline".to_string(), plan.text.clone()),
        ("sslpipe.pipeline_name".to_string(), plan.name.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_in_flow_order_is_reported_and_a_closed_sink_names_its_own() {
        let full = || {
            let io = std::io::Error::from_raw_os_error(28);
            let write = crate::atomic::WriteError::new(std::path::Path::new("/out/part"), io);
            Err(PipelineError::Sink(SinkError::Write(write)))
        };
        let lost = || Err(PipelineError::Lost { count: 1 });
        let message = |r: Result<(), PipelineError>| crate::error::chain(&r.unwrap_err());
        let disk = message(first_failure(
            Ok(()),
            Err(PipelineError::SinkClosed),
            full(),
        ));
        assert!(disk.contains("No space left on device"), "{disk}");
        assert!(first_failure(Ok(()), Ok(()), Ok(())).is_ok());
        assert!(matches!(
            first_failure(lost(), full(), full()),
            Err(PipelineError::Lost { .. })
        ));
        assert!(matches!(
            first_failure(Ok(()), lost(), full()),
            Err(PipelineError::Lost { .. })
        ));
        assert!(matches!(
            first_failure(Ok(()), Ok(()), full()),
            Err(PipelineError::Sink(_))
        ));
        assert!(matches!(
            first_failure(Ok(()), Err(PipelineError::SinkClosed), Ok(())),
            Err(PipelineError::SinkClosed)
        ));
    }
}
