//! The pretrain mode's wiring: the held-out images are prepared on this thread, then the source
//! and the decode workers (running the pretext task) stream the training passes into one `train`
//! thread, which runs the shared consumer loop over a [`Pretraining`] session. The training
//! itself — steps, schedule, log, checkpoints, export — is `crate::pretrain`'s.
//!
//! Guarantees: the session sees samples in source order; the source runs until the session is
//! done (budget spent, or Ctrl-C after the current step), then is stopped; with
//! `on_error = "fail"` the first bad image ends the run, its record published in
//! `pretrain/errors.jsonl`.

use std::sync::Arc;
use std::time::Duration;

use super::consume::{Consumer, Flow, consume};
use super::engine::{self, Passes};
use super::stats::{Clock, Counters, Stage};
use super::workers::{Prepared, PretextPrepare, prepare_first};
use super::{PipelineError, RunOptions};
use crate::config::Pipeline;
use crate::pretext::PretextSample;
use crate::pretrain::{HeldOut, Pretrained, Pretraining};
use crate::sink::ErrorRecord;
use crate::source::{Order, StopFlag, Subset};

/// Runs the pretrain phase of `plan` (continuing from the newest checkpoint with `resume`);
/// returns the outcome and the stages' accounting for the summary.
pub fn run(
    plan: &Pipeline,
    options: &RunOptions,
    resume: bool,
) -> Result<(Pretrained, Vec<Arc<Stage>>), PipelineError> {
    let mut session = Pretraining::start(plan, resume, options.stop.clone())?;
    let stream = session.stream();
    let prepare = PretextPrepare {
        task: session.task().clone(),
        seed: plan.seed,
    };

    let heldout_order = Order {
        subset: Subset::Only(stream.holdout),
        ..Order::default()
    };
    let mut unusable = Vec::new();
    let heldout = prepare_first(
        plan,
        prepare.clone(),
        heldout_order,
        stream.held,
        |record| unusable.push(record),
    )?;
    for record in unusable {
        session.held_out_unusable(record)?;
    }
    for image in heldout {
        session.add_held_out(HeldOut {
            sample: image.prepared.item,
            rgb: image.rgb,
        });
    }

    let counters = Arc::new(Counters::new("trained on"));
    let source_stage = Arc::new(Stage::new("source", 1));
    let decode_stage = Arc::new(Stage::new("pretext", plan.workers));
    let train_stage = Arc::new(Stage::new("train", 1));
    let upstream_stop = StopFlag::default();
    let passes = Passes {
        first_epoch: stream.epoch,
        epochs: u64::MAX,
        shuffle: Some(plan.seed),
        skip: stream.position,
        subset: Subset::Without(stream.holdout),
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

    let on_error = plan.on_error;
    let (thread_counters, thread_stage, thread_stop) =
        (counters.clone(), train_stage.clone(), upstream_stop.clone());
    let worker = std::thread::Builder::new()
        .name("train".into())
        .spawn(move || {
            let mut training = Training {
                session,
                counters: &thread_counters,
                seen_wait: Duration::ZERO,
            };
            let mut clock = Clock::default();
            let result = if training.session.is_done() {
                Ok(())
            } else {
                consume(
                    &items,
                    &mut training,
                    on_error,
                    &thread_stop,
                    &mut clock,
                    None,
                )
                .map(drop)
            };
            drop(items);
            thread_stop.stop();
            thread_stage.merge(clock);
            let Training { session, .. } = training;
            match result {
                Ok(()) => {
                    let waited = clock.wait_in.as_secs_f64();
                    let total = waited + clock.busy.as_secs_f64();
                    let input_wait = if total > 0.0 { waited / total } else { 0.0 };
                    session.finish(input_wait).map_err(PipelineError::from)
                }
                Err(e) => {
                    session.abandon();
                    Err(e)
                }
            }
        })
        .map_err(PipelineError::Spawn)?;
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
    let pretrained = train_result.unwrap_or(Err(PipelineError::Panicked { stage: "train" }))?;
    upstream_result?;
    Ok((pretrained, vec![source_stage, decode_stage, train_stage]))
}

/// The train thread's consumer: prepared samples into the session, in source order.
struct Training<'a> {
    session: Pretraining,
    counters: &'a Counters,
    /// The loop's input wait already handed to the session.
    seen_wait: Duration,
}

impl Training<'_> {
    /// Hands the session the time waited for input since the last sample (for its log).
    fn hand_over_wait(&mut self, clock: &Clock) {
        self.session.waited(clock.wait_in - self.seen_wait);
        self.seen_wait = clock.wait_in;
    }
}

impl Consumer<PretextSample> for Training<'_> {
    fn item(
        &mut self,
        _key: String,
        epoch: u64,
        item: Prepared<PretextSample>,
        clock: &mut Clock,
    ) -> Result<Flow, PipelineError> {
        self.hand_over_wait(clock);
        let outcome = clock.busy(|| self.session.train_on(epoch, &item.item))?;
        clock.items += outcome.trained as u64;
        Counters::add(&self.counters.done, outcome.trained as u64);
        Ok(if outcome.done {
            Flow::Stop
        } else {
            Flow::Continue
        })
    }

    fn skipped(
        &mut self,
        epoch: u64,
        record: ErrorRecord,
        clock: &mut Clock,
    ) -> Result<(), PipelineError> {
        self.hand_over_wait(clock);
        clock.busy(|| self.session.skipped(epoch, record))?;
        Ok(())
    }
}
