//! The encoder the embed phase runs: built from the pipeline's `[model]` (the built-in family, or
//! a user's ONNX file), loaded into an ONNX Runtime session, and checked against the pipeline
//! before any image is read — wrong input size, channel count or output rank is an error that
//! names the model, never a failure halfway through a run.

use std::path::PathBuf;

use ort::session::Session;
use ort::value::ValueType;

use super::PipelineError;
use crate::config::{ModelSpec, Pipeline};
use crate::model::{BuiltinEncoder, model_id};
use crate::runtime;

pub struct Encoder {
    pub session: Session,
    /// The ONNX file's bytes (for the built-in encoder, what `encoder.onnx` will hold).
    pub onnx: Vec<u8>,
    pub model_id: String,
    pub input: String,
    pub output: String,
    /// Embedding length if the model declares it; otherwise learned from the first batch.
    pub dim: Option<usize>,
    /// Where the model came from, for messages and the summary.
    pub origin: String,
}

/// Builds the encoder session for `plan`. Loads ONNX Runtime if it is not loaded yet.
pub fn load(plan: &Pipeline) -> Result<Encoder, PipelineError> {
    let (onnx, origin, input, output) = match &plan.model {
        ModelSpec::Builtin { spec, seed, .. } => {
            let encoder = BuiltinEncoder::new(spec.clone(), plan.decode.size)?;
            let params = encoder.init_params(*seed);
            (
                encoder.to_onnx(&params)?,
                format!("built-in encoder (seed {seed})"),
                None,
                None,
            )
        }
        ModelSpec::Onnx {
            path,
            input,
            output,
            ..
        } => {
            let bytes = std::fs::read(path).map_err(|e| {
                PipelineError::model(path.clone(), format!("cannot read the model file: {e}"))
            })?;
            (
                bytes,
                path.display().to_string(),
                input.clone(),
                output.clone(),
            )
        }
    };
    let model_path = match &plan.model {
        ModelSpec::Onnx { path, .. } => path.clone(),
        ModelSpec::Builtin { .. } => PathBuf::from("<built-in encoder>"),
    };
    open(plan, onnx, origin, input, output, model_path)
}

/// The encoder from ONNX bytes made in this process (a pretrained built-in encoder).
pub fn from_bytes(
    plan: &Pipeline,
    onnx: Vec<u8>,
    origin: String,
) -> Result<Encoder, PipelineError> {
    runtime::environment(plan.runtime.library.as_deref())?;
    open(
        plan,
        onnx,
        origin,
        None,
        None,
        PathBuf::from("<pretrained encoder>"),
    )
}

fn open(
    plan: &Pipeline,
    onnx: Vec<u8>,
    origin: String,
    input: Option<String>,
    output: Option<String>,
    model_path: PathBuf,
) -> Result<Encoder, PipelineError> {
    let env = runtime::environment(plan.runtime.library.as_deref())?;
    let session = runtime::session_from_bytes(env, &plan.runtime.session, &onnx)?;
    let (input, output, dim) = check_signature(&session, input, output, plan.decode.size)
        .map_err(|reason| PipelineError::model(model_path, reason))?;
    Ok(Encoder {
        model_id: model_id(&onnx),
        session,
        onnx,
        input,
        output,
        dim,
        origin,
    })
}

/// Picks and checks the image input (`[N, 3, S, S]`, float) and embedding output (`[N, D]` or
/// `[N, D, 1, 1]`); returns their names and D when known.
fn check_signature(
    session: &Session,
    input: Option<String>,
    output: Option<String>,
    size: u32,
) -> Result<(String, String, Option<usize>), String> {
    let names = |outlets: &[ort::value::Outlet]| {
        outlets
            .iter()
            .map(|o| o.name().to_string())
            .collect::<Vec<_>>()
    };
    let inputs = session.inputs();
    let input_outlet = match &input {
        Some(name) => inputs.iter().find(|o| o.name() == name).ok_or_else(|| {
            format!(
                "has no input named {name:?}; its inputs are {:?}",
                names(inputs)
            )
        })?,
        None if inputs.len() == 1 => &inputs[0],
        None => {
            return Err(format!(
                "has {} inputs {:?}; say which one takes the images with `input = \"...\"` in [model]",
                inputs.len(),
                names(inputs)
            ));
        }
    };
    let (ty, shape) = tensor(input_outlet.dtype())
        .ok_or_else(|| format!("input {:?} is not a tensor", input_outlet.name()))?;
    if ty != ort::value::TensorElementType::Float32 {
        return Err(format!(
            "input {:?} has element type {ty:?}; sslpipe feeds float32 images",
            input_outlet.name()
        ));
    }
    let fits = |d: i64, want: i64| d < 0 || d == want;
    if shape.len() != 4
        || !fits(shape[1], 3)
        || !fits(shape[2], size as i64)
        || !fits(shape[3], size as i64)
    {
        return Err(format!(
            "input {:?} has shape {shape:?}; the pipeline feeds [N, 3, {size}, {size}] (set [decode] size to the model's input size)",
            input_outlet.name()
        ));
    }
    let outputs = session.outputs();
    let output_outlet = match &output {
        Some(name) => outputs.iter().find(|o| o.name() == name).ok_or_else(|| {
            format!(
                "has no output named {name:?}; its outputs are {:?}",
                names(outputs)
            )
        })?,
        None => outputs.first().ok_or("has no outputs")?,
    };
    let (ty, shape) = tensor(output_outlet.dtype())
        .ok_or_else(|| format!("output {:?} is not a tensor", output_outlet.name()))?;
    if ty != ort::value::TensorElementType::Float32 {
        return Err(format!(
            "output {:?} has element type {ty:?}; embeddings must be float32",
            output_outlet.name()
        ));
    }
    let flat = shape.len() == 2 || (shape.len() == 4 && fits(shape[2], 1) && fits(shape[3], 1));
    if !flat {
        return Err(format!(
            "output {:?} has shape {shape:?}; an embedding output is [N, D] or [N, D, 1, 1]",
            output_outlet.name()
        ));
    }
    let dim = (shape[1] > 0).then_some(shape[1] as usize);
    Ok((
        input_outlet.name().to_string(),
        output_outlet.name().to_string(),
        dim,
    ))
}

fn tensor(t: &ValueType) -> Option<(ort::value::TensorElementType, Vec<i64>)> {
    match t {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.iter().copied().collect())),
        _ => None,
    }
}
