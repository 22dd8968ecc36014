//! The user's words: one serde struct per TOML section, checked only for form (known keys, right
//! types). Every struct denies unknown fields so a typo is an error, not a silently ignored key.
//! Meaning (does the folder exist, is the size big enough for the model) is checked in `plan.rs`.
//!
//! The sections whose shape depends on a `kind` chosen from a registry live with their kinds:
//! `[source]` is `crate::source::SourceConfig`, `[pretext]` is `crate::pretext::TaskConfig`.

use std::path::PathBuf;

use serde::Deserialize;

use crate::model::{Features, Stem};

/// `[pipeline]`: run-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    pub name: Option<String>,
    #[serde(default)]
    pub on_error: OnError,
    /// Decode workers (OS threads); 0 = one per available core.
    #[serde(default)]
    pub workers: usize,
    /// How many nice levels below the rest of the process the decode workers run (Linux; 0–19,
    /// 0 = same priority). See `pipeline::workers` for why.
    #[serde(default = "default_worker_nice")]
    pub worker_nice: u8,
    /// Capacity of each bounded channel, in items. Memory is bounded by these, never by the input.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Seed of all per-sample randomness (pretext draws): `hash(seed, key, epoch)`.
    #[serde(default)]
    pub seed: u64,
}

impl Default for PipelineSection {
    fn default() -> Self {
        Self {
            name: None,
            on_error: OnError::default(),
            workers: 0,
            worker_nice: default_worker_nice(),
            queue: default_queue(),
            seed: 0,
        }
    }
}

fn default_queue() -> usize {
    64
}

fn default_worker_nice() -> u8 {
    10
}

/// What happens when one image cannot be read or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Count it, list it in the errors file, go on.
    #[default]
    Skip,
    /// Stop the run at the first bad image (rows already written stay valid).
    Fail,
}

fn yes() -> bool {
    true
}

/// `[model]`: the encoder. Closed set, tagged by `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSection {
    Builtin(BuiltinSection),
    Onnx(OnnxSection),
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection::Builtin(BuiltinSection::default())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinSection {
    #[serde(default = "default_width")]
    pub width: u32,
    #[serde(default = "default_stages")]
    pub stages: Vec<u32>,
    /// Default 256 with `features = "last"`; derived (and not to be set) with `"stages"`.
    pub embedding_dim: Option<u32>,
    #[serde(default)]
    pub features: Features,
    #[serde(default)]
    pub stem: Stem,
    /// Cells per side of the `stages` pooling grid (default 2); only with `features = "stages"`.
    pub grid: Option<u32>,
    /// Seed of the initial weights.
    #[serde(default)]
    pub seed: u64,
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
}

impl Default for BuiltinSection {
    fn default() -> Self {
        Self {
            width: default_width(),
            stages: default_stages(),
            embedding_dim: None,
            features: Features::Last,
            stem: Stem::Pooled,
            grid: None,
            seed: 0,
            mean: None,
            std: None,
        }
    }
}

fn default_width() -> u32 {
    32
}

fn default_stages() -> Vec<u32> {
    vec![1, 1, 1, 1]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxSection {
    pub path: PathBuf,
    /// Input tensor name; default: the model's only input.
    pub input: Option<String>,
    /// Output tensor name; default: the model's first output.
    pub output: Option<String>,
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
}

/// `[runtime]`: ONNX Runtime.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// `"cpu"` (default), `"cuda"` or `"cuda:N"`.
    pub device: Option<String>,
    #[serde(default)]
    pub intra_threads: usize,
    /// Path of libonnxruntime; default: see `sslpipe::runtime::library_candidates`.
    pub library: Option<PathBuf>,
    /// `"disable" | "basic" | "extended" | "all"` (default `"all"`).
    pub optimization: Option<String>,
    /// Idle ORT threads spin instead of sleeping (default false: they would take the decode
    /// workers' cores).
    #[serde(default)]
    pub spinning: bool,
}

/// `[embed]`: the embed phase.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedSection {
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// `false`: a pipeline with `[pretrain]` stops after pretraining (it still writes encoder.onnx).
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for EmbedSection {
    fn default() -> Self {
        Self {
            batch_size: default_batch(),
            enabled: true,
        }
    }
}

fn default_batch() -> usize {
    64
}

/// `[output]`: the Parquet feature files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    pub dir: PathBuf,
    #[serde(default = "default_rows_per_file")]
    pub rows_per_file: usize,
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// Embedding column type: `fixed_size_list` (default) or `list` (for readers such as Feast).
    #[serde(default)]
    pub embedding_type: EmbeddingType,
    /// Publish the open part file once its first row is this many seconds old (default: only by
    /// rows; 10 s for a watched folder).
    pub roll_seconds: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingType {
    #[default]
    FixedSizeList,
    List,
}

fn default_rows_per_file() -> usize {
    1_000_000
}

fn default_row_group_rows() -> usize {
    32_768
}

/// `[export]`: write the pretext dataset (inputs and pseudo-labels) instead of running a model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSection {
    /// Passes over the input; each pass draws new random pretext parameters (epoch in the seed).
    #[serde(default = "one")]
    pub epochs: u64,
}

fn one() -> u64 {
    1
}

/// `[pretrain]`: train the built-in encoder on the `[pretext]` task before embedding.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainSection {
    /// Budget: stop after this many optimizer steps …
    pub steps: Option<u64>,
    /// … or after this many passes over the source …
    pub epochs: Option<f64>,
    /// … or after this much wall time, whichever comes first.
    pub minutes: Option<f64>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// `"adamw"` (default) or `"sgd"`.
    #[serde(default = "default_optimizer")]
    pub optimizer: String,
    /// Peak learning rate (AdamW 0.002, SGD 0.1).
    pub lr: Option<f32>,
    /// Decoupled weight decay (AdamW 0.05, SGD 0.0005).
    pub weight_decay: Option<f32>,
    /// SGD momentum.
    #[serde(default = "default_momentum")]
    pub momentum: f32,
    /// Linear warm-up from 0 to `lr` over this many steps (default: 5 % of the budget, ≤ 500).
    pub warmup_steps: Option<u64>,
    /// `"cosine"` (default: decays to `min_lr` when the budget is spent) or `"constant"`.
    #[serde(default = "default_schedule")]
    pub schedule: String,
    #[serde(default)]
    pub min_lr: f32,
    /// NT-Xent temperature of the `views` task.
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    /// Images held out of training to evaluate the pretext task on (chosen by key hash).
    #[serde(default = "default_holdout")]
    pub holdout: u64,
    /// Evaluate on the held-out images every this many steps (and at the end).
    #[serde(default = "default_eval_every")]
    pub eval_every: u64,
    /// Write a checkpoint every this many steps (and at the end, and on Ctrl-C).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Checkpoints kept on disk (the newest ones).
    #[serde(default = "default_keep_checkpoints")]
    pub keep_checkpoints: usize,
    /// One row of the training log every this many steps.
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// Held-out images drawn in `predictions.png` (colorize, inpaint, mask).
    #[serde(default = "default_preview")]
    pub preview: usize,
}

fn default_optimizer() -> String {
    "adamw".into()
}
fn default_momentum() -> f32 {
    0.9
}
fn default_schedule() -> String {
    "cosine".into()
}
fn default_temperature() -> f32 {
    0.2
}
fn default_holdout() -> u64 {
    512
}
fn default_eval_every() -> u64 {
    200
}
fn default_checkpoint_every() -> u64 {
    500
}
fn default_keep_checkpoints() -> usize {
    3
}
fn default_log_every() -> u64 {
    10
}
fn default_preview() -> usize {
    8
}
