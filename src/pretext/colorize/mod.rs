//! Colorization pretext task (Zhang, Isola & Efros, "Colorful Image Colorization", ECCV 2016):
//! the network sees the lightness `L` of an image and predicts its colour `ab` (CIELAB).
//!
//! What it is for: a pseudo-label that needs no annotation — the colours of the image itself.
//! Two targets are offered:
//! - `regression`: the `ab` planes as they are (the simple L2/L1 variant);
//! - `bins` (default, the paper's): classification over the **in-gamut bins** of a 10-unit ab
//!   grid ([`BinSet`]), at 1/`downsample` resolution, as a hard label (`bins`) and a compact
//!   **soft encoding** — the `neighbours` (5) nearest bins with Gaussian weights (σ = 5) summing
//!   to 1 (`soft_index`, `soft_weight`) — which the loss scatters into the K classes (the dense
//!   K×(S/d)² f32 soft target would be 720 KB per 96 px image; these three are 39 KB).
//!
//! Also here: class rebalancing (paper eq. 4: [`RebalanceWeights`], from the bin frequencies of
//! the training data in `rebalance_prior`, or a [`BinHistogram`] of samples; off by default) and
//! annealed-mean decoding (eq. 5: [`BinSet::annealed_mean`]) for previews and for turning
//! predictions into colours.
//!
//! Files: this one (config, the task, its tensors and previews), `bins.rs` (the in-gamut bin set),
//! `rebalance.rs` (histogram and rebalancing weights), `training.rs` (how it trains: 1-channel
//! encoder, dense decoder, soft cross-entropy with the rebalancing weights, batch feed,
//! predictions, the RGB → L export prelude), `tests.rs`.
//!
//! What it guarantees:
//! - Tensors (per sample, `S` = working size, `m = S / downsample`):
//!   input `L` F32 `[1,S,S]` holding **L − 50** ([`lab::L_HALF`]; L ∈ [0, 100] → [−50, 50]:
//!   zero-centred, the paper's own input normalisation); targets `ab` F32 `[2,S,S]` (a, b unscaled, within about
//!   [−87, 99] × [−108, 95] for sRGB), or `bins` I64 `[m,m]`, `soft_index` I64 `[k,m,m]`,
//!   `soft_weight` F32 `[k,m,m]`, nearest bin first (`soft_index[0] == bins`).
//! - The task draws no randomness: the output is a pure function of the image, and bit-identical
//!   on every machine (CIELAB and the Gaussian weights use IEEE-only arithmetic, see `lab`).
//! - The bin set is deterministic, computed once per process for the canonical grid
//!   (`OnceLock`), and sorted by (a, b).
//! - Every config value is validated by [`ColorizeConfig::build`]; `make` never panics.
//!
//! The in-gamut bins. Two definitions, both computed from the sRGB gamut here (nothing is
//! loaded from a file), both sorted by (a, b):
//! - `reachable`: an ab bin (a square of side `grid` centred on a multiple of `grid`) is in gamut
//!   when some 8-bit sRGB colour falls in it. At grid 10 that is **261** bins.
//! - `hull` (default): the grid points inside the **convex hull** of the sRGB ab gamut grown by
//!   one grid step in a and b. At grid 10 that is **313** bins, and exactly Zhang et al.'s
//!   `pts_in_hull.npy` — the same 313 points in the same order (checked against a published copy
//!   of the list), so class indices agree with their code, prior and models. The paper says only
//!   "the Q = 313 values which are in-gamut"; the file's name and this exact match suggest how
//!   they were made. The 52 bins beyond the reachable set lie along the gamut's edge: no sRGB colour
//!   has one as its nearest bin (only a block average outside the gamut's non-convex outline
//!   can), but they take soft-encoding mass near the edge.
//!
//! Scanning the **surface** of the RGB cube is enough for both: RGB → Lab is a homeomorphism, so
//! the image of the cube is a solid whose boundary is the image of the cube's surface, and the
//! projection of a solid onto the ab plane equals the projection of its boundary (every vertical
//! line through the solid leaves it through the boundary); the convex hull of a set is that of its
//! boundary. 6·256² colours instead of 256³ — the ignored test `surface_scan_equals_full_scan`
//! checks that the full scan finds the same bins.

mod bins;
mod rebalance;
mod training;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use bins::BinSet;
pub use rebalance::{BinHistogram, RebalanceWeights};

use super::lab;
use super::{
    DType, PretextError, PretextSample, PretextTask, RgbView, Signature, TaskSettings, TensorData,
    TensorSpec,
};
use crate::rng::Rng;

const TASK: &str = "colorize";

/// What the network predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColorTarget {
    /// Classification over the in-gamut ab bins, hard and soft-encoded (Zhang et al.).
    #[default]
    Bins,
    /// The `ab` planes themselves.
    Regression,
}

