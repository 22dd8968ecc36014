//! Element-wise ops: unary math, Cast, broadcasting arithmetic, comparisons, Where, Clip.

use super::*;
use crate::model::graph::attr_int;
use crate::model::onnx::NodeProto;
use crate::model::onnx::tensor_proto::DataType;
use crate::train::TrainError;

/// The ops of this family: shape inference and gradient rule side by side.
pub(super) const RULES: &[Rule] = &[
    Rule {
        op: "Relu",
        infer: super::same_shape,
        vjp: Some(vjp_relu),
    },
    Rule {
        op: "Sigmoid",
        infer: super::same_shape,
        vjp: Some(vjp_sigmoid),
    },
    Rule {
        op: "Tanh",
        infer: super::same_shape,
        vjp: Some(vjp_tanh),
    },
    Rule {
        op: "Exp",
        infer: super::same_shape,
        vjp: Some(vjp_exp),
    },
    Rule {
        op: "Log",
        infer: super::same_shape,
        vjp: Some(vjp_log),
    },
    Rule {
        op: "Sqrt",
        infer: super::same_shape,
        vjp: Some(vjp_sqrt),
    },
    Rule {
        op: "Neg",
        infer: super::same_shape,
        vjp: Some(vjp_neg),
    },
    Rule {
        op: "Abs",
        infer: super::same_shape,
        vjp: Some(vjp_abs),
    },
    Rule {
        op: "Sign",
        infer: super::same_shape,
        vjp: None,
    },
    Rule {
        op: "Reciprocal",
        infer: super::same_shape,
        vjp: Some(vjp_reciprocal),
    },
    Rule {
        op: "Identity",
        infer: super::same_shape,
        vjp: Some(vjp_identity),
    },
    Rule {
        op: "Floor",
        infer: super::same_shape,
        vjp: None,
    },
    Rule {
        op: "LeakyRelu",
        infer: super::same_shape,
        vjp: None,
    },
    Rule {
        op: "Cast",
        infer: infer_cast,
        vjp: Some(vjp_cast),
    },
    Rule {
        op: "Add",
        infer: infer_broadcast,
        vjp: Some(vjp_add),
    },
    Rule {
        op: "Sub",
        infer: infer_broadcast,
        vjp: Some(vjp_add),
    },
    Rule {
        op: "Mul",
        infer: infer_broadcast,
        vjp: Some(vjp_mul),
    },
    Rule {
        op: "Div",
        infer: infer_broadcast,
        vjp: Some(vjp_div),
    },
    Rule {
        op: "Pow",
        infer: infer_broadcast,
        vjp: None,
    },
    Rule {
        op: "Max",
        infer: infer_broadcast,
        vjp: None,
    },
    Rule {
        op: "Min",
        infer: infer_broadcast,
        vjp: None,
    },
    Rule {
        op: "Sum",
        infer: infer_broadcast,
        vjp: Some(vjp_add),
    },
    Rule {
        op: "Equal",
        infer: infer_compare,
        vjp: None,
    },
    Rule {
        op: "Greater",
        infer: infer_compare,
        vjp: None,
    },
    Rule {
        op: "Less",
        infer: infer_compare,
        vjp: None,
    },
    Rule {
        op: "GreaterOrEqual",
        infer: infer_compare,
        vjp: None,
    },
    Rule {
        op: "LessOrEqual",
        infer: infer_compare,
        vjp: None,
    },
    Rule {
        op: "And",
        infer: infer_compare,
        vjp: None,
    },
    Rule {
        op: "Or",
        infer: infer_compare,
        vjp: None,
    },
    Rule {
        op: "Not",
        infer: infer_compare,
        vjp: None,
    },
    Rule {
        op: "Where",
        infer: infer_where,
        vjp: Some(vjp_where),
    },
    Rule {
        op: "Clip",
        infer: infer_clip,
        vjp: None,
    },
];

