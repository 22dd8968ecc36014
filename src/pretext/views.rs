//! Two-view contrastive pretext task (SimCLR, Chen et al. 2020): two independently augmented
//! views of the same image; the contrastive loss pairs the views within the batch, so there is
//! no per-sample target.
//!
//! What it is for: the augmentation pipeline of SimCLR, in Rust, on the worker thread that
//! decoded the image — random resized crop, horizontal flip, colour jitter (in random order),
//! random greyscale, Gaussian blur — without a Python round trip.
//!
//! What it guarantees:
//! - Tensors: input `views` U8 `[2, 3, O, O]` (view, channel, row, column; RGB), `O` = `out_size`
//!   (default: the working size); no targets.
//! - torchvision semantics, step by step: `RandomResizedCrop` (area fraction uniform in
//!   `crop_scale`, aspect ratio log-uniform in `crop_ratio`, 10 tries, then the centre-crop
//!   fallback), `RandomHorizontalFlip`, `ColorJitter` (brightness/contrast/saturation factors
//!   uniform in `[max(0, 1−s), 1+s]`, hue shift uniform in `[−h, h]` turns done in HSV, the four
//!   applied in a random order, each clamped to [0, 1]), `RandomGrayscale` (ITU-R 601 luma
//!   0.2989/0.587/0.114 on all three channels), `GaussianBlur` (kernel `int(0.1·O)` made odd,
//!   σ uniform in `blur_sigma`, reflect padding, separable).
//! - Between the crop and the final 8-bit output the view stays in f32, so the chain of colour
//!   operations is not re-quantised at every step (like torchvision on float tensors).
//! - The resize is a separable triangle ("bilinear") filter whose support widens when the crop is
//!   shrunk (like PIL/`fast_image_resize` bilinear: no aliasing when `O` < crop), written here so
//!   its arithmetic is fixed.
//! - Determinism: all randomness comes from the `Rng` passed to `make`, drawn in a fixed order
//!   (view 1, then view 2; per view: crop, flip, jitter, greyscale, blur); the arithmetic uses
//!   only IEEE `+ − × ÷`, `sqrt` and the hand-written `rng::ln` and `lab::exp` (no libm), so
//!   the same Rng state gives bit-identical views on every machine.
//! - Config values are validated by [`ViewsConfig::build`]; `make` never panics.

use serde::{Deserialize, Serialize};

use super::baseline::Baseline;
use super::lab;
use super::training::{NetworkContext, PixelNorm, Slot, Training, TrainingContract};
use super::{
    DType, PretextError, PretextSample, PretextTask, RgbView, Signature, TaskSettings, TensorData,
    TensorSpec, feed, heads,
};
use crate::rng::{self, Rng};
use crate::train::{BatchInputs, InputLayout, Loss, TrainError};

const TASK: &str = "views";

/// ITU-R BT.601 luma weights, as torchvision's `rgb_to_grayscale`.
const LUMA: [f32; 3] = [0.2989, 0.587, 0.114];

/// `[pretext.views]` in a pipeline TOML. Defaults are SimCLR's ImageNet augmentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ViewsConfig {
    /// Range of the crop's area as a fraction of the image: `0 < lo ≤ hi ≤ 1`.
    pub crop_scale: [f32; 2],
    /// Range of the crop's aspect ratio (width / height), sampled log-uniformly: `0 < lo ≤ hi`.
    pub crop_ratio: [f32; 2],
    /// Probability of a horizontal flip.
    pub flip_prob: f32,
    /// Colour jitter strengths: brightness, contrast, saturation (≥ 0), hue (in turns, ≤ 0.5).
    pub jitter: [f32; 4],
    /// Probability that colour jitter is applied.
    pub jitter_prob: f32,
    /// Probability of converting the view to greyscale.
    pub grayscale_prob: f32,
    /// Probability of a Gaussian blur.
    pub blur_prob: f32,
    /// Range of the blur's σ, in output pixels: `0 < lo ≤ hi`.
    pub blur_sigma: [f32; 2],
    /// Side of each view; default (`None`): the working size. At most 4096.
    pub out_size: Option<usize>,
}

impl Default for ViewsConfig {
    fn default() -> Self {
        Self {
            crop_scale: [0.08, 1.0],
            crop_ratio: [0.75, 1.333],
            flip_prob: 0.5,
            jitter: [0.8, 0.8, 0.8, 0.2],
            jitter_prob: 0.8,
            grayscale_prob: 0.2,
            blur_prob: 0.5,
            blur_sigma: [0.1, 2.0],
            out_size: None,
        }
    }
}

