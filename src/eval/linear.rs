//! The linear probe: multinomial logistic (softmax) regression on standardised features, with the
//! L2 penalty chosen on validation folds of the labeled set and a final refit on all of it.
//!
//! Protocol (what [`fit`] guarantees):
//! - Standardisation: each feature is centred and scaled by the mean and (population) standard
//!   deviation of the labeled training set it is fitted on; constant features are only centred.
//!   The returned [`LinearModel`] has the standardisation folded into its weights, so it applies
//!   to raw features.
//! - Objective: `(1/n) Σ −log softmax(W·x + b)_y + (λ/2)‖W‖²` (the bias is not penalised),
//!   minimised with L-BFGS ([`super::lbfgs`]) from zero, or warm-started from the solution for the
//!   next stronger penalty.
//! - Penalty selection: every λ of the grid (default `1e2, 1e1, …, 1e-4`) is fitted on stratified
//!   folds (5-fold cross-validation up to 10,000 examples; above that only the first fold is held
//!   out, i.e. a stratified 20 % validation split). The λ with the best mean validation accuracy
//!   wins; ties go to the lower validation cross-entropy, then to the stronger penalty.
//! - Classes absent from a training set get a bias of −∞: they are never predicted.
//! - Deterministic for a given seed; work is split into fixed shards (see [`super::math`]), so the
//!   result is bit-identical on one thread or two.

use super::lbfgs::{self, LbfgsOptions, LbfgsOutcome};
#[cfg(target_arch = "x86_64")]
use super::math::avx::Avx;
use super::math::{Dot4, Matrix, Plain, argmax, axpy4, dot, map_shards};
use super::split::stratified_folds;
use crate::rng::Rng;

/// The linear probe's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearOptions {
    /// Candidate L2 penalties λ.
    pub penalties: Vec<f64>,
    /// Number of stratified folds.
    pub folds: usize,
    /// Cross-validate on all folds up to this many examples; above it, hold out one fold only.
    pub cross_validate_up_to: usize,
    pub lbfgs: LbfgsOptions,
    /// Threads for the objective (1 or 2; results do not depend on it).
    pub threads: usize,
}

impl Default for LinearOptions {
    fn default() -> Self {
        LinearOptions {
            penalties: vec![1e2, 1e1, 1.0, 1e-1, 1e-2, 1e-3, 1e-4],
            folds: 5,
            cross_validate_up_to: 10_000,
            lbfgs: LbfgsOptions {
                memory: 10,
                max_iterations: 300,
                gradient_tolerance: 1e-5,
                relative_decrease: 1e-9,
            },
            threads: 1,
        }
    }
}

/// Per-feature centring and scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    pub mean: Vec<f32>,
    pub inv_std: Vec<f32>,
}

impl Standardizer {
    /// Mean and population standard deviation of each column of `x` (accumulated in f64).
    pub fn fit(x: &Matrix) -> Self {
        let d = x.cols;
        let mut sum = vec![0.0f64; d];
        let mut sq = vec![0.0f64; d];
        for i in 0..x.rows {
            for (j, &v) in x.row(i).iter().enumerate() {
                sum[j] += f64::from(v);
            }
        }
        let n = x.rows.max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        for i in 0..x.rows {
            for (j, &v) in x.row(i).iter().enumerate() {
                sq[j] += (f64::from(v) - mean[j]).powi(2);
            }
        }
        let inv_std = sq
            .iter()
            .map(|s| {
                let std = (s / n).sqrt();
                if std > 1e-12 { (1.0 / std) as f32 } else { 1.0 }
            })
            .collect();
        Standardizer {
            mean: mean.iter().map(|&m| m as f32).collect(),
            inv_std,
        }
    }

    pub fn apply(&self, x: &Matrix) -> Matrix {
        let mut out = x.clone();
        for i in 0..out.rows {
            for ((v, m), s) in out.row_mut(i).iter_mut().zip(&self.mean).zip(&self.inv_std) {
                *v = (*v - m) * s;
            }
        }
        out
    }
}

