//! Pretraining: the built-in encoder learns a pretext task through sslpipe's own train-step graphs
//! (`crate::train`), until the budget is spent; then the trained encoder is exported as a plain
//! `encoder.onnx` for the embed phase. This module is the training application — the session
//! ([`Pretraining`]), its schedule, log, plots, held-out evaluation, checkpoints and export — and
//! knows nothing of threads or channels: the pipeline's wiring (`pipeline/pretrain.rs`) streams
//! the prepared samples in, in source order.
//!
//! What a run leaves in `<output.dir>/pretrain/`: `log.csv` and `curve.png` (see [`log`]),
//! `checkpoints/step-NNNNNNNN.safetensors` (the newest `keep_checkpoints`), `errors.jsonl` (images
//! that could not be used), and `predictions.png` for dense tasks (held-out input, prediction,
//! truth).
//!
//! Guarantees:
//! - Streaming: memory is bounded by one batch and the held-out set, never by the number of
//!   images or passes. Passes are shuffled with a seed (pass `e` has its own order) and samples
//!   draw their pretext randomness from `(seed, key, epoch)`, so a run is reproducible.
//! - Held out means held out: about `holdout` images, chosen by key hash, are never trained on;
//!   the loss and metrics on them are logged every `eval_every` steps next to the loss of the best
//!   input-independent prediction.
//! - Ctrl-C finishes the current step, writes a checkpoint and stops; `--resume` continues from
//!   the newest checkpoint with the same parameters, optimizer state, schedule position and data
//!   position (the pass and how far into it). A checkpoint that cannot be read completely, or
//!   that describes another model, is refused with its path and the reason; nothing is loaded.
//! - A bad image is listed in `errors.jsonl` once; a run whose input yields no usable image in a
//!   whole pass stops with an error instead of looping.

mod checkpoints;
mod export;
mod log;
mod schedule;
mod session;

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use thiserror::Error;

pub use export::encoder_onnx;
pub use session::{Pretraining, StepOutcome, StreamStart};

use crate::config::{ModelSpec, Pipeline};
use crate::pretext::{PretextSample, PretextTask};
use crate::train::{Network, TrainError};

/// Subfolder of the output folder that holds the pretraining artefacts.
pub const DIR: &str = "pretrain";

#[derive(Debug, Error)]
pub enum PretrainError {
    #[error("the pipeline does not pretrain (no [pretrain] section)")]
    NotPretraining,
    #[error("pretraining needs the built-in encoder")]
    NotBuiltin,
    #[error(
        "pretraining trains the encoder's last feature map, and the embedding is that map's average ({channels} channels = width x 2^(stages - 1)): set embedding_dim = {channels}"
    )]
    EmbeddingDim { channels: usize },
    #[error("nothing to resume: no checkpoint in {}", .dir.display())]
    NothingToResume { dir: PathBuf },
    #[error("checkpoint {}: its stream position is unreadable", .path.display())]
    StreamPosition {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "checkpoint {}: {reason}; it was written by a different pipeline (run without --resume to start afresh)",
        .path.display()
    )]
    ForeignCheckpoint { path: PathBuf, reason: String },
    #[error("the source has no image to train on ({total} listed)")]
    NoTrainingImage { total: u64 },
    #[error("a whole pass over the source gave no usable image (pass {pass}); see {}", .errors.display())]
    EmptyPass { pass: u64, errors: PathBuf },
    #[error("cannot write {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Pretext(#[from] crate::pretext::PretextError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error(transparent)]
    Png(#[from] crate::pretext::draw::PngError),
}

impl PretrainError {
    fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        PretrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What the pretrain phase reports (part of the run summary).
#[derive(Debug, Clone, Serialize)]
pub struct PretrainReport {
    pub task: String,
    pub steps: u64,
    /// Training images consumed (held-out images excluded).
    pub images: u64,
    pub seconds: f64,
    pub images_per_s: f64,
    /// Mean training loss over the last log interval.
    pub last_loss: Option<f64>,
    /// The last held-out evaluation.
    pub eval: Option<EvalPoint>,
    /// Share of the train thread's time spent waiting for prepared samples.
    pub input_wait: f64,
    /// Step of the checkpoint this run resumed from.
    pub resumed_from: Option<u64>,
    /// Stopped by Ctrl-C before the budget was spent (a checkpoint was written).
    pub interrupted: bool,
    pub skipped_images: u64,
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalPoint {
    pub step: u64,
    pub images: usize,
    pub loss: f64,
    pub metrics: Vec<(String, f64)>,
    /// Loss of the best prediction that ignores the input (chance level for classification).
    pub baseline: Option<f64>,
}

/// The outcome: the trained encoder (unless interrupted) and the report.
pub struct Pretrained {
    pub encoder_onnx: Option<Vec<u8>>,
    pub report: PretrainReport,
}

/// One held-out sample, kept for every evaluation (and its image for the predictions sheet).
pub struct HeldOut {
    pub sample: PretextSample,
    /// The decoded image (RGB8, HWC, working size).
    pub rgb: Vec<u8>,
}

/// Everything validation needs to know about the model a pipeline pretrains.
pub struct Model {
    pub task: Arc<dyn PretextTask>,
    pub network: Network,
}

/// Builds the task and the network for `plan` (which must pretrain), checking every shape;
/// errors say which setting to change.
pub fn model(plan: &Pipeline) -> Result<Model, PretrainError> {
    let (Some(cfg), Some(pretrain)) = (plan.pretext(), plan.pretrain()) else {
        return Err(PretrainError::NotPretraining);
    };
    let ModelSpec::Builtin { spec: encoder, .. } = &plan.model else {
        return Err(PretrainError::NotBuiltin);
    };
    let size = plan.decode.size as usize;
    let task = crate::pretext::build(cfg, size)?;
    let spec = crate::pretext::train_spec(
        task.as_ref(),
        encoder,
        pretrain.temperature,
        pretrain.optimizer.clone(),
        pretrain.batch_size,
    )?;
    let network = Network::new(spec)?;
    if network.spec().tap == crate::train::Tap::FeatureMap
        && encoder.features == crate::model::Features::Last
    {
        let channels = network
            .encoder_layers()
            .last()
            .map(|l| l.output_shape[0])
            .unwrap_or(0);
        if channels != encoder.embedding_dim as usize {
            return Err(PretrainError::EmbeddingDim { channels });
        }
    }
    Ok(Model { task, network })
}