/// Which ab bins count as "in gamut" (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gamut {
    /// The grid points inside the convex hull of the sRGB ab gamut grown by one grid step:
    /// Zhang et al.'s 313 bins (`pts_in_hull`), same points, same order, at grid 10.
    #[default]
    Hull,
    /// Only the bins some 8-bit sRGB colour falls in: 261 at grid 10.
    Reachable,
}

/// `[pretext.colorize]` in a pipeline TOML. Defaults are the paper's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColorizeConfig {
    /// `"bins"` (default) or `"regression"`.
    pub target: ColorTarget,
    /// Bin set: `"hull"` (default, the paper's 313) or `"reachable"` (261).
    pub gamut: Gamut,
    /// Side of the ab quantisation grid, in Lab units (10). Allowed: 1 to 100.
    pub grid: f32,
    /// Bins in the soft encoding (5). At least 1, at most the number of bins.
    pub neighbours: usize,
    /// Gaussian σ of the soft encoding and of the prior smoothing, in Lab units (5).
    pub sigma: f32,
    /// λ of the class rebalancing, mixing the prior with a uniform distribution (0.5). In [0, 1].
    pub rebalance_lambda: f32,
    /// Class rebalancing (Zhang et al. eq. 4) for `bins`: a JSON file holding the bins' frequencies
    /// in the training data (an array of one non-negative count or frequency per bin, in bin
    /// order); the loss then weighs every target position by the weight of its most likely bin
    /// ([`RebalanceWeights`], with `rebalance_lambda` and `sigma`). Unset (default): unweighted.
    pub rebalance_prior: Option<PathBuf>,
    /// Temperature of the annealed-mean decoding used by previews (0.38). Positive.
    pub temperature: f32,
    /// Bin targets are computed on the ab map averaged over `d×d` blocks (4); must divide the size.
    pub downsample: usize,
}

impl Default for ColorizeConfig {
    fn default() -> Self {
        Self {
            target: ColorTarget::Bins,
            gamut: Gamut::Hull,
            grid: 10.0,
            neighbours: 5,
            sigma: 5.0,
            rebalance_lambda: 0.5,
            rebalance_prior: None,
            temperature: 0.38,
            downsample: 4,
        }
    }
}

impl TaskSettings for ColorizeConfig {
    fn resolve_paths(&mut self, resolve: &dyn Fn(&Path) -> PathBuf) {
        self.rebalance_prior = self.rebalance_prior.as_deref().map(resolve);
    }
}

impl ColorizeConfig {
    /// Validates the config against the working size and builds the task (computing the bin set
    /// the first time it is needed). All problems are reported at once.
    pub fn build(&self, size: usize) -> Result<Colorize, PretextError> {
        let mut problems = Vec::new();
        if size == 0 {
            problems.push("the working size must be at least 1".to_string());
        }
        if !(self.grid.is_finite() && (1.0..=100.0).contains(&self.grid)) {
            problems.push(format!("grid must be within [1, 100], found {}", self.grid));
        }
        if !(self.sigma.is_finite() && self.sigma > 0.0) {
            problems.push(format!("sigma must be positive, found {}", self.sigma));
        }
        if !(0.0..=1.0).contains(&self.rebalance_lambda) {
            problems.push(format!(
                "rebalance_lambda must be within [0, 1], found {}",
                self.rebalance_lambda
            ));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            problems.push(format!(
                "temperature must be positive, found {}",
                self.temperature
            ));
        }
        if self.downsample == 0 || (size > 0 && !size.is_multiple_of(self.downsample)) {
            problems.push(format!(
                "downsample must be at least 1 and divide the working size {size}, found {}",
                self.downsample
            ));
        }
        if self.neighbours == 0 {
            problems.push("neighbours must be at least 1, found 0".to_string());
        }
        if !problems.is_empty() {
            return Err(invalid(problems.join("; ")));
        }
        let bins = BinSet::in_gamut(self.gamut, self.grid);
        if self.neighbours > bins.len() {
            return Err(invalid(format!(
                "neighbours must be at most the number of bins ({}) of grid {}, found {}",
                bins.len(),
                self.grid,
                self.neighbours
            )));
        }
        let class_weights = match (&self.rebalance_prior, self.target) {
            (None, _) => None,
            (Some(_), ColorTarget::Regression) => {
                return Err(invalid(
                    "rebalance_prior weighs bins: it needs target = \"bins\"".into(),
                ));
            }
            (Some(path), ColorTarget::Bins) => {
                let prior = read_prior(path)?;
                let w = RebalanceWeights::estimate(
                    &bins,
                    &prior,
                    f64::from(self.rebalance_lambda),
                    f64::from(self.sigma),
                )
                .map_err(|e| invalid(format!("rebalance_prior {}: {e}", path.display())))?;
                Some(w.weights)
            }
        };
        Ok(Colorize {
            config: self.clone(),
            size,
            bins,
            class_weights,
        })
    }
}

