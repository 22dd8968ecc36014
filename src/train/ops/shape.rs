//! Ops that move values without arithmetic: reshapes, transposes, concatenation, slicing,
//! gathers and scatters, padding and constants.

use super::*;
use crate::model::graph::{attr_int, attr_string};
use crate::model::onnx::tensor_proto::DataType;
use crate::train::TrainError;

/// The ops of this family: shape inference and gradient rule side by side.
pub(super) const RULES: &[Rule] = &[
    Rule {
        op: "Flatten",
        infer: infer_flatten,
        vjp: Some(Vjp::Unary(vjp_flatten)),
    },
    Rule {
        op: "Reshape",
        infer: infer_reshape,
        vjp: Some(Vjp::Unary(vjp_flatten)),
    },
    Rule {
        op: "Transpose",
        infer: infer_transpose,
        vjp: Some(Vjp::Unary(vjp_transpose)),
    },
    Rule {
        op: "Concat",
        infer: infer_concat,
        vjp: Some(Vjp::All(vjp_concat)),
    },
    Rule {
        op: "Split",
        infer: infer_split,
        vjp: Some(Vjp::All(vjp_split)),
    },
    Rule {
        op: "Slice",
        infer: infer_slice,
        vjp: Some(Vjp::Unary(vjp_slice)),
    },
    Rule {
        op: "Unsqueeze",
        infer: infer_unsqueeze,
        vjp: Some(Vjp::Unary(vjp_flatten)),
    },
    Rule {
        op: "Squeeze",
        infer: infer_squeeze,
        vjp: Some(Vjp::Unary(vjp_flatten)),
    },
    Rule {
        op: "Expand",
        infer: infer_expand,
        vjp: Some(Vjp::Unary(vjp_expand)),
    },
    Rule {
        op: "GatherElements",
        infer: infer_gather_elements,
        vjp: Some(Vjp::Unary(vjp_gather_elements)),
    },
    Rule {
        op: "Gather",
        infer: infer_gather,
        vjp: None,
    },
    Rule {
        op: "ScatterElements",
        infer: super::same_shape,
        vjp: None,
    },
    Rule {
        op: "ScatterND",
        infer: super::same_shape,
        vjp: None,
    },
    Rule {
        op: "Constant",
        infer: infer_constant,
        vjp: None,
    },
    Rule {
        op: "ConstantOfShape",
        infer: infer_constant_of_shape,
        vjp: None,
    },
    Rule {
        op: "Pad",
        infer: infer_pad,
        vjp: None,
    },
];

/// Shape inference of `Flatten`.
fn infer_flatten(c: &Infer<'_>) -> Inferred {
    let &Infer { attrs, .. } = c;
    let (x, t) = c.first()?;
    let axis = norm_axis(ai(attrs, "axis").unwrap_or(1), x.len() + 1).ok_or("bad axis")?;
    same(
        vec![x[..axis].iter().product(), x[axis..].iter().product()],
        t,
    )
}

/// Gradient of `Flatten`, `Reshape`, `Squeeze`, `Unsqueeze`: `dy` reshaped back.
fn vjp_flatten(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    let xs = t.shape(&p.x)?;
    reshape(t, dy, &xs, &p.gx)
}

/// Shape inference of `Reshape`.
fn infer_reshape(c: &Infer<'_>) -> Inferred {
    let &Infer { inputs, .. } = c;
    let (x, t) = c.first()?;
    let target = c.const_ints(inputs.get(1).ok_or("Reshape needs a shape")?)?;
    let numel: usize = x.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            0 => out.push(*x.get(i).ok_or("Reshape 0 beyond the input rank")?),
            -1 if infer_at.is_none() => {
                infer_at = Some(i);
                out.push(1);
            }
            d if d > 0 => out.push(d as usize),
            _ => return Err(format!("bad Reshape target {target:?}")),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer_at {
        if known == 0 || !numel.is_multiple_of(known) {
            return Err(format!("cannot reshape {x:?} to {target:?}"));
        }
        out[i] = numel / known;
    }
    if out.iter().product::<usize>() != numel {
        return Err(format!(
            "cannot reshape {x:?} ({numel} values) to {target:?}"
        ));
    }
    same(out, t)
}

