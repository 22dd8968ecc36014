//! Per-stage accounting, so the bottleneck is visible without a profiler: for each stage, how
//! long its threads worked, waited for input and waited for room downstream, and how many items
//! passed. Live counters (atomics) feed the progress display; per-thread clocks are merged once
//! when each thread ends, so the hot path never takes a lock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Counters shared by all stages, read by the progress display.
#[derive(Debug, Default)]
pub struct Counters {
    pub read: AtomicU64,
    pub decoded: AtomicU64,
    pub failed: AtomicU64,
    /// Images the run's consumer has finished with (embedded, exported, trained on).
    pub done: AtomicU64,
    /// What `done` counts, as the progress line says it.
    pub done_label: &'static str,
}

impl Counters {
    /// Counters for a run whose consumer's work is called `done_label` ("embedded", ...).
    pub fn new(done_label: &'static str) -> Self {
        Self {
            done_label,
            ..Self::default()
        }
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// One thread's time, split three ways.
#[derive(Debug, Default, Clone, Copy)]
pub struct Clock {
    pub busy: Duration,
    pub wait_in: Duration,
    pub wait_out: Duration,
    pub items: u64,
}

impl Clock {
    /// Runs `f`, adding its duration to `busy`.
    pub fn busy<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.busy += t.elapsed();
        out
    }
    pub fn wait_in<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.wait_in += t.elapsed();
        out
    }
    pub fn wait_out<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.wait_out += t.elapsed();
        out
    }
}

/// The merged clocks of one stage.
#[derive(Debug)]
pub struct Stage {
    pub name: &'static str,
    pub threads: usize,
    total: Mutex<Clock>,
}

impl Stage {
    pub fn new(name: &'static str, threads: usize) -> Self {
        Self {
            name,
            threads,
            total: Mutex::new(Clock::default()),
        }
    }

    /// Adds a finished thread's clock.
    pub fn merge(&self, c: Clock) {
        let mut t = self.total.lock().unwrap_or_else(|p| p.into_inner());
        t.busy += c.busy;
        t.wait_in += c.wait_in;
        t.wait_out += c.wait_out;
        t.items += c.items;
    }

    pub fn summary(&self, wall: Duration) -> StageSummary {
        let t = *self.total.lock().unwrap_or_else(|p| p.into_inner());
        let thread_seconds = wall.as_secs_f64() * self.threads as f64;
        let share = |d: Duration| {
            if thread_seconds > 0.0 {
                d.as_secs_f64() / thread_seconds
            } else {
                0.0
            }
        };
        StageSummary {
            stage: self.name,
            threads: self.threads,
            items: t.items,
            items_per_s: if wall.as_secs_f64() > 0.0 {
                t.items as f64 / wall.as_secs_f64()
            } else {
                0.0
            },
            busy_s: t.busy.as_secs_f64(),
            busy_share: share(t.busy),
            wait_in_share: share(t.wait_in),
            wait_out_share: share(t.wait_out),
            // Items per second of busy time per thread: the stage's speed if it never waited.
            capacity_per_s: if t.busy.as_secs_f64() > 0.0 {
                t.items as f64 / t.busy.as_secs_f64() * self.threads as f64
            } else {
                0.0
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StageSummary {
    pub stage: &'static str,
    pub threads: usize,
    pub items: u64,
    pub items_per_s: f64,
    pub busy_s: f64,
    /// Fraction of the stage's thread-time spent working.
    pub busy_share: f64,
    /// Fraction spent waiting for input (the stage before is slower).
    pub wait_in_share: f64,
    /// Fraction spent waiting for room downstream (the stage after is slower).
    pub wait_out_share: f64,
    /// Items/s the stage could sustain with all its threads busy.
    pub capacity_per_s: f64,
}
