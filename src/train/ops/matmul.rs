//! Matrix products: Gemm and MatMul.

use super::*;
use crate::model::graph::attr_int;

/// The ops of this family: shape inference and gradient rule side by side.
pub(super) const RULES: &[Rule] = &[
    Rule {
        op: "Gemm",
        infer: infer_gemm,
        vjp: Some(Vjp::Each(vjp_gemm)),
    },
    Rule {
        op: "MatMul",
        infer: infer_mat_mul,
        vjp: Some(Vjp::Each(vjp_mat_mul)),
    },
];

/// Shape inference of `Gemm`.
fn infer_gemm(c: &Infer<'_>) -> Inferred {
    let &Infer { attrs, ref ins, .. } = c;
    let (a, t) = c.first()?;
    let b = &ins.get(1).ok_or("Gemm needs B")?.0;
    if a.len() != 2 || b.len() != 2 {
        return Err("Gemm needs matrices".into());
    }
    let (m, k) = if ai(attrs, "transA").unwrap_or(0) != 0 {
        (a[1], a[0])
    } else {
        (a[0], a[1])
    };
    let (k2, n) = if ai(attrs, "transB").unwrap_or(0) != 0 {
        (b[1], b[0])
    } else {
        (b[0], b[1])
    };
    if k != k2 {
        return Err(format!("Gemm inner sizes differ: A {a:?}, B {b:?}"));
    }
    if let Some((c, _)) = ins.get(2)
        && broadcast(&[m, n], c) != Some(vec![m, n])
    {
        return Err(format!("Gemm C {c:?} does not broadcast to [{m}, {n}]"));
    }
    same(vec![m, n], t)
}

/// Gradient of `Gemm` (`Y = op(A)·op(B) + C`, α = β = 1): `dy·op(B)ᵀ` and `op(A)ᵀ·dy`
/// arranged for the transposition flags, `dy` summed down to C's shape.
fn vjp_gemm(t: &mut dyn Builder, p: &Parts<'_>, dy: &str, i: usize) -> Dx {
    let node = p.node;
    let alpha = node.attr("alpha").and_then(|a| a.f).unwrap_or(1.0);
    let beta = node.attr("beta").and_then(|a| a.f).unwrap_or(1.0);
    if alpha != 1.0 || beta != 1.0 {
        return Err(p.bad("Gemm with alpha or beta other than 1 has no rule"));
    }
    let ta = attr_i(node, "transA").unwrap_or(0) != 0;
    let tb = attr_i(node, "transB").unwrap_or(0) != 0;
    let (a, b) = (&p.ins[0], &p.ins[1]);
    let gemm = |t: &mut dyn Builder, l: &str, r: &str, tl: bool, tr: bool, base: &str| {
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
    match i {
        0 => {
            let ga = gname(a);
            match (ta, tb) {
                (false, false) => gemm(t, dy, b, false, true, &ga),
                (false, true) => gemm(t, dy, b, false, false, &ga),
                (true, false) => gemm(t, b, dy, false, true, &ga),
                (true, true) => gemm(t, b, dy, true, true, &ga),
            }
        }
        1 => {
            let gb = gname(b);
            match (ta, tb) {
                (false, false) => gemm(t, a, dy, true, false, &gb),
                (false, true) => gemm(t, dy, a, true, false, &gb),
                (true, false) => gemm(t, a, dy, false, false, &gb),
                (true, true) => gemm(t, dy, a, true, true, &gb),
            }
        }
        _ => unbroadcast_to(t, dy, &p.ins[2]),
    }
}

/// Shape inference of `MatMul`.
fn infer_mat_mul(c: &Infer<'_>) -> Inferred {
    let ins = &c.ins;
    let (a, t) = c.first()?;
    let b = &ins.get(1).ok_or("MatMul needs B")?.0;
    if a.len() < 2 || b.len() < 2 {
        return Err("MatMul operands of rank < 2 are not supported".into());
    }
    let (m, k) = (a[a.len() - 2], a[a.len() - 1]);
    let (k2, n) = (b[b.len() - 2], b[b.len() - 1]);
    if k != k2 {
        return Err(format!("MatMul inner sizes differ: {a:?} x {b:?}"));
    }
    let mut batch = broadcast(&a[..a.len() - 2], &b[..b.len() - 2])
        .ok_or("MatMul batch dims do not broadcast")?;
    batch.extend([m, n]);
    same(batch, t)
}

/// Gradient of `MatMul` (`Y = A·B`): `dy·Bᵀ` and `Aᵀ·dy`, summed down over broadcast batch axes.
fn vjp_mat_mul(t: &mut dyn Builder, p: &Parts<'_>, dy: &str, i: usize) -> Dx {
    let (a, b) = (&p.ins[0], &p.ins[1]);
    let swap = |r: usize| -> Vec<i64> {
        let mut p: Vec<i64> = (0..r as i64).collect();
        p.swap(r - 2, r - 1);
        p
    };
    if i == 0 {
        let rank = t.shape(b)?.len();
        let bt = transpose(t, b, &swap(rank), &gname(b))?;
        let da = t.emit("MatMul", &[dy, &bt], &gname(a), vec![])?;
        unbroadcast_to(t, &da, a)
    } else {
        let rank = t.shape(a)?.len();
        let at = transpose(t, a, &swap(rank), &gname(a))?;
        let db = t.emit("MatMul", &[&at, dy], &gname(b), vec![])?;
        unbroadcast_to(t, &db, b)
    }
}
