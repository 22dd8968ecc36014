//! Drawing for pretext previews: an RGB8 canvas, rectangles, outlines and a 3×5 pixel font for
//! digits, so a preview can show a label without a font library; contact sheets and PNG files
//! (previews, `predictions.png`, `curve.png`). Also the few pixel-layout helpers the geometric
//! pretext tasks share (HWC → CHW, image-size check, tensor accessors).
//!
//! Guarantees: every operation clips to the canvas, so a preview never panics whatever the
//! coordinates; output is a plain row-major HWC RGB8 buffer, the format
//! [`super::PretextTask::preview`] returns.

/// Colours used by all previews, so the same meaning has the same colour in every task.
pub const RED: [u8; 3] = [230, 40, 40];
pub const GREEN: [u8; 3] = [40, 200, 60];
pub const YELLOW: [u8; 3] = [250, 210, 30];
pub const WHITE: [u8; 3] = [255, 255, 255];
pub const BLACK: [u8; 3] = [0, 0, 0];
pub const GREY: [u8; 3] = [64, 64, 64];
pub const BACKGROUND: [u8; 3] = [24, 24, 24];

/// The digits 0–9 as 3×5 bitmaps: one `u8` per row, bit 2 = left column, bit 0 = right column.
const FONT: [[u8; 5]; 10] = [
    [0b111, 0b101, 0b101, 0b101, 0b111], // 0
    [0b010, 0b110, 0b010, 0b010, 0b111], // 1
    [0b111, 0b001, 0b111, 0b100, 0b111], // 2
    [0b111, 0b001, 0b111, 0b001, 0b111], // 3
    [0b101, 0b101, 0b111, 0b001, 0b001], // 4
    [0b111, 0b100, 0b111, 0b001, 0b111], // 5
    [0b111, 0b100, 0b111, 0b101, 0b111], // 6
    [0b111, 0b001, 0b010, 0b010, 0b010], // 7
    [0b111, 0b101, 0b111, 0b101, 0b111], // 8
    [0b111, 0b101, 0b111, 0b001, 0b111], // 9
];
const POINT: [u8; 5] = [0, 0, 0, 0, 0b010];
const MINUS: [u8; 5] = [0, 0, 0b111, 0, 0];

/// Width in pixels that [`draw_digits`] needs for `n_chars` characters at `scale`
/// (3 columns per digit plus 1 column of spacing between digits).
pub fn digits_width(n_chars: usize, scale: usize) -> usize {
    if n_chars == 0 {
        0
    } else {
        (4 * n_chars - 1) * scale
    }
}

/// Height in pixels of one line of digits at `scale`.
pub fn digits_height(scale: usize) -> usize {
    5 * scale
}

/// Draws `text` with the 3×5 digit font into an RGB8 HWC buffer of `width × height`, top-left
/// corner at (`x`, `y`), each font pixel a `scale × scale` square. Characters other than `0`–`9`,
/// `.` and `-` leave a blank cell (so `"12 7"` works as a separator). Clipped to the buffer; returns the
/// width drawn ([`digits_width`]).
#[allow(clippy::too_many_arguments)] // a flat signature keeps this usable on any RGB8 buffer
pub fn draw_digits(
    pixels: &mut [u8],
    width: usize,
    height: usize,
    x: usize,
    y: usize,
    text: &str,
    scale: usize,
    color: [u8; 3],
) -> usize {
    let scale = scale.max(1);
    let mut n = 0;
    for (i, ch) in text.chars().enumerate() {
        n += 1;
        let glyph = match ch {
            '.' => &POINT,
            '-' => &MINUS,
            _ => match ch.to_digit(10) {
                Some(d) => &FONT[d as usize],
                None => continue,
            },
        };
        let x0 = x + i * 4 * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..3 {
                if bits & (0b100 >> col) != 0 {
                    fill_rect_raw(
                        pixels,
                        width,
                        height,
                        x0 + col * scale,
                        y + row * scale,
                        scale,
                        scale,
                        color,
                    );
                }
            }
        }
    }
    digits_width(n, scale)
}

