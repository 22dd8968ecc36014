//! Reductions along axes: ReduceMean/Sum/SumSquare/Max/Min/Prod, ArgMax/ArgMin, and the
//! normalisations along an axis, Softmax and LogSoftmax.

use super::*;
use crate::model::onnx::NodeProto;
use crate::model::onnx::tensor_proto::DataType;
use crate::train::TrainError;

/// The ops of this family: shape inference and gradient rule side by side.
pub(super) const RULES: &[Rule] = &[
    Rule {
        op: "Softmax",
        infer: super::same_shape,
        vjp: Some(vjp_softmax),
    },
    Rule {
        op: "LogSoftmax",
        infer: super::same_shape,
        vjp: Some(vjp_softmax),
    },
    Rule {
        op: "ReduceMean",
        infer: infer_reduce,
        vjp: Some(vjp_reduce_mean),
    },
    Rule {
        op: "ReduceSum",
        infer: infer_reduce,
        vjp: Some(vjp_reduce_mean),
    },
    Rule {
        op: "ReduceSumSquare",
        infer: infer_reduce,
        vjp: Some(vjp_reduce_mean),
    },
    Rule {
        op: "ReduceMax",
        infer: infer_reduce,
        vjp: None,
    },
    Rule {
        op: "ReduceMin",
        infer: infer_reduce,
        vjp: None,
    },
    Rule {
        op: "ReduceProd",
        infer: infer_reduce,
        vjp: None,
    },
    Rule {
        op: "ArgMax",
        infer: infer_arg,
        vjp: None,
    },
    Rule {
        op: "ArgMin",
        infer: infer_arg,
        vjp: None,
    },
];

/// Gradient of `Softmax`, `LogSoftmax`.
fn vjp_softmax(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    _need: &[bool],
) -> Result<Grads, TrainError> {
    let op = op_of(node).to_string();
    let Parts { x, y, gx, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
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
    Ok(g)
}

/// Shape inference of `ReduceMean`, `ReduceSum`, `ReduceSumSquare`, `ReduceMax`, `ReduceMin`, `ReduceProd`.
fn infer_reduce(c: &Infer<'_>) -> Inferred {
    let &Infer {
        op, inputs, attrs, ..
    } = c;
    let first = || c.first();
    let (x, t) = first()?;
    let axes = if op == "ReduceSum" {
        match inputs.get(1) {
            Some(n) if !n.is_empty() => Some(c.const_ints(n)?),
            _ => None,
        }
    } else {
        aints(attrs, "axes")
    };
    let axes: Vec<usize> = match axes {
        Some(a) => a
            .iter()
            .map(|&i| norm_axis(i, x.len()))
            .collect::<Option<_>>()
            .ok_or("bad axes")?,
        None => (0..x.len()).collect(),
    };
    let keep = ai(attrs, "keepdims").unwrap_or(1) != 0;
    let y: Shape = x
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| match (axes.contains(&i), keep) {
            (true, true) => Some(1),
            (true, false) => None,
            (false, _) => Some(d),
        })
        .collect();
    same(y, t)
}

/// Gradient of `ReduceMean`, `ReduceSum`, `ReduceSumSquare`.
fn vjp_reduce_mean(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    _need: &[bool],
) -> Result<Grads, TrainError> {
    let op = op_of(node).to_string();
    let Parts { ins, x, gx, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
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
    Ok(g)
}

/// Shape inference of `ArgMax`, `ArgMin`.
fn infer_arg(c: &Infer<'_>) -> Inferred {
    let &Infer { attrs, .. } = c;
    let first = || c.first();
    let (x, _) = first()?;
    let axis = norm_axis(ai(attrs, "axis").unwrap_or(0), x.len()).ok_or("bad axis")?;
    let keep = ai(attrs, "keepdims").unwrap_or(1) != 0;
    let y: Shape = x
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| {
            if i == axis {
                keep.then_some(1)
            } else {
                Some(d)
            }
        })
        .collect();
    same(y, DataType::Int64)
}
