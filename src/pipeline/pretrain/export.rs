//! The trained encoder as a plain inference `.onnx` — what the embed phase runs and what users
//! take elsewhere. Every exported encoder has the same interface as the untrained built-in one:
//! input `images` `[N, 3, S, S]` (RGB normalised with the pipeline's mean/std), output
//! `embedding` `[N, D]`.
//!
//! Two tasks need more than the encoder's own graph:
//! - every task trains the last feature map, not the `embed` projection, so with `features =
//!   "last"` the projection is set to the identity (validation requires `embedding_dim` = the
//!   map's channels): the embedding is the feature map's global average (`"stages"` has no
//!   projection);
//! - colorization trains on the lightness channel alone, so the export starts with a prelude that
//!   turns the normalised RGB input into L (CIE Lab, D65) scaled as in training, `(L − 50) / 50`.

use crate::config::Normalization;
use crate::model::encoder::{EMBEDDING_OUTPUT, IMAGES_INPUT};
use crate::model::graph::Dim;
use crate::model::onnx::tensor_proto::DataType;
use crate::model::{BuiltinEncoder, Features, GraphBuilder, ModelError, ParamSet};
use crate::train::{Network, Tap, TrainError};

/// The exported encoder of `network` with `params` for `size × size` images (see the module
/// documentation). The encoder is fully convolutional up to its global pooling, so weights
/// trained on tiles, patches or views of another size serve whole images of the working size.
pub fn encoder_onnx(
    network: &Network,
    params: &ParamSet,
    norm: &Normalization,
    size: u32,
) -> Result<Vec<u8>, TrainError> {
    let encoder = BuiltinEncoder::new(network.spec().encoder.clone(), size)?;
    // The parameters do not depend on the input size: the trained encoder's serve this one.
    let mut enc = network.encoder_params(params)?;
    if network.spec().tap == Tap::FeatureMap && encoder.spec().features == Features::Last {
        identity_projection(&mut enc, &encoder)?;
    }
    if encoder.spec().in_channels == 1 {
        return Ok(lightness_encoder(&encoder, &enc, norm)?);
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

/// The 1-channel encoder behind an RGB → L prelude.
fn lightness_encoder(
    encoder: &BuiltinEncoder,
    params: &ParamSet,
    norm: &Normalization,
) -> Result<Vec<u8>, ModelError> {
    let s = encoder.input_size() as usize;
    let mut g = GraphBuilder::new("sslpipe_encoder");
    g.doc_string(format!(
        "sslpipe built-in encoder pretrained by colorization: RGB input (normalised with mean {:?}, std {:?}) is converted to CIE L, (L - 50) / 50, for the {}-channel encoder; output the {}-d embedding",
        norm.mean,
        norm.std,
        encoder.spec().in_channels,
        encoder.embedding_dim()
    ));
    let images = g.input(IMAGES_INPUT, DataType::Float, &Dim::batched(&[3, s, s]))?;
    for spec in encoder.param_specs() {
        let p = params
            .get(&spec.name)
            .ok_or_else(|| ModelError::MissingParam {
                name: spec.name.clone(),
                shape: spec.shape.clone(),
            })?;
        g.initializer_f32(&p.name, &p.shape, &p.data)?;
    }
    // x = images·std + mean (sRGB in [0, 1]); linearise; Y = 0.2126 R + 0.7152 G + 0.0722 B
    // (a 1×1 convolution); L = 116·f(Y) − 16 with the CIE f (cube root above (6/29)³).
    let std = g.constant_f32("prelude.std", &[1, 3, 1, 1], &norm.std)?;
    let mean = g.constant_f32("prelude.mean", &[1, 3, 1, 1], &norm.mean)?;
    let x = g.node("Mul", &[&images, &std], "prelude.scaled", vec![])?;
    let x = g.node("Add", &[&x, &mean], "prelude.srgb", vec![])?;
    let zero = g.constant_f32("prelude.zero", &[], &[0.0])?;
    let one = g.constant_f32("prelude.one", &[], &[1.0])?;
    let x = g.node("Clip", &[&x, &zero, &one], "prelude.clipped", vec![])?;
    let knee = g.constant_f32("prelude.knee", &[], &[0.04045])?;
    let low = g.constant_f32("prelude.low_scale", &[], &[1.0 / 12.92])?;
    let a = g.constant_f32("prelude.a", &[], &[0.055])?;
    let div = g.constant_f32("prelude.div", &[], &[1.0 / 1.055])?;
    let gamma = g.constant_f32("prelude.gamma", &[], &[2.4])?;
    let is_high = g.node("Greater", &[&x, &knee], "prelude.is_high", vec![])?;
    let lin_low = g.node("Mul", &[&x, &low], "prelude.lin_low", vec![])?;
    let t = g.node("Add", &[&x, &a], "prelude.t", vec![])?;
    let t = g.node("Mul", &[&t, &div], "prelude.t_scaled", vec![])?;
    let lin_high = g.node("Pow", &[&t, &gamma], "prelude.lin_high", vec![])?;
    let lin = g.node(
        "Where",
        &[&is_high, &lin_high, &lin_low],
        "prelude.linear",
        vec![],
    )?;
    let w = g.constant_f32("prelude.luma", &[1, 3, 1, 1], &[0.2126, 0.7152, 0.0722])?;
    let y = g.node("Conv", &[&lin, &w], "prelude.y", vec![])?;
    let eps = g.constant_f32("prelude.eps", &[], &[216.0 / 24389.0])?;
    let third = g.constant_f32("prelude.third", &[], &[1.0 / 3.0])?;
    let kappa = g.constant_f32("prelude.kappa", &[], &[24389.0 / 27.0 / 116.0])?;
    let offset = g.constant_f32("prelude.offset", &[], &[16.0 / 116.0])?;
    let small = g.constant_f32("prelude.small", &[], &[1e-12])?;
    let y_safe = g.node("Max", &[&y, &small], "prelude.y_safe", vec![])?;
    let cube = g.node("Pow", &[&y_safe, &third], "prelude.cbrt", vec![])?;
    let lin_f = g.node("Mul", &[&y, &kappa], "prelude.f_low", vec![])?;
    let lin_f = g.node("Add", &[&lin_f, &offset], "prelude.f_low_shifted", vec![])?;
    let above = g.node("Greater", &[&y, &eps], "prelude.above", vec![])?;
    let f = g.node("Where", &[&above, &cube, &lin_f], "prelude.f", vec![])?;
    // (116 f − 16 − 50) / 50
    let k116 = g.constant_f32("prelude.k116", &[], &[116.0 / 50.0])?;
    let k66 = g.constant_f32("prelude.k66", &[], &[66.0 / 50.0])?;
    let l = g.node("Mul", &[&f, &k116], "prelude.l_scaled", vec![])?;
    let l = g.node("Sub", &[&l, &k66], "prelude.l", vec![])?;
    let out = encoder.emit_forward(&mut g, &l)?;
    g.node_with_outputs("Identity", &[&out], &[EMBEDDING_OUTPUT], vec![])?;
    g.output(
        EMBEDDING_OUTPUT,
        DataType::Float,
        &Dim::batched(&[encoder.embedding_dim()]),
    )?;
    g.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EncoderSpec;
    use crate::rng::Rng;
    use crate::runtime::{SessionSettings, environment, session_from_bytes};
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

    /// The exported colorization encoder on RGB equals the trained 1-channel encoder on the L
    /// channel the colorize task computes (`(L − 50) / 50`).
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
        let norm = Normalization {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        };
        let mut rng = Rng::new(9);
        let rgb: Vec<u8> = (0..s * s * 3).map(|_| rng.index(256) as u8).collect();
        let mut chw = vec![0f32; 3 * s * s];
        crate::decode::rgb_to_chw(&rgb, s, s, norm.mean, norm.std, &mut chw);
        let mut l = vec![0f32; s * s];
        let mut ab = vec![0f32; 2 * s * s];
        crate::pretext::lab::rgb8_to_lab_into(&rgb, &mut l, &mut ab);
        let l: Vec<f32> = l.iter().map(|v| (v - 50.0) / 50.0).collect();

        let exported = lightness_encoder(&encoder, &params, &norm).unwrap();
        let via_prelude = embed(&exported, chw, [1, 3, s, s]);
        let direct = embed(&encoder.to_onnx(&params).unwrap(), l, [1, 1, s, s]);
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