impl ViewsConfig {
    /// Validates the config against the working size and builds the task. All problems are
    /// reported at once.
    pub fn build(&self, size: usize) -> Result<Views, PretextError> {
        let mut problems = Vec::new();
        if size == 0 {
            problems.push("the working size must be at least 1".to_string());
        }
        let out = self.out_size.unwrap_or(size);
        if !(1..=4096).contains(&out) {
            problems.push(format!("out_size must be within [1, 4096], found {out}"));
        }
        let [s0, s1] = self.crop_scale;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            problems.push(format!(
                "crop_scale must satisfy 0 < lo <= hi <= 1, found [{s0}, {s1}]"
            ));
        }
        let [r0, r1] = self.crop_ratio;
        if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
            problems.push(format!(
                "crop_ratio must satisfy 0 < lo <= hi, found [{r0}, {r1}]"
            ));
        }
        for (name, p) in [
            ("flip_prob", self.flip_prob),
            ("jitter_prob", self.jitter_prob),
            ("grayscale_prob", self.grayscale_prob),
            ("blur_prob", self.blur_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                problems.push(format!("{name} must be within [0, 1], found {p}"));
            }
        }
        for (name, s) in ["brightness", "contrast", "saturation"]
            .iter()
            .zip(self.jitter)
        {
            if !(s.is_finite() && s >= 0.0) {
                problems.push(format!("jitter {name} must be >= 0, found {s}"));
            }
        }
        if !(0.0..=0.5).contains(&self.jitter[3]) {
            problems.push(format!(
                "jitter hue must be within [0, 0.5] turns, found {}",
                self.jitter[3]
            ));
        }
        let [b0, b1] = self.blur_sigma;
        if !(b0 > 0.0 && b0 <= b1 && b1.is_finite()) {
            problems.push(format!(
                "blur_sigma must satisfy 0 < lo <= hi, found [{b0}, {b1}]"
            ));
        }
        if !problems.is_empty() {
            return Err(PretextError::Invalid {
                task: TASK,
                message: problems.join("; "),
            });
        }
        Ok(Views {
            config: self.clone(),
            size,
            out,
        })
    }
}

/// The built task: immutable, shared by all workers.
#[derive(Debug, Clone)]
pub struct Views {
    config: ViewsConfig,
    size: usize,
    out: usize,
}

impl Views {
    pub fn config(&self) -> &ViewsConfig {
        &self.config
    }

    /// Side of each view.
    pub fn out_size(&self) -> usize {
        self.out
    }

    /// One augmented view of the `size×size` HWC image, written as CHW bytes into `dst`
    /// (`3·O²`).
    fn view(&self, pixels: &[u8], rng: &mut Rng, dst: &mut [u8], scratch: &mut Scratch) {
        let c = &self.config;
        let (s, o) = (self.size, self.out);
        let crop = random_resized_crop(s, s, c.crop_scale, c.crop_ratio, rng);
        let flip = rng.bernoulli(f64::from(c.flip_prob));
        resize_crop(pixels, s, crop, o, flip, scratch);
        let planes = &mut scratch.planes;

        if rng.bernoulli(f64::from(c.jitter_prob)) {
            let mut order = [0usize, 1, 2, 3];
            rng.shuffle(&mut order);
            let factor = |rng: &mut Rng, strength: f32| {
                let lo = (1.0 - f64::from(strength)).max(0.0);
                let hi = 1.0 + f64::from(strength);
                (lo + (hi - lo) * rng.uniform_f64()) as f32
            };
            let brightness = factor(rng, c.jitter[0]);
            let contrast = factor(rng, c.jitter[1]);
            let saturation = factor(rng, c.jitter[2]);
            let h = f64::from(c.jitter[3]);
            let hue = (-h + 2.0 * h * rng.uniform_f64()) as f32;
            // A strength of 0 disables the operation (torchvision skips it; the draws above
            // still happen so the stream does not depend on which strengths are zero).
            for op in order {
                match op {
                    0 if c.jitter[0] > 0.0 => adjust_brightness(planes, brightness),
                    1 if c.jitter[1] > 0.0 => adjust_contrast(planes, contrast),
                    2 if c.jitter[2] > 0.0 => adjust_saturation(planes, saturation),
                    3 if c.jitter[3] > 0.0 => adjust_hue(planes, hue),
                    _ => {}
                }
            }
        }
        if rng.bernoulli(f64::from(c.grayscale_prob)) {
            to_grayscale(planes);
        }
        if rng.bernoulli(f64::from(c.blur_prob)) {
            let [lo, hi] = c.blur_sigma.map(f64::from);
            let sigma = lo + (hi - lo) * rng.uniform_f64();
            gaussian_blur(planes, o, blur_kernel_size(o), sigma, &mut scratch.tmp);
        }
        for (d, v) in dst.iter_mut().zip(scratch.planes.iter()) {
            // Round to nearest (ties to even) by adding 2²³, where the f32 spacing is exactly 1,
            // and reading the integer from the low mantissa bits: plain float and bit operations
            // that vectorise, unlike Rust's saturating `as u8` (3× faster here). NaN gives 0.
            let x = (v * 255.0).clamp(0.0, 255.0);
            *d = (x + 8_388_608.0).to_bits() as u8;
        }
    }
}

/// Per-thread working memory of [`Views::view`], reused from sample to sample so a steady
/// stream allocates (and page-faults) nothing; released when it grows past [`KEEP_SCRATCH`].
#[derive(Default)]
struct Scratch {
    /// The view being built: three `o×o` f32 planes.
    planes: Vec<f32>,
    /// The resize's horizontal-pass output, then the blur's intermediate plane.
    tmp: Vec<f32>,
}

/// Scratch larger than this (bytes) is dropped after use (a huge `out_size` must not pin
/// memory in every worker for the rest of the run).
const KEEP_SCRATCH: usize = 16 << 20;

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

