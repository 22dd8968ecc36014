//! The one loop every run mode consumes its prepared images with: receive from the decode
//! workers, restore source order, and hand each item to the mode's [`Consumer`] — a usable image
//! to [`Consumer::item`], an image that could not be used to [`Consumer::skipped`] — with the
//! pipeline's `on_error` policy applied here, once, for embedding, export and training alike.
//!
//! Guarantees:
//! - The consumer sees items strictly in source order (by sequence number), whatever order the
//!   workers finished in, so batches and outputs are the same from run to run.
//! - A bad image is always handed to [`Consumer::skipped`] (which records it). With
//!   `on_error = "fail"` the source is then stopped, the consumer flushes what it holds
//!   ([`Consumer::before_failing`]: everything before the bad image is kept) and the loop ends
//!   with [`PipelineError::BadImage`] naming the key.
//! - When the input ends, items still waiting for an earlier one are an error naming how many,
//!   never silently dropped.

use async_channel::Receiver;

use std::time::Duration;

use super::PipelineError;
use super::engine::{Received, Ticker};
use super::reorder::Reorder;
use super::stats::Clock;
use super::workers::{Decoded, Prepared};
use crate::config::OnError;
use crate::sink::ErrorRecord;
use crate::source::StopFlag;

/// What the consumer wants after an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The consumer is done (a training budget is spent): stop receiving.
    Stop,
}

/// Why [`consume`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Every item of the input was consumed.
    Input,
    /// The consumer asked to stop.
    Consumer,
}

/// A run mode's use of the prepared images. `clock` is the consumer stage's: the loop counts the
/// time spent waiting for input, the consumer its busy time and any time waiting downstream.
pub trait Consumer<T> {
    /// A usable image, in source order; `epoch` is the pass over the input it came from.
    fn item(
        &mut self,
        key: String,
        epoch: u64,
        item: Prepared<T>,
        clock: &mut Clock,
    ) -> Result<Flow, PipelineError>;

    /// An image that could not be used: record it (errors file). Called for every bad image,
    /// also the one that stops a run with `on_error = "fail"`.
    fn skipped(
        &mut self,
        epoch: u64,
        record: ErrorRecord,
        clock: &mut Clock,
    ) -> Result<(), PipelineError>;

    /// The run is about to stop at a bad image: hand on what is held (a partial batch).
    fn before_failing(&mut self, _clock: &mut Clock) -> Result<(), PipelineError> {
        Ok(())
    }

    /// No item arrived for a tick ([`consume`] with `idle`): hand on what is held, so rows of a
    /// slow stream become visible within a bounded delay.
    fn idle(&mut self, _clock: &mut Clock) -> Result<(), PipelineError> {
        Ok(())
    }
}

