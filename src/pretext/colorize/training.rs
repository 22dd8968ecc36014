//! How colorization trains: the encoder reads the scaled lightness (one channel, see
//! [`L_HALF`]), a dense decoder predicts the ab bins at the target resolution (soft cross-entropy
//! against the soft encoding, made dense here) or ab itself (masked L2 on `ab / AB_SCALE`); the
//! held-out predictions are drawn in colour on the input's L, and the exported encoder starts with
//! the RGB → L [prelude](super::super::lab::prelude).

use super::super::baseline::Baseline;
use super::super::feed::{self, IMAGES};
use super::super::lab::{self, L_HALF};
use super::super::training::{
    DrawPredictions, ExportPrelude, NetworkContext, PixelNorm, Slot, Training, TrainingContract,
};
use super::super::{PretextSample, TensorData, heads};
use super::{ColorTarget, Colorize};
use crate::model::{GraphBuilder, ModelError};
use crate::pretext::PretextError;
use crate::train::loss::{MASK_INPUT, TARGETS_INPUT};
use crate::train::{BatchInputs, InputLayout, Loss, TrainError};

/// The regression target is fed as `ab / AB_SCALE` (ab is within about ±110).
const AB_SCALE: f32 = 100.0;

impl TrainingContract for Colorize {
    fn training(&self, net: &NetworkContext<'_>) -> Result<Training, PretextError> {
        let s = self.size;
        let (out, target_side, loss) = match self.config.target {
            ColorTarget::Bins => (
                self.bins.len(),
                self.target_side(),
                Loss::SoftCrossEntropy {
                    class_weights: self.class_weights.clone(),
                },
            ),
            ColorTarget::Regression => (
                2,
                s,
                Loss::MaskedL2 {
                    mask_shape: Some(vec![1, 1, 1]),
                },
            ),
        };
        Ok(Training {
            input: InputLayout::Images,
            in_channels: 1,
            head: heads::decoder(net.encoder, 1, s as u32, out, target_side)?,
            loss,
        })
    }

    /// `images` ← (L − L_HALF) / L_HALF; `targets` ← the soft bins (k indices + weights) made
    /// dense over the bins, or ab / AB_SCALE with `mask` = 1.
    fn fill(
        &self,
        sample: &PretextSample,
        at: Slot,
        _norm: &PixelNorm,
        dst: &mut dyn BatchInputs,
    ) -> Result<(), TrainError> {
        let (inputs, targets) = (&sample.inputs, &sample.targets);
        let l = feed::f32s(inputs, 0, "input")?;
        let d = feed::slot(dst.input_f32_mut(IMAGES)?, at, l.len(), IMAGES)?;
        for (d, &v) in d.iter_mut().zip(l) {
            *d = v / L_HALF;
        }
        match self.config.target {
            ColorTarget::Bins => {
                let bins = self.bins.len();
                let index = feed::i64s(targets, 1, "target")?;
                let weight = feed::f32s(targets, 2, "target")?;
                let cells = feed::i64s(targets, 0, "target")?.len();
                let d = feed::slot(
                    dst.input_f32_mut(TARGETS_INPUT)?,
                    at,
                    bins * cells,
                    TARGETS_INPUT,
                )?;
                d.fill(0.0);
                for (j, (&q, &w)) in index.iter().zip(weight).enumerate() {
                    let q = usize::try_from(q)
                        .ok()
                        .filter(|q| *q < bins)
                        .ok_or_else(|| {
                            TrainError::Spec(format!("colour bin {q} is not below {bins}"))
                        })?;
                    d[q * cells + j % cells] += w;
                }
            }
            ColorTarget::Regression => {
                let ab = feed::f32s(targets, 0, "target")?;
                let d = feed::slot(
                    dst.input_f32_mut(TARGETS_INPUT)?,
                    at,
                    ab.len(),
                    TARGETS_INPUT,
                )?;
                for (d, &v) in d.iter_mut().zip(ab) {
                    *d = v / AB_SCALE;
                }
                dst.input_f32_mut(MASK_INPUT)?.fill(1.0);
            }
        }
        Ok(())
    }

    fn baseline(&self, batch: usize) -> Baseline {
        match self.config.target {
            ColorTarget::Bins => match &self.class_weights {
                None => Baseline::soft_prior(self.bins.len(), batch),
                Some(w) => Baseline::weighted_soft_prior(w.clone(), batch),
            },
            ColorTarget::Regression => Baseline::channel_means(2, batch),
        }
    }

    fn predictions(&self) -> Option<&dyn DrawPredictions> {
        Some(self)
    }

    fn export_prelude(&self) -> Option<&dyn ExportPrelude> {
        Some(self)
    }
}

/// (L in grey, L with the predicted ab); bins are decoded with the annealed mean at the config's
/// temperature.
impl DrawPredictions for Colorize {
    fn panels(
        &self,
        sample: &PretextSample,
        pred: &[f32],
        _at: Slot,
        _batch: &mut dyn BatchInputs,
        _norm: &PixelNorm,
    ) -> Result<(Vec<u8>, Vec<u8>), TrainError> {
        let s = self.size;
        let Some(TensorData::F32(l_centred)) = sample.inputs.first() else {
            return Ok((vec![0; 3 * s * s], vec![0; 3 * s * s]));
        };
        let l: Vec<f32> = l_centred.iter().map(|v| v + L_HALF).collect();
        let grey = lab::lab_to_rgb8(&l, &[]);
        let mut ab = vec![0.0f32; 2 * s * s];
        match self.config.target {
            ColorTarget::Bins => {
                let bins = self.bins.len();
                let m = self.target_side();
                let cells = m * m;
                let mut probs = vec![0.0f32; bins];
                for cell in 0..cells {
                    let logits: Vec<f32> = (0..bins).map(|q| pred[q * cells + cell]).collect();
                    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    for (p, z) in probs.iter_mut().zip(&logits) {
                        *p = (z - max).exp();
                    }
                    let [a, b] = self.bins.annealed_mean(&probs, self.config.temperature);
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
            ColorTarget::Regression => {
                for (d, v) in ab.iter_mut().zip(pred) {
                    *d = v * AB_SCALE;
                }
            }
        }
        Ok((grey, lab::lab_to_rgb8(&l, &ab)))
    }
}

impl ExportPrelude for Colorize {
    fn emit(
        &self,
        g: &mut GraphBuilder,
        images: &str,
        norm: &PixelNorm,
    ) -> Result<String, ModelError> {
        lab::prelude::scaled_lightness(g, images, &norm.mean, &norm.std)
    }

    fn describe(&self, norm: &PixelNorm) -> String {
        format!(
            "pretrained by colorization: RGB input (normalised with mean {:?}, std {:?}) is converted to CIE L, (L - {L_HALF}) / {L_HALF}",
            norm.mean, norm.std
        )
    }
}
