//! The training contract of a pretext task: how its tensors enter the network, which head and
//! loss it trains with, how its samples are written into a train step's batch, the yardstick its
//! held-out loss is read against, and (optionally) how its predictions are drawn and which ONNX
//! prelude the exported encoder needs. Every task implements [`TrainingContract`] in its own file;
//! the pretraining loop only calls it.
//!
//! Every task trains the encoder's last feature map ([`Tap::FeatureMap`]); the exported embedding
//! is that map's global average, the representation *before* any task-specific layer (SimCLR's
//! lesson: the layers nearest the pretext loss specialise in it and transfer worst). The shared
//! head builders are in [`super::heads`], the shared batch-filling helpers in [`super::feed`].
//!
//! Guarantees: [`train_spec`] only builds a description; `Network::new` validates it, and every
//! mismatch (a target resolution the feature map cannot reach, a tile smaller than the encoder
//! accepts) is reported with the task's and the encoder's numbers. A sample whose tensors do not
//! have the task's signature is a [`TrainError`] naming the tensor when it is fed, never a panic
//! or a silently shifted batch.

use super::baseline::Baseline;
pub use super::feed::{PixelNorm, Slot};
use super::{PretextSample, PretextTask, feed, heads};
use crate::model::{EncoderSpec, GraphBuilder, Layer, ModelError};
use crate::pretext::PretextError;
use crate::train::{BatchInputs, InputLayout, Loss, Optimizer, Tap, TrainError, TrainSpec};

/// What the pipeline tells a task about the network it will train.
#[derive(Debug, Clone, Copy)]
pub struct NetworkContext<'a> {
    /// The built-in encoder as configured (its `in_channels` is the task's to set).
    pub encoder: &'a EncoderSpec,
    /// NT-Xent temperature of `[pretrain]` (used by contrastive tasks).
    pub temperature: f32,
}

/// How a task's tensors enter the network and what it learns them with.
#[derive(Debug, Clone, PartialEq)]
pub struct Training {
    /// How input 0 (per sample) is laid out for the encoder.
    pub input: InputLayout,
    /// Channels of the encoder's input: 1 for colorization's L, 3 otherwise.
    pub in_channels: u32,
    /// The head on the encoder's last feature map.
    pub head: Vec<Layer>,
    pub loss: Loss,
}

impl Training {
    /// The image back from itself (`[3, S, S]`, normalised like the input): the dense decoder
    /// ([`heads::decoder`]) on a 3-channel encoder at `size` px, masked L2 with a per-pixel mask.
    pub fn image_reconstruction(encoder: &EncoderSpec, size: usize) -> Result<Self, PretextError> {
        Ok(Training {
            input: InputLayout::Images,
            in_channels: 3,
            head: heads::decoder(encoder, 3, size as u32, 3, size)?,
            loss: Loss::MaskedL2 {
                mask_shape: Some(vec![1, size, size]),
            },
        })
    }
}

/// The training side of a pretext task (see the module documentation).
pub trait TrainingContract {
    /// The input layout, encoder input channels, head and loss for `net`.
    fn training(&self, net: &NetworkContext<'_>) -> Result<Training, PretextError>;

    /// Writes `sample` into `slot` of the batch inputs `dst` (the trainer's or an evaluator's),
    /// converted as the network expects it.
    fn fill(
        &self,
        sample: &PretextSample,
        slot: Slot,
        norm: &PixelNorm,
        dst: &mut dyn BatchInputs,
    ) -> Result<(), TrainError>;

    /// An empty accumulator of the loss of the best input-independent prediction, for batches of
    /// `batch` samples.
    fn baseline(&self, batch: usize) -> Baseline;

    /// How the network's held-out predictions are drawn; `None`: the task has no picture.
    fn predictions(&self) -> Option<&dyn DrawPredictions> {
        None
    }

    /// The graph the exported encoder puts before the encoder; `None`: the encoder reads the
    /// normalised RGB input as it is.
    fn export_prelude(&self) -> Option<&dyn ExportPrelude> {
        None
    }
}

/// A task that classifies its 3-channel input into one of `classes` (rotation, jigsaw, relative
/// patch location): its whole [`TrainingContract`] follows. An MLP on the pooled feature map
/// ([`heads::mlp`]), cross-entropy; `images` ← input 0, `labels` ← target 0; chance-level baseline.
pub trait Classification {
    fn input_layout(&self) -> InputLayout;
    fn classes(&self) -> usize;
    /// Values per channel plane of input 0 (to normalise 8-bit pixels).
    fn plane(&self) -> usize;
}

impl<T: Classification> TrainingContract for T {
    fn training(&self, _net: &NetworkContext<'_>) -> Result<Training, PretextError> {
        Ok(Training {
            input: self.input_layout(),
            in_channels: 3,
            head: heads::mlp(self.classes()),
            loss: Loss::CrossEntropy,
        })
    }

    fn fill(
        &self,
        sample: &PretextSample,
        slot: Slot,
        norm: &PixelNorm,
        dst: &mut dyn BatchInputs,
    ) -> Result<(), TrainError> {
        feed::classify(
            &sample.inputs,
            &sample.targets,
            slot,
            self.plane(),
            norm,
            dst,
        )
    }

    fn baseline(&self, batch: usize) -> Baseline {
        Baseline::chance(self.classes(), batch)
    }
}

/// Draws what the network made of one held-out sample.
pub trait DrawPredictions {
    /// (what the network sees, what it predicts), both HWC RGB8 of the working size, for the
    /// sample in `slot` of `batch` (filled by [`TrainingContract::fill`]) whose prediction is
    /// `prediction`.
    fn panels(
        &self,
        sample: &PretextSample,
        prediction: &[f32],
        slot: Slot,
        batch: &mut dyn BatchInputs,
        norm: &PixelNorm,
    ) -> Result<(Vec<u8>, Vec<u8>), TrainError>;
}

/// The ONNX nodes that turn the exported encoder's input (RGB normalised with the pipeline's
/// mean/std, `[N, 3, S, S]`) into what the task trained the encoder on.
pub trait ExportPrelude {
    /// Appends the nodes reading `images`; returns the name of the encoder's input tensor.
    fn emit(
        &self,
        g: &mut GraphBuilder,
        images: &str,
        norm: &PixelNorm,
    ) -> Result<String, ModelError>;
    /// One sentence for the exported model's documentation: what the prelude computes.
    fn describe(&self, norm: &PixelNorm) -> String;
}

/// The train-step description for `task` on the built-in encoder `encoder`, with `optimizer` and
/// batches of `batch_size`.
pub fn train_spec(
    task: &dyn PretextTask,
    encoder: &EncoderSpec,
    temperature: f32,
    optimizer: Optimizer,
    batch_size: usize,
) -> Result<TrainSpec, PretextError> {
    let sig = task.signature();
    let shape = &sig.inputs[0].shape;
    let training = task.training(&NetworkContext {
        encoder,
        temperature,
    })?;
    let mut encoder = encoder.clone();
    encoder.in_channels = training.in_channels;
    Ok(TrainSpec {
        encoder,
        input_size: shape[shape.len() - 1] as u32,
        input: training.input,
        tap: Tap::FeatureMap,
        head: training.head,
        loss: training.loss,
        optimizer,
        batch_size,
    })
}
