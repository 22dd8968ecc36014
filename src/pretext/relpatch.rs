//! Relative patch location (Doersch et al. 2015): the network gets a centre patch and one of its
//! eight neighbours from a 3×3 arrangement and must say where the neighbour sits — which takes
//! knowing how object parts are laid out.
//!
//! Guarantees:
//! - Geometry: slots of `patch` pixels on a pitch of `patch + gap`; every patch is moved by its own
//!   uniform jitter in `[-jitter, +jitter]` pixels on each axis; the whole arrangement
//!   (`3·patch + 2·gap + 2·jitter` pixels wide) is placed uniformly at random in the `S × S`
//!   image. The gap between two patches is therefore at least `gap − 2·jitter ≥ 0`: patches never
//!   overlap and (with `gap > 2·jitter`) never touch, so edges and lines cannot simply be
//!   continued across — the trivial shortcut Doersch et al. guard against.
//! - Output: input `patches` U8 `[2, 3, P, P]` (centre, neighbour; CHW) and target `label` I64
//!   `[1]` in `0..8`: the neighbour's slot in row-major order skipping the centre
//!   (0 1 2 / 3 · 4 / 5 6 7).
//! - Defaults follow the paper's proportions (96 px patches, 48 px gap, up to 7 px jitter):
//!   `gap = patch / 2`, `jitter = patch · 7 / 96` (rounded down), and `patch` the largest size for
//!   which the arrangement fits in `S` (S = 96 → patch 23, gap 11, jitter 1; S = 255 → 61, 30, 4).
//! - Randomness, in this order: arrangement row, column, label, centre jitter (row, column),
//!   neighbour jitter (row, column).

use serde::{Deserialize, Serialize};

use super::draw::{self, Canvas};
use super::training::Classification;
use super::{
    DType, PretextError, PretextSample, PretextTask, RgbView, Signature, TaskSettings, TensorData,
    TensorSpec,
};
use crate::rng::Rng;
use crate::train::InputLayout;

const TASK: &str = "relpatch";

/// The eight neighbour slots (row, column) in label order.
pub const NEIGHBOURS: [(usize, usize); 8] = [
    (0, 0),
    (0, 1),
    (0, 2),
    (1, 0),
    (1, 2),
    (2, 0),
    (2, 1),
    (2, 2),
];

/// TOML configuration of the relative-patch-location task (`[pretext] kind = "relpatch"`).
/// Every field left out is derived from the image size (see the module doc).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelPatchConfig {
    /// Patch side in pixels.
    pub patch: Option<usize>,
    /// Gap between neighbouring slots in pixels.
    pub gap: Option<usize>,
    /// Largest shift of a patch from its slot, in pixels on each axis (at most `gap / 2`).
    pub jitter: Option<usize>,
}

fn invalid(message: String) -> PretextError {
    PretextError::Invalid {
        task: TASK,
        message,
    }
}

impl RelPatchConfig {
    fn gap_for(&self, patch: usize) -> usize {
        self.gap.unwrap_or(patch / 2)
    }
    fn jitter_for(&self, patch: usize) -> usize {
        self.jitter.unwrap_or(patch * 7 / 96)
    }
    fn extent(&self, patch: usize) -> usize {
        3 * patch + 2 * self.gap_for(patch) + 2 * self.jitter_for(patch)
    }

    /// Validates against the working image size `size` and returns the task.
    pub fn build(&self, size: usize) -> Result<RelPatch, PretextError> {
        let patch = match self.patch {
            Some(0) => return Err(invalid("patch must be at least 1 px".into())),
            Some(p) => p,
            None => (1..=size / 3)
                .rev()
                .find(|&p| self.extent(p) <= size)
                .ok_or_else(|| {
                    invalid(format!(
                        "no patch size fits in the {size} px image with gap {:?} and jitter {:?}: 3·patch + 2·gap + 2·jitter must be at most {size}",
                        self.gap, self.jitter
                    ))
                })?,
        };
        let (gap, jitter) = (self.gap_for(patch), self.jitter_for(patch));
        if 2 * jitter > gap {
            return Err(invalid(format!(
                "jitter {jitter} px could make patches overlap across a {gap} px gap; jitter up to {} px fits",
                gap / 2
            )));
        }
        let extent = 3 * patch + 2 * gap + 2 * jitter;
        if extent > size {
            let room = size.saturating_sub(2 * gap + 2 * jitter) / 3;
            return Err(invalid(format!(
                "3 patches of {patch} px + 2 gaps of {gap} px + 2·{jitter} px jitter = {extent} px do not fit in the {size} px image; {}",
                if room > 0 {
                    format!("with this gap and jitter, patches up to {room} px fit")
                } else {
                    "reduce gap and jitter".to_string()
                }
            )));
        }
        Ok(RelPatch {
            size,
            patch,
            gap,
            jitter,
        })
    }
}