/// A linear classifier `argmax(W·x + b)` on raw features.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearModel {
    pub classes: usize,
    pub dim: usize,
    /// `classes × dim`, row-major.
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
}

impl LinearModel {
    /// The class scores (logits) of one example.
    pub fn scores(&self, x: &[f32], out: &mut [f32]) {
        for (c, o) in out.iter_mut().enumerate().take(self.classes) {
            *o = dot(x, &self.weights[c * self.dim..(c + 1) * self.dim]) + self.bias[c];
        }
    }

    /// The predicted class of every row (ties go to the lower class index).
    pub fn predict(&self, x: &Matrix) -> Vec<usize> {
        let mut z = vec![0.0; self.classes];
        (0..x.rows)
            .map(|i| {
                self.scores(x.row(i), &mut z);
                argmax(&z)
            })
            .collect()
    }

    /// (accuracy, mean cross-entropy) on labeled rows.
    pub fn evaluate(&self, x: &Matrix, y: &[usize]) -> (f64, f64) {
        let mut z = vec![0.0; self.classes];
        let (mut correct, mut loss) = (0usize, 0.0f64);
        for (i, &yi) in y.iter().enumerate().take(x.rows) {
            self.scores(x.row(i), &mut z);
            correct += usize::from(argmax(&z) == yi);
            let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let s: f64 = z.iter().map(|&v| f64::from(v - m).exp()).sum();
            loss += s.ln() - f64::from(z[yi] - m);
        }
        let n = x.rows.max(1) as f64;
        (correct as f64 / n, loss / n)
    }
}

/// The softmax-regression objective on standardised features, over `classes` local classes.
pub struct Objective<'a> {
    pub x: &'a Matrix,
    /// Local class of every row, in `0..classes`.
    pub y: &'a [usize],
    pub classes: usize,
    pub penalty: f64,
    pub threads: usize,
}

/// Rows accumulated in f32 before the block's gradient is added into the f64 total.
const BLOCK: usize = 256;

