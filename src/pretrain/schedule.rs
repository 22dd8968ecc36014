//! The budget and the learning-rate schedule of a pretraining run.
//!
//! Progress is the largest used fraction of the budget's limits — steps, passes over the source
//! (measured in images, so a partial pass counts), wall time — and pretraining ends when it
//! reaches 1. The learning rate warms up linearly over `warmup_steps`, then follows half a cosine
//! from `lr` to `min_lr` as progress goes from 0 to 1 (or stays at `lr`, for `constant`). With a
//! step or epoch budget the schedule is a pure function of the step and the images seen, so a
//! resumed run continues the same curve; a wall-time budget makes it depend on the clock, as it
//! must.

use crate::config::{PretrainSpec, Schedule};

/// What the run has used so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Used {
    pub steps: u64,
    /// Training images consumed (held-out ones excluded), over all passes.
    pub images: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone)]
pub struct Plan {
    spec: PretrainSpec,
    /// Training images per pass (the source's size minus the held-out share), when known.
    images_per_pass: Option<f64>,
    warmup: u64,
}

impl Plan {
    pub fn new(spec: &PretrainSpec, images_per_pass: Option<u64>) -> Self {
        let images_per_pass = images_per_pass.map(|n| n.max(1) as f64);
        let steps_in_budget = [
            spec.budget.steps.map(|s| s as f64),
            spec.budget
                .epochs
                .zip(images_per_pass)
                .map(|(e, n)| e * n / spec.batch_size as f64),
        ]
        .into_iter()
        .flatten()
        .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.min(b))));
        let warmup = spec.warmup_steps.unwrap_or_else(|| match steps_in_budget {
            Some(n) => ((n * 0.05) as u64).min(500),
            // A duration alone says nothing about steps: a short warm-up suits slow machines too.
            None => 20,
        });
        Plan {
            spec: spec.clone(),
            images_per_pass,
            warmup,
        }
    }

    #[cfg(test)]
    pub fn warmup_steps(&self) -> u64 {
        self.warmup
    }

    /// Fraction of the budget used, in [0, ∞).
    pub fn progress(&self, used: Used) -> f64 {
        let b = &self.spec.budget;
        let mut p: f64 = 0.0;
        if let Some(s) = b.steps {
            p = p.max(used.steps as f64 / s as f64);
        }
        if let (Some(e), Some(n)) = (b.epochs, self.images_per_pass) {
            p = p.max(used.images as f64 / (e * n));
        }
        if let Some(m) = b.minutes {
            p = p.max(used.seconds / (m * 60.0));
        }
        p
    }

    pub fn done(&self, used: Used) -> bool {
        self.progress(used) >= 1.0
    }

    /// Learning rate for the step about to run.
    pub fn lr(&self, used: Used) -> f32 {
        let s = &self.spec;
        let warm = if self.warmup > 0 && used.steps < self.warmup {
            (used.steps + 1) as f64 / self.warmup as f64
        } else {
            1.0
        };
        let base = match s.schedule {
            Schedule::Constant => s.lr as f64,
            Schedule::Cosine => {
                let p = self.progress(used).clamp(0.0, 1.0);
                s.min_lr as f64
                    + (s.lr as f64 - s.min_lr as f64)
                        * 0.5
                        * (1.0 + (std::f64::consts::PI * p).cos())
            }
        };
        (base * warm) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Budget;

    fn spec(steps: Option<u64>, epochs: Option<f64>) -> PretrainSpec {
        PretrainSpec {
            budget: Budget {
                steps,
                epochs,
                minutes: None,
            },
            batch_size: 10,
            optimizer: crate::train::Optimizer::adamw(0.0),
            lr: 1.0,
            min_lr: 0.0,
            warmup_steps: Some(10),
            schedule: Schedule::Cosine,
            temperature: 0.2,
            holdout: 0,
            eval_every: 1,
            checkpoint_every: 1,
            keep_checkpoints: 1,
            log_every: 1,
            preview: 0,
        }
    }

    #[test]
    fn warmup_then_cosine_to_zero_at_the_budget() {
        let plan = Plan::new(&spec(Some(100), None), None);
        let at = |steps| {
            plan.lr(Used {
                steps,
                ..Default::default()
            })
        };
        assert!((at(0) - 0.1 * (0.5 * (1.0 + 0.0f32.cos()))).abs() < 1e-6);
        assert!(at(0) < at(5) && at(5) < at(9));
        assert!((at(50) - 0.5).abs() < 1e-6, "{}", at(50));
        assert!(at(99) < 0.01 && at(99) >= 0.0);
        assert!(plan.done(Used {
            steps: 100,
            ..Default::default()
        }));
    }

    #[test]
    fn an_epoch_budget_counts_images_and_the_first_limit_wins() {
        let plan = Plan::new(&spec(Some(1000), Some(2.0)), Some(50));
        let used = Used {
            steps: 5,
            images: 100,
            seconds: 0.0,
        };
        assert!(plan.done(used));
        assert!((plan.progress(Used { images: 50, ..used }) - 0.5).abs() < 1e-9);
        // 2 passes of 50 images in batches of 10: 10 steps, 5 % of which rounds to no warm-up.
        let auto = Plan::new(
            &PretrainSpec {
                warmup_steps: None,
                ..spec(None, Some(2.0))
            },
            Some(50),
        );
        assert_eq!(auto.warmup_steps(), 0);
    }
}
