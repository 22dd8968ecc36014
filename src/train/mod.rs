//! Training on stock ONNX Runtime: sslpipe compiles its own train step.
//!
//! From a model described in Rust ([`TrainSpec`]: the built-in encoder's layers, a pretext head
//! given as a list of [`crate::model::Layer`]s, a [`Loss`] and an [`Optimizer`]) this module emits **one**
//! ONNX graph of standard `ai.onnx` operators (opset 17) that maps
//! `(parameters, optimizer state, batch, targets, lr, step)` to
//! `(loss, metrics, new parameters, new optimizer state)`. Any ONNX Runtime build runs it, with
//! any execution provider; [`Trainer`] runs it step after step with the parameters kept in
//! reusable buffers, and [`checkpoint`] saves and restores a run exactly.
//!
//! How the pieces fit:
//! - [`tape`]: a `GraphBuilder` that knows every tensor's static shape and records the forward
//!   nodes a backward pass must walk.
//! - [`ops`]: every ONNX op the graphs use, by family, with its shape inference and its
//!   vector-Jacobian rule side by side (plus the fused training-mode BatchNorm).
//! - [`autodiff`]: reverse-mode differentiation over the recorded nodes; gradients of a tensor
//!   read by several nodes are summed.
//! - [`net`]: the model description and its one emission ([`Network::emit`], training or
//!   inference mode) that the train step, the evaluation step and both forward exports share.
//! - [`loss`], [`optim`]: losses written as primitive ops (so their gradients come from the same
//!   tested rules), and SGD / AdamW written into the graph.
//! - [`step`]: assembles the train-step graph and names its inputs and outputs ([`Signature`]).
//!
//! Guarantees:
//! - Graphs are built for one batch size (the spec's `batch_size`): every shape is static, so a
//!   mistake in a rule is a build-time [`TrainError`] naming the node, never a runtime surprise,
//!   and ONNX Runtime plans memory once. Pipelines drop the last partial batch while training.
//! - Every rule is checked against finite differences (see `tests/`), and a whole step against an
//!   independent numpy implementation (`scripts/dev/train_reference.py`).
//! - Emission is deterministic: the same spec gives the same bytes.

pub mod autodiff;
pub mod checkpoint;
pub mod evaluator;
pub mod loss;
pub mod net;
pub mod ops;
pub mod optim;
pub mod step;
pub mod tape;
pub mod trainer;

#[cfg(test)]
mod tests;

use thiserror::Error;

use crate::model::ModelError;
use crate::runtime::RuntimeError;

pub use crate::model::Layer;
pub use checkpoint::{Checkpoint, CheckpointMeta};
pub use evaluator::Evaluator;
pub use loss::Loss;
pub use net::{InputLayout, Network, Tap, TrainSpec};
pub use ops::{RuleOptions, WeightGrad};
pub use optim::Optimizer;
pub use step::{Signature, TensorInfo, TrainStep};
pub use tape::{Precision, Tape};
pub use trainer::{BatchInputs, StepOutput, Trainer};

#[derive(Debug, Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("invalid training spec: {0}")]
    Spec(String),
    #[error("cannot build the train-step graph at `{tensor}` ({op}): {message}")]
    Graph {
        op: String,
        tensor: String,
        message: String,
    },
    #[error(
        "no gradient rule for ONNX op `{op}` (node producing `{tensor}`); the differentiable ops are listed in src/train/ops/mod.rs"
    )]
    NoRule { op: String, tensor: String },
    #[error("ONNX Runtime failed to {what}: {reason}")]
    Ort { what: String, reason: String },
    #[error("batch input `{name}` should have {expected} values, found {found}")]
    BatchSize {
        name: String,
        expected: usize,
        found: usize,
    },
    #[error(
        "step {step}: the loss is not finite ({loss}); the update was not applied and the parameters are those after step {step}"
    )]
    NonFiniteLoss { step: u64, loss: f32 },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: String, reason: String },
}

impl TrainError {
    pub(crate) fn ort(what: impl Into<String>, err: impl std::fmt::Display) -> Self {
        TrainError::Ort {
            what: what.into(),
            reason: err.to_string(),
        }
    }

    pub(crate) fn graph(
        op: impl Into<String>,
        tensor: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        TrainError::Graph {
            op: op.into(),
            tensor: tensor.into(),
            message: message.into(),
        }
    }
}
