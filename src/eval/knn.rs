//! The k-nearest-neighbour probe: cosine similarity, weighted vote (InstDisc, Wu et al. 2018).
//!
//! Protocol (what [`predict`] guarantees):
//! - Features are L2-normalised (no standardisation), so a dot product is a cosine similarity.
//! - Each test example takes the `k` most similar training examples (`k` capped at the training
//!   set's size); on equal similarity the lower training index wins, so results do not depend on
//!   threads.
//! - Neighbour `j` votes for its class with weight `exp(s_j / T)` (`T` = temperature, 0.07 by
//!   default). Weights are computed as `exp((s_j − s_max)/T)`, the same ratios without overflow.
//!   The class with the largest total wins; ties go to the lower class index.

#[cfg(target_arch = "x86_64")]
use super::math::avx::Avx;
use super::math::{Dot4, Matrix, Plain, map_shards};

/// The kNN probe's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct KnnOptions {
    pub k: usize,
    pub temperature: f32,
    /// Threads (1 or 2; results do not depend on it).
    pub threads: usize,
}

impl Default for KnnOptions {
    fn default() -> Self {
        KnnOptions {
            k: 20,
            temperature: 0.07,
            threads: 1,
        }
    }
}

/// The `k` largest `(similarity, train index)` pairs, most similar first.
struct TopK {
    k: usize,
    items: Vec<(f32, usize)>,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            k,
            items: Vec::with_capacity(k + 1),
        }
    }

    #[inline]
    fn offer(&mut self, sim: f32, j: usize) {
        if self.items.len() == self.k {
            // Strictly better only: an equal similarity keeps the earlier (lower) index.
            if sim.is_nan() || sim <= self.items[self.k - 1].0 {
                return;
            }
            self.items.pop();
        }
        // After the existing items with similarity >= sim (they came first or rank higher).
        let at = self.items.partition_point(|&(s, _)| s >= sim);
        self.items.insert(at, (sim, j));
    }
}

/// Class scores from a neighbour list (see the module doc for the weighting).
pub fn vote(
    neighbours: &[(f32, usize)],
    train_y: &[usize],
    n_classes: usize,
    temperature: f32,
) -> Vec<f64> {
    let mut scores = vec![0.0f64; n_classes];
    let top = neighbours
        .iter()
        .map(|n| n.0)
        .fold(f32::NEG_INFINITY, f32::max);
    for &(sim, j) in neighbours {
        scores[train_y[j]] += (f64::from(sim - top) / f64::from(temperature)).exp();
    }
    scores
}

/// Train rows per tile: a tile (~256 KB at 256 dims) stays in cache across a block of test rows.
const TRAIN_TILE: usize = 256;
const TEST_TILE: usize = 32;

/// The `k` nearest training rows of every test row (both already L2-normalised).
pub fn neighbours(
    train: &Matrix,
    test: &Matrix,
    k: usize,
    threads: usize,
) -> Vec<Vec<(f32, usize)>> {
    let k = k.min(train.rows).max(1);
    let threads = if test.rows * train.rows * train.cols >= 2_000_000 {
        threads
    } else {
        1
    };
    #[cfg(target_arch = "x86_64")]
    let avx = Avx::detect();
    let parts = map_shards(test.rows, threads, |range| {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx) = avx {
            // SAFETY: holding an `Avx` proves the CPU has AVX.
            return unsafe { shard_avx(avx, train, test, k, range) };
        }
        shard(Plain, train, test, k, range)
    });
    parts.into_iter().flatten().collect()
}

/// [`shard`] compiled for AVX (same arithmetic, so the same neighbours).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn shard_avx(
    avx: Avx,
    train: &Matrix,
    test: &Matrix,
    k: usize,
    range: std::ops::Range<usize>,
) -> Vec<Vec<(f32, usize)>> {
    shard(avx, train, test, k, range)
}

/// The neighbours of the test rows `range`: tiles of test rows against tiles of training rows,
/// four test rows per kernel call (a short last group repeats its last row; the copies are
/// dropped).
#[inline(always)]
fn shard<K: Dot4>(
    kernel: K,
    train: &Matrix,
    test: &Matrix,
    k: usize,
    range: std::ops::Range<usize>,
) -> Vec<Vec<(f32, usize)>> {
    let mut out = Vec::with_capacity(range.len());
    let mut t0 = range.start;
    while t0 < range.end {
        let t1 = (t0 + TEST_TILE).min(range.end);
        let mut tops: Vec<TopK> = (t0..t1).map(|_| TopK::new(k)).collect();
        let mut j0 = 0;
        while j0 < train.rows {
            let j1 = (j0 + TRAIN_TILE).min(train.rows);
            let mut g = t0;
            while g < t1 {
                let m = (t1 - g).min(4);
                let rows = [0, 1, 2, 3].map(|s| test.row(g + s.min(m - 1)));
                for j in j0..j1 {
                    let sims = kernel.dot4(rows, train.row(j));
                    for (s, &sim) in sims.iter().enumerate().take(m) {
                        tops[g - t0 + s].offer(sim, j);
                    }
                }
                g += m;
            }
            j0 = j1;
        }
        out.extend(tops.into_iter().map(|t| t.items));
        t0 = t1;
    }
    out
}

