//! Decode + resize: encoded image bytes → RGB8 at the working size, on a CPU worker thread.
//!
//! What it is for: every sample's bytes pass through one [`Decoder`] owned by a pipeline worker
//! (one OS thread each). The decoder keeps its `fast_image_resize::Resizer` and its scratch
//! buffers for its whole life, so a steady stream of similar images allocates almost nothing.
//!
//! What it guarantees:
//! - **A bad file is a value, never a panic.** Empty input, unknown formats, truncated or corrupt
//!   data, unsupported pixel layouts and oversized images all come back as a [`DecodeError`].
//!   Truncated JPEGs (which the JPEG decoder would silently pad with grey) are refused too,
//!   unless [`DecodeSettings::allow_truncated_jpeg`] is set.
//! - **The pixel limit is checked from the header, before the pixel buffer is allocated**
//!   (`w*h > max_pixels` → [`DecodeError::TooLarge`]); `image::Limits::max_alloc` is set as a
//!   second guard on what the decoders allocate internally.
//! - **The format comes from the content** (magic bytes), never from a file name.
//! - **Output**: `size*size*3` bytes, HWC, RGB, 8 bit: EXIF orientation applied, the shorter side
//!   resized to `size` and centre-cropped to a square — done as *one* `fast_image_resize` call
//!   whose source rectangle is the centred square (like torchvision's `Resize(size)` +
//!   `CenterCrop(size)`, without the intermediate image). Grey, grey+alpha, RGBA, 16-bit and float
//!   sources become RGB8 the way PIL's `convert("RGB")` does: grey is replicated, alpha is
//!   dropped (not composited), 16-bit is rounded (`(v+128)/257`), float is clamped to [0,1].
//! - **Deterministic**: the same bytes and settings give the same output bytes on every run and
//!   thread (the golden-checksum test pins the resize path).
//!
//! **JPEG at reduced scale.** When the working size is at most half a JPEG's shorter side, the
//! file is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain (see `jpeg.rs`: the largest
//! reduction that keeps the shorter side ≥ `size`) and the centred square of that smaller image is
//! resized as above — the same square of the scene, so the output differs from the full-size path
//! only by the filtering (about one level of 255 on average; a test pins the tolerance). Grey,
//! progressive and EXIF-oriented JPEGs take this path too; CMYK/YCCK files, and any file the
//! scaled decoder reports a problem with, are decoded at full size exactly as before. The pixel
//! limit is checked from the header first either way. [`Decoder::set_dct_scaling`] turns it off.
//!
//! Orientation is applied to the small output, not to the full-size image: the centred square of
//! a rotated/flipped image is the rotated/flipped centred square, and the resampling filters are
//! symmetric, so rotating the `size×size` result is equivalent (bit-exact for flips and 180°,
//! within 1 LSB for 90°/270°, where the resizer's two passes run in the other order) and costs
//! `size²` instead of `w*h`.
//! [`SourceInfo`] reports the dimensions as displayed (after orientation).

mod convert;
mod jpeg;
#[cfg(test)]
mod tests;

use std::io::Cursor;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::metadata::Orientation;
use image::{ColorType, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};
use serde::{Deserialize, Serialize};

/// Scratch buffers larger than this are released after the call that needed them, so one huge
/// image does not pin hundreds of MiB per worker for the rest of the run.
const KEEP_SCRATCH_BYTES: usize = 64 << 20;

/// How a worker decodes: output size, safety limit, resampling filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeSettings {
    /// Output side in pixels: the output is `size×size` RGB8. Must be at least 1.
    pub size: u32,
    /// Largest accepted source, in pixels (`width*height`), checked from the header.
    pub max_pixels: u64,
    /// Resampling filter used for the resize.
    pub filter: ResizeFilter,
    /// Accept JPEGs without an end-of-image marker after their first scan (the decoder fills the
    /// missing part with grey). Default `false`: such files are [`DecodeError::Corrupt`].
    pub allow_truncated_jpeg: bool,
}

impl Default for DecodeSettings {
    fn default() -> Self {
        Self {
            size: 96,
            max_pixels: 100_000_000,
            filter: ResizeFilter::Bilinear,
            allow_truncated_jpeg: false,
        }
    }
}

impl DecodeSettings {
    /// Default settings with the given output size.
    pub fn with_size(size: u32) -> Self {
        Self {
            size,
            ..Self::default()
        }
    }
}

