//! Inpainting / context encoders (Pathak et al. 2016): part of the image is hidden behind the
//! mean pixel and the network must paint it back from the context around it.
//!
//! Guarantees:
//! - Output: input `image` U8 `[3, S, S]` — the image with every hole pixel set to the ImageNet
//!   mean pixel ×255, [`FILL`] = (124, 116, 104); targets `pixels` U8 `[3, S, S]` (the original
//!   image, untouched) and `weight` F32 `[1, S, S]`, the per-pixel weight of the reconstruction
//!   loss.
//! - Weights, exactly: `0` for every pixel outside the hole; `overlap_weight` for a hole pixel
//!   whose chessboard (Chebyshev) distance to the nearest visible pixel is at most `overlap` —
//!   the `overlap` outermost rings of the hole, where it meets the context (the image border is
//!   not a hole edge); `1` for every other hole pixel. For the canonical centre hole of side `h`
//!   at offset `o = (S − h) / 2`, that band is the hole pixels with
//!   `min(y − o, o + h − 1 − y, x − o, o + h − 1 − x) < overlap`, i.e. `h² − (h − 2·overlap)²`
//!   pixels. (Pathak et al. instead fill a hole shrunk by the overlap and weight the visible ring
//!   around it; here the band is inside the filled hole, as the issue specifies.)
//! - Masks: `center` — one `hole × hole` square in the middle (canonical: S = 128, hole 64), no
//!   randomness; `random_squares` — `squares` squares of side `hole` at uniform positions (they may
//!   overlap, as in the paper's random-block variant), drawn as (row, column) per square;
//!   `random_region` — a random blob: smooth value noise (two octaves, on 4×4 then 8×8 cell
//!   lattices: 25 then 81 uniform draws) of which exactly `round(region_fraction · S²)` pixels
//!   with the highest values form the hole (ties by lowest pixel index), so the area is exact.
//! - All arithmetic on the noise is IEEE `+ − × ÷` on `f32`, so masks are bit-identical everywhere.

use serde::{Deserialize, Serialize};

use super::baseline::Baseline;
use super::draw::{self, Canvas};
use super::training::{
    DrawPredictions, NetworkContext, PixelNorm, Slot, Training, TrainingContract,
};
use super::{
    DType, PretextError, PretextSample, PretextTask, RgbView, Signature, TaskSettings, TensorData,
    TensorSpec, feed,
};
use crate::rng::Rng;
use crate::train::loss::{MASK_INPUT, TARGETS_INPUT};
use crate::train::{BatchInputs, TrainError};

const TASK: &str = "inpaint";

/// The dataset mean pixel (ImageNet mean × 255, rounded) that fills the hole.
pub const FILL: [u8; 3] = [124, 116, 104];

/// Shape of the hidden part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskKind {
    /// One central square (Pathak et al.'s main setting).
    Center,
    /// Several squares at random positions.
    RandomSquares,
    /// A random blob of a given area.
    RandomRegion,
}

/// TOML configuration of the inpainting task (`[pretext] kind = "inpaint"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InpaintConfig {
    /// `center`, `random_squares` or `random_region`.
    pub mask: MaskKind,
    /// Side of the hole (`center`, default `S / 2`) or of each square (`random_squares`, default
    /// `S / 4`, so that the default 4 squares hide at most a quarter of the image, as in the
    /// paper). Not used by `random_region`.
    pub hole: Option<usize>,
    /// Width in pixels of the band just inside the hole's edge that is weighted more.
    pub overlap: usize,
    /// Loss weight of that band (the rest of the hole weighs 1).
    pub overlap_weight: f32,
    /// Number of squares (`random_squares`).
    pub squares: usize,
    /// Fraction of the image's pixels the blob covers (`random_region`).
    pub region_fraction: f32,
}

impl Default for InpaintConfig {
    fn default() -> Self {
        InpaintConfig {
            mask: MaskKind::Center,
            hole: None,
            overlap: 4,
            overlap_weight: 10.0,
            squares: 4,
            region_fraction: 0.25,
        }
    }
}

fn invalid(message: String) -> PretextError {
    PretextError::Invalid {
        task: TASK,
        message,
    }
}

