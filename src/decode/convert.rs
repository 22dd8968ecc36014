//! Pixel conversions for the decode path: narrowing 16-bit and float samples to 8 bit, and the
//! final pass that applies EXIF orientation and expands 1/2/4-channel pixels to RGB.
//!
//! Guarantees: the same rounding as the `image` crate (`(v+128)/257` for u16, clamp-to-[0,1] and
//! round for f32, NaN → 1.0), grey replicated to R=G=B, alpha dropped. Nothing here allocates and
//! nothing panics for buffers of the documented sizes.

use image::metadata::Orientation;

/// `image`'s u16 → u8: `round(v * 255 / 65535)`.
#[inline]
pub(super) fn u16_to_u8(v: u16) -> u8 {
    ((u32::from(v) + 128) / 257) as u8
}

/// `image`'s f32 → u8: clamp to [0, 1] (NaN counts as 1.0, like browsers), scale, round.
#[inline]
pub(super) fn f32_to_u8(v: f32) -> u8 {
    let clamped = if v < 1.0 { v.max(0.0) } else { 1.0 };
    (clamped * 255.0).round() as u8
}

/// Keeps the first `keep` of every `stride` native-endian u16 samples of `src`, narrowed to u8.
/// `dst.len()` must be `pixels * keep` where `src.len() == pixels * stride * 2`.
pub(super) fn narrow_u16(src: &[u8], stride: usize, keep: usize, dst: &mut [u8]) {
    for (px, d) in src.chunks_exact(stride * 2).zip(dst.chunks_exact_mut(keep)) {
        for (c, d) in d.iter_mut().enumerate() {
            *d = u16_to_u8(u16::from_ne_bytes([px[2 * c], px[2 * c + 1]]));
        }
    }
}

/// Keeps the first `keep` of every `stride` native-endian f32 samples of `src`, narrowed to u8.
pub(super) fn narrow_f32(src: &[u8], stride: usize, keep: usize, dst: &mut [u8]) {
    for (px, d) in src.chunks_exact(stride * 4).zip(dst.chunks_exact_mut(keep)) {
        for (c, d) in d.iter_mut().enumerate() {
            let b = &px[4 * c..4 * c + 4];
            *d = f32_to_u8(f32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        }
    }
}

/// Writes the `n×n` image `src` (`channels` ∈ 1..=4 bytes per pixel) into `out` (`n*n*3`, RGB),
/// transformed by `orientation` exactly like `DynamicImage::apply_orientation`. One channel is
/// replicated to RGB, two channels (grey+alpha) use the grey, four drop the alpha.
pub(super) fn write_oriented_rgb(
    src: &[u8],
    channels: usize,
    n: usize,
    orientation: Orientation,
    out: &mut [u8],
) {
    match channels {
        1 => oriented::<1>(src, n, orientation, out),
        2 => oriented::<2>(src, n, orientation, out),
        3 => oriented::<3>(src, n, orientation, out),
        _ => oriented::<4>(src, n, orientation, out),
    }
}

fn oriented<const C: usize>(src: &[u8], n: usize, orientation: Orientation, out: &mut [u8]) {
    let last = n - 1;
    // Output pixel (x, y) of the displayed image comes from stored pixel (sx, sy).
    let map: fn(usize, usize, usize) -> (usize, usize) = match orientation {
        Orientation::NoTransforms => |x, y, _| (x, y),
        Orientation::Rotate90 => |x, y, l| (y, l - x),
        Orientation::Rotate180 => |x, y, l| (l - x, l - y),
        Orientation::Rotate270 => |x, y, l| (l - y, x),
        Orientation::FlipHorizontal => |x, y, l| (l - x, y),
        Orientation::FlipVertical => |x, y, l| (x, l - y),
        Orientation::Rotate90FlipH => |x, y, _| (y, x),
        Orientation::Rotate270FlipH => |x, y, l| (l - y, l - x),
    };
    for (y, row) in out.chunks_exact_mut(n * 3).enumerate().take(n) {
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            let (sx, sy) = map(x, y, last);
            let s = &src[(sy * n + sx) * C..(sy * n + sx) * C + C];
            if C >= 3 {
                px.copy_from_slice(&s[..3]);
            } else {
                px.fill(s[0]);
            }
        }
    }
}
