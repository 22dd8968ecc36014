//! `sslpipe eval`: downstream evaluation of frozen features with a linear probe and a kNN probe.
//!
//! [`run`] reads the feature files and the labels, joins them by key, splits the labeled keys into
//! a training pool and a test set, and for each requested number of labeled examples per class
//! (and each repeat) draws a labeled subset of the pool, fits every probe on it and scores it on
//! the whole test set.
//!
//! Guarantees:
//! - Deterministic: the same inputs and seed give the same numbers (except the `seconds` timings),
//!   whatever the order of rows in the files and the number of threads. Examples are ordered by
//!   key before anything random happens.
//! - The test set is the same for every probe, draw and repeat; in one repeat all probes see the
//!   same labeled subset; the draws of one repeat are nested (the 10-per-class draw is part of the
//!   100-per-class draw).
//! - Bad input is an [`EvalError`] that says what was expected, what was found and where (file,
//!   line, key); nothing here panics on input.
//!
//! Files: [`labels`] and [`features`] read the inputs, [`split`] partitions, [`linear`] (with
//! [`lbfgs`]) and [`knn`] are the probes, [`report`] renders text, JSON and confusion PNGs,
//! [`cli`] is the command line's shape.

pub mod cli;
pub mod features;
pub mod knn;
pub mod labels;
pub mod lbfgs;
pub mod linear;
pub mod math;
pub mod report;
pub mod split;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use thiserror::Error;

use crate::rng::Rng;
use math::Matrix;

/// Everything that can go wrong in an evaluation.
#[derive(Debug, Error)]
pub enum EvalError {
    #[error("cannot read {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{}: no `{missing}` column (columns found: {found})", path.display())]
    MissingColumn {
        path: PathBuf,
        missing: String,
        found: String,
    },
    #[error("{}: column `{column}` must be {expected}, found {found}", path.display())]
    ColumnType {
        path: PathBuf,
        column: String,
        expected: &'static str,
        found: String,
    },
    #[error("{}:{line}: {reason}", path.display())]
    Csv {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{}: row {row}: null {column}", path.display())]
    Null {
        path: PathBuf,
        row: usize,
        column: String,
    },
    #[error("duplicate key {key:?} in {place}")]
    DuplicateKey { key: String, place: String },
    #[error(
        "{}: embedding of key {key:?} has {found} values, expected {expected} (the length of key {first_key:?})",
        path.display()
    )]
    Dimension {
        path: PathBuf,
        key: String,
        expected: usize,
        found: usize,
        first_key: String,
    },
    #[error("{}: embedding of key {key:?} has a null or non-finite value at position {index}", path.display())]
    NonFinite {
        path: PathBuf,
        key: String,
        index: usize,
    },
    #[error(
        "{count} labeled key(s) of {} have no feature row (first: {examples}); pass --allow-missing to skip them",
        labels.display()
    )]
    MissingFeatures {
        labels: PathBuf,
        count: usize,
        examples: String,
    },
    #[error(
        "class {class:?} has {available} example(s) in the training pool, fewer than the {asked} per class asked for (--per-class)"
    )]
    TooFewExamples {
        class: String,
        available: usize,
        asked: usize,
    },
    /// An option or a dataset that cannot be evaluated (message says why).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
}

/// A probe: what is fitted on the labeled subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    Linear,
    Knn,
}

impl std::str::FromStr for Probe {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "linear" => Ok(Probe::Linear),
            "knn" => Ok(Probe::Knn),
            other => Err(format!("unknown probe {other:?} (expected linear or knn)")),
        }
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Probe::Linear => "linear",
            Probe::Knn => "knn",
        })
    }
}

/// How many labeled examples per class a draw takes from the training pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PerClass {
    Count(usize),
    /// The whole training pool.
    All,
}

