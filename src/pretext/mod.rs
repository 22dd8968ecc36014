//! Pretext tasks: for every image that streams through, derive the network's input and a
//! pseudo-label from the image itself, and say how the network learns from them.
//!
//! Guarantees:
//! - Every task has one shape: an RGB8 image at working size in, named tensors out (inputs and
//!   targets), described ahead of time by a [`Signature`] so the model, the trainer and the sinks
//!   can be checked at validation time.
//! - Every task owns its training contract ([`TrainingContract`], in its own file): how its
//!   tensors enter the network, its head and loss, how a batch is fed, the baseline of its
//!   held-out loss, and how its predictions are drawn. The pretraining loop only calls it.
//! - Determinism: all randomness of a sample comes from the [`Rng`] the caller builds with
//!   `Rng::for_sample(seed, key, epoch)`; the same (seed, key, epoch) gives bit-identical tensors
//!   on any thread, any number of threads.
//! - Tasks never panic on valid input (an image of the declared size); configuration problems are
//!   caught when the task is built ([`PretextError`]).
//!
//! A new task is one new file here (or a folder, for a large one) holding its config (with a
//! `build(size)` and a [`TaskSettings`] impl), its [`PretextTask`] and its [`TrainingContract`]
//! (for a plain classifier, [`training::Classification`]), plus one line in the `tasks!`
//! registry below, which declares its [`TaskConfig`] variant and its `kind` name.

pub mod baseline;
pub mod colorize;
pub mod draw;
pub mod feed;
pub mod heads;
pub mod inpaint;
pub mod jigsaw;
pub mod lab;
pub mod mask;
pub mod predictions;
pub mod relpatch;
pub mod rotation;
#[cfg(test)]
mod test_support;
pub mod training;
pub mod views;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::rng::Rng;
pub use training::{TrainingContract, train_spec};

/// Element type of a pretext tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    /// Raw 8-bit pixels (normalised to float when batched for a model).
    U8,
    F32,
    /// Class indices.
    I64,
}

/// One named tensor of a sample, per sample (no batch dimension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn new(name: &str, dtype: DType, shape: &[usize]) -> Self {
        Self {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
        }
    }
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a task produces for every sample, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub targets: Vec<TensorSpec>,
}

/// A tensor's values; the variant matches its [`TensorSpec::dtype`].
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    U8(Vec<u8>),
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::U8(v) => v.len(),
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::U8(_) => DType::U8,
            TensorData::F32(_) => DType::F32,
            TensorData::I64(_) => DType::I64,
        }
    }
}

/// One sample's tensors, in the order of the task's [`Signature`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PretextSample {
    pub inputs: Vec<TensorData>,
    pub targets: Vec<TensorData>,
}

/// An RGB8 image, row-major HWC, as the decode stage produces it.
#[derive(Debug, Clone, Copy)]
pub struct RgbView<'a> {
    pub width: usize,
    pub height: usize,
    pub pixels: &'a [u8],
}

impl<'a> RgbView<'a> {
    /// The image as `size×size×3` bytes. A valid input is borrowed as is; anything else (which
    /// the trait rules out, but must not crash a worker) is copied onto a black canvas, top-left
    /// aligned.
    pub fn conformed(&self, size: usize) -> Cow<'a, [u8]> {
        let n = size * size * 3;
        if self.width == size && self.height == size && self.pixels.len() >= n {
            return Cow::Borrowed(&self.pixels[..n]);
        }
        let mut out = vec![0u8; n];
        for y in 0..self.height.min(size) {
            let start = (y * self.width * 3).min(self.pixels.len());
            let end = (start + self.width.min(size) * 3).min(self.pixels.len());
            out[y * size * 3..][..end - start].copy_from_slice(&self.pixels[start..end]);
        }
        Cow::Owned(out)
    }
}

