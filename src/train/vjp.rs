//! Vector-Jacobian rules: for one forward node and the gradients of its outputs, the nodes that
//! compute the gradients of its inputs. One rule per ONNX `op_type`, plus the fused
//! training-mode BatchNorm (forward and backward side by side, so they are read together).
//!
//! Differentiable ops: Conv, ConvTranspose (2-D, dilation 1, any groups), Gemm (alpha = beta = 1),
//! MatMul (rank ≥ 2, broadcast batch), Relu, Sigmoid, Tanh, Exp, Log, Sqrt, Neg, Abs, Reciprocal,
//! Identity, Cast (float to float), Softmax, LogSoftmax, Add, Sub, Mul, Div, Sum, Where,
//! ReduceMean, ReduceSum, ReduceSumSquare, GlobalAveragePool, AveragePool (count_include_pad or no
//! padding), MaxPool (with its `Indices` output), Flatten, Reshape, Squeeze, Unsqueeze, Transpose,
//! Expand, Concat, Split, Slice (step 1), GatherElements, Resize (nearest, integer factors).
//!
//! Convolution gradients (the bulk of a train step's work) have equivalent formulations, chosen
//! by [`super::RuleOptions`]: the input gradient of a stride-1 Conv is a Conv with transposed,
//! flipped weights (ONNX Runtime's CPU ConvTranspose took 1.8–3× the time of a Conv of the same
//! size in our profiles), that
//! of a strided Conv a ConvTranspose with the `output_padding` that restores the input size; the
//! weight gradient is one Gemm per kernel tap on the strided windows of the input (default), one
//! Gemm on the stacked windows (im2col), or one Conv over batch-transposed tensors with the output
//! gradient as a dilated kernel (grouped Convs always use the last).
//!
//! Guarantees:
//! - A rule returns a gradient for every input it was asked for (`need`), shaped exactly like that
//!   input (broadcasting is undone by summing over the broadcast axes).
//! - A node the rules cannot differentiate exactly (dilated Conv, Gemm with alpha ≠ 1, …) is a
//!   [`TrainError::NoRule`]/[`TrainError::Graph`] when the graph is built, never a wrong gradient.
//! - Each rule has a finite-difference test in `tests/gradcheck.rs`.

use super::TrainError;
use super::tape::{BnRecord, Entry, Shape, Tape, WeightGrad, attr_i, attr_is, attr_s};
use crate::model::graph::{attr_int, attr_ints, attr_string};
use crate::model::onnx::NodeProto;

type Grads = Vec<Option<String>>;

pub(crate) fn entry_vjp(
    t: &mut Tape,
    e: &Entry,
    dys: &[Option<String>],
    need: &[bool],
) -> Result<Grads, TrainError> {
    match e {
        Entry::BatchNorm(rec) => {
            let dy = dys[0]
                .clone()
                .ok_or_else(|| TrainError::graph("BatchNorm", &rec.y, "no output gradient"))?;
            batch_norm_backward(t, rec, &dy, need)
        }
        Entry::Node(node) => node_vjp(t, node, dys, need),
    }
}

fn op_of(node: &NodeProto) -> &str {
    node.op_type.as_deref().unwrap_or("")
}

fn gname(x: &str) -> String {
    format!("grad.{x}")
}

fn i64s(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&d| d as i64).collect()
}

/// `Reshape(x, shape)` with a constant target.
pub(crate) fn reshape(
    t: &mut Tape,
    x: &str,
    shape: &[usize],
    base: &str,
) -> Result<String, TrainError> {
    if t.shape(x)? == shape {
        return Ok(x.to_string());
    }
    let s = t.ints1("shape", &i64s(shape))?;
    t.emit("Reshape", &[x, &s], base, vec![])
}

fn transpose(t: &mut Tape, x: &str, perm: &[i64], base: &str) -> Result<String, TrainError> {
    t.emit("Transpose", &[x], base, vec![attr_ints("perm", perm)])
}

fn expand(t: &mut Tape, x: &str, shape: &[usize], base: &str) -> Result<String, TrainError> {
    if t.shape(x)? == shape {
        return Ok(x.to_string());
    }
    let s = t.ints1("shape", &i64s(shape))?;
    t.emit("Expand", &[x, &s], base, vec![])
}

fn reduce_sum(
    t: &mut Tape,
    x: &str,
    axes: &[usize],
    keep: bool,
    base: &str,
) -> Result<String, TrainError> {
    let a = t.ints1("axes", &i64s(axes))?;
    t.emit(
        "ReduceSum",
        &[x, &a],
        base,
        vec![attr_int("keepdims", i64::from(keep))],
    )
}

