//! The in-gamut ab bins of colorization (see the parent module's documentation for the two
//! definitions): nearest-bin and soft-encoding queries, and annealed-mean decoding (Zhang et al.
//! eq. 5).

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use super::super::{PretextError, lab};
use super::{Gamut, invalid};

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

    pub(super) fn from_cells(grid: f32, cells: impl Iterator<Item = (i64, i64)>) -> BinSet {
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
pub(super) fn convex_hull(mut points: Vec<[f64; 2]>) -> Vec<[f64; 2]> {
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
pub(super) fn inside_convex(hull: &[[f64; 2]], q: [f64; 2]) -> bool {
    hull.iter()
        .zip(hull.iter().cycle().skip(1))
        .all(|(o, a)| (a[0] - o[0]) * (q[1] - o[1]) - (a[1] - o[1]) * (q[0] - o[0]) >= 0.0)
}
