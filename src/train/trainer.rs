//! Runs a compiled [`TrainStep`] step after step on one ONNX Runtime session.
//!
//! Buffers: two sets of parameter + optimizer-state tensors, A and B, allocated once where the
//! execution provider computes (host memory on CPU, device memory on CUDA). Two IO bindings are
//! made once: A → B (inputs bound to A, outputs to B) and B → A. Step k runs the binding whose
//! inputs hold the current values, then the roles swap (ping-pong). The batch, `lr` and `step`
//! live in preallocated host tensors the caller writes into; `loss` and the metrics are bound to
//! preallocated host scalars. Nothing is allocated per step by this code.
//!
//! Guarantees:
//! - A step whose loss is not finite is not applied: the current buffer set is left as it was
//!   (the update went to the other set), the step count does not advance, and
//!   [`TrainError::NonFiniteLoss`] says so. The run can continue (e.g. with a lower lr).
//! - [`Trainer::params`] returns every model tensor, including those the step does not touch
//!   (the encoder's `embed` layer when the head reads the feature map), in model order.
//! - Resuming from a [`Checkpoint`] restores parameters, optimizer state and step exactly: the
//!   next steps compute bit-for-bit what an uninterrupted run computes on the same machine and
//!   settings (ONNX Runtime's CPU kernels are deterministic for a fixed thread count).

use std::path::Path;

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::{DynTensor, Tensor};

use super::TrainError;
use super::checkpoint::{Checkpoint, CheckpointMeta};
use super::net::Network;
use super::step::{
    ElemType, LOSS_OUTPUT, LR_INPUT, STEP_INPUT, Signature, TrainStep, metric_name, new_name,
};
use crate::model::ParamSet;
use crate::runtime::{Device, SessionSettings, session_from_bytes};

/// What one step reports.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// Updates applied after this step (1 after the first).
    pub step: u64,
    pub loss: f32,
    /// `(name, value)` in the signature's order.
    pub metrics: Vec<(String, f32)>,
}

/// Batch input buffers that are filled in place before a step runs (a [`Trainer`]'s or an
/// evaluator's): `images`, `labels`, `targets`, `mask`, as the graph's signature names them.
pub trait BatchInputs {
    /// The preallocated batch tensor `name`.
    fn batch_tensor(&mut self, name: &str) -> Result<&mut DynTensor, TrainError>;

    /// The float batch input `name`, to fill in place.
    fn input_f32_mut(&mut self, name: &str) -> Result<&mut [f32], TrainError> {
        let (_, data) = self
            .batch_tensor(name)?
            .try_extract_tensor_mut::<f32>()
            .map_err(|e| TrainError::ort("access a batch input", e))?;
        Ok(data)
    }

    /// The int64 batch input `name`, to fill in place.
    fn input_i64_mut(&mut self, name: &str) -> Result<&mut [i64], TrainError> {
        let (_, data) = self
            .batch_tensor(name)?
            .try_extract_tensor_mut::<i64>()
            .map_err(|e| TrainError::ort("access a batch input", e))?;
        Ok(data)
    }
}

impl BatchInputs for Trainer {
    fn batch_tensor(&mut self, name: &str) -> Result<&mut DynTensor, TrainError> {
        let i = self
            .step_graph
            .signature
            .batch
            .iter()
            .position(|b| b.name == name)
            .ok_or_else(|| {
                TrainError::Spec(format!("the train step has no batch input `{name}`"))
            })?;
        Ok(&mut self.batch[i])
    }
}

/// See the module documentation.
pub struct Trainer {
    session: Session,
    step_graph: TrainStep,
    device: Device,
    /// `bufs[k]`: params then state, in signature order.
    bufs: [Vec<DynTensor>; 2],
    bindings: [IoBinding; 2],
    batch: Vec<DynTensor>,
    lr: Tensor<f32>,
    step_input: Tensor<i64>,
    /// The set holding the current values.
    cur: usize,
    step: u64,
    /// Model tensors the step graph does not read, carried unchanged.
    extra: ParamSet,
    /// Every model tensor name in model order (for [`Trainer::params`]).
    order: Vec<String>,
}

fn ort_err(what: &'static str) -> impl Fn(ort::Error) -> TrainError {
    move |e| TrainError::ort(what, e)
}

impl Trainer {
    /// A trainer at step 0 with zero optimizer state and the given parameters (every tensor of
    /// the network's [`Network::param_specs`]).
    pub fn new(
        env: &ort::environment::Environment,
        settings: &SessionSettings,
        step: TrainStep,
        params: &ParamSet,
    ) -> Result<Self, TrainError> {
        let session = session_from_bytes(env, settings, &step.onnx)?;
        Self::from_session(session, settings.device, step, params, None, 0)
    }

