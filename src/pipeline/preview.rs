//! `sslpipe preview`: a contact sheet of a pipeline's first images as its pretext task sees them —
//! each row is the task's own drawing of one sample (network input next to the pseudo-label), so a
//! person can check what the network will be asked to learn before any training starts. Samples
//! are drawn exactly as a run draws them (epoch 0, same seed), one after another on this thread.

use std::path::Path;

use super::PipelineError;
use crate::config::Pipeline;
use crate::decode::Decoder;
use crate::pretext::RgbView;
use crate::rng::Rng;
use crate::source::{Emit, StopFlag};

/// Gap between rows, in pixels, and its grey.
const GAP: usize = 6;
const GAP_GREY: u8 = 40;

/// Writes the contact sheet of the first `count` decodable images to `out` (PNG); returns the keys
/// shown.
pub fn write_preview(
    plan: &Pipeline,
    count: usize,
    out: &Path,
) -> Result<Vec<String>, PipelineError> {
    let Some(task_config) = plan.pretext() else {
        return Err(PipelineError::stage(
            "preview",
            None,
            "the pipeline has no [pretext] section to preview".into(),
        ));
    };
    let size = plan.decode.size as usize;
    let task = crate::pretext::build(task_config, size)
        .map_err(|e| PipelineError::stage("pretext", None, e.to_string()))?;

    struct Collect {
        decoder: Decoder,
        wanted: usize,
        images: Vec<(String, Vec<u8>)>,
    }
    impl Emit for Collect {
        fn emit(&mut self, key: String, bytes: Result<Vec<u8>, String>) -> bool {
            let mut rgb = Vec::new();
            if let Ok(bytes) = bytes
                && self.decoder.decode_into(&bytes, &mut rgb).is_ok()
            {
                self.images.push((key, rgb));
            }
            self.images.len() < self.wanted
        }
    }
    let mut collect = Collect {
        decoder: Decoder::new(plan.decode.clone()),
        wanted: count.max(1),
        images: Vec::new(),
    };
    crate::source::run(
        &plan.source,
        crate::source::Order::default(),
        &StopFlag::default(),
        &mut collect,
    )?;
    if collect.images.is_empty() {
        return Err(PipelineError::stage(
            "preview",
            None,
            "no decodable image in the source".into(),
        ));
    }

    let rows: Vec<(usize, usize, Vec<u8>)> = collect
        .images
        .iter()
        .map(|(key, rgb)| {
            let view = RgbView {
                width: size,
                height: size,
                pixels: rgb,
            };
            let sample = task.make(view, &mut Rng::for_sample(plan.seed, key, 0));
            task.preview(view, &sample)
        })
        .collect();
    write_sheet(out, &rows)?;
    Ok(collect.images.into_iter().map(|(k, _)| k).collect())
}

use image::ImageEncoder as _;

/// Stacks RGB8 images (`(width, height, pixels)`) vertically with a grey gap into one PNG.
pub(crate) fn write_sheet(
    out: &Path,
    rows: &[(usize, usize, Vec<u8>)],
) -> Result<(), PipelineError> {
    let width = rows.iter().map(|r| r.0).max().unwrap_or(1);
    let height = rows.iter().map(|r| r.1).sum::<usize>() + GAP * rows.len().saturating_sub(1);
    let mut sheet = vec![GAP_GREY; width * height.max(1) * 3];
    let mut top = 0;
    for (w, h, pixels) in rows {
        for y in 0..*h {
            let dst = ((top + y) * width) * 3;
            sheet[dst..dst + w * 3].copy_from_slice(&pixels[y * w * 3..(y + 1) * w * 3]);
        }
        top += h + GAP;
    }
    write_png(out, width, height.max(1), &sheet)
}

/// Encodes an RGB8 HWC image as PNG and writes it atomically.
pub(crate) fn write_png(
    out: &Path,
    width: usize,
    height: usize,
    pixels: &[u8],
) -> Result<(), PipelineError> {
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(
            pixels,
            width as u32,
            height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| {
            PipelineError::stage("preview", None, format!("cannot encode the PNG: {e}"))
        })?;
    crate::sink::write_atomically(out, &png)?;
    Ok(())
}
