//! Masked image modelling (MAE, He et al. 2022): most of the image's patches are hidden and the
//! network must reconstruct their pixels from the few it sees.
//!
//! MAE feeds a transformer only the visible patches; our encoder is a CNN, so it gets the whole
//! image with the hidden patches set to the mean pixel, plus the mask itself as a second input.
//!
//! Guarantees:
//! - The image is split into a `G × G` grid of `patch × patch` patches, `G = S / patch` (S must be
//!   a multiple of `patch`). Exactly `round(ratio · G²)` patches are hidden: the first ones of a
//!   Fisher–Yates shuffle of `0..G²` drawn from the sample's [`Rng`] (its only draws), as MAE's
//!   random shuffle does.
//! - Inputs: `image` U8 `[3, S, S]` — the image with every hidden patch filled with the mean pixel
//!   [`FILL`] = (124, 116, 104); `mask` U8 `[G, G]`, 1 = hidden (row-major patch order).
//! - Targets: `patches` F32 `[G², patch² · 3]` — every patch (hidden or not, row-major) flattened
//!   as MAE's `patchify` does (row, column, channel), normalised per patch as MAE's
//!   `norm_pix_loss`: `(x − mean) / sqrt(var + 1e-6)` over the patch's `patch² · 3` values with
//!   pixels in `[0, 1]` and the unbiased variance (torch's default); `weight` F32 `[G²]`, 1.0 for a
//!   hidden patch and 0.0 otherwise, so the loss counts hidden patches only, as in MAE.
//! - Moments come from exact integer sums, so targets do not depend on summation order.

use serde::{Deserialize, Serialize};

use super::baseline::Baseline;
use super::draw::{self, Canvas};
use super::inpaint::FILL;
use super::training::{NetworkContext, PixelNorm, Slot, Training, TrainingContract};
use super::{
    DType, PretextError, PretextSample, PretextTask, RgbView, Signature, TaskSettings, TensorData,
    TensorSpec, feed,
};
use crate::rng::Rng;
use crate::train::loss::{MASK_INPUT, TARGETS_INPUT};
use crate::train::{BatchInputs, TrainError};

const TASK: &str = "mask";

/// Added to each patch's variance (pixels in `[0, 1]`), as in MAE.
pub const NORM_EPS: f64 = 1e-6;

/// TOML configuration of the masked-image-modelling task (`[pretext] kind = "mask"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskConfig {
    /// Patch side in pixels; the image size must be a multiple of it.
    pub patch: usize,
    /// Fraction of patches hidden (MAE: 0.75).
    pub ratio: f32,
}

impl Default for MaskConfig {
    fn default() -> Self {
        MaskConfig {
            patch: 16,
            ratio: 0.75,
        }
    }
}

fn invalid(message: String) -> PretextError {
    PretextError::Invalid {
        task: TASK,
        message,
    }
}

impl MaskConfig {
    /// Validates against the working image size `size` and returns the task.
    pub fn build(&self, size: usize) -> Result<Mask, PretextError> {
        let p = self.patch;
        if p == 0 || !size.is_multiple_of(p) || size / p < 2 {
            let fits: Vec<String> = (1..=size / 2)
                .filter(|&d| size.is_multiple_of(d))
                .map(|d| d.to_string())
                .collect();
            return Err(invalid(format!(
                "patch {p} px must divide the {size} px image into at least 2x2 patches; patch sizes that fit: {}",
                if fits.is_empty() {
                    "none".to_string()
                } else {
                    fits.join(", ")
                }
            )));
        }
        let g = size / p;
        let n = g * g;
        let count = (f64::from(self.ratio) * n as f64).round();
        if !(self.ratio.is_finite() && count >= 1.0 && count <= (n - 1) as f64) {
            return Err(invalid(format!(
                "ratio {} hides {count} of the {n} patches; ratios that hide 1..={} patches (at least one hidden, one visible) fit, e.g. {:.4} to {:.4}",
                self.ratio,
                n - 1,
                1.0 / n as f64,
                (n - 1) as f64 / n as f64
            )));
        }
        Ok(Mask {
            size,
            patch: p,
            grid: g,
            count: count as usize,
        })
    }
}

