//! What a person sees while a run goes: a progress line on a terminal (redrawn in place), plain
//! periodic lines otherwise (logs of batch jobs), and the Ctrl-C protocol — first press stops the
//! source and lets the stages drain, second press aborts and leaves only `.tmp` files.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::stats::Counters;
use crate::source::StopFlag;

pub async fn watch_ctrl_c(stop: StopFlag, interrupted: Arc<AtomicBool>) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    interrupted.store(true, Ordering::SeqCst);
    stop.stop();
    eprintln!("\nstopping: finishing the images already read (press Ctrl-C again to abort)");
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("aborted: unfinished output files are left as .tmp");
        std::process::exit(130);
    }
}

pub async fn report(counters: Arc<Counters>, started: Instant) {
    let line = |c: &Counters| {
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let done = Counters::get(&c.done);
        format!(
            "read {} · decoded {} · skipped {} · {} {} · {:.0} images/s",
            Counters::get(&c.read),
            Counters::get(&c.decoded),
            Counters::get(&c.failed),
            c.done_label,
            done,
            done as f64 / secs
        )
    };
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .expect("valid template"),
        );
        loop {
            bar.set_message(line(&counters));
            bar.tick();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    } else {
        let mut every = tokio::time::interval(Duration::from_secs(10));
        every.tick().await;
        loop {
            every.tick().await;
            eprintln!(
                "[{:>6.0} s] {}",
                started.elapsed().as_secs_f64(),
                line(&counters)
            );
        }
    }
}

/// Ends the progress display cleanly (the bar task was aborted mid-line).
pub fn finish() {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
}