/// Consumes `items` until the input ends or the consumer stops (see the module guarantees).
/// `stop` is the run's source stop flag, raised when `on_error = "fail"` ends the run. With
/// `idle`, the consumer's [`Consumer::idle`] runs whenever nothing arrives for that long.
pub fn consume<T, C: Consumer<T>>(
    items: &Receiver<Decoded<T>>,
    consumer: &mut C,
    on_error: OnError,
    stop: &StopFlag,
    clock: &mut Clock,
    idle: Option<Duration>,
) -> Result<Ended, PipelineError> {
    let ticker = idle.map(Ticker::new).transpose()?;
    let mut reorder = Reorder::default();
    let mut flow = Flow::Continue;
    while flow == Flow::Continue {
        let received = clock.wait_in(|| match &ticker {
            Some(ticker) => ticker.recv(items),
            None => items
                .recv_blocking()
                .map_or(Received::Closed, Received::Item),
        });
        let decoded = match received {
            Received::Item(decoded) => decoded,
            Received::Idle => {
                consumer.idle(clock)?;
                continue;
            }
            Received::Closed => break,
        };
        reorder.push(decoded.seq, decoded, |d: Decoded<T>| {
            if flow == Flow::Stop {
                return Ok(()); // released together with the item that ended the run: unused
            }
            match d.result {
                Ok(prepared) => flow = consumer.item(d.key, d.epoch, prepared, clock)?,
                Err((stage, reason)) => {
                    let record = ErrorRecord {
                        key: d.key.clone(),
                        stage: stage.to_string(),
                        reason: reason.clone(),
                    };
                    consumer.skipped(d.epoch, record, clock)?;
                    if on_error == OnError::Fail {
                        stop.stop();
                        consumer.before_failing(clock)?;
                        return Err(PipelineError::BadImage {
                            stage,
                            key: d.key,
                            reason,
                        });
                    }
                }
            }
            Ok(())
        })?;
    }
    if flow == Flow::Stop {
        return Ok(Ended::Consumer);
    }
    if reorder.pending() > 0 {
        return Err(PipelineError::Lost {
            count: reorder.pending(),
        });
    }
    Ok(Ended::Input)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it was handed; stops after `stop_after` items.
    #[derive(Default)]
    struct Log {
        seen: Vec<String>,
        stop_after: Option<usize>,
        flushed: bool,
    }

    impl Consumer<u32> for Log {
        fn item(
            &mut self,
            key: String,
            _: u64,
            _: Prepared<u32>,
            _: &mut Clock,
        ) -> Result<Flow, PipelineError> {
            self.seen.push(key);
            Ok(match self.stop_after {
                Some(n) if self.seen.len() >= n => Flow::Stop,
                _ => Flow::Continue,
            })
        }
        fn skipped(&mut self, _: u64, r: ErrorRecord, _: &mut Clock) -> Result<(), PipelineError> {
            self.seen.push(format!("bad {}", r.key));
            Ok(())
        }
        fn before_failing(&mut self, _: &mut Clock) -> Result<(), PipelineError> {
            self.flushed = true;
            Ok(())
        }
        fn idle(&mut self, _: &mut Clock) -> Result<(), PipelineError> {
            if self.seen.last().is_some_and(|s| s != "idle") {
                self.seen.push("idle".into());
            }
            Ok(())
        }
    }

    /// Items `seqs` (in that arrival order); the ones in `bad` failed to decode.
    fn channel(seqs: &[u64], bad: &[u64]) -> Receiver<Decoded<u32>> {
        let (tx, rx) = async_channel::unbounded();
        for &seq in seqs {
            let result = if bad.contains(&seq) {
                Err(("decode", "broken".to_string()))
            } else {
                Ok(Prepared {
                    item: seq as u32,
                    width: 1,
                    height: 1,
                })
            };
            let key = format!("k{seq}");
            tx.send_blocking(Decoded {
                seq,
                key,
                epoch: 0,
                result,
            })
            .unwrap();
        }
        rx
    }

    #[test]
    fn items_reach_the_consumer_in_source_order_with_bad_ones_recorded() {
        let mut log = Log::default();
        let rx = channel(&[2, 0, 3, 1], &[2]);
        let stop = StopFlag::default();
        let ended = consume(
            &rx,
            &mut log,
            OnError::Skip,
            &stop,
            &mut Clock::default(),
            None,
        )
        .unwrap();
        assert_eq!(ended, Ended::Input);
        assert_eq!(log.seen, ["k0", "k1", "bad k2", "k3"]);
        assert!(!stop.is_stopped() && !log.flushed);
    }

    #[test]
    fn on_error_fail_records_the_image_stops_the_source_and_flushes() {
        let mut log = Log::default();
        let rx = channel(&[1, 0, 2], &[1]);
        let stop = StopFlag::default();
        let e = consume(
            &rx,
            &mut log,
            OnError::Fail,
            &stop,
            &mut Clock::default(),
            None,
        )
        .unwrap_err();
        assert!(
            matches!(&e, PipelineError::BadImage { key, .. } if key == "k1"),
            "{e}"
        );
        assert_eq!(log.seen, ["k0", "bad k1"]);
        assert!(stop.is_stopped() && log.flushed);
    }

    #[test]
    fn a_consumer_that_stops_ends_the_loop_and_a_gap_is_an_error() {
        let mut log = Log {
            stop_after: Some(2),
            ..Default::default()
        };
        let rx = channel(&[1, 2, 0, 3], &[]);
        let ended = consume(
            &rx,
            &mut log,
            OnError::Skip,
            &StopFlag::default(),
            &mut Clock::default(),
            None,
        );
        assert_eq!(ended.unwrap(), Ended::Consumer);
        assert_eq!(log.seen, ["k0", "k1"]);

        let rx = channel(&[0, 2], &[]); // item 1 never came back
        let e = consume(
            &rx,
            &mut Log::default(),
            OnError::Skip,
            &StopFlag::default(),
            &mut Clock::default(),
            None,
        );
        assert!(matches!(e, Err(PipelineError::Lost { count: 1 })));
    }

    #[test]
    fn with_an_idle_tick_the_consumer_acts_while_the_input_is_quiet() {
        let (tx, rx) = async_channel::unbounded();
        let item = |seq: u64| Decoded {
            seq,
            key: format!("k{seq}"),
            epoch: 0,
            result: Ok(Prepared {
                item: 0u32,
                width: 1,
                height: 1,
            }),
        };
        tx.send_blocking(item(0)).unwrap();
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            tx.send_blocking(item(1)).unwrap();
        });
        let mut log = Log::default();
        let idle = Some(Duration::from_millis(20));
        let stop = StopFlag::default();
        consume(
            &rx,
            &mut log,
            OnError::Skip,
            &stop,
            &mut Clock::default(),
            idle,
        )
        .unwrap();
        late.join().unwrap();
        assert_eq!(log.seen, ["k0", "idle", "k1"]);
    }
}