/// Sums `dy` (shaped `out`) down to the shape `to` it was broadcast from.
pub(crate) fn unbroadcast(
    t: &mut Tape,
    dy: &str,
    to: &[usize],
    base: &str,
) -> Result<String, TrainError> {
    let out = t.shape(dy)?;
    if out == to {
        return Ok(dy.to_string());
    }
    let lead = out.len().checked_sub(to.len()).ok_or_else(|| {
        TrainError::graph(
            "unbroadcast",
            dy,
            format!("cannot sum {out:?} down to {to:?}"),
        )
    })?;
    let mut axes: Vec<usize> = (0..lead).collect();
    for (i, &d) in to.iter().enumerate() {
        if d == 1 && out[lead + i] != 1 {
            axes.push(lead + i);
        } else if d != out[lead + i] {
            return Err(TrainError::graph(
                "unbroadcast",
                dy,
                format!("{to:?} does not broadcast to {out:?}"),
            ));
        }
    }
    let r = if axes.is_empty() {
        dy.to_string()
    } else {
        reduce_sum(t, dy, &axes, true, base)?
    };
    reshape(t, &r, to, base)
}

fn no_rule(node: &NodeProto) -> TrainError {
    TrainError::NoRule {
        op: op_of(node).to_string(),
        tensor: node.output.first().cloned().unwrap_or_default(),
    }
}

fn bad(node: &NodeProto, msg: impl Into<String>) -> TrainError {
    TrainError::graph(
        op_of(node),
        node.output.first().cloned().unwrap_or_default(),
        msg,
    )
}

/// Kernel geometry of a Conv/ConvTranspose/pool node.
struct Window {
    k: [usize; 2],
    s: [usize; 2],
    /// top, left, bottom, right
    p: [usize; 4],
    group: usize,
}

fn window(t: &Tape, node: &NodeProto, weight: Option<&str>) -> Result<Window, TrainError> {
    let u = |v: Vec<i64>| -> Result<Vec<usize>, TrainError> {
        v.iter()
            .map(|&x| usize::try_from(x).map_err(|_| bad(node, "negative attribute")))
            .collect()
    };
    let k = match attr_is(node, "kernel_shape") {
        Some(k) => u(k)?,
        None => {
            let w = t.shape(weight.ok_or_else(|| bad(node, "kernel_shape missing"))?)?;
            w[2..].to_vec()
        }
    };
    let s = u(attr_is(node, "strides").unwrap_or(vec![1, 1]))?;
    let p = u(attr_is(node, "pads").unwrap_or(vec![0; 4]))?;
    if let Some(d) = attr_is(node, "dilations")
        && d.iter().any(|&x| x != 1)
    {
        return Err(bad(node, "dilated convolutions have no gradient rule"));
    }
    if attr_s(node, "auto_pad").is_some_and(|a| a != "NOTSET") {
        return Err(bad(node, "auto_pad is not supported; give explicit pads"));
    }
    if k.len() != 2 || s.len() != 2 || p.len() != 4 {
        return Err(bad(node, "only 2-D windows are supported"));
    }
    Ok(Window {
        k: [k[0], k[1]],
        s: [s[0], s[1]],
        p: [p[0], p[1], p[2], p[3]],
        group: attr_i(node, "group").unwrap_or(1) as usize,
    })
}

/// The `output_padding` that makes a ConvTranspose with this window map `small` back onto `big`.
fn output_padding(
    w: &Window,
    big: &[usize],
    small: &[usize],
    node: &NodeProto,
) -> Result<Vec<i64>, TrainError> {
    let mut op = Vec::with_capacity(2);
    for j in 0..2 {
        let base = (small[2 + j] - 1) * w.s[j] + w.k[j];
        let pads = w.p[j] + w.p[j + 2];
        let v = (big[2 + j] + pads)
            .checked_sub(base)
            .filter(|&v| v < w.s[j].max(1))
            .ok_or_else(|| {
                bad(
                    node,
                    format!("cannot invert the window from {small:?} to {big:?}"),
                )
            })?;
        op.push(v as i64);
    }
    Ok(op)
}

