//! Tests of the colorization task: bins, soft encoding, rebalancing, tensors, previews.

use std::collections::BTreeSet;

use super::bins::{convex_hull, inside_convex};
use super::*;
use crate::pretext::TrainingContract;
use crate::pretext::feed::IMAGES;
use crate::pretext::feed::host::{Host, zeros};
use crate::pretext::training::{PixelNorm, Slot};
use crate::train::loss::TARGETS_INPUT;
use crate::train::{BatchInputs, Loss};

fn canonical() -> Arc<BinSet> {
    BinSet::in_gamut(Gamut::Hull, 10.0)
}

fn brute_force(bins: &BinSet, ab: [f32; 2], k: usize) -> Vec<usize> {
    let mut all: Vec<(f32, usize)> = bins
        .centers
        .iter()
        .enumerate()
        .map(|(q, c)| {
            let (da, db) = (ab[0] - c[0], ab[1] - c[1]);
            (da * da + db * db, q)
        })
        .collect();
    all.sort_by(|x, y| x.partial_cmp(y).unwrap());
    all.iter().take(k).map(|x| x.1).collect()
}

/// A smooth, colourful synthetic image (deterministic).
fn test_image(s: usize) -> Vec<u8> {
    let mut px = Vec::with_capacity(s * s * 3);
    for y in 0..s {
        for x in 0..s {
            let (fx, fy) = (x as f32 / s as f32, y as f32 / s as f32);
            px.push((255.0 * fx) as u8);
            px.push((255.0 * fy) as u8);
            px.push((127.0 + 120.0 * (6.0 * fx).sin() * (4.0 * fy).cos()) as u8);
        }
    }
    px
}

/// Zhang et al.'s `pts_in_hull.npy`, summarised: for each a (−90 to 100 in steps of 10),
/// the first and last b of its contiguous column of bins.
const ZHANG_COLUMNS: [(i32, i32, i32); 20] = [
    (-90, 50, 90),
    (-80, 20, 90),
    (-70, 0, 90),
    (-60, -20, 90),
    (-50, -30, 100),
    (-40, -40, 100),
    (-30, -50, 100),
    (-20, -50, 100),
    (-10, -60, 100),
    (0, -70, 100),
    (10, -80, 90),
    (20, -80, 90),
    (30, -90, 90),
    (40, -100, 90),
    (50, -100, 80),
    (60, -110, 80),
    (70, -110, 80),
    (80, -110, 70),
    (90, -110, 70),
    (100, -90, 0),
];