/// The bin frequencies of a `rebalance_prior` file: a JSON array of numbers.
fn read_prior(path: &Path) -> Result<Vec<f64>, PretextError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("rebalance_prior {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        invalid(format!(
            "rebalance_prior {}: a JSON array of one frequency per bin expected ({e})",
            path.display()
        ))
    })
}

fn invalid(message: String) -> PretextError {
    PretextError::Invalid {
        task: TASK,
        message,
    }
}

/// The built task: immutable, shared by all workers.
#[derive(Debug, Clone)]
pub struct Colorize {
    config: ColorizeConfig,
    size: usize,
    bins: Arc<BinSet>,
    /// Per-bin loss weights from `rebalance_prior`.
    class_weights: Option<Vec<f32>>,
}

impl Colorize {
    pub fn config(&self) -> &ColorizeConfig {
        &self.config
    }

    /// The ab bins the `bins` target indexes (also built for `regression`, for decoding).
    pub fn bins(&self) -> &Arc<BinSet> {
        &self.bins
    }

    /// Side of the bin-target maps: `size / downsample`.
    pub fn target_side(&self) -> usize {
        self.size / self.config.downsample
    }

    /// Class-rebalancing weights (eq. 4) from the bins seen so far, with the config's λ and σ.
    pub fn rebalance_weights(&self, seen: &BinHistogram) -> Result<RebalanceWeights, PretextError> {
        RebalanceWeights::estimate(
            &self.bins,
            &seen.distribution(),
            f64::from(self.config.rebalance_lambda),
            f64::from(self.config.sigma),
        )
    }

    /// Block-averages the `ab` planes (`2·S²`) over `d×d` blocks → (`a` of m², `b` of m²).
    fn downsample_ab(&self, ab: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (s, d) = (self.size, self.config.downsample);
        let m = s / d;
        let (a_plane, b_plane) = ab.split_at(s * s);
        let mut a_sum = vec![0.0f32; m * m];
        let mut b_sum = vec![0.0f32; m * m];
        for y in 0..s {
            let row = (y / d) * m;
            let (ar, br) = (&a_plane[y * s..][..s], &b_plane[y * s..][..s]);
            for x in 0..s {
                a_sum[row + x / d] += ar[x];
                b_sum[row + x / d] += br[x];
            }
        }
        let inv = 1.0 / (d * d) as f32;
        for v in a_sum.iter_mut().chain(b_sum.iter_mut()) {
            *v *= inv;
        }
        (a_sum, b_sum)
    }
}