impl Objective<'_> {
    /// Number of parameters: `classes × dim` weights, then `classes` biases.
    pub fn len(&self) -> usize {
        self.classes * (self.x.cols + 1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The objective's value at `params`; its gradient goes into `grad`.
    pub fn value_grad(&self, params: &[f64], grad: &mut [f64]) -> f64 {
        let (c, d, n) = (self.classes, self.x.cols, self.x.rows);
        let w: Vec<f32> = params[..c * d].iter().map(|&v| v as f32).collect();
        let b: Vec<f32> = params[c * d..].iter().map(|&v| v as f32).collect();
        // Two threads pay once a pass is a few million multiply-adds.
        let threads = if n * c * d >= 2_000_000 {
            self.threads
        } else {
            1
        };
        let parts = map_shards(n, threads, |range| self.partial(&w, &b, range));
        grad.fill(0.0);
        let mut loss = 0.0;
        for (l, g) in parts {
            loss += l;
            grad.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
        }
        let inv_n = 1.0 / n.max(1) as f64;
        loss *= inv_n;
        grad.iter_mut().for_each(|g| *g *= inv_n);
        for (g, &p) in grad[..c * d].iter_mut().zip(&params[..c * d]) {
            loss += 0.5 * self.penalty * p * p;
            *g += self.penalty * p;
        }
        loss
    }

    /// Unnormalised loss sum and gradient sum over the rows `range`.
    fn partial(&self, w: &[f32], b: &[f32], range: std::ops::Range<usize>) -> (f64, Vec<f64>) {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx) = Avx::detect() {
            // SAFETY: holding an `Avx` proves the CPU has AVX.
            return unsafe { self.partial_avx(avx, w, b, range) };
        }
        self.partial_kernel(Plain, w, b, range)
    }

    /// [`Self::partial_kernel`] compiled for AVX (same arithmetic, so the same bits).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx")]
    fn partial_avx(
        &self,
        avx: Avx,
        w: &[f32],
        b: &[f32],
        range: std::ops::Range<usize>,
    ) -> (f64, Vec<f64>) {
        self.partial_kernel(avx, w, b, range)
    }

    /// Rows go four at a time through [`dot4`] and [`axpy4`]; the last group of a shard repeats
    /// its last row in the unused slots, with a zero residual.
    #[inline(always)]
    fn partial_kernel<K: Dot4>(
        &self,
        kernel: K,
        w: &[f32],
        b: &[f32],
        range: std::ops::Range<usize>,
    ) -> (f64, Vec<f64>) {
        let (c, d) = (self.classes, self.x.cols);
        let mut total = vec![0.0f64; c * d + c];
        let mut block = vec![0.0f32; c * d];
        let mut z = vec![[0.0f32; 4]; c];
        let mut loss = 0.0f64;
        let mut start = range.start;
        while start < range.end {
            let end = (start + BLOCK).min(range.end);
            let mut i = start;
            while i < end {
                let m = (end - i).min(4);
                let idx = [i, i + 1.min(m - 1), i + 2.min(m - 1), i + 3.min(m - 1)];
                let rows = idx.map(|r| self.x.row(r));
                for k in 0..c {
                    let zk = kernel.dot4(rows, &w[k * d..(k + 1) * d]);
                    for s in 0..4 {
                        z[k][s] = zk[s] + b[k];
                    }
                }
                // Softmax per row; z becomes the residual p − onehot(y).
                for s in 0..4 {
                    if s >= m {
                        z.iter_mut().for_each(|zk| zk[s] = 0.0);
                        continue;
                    }
                    let yi = self.y[idx[s]];
                    let top = z.iter().map(|zk| zk[s]).fold(f32::NEG_INFINITY, f32::max);
                    let zy = z[yi][s] - top;
                    let mut sum = 0.0f32;
                    for zk in z.iter_mut() {
                        zk[s] = (zk[s] - top).exp();
                        sum += zk[s];
                    }
                    loss += f64::from(sum.ln()) - f64::from(zy);
                    let inv = 1.0 / sum;
                    for (k, zk) in z.iter_mut().enumerate() {
                        zk[s] = zk[s] * inv - if k == yi { 1.0 } else { 0.0 };
                    }
                }
                for (k, r) in z.iter().enumerate() {
                    total[c * d + k] += r.iter().map(|&v| f64::from(v)).sum::<f64>();
                    // Well-classified rows contribute nothing measurable: skip their update.
                    if r.iter().any(|v| v.abs() > 1e-9) {
                        axpy4(*r, rows, &mut block[k * d..(k + 1) * d]);
                    }
                }
                i += m;
            }
            for (t, v) in total.iter_mut().zip(block.iter_mut()) {
                *t += f64::from(*v);
                *v = 0.0;
            }
            start = end;
        }
        (loss, total)
    }
}

/// A softmax regression solution over the classes present in its training set.
#[derive(Debug, Clone, PartialEq)]
pub struct Solution {
    /// The global class of each local class, ascending.
    pub present: Vec<usize>,
    /// Local weights (`present.len() × dim`, row-major), then local biases.
    pub params: Vec<f64>,
}

impl Solution {
    /// The classifier over all `n_classes` classes; absent classes get a bias of −∞.
    pub fn model(&self, n_classes: usize, dim: usize) -> LinearModel {
        let p = self.present.len();
        let mut weights = vec![0.0f32; n_classes * dim];
        let mut bias = vec![f32::NEG_INFINITY; n_classes];
        for (local, &c) in self.present.iter().enumerate() {
            for j in 0..dim {
                weights[c * dim + j] = self.params[local * dim + j] as f32;
            }
            bias[c] = self.params[p * dim + local] as f32;
        }
        LinearModel {
            classes: n_classes,
            dim,
            weights,
            bias,
        }
    }
}