#[test]
fn bin_count_is_zhangs_313() {
    let bins = canonical();
    let reachable = BinSet::in_gamut(Gamut::Reachable, 10.0);
    println!(
        "ab bins at grid 10: hull {} (Zhang et al.: 313), reachable {}",
        bins.len(),
        reachable.len()
    );
    assert_eq!(bins.len(), 313);
    assert!(
        (255..=265).contains(&reachable.len()),
        "{}",
        reachable.len()
    );
    // The very points of pts_in_hull.npy, in its order.
    let zhang: Vec<[f32; 2]> = ZHANG_COLUMNS
        .iter()
        .flat_map(|&(a, lo, hi)| (lo..=hi).step_by(10).map(move |b| [a as f32, b as f32]))
        .collect();
    assert_eq!(bins.centers, zhang);
    // Reachable bins are a subset of the hull's.
    for c in &reachable.centers {
        assert!(bins.centers.contains(c), "{c:?}");
    }
    // Sorted and on the grid.
    for set in [&bins, &reachable] {
        assert!(
            set.centers
                .windows(2)
                .all(|w| (w[0][0], w[0][1]) < (w[1][0], w[1][1]))
        );
        assert!(
            set.centers
                .iter()
                .all(|c| c[0] % 10.0 == 0.0 && c[1] % 10.0 == 0.0)
        );
    }
    // Computed once: the same Arc.
    assert!(Arc::ptr_eq(&bins, &canonical()));
    // Every sRGB colour's own bin is in both sets (its nearest bin is its grid cell).
    for rgb in [
        [128u8, 128, 128],
        [255, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
        [255, 0, 255],
    ] {
        let [_, a, b] = lab::rgb8_to_lab_pixel(rgb);
        for set in [&bins, &reachable] {
            let c = set.centers[set.nearest([a, b])];
            assert!(
                (c[0] - a).abs() <= 5.0 && (c[1] - b).abs() <= 5.0,
                "{rgb:?}"
            );
        }
    }
}

#[test]
#[ignore = "scans all 16.7 M sRGB colours (~seconds); run with --ignored"]
fn surface_scan_equals_full_scan() {
    let reachable = BinSet::in_gamut(Gamut::Reachable, 10.0);
    let mut cells = BTreeSet::new();
    let mut points = Vec::new();
    for r in 0..=255u8 {
        for g in 0..=255u8 {
            for b in 0..=255u8 {
                let [_, a, bb] = lab::rgb8_to_lab_pixel([r, g, b]);
                cells.insert(((a / 10.0).round() as i64, (bb / 10.0).round() as i64));
                if (r as u32 * 7 + g as u32 * 3 + b as u32).is_multiple_of(61) {
                    points.push([f64::from(a), f64::from(bb)]);
                }
            }
        }
    }
    let full = BinSet::from_cells(10.0, cells.into_iter());
    assert_eq!(full.centers, reachable.centers);
    // Interior colours never leave the hull of the surface's ab.
    let mut surface = Vec::new();
    for u in 0..=255u8 {
        for v in 0..=255u8 {
            for f in [0u8, 255] {
                for rgb in [[f, u, v], [u, f, v], [u, v, f]] {
                    let [_, a, b] = lab::rgb8_to_lab_pixel(rgb);
                    surface.push([f64::from(a), f64::from(b)]);
                }
            }
        }
    }
    let hull = convex_hull(surface);
    assert!(points.iter().all(|&p| inside_convex(&hull, p)));
}

#[test]
fn nearest_and_soft_encoding_match_brute_force() {
    let bins = canonical();
    let mut rng = Rng::new(1);
    for t in 0..5000 {
        // Mostly inside the gamut, some far outside (brute-force path) and on the edges.
        let span = if t % 10 == 0 { 400.0 } else { 230.0 };
        let ab = [
            (rng.uniform_f32() - 0.5) * span,
            (rng.uniform_f32() - 0.5) * span,
        ];
        let want = brute_force(&bins, ab, 5);
        assert_eq!(bins.nearest(ab), want[0], "{ab:?}");
        let (idx, w) = bins.soft_encode(ab);
        assert_eq!(idx.to_vec(), want, "{ab:?}");
        let sum: f32 = w.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "{ab:?}: {w:?}");
        assert!(w.windows(2).all(|p| p[0] >= p[1]), "{w:?}");
        // The weights are the normalised Gaussians of the distances.
        let g: Vec<f64> = idx
            .iter()
            .map(|&q| {
                let c = bins.centers[q];
                let d2 = f64::from(ab[0] - c[0]).powi(2) + f64::from(ab[1] - c[1]).powi(2);
                (-d2 / 50.0).exp()
            })
            .collect();
        let gs: f64 = g.iter().sum();
        if gs > 1e-200 {
            for (wj, gj) in w.iter().zip(&g) {
                assert!((f64::from(*wj) - gj / gs).abs() < 1e-5, "{ab:?}");
            }
        }
    }
    // k = 1 and larger k agree with brute force as well.
    let mut idx = [0usize; 12];
    let mut d2 = [0.0f32; 12];
    bins.k_nearest([3.3, -41.7], &mut idx, &mut d2);
    assert_eq!(idx.to_vec(), brute_force(&bins, [3.3, -41.7], 12));
    assert_eq!(bins.nearest([f32::NAN, 1.0]), bins.nearest([0.0, 0.0]));
}