impl InpaintConfig {
    /// Validates against the working image size `size` and returns the task.
    pub fn build(&self, size: usize) -> Result<Inpaint, PretextError> {
        if size < 2 {
            return Err(invalid(format!(
                "the working image size {size} px leaves no context; 2 px or more fit"
            )));
        }
        if !(self.overlap_weight.is_finite() && self.overlap_weight >= 0.0) {
            return Err(invalid(format!(
                "overlap_weight must be a finite number >= 0, got {}",
                self.overlap_weight
            )));
        }
        let hole = match self.mask {
            MaskKind::Center => self.hole.unwrap_or(size / 2),
            MaskKind::RandomSquares => self.hole.unwrap_or((size / 4).max(1)),
            MaskKind::RandomRegion => 0,
        };
        if self.mask != MaskKind::RandomRegion && !(1..size).contains(&hole) {
            return Err(invalid(format!(
                "hole {hole} px must leave context around it in the {size} px image; holes of 1..={} px fit",
                size - 1
            )));
        }
        if self.mask == MaskKind::RandomSquares && self.squares == 0 {
            return Err(invalid("squares must be at least 1".into()));
        }
        let mut area = 0;
        if self.mask == MaskKind::RandomRegion {
            let n = size * size;
            area = (f64::from(self.region_fraction) * n as f64).round() as usize;
            if !(self.region_fraction.is_finite() && (1..n).contains(&area)) {
                return Err(invalid(format!(
                    "region_fraction {} of a {size}x{size} image hides {area} pixels; fractions that hide 1..={} pixels fit (between {:.6} and {:.6})",
                    self.region_fraction,
                    n - 1,
                    0.5 / n as f64,
                    (n as f64 - 1.5) / n as f64
                )));
            }
        }
        let mut task = Inpaint {
            size,
            kind: self.mask,
            hole,
            overlap: self.overlap,
            overlap_weight: self.overlap_weight,
            squares: self.squares,
            area,
            fixed: None,
        };
        if self.mask == MaskKind::Center {
            // The centre mask never changes: compute it and its weights once.
            let mask = task.mask(&mut Rng::new(0));
            let weight = task.weights(&mask);
            task.fixed = Some((mask, weight));
        }
        Ok(task)
    }
}

/// The inpainting task, built by [`InpaintConfig::build`].
#[derive(Debug, Clone)]
pub struct Inpaint {
    size: usize,
    kind: MaskKind,
    hole: usize,
    overlap: usize,
    overlap_weight: f32,
    squares: usize,
    area: usize,
    /// Mask and weights of the centre hole, computed at build time.
    fixed: Option<(Vec<bool>, Vec<f32>)>,
}