/// The relative-patch-location task, built by [`RelPatchConfig::build`].
#[derive(Debug, Clone)]
pub struct RelPatch {
    size: usize,
    patch: usize,
    gap: usize,
    jitter: usize,
}

/// Top-left corner (row, column) of a patch in the image.
type Corner = (usize, usize);

/// The random choices of one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelPatchDraw {
    /// Top-left corner (row, column) of the arrangement in the image.
    pub origin: (usize, usize),
    /// The neighbour's slot, `0..8` (see [`NEIGHBOURS`]).
    pub label: usize,
    /// Top-left corners (row, column) of the centre and the neighbour patch in the image.
    pub centre: (usize, usize),
    pub neighbour: (usize, usize),
}

impl RelPatch {
    pub fn size(&self) -> usize {
        self.size
    }
    /// `(patch, gap, jitter)` in pixels.
    pub fn geometry(&self) -> (usize, usize, usize) {
        (self.patch, self.gap, self.jitter)
    }

    /// Draws one sample's random choices from `rng`.
    pub fn draw(&self, rng: &mut Rng) -> RelPatchDraw {
        let (p, g, j) = (self.patch, self.gap, self.jitter);
        let span = self.size - (3 * p + 2 * g + 2 * j);
        let origin = (rng.index(span + 1), rng.index(span + 1));
        let label = rng.index(8);
        let place = |(r, c): (usize, usize), rng: &mut Rng| {
            // Slot corner with the jitter margin, then a shift in [0, 2j] = [-j, +j] around it.
            let y = origin.0 + r * (p + g) + rng.index(2 * j + 1);
            let x = origin.1 + c * (p + g) + rng.index(2 * j + 1);
            (y, x)
        };
        let centre = place((1, 1), rng);
        let neighbour = place(NEIGHBOURS[label], rng);
        RelPatchDraw {
            origin,
            label,
            centre,
            neighbour,
        }
    }

    /// Copies the `patch × patch` square at `(y, x)` of the image as CHW into `out`.
    fn cut(&self, image: &RgbView<'_>, (y, x): (usize, usize), out: &mut [u8]) {
        let (s, p) = (self.size, self.patch);
        let plane = p * p;
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for yy in 0..p {
            let src = &image.pixels[((y + yy) * s + x) * 3..((y + yy) * s + x + p) * 3];
            for (k, px) in src.chunks_exact(3).enumerate() {
                let i = yy * p + k;
                (r[i], g[i], b[i]) = (px[0], px[1], px[2]);
            }
        }
    }

    /// Where the centre and the neighbour patch of a sample were cut, found by exact pixel
    /// match, so the preview can outline the real patches without the sample storing positions.
    /// The search is limited to the positions the geometry allows (the centre slot's range, then
    /// the neighbour's slot relative to the centre), so on flat or repetitive images the outlines
    /// still stand where such patches can be; within that, the first match in raster order wins.
    fn locate(
        &self,
        image: &RgbView<'_>,
        centre: &[u8],
        neighbour: &[u8],
        label: usize,
    ) -> (Option<Corner>, Option<Corner>) {
        let (s, p, g, j) = (self.size, self.patch, self.gap, self.jitter);
        let plane = p * p;
        if image.pixels.len() < s * s * 3 || label >= 8 {
            return (None, None);
        }
        let find = |chw: &[u8],
                    ys: std::ops::RangeInclusive<usize>,
                    xs: std::ops::RangeInclusive<usize>| {
            if chw.len() < 3 * plane {
                return None;
            }
            let matches = |y: usize, x: usize| {
                (0..p).all(|yy| {
                    (0..p).all(|xx| {
                        let src = ((y + yy) * s + x + xx) * 3;
                        let i = yy * p + xx;
                        image.pixels[src] == chw[i]
                            && image.pixels[src + 1] == chw[plane + i]
                            && image.pixels[src + 2] == chw[2 * plane + i]
                    })
                })
            };
            ys.into_iter()
                .find_map(|y| xs.clone().find(|&x| matches(y, x)).map(|x| (y, x)))
        };
        let pitch = p + g;
        let span = s - (3 * p + 2 * g + 2 * j);
        // Centre corner = origin + pitch + shift, origin in 0..=span, shift in 0..=2j.
        let range = pitch..=(pitch + span + 2 * j).min(s - p);
        let Some(c) = find(centre, range.clone(), range) else {
            return (None, None);
        };
        // Neighbour corner = centre + (slot − 1)·pitch + (its shift − the centre's shift).
        let (r, col) = NEIGHBOURS[label];
        let around = |at: usize, slot: usize| {
            let base = (at + slot * pitch).saturating_sub(pitch);
            base.saturating_sub(2 * j).min(s - p)..=(base + 2 * j).min(s - p)
        };
        (Some(c), find(neighbour, around(c.0, r), around(c.1, col)))
    }
}

