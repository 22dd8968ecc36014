//! Colour pretext hot paths, per image: colorization (`bins` and `regression` targets), SimCLR
//! two-view augmentation, and the RGB8 → Lab conversion alone.
//!
//! Inputs are generated deterministically in the setup (smooth gradients + noise, like the decode
//! bench), so runs are comparable across machines and commits. One thread, one task, as in a
//! pipeline worker; the `Rng` is re-created per image from a counter, as the pipeline does per
//! sample. Throughput is reported in images/s. Compare with `decode_resize` (decode bench): the
//! pretext step should cost well under the decode + resize of the same image.
//!
//! `cargo bench --bench pretext_colour -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sslpipe::pretext::colorize::{ColorTarget, ColorizeConfig};
use sslpipe::pretext::lab::rgb8_to_lab_into;
use sslpipe::pretext::views::ViewsConfig;
use sslpipe::pretext::{PretextTask, RgbView};
use sslpipe::rng::Rng;

fn photo_like(s: usize, seed: u64) -> Vec<u8> {
    let mut st = seed | 1;
    let mut noise = move || {
        st ^= st >> 12;
        st ^= st << 25;
        st ^= st >> 27;
        (st.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as f32 / 255.0 - 0.5
    };
    let mut px = Vec::with_capacity(s * s * 3);
    for y in 0..s {
        for x in 0..s {
            let fx = x as f32 / s as f32;
            let fy = y as f32 / s as f32;
            let base = [
                255.0 * fx,
                255.0 * fy,
                127.0 + 100.0 * ((fx * 6.0).sin() * (fy * 4.0).cos()),
            ];
            px.extend(base.map(|v| (v + noise() * 24.0).clamp(0.0, 255.0) as u8));
        }
    }
    px
}

fn bench_make(c: &mut Criterion) {
    let mut g = c.benchmark_group("pretext_colour");
    g.throughput(Throughput::Elements(1));
    for s in [96usize, 224] {
        let px = photo_like(s, 1);
        let image = RgbView {
            width: s,
            height: s,
            pixels: &px,
        };
        let tasks: Vec<(&str, Box<dyn PretextTask>)> = vec![
            (
                "colorize_bins",
                Box::new(ColorizeConfig::default().build(s).unwrap()),
            ),
            (
                "colorize_regression",
                Box::new(
                    ColorizeConfig {
                        target: ColorTarget::Regression,
                        ..Default::default()
                    }
                    .build(s)
                    .unwrap(),
                ),
            ),
            ("views", Box::new(ViewsConfig::default().build(s).unwrap())),
        ];
        for (name, task) in &tasks {
            let mut n = 0u64;
            g.bench_function(format!("{name}_{s}"), |b| {
                b.iter(|| {
                    n += 1;
                    let mut rng = Rng::for_sample(7, "bench", n);
                    task.make(black_box(image), &mut rng)
                })
            });
        }
        let mut l = vec![0.0f32; s * s];
        let mut ab = vec![0.0f32; 2 * s * s];
        g.bench_function(format!("rgb8_to_lab_{s}"), |b| {
            b.iter(|| rgb8_to_lab_into(black_box(&px), &mut l, &mut ab))
        });
    }
    g.finish();

    // Where the time of a view goes, at 96 px: the crop + resize alone, then with each optional
    // step forced on (both views per image, as in `make`).
    let s = 96;
    let px = photo_like(s, 2);
    let image = RgbView {
        width: s,
        height: s,
        pixels: &px,
    };
    let none = ViewsConfig {
        flip_prob: 0.0,
        jitter_prob: 0.0,
        grayscale_prob: 0.0,
        blur_prob: 0.0,
        ..Default::default()
    };
    let mut g = c.benchmark_group("views_parts_96");
    g.throughput(Throughput::Elements(1));
    for (name, cfg) in [
        ("crop_resize", none.clone()),
        (
            "jitter_always",
            ViewsConfig {
                jitter_prob: 1.0,
                ..none.clone()
            },
        ),
        (
            "blur_always",
            ViewsConfig {
                blur_prob: 1.0,
                ..none.clone()
            },
        ),
    ] {
        let task = cfg.build(s).unwrap();
        let mut n = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                task.make(black_box(image), &mut Rng::for_sample(7, "bench", n))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_make);
criterion_main!(benches);
