//! Convolutions: Conv and ConvTranspose (2-D, dilation 1, any groups), with the choice of
//! gradient formulations ([`RuleOptions`]).

use super::*;
use crate::model::graph::{attr_int, attr_ints};
use crate::train::TrainError;

/// Choices between equivalent formulations of some backward rules (all give the same gradients;
/// they differ in speed per execution provider).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleOptions {
    /// Input gradient of a stride-1 Conv as a Conv with transposed, flipped weights (ONNX Runtime's
    /// CPU ConvTranspose took 1.8–3× the time of a Conv of the same size here); strided Convs use
    /// ConvTranspose.
    pub conv_dx_as_conv: bool,
    /// How the weight gradient of an ungrouped Conv is computed (grouped Convs always use
    /// [`WeightGrad::DilatedConv`]).
    pub conv_dw: WeightGrad,
}

/// Formulations of a convolution's weight gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightGrad {
    /// The k² strided windows of the input stacked (im2col, one Concat) and one Gemm.
    Im2col,
    /// One Gemm per kernel tap on its strided window; no stacked copy.
    PerTap,
    /// One Conv over batch-transposed tensors with the output gradient as a dilated kernel.
    DilatedConv,
}

impl Default for RuleOptions {
    fn default() -> Self {
        RuleOptions {
            conv_dx_as_conv: true,
            conv_dw: WeightGrad::PerTap,
        }
    }
}

/// The ops of this family: shape inference and gradient rule side by side.
pub(super) const RULES: &[Rule] = &[
    Rule {
        op: "Conv",
        infer: infer_conv,
        vjp: Some(Vjp::Each(vjp_conv)),
    },
    Rule {
        op: "ConvTranspose",
        infer: infer_conv_transpose,
        vjp: Some(Vjp::Each(vjp_conv_transpose)),
    },
];

/// Shape inference of `Conv`.
fn infer_conv(c: &Infer<'_>) -> Inferred {
    let &Infer { attrs, ref ins, .. } = c;
    let (x, t) = c.first()?;
    let w = &ins.get(1).ok_or("Conv needs a weight")?.0;
    if x.len() != 4 || w.len() != 4 {
        return Err(format!("Conv supports 2-D maps: input {x:?}, weight {w:?}"));
    }
    let g = ai(attrs, "group").unwrap_or(1) as usize;
    if g == 0 || x[1] != w[1] * g || w[0] % g != 0 {
        return Err(format!(
            "Conv channels do not fit: input {x:?}, weight {w:?}, group {g}"
        ));
    }
    let s = to_usize(&aints(attrs, "strides").unwrap_or(vec![1, 1])).ok_or("bad strides")?;
    let p = to_usize(&aints(attrs, "pads").unwrap_or(vec![0; 4])).ok_or("bad pads")?;
    let d = to_usize(&aints(attrs, "dilations").unwrap_or(vec![1, 1])).ok_or("bad dilations")?;
    let oh = window_len(x[2], w[2], s[0], p[0], p[2], d[0])
        .ok_or("Conv kernel larger than its input")?;
    let ow = window_len(x[3], w[3], s[1], p[1], p[3], d[1])
        .ok_or("Conv kernel larger than its input")?;
    same(vec![x[0], w[0], oh, ow], t)
}

/// Gradient of `Conv`: for the input a Conv with flipped weights (stride 1, see
/// [`RuleOptions`]) or a ConvTranspose; for the weight [`conv_weight_grad`]; for the bias `dy`
/// summed over batch and space.
fn vjp_conv(t: &mut dyn Builder, p: &Parts<'_>, dy: &str, i: usize) -> Dx {
    let weight = &p.ins[1];
    let w = window(t, p.node, Some(weight))?;
    match i {
        0 if w.s == [1, 1] && t.rules().conv_dx_as_conv => {
            conv_input_grad_stride1(t, dy, weight, &w, &p.gx)
        }
        0 => {
            let xs = t.shape(&p.x)?;
            let ys = t.shape(&p.y)?;
            let op_ = output_padding(&w, &xs, &ys, p.node)?;
            t.emit(
                "ConvTranspose",
                &[dy, weight],
                &p.gx,
                conv_attrs(&w, Some(&op_)),
            )
        }
        1 => conv_weight_grad(t, &p.x, dy, &w, &gname(weight)),
        _ => reduce_sum(t, dy, &[0, 2, 3], false, &gname(&p.ins[2])),
    }
}

