//! Rotation prediction (Gidaris et al. 2018, "RotNet"): the network sees the image turned by
//! 0°, 90°, 180° or 270° and must say which; to do so it has to know what is "up" for objects.
//!
//! Guarantees:
//! - Label `k` means the image turned by `k · 90°` **counter-clockwise**, exactly `np.rot90(img, k)`:
//!   output pixel `(row i, col j)` of an `S × S` image is the input pixel
//!   `k=1: (j, S-1-i)`, `k=2: (S-1-i, S-1-j)`, `k=3: (S-1-j, i)`. Turns are exact pixel moves,
//!   no interpolation, so four successive turns give back the original bit for bit.
//! - `all_four = true` (the paper's setting: all four rotations of an image in the same batch):
//!   input `image` U8 `[4, 3, S, S]` (CHW per rotation, rotations in label order) and target
//!   `label` I64 `[4]` = `[0, 1, 2, 3]`; no randomness is used.
//! - `all_four = false`: one rotation `k = rng.index(4)` (the only draw), input `[3, S, S]`,
//!   target `[1]` = `[k]`.

use serde::{Deserialize, Serialize};

use super::draw::{self, Canvas};
use super::training::Classification;
use super::{
    DType, PretextError, PretextSample, PretextTask, RgbView, Signature, TaskSettings, TensorData,
    TensorSpec,
};
use crate::rng::Rng;
use crate::train::InputLayout;

const TASK: &str = "rotation";

/// TOML configuration of the rotation task (`[pretext] kind = "rotation"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RotationConfig {
    /// Emit all four rotations of every image with labels 0..4 (Gidaris et al.); otherwise one
    /// random rotation per image.
    pub all_four: bool,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig { all_four: true }
    }
}

impl RotationConfig {
    /// Validates against the working image size `size` and returns the task.
    pub fn build(&self, size: usize) -> Result<Rotation, PretextError> {
        if size == 0 {
            return Err(PretextError::Invalid {
                task: TASK,
                message: "the working image size is 0; any size of 1 pixel or more fits".into(),
            });
        }
        Ok(Rotation {
            size,
            all_four: self.all_four,
        })
    }
}

/// The rotation task, built by [`RotationConfig::build`].
#[derive(Debug, Clone)]
pub struct Rotation {
    size: usize,
    all_four: bool,
}

/// Turns one `s × s` plane by `k · 90°` counter-clockwise (see the module doc) into `dst`.
pub fn rotate_plane(src: &[u8], s: usize, k: usize, dst: &mut [u8]) {
    let src = &src[..s * s];
    let dst = &mut dst[..s * s];
    match k % 4 {
        0 => dst.copy_from_slice(src),
        1 => {
            // Output row i is input column S-1-i read top to bottom.
            for (i, row) in dst.chunks_exact_mut(s).enumerate() {
                let c = s - 1 - i;
                for (j, d) in row.iter_mut().enumerate() {
                    *d = src[j * s + c];
                }
            }
        }
        2 => {
            // The whole plane reversed.
            for (d, &v) in dst.iter_mut().zip(src.iter().rev()) {
                *d = v;
            }
        }
        _ => {
            // Output row i is input column i read bottom to top.
            for (i, row) in dst.chunks_exact_mut(s).enumerate() {
                for (j, d) in row.iter_mut().enumerate() {
                    *d = src[(s - 1 - j) * s + i];
                }
            }
        }
    }
}

/// Turns a CHW image (3 planes of `s × s`) by `k · 90°` counter-clockwise, appending to `out`.
fn rotate_chw(chw: &[u8], s: usize, k: usize, out: &mut Vec<u8>) {
    let plane = s * s;
    let start = out.len();
    out.resize(start + 3 * plane, 0);
    for c in 0..3 {
        rotate_plane(
            &chw[c * plane..(c + 1) * plane],
            s,
            k,
            &mut out[start + c * plane..start + (c + 1) * plane],
        );
    }
}

impl Rotation {
    /// Working image size this task was built for.
    pub fn size(&self) -> usize {
        self.size
    }
}

