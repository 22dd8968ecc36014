//! Runs the evaluation graph ([`Network::eval_step`](super::Network::eval_step)) on held-out
//! batches: the loss and metrics the model gets on data it does not learn from, with the
//! parameters a [`Trainer`](super::Trainer) currently holds and BatchNorm in inference mode — the
//! same computation the exported encoder performs.
//!
//! Guarantees: nothing is updated; the batch buffers are allocated once and filled in place
//! through [`BatchInputs`], exactly like a trainer's.

use ort::session::{Session, SessionInputValue};
use ort::value::{DynTensor, Tensor};

use super::net::PREDICTION_OUTPUT;
use super::step::{ElemType, LOSS_OUTPUT, TrainStep, metric_name};
use super::trainer::BatchInputs;
use super::{StepOutput, TrainError};
use crate::model::ParamSet;
use crate::runtime::{SessionSettings, session_from_bytes};

pub struct Evaluator {
    session: Session,
    graph: TrainStep,
    batch: Vec<DynTensor>,
}

fn ort_err(what: &'static str) -> impl Fn(ort::Error) -> TrainError {
    move |e| TrainError::ort(what, e)
}

impl Evaluator {
    /// `graph` must come from `Network::eval_step`.
    pub fn new(
        env: &ort::environment::Environment,
        settings: &SessionSettings,
        graph: TrainStep,
    ) -> Result<Self, TrainError> {
        if graph.signature.has_optimizer || !graph.signature.state.is_empty() {
            return Err(TrainError::Spec(
                "an Evaluator needs an evaluation graph (Network::eval_step)".into(),
            ));
        }
        let session = session_from_bytes(env, settings, &graph.onnx)?;
        let host = session.allocator();
        let mut batch = Vec::with_capacity(graph.signature.batch.len());
        for b in &graph.signature.batch {
            batch.push(match b.elem {
                ElemType::I64 => Tensor::<i64>::new(host, b.shape.clone())
                    .map_err(ort_err("allocate a batch buffer"))?
                    .upcast(),
                _ => Tensor::<f32>::new(host, b.shape.clone())
                    .map_err(ort_err("allocate a batch buffer"))?
                    .upcast(),
            });
        }
        Ok(Evaluator {
            session,
            graph,
            batch,
        })
    }

    /// Loss and metrics of the batch in the input buffers under `params` (`step` is copied into
    /// the result for the caller's log).
    pub fn run(&mut self, params: &ParamSet, step: u64) -> Result<StepOutput, TrainError> {
        self.run_inner(params, step, false).map(|(out, _)| out)
    }

    /// [`Evaluator::run`] that also returns the prediction of every sample in the batch.
    pub fn run_with_prediction(
        &mut self,
        params: &ParamSet,
        step: u64,
    ) -> Result<(StepOutput, Vec<f32>), TrainError> {
        self.run_inner(params, step, true)
    }

    fn run_inner(
        &mut self,
        params: &ParamSet,
        step: u64,
        prediction: bool,
    ) -> Result<(StepOutput, Vec<f32>), TrainError> {
        let sig = &self.graph.signature;
        let mut inputs: Vec<(String, SessionInputValue<'_>)> =
            Vec::with_capacity(sig.params.len() + 4);
        for p in &sig.params {
            let v = params.get(&p.name).ok_or_else(|| {
                TrainError::Spec(format!("no value for `{}` to evaluate with", p.name))
            })?;
            let t = Tensor::from_array((p.shape.clone(), v.data.clone()))
                .map_err(ort_err("wrap a parameter"))?;
            inputs.push((p.name.clone(), t.into()));
        }
        for (b, t) in sig.batch.iter().zip(&self.batch) {
            inputs.push((b.name.clone(), t.view().into()));
        }
        let outputs = self
            .session
            .run(inputs)
            .map_err(ort_err("run the evaluation step"))?;
        let scalar = |name: &str| -> Result<f32, TrainError> {
            outputs
                .get(name)
                .ok_or_else(|| TrainError::Spec(format!("no `{name}` output")))?
                .try_extract_scalar::<f32>()
                .map_err(ort_err("read an evaluation output"))
        };
        let loss = scalar(LOSS_OUTPUT)?;
        let mut metrics = Vec::with_capacity(sig.metrics.len());
        for m in &sig.metrics {
            metrics.push((m.clone(), scalar(&metric_name(m))?));
        }
        let values = if prediction {
            outputs
                .get(PREDICTION_OUTPUT)
                .ok_or_else(|| TrainError::Spec("no prediction output".into()))?
                .try_extract_tensor::<f32>()
                .map_err(ort_err("read the prediction"))?
                .1
                .to_vec()
        } else {
            Vec::new()
        };
        Ok((
            StepOutput {
                step,
                loss,
                metrics,
            },
            values,
        ))
    }
}

impl BatchInputs for Evaluator {
    fn batch_tensor(&mut self, name: &str) -> Result<&mut DynTensor, TrainError> {
        let i = self
            .graph
            .signature
            .batch
            .iter()
            .position(|b| b.name == name)
            .ok_or_else(|| {
                TrainError::Spec(format!("the evaluation step has no batch input `{name}`"))
            })?;
        Ok(&mut self.batch[i])
    }
}
