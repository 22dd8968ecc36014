//! Decode workers: N named OS threads, each owning its `Decoder` (and so its resizer and scratch
//! buffers) and its [`Prepare`] state for its whole life. A worker decodes a [`Sample`] and hands
//! the RGB8 image to `Prepare` — normalisation for embedding, a pretext task for training or
//! export — fused on the same thread, so there is no extra hop per image.
//!
//! A bad file is data, never a crash: every sample that enters leaves as exactly one [`Decoded`],
//! even if the decoder panics, because the stage downstream restores source order and would
//! otherwise wait for the missing one.
//!
//! Workers run `worker_nice` nice levels below the rest of the process (Linux; default 10). On a
//! machine with few cores they share the cores with ONNX Runtime's intra-op threads, and ORT
//! splits each operator between its threads: one of them preempted by a decode worker stalls the
//! others at the operator's end. At a lower priority the workers fill the time ORT leaves idle
//! instead, and when decoding is the bottleneck ORT is mostly idle anyway. Measured on 2 cores
//! (224 px, an encoder that takes ORT ~2 ms per image): 335 → 368 img/s (medians of 3); 96 px,
//! where decoding is the bottleneck: 1,021 → 1,065. The bounded queues keep a lower-priority
//! stage from falling behind unseen: ORT then waits for input and the workers get the cores.
//! The run summary's busy time is wall time, so a niced worker's busy share includes the time it
//! waited for a core (at 224 px the decode stage reads ~73 % busy instead of ~35 %).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_channel::{Receiver, Sender};

use super::stats::{Clock, Counters, Stage};
use crate::config::Pipeline;
use crate::decode::{DecodeSettings, Decoder};
use crate::sink::ErrorRecord;
use crate::source::{Emit, Order, Sample, SourceError, StopFlag};

/// What a worker does with a decoded `size × size` RGB8 image (HWC). One value per worker thread
/// (cloned from a prototype), so it may keep scratch buffers.
pub trait Prepare: Clone + Send + 'static {
    type Item: Send + 'static;
    /// The stage name reported when `prepare` refuses an image.
    const STAGE: &'static str;
    fn prepare(
        &mut self,
        rgb: &[u8],
        size: usize,
        key: &str,
        epoch: u64,
    ) -> Result<Self::Item, String>;
}

/// Workers' share of the pretext modes (export, pretraining): the task on the decoded image,
/// its randomness from (seed, key, epoch).
#[derive(Clone)]
pub struct PretextPrepare {
    pub task: std::sync::Arc<dyn crate::pretext::PretextTask>,
    pub seed: u64,
}

impl Prepare for PretextPrepare {
    type Item = crate::pretext::PretextSample;
    const STAGE: &'static str = "pretext";
    fn prepare(
        &mut self,
        rgb: &[u8],
        size: usize,
        key: &str,
        epoch: u64,
    ) -> Result<Self::Item, String> {
        let mut rng = crate::rng::Rng::for_sample(self.seed, key, epoch);
        let image = crate::pretext::RgbView {
            width: size,
            height: size,
            pixels: rgb,
        };
        Ok(self.task.make(image, &mut rng))
    }
}

/// A prepared image with the size of its source.
pub struct Prepared<T> {
    pub item: T,
    pub width: u32,
    pub height: u32,
}

