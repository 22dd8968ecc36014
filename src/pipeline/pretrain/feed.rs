//! Pretext samples → the train step's batch inputs. Each task's tensors are written straight into
//! slot `i` of the preallocated buffers (a trainer's or an evaluator's), converted on the way:
//! 8-bit pixels normalised with the model's mean/std, colorization's L scaled to about [−1, 1] and
//! its soft bin encoding scattered into a dense distribution, MAE patches laid back onto the image
//! grid so one dense decoder serves inpainting and masked patches alike.
//!
//! Guarantees: a sample whose tensors do not have the task's signature is an error naming the
//! tensor (never a panic or a silently shifted batch); [`Baseline`] computes, from the same
//! buffers, the loss of the best input-independent prediction, the yardstick the held-out loss is
//! read against.

use crate::config::Normalization;
use crate::pretext::{PretextSample, TaskConfig, TensorData};
use crate::train::loss::{LABELS_INPUT, MASK_INPUT, TARGETS_INPUT};
use crate::train::{BatchInputs, TrainError};

const IMAGES: &str = crate::model::encoder::IMAGES_INPUT;

/// How one task's samples are written into a batch of `batch` samples.
#[derive(Debug, Clone)]
pub struct Feed {
    pub kind: FeedKind,
    pub batch: usize,
    /// Values per channel plane of the (8-bit) input: S².
    plane: usize,
}

#[derive(Debug, Clone)]
pub enum FeedKind {
    /// `images` ← pixels (input 0, U8 or F32), `labels` ← label (target 0).
    Classify,
    /// `images` ← pixels only (NT-Xent needs no targets).
    Views,
    /// `images` ← L / 50; `targets` ← soft bins (k indices + weights) made dense over `bins`.
    ColorBins { bins: usize },
    /// `images` ← L / 50; `targets` ← ab / 100; `mask` = 1.
    ColorAb,
    /// `images` ← pixels; `targets` ← pixels of target 0 (U8, normalised); `mask` ← target 1.
    Inpaint,
    /// `images` ← pixels; `targets` ← per-patch normalised pixels (`[G², p²·3]` in (row, column,
    /// channel) order) laid out as `[3, S, S]`; `mask` ← patch weight spread over its pixels.
    Mask { size: usize, patch: usize },
}

/// The tensor values a feed reads, checked for type.
fn u8s<'a>(t: &'a [TensorData], i: usize, what: &str) -> Result<&'a [u8], TrainError> {
    match t.get(i) {
        Some(TensorData::U8(v)) => Ok(v),
        _ => Err(TrainError::Spec(format!("pretext {what} {i} is not 8-bit"))),
    }
}
fn f32s<'a>(t: &'a [TensorData], i: usize, what: &str) -> Result<&'a [f32], TrainError> {
    match t.get(i) {
        Some(TensorData::F32(v)) => Ok(v),
        _ => Err(TrainError::Spec(format!(
            "pretext {what} {i} is not float32"
        ))),
    }
}
fn i64s<'a>(t: &'a [TensorData], i: usize, what: &str) -> Result<&'a [i64], TrainError> {
    match t.get(i) {
        Some(TensorData::I64(v)) => Ok(v),
        _ => Err(TrainError::Spec(format!("pretext {what} {i} is not int64"))),
    }
}

/// The destination slice of slot `i` in a batch buffer of `batch` samples, length checked
/// against the source.
fn slot<'a, T>(
    buf: &'a mut [T],
    batch: usize,
    i: usize,
    len: usize,
    name: &str,
) -> Result<&'a mut [T], TrainError> {
    let per = buf.len() / batch;
    if per != len || i >= batch {
        return Err(TrainError::BatchSize {
            name: name.into(),
            expected: per,
            found: len,
        });
    }
    Ok(&mut buf[i * len..(i + 1) * len])
}

/// Writes 8-bit CHW planes normalised as `(v/255 − mean[c]) / std[c]`; the channel cycles every
/// `plane` values, so stacked images (`[V, 3, S, S]`) work too.
fn normalise_into(dst: &mut [f32], src: &[u8], plane: usize, norm: &Normalization) {
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * norm.std[c]));
    let shift: [f32; 3] = std::array::from_fn(|c| norm.mean[c] / norm.std[c]);
    for (k, (d, s)) in dst.chunks_mut(plane).zip(src.chunks(plane)).enumerate() {
        let c = k % 3;
        for (d, &s) in d.iter_mut().zip(s) {
            *d = f32::from(s) * scale[c] - shift[c];
        }
    }
}