impl PretextTask for RelPatch {
    fn name(&self) -> &'static str {
        TASK
    }

    fn signature(&self) -> Signature {
        let p = self.patch;
        Signature {
            inputs: vec![TensorSpec::new("patches", DType::U8, &[2, 3, p, p])],
            targets: vec![TensorSpec::new("label", DType::I64, &[1])],
        }
    }

    fn make(&self, image: RgbView<'_>, rng: &mut Rng) -> PretextSample {
        draw::check_image(TASK, &image, self.size);
        let d = self.draw(rng);
        let n = 3 * self.patch * self.patch;
        let mut out = vec![0u8; 2 * n];
        let (centre, neighbour) = out.split_at_mut(n);
        self.cut(&image, d.centre, centre);
        self.cut(&image, d.neighbour, neighbour);
        PretextSample {
            inputs: vec![TensorData::U8(out)],
            targets: vec![TensorData::I64(vec![d.label as i64])],
        }
    }

    /// Two panels: the original image with the centre patch outlined in green and the neighbour in
    /// red (where they really were cut); the 3×3 arrangement with the centre patch in the middle
    /// slot and the neighbour in its slot, the other slots grey. Underneath: the label.
    fn preview(&self, image: RgbView<'_>, sample: &PretextSample) -> (usize, usize, Vec<u8>) {
        let (s, p) = (self.size, self.patch);
        let gap = 4;
        let scale = draw::font_scale(s);
        let n = 3 * p * p;
        let patches = draw::u8s(sample.inputs.first());
        let centre = patches.get(..n).unwrap_or(&[]);
        let neighbour = patches.get(n..2 * n).unwrap_or(&[]);
        let label = draw::i64s(sample.targets.first())
            .first()
            .and_then(|&k| usize::try_from(k).ok())
            .filter(|&k| k < 8);
        let sp = self.gap.max(2);
        let layout = 3 * p + 2 * sp;
        let panel_h = s.max(layout);
        let text_h = draw::digits_height(scale) + 2 * gap;
        let mut c = Canvas::new(
            s + layout + 3 * gap,
            panel_h + 2 * gap + text_h,
            draw::BACKGROUND,
        );
        if image.pixels.len() >= s * s * 3 {
            c.blit_hwc(gap, gap, s, s, &image.pixels[..s * s * 3]);
            let t = (p / 16).max(1);
            let (at_c, at_n) = self.locate(&image, centre, neighbour, label.unwrap_or(8));
            if let Some((y, x)) = at_c {
                c.outline(gap + x, gap + y, p, p, t, draw::GREEN);
            }
            if let Some((y, x)) = at_n {
                c.outline(gap + x, gap + y, p, p, t, draw::RED);
            }
        }
        let x0 = s + 2 * gap;
        let slot = |(r, col): (usize, usize)| (x0 + col * (p + sp), gap + r * (p + sp));
        for r in 0..3 {
            for col in 0..3 {
                let (x, y) = slot((r, col));
                c.fill_rect(x, y, p, p, draw::GREY);
            }
        }
        let (x, y) = slot((1, 1));
        c.blit_chw(x, y, p, p, centre);
        c.outline(x, y, p, p, 1, draw::GREEN);
        if let Some(k) = label {
            let (x, y) = slot(NEIGHBOURS[k]);
            c.blit_chw(x, y, p, p, neighbour);
            c.outline(x, y, p, p, 1, draw::RED);
            c.digits(x0, panel_h + 3 * gap, &k.to_string(), scale, draw::WHITE);
        }
        c.into_parts()
    }
}

impl TaskSettings for RelPatchConfig {}

/// Training: both patches go through the shared encoder, their pooled features are concatenated
/// and an MLP classifies the neighbour's position (8-way cross-entropy).
impl Classification for RelPatch {
    fn input_layout(&self) -> InputLayout {
        InputLayout::Tiles { count: 2 }
    }

    fn classes(&self) -> usize {
        8
    }

