//! The trained encoder as a plain inference `.onnx` — what the embed phase runs and what users
//! take elsewhere. Every exported encoder has the same interface as the untrained built-in one:
//! input `images` `[N, 3, S, S]` (RGB normalised with the pipeline's mean/std), output
//! `embedding` `[N, D]`.
//!
//! Two things need more than the encoder's own graph:
//! - every task trains the last feature map, not the `embed` projection, so with `features =
//!   "last"` the projection is set to the identity (validation requires `embedding_dim` = the
//!   map's channels): the embedding is the feature map's global average (`"stages"` has no
//!   projection);
//! - a task that trains the encoder on something other than normalised RGB (colorization: the
//!   lightness alone) gives an [`ExportPrelude`]; the export starts with it.

use crate::model::{BuiltinEncoder, Features, ModelError, ParamSet};
use crate::pretext::PretextTask;
use crate::pretext::training::{ExportPrelude, PixelNorm};
use crate::train::{Network, Tap, TrainError};

/// The exported encoder of `network` with `params`, trained on `task`, for `size × size` images
/// (see the module documentation). The encoder is fully convolutional up to its global pooling, so weights
/// trained on tiles, patches or views of another size serve whole images of the working size.
pub fn encoder_onnx(
    network: &Network,
    params: &ParamSet,
    task: &dyn PretextTask,
    norm: &PixelNorm,
    size: u32,
) -> Result<Vec<u8>, TrainError> {
    let encoder = BuiltinEncoder::new(network.spec().encoder.clone(), size)?;
    // The parameters do not depend on the input size: the trained encoder's serve this one.
    let mut enc = network.encoder_params(params)?;
    if network.spec().tap == Tap::FeatureMap && encoder.spec().features == Features::Last {
        identity_projection(&mut enc, &encoder)?;
    }
    if let Some(prelude) = task.export_prelude() {
        return Ok(prelude_encoder(&encoder, &enc, prelude, norm)?);
    }
    Ok(encoder.to_onnx(&enc)?)
}

fn identity_projection(params: &mut ParamSet, encoder: &BuiltinEncoder) -> Result<(), TrainError> {
    let d = encoder.embedding_dim();
    let mut set = ParamSet::new();
    for p in params.iter() {
        let data = match p.name.as_str() {
            "embed.weight" if p.shape == [d, d] => (0..d * d)
                .map(|i| if i % (d + 1) == 0 { 1.0 } else { 0.0 })
                .collect(),
            "embed.bias" => vec![0.0; p.data.len()],
            "embed.weight" => {
                return Err(TrainError::Spec(format!(
                    "embed.weight is {:?}, the identity needs [{d}, {d}]",
                    p.shape
                )));
            }
            _ => p.data.clone(),
        };
        set.push(p.name.clone(), p.shape.clone(), data)?;
    }
    *params = set;
    Ok(())
}

/// The encoder behind the task's `prelude`, with the usual interface.
fn prelude_encoder(
    encoder: &BuiltinEncoder,
    params: &ParamSet,
    prelude: &dyn ExportPrelude,
    norm: &PixelNorm,
) -> Result<Vec<u8>, ModelError> {
    let doc = format!(
        "sslpipe built-in encoder {}, for the {}-channel encoder; output the {}-d embedding",
        prelude.describe(norm),
        encoder.spec().in_channels,
        encoder.embedding_dim()
    );
    // The prelude takes RGB, whatever the encoder's own input.
    let (mut g, images) = encoder.graph_with_params(params, 3, doc)?;
    let input = prelude.emit(&mut g, &images, norm)?;
    encoder.emit_embedding(&mut g, &input)?;
    g.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EncoderSpec;
    use crate::model::encoder::{EMBEDDING_OUTPUT, IMAGES_INPUT};
    use crate::pretext::RgbView;
    use crate::pretext::colorize::ColorizeConfig;
    use crate::pretext::feed::host::{Host, zeros};
    use crate::pretext::training::{Slot, TrainingContract};
    use crate::rng::Rng;
    use crate::runtime::{SessionSettings, environment, session_from_bytes};
    use crate::train::BatchInputs;
    use crate::train::loss::TARGETS_INPUT;
    use ort::value::Tensor;

    fn embed(onnx: &[u8], input: Vec<f32>, shape: [usize; 4]) -> Vec<f32> {
        let env = environment(None).unwrap();
        let mut session = session_from_bytes(env, &SessionSettings::default(), onnx).unwrap();
        let tensor = Tensor::from_array((shape, input)).unwrap();
        let out = session.run(ort::inputs![IMAGES_INPUT => tensor]).unwrap();
        out[EMBEDDING_OUTPUT]
            .try_extract_tensor::<f32>()
            .unwrap()
            .1
            .to_vec()
    }

    /// The exported colorization encoder on RGB equals the trained 1-channel encoder on what the
    /// colorize task's batch feed gives it for the same image.
    #[test]
    fn the_lightness_prelude_feeds_the_encoder_what_training_fed_it() {
        let s = 16;
        let spec = EncoderSpec {
            width: 4,
            stages: vec![1],
            embedding_dim: 8,
            in_channels: 1,
            ..Default::default()
        };
        let encoder = BuiltinEncoder::new(spec, s as u32).unwrap();
        let params = encoder.init_params(5);
        let norm = PixelNorm {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        };
        let mut rng = Rng::new(9);
        let rgb: Vec<u8> = (0..s * s * 3).map(|_| rng.index(256) as u8).collect();
        let mut chw = vec![0f32; 3 * s * s];
        crate::decode::rgb_to_chw(&rgb, s, s, norm.mean, norm.std, &mut chw);

        // What training fed the encoder: the task's sample, through the task's feed.
        let task = ColorizeConfig::default().build(s).unwrap();
        let view = RgbView {
            width: s,
            height: s,
            pixels: &rgb,
        };
        let sample = task.make(view, &mut Rng::new(0));
        let mut host = Host(vec![
            (IMAGES_INPUT, zeros(&[1, 1, s, s])),
            (TARGETS_INPUT, zeros(&[1, task.bins().len(), s / 4, s / 4])),
        ]);
        let slot = Slot { index: 0, batch: 1 };
        task.fill(&sample, slot, &norm, &mut host).unwrap();
        let fed = host.input_f32_mut(IMAGES_INPUT).unwrap().to_vec();

        let prelude = task.export_prelude().expect("colorize has a prelude");
        let exported = prelude_encoder(&encoder, &params, prelude, &norm).unwrap();
        let via_prelude = embed(&exported, chw, [1, 3, s, s]);
        let direct = embed(&encoder.to_onnx(&params).unwrap(), fed, [1, 1, s, s]);
        let diff = via_prelude
            .iter()
            .zip(&direct)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = direct.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            diff <= 1e-3 * scale.max(1.0),
            "max difference {diff} (scale {scale})"
        );
    }
}
