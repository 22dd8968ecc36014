//! Pretext hot paths, per image (`make` only): rotation, jigsaw, relative patch location,
//! inpainting, masked image modelling, colorization (bins and regression targets), SimCLR views,
//! RGB8 → Lab alone, and the one-off generation of the jigsaw permutation set.
//!
//! Inputs are generated deterministically in the setup (smooth gradients + noise, like the decode
//! bench), so runs are comparable across machines and commits. One thread, one task, as in a
//! pipeline worker; the `Rng` is re-created per image from a counter, as the pipeline does per
//! sample. Throughput is reported in images/s. The bar: each task must cost well under the
//! decode + resize of the same image (`decode_resize` in the decode bench, a few ms at 96 px).
//!
//! `cargo bench --bench pretext -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sslpipe::pretext::colorize::{ColorTarget, ColorizeConfig};
use sslpipe::pretext::inpaint::{InpaintConfig, MaskKind};
use sslpipe::pretext::jigsaw::{JigsawConfig, PermutationSet};
use sslpipe::pretext::lab::rgb8_to_lab_into;
use sslpipe::pretext::mask::MaskConfig;
use sslpipe::pretext::relpatch::RelPatchConfig;
use sslpipe::pretext::rotation::RotationConfig;
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

/// Times `task.make` on one `s × s` image, a fresh per-sample `Rng` each time.
fn bench_task(c: &mut Criterion, group: &str, name: &str, s: usize, task: &dyn PretextTask) {
    let px = photo_like(s, s as u64);
    let image = RgbView {
        width: s,
        height: s,
        pixels: &px,
    };
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    let mut epoch = 0u64;
    g.bench_function(format!("{name}/{s}"), |b| {
        b.iter(|| {
            epoch += 1;
            let mut rng = Rng::for_sample(7, "bench/image.jpg", epoch);
            black_box(task.make(black_box(image), &mut rng))
        })
    });
    g.finish();
}

fn bench_rotation(c: &mut Criterion) {
    for all_four in [true, false] {
        let task = RotationConfig { all_four }.build(96).expect("valid config");
        let name = if all_four { "all_four" } else { "one" };
        bench_task(c, "pretext_rotation", name, 96, &task);
    }
}

fn bench_jigsaw(c: &mut Criterion) {
    for s in [96, 255] {
        let task = JigsawConfig::default().build(s).expect("valid config");
        bench_task(c, "pretext_jigsaw", "grid3_p100", s, &task);
    }
    let mut g = c.benchmark_group("jigsaw_permutations");
    g.sample_size(10);
    g.bench_function("generate/9_tiles_p100", |b| {
        b.iter(|| black_box(PermutationSet::generate(9, 100, black_box(0))))
    });
    g.finish();
}

fn bench_relpatch(c: &mut Criterion) {
    let task = RelPatchConfig::default().build(96).expect("valid config");
    bench_task(c, "pretext_relpatch", "default", 96, &task);
}

fn bench_inpaint(c: &mut Criterion) {
    for (name, mask) in [
        ("center", MaskKind::Center),
        ("random_squares", MaskKind::RandomSquares),
        ("random_region", MaskKind::RandomRegion),
    ] {
        let task = InpaintConfig {
            mask,
            ..InpaintConfig::default()
        }
        .build(96)
        .expect("valid config");
        bench_task(c, "pretext_inpaint", name, 96, &task);
    }
}

fn bench_mask(c: &mut Criterion) {
    let task = MaskConfig::default().build(96).expect("valid config");
    bench_task(c, "pretext_mask", "p16_r075", 96, &task);
}

/// Colour tasks (colorize `bins` and `regression`, views) and RGB8 → Lab alone, at 96 and 224 px.
fn bench_colour(c: &mut Criterion) {
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

criterion_group!(
    benches,
    bench_rotation,
    bench_jigsaw,
    bench_relpatch,
    bench_inpaint,
    bench_mask,
    bench_colour
);
criterion_main!(benches);