/// Smoothstep: zero slope at lattice points, so the noise has no visible grid creases.
fn fade(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

impl Inpaint {
    pub fn size(&self) -> usize {
        self.size
    }

    /// The hole of one sample, `S × S` row-major, `true` = hidden. Draws from `rng` as described
    /// in the module doc (nothing for `center`).
    pub fn mask(&self, rng: &mut Rng) -> Vec<bool> {
        let s = self.size;
        let mut mask = vec![false; s * s];
        let mut square = |y: usize, x: usize, h: usize| {
            for row in mask[y * s..(y + h) * s].chunks_exact_mut(s) {
                row[x..x + h].fill(true);
            }
        };
        match self.kind {
            MaskKind::Center => {
                let o = (s - self.hole) / 2;
                square(o, o, self.hole);
            }
            MaskKind::RandomSquares => {
                for _ in 0..self.squares {
                    let y = rng.index(s - self.hole + 1);
                    let x = rng.index(s - self.hole + 1);
                    square(y, x, self.hole);
                }
            }
            MaskKind::RandomRegion => {
                let field = self.noise(rng);
                // Highest values first, ties by lowest index: non-negative f32 bits order like
                // the values, so one u64 key per pixel is unique and totally ordered.
                let mut keys: Vec<u64> = field
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (u64::from(!v.to_bits()) << 32) | i as u64)
                    .collect();
                let k = self.area.min(keys.len());
                if k > 0 {
                    keys.select_nth_unstable(k - 1);
                    for &key in &keys[..k] {
                        mask[(key & 0xFFFF_FFFF) as usize] = true;
                    }
                }
            }
        }
        mask
    }

    /// Smooth non-negative value noise over the image: two octaves (lattices of 4 and 8 cells per
    /// side, the finer at half amplitude), bilinear with smoothstep.
    fn noise(&self, rng: &mut Rng) -> Vec<f32> {
        let s = self.size;
        let mut field = vec![0f32; s * s];
        for (cells, amp) in [(4usize, 1.0f32), (8, 0.5)] {
            let n = cells + 1;
            let lattice: Vec<f32> = (0..n * n).map(|_| rng.uniform_f32() * amp).collect();
            // Per-column cell index and fade weight, computed once per octave.
            let coord = |i: usize| {
                let u = (i as f32 + 0.5) * cells as f32 / s as f32;
                let c = (u as usize).min(cells - 1);
                (c, fade(u - c as f32))
            };
            let cols: Vec<(usize, f32)> = (0..s).map(coord).collect();
            for y in 0..s {
                let (cy, fy) = coord(y);
                let row = &mut field[y * s..(y + 1) * s];
                for (v, &(cx, fx)) in row.iter_mut().zip(&cols) {
                    let l = |r: usize, c: usize| lattice[r * n + c];
                    let top = l(cy, cx) + (l(cy, cx + 1) - l(cy, cx)) * fx;
                    let bot = l(cy + 1, cx) + (l(cy + 1, cx + 1) - l(cy + 1, cx)) * fx;
                    *v += top + (bot - top) * fy;
                }
            }
        }
        field
    }

    /// Loss weights for a mask (see the module doc), via an exact two-pass chessboard distance
    /// transform from the visible pixels.
    pub fn weights(&self, mask: &[bool]) -> Vec<f32> {
        let s = self.size;
        const FAR: u32 = u32::MAX / 2;
        let mut d: Vec<u32> = mask.iter().map(|&m| if m { FAR } else { 0 }).collect();
        for y in 0..s {
            for x in 0..s {
                let mut v = d[y * s + x];
                if v == 0 {
                    continue;
                }
                if x > 0 {
                    v = v.min(d[y * s + x - 1] + 1);
                }
                if y > 0 {
                    let up = (y - 1) * s;
                    v = v.min(d[up + x] + 1);
                    if x > 0 {
                        v = v.min(d[up + x - 1] + 1);
                    }
                    if x + 1 < s {
                        v = v.min(d[up + x + 1] + 1);
                    }
                }
                d[y * s + x] = v;
            }
        }
        for y in (0..s).rev() {
            for x in (0..s).rev() {
                let mut v = d[y * s + x];
                if v == 0 {
                    continue;
                }
                if x + 1 < s {
                    v = v.min(d[y * s + x + 1] + 1);
                }
                if y + 1 < s {
                    let down = (y + 1) * s;
                    v = v.min(d[down + x] + 1);
                    if x > 0 {
                        v = v.min(d[down + x - 1] + 1);
                    }
                    if x + 1 < s {
                        v = v.min(d[down + x + 1] + 1);
                    }
                }
                d[y * s + x] = v;
            }
        }
        let band = self.overlap as u32;
        d.iter()
            .map(|&v| match v {
                0 => 0.0,
                v if v <= band => self.overlap_weight,
                _ => 1.0,
            })
            .collect()
    }
}

