//! JPEG decode + resize on a real photo corpus, DCT-domain scaling off (full-size decode, the old
//! path) against on, in alternation (A B A B …) so a shared, noisy machine treats both alike;
//! prints the median images/s of each and their ratio, and how far apart the two outputs are.
//!
//! `cargo bench --bench decode_corpus -- [DIR] [ROUNDS] [THREADS]`
//! (defaults: `data/corpus`, 5 rounds, 1 and 2 threads; `scripts/fetch-corpus.sh` makes the corpus).
//! Run by `cargo test --benches` (without `--bench`), it is a smoke test: one round over a few
//! generated JPEGs, so the test suite needs no corpus.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sslpipe::decode::{DecodeSettings, Decoder};

fn files(dir: &str) -> Vec<Vec<u8>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e} (run scripts/fetch-corpus.sh first)"))
        .filter_map(|e| {
            let p = e.ok()?.path();
            let ext = p.extension()?.to_str()?.to_ascii_lowercase();
            matches!(ext.as_str(), "jpg" | "jpeg").then_some(p)
        })
        .collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// A few 800×600 JPEGs with smooth gradients, for the smoke run.
fn generated_jpegs() -> Vec<Vec<u8>> {
    (0..4u32)
        .map(|seed| {
            let img = image::RgbImage::from_fn(800, 600, |x, y| {
                image::Rgb([
                    (x / 4 + seed * 30) as u8,
                    (y / 3) as u8,
                    ((x + y) / 6) as u8,
                ])
            });
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85)
                .encode_image(&img)
                .expect("encode a JPEG");
            bytes
        })
        .collect()
}

/// Images per second decoding all of `files` to `size` on `threads` threads.
fn run(files: &[Vec<u8>], size: u32, threads: usize, scaling: bool) -> f64 {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut d = Decoder::new(DecodeSettings::with_size(size));
                d.set_dct_scaling(scaling);
                let mut out = Vec::new();
                while let Some(bytes) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
                    d.decode_into(bytes, &mut out)
                        .expect("corpus images decode");
                }
            });
        }
    });
    files.len() as f64 / started.elapsed().as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let dir = args.first().map_or("data/corpus", String::as_str);
    let rounds: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let thread_counts: Vec<usize> = match args.get(2).and_then(|s| s.parse().ok()) {
        Some(t) => vec![t],
        None => vec![1, 2],
    };
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (files, rounds) = if smoke {
        (generated_jpegs(), 1)
    } else {
        (files(dir), rounds)
    };
    println!(
        "{} JPEGs from {dir}, {rounds} rounds, full-size decode (off) vs DCT scaling (on)",
        files.len()
    );
    for size in [96u32, 224] {
        // How far apart the outputs are (per image: mean |a-b| over all bytes; and the largest).
        let (mut on, mut off) = (
            Decoder::new(DecodeSettings::with_size(size)),
            Decoder::new(DecodeSettings::with_size(size)),
        );
        off.set_dct_scaling(false);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut means = Vec::new();
        let mut max = 0u8;
        for bytes in files.iter().take(300) {
            on.decode_into(bytes, &mut a).unwrap();
            off.decode_into(bytes, &mut b).unwrap();
            let sum: u64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| u64::from(x.abs_diff(*y)))
                .sum();
            max = max.max(
                a.iter()
                    .zip(&b)
                    .map(|(x, y)| x.abs_diff(*y))
                    .max()
                    .unwrap_or(0),
            );
            means.push(sum as f64 / a.len() as f64);
        }
        let worst = means.iter().copied().fold(0.0, f64::max);
        println!(
            "{size} px: output difference on/off over {} images: mean |diff| median {:.3}, worst image {:.3}, largest byte diff {max}",
            means.len(),
            median(&mut means),
            worst
        );
        for &threads in &thread_counts {
            let (mut full, mut scaled) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                // Alternate which goes first, so drift in the machine's load hits both.
                if round % 2 == 0 {
                    full.push(run(&files, size, threads, false));
                    scaled.push(run(&files, size, threads, true));
                } else {
                    scaled.push(run(&files, size, threads, true));
                    full.push(run(&files, size, threads, false));
                }
            }
            let (f, s) = (median(&mut full), median(&mut scaled));
            println!(
                "{size} px, {threads} thread(s): full-size decode {f:.0} img/s, DCT scaling {s:.0} img/s (medians of {rounds}), ratio {:.2}",
                s / f
            );
        }
    }
}