/// Resampling filter (config spelling: `"nearest"`, `"bilinear"`, `"catmull_rom"`, `"lanczos3"`).
/// The convolution filters widen their kernel when downscaling (PIL/`fast_image_resize` style), so
/// they average over the source area instead of aliasing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeFilter {
    Nearest,
    #[default]
    Bilinear,
    CatmullRom,
    Lanczos3,
}

impl ResizeFilter {
    fn algorithm(self) -> ResizeAlg {
        match self {
            ResizeFilter::Nearest => ResizeAlg::Nearest,
            ResizeFilter::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
            ResizeFilter::CatmullRom => ResizeAlg::Convolution(FilterType::CatmullRom),
            ResizeFilter::Lanczos3 => ResizeAlg::Convolution(FilterType::Lanczos3),
        }
    }
}

/// What the source image was: its displayed size (after EXIF orientation) and its format
/// (`"jpeg"`, `"png"`, `"webp"`, `"gif"`, `"bmp"`, `"tiff"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceInfo {
    pub width: u32,
    pub height: u32,
    pub format: &'static str,
}

/// Why an image could not be decoded. Small, cloneable, and meant to be counted and recorded
/// next to the sample key, not to stop the run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty input: zero bytes")]
    Empty,
    #[error("unknown image format: the bytes start with no known image signature")]
    UnknownFormat,
    #[error("unsupported {format} image: {reason}")]
    Unsupported {
        format: &'static str,
        reason: String,
    },
    #[error("corrupt {format} image: {reason}")]
    Corrupt {
        format: &'static str,
        reason: String,
    },
    #[error(
        "image too large: {width}x{height} = {} pixels, the limit is {max_pixels}",
        u64::from(*width) * u64::from(*height)
    )]
    TooLarge {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    #[error("{format} decoder exceeded its memory limit: {reason}")]
    LimitExceeded {
        format: &'static str,
        reason: String,
    },
}

impl DecodeError {
    /// A short stable name per variant, for counting errors by kind in run summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::UnknownFormat => "unknown_format",
            DecodeError::Unsupported { .. } => "unsupported",
            DecodeError::Corrupt { .. } => "corrupt",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::LimitExceeded { .. } => "limit_exceeded",
        }
    }
}

/// One worker's decoder: settings, a reusable resizer and scratch buffers. `Send`, not meant to
/// be shared: give each worker thread its own.
pub struct Decoder {
    settings: DecodeSettings,
    resizer: Resizer,
    /// The decoder's native output (full size).
    decoded: Vec<u8>,
    /// 16-bit / float sources narrowed to 8 bit (full size); unused for 8-bit sources.
    narrowed: Vec<u8>,
    /// The resized square before orientation / channel fix-up (`size²·channels`).
    small: Vec<u8>,
    /// Decode JPEGs at 1/2, 1/4 or 1/8 scale when the working size allows (on by default).
    dct_scaling: bool,
}

impl Decoder {
    /// A decoder for `settings`.
    ///
    /// # Panics
    /// If `settings.size == 0` (a configuration error that validation must catch first).
    pub fn new(settings: DecodeSettings) -> Self {
        assert!(settings.size > 0, "DecodeSettings::size must be at least 1");
        Self {
            settings,
            resizer: Resizer::new(),
            decoded: Vec::new(),
            narrowed: Vec::new(),
            small: Vec::new(),
            dct_scaling: true,
        }
    }

    pub fn settings(&self) -> &DecodeSettings {
        &self.settings
    }

    /// Turns decoding JPEGs at reduced scale on (the default) or off. Off, every JPEG is decoded
    /// at full size before the resize: slower, for comparisons and benchmarks.
    pub fn set_dct_scaling(&mut self, on: bool) {
        self.dct_scaling = on;
    }

