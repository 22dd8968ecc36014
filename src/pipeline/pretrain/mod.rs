//! The pretrain phase: images stream through the pretext task (on the decode workers) into ONNX
//! Runtime train steps on one dedicated thread, until the budget is spent; then the trained
//! encoder is exported as a plain `encoder.onnx` for the embed phase.
//!
//! What a run leaves in `<output.dir>/pretrain/`: `log.csv` and `curve.png` (see [`log`]),
//! `checkpoints/step-NNNNNNNN.safetensors` (the newest `keep_checkpoints`), `errors.jsonl` (images
//! that could not be used), and `predictions.png` for dense tasks (held-out input, prediction,
//! truth).
//!
//! Guarantees:
//! - Streaming: memory is bounded by the channels, one batch and the held-out set, never by the
//!   number of images or passes. Passes are shuffled with a seed (pass `e` has its own order) and
//!   samples draw their pretext randomness from `(seed, key, epoch)`, so a run is reproducible.
//! - Held out means held out: about `holdout` images, chosen by key hash, are never trained on;
//!   the loss and metrics on them are logged every `eval_every` steps next to the loss of the best
//!   input-independent prediction.
//! - Ctrl-C finishes the current step, writes a checkpoint and stops; `--resume` continues from
//!   the newest checkpoint with the same parameters, optimizer state, schedule position and data
//!   position (the pass and how far into it). A checkpoint that cannot be read completely, or
//!   that describes another model, is refused with its path and the reason; nothing is loaded.
//! - A bad image is listed in `errors.jsonl` once and skipped (or stops the run with
//!   `on_error = "fail"`); a run whose input yields no usable image stops with an error instead of
//!   looping.

mod export;
mod log;
mod schedule;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::Receiver;
use serde::Serialize;

pub use export::encoder_onnx;

use super::engine::{self, Passes};
use super::reorder::Reorder;
use super::stats::{Clock, Counters, Stage};
use super::workers::Decoded;
use super::workers::PretextPrepare;
use super::{PipelineError, RunOptions};
use crate::config::{ModelSpec, OnError, Pipeline, PretrainSpec};
use crate::decode::Decoder;
use crate::pretext::baseline::Baseline;
use crate::pretext::training::{PixelNorm, Slot};
use crate::pretext::{PretextSample, PretextTask, RgbView};
use crate::rng::Rng;
use crate::sink::{ErrorRecord, ErrorsFile};
use crate::source::{Emit, Holdout, Order, StopFlag, Subset};
use crate::train::{Checkpoint, Evaluator, Network, TrainError, Trainer};
use schedule::Used;

/// Subfolder of the output folder that holds the pretraining artefacts.
pub const DIR: &str = "pretrain";