/// Shape inference of `ConvTranspose`.
fn infer_conv_transpose(c: &Infer<'_>) -> Inferred {
    let &Infer { attrs, ref ins, .. } = c;
    let (x, t) = c.first()?;
    let w = &ins.get(1).ok_or("ConvTranspose needs a weight")?.0;
    if x.len() != 4 || w.len() != 4 || x[1] != w[0] {
        return Err(format!(
            "ConvTranspose shapes do not fit: input {x:?}, weight {w:?}"
        ));
    }
    if aints(attrs, "output_shape").is_some() {
        return Err("ConvTranspose `output_shape` is not supported; use output_padding".into());
    }
    let g = ai(attrs, "group").unwrap_or(1) as usize;
    let s = to_usize(&aints(attrs, "strides").unwrap_or(vec![1, 1])).ok_or("bad strides")?;
    let p = to_usize(&aints(attrs, "pads").unwrap_or(vec![0; 4])).ok_or("bad pads")?;
    let d = to_usize(&aints(attrs, "dilations").unwrap_or(vec![1, 1])).ok_or("bad dilations")?;
    let op_ = to_usize(&aints(attrs, "output_padding").unwrap_or(vec![0, 0]))
        .ok_or("bad output_padding")?;
    let size = |i: usize, k: usize, j: usize| -> Result<usize, String> {
        (s[j] * (i - 1) + op_[j] + (k - 1) * d[j] + 1)
            .checked_sub(p[j] + p[j + 2])
            .filter(|&v| v > 0)
            .ok_or_else(|| "ConvTranspose output would be empty".to_string())
    };
    same(
        vec![x[0], w[1] * g, size(x[2], w[2], 0)?, size(x[3], w[3], 1)?],
        t,
    )
}

/// Gradient of `ConvTranspose`: for the input the Conv it transposes, for the weight
/// [`conv_weight_grad`] with input and output gradient swapped, for the bias `dy` summed over
/// batch and space.
fn vjp_conv_transpose(t: &mut dyn Builder, p: &Parts<'_>, dy: &str, i: usize) -> Dx {
    if attr_is(p.node, "output_shape").is_some() {
        return Err(p.bad("ConvTranspose with output_shape has no rule; use output_padding"));
    }
    let weight = &p.ins[1];
    let w = window(t, p.node, Some(weight))?;
    match i {
        0 => t.emit("Conv", &[dy, weight], &p.gx, conv_attrs(&w, None)),
        // Y = convᵀ(X, W) is the input-gradient of a convolution whose input lives where Y
        // lives and whose output lives where X lives; its weight gradient pairs them so.
        1 => conv_weight_grad(t, dy, &p.x, &w, &gname(weight)),
        _ => reduce_sum(t, dy, &[0, 2, 3], false, &gname(&p.ins[2])),
    }
}