    /// Decodes `bytes`, applies EXIF orientation, converts to RGB8, resizes the shorter side to
    /// `size` and centre-crops to `size×size`, writing `size*size*3` bytes (HWC, RGB) into `out`
    /// (resized to exactly that length; its capacity is reused).
    ///
    /// On error `out`'s contents are unspecified (its length may already be `size*size*3`).
    pub fn decode_into(
        &mut self,
        bytes: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<SourceInfo, DecodeError> {
        let result = self.decode_inner(bytes, out);
        self.trim_scratch();
        result
    }

    /// Crops the centred square of an already-decoded RGB8 image (`width*height*3` bytes, HWC)
    /// and resizes it to `size×size` into `out`, exactly as [`Decoder::decode_into`] does after
    /// decoding (no orientation: the pixels are taken as displayed).
    pub fn resize_rgb8_into(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), DecodeError> {
        let needed = width as usize * height as usize * 3;
        if width == 0 || height == 0 || rgb.len() != needed {
            return Err(DecodeError::Corrupt {
                format: "rgb8",
                reason: format!(
                    "expected {width}x{height}x3 = {needed} bytes, found {}",
                    rgb.len()
                ),
            });
        }
        let n = self.settings.size as usize;
        out.resize(n * n * 3, 0);
        let src = Source {
            buf: rgb,
            width,
            height,
            pixel_type: PixelType::U8x3,
            channels: 3,
            crop: centre_square(width, height),
        };
        self.resize_oriented(src, Orientation::NoTransforms, out, "rgb8")
    }

    fn decode_inner(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<SourceInfo, DecodeError> {
        if bytes.is_empty() {
            return Err(DecodeError::Empty);
        }
        let mut reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| DecodeError::Corrupt {
                format: "unknown",
                reason: e.to_string(),
            })?;
        let Some(image_format) = reader.format() else {
            return Err(DecodeError::UnknownFormat);
        };
        let format = format_name(image_format);
        if image_format == ImageFormat::Jpeg
            && !self.settings.allow_truncated_jpeg
            && jpeg::is_truncated(bytes)
        {
            return Err(DecodeError::Corrupt {
                format,
                reason: "truncated: no end-of-image marker after the first scan".into(),
            });
        }
        reader.limits(self.limits());
        let mut decoder = reader
            .into_decoder()
            .map_err(|e| map_image_error(e, format))?;

        // Header-only checks: nothing large has been allocated yet.
        let (width, height) = decoder.dimensions();
        if width == 0 || height == 0 {
            return Err(DecodeError::Corrupt {
                format,
                reason: format!("image has no pixels ({width}x{height})"),
            });
        }
        if u64::from(width) * u64::from(height) > self.settings.max_pixels {
            return Err(DecodeError::TooLarge {
                width,
                height,
                max_pixels: self.settings.max_pixels,
            });
        }
        // A malformed EXIF block only loses the orientation, not the image.
        let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
        let color = decoder.color_type();
        let total = usize::try_from(decoder.total_bytes()).map_err(|_| DecodeError::TooLarge {
            width,
            height,
            max_pixels: self.settings.max_pixels,
        })?;
        let (shown_w, shown_h) = if swaps_axes(orientation) {
            (height, width)
        } else {
            (width, height)
        };
        let info = SourceInfo {
            width: shown_w,
            height: shown_h,
            format,
        };

        let size = self.settings.size;
        let n = size as usize;
        out.resize(n * n * 3, 0);

        // Already the working size: decode straight into `out`, no resize, no copy.
        if color == ColorType::Rgb8
            && width == size
            && height == size
            && orientation == Orientation::NoTransforms
        {
            decoder
                .read_image(&mut out[..])
                .map_err(|e| map_image_error(e, format))?;
            return Ok(info);
        }

        // A JPEG at least twice the working size: decode at 1/2, 1/4 or 1/8 scale (DCT domain) and
        // resize the same centred square from the smaller image.
        if image_format == ImageFormat::Jpeg
            && self.dct_scaling
            && let Some(reduction) = jpeg::reduction(width, height, size)
            && let Some(scaled) = jpeg::decode_scaled(bytes, reduction, &mut self.decoded)
        {
            let (left, top, side) = centre_square(width, height);
            let f = 1.0 / f64::from(reduction);
            let (pixel_type, channels) = if scaled.channels == 1 {
                (PixelType::U8, 1)
            } else {
                (PixelType::U8x3, 3)
            };
            let len = scaled.width as usize * scaled.height as usize * channels;
            let src = Source {
                buf: &self.decoded[..len],
                width: scaled.width,
                height: scaled.height,
                pixel_type,
                channels,
                crop: (left * f, top * f, side * f),
            };
            resize_oriented_with(
                &mut self.resizer,
                &mut self.small,
                self.settings.filter,
                size,
                src,
                orientation,
                out,
                format,
            )?;
            return Ok(info);
        }

        ensure_len(&mut self.decoded, total);
        decoder
            .read_image(&mut self.decoded[..])
            .map_err(|e| map_image_error(e, format))?;

        let pixels = width as usize * height as usize;
        let (buf, pixel_type, channels): (&[u8], PixelType, usize) = match color {
            ColorType::Rgb8 => (&self.decoded, PixelType::U8x3, 3),
            ColorType::L8 => (&self.decoded, PixelType::U8, 1),
            // Alpha is carried through the resize untouched (no premultiplication) and dropped
            // afterwards: identical to dropping it first, at a fraction of the cost.
            ColorType::Rgba8 => (&self.decoded, PixelType::U8x4, 4),
            ColorType::La8 => (&self.decoded, PixelType::U8x2, 2),
            ColorType::L16 | ColorType::La16 => {
                let stride = if color == ColorType::L16 { 1 } else { 2 };
                ensure_len(&mut self.narrowed, pixels);
                convert::narrow_u16(&self.decoded, stride, 1, &mut self.narrowed);
                (&self.narrowed, PixelType::U8, 1)
            }
            ColorType::Rgb16 | ColorType::Rgba16 => {
                let stride = if color == ColorType::Rgb16 { 3 } else { 4 };
                ensure_len(&mut self.narrowed, pixels * 3);
                convert::narrow_u16(&self.decoded, stride, 3, &mut self.narrowed);
                (&self.narrowed, PixelType::U8x3, 3)
            }
            ColorType::Rgb32F | ColorType::Rgba32F => {
                let stride = if color == ColorType::Rgb32F { 3 } else { 4 };
                ensure_len(&mut self.narrowed, pixels * 3);
                convert::narrow_f32(&self.decoded, stride, 3, &mut self.narrowed);
                (&self.narrowed, PixelType::U8x3, 3)
            }
            other => {
                return Err(DecodeError::Unsupported {
                    format,
                    reason: format!("pixel layout {other:?}"),
                });
            }
        };
        let src = Source {
            buf,
            width,
            height,
            pixel_type,
            channels,
            crop: centre_square(width, height),
        };
        resize_oriented_with(
            &mut self.resizer,
            &mut self.small,
            self.settings.filter,
            size,
            src,
            orientation,
            out,
            format,
        )?;
        Ok(info)
    }

    fn resize_oriented(
        &mut self,
        src: Source<'_>,
        orientation: Orientation,
        out: &mut [u8],
        format: &'static str,
    ) -> Result<(), DecodeError> {
        let r = resize_oriented_with(
            &mut self.resizer,
            &mut self.small,
            self.settings.filter,
            self.settings.size,
            src,
            orientation,
            out,
            format,
        );
        self.trim_scratch();
        r
    }

    fn limits(&self) -> Limits {
        // The pixel check above is the real guard; this bounds what a decoder allocates for its
        // own purposes (e.g. PNG chunks, TIFF strips) to a few output images' worth.
        let mut limits = Limits::default();
        limits.max_alloc = Some(
            self.settings
                .max_pixels
                .saturating_mul(8)
                .saturating_add(64 << 20),
        );
        limits
    }

    fn trim_scratch(&mut self) {
        if self.decoded.capacity() > KEEP_SCRATCH_BYTES {
            self.decoded = Vec::new();
        }
        if self.narrowed.capacity() > KEEP_SCRATCH_BYTES {
            self.narrowed = Vec::new();
        }
        if self.resizer.size_of_internal_buffers() > KEEP_SCRATCH_BYTES {
            self.resizer.reset_internal_buffers();
        }
    }
}

/// A full-size 8-bit source ready for the resizer.
struct Source<'a> {
    buf: &'a [u8],
    width: u32,
    height: u32,
    pixel_type: PixelType,
    channels: usize,
    /// The square to resize, `(left, top, side)` in source pixels (fractional for a JPEG decoded
    /// at reduced scale: the full-size image's centred square, scaled).
    crop: (f64, f64, f64),
}

