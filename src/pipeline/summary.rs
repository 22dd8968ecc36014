//! The end-of-run summary: what went in, what came out, how fast each stage was and where time
//! went. Printed as text for people and as JSON (`--json`) for tools.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::stats::{Counters, Stage, StageSummary};
use super::write::Written;
use crate::config::Pipeline;

/// The stages of an embed run, each with its merged clocks.
pub struct Stages {
    pub source: Arc<Stage>,
    pub decode: Arc<Stage>,
    pub embed: Arc<Stage>,
    pub sink: Arc<Stage>,
}

impl Stages {
    pub fn new(workers: usize) -> Self {
        Self {
            source: Arc::new(Stage::new("source", 1)),
            decode: Arc::new(Stage::new("decode", workers)),
            embed: Arc::new(Stage::new("embed", 1)),
            sink: Arc::new(Stage::new("sink", 1)),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageCounts {
    /// Samples the source produced.
    pub read: u64,
    /// Rows written to the feature files.
    pub ok: u64,
    /// Images skipped (listed in the errors file).
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub pipeline: String,
    pub images: ImageCounts,
    pub seconds: f64,
    pub images_per_s: f64,
    /// True when the run was stopped (Ctrl-C) before the end of its input.
    pub stopped_early: bool,
    /// The encoder's model_id and where it came from (absent for a pretext export).
    pub model_id: Option<String>,
    pub model: Option<String>,
    /// The pretext task, for runs that have one.
    pub pretext: Option<String>,
    pub stages: Vec<StageSummary>,
    pub output_files: Vec<PathBuf>,
    pub errors_file: Option<PathBuf>,
    /// The pretrain phase, for pipelines with `[pretrain]`.
    pub pretrain: Option<crate::pretrain::PretrainReport>,
}

impl RunSummary {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        plan: &Pipeline,
        counters: &Counters,
        stages: &[&Arc<Stage>],
        wall: Duration,
        written: Written,
        model: Option<(String, String)>,
        stopped_early: bool,
    ) -> Self {
        let (model_id, model) = model.map_or((None, None), |(id, origin)| (Some(id), Some(origin)));
        let secs = wall.as_secs_f64();
        Self {
            pipeline: plan.name.clone(),
            images: ImageCounts {
                read: Counters::get(&counters.read),
                ok: written.rows,
                failed: written.errors,
            },
            seconds: secs,
            images_per_s: if secs > 0.0 {
                written.rows as f64 / secs
            } else {
                0.0
            },
            stopped_early,
            model_id,
            model,
            pretext: plan.pretext().map(|p| p.name().to_string()),
            stages: stages.iter().map(|s| s.summary(wall)).collect(),
            output_files: written.files,
            errors_file: written.errors_file,
            pretrain: None,
        }
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.images;
        writeln!(
            f,
            "{}: {} images read, {} written, {} skipped in {:.1} s ({:.1} images/s){}",
            self.pipeline,
            i.read,
            i.ok,
            i.failed,
            self.seconds,
            self.images_per_s,
            if self.stopped_early {
                " — stopped early"
            } else {
                ""
            }
        )?;
        if let (Some(model), Some(id)) = (&self.model, &self.model_id) {
            writeln!(f, "model: {model} (model_id {id})")?;
        }
        if let Some(p) = &self.pretrain {
            writeln!(
                f,
                "pretrain ({}): {} steps, {} images in {:.1} s ({:.1} images/s); train step waited for data {:.0}% of its time{}",
                p.task,
                p.steps,
                p.images,
                p.seconds,
                p.images_per_s,
                100.0 * p.input_wait,
                if p.interrupted {
                    " — interrupted, resume with --resume"
                } else {
                    ""
                }
            )?;
            if let Some(e) = &p.eval {
                let metrics: Vec<String> = e
                    .metrics
                    .iter()
                    .map(|(m, v)| format!(", {m} {v:.3}"))
                    .collect();
                let baseline = e
                    .baseline
                    .map(|b| format!(" (input-independent baseline {b:.4})"))
                    .unwrap_or_default();
                writeln!(
                    f,
                    "held-out ({} images, step {}): loss {:.4}{baseline}{}",
                    e.images,
                    e.step,
                    e.loss,
                    metrics.concat()
                )?;
            }
            writeln!(
                f,
                "training log, curve and checkpoints: {}",
                p.dir.display()
            )?;
        } else if let Some(task) = &self.pretext {
            writeln!(f, "pretext: {task}")?;
        }
        writeln!(
            f,
            "{:<8} {:>7} {:>9} {:>10} {:>6} {:>9} {:>9} {:>11}",
            "stage", "threads", "items", "items/s", "busy", "wait in", "wait out", "capacity/s"
        )?;
        for s in &self.stages {
            writeln!(
                f,
                "{:<8} {:>7} {:>9} {:>10.1} {:>5.0}% {:>8.0}% {:>8.0}% {:>11.1}",
                s.stage,
                s.threads,
                s.items,
                s.items_per_s,
                100.0 * s.busy_share,
                100.0 * s.wait_in_share,
                100.0 * s.wait_out_share,
                s.capacity_per_s
            )?;
        }
        for file in &self.output_files {
            writeln!(f, "wrote {}", file.display())?;
        }
        if let Some(e) = &self.errors_file {
            write!(f, "errors: {} ({} skipped)", e.display(), i.failed)?;
        }
        Ok(())
    }
}