impl std::str::FromStr for PerClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("all") {
            return Ok(PerClass::All);
        }
        match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(PerClass::Count(n)),
            _ => Err(format!(
                "per-class count must be a positive integer or \"all\", found {s:?}"
            )),
        }
    }
}

impl std::fmt::Display for PerClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PerClass::Count(n) => write!(f, "{n}"),
            PerClass::All => f.write_str("all"),
        }
    }
}

impl Serialize for PerClass {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PerClass::Count(n) => s.serialize_u64(*n as u64),
            PerClass::All => s.serialize_str("all"),
        }
    }
}

/// What to evaluate and how (validated by [`run`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// Feature files or folders of part files.
    pub features: Vec<PathBuf>,
    pub labels: PathBuf,
    pub probes: Vec<Probe>,
    pub per_class: Vec<PerClass>,
    pub seed: u64,
    /// Repeats of draws smaller than the pool (`All` is always one).
    pub repeats: usize,
    /// Share of each class held out as the test set when the labels have no `split` column.
    pub test_fraction: f64,
    pub k: usize,
    pub temperature: f32,
    /// Skip labeled keys without a feature row (otherwise an error).
    pub allow_missing: bool,
    pub linear: linear::LinearOptions,
    /// Threads for the probes (1 or 2); results do not depend on it.
    pub threads: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            features: Vec::new(),
            labels: PathBuf::new(),
            probes: vec![Probe::Linear, Probe::Knn],
            per_class: vec![PerClass::All],
            seed: 0,
            repeats: 3,
            test_fraction: 0.2,
            k: 20,
            temperature: 0.07,
            allow_missing: false,
            linear: linear::LinearOptions::default(),
            threads: default_threads(),
        }
    }
}

/// One or two threads: the probes' shards are two (see [`math::SHARDS`]).
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(math::SHARDS)
}

impl EvalOptions {
    fn validate(&self) -> Result<(), EvalError> {
        let bad = |m: String| Err(EvalError::Invalid(m));
        if self.features.is_empty() {
            return bad("no --features given".into());
        }
        if self.probes.is_empty() {
            return bad("no probe to run (--probe linear,knn)".into());
        }
        if self.per_class.is_empty() {
            return bad("no --per-class count given".into());
        }
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            return bad(format!(
                "--test-fraction must be between 0 and 1 (exclusive), found {}",
                self.test_fraction
            ));
        }
        if self.repeats == 0 {
            return bad("--repeats must be at least 1".into());
        }
        if self.k == 0 {
            return bad("--k must be at least 1".into());
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(format!(
                "--temperature must be a positive number, found {}",
                self.temperature
            ));
        }
        if self
            .linear
            .penalties
            .iter()
            .any(|p| !(p.is_finite() && *p >= 0.0))
        {
            return bad("penalties must be finite and non-negative".into());
        }
        Ok(())
    }
}

/// How the labeled keys were split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitInfo {
    /// `"column"` (the labels' `split` column) or `"stratified"` (a seeded random split).
    pub source: &'static str,
    /// The held-out share, for a stratified split.
    pub test_fraction: Option<f64>,
    pub train_pool: usize,
    pub test: usize,
    pub train_pool_per_class: Vec<usize>,
    pub test_per_class: Vec<usize>,
}

/// One probe at one labeled-set size, over its repeats.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeResult {
    pub probe: Probe,
    pub per_class: PerClass,
    pub repeats: usize,
    /// Size of the labeled subset (per repeat).
    pub train_examples: usize,
    pub test_examples: usize,
    pub accuracy_mean: f64,
    /// Sample standard deviation over repeats (0 for one repeat).
    pub accuracy_std: f64,
    /// Accuracy of each repeat.
    pub accuracies: Vec<f64>,
    /// Accuracy on each class's test examples, over all repeats (`null`: no test examples).
    pub per_class_accuracy: Vec<Option<f64>>,
    /// `confusion[true][predicted]`, summed over repeats.
    pub confusion: Vec<Vec<u64>>,
    /// Linear: the L2 penalty chosen in each repeat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub penalty: Option<Vec<f64>>,
    /// Linear: validation accuracy and loss of every penalty, first repeat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<Vec<linear::PenaltyScore>>,
    /// kNN: neighbours used (capped at the labeled subset's size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Mean wall time of one fit + prediction (not deterministic).
    pub seconds: f64,
    /// The confusion-matrix PNG's file name, when written (`--out`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confusion_png: Option<String>,
}