/// The centred square of a `width×height` image: `(left, top, side)`.
fn centre_square(width: u32, height: u32) -> (f64, f64, f64) {
    let side = width.min(height);
    (
        f64::from((width - side) / 2),
        f64::from((height - side) / 2),
        f64::from(side),
    )
}

/// Centre-square crop + resize to `size×size` in one resizer call, then orientation and channel
/// fix-up into `out` (skipped when the resizer can write RGB straight into `out`).
#[allow(clippy::too_many_arguments)]
fn resize_oriented_with(
    resizer: &mut Resizer,
    small: &mut Vec<u8>,
    filter: ResizeFilter,
    size: u32,
    src: Source<'_>,
    orientation: Orientation,
    out: &mut [u8],
    format: &'static str,
) -> Result<(), DecodeError> {
    let resize_err = |e: &dyn std::fmt::Display| DecodeError::Unsupported {
        format,
        reason: format!("resize failed: {e}"),
    };
    let n = size as usize;
    let (left, top, side) = src.crop;
    let options = ResizeOptions::new()
        .resize_alg(filter.algorithm())
        .use_alpha(false)
        .crop(left, top, side, side);
    let src_image = ImageRef::new(src.width, src.height, src.buf, src.pixel_type)
        .map_err(|e| resize_err(&e))?;

    if src.channels == 3 && orientation == Orientation::NoTransforms {
        let mut dst =
            Image::from_slice_u8(size, size, out, PixelType::U8x3).map_err(|e| resize_err(&e))?;
        return resizer
            .resize(&src_image, &mut dst, &options)
            .map_err(|e| resize_err(&e));
    }
    small.resize(n * n * src.channels, 0);
    {
        let mut dst =
            Image::from_slice_u8(size, size, small, src.pixel_type).map_err(|e| resize_err(&e))?;
        resizer
            .resize(&src_image, &mut dst, &options)
            .map_err(|e| resize_err(&e))?;
    }
    convert::write_oriented_rgb(small, src.channels, n, orientation, out);
    Ok(())
}