#[allow(clippy::too_many_arguments)]
fn fill_rect_raw(
    pixels: &mut [u8],
    width: usize,
    height: usize,
    x: usize,
    y: usize,
    w: usize,
    h: usize,
    color: [u8; 3],
) {
    let x1 = x.saturating_add(w).min(width);
    let y1 = y.saturating_add(h).min(height);
    if x >= x1 || pixels.len() < width * height * 3 {
        return;
    }
    for yy in y.min(y1)..y1 {
        let row = &mut pixels[(yy * width + x) * 3..(yy * width + x1) * 3];
        for px in row.chunks_exact_mut(3) {
            px.copy_from_slice(&color);
        }
    }
}

/// An RGB8 image being drawn on (row-major HWC).
#[derive(Debug, Clone)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Canvas {
    /// A canvas filled with `background`.
    pub fn new(width: usize, height: usize, background: [u8; 3]) -> Self {
        let mut pixels = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            pixels.extend_from_slice(&background);
        }
        Canvas {
            width,
            height,
            pixels,
        }
    }

    /// The `(width, height, pixels)` triple a preview returns.
    pub fn into_parts(self) -> (usize, usize, Vec<u8>) {
        (self.width, self.height, self.pixels)
    }

    /// Sets one pixel (ignored outside the canvas).
    pub fn put(&mut self, x: usize, y: usize, color: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 3;
            self.pixels[i..i + 3].copy_from_slice(&color);
        }
    }

    /// Fills a rectangle (clipped).
    pub fn fill_rect(&mut self, x: usize, y: usize, w: usize, h: usize, color: [u8; 3]) {
        fill_rect_raw(&mut self.pixels, self.width, self.height, x, y, w, h, color);
    }

    /// Draws the outline of the rectangle `x..x+w, y..y+h`, `thickness` pixels wide, inside it.
    pub fn outline(
        &mut self,
        x: usize,
        y: usize,
        w: usize,
        h: usize,
        thickness: usize,
        color: [u8; 3],
    ) {
        let t = thickness.min(w).min(h);
        self.fill_rect(x, y, w, t, color);
        self.fill_rect(x, (y + h).saturating_sub(t), w, t, color);
        self.fill_rect(x, y, t, h, color);
        self.fill_rect((x + w).saturating_sub(t), y, t, h, color);
    }

    /// Copies an RGB8 HWC image of `w × h` with its top-left corner at (`x`, `y`) (clipped).
    pub fn blit_hwc(&mut self, x: usize, y: usize, w: usize, h: usize, src: &[u8]) {
        if src.len() < w * h * 3 || x >= self.width {
            return;
        }
        let cw = w.min(self.width - x);
        for row in 0..h {
            let yy = y + row;
            if yy >= self.height {
                break;
            }
            let d = (yy * self.width + x) * 3;
            let s = row * w * 3;
            self.pixels[d..d + cw * 3].copy_from_slice(&src[s..s + cw * 3]);
        }
    }

    /// Copies a planar CHW image (3 planes of `w × h`) with its top-left corner at (`x`, `y`).
    pub fn blit_chw(&mut self, x: usize, y: usize, w: usize, h: usize, src: &[u8]) {
        let plane = w * h;
        if src.len() < 3 * plane {
            return;
        }
        for row in 0..h {
            for col in 0..w {
                let i = row * w + col;
                self.put(
                    x + col,
                    y + row,
                    [src[i], src[plane + i], src[2 * plane + i]],
                );
            }
        }
    }

    /// Draws digits (see [`draw_digits`]); returns the width drawn.
    pub fn digits(
        &mut self,
        x: usize,
        y: usize,
        text: &str,
        scale: usize,
        color: [u8; 3],
    ) -> usize {
        draw_digits(
            &mut self.pixels,
            self.width,
            self.height,
            x,
            y,
            text,
            scale,
            color,
        )
    }
}

/// Converts a row-major HWC RGB8 image into planar CHW, appending to `out`.
pub fn hwc_to_chw(pixels: &[u8], out: &mut Vec<u8>) {
    let n = pixels.len() / 3;
    let start = out.len();
    out.resize(start + 3 * n, 0);
    let (r, rest) = out[start..].split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for (i, px) in pixels.chunks_exact(3).enumerate() {
        r[i] = px[0];
        g[i] = px[1];
        b[i] = px[2];
    }
}