#[test]
fn rebalancing_weights_have_unit_expectation_and_favour_rare_bins() {
    let bins = canonical();
    let q = bins.len();
    // A peaked distribution: mass around grey, little elsewhere (like real photos).
    let grey = bins.nearest([0.0, 0.0]);
    let mut p = vec![1.0f64; q];
    p[grey] = 5000.0;
    let rw = RebalanceWeights::estimate(&bins, &p, 0.5, 5.0).unwrap();
    let e: f64 = rw
        .weights
        .iter()
        .zip(&rw.smoothed)
        .map(|(w, p)| f64::from(*w) * p)
        .sum();
    assert!((e - 1.0).abs() < 1e-6, "E[w] = {e}");
    assert!((rw.smoothed.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    let far = bins.nearest([60.0, 60.0]);
    assert!(rw.weights[far] > 10.0 * rw.weights[grey]);
    // Weights are a decreasing function of the smoothed probability.
    let mut order: Vec<usize> = (0..q).collect();
    order.sort_by(|&x, &y| rw.smoothed[x].partial_cmp(&rw.smoothed[y]).unwrap());
    assert!(
        order
            .windows(2)
            .all(|o| rw.weights[o[0]] >= rw.weights[o[1]])
    );
    // λ = 1: uniform weights, all 1.
    let flat = RebalanceWeights::estimate(&bins, &p, 1.0, 5.0).unwrap();
    assert!(flat.weights.iter().all(|w| (w - 1.0).abs() < 1e-5));
    // Bad inputs are errors, not panics.
    assert!(RebalanceWeights::estimate(&bins, &p[1..], 0.5, 5.0).is_err());
    assert!(RebalanceWeights::estimate(&bins, &vec![0.0; q], 0.5, 5.0).is_err());
    assert!(RebalanceWeights::estimate(&bins, &p, 1.5, 5.0).is_err());
}

#[test]
fn annealed_mean_tends_to_mode_and_mean() {
    let bins = canonical();
    let mut probs = vec![0.0f32; bins.len()];
    let (a, b, c) = (
        bins.nearest([0.0, 0.0]),
        bins.nearest([40.0, 20.0]),
        bins.nearest([-30.0, 50.0]),
    );
    probs[a] = 0.5;
    probs[b] = 0.3;
    probs[c] = 0.2;
    let mode = bins.annealed_mean(&probs, 0.01);
    assert!(
        (mode[0] - 0.0).abs() < 1e-3 && (mode[1] - 0.0).abs() < 1e-3,
        "{mode:?}"
    );
    let mean = bins.annealed_mean(&probs, 1.0);
    let want = [0.3 * 40.0 + 0.2 * -30.0, 0.3 * 20.0 + 0.2 * 50.0];
    assert!((mean[0] - want[0]).abs() < 1e-4 && (mean[1] - want[1]).abs() < 1e-4);
    // T = 0.38 lies in between, closer to the mode.
    let t = bins.annealed_mean(&probs, 0.38);
    assert!(t[0].abs() < mean[0].abs() && t[0] > 0.0, "{t:?}");
    assert_eq!(bins.annealed_mean(&vec![0.0; bins.len()], 0.38), [0.0, 0.0]);
}

#[test]
fn tensors_have_the_signature_and_right_values() {
    let s = 32;
    let px = test_image(s);
    let image = RgbView {
        width: s,
        height: s,
        pixels: &px,
    };
    for target in [ColorTarget::Bins, ColorTarget::Regression] {
        let task = ColorizeConfig {
            target,
            ..Default::default()
        }
        .build(s)
        .unwrap();
        let sig = task.signature();
        let sample = task.make(image, &mut Rng::new(3));
        for (spec, data) in sig
            .inputs
            .iter()
            .zip(&sample.inputs)
            .chain(sig.targets.iter().zip(&sample.targets))
        {
            assert_eq!(
                (spec.dtype, spec.len()),
                (data.dtype(), data.len()),
                "{spec:?}"
            );
        }
        let TensorData::F32(l) = &sample.inputs[0] else {
            panic!()
        };
        let (l_ref, ab_ref) = lab::rgb8_to_lab(&px);
        assert!(l.iter().zip(&l_ref).all(|(x, r)| *x == r - 50.0));
        match target {
            ColorTarget::Regression => {
                assert_eq!(sample.targets[0], TensorData::F32(ab_ref));
            }
            ColorTarget::Bins => {
                let (TensorData::I64(hard), TensorData::I64(idx), TensorData::F32(w)) =
                    (&sample.targets[0], &sample.targets[1], &sample.targets[2])
                else {
                    panic!()
                };
                let m = s / 4;
                let cells = m * m;
                // Cell (1, 2): mean ab of its 4×4 block, nearest bin, soft weights sum to 1.
                let (by, bx) = (1, 2);
                let mut mean = [0.0f32; 2];
                for y in 4 * by..4 * by + 4 {
                    for x in 4 * bx..4 * bx + 4 {
                        mean[0] += ab_ref[y * s + x] / 16.0;
                        mean[1] += ab_ref[s * s + y * s + x] / 16.0;
                    }
                }
                let c = by * m + bx;
                let want = task.bins().nearest(mean);
                assert_eq!(hard[c], want as i64);
                assert_eq!(idx[c], want as i64);
                let sum: f32 = (0..5).map(|j| w[j * cells + c]).sum();
                assert!((sum - 1.0).abs() < 1e-5);
            }
        }
        let (pw, ph, pv) = task.preview(image, &sample);
        assert_eq!((pw, ph, pv.len()), (2 * s + 2, s, (2 * s + 2) * s * 3));
    }
}

#[test]
fn preview_reproduces_the_colours() {
    let s = 32;
    let px = test_image(s);
    let image = RgbView {
        width: s,
        height: s,
        pixels: &px,
    };
    let task = ColorizeConfig {
        target: ColorTarget::Regression,
        ..Default::default()
    }
    .build(s)
    .unwrap();
    let sample = task.make(image, &mut Rng::new(0));
    let (w, _, pv) = task.preview(image, &sample);
    // The right panel is the original (Lab round trip is exact to 8 bits).
    for y in 0..s {
        let right = &pv[(y * w + s + 2) * 3..][..s * 3];
        assert_eq!(right, &px[y * s * 3..][..s * 3]);
        // The left one is grey.
        let left = &pv[y * w * 3..][..s * 3];
        assert!(left.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    }
    // Bins: colours come back approximately (quantised, block-averaged, annealed).
    let task = ColorizeConfig::default().build(s).unwrap();
    let sample = task.make(image, &mut Rng::new(0));
    let (w, _, pv) = task.preview(image, &sample);
    let mut err = 0.0f64;
    for y in 0..s {
        for x in 0..s * 3 {
            err += (f64::from(pv[(y * w + s + 2) * 3 + x]) - f64::from(px[y * s * 3 + x])).abs();
        }
    }
    let mean_err = err / (s * s * 3) as f64;
    assert!(mean_err < 20.0, "mean abs error {mean_err}");
    // A sample of the wrong shape is recomputed, not trusted (and does not panic).
    let (_, _, again) = task.preview(image, &PretextSample::default());
    assert_eq!(again, pv);
}

#[test]
fn deterministic_and_rng_independent() {
    let s = 64;
    let px = test_image(s);
    let image = RgbView {
        width: s,
        height: s,
        pixels: &px,
    };
    let task = ColorizeConfig::default().build(s).unwrap();
    let a = task.make(image, &mut Rng::for_sample(7, "k", 0));
    let b = task.make(image, &mut Rng::for_sample(7, "k", 0));
    assert_eq!(a, b);
    // Colorization draws nothing: another stream gives the same tensors.
    assert_eq!(a, task.make(image, &mut Rng::new(99)));
    // A malformed image does not panic.
    let short = RgbView {
        width: 10,
        height: 5,
        pixels: &px[..10],
    };
    let out = task.make(short, &mut Rng::new(0));
    assert_eq!(out.inputs[0].len(), s * s);
}

#[test]
fn config_validation_and_toml() {
    let cfg: ColorizeConfig = toml::from_str("target = \"regression\"\ngrid = 10.0").unwrap();
    assert_eq!(cfg.target, ColorTarget::Regression);
    assert_eq!(cfg.neighbours, 5);
    assert!(toml::from_str::<ColorizeConfig>("nope = 1").is_err());
    assert!(toml::from_str::<ColorizeConfig>("target = \"ab\"").is_err());
    let bad = ColorizeConfig {
        downsample: 5,
        sigma: 0.0,
        temperature: -1.0,
        ..Default::default()
    };
    let err = bad.build(96).unwrap_err().to_string();
    assert!(err.contains("downsample") && err.contains("sigma") && err.contains("temperature"));
    let too_many = ColorizeConfig {
        neighbours: 1000,
        ..Default::default()
    };
    assert!(too_many.build(96).is_err());
    assert!(ColorizeConfig::default().build(0).is_err());
    for s in [4, 32, 96, 224] {
        assert!(ColorizeConfig::default().build(s).is_ok());
    }
    // Another grid builds its own bin set: about a quarter of the bins at twice the step.
    for (gamut, fine) in [(Gamut::Hull, 313.0), (Gamut::Reachable, 261.0)] {
        let coarse = ColorizeConfig {
            grid: 20.0,
            gamut,
            ..Default::default()
        }
        .build(32)
        .unwrap();
        let ratio = coarse.bins().len() as f64 / fine;
        println!("grid 20, {gamut:?}: {} bins", coarse.bins().len());
        assert!(
            (0.2..0.45).contains(&ratio),
            "{gamut:?}: {}",
            coarse.bins().len()
        );
    }
}

#[test]
fn histogram_accumulates_bins() {
    let s = 32;
    let px = test_image(s);
    let image = RgbView {
        width: s,
        height: s,
        pixels: &px,
    };
    let task = ColorizeConfig::default().build(s).unwrap();
    let sample = task.make(image, &mut Rng::new(0));
    let mut h = BinHistogram::new(task.bins().len());
    assert_eq!(h.add_sample(&sample), 0);
    assert_eq!(h.total(), 64);
    let mut h2 = h.clone();
    h2.merge(&h);
    assert_eq!(h2.total(), 128);
    assert_eq!(h.add_bins(&[-1, 100_000]), 2);
    assert!((h.distribution().iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert!(task.rebalance_weights(&h).is_ok());
}

/// Bin statistics on the real photos of `data/photos` (skipped when absent): decoded and
/// resized to 96 px by the pipeline's own decoder.
#[test]
fn rebalancing_on_real_photos() {
    use crate::decode::{DecodeSettings, Decoder};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/photos");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("no {}: skipped", dir.display());
        return;
    };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("png" | "jpg" | "jpeg")
            )
        })
        .collect();
    paths.sort();
    let s = 96;
    let task = ColorizeConfig::default().build(s).unwrap();
    let mut decoder = Decoder::new(DecodeSettings::with_size(s as u32));
    let mut hist = BinHistogram::new(task.bins().len());
    let mut out = Vec::new();
    let mut used = 0;
    for p in &paths {
        let Ok(bytes) = std::fs::read(p) else {
            continue;
        };
        if decoder.decode_into(&bytes, &mut out).is_err() {
            continue;
        }
        let image = RgbView {
            width: s,
            height: s,
            pixels: &out,
        };
        hist.add_sample(&task.make(image, &mut Rng::new(0)));
        used += 1;
    }
    if used == 0 {
        eprintln!("no decodable photos in {}: skipped", dir.display());
        return;
    }
    let rw = task.rebalance_weights(&hist).unwrap();
    let occupied = hist.counts().iter().filter(|&&c| c > 0).count();
    let (wmin, wmax) = rw
        .weights
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &w| (lo.min(w), hi.max(w)));
    println!(
        "{used} photos at {s} px: {} bins, {occupied} occupied; weights {wmin:.3}..{wmax:.3}",
        task.bins().len()
    );
    assert!(wmin > 0.0 && wmax <= 2.0 * task.bins().len() as f32);
    assert!(wmax > wmin);
}