/// The shape every task implements, with its [`TrainingContract`]. Implementations are immutable
/// after `build` and shared by all worker threads; per-sample state lives in the `Rng` and the
/// output.
pub trait PretextTask: TrainingContract + Send + Sync {
    /// The task's config name (`rotation`, `jigsaw`, …).
    fn name(&self) -> &'static str;
    /// Tensors produced per sample for an input image of `size × size`.
    fn signature(&self) -> Signature;
    /// Derives the inputs and pseudo-label targets of one sample. `image` is `size × size`.
    fn make(&self, image: RgbView<'_>, rng: &mut Rng) -> PretextSample;
    /// Draws the sample so a person understands it: the network input(s) and the pseudo-label,
    /// as one RGB8 image (HWC) of the returned width and height.
    fn preview(&self, image: RgbView<'_>, sample: &PretextSample) -> (usize, usize, Vec<u8>);
    /// Files a trainer elsewhere needs to read an exported pretext dataset (jigsaw's permutation
    /// set), written into `dir`. Most tasks need none.
    fn write_dataset_files(&self, _dir: &Path) -> Result<(), PretextError> {
        Ok(())
    }
}

/// What every task's config implements besides its inherent `build(&self, size) ->
/// Result<Task, PretextError>` (which validates the parameters against `size × size` images).
pub trait TaskSettings {
    /// Makes the config's file paths absolute (relative ones are relative to the pipeline file).
    fn resolve_paths(&mut self, _resolve: &dyn Fn(&Path) -> PathBuf) {}
}

#[derive(Debug, Error)]
pub enum PretextError {
    #[error("pretext task {task}: {message}")]
    Invalid { task: &'static str, message: String },
    /// The task's network cannot be built on this encoder (a target the feature map cannot
    /// reach, ...); the message names the settings to change.
    #[error("{0}")]
    Network(String),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Write(#[from] crate::atomic::WriteError),
}

/// Declares [`TaskConfig`], one variant per task, each with its config name.
macro_rules! tasks {
    ($($variant:ident($config:ty) = $name:literal,)*) => {
        /// `[pretext]` in a pipeline: the task, tagged by `kind`, with its own parameters.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind")]
        pub enum TaskConfig {
            $(#[serde(rename = $name)] $variant($config),)*
        }

        impl TaskConfig {
            /// The task's config name (`rotation`, `jigsaw`, …).
            pub fn name(&self) -> &'static str {
                match self {
                    $(TaskConfig::$variant(_) => $name,)*
                }
            }
            /// Builds the task for images of `size × size`, validating its parameters against
            /// that size.
            fn build(&self, size: usize) -> Result<Arc<dyn PretextTask>, PretextError> {
                Ok(match self {
                    $(TaskConfig::$variant(c) => Arc::new(c.build(size)?),)*
                })
            }
            fn settings_mut(&mut self) -> &mut dyn TaskSettings {
                match self {
                    $(TaskConfig::$variant(c) => c,)*
                }
            }
        }
    };
}

// The registry: one line per task.
tasks! {
    Rotation(rotation::RotationConfig) = "rotation",
    Jigsaw(jigsaw::JigsawConfig) = "jigsaw",
    Colorize(colorize::ColorizeConfig) = "colorize",
    Inpaint(inpaint::InpaintConfig) = "inpaint",
    RelPatch(relpatch::RelPatchConfig) = "relpatch",
    Views(views::ViewsConfig) = "views",
    Mask(mask::MaskConfig) = "mask",
}

impl TaskConfig {
    /// Makes the task's file paths absolute (see [`TaskSettings::resolve_paths`]).
    pub fn resolve_paths(&mut self, resolve: &dyn Fn(&Path) -> PathBuf) {
        self.settings_mut().resolve_paths(resolve);
    }
}

/// Builds the task for images of `size × size`, validating its parameters against that size.
pub fn build(config: &TaskConfig, size: usize) -> Result<Arc<dyn PretextTask>, PretextError> {
    config.build(size)
}