impl PretextTask for Views {
    fn name(&self) -> &'static str {
        TASK
    }

    fn signature(&self) -> Signature {
        let o = self.out;
        Signature {
            inputs: vec![TensorSpec::new("views", DType::U8, &[2, 3, o, o])],
            targets: vec![],
        }
    }

    fn make(&self, image: RgbView<'_>, rng: &mut Rng) -> PretextSample {
        let pixels = image.conformed(self.size);
        let per_view = 3 * self.out * self.out;
        let mut views = vec![0u8; 2 * per_view];
        let (first, second) = views.split_at_mut(per_view);
        let mut run = |scratch: &mut Scratch| {
            self.view(&pixels, rng, first, scratch);
            self.view(&pixels, rng, second, scratch);
        };
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => {
                run(&mut scratch);
                if (scratch.planes.capacity() + scratch.tmp.capacity()) * 4 > KEEP_SCRATCH {
                    *scratch = Scratch::default();
                }
            }
            // Only reachable if `make` were re-entered on this thread; correct, just not reused.
            Err(_) => run(&mut Scratch::default()),
        });
        PretextSample {
            inputs: vec![TensorData::U8(views)],
            targets: vec![],
        }
    }

    /// original | view 1 | view 2, top-aligned, 2 white pixels apart.
    fn preview(&self, image: RgbView<'_>, sample: &PretextSample) -> (usize, usize, Vec<u8>) {
        let (s, o) = (self.size, self.out);
        let per_view = 3 * o * o;
        let fresh;
        let views = match sample.inputs.first() {
            Some(TensorData::U8(v)) if v.len() == 2 * per_view => v,
            _ => {
                // Not a sample of this task: show two views drawn from a fixed stream instead.
                fresh = self.make(image, &mut Rng::new(0));
                match fresh.inputs.first() {
                    Some(TensorData::U8(v)) => v,
                    _ => return (0, 0, Vec::new()),
                }
            }
        };
        const GAP: usize = 2;
        let width = s + 2 * (o + GAP);
        let height = s.max(o);
        let mut canvas = vec![255u8; width * height * 3];
        let original = image.conformed(s);
        for y in 0..s {
            canvas[y * width * 3..][..s * 3].copy_from_slice(&original[y * s * 3..][..s * 3]);
        }
        for (k, chw) in views.chunks_exact(per_view).enumerate() {
            let x0 = s + GAP + k * (o + GAP);
            for y in 0..o {
                for x in 0..o {
                    let dst = ((y * width) + x0 + x) * 3;
                    for c in 0..3 {
                        canvas[dst + c] = chw[c * o * o + y * o + x];
                    }
                }
            }
        }
        (width, height, canvas)
    }
}

// --- Random resized crop -------------------------------------------------------------------------

/// A crop rectangle in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// torchvision's `RandomResizedCrop.get_params`: up to 10 tries of an area fraction uniform in
/// `scale` and an aspect ratio log-uniform in `ratio`; the first that fits is placed uniformly.
/// If none fits, the fallback is a centre crop of the whole image, cut down to the nearest
/// allowed aspect ratio. Always returns a non-empty box inside the image (for a non-empty image).
/// Rounding is half away from zero (Python's `round` is half-to-even; only exact halves differ).
pub fn random_resized_crop(
    width: usize,
    height: usize,
    scale: [f32; 2],
    ratio: [f32; 2],
    rng: &mut Rng,
) -> CropBox {
    let area = (width * height) as f64;
    let [s0, s1] = scale.map(f64::from);
    let [r0, r1] = ratio.map(f64::from);
    let (log_r0, log_r1) = (rng::ln(r0), rng::ln(r1));
    for _ in 0..10 {
        let target = area * (s0 + (s1 - s0) * rng.uniform_f64());
        let aspect = lab::exp(log_r0 + (log_r1 - log_r0) * rng.uniform_f64());
        let w = (target * aspect).sqrt().round();
        let h = (target / aspect).sqrt().round();
        // NaN (from a degenerate ratio) fails these comparisons and falls through to the fallback.
        if w > 0.0 && w <= width as f64 && h > 0.0 && h <= height as f64 {
            let (w, h) = (w as usize, h as usize);
            let top = rng.index(height - h + 1);
            let left = rng.index(width - w + 1);
            return CropBox {
                top,
                left,
                height: h,
                width: w,
            };
        }
    }
    let in_ratio = width as f64 / height.max(1) as f64;
    let (w, h) = if in_ratio < r0 {
        (
            width,
            ((width as f64 / r0).round() as usize).clamp(1, height.max(1)),
        )
    } else if in_ratio > r1 {
        (
            ((height as f64 * r1).round() as usize).clamp(1, width.max(1)),
            height,
        )
    } else {
        (width, height)
    };
    CropBox {
        top: height.saturating_sub(h) / 2,
        left: width.saturating_sub(w) / 2,
        height: h,
        width: w,
    }
}

// --- Resize --------------------------------------------------------------------------------------

/// Per output sample of one axis: first source index, number of taps, filter weights.
struct AxisFilter {
    start: Vec<usize>,
    count: Vec<usize>,
    /// `taps` weights per output sample (the first `count` are used).
    weights: Vec<f32>,
    taps: usize,
}

