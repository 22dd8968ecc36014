//! Which network learns which pretext task: for every task, how its tensors enter the encoder
//! ([`InputLayout`]), which encoder tensor the head reads ([`Tap`]), the head itself and the loss.
//!
//! Every task reads the encoder's last feature map ([`Tap::FeatureMap`]); the exported embedding is
//! that map's global average, the representation *before* any task-specific layer (SimCLR's
//! lesson: the layers nearest the pretext loss specialise in it and transfer worst).
//! - classification tasks (rotation 4-way, jigsaw P-way over the concatenated tile features,
//!   relative patch location 8-way over the two patches) pool the map and apply an MLP head;
//! - views (SimCLR) pool and apply a projection MLP, trained with NT-Xent;
//! - dense tasks (colorization, inpainting, masked patches) upsample the map with Resize + Conv
//!   blocks to the target's resolution.
//!
//! Guarantees: [`train_spec`] only builds a description; `Network::new` validates it, and every
//! mismatch (a target resolution the feature map cannot reach, a tile smaller than the encoder
//! accepts) is reported with the task's and the encoder's numbers.

use crate::config::PretrainSpec;
use crate::model::{BuiltinEncoder, EncoderSpec};
use crate::pretext::{PretextTask, TaskConfig};
use crate::train::{InputLayout, Layer, Loss, Tap, TrainSpec};

/// Width of the hidden layer of the MLP heads.
const HIDDEN: usize = 256;
/// Output size of the views projection head.
const PROJECTION: usize = 128;
/// Channels of the last (full-resolution) decoder block; earlier blocks have more.
const DECODER_MIN_CHANNELS: usize = 32;

/// The train-step description for `task` (built for the working size `size`) on the built-in
/// encoder `encoder` (its `in_channels` is set here: 1 for colorization's L input, 3 otherwise).
pub fn train_spec(
    config: &TaskConfig,
    task: &dyn PretextTask,
    size: usize,
    encoder: &EncoderSpec,
    pretrain: &PretrainSpec,
) -> Result<TrainSpec, String> {
    let sig = task.signature();
    let input = &sig.inputs[0];
    let shape = &input.shape;
    let mut encoder = encoder.clone();
    encoder.in_channels = 3;
    let side = |s: &[usize]| s[s.len() - 1];
    let mlp = |out: usize| {
        vec![
            Layer::GlobalAvgPool,
            Layer::Flatten,
            Layer::Linear {
                out_features: HIDDEN,
                bias: true,
            },
            Layer::BatchNorm,
            Layer::Relu,
            Layer::Linear {
                out_features: out,
                bias: true,
            },
        ]
    };
    let (input_layout, tap, head, loss) = match config {
        TaskConfig::Rotation(_) => {
            let layout = if shape.len() == 4 {
                InputLayout::Views { count: shape[0] }
            } else {
                InputLayout::Images
            };
            (layout, Tap::FeatureMap, mlp(4), Loss::CrossEntropy)
        }
        TaskConfig::Jigsaw(j) => {
            let built = j.build(size).map_err(|e| e.to_string())?;
            let classes = built.permutations().len();
            (
                InputLayout::Tiles { count: shape[0] },
                Tap::FeatureMap,
                mlp(classes),
                Loss::CrossEntropy,
            )
        }
        TaskConfig::RelPatch(_) => (
            InputLayout::Tiles { count: shape[0] },
            Tap::FeatureMap,
            mlp(8),
            Loss::CrossEntropy,
        ),
        TaskConfig::Views(_) => (
            InputLayout::Views { count: shape[0] },
            Tap::FeatureMap,
            mlp(PROJECTION),
            Loss::NtXent {
                temperature: pretrain.temperature,
            },
        ),
        TaskConfig::Colorize(c) => {
            encoder.in_channels = 1;
            let built = c.build(size).map_err(|e| e.to_string())?;
            let s = side(shape);
            let (out, target_side, loss) = match c.target {
                crate::pretext::colorize::ColorTarget::Bins => (
                    built.bins().len(),
                    built.target_side(),
                    Loss::SoftCrossEntropy {
                        class_weights: None,
                    },
                ),
                crate::pretext::colorize::ColorTarget::Regression => (
                    2,
                    s,
                    Loss::MaskedL2 {
                        mask_shape: Some(vec![1, 1, 1]),
                    },
                ),
            };
            let head = decoder(&encoder, s as u32, out, target_side)?;
            (InputLayout::Images, Tap::FeatureMap, head, loss)
        }
        TaskConfig::Inpaint(_) | TaskConfig::Mask(_) => {
            let s = side(shape);
            let head = decoder(&encoder, s as u32, 3, s)?;
            (
                InputLayout::Images,
                Tap::FeatureMap,
                head,
                Loss::MaskedL2 {
                    mask_shape: Some(vec![1, s, s]),
                },
            )
        }
    };
    Ok(TrainSpec {
        encoder,
        input_size: side(shape) as u32,
        input: input_layout,
        tap,
        head,
        loss,
        optimizer: pretrain.optimizer.clone(),
        batch_size: pretrain.batch_size,
    })
}

/// Resize+Conv decoder from the encoder's last feature map to `[out, target, target]`: a 1×1
/// projection, then one (×2 upsample, 3×3 conv, BN, ReLU) block per doubling, halving the
/// channels each time down to [`DECODER_MIN_CHANNELS`], and a 1×1 conv to `out` channels.
fn decoder(
    encoder: &EncoderSpec,
    input_size: u32,
    out: usize,
    target: usize,
) -> Result<Vec<Layer>, String> {
    let built = BuiltinEncoder::new(encoder.clone(), input_size).map_err(|e| e.to_string())?;
    // The last stage's output: the map the dense head decodes from.
    let fmap = built
        .feature_map_layers()
        .checked_sub(1)
        .map(|i| built.layers()[i].output_shape.clone())
        .ok_or("the encoder has no feature map")?;
    let (channels, side) = (fmap[0], fmap[1]);
    if !target.is_multiple_of(side) || !(target / side).is_power_of_two() {
        return Err(format!(
            "the encoder's last feature map is {side}×{side} at {input_size} px, and the task's target is {target}×{target}: a power-of-two multiple is needed (change decode.size or the encoder's stages)"
        ));
    }
    let mut ch = channels.min(256);
    let mut head = vec![
        Layer::Conv {
            out_channels: ch,
            kernel: 1,
            stride: 1,
            padding: 0,
            groups: 1,
            bias: false,
        },
        Layer::BatchNorm,
        Layer::Relu,
    ];
    let mut cur = side;
    while cur < target {
        ch = (ch / 2).max(DECODER_MIN_CHANNELS);
        head.extend([
            Layer::Upsample { scale: 2 },
            Layer::Conv {
                out_channels: ch,
                kernel: 3,
                stride: 1,
                padding: 1,
                groups: 1,
                bias: false,
            },
            Layer::BatchNorm,
            Layer::Relu,
        ]);
        cur *= 2;
    }
    head.push(Layer::Conv {
        out_channels: out,
        kernel: 1,
        stride: 1,
        padding: 0,
        groups: 1,
        bias: true,
    });
    Ok(head)
}
