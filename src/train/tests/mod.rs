//! Tests of the train module: gradient checks of every rule and loss (`gradcheck`), whole
//! networks and the optimizers (`step_tests`), a learnable synthetic task and checkpoint/resume
//! (`trainer_tests`). They need ONNX Runtime (see `crate::runtime`); without it they fail with
//! the runtime's message on how to get it — they never skip silently.

mod gradcheck;
mod reference;
mod step_tests;
mod trainer_tests;

use std::collections::HashMap;
use std::error::Error;

use ort::session::Session;
use ort::value::{DynValue, Tensor};

use crate::rng::Rng;
use crate::runtime::{SessionSettings, environment, session_from_bytes};

pub(super) type TestResult = Result<(), Failure>;

/// Graph outputs by name: `(shape, values as f64)`.
pub(super) type Outputs = HashMap<String, (Vec<usize>, Vec<f64>)>;

/// A test error shown with its `Display` text and causes.
pub(super) struct Failure(Box<dyn Error>);

impl<E: Error + 'static> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(Box::new(e))
    }
}

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, "\ncaused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

pub(super) fn fail(msg: impl Into<String>) -> Failure {
    Failure(msg.into().into())
}

/// Host data for one graph input.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Host {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
}

/// A session over `bytes` with default settings and one intra-op thread per core.
pub(super) fn session(bytes: &[u8]) -> Result<Session, Failure> {
    let env = environment(None)?;
    Ok(session_from_bytes(env, &SessionSettings::default(), bytes)?)
}

fn value(shape: &[usize], data: &Host) -> Result<DynValue, Failure> {
    let s = shape.to_vec();
    Ok(match data {
        Host::F32(v) => Tensor::from_array((s, v.clone()))?.into_dyn(),
        Host::F64(v) => Tensor::from_array((s, v.clone()))?.into_dyn(),
        Host::I64(v) => Tensor::from_array((s, v.clone()))?.into_dyn(),
    })
}

/// Runs `session` on named inputs; returns every output as `(shape, values as f64)`.
pub(super) fn run(
    session: &mut Session,
    inputs: &[(String, Vec<usize>, Host)],
) -> Result<Outputs, Failure> {
    let mut feed: Vec<(String, DynValue)> = Vec::with_capacity(inputs.len());
    for (name, shape, data) in inputs {
        feed.push((name.clone(), value(shape, data)?));
    }
    let outputs = session.run(feed)?;
    let mut out = HashMap::new();
    for (name, v) in outputs.iter() {
        let shape: Vec<usize> = v.shape().iter().map(|&d| d as usize).collect();
        let data: Vec<f64> = if let Ok((_, d)) = v.try_extract_tensor::<f32>() {
            d.iter().map(|&x| f64::from(x)).collect()
        } else if let Ok((_, d)) = v.try_extract_tensor::<f64>() {
            d.to_vec()
        } else if let Ok((_, d)) = v.try_extract_tensor::<i64>() {
            d.iter().map(|&x| x as f64).collect()
        } else {
            return Err(fail(format!("output {name} has an unexpected type")));
        };
        out.insert(name.to_string(), (shape, data));
    }
    Ok(out)
}

/// `n` values uniform in [lo, hi).
pub(super) fn uniform(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| lo + (hi - lo) * rng.uniform_f64()).collect()
}

/// `n` standard normal values.
pub(super) fn normal(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.normal_f64()).collect()
}

/// `n` values uniform in ±[lo, hi]: away from zero (kinks of Relu/Abs, poles of 1/x).
pub(super) fn away_from_zero(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let m = lo + (hi - lo) * rng.uniform_f64();
            if rng.bernoulli(0.5) { m } else { -m }
        })
        .collect()
}
