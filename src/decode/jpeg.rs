//! JPEG specifics: the truncation check, and decoding at a reduced scale in the DCT domain.
//!
//! **Truncation.** The JPEG decoder behind `image` (zune-jpeg, non-strict) fills the missing part
//! of a truncated file with grey and reports success. Training on half-grey images silently is
//! worse than skipping them, so the decode path asks [`is_truncated`] first.
//!
//! Guarantee: [`is_truncated`] is true only when the marker structure up to the first scan (SOS)
//! parses and no end-of-image marker (`FF D9`) follows it. Entropy-coded data cannot contain
//! `FF D9` (an `FF` data byte is always stuffed as `FF 00`), so a complete file always passes;
//! files whose headers do not parse are left to the decoder, which reports its own reason.
//! Reads only; never panics; O(file) in the worst case, usually O(1) since EOI sits at the end.
//!
//! **Scaled decoding.** When the working size is at most half the source's shorter side,
//! [`decode_scaled`] decodes at 1/2, 1/4 or 1/8 scale with libjpeg-turbo's reduced-size inverse
//! DCTs (the mozjpeg fork, built from source by the `mozjpeg-sys` crate, with its SSE2/AVX2 code
//! when `nasm` was there at build time): the entropy decoding is the same, but the IDCT,
//! upsampling and colour conversion run on 1/4, 1/16 or 1/64 of the pixels, and the resize that
//! follows reads a buffer that much smaller. Measured on the 2,000-photo corpus (one core, medians,
//! `examples/decode_only`): at 96 px (mostly 1/4) 1,530 img/s with SIMD against 1,065 without;
//! at 224 px, where half the photos allow 1/2, 883 img/s against 753 decoding all at full size
//! with zune-jpeg. (Without SIMD, 1/2 scale costs about what zune-jpeg's full-size decode does.)
//!
//! Guarantees of the scaled path — it is an optimisation, never a change of verdict:
//! - it is taken only for baseline/progressive JPEGs in YCbCr, RGB or grey (CMYK/YCCK and anything
//!   else returns `None`, and the caller decodes at full size as before);
//! - libjpeg's errors unwind out of the C code as panics, which are caught here; an error *or any
//!   warning* (libjpeg warns and pads on corrupt entropy data) makes it return `None`, and the
//!   full-size decoder then gives its own result and message for that file;
//! - the caller has already checked the pixel limit from the header, so nothing large is allocated
//!   for a file that is refused; the output buffer is `ceil(w/r)·ceil(h/r)·channels` bytes.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;

use mozjpeg::{ColorSpace, Decompress};
use mozjpeg_sys::{jpeg_common_struct, jpeg_error_mgr, jpeg_std_error};

/// True when `bytes` is a JPEG cut off after its first scan started.
pub(super) fn is_truncated(bytes: &[u8]) -> bool {
    match first_scan_offset(bytes) {
        Some(sos) => !bytes[sos..].windows(2).rev().any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

/// Offset just past the first SOS marker, walking the marker segments from SOI.
fn first_scan_offset(b: &[u8]) -> Option<usize> {
    if b.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut i = 2;
    loop {
        if *b.get(i)? != 0xFF {
            return None;
        }
        while *b.get(i)? == 0xFF {
            i += 1;
        }
        let marker = b[i];
        i += 1;
        match marker {
            0xDA => return Some(i),
            0xD9 => return None,
            // Stand-alone markers without a length field.
            0x01 | 0xD0..=0xD8 => {}
            _ => {
                let len = usize::from(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]));
                if len < 2 {
                    return None;
                }
                i += len;
            }
        }
    }
}

/// Smallest scale `1/r` (r = 8, 4 or 2) at which a `width×height` JPEG still has its shorter side
/// at least `size` pixels, or `None` when only the full size would do.
pub(super) fn reduction(width: u32, height: u32, size: u32) -> Option<u32> {
    let shorter = u64::from(width.min(height));
    [8u32, 4, 2]
        .into_iter()
        .find(|&r| shorter >= u64::from(r) * u64::from(size))
}

/// A JPEG decoded at `1/reduction` scale: `width·height·channels` bytes (RGB or grey) in the
/// caller's buffer.
pub(super) struct Scaled {
    pub width: u32,
    pub height: u32,
    pub channels: usize,
}

thread_local! {
    /// Warnings libjpeg emitted during the current call on this thread (see `count_warning`).
    static WARNINGS: Cell<u32> = const { Cell::new(0) };
}

/// libjpeg's `emit_message`: level -1 is a warning (corrupt data it worked around); others are
/// trace messages. Nothing is printed.
extern "C-unwind" fn count_warning(_cinfo: &mut jpeg_common_struct, level: std::os::raw::c_int) {
    if level < 0 {
        WARNINGS.with(|w| w.set(w.get() + 1));
    }
}

/// libjpeg's `error_exit` must not return: unwind back to `decode_scaled`'s `catch_unwind`
/// (`resume_unwind` skips the panic hook, so nothing is printed). The C code is built with
/// unwinding support (`mozjpeg-sys/unwinding`), and `Decompress`'s destructor frees its memory.
extern "C-unwind" fn unwind_on_error(_cinfo: &mut jpeg_common_struct) {
    std::panic::resume_unwind(Box::new("libjpeg error"));
}

fn error_manager() -> jpeg_error_mgr {
    // SAFETY: jpeg_error_mgr is a plain C struct of integers, pointers and nullable function
    // pointers (all-zero is a valid value), and jpeg_std_error fills in every field.
    let mut err: jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { jpeg_std_error(&mut err) };
    err.error_exit = Some(unwind_on_error);
    err.emit_message = Some(count_warning);
    err
}

/// Decodes the JPEG `bytes` at `1/reduction` scale (`reduction` ∈ {2, 4, 8}) into `buf` (resized
/// to fit; its capacity is reused). `None` when the file is not a clean YCbCr/RGB/grey JPEG for
/// libjpeg: the caller then decodes it at full size, which decides whether it is bad and why.
pub(super) fn decode_scaled(bytes: &[u8], reduction: u32, buf: &mut Vec<u8>) -> Option<Scaled> {
    let numerator = match reduction {
        2 => 4,
        4 => 2,
        8 => 1,
        _ => return None,
    };
    WARNINGS.with(|w| w.set(0));
    let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| -> Option<Scaled> {
        let mut dec = Decompress::builder()
            .with_err(error_manager())
            .from_mem(bytes)
            .ok()?;
        let grey = match dec.color_space() {
            ColorSpace::JCS_YCbCr | ColorSpace::JCS_RGB => false,
            ColorSpace::JCS_GRAYSCALE => true,
            _ => return None, // CMYK, YCCK, unknown: the full-size path converts those
        };
        dec.scale(numerator);
        let mut started = if grey { dec.grayscale() } else { dec.rgb() }.ok()?;
        let (width, height) = (started.width(), started.height());
        let channels = if grey { 1 } else { 3 };
        let len = width * height * channels;
        if started.min_flat_buffer_size() != len || len == 0 {
            return None;
        }
        super::ensure_len(buf, len);
        let written = started
            .read_scanlines_into::<u8>(&mut buf[..len])
            .ok()?
            .len();
        started.finish().ok()?;
        (written == len).then_some(Scaled {
            width: u32::try_from(width).ok()?,
            height: u32::try_from(height).ok()?,
            channels,
        })
    }));
    let clean = WARNINGS.with(|w| w.replace(0)) == 0;
    match decoded {
        Ok(Some(scaled)) if clean => Some(scaled),
        _ => None,
    }
}
