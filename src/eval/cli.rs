//! The `sslpipe eval` command line, as the user writes it: parsed by clap and checked for form
//! only; [`EvalArgs::options`] turns it into the [`EvalOptions`] that [`super::run`] validates.

use std::path::PathBuf;

use super::{EvalOptions, PerClass, Probe};

/// Evaluate frozen features: linear probe and kNN on labeled keys.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// A feature file (.parquet) or a folder of part-*.parquet files; repeat for several.
    #[arg(long, value_name = "PATH", required = true)]
    pub features: Vec<PathBuf>,
    /// Labels: CSV with a header `key,label[,split]` (split: train/test), or Parquet with those
    /// columns.
    #[arg(long, value_name = "FILE")]
    pub labels: PathBuf,
    /// Probes to run.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "linear,knn"
    )]
    pub probe: Vec<Probe>,
    /// Labeled training examples per class, drawn from the training pool: counts and/or `all`.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "all"
    )]
    pub per_class: Vec<PerClass>,
    /// Seed of the test split, the draws and the validation folds.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Repeats of each draw smaller than the pool (seed, seed+1, …); `all` runs once.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Held-out share of each class when the labels have no split column.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// kNN: number of neighbours (capped at the labeled set's size).
    #[arg(long, default_value_t = 20)]
    pub k: usize,
    /// kNN: temperature T of the vote weights exp(similarity / T).
    #[arg(long, default_value_t = 0.07)]
    pub temperature: f32,
    /// Skip labeled keys that have no feature row (reported on stderr) instead of failing.
    #[arg(long)]
    pub allow_missing: bool,
    /// Print the report as one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write eval.json and confusion-matrix PNGs into this folder.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

impl EvalArgs {
    /// The options these arguments stand for (checked by [`super::run`]).
    pub fn options(&self) -> EvalOptions {
        EvalOptions {
            features: self.features.clone(),
            labels: self.labels.clone(),
            probes: self.probe.clone(),
            per_class: self.per_class.clone(),
            seed: self.seed,
            repeats: self.repeats,
            test_fraction: self.test_fraction,
            k: self.k,
            temperature: self.temperature,
            allow_missing: self.allow_missing,
            ..Default::default()
        }
    }
}
