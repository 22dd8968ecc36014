//! Losses of the pretext tasks, written as primitive ONNX ops on the tape, so their gradients come
//! from the same per-op rules every other part of the model uses (and are checked the same way).
//!
//! | loss | prediction | targets (graph inputs) | metric |
//! | --- | --- | --- | --- |
//! | `cross_entropy` | logits `[B, K, …]` | `labels` int64 `[B, …]` | `accuracy` |
//! | `soft_cross_entropy` | logits `[B, K, …]` | `targets` float `[B, K, …]` (each position sums to 1) | `accuracy` (vs. the most likely target class) |
//! | `masked_l2` / `masked_l1` | `[B, …]` | `targets` like the prediction, `mask` float broadcastable to it | — |
//! | `nt_xent` | embeddings `[B·2, D]`, rows 2i and 2i+1 are the two views of sample i | — | `accuracy` (the other view is the nearest row) |
//!
//! Guarantees:
//! - Every loss is a scalar mean: over samples (and positions, for dense predictions), or, for the
//!   masked losses, over the mask's total weight — `Σ mask·err / Σ mask` with the mask broadcast to
//!   the prediction, so a weighted border (context encoders' overlap) counts as intended. An
//!   all-zero mask gives 0, not NaN.
//! - Class weights (colorization's rebalancing, Zhang et al. 2016) weight each position by the
//!   weight of its most likely target class, as in the paper.

use serde::{Deserialize, Serialize};

use super::TrainError;
use super::tape::{Shape, Tape};
use crate::model::graph::{attr_int, attr_ints};
use crate::model::onnx::tensor_proto::DataType;

/// Name of the hard-label target input.
pub const LABELS_INPUT: &str = "labels";
/// Name of the dense / soft target input.
pub const TARGETS_INPUT: &str = "targets";
/// Name of the mask input of the masked losses.
pub const MASK_INPUT: &str = "mask";

/// The loss a pretext task trains with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Loss {
    /// Softmax cross-entropy with hard labels (rotation, jigsaw, relative patch location).
    CrossEntropy,
    /// Softmax cross-entropy with soft targets and optional per-class weights (colorization bins).
    SoftCrossEntropy {
        #[serde(default)]
        class_weights: Option<Vec<f32>>,
    },
    /// Σ mask·(pred − target)² / Σ mask (inpainting, masked patches).
    MaskedL2 {
        /// Per-sample shape of the mask; `None`: the prediction's. Must broadcast to it.
        #[serde(default)]
        mask_shape: Option<Vec<usize>>,
    },
    /// Σ mask·|pred − target| / Σ mask.
    MaskedL1 {
        #[serde(default)]
        mask_shape: Option<Vec<usize>>,
    },
    /// NT-Xent / InfoNCE over two views (SimCLR), temperature τ.
    NtXent { temperature: f32 },
}

/// A graph input a loss reads (besides the prediction).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetInput {
    pub name: &'static str,
    pub dtype: DataType,
    pub shape: Shape,
}

/// What a loss emission returns: the scalar loss and named scalar metrics.
#[derive(Debug, Clone)]
pub struct LossOutput {
    pub loss: String,
    pub metrics: Vec<(String, String)>,
}

