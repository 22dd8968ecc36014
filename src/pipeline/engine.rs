//! The upstream half every run shares — a source thread and the decode workers joined by bounded
//! channels — and the supervision around a run (Ctrl-C protocol, progress display). What consumes
//! the prepared images (embedding, pretext export, training) is the caller's: it receives one
//! channel of [`Decoded`] items and runs its own thread(s).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};

use super::PipelineError;
use super::progress;
use super::stats::{Clock, Counters, Stage};
use super::workers::{self, Decoded, Prepare};
use crate::config::Pipeline;
use crate::source::{Emit, Order, Sample, SourceError, SourceSpec, StopFlag, Subset};

/// The running upstream's threads. Its output channel is handed to the consumer separately: when
/// the consumer stops early it drops the receiver, and that is what stops the workers.
pub struct Upstream {
    source: JoinHandle<Result<(), SourceError>>,
    workers: Vec<JoinHandle<()>>,
}

impl Upstream {
    /// Waits for the source and the workers (after the consumer has drained or dropped the items).
    pub fn join(self) -> Result<(), PipelineError> {
        for w in self.workers {
            let _ = w.join();
        }
        match self.source.join() {
            Ok(r) => r.map_err(PipelineError::from),
            Err(_) => Err(PipelineError::Panicked { stage: "source" }),
        }
    }
}

pub(crate) fn spawn_err(e: std::io::Error) -> PipelineError {
    PipelineError::Spawn(e)
}

/// What a receive with a deadline got.
pub enum Received<T> {
    Item(T),
    /// Nothing arrived within the tick: time for a stage's idle work.
    Idle,
    Closed,
}

/// Receives with a deadline, for stages that must act while their input is idle — flush a partial
/// batch, publish a file by time — when rows must become visible within a bounded delay. One per
/// thread (a small timer runtime); stages without that need keep their plain blocking receive.
pub struct Ticker {
    runtime: tokio::runtime::Runtime,
    every: Duration,
}

impl Ticker {
    pub fn new(every: Duration) -> Result<Self, PipelineError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(PipelineError::Spawn)?;
        Ok(Self { runtime, every })
    }

    pub fn recv<T>(&self, rx: &Receiver<T>) -> Received<T> {
        // The timer is made inside the runtime (it needs its time driver).
        let every = self.every;
        match self
            .runtime
            .block_on(async { tokio::time::timeout(every, rx.recv()).await })
        {
            Ok(Ok(item)) => Received::Item(item),
            Ok(Err(_)) => Received::Closed,
            Err(_) => Received::Idle,
        }
    }
}

/// Which passes over the input a run makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passes {
    /// Number of the first pass (part of each sample's seed; a resumed run starts later).
    pub first_epoch: u64,
    /// Passes to make, the first included (`u64::MAX`: until stopped).
    pub epochs: u64,
    /// `Some(seed)`: every pass is shuffled, pass `e` with a seed derived from `(seed, e)`.
    pub shuffle: Option<u64>,
    /// Leading samples of the first pass to leave out (already used before a resume).
    pub skip: u64,
    /// The part of the input every pass covers.
    pub subset: Subset,
}

impl Passes {
    /// One pass in the source's own order.
    pub fn once() -> Self {
        Self::sorted(1)
    }
    /// `epochs` passes in the source's own order.
    pub fn sorted(epochs: u64) -> Self {
        Passes {
            first_epoch: 0,
            epochs,
            shuffle: None,
            skip: 0,
            subset: Subset::All,
        }
    }
}

/// What [`start`] hands back: the decoded items, in completion order, and the threads to join.
pub type Started<T> = (Receiver<Decoded<T>>, Upstream);

