//! Optimizers written into the train-step graph: SGD with momentum and weight decay, and AdamW with
//! bias correction and decoupled weight decay. The learning rate and the step count are graph
//! inputs, so warm-up and cosine schedules are computed outside and cost nothing to change.
//!
//! Guarantees (the update rules are PyTorch's, `torch.optim.SGD` / `torch.optim.AdamW`, amsgrad
//! off, so a run can be compared with a PyTorch reference step for step):
//! - SGD: `g ← grad + wd·p; v ← μ·v + g; p ← p − lr·(nesterov ? g + μ·v : v)` (a zero buffer
//!   makes the first step `v = g`, as PyTorch's lazily created buffer does).
//! - AdamW, with `t = step + 1`: `p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
//!   p ← p − (lr / (1−β1ᵗ)) · m / (√v / √(1−β2ᵗ) + ε)`.
//! - Weight decay applies to every trainable tensor (PyTorch's default parameter group); BatchNorm
//!   running statistics are not trainable and get no optimizer state.

use serde::{Deserialize, Serialize};

use super::TrainError;
use super::tape::Tape;
use crate::model::graph::attr_int;

/// The optimizer of a train step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Optimizer {
    Sgd {
        #[serde(default)]
        momentum: f32,
        #[serde(default)]
        weight_decay: f32,
        #[serde(default)]
        nesterov: bool,
    },
    #[serde(rename = "adamw")]
    AdamW {
        #[serde(default = "default_beta1")]
        beta1: f32,
        #[serde(default = "default_beta2")]
        beta2: f32,
        #[serde(default = "default_eps")]
        eps: f32,
        #[serde(default = "default_wd")]
        weight_decay: f32,
    },
}

fn default_beta1() -> f32 {
    0.9
}
fn default_beta2() -> f32 {
    0.999
}
fn default_eps() -> f32 {
    1e-8
}
fn default_wd() -> f32 {
    0.01
}

/// Graph-wide values the per-tensor updates share (computed once per step).
pub(crate) struct Shared {
    lr: String,
    /// AdamW: (1 − lr·wd, lr / (1 − β1ᵗ), √(1 − β2ᵗ))
    adam: Option<(String, String, String)>,
}

impl Optimizer {
    /// SGD with momentum `momentum` and weight decay `weight_decay`.
    pub fn sgd(momentum: f32, weight_decay: f32) -> Self {
        Optimizer::Sgd {
            momentum,
            weight_decay,
            nesterov: false,
        }
    }

    /// AdamW with PyTorch's default betas and epsilon.
    pub fn adamw(weight_decay: f32) -> Self {
        Optimizer::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }

