//! The rows of `predictions.png`: what a pretext model makes of held-out images, one row per
//! image — the original, what the network sees, what it predicts (the task's
//! [`DrawPredictions`]). Tasks without a picture give no rows.

use super::draw::{self, Canvas};
use super::training::{DrawPredictions, PixelNorm, Slot};
use super::{PretextSample, PretextTask};
use crate::model::ParamSet;
use crate::train::{Evaluator, Network, TrainError};

/// One held-out image: its sample and its RGB8 pixels (HWC, `size × size`).
pub type HeldOutImage<'a> = (&'a PretextSample, &'a [u8]);

/// The sheet rows (width, height, HWC RGB8) for up to `count` of `heldout` (at most one batch of
/// `batch`), predicted by `network` with `params` through `evaluator`; empty when the task draws
/// no predictions or there is nothing to draw.
#[allow(clippy::too_many_arguments)]
pub fn rows(
    task: &dyn PretextTask,
    network: &Network,
    params: &ParamSet,
    evaluator: &mut Evaluator,
    norm: &PixelNorm,
    heldout: &[HeldOutImage<'_>],
    count: usize,
    batch: usize,
    size: usize,
) -> Result<Vec<(usize, usize, Vec<u8>)>, TrainError> {
    let Some(draw): Option<&dyn DrawPredictions> = task.predictions() else {
        return Ok(Vec::new());
    };
    let n = count.min(heldout.len()).min(batch);
    if n == 0 {
        return Ok(Vec::new());
    }
    for index in 0..batch {
        task.fill(heldout[index % n].0, Slot { index, batch }, norm, evaluator)?;
    }
    let (_, pred) = evaluator.run_with_prediction(params, 0)?;
    let per = network.prediction_shape()[1..].iter().product::<usize>();
    let s = size;
    let mut rows = Vec::with_capacity(n);
    for (index, (sample, rgb)) in heldout.iter().take(n).enumerate() {
        let p = &pred[index * per..(index + 1) * per];
        let slot = Slot { index, batch };
        let (seen, predicted) = draw.panels(sample, p, slot, evaluator, norm)?;
        let gap = 4;
        let mut c = Canvas::new(3 * s + 4 * gap, s + 2 * gap, draw::BACKGROUND);
        c.blit_hwc(gap, gap, s, s, rgb);
        c.blit_hwc(2 * gap + s, gap, s, s, &seen);
        c.blit_hwc(3 * gap + 2 * s, gap, s, s, &predicted);
        rows.push(c.into_parts());
    }
    Ok(rows)
}