/// Triangle-filter weights mapping `len` source samples (from `offset`) onto `out` samples,
/// PIL's convolution resampling: the filter is stretched by the shrink factor when shrinking,
/// so every source pixel contributes (no aliasing); taps outside the crop are dropped and the
/// rest renormalised (edge handling of crop-then-resize). `scale_by` multiplies every weight.
fn axis_filter(offset: usize, len: usize, out: usize, scale_by: f64) -> AxisFilter {
    let scale = len as f64 / out as f64;
    let stretch = scale.max(1.0);
    let support = stretch; // triangle radius 1, in source pixels
    let taps = (support.ceil() as usize) * 2 + 1;
    let mut start = Vec::with_capacity(out);
    let mut count = Vec::with_capacity(out);
    let mut weights = vec![0.0f32; out * taps];
    let mut w: Vec<f64> = Vec::with_capacity(taps);
    for o in 0..out {
        let center = (o as f64 + 0.5) * scale;
        let mut lo = ((center - support + 0.5).floor().max(0.0)) as usize;
        let hi = ((center + support + 0.5).floor() as usize).min(len);
        w.clear();
        w.extend((lo..hi).take(taps).map(|x| {
            let t = (x as f64 - center + 0.5) / stretch;
            (1.0 - t.abs()).max(0.0)
        }));
        // Drop zero-weight taps at both ends (the triangle's feet), so loops skip them.
        while w.last() == Some(&0.0) {
            w.pop();
        }
        let lead = w.iter().take_while(|&&x| x == 0.0).count();
        w.drain(..lead);
        lo += lead;
        let total: f64 = w.iter().sum();
        let row = &mut weights[o * taps..][..taps];
        if total > 0.0 {
            for (dst, wk) in row.iter_mut().zip(w.iter()) {
                *dst = (wk / total * scale_by) as f32;
            }
            count.push(w.len());
        } else {
            // Cannot happen for len ≥ 1 (the nearest source pixel always has weight); kept so
            // that no input leaves an output without a source.
            row[0] = scale_by as f32;
            count.push(1);
        }
        start.push(offset + lo.min(len.saturating_sub(1)));
    }
    AxisFilter {
        start,
        count,
        weights,
        taps,
    }
}

/// Crops `crop` out of the `s×s` HWC image and resizes it to `o×o`, optionally mirrored, into
/// `scratch.planes`: three f32 planes in [0, 1] (CHW, `3·o²`).
fn resize_crop(
    pixels: &[u8],
    s: usize,
    crop: CropBox,
    o: usize,
    flip: bool,
    scratch: &mut Scratch,
) {
    let mut fx = axis_filter(crop.left, crop.width, o, 1.0 / 255.0);
    let fy = axis_filter(crop.top, crop.height, o, 1.0);
    if flip {
        // Mirroring = the output columns in reverse order.
        fx.start.reverse();
        fx.count.reverse();
        let taps = fx.taps;
        let mut rev = vec![0.0f32; fx.weights.len()];
        for (dst, src) in rev
            .chunks_exact_mut(taps)
            .zip(fx.weights.chunks_exact(taps).rev())
        {
            dst.copy_from_slice(src);
        }
        fx.weights = rev;
    }
    // Horizontal pass over the crop's rows: `tmp` is [3][crop.height][o].
    let rows = crop.height;
    let tmp = &mut scratch.tmp;
    tmp.clear();
    tmp.resize(3 * rows * o, 0.0);
    for r in 0..rows {
        let y = (crop.top + r).min(s - 1);
        let row = &pixels[y * s * 3..][..s * 3];
        for x in 0..o {
            let n = fx.count[x];
            let w = &fx.weights[x * fx.taps..][..n];
            // Taps stay inside the crop, hence inside the row.
            let src = &row[fx.start[x] * 3..][..n * 3];
            let mut acc = [0.0f32; 3];
            for (&wk, px) in w.iter().zip(src.chunks_exact(3)) {
                acc[0] += wk * f32::from(px[0]);
                acc[1] += wk * f32::from(px[1]);
                acc[2] += wk * f32::from(px[2]);
            }
            for c in 0..3 {
                tmp[(c * rows + r) * o + x] = acc[c];
            }
        }
    }
    // Vertical pass: each output row is a weighted sum of whole rows of `tmp` (vectorisable).
    let planes = &mut scratch.planes;
    planes.clear();
    planes.resize(3 * o * o, 0.0);
    for c in 0..3 {
        let src = &tmp[c * rows * o..][..rows * o];
        for y in 0..o {
            let dst = &mut planes[(c * o + y) * o..][..o];
            let w = &fy.weights[y * fy.taps..][..fy.count[y]];
            for (k, &wk) in w.iter().enumerate() {
                let r = (fy.start[y] - crop.top + k).min(rows - 1);
                for (d, &v) in dst.iter_mut().zip(&src[r * o..][..o]) {
                    *d += wk * v;
                }
            }
        }
    }
}

// --- Colour operations (on three f32 planes in [0, 1]) -------------------------------------------

fn split3(planes: &mut [f32]) -> (&mut [f32], &mut [f32], &mut [f32]) {
    let n = planes.len() / 3;
    let (r, rest) = planes.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    (r, g, &mut b[..n])
}

/// `v · f`, clamped.
fn adjust_brightness(planes: &mut [f32], f: f32) {
    for v in planes.iter_mut() {
        *v = (*v * f).clamp(0.0, 1.0);
    }
}

/// Blend with the mean grey level of the view: `f·v + (1 − f)·mean`, clamped.
fn adjust_contrast(planes: &mut [f32], f: f32) {
    let (r, g, b) = split3(planes);
    let mut sum = 0.0f64;
    for i in 0..r.len() {
        sum += f64::from(LUMA[0] * r[i] + LUMA[1] * g[i] + LUMA[2] * b[i]);
    }
    let mean = (sum / r.len().max(1) as f64) as f32;
    let offset = (1.0 - f) * mean;
    for v in planes.iter_mut() {
        *v = (f * *v + offset).clamp(0.0, 1.0);
    }
}

/// Blend each pixel with its own grey level: `f·v + (1 − f)·grey`, clamped.
fn adjust_saturation(planes: &mut [f32], f: f32) {
    let (r, g, b) = split3(planes);
    for i in 0..r.len() {
        let grey = (1.0 - f) * (LUMA[0] * r[i] + LUMA[1] * g[i] + LUMA[2] * b[i]);
        r[i] = (f * r[i] + grey).clamp(0.0, 1.0);
        g[i] = (f * g[i] + grey).clamp(0.0, 1.0);
        b[i] = (f * b[i] + grey).clamp(0.0, 1.0);
    }
}