/// The masked-image-modelling task, built by [`MaskConfig::build`].
#[derive(Debug, Clone)]
pub struct Mask {
    size: usize,
    patch: usize,
    grid: usize,
    count: usize,
}

impl Mask {
    pub fn size(&self) -> usize {
        self.size
    }
    /// Patches per side, `G`.
    pub fn grid(&self) -> usize {
        self.grid
    }
    /// Number of hidden patches.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The hidden patches of one sample, `G²` flags in row-major patch order.
    pub fn draw(&self, rng: &mut Rng) -> Vec<bool> {
        let n = self.grid * self.grid;
        let mut order: Vec<u32> = (0..n as u32).collect();
        rng.shuffle(&mut order);
        let mut mask = vec![false; n];
        for &i in &order[..self.count] {
            mask[i as usize] = true;
        }
        mask
    }
}

/// Normalises one flattened patch (see the module doc) into `out`.
fn normalise_patch(src: &[u8], out: &mut [f32]) {
    let n = src.len() as u64;
    if n < 2 {
        out.fill(0.0);
        return;
    }
    let (sum, sumsq) = src.iter().fold((0u64, 0u64), |(s, q), &v| {
        let v = u64::from(v);
        (s + v, q + v * v)
    });
    // Unbiased variance · n(n−1) = n·Σx² − (Σx)², exact in integers; then to [0, 1] units.
    let num = (u128::from(n) * u128::from(sumsq)).saturating_sub(u128::from(sum) * u128::from(sum));
    let var = num as f64 / (n * (n - 1)) as f64 / (255.0 * 255.0);
    let inv = (1.0 / (var + NORM_EPS).sqrt() / 255.0) as f32;
    let mean = (sum as f64 / n as f64) as f32;
    for (o, &v) in out.iter_mut().zip(src) {
        *o = (f32::from(v) - mean) * inv;
    }
}

impl PretextTask for Mask {
    fn name(&self) -> &'static str {
        TASK
    }

    fn signature(&self) -> Signature {
        let (s, g, p) = (self.size, self.grid, self.patch);
        Signature {
            inputs: vec![
                TensorSpec::new("image", DType::U8, &[3, s, s]),
                TensorSpec::new("mask", DType::U8, &[g, g]),
            ],
            targets: vec![
                TensorSpec::new("patches", DType::F32, &[g * g, p * p * 3]),
                TensorSpec::new("weight", DType::F32, &[g * g]),
            ],
        }
    }

    fn make(&self, image: RgbView<'_>, rng: &mut Rng) -> PretextSample {
        let (s, g, p) = (self.size, self.grid, self.patch);
        draw::check_image(TASK, &image, s);
        let mask = self.draw(rng);
        let plane = s * s;
        let mut input = Vec::with_capacity(3 * plane);
        draw::hwc_to_chw(&image.pixels[..3 * plane], &mut input);
        let d = p * p * 3;
        let mut patches = vec![0f32; g * g * d];
        let mut flat = vec![0u8; d];
        for (k, out) in patches.chunks_exact_mut(d).enumerate() {
            let (y0, x0) = ((k / g) * p, (k % g) * p);
            for yy in 0..p {
                let src = ((y0 + yy) * s + x0) * 3;
                flat[yy * p * 3..(yy + 1) * p * 3].copy_from_slice(&image.pixels[src..src + p * 3]);
            }
            normalise_patch(&flat, out);
            if mask[k] {
                for (c, plane_px) in input.chunks_exact_mut(plane).enumerate() {
                    for yy in 0..p {
                        let row = (y0 + yy) * s + x0;
                        plane_px[row..row + p].fill(FILL[c]);
                    }
                }
            }
        }
        PretextSample {
            inputs: vec![
                TensorData::U8(input),
                TensorData::U8(mask.iter().map(|&m| u8::from(m)).collect()),
            ],
            targets: vec![
                TensorData::F32(patches),
                TensorData::F32(mask.iter().map(|&m| f32::from(u8::from(m))).collect()),
            ],
        }
    }

    /// Three panels: the network's image (hidden patches filled) with the patch grid; the
    /// original; the reconstruction target of the hidden patches (normalised pixels shown as
    /// `128 + 48 · value`; visible patches dark).
    fn preview(&self, image: RgbView<'_>, sample: &PretextSample) -> (usize, usize, Vec<u8>) {
        let (s, g, p) = (self.size, self.grid, self.patch);
        let gap = 4;
        let mut c = Canvas::new(3 * s + 4 * gap, s + 2 * gap, draw::BACKGROUND);
        c.blit_chw(gap, gap, s, s, draw::u8s(sample.inputs.first()));
        for k in 1..g {
            c.fill_rect(gap + k * p, gap, 1, s, draw::GREY);
            c.fill_rect(gap, gap + k * p, s, 1, draw::GREY);
        }
        if image.pixels.len() >= 3 * s * s {
            c.blit_hwc(2 * gap + s, gap, s, s, &image.pixels[..3 * s * s]);
        }
        let mask = draw::u8s(sample.inputs.get(1));
        let targets = draw::f32s(sample.targets.first());
        let d = p * p * 3;
        let x0 = 3 * gap + 2 * s;
        for (k, &m) in mask.iter().enumerate().take(g * g) {
            let Some(t) = targets.get(k * d..(k + 1) * d) else {
                break;
            };
            if m == 0 {
                continue;
            }
            let (y, x) = ((k / g) * p, (k % g) * p);
            let hwc: Vec<u8> = t
                .iter()
                .map(|&v| (128.0 + 48.0 * v).clamp(0.0, 255.0) as u8)
                .collect();
            c.blit_hwc(x0 + x, gap + y, p, p, &hwc);
        }
        c.into_parts()
    }
}