/// What the pretrain phase reports (part of the run summary).
#[derive(Debug, Clone, Serialize)]
pub struct PretrainReport {
    pub task: String,
    pub steps: u64,
    /// Training images consumed (held-out images excluded).
    pub images: u64,
    pub seconds: f64,
    pub images_per_s: f64,
    /// Mean training loss over the last log interval.
    pub last_loss: Option<f64>,
    /// The last held-out evaluation.
    pub eval: Option<EvalPoint>,
    /// Share of the train thread's time spent waiting for prepared samples.
    pub input_wait: f64,
    /// Step of the checkpoint this run resumed from.
    pub resumed_from: Option<u64>,
    /// Stopped by Ctrl-C before the budget was spent (a checkpoint was written).
    pub interrupted: bool,
    pub skipped_images: u64,
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalPoint {
    pub step: u64,
    pub images: usize,
    pub loss: f64,
    pub metrics: Vec<(String, f64)>,
    /// Loss of the best prediction that ignores the input (chance level for classification).
    pub baseline: Option<f64>,
}

/// The outcome: the trained encoder (unless interrupted) and the report.
pub struct Pretrained {
    pub encoder_onnx: Option<Vec<u8>>,
    pub report: PretrainReport,
    pub stages: Vec<Arc<Stage>>,
}

/// One held-out sample, kept for every evaluation (and its image for the predictions preview).
pub(crate) struct HeldOut {
    pub sample: PretextSample,
    pub rgb: Vec<u8>,
}

/// Where the data stream is, saved in checkpoints so a resumed run continues the same stream.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
struct StreamState {
    epoch: u64,
    /// Training samples of `epoch` already consumed (in the pass's shuffled order).
    position: u64,
    images: u64,
    seconds: f64,
}

/// Everything validation needs to know about the model a pipeline pretrains.
pub struct Model {
    pub task: Arc<dyn PretextTask>,
    pub network: Network,
}

/// Builds the task and the network for `plan` (which must have `[pretrain]`), checking every
/// shape; errors say which setting to change.
pub fn model(plan: &Pipeline) -> Result<Model, String> {
    let (Some(cfg), Some(pretrain)) = (plan.pretext(), plan.pretrain()) else {
        return Err("the pipeline has no [pretext] or no [pretrain]".into());
    };
    let ModelSpec::Builtin { spec: encoder, .. } = &plan.model else {
        return Err("pretraining needs the built-in encoder".into());
    };
    let size = plan.decode.size as usize;
    let task = crate::pretext::build(cfg, size).map_err(|e| e.to_string())?;
    let spec = crate::pretext::train_spec(
        task.as_ref(),
        encoder,
        pretrain.temperature,
        pretrain.optimizer.clone(),
        pretrain.batch_size,
    )?;
    let network = Network::new(spec).map_err(|e| e.to_string())?;
    if network.spec().tap == crate::train::Tap::FeatureMap
        && encoder.features == crate::model::Features::Last
    {
        let channels = network
            .encoder_layers()
            .last()
            .map(|l| l.output_shape[0])
            .unwrap_or(0);
        if channels != encoder.embedding_dim as usize {
            return Err(format!(
                "pretraining trains the encoder's last feature map, and the embedding is that map's average ({channels} channels = width x 2^(stages - 1)): set embedding_dim = {channels}"
            ));
        }
    }
    Ok(Model { task, network })
}

/// The pipeline's pixel normalisation, as the task's feed takes it.
fn pixel_norm(plan: &Pipeline) -> PixelNorm {
    let n = plan.model.normalization();
    PixelNorm {
        mean: n.mean,
        std: n.std,
    }
}

fn stage_err(e: impl std::fmt::Display) -> PipelineError {
    PipelineError::stage("pretrain", None, e.to_string())
}

fn train_err(e: TrainError) -> PipelineError {
    PipelineError::stage("pretrain", None, e.to_string())
}

/// Checkpoint files in `dir`, oldest first, with their steps.
fn checkpoints(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let step = name
                .strip_prefix("step-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((step, p))
        })
        .collect();
    found.sort();
    found
}