/// Rotates the hue by `shift` turns in HSV, as torchvision's `adjust_hue` (RGB → HSV, h + shift
/// mod 1, HSV → RGB), in a branch-free form that vectorises (≈5× faster than the textbook
/// per-pixel code, which the tests keep as the reference):
/// - with V = max, C = max − min (= V·S), the hue in sextants H = (g − b)/C, 2 + (b − r)/C or
///   4 + (r − g)/C, depending on which channel is the largest;
/// - HSV → RGB as `V − C·clamp(min(k, 4 − k), 0, 1)` with `k = (n + H) mod 6`, n = 5, 3, 1 for
///   R, G, B (the standard closed form). Greys (C = 0) have no hue and are left as they are.
fn adjust_hue(planes: &mut [f32], shift: f32) {
    let (r, g, b) = split3(planes);
    let shift6 = shift * 6.0;
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let (rr, gg, bb) = (*r, *g, *b);
        let v = rr.max(gg).max(bb);
        let c = v - rr.min(gg).min(bb);
        let inv = 1.0 / if c > 0.0 { c } else { 1.0 };
        let h = if v == rr {
            (gg - bb) * inv
        } else if v == gg {
            2.0 + (bb - rr) * inv
        } else {
            4.0 + (rr - gg) * inv
        };
        // h ∈ [−1, 5], shift6 ∈ [−3, 3]: one wrap brings it into [0, 6].
        let h = h + shift6;
        let h = if h < 0.0 {
            h + 6.0
        } else if h >= 6.0 {
            h - 6.0
        } else {
            h
        };
        let channel = |n: f32| {
            let k = n + h;
            let k = if k >= 6.0 { k - 6.0 } else { k };
            v - c * k.min(4.0 - k).clamp(0.0, 1.0)
        };
        *r = channel(5.0);
        *g = channel(3.0);
        *b = channel(1.0);
    }
}

/// Luma on all three channels (R = G = B).
fn to_grayscale(planes: &mut [f32]) {
    let (r, g, b) = split3(planes);
    for i in 0..r.len() {
        let y = LUMA[0] * r[i] + LUMA[1] * g[i] + LUMA[2] * b[i];
        r[i] = y;
        g[i] = y;
        b[i] = y;
    }
}

// --- Gaussian blur -------------------------------------------------------------------------------

/// SimCLR's kernel: 10 % of the view side, made odd (`int(0.1·o)`, +1 if even): 9 at 96 px,
/// 23 at 224 px.
pub fn blur_kernel_size(o: usize) -> usize {
    (o / 10) | 1
}

/// Reflect padding index (torchvision's "reflect": −1 → 1, n → n − 2) for any offset.
fn reflect(i: isize, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m < n as isize { m } else { period - m }) as usize
}

/// Separable Gaussian blur of three `o×o` planes, kernel `k` (odd), reflect padding; `tmp` is
/// working memory.
fn gaussian_blur(planes: &mut [f32], o: usize, k: usize, sigma: f64, tmp: &mut Vec<f32>) {
    let radius = k / 2;
    if radius == 0 || o == 0 {
        return;
    }
    let mut total = 0.0f64;
    let raw: Vec<f64> = (0..k)
        .map(|i| {
            let x = i as f64 - radius as f64;
            let w = lab::exp(-0.5 * (x / sigma) * (x / sigma));
            total += w;
            w
        })
        .collect();
    let kernel: Vec<f32> = raw.iter().map(|w| (w / total) as f32).collect();

    let mut padded = vec![0.0f32; o + 2 * radius];
    tmp.clear();
    tmp.resize(o * o, 0.0);
    for plane in planes.chunks_exact_mut(o * o) {
        // Horizontal: each row copied with reflected borders (only the borders need `reflect`),
        // then tap-outer accumulation over contiguous slices.
        for y in 0..o {
            let row = &plane[y * o..][..o];
            padded[radius..radius + o].copy_from_slice(row);
            for j in 0..radius {
                padded[j] = row[reflect(j as isize - radius as isize, o)];
                padded[radius + o + j] = row[reflect((o + j) as isize, o)];
            }
            let dst = &mut tmp[y * o..][..o];
            dst.fill(0.0);
            for (t, &w) in kernel.iter().enumerate() {
                for (d, &v) in dst.iter_mut().zip(&padded[t..t + o]) {
                    *d += w * v;
                }
            }
        }
        // Vertical: each output row is a weighted sum of reflected rows of `tmp`.
        for y in 0..o {
            let dst = &mut plane[y * o..][..o];
            dst.fill(0.0);
            for (t, &w) in kernel.iter().enumerate() {
                let sy = reflect(y as isize + t as isize - radius as isize, o);
                for (d, &v) in dst.iter_mut().zip(&tmp[sy * o..][..o]) {
                    *d += w * v;
                }
            }
        }
    }
}

// --- Helpers -------------------------------------------------------------------------------------

impl TaskSettings for ViewsConfig {}

/// Training (SimCLR): both views go through the encoder, a projection MLP maps the pooled features
/// to [`heads::PROJECTION`] dimensions, and NT-Xent pulls the two views of an image together
/// against the other `2B − 2` views of the batch. No targets are fed.
impl TrainingContract for Views {
    fn training(&self, net: &NetworkContext<'_>) -> Result<Training, PretextError> {
        Ok(Training {
            input: InputLayout::Views { count: 2 },
            in_channels: 3,
            head: heads::mlp(heads::PROJECTION),
            loss: Loss::NtXent {
                temperature: net.temperature,
            },
        })
    }

