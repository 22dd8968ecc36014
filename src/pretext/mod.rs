//! Pretext tasks: for every image that streams through, derive the network's input and a
//! pseudo-label from the image itself.
//!
//! Guarantees:
//! - Every task has one shape: an RGB8 image at working size in, named tensors out (inputs and
//!   targets), described ahead of time by a [`Signature`] so the model, the trainer and the sinks
//!   can be checked at validation time.
//! - Determinism: all randomness of a sample comes from the [`Rng`] the caller builds with
//!   `Rng::for_sample(seed, key, epoch)`; the same (seed, key, epoch) gives bit-identical tensors
//!   on any thread, any number of threads.
//! - Tasks never panic on valid input (an image of the declared size); configuration problems are
//!   caught when the task is built ([`PretextError`]).
//!
//! A new task is one new file here, one [`TaskConfig`] variant and one match arm in [`build`].

pub mod colorize;
pub mod draw;
pub mod inpaint;
pub mod jigsaw;
pub mod lab;
pub mod mask;
pub mod relpatch;
pub mod rotation;
#[cfg(test)]
mod test_support;
pub mod views;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::rng::Rng;

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

/// The shape every task implements. Implementations are immutable after `build` and shared by all
/// worker threads; per-sample state lives in the `Rng` and the output.
pub trait PretextTask: Send + Sync {
    /// The task's config name (`rotation`, `jigsaw`, …).
    fn name(&self) -> &'static str;
    /// Tensors produced per sample for an input image of `size × size`.
    fn signature(&self) -> Signature;
    /// Derives the inputs and pseudo-label targets of one sample. `image` is `size × size`.
    fn make(&self, image: RgbView<'_>, rng: &mut Rng) -> PretextSample;
    /// Draws the sample so a person understands it: the network input(s) and the pseudo-label,
    /// as one RGB8 image (HWC) of the returned width and height.
    fn preview(&self, image: RgbView<'_>, sample: &PretextSample) -> (usize, usize, Vec<u8>);
}

#[derive(Debug, Error)]
pub enum PretextError {
    #[error("pretext task {task}: {message}")]
    Invalid { task: &'static str, message: String },
}

/// `[pretext]` in a pipeline: the task, tagged by `kind`, with its own parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskConfig {
    Rotation(rotation::RotationConfig),
    Jigsaw(jigsaw::JigsawConfig),
    Colorize(colorize::ColorizeConfig),
    Inpaint(inpaint::InpaintConfig),
    #[serde(rename = "relpatch")]
    RelPatch(relpatch::RelPatchConfig),
    Views(views::ViewsConfig),
    Mask(mask::MaskConfig),
}

impl TaskConfig {
    pub fn name(&self) -> &'static str {
        match self {
            TaskConfig::Rotation(_) => "rotation",
            TaskConfig::Jigsaw(_) => "jigsaw",
            TaskConfig::Colorize(_) => "colorize",
            TaskConfig::Inpaint(_) => "inpaint",
            TaskConfig::RelPatch(_) => "relpatch",
            TaskConfig::Views(_) => "views",
            TaskConfig::Mask(_) => "mask",
        }
    }
}

/// Builds the task for images of `size × size`, validating its parameters against that size.
pub fn build(
    config: &TaskConfig,
    size: usize,
) -> Result<std::sync::Arc<dyn PretextTask>, PretextError> {
    use std::sync::Arc;
    Ok(match config {
        TaskConfig::Rotation(c) => Arc::new(c.build(size)?),
        TaskConfig::Jigsaw(c) => Arc::new(c.build(size)?),
        TaskConfig::Colorize(c) => Arc::new(c.build(size)?),
        TaskConfig::Inpaint(c) => Arc::new(c.build(size)?),
        TaskConfig::RelPatch(c) => Arc::new(c.build(size)?),
        TaskConfig::Views(c) => Arc::new(c.build(size)?),
        TaskConfig::Mask(c) => Arc::new(c.build(size)?),
    })
}