/// Writes previews of `data/photos/astronaut.png` (96 px) to the temp dir, for a person to
/// look at: `cargo test --lib pretext::colorize::tests::write_previews -- --ignored --nocapture`.
#[test]
#[ignore = "writes PNG files for manual inspection"]
fn write_previews() {
    use crate::decode::{DecodeSettings, Decoder};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/photos/astronaut.png");
    let Ok(bytes) = std::fs::read(&path) else {
        return;
    };
    let s = 96;
    let mut px = Vec::new();
    Decoder::new(DecodeSettings::with_size(s as u32))
        .decode_into(&bytes, &mut px)
        .unwrap();
    let image = RgbView {
        width: s,
        height: s,
        pixels: &px,
    };
    for (i, cfg) in [
        ColorizeConfig::default(),
        ColorizeConfig {
            target: ColorTarget::Regression,
            ..Default::default()
        },
    ]
    .into_iter()
    .enumerate()
    {
        let task = cfg.build(s).unwrap();
        let sample = task.make(image, &mut Rng::new(42));
        let (w, h, canvas) = task.preview(image, &sample);
        let out = std::env::temp_dir().join(format!("sslpipe_colorize_{i}.png"));
        image::RgbImage::from_raw(w as u32, h as u32, canvas)
            .unwrap()
            .save(&out)
            .unwrap();
        println!("{}", out.display());
    }
}