    fn fill(
        &self,
        sample: &PretextSample,
        slot: Slot,
        norm: &PixelNorm,
        dst: &mut dyn BatchInputs,
    ) -> Result<(), TrainError> {
        feed::images(&sample.inputs, slot, self.out * self.out, norm, dst)
    }

    /// Chance of picking the other view among the `2B − 1` other rows.
    fn baseline(&self, batch: usize) -> Baseline {
        Baseline::chance(2 * batch - 1, batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A textured, colourful test image (deterministic).
    fn test_image(s: usize) -> Vec<u8> {
        let mut px = Vec::with_capacity(s * s * 3);
        for y in 0..s {
            for x in 0..s {
                let (fx, fy) = (x as f32 / s as f32, y as f32 / s as f32);
                let checker = if (x / 4 + y / 4) % 2 == 0 { 40.0 } else { 0.0 };
                px.push((200.0 * fx + checker) as u8);
                px.push((220.0 * fy) as u8);
                px.push((127.0 + 120.0 * (9.0 * fx).sin() * (5.0 * fy).cos()) as u8);
            }
        }
        px
    }

    fn view_of(px: &[u8], s: usize) -> RgbView<'_> {
        RgbView {
            width: s,
            height: s,
            pixels: px,
        }
    }

    fn views(sample: &PretextSample) -> &[u8] {
        match &sample.inputs[0] {
            TensorData::U8(v) => v,
            other => panic!("{other:?}"),
        }
    }

    /// torchvision's `_rgb2hsv`, transcribed literally: the reference for `adjust_hue`.
    fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
        let maxc = r.max(g).max(b);
        let minc = r.min(g).min(b);
        let eqc = maxc == minc;
        let cr = maxc - minc;
        let s = cr / if eqc { 1.0 } else { maxc };
        let cr_divisor = if eqc { 1.0 } else { cr };
        let rc = (maxc - r) / cr_divisor;
        let gc = (maxc - g) / cr_divisor;
        let bc = (maxc - b) / cr_divisor;
        let hr = if maxc == r { bc - gc } else { 0.0 };
        let hg = if maxc == g && maxc != r {
            2.0 + rc - bc
        } else {
            0.0
        };
        let hb = if maxc != g && maxc != r {
            4.0 + gc - rc
        } else {
            0.0
        };
        let h = ((hr + hg + hb) / 6.0 + 1.0) % 1.0;
        (h, s, maxc)
    }

    /// torchvision's `_hsv2rgb`, transcribed literally.
    fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [f32; 3] {
        let i = (h * 6.0).floor();
        let f = h * 6.0 - i;
        let i = (i as i32).rem_euclid(6);
        let p = (v * (1.0 - s)).clamp(0.0, 1.0);
        let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
        let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
        match i {
            0 => [v, t, p],
            1 => [q, v, p],
            2 => [p, v, t],
            3 => [p, q, v],
            4 => [t, p, v],
            _ => [v, p, q],
        }
    }

    fn reference_hue(rgb: [f32; 3], shift: f32) -> [f32; 3] {
        let (h, s, v) = rgb_to_hsv(rgb[0], rgb[1], rgb[2]);
        hsv_to_rgb((h + shift).rem_euclid(1.0), s, v)
    }

    fn identity() -> ViewsConfig {
        ViewsConfig {
            crop_scale: [1.0, 1.0],
            crop_ratio: [1.0, 1.0],
            flip_prob: 0.0,
            jitter_prob: 0.0,
            grayscale_prob: 0.0,
            blur_prob: 0.0,
            ..Default::default()
        }
    }

    fn hwc_to_chw(px: &[u8], s: usize) -> Vec<u8> {
        let mut out = vec![0u8; px.len()];
        for i in 0..s * s {
            for c in 0..3 {
                out[c * s * s + i] = px[i * 3 + c];
            }
        }
        out
    }

    #[test]
    fn two_views_differ_and_same_rng_is_identical() {
        let s = 96;
        let px = test_image(s);
        let task = ViewsConfig::default().build(s).unwrap();
        let a = task.make(view_of(&px, s), &mut Rng::for_sample(1, "img", 0));
        let b = task.make(view_of(&px, s), &mut Rng::for_sample(1, "img", 0));
        assert_eq!(a, b);
        let v = views(&a);
        assert_eq!(v.len(), 2 * 3 * s * s);
        let (v1, v2) = v.split_at(3 * s * s);
        assert_ne!(v1, v2);
        let c = task.make(view_of(&px, s), &mut Rng::for_sample(1, "img", 1));
        assert_ne!(a, c);
        assert!(a.targets.is_empty());
        let sig = task.signature();
        assert_eq!(sig.inputs[0].shape, vec![2, 3, s, s]);
        assert_eq!(sig.inputs[0].dtype, DType::U8);
        assert!(sig.targets.is_empty());
    }

    #[test]
    fn identity_config_reproduces_the_image_and_flip_mirrors_it() {
        let s = 32;
        let px = test_image(s);
        let task = identity().build(s).unwrap();
        let out = task.make(view_of(&px, s), &mut Rng::new(0));
        let chw = hwc_to_chw(&px, s);
        assert_eq!(&views(&out)[..3 * s * s], chw.as_slice());
        assert_eq!(&views(&out)[3 * s * s..], chw.as_slice());
        let flipped = ViewsConfig {
            flip_prob: 1.0,
            ..identity()
        }
        .build(s)
        .unwrap()
        .make(view_of(&px, s), &mut Rng::new(0));
        let v = views(&flipped);
        for c in 0..3 {
            for y in 0..s {
                for x in 0..s {
                    assert_eq!(v[(c * s + y) * s + x], chw[(c * s + y) * s + (s - 1 - x)]);
                }
            }
        }
    }