/// Sets `v.len() == len`, reusing capacity; a fresh large buffer comes zeroed from the allocator
/// (lazily, by the OS) instead of being filled by hand.
fn ensure_len(v: &mut Vec<u8>, len: usize) {
    if v.capacity() < len {
        *v = vec![0; len];
    } else {
        v.resize(len, 0);
    }
}

fn swaps_axes(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "jpeg",
        ImageFormat::Png => "png",
        ImageFormat::WebP => "webp",
        ImageFormat::Gif => "gif",
        ImageFormat::Bmp => "bmp",
        ImageFormat::Tiff => "tiff",
        other => other.extensions_str().first().copied().unwrap_or("unknown"),
    }
}

fn map_image_error(e: ImageError, format: &'static str) -> DecodeError {
    match e {
        ImageError::Unsupported(u) => DecodeError::Unsupported {
            format,
            reason: u.to_string(),
        },
        ImageError::Limits(l) => DecodeError::LimitExceeded {
            format,
            reason: l.to_string(),
        },
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeError::Corrupt {
                format,
                reason: format!("truncated: {io}"),
            }
        }
        other => DecodeError::Corrupt {
            format,
            reason: other.to_string(),
        },
    }
}

/// Normalises an RGB8 HWC image into CHW `f32`: `out[c][y][x] = (x/255 - mean[c]) / std[c]`.
///
/// # Panics
/// If `rgb.len() != 3*width*height` or `out.len() != 3*width*height` (a caller bug, not a data
/// error).
pub fn rgb_to_chw(
    rgb: &[u8],
    width: usize,
    height: usize,
    mean: [f32; 3],
    std: [f32; 3],
    out: &mut [f32],
) {
    let plane = width * height;
    assert_eq!(
        rgb.len(),
        plane * 3,
        "rgb_to_chw: rgb buffer is not width*height*3 bytes"
    );
    assert_eq!(
        out.len(),
        plane * 3,
        "rgb_to_chw: out buffer is not 3*width*height floats"
    );
    // (v/255 - m)/s == v * (1/(255 s)) + (-m/s): one multiply-add per value.
    let scale = [0, 1, 2].map(|c| 1.0 / (255.0 * std[c]));
    let bias = [0, 1, 2].map(|c| -mean[c] / std[c]);
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (((px, r), g), b) in rgb.chunks_exact(3).zip(r).zip(g).zip(b) {
        // Plain `a*s + b`: `mul_add` is a slow libm call unless the target has FMA enabled.
        *r = f32::from(px[0]) * scale[0] + bias[0];
        *g = f32::from(px[1]) * scale[1] + bias[1];
        *b = f32::from(px[2]) * scale[2] + bias[2];
    }
}