/// The result of [`run`]: printed as text or JSON, saved as `eval.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub features: Vec<String>,
    /// The Parquet files read.
    pub feature_files: Vec<String>,
    pub labels: String,
    pub dim: usize,
    /// Class names in index order (integer labels numerically, others in natural order).
    pub classes: Vec<String>,
    /// Rows in the feature files.
    pub feature_rows: usize,
    /// Feature rows with a label (the examples evaluated).
    pub labeled: usize,
    /// Feature rows without a label (ignored).
    pub unlabeled: usize,
    /// Labeled keys without a feature row (skipped with --allow-missing).
    pub missing: usize,
    pub missing_examples: Vec<String>,
    pub split: SplitInfo,
    pub seed: u64,
    pub results: Vec<ProbeResult>,
    /// Things a user should know (skipped keys, capped k, …); also printed on stderr.
    pub notes: Vec<String>,
}

/// Class names in index order: numerically if every label is an integer, else in natural order
/// (runs of digits compare by value: `class_2` before `class_10`).
fn class_order(labels: impl Iterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = labels.collect();
    names.sort();
    names.dedup();
    let numbers: Option<Vec<i128>> = names.iter().map(|n| n.parse::<i128>().ok()).collect();
    if let Some(numbers) = numbers {
        let mut pairs: Vec<(i128, String)> = numbers.into_iter().zip(names).collect();
        pairs.sort();
        return pairs.into_iter().map(|p| p.1).collect();
    }
    names.sort_by(|a, b| natural_cmp(a, b).then_with(|| a.cmp(b)));
    names
}

/// Compares text piece by piece; runs of ASCII digits compare by numeric value.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn pieces(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (pa, pb) = (pieces(a), pieces(b));
    for (&(da, x), &(db, y)) in pa.iter().zip(&pb) {
        let ord = if da && db {
            let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        } else {
            x.cmp(y)
        };
        if ord.is_ne() {
            return ord;
        }
    }
    pa.len().cmp(&pb.len())
}

fn count_per_class(idx: &[usize], y: &[usize], n_classes: usize) -> Vec<usize> {
    let mut counts = vec![0; n_classes];
    for &i in idx {
        counts[y[i]] += 1;
    }
    counts
}

const EXAMPLES_SHOWN: usize = 5;