/// dL/dW of a convolution: `x` is the convolution's input `[N, Ci, H, W]`, `dy` the gradient of
/// its output `[N, Co, Ho, Wo]`; returns `[Co, Ci/g, kh, kw]`.
///
/// Written as one Conv over batch-transposed tensors: the batch becomes the channel axis being
/// summed over, the output gradient becomes a kernel dilated by the stride. Groups are handled by
/// moving the group index into the channel axis of both operands and running that Conv grouped.
fn conv_weight_grad(
    t: &mut dyn Builder,
    x: &str,
    dy: &str,
    w: &Window,
    base: &str,
) -> Result<String, TrainError> {
    if w.group == 1 && t.rules().conv_dw != WeightGrad::DilatedConv {
        return conv_weight_grad_im2col(t, x, dy, w, base);
    }
    let xs = t.shape(x)?;
    let ds = t.shape(dy)?;
    let (n, ci, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (co, ho, wo) = (ds[1], ds[2], ds[3]);
    let g = w.group;
    let (cig, cog) = (ci / g, co / g);
    let (xt, dyt) = if g == 1 {
        (
            transpose(t, x, &[1, 0, 2, 3], base)?,
            transpose(t, dy, &[1, 0, 2, 3], base)?,
        )
    } else {
        let xr = reshape(t, x, &[n, g, cig, h, wd], base)?;
        let xt = transpose(t, &xr, &[2, 1, 0, 3, 4], base)?;
        let xt = reshape(t, &xt, &[cig, g * n, h, wd], base)?;
        let dr = reshape(t, dy, &[n, g, cog, ho, wo], base)?;
        let dt = transpose(t, &dr, &[1, 2, 0, 3, 4], base)?;
        let dt = reshape(t, &dt, &[g * cog, n, ho, wo], base)?;
        (xt, dt)
    };
    let p = w.p.map(|v| v as i64);
    let r = t.emit(
        "Conv",
        &[&xt, &dyt],
        base,
        vec![
            attr_ints("kernel_shape", &[ho as i64, wo as i64]),
            attr_ints("strides", &[1, 1]),
            attr_ints("dilations", &[w.s[0] as i64, w.s[1] as i64]),
            attr_ints("pads", &p),
            attr_int("group", g as i64),
        ],
    )?;
    // The correlation can reach past the kernel when (H + pads − k) is not a multiple of the
    // stride: those extra taps are not weights, cut them off.
    let rs = t.shape(&r)?;
    let r = if rs[2] != w.k[0] || rs[3] != w.k[1] {
        let starts = t.ints1("starts", &[0, 0])?;
        let ends = t.ints1("ends", &[w.k[0] as i64, w.k[1] as i64])?;
        let axes = t.ints1("axes", &[2, 3])?;
        t.emit("Slice", &[&r, &starts, &ends, &axes], base, vec![])?
    } else {
        r
    };
    transpose(t, &r, &[1, 0, 2, 3], base)
}

/// dL/dW of an ungrouped convolution as im2col + one Gemm: the k² strided windows of the
/// (padded) batch-transposed input are stacked into `[Ci·k², N·Ho·Wo]` and multiplied with the
/// output gradient `[Co, N·Ho·Wo]`; one large matrix product instead of Ci skinny ones.
fn conv_weight_grad_im2col(
    t: &mut dyn Builder,
    x: &str,
    dy: &str,
    w: &Window,
    base: &str,
) -> Result<String, TrainError> {
    let xs = t.shape(x)?;
    let ds = t.shape(dy)?;
    let (n, ci) = (xs[0], xs[1]);
    let (co, ho, wo) = (ds[1], ds[2], ds[3]);
    let [kh, kw] = w.k;
    let [sh, sw] = w.s;
    let xt = transpose(t, x, &[1, 0, 2, 3], base)?;
    let xt = if w.p.iter().any(|&p| p > 0) {
        let [pt, pl, pb, pr] = w.p.map(|v| v as i64);
        let pads = t.ints1("pads", &[0, 0, pt, pl, 0, 0, pb, pr])?;
        t.emit("Pad", &[&xt, &pads], base, vec![])?
    } else {
        xt
    };
    let xts = t.shape(&xt)?;
    let mut parts = Vec::with_capacity(kh * kw);
    let axes = t.ints1("axes", &[2, 3])?;
    let steps = t.ints1("steps", &[sh as i64, sw as i64])?;
    for i in 0..kh {
        for j in 0..kw {
            let (eh, ew) = (i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1);
            if (i, j) == (0, 0) && (sh, sw) == (1, 1) && (eh, ew) == (xts[2], xts[3]) {
                parts.push(xt.clone());
                continue;
            }
            let starts = t.ints1("starts", &[i as i64, j as i64])?;
            let ends = t.ints1("ends", &[eh as i64, ew as i64])?;
            parts.push(t.emit("Slice", &[&xt, &starts, &ends, &axes, &steps], base, vec![])?);
        }
    }
    let dyt = transpose(t, dy, &[1, 0, 2, 3], base)?;
    let dyc = reshape(t, &dyt, &[co, n * ho * wo], base)?;
    if t.rules().conv_dw == WeightGrad::PerTap && parts.len() > 1 {
        // One Gemm per kernel tap, [Co, K]·[K, Ci]: no stacked copy of the k² windows.
        let mut taps = Vec::with_capacity(parts.len());
        for p in &parts {
            let m = reshape(t, p, &[ci, n * ho * wo], base)?;
            let g = t.emit("Gemm", &[&dyc, &m], base, vec![attr_int("transB", 1)])?;
            taps.push(reshape(t, &g, &[co, ci, 1], base)?);
        }
        let refs: Vec<&str> = taps.iter().map(|s| s.as_str()).collect();
        let dw = t.emit("Concat", &refs, base, vec![attr_int("axis", 2)])?;
        return reshape(t, &dw, &[co, ci, kh, kw], base);
    }
    let cols = if parts.len() == 1 {
        parts.remove(0)
    } else {
        let refs: Vec<&str> = parts.iter().map(|s| s.as_str()).collect();
        t.emit("Concat", &refs, base, vec![attr_int("axis", 1)])?
    };
    let cols = reshape(t, &cols, &[ci * kh * kw, n * ho * wo], base)?;
    let dw = t.emit("Gemm", &[&dyc, &cols], base, vec![attr_int("transB", 1)])?;
    reshape(t, &dw, &[co, ci, kh, kw], base)
}

/// dL/dX of a stride-1 convolution as a Conv: the weights with input and output channels
/// swapped (per group) and the kernel flipped, padded by k − 1 − p on each side.
fn conv_input_grad_stride1(
    t: &mut dyn Builder,
    dy: &str,
    weight: &str,
    w: &Window,
    base: &str,
) -> Result<String, TrainError> {
    let ws = t.shape(weight)?;
    let (co, cig, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    let g = w.group;
    let wt = if g == 1 {
        transpose(t, weight, &[1, 0, 2, 3], base)?
    } else {
        let r = reshape(t, weight, &[g, co / g, cig, kh, kw], base)?;
        let r = transpose(t, &r, &[0, 2, 1, 3, 4], base)?;
        reshape(t, &r, &[g * cig, co / g, kh, kw], base)?
    };
    let wf = if kh * kw > 1 {
        let starts = t.ints1("starts", &[-1, -1])?;
        let ends = t.ints1("ends", &[i64::MIN, i64::MIN])?;
        let axes = t.ints1("axes", &[2, 3])?;
        let steps = t.ints1("steps", &[-1, -1])?;
        t.emit("Slice", &[&wt, &starts, &ends, &axes, &steps], base, vec![])?
    } else {
        wt
    };
    let flip = |k: usize, p: usize| (k - 1 - p) as i64;
    let pads = [
        flip(kh, w.p[0]),
        flip(kw, w.p[1]),
        flip(kh, w.p[2]),
        flip(kw, w.p[3]),
    ];
    t.emit(
        "Conv",
        &[dy, &wf],
        base,
        vec![
            attr_ints("kernel_shape", &[kh as i64, kw as i64]),
            attr_ints("strides", &[1, 1]),
            attr_ints("pads", &pads),
            attr_int("group", g as i64),
        ],
    )
}
