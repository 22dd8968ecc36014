//! The `sslpipe` command line: parse arguments, call the library, print results and errors with
//! their causes, and return an exit code a scheduler can act on:
//! 0 done · 1 the run failed · 2 the pipeline file is invalid · 130 stopped by Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sslpipe::pipeline::{self, RunOptions};

#[derive(Parser)]
#[command(
    name = "sslpipe",
    version,
    about = "Self-supervised visual learning: images in, encoders and Parquet features out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline: pretrain the encoder on the pretext task (with `[pretrain]`), then embed the
    /// images and write Parquet features.
    Run {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Print the end-of-run summary as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// No progress display.
        #[arg(long, short)]
        quiet: bool,
        /// Path of libonnxruntime (overrides `[runtime] library` and ORT_DYLIB_PATH).
        #[arg(long, value_name = "PATH")]
        ort_lib: Option<PathBuf>,
        /// Continue pretraining from the newest checkpoint in `<output.dir>/pretrain/checkpoints`.
        #[arg(long)]
        resume: bool,
    },
    /// Check a pipeline without running it; every problem is listed with file, line and field.
    Validate {
        pipeline: PathBuf,
        #[arg(long, value_name = "PATH")]
        ort_lib: Option<PathBuf>,
    },
    /// Draw the pretext task's first samples (input next to pseudo-label) into a PNG contact sheet.
    Preview {
        pipeline: PathBuf,
        /// Where to write the PNG.
        #[arg(long, default_value = "preview.png")]
        out: PathBuf,
        /// How many images.
        #[arg(long, default_value_t = 6)]
        count: usize,
    },
    /// Show a feature file (or a folder of part files): schema, row count, metadata, first rows.
    Inspect {
        path: PathBuf,
        /// How many rows to show.
        #[arg(long, default_value_t = 5)]
        rows: usize,
    },
    /// Evaluate features against labels: linear probe and kNN, accuracy and confusion matrices.
    Eval(sslpipe::eval::cli::EvalArgs),
    /// Write a Feast feature repository (feature_store.yaml + definitions) for a feature output.
    Feast {
        /// The feature folder (`part-*.parquet`) or one feature file.
        features: PathBuf,
        /// The repository folder to write.
        #[arg(long)]
        out: PathBuf,
        /// Feast project name.
        #[arg(long, default_value = "sslpipe")]
        project: String,
        /// FeatureView name (and the definitions file's name).
        #[arg(long, default_value = "embeddings")]
        view: String,
        /// Entity name (its join key is `key`).
        #[arg(long, default_value = "image")]
        entity: String,
        /// Days an entity's newest row stays servable.
        #[arg(long, default_value_t = 3650)]
        ttl_days: u64,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SSLPIPE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match execute(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            pipeline: file,
            json,
            quiet,
            ort_lib,
            resume,
        } => {
            let Some(plan) = load(&file, ort_lib)? else {
                return Ok(ExitCode::from(2));
            };
            let options = RunOptions {
                handle_signals: true,
                progress: !quiet,
                resume,
                ..Default::default()
            };
            let summary = pipeline::run(&plan, options)
                .with_context(|| format!("pipeline {} failed", file.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                eprintln!("{summary}");
            }
            Ok(if summary.stopped_early {
                ExitCode::from(130)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Validate {
            pipeline: file,
            ort_lib,
        } => {
            let Some(plan) = load(&file, ort_lib)? else {
                return Ok(ExitCode::from(2));
            };
            if let Err(errors) = pipeline::validate(&plan) {
                eprintln!("{errors}");
                return Ok(ExitCode::from(2));
            }
            println!("{}: ok", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Preview {
            pipeline: file,
            out,
            count,
        } => {
            let Some(plan) = load(&file, None)? else {
                return Ok(ExitCode::from(2));
            };
            let keys = pipeline::write_preview(&plan, count, &out)?;
            println!(
                "wrote {} ({} samples: {})",
                out.display(),
                keys.len(),
                keys.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Feast {
            features,
            out,
            project,
            view,
            entity,
            ttl_days,
        } => {
            let spec = sslpipe::sink::feast::FeastRepoSpec {
                features,
                out,
                project,
                view,
                entity,
                ttl_days,
            };
            let repo = sslpipe::sink::feast::write_repo(&spec)?;
            for file in &repo.files {
                println!("wrote {}", file.display());
            }
            eprintln!(
                "{} part file(s), embedding of {} values; next: `feast apply` in {}",
                repo.parts,
                repo.dim.map_or("varying".to_string(), |d| d.to_string()),
                spec.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { path, rows } => {
            print!("{}", sslpipe::sink::inspect::describe(&path, rows)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(args) => eval(&args),
    }
}

/// `sslpipe eval`: runs the probes, prints notes on stderr and the report on stdout (text or JSON),
/// and with `--out` writes `eval.json` and the confusion-matrix PNGs.
fn eval(args: &sslpipe::eval::cli::EvalArgs) -> anyhow::Result<ExitCode> {
    let mut report = sslpipe::eval::run(&args.options())?;
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    if let Some(dir) = &args.out {
        sslpipe::eval::report::write_outputs(&mut report, dir)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", sslpipe::eval::report::text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads and validates the pipeline file; prints every problem and returns `None` if any.
fn load(
    file: &std::path::Path,
    ort_lib: Option<PathBuf>,
) -> anyhow::Result<Option<sslpipe::config::Pipeline>> {
    match sslpipe::config::load(file) {
        Ok(mut plan) => {
            if ort_lib.is_some() {
                plan.runtime.library = ort_lib;
            }
            Ok(Some(plan))
        }
        Err(errors) => {
            eprintln!("{errors}");
            Ok(None)
        }
    }
}