    #[test]
    fn crop_params_follow_torchvision() {
        let mut rng = Rng::new(5);
        for _ in 0..2000 {
            let c = random_resized_crop(96, 64, [0.08, 1.0], [0.75, 1.333], &mut rng);
            assert!(c.width >= 1 && c.height >= 1);
            assert!(c.left + c.width <= 96 && c.top + c.height <= 64, "{c:?}");
            let area = (c.width * c.height) as f64 / (96.0 * 64.0);
            let ratio = c.width as f64 / c.height as f64;
            // Within the ranges up to rounding to whole pixels (or the full-image fallback).
            let fallback = c.width == 96 || c.height == 64;
            assert!(fallback || (0.06..=1.0).contains(&area), "{c:?}");
            assert!(fallback || (0.6..=1.6).contains(&ratio), "{c:?}");
        }
    }

    #[test]
    fn crop_falls_back_to_the_centre_when_nothing_fits() {
        let mut rng = Rng::new(9);
        // A 2:1..3:1 crop covering the whole area never fits a square: centre crop at ratio 2.
        let c = random_resized_crop(96, 96, [1.0, 1.0], [2.0, 3.0], &mut rng);
        assert_eq!(
            c,
            CropBox {
                top: 24,
                left: 0,
                height: 48,
                width: 96
            }
        );
        // Tall ratios: full height, width cut to the largest allowed ratio.
        let c = random_resized_crop(96, 96, [1.0, 1.0], [0.25, 0.4], &mut rng);
        assert_eq!(
            c,
            CropBox {
                top: 0,
                left: 29,
                height: 96,
                width: 38
            }
        );
        // In range but too large: the whole image.
        let c = random_resized_crop(50, 40, [1.0, 1.0], [0.5, 2.0], &mut rng);
        assert!(c.width <= 50 && c.height <= 40);
        // The task itself with such a config does not panic.
        let px = test_image(32);
        let task = ViewsConfig {
            crop_scale: [1.0, 1.0],
            crop_ratio: [2.0, 3.0],
            ..Default::default()
        }
        .build(32)
        .unwrap();
        task.make(view_of(&px, 32), &mut Rng::new(1));
    }

    #[test]
    fn greyscale_gives_equal_channels() {
        let s = 64;
        let px = test_image(s);
        let task = ViewsConfig {
            grayscale_prob: 1.0,
            jitter_prob: 1.0,
            blur_prob: 1.0,
            ..Default::default()
        }
        .build(s)
        .unwrap();
        for seed in 0..5 {
            let out = task.make(view_of(&px, s), &mut Rng::new(seed));
            for view in views(&out).chunks_exact(3 * s * s) {
                let (r, gb) = view.split_at(s * s);
                let (g, b) = gb.split_at(s * s);
                assert!(r == g && g == b, "seed {seed}");
            }
        }
    }

    #[test]
    fn no_panic_for_usual_sizes_and_output_sizes() {
        for s in [1, 2, 7, 32, 64, 96, 224] {
            let px = test_image(s);
            for out_size in [None, Some(1), Some(32), Some(96)] {
                let task = ViewsConfig {
                    out_size,
                    jitter_prob: 1.0,
                    blur_prob: 1.0,
                    ..Default::default()
                }
                .build(s)
                .unwrap();
                let o = task.out_size();
                for seed in 0..3 {
                    let out = task.make(view_of(&px, s), &mut Rng::new(seed));
                    assert_eq!(views(&out).len(), 2 * 3 * o * o);
                }
                let out = task.make(view_of(&px, s), &mut Rng::new(0));
                let (w, h, canvas) = task.preview(view_of(&px, s), &out);
                assert_eq!((w, h), (s + 2 * (o + 2), s.max(o)));
                assert_eq!(canvas.len(), w * h * 3);
            }
        }
        // A malformed image or sample does not panic either.
        let px = test_image(8);
        let task = ViewsConfig::default().build(32).unwrap();
        let out = task.make(view_of(&px, 8), &mut Rng::new(0));
        assert_eq!(views(&out).len(), 2 * 3 * 32 * 32);
        task.preview(view_of(&px, 8), &PretextSample::default());
    }

    #[test]
    fn downscaling_resize_averages_instead_of_aliasing() {
        // A 1-pixel checkerboard shrunk 4× must come out flat grey, not a moiré of 0s and 255s.
        let s = 64;
        let px: Vec<u8> = (0..s * s)
            .flat_map(|i| {
                let v = if (i % s + i / s) % 2 == 0 { 255 } else { 0 };
                [v, v, v]
            })
            .collect();
        let task = ViewsConfig {
            out_size: Some(16),
            ..identity()
        }
        .build(s)
        .unwrap();
        let out = task.make(view_of(&px, s), &mut Rng::new(0));
        assert!(views(&out).iter().all(|&v| (120..=135).contains(&v)));
    }