    fn plane(&self) -> usize {
        self.patch * self.patch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretext::test_support::{check_signature_and_preview, noise_image, view};

    #[test]
    fn defaults_follow_the_paper_proportions_and_fit() {
        let geo = |s| RelPatchConfig::default().build(s).unwrap().geometry();
        assert_eq!(geo(96), (23, 11, 1));
        assert_eq!(geo(255), (61, 30, 4));
        assert_eq!(geo(398), (96, 48, 7)); // the paper's own numbers
        for s in [5, 32, 64, 96, 255, 1000] {
            let (p, g, j) = geo(s);
            assert!(3 * p + 2 * g + 2 * j <= s && 2 * j <= g, "size {s}");
        }
    }

    #[test]
    fn patches_come_from_the_drawn_slots() {
        let s = 96;
        let img = noise_image(s, s as u64 + 200);
        let task = RelPatchConfig::default().build(s).unwrap();
        let (p, g, j) = task.geometry();
        let mut seen = [false; 8];
        for seed in 0..200 {
            let mut rng = Rng::new(seed);
            let d = task.draw(&mut rng.clone());
            let out = task.make(view(s, &img), &mut rng);
            assert_eq!(out.targets, vec![TensorData::I64(vec![d.label as i64])]);
            seen[d.label] = true;
            let (r, c) = NEIGHBOURS[d.label];
            // Each patch lies within `jitter` of its slot.
            let slot =
                |r: usize, c: usize| (d.origin.0 + j + r * (p + g), d.origin.1 + j + c * (p + g));
            let (cy, cx) = slot(1, 1);
            assert!(d.centre.0.abs_diff(cy) <= j && d.centre.1.abs_diff(cx) <= j);
            let (ny, nx) = slot(r, c);
            assert!(d.neighbour.0.abs_diff(ny) <= j && d.neighbour.1.abs_diff(nx) <= j);
            // The tensor holds exactly the pixels at those positions.
            let TensorData::U8(v) = &out.inputs[0] else {
                panic!("patches must be U8")
            };
            for (k, (y, x)) in [d.centre, d.neighbour].into_iter().enumerate() {
                for ch in 0..3 {
                    for yy in [0, p / 2, p - 1] {
                        for xx in [0, p - 1] {
                            assert_eq!(
                                v[((k * 3 + ch) * p + yy) * p + xx],
                                img[((y + yy) * s + x + xx) * 3 + ch]
                            );
                        }
                    }
                }
            }
            // The preview finds both patches where they were cut.
            assert_eq!(
                task.locate(&view(s, &img), &v[..3 * p * p], &v[3 * p * p..], d.label),
                (Some(d.centre), Some(d.neighbour))
            );
        }
        assert!(seen.iter().all(|&x| x), "all 8 labels occur in 200 draws");
    }

    #[test]
    fn same_rng_same_sample_other_epoch_other_draw() {
        let s = 64;
        let img = noise_image(s, s as u64 + 200);
        let task = RelPatchConfig::default().build(s).unwrap();
        let a = task.make(view(s, &img), &mut Rng::for_sample(2, "k", 0));
        assert_eq!(a, task.make(view(s, &img), &mut Rng::for_sample(2, "k", 0)));
        assert_ne!(a, task.make(view(s, &img), &mut Rng::for_sample(2, "k", 1)));
    }

    #[test]
    fn all_sizes_run_and_sizes_that_do_not_fit_are_refused() {
        for s in [32, 64, 96, 255] {
            let img = noise_image(s, s as u64 + 200);
            let task = RelPatchConfig::default().build(s).unwrap();
            let out = task.make(view(s, &img), &mut Rng::new(1));
            check_signature_and_preview(&task, view(s, &img), &out);
        }
        let err = |c: RelPatchConfig, s| c.build(s).unwrap_err().to_string();
        let e = err(
            RelPatchConfig {
                patch: Some(40),
                ..Default::default()
            },
            96,
        );
        assert!(
            e.contains("do not fit in the 96 px image") && e.contains("patches up to 17 px fit"),
            "{e}"
        );
        let e = err(
            RelPatchConfig {
                patch: Some(20),
                gap: Some(4),
                jitter: Some(3),
            },
            96,
        );
        assert!(e.contains("jitter up to 2 px fits"), "{e}");
        let e = err(
            RelPatchConfig {
                patch: Some(0),
                ..Default::default()
            },
            96,
        );
        assert!(e.contains("at least 1 px"), "{e}");
        let e = err(RelPatchConfig::default(), 2);
        assert!(e.contains("no patch size fits"), "{e}");
        // Explicit values that fit exactly are accepted.
        let t = RelPatchConfig {
            patch: Some(30),
            gap: Some(3),
            jitter: Some(0),
        }
        .build(96)
        .unwrap();
        assert_eq!(t.geometry(), (30, 3, 0));
    }

    #[test]
    fn config_parses_from_toml() {
        let c: RelPatchConfig = toml::from_str("patch = 20\ngap = 10").unwrap();
        assert_eq!((c.patch, c.gap, c.jitter), (Some(20), Some(10), None));
        assert!(toml::from_str::<RelPatchConfig>("patches = 3").is_err());
    }
}
