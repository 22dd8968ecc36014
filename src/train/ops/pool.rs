//! Pooling and resampling over the spatial axes: MaxPool, AveragePool, GlobalAveragePool,
//! GlobalMaxPool, Resize.

use super::*;
use crate::model::graph::{attr_int, attr_string};
use crate::model::onnx::tensor_proto::DataType;

/// The ops of this family: shape inference and gradient rule side by side.
pub(super) const RULES: &[Rule] = &[
    Rule {
        op: "MaxPool",
        infer: infer_pool,
        vjp: Some(Vjp::Unary(vjp_max_pool)),
    },
    Rule {
        op: "AveragePool",
        infer: infer_pool,
        vjp: Some(Vjp::Unary(vjp_average_pool)),
    },
    Rule {
        op: "GlobalAveragePool",
        infer: infer_global_pool,
        vjp: Some(Vjp::Unary(vjp_global_average_pool)),
    },
    Rule {
        op: "GlobalMaxPool",
        infer: infer_global_pool,
        vjp: None,
    },
    Rule {
        op: "Resize",
        infer: infer_resize,
        vjp: Some(Vjp::Unary(vjp_resize)),
    },
];

/// Shape inference of `MaxPool`, `AveragePool`.
fn infer_pool(c: &Infer<'_>) -> Inferred {
    let &Infer {
        op, attrs, n_out, ..
    } = c;
    let (x, t) = c.first()?;
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

/// Gradient of `MaxPool`: `dy` scatter-added into zeros at the positions of the maxima (the
/// node's `Indices` output).
fn vjp_max_pool(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    let idx = p.outs.get(1).filter(|s| !s.is_empty()).ok_or_else(|| {
        p.bad("MaxPool needs its Indices output for the gradient (emit it in training mode)")
    })?;
    if attr_i(p.node, "storage_order").unwrap_or(0) != 0 {
        return Err(p.bad("MaxPool storage_order = 1 is not supported"));
    }
    let xs = t.shape(&p.x)?;
    let numel: usize = xs.iter().product();
    let flat_len = t.numel(&p.y)?;
    let zeros = {
        let s = t.ints1("shape", &[numel as i64])?;
        let zero = zero_value(t);
        t.emit(
            "ConstantOfShape",
            &[&s],
            &p.gx,
            vec![crate::model::graph::attr_tensor("value", zero)],
        )?
    };
    let fi = reshape(t, idx, &[flat_len], &p.gx)?;
    let fd = reshape(t, dy, &[flat_len], &p.gx)?;
    let sc = t.emit(
        "ScatterElements",
        &[&zeros, &fi, &fd],
        &p.gx,
        vec![attr_int("axis", 0), attr_string("reduction", "add")],
    )?;
    reshape(t, &sc, &xs, &p.gx)
}

/// Gradient of `AveragePool`: `dy` spread evenly over each window, as a depthwise
/// ConvTranspose with a constant 1/k² kernel.
fn vjp_average_pool(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    let w = window(t, p.node, None)?;
    let include_pad = attr_i(p.node, "count_include_pad").unwrap_or(0) != 0;
    if !include_pad && w.p.iter().any(|&p| p > 0) {
        return Err(
            p.bad("AveragePool with padding needs count_include_pad = 1 for its gradient rule")
        );
    }
    let xs = t.shape(&p.x)?;
    let ys = t.shape(&p.y)?;
    let c = xs[1];
    let kk = w.k[0] * w.k[1];
    let ones = t.const_float(
        "avgpool.kernel",
        &[c, 1, w.k[0], w.k[1]],
        &vec![1.0 / kk as f64; c * kk],
    )?;
    let op_ = output_padding(&w, &xs, &ys, p.node)?;
    let cw = Window { group: c, ..w };
    t.emit(
        "ConvTranspose",
        &[dy, &ones],
        &p.gx,
        conv_attrs(&cw, Some(&op_)),
    )
}

/// Shape inference of `GlobalAveragePool`, `GlobalMaxPool`.
fn infer_global_pool(c: &Infer<'_>) -> Inferred {
    let &Infer { op, .. } = c;
    let (x, t) = c.first()?;
    if x.len() < 3 {
        return Err(format!("{op} needs [N, C, spatial...], found {x:?}"));
    }
    let mut y = x.clone();
    for d in y.iter_mut().skip(2) {
        *d = 1;
    }
    same(y, t)
}

/// Gradient of `GlobalAveragePool`: `dy / (H·W)` expanded over the map.
fn vjp_global_average_pool(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    let xs = t.shape(&p.x)?;
    let count: usize = xs[2..].iter().product();
    let c = t.scalar(1.0 / count as f64)?;
    let d = t.emit("Mul", &[dy, &c], &p.gx, vec![])?;
    expand(t, &d, &xs, &p.gx)
}

/// Shape inference of `Resize`.
fn infer_resize(c: &Infer<'_>) -> Inferred {
    let &Infer { inputs, .. } = c;
    let (_, t) = c.first()?;
    let sizes = c.const_ints(
        inputs
            .get(3)
            .ok_or("Resize needs `sizes` (scales are not supported)")?,
    )?;
    same(to_usize(&sizes).ok_or("bad sizes")?, t)
}

/// Gradient of `Resize` (nearest, integer upsampling): `dy` summed over each block of copies.
fn vjp_resize(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    let node = p.node;
    let mode = attr_s(node, "mode").unwrap_or_else(|| "nearest".into());
    let ctm = attr_s(node, "coordinate_transformation_mode").unwrap_or_else(|| "half_pixel".into());
    let nm = attr_s(node, "nearest_mode").unwrap_or_else(|| "round_prefer_floor".into());
    if mode != "nearest" || ctm != "asymmetric" || nm != "floor" {
        return Err(p.bad(
            "Resize has a rule only for mode=nearest, asymmetric coordinates, nearest_mode=floor",
        ));
    }
    let xs = t.shape(&p.x)?;
    let ys = t.shape(&p.y)?;
    if xs.len() != 4 || xs[..2] != ys[..2] || ys[2] % xs[2] != 0 || ys[3] % xs[3] != 0 {
        return Err(p.bad("Resize has a rule only for integer upsampling of H and W"));
    }
    let (fh, fw) = (ys[2] / xs[2], ys[3] / xs[3]);
    let r = reshape(t, dy, &[xs[0], xs[1], xs[2], fh, xs[3], fw], &p.gx)?;
    reduce_sum(t, &r, &[3, 5], false, &p.gx)
}
