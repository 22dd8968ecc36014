//! Decode workers: N named OS threads, each owning its `Decoder` (and so its resizer and scratch
//! buffers) for its whole life. A worker turns a [`Sample`] into a normalised CHW tensor or an
//! error record; a bad file is data, never a crash. Every sample that enters leaves as exactly
//! one [`Decoded`] — even if the decoder panics — because the collector downstream restores
//! source order and would otherwise wait for the missing one.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_channel::{Receiver, Sender};

use super::stats::{Clock, Counters, Stage};
use crate::config::Normalization;
use crate::decode::{DecodeSettings, Decoder, rgb_to_chw};
use crate::source::Sample;

/// A decoded image ready for batching.
pub struct Image {
    /// `3 × size × size` floats, CHW, normalised.
    pub tensor: Vec<f32>,
    pub width: u32,
    pub height: u32,
}

pub struct Decoded {
    pub seq: u64,
    pub key: String,
    /// The image, or `(stage, reason)` for the errors file.
    pub result: Result<Image, (&'static str, String)>,
}

pub fn spawn(
    workers: usize,
    settings: DecodeSettings,
    norm: Normalization,
    input: Receiver<Sample>,
    output: Sender<Decoded>,
    stage: Arc<Stage>,
    counters: Arc<Counters>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    (0..workers)
        .map(|i| {
            let (input, output, stage, counters, settings) = (
                input.clone(),
                output.clone(),
                stage.clone(),
                counters.clone(),
                settings.clone(),
            );
            std::thread::Builder::new()
                .name(format!("decode-{i}"))
                .spawn(move || work(settings, norm, input, output, &stage, &counters))
        })
        .collect()
}

fn work(
    settings: DecodeSettings,
    norm: Normalization,
    input: Receiver<Sample>,
    output: Sender<Decoded>,
    stage: &Stage,
    counters: &Counters,
) {
    let size = settings.size as usize;
    let mut decoder = Decoder::new(settings);
    let mut rgb = Vec::new();
    let mut clock = Clock::default();
    while let Ok(sample) = clock.wait_in(|| input.recv_blocking()) {
        let result = clock.busy(|| match sample.bytes {
            Err(reason) => Err(("read", reason)),
            Ok(bytes) => {
                let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    decoder.decode_into(&bytes, &mut rgb)
                }));
                match decoded {
                    Ok(Ok(info)) => {
                        let mut tensor = vec![0.0f32; 3 * size * size];
                        rgb_to_chw(&rgb, size, size, norm.mean, norm.std, &mut tensor);
                        Ok(Image {
                            tensor,
                            width: info.width,
                            height: info.height,
                        })
                    }
                    Ok(Err(e)) => Err(("decode", e.to_string())),
                    Err(_) => {
                        // The decoder's state may be broken after a panic: start afresh.
                        decoder = Decoder::new(decoder.settings().clone());
                        Err(("decode", "the decoder panicked on this file".to_string()))
                    }
                }
            }
        });
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
            result,
        };
        if clock.wait_out(|| output.send_blocking(msg)).is_err() {
            break; // downstream stopped (it failed and is reporting why)
        }
    }
    stage.merge(clock);
}