/// Predicted class of every test row (see the module doc).
pub fn predict(
    train: &Matrix,
    train_y: &[usize],
    n_classes: usize,
    test: &Matrix,
    options: &KnnOptions,
) -> Vec<usize> {
    if train.rows == 0 {
        return vec![0; test.rows];
    }
    neighbours(train, test, options.k, options.threads)
        .iter()
        .map(|nb| {
            let scores = vote(nb, train_y, n_classes, options.temperature);
            let mut best = 0;
            for (c, &s) in scores.iter().enumerate() {
                if s > scores[best] {
                    best = c;
                }
            }
            best
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::math::dot;
    use super::*;

    fn at_angles(degrees: &[f32]) -> Matrix {
        let data = degrees
            .iter()
            .flat_map(|d| {
                let r = d.to_radians();
                [r.cos(), r.sin()]
            })
            .collect();
        Matrix::from_vec(degrees.len(), 2, data).unwrap()
    }

    #[test]
    fn weighted_vote_matches_hand_computation() {
        // Unit vectors at 0°, 60°, −60° and 180°; the query at 0°.
        let train = at_angles(&[0.0, 60.0, -60.0, 180.0]);
        let y = [0, 1, 1, 0];
        let query = at_angles(&[0.0]);
        let nb = &neighbours(&train, &query, 3, 1)[0];
        let idx: Vec<usize> = nb.iter().map(|n| n.1).collect();
        assert_eq!(
            idx,
            vec![0, 1, 2],
            "ties between 60° and −60° keep index order"
        );
        // Class 0: exp((1 − 1)/T) = 1; class 1: 2·exp((0.5 − 1)/T).
        for t in [0.07f32, 1.0, 100.0] {
            let scores = vote(nb, &y, 2, t);
            let expect1 = 2.0 * (-0.5 / f64::from(t)).exp();
            assert!((scores[0] - 1.0).abs() < 1e-6, "T={t}: {scores:?}");
            assert!((scores[1] - expect1).abs() < 1e-5, "T={t}: {scores:?}");
        }
        // A sharp temperature trusts the nearest neighbour; a flat one counts heads.
        let sharp = KnnOptions {
            k: 3,
            temperature: 0.07,
            threads: 1,
        };
        let flat = KnnOptions {
            temperature: 100.0,
            ..sharp.clone()
        };
        assert_eq!(predict(&train, &y, 2, &query, &sharp), vec![0]);
        assert_eq!(predict(&train, &y, 2, &query, &flat), vec![1]);
        // k larger than the training set is capped.
        let all = KnnOptions { k: 50, ..flat };
        assert_eq!(neighbours(&train, &query, all.k, 1)[0].len(), 4);
    }

    #[test]
    fn neighbours_are_the_same_on_one_thread_or_two() {
        let mut rng = crate::rng::Rng::new(3);
        let mut m = |rows| {
            let mut x =
                Matrix::from_vec(rows, 64, (0..rows * 64).map(|_| rng.normal_f32()).collect())
                    .unwrap();
            x.normalize_rows();
            x
        };
        let (train, test) = (m(700), m(90));
        let one = neighbours(&train, &test, 5, 1);
        let two = neighbours(&train, &test, 5, 2);
        assert_eq!(one, two);
        assert_eq!(
            shard(Plain, &train, &test, 5, 0..test.rows),
            one,
            "the plain kernel finds the same neighbours as the dispatched one"
        );
        // Brute force agrees on the nearest one.
        for (i, nb) in one.iter().enumerate() {
            let best = (0..train.rows)
                .max_by(|&a, &b| {
                    dot(test.row(i), train.row(a)).total_cmp(&dot(test.row(i), train.row(b)))
                })
                .unwrap();
            assert_eq!(nb[0].1, best);
            assert!(nb.windows(2).all(|w| w[0].0 >= w[1].0));
        }
    }

    /// Timings of the kNN probe (release mode):
    /// `cargo test --release --lib eval::knn::tests::bench_knn -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark: run in release mode"]
    fn bench_knn() {
        for &(n, threads) in &[(1_000, 1), (60_000, 1), (60_000, 2)] {
            let (mut x, y) = crate::eval::linear::tests::structured(n, 256, 10, 1);
            x.normalize_rows();
            let train: Vec<usize> = (0..n * 4 / 5).collect();
            let test: Vec<usize> = (n * 4 / 5..n).collect();
            let yt: Vec<usize> = train.iter().map(|&i| y[i]).collect();
            let (xt, xq) = (x.select(&train), x.select(&test));
            let options = KnnOptions {
                threads,
                ..Default::default()
            };
            let started = std::time::Instant::now();
            let pred = predict(&xt, &yt, 10, &xq, &options);
            let secs = started.elapsed().as_secs_f64();
            let acc = crate::eval::math::accuracy_at(&y, &test, &pred);
            println!(
                "kNN {} train x {} test x 256, {threads} thread(s): {secs:.2} s ({:.1} G multiply-adds/s), accuracy {acc:.3}",
                train.len(),
                test.len(),
                (train.len() * test.len() * 256) as f64 / secs / 1e9
            );
        }
    }
}
