//! The exported colorization encoder's prelude: ONNX nodes that turn the pipeline's normalised RGB
//! input (`[N, 3, S, S]`) into what the encoder was trained on, CIE L (D65) scaled as in training,
//! `(L − L_HALF) / L_HALF` (see [`L_HALF`]), `[N, 1, S, S]`.
//!
//! Guarantees: the same sRGB transfer curve and CIE ε/κ as [`super::rgb8_to_lab_into`] (float ops
//! in ONNX Runtime, so agreement is to float rounding, not bit for bit); out-of-range RGB is
//! clipped to [0, 1] first.

use super::L_HALF;
use crate::model::{GraphBuilder, ModelError};

/// Appends the nodes reading `images` (normalised with `mean`/`std`); returns the name of the
/// scaled-L tensor.
pub fn scaled_lightness(
    g: &mut GraphBuilder,
    images: &str,
    mean: &[f32; 3],
    std: &[f32; 3],
) -> Result<String, ModelError> {
    // x = images·std + mean (sRGB in [0, 1]); linearise; Y = 0.2126 R + 0.7152 G + 0.0722 B
    // (a 1×1 convolution); L = 116·f(Y) − 16 with the CIE f (cube root above (6/29)³).
    let std = g.constant_f32("prelude.std", &[1, 3, 1, 1], std)?;
    let mean = g.constant_f32("prelude.mean", &[1, 3, 1, 1], mean)?;
    let x = g.node("Mul", &[images, &std], "prelude.scaled", vec![])?;
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
    // (116 f − 16 − L_HALF) / L_HALF
    let k116 = g.constant_f32("prelude.k116", &[], &[116.0 / L_HALF])?;
    let k66 = g.constant_f32("prelude.k66", &[], &[(16.0 + L_HALF) / L_HALF])?;
    let l = g.node("Mul", &[&f, &k116], "prelude.l_scaled", vec![])?;
    g.node("Sub", &[&l, &k66], "prelude.l", vec![])
}