/// Runs the pretrain phase of `plan`. With `resume`, continues from the newest checkpoint.
pub fn run(
    plan: &Pipeline,
    options: &RunOptions,
    resume: bool,
) -> Result<Pretrained, PipelineError> {
    let spec = plan
        .pretrain()
        .cloned()
        .ok_or_else(|| stage_err("no [pretrain] section"))?;
    let Model { task, network } = model(plan).map_err(stage_err)?;
    let env = crate::runtime::environment(plan.runtime.library.as_deref())?;
    let dir = plan.output.dir.join(DIR);
    let ckpt_dir = dir.join("checkpoints");

    let (trainer, state, resumed_from) = if resume {
        let Some((step, path)) = checkpoints(&ckpt_dir).pop() else {
            return Err(stage_err(format!(
                "nothing to resume: no checkpoint in {}",
                ckpt_dir.display()
            )));
        };
        let ckpt = Checkpoint::load(&path).map_err(train_err)?;
        let state: StreamState = serde_json::from_value(ckpt.meta.rng.clone()).map_err(|e| {
            stage_err(format!(
                "checkpoint {}: its stream position is unreadable ({e})",
                path.display()
            ))
        })?;
        let step_graph = network.train_step().map_err(train_err)?;
        let trainer = Trainer::resume(env, &plan.runtime.session, step_graph, &ckpt).map_err(
            |e| match e {
                TrainError::Checkpoint { reason, .. } => stage_err(format!(
                    "checkpoint {}: {reason}; it was written by a different pipeline (run without --resume to start afresh)",
                    path.display()
                )),
                other => train_err(other),
            },
        )?;
        (trainer, state, Some(step))
    } else {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| crate::sink::io_err(&dir, e))?;
        }
        let seed = match &plan.model {
            ModelSpec::Builtin { seed, .. } => *seed,
            ModelSpec::Onnx { .. } => 0,
        };
        let params = network.init_params(seed).map_err(train_err)?;
        let step_graph = network.train_step().map_err(train_err)?;
        let trainer =
            Trainer::new(env, &plan.runtime.session, step_graph, &params).map_err(train_err)?;
        (trainer, StreamState::default(), None)
    };
    std::fs::create_dir_all(&ckpt_dir).map_err(|e| crate::sink::io_err(&ckpt_dir, e))?;
    let evaluator = Evaluator::new(
        env,
        &plan.runtime.session,
        network.eval_step().map_err(train_err)?,
    )
    .map_err(train_err)?;

    // The held-out share: `holdout` images, but never more than a tenth of the input.
    let never = StopFlag::default();
    let (holdout, total, held) =
        Holdout::choose(&plan.source, |total| spec.holdout.min(total / 10), &never)?;
    let train_images = total - held;
    if train_images == 0 {
        return Err(stage_err(format!(
            "the source has no image to train on ({total} listed)"
        )));
    }
    let size = plan.decode.size as usize;
    let mut errors = ErrorsFile::create(&dir)?;
    let mut reported = HashSet::new();
    let heldout = collect_heldout(
        plan,
        &task,
        holdout,
        held as usize,
        &mut errors,
        &mut reported,
    )?;

    let metrics = trainer.signature().metrics.clone();
    let log = log::TrainLog::open(&dir, &metrics, resumed_from)?;

    let counters = Arc::new(Counters::new("trained on"));
    let source_stage = Arc::new(Stage::new("source", 1));
    let decode_stage = Arc::new(Stage::new("pretext", plan.workers));
    let train_stage = Arc::new(Stage::new("train", 1));
    let upstream_stop = StopFlag::default();
    let prepare = PretextPrepare {
        task: task.clone(),
        seed: plan.seed,
    };
    let passes = Passes {
        first_epoch: state.epoch,
        epochs: u64::MAX,
        shuffle: Some(plan.seed),
        skip: state.position,
        subset: Subset::Without(holdout),
    };
    let (items, upstream) = engine::start(
        plan,
        prepare,
        passes,
        &upstream_stop,
        &counters,
        &source_stage,
        &decode_stage,
    )?;

    let run = TrainLoop {
        schedule: schedule::Plan::new(&spec, Some(train_images)),
        spec: spec.clone(),
        trainer,
        evaluator,
        baseline: task.baseline(spec.batch_size),
        task: task.clone(),
        norm: pixel_norm(plan),
        heldout,
        log,
        errors,
        reported,
        ckpt_dir,
        state,
        on_error: plan.on_error,
        interrupt: options.stop.clone(),
        upstream_stop: upstream_stop.clone(),
        counters: counters.clone(),
        stage: train_stage.clone(),
        last_eval: None,
        last_loss: None,
        interrupted: false,
    };
    let worker = std::thread::Builder::new()
        .name("train".into())
        .spawn(move || run.run(items))
        .map_err(engine::spawn_err)?;
    let ((upstream_result, train_result), _) = engine::supervise(
        options.handle_signals,
        options.progress,
        &counters,
        &options.stop,
        move || {
            let train = worker.join();
            upstream_stop.stop();
            (upstream.join(), train)
        },
    )?;
    let outcome = train_result.unwrap_or_else(|_| Err(stage_err("the train thread panicked")))?;
    upstream_result?;

    let TrainOutcome {
        trainer,
        evaluator,
        heldout,
        norm,
        log,
        mut report,
    } = outcome;
    report.task = task.name().to_string();
    report.resumed_from = resumed_from;
    report.dir = dir.clone();
    log.draw_curve(&dir.join("curve.png"))?;
    let params = trainer.params().map_err(train_err)?;
    let mut evaluator = evaluator;
    let held: Vec<_> = heldout
        .iter()
        .map(|h| (&h.sample, h.rgb.as_slice()))
        .collect();
    let rows = crate::pretext::predictions::rows(
        task.as_ref(),
        &network,
        &params,
        &mut evaluator,
        &norm,
        &held,
        spec.preview,
        spec.batch_size,
        size,
    )
    .map_err(train_err)?;
    if !rows.is_empty() {
        super::preview::write_sheet(&dir.join("predictions.png"), &rows)?;
    }
    let encoder_onnx = if report.interrupted {
        None
    } else {
        Some(
            encoder_onnx(
                &network,
                &params,
                task.as_ref(),
                &pixel_norm(plan),
                plan.decode.size,
            )
            .map_err(train_err)?,
        )
    };
    Ok(Pretrained {
        encoder_onnx,
        report,
        stages: vec![source_stage, decode_stage, train_stage],
    })
}

