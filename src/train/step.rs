//! Assembles the train-step graph of a [`Network`] and names its inputs and outputs.
//!
//! The graph (opset 17, `ai.onnx` only, all shapes static):
//!
//! | inputs | outputs |
//! | --- | --- |
//! | `<param>` for every tensor the step reads (`stem.conv.weight`, …, BatchNorm running stats) | `loss` (float, `[]`) |
//! | `state.<slot>.<param>` for every trainable tensor and optimizer slot | `metric.<name>` (float, `[]`) |
//! | `images`, then the loss's targets (`labels` / `targets` / `mask`) | `new.<param>` for every input `<param>` |
//! | `lr` (float, `[]`), `step` (int64, `[]`: updates applied so far) | `new.state.<slot>.<param>` |
//!
//! Guarantees:
//! - `new.X` has exactly the shape of `X`, so two sets of buffers can swap roles every step
//!   (the trainer's ping-pong: nothing is allocated per step).
//! - The same [`Network`] gives the same bytes (deterministic emission).
//! - [`Network::gradient_graph`] is the same forward and backward without the optimizer
//!   (outputs `gradient.<param>`): what the gradient checks and the reference script compare.

use super::TrainError;
use super::autodiff;
use super::net::{Network, PREDICTION_OUTPUT, TrainSpec};
use super::tape::{Precision, RuleOptions, Tape};
use crate::model::Mode;
use crate::model::encoder::IMAGES_INPUT;
use crate::model::onnx::tensor_proto::DataType;

/// Learning-rate input.
pub const LR_INPUT: &str = "lr";
/// Step-count input (updates applied before this one).
pub const STEP_INPUT: &str = "step";
/// Loss output.
pub const LOSS_OUTPUT: &str = "loss";
/// Metadata key holding the [`TrainSpec`] as JSON.
pub const SPEC_METADATA_KEY: &str = "sslpipe.train_spec";

/// Output name of the updated value of input `name`.
pub fn new_name(name: &str) -> String {
    format!("new.{name}")
}

/// Input name of an optimizer state tensor.
pub fn state_name(slot: &str, param: &str) -> String {
    format!("state.{slot}.{param}")
}

/// Output name of a metric.
pub fn metric_name(metric: &str) -> String {
    format!("metric.{metric}")
}

/// Output name of a gradient in [`Network::gradient_graph`].
pub fn gradient_name(param: &str) -> String {
    format!("gradient.{param}")
}

/// Element type of a graph input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    F32,
    F64,
    I64,
}

impl ElemType {
    fn of(t: DataType) -> Result<Self, TrainError> {
        match t {
            DataType::Float => Ok(ElemType::F32),
            DataType::Double => Ok(ElemType::F64),
            DataType::Int64 => Ok(ElemType::I64),
            other => Err(TrainError::Spec(format!(
                "unsupported input type {other:?}"
            ))),
        }
    }
}

/// A named graph input with its full shape.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub elem: ElemType,
    /// For parameters: whether it is learnt by gradient (else a buffer such as running stats).
    pub trainable: bool,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The contract of a train-step (or gradient) graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    /// Model tensors the step reads and returns updated (`new.<name>`).
    pub params: Vec<TensorInfo>,
    /// Optimizer state (`state.<slot>.<param>`), returned as `new.state.<slot>.<param>`.
    pub state: Vec<TensorInfo>,
    /// `images` and the loss's targets.
    pub batch: Vec<TensorInfo>,
    /// Metric names (outputs are `metric.<name>`).
    pub metrics: Vec<String>,
    /// Whether the graph has the optimizer (`lr`, `step` inputs, `new.*` outputs) or is a
    /// gradient graph (`gradient.*` outputs).
    pub has_optimizer: bool,
}

/// A compiled train step: the `.onnx` bytes and their contract.
#[derive(Debug, Clone)]
pub struct TrainStep {
    pub onnx: Vec<u8>,
    pub signature: Signature,
    pub spec: TrainSpec,
}

impl Network {
    /// The float32 train-step graph (forward, backward, optimizer update).
    pub fn train_step(&self) -> Result<TrainStep, TrainError> {
        self.build(Precision::F32, true, RuleOptions::default())
    }