/// Shape inference of `Transpose`.
fn infer_transpose(c: &Infer<'_>) -> Inferred {
    let &Infer { attrs, .. } = c;
    let (x, t) = c.first()?;
    let perm = aints(attrs, "perm").unwrap_or_else(|| (0..x.len() as i64).rev().collect());
    let y: Option<Vec<usize>> = perm.iter().map(|&p| x.get(p as usize).copied()).collect();
    same(y.ok_or("bad perm")?, t)
}

/// Gradient of `Transpose`: `dy` transposed by the inverse permutation.
fn vjp_transpose(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    let rank = t.shape(&p.x)?.len();
    let perm = attr_is(p.node, "perm").unwrap_or_else(|| (0..rank as i64).rev().collect());
    let mut inv = vec![0i64; perm.len()];
    for (i, &k) in perm.iter().enumerate() {
        inv[k as usize] = i as i64;
    }
    transpose(t, dy, &inv, &p.gx)
}

/// Shape inference of `Concat`.
fn infer_concat(c: &Infer<'_>) -> Inferred {
    let &Infer { attrs, ref ins, .. } = c;
    let (x, t) = c.first()?;
    let axis =
        norm_axis(ai(attrs, "axis").ok_or("Concat needs axis")?, x.len()).ok_or("bad axis")?;
    let mut y = x.clone();
    y[axis] = 0;
    for (s, _) in ins {
        if s.len() != x.len() || s.iter().enumerate().any(|(i, &d)| i != axis && d != x[i]) {
            return Err(format!(
                "Concat inputs {x:?} and {s:?} differ off axis {axis}"
            ));
        }
        y[axis] += s[axis];
    }
    same(y, t)
}

/// Gradient of `Concat`: `dy` split along the axis into the inputs' sizes.
fn vjp_concat(
    t: &mut dyn Builder,
    p: &Parts<'_>,
    dys: &[Option<String>],
    need: &[bool],
) -> Result<Grads, TrainError> {
    let dy = need_dy(p.node, dys)?;
    let rank = t.shape(&p.x)?.len() as i64;
    let axis = attr_i(p.node, "axis").unwrap_or(0);
    let axis = if axis < 0 { axis + rank } else { axis };
    let mut sizes = Vec::with_capacity(p.ins.len());
    for input in &p.ins {
        sizes.push(t.shape(input)?[axis as usize] as i64);
    }
    let split = t.ints1("split", &sizes)?;
    let bases: Vec<String> = p.ins.iter().map(|i| gname(i)).collect();
    let refs: Vec<&str> = bases.iter().map(|s| s.as_str()).collect();
    let pieces = t.emit_multi("Split", &[&dy, &split], &refs, vec![attr_int("axis", axis)])?;
    Ok(pieces
        .into_iter()
        .zip(need)
        .map(|(d, &n)| n.then_some(d))
        .collect())
}

/// Shape inference of `Split`.
fn infer_split(c: &Infer<'_>) -> Inferred {
    let &Infer {
        inputs,
        attrs,
        n_out,
        ..
    } = c;
    let (x, t) = c.first()?;
    let axis = norm_axis(ai(attrs, "axis").unwrap_or(0), x.len()).ok_or("bad axis")?;
    let sizes: Vec<usize> = match inputs.get(1) {
        Some(n) if !n.is_empty() => to_usize(&c.const_ints(n)?).ok_or("bad split")?,
        _ => {
            if x[axis] % n_out != 0 {
                return Err("Split without sizes needs an even split".into());
            }
            vec![x[axis] / n_out; n_out]
        }
    };
    if sizes.len() != n_out || sizes.iter().sum::<usize>() != x[axis] {
        return Err(format!(
            "split sizes {sizes:?} do not cover {} with {n_out} outputs",
            x[axis]
        ));
    }
    Ok(sizes
        .iter()
        .map(|&s| {
            let mut y = x.clone();
            y[axis] = s;
            (y, t)
        })
        .collect())
}