impl PretextTask for Rotation {
    fn name(&self) -> &'static str {
        TASK
    }

    fn signature(&self) -> Signature {
        let s = self.size;
        if self.all_four {
            Signature {
                inputs: vec![TensorSpec::new("image", DType::U8, &[4, 3, s, s])],
                targets: vec![TensorSpec::new("label", DType::I64, &[4])],
            }
        } else {
            Signature {
                inputs: vec![TensorSpec::new("image", DType::U8, &[3, s, s])],
                targets: vec![TensorSpec::new("label", DType::I64, &[1])],
            }
        }
    }

    fn make(&self, image: RgbView<'_>, rng: &mut Rng) -> PretextSample {
        let s = self.size;
        draw::check_image(TASK, &image, s);
        let mut chw = Vec::with_capacity(3 * s * s);
        draw::hwc_to_chw(&image.pixels[..s * s * 3], &mut chw);
        if self.all_four {
            let mut out = Vec::with_capacity(12 * s * s);
            out.extend_from_slice(&chw);
            for k in 1..4 {
                rotate_chw(&chw, s, k, &mut out);
            }
            PretextSample {
                inputs: vec![TensorData::U8(out)],
                targets: vec![TensorData::I64(vec![0, 1, 2, 3])],
            }
        } else {
            let k = rng.index(4);
            let out = if k == 0 {
                chw
            } else {
                let mut out = Vec::with_capacity(3 * s * s);
                rotate_chw(&chw, s, k, &mut out);
                out
            };
            PretextSample {
                inputs: vec![TensorData::U8(out)],
                targets: vec![TensorData::I64(vec![k as i64])],
            }
        }
    }

    /// The network's rotated images side by side (after the original when only one rotation is
    /// drawn). A red bar marks the edge where the original *top* of the image now lies, and the
    /// angle in degrees (label × 90) is written underneath.
    fn preview(&self, image: RgbView<'_>, sample: &PretextSample) -> (usize, usize, Vec<u8>) {
        let s = self.size;
        let gap = 4;
        let scale = draw::font_scale(s);
        let bar = (s / 24).max(1);
        let labels = draw::i64s(sample.targets.first());
        let rotated = draw::u8s(sample.inputs.first());
        let plane3 = 3 * s * s;
        // Panels: [original] + one per rotation in the sample.
        let mut panels: Vec<(Option<i64>, Vec<u8>)> = Vec::new();
        if !self.all_four && image.pixels.len() >= plane3 {
            let mut chw = Vec::with_capacity(plane3);
            draw::hwc_to_chw(&image.pixels[..plane3], &mut chw);
            panels.push((None, chw));
        }
        for (i, &label) in labels.iter().enumerate() {
            let chunk = rotated.get(i * plane3..(i + 1) * plane3).unwrap_or(&[]);
            panels.push((Some(label), chunk.to_vec()));
        }
        let n = panels.len().max(1);
        let text_h = draw::digits_height(scale) + 2 * gap;
        let mut c = Canvas::new(
            n * s + (n + 1) * gap,
            s + 2 * gap + text_h,
            draw::BACKGROUND,
        );
        for (p, (label, chw)) in panels.iter().enumerate() {
            let x = gap + p * (s + gap);
            c.blit_chw(x, gap, s, s, chw);
            let Some(k) = label else { continue };
            // Where the original top edge went under a counter-clockwise turn by k·90°.
            match k.rem_euclid(4) {
                0 => c.fill_rect(x, gap, s, bar, draw::RED),
                1 => c.fill_rect(x, gap, bar, s, draw::RED),
                2 => c.fill_rect(x, gap + s - bar, s, bar, draw::RED),
                _ => c.fill_rect(x + s - bar, gap, bar, s, draw::RED),
            }
            let text = (k * 90).to_string();
            let w = draw::digits_width(text.len(), scale);
            c.digits(
                x + s.saturating_sub(w) / 2,
                s + 3 * gap,
                &text,
                scale,
                draw::WHITE,
            );
        }
        c.into_parts()
    }
}

impl TaskSettings for RotationConfig {}

/// Training: 4-way classification of the turn by an MLP on the pooled feature map; with
/// `all_four` the four turns of an image are four views of one sample.
impl Classification for Rotation {
    fn input_layout(&self) -> InputLayout {
        if self.all_four {
            InputLayout::Views { count: 4 }
        } else {
            InputLayout::Images
        }
    }

    fn classes(&self) -> usize {
        4
    }

