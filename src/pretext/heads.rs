//! The head builders the tasks share (their [`TrainingContract::training`] picks one):
//! - classification and projection heads pool the encoder's last feature map and apply an MLP
//!   ([`mlp`]): rotation 4-way, jigsaw P-way over the concatenated tile features, relative patch
//!   location 8-way over the two patches, the views (SimCLR) projection;
//! - dense tasks (colorization, inpainting, masked patches) upsample the map with Resize + Conv
//!   blocks to the target's resolution ([`decoder`]).
//!
//! [`TrainingContract::training`]: super::training::TrainingContract::training

use crate::model::Layer;
use crate::model::{BuiltinEncoder, EncoderSpec};
use crate::pretext::PretextError;

/// Width of the hidden layer of the MLP heads.
const HIDDEN: usize = 256;
/// Output size of the views projection head.
pub const PROJECTION: usize = 128;
/// Channels of the last (full-resolution) decoder block; earlier blocks have more.
const DECODER_MIN_CHANNELS: usize = 32;

/// Global average pool, then Linear(256) + BN + ReLU + Linear(`out`).
pub fn mlp(out: usize) -> Vec<Layer> {
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
}

/// Resize+Conv decoder from the last feature map of `encoder` (with `in_channels` input channels,
/// at `input_size` px) to `[out, target, target]`: a 1×1 projection, then one (×2 upsample, 3×3
/// conv, BN, ReLU) block per doubling, halving the channels each time down to
/// [`DECODER_MIN_CHANNELS`], and a 1×1 conv to `out` channels.
pub fn decoder(
    encoder: &EncoderSpec,
    in_channels: u32,
    input_size: u32,
    out: usize,
    target: usize,
) -> Result<Vec<Layer>, PretextError> {
    let mut spec = encoder.clone();
    spec.in_channels = in_channels;
    let built = BuiltinEncoder::new(spec, input_size)?;
    // The last stage's output: the map the dense head decodes from.
    let fmap = built
        .feature_map_layers()
        .checked_sub(1)
        .map(|i| built.layers()[i].output_shape.clone())
        .ok_or_else(|| PretextError::Network("the encoder has no feature map".into()))?;
    let (channels, side) = (fmap[0], fmap[1]);
    if !target.is_multiple_of(side) || !(target / side).is_power_of_two() {
        return Err(PretextError::Network(format!(
            "the encoder's last feature map is {side}×{side} at {input_size} px, and the task's target is {target}×{target}: a power-of-two multiple is needed (change decode.size or the encoder's stages)"
        )));
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