#[test]
fn soft_colour_bins_become_a_dense_distribution_per_cell() {
    let size = 8;
    let task = ColorizeConfig::default().build(size).unwrap();
    let bins = task.bins().len();
    let cells = 4; // downsample 4: 2×2 target cells
    let mut host = Host(vec![
        (IMAGES, zeros(&[1, 1, size, size])),
        (TARGETS_INPUT, zeros(&[1, bins, 2, 2])),
    ]);
    let index: Vec<i64> = (0..5 * cells).map(|i| (i % 7) as i64).collect();
    let weight: Vec<f32> = (0..5 * cells)
        .map(|i| 0.1 * (i / cells + 1) as f32)
        .collect();
    let sample = PretextSample {
        inputs: vec![TensorData::F32(vec![25.0; size * size])],
        targets: vec![
            TensorData::I64(vec![0; cells]),
            TensorData::I64(index.clone()),
            TensorData::F32(weight.clone()),
        ],
    };
    let norm = PixelNorm {
        mean: [0.0; 3],
        std: [1.0; 3],
    };
    let slot = Slot { index: 0, batch: 1 };
    task.fill(&sample, slot, &norm, &mut host).unwrap();
    // The sample holds L − 50 = 25, i.e. L = 75: the network sees (75 − 50) / 50.
    assert!(
        host.input_f32_mut(IMAGES)
            .unwrap()
            .iter()
            .all(|&v| v == 0.5)
    );
    let dense = host.input_f32_mut(TARGETS_INPUT).unwrap().to_vec();
    for cell in 0..cells {
        let mut expected = vec![0f32; bins];
        for j in 0..5 {
            expected[index[j * cells + cell] as usize] += weight[j * cells + cell];
        }
        let got: Vec<f32> = (0..bins).map(|q| dense[q * cells + cell]).collect();
        assert_eq!(got, expected, "cell {cell}");
    }
}