    /// [`Network::train_step`] with a choice of rule formulations (for benchmarks and providers
    /// where another formulation is faster).
    pub fn train_step_with(&self, rules: RuleOptions) -> Result<TrainStep, TrainError> {
        self.build(Precision::F32, true, rules)
    }

    /// Forward and backward only: outputs `loss`, metrics, `gradient.<param>` for every
    /// trainable tensor and `new.<buffer>` for the BatchNorm statistics.
    pub fn gradient_graph(&self, precision: Precision) -> Result<TrainStep, TrainError> {
        self.build(precision, false, RuleOptions::default())
    }

    /// [`Network::gradient_graph`] with a choice of rule formulations.
    pub fn gradient_graph_with(
        &self,
        precision: Precision,
        rules: RuleOptions,
    ) -> Result<TrainStep, TrainError> {
        self.build(precision, false, rules)
    }

    /// The evaluation graph: the inference-mode forward pass (BatchNorm with running statistics)
    /// and the loss, for held-out batches. Inputs: every model tensor, `images`, the loss's
    /// targets; outputs: `loss`, the metrics and `prediction`. Nothing is updated.
    pub fn eval_step(&self) -> Result<TrainStep, TrainError> {
        let spec = self.spec();
        let mut t = Tape::new("sslpipe_eval_step", Precision::F32);
        let float = t.float();
        let elem = ElemType::of(float)?;
        let mut sig = Signature {
            params: Vec::new(),
            state: Vec::new(),
            batch: Vec::new(),
            metrics: Vec::new(),
            has_optimizer: false,
        };
        declare_params(&mut t, &mut sig, &self.param_specs(), elem)?;
        let (images, target_names) = self.batch_inputs(&mut t, &mut sig)?;
        let pred = self.emit(&mut t, Mode::Infer, &images)?;
        let lo = spec.loss.emit(&mut t, &pred, &target_names)?;
        let shown = t.node("Identity", &[&pred], "shown", vec![])?;
        t.rename(&shown, PREDICTION_OUTPUT)?;
        t.output(PREDICTION_OUTPUT)?;
        t.rename(&lo.loss, LOSS_OUTPUT)?;
        t.output(LOSS_OUTPUT)?;
        for (m, tensor) in &lo.metrics {
            let n = metric_name(m);
            t.rename(tensor, &n)?;
            t.output(&n)?;
            sig.metrics.push(m.clone());
        }
        t.doc_string("sslpipe evaluation step: (params, batch, targets) -> (loss, metrics)");
        Ok(TrainStep {
            onnx: t.finish()?,
            signature: sig,
            spec: spec.clone(),
        })
    }

    /// Declares the batch inputs — `images` and the loss's targets — in `t` and `sig`; returns
    /// their names.
    fn batch_inputs(
        &self,
        t: &mut Tape,
        sig: &mut Signature,
    ) -> Result<(String, Vec<String>), TrainError> {
        let float = t.float();
        let images = t.input_float(IMAGES_INPUT, self.images_shape())?;
        sig.batch.push(TensorInfo {
            name: images.clone(),
            shape: self.images_shape().to_vec(),
            elem: ElemType::of(float)?,
            trainable: false,
        });
        let mut target_names = Vec::new();
        for ti in self.spec().loss.targets(self.prediction_shape(), float)? {
            let n = t.input(ti.name, ti.dtype, &ti.shape)?;
            sig.batch.push(TensorInfo {
                name: n.clone(),
                shape: ti.shape.clone(),
                elem: ElemType::of(ti.dtype)?,
                trainable: false,
            });
            target_names.push(n);
        }
        Ok((images, target_names))
    }