/// Decodes the held-out images (at most `max`, in source order, pass 0's pretext draws) on the
/// calling thread. Unusable ones go to the errors file.
fn collect_heldout(
    plan: &Pipeline,
    task: &Arc<dyn PretextTask>,
    holdout: Holdout,
    max: usize,
    errors: &mut ErrorsFile,
    reported: &mut HashSet<String>,
) -> Result<Vec<HeldOut>, PipelineError> {
    struct Collect<'a> {
        decoder: Decoder,
        task: &'a dyn PretextTask,
        size: usize,
        seed: u64,
        max: usize,
        out: Vec<HeldOut>,
        bad: Vec<ErrorRecord>,
    }
    impl Emit for Collect<'_> {
        fn emit(&mut self, key: String, bytes: Result<Vec<u8>, String>) -> bool {
            let mut rgb = Vec::new();
            let decoded = bytes.map_err(|r| ("read", r)).and_then(|b| {
                self.decoder
                    .decode_into(&b, &mut rgb)
                    .map_err(|e| ("decode", e.to_string()))
            });
            match decoded {
                Ok(_) => {
                    let view = RgbView {
                        width: self.size,
                        height: self.size,
                        pixels: &rgb,
                    };
                    let sample = self
                        .task
                        .make(view, &mut Rng::for_sample(self.seed, &key, 0));
                    self.out.push(HeldOut { sample, rgb });
                }
                Err((stage, reason)) => self.bad.push(ErrorRecord {
                    key,
                    stage: stage.into(),
                    reason,
                }),
            }
            self.out.len() < self.max
        }
    }
    if max == 0 {
        return Ok(Vec::new());
    }
    let mut c = Collect {
        decoder: Decoder::new(plan.decode.clone()),
        task: task.as_ref(),
        size: plan.decode.size as usize,
        seed: plan.seed,
        max,
        out: Vec::new(),
        bad: Vec::new(),
    };
    let order = Order {
        subset: Subset::Only(holdout),
        ..Order::default()
    };
    crate::source::run(&plan.source, order, &StopFlag::default(), &mut c)?;
    for record in c.bad {
        reported.insert(record.key.clone());
        errors.write(&record)?;
    }
    Ok(c.out)
}

struct TrainLoop {
    schedule: schedule::Plan,
    spec: PretrainSpec,
    trainer: Trainer,
    evaluator: Evaluator,
    baseline: Baseline,
    task: Arc<dyn PretextTask>,
    norm: PixelNorm,
    heldout: Vec<HeldOut>,
    log: log::TrainLog,
    errors: ErrorsFile,
    reported: HashSet<String>,
    ckpt_dir: PathBuf,
    state: StreamState,
    on_error: OnError,
    /// Ctrl-C (set by the supervisor).
    interrupt: StopFlag,
    upstream_stop: StopFlag,
    counters: Arc<Counters>,
    stage: Arc<Stage>,
    last_eval: Option<EvalPoint>,
    last_loss: Option<f64>,
    interrupted: bool,
}

struct TrainOutcome {
    trainer: Trainer,
    evaluator: Evaluator,
    heldout: Vec<HeldOut>,
    norm: PixelNorm,
    log: log::TrainLog,
    report: PretrainReport,
}

/// Running means of the training loss and metrics between two log rows.
#[derive(Default)]
struct Interval {
    steps: u64,
    loss: f64,
    metrics: Vec<f64>,
    images: u64,
    started: Option<Instant>,
    wait: Duration,
}