    /// A trainer that continues from a checkpoint, which must describe the same model and
    /// optimizer as `step`.
    pub fn resume(
        env: &ort::environment::Environment,
        settings: &SessionSettings,
        step: TrainStep,
        ckpt: &Checkpoint,
    ) -> Result<Self, TrainError> {
        if ckpt.meta.spec.encoder != step.spec.encoder
            || ckpt.meta.spec.head != step.spec.head
            || ckpt.meta.spec.input != step.spec.input
            || ckpt.meta.spec.tap != step.spec.tap
            || ckpt.meta.spec.input_size != step.spec.input_size
            || std::mem::discriminant(&ckpt.meta.spec.optimizer)
                != std::mem::discriminant(&step.spec.optimizer)
        {
            return Err(TrainError::Checkpoint {
                path: String::new(),
                reason:
                    "the checkpoint describes a different model or optimizer than this train step"
                        .into(),
            });
        }
        let session = session_from_bytes(env, settings, &step.onnx)?;
        Self::from_session(
            session,
            settings.device,
            step,
            &ckpt.params,
            Some(&ckpt.state),
            ckpt.meta.step,
        )
    }

    /// The general constructor: a session the caller built from `step_graph.onnx` (with
    /// profiling, say), placed on `device`, starting from the given values after `step` updates
    /// (`state: None` is zero optimizer state).
    pub fn from_session(
        session: Session,
        device: Device,
        step_graph: TrainStep,
        params: &ParamSet,
        state: Option<&ParamSet>,
        step: u64,
    ) -> Result<Self, TrainError> {
        let zeros;
        let state = match state {
            Some(s) => s,
            None => {
                let mut z = ParamSet::new();
                for s in &step_graph.signature.state {
                    z.push(s.name.clone(), s.shape.clone(), vec![0.0; s.numel()])?;
                }
                zeros = z;
                &zeros
            }
        };
        let network = Network::new(step_graph.spec.clone())?;
        params.check_against(&network.param_specs())?;
        let sig = step_graph.signature.clone();
        if !sig.has_optimizer {
            return Err(TrainError::Spec(
                "a Trainer needs a train-step graph (Network::train_step), not a gradient graph"
                    .into(),
            ));
        }
        let host = session.allocator();
        let dev_alloc = match device {
            Device::Cpu => None,
            Device::Cuda { device_id } => Some(
                Allocator::new(
                    &session,
                    MemoryInfo::new(
                        AllocationDevice::CUDA,
                        device_id,
                        AllocatorType::Device,
                        MemoryType::Default,
                    )
                    .map_err(ort_err("describe CUDA memory"))?,
                )
                .map_err(ort_err("create a CUDA allocator"))?,
            ),
        };
        let alloc = dev_alloc.as_ref().unwrap_or(host);

        // Buffers: A gets the given values, B is overwritten by the first step.
        let mut bufs: [Vec<DynTensor>; 2] = [Vec::new(), Vec::new()];
        type Slot<'a> = (&'a str, &'a [usize], Option<&'a [f32]>);
        let slots: Vec<Slot> = sig
            .params
            .iter()
            .map(|p| {
                let v = params.get(&p.name).map(|x| x.data.as_slice());
                (p.name.as_str(), p.shape.as_slice(), v)
            })
            .chain(sig.state.iter().map(|s| {
                let v = state.get(&s.name).map(|x| x.data.as_slice());
                (s.name.as_str(), s.shape.as_slice(), v)
            }))
            .collect();
        for (name, shape, values) in &slots {
            let values = values.ok_or_else(|| TrainError::Checkpoint {
                path: String::new(),
                reason: format!("no value for `{name}`"),
            })?;
            if let Some(s) = state.get(name)
                && s.shape != *shape
            {
                return Err(TrainError::Checkpoint {
                    path: String::new(),
                    reason: format!("`{name}` has shape {:?}, expected {shape:?}", s.shape),
                });
            }
            for (k, set) in bufs.iter_mut().enumerate() {
                let mut t = Tensor::<f32>::new(alloc, shape.to_vec())
                    .map_err(ort_err("allocate a parameter buffer"))?;
                if k == 0 {
                    write_f32(&mut t, values, host)?;
                }
                set.push(t.upcast());
            }
        }
        if state.len() != sig.state.len() {
            return Err(TrainError::Checkpoint {
                path: String::new(),
                reason: format!(
                    "{} optimizer state tensors given, the step has {}",
                    state.len(),
                    sig.state.len()
                ),
            });
        }