impl PretextTask for Colorize {
    fn name(&self) -> &'static str {
        TASK
    }

    fn signature(&self) -> Signature {
        let s = self.size;
        let inputs = vec![TensorSpec::new("L", DType::F32, &[1, s, s])];
        let targets = match self.config.target {
            ColorTarget::Regression => vec![TensorSpec::new("ab", DType::F32, &[2, s, s])],
            ColorTarget::Bins => {
                let (m, k) = (self.target_side(), self.config.neighbours);
                vec![
                    TensorSpec::new("bins", DType::I64, &[m, m]),
                    TensorSpec::new("soft_index", DType::I64, &[k, m, m]),
                    TensorSpec::new("soft_weight", DType::F32, &[k, m, m]),
                ]
            }
        };
        Signature { inputs, targets }
    }

    fn make(&self, image: RgbView<'_>, _rng: &mut Rng) -> PretextSample {
        let s = self.size;
        let pixels = image.conformed(s);
        let mut l = vec![0.0f32; s * s];
        let mut ab = vec![0.0f32; 2 * s * s];
        lab::rgb8_to_lab_into(&pixels, &mut l, &mut ab);
        // Centre L for the network: [0, 100] → [−L_HALF, L_HALF].
        for v in &mut l {
            *v -= lab::L_HALF;
        }
        let targets = match self.config.target {
            ColorTarget::Regression => vec![TensorData::F32(ab)],
            ColorTarget::Bins => {
                let (a, b) = self.downsample_ab(&ab);
                let cells = a.len();
                let k = self.config.neighbours;
                let mut hard = vec![0i64; cells];
                let mut soft_index = vec![0i64; k * cells];
                let mut soft_weight = vec![0.0f32; k * cells];
                let mut idx = vec![0usize; k];
                let mut w = vec![0.0f32; k];
                for c in 0..cells {
                    self.bins
                        .soft_encode_into([a[c], b[c]], self.config.sigma, &mut idx, &mut w);
                    hard[c] = idx[0] as i64;
                    for j in 0..k {
                        soft_index[j * cells + c] = idx[j] as i64;
                        soft_weight[j * cells + c] = w[j];
                    }
                }
                vec![
                    TensorData::I64(hard),
                    TensorData::I64(soft_index),
                    TensorData::F32(soft_weight),
                ]
            }
        };
        PretextSample {
            inputs: vec![TensorData::F32(l)],
            targets,
        }
    }

    /// `L` as grey | the colour target rendered with that `L` (for `bins`: the annealed mean of the
    /// soft encoding at the config's temperature, bilinearly upsampled), 2 white pixels between.
    fn preview(&self, image: RgbView<'_>, sample: &PretextSample) -> (usize, usize, Vec<u8>) {
        let s = self.size;
        let n = s * s;
        // A sample that is not ours (wrong tensors) is recomputed rather than trusted.
        let fresh;
        let sample = if self.looks_like_ours(sample) {
            sample
        } else {
            fresh = self.make(image, &mut Rng::new(0));
            &fresh
        };
        let l: Vec<f32> = match sample.inputs.first() {
            Some(TensorData::F32(v)) => v.iter().map(|x| x + lab::L_HALF).collect(),
            _ => vec![lab::L_HALF; n],
        };
        let grey = lab::lab_to_rgb8(&l, &[]);
        let ab: Vec<f32> = match (self.config.target, sample.targets.as_slice()) {
            (ColorTarget::Regression, [TensorData::F32(ab)]) => ab.clone(),
            (ColorTarget::Bins, [_, TensorData::I64(idx), TensorData::F32(w)]) => {
                let m = self.target_side();
                let cells = m * m;
                let k = self.config.neighbours;
                let mut probs = vec![0.0f32; self.bins.len()];
                let mut a = vec![0.0f32; cells];
                let mut b = vec![0.0f32; cells];
                for c in 0..cells {
                    for j in 0..k {
                        let q = usize::try_from(idx[j * cells + c]).unwrap_or(usize::MAX);
                        if let Some(p) = probs.get_mut(q) {
                            *p += w[j * cells + c];
                        }
                    }
                    [a[c], b[c]] = self.bins.annealed_mean(&probs, self.config.temperature);
                    probs.iter_mut().for_each(|p| *p = 0.0);
                }
                let mut ab = upsample_bilinear(&a, m, s);
                ab.extend(upsample_bilinear(&b, m, s));
                ab
            }
            _ => vec![0.0; 2 * n],
        };
        let colour = lab::lab_to_rgb8(&l, &ab);
        side_by_side(s, &[&grey, &colour])
    }
}

impl Colorize {
    fn looks_like_ours(&self, sample: &PretextSample) -> bool {
        let sig = self.signature();
        sample.inputs.len() == sig.inputs.len()
            && sample.targets.len() == sig.targets.len()
            && sig
                .inputs
                .iter()
                .zip(&sample.inputs)
                .chain(sig.targets.iter().zip(&sample.targets))
                .all(|(spec, data)| spec.dtype == data.dtype() && spec.len() == data.len())
    }
}

/// Bilinear upsampling of an `m×m` plane to `s×s` (pixel centres aligned, edges clamped).
fn upsample_bilinear(src: &[f32], m: usize, s: usize) -> Vec<f32> {
    let scale = m as f32 / s as f32;
    let coord = |o: usize| {
        let x = ((o as f32 + 0.5) * scale - 0.5).clamp(0.0, (m - 1) as f32);
        let x0 = x.floor() as usize;
        (x0, (x0 + 1).min(m - 1), x - x0 as f32)
    };
    let mut out = Vec::with_capacity(s * s);
    for y in 0..s {
        let (y0, y1, fy) = coord(y);
        for x in 0..s {
            let (x0, x1, fx) = coord(x);
            let top = src[y0 * m + x0] * (1.0 - fx) + src[y0 * m + x1] * fx;
            let bottom = src[y1 * m + x0] * (1.0 - fx) + src[y1 * m + x1] * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// HWC panels of `s×s` side by side, 2 white pixels apart.
fn side_by_side(s: usize, panels: &[&[u8]]) -> (usize, usize, Vec<u8>) {
    const GAP: usize = 2;
    let width = panels.len() * s + panels.len().saturating_sub(1) * GAP;
    let mut out = vec![255u8; width * s * 3];
    for (p, panel) in panels.iter().enumerate() {
        let x0 = p * (s + GAP);
        for y in 0..s {
            let src = &panel[y * s * 3..][..s * 3];
            out[(y * width + x0) * 3..][..s * 3].copy_from_slice(src);
        }
    }
    (width, s, out)
}

#[cfg(test)]
mod tests;