impl Loss {
    /// Checks that the loss fits a prediction of full shape `pred` and returns the inputs it needs.
    pub fn targets(&self, pred: &[usize], float: DataType) -> Result<Vec<TargetInput>, TrainError> {
        let err = |m: String| TrainError::Spec(m);
        match self {
            Loss::CrossEntropy => {
                if pred.len() < 2 {
                    return Err(err(format!(
                        "cross_entropy needs logits [B, K, ...], the head gives {pred:?}"
                    )));
                }
                let mut labels = vec![pred[0]];
                labels.extend_from_slice(&pred[2..]);
                Ok(vec![TargetInput {
                    name: LABELS_INPUT,
                    dtype: DataType::Int64,
                    shape: labels,
                }])
            }
            Loss::SoftCrossEntropy { class_weights } => {
                if pred.len() < 2 {
                    return Err(err(format!(
                        "soft_cross_entropy needs logits [B, K, ...], the head gives {pred:?}"
                    )));
                }
                if let Some(w) = class_weights
                    && (w.len() != pred[1] || w.iter().any(|v| !v.is_finite() || *v < 0.0))
                {
                    return Err(err(format!(
                        "soft_cross_entropy class_weights: {} finite non-negative values expected (one per class), found {}",
                        pred[1],
                        w.len()
                    )));
                }
                Ok(vec![TargetInput {
                    name: TARGETS_INPUT,
                    dtype: float,
                    shape: pred.to_vec(),
                }])
            }
            Loss::MaskedL2 { mask_shape } | Loss::MaskedL1 { mask_shape } => {
                let mut mask = vec![pred[0]];
                match mask_shape {
                    Some(m) => mask.extend_from_slice(m),
                    None => mask.extend_from_slice(&pred[1..]),
                }
                if super::ops::broadcast(&mask, pred).as_deref() != Some(pred)
                    || mask.len() != pred.len()
                {
                    return Err(err(format!(
                        "mask shape {mask:?} does not broadcast to the prediction {pred:?}"
                    )));
                }
                Ok(vec![
                    TargetInput {
                        name: TARGETS_INPUT,
                        dtype: float,
                        shape: pred.to_vec(),
                    },
                    TargetInput {
                        name: MASK_INPUT,
                        dtype: float,
                        shape: mask,
                    },
                ])
            }
            Loss::NtXent { temperature } => {
                if pred.len() != 2 || pred[0] < 4 || !pred[0].is_multiple_of(2) {
                    return Err(err(format!(
                        "nt_xent needs embeddings [B·2, D] with B ≥ 2, the head gives {pred:?}"
                    )));
                }
                if !(temperature.is_finite() && *temperature > 0.0) {
                    return Err(err(format!(
                        "nt_xent temperature must be positive, found {temperature}"
                    )));
                }
                Ok(Vec::new())
            }
        }
    }

    /// Appends the loss (recorded for differentiation) and its metrics (not recorded).
    /// `targets` are the names of the inputs [`Loss::targets`] asked for, in that order.
    pub fn emit(
        &self,
        t: &mut Tape,
        pred: &str,
        targets: &[String],
    ) -> Result<LossOutput, TrainError> {
        match self {
            Loss::CrossEntropy => cross_entropy(t, pred, &targets[0]),
            Loss::SoftCrossEntropy { class_weights } => {
                soft_cross_entropy(t, pred, &targets[0], class_weights.as_deref())
            }
            Loss::MaskedL2 { .. } => masked(t, pred, &targets[0], &targets[1], false),
            Loss::MaskedL1 { .. } => masked(t, pred, &targets[0], &targets[1], true),
            Loss::NtXent { temperature } => nt_xent(t, pred, *temperature),
        }
    }
}

fn mean_all(t: &mut Tape, x: &str, base: &str) -> Result<String, TrainError> {
    t.node("ReduceMean", &[x], base, vec![attr_int("keepdims", 0)])
}

/// Fraction of positions where `ArgMax(pred, 1)` equals `labels` (int64, `pred` without axis 1).
fn accuracy(t: &mut Tape, pred: &str, labels: &str) -> Result<String, TrainError> {
    let am = t.emit(
        "ArgMax",
        &[pred],
        "metric.argmax",
        vec![attr_int("axis", 1), attr_int("keepdims", 0)],
    )?;
    let eq = t.emit("Equal", &[&am, labels], "metric.hit", vec![])?;
    let f = t.float();
    let hit = t.emit("Cast", &[&eq], "metric.hit", vec![attr_int("to", f as i64)])?;
    t.emit(
        "ReduceMean",
        &[&hit],
        "metric.accuracy.value",
        vec![attr_int("keepdims", 0)],
    )
}

/// Mean over positions of `−log softmax(pred)[label]`, class axis 1.
pub fn cross_entropy(t: &mut Tape, pred: &str, labels: &str) -> Result<LossOutput, TrainError> {
    let logp = t.node(
        "LogSoftmax",
        &[pred],
        "loss.logp",
        vec![attr_int("axis", 1)],
    )?;
    let axis = t.ints1("axes", &[1])?;
    let idx = t.emit("Unsqueeze", &[labels, &axis], "loss.index", vec![])?;
    let picked = t.node(
        "GatherElements",
        &[&logp, &idx],
        "loss.picked",
        vec![attr_int("axis", 1)],
    )?;
    let mean = mean_all(t, &picked, "loss.mean")?;
    let loss = t.node("Neg", &[&mean], "loss.value", vec![])?;
    let acc = accuracy(t, pred, labels)?;
    Ok(LossOutput {
        loss,
        metrics: vec![("accuracy".into(), acc)],
    })
}