/// Checks that `image` is the `size × size` RGB8 image a task was built for. A mismatch is a bug
/// in the caller (the pipeline resizes every image to the working size before the pretext stage),
/// so it panics with a message that names the task and both sizes rather than reading out of
/// bounds somewhere deeper.
pub fn check_image(task: &str, image: &super::RgbView<'_>, size: usize) {
    assert!(
        image.width == size && image.height == size && image.pixels.len() >= size * size * 3,
        "pretext task {task}: built for {size}x{size} RGB8 images, got {}x{} with {} bytes",
        image.width,
        image.height,
        image.pixels.len()
    );
}

/// The bytes of a U8 tensor, or an empty slice when the tensor is missing or of another type, so a
/// preview of a malformed sample draws blanks instead of panicking.
pub fn u8s(t: Option<&super::TensorData>) -> &[u8] {
    match t {
        Some(super::TensorData::U8(v)) => v,
        _ => &[],
    }
}

/// The values of an F32 tensor, or an empty slice (see [`u8s`]).
pub fn f32s(t: Option<&super::TensorData>) -> &[f32] {
    match t {
        Some(super::TensorData::F32(v)) => v,
        _ => &[],
    }
}

/// The values of an I64 tensor, or an empty slice (see [`u8s`]).
pub fn i64s(t: Option<&super::TensorData>) -> &[i64] {
    match t {
        Some(super::TensorData::I64(v)) => v,
        _ => &[],
    }
}