        let mut batch = Vec::with_capacity(sig.batch.len());
        for b in &sig.batch {
            let t = match b.elem {
                ElemType::F32 => Tensor::<f32>::new(host, b.shape.clone())
                    .map_err(ort_err("allocate a batch buffer"))?
                    .upcast(),
                ElemType::I64 => Tensor::<i64>::new(host, b.shape.clone())
                    .map_err(ort_err("allocate a batch buffer"))?
                    .upcast(),
                ElemType::F64 => Tensor::<f64>::new(host, b.shape.clone())
                    .map_err(ort_err("allocate a batch buffer"))?
                    .upcast(),
            };
            batch.push(t);
        }
        let lr = Tensor::<f32>::new(host, Vec::<usize>::new()).map_err(ort_err("allocate lr"))?;
        let step_input =
            Tensor::<i64>::new(host, Vec::<usize>::new()).map_err(ort_err("allocate step"))?;

        let names: Vec<&str> = sig
            .params
            .iter()
            .chain(sig.state.iter())
            .map(|p| p.name.as_str())
            .collect();
        let mut bindings = Vec::with_capacity(2);
        for k in 0..2 {
            let mut b = session
                .create_binding()
                .map_err(ort_err("create an IO binding"))?;
            for (i, name) in names.iter().enumerate() {
                b.bind_input(*name, &bufs[k][i])
                    .map_err(ort_err("bind a parameter input"))?;
            }
            for (i, name) in names.iter().enumerate() {
                b.bind_output(new_name(name), &mut bufs[1 - k][i])
                    .map_err(ort_err("bind a parameter output"))?;
            }
            let loss = Tensor::<f32>::new(host, Vec::<usize>::new())
                .map_err(ort_err("allocate the loss"))?;
            b.bind_output(LOSS_OUTPUT, loss)
                .map_err(ort_err("bind the loss"))?;
            for m in &sig.metrics {
                let v = Tensor::<f32>::new(host, Vec::<usize>::new())
                    .map_err(ort_err("allocate a metric"))?;
                b.bind_output(metric_name(m), v)
                    .map_err(ort_err("bind a metric"))?;
            }
            bindings.push(b);
        }
        let bindings: [IoBinding; 2] = bindings
            .try_into()
            .map_err(|_| TrainError::Spec("binding setup".into()))?;