/// Fits softmax regression with penalty `penalty` on (already standardised) `x`, starting from
/// `warm` when it covers the same classes, else from zero.
pub fn train_softmax(
    x: &Matrix,
    y: &[usize],
    n_classes: usize,
    penalty: f64,
    warm: Option<&Solution>,
    options: &LinearOptions,
) -> (Solution, LbfgsOutcome) {
    let mut local_of = vec![usize::MAX; n_classes];
    for &c in y {
        local_of[c] = 0;
    }
    let present: Vec<usize> = (0..n_classes).filter(|&c| local_of[c] == 0).collect();
    for (l, &c) in present.iter().enumerate() {
        local_of[c] = l;
    }
    let local_y: Vec<usize> = y.iter().map(|&c| local_of[c]).collect();
    let objective = Objective {
        x,
        y: &local_y,
        classes: present.len(),
        penalty,
        threads: options.threads,
    };
    let mut params = match warm {
        Some(w) if w.present == present && w.params.len() == objective.len() => w.params.clone(),
        _ => vec![0.0; objective.len()],
    };
    let outcome = lbfgs::minimize(
        &mut params,
        |p, g| objective.value_grad(p, g),
        &options.lbfgs,
    );
    (Solution { present, params }, outcome)
}

/// One penalty's validation result, averaged over folds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PenaltyScore {
    pub penalty: f64,
    pub accuracy: f64,
    pub loss: f64,
}

/// A fitted linear probe.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearFit {
    /// Applies to raw (unstandardised) features.
    pub model: LinearModel,
    pub penalty: f64,
    pub validation: Vec<PenaltyScore>,
    /// L-BFGS iterations of the final refit.
    pub iterations: usize,
    pub converged: bool,
}

/// The whole protocol: standardise, choose λ on folds, refit on all of `x` (see module doc).
pub fn fit(
    x: &Matrix,
    y: &[usize],
    n_classes: usize,
    options: &LinearOptions,
    seed: u64,
) -> LinearFit {
    let standardizer = Standardizer::fit(x);
    let xs = standardizer.apply(x);
    let n = xs.rows;
    let mut penalties = options.penalties.clone();
    penalties.sort_by(|a, b| b.total_cmp(a));
    penalties.dedup();
    let k = options.folds.clamp(2, n.max(2));
    let folds = stratified_folds(
        y,
        n_classes,
        k,
        &mut Rng::for_key(seed, "eval/linear/folds"),
    );
    let used = if n <= options.cross_validate_up_to {
        k
    } else {
        1
    };
    let mut sums = vec![(0.0f64, 0.0f64, 0usize); penalties.len()];
    let mut first_fold: Vec<Option<Solution>> = vec![None; penalties.len()];
    for f in 0..used {
        let train: Vec<usize> = (0..n).filter(|&i| folds[i] != f).collect();
        let valid: Vec<usize> = (0..n).filter(|&i| folds[i] == f).collect();
        if valid.is_empty() || train.is_empty() {
            continue;
        }
        let (xt, xv) = (xs.select(&train), xs.select(&valid));
        let yt: Vec<usize> = train.iter().map(|&i| y[i]).collect();
        let yv: Vec<usize> = valid.iter().map(|&i| y[i]).collect();
        let mut warm: Option<Solution> = None;
        for (p, &penalty) in penalties.iter().enumerate() {
            let (solution, _) = train_softmax(&xt, &yt, n_classes, penalty, warm.as_ref(), options);
            let (accuracy, loss) = solution.model(n_classes, xs.cols).evaluate(&xv, &yv);
            sums[p].0 += accuracy;
            sums[p].1 += loss;
            sums[p].2 += 1;
            if first_fold[p].is_none() {
                first_fold[p] = Some(solution.clone());
            }
            warm = Some(solution);
        }
    }
    let validation: Vec<PenaltyScore> = penalties
        .iter()
        .zip(&sums)
        .map(|(&penalty, &(a, l, m))| PenaltyScore {
            penalty,
            accuracy: if m > 0 { a / m as f64 } else { f64::NAN },
            loss: if m > 0 { l / m as f64 } else { f64::NAN },
        })
        .collect();
    // Best accuracy, then lowest loss, then the stronger penalty (earlier in the grid).
    let mut best = 0;
    for (p, s) in validation.iter().enumerate() {
        let b = &validation[best];
        if s.accuracy > b.accuracy || (s.accuracy == b.accuracy && s.loss < b.loss) {
            best = p;
        }
    }
    let penalty = penalties.get(best).copied().unwrap_or(1.0);
    let warm = first_fold.get(best).and_then(|s| s.as_ref());
    let (solution, outcome) = train_softmax(&xs, y, n_classes, penalty, warm, options);
    let standardised = solution.model(n_classes, xs.cols);
    LinearFit {
        model: fold_standardisation(&standardised, &standardizer),
        penalty,
        validation,
        iterations: outcome.iterations,
        converged: outcome.converged,
    }
}

