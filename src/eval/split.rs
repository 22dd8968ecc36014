//! Seeded, stratified partitions of a labeled set: the test split, the labeled draws of the
//! low-shot protocol and the validation folds of penalty selection.
//!
//! Guarantees:
//! - Pure functions of (labels, sizes, seed): the same inputs give the same indices on every
//!   machine (all randomness comes from [`crate::rng::Rng`]).
//! - Stratified: every class is partitioned on its own, so class proportions are kept.
//! - Returned index lists are sorted ascending.

use crate::rng::Rng;

/// The members of each class among `idx`, in the order of `idx`.
fn by_class(idx: &[usize], y: &[usize], n_classes: usize) -> Vec<Vec<usize>> {
    let mut members = vec![Vec::new(); n_classes];
    for &i in idx {
        members[y[i]].push(i);
    }
    members
}

/// Splits all examples into (train, test): per class, `round(fraction · n_c)` random members go
/// to the test set, but a class with two or more members keeps at least one on each side.
pub fn test_split(
    y: &[usize],
    n_classes: usize,
    fraction: f64,
    rng: &mut Rng,
) -> (Vec<usize>, Vec<usize>) {
    let all: Vec<usize> = (0..y.len()).collect();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for mut members in by_class(&all, y, n_classes) {
        rng.shuffle(&mut members);
        let n = members.len();
        let mut n_test = (fraction * n as f64).round() as usize;
        if n >= 2 {
            n_test = n_test.clamp(1, n - 1);
        } else {
            n_test = 0;
        }
        test.extend_from_slice(&members[..n_test]);
        train.extend_from_slice(&members[n_test..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// A class of the pool that has fewer members than a draw asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    pub class: usize,
    pub available: usize,
}

/// Exactly `per_class` random members of every class among `pool`, or the first class (by index)
/// that has fewer.
pub fn stratified_draw(
    pool: &[usize],
    y: &[usize],
    n_classes: usize,
    per_class: usize,
    rng: &mut Rng,
) -> Result<Vec<usize>, Shortfall> {
    let members = by_class(pool, y, n_classes);
    if let Some((class, m)) = members
        .iter()
        .enumerate()
        .find(|(_, m)| m.len() < per_class)
    {
        return Err(Shortfall {
            class,
            available: m.len(),
        });
    }
    let mut out = Vec::with_capacity(per_class * n_classes);
    for mut m in members {
        rng.shuffle(&mut m);
        out.extend_from_slice(&m[..per_class]);
    }
    out.sort_unstable();
    Ok(out)
}

/// A fold number in `0..k` for each of the `y.len()` examples: each class is shuffled and dealt
/// round-robin, continuing where the previous class stopped, so folds differ in size by at most
/// one and every class is spread as evenly as its size allows.
pub fn stratified_folds(y: &[usize], n_classes: usize, k: usize, rng: &mut Rng) -> Vec<usize> {
    let k = k.max(1);
    let all: Vec<usize> = (0..y.len()).collect();
    let mut fold = vec![0; y.len()];
    let mut next = 0;
    for mut members in by_class(&all, y, n_classes) {
        rng.shuffle(&mut members);
        for i in members {
            fold[i] = next % k;
            next += 1;
        }
    }
    fold
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<usize> {
        // 3 classes of 40, 25 and 12 members, interleaved.
        let mut y = Vec::new();
        for i in 0..77 {
            y.push(if i < 40 {
                0
            } else if i < 65 {
                1
            } else {
                2
            });
        }
        Rng::new(1).shuffle(&mut y);
        y
    }

    #[test]
    fn stratified_draw_takes_exactly_n_per_class_and_is_seeded() {
        let y = labels();
        let pool: Vec<usize> = (0..y.len()).filter(|i| i % 7 != 0).collect();
        let a = stratified_draw(&pool, &y, 3, 5, &mut Rng::new(9)).unwrap();
        let b = stratified_draw(&pool, &y, 3, 5, &mut Rng::new(9)).unwrap();
        let c = stratified_draw(&pool, &y, 3, 5, &mut Rng::new(10)).unwrap();
        assert_eq!(a, b, "same seed, same draw");
        assert_ne!(a, c, "another seed, another draw");
        for class in 0..3 {
            assert_eq!(a.iter().filter(|&&i| y[i] == class).count(), 5);
        }
        assert!(a.iter().all(|i| pool.contains(i)), "only pool members");
        assert!(a.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
        let short = stratified_draw(&pool, &y, 3, 11, &mut Rng::new(9)).unwrap_err();
        let in_pool = pool.iter().filter(|&&i| y[i] == 2).count();
        assert_eq!(
            short,
            Shortfall {
                class: 2,
                available: in_pool
            }
        );
    }

    #[test]
    fn test_split_keeps_class_proportions() {
        let y = labels();
        let (train, test) = test_split(&y, 3, 0.2, &mut Rng::new(4));
        assert_eq!(train.len() + test.len(), y.len());
        let count = |set: &[usize], c| set.iter().filter(|&&i| y[i] == c).count();
        assert_eq!(
            [count(&test, 0), count(&test, 1), count(&test, 2)],
            [8, 5, 2]
        );
        assert!(train.iter().all(|i| !test.contains(i)));
        let (_, one) = test_split(&[0, 1, 1], 2, 0.2, &mut Rng::new(4));
        assert_eq!(one.len(), 1, "a singleton class stays in training: {one:?}");
    }

    #[test]
    fn folds_are_balanced_within_each_class() {
        let y = labels();
        let folds = stratified_folds(&y, 3, 5, &mut Rng::new(2));
        for class in 0..3 {
            let mut sizes = [0usize; 5];
            for (i, &f) in folds.iter().enumerate() {
                if y[i] == class {
                    sizes[f] += 1;
                }
            }
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(hi - lo <= 1, "class {class}: {sizes:?}");
        }
    }
}