impl PretextTask for Inpaint {
    fn name(&self) -> &'static str {
        TASK
    }

    fn signature(&self) -> Signature {
        let s = self.size;
        Signature {
            inputs: vec![TensorSpec::new("image", DType::U8, &[3, s, s])],
            targets: vec![
                TensorSpec::new("pixels", DType::U8, &[3, s, s]),
                TensorSpec::new("weight", DType::F32, &[1, s, s]),
            ],
        }
    }

    fn make(&self, image: RgbView<'_>, rng: &mut Rng) -> PretextSample {
        let s = self.size;
        draw::check_image(TASK, &image, s);
        let mut pixels = Vec::with_capacity(3 * s * s);
        draw::hwc_to_chw(&image.pixels[..3 * s * s], &mut pixels);
        let (mask, weight) = match &self.fixed {
            Some((m, w)) => (std::borrow::Cow::Borrowed(m), w.clone()),
            None => {
                let m = self.mask(rng);
                let w = self.weights(&m);
                (std::borrow::Cow::Owned(m), w)
            }
        };
        let mut input = pixels.clone();
        for (c, plane) in input.chunks_exact_mut(s * s).enumerate() {
            for (p, &m) in plane.iter_mut().zip(mask.iter()) {
                if m {
                    *p = FILL[c];
                }
            }
        }
        PretextSample {
            inputs: vec![TensorData::U8(input)],
            targets: vec![TensorData::U8(pixels), TensorData::F32(weight)],
        }
    }

    /// Four panels: the network's input (hole filled); the original; the hole's content (the
    /// original where the weight is non-zero, dark elsewhere); the weight map (black 0, grey 1,
    /// white `overlap_weight`).
    fn preview(&self, image: RgbView<'_>, sample: &PretextSample) -> (usize, usize, Vec<u8>) {
        let s = self.size;
        let gap = 4;
        let mut c = Canvas::new(4 * s + 5 * gap, s + 2 * gap, draw::BACKGROUND);
        c.blit_chw(gap, gap, s, s, draw::u8s(sample.inputs.first()));
        if image.pixels.len() >= 3 * s * s {
            c.blit_hwc(2 * gap + s, gap, s, s, &image.pixels[..3 * s * s]);
        }
        let original = draw::u8s(sample.targets.first());
        let weight = draw::f32s(sample.targets.get(1));
        if original.len() >= 3 * s * s && weight.len() >= s * s {
            let plane = s * s;
            for (i, &w) in weight.iter().take(plane).enumerate() {
                let (x, y) = (i % s, i / s);
                if w > 0.0 {
                    let px = [original[i], original[plane + i], original[2 * plane + i]];
                    c.put(3 * gap + 2 * s + x, gap + y, px);
                }
                let shade = if w <= 0.0 {
                    0
                } else if w == 1.0 {
                    128
                } else if w > 1.0 {
                    255
                } else {
                    64
                };
                c.put(4 * gap + 3 * s + x, gap + y, [shade; 3]);
            }
        }
        c.into_parts()
    }
}

impl TaskSettings for InpaintConfig {}

/// Training: the dense decoder predicts the image (`[3, S, S]`, normalised like the input) and
/// masked L2 weighs the hole (and its overlap) with the task's `weight` target.
impl TrainingContract for Inpaint {
    fn training(&self, net: &NetworkContext<'_>) -> Result<Training, PretextError> {
        Training::image_reconstruction(net.encoder, self.size)
    }

    /// `images` ← pixels; `targets` ← pixels of target 0 (U8, normalised); `mask` ← target 1.
    fn fill(
        &self,
        sample: &PretextSample,
        at: Slot,
        norm: &PixelNorm,
        dst: &mut dyn BatchInputs,
    ) -> Result<(), TrainError> {
        let plane = self.size * self.size;
        feed::images(&sample.inputs, at, plane, norm, dst)?;
        let px = feed::u8s(&sample.targets, 0, "target")?;
        let d = feed::slot(
            dst.input_f32_mut(TARGETS_INPUT)?,
            at,
            px.len(),
            TARGETS_INPUT,
        )?;
        feed::normalise_into(d, px, plane, norm);
        let w = feed::f32s(&sample.targets, 1, "target")?;
        feed::slot(dst.input_f32_mut(MASK_INPUT)?, at, w.len(), MASK_INPUT)?.copy_from_slice(w);
        Ok(())
    }

    fn baseline(&self, batch: usize) -> Baseline {
        Baseline::channel_means(3, batch)
    }

    fn predictions(&self) -> Option<&dyn DrawPredictions> {
        Some(self)
    }
}