/// Starts the source and the decode workers for `plan`, preparing each image with `prepare`. The
/// source makes the passes `passes` describes; samples carry their pass number as `epoch`.
pub fn start<P: Prepare>(
    plan: &Pipeline,
    prepare: P,
    passes: Passes,
    stop: &StopFlag,
    counters: &Arc<Counters>,
    source_stage: &Arc<Stage>,
    decode_stage: &Arc<Stage>,
) -> Result<Started<P::Item>, PipelineError> {
    // Few samples in flight before decoding: encoded files can be large.
    let (sample_tx, sample_rx) = async_channel::bounded::<Sample>(2 * plan.workers + 2);
    let (item_tx, item_rx) = async_channel::bounded(plan.queue);
    let workers = workers::spawn(
        plan,
        prepare,
        sample_rx,
        item_tx,
        decode_stage.clone(),
        counters.clone(),
    )
    .map_err(spawn_err)?;
    let (spec, stop, counters, stage) = (
        plan.source.clone(),
        stop.clone(),
        counters.clone(),
        source_stage.clone(),
    );
    let source = std::thread::Builder::new()
        .name("source".into())
        .spawn(move || run_source(&spec, passes, &stop, sample_tx, counters, &stage))
        .map_err(spawn_err)?;
    Ok((item_rx, Upstream { source, workers }))
}

fn run_source(
    spec: &SourceSpec,
    passes: Passes,
    stop: &StopFlag,
    tx: Sender<Sample>,
    counters: Arc<Counters>,
    stage: &Stage,
) -> Result<(), SourceError> {
    let started = Instant::now();
    let mut emit = ChannelEmit {
        tx,
        seq: 0,
        epoch: passes.first_epoch,
        counters,
        clock: Clock::default(),
        closed: false,
    };
    let result = loop {
        let order = Order {
            shuffle: passes.shuffle.map(|seed| {
                crate::rng::Rng::for_key(seed, &format!("shuffle/{}", emit.epoch)).next_u64()
            }),
            skip: if emit.epoch == passes.first_epoch {
                passes.skip
            } else {
                0
            },
            subset: passes.subset,
        };
        let result = crate::source::run(spec, order, stop, &mut emit);
        let done = emit.epoch + 1 - passes.first_epoch >= passes.epochs;
        if result.is_err() || done || emit.closed || stop.is_stopped() {
            break result;
        }
        emit.epoch += 1;
    };
    // Listing and reading files is the source's work; the rest of its time it waited.
    emit.clock.busy = started.elapsed().saturating_sub(emit.clock.wait_out);
    stage.merge(emit.clock);
    result
}

/// Numbers samples in source order and sends them to the decode workers.
struct ChannelEmit {
    tx: Sender<Sample>,
    seq: u64,
    epoch: u64,
    counters: Arc<Counters>,
    clock: Clock,
    closed: bool,
}

impl Emit for ChannelEmit {
    fn emit(&mut self, key: String, bytes: Result<Vec<u8>, String>) -> bool {
        let sample = Sample {
            seq: self.seq,
            key,
            epoch: self.epoch,
            bytes,
        };
        self.seq += 1;
        self.clock.items += 1;
        Counters::add(&self.counters.read, 1);
        let tx = &self.tx;
        let sent = self.clock.wait_out(|| tx.send_blocking(sample)).is_ok();
        self.closed |= !sent;
        sent
    }
}

/// Runs `wait` (which joins the run's threads) under supervision: with `handle_signals`, the first
/// Ctrl-C sets `stop` and the second aborts the process; with `progress`, a display on stderr.
/// Returns what `wait` returned and whether Ctrl-C was pressed.
pub fn supervise<R: Send + 'static>(
    handle_signals: bool,
    show_progress: bool,
    counters: &Arc<Counters>,
    stop: &StopFlag,
    wait: impl FnOnce() -> R + Send + 'static,
) -> Result<(R, bool), PipelineError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(spawn_err)?;
    let interrupted = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let result = runtime.block_on(async {
        if handle_signals {
            tokio::spawn(progress::watch_ctrl_c(stop.clone(), interrupted.clone()));
        }
        let ticker =
            show_progress.then(|| tokio::spawn(progress::report(counters.clone(), started)));
        let result = tokio::task::spawn_blocking(wait).await;
        if let Some(t) = ticker {
            t.abort();
            progress::finish();
        }
        result
    });
    let result = result.map_err(|_| PipelineError::Panicked { stage: "engine" })?;
    Ok((result, interrupted.load(Ordering::SeqCst)))
}