impl TaskSettings for MaskConfig {}

/// Training: the dense decoder predicts the whole image (`[3, S, S]`) from the masked one; the
/// per-patch targets are laid back onto the image grid so one decoder serves inpainting and
/// masked patches alike, and masked L2 counts the masked patches only.
impl TrainingContract for Mask {
    fn training(&self, net: &NetworkContext<'_>) -> Result<Training, PretextError> {
        Training::image_reconstruction(net.encoder, self.size)
    }

    /// `images` ← pixels; `targets` ← per-patch normalised pixels (`[G², p²·3]` in (row, column,
    /// channel) order) laid out as `[3, S, S]`; `mask` ← patch weight spread over its pixels.
    fn fill(
        &self,
        sample: &PretextSample,
        at: Slot,
        norm: &PixelNorm,
        dst: &mut dyn BatchInputs,
    ) -> Result<(), TrainError> {
        let (s, p) = (self.size, self.patch);
        feed::images(&sample.inputs, at, s * s, norm, dst)?;
        let targets = &sample.targets;
        let g = s / p;
        let patches = feed::f32s(targets, 0, "target")?;
        let weight = feed::f32s(targets, 1, "target")?;
        let d = feed::slot(
            dst.input_f32_mut(TARGETS_INPUT)?,
            at,
            3 * s * s,
            TARGETS_INPUT,
        )?;
        if patches.len() != g * g * p * p * 3 || weight.len() != g * g {
            return Err(TrainError::Spec(format!(
                "mask targets have {} patch values and {} weights, expected {} and {}",
                patches.len(),
                weight.len(),
                g * g * p * p * 3,
                g * g
            )));
        }
        for (k, patch_values) in patches.chunks_exact(p * p * 3).enumerate() {
            let (y0, x0) = ((k / g) * p, (k % g) * p);
            for (j, &v) in patch_values.iter().enumerate() {
                let (yy, xx, c) = (j / (p * 3), (j / 3) % p, j % 3);
                d[c * s * s + (y0 + yy) * s + x0 + xx] = v;
            }
        }
        let m = feed::slot(dst.input_f32_mut(MASK_INPUT)?, at, s * s, MASK_INPUT)?;
        for (k, &w) in weight.iter().enumerate() {
            let (y0, x0) = ((k / g) * p, (k % g) * p);
            for yy in 0..p {
                m[(y0 + yy) * s + x0..(y0 + yy) * s + x0 + p].fill(w);
            }
        }
        Ok(())
    }