/// The holed input, and the input with the prediction where the loss looks.
impl DrawPredictions for Inpaint {
    fn panels(
        &self,
        sample: &PretextSample,
        pred: &[f32],
        at: Slot,
        batch: &mut dyn BatchInputs,
        norm: &PixelNorm,
    ) -> Result<(Vec<u8>, Vec<u8>), TrainError> {
        let s = self.size;
        let plane = s * s;
        let Some(TensorData::U8(chw)) = sample.inputs.first() else {
            return Ok((vec![0; 3 * plane], vec![0; 3 * plane]));
        };
        let mask = &batch.input_f32_mut(MASK_INPUT)?[at.index * plane..(at.index + 1) * plane];
        let mut seen = vec![0u8; 3 * plane];
        let mut filled = vec![0u8; 3 * plane];
        for j in 0..plane {
            for c in 0..3 {
                let v = chw[c * plane + j];
                seen[j * 3 + c] = v;
                filled[j * 3 + c] = if mask[j] > 0.0 {
                    let x = (pred[c * plane + j] * norm.std[c] + norm.mean[c]) * 255.0;
                    x.round().clamp(0.0, 255.0) as u8
                } else {
                    v
                };
            }
        }
        Ok((seen, filled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretext::test_support::{check_signature_and_preview, noise_image, view};

    fn parts(out: &PretextSample) -> (&[u8], &[u8], &[f32]) {
        match (&out.inputs[0], &out.targets[0], &out.targets[1]) {
            (TensorData::U8(i), TensorData::U8(p), TensorData::F32(w)) => (i, p, w),
            _ => panic!("unexpected tensor types"),
        }
    }

    /// Checks the invariants every mask kind shares, given the mask the sample used.
    fn check_sample(task: &Inpaint, img: &[u8], out: &PretextSample, mask: &[bool]) {
        let s = task.size;
        let plane = s * s;
        let (input, pixels, weight) = parts(out);
        let mut chw = Vec::new();
        draw::hwc_to_chw(img, &mut chw);
        assert_eq!(pixels, &chw[..], "target is the original image");
        for i in 0..plane {
            for c in 0..3 {
                let expect = if mask[i] { FILL[c] } else { chw[c * plane + i] };
                assert_eq!(input[c * plane + i], expect);
            }
            assert_eq!(
                weight[i] > 0.0,
                mask[i],
                "weight non-zero exactly in the hole"
            );
        }
        // Weights against a brute-force chessboard distance to the nearest visible pixel.
        for y in 0..s {
            for x in 0..s {
                if !mask[y * s + x] {
                    continue;
                }
                let dist = (0..s * s)
                    .filter(|&j| !mask[j])
                    .map(|j| (j / s).abs_diff(y).max((j % s).abs_diff(x)))
                    .min()
                    .unwrap_or(usize::MAX);
                let expect = if dist <= task.overlap {
                    task.overlap_weight
                } else {
                    1.0
                };
                assert_eq!(
                    weight[y * s + x],
                    expect,
                    "pixel ({y}, {x}) at distance {dist}"
                );
            }
        }
    }

    #[test]
    fn center_hole_is_exact() {
        for s in [32, 64, 96, 128] {
            let img = noise_image(s, s as u64 + 300);
            let task = InpaintConfig::default().build(s).unwrap();
            let out = task.make(view(s, &img), &mut Rng::new(1));
            let mask = task.mask(&mut Rng::new(0));
            let h = s / 2;
            let o = (s - h) / 2;
            for y in 0..s {
                for x in 0..s {
                    let inside = (o..o + h).contains(&y) && (o..o + h).contains(&x);
                    assert_eq!(mask[y * s + x], inside);
                }
            }
            let (_, _, w) = parts(&out);
            assert_eq!(w.iter().filter(|&&v| v > 0.0).count(), h * h);
            assert_eq!(
                w.iter().filter(|&&v| v == 10.0).count(),
                h * h - (h - 8) * (h - 8)
            );
            if s <= 64 {
                check_sample(&task, &img, &out, &mask);
            }
        }
    }

    #[test]
    fn random_squares_cover_the_union_of_the_drawn_squares() {
        let s = 48;
        let img = noise_image(s, s as u64 + 300);
        let cfg = InpaintConfig {
            mask: MaskKind::RandomSquares,
            ..InpaintConfig::default()
        };
        let task = cfg.build(s).unwrap();
        for seed in 0..5 {
            let mut rng = Rng::new(seed);
            // Redraw the squares by hand from the same stream.
            let mut by_hand = vec![false; s * s];
            let mut r2 = rng.clone();
            for _ in 0..4 {
                let (y, x) = (r2.index(s - 12 + 1), r2.index(s - 12 + 1));
                for yy in y..y + 12 {
                    for xx in x..x + 12 {
                        by_hand[yy * s + xx] = true;
                    }
                }
            }
            let mask = task.mask(&mut rng.clone());
            assert_eq!(mask, by_hand);
            let area = mask.iter().filter(|&&m| m).count();
            assert!((144..=4 * 144).contains(&area));
            let out = task.make(view(s, &img), &mut rng);
            check_sample(&task, &img, &out, &mask);
        }
    }

    #[test]
    fn random_region_has_the_exact_area() {
        for (s, frac) in [(32, 0.25f32), (40, 0.1), (64, 0.5)] {
            let img = noise_image(s, s as u64 + 300);
            let task = InpaintConfig {
                mask: MaskKind::RandomRegion,
                region_fraction: frac,
                ..InpaintConfig::default()
            }
            .build(s)
            .unwrap();
            for seed in 0..3 {
                let mut rng = Rng::new(seed);
                let mask = task.mask(&mut rng.clone());
                let want = (f64::from(frac) * (s * s) as f64).round() as usize;
                assert_eq!(mask.iter().filter(|&&m| m).count(), want);
                let out = task.make(view(s, &img), &mut rng);
                if s <= 40 {
                    check_sample(&task, &img, &out, &mask);
                }
            }
        }
    }

    #[test]
    fn random_region_is_a_few_blobs_not_noise() {
        // Smooth noise thresholded: the hole's boundary is short compared with scattered pixels.
        let s = 96;
        let task = InpaintConfig {
            mask: MaskKind::RandomRegion,
            ..InpaintConfig::default()
        }
        .build(s)
        .unwrap();
        let mask = task.mask(&mut Rng::new(4));
        let edges = (0..s)
            .flat_map(|y| (1..s).map(move |x| (y, x)))
            .filter(|&(y, x)| mask[y * s + x] != mask[y * s + x - 1])
            .count();
        // A single disc of the same area (≈ 2304 px, radius 27) has about 2·(2·27) = 108
        // horizontal edges; scattered pixels would have thousands.
        assert!(edges < 600, "{edges} edges");
    }

    #[test]
    fn same_rng_same_sample_other_epoch_other_draw() {
        let s = 64;
        let img = noise_image(s, s as u64 + 300);
        for mask in [MaskKind::RandomSquares, MaskKind::RandomRegion] {
            let task = InpaintConfig {
                mask,
                ..InpaintConfig::default()
            }
            .build(s)
            .unwrap();
            let a = task.make(view(s, &img), &mut Rng::for_sample(5, "k", 0));
            assert_eq!(a, task.make(view(s, &img), &mut Rng::for_sample(5, "k", 0)));
            assert_ne!(a, task.make(view(s, &img), &mut Rng::for_sample(5, "k", 1)));
        }
    }

    #[test]
    fn all_sizes_run_and_sizes_that_do_not_fit_are_refused() {
        for s in [32, 64, 96, 255] {
            let img = noise_image(s, s as u64 + 300);
            for mask in [
                MaskKind::Center,
                MaskKind::RandomSquares,
                MaskKind::RandomRegion,
            ] {
                let task = InpaintConfig {
                    mask,
                    ..InpaintConfig::default()
                }
                .build(s)
                .unwrap();
                let out = task.make(view(s, &img), &mut Rng::new(2));
                check_signature_and_preview(&task, view(s, &img), &out);
            }
        }
        let err = |c: InpaintConfig, s| c.build(s).unwrap_err().to_string();
        let e = err(
            InpaintConfig {
                hole: Some(96),
                ..Default::default()
            },
            96,
        );
        assert!(e.contains("holes of 1..=95 px fit"), "{e}");
        let e = err(
            InpaintConfig {
                mask: MaskKind::RandomSquares,
                squares: 0,
                ..Default::default()
            },
            96,
        );
        assert!(e.contains("squares must be at least 1"), "{e}");
        let e = err(
            InpaintConfig {
                mask: MaskKind::RandomRegion,
                region_fraction: 1.0,
                ..Default::default()
            },
            32,
        );
        assert!(
            e.contains("hides 1024 pixels") && e.contains("1..=1023"),
            "{e}"
        );
        let e = err(
            InpaintConfig {
                overlap_weight: f32::NAN,
                ..Default::default()
            },
            32,
        );
        assert!(e.contains("overlap_weight"), "{e}");
        assert!(InpaintConfig::default().build(1).is_err());
    }

    #[test]
    fn config_parses_from_toml() {
        let c: InpaintConfig =
            toml::from_str("mask = \"random_region\"\nregion_fraction = 0.3").unwrap();
        assert_eq!(c.mask, MaskKind::RandomRegion);
        assert!(toml::from_str::<InpaintConfig>("mask = \"blob\"").is_err());
        assert!(toml::from_str::<InpaintConfig>("holes = 3").is_err());
        assert_eq!(
            toml::from_str::<InpaintConfig>("").unwrap(),
            InpaintConfig::default()
        );
    }
}
