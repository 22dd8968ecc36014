//! One pretraining run as a session: [`Pretraining::start`] builds (or resumes) the trainer,
//! chooses the held-out images and opens the log; the caller then hands it the held-out samples
//! and every prepared training sample in source order ([`Pretraining::train_on`],
//! [`Pretraining::skipped`]); [`Pretraining::finish`] saves, evaluates, draws and exports.
//!
//! Guarantees: the session steps the trainer on full batches only, in the order samples arrive,
//! so the same stream gives the same parameters; it asks to stop ([`StepOutcome::done`]) as soon
//! as the budget is spent or Ctrl-C was pressed, after a checkpoint; the stream position it saves
//! is the count of samples (usable or not) of the current pass, which is what the source skips
//! on resume.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checkpoints::{self, StreamState};
use super::schedule::{self, Used};
use super::{
    DIR, EvalPoint, HeldOut, Model, PretrainError, PretrainReport, Pretrained, encoder_onnx, log,
    model,
};
use crate::config::{ModelSpec, Pipeline, PretrainSpec};
use crate::pretext::baseline::Baseline;
use crate::pretext::training::{PixelNorm, Slot};
use crate::pretext::{PretextSample, PretextTask};
use crate::sink::{ErrorRecord, ErrorsFile};
use crate::source::{Holdout, StopFlag};
use crate::train::{Checkpoint, Evaluator, Network, TrainError, Trainer};

/// Where the training stream starts: the pass, how many of its samples were already used (a
/// resumed run skips them), and the held-out images every pass leaves out.
#[derive(Debug, Clone, Copy)]
pub struct StreamStart {
    pub epoch: u64,
    pub position: u64,
    pub holdout: Holdout,
    /// Held-out images to collect (at most a tenth of the input).
    pub held: usize,
}

/// What one training sample led to.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepOutcome {
    /// Images trained on by a step this sample completed (0: the batch is still filling).
    pub trained: usize,
    /// The budget is spent or Ctrl-C was pressed: send nothing more, call `finish`.
    pub done: bool,
}

/// Running means of the training loss and metrics between two log rows.
struct Interval {
    steps: u64,
    loss: f64,
    metrics: Vec<f64>,
    images: u64,
    started: Instant,
    wait: Duration,
}

impl Interval {
    fn new() -> Self {
        Interval {
            steps: 0,
            loss: 0.0,
            metrics: Vec::new(),
            images: 0,
            started: Instant::now(),
            wait: Duration::ZERO,
        }
    }
}

/// A pretraining run in progress (see the module documentation).
pub struct Pretraining {
    task: Arc<dyn PretextTask>,
    network: Network,
    spec: PretrainSpec,
    schedule: schedule::Plan,
    trainer: Trainer,
    evaluator: Evaluator,
    baseline: Baseline,
    norm: PixelNorm,
    heldout: Vec<HeldOut>,
    log: log::TrainLog,
    errors: ErrorsFile,
    /// Keys already in the errors file (a bad image is seen once per pass).
    reported: HashSet<String>,
    dir: PathBuf,
    ckpt_dir: PathBuf,
    state: StreamState,
    start: StreamStart,
    resumed_from: Option<u64>,
    interrupt: StopFlag,
    size: u32,
    // The stream, as it goes.
    started: Instant,
    seconds_before: f64,
    filled: usize,
    pass: u64,
    pass_images: u64,
    skipped: u64,
    last_saved: u64,
    last_eval_step: Option<u64>,
    interval: Interval,
    finished: bool,
    interrupted: bool,
    last_eval: Option<EvalPoint>,
    last_loss: Option<f64>,
}

