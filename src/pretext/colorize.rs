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
//! Also here: class rebalancing (paper eq. 4: [`RebalanceWeights`], estimated from a
//! [`BinHistogram`] of the data streaming through) and annealed-mean decoding (eq. 5:
//! [`BinSet::annealed_mean`]) for previews and for turning predictions into colours.
//!
//! What it guarantees:
//! - Tensors (per sample, `S` = working size, `m = S / downsample`):
//!   input `L` F32 `[1,S,S]` holding **L − 50** (L ∈ [0, 100] → [−50, 50]: zero-centred, the
//!   paper's own input normalisation); targets `ab` F32 `[2,S,S]` (a, b unscaled, within about
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

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use super::lab;
use super::{
    DType, PretextError, PretextSample, PretextTask, RgbView, Signature, TensorData, TensorSpec,
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
            temperature: 0.38,
            downsample: 4,
        }
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
        Ok(Colorize {
            config: self.clone(),
            size,
            bins,
        })
    }
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
        let pixels = conform(image, s);
        let mut l = vec![0.0f32; s * s];
        let mut ab = vec![0.0f32; 2 * s * s];
        lab::rgb8_to_lab_into(&pixels, &mut l, &mut ab);
        // Centre L for the network: [0, 100] → [−50, 50].
        for v in &mut l {
            *v -= 50.0;
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
            Some(TensorData::F32(v)) => v.iter().map(|x| x + 50.0).collect(),
            _ => vec![50.0; n],
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

// --- Bins ----------------------------------------------------------------------------------------

/// The in-gamut ab bins: centres on a regular grid (multiples of `grid`), sorted by (a, b), with a
/// lookup table over the grid cells for fast nearest-bin queries.
#[derive(Debug, Clone, PartialEq)]
pub struct BinSet {
    /// Bin centres `[a, b]`; the class index of a bin is its position here.
    pub centers: Vec<[f32; 2]>,
    grid: f32,
    /// Grid coordinates of the table's first cell, and the table's extent in cells.
    i0: i64,
    j0: i64,
    width: i64,
    height: i64,
    /// Bin index of each grid cell, row-major over (i = a/grid, j = b/grid); −1 outside the gamut.
    table: Vec<i32>,
}

impl BinSet {
    /// The bins of a `grid`-unit ab grid under the given [`Gamut`] definition (see the module
    /// doc). The canonical 10-unit sets are computed once per process and shared; other grids are
    /// computed on each call (tens of ms; `build` calls it once per task).
    pub fn in_gamut(gamut: Gamut, grid: f32) -> Arc<BinSet> {
        static HULL: OnceLock<Arc<BinSet>> = OnceLock::new();
        static REACHABLE: OnceLock<Arc<BinSet>> = OnceLock::new();
        let cache = match gamut {
            Gamut::Hull => &HULL,
            Gamut::Reachable => &REACHABLE,
        };
        if grid == 10.0 {
            cache
                .get_or_init(|| Arc::new(Self::compute(gamut, 10.0)))
                .clone()
        } else {
            Arc::new(Self::compute(gamut, grid))
        }
    }

    fn compute(gamut: Gamut, grid: f32) -> BinSet {
        // The ab of every 8-bit colour on the six faces of the RGB cube (edges come twice; no
        // matter). Enough for both definitions: see the module doc.
        let mut ab = Vec::with_capacity(6 * 256 * 256);
        for u in 0..=255u8 {
            for v in 0..=255u8 {
                for fixed in [0u8, 255] {
                    for rgb in [[fixed, u, v], [u, fixed, v], [u, v, fixed]] {
                        let [_, a, b] = lab::rgb8_to_lab_pixel(rgb);
                        ab.push([a, b]);
                    }
                }
            }
        }
        let cell = |v: f32| (v / grid).round() as i64;
        match gamut {
            Gamut::Reachable => {
                let cells: BTreeSet<(i64, i64)> =
                    ab.iter().map(|&[a, b]| (cell(a), cell(b))).collect();
                Self::from_cells(grid, cells.into_iter())
            }
            Gamut::Hull => {
                // Convex hull of the ab gamut, grown by one grid step in a and b (the Minkowski
                // sum with a ±grid square is the hull of the vertices shifted to its 4 corners).
                let g = f64::from(grid);
                let points: Vec<[f64; 2]> = ab
                    .iter()
                    .map(|&[a, b]| [f64::from(a), f64::from(b)])
                    .collect();
                let grown: Vec<[f64; 2]> = convex_hull(points)
                    .iter()
                    .flat_map(|&[a, b]| {
                        [
                            [a - g, b - g],
                            [a - g, b + g],
                            [a + g, b - g],
                            [a + g, b + g],
                        ]
                    })
                    .collect();
                let hull = convex_hull(grown);
                let lo = |k: usize| hull.iter().map(|p| p[k]).fold(f64::MAX, f64::min);
                let hi = |k: usize| hull.iter().map(|p| p[k]).fold(f64::MIN, f64::max);
                let (i_lo, i_hi) = ((lo(0) / g).floor() as i64, (hi(0) / g).ceil() as i64);
                let (j_lo, j_hi) = ((lo(1) / g).floor() as i64, (hi(1) / g).ceil() as i64);
                let cells = (i_lo..=i_hi)
                    .flat_map(|i| (j_lo..=j_hi).map(move |j| (i, j)))
                    .filter(|&(i, j)| inside_convex(&hull, [i as f64 * g, j as f64 * g]));
                Self::from_cells(grid, cells)
            }
        }
    }

    /// A bin set from explicit centres (for example Zhang et al.'s `pts_in_hull`), each snapped
    /// to its grid cell; duplicates are merged. Order: sorted by (a, b).
    pub fn from_centers(grid: f32, centers: &[[f32; 2]]) -> Result<BinSet, PretextError> {
        if !(grid.is_finite() && (1.0..=100.0).contains(&grid)) {
            return Err(invalid(format!(
                "grid must be within [1, 100], found {grid}"
            )));
        }
        if centers.is_empty() || centers.iter().flatten().any(|v| !v.is_finite()) {
            return Err(invalid("bin centres must be finite and not empty".into()));
        }
        let cells: BTreeSet<(i64, i64)> = centers
            .iter()
            .map(|c| ((c[0] / grid).round() as i64, (c[1] / grid).round() as i64))
            .collect();
        Ok(Self::from_cells(grid, cells.into_iter()))
    }

    fn from_cells(grid: f32, cells: impl Iterator<Item = (i64, i64)>) -> BinSet {
        let cells: Vec<(i64, i64)> = cells.collect();
        let i0 = cells.iter().map(|c| c.0).min().unwrap_or(0);
        let j0 = cells.iter().map(|c| c.1).min().unwrap_or(0);
        let width = cells.iter().map(|c| c.0).max().unwrap_or(0) - i0 + 1;
        let height = cells.iter().map(|c| c.1).max().unwrap_or(0) - j0 + 1;
        let mut table = vec![-1i32; (width * height) as usize];
        let mut centers = Vec::with_capacity(cells.len());
        for (k, &(i, j)) in cells.iter().enumerate() {
            table[((i - i0) * height + (j - j0)) as usize] = k as i32;
            centers.push([i as f32 * grid, j as f32 * grid]);
        }
        BinSet {
            centers,
            grid,
            i0,
            j0,
            width,
            height,
            table,
        }
    }

    /// Number of bins (K).
    pub fn len(&self) -> usize {
        self.centers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.centers.is_empty()
    }

    pub fn grid(&self) -> f32 {
        self.grid
    }

    /// Index of the bin whose centre is nearest to `ab` (ties: the lower index).
    pub fn nearest(&self, ab: [f32; 2]) -> usize {
        let mut idx = [0usize; 1];
        let mut d2 = [0.0f32; 1];
        self.k_nearest(ab, &mut idx, &mut d2);
        idx[0]
    }

    /// The `idx.len()` nearest bins to `ab`, nearest first (ties: lower index first), with their
    /// squared distances in `d2` (same length). A non-finite `ab` is treated as (0, 0).
    ///
    /// The grid is regular, so the search starts at `ab`'s own grid cell and walks outwards ring
    /// by ring (Chebyshev distance r), stopping once no cell of the next ring can be closer than
    /// the k-th best so far: a ring r+1 cell is at least (r + ½)·grid away. For the soft encoding
    /// (k = 5) that is the 3×3 cells around `ab`, not all K bins.
    ///
    /// # Panics
    /// If `idx` and `d2` differ in length or ask for more than [`BinSet::len`] bins.
    pub fn k_nearest(&self, ab: [f32; 2], idx: &mut [usize], d2: &mut [f32]) {
        let k = idx.len();
        assert!(
            d2.len() == k && k <= self.len(),
            "k_nearest: {k} of {} bins",
            self.len()
        );
        if k == 0 {
            return;
        }
        let ab = if ab.iter().all(|v| v.is_finite()) {
            ab
        } else {
            [0.0, 0.0]
        };
        idx.fill(usize::MAX);
        d2.fill(f32::INFINITY);
        let consider = |q: usize, idx: &mut [usize], d2: &mut [f32]| {
            let c = self.centers[q];
            let (da, db) = (ab[0] - c[0], ab[1] - c[1]);
            let d = da * da + db * db;
            // Insertion into the sorted top-k, ordered by (distance, index).
            let last = k - 1;
            if (d, q) >= (d2[last], idx[last]) {
                return;
            }
            let mut pos = last;
            while pos > 0 && (d, q) < (d2[pos - 1], idx[pos - 1]) {
                d2[pos] = d2[pos - 1];
                idx[pos] = idx[pos - 1];
                pos -= 1;
            }
            d2[pos] = d;
            idx[pos] = q;
        };
        let ci = (ab[0] / self.grid).round() as i64;
        let cj = (ab[1] / self.grid).round() as i64;
        let inside = (self.i0..self.i0 + self.width).contains(&ci)
            && (self.j0..self.j0 + self.height).contains(&cj);
        if !inside {
            // Far outside every bin (not reachable from an sRGB image): exact brute force.
            for q in 0..self.len() {
                consider(q, idx, d2);
            }
            return;
        }
        let max_ring = self.width.max(self.height);
        for r in 0..=max_ring {
            // The cells at Chebyshev distance exactly r: the square's border, clipped to the table.
            let (j_lo, j_hi) = (self.j0, self.j0 + self.height - 1);
            let visit = |i: i64, j: i64, idx: &mut [usize], d2: &mut [f32]| {
                if (j_lo..=j_hi).contains(&j) {
                    let q = self.table[((i - self.i0) * self.height + (j - self.j0)) as usize];
                    if q >= 0 {
                        consider(q as usize, idx, d2);
                    }
                }
            };
            for i in (ci - r).max(self.i0)..=(ci + r).min(self.i0 + self.width - 1) {
                if (i - ci).abs() == r {
                    // Left and right sides of the square: the whole column.
                    for j in (cj - r).max(j_lo)..=(cj + r).min(j_hi) {
                        visit(i, j, idx, d2);
                    }
                } else {
                    // Columns in between: only the top and bottom cells (r > 0 here).
                    visit(i, cj - r, idx, d2);
                    visit(i, cj + r, idx, d2);
                }
            }
            // Lower bound on the distance of ring r+1, a hair under (r + ½)·grid against rounding.
            let bound = (r as f32 + 0.499) * self.grid;
            if idx[k - 1] != usize::MAX && bound * bound > d2[k - 1] {
                break;
            }
        }
    }

    /// Soft encoding with the paper's parameters: the 5 nearest bins, Gaussian weights with σ = 5,
    /// normalised to sum to 1, nearest first.
    pub fn soft_encode(&self, ab: [f32; 2]) -> ([usize; 5], [f32; 5]) {
        let mut idx = [0usize; 5];
        let mut w = [0.0f32; 5];
        self.soft_encode_into(ab, 5.0, &mut idx, &mut w);
        (idx, w)
    }

    /// Soft encoding onto `idx.len()` nearest bins with Gaussian weights `exp(−d²/2σ²)`,
    /// normalised to sum to 1. Weights are taken relative to the nearest bin (its weight is 1
    /// before normalising), which changes nothing mathematically and keeps far-away `ab` values
    /// from underflowing every weight to 0.
    ///
    /// # Panics
    /// As [`BinSet::k_nearest`], or if `w` and `idx` differ in length.
    pub fn soft_encode_into(&self, ab: [f32; 2], sigma: f32, idx: &mut [usize], w: &mut [f32]) {
        assert_eq!(idx.len(), w.len(), "soft_encode_into: idx and w lengths");
        self.k_nearest(ab, idx, w);
        let Some(&d0) = w.first() else { return };
        let scale = -1.0 / (2.0 * f64::from(sigma) * f64::from(sigma));
        let mut sum = 0.0f64;
        for wj in w.iter_mut() {
            let ej = lab::exp(f64::from(*wj - d0) * scale);
            sum += ej;
            *wj = ej as f32;
        }
        for wj in w.iter_mut() {
            *wj = (f64::from(*wj) / sum) as f32;
        }
    }

    /// Annealed mean (paper eq. 5): re-weights the distribution `probs` over the K bins by
    /// `f_T(z) = exp(log z / T) / Σ exp(log z / T)` and returns the mean of the bin centres under
    /// it. T = 1 is the mean, T → 0 the mode; the paper's T = 0.38 keeps the vividness of the mode
    /// and the spatial coherence of the mean. `probs` need not be normalised; extra entries beyond
    /// K are ignored, zeros and negatives get no weight, an all-zero input gives (0, 0).
    pub fn annealed_mean(&self, probs: &[f32], temperature: f32) -> [f32; 2] {
        let t = f64::from(temperature).max(1e-6);
        // exp((log z − log z_max) / T): the max-shift avoids overflow as T → 0.
        let zmax = probs
            .iter()
            .take(self.len())
            .fold(0.0f32, |m, &p| if p > m { p } else { m });
        if zmax <= 0.0 {
            return [0.0, 0.0];
        }
        let lmax = f64::from(zmax).ln();
        let (mut sw, mut sa, mut sb) = (0.0f64, 0.0f64, 0.0f64);
        for (&p, c) in probs.iter().zip(&self.centers) {
            if p > 0.0 {
                let w = ((f64::from(p).ln() - lmax) / t).exp();
                sw += w;
                sa += w * f64::from(c[0]);
                sb += w * f64::from(c[1]);
            }
        }
        [(sa / sw) as f32, (sb / sw) as f32]
    }
}

/// Convex hull (Andrew's monotone chain), counter-clockwise, without collinear points.
fn convex_hull(mut points: Vec<[f64; 2]>) -> Vec<[f64; 2]> {
    points.sort_by(|p, q| p[0].total_cmp(&q[0]).then(p[1].total_cmp(&q[1])));
    points.dedup();
    if points.len() < 3 {
        return points;
    }
    let cross = |o: [f64; 2], a: [f64; 2], b: [f64; 2]| {
        (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
    };
    let mut hull: Vec<[f64; 2]> = Vec::with_capacity(2 * points.len());
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &[f64; 2]>> = if pass == 0 {
            Box::new(points.iter())
        } else {
            Box::new(points.iter().rev())
        };
        for &p in iter {
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0
            {
                hull.pop();
            }
            hull.push(p);
        }
        // The last point of each chain is the first of the other.
        hull.pop();
    }
    hull
}

/// Whether `q` lies inside (or on) the counter-clockwise convex polygon `hull`.
fn inside_convex(hull: &[[f64; 2]], q: [f64; 2]) -> bool {
    hull.iter()
        .zip(hull.iter().cycle().skip(1))
        .all(|(o, a)| (a[0] - o[0]) * (q[1] - o[1]) - (a[1] - o[1]) * (q[0] - o[0]) >= 0.0)
}

// --- Class rebalancing ---------------------------------------------------------------------------

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

// --- Helpers -------------------------------------------------------------------------------------

/// The image as `size×size×3` bytes. A valid input is borrowed as is; anything else (which the
/// trait rules out, but must not crash a worker) is copied onto a black canvas, top-left aligned.
fn conform(image: RgbView<'_>, size: usize) -> Cow<'_, [u8]> {
    let n = size * size * 3;
    if image.width == size && image.height == size && image.pixels.len() >= n {
        return Cow::Borrowed(&image.pixels[..n]);
    }
    let mut out = vec![0u8; n];
    for y in 0..image.height.min(size) {
        let start = (y * image.width * 3).min(image.pixels.len());
        let end = (start + image.width.min(size) * 3).min(image.pixels.len());
        out[y * size * 3..][..end - start].copy_from_slice(&image.pixels[start..end]);
    }
    Cow::Owned(out)
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
mod tests {
    use super::*;

    fn canonical() -> Arc<BinSet> {
        BinSet::in_gamut(Gamut::Hull, 10.0)
    }

    fn brute_force(bins: &BinSet, ab: [f32; 2], k: usize) -> Vec<usize> {
        let mut all: Vec<(f32, usize)> = bins
            .centers
            .iter()
            .enumerate()
            .map(|(q, c)| {
                let (da, db) = (ab[0] - c[0], ab[1] - c[1]);
                (da * da + db * db, q)
            })
            .collect();
        all.sort_by(|x, y| x.partial_cmp(y).unwrap());
        all.iter().take(k).map(|x| x.1).collect()
    }

    /// A smooth, colourful synthetic image (deterministic).
    fn test_image(s: usize) -> Vec<u8> {
        let mut px = Vec::with_capacity(s * s * 3);
        for y in 0..s {
            for x in 0..s {
                let (fx, fy) = (x as f32 / s as f32, y as f32 / s as f32);
                px.push((255.0 * fx) as u8);
                px.push((255.0 * fy) as u8);
                px.push((127.0 + 120.0 * (6.0 * fx).sin() * (4.0 * fy).cos()) as u8);
            }
        }
        px
    }

    /// Zhang et al.'s `pts_in_hull.npy`, summarised: for each a (−90 to 100 in steps of 10),
    /// the first and last b of its contiguous column of bins.
    const ZHANG_COLUMNS: [(i32, i32, i32); 20] = [
        (-90, 50, 90),
        (-80, 20, 90),
        (-70, 0, 90),
        (-60, -20, 90),
        (-50, -30, 100),
        (-40, -40, 100),
        (-30, -50, 100),
        (-20, -50, 100),
        (-10, -60, 100),
        (0, -70, 100),
        (10, -80, 90),
        (20, -80, 90),
        (30, -90, 90),
        (40, -100, 90),
        (50, -100, 80),
        (60, -110, 80),
        (70, -110, 80),
        (80, -110, 70),
        (90, -110, 70),
        (100, -90, 0),
    ];

    #[test]
    fn bin_count_is_zhangs_313() {
        let bins = canonical();
        let reachable = BinSet::in_gamut(Gamut::Reachable, 10.0);
        println!(
            "ab bins at grid 10: hull {} (Zhang et al.: 313), reachable {}",
            bins.len(),
            reachable.len()
        );
        assert_eq!(bins.len(), 313);
        assert!(
            (255..=265).contains(&reachable.len()),
            "{}",
            reachable.len()
        );
        // The very points of pts_in_hull.npy, in its order.
        let zhang: Vec<[f32; 2]> = ZHANG_COLUMNS
            .iter()
            .flat_map(|&(a, lo, hi)| (lo..=hi).step_by(10).map(move |b| [a as f32, b as f32]))
            .collect();
        assert_eq!(bins.centers, zhang);
        // Reachable bins are a subset of the hull's.
        for c in &reachable.centers {
            assert!(bins.centers.contains(c), "{c:?}");
        }
        // Sorted and on the grid.
        for set in [&bins, &reachable] {
            assert!(
                set.centers
                    .windows(2)
                    .all(|w| (w[0][0], w[0][1]) < (w[1][0], w[1][1]))
            );
            assert!(
                set.centers
                    .iter()
                    .all(|c| c[0] % 10.0 == 0.0 && c[1] % 10.0 == 0.0)
            );
        }
        // Computed once: the same Arc.
        assert!(Arc::ptr_eq(&bins, &canonical()));
        // Every sRGB colour's own bin is in both sets (its nearest bin is its grid cell).
        for rgb in [
            [128u8, 128, 128],
            [255, 0, 0],
            [0, 255, 0],
            [0, 0, 255],
            [255, 0, 255],
        ] {
            let [_, a, b] = lab::rgb8_to_lab_pixel(rgb);
            for set in [&bins, &reachable] {
                let c = set.centers[set.nearest([a, b])];
                assert!(
                    (c[0] - a).abs() <= 5.0 && (c[1] - b).abs() <= 5.0,
                    "{rgb:?}"
                );
            }
        }
    }

    #[test]
    #[ignore = "scans all 16.7 M sRGB colours (~seconds); run with --ignored"]
    fn surface_scan_equals_full_scan() {
        let reachable = BinSet::in_gamut(Gamut::Reachable, 10.0);
        let mut cells = BTreeSet::new();
        let mut points = Vec::new();
        for r in 0..=255u8 {
            for g in 0..=255u8 {
                for b in 0..=255u8 {
                    let [_, a, bb] = lab::rgb8_to_lab_pixel([r, g, b]);
                    cells.insert(((a / 10.0).round() as i64, (bb / 10.0).round() as i64));
                    if (r as u32 * 7 + g as u32 * 3 + b as u32).is_multiple_of(61) {
                        points.push([f64::from(a), f64::from(bb)]);
                    }
                }
            }
        }
        let full = BinSet::from_cells(10.0, cells.into_iter());
        assert_eq!(full.centers, reachable.centers);
        // Interior colours never leave the hull of the surface's ab.
        let mut surface = Vec::new();
        for u in 0..=255u8 {
            for v in 0..=255u8 {
                for f in [0u8, 255] {
                    for rgb in [[f, u, v], [u, f, v], [u, v, f]] {
                        let [_, a, b] = lab::rgb8_to_lab_pixel(rgb);
                        surface.push([f64::from(a), f64::from(b)]);
                    }
                }
            }
        }
        let hull = convex_hull(surface);
        assert!(points.iter().all(|&p| inside_convex(&hull, p)));
    }

    #[test]
    fn nearest_and_soft_encoding_match_brute_force() {
        let bins = canonical();
        let mut rng = Rng::new(1);
        for t in 0..5000 {
            // Mostly inside the gamut, some far outside (brute-force path) and on the edges.
            let span = if t % 10 == 0 { 400.0 } else { 230.0 };
            let ab = [
                (rng.uniform_f32() - 0.5) * span,
                (rng.uniform_f32() - 0.5) * span,
            ];
            let want = brute_force(&bins, ab, 5);
            assert_eq!(bins.nearest(ab), want[0], "{ab:?}");
            let (idx, w) = bins.soft_encode(ab);
            assert_eq!(idx.to_vec(), want, "{ab:?}");
            let sum: f32 = w.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "{ab:?}: {w:?}");
            assert!(w.windows(2).all(|p| p[0] >= p[1]), "{w:?}");
            // The weights are the normalised Gaussians of the distances.
            let g: Vec<f64> = idx
                .iter()
                .map(|&q| {
                    let c = bins.centers[q];
                    let d2 = f64::from(ab[0] - c[0]).powi(2) + f64::from(ab[1] - c[1]).powi(2);
                    (-d2 / 50.0).exp()
                })
                .collect();
            let gs: f64 = g.iter().sum();
            if gs > 1e-200 {
                for (wj, gj) in w.iter().zip(&g) {
                    assert!((f64::from(*wj) - gj / gs).abs() < 1e-5, "{ab:?}");
                }
            }
        }
        // k = 1 and larger k agree with brute force as well.
        let mut idx = [0usize; 12];
        let mut d2 = [0.0f32; 12];
        bins.k_nearest([3.3, -41.7], &mut idx, &mut d2);
        assert_eq!(idx.to_vec(), brute_force(&bins, [3.3, -41.7], 12));
        assert_eq!(bins.nearest([f32::NAN, 1.0]), bins.nearest([0.0, 0.0]));
    }

    #[test]
    fn rebalancing_weights_have_unit_expectation_and_favour_rare_bins() {
        let bins = canonical();
        let q = bins.len();
        // A peaked distribution: mass around grey, little elsewhere (like real photos).
        let grey = bins.nearest([0.0, 0.0]);
        let mut p = vec![1.0f64; q];
        p[grey] = 5000.0;
        let rw = RebalanceWeights::estimate(&bins, &p, 0.5, 5.0).unwrap();
        let e: f64 = rw
            .weights
            .iter()
            .zip(&rw.smoothed)
            .map(|(w, p)| f64::from(*w) * p)
            .sum();
        assert!((e - 1.0).abs() < 1e-6, "E[w] = {e}");
        assert!((rw.smoothed.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let far = bins.nearest([60.0, 60.0]);
        assert!(rw.weights[far] > 10.0 * rw.weights[grey]);
        // Weights are a decreasing function of the smoothed probability.
        let mut order: Vec<usize> = (0..q).collect();
        order.sort_by(|&x, &y| rw.smoothed[x].partial_cmp(&rw.smoothed[y]).unwrap());
        assert!(
            order
                .windows(2)
                .all(|o| rw.weights[o[0]] >= rw.weights[o[1]])
        );
        // λ = 1: uniform weights, all 1.
        let flat = RebalanceWeights::estimate(&bins, &p, 1.0, 5.0).unwrap();
        assert!(flat.weights.iter().all(|w| (w - 1.0).abs() < 1e-5));
        // Bad inputs are errors, not panics.
        assert!(RebalanceWeights::estimate(&bins, &p[1..], 0.5, 5.0).is_err());
        assert!(RebalanceWeights::estimate(&bins, &vec![0.0; q], 0.5, 5.0).is_err());
        assert!(RebalanceWeights::estimate(&bins, &p, 1.5, 5.0).is_err());
    }

    #[test]
    fn annealed_mean_tends_to_mode_and_mean() {
        let bins = canonical();
        let mut probs = vec![0.0f32; bins.len()];
        let (a, b, c) = (
            bins.nearest([0.0, 0.0]),
            bins.nearest([40.0, 20.0]),
            bins.nearest([-30.0, 50.0]),
        );
        probs[a] = 0.5;
        probs[b] = 0.3;
        probs[c] = 0.2;
        let mode = bins.annealed_mean(&probs, 0.01);
        assert!(
            (mode[0] - 0.0).abs() < 1e-3 && (mode[1] - 0.0).abs() < 1e-3,
            "{mode:?}"
        );
        let mean = bins.annealed_mean(&probs, 1.0);
        let want = [0.3 * 40.0 + 0.2 * -30.0, 0.3 * 20.0 + 0.2 * 50.0];
        assert!((mean[0] - want[0]).abs() < 1e-4 && (mean[1] - want[1]).abs() < 1e-4);
        // T = 0.38 lies in between, closer to the mode.
        let t = bins.annealed_mean(&probs, 0.38);
        assert!(t[0].abs() < mean[0].abs() && t[0] > 0.0, "{t:?}");
        assert_eq!(bins.annealed_mean(&vec![0.0; bins.len()], 0.38), [0.0, 0.0]);
    }

    #[test]
    fn tensors_have_the_signature_and_right_values() {
        let s = 32;
        let px = test_image(s);
        let image = RgbView {
            width: s,
            height: s,
            pixels: &px,
        };
        for target in [ColorTarget::Bins, ColorTarget::Regression] {
            let task = ColorizeConfig {
                target,
                ..Default::default()
            }
            .build(s)
            .unwrap();
            let sig = task.signature();
            let sample = task.make(image, &mut Rng::new(3));
            for (spec, data) in sig
                .inputs
                .iter()
                .zip(&sample.inputs)
                .chain(sig.targets.iter().zip(&sample.targets))
            {
                assert_eq!(
                    (spec.dtype, spec.len()),
                    (data.dtype(), data.len()),
                    "{spec:?}"
                );
            }
            let TensorData::F32(l) = &sample.inputs[0] else {
                panic!()
            };
            let (l_ref, ab_ref) = lab::rgb8_to_lab(&px);
            assert!(l.iter().zip(&l_ref).all(|(x, r)| *x == r - 50.0));
            match target {
                ColorTarget::Regression => {
                    assert_eq!(sample.targets[0], TensorData::F32(ab_ref));
                }
                ColorTarget::Bins => {
                    let (TensorData::I64(hard), TensorData::I64(idx), TensorData::F32(w)) =
                        (&sample.targets[0], &sample.targets[1], &sample.targets[2])
                    else {
                        panic!()
                    };
                    let m = s / 4;
                    let cells = m * m;
                    // Cell (1, 2): mean ab of its 4×4 block, nearest bin, soft weights sum to 1.
                    let (by, bx) = (1, 2);
                    let mut mean = [0.0f32; 2];
                    for y in 4 * by..4 * by + 4 {
                        for x in 4 * bx..4 * bx + 4 {
                            mean[0] += ab_ref[y * s + x] / 16.0;
                            mean[1] += ab_ref[s * s + y * s + x] / 16.0;
                        }
                    }
                    let c = by * m + bx;
                    let want = task.bins().nearest(mean);
                    assert_eq!(hard[c], want as i64);
                    assert_eq!(idx[c], want as i64);
                    let sum: f32 = (0..5).map(|j| w[j * cells + c]).sum();
                    assert!((sum - 1.0).abs() < 1e-5);
                }
            }
            let (pw, ph, pv) = task.preview(image, &sample);
            assert_eq!((pw, ph, pv.len()), (2 * s + 2, s, (2 * s + 2) * s * 3));
        }
    }

    #[test]
    fn preview_reproduces_the_colours() {
        let s = 32;
        let px = test_image(s);
        let image = RgbView {
            width: s,
            height: s,
            pixels: &px,
        };
        let task = ColorizeConfig {
            target: ColorTarget::Regression,
            ..Default::default()
        }
        .build(s)
        .unwrap();
        let sample = task.make(image, &mut Rng::new(0));
        let (w, _, pv) = task.preview(image, &sample);
        // The right panel is the original (Lab round trip is exact to 8 bits).
        for y in 0..s {
            let right = &pv[(y * w + s + 2) * 3..][..s * 3];
            assert_eq!(right, &px[y * s * 3..][..s * 3]);
            // The left one is grey.
            let left = &pv[y * w * 3..][..s * 3];
            assert!(left.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
        }
        // Bins: colours come back approximately (quantised, block-averaged, annealed).
        let task = ColorizeConfig::default().build(s).unwrap();
        let sample = task.make(image, &mut Rng::new(0));
        let (w, _, pv) = task.preview(image, &sample);
        let mut err = 0.0f64;
        for y in 0..s {
            for x in 0..s * 3 {
                err +=
                    (f64::from(pv[(y * w + s + 2) * 3 + x]) - f64::from(px[y * s * 3 + x])).abs();
            }
        }
        let mean_err = err / (s * s * 3) as f64;
        assert!(mean_err < 20.0, "mean abs error {mean_err}");
        // A sample of the wrong shape is recomputed, not trusted (and does not panic).
        let (_, _, again) = task.preview(image, &PretextSample::default());
        assert_eq!(again, pv);
    }

    #[test]
    fn deterministic_and_rng_independent() {
        let s = 64;
        let px = test_image(s);
        let image = RgbView {
            width: s,
            height: s,
            pixels: &px,
        };
        let task = ColorizeConfig::default().build(s).unwrap();
        let a = task.make(image, &mut Rng::for_sample(7, "k", 0));
        let b = task.make(image, &mut Rng::for_sample(7, "k", 0));
        assert_eq!(a, b);
        // Colorization draws nothing: another stream gives the same tensors.
        assert_eq!(a, task.make(image, &mut Rng::new(99)));
        // A malformed image does not panic.
        let short = RgbView {
            width: 10,
            height: 5,
            pixels: &px[..10],
        };
        let out = task.make(short, &mut Rng::new(0));
        assert_eq!(out.inputs[0].len(), s * s);
    }

    #[test]
    fn config_validation_and_toml() {
        let cfg: ColorizeConfig = toml::from_str("target = \"regression\"\ngrid = 10.0").unwrap();
        assert_eq!(cfg.target, ColorTarget::Regression);
        assert_eq!(cfg.neighbours, 5);
        assert!(toml::from_str::<ColorizeConfig>("nope = 1").is_err());
        assert!(toml::from_str::<ColorizeConfig>("target = \"ab\"").is_err());
        let bad = ColorizeConfig {
            downsample: 5,
            sigma: 0.0,
            temperature: -1.0,
            ..Default::default()
        };
        let err = bad.build(96).unwrap_err().to_string();
        assert!(err.contains("downsample") && err.contains("sigma") && err.contains("temperature"));
        let too_many = ColorizeConfig {
            neighbours: 1000,
            ..Default::default()
        };
        assert!(too_many.build(96).is_err());
        assert!(ColorizeConfig::default().build(0).is_err());
        for s in [4, 32, 96, 224] {
            assert!(ColorizeConfig::default().build(s).is_ok());
        }
        // Another grid builds its own bin set: about a quarter of the bins at twice the step.
        for (gamut, fine) in [(Gamut::Hull, 313.0), (Gamut::Reachable, 261.0)] {
            let coarse = ColorizeConfig {
                grid: 20.0,
                gamut,
                ..Default::default()
            }
            .build(32)
            .unwrap();
            let ratio = coarse.bins().len() as f64 / fine;
            println!("grid 20, {gamut:?}: {} bins", coarse.bins().len());
            assert!(
                (0.2..0.45).contains(&ratio),
                "{gamut:?}: {}",
                coarse.bins().len()
            );
        }
    }

    #[test]
    fn histogram_accumulates_bins() {
        let s = 32;
        let px = test_image(s);
        let image = RgbView {
            width: s,
            height: s,
            pixels: &px,
        };
        let task = ColorizeConfig::default().build(s).unwrap();
        let sample = task.make(image, &mut Rng::new(0));
        let mut h = BinHistogram::new(task.bins().len());
        assert_eq!(h.add_sample(&sample), 0);
        assert_eq!(h.total(), 64);
        let mut h2 = h.clone();
        h2.merge(&h);
        assert_eq!(h2.total(), 128);
        assert_eq!(h.add_bins(&[-1, 100_000]), 2);
        assert!((h.distribution().iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(task.rebalance_weights(&h).is_ok());
    }

    /// Bin statistics on the real photos of `data/photos` (skipped when absent): decoded and
    /// resized to 96 px by the pipeline's own decoder.
    #[test]
    fn rebalancing_on_real_photos() {
        use crate::decode::{DecodeSettings, Decoder};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/photos");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("no {}: skipped", dir.display());
            return;
        };
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("png" | "jpg" | "jpeg")
                )
            })
            .collect();
        paths.sort();
        let s = 96;
        let task = ColorizeConfig::default().build(s).unwrap();
        let mut decoder = Decoder::new(DecodeSettings::with_size(s as u32));
        let mut hist = BinHistogram::new(task.bins().len());
        let mut out = Vec::new();
        let mut used = 0;
        for p in &paths {
            let Ok(bytes) = std::fs::read(p) else {
                continue;
            };
            if decoder.decode_into(&bytes, &mut out).is_err() {
                continue;
            }
            let image = RgbView {
                width: s,
                height: s,
                pixels: &out,
            };
            hist.add_sample(&task.make(image, &mut Rng::new(0)));
            used += 1;
        }
        if used == 0 {
            eprintln!("no decodable photos in {}: skipped", dir.display());
            return;
        }
        let rw = task.rebalance_weights(&hist).unwrap();
        let occupied = hist.counts().iter().filter(|&&c| c > 0).count();
        let (wmin, wmax) = rw
            .weights
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &w| (lo.min(w), hi.max(w)));
        println!(
            "{used} photos at {s} px: {} bins, {occupied} occupied; weights {wmin:.3}..{wmax:.3}",
            task.bins().len()
        );
        assert!(wmin > 0.0 && wmax <= 2.0 * task.bins().len() as f32);
        assert!(wmax > wmin);
    }

    /// Writes previews of `data/photos/astronaut.png` (96 px) to the temp dir, for a person to
    /// look at: `cargo test --lib pretext::colorize::tests::write_previews -- --ignored --nocapture`.
    #[test]
    #[ignore = "writes PNG files for manual inspection"]
    fn write_previews() {
        use crate::decode::{DecodeSettings, Decoder};
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/photos/astronaut.png");
        let Ok(bytes) = std::fs::read(&path) else {
            return;
        };
        let s = 96;
        let mut px = Vec::new();
        Decoder::new(DecodeSettings::with_size(s as u32))
            .decode_into(&bytes, &mut px)
            .unwrap();
        let image = RgbView {
            width: s,
            height: s,
            pixels: &px,
        };
        for (i, cfg) in [
            ColorizeConfig::default(),
            ColorizeConfig {
                target: ColorTarget::Regression,
                ..Default::default()
            },
        ]
        .into_iter()
        .enumerate()
        {
            let task = cfg.build(s).unwrap();
            let sample = task.make(image, &mut Rng::new(42));
            let (w, h, canvas) = task.preview(image, &sample);
            let out = std::env::temp_dir().join(format!("sslpipe_colorize_{i}.png"));
            image::RgbImage::from_raw(w as u32, h as u32, canvas)
                .unwrap()
                .save(&out)
                .unwrap();
            println!("{}", out.display());
        }
    }
}