    fn baseline(&self, batch: usize) -> Baseline {
        Baseline::channel_means(3, batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretext::feed::IMAGES;
    use crate::pretext::feed::host::{Host, zeros};
    use crate::pretext::test_support::{check_signature_and_preview, noise_image, view};

    #[test]
    fn exactly_the_requested_ratio_is_hidden_and_targets_are_the_original() {
        for (s, patch, ratio, want) in [
            (96, 16, 0.75, 27),
            (32, 16, 0.75, 3),
            (64, 8, 0.5, 32),
            (96, 32, 0.1, 1),
        ] {
            let img = noise_image(s, s as u64 + 400);
            let task = MaskConfig { patch, ratio }.build(s).unwrap();
            assert_eq!(task.count(), want);
            let g = s / patch;
            let mut rng = Rng::new(7);
            let mask = task.draw(&mut rng.clone());
            let out = task.make(view(s, &img), &mut rng);
            let (TensorData::U8(input), TensorData::U8(m)) = (&out.inputs[0], &out.inputs[1])
            else {
                panic!()
            };
            let (TensorData::F32(targets), TensorData::F32(w)) = (&out.targets[0], &out.targets[1])
            else {
                panic!()
            };
            assert_eq!(m.iter().filter(|&&v| v == 1).count(), want);
            assert_eq!(m, &mask.iter().map(|&b| u8::from(b)).collect::<Vec<_>>());
            assert_eq!(
                w,
                &mask
                    .iter()
                    .map(|&b| if b { 1.0 } else { 0.0 })
                    .collect::<Vec<f32>>()
            );
            let plane = s * s;
            let d = patch * patch * 3;
            for y in 0..s {
                for x in 0..s {
                    let k = (y / patch) * g + x / patch;
                    for c in 0..3 {
                        let orig = img[(y * s + x) * 3 + c];
                        let expect = if mask[k] { FILL[c] } else { orig };
                        assert_eq!(input[c * plane + y * s + x], expect);
                    }
                }
            }
            for k in 0..g * g {
                // Un-normalise the target with the patch's own moments and compare to the pixels.
                let raw: Vec<f64> = (0..d)
                    .map(|i| {
                        let (yy, xx, c) = (i / (patch * 3), (i / 3) % patch, i % 3);
                        f64::from(img[(((k / g) * patch + yy) * s + (k % g) * patch + xx) * 3 + c])
                            / 255.0
                    })
                    .collect();
                let mean = raw.iter().sum::<f64>() / d as f64;
                let var = raw.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (d - 1) as f64;
                let std = (var + NORM_EPS).sqrt();
                for (i, r) in raw.iter().enumerate() {
                    let back = f64::from(targets[k * d + i]) * std + mean;
                    assert!(
                        (back - r).abs() < 1e-5,
                        "patch {k} value {i}: {back} vs {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn same_rng_same_sample_other_epoch_other_draw() {
        let s = 64;
        let img = noise_image(s, s as u64 + 400);
        let task = MaskConfig::default().build(s).unwrap();
        let a = task.make(view(s, &img), &mut Rng::for_sample(8, "k", 0));
        assert_eq!(a, task.make(view(s, &img), &mut Rng::for_sample(8, "k", 0)));
        assert_ne!(a, task.make(view(s, &img), &mut Rng::for_sample(8, "k", 1)));
    }

    #[test]
    fn all_sizes_run_and_sizes_that_do_not_fit_are_refused() {
        for (s, patch) in [(32, 16), (64, 16), (96, 16), (255, 15), (255, 17)] {
            let img = noise_image(s, s as u64 + 400);
            let task = MaskConfig {
                patch,
                ..Default::default()
            }
            .build(s)
            .unwrap();
            let out = task.make(view(s, &img), &mut Rng::new(1));
            check_signature_and_preview(&task, view(s, &img), &out);
        }
        let err = |c: MaskConfig, s| c.build(s).unwrap_err().to_string();
        let e = err(MaskConfig::default(), 255);
        assert!(
            e.contains("patch sizes that fit: 1, 3, 5, 15, 17, 51, 85"),
            "{e}"
        );
        let e = err(
            MaskConfig {
                patch: 0,
                ..Default::default()
            },
            96,
        );
        assert!(e.contains("patch 0"), "{e}");
        let e = err(
            MaskConfig {
                patch: 32,
                ratio: 0.99,
            },
            64,
        );
        assert!(
            e.contains("hides 4 of the 4 patches") && e.contains("1..=3"),
            "{e}"
        );
        let e = err(
            MaskConfig {
                patch: 16,
                ratio: 0.0,
            },
            64,
        );
        assert!(e.contains("hides 0 of the 16"), "{e}");
        let e = err(
            MaskConfig {
                patch: 16,
                ratio: f32::NAN,
            },
            64,
        );
        assert!(e.contains("ratio NaN"), "{e}");
        let e = err(
            MaskConfig {
                patch: 64,
                ratio: 0.5,
            },
            64,
        );
        assert!(e.contains("at least 2x2"), "{e}");
    }

    #[test]
    fn config_parses_from_toml() {
        let c: MaskConfig = toml::from_str("patch = 8\nratio = 0.6").unwrap();
        assert_eq!(
            c,
            MaskConfig {
                patch: 8,
                ratio: 0.6
            }
        );
        assert_eq!(
            toml::from_str::<MaskConfig>("").unwrap(),
            MaskConfig::default()
        );
        assert!(toml::from_str::<MaskConfig>("mask_ratio = 0.6").is_err());
    }

    #[test]
    fn mae_patches_are_laid_back_onto_the_image_grid_with_their_weights() {
        let (s, p) = (4, 2);
        let task = MaskConfig {
            patch: p,
            ..Default::default()
        }
        .build(s)
        .unwrap();
        let mut host = Host(vec![
            (IMAGES, zeros(&[2, 3, s, s])),
            (TARGETS_INPUT, zeros(&[2, 3, s, s])),
            (MASK_INPUT, zeros(&[2, 1, s, s])),
        ]);
        // Patch k, value j of (row, column, channel) order: 100k + j.
        let patches: Vec<f32> = (0..4)
            .flat_map(|k| (0..12).map(move |j| (100 * k + j) as f32))
            .collect();
        let sample = PretextSample {
            inputs: vec![
                TensorData::U8(vec![0; 3 * s * s]),
                TensorData::U8(vec![0; 4]),
            ],
            targets: vec![
                TensorData::F32(patches),
                TensorData::F32(vec![1.0, 0.0, 0.0, 1.0]),
            ],
        };
        let norm = PixelNorm {
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let slot = Slot { index: 1, batch: 2 };
        task.fill(&sample, slot, &norm, &mut host).unwrap();
        let t = host.input_f32_mut(TARGETS_INPUT).unwrap()[3 * s * s..].to_vec();
        // Pixel (y=3, x=2) is in patch 3 (bottom right) at (yy=1, xx=0); channel 2: j = 1·6 + 0·3 + 2.
        assert_eq!(t[2 * s * s + 3 * s + 2], 308.0);
        // Pixel (y=0, x=1), patch 0, (0, 1), channel 0: j = 3.
        assert_eq!(t[1], 3.0);
        let m = host.input_f32_mut(MASK_INPUT).unwrap()[s * s..].to_vec();
        assert_eq!(
            m,
            [
                1., 1., 0., 0., 1., 1., 0., 0., 0., 0., 1., 1., 0., 0., 1., 1.
            ]
        );
        assert!(
            host.input_f32_mut(MASK_INPUT).unwrap()[..s * s]
                .iter()
                .all(|&v| v == 0.0)
        );

        // The masked-L2 baseline: predicting each channel's weighted mean.
        let mut b = task.baseline(2);
        b.add(2, &mut host).unwrap();
        let (mut num, mut den) = (0.0, 0.0);
        for c in 0..3 {
            let vals: Vec<f64> = (0..s * s)
                .filter(|&j| m[j] > 0.0)
                .map(|j| f64::from(t[c * s * s + j]))
                .collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            num += vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>();
            den += vals.len() as f64;
        }
        assert!((b.loss().unwrap() - num / den).abs() < 1e-9);
    }
}
