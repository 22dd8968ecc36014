//! Dense row-major `f32` matrices and the kernels the probes spend their time in.
//!
//! Guarantees:
//! - [`dot`] and [`axpy`] are written so the compiler vectorises them (independent lanes, no
//!   reassociation needed); their results depend only on their inputs, never on threads.
//! - [`shards`] splits work into a fixed number of contiguous pieces whatever the number of
//!   threads, so reductions that add the pieces in order give bit-identical results on one thread
//!   or two.

use std::ops::Range;

/// A dense `rows × cols` matrix, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    /// A matrix of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Matrix {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// Wraps `data` (`rows * cols` values, row-major); `None` if the length does not match.
    pub fn from_vec(rows: usize, cols: usize, data: Vec<f32>) -> Option<Self> {
        (data.len() == rows * cols).then_some(Matrix { rows, cols, data })
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// The rows `idx`, in that order, copied into a new contiguous matrix.
    pub fn select(&self, idx: &[usize]) -> Matrix {
        let mut data = Vec::with_capacity(idx.len() * self.cols);
        for &i in idx {
            data.extend_from_slice(self.row(i));
        }
        Matrix {
            rows: idx.len(),
            cols: self.cols,
            data,
        }
    }

    /// Scales every row to unit L2 norm; all-zero rows stay zero.
    pub fn normalize_rows(&mut self) {
        for i in 0..self.rows {
            let row = self.row_mut(i);
            let norm = f64::from(dot(row, row)).sqrt();
            if norm > 0.0 {
                let inv = (1.0 / norm) as f32;
                row.iter_mut().for_each(|v| *v *= inv);
            }
        }
    }
}

const LANES: usize = 16;

/// `Σ a[i]·b[i]` over the common length, with 16 independent accumulators (vectorised).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    // Pairwise fold of the lanes, then the tail.
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            acc[l] += acc[l + width];
        }
        width /= 2;
    }
    let mut s = acc[0];
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `y += alpha · x` over the common length.
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// Lanes of the 4-row kernels: one AVX register, or two SSE registers, per row.
const LANES4: usize = 8;

/// A 4-row dot-product kernel. Every implementation computes each row's result the same way —
/// lane `l` sums `x[j]·w[j]` for `j ≡ l (mod 8)` in order, the lanes are folded pairwise
/// (`+4, +2, +1`), then the tail is added — so all give bit-identical results.
pub trait Dot4: Copy {
    /// `[x₀·w, x₁·w, x₂·w, x₃·w]`; every row holds at least `w.len()` values.
    fn dot4(self, x: [&[f32]; 4], w: &[f32]) -> [f32; 4];
}

/// The kernel in plain Rust (what the compiler makes of it for the build's target).
#[derive(Debug, Clone, Copy)]
pub struct Plain;

impl Dot4 for Plain {
    #[inline(always)]
    fn dot4(self, x: [&[f32]; 4], w: &[f32]) -> [f32; 4] {
        let d = w.len();
        let x = [&x[0][..d], &x[1][..d], &x[2][..d], &x[3][..d]];
        let mut acc = [[0.0f32; LANES4]; 4];
        let full = d / LANES4 * LANES4;
        let mut j = 0;
        while j < full {
            for (a, r) in acc.iter_mut().zip(&x) {
                for l in 0..LANES4 {
                    a[l] += r[j + l] * w[j + l];
                }
            }
            j += LANES4;
        }
        finish(&mut acc, x, w, full)
    }
}

/// Folds the lanes pairwise and adds the tail `full..d`.
#[inline(always)]
fn finish(acc: &mut [[f32; LANES4]; 4], x: [&[f32]; 4], w: &[f32], full: usize) -> [f32; 4] {
    let mut out = [0.0f32; 4];
    for ((o, a), r) in out.iter_mut().zip(acc.iter_mut()).zip(x) {
        let mut width = LANES4 / 2;
        while width > 0 {
            for l in 0..width {
                a[l] += a[l + width];
            }
            width /= 2;
        }
        let mut s = a[0];
        for t in full..w.len() {
            s += r[t] * w[t];
        }
        *o = s;
    }
    out
}

/// The AVX kernel: explicit 8-wide multiply, then add — never fused, so the same bits as
/// [`Plain`].
#[cfg(target_arch = "x86_64")]
pub mod avx {
    use std::arch::x86_64::{
        _mm256_add_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };

    use super::{Dot4, LANES4, finish};

    /// Proof that the CPU has AVX: only [`Avx::detect`] makes one.
    #[derive(Debug, Clone, Copy)]
    pub struct Avx(());

    impl Avx {
        pub fn detect() -> Option<Avx> {
            std::arch::is_x86_feature_detected!("avx").then_some(Avx(()))
        }
    }

    impl Dot4 for Avx {
        #[inline(always)]
        fn dot4(self, x: [&[f32]; 4], w: &[f32]) -> [f32; 4] {
            // SAFETY: an `Avx` exists only where the CPU has AVX.
            unsafe { dot4_avx(x, w) }
        }
    }

    #[target_feature(enable = "avx")]
    #[inline]
    fn dot4_avx(x: [&[f32]; 4], w: &[f32]) -> [f32; 4] {
        let d = w.len();
        let x = [&x[0][..d], &x[1][..d], &x[2][..d], &x[3][..d]];
        let full = d / LANES4 * LANES4;
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut j = 0;
        while j < full {
            // SAFETY: j + 8 <= full <= d, and `w` and every row hold d values.
            let wv = unsafe { _mm256_loadu_ps(w.as_ptr().add(j)) };
            for (a, r) in acc.iter_mut().zip(&x) {
                // SAFETY: as above.
                let xv = unsafe { _mm256_loadu_ps(r.as_ptr().add(j)) };
                *a = _mm256_add_ps(*a, _mm256_mul_ps(xv, wv));
            }
            j += LANES4;
        }
        let mut lanes = [[0.0f32; LANES4]; 4];
        for (l, a) in lanes.iter_mut().zip(acc) {
            // SAFETY: `l` has room for 8 floats.
            unsafe { _mm256_storeu_ps(l.as_mut_ptr(), a) };
        }
        finish(&mut lanes, x, w, full)
    }
}