/// `W·((x − μ)/σ) + b = (W/σ)·x + (b − (W/σ)·μ)`: the same classifier on raw features.
fn fold_standardisation(model: &LinearModel, s: &Standardizer) -> LinearModel {
    let d = model.dim;
    let mut out = model.clone();
    for c in 0..model.classes {
        let row = &mut out.weights[c * d..(c + 1) * d];
        let mut shift = 0.0f64;
        for ((w, inv_std), mean) in row.iter_mut().zip(&s.inv_std).zip(&s.mean) {
            *w *= inv_std;
            shift += f64::from(*w) * f64::from(*mean);
        }
        out.bias[c] = (f64::from(out.bias[c]) - shift) as f32;
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `per_class` Gaussian points around each of `classes` random centres `spread` apart.
    pub(crate) fn blobs(
        classes: usize,
        per_class: usize,
        dim: usize,
        spread: f32,
        seed: u64,
    ) -> (Matrix, Vec<usize>) {
        let mut rng = Rng::new(seed);
        let centres: Vec<Vec<f32>> = (0..classes)
            .map(|_| (0..dim).map(|_| spread * rng.normal_f32()).collect())
            .collect();
        let mut x = Matrix::zeros(classes * per_class, dim);
        let mut y = Vec::new();
        for i in 0..classes * per_class {
            let c = i % classes;
            for (v, m) in x.row_mut(i).iter_mut().zip(&centres[c]) {
                *v = m + rng.normal_f32() + 3.0;
            }
            y.push(c);
        }
        (x, y)
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (x, _) = blobs(3, 7, 5, 1.0, 3);
        let y: Vec<usize> = (0..x.rows).map(|i| (i * 7 + 1) % 3).collect();
        let objective = Objective {
            x: &x,
            y: &y,
            classes: 3,
            penalty: 0.3,
            threads: 1,
        };
        let mut rng = Rng::new(8);
        let params: Vec<f64> = (0..objective.len())
            .map(|_| 0.3 * rng.normal_f64())
            .collect();
        let mut grad = vec![0.0; params.len()];
        let mut scratch = vec![0.0; params.len()];
        objective.value_grad(&params, &mut grad);
        let eps = 1e-3;
        for i in 0..params.len() {
            let (mut up, mut down) = (params.clone(), params.clone());
            up[i] += eps;
            down[i] -= eps;
            let fd = (objective.value_grad(&up, &mut scratch)
                - objective.value_grad(&down, &mut scratch))
                / (2.0 * eps);
            assert!(
                (fd - grad[i]).abs() < 2e-3 * grad[i].abs().max(1.0),
                "parameter {i}: analytic {} vs finite difference {fd}",
                grad[i]
            );
        }
        assert!(
            grad.iter().any(|g| g.abs() > 0.05),
            "a non-trivial gradient"
        );
    }

    #[test]
    fn separable_blobs_are_classified_almost_perfectly() {
        let (x, y) = blobs(3, 100, 50, 4.0, 1);
        let train: Vec<usize> = (0..x.rows).filter(|i| i % 2 == 0).collect();
        let test: Vec<usize> = (0..x.rows).filter(|i| i % 2 == 1).collect();
        let yt: Vec<usize> = train.iter().map(|&i| y[i]).collect();
        let fit = fit(&x.select(&train), &yt, 3, &LinearOptions::default(), 5);
        let pred = fit.model.predict(&x.select(&test));
        let accuracy = crate::eval::math::accuracy_at(&y, &test, &pred);
        assert!(accuracy >= 0.99, "accuracy {accuracy}");
        assert_eq!(fit.validation.len(), 7);
        // Same seed, same model.
        let again = super::fit(&x.select(&train), &yt, 3, &LinearOptions::default(), 5);
        assert_eq!(again.model, fit.model);
    }

    #[test]
    fn random_labels_stay_near_chance() {
        let mut rng = Rng::new(21);
        let (n, d) = (900, 20);
        let x = Matrix::from_vec(n, d, (0..n * d).map(|_| rng.normal_f32()).collect()).unwrap();
        let y: Vec<usize> = (0..n).map(|_| rng.index(3)).collect();
        let train: Vec<usize> = (0..600).collect();
        let test: Vec<usize> = (600..n).collect();
        let yt: Vec<usize> = train.iter().map(|&i| y[i]).collect();
        let fit = fit(&x.select(&train), &yt, 3, &LinearOptions::default(), 2);
        let pred = fit.model.predict(&x.select(&test));
        let accuracy = crate::eval::math::accuracy_at(&y, &test, &pred);
        // Chance is 1/3; the standard error on 300 examples is 0.027.
        assert!((accuracy - 1.0 / 3.0).abs() < 0.12, "accuracy {accuracy}");
        // Training accuracy of the refit is not the point; the chosen penalty is strong-ish.
        assert!(fit.penalty >= 1e-2, "penalty {}", fit.penalty);
    }

    #[test]
    fn absent_classes_are_never_predicted() {
        let (x, y) = blobs(3, 40, 8, 3.0, 4);
        let keep: Vec<usize> = (0..x.rows).filter(|&i| y[i] != 1).collect();
        let yk: Vec<usize> = keep.iter().map(|&i| y[i]).collect();
        let (a, _) = train_softmax(&x.select(&keep), &yk, 3, 1e-2, None, &Default::default());
        assert_eq!(a.present, vec![0, 2]);
        let model = a.model(3, 8);
        assert!(model.predict(&x).iter().all(|&p| p != 1));
    }

    #[test]
    fn objective_is_bit_identical_on_one_thread_or_two() {
        let (x, y) = blobs(2, 8_000, 130, 1.0, 6);
        let mut rng = Rng::new(1);
        let params: Vec<f64> = (0..2 * 131).map(|_| 0.1 * rng.normal_f64()).collect();
        let value = |threads| {
            let objective = Objective {
                x: &x,
                y: &y,
                classes: 2,
                penalty: 0.1,
                threads,
            };
            let mut g = vec![0.0; objective.len()];
            let v = objective.value_grad(&params, &mut g);
            (v, g)
        };
        assert_eq!(value(1), value(2));
        // The AVX build of the kernel (where the CPU has it) gives the same bits as the plain one.
        let objective = Objective {
            x: &x,
            y: &y,
            classes: 2,
            penalty: 0.1,
            threads: 1,
        };
        let w: Vec<f32> = params[..260].iter().map(|&v| v as f32).collect();
        let b: Vec<f32> = params[260..].iter().map(|&v| v as f32).collect();
        assert_eq!(
            objective.partial(&w, &b, 3..1001),
            objective.partial_kernel(Plain, &w, &b, 3..1001)
        );
    }

    /// `n` examples of `classes` classes in `dim` dimensions: class centres in a 32-d subspace,
    /// mixed into all dimensions, plus isotropic noise — overlapping classes, like real features.
    pub(crate) fn structured(
        n: usize,
        dim: usize,
        classes: usize,
        seed: u64,
    ) -> (Matrix, Vec<usize>) {
        let mut rng = Rng::new(seed);
        let rank = 32;
        let mix: Vec<f32> = (0..dim * rank)
            .map(|_| rng.normal_f32() / (rank as f32).sqrt())
            .collect();
        let centres: Vec<f32> = (0..classes * rank)
            .map(|_| 0.25 * rng.normal_f32())
            .collect();
        let mut x = Matrix::zeros(n, dim);
        let mut y = Vec::with_capacity(n);
        let mut z = vec![0.0f32; rank];
        for i in 0..n {
            let c = rng.index(classes);
            for (r, v) in z.iter_mut().enumerate() {
                *v = centres[c * rank + r] + rng.normal_f32();
            }
            for (j, v) in x.row_mut(i).iter_mut().enumerate() {
                *v = dot(&mix[j * rank..(j + 1) * rank], &z) + 0.5 * rng.normal_f32();
            }
            y.push(c);
        }
        (x, y)
    }

    /// Timings of the linear probe (run in release mode; see the README):
    /// `cargo test --release --lib eval::linear::tests::bench_linear_probe -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark: run in release mode"]
    fn bench_linear_probe() {
        for &(n, threads) in &[(1_000, 1), (60_000, 1), (60_000, 2)] {
            let (x, y) = structured(n + n / 5, 256, 10, 1);
            let train: Vec<usize> = (0..n).collect();
            let test: Vec<usize> = (n..x.rows).collect();
            let (xt, yt) = (
                x.select(&train),
                train.iter().map(|&i| y[i]).collect::<Vec<_>>(),
            );
            let options = LinearOptions {
                threads,
                ..Default::default()
            };
            let started = std::time::Instant::now();
            let (solution, outcome) = train_softmax(
                &Standardizer::fit(&xt).apply(&xt),
                &yt,
                10,
                1e-3,
                None,
                &options,
            );
            let single = started.elapsed().as_secs_f64();
            drop(solution);
            let xs = Standardizer::fit(&xt).apply(&xt);
            let objective = Objective {
                x: &xs,
                y: &yt,
                classes: 10,
                penalty: 1e-3,
                threads,
            };
            let params = vec![0.01; objective.len()];
            let mut grad = vec![0.0; objective.len()];
            let started = std::time::Instant::now();
            for _ in 0..5 {
                objective.value_grad(&params, &mut grad);
            }
            let per_eval = started.elapsed().as_secs_f64() / 5.0;
            println!(
                "{n} x 256: one objective evaluation {:.1} ms ({:.1} G multiply-adds/s)",
                per_eval * 1e3,
                2.0 * (n * 256 * 10) as f64 / per_eval / 1e9
            );
            let started = std::time::Instant::now();
            let fit = fit(&xt, &yt, 10, &options, 0);
            let whole = started.elapsed().as_secs_f64();
            let pred = fit.model.predict(&x.select(&test));
            let acc = crate::eval::math::accuracy_at(&y, &test, &pred);
            println!(
                "{n} x 256, 10 classes, {threads} thread(s): one fit (λ=1e-3) {single:.2} s \
                 ({} iterations, {} evaluations); whole protocol (7 penalties + refit) {whole:.2} s, \
                 chosen λ={:e}, test accuracy {acc:.3}",
                outcome.iterations, outcome.evaluations, fit.penalty
            );
            println!("  validation: {:?}", fit.validation);
        }
    }
}