    fn build(
        &self,
        precision: Precision,
        optimizer: bool,
        rules: RuleOptions,
    ) -> Result<TrainStep, TrainError> {
        let spec = self.spec();
        let mut t = Tape::new("sslpipe_train_step", precision);
        t.set_rules(rules);
        let float = t.float();
        let elem = ElemType::of(float)?;
        let mut sig = Signature {
            params: Vec::new(),
            state: Vec::new(),
            batch: Vec::new(),
            metrics: Vec::new(),
            has_optimizer: optimizer,
        };
        let pspecs = self.step_param_specs();
        declare_params(&mut t, &mut sig, &pspecs, elem)?;
        let slots = if optimizer {
            spec.optimizer.slots()
        } else {
            &[]
        };
        for p in pspecs.iter().filter(|p| p.trainable) {
            for slot in slots {
                let n = state_name(slot, &p.name);
                t.input_float(&n, &p.shape)?;
                sig.state.push(TensorInfo {
                    name: n,
                    shape: p.shape.clone(),
                    elem,
                    trainable: false,
                });
            }
        }
        let (images, target_names) = self.batch_inputs(&mut t, &mut sig)?;
        let (lr, step) = if optimizer {
            (
                Some(t.input_float(LR_INPUT, &[])?),
                Some(t.input(STEP_INPUT, DataType::Int64, &[])?),
            )
        } else {
            (None, None)
        };

        let pred = self.emit(&mut t, Mode::Train, &images)?;
        let bn_updates = t.take_running_updates();
        let lo = spec.loss.emit(&mut t, &pred, &target_names)?;
        let wrt: Vec<String> = pspecs
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.name.clone())
            .collect();
        let grads = autodiff::backward(&mut t, &lo.loss, &wrt)?;

        t.rename(&lo.loss, LOSS_OUTPUT)?;
        t.output(LOSS_OUTPUT)?;
        for (m, tensor) in &lo.metrics {
            let n = metric_name(m);
            t.rename(tensor, &n)?;
            t.output(&n)?;
            sig.metrics.push(m.clone());
        }

        let shared = match (&lr, &step) {
            (Some(lr), Some(step)) => Some(spec.optimizer.shared(&mut t, lr, step)?),
            _ => None,
        };
        let mut new_state: Vec<(String, String)> = Vec::new();
        for p in &pspecs {
            let value = if p.trainable {
                let g = grads
                    .get(&p.name)
                    .cloned()
                    .ok_or_else(|| TrainError::graph("backward", &p.name, "no gradient"))?;
                match &shared {
                    Some(sh) => {
                        let st: Vec<String> =
                            slots.iter().map(|s| state_name(s, &p.name)).collect();
                        let (np, ns) = spec.optimizer.update(&mut t, sh, &p.name, &g, &st)?;
                        for (name, v) in st.iter().zip(ns) {
                            new_state.push((new_name(name), v));
                        }
                        np
                    }
                    None => {
                        let n = gradient_name(&p.name);
                        t.rename(&g, &n)?;
                        t.output(&n)?;
                        continue;
                    }
                }
            } else {
                match bn_updates.iter().find(|(b, _)| *b == p.name) {
                    Some((_, v)) => v.clone(),
                    None => p.name.clone(),
                }
            };
            let n = new_name(&p.name);
            t.rename(&value, &n)?;
            t.output(&n)?;
        }
        for (n, v) in new_state {
            t.rename(&v, &n)?;
            t.output(&n)?;
        }
        let json = serde_json::to_string(spec)
            .map_err(|e| TrainError::Spec(format!("cannot serialise the spec: {e}")))?;
        t.metadata(SPEC_METADATA_KEY, &json);
        t.doc_string("sslpipe train step: (params, optimizer state, batch, targets, lr, step) -> (loss, metrics, new params, new state)");
        Ok(TrainStep {
            onnx: t.finish()?,
            signature: sig,
            spec: spec.clone(),
        })
    }
}

/// Declares one float graph input per model tensor, recorded in `sig.params`.
fn declare_params(
    t: &mut Tape,
    sig: &mut Signature,
    specs: &[crate::model::ParamSpec],
    elem: ElemType,
) -> Result<(), TrainError> {
    for p in specs {
        t.input_float(&p.name, &p.shape)?;
        sig.params.push(TensorInfo {
            name: p.name.clone(),
            shape: p.shape.clone(),
            elem,
            trainable: p.trainable,
        });
    }
    Ok(())
}