/// Gradient of `Split`: the outputs' gradients (zeros where an output has none) concatenated.
fn vjp_split(
    t: &mut dyn Builder,
    p: &Parts<'_>,
    dys: &[Option<String>],
    _need: &[bool],
) -> Result<Grads, TrainError> {
    let axis = attr_i(p.node, "axis").unwrap_or(0);
    let mut pieces = Vec::with_capacity(p.outs.len());
    for (o, dy) in p.outs.iter().zip(dys) {
        pieces.push(match dy {
            Some(d) => d.clone(),
            None => zeros_like(t, o)?,
        });
    }
    let refs: Vec<&str> = pieces.iter().map(|s| s.as_str()).collect();
    let mut g: Grads = vec![None; p.ins.len()];
    g[0] = Some(t.emit("Concat", &refs, &p.gx, vec![attr_int("axis", axis)])?);
    Ok(g)
}

/// Shape inference of `Slice`.
fn infer_slice(c: &Infer<'_>) -> Inferred {
    let &Infer { inputs, .. } = c;
    let (x, t) = c.first()?;
    let get = |i: usize| -> Result<Option<Vec<i64>>, String> {
        match inputs.get(i) {
            Some(n) if !n.is_empty() => Ok(Some(c.const_ints(n)?)),
            _ => Ok(None),
        }
    };
    let starts = get(1)?.ok_or("Slice needs starts")?;
    let ends = get(2)?.ok_or("Slice needs ends")?;
    let axes = get(3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = get(4)?.unwrap_or_else(|| vec![1; starts.len()]);
    let mut y = x.clone();
    for i in 0..starts.len() {
        let a = norm_axis(axes[i], x.len()).ok_or("bad axis")?;
        let dim = x[a] as i64;
        let step = steps[i];
        let wrap = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
        let n = if step > 0 {
            let s = wrap(starts[i]).clamp(0, dim);
            let e = wrap(ends[i]).clamp(0, dim);
            if e > s { (e - s + step - 1) / step } else { 0 }
        } else if step < 0 {
            let s = wrap(starts[i]).clamp(0, dim - 1);
            let e = wrap(ends[i]).clamp(-1, dim - 1);
            if s > e {
                (s - e + (-step) - 1) / (-step)
            } else {
                0
            }
        } else {
            return Err("Slice step 0".into());
        };
        y[a] = n as usize;
    }
    same(y, t)
}

/// Gradient of `Slice` (steps 1): `dy` padded back with zeros to the input's extent.
fn vjp_slice(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    let xs = t.shape(&p.x)?;
    let get = |t: &dyn Builder, i: usize| -> Option<Vec<i64>> {
        p.ins
            .get(i)
            .filter(|s| !s.is_empty())
            .and_then(|s| t.ints(s).map(|v| v.to_vec()))
    };
    let starts = get(t, 1).ok_or_else(|| p.bad("starts must be a tape constant"))?;
    let ends = get(t, 2).ok_or_else(|| p.bad("ends must be a tape constant"))?;
    let axes = get(t, 3).unwrap_or_else(|| (0..starts.len() as i64).collect());
    if get(t, 4).is_some_and(|s| s.iter().any(|&v| v != 1)) {
        return Err(p.bad("Slice with steps ≠ 1 has no rule"));
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
    let pads = t.ints1("pads", &pads)?;
    t.emit("Pad", &[dy, &pads], &p.gx, vec![])
}

/// Shape inference of `Unsqueeze`.
fn infer_unsqueeze(c: &Infer<'_>) -> Inferred {
    let &Infer { inputs, .. } = c;
    let (x, t) = c.first()?;
    let axes = c.const_ints(inputs.get(1).ok_or("Unsqueeze needs axes")?)?;
    let rank = x.len() + axes.len();
    let mut axes: Vec<usize> = axes
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect::<Option<_>>()
        .ok_or("bad axes")?;
    axes.sort_unstable();
    let mut y = x.clone();
    for a in axes {
        y.insert(a, 1);
    }
    same(y, t)
}

/// Shape inference of `Squeeze`.
fn infer_squeeze(c: &Infer<'_>) -> Inferred {
    let &Infer { inputs, .. } = c;
    let (x, t) = c.first()?;
    let axes = c.const_ints(inputs.get(1).ok_or("Squeeze needs axes")?)?;
    let axes: Vec<usize> = axes
        .iter()
        .map(|&a| norm_axis(a, x.len()))
        .collect::<Option<_>>()
        .ok_or("bad axes")?;
    let y = x
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, &d)| d)
        .collect();
    same(y, t)
}