fn soft_cross_entropy(
    t: &mut Tape,
    pred: &str,
    targets: &str,
    weights: Option<&[f32]>,
) -> Result<LossOutput, TrainError> {
    let logp = t.node(
        "LogSoftmax",
        &[pred],
        "loss.logp",
        vec![attr_int("axis", 1)],
    )?;
    let tl = t.node("Mul", &[targets, &logp], "loss.tlogp", vec![])?;
    let axis = t.ints1("axes", &[1])?;
    let per = t.node(
        "ReduceSum",
        &[&tl, &axis],
        "loss.per_position",
        vec![attr_int("keepdims", 0)],
    )?;
    let target_class = t.emit(
        "ArgMax",
        &[targets],
        "loss.target_class",
        vec![attr_int("axis", 1), attr_int("keepdims", 0)],
    )?;
    let per = match weights {
        Some(w) => {
            let k = w.len();
            let wv: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
            let wc = t.const_float("loss.class_weights", &[k], &wv)?;
            let wp = t.emit(
                "Gather",
                &[&wc, &target_class],
                "loss.weight",
                vec![attr_int("axis", 0)],
            )?;
            t.node("Mul", &[&per, &wp], "loss.weighted", vec![])?
        }
        None => per,
    };
    let mean = mean_all(t, &per, "loss.mean")?;
    let loss = t.node("Neg", &[&mean], "loss.value", vec![])?;
    let acc = accuracy(t, pred, &target_class)?;
    Ok(LossOutput {
        loss,
        metrics: vec![("accuracy".into(), acc)],
    })
}

fn masked(
    t: &mut Tape,
    pred: &str,
    targets: &str,
    mask: &str,
    l1: bool,
) -> Result<LossOutput, TrainError> {
    let d = t.node("Sub", &[pred, targets], "loss.diff", vec![])?;
    let e = if l1 {
        t.node("Abs", &[&d], "loss.err", vec![])?
    } else {
        t.node("Mul", &[&d, &d], "loss.err", vec![])?
    };
    let me = t.node("Mul", &[&e, mask], "loss.masked", vec![])?;
    let total = t.node(
        "ReduceSum",
        &[&me],
        "loss.total",
        vec![attr_int("keepdims", 0)],
    )?;
    // Σ of the mask broadcast to the prediction = Σ mask · (elements each mask value covers).
    let reps = t.numel(pred)? as f64 / t.numel(mask)? as f64;
    let msum = t.emit(
        "ReduceSum",
        &[mask],
        "loss.weight",
        vec![attr_int("keepdims", 0)],
    )?;
    let r = t.scalar(reps)?;
    let msum = t.emit("Mul", &[&msum, &r], "loss.weight", vec![])?;
    let tiny = t.scalar(1e-12)?;
    let denom = t.emit("Max", &[&msum, &tiny], "loss.weight", vec![])?;
    let loss = t.node("Div", &[&total, &denom], "loss.value", vec![])?;
    Ok(LossOutput {
        loss,
        metrics: Vec::new(),
    })
}

fn nt_xent(t: &mut Tape, z: &str, temperature: f32) -> Result<LossOutput, TrainError> {
    let zs = t.shape(z)?;
    let b = zs[0];
    let sq = t.node("Mul", &[z, z], "loss.sq", vec![])?;
    let axis = t.ints1("axes", &[1])?;
    let ss = t.node(
        "ReduceSum",
        &[&sq, &axis],
        "loss.sumsq",
        vec![attr_int("keepdims", 1)],
    )?;
    let eps = t.scalar(1e-12)?;
    let sse = t.node("Add", &[&ss, &eps], "loss.sumsq", vec![])?;
    let norm = t.node("Sqrt", &[&sse], "loss.norm", vec![])?;
    let u = t.node("Div", &[z, &norm], "loss.unit", vec![])?;
    let ut = t.node(
        "Transpose",
        &[&u],
        "loss.unit_t",
        vec![attr_ints("perm", &[1, 0])],
    )?;
    let sim = t.node("MatMul", &[&u, &ut], "loss.sim", vec![])?;
    let inv_t = t.scalar(1.0 / f64::from(temperature))?;
    let logits = t.node("Mul", &[&sim, &inv_t], "loss.logits", vec![])?;
    // A row is never its own candidate: a large negative on the diagonal.
    let mut diag = vec![0.0f64; b * b];
    for i in 0..b {
        diag[i * b + i] = -1e9;
    }
    let dm = t.const_float("loss.self_mask", &[b, b], &diag)?;
    let logits = t.node("Add", &[&logits, &dm], "loss.logits", vec![])?;
    let partner: Vec<i64> = (0..b as i64).map(|i| i ^ 1).collect();
    let labels = t.const_i64("loss.partner", &[b], &partner)?;
    cross_entropy(t, &logits, &labels)
}