pub struct Decoded<T> {
    pub seq: u64,
    pub key: String,
    pub epoch: u64,
    /// The image, or `(stage, reason)` for the errors file.
    pub result: Result<Prepared<T>, (&'static str, String)>,
}

/// Starts `plan.workers` workers at `plan.worker_nice`, decoding with `plan.decode`.
pub fn spawn<P: Prepare>(
    plan: &Pipeline,
    prepare: P,
    input: Receiver<Sample>,
    output: Sender<Decoded<P::Item>>,
    stage: Arc<Stage>,
    counters: Arc<Counters>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let nice = plan.worker_nice;
    (0..plan.workers)
        .map(|i| {
            let (input, output, stage, counters, settings, prepare) = (
                input.clone(),
                output.clone(),
                stage.clone(),
                counters.clone(),
                plan.decode.clone(),
                prepare.clone(),
            );
            std::thread::Builder::new()
                .name(format!("decode-{i}"))
                .spawn(move || {
                    lower_this_thread_priority(nice);
                    work(settings, prepare, input, output, &stage, &counters)
                })
        })
        .collect()
}

/// Lowers the calling thread's scheduling priority by `levels` nice levels (capped at 19). Only
/// Linux schedules threads by their own nice value; elsewhere this does nothing. A failure is
/// ignored: the priority is a performance hint, and lowering it needs no privilege.
#[cfg(target_os = "linux")]
fn lower_this_thread_priority(levels: u8) {
    if levels == 0 {
        return;
    }
    // SAFETY: gettid/getpriority/setpriority only read or change this thread's own nice value;
    // errno is thread-local. getpriority returns -1 both as a value and on error: errno tells.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        *libc::__errno_location() = 0;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        if current == -1 && *libc::__errno_location() != 0 {
            return;
        }
        libc::setpriority(
            libc::PRIO_PROCESS,
            tid,
            (current + i32::from(levels)).min(19),
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_thread_priority(_levels: u8) {}

/// One image at a time through decoding and `prepare`, as a worker does it: the decoder, its
/// scratch buffer and the preparation, owned by one thread. A decoder or a preparation that
/// panics costs only its image (the decoder is then made afresh).
pub struct ImageWorker<P: Prepare> {
    decoder: Decoder,
    prepare: P,
    rgb: Vec<u8>,
    size: usize,
}

impl<P: Prepare> ImageWorker<P> {
    pub fn new(settings: DecodeSettings, prepare: P) -> Self {
        Self {
            size: settings.size as usize,
            decoder: Decoder::new(settings),
            prepare,
            rgb: Vec::new(),
        }
    }

    /// Decodes and prepares one image; `Err((stage, reason))` when it cannot be used.
    pub fn process(
        &mut self,
        key: &str,
        epoch: u64,
        bytes: Result<Vec<u8>, String>,
    ) -> Result<Prepared<P::Item>, (&'static str, String)> {
        let bytes = bytes.map_err(|reason| ("read", reason))?;
        let (decoder, rgb) = (&mut self.decoder, &mut self.rgb);
        let info =
            match std::panic::catch_unwind(AssertUnwindSafe(|| decoder.decode_into(&bytes, rgb))) {
                Ok(Ok(info)) => info,
                Ok(Err(e)) => return Err(("decode", e.to_string())),
                Err(_) => {
                    // The decoder's state may be broken after a panic: start afresh.
                    self.decoder = Decoder::new(self.decoder.settings().clone());
                    return Err(("decode", "the decoder panicked on this file".to_string()));
                }
            };
        let (prepare, rgb, size) = (&mut self.prepare, &self.rgb, self.size);
        let item =
            std::panic::catch_unwind(AssertUnwindSafe(|| prepare.prepare(rgb, size, key, epoch)))
                .unwrap_or_else(|_| Err("panicked on this image".to_string()))
                .map_err(|reason| (P::STAGE, reason))?;
        Ok(Prepared {
            item,
            width: info.width,
            height: info.height,
        })
    }

    /// The image the last successful [`process`](Self::process) decoded (RGB8, HWC, `size²·3`).
    pub fn rgb(&self) -> &[u8] {
        &self.rgb
    }
}

/// An image prepared on the calling thread, with its key and decoded pixels.
pub struct PreparedImage<T> {
    pub key: String,
    pub prepared: Prepared<T>,
    /// RGB8, HWC, at the working size.
    pub rgb: Vec<u8>,
}

/// The first `max` usable images of `order` (pass 0), decoded and prepared on the calling thread
/// exactly as the workers would; each image that cannot be used goes to `bad`. For small sets a
/// run needs before it starts (held-out images) and for previews.
pub fn prepare_first<P: Prepare>(
    plan: &Pipeline,
    prepare: P,
    order: Order,
    max: usize,
    mut bad: impl FnMut(ErrorRecord),
) -> Result<Vec<PreparedImage<P::Item>>, SourceError> {
    struct Collect<'a, P: Prepare> {
        worker: ImageWorker<P>,
        max: usize,
        out: Vec<PreparedImage<P::Item>>,
        bad: &'a mut dyn FnMut(ErrorRecord),
    }
    impl<P: Prepare> Emit for Collect<'_, P> {
        fn emit(&mut self, key: String, bytes: Result<Vec<u8>, String>) -> bool {
            match self.worker.process(&key, 0, bytes) {
                Ok(prepared) => {
                    let rgb = self.worker.rgb().to_vec();
                    self.out.push(PreparedImage { key, prepared, rgb });
                }
                Err((stage, reason)) => (self.bad)(ErrorRecord {
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
    let mut collect = Collect {
        worker: ImageWorker::new(plan.decode.clone(), prepare),
        max,
        out: Vec::new(),
        bad: &mut bad,
    };
    crate::source::run(&plan.source, order, &StopFlag::default(), &mut collect)?;
    Ok(collect.out)
}

fn work<P: Prepare>(
    settings: DecodeSettings,
    prepare: P,
    input: Receiver<Sample>,
    output: Sender<Decoded<P::Item>>,
    stage: &Stage,
    counters: &Counters,
) {
    let mut worker = ImageWorker::new(settings, prepare);
    let mut clock = Clock::default();
    while let Ok(sample) = clock.wait_in(|| input.recv_blocking()) {
        let result = clock.busy(|| worker.process(&sample.key, sample.epoch, sample.bytes));
        clock.items += 1;
        Counters::add(
            if result.is_ok() {
                &counters.decoded
            } else {
                &counters.failed
            },
            1,
        );
        let msg = Decoded {
            seq: sample.seq,
            key: sample.key,
            epoch: sample.epoch,
            result,
        };
        if clock.wait_out(|| output.send_blocking(msg)).is_err() {
            break; // downstream stopped (it failed and is reporting why)
        }
    }
    stage.merge(clock);
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::lower_this_thread_priority;

    fn own_nice() -> i32 {
        // SAFETY: reads this thread's own nice value.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn lowering_the_priority_changes_only_the_calling_thread() {
        let before = own_nice();
        let (inside, capped) = std::thread::spawn(move || {
            lower_this_thread_priority(3);
            let inside = own_nice();
            lower_this_thread_priority(19);
            (inside, own_nice())
        })
        .join()
        .unwrap();
        assert_eq!(inside, (before + 3).min(19));
        assert_eq!(capped, 19);
        assert_eq!(own_nice(), before, "the spawning thread keeps its priority");
        let untouched = std::thread::spawn(|| {
            lower_this_thread_priority(0);
            own_nice()
        });
        assert_eq!(untouched.join().unwrap(), before);
    }
}