        let in_step: std::collections::HashSet<&str> =
            sig.params.iter().map(|p| p.name.as_str()).collect();
        let mut extra = ParamSet::new();
        for p in params.iter().filter(|p| !in_step.contains(p.name.as_str())) {
            extra.push(p.name.clone(), p.shape.clone(), p.data.clone())?;
        }
        let order = network.param_specs().into_iter().map(|s| s.name).collect();
        Ok(Trainer {
            session,
            step_graph,
            device,
            bufs,
            bindings,
            batch,
            lr,
            step_input,
            cur: 0,
            step,
            extra,
            order,
        })
    }

    pub fn signature(&self) -> &Signature {
        &self.step_graph.signature
    }

    pub fn train_step(&self) -> &TrainStep {
        &self.step_graph
    }

    /// Updates applied so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Copies `values` into the float batch input `name` (length checked).
    pub fn set_input_f32(&mut self, name: &str, values: &[f32]) -> Result<(), TrainError> {
        let dst = self.input_f32_mut(name)?;
        if dst.len() != values.len() {
            return Err(TrainError::BatchSize {
                name: name.into(),
                expected: dst.len(),
                found: values.len(),
            });
        }
        dst.copy_from_slice(values);
        Ok(())
    }

    /// Copies `values` into the int64 batch input `name` (length checked).
    pub fn set_input_i64(&mut self, name: &str, values: &[i64]) -> Result<(), TrainError> {
        let dst = self.input_i64_mut(name)?;
        if dst.len() != values.len() {
            return Err(TrainError::BatchSize {
                name: name.into(),
                expected: dst.len(),
                found: values.len(),
            });
        }
        dst.copy_from_slice(values);
        Ok(())
    }

    /// Runs one step on the batch currently in the input buffers, with learning rate `lr`.
    pub fn step(&mut self, lr: f32) -> Result<StepOutput, TrainError> {
        self.lr.extract_tensor_mut().1[0] = lr;
        self.step_input.extract_tensor_mut().1[0] = i64::try_from(self.step).unwrap_or(i64::MAX);
        let sig = &self.step_graph.signature;
        let binding = &mut self.bindings[self.cur];
        // Rebinding is a pointer store on CPU; on CUDA it is where the host→device copy happens.
        for (b, v) in sig.batch.iter().zip(&self.batch) {
            binding
                .bind_input(b.name.as_str(), v)
                .map_err(ort_err("bind a batch input"))?;
        }
        binding
            .bind_input(LR_INPUT, &self.lr)
            .map_err(ort_err("bind lr"))?;
        binding
            .bind_input(STEP_INPUT, &self.step_input)
            .map_err(ort_err("bind step"))?;
        let outputs = self
            .session
            .run_binding(&self.bindings[self.cur])
            .map_err(ort_err("run the train step"))?;
        let loss = outputs
            .get(LOSS_OUTPUT)
            .ok_or_else(|| TrainError::Spec("no loss output".into()))?
            .try_extract_scalar::<f32>()
            .map_err(ort_err("read the loss"))?;
        let mut metrics = Vec::with_capacity(sig.metrics.len());
        for m in &sig.metrics {
            let v = outputs
                .get(metric_name(m))
                .ok_or_else(|| TrainError::Spec(format!("no metric output {m}")))?
                .try_extract_scalar::<f32>()
                .map_err(ort_err("read a metric"))?;
            metrics.push((m.clone(), v));
        }
        drop(outputs);
        if !loss.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                step: self.step,
                loss,
            });
        }
        self.cur = 1 - self.cur;
        self.step += 1;
        Ok(StepOutput {
            step: self.step,
            loss,
            metrics,
        })
    }

    fn read(&self, i: usize) -> Result<Vec<f32>, TrainError> {
        let t = &self.bufs[self.cur][i];
        match self.device {
            Device::Cpu => Ok(t
                .try_extract_tensor::<f32>()
                .map_err(ort_err("read a buffer"))?
                .1
                .to_vec()),
            Device::Cuda { .. } => {
                let shape: Vec<i64> = t.shape().to_vec();
                let mut host = Tensor::<f32>::new(self.session.allocator(), shape)
                    .map_err(ort_err("allocate a host copy"))?
                    .upcast();
                t.copy_into(&mut host)
                    .map_err(ort_err("copy a buffer to the host"))?;
                Ok(host
                    .try_extract_tensor::<f32>()
                    .map_err(ort_err("read a buffer"))?
                    .1
                    .to_vec())
            }
        }
    }

    /// Every model tensor's current value, in model order.
    pub fn params(&self) -> Result<ParamSet, TrainError> {
        let sig = &self.step_graph.signature;
        let mut set = ParamSet::new();
        for name in &self.order {
            if let Some(i) = sig.params.iter().position(|p| &p.name == name) {
                set.push(name.clone(), sig.params[i].shape.clone(), self.read(i)?)?;
            } else if let Some(p) = self.extra.get(name) {
                set.push(p.name.clone(), p.shape.clone(), p.data.clone())?;
            }
        }
        Ok(set)
    }

    /// The optimizer state (`state.<slot>.<param>`).
    pub fn optimizer_state(&self) -> Result<ParamSet, TrainError> {
        let sig = &self.step_graph.signature;
        let mut set = ParamSet::new();
        for (j, s) in sig.state.iter().enumerate() {
            set.push(
                s.name.clone(),
                s.shape.clone(),
                self.read(sig.params.len() + j)?,
            )?;
        }
        Ok(set)
    }

    /// A checkpoint of the current state; `rng` is the caller's resumable randomness / data
    /// position (stored as given).
    pub fn checkpoint(&self, rng: serde_json::Value) -> Result<Checkpoint, TrainError> {
        Ok(Checkpoint {
            meta: CheckpointMeta {
                step: self.step,
                spec: self.step_graph.spec.clone(),
                rng,
            },
            params: self.params()?,
            state: self.optimizer_state()?,
        })
    }

    /// [`Trainer::checkpoint`] written atomically to `path`.
    pub fn save_checkpoint(&self, path: &Path, rng: serde_json::Value) -> Result<(), TrainError> {
        self.checkpoint(rng)?.save(path)
    }

    /// Writes ONNX Runtime's profile of the steps run so far (if the session was built with
    /// profiling) and returns its path.
    pub fn end_profiling(&mut self) -> Result<String, TrainError> {
        self.session
            .end_profiling()
            .map_err(ort_err("end profiling"))
    }
}

/// Fills a (host or device) f32 tensor from host values.
fn write_f32(t: &mut Tensor<f32>, values: &[f32], host: &Allocator) -> Result<(), TrainError> {
    let on_host = t.memory_info().is_cpu_accessible();
    if on_host {
        let (_, dst) = t.extract_tensor_mut();
        if dst.len() != values.len() {
            return Err(TrainError::BatchSize {
                name: "parameter".into(),
                expected: dst.len(),
                found: values.len(),
            });
        }
        dst.copy_from_slice(values);
        Ok(())
    } else {
        let shape: Vec<i64> = t.shape().to_vec();
        let mut h = Tensor::<f32>::new(host, shape).map_err(ort_err("allocate a host copy"))?;
        h.extract_tensor_mut().1.copy_from_slice(values);
        h.copy_into(t)
            .map_err(ort_err("copy a parameter to the device"))
    }
}
