//! Class rebalancing of colorization (Zhang et al. eq. 4): the empirical bin distribution of the
//! data ([`BinHistogram`]) and the per-bin loss weights derived from it ([`RebalanceWeights`]).

use super::super::{PretextError, PretextSample, TensorData, lab};
use super::bins::BinSet;
use super::invalid;

/// Counts of bins seen in `bins` targets: the empirical distribution the rebalancing weights are
/// estimated from. Accumulate per worker and [`merge`](BinHistogram::merge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinHistogram {
    counts: Vec<u64>,
}

impl BinHistogram {
    /// An empty histogram over `num_bins` classes.
    pub fn new(num_bins: usize) -> Self {
        Self {
            counts: vec![0; num_bins],
        }
    }

    /// Counts one bin; an index outside the histogram is ignored and reported as `false`.
    pub fn add_bin(&mut self, bin: usize) -> bool {
        match self.counts.get_mut(bin) {
            Some(c) => {
                *c += 1;
                true
            }
            None => false,
        }
    }

    /// Counts every index of a `bins` target; returns how many were out of range (ignored).
    pub fn add_bins(&mut self, bins: &[i64]) -> usize {
        bins.iter()
            .filter(|&&b| !self.add_bin(usize::try_from(b).unwrap_or(usize::MAX)))
            .count()
    }

    /// Counts the hard `bins` target of a sample made by a `bins` [`Colorize`] (its first target).
    /// Returns how many values were ignored (out of range, or a sample of another shape: all).
    pub fn add_sample(&mut self, sample: &PretextSample) -> usize {
        match sample.targets.first() {
            Some(TensorData::I64(bins)) => self.add_bins(bins),
            Some(other) => other.len(),
            None => 0,
        }
    }

    /// Adds another histogram's counts (same number of bins; extra bins of `other` are ignored).
    pub fn merge(&mut self, other: &BinHistogram) {
        for (c, o) in self.counts.iter_mut().zip(&other.counts) {
            *c += o;
        }
    }

    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The counts normalised to sum to 1 (all zeros while empty).
    pub fn distribution(&self) -> Vec<f64> {
        let total = self.total().max(1) as f64;
        self.counts.iter().map(|&c| c as f64 / total).collect()
    }
}

/// Per-bin loss weights that counter the dominance of desaturated colours (paper eq. 4).
#[derive(Debug, Clone, PartialEq)]
pub struct RebalanceWeights {
    /// `w_q`, one per bin, with `Σ_q p̃_q·w_q = 1`.
    pub weights: Vec<f32>,
    /// `p̃`: the smoothed empirical distribution the weights were computed from.
    pub smoothed: Vec<f64>,
}

impl RebalanceWeights {
    /// Eq. 4 of Zhang et al.: `p̃` = the empirical distribution (any non-negative counts or
    /// frequencies, one per bin of `bins`) smoothed by a Gaussian of `sigma` over the bin centres;
    /// `w ∝ ((1 − λ)·p̃ + λ/Q)⁻¹`, normalised so that `E_p̃[w] = Σ p̃_q w_q = 1`.
    ///
    /// The smoothing spreads each bin's mass over all bins with weights `exp(−|c_q − c_j|²/2σ²)`
    /// normalised per source bin, so `p̃` is a distribution again (mass is neither lost at the
    /// gamut's edge nor created). Fails on a length mismatch, negative or non-finite entries, an
    /// all-zero distribution, λ outside [0, 1], a non-positive σ, or infinite weights (λ = 0 with
    /// bins that have no smoothed mass).
    pub fn estimate(
        bins: &BinSet,
        empirical: &[f64],
        lambda: f64,
        sigma: f64,
    ) -> Result<RebalanceWeights, PretextError> {
        let q = bins.len();
        if empirical.len() != q {
            return Err(invalid(format!(
                "rebalancing needs one frequency per bin ({q}), found {}",
                empirical.len()
            )));
        }
        if empirical.iter().any(|p| !(p.is_finite() && *p >= 0.0)) {
            return Err(invalid("bin frequencies must be finite and >= 0".into()));
        }
        let total: f64 = empirical.iter().sum();
        if !(total > 0.0 && total.is_finite()) {
            return Err(invalid(
                "no bins observed: cannot estimate rebalancing weights".into(),
            ));
        }
        if !(0.0..=1.0).contains(&lambda) {
            return Err(invalid(format!(
                "rebalance lambda must be within [0, 1], found {lambda}"
            )));
        }
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(invalid(format!(
                "smoothing sigma must be positive, found {sigma}"
            )));
        }
        let scale = -1.0 / (2.0 * sigma * sigma);
        let mut smoothed = vec![0.0f64; q];
        let mut kernel = vec![0.0f64; q];
        for (j, &pj) in empirical.iter().enumerate() {
            if pj == 0.0 {
                continue;
            }
            let cj = bins.centers[j];
            let mut norm = 0.0;
            for (kq, c) in kernel.iter_mut().zip(&bins.centers) {
                let (da, db) = (f64::from(c[0] - cj[0]), f64::from(c[1] - cj[1]));
                *kq = lab::exp((da * da + db * db) * scale);
                norm += *kq;
            }
            let mass = pj / total / norm;
            for (s, kq) in smoothed.iter_mut().zip(&kernel) {
                *s += mass * kq;
            }
        }
        let uniform = lambda / q as f64;
        let raw: Vec<f64> = smoothed
            .iter()
            .map(|&p| 1.0 / ((1.0 - lambda) * p + uniform))
            .collect();
        let expectation: f64 = raw.iter().zip(&smoothed).map(|(w, p)| w * p).sum();
        if !(expectation.is_finite() && expectation > 0.0) || raw.iter().any(|w| !w.is_finite()) {
            return Err(invalid(
                "rebalancing weights are infinite: lambda = 0 with unobserved bins".into(),
            ));
        }
        Ok(RebalanceWeights {
            weights: raw.iter().map(|w| (w / expectation) as f32).collect(),
            smoothed,
        })
    }
}