/// `[x₀·w, x₁·w, x₂·w, x₃·w]` with the plain kernel (see [`Dot4`]).
#[inline(always)]
pub fn dot4(x: [&[f32]; 4], w: &[f32]) -> [f32; 4] {
    Plain.dot4(x, w)
}

/// `y += r₀·x₀ + r₁·x₁ + r₂·x₂ + r₃·x₃`: `y` is loaded and stored once for four rows. The
/// compiler vectorises this one well for whatever target features its caller has.
#[inline(always)]
pub fn axpy4(r: [f32; 4], x: [&[f32]; 4], y: &mut [f32]) {
    let d = y.len();
    let [x0, x1, x2, x3] = x.map(|row| &row[..d]);
    for j in 0..d {
        y[j] += r[0] * x0[j] + r[1] * x1[j] + r[2] * x2[j] + r[3] * x3[j];
    }
}

/// How many pieces [`shards`] cuts work into: fixed, so results do not depend on thread count.
pub const SHARDS: usize = 2;

/// `[0, n)` cut into [`SHARDS`] contiguous ranges (fewer when `n` is smaller), in order.
pub fn shards(n: usize) -> Vec<Range<usize>> {
    let parts = SHARDS.min(n).max(1);
    (0..parts)
        .map(|p| (p * n / parts)..((p + 1) * n / parts))
        .collect()
}

/// Runs `f` on every shard of `[0, n)` — on two threads when `threads > 1` and there is more than
/// one shard — and returns the results in shard order.
pub fn map_shards<R: Send>(
    n: usize,
    threads: usize,
    f: impl Fn(Range<usize>) -> R + Sync,
) -> Vec<R> {
    let pieces = shards(n);
    if threads <= 1 || pieces.len() <= 1 {
        return pieces.into_iter().map(&f).collect();
    }
    std::thread::scope(|s| {
        let f = &f;
        let mut rest = pieces.into_iter();
        let first = rest.next().expect("at least one shard");
        let handles: Vec<_> = rest.map(|r| s.spawn(move || f(r))).collect();
        let mut out = vec![f(first)];
        for h in handles {
            out.push(match h.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            });
        }
        out
    })
}

/// Share of `indices` whose prediction (`predicted[k]` for the k-th index) equals `truth[index]`;
/// 0 for no indices.
pub fn accuracy_at(truth: &[usize], indices: &[usize], predicted: &[usize]) -> f64 {
    let correct = indices
        .iter()
        .zip(predicted)
        .filter(|&(&i, &p)| truth[i] == p)
        .count();
    correct as f64 / indices.len().max(1) as f64
}

/// Mean and sample standard deviation (n − 1 in the denominator; 0 for fewer than two values).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Index of the largest value; ties go to the lowest index. NaN never wins.
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_axpy_match_naive_sums() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let naive: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        assert!((f64::from(dot(&a, &b)) - naive).abs() < 1e-5);
        let mut y = b.clone();
        axpy(2.0, &a, &mut y);
        assert!((y[36] - (b[36] + 2.0 * a[36])).abs() < 1e-6);
    }

    #[test]
    fn shards_cover_in_order_and_threads_do_not_change_results() {
        assert_eq!(shards(5), vec![0..2, 2..5]);
        assert_eq!(shards(1), vec![0..1]);
        assert_eq!(shards(0), vec![0..0]);
        let one = map_shards(1001, 1, |r| r.map(|i| (i as f64).sqrt()).sum::<f64>());
        let two = map_shards(1001, 2, |r| r.map(|i| (i as f64).sqrt()).sum::<f64>());
        assert_eq!(one, two);
    }

    #[test]
    fn four_row_kernels_match_one_row_kernels() {
        let rows: Vec<Vec<f32>> = (0..4)
            .map(|s| {
                (0..45)
                    .map(|i| ((i * 7 + s * 3) as f32 * 0.21).sin())
                    .collect()
            })
            .collect();
        let w: Vec<f32> = (0..45).map(|i| (i as f32 * 0.13).cos()).collect();
        let x = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
        let d4 = dot4(x, &w);
        for s in 0..4 {
            assert!((d4[s] - dot(x[s], &w)).abs() < 1e-5, "row {s}");
        }
        assert_eq!(
            dot4([x[2]; 4], &w)[3],
            d4[2],
            "a row's result does not depend on its slot"
        );
        #[cfg(target_arch = "x86_64")]
        if let Some(avx) = avx::Avx::detect() {
            assert_eq!(
                avx.dot4(x, &w),
                d4,
                "AVX and plain kernels agree bit for bit"
            );
        }
        let mut y = w.clone();
        axpy4([1.0, -2.0, 0.5, 0.0], x, &mut y);
        let j = 44;
        let expect = w[j] + rows[0][j] - 2.0 * rows[1][j] + 0.5 * rows[2][j];
        assert!((y[j] - expect).abs() < 1e-5);
    }

    #[test]
    fn argmax_prefers_the_lowest_index_on_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.0]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, -1.0]), 1);
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
        assert_eq!((m, s), (2.0, 1.0));
    }
}