/// Scale of the digit font that reads well on an image of side `size`.
pub fn font_scale(size: usize) -> usize {
    (size / 48).clamp(1, 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes every geometric task's preview as PNG for a person to look at:
    /// `SSLPIPE_PREVIEW_DIR=/tmp/p cargo test --lib pretext::draw -- --ignored`.
    #[test]
    #[ignore = "writes PNG files for manual inspection"]
    fn write_previews() {
        use crate::pretext::{PretextTask, RgbView};
        use crate::rng::Rng;
        let dir =
            std::env::var("SSLPIPE_PREVIEW_DIR").unwrap_or_else(|_| "/tmp/sslpipe-previews".into());
        std::fs::create_dir_all(&dir).unwrap();
        // A picture with an obvious "up": sky gradient, ground, a sun in the top-left corner.
        let picture = |s: usize| -> Vec<u8> {
            let mut px = Vec::with_capacity(s * s * 3);
            for y in 0..s {
                for x in 0..s {
                    let (fx, fy) = (x as f32 / s as f32, y as f32 / s as f32);
                    let sun = (fx - 0.25).powi(2) + (fy - 0.2).powi(2) < 0.01;
                    let c = if sun {
                        [250, 220, 40]
                    } else if fy > 0.65 {
                        [40, (120.0 + 80.0 * fx) as u8, 40]
                    } else {
                        [(90.0 + 100.0 * fy) as u8, (140.0 + 80.0 * fy) as u8, 240]
                    };
                    px.extend_from_slice(&c);
                }
            }
            px
        };
        let s = 96;
        let img = picture(s);
        let view = RgbView {
            width: s,
            height: s,
            pixels: &img,
        };
        let tasks: Vec<(&str, Box<dyn PretextTask>)> = vec![
            (
                "rotation",
                Box::new(
                    crate::pretext::rotation::RotationConfig::default()
                        .build(s)
                        .unwrap(),
                ),
            ),
            (
                "rotation_one",
                Box::new(
                    crate::pretext::rotation::RotationConfig { all_four: false }
                        .build(s)
                        .unwrap(),
                ),
            ),
            (
                "jigsaw",
                Box::new(
                    crate::pretext::jigsaw::JigsawConfig::default()
                        .build(s)
                        .unwrap(),
                ),
            ),
            (
                "relpatch",
                Box::new(
                    crate::pretext::relpatch::RelPatchConfig::default()
                        .build(s)
                        .unwrap(),
                ),
            ),
            (
                "inpaint_center",
                Box::new(
                    crate::pretext::inpaint::InpaintConfig::default()
                        .build(s)
                        .unwrap(),
                ),
            ),
            (
                "inpaint_squares",
                Box::new(
                    crate::pretext::inpaint::InpaintConfig {
                        mask: crate::pretext::inpaint::MaskKind::RandomSquares,
                        ..Default::default()
                    }
                    .build(s)
                    .unwrap(),
                ),
            ),
            (
                "inpaint_region",
                Box::new(
                    crate::pretext::inpaint::InpaintConfig {
                        mask: crate::pretext::inpaint::MaskKind::RandomRegion,
                        ..Default::default()
                    }
                    .build(s)
                    .unwrap(),
                ),
            ),
            (
                "mask",
                Box::new(
                    crate::pretext::mask::MaskConfig::default()
                        .build(s)
                        .unwrap(),
                ),
            ),
        ];
        for (name, task) in tasks {
            let sample = task.make(view, &mut Rng::for_sample(1, "preview", 0));
            let (w, h, px) = task.preview(view, &sample);
            let path = format!("{dir}/{name}.png");
            image::save_buffer(
                &path,
                &px,
                w as u32,
                h as u32,
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
            println!("{path}");
        }
    }

    #[test]
    fn digits_render_their_bitmaps_and_clip() {
        let mut c = Canvas::new(20, 8, BLACK);
        let w = c.digits(1, 1, "10", 1, WHITE);
        assert_eq!(w, 7);
        // "1": column pattern 010 on the first row → pixel (2, 1) lit, (1, 1) dark.
        let at = |c: &Canvas, x: usize, y: usize| c.pixels[(y * c.width + x) * 3];
        assert_eq!(at(&c, 2, 1), 255);
        assert_eq!(at(&c, 1, 1), 0);
        // "0" starts at x = 5: its top row is full.
        assert!((5..8).all(|x| at(&c, x, 1) == 255));
        // Its centre is hollow.
        assert_eq!(at(&c, 6, 3), 0);
        // Far outside the canvas: nothing happens, nothing panics.
        c.digits(1000, 1000, "0123456789", 3, RED);
        c.outline(15, 5, 100, 100, 2, RED);
        c.blit_hwc(19, 7, 4, 4, &[9; 48]);
        c.blit_chw(18, 6, 4, 4, &[9; 48]);
    }
}

/// A PNG that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PngError {
    #[error("cannot encode {} as PNG", path.display())]
    Encode {
        path: std::path::PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error(transparent)]
    Write(#[from] crate::atomic::WriteError),
}

/// Gap between the rows of a sheet, in pixels, and its grey.
const SHEET_GAP: usize = 6;
const SHEET_GAP_GREY: u8 = 40;

/// Stacks RGB8 images (`(width, height, pixels)`) vertically with a grey gap into one PNG.
pub fn write_sheet(
    out: &std::path::Path,
    rows: &[(usize, usize, Vec<u8>)],
) -> Result<(), PngError> {
    let width = rows.iter().map(|r| r.0).max().unwrap_or(1);
    let height = rows.iter().map(|r| r.1).sum::<usize>() + SHEET_GAP * rows.len().saturating_sub(1);
    let mut sheet = vec![SHEET_GAP_GREY; width * height.max(1) * 3];
    let mut top = 0;
    for (w, h, pixels) in rows {
        for y in 0..*h {
            let dst = ((top + y) * width) * 3;
            sheet[dst..dst + w * 3].copy_from_slice(&pixels[y * w * 3..(y + 1) * w * 3]);
        }
        top += h + SHEET_GAP;
    }
    write_png(out, width, height.max(1), &sheet)
}

/// Encodes an RGB8 HWC image as PNG and writes it atomically.
pub fn write_png(
    out: &std::path::Path,
    width: usize,
    height: usize,
    pixels: &[u8],
) -> Result<(), PngError> {
    use image::ImageEncoder as _;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(
            pixels,
            width as u32,
            height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|source| PngError::Encode {
            path: out.to_path_buf(),
            source,
        })?;
    Ok(crate::atomic::write(out, &png)?)
}
