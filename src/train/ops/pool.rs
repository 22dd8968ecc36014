//! Pooling and resampling over the spatial axes: MaxPool, AveragePool, GlobalAveragePool,
//! GlobalMaxPool, Resize.

use super::*;
use crate::model::graph::{attr_int, attr_string};
use crate::model::onnx::NodeProto;
use crate::model::onnx::tensor_proto::DataType;
use crate::train::TrainError;

/// The ops of this family: shape inference and gradient rule side by side.
pub(super) const RULES: &[Rule] = &[
    Rule {
        op: "MaxPool",
        infer: infer_pool,
        vjp: Some(vjp_max_pool),
    },
    Rule {
        op: "AveragePool",
        infer: infer_pool,
        vjp: Some(vjp_average_pool),
    },
    Rule {
        op: "GlobalAveragePool",
        infer: infer_global_pool,
        vjp: Some(vjp_global_average_pool),
    },
    Rule {
        op: "GlobalMaxPool",
        infer: infer_global_pool,
        vjp: None,
    },
    Rule {
        op: "Resize",
        infer: infer_resize,
        vjp: Some(vjp_resize),
    },
];

/// Shape inference of `MaxPool`, `AveragePool`.
fn infer_pool(c: &Infer<'_>) -> Inferred {
    let &Infer {
        op, attrs, n_out, ..
    } = c;
    let first = || c.first();
    let (x, t) = first()?;
    if x.len() != 4 {
        return Err(format!("{op} supports 2-D maps, found {x:?}"));
    }
    if ai(attrs, "ceil_mode").unwrap_or(0) != 0 {
        return Err("ceil_mode is not supported".into());
    }
    let k = to_usize(&aints(attrs, "kernel_shape").ok_or("kernel_shape missing")?)
        .ok_or("bad kernel")?;
    let s = to_usize(&aints(attrs, "strides").unwrap_or(vec![1, 1])).ok_or("bad strides")?;
    let p = to_usize(&aints(attrs, "pads").unwrap_or(vec![0; 4])).ok_or("bad pads")?;
    let oh =
        window_len(x[2], k[0], s[0], p[0], p[2], 1).ok_or("pool window larger than its input")?;
    let ow =
        window_len(x[3], k[1], s[1], p[1], p[3], 1).ok_or("pool window larger than its input")?;
    let y = vec![x[0], x[1], oh, ow];
    let mut out = vec![(y.clone(), t)];
    if n_out > 1 {
        out.push((y, DataType::Int64));
    }
    Ok(out)
}

/// Gradient of `MaxPool`.
fn vjp_max_pool(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    _need: &[bool],
) -> Result<Grads, TrainError> {
    let Parts { outs, x, y, gx, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
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
        let zero = zero_value(t);
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
    Ok(g)
}

/// Gradient of `AveragePool`.
fn vjp_average_pool(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    _need: &[bool],
) -> Result<Grads, TrainError> {
    let Parts { x, y, gx, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
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
    Ok(g)
}

/// Shape inference of `GlobalAveragePool`, `GlobalMaxPool`.
fn infer_global_pool(c: &Infer<'_>) -> Inferred {
    let &Infer { op, .. } = c;
    let first = || c.first();
    let (x, t) = first()?;
    if x.len() < 3 {
        return Err(format!("{op} needs [N, C, spatial...], found {x:?}"));
    }
    let mut y = x.clone();
    for d in y.iter_mut().skip(2) {
        *d = 1;
    }
    same(y, t)
}

/// Gradient of `GlobalAveragePool`.
fn vjp_global_average_pool(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    _need: &[bool],
) -> Result<Grads, TrainError> {
    let Parts { x, gx, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
    let dy = need_dy(node, dys)?;
    let xs = t.shape(&x)?;
    let count: usize = xs[2..].iter().product();
    let c = t.scalar(1.0 / count as f64)?;
    let d = t.emit("Mul", &[&dy, &c], &gx, vec![])?;
    g[0] = Some(expand(t, &d, &xs, &gx)?);
    Ok(g)
}

/// Shape inference of `Resize`.
fn infer_resize(c: &Infer<'_>) -> Inferred {
    let &Infer { inputs, .. } = c;
    let first = || c.first();
    let (_, t) = first()?;
    let sizes = c.const_ints(
        inputs
            .get(3)
            .ok_or("Resize needs `sizes` (scales are not supported)")?,
    )?;
    same(to_usize(&sizes).ok_or("bad sizes")?, t)
}

/// Gradient of `Resize`.
fn vjp_resize(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    _need: &[bool],
) -> Result<Grads, TrainError> {
    let Parts { x, y, gx, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
    let dy = need_dy(node, dys)?;
    let mode = attr_s(node, "mode").unwrap_or_else(|| "nearest".into());
    let ctm = attr_s(node, "coordinate_transformation_mode").unwrap_or_else(|| "half_pixel".into());
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
    Ok(g)
}