/// dL/dW of a convolution: `x` is the convolution's input `[N, Ci, H, W]`, `dy` the gradient of
/// its output `[N, Co, Ho, Wo]`; returns `[Co, Ci/g, kh, kw]`.
///
/// Written as one Conv over batch-transposed tensors: the batch becomes the channel axis being
/// summed over, the output gradient becomes a kernel dilated by the stride. Groups are handled by
/// moving the group index into the channel axis of both operands and running that Conv grouped.
fn conv_weight_grad(
    t: &mut Tape,
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
    t: &mut Tape,
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
    t: &mut Tape,
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

fn conv_attrs(
    w: &Window,
    extra_output_padding: Option<&[i64]>,
) -> Vec<crate::model::onnx::AttributeProto> {
    let mut a = vec![
        attr_ints("kernel_shape", &[w.k[0] as i64, w.k[1] as i64]),
        attr_ints("strides", &[w.s[0] as i64, w.s[1] as i64]),
        attr_ints("pads", &w.p.map(|v| v as i64)),
        attr_int("group", w.group as i64),
    ];
    if let Some(op) = extra_output_padding {
        a.push(attr_ints("output_padding", op));
    }
    a
}

fn need_dy(node: &NodeProto, dys: &[Option<String>]) -> Result<String, TrainError> {
    dys.first()
        .cloned()
        .flatten()
        .ok_or_else(|| bad(node, "no gradient for the output"))
}

fn node_vjp(
    t: &mut Tape,
    node: &NodeProto,
    dys: &[Option<String>],
    need: &[bool],
) -> Result<Grads, TrainError> {
    let op = op_of(node).to_string();
    let ins: Vec<String> = node.input.clone();
    let outs: Vec<String> = node.output.clone();
    let x = ins.first().cloned().unwrap_or_default();
    let y = outs.first().cloned().unwrap_or_default();
    let gx = gname(&x);
    let mut g: Grads = vec![None; ins.len()];
    let n = |i: usize| need.get(i).copied().unwrap_or(false);

    match op.as_str() {
        "Conv" => {
            let dy = need_dy(node, dys)?;
            let w = window(t, node, Some(&ins[1]))?;
            if n(0) {
                g[0] = Some(if w.s == [1, 1] && t.rules().conv_dx_as_conv {
                    conv_input_grad_stride1(t, &dy, &ins[1], &w, &gx)?
                } else {
                    let xs = t.shape(&x)?;
                    let ys = t.shape(&y)?;
                    let op_ = output_padding(&w, &xs, &ys, node)?;
                    t.emit(
                        "ConvTranspose",
                        &[&dy, &ins[1]],
                        &gx,
                        conv_attrs(&w, Some(&op_)),
                    )?
                });
            }
            if n(1) {
                g[1] = Some(conv_weight_grad(t, &x, &dy, &w, &gname(&ins[1]))?);
            }
            if ins.len() > 2 && n(2) {
                g[2] = Some(reduce_sum(t, &dy, &[0, 2, 3], false, &gname(&ins[2]))?);
            }
        }
        "ConvTranspose" => {
            if attr_is(node, "output_shape").is_some() {
                return Err(bad(
                    node,
                    "ConvTranspose with output_shape has no rule; use output_padding",
                ));
            }
            let dy = need_dy(node, dys)?;
            let w = window(t, node, Some(&ins[1]))?;
            if n(0) {
                g[0] = Some(t.emit("Conv", &[&dy, &ins[1]], &gx, conv_attrs(&w, None))?);
            }
            if n(1) {
                // Y = convᵀ(X, W) is the input-gradient of a convolution whose input lives where Y
                // lives and whose output lives where X lives; its weight gradient pairs them so.
                g[1] = Some(conv_weight_grad(t, &dy, &x, &w, &gname(&ins[1]))?);
            }
            if ins.len() > 2 && n(2) {
                g[2] = Some(reduce_sum(t, &dy, &[0, 2, 3], false, &gname(&ins[2]))?);
            }
        }
        "Gemm" => {
            let dy = need_dy(node, dys)?;
            let alpha = node.attr("alpha").and_then(|a| a.f).unwrap_or(1.0);
            let beta = node.attr("beta").and_then(|a| a.f).unwrap_or(1.0);
            if alpha != 1.0 || beta != 1.0 {
                return Err(bad(
                    node,
                    "Gemm with alpha or beta other than 1 has no rule",
                ));
            }
            let ta = attr_i(node, "transA").unwrap_or(0) != 0;
            let tb = attr_i(node, "transB").unwrap_or(0) != 0;
            let (a, b) = (ins[0].clone(), ins[1].clone());
            let gemm = |t: &mut Tape, l: &str, r: &str, tl: bool, tr: bool, base: &str| {
                t.emit(
                    "Gemm",
                    &[l, r],
                    base,
                    vec![
                        attr_int("transA", i64::from(tl)),
                        attr_int("transB", i64::from(tr)),
                    ],
                )
            };
            if n(0) {
                let ga = gname(&a);
                g[0] = Some(match (ta, tb) {
                    (false, false) => gemm(t, &dy, &b, false, true, &ga)?,
                    (false, true) => gemm(t, &dy, &b, false, false, &ga)?,
                    (true, false) => gemm(t, &b, &dy, false, true, &ga)?,
                    (true, true) => gemm(t, &b, &dy, true, true, &ga)?,
                });
            }
            if n(1) {
                let gb = gname(&b);
                g[1] = Some(match (ta, tb) {
                    (false, false) => gemm(t, &a, &dy, true, false, &gb)?,
                    (false, true) => gemm(t, &dy, &a, true, false, &gb)?,
                    (true, false) => gemm(t, &a, &dy, false, false, &gb)?,
                    (true, true) => gemm(t, &dy, &a, true, true, &gb)?,
                });
            }
            if ins.len() > 2 && n(2) {
                let cs = t.shape(&ins[2])?;
                g[2] = Some(unbroadcast(t, &dy, &cs, &gname(&ins[2]))?);
            }
        }
        "MatMul" => {
            let dy = need_dy(node, dys)?;
            let (a, b) = (ins[0].clone(), ins[1].clone());
            let (sa, sb) = (t.shape(&a)?, t.shape(&b)?);
            let swap = |r: usize| -> Vec<i64> {
                let mut p: Vec<i64> = (0..r as i64).collect();
                p.swap(r - 2, r - 1);
                p
            };
            if n(0) {
                let bt = transpose(t, &b, &swap(sb.len()), &gname(&b))?;
                let da = t.emit("MatMul", &[&dy, &bt], &gname(&a), vec![])?;
                g[0] = Some(unbroadcast(t, &da, &sa, &gname(&a))?);
            }
            if n(1) {
                let at = transpose(t, &a, &swap(sa.len()), &gname(&a))?;
                let db = t.emit("MatMul", &[&at, &dy], &gname(&b), vec![])?;
                g[1] = Some(unbroadcast(t, &db, &sb, &gname(&b))?);
            }
        }
        "Relu" => {
            let dy = need_dy(node, dys)?;
            let zero = t.scalar(0.0)?;
            let mask = t.emit("Greater", &[&y, &zero], &gx, vec![])?;
            g[0] = Some(t.emit("Where", &[&mask, &dy, &zero], &gx, vec![])?);
        }
        "Sigmoid" => {
            let dy = need_dy(node, dys)?;
            let one = t.scalar(1.0)?;
            let om = t.emit("Sub", &[&one, &y], &gx, vec![])?;
            let d = t.emit("Mul", &[&y, &om], &gx, vec![])?;
            g[0] = Some(t.emit("Mul", &[&dy, &d], &gx, vec![])?);
        }
        "Tanh" => {
            let dy = need_dy(node, dys)?;
            let one = t.scalar(1.0)?;
            let y2 = t.emit("Mul", &[&y, &y], &gx, vec![])?;
            let d = t.emit("Sub", &[&one, &y2], &gx, vec![])?;
            g[0] = Some(t.emit("Mul", &[&dy, &d], &gx, vec![])?);
        }
        "Exp" => {
            let dy = need_dy(node, dys)?;
            g[0] = Some(t.emit("Mul", &[&dy, &y], &gx, vec![])?);
        }
        "Log" => {
            let dy = need_dy(node, dys)?;
            g[0] = Some(t.emit("Div", &[&dy, &x], &gx, vec![])?);
        }
        "Sqrt" => {
            let dy = need_dy(node, dys)?;
            let half = t.scalar(0.5)?;
            let d = t.emit("Div", &[&dy, &y], &gx, vec![])?;
            g[0] = Some(t.emit("Mul", &[&d, &half], &gx, vec![])?);
        }
        "Neg" => {
            let dy = need_dy(node, dys)?;
            g[0] = Some(t.emit("Neg", &[&dy], &gx, vec![])?);
        }
        "Abs" => {
            let dy = need_dy(node, dys)?;
            let s = t.emit("Sign", &[&x], &gx, vec![])?;
            g[0] = Some(t.emit("Mul", &[&dy, &s], &gx, vec![])?);
        }
        "Reciprocal" => {
            let dy = need_dy(node, dys)?;
            let y2 = t.emit("Mul", &[&y, &y], &gx, vec![])?;
            let d = t.emit("Mul", &[&dy, &y2], &gx, vec![])?;
            g[0] = Some(t.emit("Neg", &[&d], &gx, vec![])?);
        }
        "Identity" => {
            g[0] = Some(need_dy(node, dys)?);
        }
        "Cast" => {
            let dy = need_dy(node, dys)?;
            let to = t.dtype(&x).ok_or_else(|| bad(node, "unknown input type"))?;
            g[0] = Some(t.emit("Cast", &[&dy], &gx, vec![attr_int("to", to as i64)])?);
        }
        "Softmax" | "LogSoftmax" => {
            let dy = need_dy(node, dys)?;
            let rank = t.shape(&x)?.len();
            let axis = attr_i(node, "axis").unwrap_or(-1);
            let axis = if axis < 0 { axis + rank as i64 } else { axis } as usize;
            if op == "Softmax" {
                let p = t.emit("Mul", &[&dy, &y], &gx, vec![])?;
                let s = reduce_sum(t, &p, &[axis], true, &gx)?;
                let d = t.emit("Sub", &[&dy, &s], &gx, vec![])?;
                g[0] = Some(t.emit("Mul", &[&y, &d], &gx, vec![])?);
            } else {
                let s = reduce_sum(t, &dy, &[axis], true, &gx)?;
                let p = t.emit("Exp", &[&y], &gx, vec![])?;
                let ps = t.emit("Mul", &[&p, &s], &gx, vec![])?;
                g[0] = Some(t.emit("Sub", &[&dy, &ps], &gx, vec![])?);
            }
        }
        "Add" | "Sub" | "Sum" => {
            let dy = need_dy(node, dys)?;
            for (i, input) in ins.iter().enumerate() {
                if !n(i) {
                    continue;
                }
                let s = t.shape(input)?;
                let d = unbroadcast(t, &dy, &s, &gname(input))?;
                g[i] = Some(if op == "Sub" && i == 1 {
                    t.emit("Neg", &[&d], &gname(input), vec![])?
                } else {
                    d
                });
            }
        }
        "Mul" => {
            let dy = need_dy(node, dys)?;
            for i in 0..2 {
                if !n(i) {
                    continue;
                }
                let other = &ins[1 - i];
                let p = t.emit("Mul", &[&dy, other], &gname(&ins[i]), vec![])?;
                let s = t.shape(&ins[i])?;
                g[i] = Some(unbroadcast(t, &p, &s, &gname(&ins[i]))?);
            }
        }
        "Div" => {
            let dy = need_dy(node, dys)?;
            let (a, b) = (ins[0].clone(), ins[1].clone());
            if n(0) {
                let q = t.emit("Div", &[&dy, &b], &gname(&a), vec![])?;
                let s = t.shape(&a)?;
                g[0] = Some(unbroadcast(t, &q, &s, &gname(&a))?);
            }
            if n(1) {
                // d(a/b)/db = −y/b
                let q = t.emit("Div", &[&y, &b], &gname(&b), vec![])?;
                let p = t.emit("Mul", &[&dy, &q], &gname(&b), vec![])?;
                let p = t.emit("Neg", &[&p], &gname(&b), vec![])?;
                let s = t.shape(&b)?;
                g[1] = Some(unbroadcast(t, &p, &s, &gname(&b))?);
            }
        }
        "Where" => {
            let dy = need_dy(node, dys)?;
            let zero = t.scalar(0.0)?;
            for i in 1..3 {
                if !n(i) {
                    continue;
                }
                let args = if i == 1 {
                    [&ins[0], &dy, &zero]
                } else {
                    [&ins[0], &zero, &dy]
                };
                let w = t.emit(
                    "Where",
                    &[args[0], args[1], args[2]],
                    &gname(&ins[i]),
                    vec![],
                )?;
                let w = expand(t, &w, &t.shape(&y)?, &gname(&ins[i]))?;
                let s = t.shape(&ins[i])?;
                g[i] = Some(unbroadcast(t, &w, &s, &gname(&ins[i]))?);
            }
        }
        "ReduceMean" | "ReduceSum" | "ReduceSumSquare" => {
            let dy = need_dy(node, dys)?;
            let xs = t.shape(&x)?;
            let axes: Vec<i64> = if op == "ReduceSum" {
                match ins.get(1) {
                    Some(a) if !a.is_empty() => t
                        .ints(a)
                        .map(|v| v.to_vec())
                        .ok_or_else(|| bad(node, "axes must be a tape constant"))?,
                    _ => (0..xs.len() as i64).collect(),
                }
            } else {
                attr_is(node, "axes").unwrap_or_else(|| (0..xs.len() as i64).collect())
            };
            let axes: Vec<usize> = axes
                .iter()
                .map(|&a| if a < 0 { a + xs.len() as i64 } else { a } as usize)
                .collect();
            let kept: Shape = xs
                .iter()
                .enumerate()
                .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
                .collect();
            let count: usize = axes.iter().map(|&a| xs[a]).product();
            let d = reshape(t, &dy, &kept, &gx)?;
            let d = match op.as_str() {
                "ReduceMean" => {
                    let c = t.scalar(1.0 / count as f64)?;
                    t.emit("Mul", &[&d, &c], &gx, vec![])?
                }
                _ => d,
            };
            let d = expand(t, &d, &xs, &gx)?;
            g[0] = Some(if op == "ReduceSumSquare" {
                let two = t.scalar(2.0)?;
                let tx = t.emit("Mul", &[&x, &two], &gx, vec![])?;
                t.emit("Mul", &[&d, &tx], &gx, vec![])?
            } else {
                d
            });
        }
        "GlobalAveragePool" => {
            let dy = need_dy(node, dys)?;
            let xs = t.shape(&x)?;
            let count: usize = xs[2..].iter().product();
            let c = t.scalar(1.0 / count as f64)?;
            let d = t.emit("Mul", &[&dy, &c], &gx, vec![])?;
            g[0] = Some(expand(t, &d, &xs, &gx)?);
        }
        "AveragePool" => {
            let dy = need_dy(node, dys)?;
            let w = window(t, node, None)?;
            let include_pad = attr_i(node, "count_include_pad").unwrap_or(0) != 0;
            if !include_pad && w.p.iter().any(|&p| p > 0) {
                return Err(bad(
                    node,
                    "AveragePool with padding needs count_include_pad = 1 for its gradient rule",
                ));
            }
            let xs = t.shape(&x)?;
            let ys = t.shape(&y)?;
            let c = xs[1];
            let kk = w.k[0] * w.k[1];
            let ones = t.const_float(
                "avgpool.kernel",
                &[c, 1, w.k[0], w.k[1]],
                &vec![1.0 / kk as f64; c * kk],
            )?;
            let op_ = output_padding(&w, &xs, &ys, node)?;
            let cw = Window { group: c, ..w };
            g[0] = Some(t.emit(
                "ConvTranspose",
                &[&dy, &ones],
                &gx,
                conv_attrs(&cw, Some(&op_)),
            )?);
        }
        "MaxPool" => {
            let dy = need_dy(node, dys)?;
            let idx = outs.get(1).filter(|s| !s.is_empty()).ok_or_else(|| {
                bad(
                    node,
                    "MaxPool needs its Indices output for the gradient (emit it in training mode)",
                )
            })?;
            if attr_i(node, "storage_order").unwrap_or(0) != 0 {
                return Err(bad(node, "MaxPool storage_order = 1 is not supported"));
            }
            let xs = t.shape(&x)?;
            let numel: usize = xs.iter().product();
            let flat_len = t.numel(&y)?;
            let zeros = {
                let s = t.ints1("shape", &[numel as i64])?;
                let zero = super::autodiff::zero_value(t)?;
                t.emit(
                    "ConstantOfShape",
                    &[&s],
                    &gx,
                    vec![crate::model::graph::attr_tensor("value", zero)],
                )?
            };
            let fi = reshape(t, idx, &[flat_len], &gx)?;
            let fd = reshape(t, &dy, &[flat_len], &gx)?;
            let sc = t.emit(
                "ScatterElements",
                &[&zeros, &fi, &fd],
                &gx,
                vec![attr_int("axis", 0), attr_string("reduction", "add")],
            )?;
            g[0] = Some(reshape(t, &sc, &xs, &gx)?);
        }
        "Flatten" | "Reshape" | "Squeeze" | "Unsqueeze" => {
            let dy = need_dy(node, dys)?;
            let xs = t.shape(&x)?;
            g[0] = Some(reshape(t, &dy, &xs, &gx)?);
        }
        "Transpose" => {
            let dy = need_dy(node, dys)?;
            let rank = t.shape(&x)?.len();
            let perm = attr_is(node, "perm").unwrap_or_else(|| (0..rank as i64).rev().collect());
            let mut inv = vec![0i64; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p as usize] = i as i64;
            }
            g[0] = Some(transpose(t, &dy, &inv, &gx)?);
        }
        "Expand" => {
            let dy = need_dy(node, dys)?;
            let xs = t.shape(&x)?;
            g[0] = Some(unbroadcast(t, &dy, &xs, &gx)?);
        }
        "Concat" => {
            let dy = need_dy(node, dys)?;
            let rank = t.shape(&x)?.len() as i64;
            let axis = attr_i(node, "axis").unwrap_or(0);
            let axis = if axis < 0 { axis + rank } else { axis };
            let mut sizes = Vec::with_capacity(ins.len());
            for input in &ins {
                sizes.push(t.shape(input)?[axis as usize] as i64);
            }
            let split = t.ints1("split", &sizes)?;
            let bases: Vec<String> = ins.iter().map(|i| gname(i)).collect();
            let refs: Vec<&str> = bases.iter().map(|s| s.as_str()).collect();
            let parts =
                t.emit_multi("Split", &[&dy, &split], &refs, vec![attr_int("axis", axis)])?;
            for (i, p) in parts.into_iter().enumerate() {
                if n(i) {
                    g[i] = Some(p);
                }
            }
        }
        "Split" => {
            let axis = attr_i(node, "axis").unwrap_or(0);
            let mut parts = Vec::with_capacity(outs.len());
            for (o, dy) in outs.iter().zip(dys) {
                parts.push(match dy {
                    Some(d) => d.clone(),
                    None => super::autodiff::zeros_like(t, o)?,
                });
            }
            let refs: Vec<&str> = parts.iter().map(|s| s.as_str()).collect();
            g[0] = Some(t.emit("Concat", &refs, &gx, vec![attr_int("axis", axis)])?);
        }
        "Slice" => {
            let dy = need_dy(node, dys)?;
            let xs = t.shape(&x)?;
            let get = |t: &Tape, i: usize| -> Option<Vec<i64>> {
                ins.get(i)
                    .filter(|s| !s.is_empty())
                    .and_then(|s| t.ints(s).map(|v| v.to_vec()))
            };
            let starts = get(t, 1).ok_or_else(|| bad(node, "starts must be a tape constant"))?;
            let ends = get(t, 2).ok_or_else(|| bad(node, "ends must be a tape constant"))?;
            let axes = get(t, 3).unwrap_or_else(|| (0..starts.len() as i64).collect());
            if get(t, 4).is_some_and(|s| s.iter().any(|&v| v != 1)) {
                return Err(bad(node, "Slice with steps ≠ 1 has no rule"));
            }
            let rank = xs.len();
            let mut pads = vec![0i64; 2 * rank];
            for i in 0..starts.len() {
                let a = if axes[i] < 0 {
                    axes[i] + rank as i64
                } else {
                    axes[i]
                } as usize;
                let dim = xs[a] as i64;
                let clamp = |v: i64| if v < 0 { (v + dim).max(0) } else { v.min(dim) };
                let (s, e) = (clamp(starts[i]), clamp(ends[i]));
                pads[a] = s;
                pads[a + rank] = dim - e.max(s);
            }
            let p = t.ints1("pads", &pads)?;
            g[0] = Some(t.emit("Pad", &[&dy, &p], &gx, vec![])?);
        }
        "GatherElements" => {
            let dy = need_dy(node, dys)?;
            let axis = attr_i(node, "axis").unwrap_or(0);
            let zeros = super::autodiff::zeros_like(t, &x)?;
            g[0] = Some(t.emit(
                "ScatterElements",
                &[&zeros, &ins[1], &dy],
                &gx,
                vec![attr_int("axis", axis), attr_string("reduction", "add")],
            )?);
        }
        "Resize" => {
            let dy = need_dy(node, dys)?;
            let mode = attr_s(node, "mode").unwrap_or_else(|| "nearest".into());
            let ctm = attr_s(node, "coordinate_transformation_mode")
                .unwrap_or_else(|| "half_pixel".into());
            let nm = attr_s(node, "nearest_mode").unwrap_or_else(|| "round_prefer_floor".into());
            if mode != "nearest" || ctm != "asymmetric" || nm != "floor" {
                return Err(bad(
                    node,
                    "Resize has a rule only for mode=nearest, asymmetric coordinates, nearest_mode=floor",
                ));
            }
            let xs = t.shape(&x)?;
            let ys = t.shape(&y)?;
            if xs.len() != 4 || xs[..2] != ys[..2] || ys[2] % xs[2] != 0 || ys[3] % xs[3] != 0 {
                return Err(bad(
                    node,
                    "Resize has a rule only for integer upsampling of H and W",
                ));
            }
            let (fh, fw) = (ys[2] / xs[2], ys[3] / xs[3]);
            let r = reshape(t, &dy, &[xs[0], xs[1], xs[2], fh, xs[3], fw], &gx)?;
            g[0] = Some(reduce_sum(t, &r, &[3, 5], false, &gx)?);
        }
        _ => return Err(no_rule(node)),
    }
    Ok(g)
}

