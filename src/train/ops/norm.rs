//! BatchNorm: the inference op (`BatchNormalization`, running statistics, not differentiated)
//! and the fused training-mode BatchNorm, forward and backward side by side.

use super::*;
use crate::model::graph::{attr_int, attr_ints};
use crate::train::TrainError;

/// What the backward pass of a fused training-mode BatchNorm needs (see [`batch_norm_backward`]).
#[derive(Debug, Clone)]
pub(crate) struct BnRecord {
    pub x: String,
    pub gamma: String,
    pub beta: String,
    pub y: String,
    /// x − batch mean, `[N, C, H, W]`.
    pub xc: String,
    /// 1/sqrt(var + eps), `[1, C, 1, 1]`.
    pub inv: String,
    /// inv · gamma, `[1, C, 1, 1]`.
    pub scale: String,
    /// N·H·W: the number of values each channel's statistics average over.
    pub count: usize,
    pub channels: usize,
}

/// The ops of this family: shape inference and gradient rule side by side.
pub(super) const RULES: &[Rule] = &[Rule {
    op: "BatchNormalization",
    infer: super::same_shape,
    vjp: None,
}];

/// Training-mode BatchNorm over every axis but 1 (`[N, C, …]`): normalises with the batch's
/// statistics and returns `(y, new_running_mean, new_running_var)`. Running statistics follow
/// PyTorch: `new = (1 − momentum)·old + momentum·batch`, the variance unbiased (·M/(M−1)).
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_norm_train(
    t: &mut dyn Builder,
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
    // old·(1 − momentum) + batch·w
    let update = |t: &mut dyn Builder, old: &str, batch: &str, w: &str, name: &str| {
        let base = format!("{base}.{name}");
        let a = t.emit("Mul", &[old, &keep], &base, vec![])?;
        let b = t.emit("Mul", &[batch, w], &base, vec![])?;
        t.emit("Add", &[&a, &b], &base, vec![])
    };
    let new_mean = update(t, running_mean, &mean_c, &m, "running_mean")?;
    let new_var = update(t, running_var, &var_c, &unbias, "running_var")?;
    Ok((y, new_mean, new_var))
}

/// The fused BatchNorm backward: with g = dy and x̂ = xc·inv,
/// dβ = Σg, dγ = Σ g·x̂, dx = γ·inv·(g − Σg/M − x̂·Σ(g·x̂)/M), sums over every axis but 1.
pub(super) fn batch_norm_backward(
    t: &mut dyn Builder,
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
