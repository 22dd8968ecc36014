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
    /// Soft targets: per-class sums (weighted by `class_weights`) and the number of positions.
    soft: Vec<f64>,
    positions: f64,
    /// The soft cross-entropy's class weights: a position counts with the weight of its most
    /// likely target class.
    class_weights: Option<Vec<f32>>,
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

    /// Soft targets under class weights (one per class): the best constant prediction is the
    /// weighted class prior, its loss `−(1/n) Σ_q S_q ln(S_q / Σ S)` with `S_q` the weighted
    /// target sums.
    pub fn weighted_soft_prior(class_weights: Vec<f32>, batch: usize) -> Self {
        Baseline {
            batch,
            soft: vec![0.0; class_weights.len()],
            class_weights: Some(class_weights),
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
                if let Some(w) = &self.class_weights {
                    for cell in 0..cells {
                        let target = |q: usize| sample[q * cells + cell];
                        // The first most likely class, as the loss's ArgMax picks it.
                        let top =
                            (1..w.len()).fold(0, |b, q| if target(q) > target(b) { q } else { b });
                        for (q, s) in self.soft.iter_mut().enumerate() {
                            *s += f64::from(w[top]) * f64::from(target(q));
                        }
                    }
                } else {
                    for (q, plane) in sample.chunks_exact(cells).enumerate() {
                        self.soft[q] += plane.iter().map(|&v| f64::from(v)).sum::<f64>();
                    }
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
            if self.class_weights.is_some() {
                let total: f64 = self.soft.iter().sum();
                return (n > 0.0 && total > 0.0).then(|| {
                    -self
                        .soft
                        .iter()
                        .filter(|&&s| s > 0.0)
                        .map(|&s| s / n * (s / total).ln())
                        .sum::<f64>()
                });
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretext::feed::host::{Host, zeros};

    #[test]
    fn the_weighted_soft_prior_is_the_best_constant_under_class_weights() {
        // One sample, 2 classes, 2 positions: [1, 0] (class 0, weight 2) and [0.25, 0.75]
        // (class 1, weight 1).
        let mut host = Host(vec![(TARGETS_INPUT, zeros(&[1, 2, 1, 2]))]);
        host.input_f32_mut(TARGETS_INPUT)
            .unwrap()
            .copy_from_slice(&[1.0, 0.25, 0.0, 0.75]);
        let weighted_loss =
            |p: [f64; 2]| -(2.0 * p[0].ln() + (0.25 * p[0].ln() + 0.75 * p[1].ln())) / 2.0;
        let mut b = Baseline::weighted_soft_prior(vec![2.0, 1.0], 1);
        b.add(1, &mut host).unwrap();
        let best = weighted_loss([0.75, 0.25]);
        assert!((b.loss().unwrap() - best).abs() < 1e-12);
        for p0 in [0.5, 0.7, 0.8, 0.9] {
            assert!(weighted_loss([p0, 1.0 - p0]) > best);
        }
        // Unit weights give the unweighted prior's entropy.
        let mut unit = Baseline::weighted_soft_prior(vec![1.0, 1.0], 1);
        unit.add(1, &mut host).unwrap();
        let mut plain = Baseline::soft_prior(2, 1);
        plain.add(1, &mut host).unwrap();
        assert!((unit.loss().unwrap() - plain.loss().unwrap()).abs() < 1e-12);
    }
}