/// Training-mode BatchNorm over every axis but 1 (`[N, C, …]`): normalises with the batch's
/// statistics and returns `(y, new_running_mean, new_running_var)`. Running statistics follow
/// PyTorch: `new = (1 − momentum)·old + momentum·batch`, the variance unbiased (·M/(M−1)).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train(
    t: &mut Tape,
    x: &str,
    gamma: &str,
    beta: &str,
    running_mean: &str,
    running_var: &str,
    eps: f32,
    momentum: f32,
    base: &str,
) -> Result<(String, String, String), TrainError> {
    let xs = t.shape(x)?;
    if xs.len() < 2 {
        return Err(TrainError::graph("BatchNorm", x, "needs [N, C, ...]"));
    }
    let c = xs[1];
    let count: usize = xs.iter().product::<usize>() / c.max(1);
    if count < 2 {
        return Err(TrainError::graph(
            "BatchNorm",
            x,
            "training-mode BatchNorm needs more than one value per channel",
        ));
    }
    let axes: Vec<i64> = (0..xs.len() as i64).filter(|&a| a != 1).collect();
    let mut stat: Shape = vec![1; xs.len()];
    stat[1] = c;
    let mean = t.emit(
        "ReduceMean",
        &[x],
        &format!("{base}.mean"),
        vec![attr_ints("axes", &axes), attr_int("keepdims", 1)],
    )?;
    let xc = t.emit("Sub", &[x, &mean], &format!("{base}.xc"), vec![])?;
    let ss = t.emit(
        "ReduceSumSquare",
        &[&xc],
        &format!("{base}.var"),
        vec![attr_ints("axes", &axes), attr_int("keepdims", 1)],
    )?;
    let inv_m = t.scalar(1.0 / count as f64)?;
    let var = t.emit("Mul", &[&ss, &inv_m], &format!("{base}.var"), vec![])?;
    let e = t.scalar(f64::from(eps))?;
    let ve = t.emit("Add", &[&var, &e], &format!("{base}.inv"), vec![])?;
    let sd = t.emit("Sqrt", &[&ve], &format!("{base}.inv"), vec![])?;
    let inv = t.emit("Reciprocal", &[&sd], &format!("{base}.inv"), vec![])?;
    let gb = reshape(t, gamma, &stat, &format!("{base}.gamma"))?;
    let bb = reshape(t, beta, &stat, &format!("{base}.beta"))?;
    let scale = t.emit("Mul", &[&inv, &gb], &format!("{base}.scale"), vec![])?;
    let xs_ = t.emit("Mul", &[&xc, &scale], base, vec![])?;
    let y = t.emit("Add", &[&xs_, &bb], base, vec![])?;
    t.record_batch_norm(BnRecord {
        x: x.to_string(),
        gamma: gamma.to_string(),
        beta: beta.to_string(),
        y: y.clone(),
        xc: xc.clone(),
        inv: inv.clone(),
        scale: scale.clone(),
        count,
        channels: c,
    });
    // Running statistics (not differentiated).
    let keep = t.scalar(1.0 - f64::from(momentum))?;
    let m = t.scalar(f64::from(momentum))?;
    let mean_c = reshape(t, &mean, &[c], &format!("{base}.batch_mean"))?;
    let var_c = reshape(t, &var, &[c], &format!("{base}.batch_var"))?;
    let unbias = t.scalar(f64::from(momentum) * count as f64 / (count as f64 - 1.0))?;
    let a = t.emit(
        "Mul",
        &[running_mean, &keep],
        &format!("{base}.running_mean"),
        vec![],
    )?;
    let b = t.emit(
        "Mul",
        &[&mean_c, &m],
        &format!("{base}.running_mean"),
        vec![],
    )?;
    let new_mean = t.emit("Add", &[&a, &b], &format!("{base}.running_mean"), vec![])?;
    let a = t.emit(
        "Mul",
        &[running_var, &keep],
        &format!("{base}.running_var"),
        vec![],
    )?;
    let b = t.emit(
        "Mul",
        &[&var_c, &unbias],
        &format!("{base}.running_var"),
        vec![],
    )?;
    let new_var = t.emit("Add", &[&a, &b], &format!("{base}.running_var"), vec![])?;
    Ok((y, new_mean, new_var))
}

