//! Geometric and masking pretext hot paths, per image: rotation, jigsaw, relative patch
//! location, inpainting and masked image modelling (`make` only), plus the one-off generation of
//! the jigsaw permutation set.
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
use sslpipe::pretext::inpaint::{InpaintConfig, MaskKind};
use sslpipe::pretext::jigsaw::{JigsawConfig, PermutationSet};
use sslpipe::pretext::mask::MaskConfig;
use sslpipe::pretext::relpatch::RelPatchConfig;
use sslpipe::pretext::rotation::RotationConfig;
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

criterion_group!(
    benches,
    bench_rotation,
    bench_jigsaw,
    bench_relpatch,
    bench_inpaint,
    bench_mask
);
criterion_main!(benches);
