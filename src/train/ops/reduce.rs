//! Reductions along axes: ReduceMean/Sum/SumSquare/Max/Min/Prod, ArgMax/ArgMin, and the
//! normalisations along an axis, Softmax and LogSoftmax.

use super::*;
use crate::model::onnx::tensor_proto::DataType;

/// The ops of this family: shape inference and gradient rule side by side.
pub(super) const RULES: &[Rule] = &[
    Rule {
        op: "Softmax",
        infer: super::same_shape,
        vjp: Some(Vjp::Unary(vjp_softmax)),
    },
    Rule {
        op: "LogSoftmax",
        infer: super::same_shape,
        vjp: Some(Vjp::Unary(vjp_softmax)),
    },
    Rule {
        op: "ReduceMean",
        infer: infer_reduce,
        vjp: Some(Vjp::Unary(vjp_reduce_mean)),
    },
    Rule {
        op: "ReduceSum",
        infer: infer_reduce,
        vjp: Some(Vjp::Unary(vjp_reduce_mean)),
    },
    Rule {
        op: "ReduceSumSquare",
        infer: infer_reduce,
        vjp: Some(Vjp::Unary(vjp_reduce_mean)),
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

/// Gradient of `Softmax` (`y · (dy − Σ dy·y)`) and `LogSoftmax` (`dy − exp(y) · Σ dy`), the
/// sums along the axis.
fn vjp_softmax(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    let (y, gx) = (&p.y, &p.gx);
    let rank = t.shape(&p.x)?.len();
    let axis = attr_i(p.node, "axis").unwrap_or(-1);
    let axis = if axis < 0 { axis + rank as i64 } else { axis } as usize;
    if p.op() == "Softmax" {
        let m = t.emit("Mul", &[dy, y], gx, vec![])?;
        let s = reduce_sum(t, &m, &[axis], true, gx)?;
        let d = t.emit("Sub", &[dy, &s], gx, vec![])?;
        t.emit("Mul", &[y, &d], gx, vec![])
    } else {
        let s = reduce_sum(t, dy, &[axis], true, gx)?;
        let e = t.emit("Exp", &[y], gx, vec![])?;
        let es = t.emit("Mul", &[&e, &s], gx, vec![])?;
        t.emit("Sub", &[dy, &es], gx, vec![])
    }
}

/// Shape inference of `ReduceMean`, `ReduceSum`, `ReduceSumSquare`, `ReduceMax`, `ReduceMin`, `ReduceProd`.
fn infer_reduce(c: &Infer<'_>) -> Inferred {
    let &Infer {
        op, inputs, attrs, ..
    } = c;
    let (x, t) = c.first()?;
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

/// Gradient of `ReduceMean`, `ReduceSum`, `ReduceSumSquare`: `dy` (divided by the count for
/// the mean) expanded back over the reduced axes (times `2x` for the sum of squares).
fn vjp_reduce_mean(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    let (op, x, gx) = (p.op(), &p.x, &p.gx);
    let xs = t.shape(x)?;
    let axes: Vec<i64> = if op == "ReduceSum" {
        match p.ins.get(1) {
            Some(a) if !a.is_empty() => t
                .ints(a)
                .map(|v| v.to_vec())
                .ok_or_else(|| p.bad("axes must be a tape constant"))?,
            _ => (0..xs.len() as i64).collect(),
        }
    } else {
        attr_is(p.node, "axes").unwrap_or_else(|| (0..xs.len() as i64).collect())
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
    let d = reshape(t, dy, &kept, gx)?;
    let d = match op {
        "ReduceMean" => {
            let c = t.scalar(1.0 / count as f64)?;
            t.emit("Mul", &[&d, &c], gx, vec![])?
        }
        _ => d,
    };
    let d = expand(t, &d, &xs, gx)?;
    if op == "ReduceSumSquare" {
        let two = t.scalar(2.0)?;
        let tx = t.emit("Mul", &[x, &two], gx, vec![])?;
        t.emit("Mul", &[&d, &tx], gx, vec![])
    } else {
        Ok(d)
    }
}

/// Shape inference of `ArgMax`, `ArgMin`.
fn infer_arg(c: &Infer<'_>) -> Inferred {
    let &Infer { attrs, .. } = c;
    let (x, _) = c.first()?;
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