/// Shape inference of `Expand`.
fn infer_expand(c: &Infer<'_>) -> Inferred {
    let &Infer { inputs, .. } = c;
    let (x, t) = c.first()?;
    let target = to_usize(&c.const_ints(inputs.get(1).ok_or("Expand needs a shape")?)?)
        .ok_or("bad shape")?;
    same(
        broadcast(&x, &target).ok_or("Expand shapes do not broadcast")?,
        t,
    )
}

/// Gradient of `Expand`: `dy` summed down to the input's shape.
fn vjp_expand(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    unbroadcast_to(t, dy, &p.x)
}

/// Shape inference of `GatherElements`.
fn infer_gather_elements(c: &Infer<'_>) -> Inferred {
    let ins = &c.ins;
    let t = c.first()?.1;
    let idx = &ins.get(1).ok_or("GatherElements needs indices")?.0;
    same(idx.clone(), t)
}

/// Gradient of `GatherElements`: `dy` scatter-added into zeros shaped like the input.
fn vjp_gather_elements(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    let axis = attr_i(p.node, "axis").unwrap_or(0);
    let zeros = zeros_like(t, &p.x)?;
    t.emit(
        "ScatterElements",
        &[&zeros, &p.ins[1], dy],
        &p.gx,
        vec![attr_int("axis", axis), attr_string("reduction", "add")],
    )
}

/// Shape inference of `Gather`.
fn infer_gather(c: &Infer<'_>) -> Inferred {
    let &Infer { attrs, ref ins, .. } = c;
    let (x, t) = c.first()?;
    let idx = &ins.get(1).ok_or("Gather needs indices")?.0;
    let axis = norm_axis(ai(attrs, "axis").unwrap_or(0), x.len()).ok_or("bad axis")?;
    let mut y = x[..axis].to_vec();
    y.extend_from_slice(idx);
    y.extend_from_slice(&x[axis + 1..]);
    same(y, t)
}

/// Shape inference of `Constant`.
fn infer_constant(c: &Infer<'_>) -> Inferred {
    let &Infer { attrs, .. } = c;
    let v = atensor(attrs, "value").ok_or("Constant needs a tensor `value`")?;
    let dims = v.dims.iter().map(|&d| d as usize).collect();
    let t = DataType::try_from(v.data_type.unwrap_or(0))
        .map_err(|_| "bad Constant type".to_string())?;
    same(dims, t)
}

/// Shape inference of `ConstantOfShape`.
fn infer_constant_of_shape(c: &Infer<'_>) -> Inferred {
    let &Infer { inputs, attrs, .. } = c;
    let dims = to_usize(&c.const_ints(inputs.first().ok_or("ConstantOfShape needs a shape")?)?)
        .ok_or("bad shape")?;
    let t = atensor(attrs, "value")
        .and_then(|v| DataType::try_from(v.data_type.unwrap_or(1)).ok())
        .unwrap_or(DataType::Float);
    same(dims, t)
}

/// Shape inference of `Pad`.
fn infer_pad(c: &Infer<'_>) -> Inferred {
    let &Infer { inputs, .. } = c;
    let (x, t) = c.first()?;
    let pads = c.const_ints(inputs.get(1).ok_or("Pad needs pads")?)?;
    if pads.len() != 2 * x.len() {
        return Err("Pad needs 2·rank pads".into());
    }
    let y = x
        .iter()
        .enumerate()
        .map(|(i, &d)| (d as i64 + pads[i] + pads[i + x.len()]) as usize)
        .collect();
    same(y, t)
}