    /// Names of the per-parameter state tensors, each shaped like its parameter.
    pub fn slots(&self) -> &'static [&'static str] {
        match self {
            Optimizer::Sgd { momentum, .. } if *momentum == 0.0 => &[],
            Optimizer::Sgd { .. } => &["momentum"],
            Optimizer::AdamW { .. } => &["exp_avg", "exp_avg_sq"],
        }
    }

    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Spec(m));
        match *self {
            Optimizer::Sgd {
                momentum,
                weight_decay,
                nesterov,
            } => {
                let ok = (0.0..1.0).contains(&momentum)
                    && weight_decay >= 0.0
                    && weight_decay.is_finite();
                if !ok {
                    return bad(format!(
                        "sgd needs 0 ≤ momentum < 1 and weight_decay ≥ 0, found {momentum}, {weight_decay}"
                    ));
                }
                if nesterov && momentum == 0.0 {
                    return bad("sgd nesterov needs a momentum > 0".into());
                }
            }
            Optimizer::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let ok = (0.0..1.0).contains(&beta1)
                    && (0.0..1.0).contains(&beta2)
                    && eps > 0.0
                    && eps.is_finite()
                    && weight_decay >= 0.0
                    && weight_decay.is_finite();
                if !ok {
                    return bad(format!(
                        "adamw needs betas in [0, 1), eps > 0, weight_decay ≥ 0; found {beta1}, {beta2}, {eps}, {weight_decay}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Emits the step-wide scalars from the `lr` (float, shape []) and `step` (int64, shape [])
    /// inputs.
    pub(crate) fn shared(&self, t: &mut Tape, lr: &str, step: &str) -> Result<Shared, TrainError> {
        let adam = match *self {
            Optimizer::AdamW {
                beta1,
                beta2,
                weight_decay,
                ..
            } => {
                let f = t.float();
                let s = t.emit("Cast", &[step], "opt.t", vec![attr_int("to", f as i64)])?;
                let one = t.scalar(1.0)?;
                let tt = t.emit("Add", &[&s, &one], "opt.t", vec![])?;
                let b1 = t.scalar(f64::from(beta1))?;
                let b2 = t.scalar(f64::from(beta2))?;
                let p1 = t.emit("Pow", &[&b1, &tt], "opt.beta1_t", vec![])?;
                let p2 = t.emit("Pow", &[&b2, &tt], "opt.beta2_t", vec![])?;
                let bc1 = t.emit("Sub", &[&one, &p1], "opt.bias_correction1", vec![])?;
                let bc2 = t.emit("Sub", &[&one, &p2], "opt.bias_correction2", vec![])?;
                let sbc2 = t.emit("Sqrt", &[&bc2], "opt.bias_correction2_sqrt", vec![])?;
                let step_size = t.emit("Div", &[lr, &bc1], "opt.step_size", vec![])?;
                let wd = t.scalar(f64::from(weight_decay))?;
                let lwd = t.emit("Mul", &[lr, &wd], "opt.decay", vec![])?;
                let decay = t.emit("Sub", &[&one, &lwd], "opt.decay", vec![])?;
                Some((decay, step_size, sbc2))
            }
            Optimizer::Sgd { .. } => None,
        };
        Ok(Shared {
            lr: lr.to_string(),
            adam,
        })
    }

    /// Emits the update of one tensor; returns the new parameter and the new state (in
    /// [`Optimizer::slots`] order).
    pub(crate) fn update(
        &self,
        t: &mut Tape,
        sh: &Shared,
        param: &str,
        grad: &str,
        state: &[String],
    ) -> Result<(String, Vec<String>), TrainError> {
        let base = format!("update.{param}");
        match *self {
            Optimizer::Sgd {
                momentum,
                weight_decay,
                nesterov,
            } => {
                let g = if weight_decay > 0.0 {
                    let wd = t.scalar(f64::from(weight_decay))?;
                    let d = t.emit("Mul", &[param, &wd], &base, vec![])?;
                    t.emit("Add", &[grad, &d], &base, vec![])?
                } else {
                    grad.to_string()
                };
                let (dir, new_state) = if momentum > 0.0 {
                    let mu = t.scalar(f64::from(momentum))?;
                    let mv = t.emit("Mul", &[&state[0], &mu], &base, vec![])?;
                    let v = t.emit("Add", &[&mv, &g], &base, vec![])?;
                    let dir = if nesterov {
                        let mv2 = t.emit("Mul", &[&v, &mu], &base, vec![])?;
                        t.emit("Add", &[&g, &mv2], &base, vec![])?
                    } else {
                        v.clone()
                    };
                    (dir, vec![v])
                } else {
                    (g, Vec::new())
                };
                let stepv = t.emit("Mul", &[&dir, &sh.lr], &base, vec![])?;
                let p = t.emit("Sub", &[param, &stepv], &base, vec![])?;
                Ok((p, new_state))
            }
            Optimizer::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let (decay, step_size, sbc2) = sh
                    .adam
                    .clone()
                    .ok_or_else(|| TrainError::Spec("adamw scalars missing".into()))?;
                let p1 = if weight_decay > 0.0 {
                    t.emit("Mul", &[param, &decay], &base, vec![])?
                } else {
                    param.to_string()
                };
                let b1 = t.scalar(f64::from(beta1))?;
                let ob1 = t.scalar(1.0 - f64::from(beta1))?;
                let b2 = t.scalar(f64::from(beta2))?;
                let ob2 = t.scalar(1.0 - f64::from(beta2))?;
                let a = t.emit("Mul", &[&state[0], &b1], &base, vec![])?;
                let b = t.emit("Mul", &[grad, &ob1], &base, vec![])?;
                let m = t.emit("Add", &[&a, &b], &base, vec![])?;
                let g2 = t.emit("Mul", &[grad, grad], &base, vec![])?;
                let a = t.emit("Mul", &[&state[1], &b2], &base, vec![])?;
                let b = t.emit("Mul", &[&g2, &ob2], &base, vec![])?;
                let v = t.emit("Add", &[&a, &b], &base, vec![])?;
                let sv = t.emit("Sqrt", &[&v], &base, vec![])?;
                let e = t.scalar(f64::from(eps))?;
                let den = t.emit("Div", &[&sv, &sbc2], &base, vec![])?;
                let den = t.emit("Add", &[&den, &e], &base, vec![])?;
                let q = t.emit("Div", &[&m, &den], &base, vec![])?;
                let s = t.emit("Mul", &[&q, &step_size], &base, vec![])?;
                let p = t.emit("Sub", &[&p1, &s], &base, vec![])?;
                Ok((p, vec![m, v]))
            }
        }
    }
}