impl Pretraining {
    /// Builds the run of `plan`: a fresh trainer, or with `resume` the newest checkpoint's. Ctrl-C
    /// is read from `interrupt`. Lists the source once, to choose the held-out images.
    pub fn start(
        plan: &Pipeline,
        resume: bool,
        interrupt: StopFlag,
    ) -> Result<Self, PretrainError> {
        let spec = plan
            .pretrain()
            .cloned()
            .ok_or(PretrainError::NotPretraining)?;
        let Model { task, network } = model(plan)?;
        let env = crate::runtime::environment(plan.runtime.library.as_deref())?;
        let dir = plan.output.dir.join(DIR);
        let ckpt_dir = dir.join("checkpoints");

        let (trainer, state, resumed_from) = if resume {
            let Some((step, path)) = checkpoints::list(&ckpt_dir).pop() else {
                return Err(PretrainError::NothingToResume { dir: ckpt_dir });
            };
            let ckpt = Checkpoint::load(&path)?;
            let state: StreamState =
                serde_json::from_value(ckpt.meta.rng.clone()).map_err(|source| {
                    PretrainError::StreamPosition {
                        path: path.clone(),
                        source,
                    }
                })?;
            let step_graph = network.train_step()?;
            let trainer = Trainer::resume(env, &plan.runtime.session, step_graph, &ckpt).map_err(
                |e| match e {
                    TrainError::Checkpoint { reason, .. } => {
                        PretrainError::ForeignCheckpoint { path, reason }
                    }
                    other => other.into(),
                },
            )?;
            (trainer, state, Some(step))
        } else {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| PretrainError::io(&dir, e))?;
            }
            let seed = match &plan.model {
                ModelSpec::Builtin { seed, .. } => *seed,
                ModelSpec::Onnx { .. } => 0,
            };
            let params = network.init_params(seed)?;
            let trainer = Trainer::new(env, &plan.runtime.session, network.train_step()?, &params)?;
            (trainer, StreamState::default(), None)
        };
        std::fs::create_dir_all(&ckpt_dir).map_err(|e| PretrainError::io(&ckpt_dir, e))?;
        let evaluator = Evaluator::new(env, &plan.runtime.session, network.eval_step()?)?;

        // The held-out share: `holdout` images, but never more than a tenth of the input.
        let never = StopFlag::default();
        let (holdout, total, held) =
            Holdout::choose(&plan.source, |total| spec.holdout.min(total / 10), &never)?;
        let train_images = total - held;
        if train_images == 0 {
            return Err(PretrainError::NoTrainingImage { total });
        }
        let errors = ErrorsFile::create(&dir)?;
        let log = log::TrainLog::open(&dir, &trainer.signature().metrics, resumed_from)?;
        let norm = plan.model.normalization();
        let mut session = Pretraining {
            schedule: schedule::Plan::new(&spec, Some(train_images)),
            baseline: task.baseline(spec.batch_size),
            norm: PixelNorm {
                mean: norm.mean,
                std: norm.std,
            },
            heldout: Vec::new(),
            log,
            errors,
            reported: HashSet::new(),
            dir,
            ckpt_dir,
            start: StreamStart {
                epoch: state.epoch,
                position: state.position,
                holdout,
                held: held as usize,
            },
            resumed_from,
            interrupt,
            size: plan.decode.size,
            started: Instant::now(),
            seconds_before: state.seconds,
            filled: 0,
            pass: state.epoch,
            pass_images: 0,
            skipped: 0,
            last_saved: trainer.step_count(),
            last_eval_step: None,
            interval: Interval::new(),
            finished: false,
            interrupted: false,
            last_eval: None,
            last_loss: None,
            state,
            trainer,
            evaluator,
            network,
            spec,
            task,
        };
        session.finished = session.schedule.done(session.used());
        Ok(session)
    }

    /// The task whose samples the session trains on.
    pub fn task(&self) -> &Arc<dyn PretextTask> {
        &self.task
    }

    /// Where the training stream starts (see [`StreamStart`]).
    pub fn stream(&self) -> StreamStart {
        self.start
    }

    /// The budget was already spent when the session started (a resumed, finished run).
    pub fn is_done(&self) -> bool {
        self.finished
    }

    /// A held-out sample (pass 0's pretext draw), used by every evaluation.
    pub fn add_held_out(&mut self, sample: HeldOut) {
        self.heldout.push(sample);
    }

    /// A held-out image that could not be used: listed in the errors file.
    pub fn held_out_unusable(&mut self, record: ErrorRecord) -> Result<(), PretrainError> {
        self.reported.insert(record.key.clone());
        Ok(self.errors.write(&record)?)
    }

    /// Time the caller waited for the next sample; it goes into the log's `input_wait`.
    pub fn waited(&mut self, wait: Duration) {
        self.interval.wait += wait;
    }

    /// A training image of pass `epoch` that could not be used: listed once in the errors file.
    pub fn skipped(&mut self, epoch: u64, record: ErrorRecord) -> Result<(), PretrainError> {
        self.enter_pass(epoch)?;
        self.state.position += 1;
        self.skipped += 1;
        if self.reported.insert(record.key.clone()) {
            self.errors.write(&record)?;
        }
        Ok(())
    }

    /// The next training sample, of pass `epoch`: goes into the batch; a full batch is a train
    /// step (then logged, evaluated and checkpointed on their schedules).
    pub fn train_on(
        &mut self,
        epoch: u64,
        sample: &PretextSample,
    ) -> Result<StepOutcome, PretrainError> {
        self.enter_pass(epoch)?;
        self.state.position += 1;
        self.pass_images += 1;
        let b = self.spec.batch_size;
        let slot = Slot {
            index: self.filled,
            batch: b,
        };
        self.task
            .fill(sample, slot, &self.norm, &mut self.trainer)?;
        self.filled += 1;
        if self.filled < b {
            return Ok(StepOutcome::default());
        }
        self.filled = 0;
        self.state.images += b as u64;
        let lr = self.schedule.lr(self.used());
        let out = self.trainer.step(lr)?;
        let interval = &mut self.interval;
        interval.steps += 1;
        interval.images += b as u64;
        interval.loss += f64::from(out.loss);
        interval.metrics.resize(out.metrics.len(), 0.0);
        for (acc, (_, v)) in interval.metrics.iter_mut().zip(&out.metrics) {
            *acc += f64::from(*v);
        }
        let step = out.step;
        let now = self.used();
        self.finished = self.schedule.done(now);
        self.interrupted = self.interrupt.is_stopped() && !self.finished;
        let last = self.finished || self.interrupted;
        let eval = if step.is_multiple_of(self.spec.eval_every) || last {
            self.last_eval_step = Some(step);
            self.evaluate(step)?
        } else {
            None
        };
        if step.is_multiple_of(self.spec.log_every) || eval.is_some() || last {
            self.write_row(now, lr, eval.as_ref())?;
        }
        if eval.is_some() {
            self.last_eval = eval;
        }
        if step.is_multiple_of(self.spec.checkpoint_every) || last {
            self.state.seconds = now.seconds;
            self.save_checkpoint()?;
            self.last_saved = step;
        }
        Ok(StepOutcome {
            trained: b,
            done: last,
        })
    }

    /// Ends the run: a last checkpoint and evaluation if the stream ended between them, the
    /// errors file, `curve.png`, `predictions.png` and (unless interrupted) the trained encoder.
    /// `input_wait` is the share of the consumer's time spent waiting for samples.
    pub fn finish(mut self, input_wait: f64) -> Result<Pretrained, PretrainError> {
        // The stream ended before the budget (source failure, or Ctrl-C while waiting for data).
        let step = self.trainer.step_count();
        if step > 0 && self.last_saved != step {
            self.interrupted = !self.finished;
            self.state.seconds = self.used().seconds;
            self.save_checkpoint()?;
        }
        if self.last_eval_step != Some(step) && step > 0 {
            self.last_eval = self.evaluate(step)?.or(self.last_eval.take());
        }
        let seconds = self.used().seconds;
        let errors_written = self.errors.count();
        let errors_path = self.errors.finish()?;
        if errors_written == 0 {
            let _ = std::fs::remove_file(&errors_path);
        }
        let images = self.state.images;
        let report = PretrainReport {
            task: self.task.name().to_string(),
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
            input_wait,
            resumed_from: self.resumed_from,
            interrupted: self.interrupted,
            skipped_images: self.skipped,
            dir: self.dir.clone(),
        };
        self.log.draw_curve(&self.dir.join("curve.png"))?;
        let params = self.trainer.params()?;
        let held: Vec<_> = self
            .heldout
            .iter()
            .map(|h| (&h.sample, h.rgb.as_slice()))
            .collect();
        let rows = crate::pretext::predictions::rows(
            self.task.as_ref(),
            &self.network,
            &params,
            &mut self.evaluator,
            &self.norm,
            &held,
            self.spec.preview,
            self.spec.batch_size,
            self.size as usize,
        )?;
        if !rows.is_empty() {
            crate::pretext::draw::write_sheet(&self.dir.join("predictions.png"), &rows)?;
        }
        let encoder_onnx = if report.interrupted {
            None
        } else {
            let onnx = encoder_onnx(
                &self.network,
                &params,
                self.task.as_ref(),
                &self.norm,
                self.size,
            )?;
            Some(onnx)
        };
        Ok(Pretrained {
            encoder_onnx,
            report,
        })
    }

    /// Publishes the errors file of a run that failed, so the images it listed are not lost.
    pub fn abandon(self) {
        let _ = self.errors.finish();
    }

    /// A sample of pass `epoch` arrived: a new pass starts, unless the last one gave nothing.
    fn enter_pass(&mut self, epoch: u64) -> Result<(), PretrainError> {
        if epoch != self.pass {
            if self.pass_images == 0 {
                return Err(PretrainError::EmptyPass {
                    pass: self.pass,
                    errors: self.dir.join(ErrorsFile::NAME),
                });
            }
            self.pass = epoch;
            self.pass_images = 0;
            self.state.epoch = epoch;
            self.state.position = 0;
        }
        Ok(())
    }

    fn used(&self) -> Used {
        Used {
            steps: self.trainer.step_count(),
            images: self.state.images,
            seconds: self.seconds_before + self.started.elapsed().as_secs_f64(),
        }
    }

    fn write_row(
        &mut self,
        now: Used,
        lr: f32,
        eval: Option<&EvalPoint>,
    ) -> Result<(), PretrainError> {
        let interval = std::mem::replace(&mut self.interval, Interval::new());
        let n = interval.steps.max(1) as f64;
        let elapsed = interval.started.elapsed().as_secs_f64();
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
        self.log.write(&row)
    }

    /// Loss and metrics on the held-out images (full batches; a set smaller than one batch is
    /// repeated to fill it).
    fn evaluate(&mut self, step: u64) -> Result<Option<EvalPoint>, PretrainError> {
        let n = self.heldout.len();
        if n == 0 {
            return Ok(None);
        }
        let b = self.spec.batch_size;
        let batches = if n >= b { n / b } else { 1 };
        let params = self.trainer.params()?;
        let mut baseline = self.baseline.clone();
        let (mut loss, mut metrics) = (0.0, Vec::<(String, f64)>::new());
        for k in 0..batches {
            for i in 0..b {
                let s = &self.heldout[(k * b + i) % n];
                let slot = Slot { index: i, batch: b };
                self.task
                    .fill(&s.sample, slot, &self.norm, &mut self.evaluator)?;
            }
            baseline.add(b, &mut self.evaluator)?;
            let out = self.evaluator.run(&params, step)?;
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

    fn save_checkpoint(&mut self) -> Result<(), PretrainError> {
        let step = self.trainer.step_count();
        let path = checkpoints::path(&self.ckpt_dir, step);
        let state =
            serde_json::to_value(self.state).map_err(|e| PretrainError::StreamPosition {
                path: path.clone(),
                source: e,
            })?;
        self.trainer.save_checkpoint(&path, state)?;
        checkpoints::rotate(&self.ckpt_dir, self.spec.keep_checkpoints);
        Ok(())
    }
}
