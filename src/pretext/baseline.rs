//! The yardstick of the held-out loss: the loss of the best prediction that ignores the input,
//! accumulated over held-out batches from the same buffers the task's feed filled. Uniform logits
//! for hard labels (ln K), the class prior for soft targets, the per-channel mean for masked L2.
//! A task picks its kind in [`TrainingContract::baseline`].
//!
//! [`TrainingContract::baseline`]: super::training::TrainingContract::baseline

use crate::train::loss::{MASK_INPUT, TARGETS_INPUT};
use crate::train::{BatchInputs, TrainError};

#[derive(Debug, Clone, Default)]
pub struct Baseline {
    /// Samples per batch of the buffers read.
    batch: usize,
    classes: Option<usize>,
    /// Soft targets: per-class sums and the number of positions.
    soft: Vec<f64>,
    positions: f64,
    /// Masked L2: per channel Σw, Σw·t, Σw·t²; elements per mask value.
    moments: Vec<[f64; 3]>,
}

impl Baseline {
    /// Hard labels over `classes` classes: ln K.
    pub fn chance(classes: usize, batch: usize) -> Self {
        Baseline {
            batch,
            classes: Some(classes),
            ..Default::default()
        }
    }

    /// Soft targets over `bins` classes (`targets` `[B, K, …]`): the entropy of the class prior.
    pub fn soft_prior(bins: usize, batch: usize) -> Self {
        Baseline {
            batch,
            soft: vec![0.0; bins],
            ..Default::default()
        }
    }

    /// Masked L2 on `channels` target channels (`targets` `[B, C, …]`, `mask` per pixel or per
    /// sample): the weighted variance around each channel's weighted mean.
    pub fn channel_means(channels: usize, batch: usize) -> Self {
        Baseline {
            batch,
            moments: vec![[0.0; 3]; channels],
            ..Default::default()
        }
    }

    /// Adds the first `rows` samples of the batch in `src`.
    pub fn add(&mut self, rows: usize, src: &mut dyn BatchInputs) -> Result<(), TrainError> {
        if !self.soft.is_empty() {
            let t = src.input_f32_mut(TARGETS_INPUT)?;
            let per = t.len() / self.batch;
            let cells = per / self.soft.len();
            for sample in t[..rows * per].chunks_exact(per) {
                for (q, plane) in sample.chunks_exact(cells).enumerate() {
                    self.soft[q] += plane.iter().map(|&v| f64::from(v)).sum::<f64>();
                }
                self.positions += cells as f64;
            }
        } else if !self.moments.is_empty() {
            let channels = self.moments.len();
            let m = src.input_f32_mut(MASK_INPUT)?.to_vec();
            let t = src.input_f32_mut(TARGETS_INPUT)?;
            let (per_t, per_m) = (t.len() / self.batch, m.len() / self.batch);
            let plane = per_t / channels;
            for r in 0..rows {
                for c in 0..channels {
                    for j in 0..plane {
                        // The mask has one value per pixel, or one per sample (broadcast).
                        let w = f64::from(m[r * per_m + if per_m == plane { j } else { 0 }]);
                        let v = f64::from(t[r * per_t + c * plane + j]);
                        let acc = &mut self.moments[c];
                        acc[0] += w;
                        acc[1] += w * v;
                        acc[2] += w * v * v;
                    }
                }
            }
        }
        Ok(())
    }

    /// The baseline loss over everything added, if the task has one.
    pub fn loss(&self) -> Option<f64> {
        if !self.soft.is_empty() {
            let n = self.positions;
            return (n > 0.0).then(|| {
                -self
                    .soft
                    .iter()
                    .filter(|&&s| s > 0.0)
                    .map(|&s| s / n * (s / n).ln())
                    .sum::<f64>()
            });
        }
        if !self.moments.is_empty() {
            let (mut num, mut den) = (0.0, 0.0);
            for [w, wt, wt2] in &self.moments {
                if *w > 0.0 {
                    num += wt2 - wt * wt / w;
                    den += w;
                }
            }
            return (den > 0.0).then(|| num / den);
        }
        self.classes.map(|k| (k as f64).ln())
    }
}
