//! Reverse-mode differentiation of a recorded forward pass.
//!
//! Guarantees:
//! - Only what the result needs is differentiated: a node gets a backward rule only when one of
//!   its outputs has a gradient and one of its float inputs depends on a tensor in `wrt`. So the
//!   input images never get a gradient (the stem's ConvTranspose is never emitted), and tensors that
//!   depend only on data (a loss mask's normaliser, metrics) cost nothing.
//! - A tensor read by several nodes (a residual input, a parameter shared by jigsaw tiles) gets the
//!   sum of its contributions, added in a fixed order: the same graph always sums the same way.
//! - Every tensor in `wrt` gets a gradient of its own shape; one the loss does not depend on gets
//!   zeros.

use std::collections::{HashMap, HashSet};

use super::TrainError;
use super::ops::{self, Builder};
use super::tape::Tape;

/// Appends the backward pass of `loss` (a scalar) to the tape and returns, for every name in
/// `wrt`, the name of its gradient tensor.
pub fn backward(
    t: &mut Tape,
    loss: &str,
    wrt: &[String],
) -> Result<HashMap<String, String>, TrainError> {
    if !t.shape(loss)?.is_empty() {
        return Err(TrainError::graph(
            "backward",
            loss,
            "the loss must be a scalar (shape [])",
        ));
    }
    let float = t.float();
    let is_float = |t: &Tape, n: &str| t.dtype(n) == Some(float);

    let entries = t.entries().to_vec();
    let mut requires: HashSet<String> = wrt.iter().cloned().collect();
    for e in &entries {
        if e.inputs().iter().any(|i| requires.contains(i)) {
            for o in e.outputs() {
                if is_float(t, &o) {
                    requires.insert(o);
                }
            }
        }
    }

    let mut grads: HashMap<String, Vec<String>> = HashMap::new();
    let seed = t.scalar(1.0)?;
    grads.insert(loss.to_string(), vec![seed]);

    for e in entries.iter().rev() {
        let outputs = e.outputs();
        let mut dys = Vec::with_capacity(outputs.len());
        for o in &outputs {
            dys.push(take(t, &mut grads, o)?);
        }
        if dys.iter().all(Option::is_none) {
            continue;
        }
        let inputs = e.inputs();
        let need: Vec<bool> = inputs
            .iter()
            .map(|i| !i.is_empty() && requires.contains(i) && is_float(t, i))
            .collect();
        if !need.iter().any(|&b| b) {
            continue;
        }
        let dxs = ops::entry_vjp(t, e, &dys, &need)?;
        for ((input, dx), needed) in inputs.iter().zip(dxs).zip(&need) {
            if let (Some(dx), true) = (dx, *needed) {
                grads.entry(input.clone()).or_default().push(dx);
            }
        }
    }

    let mut out = HashMap::new();
    for w in wrt {
        let g = match take(t, &mut grads, w)? {
            Some(g) => g,
            None => ops::zeros_like(t, w)?,
        };
        out.insert(w.clone(), g);
    }
    Ok(out)
}

/// The gradient of `name`: its single contribution, or the `Sum` of several.
fn take(
    t: &mut Tape,
    grads: &mut HashMap<String, Vec<String>>,
    name: &str,
) -> Result<Option<String>, TrainError> {
    let Some(parts) = grads.remove(name) else {
        return Ok(None);
    };
    match parts.len() {
        0 => Ok(None),
        1 => Ok(parts.into_iter().next()),
        _ => {
            let refs: Vec<&str> = parts.iter().map(|s| s.as_str()).collect();
            let base = format!("grad.{name}");
            Ok(Some(Builder::emit(t, "Sum", &refs, &base, vec![])?))
        }
    }
}