    #[test]
    fn colour_operations_match_their_definitions() {
        let rgb = [0.8f32, 0.3, 0.1];
        let mut p = vec![rgb[0], rgb[1], rgb[2]];
        adjust_brightness(&mut p, 0.5);
        assert_eq!(p, vec![0.4, 0.15, 0.05]);
        // HSV round trip and known values.
        for &(r, g, b) in &[
            (0.8f32, 0.3, 0.1),
            (0.0, 0.0, 0.0),
            (0.5, 0.5, 0.5),
            (0.1, 0.9, 0.4),
        ] {
            let (h, s, v) = rgb_to_hsv(r, g, b);
            let back = hsv_to_rgb(h, s, v);
            assert!(
                back.iter()
                    .zip([r, g, b])
                    .all(|(x, y)| (x - y).abs() < 1e-6)
            );
        }
        let (h, _, _) = rgb_to_hsv(0.0, 1.0, 0.0);
        assert!((h - 1.0 / 3.0).abs() < 1e-6);
        // The branch-free hue rotation agrees with the textbook HSV round trip.
        let mut rng = Rng::new(4);
        for _ in 0..20_000 {
            let rgb = [rng.uniform_f32(), rng.uniform_f32(), rng.uniform_f32()];
            let shift = rng.uniform_f32() - 0.5;
            let mut p = rgb.to_vec();
            adjust_hue(&mut p, shift);
            let want = reference_hue(rgb, shift);
            assert!(
                p.iter().zip(want).all(|(x, y)| (x - y).abs() < 2e-6),
                "{rgb:?} {shift}: {p:?} vs {want:?}"
            );
        }
        // A hue shift of 1/3 turn maps red to green.
        let mut p = vec![1.0, 0.0, 0.0];
        adjust_hue(&mut p, 1.0 / 3.0);
        assert!((p[0]).abs() < 1e-5 && (p[1] - 1.0).abs() < 1e-5 && p[2].abs() < 1e-5);
        // Saturation 0 is greyscale; contrast 0 is the mean grey everywhere.
        let mut p = vec![0.8, 0.2, 0.3, 0.1, 0.1, 0.9];
        adjust_saturation(&mut p, 0.0);
        assert!((p[0] - p[2]).abs() < 1e-6 && (p[2] - p[4]).abs() < 1e-6);
        let mut p = vec![0.8, 0.2, 0.3, 0.1, 0.1, 0.9];
        adjust_contrast(&mut p, 0.0);
        assert!(p.iter().all(|v| (v - p[0]).abs() < 1e-6));
        // Blur: a constant stays constant, a spike spreads and keeps its mass.
        let o = 20;
        let mut p = vec![0.5f32; 3 * o * o];
        gaussian_blur(&mut p, o, 5, 1.0, &mut Vec::new());
        assert!(p.iter().all(|v| (v - 0.5).abs() < 1e-6));
        let mut p = vec![0.0f32; 3 * o * o];
        p[10 * o + 10] = 1.0;
        gaussian_blur(&mut p, o, 5, 1.0, &mut Vec::new());
        let mass: f32 = p[..o * o].iter().sum();
        assert!((mass - 1.0).abs() < 1e-5 && p[10 * o + 10] < 0.5 && p[10 * o + 11] > 0.0);
        assert_eq!(blur_kernel_size(96), 9);
        assert_eq!(blur_kernel_size(224), 23);
        assert_eq!(blur_kernel_size(32), 3);
        assert_eq!((reflect(-1, 5), reflect(5, 5), reflect(-7, 5)), (1, 3, 1));
    }

    #[test]
    fn config_validation_and_toml() {
        let cfg: ViewsConfig =
            toml::from_str("crop_scale = [0.2, 1.0]\nout_size = 64\njitter = [0.4, 0.4, 0.4, 0.1]")
                .unwrap();
        assert_eq!(cfg.crop_scale, [0.2, 1.0]);
        assert_eq!(cfg.out_size, Some(64));
        assert_eq!(cfg.blur_prob, 0.5);
        assert_eq!(cfg.build(96).unwrap().out_size(), 64);
        assert!(toml::from_str::<ViewsConfig>("crop = 1").is_err());
        let bad = ViewsConfig {
            crop_scale: [0.5, 0.2],
            crop_ratio: [0.0, 1.0],
            flip_prob: 1.5,
            jitter: [0.8, -1.0, 0.8, 0.7],
            blur_sigma: [0.0, 2.0],
            out_size: Some(0),
            ..Default::default()
        };
        let err = bad.build(96).unwrap_err().to_string();
        for word in [
            "crop_scale",
            "crop_ratio",
            "flip_prob",
            "contrast",
            "hue",
            "blur_sigma",
            "out_size",
        ] {
            assert!(err.contains(word), "{word} missing from: {err}");
        }
        assert!(ViewsConfig::default().build(0).is_err());
        let nan = ViewsConfig {
            crop_ratio: [f32::NAN, 1.0],
            ..Default::default()
        };
        assert!(nan.build(96).is_err());
    }

    /// Writes previews of `data/photos/astronaut.png` (96 px) to the temp dir, for a person to
    /// look at: `cargo test --lib pretext::views::tests::write_previews -- --ignored --nocapture`.
    #[test]
    #[ignore = "writes PNG files for manual inspection"]
    fn write_previews() {
        use crate::decode::{DecodeSettings, Decoder};
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/photos/astronaut.png");
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
        for (i, cfg) in [ViewsConfig::default()].into_iter().enumerate() {
            let task = cfg.build(s).unwrap();
            let sample = task.make(image, &mut Rng::new(42));
            let (w, h, canvas) = task.preview(image, &sample);
            let out = std::env::temp_dir().join(format!("sslpipe_views_{i}.png"));
            image::RgbImage::from_raw(w as u32, h as u32, canvas)
                .unwrap()
                .save(&out)
                .unwrap();
            println!("{}", out.display());
        }
    }
}