/// The fused BatchNorm backward: with g = dy and x̂ = xc·inv,
/// dβ = Σg, dγ = Σ g·x̂, dx = γ·inv·(g − Σg/M − x̂·Σ(g·x̂)/M), sums over every axis but 1.
fn batch_norm_backward(
    t: &mut Tape,
    r: &BnRecord,
    dy: &str,
    need: &[bool],
) -> Result<Grads, TrainError> {
    let xs = t.shape(&r.x)?;
    let axes: Vec<usize> = (0..xs.len()).filter(|&a| a != 1).collect();
    let base = gname(&r.x);
    let sdy = reduce_sum(t, dy, &axes, true, &base)?;
    let p = t.emit("Mul", &[dy, &r.xc], &base, vec![])?;
    let sdyxc = reduce_sum(t, &p, &axes, true, &base)?;
    let mut g: Grads = vec![None; 3];
    if need[0] {
        let inv_m = t.scalar(-1.0 / r.count as f64)?;
        // c1 = −scale·inv²·Σ(g·xc)/M ; c2 = −scale·Σg/M ; dx = g·scale + xc·c1 + c2
        let inv2 = t.emit("Mul", &[&r.inv, &r.inv], &base, vec![])?;
        let k = t.emit("Mul", &[&inv2, &sdyxc], &base, vec![])?;
        let k = t.emit("Mul", &[&k, &r.scale], &base, vec![])?;
        let c1 = t.emit("Mul", &[&k, &inv_m], &base, vec![])?;
        let c2 = t.emit("Mul", &[&sdy, &r.scale], &base, vec![])?;
        let c2 = t.emit("Mul", &[&c2, &inv_m], &base, vec![])?;
        let a = t.emit("Mul", &[dy, &r.scale], &base, vec![])?;
        let b = t.emit("Mul", &[&r.xc, &c1], &base, vec![])?;
        let b = t.emit("Add", &[&b, &c2], &base, vec![])?;
        g[0] = Some(t.emit("Add", &[&a, &b], &base, vec![])?);
    }
    if need[1] {
        let d = t.emit("Mul", &[&sdyxc, &r.inv], &gname(&r.gamma), vec![])?;
        g[1] = Some(reshape(t, &d, &[r.channels], &gname(&r.gamma))?);
    }
    if need[2] {
        g[2] = Some(reshape(t, &sdy, &[r.channels], &gname(&r.beta))?);
    }
    Ok(g)
}
