//! `predictions.png`: what a dense pretext model makes of held-out images, one row per image —
//! the original, what the network sees, what it predicts. Drawn for colorization (the L input
//! in grey, the predicted colours on the same L; bins are decoded with the annealed mean of the
//! task's temperature) and inpainting (the hole filled with the prediction). Other tasks have no
//! picture to draw and write nothing.

use std::path::Path;

use super::super::PipelineError;
use super::super::preview::write_sheet;
use super::feed::{Feed, FeedKind};
use super::{HeldOut, train_err};
use crate::config::{Normalization, Pipeline};
use crate::model::ParamSet;
use crate::pretext::colorize::Colorize;
use crate::pretext::draw::{self, Canvas};
use crate::pretext::{TaskConfig, TensorData, lab};
use crate::train::{BatchInputs, Evaluator, Network};

/// Writes the predictions sheet for up to `count` held-out images (at most one batch).
#[allow(clippy::too_many_arguments)]
pub fn write(
    out: &Path,
    plan: &Pipeline,
    network: &Network,
    params: &ParamSet,
    mut evaluator: Evaluator,
    feed: &Feed,
    norm: &Normalization,
    heldout: &[HeldOut],
    count: usize,
) -> Result<(), PipelineError> {
    let colorize = match (plan.pretext(), &feed.kind) {
        (Some(TaskConfig::Colorize(c)), FeedKind::ColorBins { .. } | FeedKind::ColorAb) => Some(
            c.build(plan.decode.size as usize)
                .map_err(|e| PipelineError::stage("pretext", None, e.to_string()))?,
        ),
        (_, FeedKind::Inpaint) => None,
        _ => return Ok(()),
    };
    let n = count.min(heldout.len()).min(feed.batch);
    if n == 0 {
        return Ok(());
    }
    for i in 0..feed.batch {
        feed.fill(&heldout[i % n].sample, i, norm, &mut evaluator)
            .map_err(train_err)?;
    }
    let (_, pred) = evaluator
        .run_with_prediction(params, 0)
        .map_err(train_err)?;
    let per = network.prediction_shape()[1..].iter().product::<usize>();
    let s = plan.decode.size as usize;
    let mut rows = Vec::with_capacity(n);
    for (i, h) in heldout.iter().take(n).enumerate() {
        let p = &pred[i * per..(i + 1) * per];
        let (seen, predicted) = match &colorize {
            Some(task) => colour_panels(task, feed, &h.sample.inputs, p, s),
            None => {
                let mask = evaluator
                    .input_f32_mut(crate::train::loss::MASK_INPUT)
                    .map_err(train_err)?;
                inpaint_panels(
                    &h.sample.inputs,
                    p,
                    &mask[i * s * s..(i + 1) * s * s],
                    norm,
                    s,
                )
            }
        };
        let gap = 4;
        let mut c = Canvas::new(3 * s + 4 * gap, s + 2 * gap, draw::BACKGROUND);
        c.blit_hwc(gap, gap, s, s, &h.rgb);
        c.blit_hwc(2 * gap + s, gap, s, s, &seen);
        c.blit_hwc(3 * gap + 2 * s, gap, s, s, &predicted);
        rows.push(c.into_parts());
    }
    write_sheet(out, &rows)
}

/// (L in grey, L with the predicted ab), both HWC RGB8.
fn colour_panels(
    task: &Colorize,
    feed: &Feed,
    inputs: &[TensorData],
    pred: &[f32],
    s: usize,
) -> (Vec<u8>, Vec<u8>) {
    let Some(TensorData::F32(l_centred)) = inputs.first() else {
        return (vec![0; 3 * s * s], vec![0; 3 * s * s]);
    };
    let l: Vec<f32> = l_centred.iter().map(|v| v + 50.0).collect();
    let grey = lab::lab_to_rgb8(&l, &[]);
    let mut ab = vec![0.0f32; 2 * s * s];
    match feed.kind {
        FeedKind::ColorBins { bins } => {
            let m = task.target_side();
            let cells = m * m;
            let mut probs = vec![0.0f32; bins];
            for cell in 0..cells {
                let logits: Vec<f32> = (0..bins).map(|q| pred[q * cells + cell]).collect();
                let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                for (p, z) in probs.iter_mut().zip(&logits) {
                    *p = (z - max).exp();
                }
                let [a, b] = task.bins().annealed_mean(&probs, task.config().temperature);
                let (cy, cx) = (cell / m, cell % m);
                let d = s / m;
                for y in cy * d..(cy + 1) * d {
                    for x in cx * d..(cx + 1) * d {
                        ab[y * s + x] = a;
                        ab[s * s + y * s + x] = b;
                    }
                }
            }
        }
        _ => {
            for (d, v) in ab.iter_mut().zip(pred) {
                *d = v * 100.0;
            }
        }
    }
    (grey, lab::lab_to_rgb8(&l, &ab))
}

/// (the holed input, the input with the prediction where the loss looks), HWC RGB8.
fn inpaint_panels(
    inputs: &[TensorData],
    pred: &[f32],
    mask: &[f32],
    norm: &Normalization,
    s: usize,
) -> (Vec<u8>, Vec<u8>) {
    let Some(TensorData::U8(chw)) = inputs.first() else {
        return (vec![0; 3 * s * s], vec![0; 3 * s * s]);
    };
    let plane = s * s;
    let mut seen = vec![0u8; 3 * plane];
    let mut filled = vec![0u8; 3 * plane];
    for j in 0..plane {
        for c in 0..3 {
            let v = chw[c * plane + j];
            seen[j * 3 + c] = v;
            filled[j * 3 + c] = if mask[j] > 0.0 {
                let x = (pred[c * plane + j] * norm.std[c] + norm.mean[c]) * 255.0;
                x.round().clamp(0.0, 255.0) as u8
            } else {
                v
            };
        }
    }
    (seen, filled)
}