/// Runs the whole evaluation (see the module doc).
pub fn run(options: &EvalOptions) -> Result<EvalReport, EvalError> {
    options.validate()?;
    let labels = labels::read_labels(&options.labels)?;
    let feats = features::read_features(&options.features, &labels.index, labels.rows.len())?;
    let mut notes = Vec::new();

    let missing: Vec<&str> = labels
        .rows
        .iter()
        .zip(&feats.of_label)
        .filter(|(_, f)| f.is_none())
        .map(|(r, _)| r.key.as_str())
        .collect();
    let missing_examples: Vec<String> = missing
        .iter()
        .take(EXAMPLES_SHOWN)
        .map(|k| format!("{k:?}"))
        .collect();
    if !missing.is_empty() {
        if !options.allow_missing {
            return Err(EvalError::MissingFeatures {
                labels: labels.path.clone(),
                count: missing.len(),
                examples: missing_examples.join(", "),
            });
        }
        notes.push(format!(
            "skipped {} labeled key(s) without a feature row (first: {})",
            missing.len(),
            missing_examples.join(", ")
        ));
    }
    if feats.dim == 0 {
        return Err(EvalError::Invalid(format!(
            "the feature files ({}) hold no embeddings",
            options
                .features
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }

    // The examples: labeled keys with features, ordered by key.
    let mut present: Vec<usize> = (0..labels.rows.len())
        .filter(|&r| feats.of_label[r].is_some())
        .collect();
    present.sort_by(|&a, &b| labels.rows[a].key.cmp(&labels.rows[b].key));
    let classes = class_order(present.iter().map(|&r| labels.rows[r].label.clone()));
    let class_of: HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let n_classes = classes.len();
    let dim = feats.dim;
    // The embeddings stay where they were read (one copy of the largest thing in memory); an
    // example's row is looked up when a probe selects it.
    let feature_row: Vec<usize> = present
        .iter()
        .map(|&r| feats.of_label[r].unwrap_or_default())
        .collect();
    let y: Vec<usize> = present
        .iter()
        .map(|&r| class_of[labels.rows[r].label.as_str()])
        .collect();
    let x = Matrix {
        rows: feats.values.len() / dim,
        cols: dim,
        data: feats.values,
    };
    let select = |examples: &[usize]| -> Matrix {
        let rows: Vec<usize> = examples.iter().map(|&i| feature_row[i]).collect();
        x.select(&rows)
    };
    let unit = |mut m: Matrix| {
        m.normalize_rows();
        m
    };

    let (pool, test) = if labels.has_split {
        let side = |i: &usize| labels.rows[present[*i]].split == Some(labels::Split::Test);
        let (test, pool): (Vec<usize>, Vec<usize>) = (0..present.len()).partition(side);
        (pool, test)
    } else {
        split::test_split(
            &y,
            n_classes,
            options.test_fraction,
            &mut Rng::for_key(options.seed, "eval/test-split"),
        )
    };
    let split_info = SplitInfo {
        source: if labels.has_split {
            "column"
        } else {
            "stratified"
        },
        test_fraction: (!labels.has_split).then_some(options.test_fraction),
        train_pool: pool.len(),
        test: test.len(),
        train_pool_per_class: count_per_class(&pool, &y, n_classes),
        test_per_class: count_per_class(&test, &y, n_classes),
    };
    if test.is_empty() {
        return Err(EvalError::Invalid(format!(
            "the test set is empty ({} labeled examples{})",
            present.len(),
            if labels.has_split {
                "; no row of the labels has split = test"
            } else {
                ""
            }
        )));
    }
    let pool_classes = split_info
        .train_pool_per_class
        .iter()
        .filter(|&&c| c > 0)
        .count();
    if pool_classes < 2 {
        return Err(EvalError::Invalid(format!(
            "the training pool holds {pool_classes} class(es) ({} examples); a probe needs at least 2",
            pool.len()
        )));
    }
    for (c, &n) in split_info.train_pool_per_class.iter().enumerate() {
        if n == 0 {
            notes.push(format!(
                "class {:?} has no training examples: no probe can predict it",
                classes[c]
            ));
        }
    }

    let x_test = select(&test);
    let y_test: Vec<usize> = test.iter().map(|&i| y[i]).collect();
    let x_test_unit = unit(x_test.clone());

    let mut probes = options.probes.clone();
    probes.sort();
    probes.dedup();
    let mut sizes = options.per_class.clone();
    sizes.sort();
    sizes.dedup();
    let linear_options = linear::LinearOptions {
        threads: options.threads,
        ..options.linear.clone()
    };
    let knn_options = knn::KnnOptions {
        k: options.k,
        temperature: options.temperature,
        threads: options.threads,
    };

    let mut results: Vec<ProbeResult> = Vec::new();
    for &size in &sizes {
        let repeats = match size {
            PerClass::All => 1,
            PerClass::Count(_) => options.repeats,
        };
        let mut runs: Vec<Vec<Repeat>> = probes.iter().map(|_| Vec::new()).collect();
        let mut subset_len = 0;
        for r in 0..repeats {
            let seed = options.seed.wrapping_add(r as u64);
            let subset = match size {
                PerClass::All => pool.clone(),
                PerClass::Count(n) => {
                    let mut rng = Rng::for_key(seed, "eval/draw");
                    split::stratified_draw(&pool, &y, n_classes, n, &mut rng).map_err(|s| {
                        EvalError::TooFewExamples {
                            class: classes[s.class].clone(),
                            available: s.available,
                            asked: n,
                        }
                    })?
                }
            };
            subset_len = subset.len();
            let y_sub: Vec<usize> = subset.iter().map(|&i| y[i]).collect();
            for (p, probe) in probes.iter().enumerate() {
                let started = Instant::now();
                let (pred, fit) = match probe {
                    Probe::Linear => {
                        let fit =
                            linear::fit(&select(&subset), &y_sub, n_classes, &linear_options, seed);
                        (fit.model.predict(&x_test), Some(fit))
                    }
                    Probe::Knn => {
                        let train = unit(select(&subset));
                        let pred =
                            knn::predict(&train, &y_sub, n_classes, &x_test_unit, &knn_options);
                        (pred, None)
                    }
                };
                runs[p].push(Repeat {
                    predictions: pred,
                    seconds: started.elapsed().as_secs_f64(),
                    fit,
                });
            }
        }
        for (p, &probe) in probes.iter().enumerate() {
            results.push(summarise(
                probe, size, &runs[p], &y_test, n_classes, subset_len, options, &mut notes,
            ));
        }
    }
    results.sort_by_key(|r| (r.probe, r.per_class));

    Ok(EvalReport {
        features: options
            .features
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        feature_files: feats
            .files
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        labels: options.labels.display().to_string(),
        dim,
        classes,
        feature_rows: feats.rows,
        labeled: present.len(),
        unlabeled: feats.unlabeled,
        missing: missing.len(),
        missing_examples: missing
            .iter()
            .take(EXAMPLES_SHOWN)
            .map(|k| k.to_string())
            .collect(),
        split: split_info,
        seed: options.seed,
        results,
        notes,
    })
}

/// One probe's outcome in one repeat.
struct Repeat {
    /// Predicted class of every test example.
    predictions: Vec<usize>,
    seconds: f64,
    /// The linear probe's fit.
    fit: Option<linear::LinearFit>,
}

/// Accuracy, per-class accuracy and confusion of one probe over its repeats.
#[allow(clippy::too_many_arguments)]
fn summarise(
    probe: Probe,
    size: PerClass,
    runs: &[Repeat],
    y_test: &[usize],
    n_classes: usize,
    train_examples: usize,
    options: &EvalOptions,
    notes: &mut Vec<String>,
) -> ProbeResult {
    let mut confusion = vec![vec![0u64; n_classes]; n_classes];
    let mut accuracies = Vec::new();
    for Repeat {
        predictions: pred, ..
    } in runs
    {
        let mut correct = 0usize;
        for (&t, &p) in y_test.iter().zip(pred) {
            confusion[t][p] += 1;
            correct += usize::from(t == p);
        }
        accuracies.push(correct as f64 / y_test.len().max(1) as f64);
    }
    let per_class_accuracy = confusion
        .iter()
        .enumerate()
        .map(|(c, row)| {
            let total: u64 = row.iter().sum();
            (total > 0).then(|| row[c] as f64 / total as f64)
        })
        .collect();
    let (accuracy_mean, accuracy_std) = math::mean_std(&accuracies);
    let seconds = runs.iter().map(|r| r.seconds).sum::<f64>() / runs.len().max(1) as f64;
    let fits: Vec<&linear::LinearFit> = runs.iter().filter_map(|r| r.fit.as_ref()).collect();
    if fits.iter().any(|f| !f.converged) {
        notes.push(format!(
            "linear probe, {size} per class: L-BFGS stopped at its iteration limit ({}) in some repeat; the fit may be slightly off the optimum",
            options.linear.lbfgs.max_iterations
        ));
    }
    let k = (probe == Probe::Knn).then(|| options.k.min(train_examples));
    if probe == Probe::Knn && options.k > train_examples {
        notes.push(format!(
            "kNN, {size} per class: k = {} capped at the {train_examples} labeled examples",
            options.k
        ));
    }
    ProbeResult {
        probe,
        per_class: size,
        repeats: runs.len(),
        train_examples,
        test_examples: y_test.len(),
        accuracy_mean,
        accuracy_std,
        accuracies,
        per_class_accuracy,
        confusion,
        penalty: (probe == Probe::Linear).then(|| fits.iter().map(|f| f.penalty).collect()),
        validation: fits.first().map(|f| f.validation.clone()),
        k,
        temperature: (probe == Probe::Knn).then_some(options.temperature),
        seconds,
        confusion_png: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_agree_on_a_hand_computed_case() {
        // 1-D positions embedded as 2-D vectors (x, 1): class 0 on the left, class 1 on the
        // right, mirror-symmetric about x = 0. Logistic regression's boundary is x = 0 by symmetry;
        // for the kNN probe (k = 1) the nearest training point by angle is the one on the same side.
        let xs = [-3.0f32, -2.0, -1.0, 1.0, 2.0, 3.0];
        let train = Matrix::from_vec(6, 2, xs.iter().flat_map(|&v| [v, 1.0]).collect()).unwrap();
        let y = [0, 0, 0, 1, 1, 1];
        let queries = [-2.5f32, -0.4, 0.3, 2.5];
        let test =
            Matrix::from_vec(4, 2, queries.iter().flat_map(|&v| [v, 1.0]).collect()).unwrap();
        let expected = vec![0, 0, 1, 1];

        let fit = linear::fit(&train, &y, 2, &linear::LinearOptions::default(), 0);
        assert_eq!(fit.model.predict(&test), expected);
        // The second coordinate is constant: only x matters, and the boundary sits at x = 0.
        let margin = |x: f32| {
            let mut z = [0.0f32; 2];
            fit.model.scores(&[x, 1.0], &mut z);
            z[1] - z[0]
        };
        let boundary = -margin(0.0) / (margin(1.0) - margin(0.0));
        assert!(boundary.abs() < 0.01, "boundary at x = {boundary}");

        let (mut tu, mut qu) = (train.clone(), test.clone());
        tu.normalize_rows();
        qu.normalize_rows();
        let knn_options = knn::KnnOptions {
            k: 1,
            ..Default::default()
        };
        assert_eq!(knn::predict(&tu, &y, 2, &qu, &knn_options), expected);
    }

    #[test]
    fn class_order_is_numeric_or_natural() {
        let names = |v: &[&str]| class_order(v.iter().map(|s| s.to_string()));
        assert_eq!(names(&["10", "9", "2", "9"]), ["2", "9", "10"]);
        assert_eq!(names(&["dog", "cat", "10"]), ["10", "cat", "dog"]);
        assert_eq!(
            names(&["class_10", "class_2", "class_1", "b", "a9"]),
            ["a9", "b", "class_1", "class_2", "class_10"]
        );
    }

    #[test]
    fn options_are_checked() {
        let mut o = EvalOptions {
            features: vec!["f".into()],
            labels: "l".into(),
            ..Default::default()
        };
        assert!(o.validate().is_ok());
        o.test_fraction = 1.0;
        assert!(
            o.validate()
                .unwrap_err()
                .to_string()
                .contains("--test-fraction")
        );
        assert_eq!("all".parse::<PerClass>(), Ok(PerClass::All));
        assert_eq!(" 10".parse::<PerClass>(), Ok(PerClass::Count(10)));
        assert!("0".parse::<PerClass>().is_err());
        assert!("svm".parse::<Probe>().is_err());
    }
}