impl TrainLoop {
    fn run(
        mut self,
        items: Receiver<Decoded<PretextSample>>,
    ) -> Result<TrainOutcome, PipelineError> {
        let started = Instant::now();
        let seconds_before = self.state.seconds;
        let mut clock = Clock::default();
        let mut reorder = Reorder::default();
        let mut filled = 0usize;
        let mut interval = Interval {
            started: Some(Instant::now()),
            ..Default::default()
        };
        let mut pass_images = 0u64;
        let mut pass = self.state.epoch;
        let mut skipped = 0u64;
        let mut last_saved = self.trainer.step_count();
        let mut last_eval_step = None;
        let used = |s: &Self| Used {
            steps: s.trainer.step_count(),
            images: s.state.images,
            seconds: seconds_before + started.elapsed().as_secs_f64(),
        };
        let mut finished = self.schedule.done(used(&self));
        let b = self.spec.batch_size;
        'stream: while !finished {
            let before = Instant::now();
            let Ok(item) = items.recv_blocking() else {
                break;
            };
            let waited = before.elapsed();
            clock.wait_in += waited;
            interval.wait += waited;
            let busy_from = Instant::now();
            let mut ready = Vec::new();
            reorder
                .push::<()>(item.seq, item, |d| {
                    ready.push(d);
                    Ok(())
                })
                .ok();
            for d in ready {
                if d.epoch != pass {
                    if pass_images == 0 {
                        return Err(stage_err(format!(
                            "a whole pass over the source gave no usable image (pass {pass}); see {}",
                            self.errors_path().display()
                        )));
                    }
                    pass = d.epoch;
                    pass_images = 0;
                    self.state.epoch = d.epoch;
                    self.state.position = 0;
                }
                self.state.position += 1;
                let prepared = match d.result {
                    Ok(p) => p,
                    Err((stage, reason)) => {
                        skipped += 1;
                        if self.on_error == OnError::Fail {
                            return Err(PipelineError::BadImage {
                                stage,
                                key: d.key,
                                reason,
                            });
                        }
                        if self.reported.insert(d.key.clone()) {
                            self.errors.write(&ErrorRecord {
                                key: d.key,
                                stage: stage.into(),
                                reason,
                            })?;
                        }
                        continue;
                    }
                };
                pass_images += 1;
                let slot = Slot {
                    index: filled,
                    batch: b,
                };
                self.task
                    .fill(&prepared.item, slot, &self.norm, &mut self.trainer)
                    .map_err(train_err)?;
                filled += 1;
                if filled < b {
                    continue;
                }
                filled = 0;
                self.state.images += b as u64;
                let lr = self.schedule.lr(used(&self));
                let out = self.trainer.step(lr).map_err(train_err)?;
                Counters::add(&self.counters.done, b as u64);
                clock.items += b as u64;
                interval.steps += 1;
                interval.images += b as u64;
                interval.loss += f64::from(out.loss);
                interval.metrics.resize(out.metrics.len(), 0.0);
                for (acc, (_, v)) in interval.metrics.iter_mut().zip(&out.metrics) {
                    *acc += f64::from(*v);
                }
                let step = out.step;
                let now = used(&self);
                finished = self.schedule.done(now);
                self.interrupted = self.interrupt.is_stopped() && !finished;
                let last = finished || self.interrupted;
                let eval = if step.is_multiple_of(self.spec.eval_every) || last {
                    last_eval_step = Some(step);
                    self.evaluate(step)?
                } else {
                    None
                };
                if step.is_multiple_of(self.spec.log_every) || eval.is_some() || last {
                    self.write_row(&mut interval, now, lr, eval.as_ref())?;
                }
                if eval.is_some() {
                    self.last_eval = eval;
                }
                if step.is_multiple_of(self.spec.checkpoint_every) || last {
                    self.state.seconds = now.seconds;
                    self.save_checkpoint()?;
                    last_saved = step;
                }
                if last {
                    break 'stream;
                }
            }
            clock.busy += busy_from.elapsed();
        }
        // The stream ended before the budget (source failure, or Ctrl-C while waiting for data).
        let step = self.trainer.step_count();
        if step > 0 && last_saved != step {
            self.interrupted = !finished;
            self.state.seconds = used(&self).seconds;
            self.save_checkpoint()?;
        }
        if last_eval_step != Some(step) && step > 0 {
            self.last_eval = self.evaluate(step)?.or(self.last_eval.take());
        }
        drop(items);
        self.upstream_stop.stop();
        self.stage.merge(clock);
        let seconds = used(&self).seconds;
        let errors_written = self.errors.count();
        let errors_path = self.errors.finish()?;
        if errors_written == 0 {
            let _ = std::fs::remove_file(&errors_path);
        }
        let images = self.state.images;
        let waited = clock.wait_in.as_secs_f64();
        let total = waited + clock.busy.as_secs_f64();
        let report = PretrainReport {
            task: String::new(),
            steps: step,
            images,
            seconds,
            images_per_s: if seconds > 0.0 {
                images as f64 / seconds
            } else {
                0.0
            },
            last_loss: self.last_loss,
            eval: self.last_eval.clone(),
            input_wait: if total > 0.0 { waited / total } else { 0.0 },
            resumed_from: None,
            interrupted: self.interrupted,
            skipped_images: skipped,
            dir: PathBuf::new(),
        };
        Ok(TrainOutcome {
            trainer: self.trainer,
            evaluator: self.evaluator,
            heldout: self.heldout,
            norm: self.norm,
            log: self.log,
            report,
        })
    }

    fn errors_path(&self) -> PathBuf {
        self.ckpt_dir
            .parent()
            .unwrap_or(Path::new("."))
            .join(ErrorsFile::NAME)
    }

    fn write_row(
        &mut self,
        interval: &mut Interval,
        now: Used,
        lr: f32,
        eval: Option<&EvalPoint>,
    ) -> Result<(), PipelineError> {
        let n = interval.steps.max(1) as f64;
        let elapsed = interval
            .started
            .map(|s| s.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        let loss = (interval.steps > 0).then(|| interval.loss / n);
        if loss.is_some() {
            self.last_loss = loss;
        }
        let row = log::Row {
            step: now.steps,
            epoch: self.state.epoch,
            images: now.images,
            seconds: now.seconds,
            lr,
            loss,
            metrics: interval.metrics.iter().map(|m| m / n).collect(),
            eval_loss: eval.map(|e| e.loss),
            eval_metrics: eval
                .map(|e| e.metrics.iter().map(|m| m.1).collect())
                .unwrap_or_default(),
            baseline: eval.and_then(|e| e.baseline),
            images_per_s: (elapsed > 0.0).then(|| interval.images as f64 / elapsed),
            input_wait: (elapsed > 0.0).then(|| interval.wait.as_secs_f64() / elapsed),
        };
        self.log.write(&row)?;
        *interval = Interval {
            started: Some(Instant::now()),
            ..Default::default()
        };
        Ok(())
    }

    /// Loss and metrics on the held-out images (full batches; a set smaller than one batch is
    /// repeated to fill it).
    fn evaluate(&mut self, step: u64) -> Result<Option<EvalPoint>, PipelineError> {
        let n = self.heldout.len();
        if n == 0 {
            return Ok(None);
        }
        let b = self.spec.batch_size;
        let batches = if n >= b { n / b } else { 1 };
        let params = self.trainer.params().map_err(train_err)?;
        let mut baseline = self.baseline.clone();
        let (mut loss, mut metrics) = (0.0, Vec::<(String, f64)>::new());
        for k in 0..batches {
            for i in 0..b {
                let s = &self.heldout[(k * b + i) % n];
                let slot = Slot { index: i, batch: b };
                self.task
                    .fill(&s.sample, slot, &self.norm, &mut self.evaluator)
                    .map_err(train_err)?;
            }
            baseline.add(b, &mut self.evaluator).map_err(train_err)?;
            let out = self.evaluator.run(&params, step).map_err(train_err)?;
            loss += f64::from(out.loss);
            metrics.resize(out.metrics.len(), (String::new(), 0.0));
            for (acc, (name, v)) in metrics.iter_mut().zip(out.metrics) {
                acc.0 = name;
                acc.1 += f64::from(v);
            }
        }
        let k = batches as f64;
        Ok(Some(EvalPoint {
            step,
            images: n.min(batches * b),
            loss: loss / k,
            metrics: metrics.into_iter().map(|(m, v)| (m, v / k)).collect(),
            baseline: baseline.loss(),
        }))
    }

    fn save_checkpoint(&mut self) -> Result<(), PipelineError> {
        let step = self.trainer.step_count();
        let path = self.ckpt_dir.join(format!("step-{step:08}.safetensors"));
        let state = serde_json::to_value(self.state).map_err(stage_err)?;
        self.trainer
            .save_checkpoint(&path, state)
            .map_err(train_err)?;
        let all = checkpoints(&self.ckpt_dir);
        let excess = all.len().saturating_sub(self.spec.keep_checkpoints);
        for (_, old) in all.into_iter().take(excess) {
            let _ = std::fs::remove_file(old);
        }
        Ok(())
    }
}