#[test]
fn rebalance_prior_weights_the_soft_cross_entropy() {
    let dir = tempfile::tempdir().unwrap();
    let bins = BinSet::in_gamut(Gamut::Hull, 10.0);
    // Half the mass on the grey bin, the rest spread evenly.
    let grey = bins.nearest([0.0, 0.0]);
    let mut prior = vec![1.0f64; bins.len()];
    prior[grey] = bins.len() as f64;
    let path = dir.path().join("prior.json");
    std::fs::write(&path, serde_json::to_string(&prior).unwrap()).unwrap();
    let net_spec = crate::model::EncoderSpec::default();
    let net = crate::pretext::training::NetworkContext {
        encoder: &net_spec,
        temperature: 0.2,
    };

    // Relative paths are the pipeline file's: resolved through the task config.
    let mut config: crate::pretext::TaskConfig =
        toml::from_str("kind = \"colorize\"\nrebalance_prior = \"prior.json\"").unwrap();
    config.resolve_paths(&|p| dir.path().join(p));
    let task = crate::pretext::build(&config, 32).unwrap();
    let Loss::SoftCrossEntropy { class_weights } = task.training(&net).unwrap().loss else {
        panic!("soft cross-entropy expected")
    };
    let expected = RebalanceWeights::estimate(&bins, &prior, 0.5, 5.0).unwrap();
    assert_eq!(class_weights.as_deref(), Some(expected.weights.as_slice()));
    let w = class_weights.unwrap();
    assert!(
        w[grey] < w[(grey + 1) % w.len()],
        "the common bin weighs less"
    );

    // Without a prior: unweighted, as before.
    let plain = ColorizeConfig::default().build(32).unwrap();
    assert_eq!(
        plain.training(&net).unwrap().loss,
        Loss::SoftCrossEntropy {
            class_weights: None
        }
    );
    // Regression has no bins to weigh; a prior of the wrong length or an unreadable one is refused.
    let with = |target, file: &str| ColorizeConfig {
        target,
        rebalance_prior: Some(dir.path().join(file)),
        ..Default::default()
    };
    let err = with(ColorTarget::Regression, "prior.json")
        .build(32)
        .unwrap_err();
    assert!(err.to_string().contains("bins"), "{err}");
    std::fs::write(dir.path().join("short.json"), "[1, 2, 3]").unwrap();
    let err = with(ColorTarget::Bins, "short.json").build(32).unwrap_err();
    assert!(err.to_string().contains("one frequency per bin"), "{err}");
    let err = with(ColorTarget::Bins, "missing.json")
        .build(32)
        .unwrap_err();
    assert!(err.to_string().contains("missing.json"), "{err}");
}