    fn plane(&self) -> usize {
        self.size * self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretext::test_support::{check_signature_and_preview, noise_image, view};

    /// A deterministic image in which every pixel differs from its neighbours and channels differ.
    fn u8_data(t: &TensorData) -> &[u8] {
        match t {
            TensorData::U8(v) => v,
            other => panic!("expected U8, got {:?}", other.dtype()),
        }
    }

    #[test]
    fn four_turns_give_back_the_original() {
        for s in [1, 2, 7, 32] {
            let img = noise_image(s, s as u64);
            let plane = &img[..s * s];
            let mut a = plane.to_vec();
            let mut b = vec![0; s * s];
            for _ in 0..4 {
                rotate_plane(&a, s, 1, &mut b);
                std::mem::swap(&mut a, &mut b);
            }
            assert_eq!(a, plane, "size {s}");
            // Two quarter turns are one half turn, three are one 270° turn.
            let mut q = vec![0; s * s];
            let mut h = vec![0; s * s];
            rotate_plane(plane, s, 1, &mut q);
            rotate_plane(&q, s, 1, &mut h);
            let mut direct = vec![0; s * s];
            rotate_plane(plane, s, 2, &mut direct);
            assert_eq!(h, direct);
            rotate_plane(&h, s, 1, &mut q);
            rotate_plane(plane, s, 3, &mut direct);
            assert_eq!(q, direct);
        }
    }

    #[test]
    fn labels_match_the_applied_turn() {
        let s = 5;
        let img = noise_image(s, s as u64);
        let task = RotationConfig::default().build(s).unwrap();
        let out = task.make(view(s, &img), &mut Rng::new(0));
        assert_eq!(out.targets, vec![TensorData::I64(vec![0, 1, 2, 3])]);
        let data = u8_data(&out.inputs[0]);
        assert_eq!(data.len(), 4 * 3 * s * s);
        let px = |row: usize, col: usize, c: usize| img[(row * s + col) * 3 + c];
        let at =
            |k: usize, c: usize, row: usize, col: usize| data[((k * 3 + c) * s + row) * s + col];
        // By hand: a counter-clockwise quarter turn moves the top-right corner to the top-left,
        // a half turn moves the bottom-right corner to the top-left, a 270° turn moves the
        // bottom-left corner to the top-left.
        for c in 0..3 {
            assert_eq!(at(0, c, 0, 0), px(0, 0, c));
            assert_eq!(at(1, c, 0, 0), px(0, s - 1, c));
            assert_eq!(at(2, c, 0, 0), px(s - 1, s - 1, c));
            assert_eq!(at(3, c, 0, 0), px(s - 1, 0, c));
            // And one interior pixel per turn against the module doc's formulas.
            let (i, j) = (1, 3);
            assert_eq!(at(1, c, i, j), px(j, s - 1 - i, c));
            assert_eq!(at(2, c, i, j), px(s - 1 - i, s - 1 - j, c));
            assert_eq!(at(3, c, i, j), px(s - 1 - j, i, c));
        }
        // The single-rotation variant produces the same tensor as the matching slice.
        let one = RotationConfig { all_four: false }.build(s).unwrap();
        for seed in 0..20 {
            let o = one.make(view(s, &img), &mut Rng::new(seed));
            let k = match &o.targets[0] {
                TensorData::I64(v) => v[0] as usize,
                _ => panic!("label must be I64"),
            };
            assert!(k < 4);
            assert_eq!(
                u8_data(&o.inputs[0]),
                &data[k * 3 * s * s..(k + 1) * 3 * s * s]
            );
        }
    }

    #[test]
    fn deterministic_and_epoch_dependent() {
        let s = 32;
        let img = noise_image(s, s as u64);
        let one = RotationConfig { all_four: false }.build(s).unwrap();
        let a = one.make(view(s, &img), &mut Rng::for_sample(1, "k", 0));
        let b = one.make(view(s, &img), &mut Rng::for_sample(1, "k", 0));
        assert_eq!(a, b);
        // Over several epochs the drawn rotation changes (4 classes: all equal has p = 4^-7).
        let labels: std::collections::HashSet<_> = (0..8)
            .map(|e| {
                one.make(view(s, &img), &mut Rng::for_sample(1, "k", e))
                    .targets
            })
            .map(|t| format!("{t:?}"))
            .collect();
        assert!(labels.len() > 1);
    }

    #[test]
    fn all_sizes_run_and_match_signature_and_preview() {
        assert!(RotationConfig::default().build(0).is_err());
        for all_four in [true, false] {
            for s in [1, 32, 64, 96, 255] {
                let img = noise_image(s, s as u64);
                let task = RotationConfig { all_four }.build(s).unwrap();
                let out = task.make(view(s, &img), &mut Rng::new(3));
                check_signature_and_preview(&task, view(s, &img), &out);
            }
        }
    }

    #[test]
    fn config_parses_from_toml_and_refuses_unknown_fields() {
        let c: RotationConfig = toml::from_str("all_four = false").unwrap();
        assert!(!c.all_four);
        assert_eq!(
            toml::from_str::<RotationConfig>("").unwrap(),
            RotationConfig::default()
        );
        assert!(toml::from_str::<RotationConfig>("all_for = true").is_err());
    }
}
