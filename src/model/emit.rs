//! The one interface layers are emitted through: [`Emit`], implemented by [`GraphBuilder`] (plain
//! inference graphs) and by the training tape (`crate::train::Tape`, which also infers every
//! tensor's static shape and records the nodes its backward pass walks), and the [`Mode`] that
//! decides the few places where training and inference compute differently.
//!
//! Guarantees:
//! - A layer is written once ([`crate::model::Layer::emit`]) and serves every graph: the exported
//!   encoder, the encoder + head export, the train step and the evaluation step. What differs is
//!   decided here, by two questions only: the [`Mode`] (BatchNorm with batch statistics and
//!   MaxPool with its argmax indices in [`Mode::Train`]) and whether the sink knows static shapes
//!   ([`Emit::static_shape`]: shape-valued inputs are then written as constants, e.g. Resize
//!   `sizes` instead of `scales`).
//! - Names are handed out the same way by every sink (`base`, then `base_1`, …), so the same
//!   emission gives the same node and tensor names in every graph.

use super::ModelError;
use super::graph::GraphBuilder;
use super::onnx::AttributeProto;

/// Which forward pass is emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The train step's forward pass: BatchNorm normalises with the batch's statistics and
    /// outputs updated running statistics; MaxPool also outputs its indices (for its gradient).
    Train,
    /// The inference forward pass (exports, evaluation): BatchNorm uses running statistics, so
    /// samples do not interact.
    Infer,
}

/// Where layers write their nodes. Tensors are referred to by name; parameters are read as
/// `{prefix}.{name}` and must already be defined (initializers or graph inputs).
pub trait Emit {
    type Error: From<ModelError>;

    /// Adds a node with one output named after `base` (made unique); returns that name.
    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        base: &str,
        attrs: Vec<AttributeProto>,
    ) -> Result<String, Self::Error>;

    /// Adds a node with one output per base name; returns the output names.
    fn node_multi(
        &mut self,
        op: &str,
        inputs: &[&str],
        bases: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Result<Vec<String>, Self::Error>;

    /// An int64 constant (shapes, sizes).
    fn const_i64(
        &mut self,
        base: &str,
        shape: &[usize],
        data: &[i64],
    ) -> Result<String, Self::Error>;

    /// A float constant (in the sink's float precision).
    fn const_f32(
        &mut self,
        base: &str,
        shape: &[usize],
        data: &[f32],
    ) -> Result<String, Self::Error>;

    /// The full static shape of `name` (batch included) where the sink knows it; `None` for
    /// graphs with a symbolic batch dimension.
    fn static_shape(&self, name: &str) -> Option<Vec<usize>>;

    /// Training-mode BatchNorm of `x` over every axis but 1, with `params` =
    /// `[weight, bias, running_mean, running_var]`; the sink keeps the updated running statistics
    /// for the caller. Only a training sink can do this.
    fn batch_norm_train(
        &mut self,
        x: &str,
        params: [&str; 4],
        eps: f32,
        momentum: f32,
        base: &str,
    ) -> Result<String, Self::Error>;
}

impl Emit for GraphBuilder {
    type Error = ModelError;

    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        base: &str,
        attrs: Vec<AttributeProto>,
    ) -> Result<String, ModelError> {
        GraphBuilder::node(self, op, inputs, base, attrs)
    }

    fn node_multi(
        &mut self,
        op: &str,
        inputs: &[&str],
        bases: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Result<Vec<String>, ModelError> {
        let outs: Vec<String> = bases.iter().map(|b| self.fresh_name(b)).collect();
        let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
        self.node_with_outputs(op, inputs, &refs, attrs)?;
        Ok(outs)
    }

    fn const_i64(
        &mut self,
        base: &str,
        shape: &[usize],
        data: &[i64],
    ) -> Result<String, ModelError> {
        self.constant_i64(base, shape, data)
    }

    fn const_f32(
        &mut self,
        base: &str,
        shape: &[usize],
        data: &[f32],
    ) -> Result<String, ModelError> {
        self.constant_f32(base, shape, data)
    }

    fn static_shape(&self, _name: &str) -> Option<Vec<usize>> {
        None
    }

    fn batch_norm_train(
        &mut self,
        x: &str,
        _params: [&str; 4],
        _eps: f32,
        _momentum: f32,
        _base: &str,
    ) -> Result<String, ModelError> {
        Err(ModelError::Graph(format!(
            "training-mode BatchNorm of `{x}` needs the training tape; inference graphs use Mode::Infer"
        )))
    }
}