impl Feed {
    /// The feed of `config` built for the working size `size`, whose first input has the
    /// per-sample shape `input_shape`, into batches of `batch`.
    pub fn for_task(
        config: &TaskConfig,
        size: usize,
        input_shape: &[usize],
        batch: usize,
    ) -> Result<Feed, String> {
        let kind = match config {
            TaskConfig::Rotation(_) | TaskConfig::Jigsaw(_) | TaskConfig::RelPatch(_) => {
                FeedKind::Classify
            }
            TaskConfig::Views(_) => FeedKind::Views,
            TaskConfig::Colorize(c) => match c.target {
                crate::pretext::colorize::ColorTarget::Bins => FeedKind::ColorBins {
                    bins: c.build(size).map_err(|e| e.to_string())?.bins().len(),
                },
                crate::pretext::colorize::ColorTarget::Regression => FeedKind::ColorAb,
            },
            TaskConfig::Inpaint(_) => FeedKind::Inpaint,
            TaskConfig::Mask(m) => FeedKind::Mask {
                size,
                patch: m.patch,
            },
        };
        let plane = input_shape[input_shape.len().saturating_sub(2)..]
            .iter()
            .product();
        Ok(Feed { kind, batch, plane })
    }

    /// Writes `sample` into slot `i` of `dst`.
    pub fn fill(
        &self,
        sample: &PretextSample,
        i: usize,
        norm: &Normalization,
        dst: &mut dyn BatchInputs,
    ) -> Result<(), TrainError> {
        let (inputs, targets) = (&sample.inputs, &sample.targets);
        let b = self.batch;
        match &self.kind {
            FeedKind::Classify | FeedKind::Views | FeedKind::Inpaint | FeedKind::Mask { .. } => {
                let images = dst.input_f32_mut(IMAGES)?;
                match inputs.first() {
                    Some(TensorData::U8(px)) => {
                        let d = slot(images, b, i, px.len(), IMAGES)?;
                        normalise_into(d, px, self.plane, norm);
                    }
                    Some(TensorData::F32(v)) => {
                        slot(images, b, i, v.len(), IMAGES)?.copy_from_slice(v);
                    }
                    _ => return Err(TrainError::Spec("pretext input 0 is missing".into())),
                }
            }
            FeedKind::ColorBins { .. } | FeedKind::ColorAb => {
                let l = f32s(inputs, 0, "input")?;
                let d = slot(dst.input_f32_mut(IMAGES)?, b, i, l.len(), IMAGES)?;
                for (d, &v) in d.iter_mut().zip(l) {
                    *d = v / 50.0;
                }
            }
        }
        match &self.kind {
            FeedKind::Classify => {
                let labels = i64s(targets, 0, "target")?;
                slot(
                    dst.input_i64_mut(LABELS_INPUT)?,
                    b,
                    i,
                    labels.len(),
                    LABELS_INPUT,
                )?
                .copy_from_slice(labels);
            }
            FeedKind::Views => {}
            FeedKind::ColorBins { bins } => {
                let index = i64s(targets, 1, "target")?;
                let weight = f32s(targets, 2, "target")?;
                let cells = i64s(targets, 0, "target")?.len();
                let d = slot(
                    dst.input_f32_mut(TARGETS_INPUT)?,
                    b,
                    i,
                    bins * cells,
                    TARGETS_INPUT,
                )?;
                d.fill(0.0);
                for (j, (&q, &w)) in index.iter().zip(weight).enumerate() {
                    let q = usize::try_from(q)
                        .ok()
                        .filter(|q| q < bins)
                        .ok_or_else(|| {
                            TrainError::Spec(format!("colour bin {q} is not below {bins}"))
                        })?;
                    d[q * cells + j % cells] += w;
                }
            }
            FeedKind::ColorAb => {
                let ab = f32s(targets, 0, "target")?;
                let d = slot(
                    dst.input_f32_mut(TARGETS_INPUT)?,
                    b,
                    i,
                    ab.len(),
                    TARGETS_INPUT,
                )?;
                for (d, &v) in d.iter_mut().zip(ab) {
                    *d = v / 100.0;
                }
                dst.input_f32_mut(MASK_INPUT)?.fill(1.0);
            }
            FeedKind::Inpaint => {
                let px = u8s(targets, 0, "target")?;
                let d = slot(
                    dst.input_f32_mut(TARGETS_INPUT)?,
                    b,
                    i,
                    px.len(),
                    TARGETS_INPUT,
                )?;
                normalise_into(d, px, self.plane, norm);
                let w = f32s(targets, 1, "target")?;
                slot(dst.input_f32_mut(MASK_INPUT)?, b, i, w.len(), MASK_INPUT)?.copy_from_slice(w);
            }
            FeedKind::Mask { size, patch } => {
                let (s, p) = (*size, *patch);
                let g = s / p;
                let patches = f32s(targets, 0, "target")?;
                let weight = f32s(targets, 1, "target")?;
                let d = slot(
                    dst.input_f32_mut(TARGETS_INPUT)?,
                    b,
                    i,
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
                let m = slot(dst.input_f32_mut(MASK_INPUT)?, b, i, s * s, MASK_INPUT)?;
                for (k, &w) in weight.iter().enumerate() {
                    let (y0, x0) = ((k / g) * p, (k % g) * p);
                    for yy in 0..p {
                        m[(y0 + yy) * s + x0..(y0 + yy) * s + x0 + p].fill(w);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Accumulates, over held-out batches, the loss of the best prediction that ignores the input:
/// uniform logits for hard labels (ln K), the class prior for soft targets, the per-channel mean
/// for masked L2. `None` for NT-Xent (no constant prediction is meaningful there).
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    classes: Option<usize>,
    /// Soft targets: per-class sums and the number of positions.
    soft: Vec<f64>,
    positions: f64,
    /// Masked L2: per channel Σw, Σw·t, Σw·t²; elements per mask value.
    moments: Vec<[f64; 3]>,
}

impl Baseline {
    pub fn new(feed: &Feed, classes: Option<usize>) -> Self {
        let mut b = Baseline {
            classes,
            ..Default::default()
        };
        match &feed.kind {
            FeedKind::ColorBins { bins } => b.soft = vec![0.0; *bins],
            FeedKind::ColorAb => b.moments = vec![[0.0; 3]; 2],
            FeedKind::Inpaint | FeedKind::Mask { .. } => b.moments = vec![[0.0; 3]; 3],
            _ => {}
        }
        b
    }

    /// Adds the first `rows` samples of the batch in `src` (filled by `feed`).
    pub fn add(
        &mut self,
        feed: &Feed,
        rows: usize,
        src: &mut dyn BatchInputs,
    ) -> Result<(), TrainError> {
        if !self.soft.is_empty() {
            let t = src.input_f32_mut(TARGETS_INPUT)?;
            let per = t.len() / feed.batch;
            let cells = per / self.soft.len();
            for sample in t[..rows * per].chunks_exact(per) {
                for (q, plane) in sample.chunks_exact(cells).enumerate() {
                    self.soft[q] += plane.iter().map(|&v| f64::from(v)).sum::<f64>();
                }
                self.positions += cells as f64;
            }
        } else if !self.moments.is_empty() {
            let channels = self.moments.len();
            let m = src.input_f32_mut(MASK_INPUT)?.to_vec();
            let t = src.input_f32_mut(TARGETS_INPUT)?;
            let (per_t, per_m) = (t.len() / feed.batch, m.len() / feed.batch);
            let plane = per_t / channels;
            for r in 0..rows {
                for c in 0..channels {
                    for j in 0..plane {
                        // The mask has one value per pixel, or one per sample (broadcast).
                        let w = f64::from(m[r * per_m + if per_m == plane { j } else { 0 }]);
                        let v = f64::from(t[r * per_t + c * plane + j]);
                        let acc = &mut self.moments[c];
                        acc[0] += w;
                        acc[1] += w * v;
                        acc[2] += w * v * v;
                    }
                }
            }
        }
        Ok(())
    }

    /// The baseline loss over everything added, if the task has one.
    pub fn loss(&self) -> Option<f64> {
        if !self.soft.is_empty() {
            let n = self.positions;
            return (n > 0.0).then(|| {
                -self
                    .soft
                    .iter()
                    .filter(|&&s| s > 0.0)
                    .map(|&s| s / n * (s / n).ln())
                    .sum::<f64>()
            });
        }
        if !self.moments.is_empty() {
            let (mut num, mut den) = (0.0, 0.0);
            for [w, wt, wt2] in &self.moments {
                if *w > 0.0 {
                    num += wt2 - wt * wt / w;
                    den += w;
                }
            }
            return (den > 0.0).then(|| num / den);
        }
        self.classes.map(|k| (k as f64).ln())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretext::mask::MaskConfig;
    use ort::value::{DynTensor, Tensor};

    /// Host buffers named like a train step's batch inputs.
    struct Host(Vec<(&'static str, DynTensor)>);
    impl BatchInputs for Host {
        fn batch_tensor(&mut self, name: &str) -> Result<&mut DynTensor, TrainError> {
            self.0
                .iter_mut()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| TrainError::Spec(name.into()))
        }
    }
    fn zeros(shape: &[usize]) -> DynTensor {
        crate::runtime::environment(None).unwrap();
        Tensor::from_array((shape.to_vec(), vec![0f32; shape.iter().product()]))
            .unwrap()
            .upcast()
    }

    #[test]
    fn mae_patches_are_laid_back_onto_the_image_grid_with_their_weights() {
        let (s, p) = (4, 2);
        let config = TaskConfig::Mask(MaskConfig {
            patch: p,
            ..Default::default()
        });
        let feed = Feed::for_task(&config, s, &[3, s, s], 2).unwrap();
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
        let norm = Normalization {
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        feed.fill(&sample, 1, &norm, &mut host).unwrap();
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
        let mut b = Baseline::new(&feed, None);
        b.add(&feed, 2, &mut host).unwrap();
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

    #[test]
    fn soft_colour_bins_become_a_dense_distribution_per_cell() {
        let config = TaskConfig::Colorize(Default::default());
        let size = 8;
        let feed = Feed::for_task(&config, size, &[1, size, size], 1).unwrap();
        let FeedKind::ColorBins { bins } = feed.kind else {
            panic!("bins expected")
        };
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
        let norm = Normalization {
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        feed.fill(&sample, 0, &norm, &mut host).unwrap();
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
}