/// Gradient of `Relu`.
fn vjp_relu(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    _need: &[bool],
) -> Result<Grads, TrainError> {
    let Parts { y, gx, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
    let dy = need_dy(node, dys)?;
    let zero = t.scalar(0.0)?;
    let mask = t.emit("Greater", &[&y, &zero], &gx, vec![])?;
    g[0] = Some(t.emit("Where", &[&mask, &dy, &zero], &gx, vec![])?);
    Ok(g)
}

/// Gradient of `Sigmoid`.
fn vjp_sigmoid(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    _need: &[bool],
) -> Result<Grads, TrainError> {
    let Parts { y, gx, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
    let dy = need_dy(node, dys)?;
    let one = t.scalar(1.0)?;
    let om = t.emit("Sub", &[&one, &y], &gx, vec![])?;
    let d = t.emit("Mul", &[&y, &om], &gx, vec![])?;
    g[0] = Some(t.emit("Mul", &[&dy, &d], &gx, vec![])?);
    Ok(g)
}

/// Gradient of `Tanh`.
fn vjp_tanh(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    _need: &[bool],
) -> Result<Grads, TrainError> {
    let Parts { y, gx, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
    let dy = need_dy(node, dys)?;
    let one = t.scalar(1.0)?;
    let y2 = t.emit("Mul", &[&y, &y], &gx, vec![])?;
    let d = t.emit("Sub", &[&one, &y2], &gx, vec![])?;
    g[0] = Some(t.emit("Mul", &[&dy, &d], &gx, vec![])?);
    Ok(g)
}

/// Gradient of `Exp`.
fn vjp_exp(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    _need: &[bool],
) -> Result<Grads, TrainError> {
    let Parts { y, gx, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
    let dy = need_dy(node, dys)?;
    g[0] = Some(t.emit("Mul", &[&dy, &y], &gx, vec![])?);
    Ok(g)
}

/// Gradient of `Log`.
fn vjp_log(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    _need: &[bool],
) -> Result<Grads, TrainError> {
    let Parts { x, gx, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
    let dy = need_dy(node, dys)?;
    g[0] = Some(t.emit("Div", &[&dy, &x], &gx, vec![])?);
    Ok(g)
}

/// Gradient of `Sqrt`.
fn vjp_sqrt(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    _need: &[bool],
) -> Result<Grads, TrainError> {
    let Parts { y, gx, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
    let dy = need_dy(node, dys)?;
    let half = t.scalar(0.5)?;
    let d = t.emit("Div", &[&dy, &y], &gx, vec![])?;
    g[0] = Some(t.emit("Mul", &[&d, &half], &gx, vec![])?);
    Ok(g)
}

/// Gradient of `Neg`.
fn vjp_neg(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    _need: &[bool],
) -> Result<Grads, TrainError> {
    let Parts { gx, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
    let dy = need_dy(node, dys)?;
    g[0] = Some(t.emit("Neg", &[&dy], &gx, vec![])?);
    Ok(g)
}

/// Gradient of `Abs`.
fn vjp_abs(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    _need: &[bool],
) -> Result<Grads, TrainError> {
    let Parts { x, gx, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
    let dy = need_dy(node, dys)?;
    let s = t.emit("Sign", &[&x], &gx, vec![])?;
    g[0] = Some(t.emit("Mul", &[&dy, &s], &gx, vec![])?);
    Ok(g)
}

/// Gradient of `Reciprocal`.
fn vjp_reciprocal(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    _need: &[bool],
) -> Result<Grads, TrainError> {
    let Parts { y, gx, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
    let dy = need_dy(node, dys)?;
    let y2 = t.emit("Mul", &[&y, &y], &gx, vec![])?;
    let d = t.emit("Mul", &[&dy, &y2], &gx, vec![])?;
    g[0] = Some(t.emit("Neg", &[&d], &gx, vec![])?);
    Ok(g)
}

/// Gradient of `Identity`.
fn vjp_identity(
    _t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    _need: &[bool],
) -> Result<Grads, TrainError> {
    let mut g: Grads = vec![None; node.input.len()];
    g[0] = Some(need_dy(node, dys)?);
    Ok(g)
}

/// Shape inference of `Cast`.
fn infer_cast(c: &Infer<'_>) -> Inferred {
    let &Infer { attrs, .. } = c;
    let first = || c.first();
    let (s, _) = first()?;
    let to = ai(attrs, "to").ok_or("Cast needs `to`")?;
    let t = DataType::try_from(to as i32).map_err(|_| "bad Cast type".to_string())?;
    same(s, t)
}

/// Gradient of `Cast`.
fn vjp_cast(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    _need: &[bool],
) -> Result<Grads, TrainError> {
    let Parts { x, gx, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
    let dy = need_dy(node, dys)?;
    let to = t.dtype(&x).ok_or_else(|| bad(node, "unknown input type"))?;
    g[0] = Some(t.emit("Cast", &[&dy], &gx, vec![attr_int("to", to as i64)])?);
    Ok(g)
}

/// Shape inference of `Add`, `Sub`, `Mul`, `Div`, `Pow`, `Max`, `Min`, `Sum`.
fn infer_broadcast(c: &Infer<'_>) -> Inferred {
    let ins = &c.ins;
    let first = || c.first();
    let mut s = first()?.0;
    for (x, _) in &ins[1..] {
        s = broadcast(&s, x).ok_or_else(|| format!("shapes {s:?} and {x:?} do not broadcast"))?;
    }
    same(s, ins[0].1)
}

/// Gradient of `Add`, `Sub`, `Sum`.
fn vjp_add(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    need: &[bool],
) -> Result<Grads, TrainError> {
    let op = op_of(node).to_string();
    let Parts { ins, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
    let n = |i: usize| need.get(i).copied().unwrap_or(false);
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
    Ok(g)
}

/// Gradient of `Mul`.
fn vjp_mul(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    need: &[bool],
) -> Result<Grads, TrainError> {
    let Parts { ins, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
    let n = |i: usize| need.get(i).copied().unwrap_or(false);
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
    Ok(g)
}

/// Gradient of `Div`.
fn vjp_div(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    need: &[bool],
) -> Result<Grads, TrainError> {
    let Parts { ins, y, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
    let n = |i: usize| need.get(i).copied().unwrap_or(false);
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
    Ok(g)
}

/// Shape inference of `Equal`, `Greater`, `Less`, `GreaterOrEqual`, `LessOrEqual`, `And`, `Or`, `Not`.
fn infer_compare(c: &Infer<'_>) -> Inferred {
    let ins = &c.ins;
    let first = || c.first();
    let mut s = first()?.0;
    for (x, _) in &ins[1..] {
        s = broadcast(&s, x).ok_or_else(|| format!("shapes {s:?} and {x:?} do not broadcast"))?;
    }
    same(s, DataType::Bool)
}

/// Shape inference of `Where`.
fn infer_where(c: &Infer<'_>) -> Inferred {
    let ins = &c.ins;
    if ins.len() != 3 {
        return Err("Where needs 3 inputs".into());
    }
    let s = broadcast(&ins[0].0, &ins[1].0)
        .and_then(|s| broadcast(&s, &ins[2].0))
        .ok_or("Where inputs do not broadcast")?;
    same(s, ins[1].1)
}

/// Gradient of `Where`.
fn vjp_where(
    t: &mut dyn Builder,
    node: &NodeProto,
    dys: &[Option<String>],
    need: &[bool],
) -> Result<Grads, TrainError> {
    let Parts { ins, y, .. } = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
    let n = |i: usize| need.get(i).copied().unwrap_or(false);
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
        let ys = t.shape(&y)?;
        let w = expand(t, &w, &ys, &gname(&ins[i]))?;
        let s = t.shape(&ins[i])?;
        g[i] = Some(unbroadcast(t, &w, &s, &gname(&ins[i]))?);
    }
    Ok(g)
}

/// Shape inference of `Clip`.
fn infer_clip(c: &Infer<'_>) -> Inferred {
    let first = || c.first();
    let (x, t) = first()?;
    same(x, t)
}
