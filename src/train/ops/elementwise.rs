//! Element-wise ops: unary math, Cast, broadcasting arithmetic, comparisons, Where, Clip.

use super::*;
use crate::model::graph::attr_int;
use crate::model::onnx::tensor_proto::DataType;

/// The ops of this family: shape inference and gradient rule side by side.
pub(super) const RULES: &[Rule] = &[
    Rule {
        op: "Relu",
        infer: super::same_shape,
        vjp: Some(Vjp::Unary(vjp_relu)),
    },
    Rule {
        op: "Sigmoid",
        infer: super::same_shape,
        vjp: Some(Vjp::Unary(vjp_sigmoid)),
    },
    Rule {
        op: "Tanh",
        infer: super::same_shape,
        vjp: Some(Vjp::Unary(vjp_tanh)),
    },
    Rule {
        op: "Exp",
        infer: super::same_shape,
        vjp: Some(Vjp::Unary(vjp_exp)),
    },
    Rule {
        op: "Log",
        infer: super::same_shape,
        vjp: Some(Vjp::Unary(vjp_log)),
    },
    Rule {
        op: "Sqrt",
        infer: super::same_shape,
        vjp: Some(Vjp::Unary(vjp_sqrt)),
    },
    Rule {
        op: "Neg",
        infer: super::same_shape,
        vjp: Some(Vjp::Unary(vjp_neg)),
    },
    Rule {
        op: "Abs",
        infer: super::same_shape,
        vjp: Some(Vjp::Unary(vjp_abs)),
    },
    Rule {
        op: "Sign",
        infer: super::same_shape,
        vjp: None,
    },
    Rule {
        op: "Reciprocal",
        infer: super::same_shape,
        vjp: Some(Vjp::Unary(vjp_reciprocal)),
    },
    Rule {
        op: "Identity",
        infer: super::same_shape,
        vjp: Some(Vjp::Unary(vjp_identity)),
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
        vjp: Some(Vjp::Unary(vjp_cast)),
    },
    Rule {
        op: "Add",
        infer: infer_broadcast,
        vjp: Some(Vjp::Each(vjp_add)),
    },
    Rule {
        op: "Sub",
        infer: infer_broadcast,
        vjp: Some(Vjp::Each(vjp_add)),
    },
    Rule {
        op: "Mul",
        infer: infer_broadcast,
        vjp: Some(Vjp::Each(vjp_mul)),
    },
    Rule {
        op: "Div",
        infer: infer_broadcast,
        vjp: Some(Vjp::Each(vjp_div)),
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
        vjp: Some(Vjp::Each(vjp_add)),
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
        vjp: Some(Vjp::Each(vjp_where)),
    },
    Rule {
        op: "Clip",
        infer: super::same_shape,
        vjp: None,
    },
];

/// Gradient of `Relu`: `dy` where `y > 0`.
fn vjp_relu(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    let zero = t.scalar(0.0)?;
    let mask = t.emit("Greater", &[&p.y, &zero], &p.gx, vec![])?;
    t.emit("Where", &[&mask, dy, &zero], &p.gx, vec![])
}

/// Gradient of `Sigmoid`: `dy · y(1 − y)`.
fn vjp_sigmoid(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    let one = t.scalar(1.0)?;
    let om = t.emit("Sub", &[&one, &p.y], &p.gx, vec![])?;
    let d = t.emit("Mul", &[&p.y, &om], &p.gx, vec![])?;
    t.emit("Mul", &[dy, &d], &p.gx, vec![])
}

/// Gradient of `Tanh`: `dy · (1 − y²)`.
fn vjp_tanh(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    let one = t.scalar(1.0)?;
    let y2 = t.emit("Mul", &[&p.y, &p.y], &p.gx, vec![])?;
    let d = t.emit("Sub", &[&one, &y2], &p.gx, vec![])?;
    t.emit("Mul", &[dy, &d], &p.gx, vec![])
}

/// Gradient of `Exp`: `dy · y`.
fn vjp_exp(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    t.emit("Mul", &[dy, &p.y], &p.gx, vec![])
}

/// Gradient of `Log`: `dy / x`.
fn vjp_log(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    t.emit("Div", &[dy, &p.x], &p.gx, vec![])
}

/// Gradient of `Sqrt`: `dy / y · ½`.
fn vjp_sqrt(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    let half = t.scalar(0.5)?;
    let d = t.emit("Div", &[dy, &p.y], &p.gx, vec![])?;
    t.emit("Mul", &[&d, &half], &p.gx, vec![])
}

/// Gradient of `Neg`: `−dy`.
fn vjp_neg(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    t.emit("Neg", &[dy], &p.gx, vec![])
}

