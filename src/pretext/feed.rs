//! Helpers the tasks' [`TrainingContract::fill`] share: typed access to a sample's tensors, the
//! length-checked destination slot of a batch buffer, and 8-bit pixels normalised with the model's
//! mean/std. Each task's own conversions (colorization's L and bins, MAE's patch grid, …) live in
//! its file.
//!
//! Guarantees: a tensor of the wrong type or length is a [`TrainError`] naming it, never a panic.
//!
//! [`TrainingContract::fill`]: super::training::TrainingContract::fill

use super::TensorData;
use crate::train::loss::LABELS_INPUT;
use crate::train::{BatchInputs, TrainError};

/// The pipeline's pixel normalisation (`(v/255 − mean[c]) / std[c]`), as the feed and the drawing
/// of predictions need it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelNorm {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Slot `index` of a batch of `batch` samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub index: usize,
    pub batch: usize,
}

/// The encoder's image input of the train step.
pub const IMAGES: &str = crate::model::encoder::IMAGES_INPUT;

/// Tensor `i` of `t` (a sample's inputs or targets, named `what` in errors) as 8-bit values.
pub fn u8s<'a>(t: &'a [TensorData], i: usize, what: &str) -> Result<&'a [u8], TrainError> {
    match t.get(i) {
        Some(TensorData::U8(v)) => Ok(v),
        _ => Err(TrainError::Spec(format!("pretext {what} {i} is not 8-bit"))),
    }
}

/// Tensor `i` of `t` as float32 values.
pub fn f32s<'a>(t: &'a [TensorData], i: usize, what: &str) -> Result<&'a [f32], TrainError> {
    match t.get(i) {
        Some(TensorData::F32(v)) => Ok(v),
        _ => Err(TrainError::Spec(format!(
            "pretext {what} {i} is not float32"
        ))),
    }
}

/// Tensor `i` of `t` as int64 values.
pub fn i64s<'a>(t: &'a [TensorData], i: usize, what: &str) -> Result<&'a [i64], TrainError> {
    match t.get(i) {
        Some(TensorData::I64(v)) => Ok(v),
        _ => Err(TrainError::Spec(format!("pretext {what} {i} is not int64"))),
    }
}

/// The destination of `slot` in the batch buffer `buf`, length checked against the source's
/// `len`.
pub fn slot<'a, T>(
    buf: &'a mut [T],
    slot: Slot,
    len: usize,
    name: &str,
) -> Result<&'a mut [T], TrainError> {
    let per = buf.len() / slot.batch;
    if per != len || slot.index >= slot.batch {
        return Err(TrainError::BatchSize {
            name: name.into(),
            expected: per,
            found: len,
        });
    }
    Ok(&mut buf[slot.index * len..(slot.index + 1) * len])
}

/// Writes 8-bit CHW planes normalised as `(v/255 − mean[c]) / std[c]`; the channel cycles every
/// `plane` values, so stacked images (`[V, 3, S, S]`) work too.
pub fn normalise_into(dst: &mut [f32], src: &[u8], plane: usize, norm: &PixelNorm) {
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * norm.std[c]));
    let shift: [f32; 3] = std::array::from_fn(|c| norm.mean[c] / norm.std[c]);
    for (k, (d, s)) in dst.chunks_mut(plane).zip(src.chunks(plane)).enumerate() {
        let c = k % 3;
        for (d, &s) in d.iter_mut().zip(s) {
            *d = f32::from(s) * scale[c] - shift[c];
        }
    }
}

/// `images` ← input 0: 8-bit pixels normalised (channel planes of `plane` values), or float
/// values copied as they are.
pub fn images(
    inputs: &[TensorData],
    at: Slot,
    plane: usize,
    norm: &PixelNorm,
    dst: &mut dyn BatchInputs,
) -> Result<(), TrainError> {
    let images = dst.input_f32_mut(IMAGES)?;
    match inputs.first() {
        Some(TensorData::U8(px)) => {
            let d = slot(images, at, px.len(), IMAGES)?;
            normalise_into(d, px, plane, norm);
        }
        Some(TensorData::F32(v)) => {
            slot(images, at, v.len(), IMAGES)?.copy_from_slice(v);
        }
        _ => return Err(TrainError::Spec("pretext input 0 is missing".into())),
    }
    Ok(())
}

/// A classification sample: `images` ← input 0 (see [`images`]), `labels` ← target 0.
pub fn classify(
    inputs: &[TensorData],
    targets: &[TensorData],
    at: Slot,
    plane: usize,
    norm: &PixelNorm,
    dst: &mut dyn BatchInputs,
) -> Result<(), TrainError> {
    images(inputs, at, plane, norm, dst)?;
    let labels = i64s(targets, 0, "target")?;
    slot(
        dst.input_i64_mut(LABELS_INPUT)?,
        at,
        labels.len(),
        LABELS_INPUT,
    )?
    .copy_from_slice(labels);
    Ok(())
}

/// Values per channel plane of a per-sample input shape (its last two dimensions).
pub fn plane(shape: &[usize]) -> usize {
    shape[shape.len().saturating_sub(2)..].iter().product()
}

/// Host buffers named like a train step's batch inputs, for the tasks' feed tests.
#[cfg(test)]
pub mod host {
    use crate::train::{BatchInputs, TrainError};
    use ort::value::{DynTensor, Tensor};

    pub struct Host(pub Vec<(&'static str, DynTensor)>);

    impl BatchInputs for Host {
        fn batch_tensor(&mut self, name: &str) -> Result<&mut DynTensor, TrainError> {
            self.0
                .iter_mut()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| TrainError::Spec(name.into()))
        }
    }

    pub fn zeros(shape: &[usize]) -> DynTensor {
        crate::runtime::environment(None).unwrap();
        Tensor::from_array((shape.to_vec(), vec![0f32; shape.iter().product()]))
            .unwrap()
            .upcast()
    }
}