/// Gradient of `Abs`: `dy · sign(x)`.
fn vjp_abs(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    let s = t.emit("Sign", &[&p.x], &p.gx, vec![])?;
    t.emit("Mul", &[dy, &s], &p.gx, vec![])
}

/// Gradient of `Reciprocal`: `−dy · y²`.
fn vjp_reciprocal(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    let y2 = t.emit("Mul", &[&p.y, &p.y], &p.gx, vec![])?;
    let d = t.emit("Mul", &[dy, &y2], &p.gx, vec![])?;
    t.emit("Neg", &[&d], &p.gx, vec![])
}

/// Gradient of `Identity`: `dy` itself.
fn vjp_identity(_t: &mut dyn Builder, _p: &Parts<'_>, dy: &str) -> Dx {
    Ok(dy.to_string())
}

/// Shape inference of `Cast`.
fn infer_cast(c: &Infer<'_>) -> Inferred {
    let &Infer { attrs, .. } = c;
    let (s, _) = c.first()?;
    let to = ai(attrs, "to").ok_or("Cast needs `to`")?;
    let t = DataType::try_from(to as i32).map_err(|_| "bad Cast type".to_string())?;
    same(s, t)
}

/// Gradient of `Cast`: `dy` cast back to the input's type.
fn vjp_cast(t: &mut dyn Builder, p: &Parts<'_>, dy: &str) -> Dx {
    let to = t.dtype(&p.x).ok_or_else(|| p.bad("unknown input type"))?;
    t.emit("Cast", &[dy], &p.gx, vec![attr_int("to", to as i64)])
}

/// Shape inference of `Add`, `Sub`, `Mul`, `Div`, `Pow`, `Max`, `Min`, `Sum`.
fn infer_broadcast(c: &Infer<'_>) -> Inferred {
    same(broadcast_all(c)?, c.ins[0].1)
}

/// Gradient of `Add`, `Sub`, `Sum`: `dy` summed down to each input's shape (negated for the
/// subtrahend).
fn vjp_add(t: &mut dyn Builder, p: &Parts<'_>, dy: &str, i: usize) -> Dx {
    let input = &p.ins[i];
    let d = unbroadcast_to(t, dy, input)?;
    if p.op() == "Sub" && i == 1 {
        t.emit("Neg", &[&d], &gname(input), vec![])
    } else {
        Ok(d)
    }
}

/// Gradient of `Mul`: `dy` times the other factor, summed down to the input's shape.
fn vjp_mul(t: &mut dyn Builder, p: &Parts<'_>, dy: &str, i: usize) -> Dx {
    let other = &p.ins[1 - i];
    let d = t.emit("Mul", &[dy, other], &gname(&p.ins[i]), vec![])?;
    unbroadcast_to(t, &d, &p.ins[i])
}

/// Gradient of `Div` (`y = a / b`): `dy / b` for `a`, `−dy · y / b` for `b`, each summed down to
/// its input's shape.
fn vjp_div(t: &mut dyn Builder, p: &Parts<'_>, dy: &str, i: usize) -> Dx {
    let (a, b) = (&p.ins[0], &p.ins[1]);
    if i == 0 {
        let q = t.emit("Div", &[dy, b], &gname(a), vec![])?;
        return unbroadcast_to(t, &q, a);
    }
    let q = t.emit("Div", &[&p.y, b], &gname(b), vec![])?;
    let d = t.emit("Mul", &[dy, &q], &gname(b), vec![])?;
    let d = t.emit("Neg", &[&d], &gname(b), vec![])?;
    unbroadcast_to(t, &d, b)
}

/// Shape inference of `Equal`, `Greater`, `Less`, `GreaterOrEqual`, `LessOrEqual`, `And`, `Or`, `Not`.
fn infer_compare(c: &Infer<'_>) -> Inferred {
    same(broadcast_all(c)?, DataType::Bool)
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

/// Gradient of `Where`: `dy` where the condition picked the input, zero elsewhere, summed down
/// to the input's shape. The condition (input 0, boolean) has none.
fn vjp_where(t: &mut dyn Builder, p: &Parts<'_>, dy: &str, i: usize) -> Dx {
    let zero = t.scalar(0.0)?;
    let (cond, input) = (&p.ins[0], &p.ins[i]);
    let picked = match i {
        1 => [cond.as_str(), dy, &zero],
        2 => [cond.as_str(), &zero, dy],
        _ => return Err(p.bad("the condition of Where has no gradient")),
    };
    let w = t.emit("Where", &picked, &gname(input), vec![])?;
    let ys = t.shape(&p.y)?;
    let w = expand(t, &w, &ys, &gname(input))?;
    unbroadcast_to(t, &w, input)
}
