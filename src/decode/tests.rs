//! Tests for the decode path. Every image is generated in memory; nothing is read from disk.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::metadata::Orientation;
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, RgbImage, Rgba};

use super::*;

// ---------------------------------------------------------------- helpers

/// xorshift64*: deterministic noise without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }
}

/// Smooth gradients plus ±12 noise: compresses like a photo, not like flat colour.
fn photo_like(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut rng = Rng(seed | 1);
    RgbImage::from_fn(w, h, |x, y| {
        let fx = x as f32 / w as f32;
        let fy = y as f32 / h as f32;
        let base = [
            255.0 * fx,
            255.0 * fy,
            127.0 + 100.0 * ((fx * 6.0).sin() * (fy * 4.0).cos()),
        ];
        Rgb(base.map(|v| (v + (rng.byte() as f32 / 255.0 - 0.5) * 24.0).clamp(0.0, 255.0) as u8))
    })
}

fn halves(w: u32, h: u32, left: [u8; 3], right: [u8; 3]) -> RgbImage {
    RgbImage::from_fn(w, h, |x, _| Rgb(if x < w / 2 { left } else { right }))
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    if format == ImageFormat::Jpeg {
        JpegEncoder::new_with_quality(&mut buf, 95)
            .encode_image(img)
            .unwrap();
    } else {
        img.write_to(&mut buf, format).unwrap();
    }
    buf.into_inner()
}

fn decode(bytes: &[u8], size: u32) -> Result<(SourceInfo, Vec<u8>), DecodeError> {
    let mut d = Decoder::new(DecodeSettings::with_size(size));
    let mut out = Vec::new();
    d.decode_into(bytes, &mut out).map(|info| (info, out))
}

/// `decode` with DCT scaling off: the full-size path, for tests that pin it against a reference
/// (the scaled path is compared with this one in its own tests).
fn decode_full_size(bytes: &[u8], size: u32) -> Result<(SourceInfo, Vec<u8>), DecodeError> {
    let mut d = Decoder::new(DecodeSettings::with_size(size));
    d.set_dct_scaling(false);
    let mut out = Vec::new();
    d.decode_into(bytes, &mut out).map(|info| (info, out))
}

fn px(out: &[u8], size: u32, x: u32, y: u32) -> [u8; 3] {
    let i = ((y * size + x) * 3) as usize;
    [out[i], out[i + 1], out[i + 2]]
}

fn close(a: [u8; 3], b: [u8; 3], tol: u8) -> bool {
    a.iter().zip(b).all(|(&a, b)| a.abs_diff(b) <= tol)
}

/// Inserts an APP1 Exif segment holding only Orientation (tag 0x0112) right after SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = vec![b'M', b'M', 0, 42, 0, 0, 0, 8]; // big-endian TIFF header, IFD at 8
    tiff.extend_from_slice(&[0, 1]); // one entry
    tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1]); // tag, SHORT, count 1
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&[0, 0, 0, 0]); // no next IFD
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    let len = (payload.len() + 2) as u16;
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A syntactically valid PNG whose header claims `w×h` RGB8 and whose data is a token.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// Independent PIL-style bilinear resize of the centred square (plain f64 maths, one rounding),
/// with the same semantics as the decoder: the kernel widens by the scale when downscaling and
/// may read pixels just outside the crop box (as resize-then-crop would).
fn reference_bilinear(img: &RgbImage, size: u32) -> Vec<u8> {
    let (w, h) = img.dimensions();
    let side = w.min(h);
    let (left, top) = ((w - side) / 2, (h - side) / 2);
    let coeffs = |in_size: u32, in0: f64| -> Vec<(usize, Vec<f64>)> {
        let scale = side as f64 / size as f64;
        let fs = scale.max(1.0);
        (0..size)
            .map(|i| {
                let centre = in0 + (i as f64 + 0.5) * scale;
                let lo = (centre - fs).floor().max(0.0) as usize;
                let hi = ((centre + fs).ceil() as usize).min(in_size as usize);
                let mut ws: Vec<f64> = (lo..hi)
                    .map(|j| (1.0 - ((j as f64 + 0.5 - centre) / fs).abs()).max(0.0))
                    .collect();
                let sum: f64 = ws.iter().sum();
                ws.iter_mut().for_each(|v| *v /= sum);
                (lo, ws)
            })
            .collect()
    };
    let cx = coeffs(w, left as f64);
    let cy = coeffs(h, top as f64);
    let mut out = Vec::with_capacity((size * size * 3) as usize);
    for (y0, wy) in &cy {
        for (x0, wx) in &cx {
            for c in 0..3 {
                let mut acc = 0.0;
                for (dy, ky) in wy.iter().enumerate() {
                    for (dx, kx) in wx.iter().enumerate() {
                        acc +=
                            ky * kx * img.get_pixel((x0 + dx) as u32, (y0 + dy) as u32)[c] as f64;
                    }
                }
                out.push(acc.round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

fn max_and_mean_diff(a: &[u8], b: &[u8]) -> (u8, f64) {
    assert_eq!(a.len(), b.len());
    let max = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0);
    let mean = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y) as f64)
        .sum::<f64>()
        / a.len() as f64;
    (max, mean)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

const FORMATS: [(ImageFormat, &str); 6] = [
    (ImageFormat::Jpeg, "jpeg"),
    (ImageFormat::Png, "png"),
    (ImageFormat::WebP, "webp"),
    (ImageFormat::Gif, "gif"),
    (ImageFormat::Bmp, "bmp"),
    (ImageFormat::Tiff, "tiff"),
];

// ---------------------------------------------------------------- formats and geometry

#[test]
fn every_format_round_trips_left_red_right_blue() {
    let img = DynamicImage::ImageRgb8(halves(128, 96, [255, 0, 0], [0, 0, 255]));
    for (format, name) in FORMATS {
        let bytes = encode(&img, format);
        let (info, out) = decode(&bytes, 32).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            info,
            SourceInfo {
                width: 128,
                height: 96,
                format: name
            }
        );
        assert_eq!(out.len(), 32 * 32 * 3, "{name}");
        let tol = if format == ImageFormat::Jpeg { 12 } else { 0 };
        for y in [0, 15, 31] {
            assert!(
                close(px(&out, 32, 1, y), [255, 0, 0], tol),
                "{name} left {:?}",
                px(&out, 32, 1, y)
            );
            assert!(
                close(px(&out, 32, 30, y), [0, 0, 255], tol),
                "{name} right {:?}",
                px(&out, 32, 30, y)
            );
        }
    }
}

#[test]
fn lossless_formats_match_plain_rust_bilinear_reference() {
    // Wide, tall, square-downscale and upscale cases; the crop is in play for the first two.
    for (w, h, size) in [(300, 200, 64), (150, 260, 50), (192, 192, 96), (28, 28, 96)] {
        let img = photo_like(w, h, u64::from(w * 7 + h));
        let reference = reference_bilinear(&img, size);
        for (format, name) in [
            (ImageFormat::Png, "png"),
            (ImageFormat::WebP, "webp"),
            (ImageFormat::Bmp, "bmp"),
            (ImageFormat::Tiff, "tiff"),
        ] {
            let bytes = encode(&DynamicImage::ImageRgb8(img.clone()), format);
            let (info, out) = decode(&bytes, size).unwrap();
            assert_eq!((info.width, info.height), (w, h));
            let (max, mean) = max_and_mean_diff(&out, &reference);
            assert!(
                max <= 2 && mean < 0.3,
                "{name} {w}x{h}->{size}: max diff {max}, mean {mean}"
            );
        }
    }
}

#[test]
fn jpeg_is_close_to_reference_of_its_own_pixels() {
    let img = DynamicImage::ImageRgb8(photo_like(320, 240, 5));
    let bytes = encode(&img, ImageFormat::Jpeg);
    let decoded = image::load_from_memory(&bytes).unwrap().to_rgb8();
    let (_, out) = decode_full_size(&bytes, 96).unwrap();
    let (max, mean) = max_and_mean_diff(&out, &reference_bilinear(&decoded, 96));
    assert!(max <= 1 && mean < 0.25, "max {max} mean {mean}");
}

#[test]
fn centre_crop_keeps_only_the_middle_band() {
    let img = RgbImage::from_fn(300, 100, |x, _| {
        Rgb(match x / 100 {
            0 => [255, 0, 0],
            1 => [0, 255, 0],
            _ => [0, 0, 255],
        })
    });
    let (info, out) = decode(&encode(&DynamicImage::ImageRgb8(img), ImageFormat::Png), 32).unwrap();
    assert_eq!((info.width, info.height), (300, 100));
    for y in 0..32 {
        for x in 0..32 {
            let p = px(&out, 32, x, y);
            // The edge columns see a sliver of the neighbouring bands, exactly as
            // resize-then-centre-crop would; the interior is pure green.
            let tol = if (1..31).contains(&x) { 0 } else { 40 };
            assert!(close(p, [0, 255, 0], tol), "({x},{y}) = {p:?}");
        }
    }
}

#[test]
fn same_size_source_is_returned_unchanged() {
    let img = photo_like(40, 40, 9);
    for format in [ImageFormat::Png, ImageFormat::Bmp] {
        let (_, out) = decode(&encode(&DynamicImage::ImageRgb8(img.clone()), format), 40).unwrap();
        assert_eq!(out, img.as_raw().as_slice());
    }
}

#[test]
fn every_filter_runs_and_upscaling_is_sane() {
    let img = DynamicImage::ImageRgb8(halves(20, 20, [200, 10, 10], [10, 10, 200]));
    let bytes = encode(&img, ImageFormat::Png);
    for filter in [
        ResizeFilter::Nearest,
        ResizeFilter::Bilinear,
        ResizeFilter::CatmullRom,
        ResizeFilter::Lanczos3,
    ] {
        let mut d = Decoder::new(DecodeSettings {
            size: 64,
            filter,
            ..DecodeSettings::default()
        });
        let mut out = Vec::new();
        d.decode_into(&bytes, &mut out).unwrap();
        assert!(close(px(&out, 64, 2, 30), [200, 10, 10], 0), "{filter:?}");
        assert!(close(px(&out, 64, 61, 30), [10, 10, 200], 0), "{filter:?}");
    }
}

// ---------------------------------------------------------------- orientation

#[test]
fn exif_orientation_6_swaps_dimensions_and_rotates() {
    let img = DynamicImage::ImageRgb8(halves(64, 32, [255, 0, 0], [0, 0, 255]));
    let bytes = with_exif_orientation(&encode(&img, ImageFormat::Jpeg), 6);
    // Sanity: the crafted segment is what `image` itself reads.
    let mut dec = image::ImageReader::new(Cursor::new(&bytes))
        .with_guessed_format()
        .unwrap()
        .into_decoder()
        .unwrap();
    assert_eq!(dec.orientation().unwrap(), Orientation::Rotate90);

    let (info, out) = decode(&bytes, 16).unwrap();
    assert_eq!(
        (info.width, info.height),
        (32, 64),
        "reported dims are the displayed ones"
    );
    // Rotated 90° clockwise, the left (red) half is on top.
    assert!(
        close(px(&out, 16, 8, 1), [255, 0, 0], 12),
        "{:?}",
        px(&out, 16, 8, 1)
    );
    assert!(
        close(px(&out, 16, 8, 14), [0, 0, 255], 12),
        "{:?}",
        px(&out, 16, 8, 14)
    );
}

#[test]
fn all_eight_orientations_match_apply_orientation_on_the_full_image() {
    let plain = encode(
        &DynamicImage::ImageRgb8(photo_like(90, 60, 3)),
        ImageFormat::Jpeg,
    );
    let decoded = image::load_from_memory(&plain).unwrap();
    for exif in 1..=8u16 {
        let (info, out) = decode_full_size(&with_exif_orientation(&plain, exif), 24).unwrap();
        let mut full = decoded.clone();
        full.apply_orientation(Orientation::from_exif(exif as u8).unwrap());
        assert_eq!(
            (info.width, info.height),
            (full.width(), full.height()),
            "orientation {exif}"
        );
        let full = full.to_rgb8();
        let mut reference = Vec::new();
        Decoder::new(DecodeSettings::with_size(24))
            .resize_rgb8_into(full.as_raw(), full.width(), full.height(), &mut reference)
            .unwrap();
        let (max, _) = max_and_mean_diff(&out, &reference);
        assert!(max <= 1, "orientation {exif}: max diff {max}");
    }
}

// ---------------------------------------------------------------- pixel layouts

#[test]
fn grey_alpha_and_16_bit_pngs_become_rgb8() {
    let (w, h) = (50, 30);
    let cases: Vec<(&str, DynamicImage, [u8; 3])> = vec![
        (
            "L8",
            DynamicImage::ImageLuma8(ImageBuffer::from_pixel(w, h, Luma([77]))),
            [77; 3],
        ),
        (
            "La8",
            DynamicImage::ImageLumaA8(ImageBuffer::from_pixel(w, h, LumaA([77, 9]))),
            [77; 3],
        ),
        (
            "Rgba8",
            DynamicImage::ImageRgba8(ImageBuffer::from_pixel(w, h, Rgba([10, 20, 30, 0]))),
            [10, 20, 30],
        ),
        (
            "L16",
            DynamicImage::ImageLuma16(ImageBuffer::from_pixel(w, h, Luma([0x8080]))),
            [128; 3],
        ),
        (
            "La16",
            DynamicImage::ImageLumaA16(ImageBuffer::from_pixel(w, h, LumaA([257 * 200, 5]))),
            [200; 3],
        ),
        (
            "Rgb16",
            DynamicImage::ImageRgb16(ImageBuffer::from_pixel(
                w,
                h,
                Rgb([0, 65535, 257 * 33 + 100]),
            )),
            [0, 255, 33],
        ),
        (
            "Rgba16",
            DynamicImage::ImageRgba16(ImageBuffer::from_pixel(
                w,
                h,
                Rgba([257 * 3, 257 * 4, 257 * 5, 0]),
            )),
            [3, 4, 5],
        ),
    ];
    for (name, img, expected) in cases {
        let (info, out) = decode(&encode(&img, ImageFormat::Png), 16).unwrap();
        assert_eq!(
            (info.width, info.height, info.format),
            (w, h, "png"),
            "{name}"
        );
        assert!(
            out.chunks_exact(3).all(|p| p == expected),
            "{name}: {:?} != {expected:?}",
            &out[..3]
        );
    }
}

#[test]
fn non_flat_grey_and_rgba_agree_with_the_rgb_path() {
    let rgb = photo_like(120, 80, 11);
    let grey = ImageBuffer::from_fn(120, 80, |x, y| Luma([rgb.get_pixel(x, y)[0]]));
    let grey_as_rgb = RgbImage::from_fn(120, 80, |x, y| Rgb([grey.get_pixel(x, y)[0]; 3]));
    let rgba = ImageBuffer::from_fn(120, 80, |x, y| {
        let p = rgb.get_pixel(x, y);
        Rgba([p[0], p[1], p[2], (x * 2) as u8])
    });
    let (_, a) = decode(
        &encode(&DynamicImage::ImageLuma8(grey), ImageFormat::Png),
        48,
    )
    .unwrap();
    let (_, b) = decode(
        &encode(&DynamicImage::ImageRgb8(grey_as_rgb), ImageFormat::Png),
        48,
    )
    .unwrap();
    assert_eq!(a, b, "the 1-channel resize equals the 3-channel one");
    let (_, c) = decode(
        &encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png),
        48,
    )
    .unwrap();
    let (_, d) = decode(&encode(&DynamicImage::ImageRgb8(rgb), ImageFormat::Png), 48).unwrap();
    assert_eq!(c, d, "alpha is dropped, not premultiplied");
}

#[test]
fn float_and_u16_narrowing_match_image() {
    for v in [0u16, 1, 127, 128, 129, 255, 256, 32767, 32768, 65279, 65535] {
        let expected = DynamicImage::ImageLuma16(ImageBuffer::from_pixel(1, 1, Luma([v])))
            .to_luma8()[(0, 0)][0];
        assert_eq!(convert::u16_to_u8(v), expected, "u16 {v}");
    }
    for v in [
        -1.0f32,
        0.0,
        0.001,
        0.5,
        0.998,
        1.0,
        7.0,
        f32::NAN,
        f32::INFINITY,
    ] {
        let expected = DynamicImage::ImageRgb32F(ImageBuffer::from_pixel(1, 1, Rgb([v; 3])))
            .to_rgb8()[(0, 0)][0];
        assert_eq!(convert::f32_to_u8(v), expected, "f32 {v}");
    }
}

#[test]
fn float_tiff_becomes_rgb8() {
    let img = DynamicImage::ImageRgb32F(ImageBuffer::from_pixel(20, 20, Rgb([0.25f32, 0.5, 2.0])));
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, ImageFormat::Tiff).unwrap();
    let (_, out) = decode(buf.get_ref(), 8).unwrap();
    assert!(
        out.chunks_exact(3).all(|p| p == [64, 128, 255]),
        "{:?}",
        &out[..3]
    );
}

// ---------------------------------------------------------------- limits and errors

#[test]
fn huge_header_is_refused_before_allocation() {
    let bytes = png_header_only(100_000, 100_000);
    let mut d = Decoder::new(DecodeSettings::with_size(32));
    let mut out = Vec::new();
    let err = d.decode_into(&bytes, &mut out).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TooLarge {
            width: 100_000,
            height: 100_000,
            max_pixels: 100_000_000
        }
    );
    assert_eq!(err.kind(), "too_large");
    assert_eq!(d.decoded.capacity(), 0, "no pixel buffer was allocated");
    assert!(out.is_empty());

    // The same check with a real image and a tiny limit.
    let small = encode(
        &DynamicImage::ImageRgb8(photo_like(40, 30, 1)),
        ImageFormat::Jpeg,
    );
    let mut d = Decoder::new(DecodeSettings {
        max_pixels: 1199,
        ..DecodeSettings::with_size(8)
    });
    assert!(matches!(
        d.decode_into(&small, &mut out),
        Err(DecodeError::TooLarge {
            width: 40,
            height: 30,
            ..
        })
    ));
    let mut d = Decoder::new(DecodeSettings {
        max_pixels: 1200,
        ..DecodeSettings::with_size(8)
    });
    assert!(d.decode_into(&small, &mut out).is_ok());
}

#[test]
fn empty_unknown_and_truncated_inputs_are_errors() {
    assert_eq!(decode(&[], 16).unwrap_err(), DecodeError::Empty);
    assert_eq!(
        decode(b"hello, this is not an image", 16).unwrap_err(),
        DecodeError::UnknownFormat
    );

    let img = DynamicImage::ImageRgb8(photo_like(64, 48, 2));
    let png = encode(&img, ImageFormat::Png);
    let err = decode(&png[..png.len() / 2], 16).unwrap_err();
    assert!(
        matches!(err, DecodeError::Corrupt { format: "png", .. }),
        "{err}"
    );

    let jpeg = encode(&img, ImageFormat::Jpeg);
    let cut = &jpeg[..jpeg.len() * 2 / 3];
    let err = decode(cut, 16).unwrap_err();
    assert!(
        matches!(err, DecodeError::Corrupt { format: "jpeg", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("truncated"), "{err}");
    // Opting in gives the decoder's grey-padded image instead.
    let mut d = Decoder::new(DecodeSettings {
        allow_truncated_jpeg: true,
        ..DecodeSettings::with_size(16)
    });
    assert!(d.decode_into(cut, &mut Vec::new()).is_ok());
    // A complete JPEG with trailing garbage is fine.
    let mut trailing = jpeg.clone();
    trailing.extend_from_slice(&[0x12; 100]);
    assert!(decode(&trailing, 16).is_ok());
}

#[test]
fn random_bytes_and_truncated_prefixes_never_panic() {
    let mut rng = Rng(0x5eed);
    let mut d = Decoder::new(DecodeSettings::with_size(24));
    let mut out = Vec::new();
    let img = DynamicImage::ImageRgb8(photo_like(61, 47, 4));
    let valid: Vec<Vec<u8>> = FORMATS.iter().map(|&(f, _)| encode(&img, f)).collect();

    // Pure noise, and noise behind each format's magic bytes so the decoders get exercised.
    for len in [1usize, 2, 3, 8, 16, 17, 64, 500, 4096] {
        for _ in 0..20 {
            let noise: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            let _ = d.decode_into(&noise, &mut out);
            for v in &valid {
                let mut b = v[..v.len().min(16)].to_vec();
                b.extend_from_slice(&noise);
                let _ = d.decode_into(&b, &mut out);
            }
        }
    }
    // Every prefix (in small steps) of every valid file; and single-byte corruptions.
    for v in &valid {
        let step = (v.len() / 300).max(1);
        for cut in (0..v.len()).step_by(step) {
            let _ = d.decode_into(&v[..cut], &mut out);
        }
        for _ in 0..200 {
            let mut b = v.clone();
            let i = (rng.next() % b.len() as u64) as usize;
            b[i] = rng.byte();
            let _ = d.decode_into(&b, &mut out);
        }
    }
    // The decoder is still fine afterwards.
    let (_, fresh) = decode(&valid[1], 24).unwrap();
    d.decode_into(&valid[1], &mut out).unwrap();
    assert_eq!(out, fresh);
}

#[test]
fn one_decoder_reused_across_sizes_matches_fresh_decoders() {
    let mut d = Decoder::new(DecodeSettings::with_size(32));
    let mut out = Vec::new();
    for (i, (w, h)) in [(200, 100), (31, 77), (640, 480), (32, 32), (90, 90)]
        .into_iter()
        .enumerate()
    {
        let bytes = encode(
            &DynamicImage::ImageRgb8(photo_like(w, h, i as u64)),
            ImageFormat::Png,
        );
        d.decode_into(&bytes, &mut out).unwrap();
        assert_eq!(out, decode(&bytes, 32).unwrap().1, "{w}x{h}");
    }
}

// ---------------------------------------------------------------- golden checksums

#[test]
fn golden_checksums_pin_the_resize_path() {
    // Integer-only content: no libm (sin/cos) that could differ between platforms.
    let mut rng = Rng(42);
    let img = RgbImage::from_fn(257, 193, |x, y| {
        let n = rng.byte() % 32;
        Rgb([
            (x * 255 / 256) as u8 ^ n,
            (y * 255 / 192) as u8,
            ((x * y) % 251) as u8,
        ])
    });
    let bytes = encode(&DynamicImage::ImageRgb8(img), ImageFormat::Png);
    let mut got = Vec::new();
    for filter in [
        ResizeFilter::Nearest,
        ResizeFilter::Bilinear,
        ResizeFilter::CatmullRom,
        ResizeFilter::Lanczos3,
    ] {
        let mut d = Decoder::new(DecodeSettings {
            size: 64,
            filter,
            ..DecodeSettings::default()
        });
        let mut out = Vec::new();
        d.decode_into(&bytes, &mut out).unwrap();
        let sums: [u64; 3] =
            [0, 1, 2].map(|c| out.iter().skip(c).step_by(3).map(|&v| u64::from(v)).sum());
        got.push((filter, fnv1a(&out), sums));
    }
    let expected: [(ResizeFilter, u64, [u64; 3]); 4] = GOLDEN;
    assert_eq!(
        got, expected,
        "resize output changed; if intended, update GOLDEN"
    );
}

const GOLDEN: [(ResizeFilter, u64, [u64; 3]); 4] = [
    (
        ResizeFilter::Nearest,
        3223543932800189240,
        [520804, 520256, 510407],
    ),
    (
        ResizeFilter::Bilinear,
        10643132575971143270,
        [520295, 520192, 512208],
    ),
    (
        ResizeFilter::CatmullRom,
        13335055373852939278,
        [520246, 520192, 512117],
    ),
    (
        ResizeFilter::Lanczos3,
        14824325292214185724,
        [520257, 520192, 512196],
    ),
];

// ---------------------------------------------------------------- small pieces

#[test]
fn rgb_to_chw_matches_naive() {
    let (w, h) = (13, 7);
    let mut rng = Rng(77);
    let rgb: Vec<u8> = (0..w * h * 3).map(|_| rng.byte()).collect();
    let mean = [0.485, 0.456, 0.406];
    let std = [0.229, 0.224, 0.225];
    let mut out = vec![0.0; w * h * 3];
    rgb_to_chw(&rgb, w, h, mean, std, &mut out);
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let naive = (rgb[(y * w + x) * 3 + c] as f32 / 255.0 - mean[c]) / std[c];
                let got = out[c * w * h + y * w + x];
                assert!(
                    (got - naive).abs() < 1e-5,
                    "c{c} ({x},{y}): {got} vs {naive}"
                );
            }
        }
    }
}

#[test]
fn filter_names_deserialize_and_errors_have_kinds() {
    for (s, f) in [
        ("nearest", ResizeFilter::Nearest),
        ("bilinear", ResizeFilter::Bilinear),
        ("catmull_rom", ResizeFilter::CatmullRom),
        ("lanczos3", ResizeFilter::Lanczos3),
    ] {
        assert_eq!(
            serde_json::from_str::<ResizeFilter>(&format!("\"{s}\"")).unwrap(),
            f
        );
    }
    assert!(serde_json::from_str::<ResizeFilter>("\"bicubic\"").is_err());
    let s: DecodeSettings = serde_json::from_str(r#"{"size": 224, "filter": "lanczos3"}"#).unwrap();
    assert_eq!(
        s,
        DecodeSettings {
            size: 224,
            filter: ResizeFilter::Lanczos3,
            ..DecodeSettings::default()
        }
    );
    assert_eq!(DecodeError::UnknownFormat.kind(), "unknown_format");
}

#[test]
fn jpeg_truncation_check_reads_marker_structure() {
    let jpeg = encode(
        &DynamicImage::ImageRgb8(photo_like(16, 16, 1)),
        ImageFormat::Jpeg,
    );
    assert!(!jpeg::is_truncated(&jpeg));
    assert!(jpeg::is_truncated(&jpeg[..jpeg.len() - 2]));
    assert!(
        !jpeg::is_truncated(&jpeg[..10]),
        "header-level damage is left to the decoder"
    );
    assert!(!jpeg::is_truncated(b"\xFF\xD8"));
    assert!(!jpeg::is_truncated(b""));
}

#[test]
fn decoder_can_move_to_a_worker_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Decoder>();
    assert_send::<DecodeError>();
    let handle = std::thread::spawn(|| {
        let png = encode(
            &DynamicImage::ImageRgb8(photo_like(50, 40, 8)),
            ImageFormat::Png,
        );
        let mut d = Decoder::new(DecodeSettings::with_size(16));
        let mut out = Vec::new();
        d.decode_into(&png, &mut out).map(|info| (info, out.len()))
    });
    let (info, len) = handle.join().unwrap().unwrap();
    assert_eq!((info.width, info.height, len), (50, 40, 16 * 16 * 3));
}

// ---------------------------------------------------------------- JPEG at reduced scale

/// A JPEG written by libjpeg (mozjpeg) itself: progressive or not, in any input colour space.
fn libjpeg_encode(
    pixels: &[u8],
    w: usize,
    h: usize,
    space: mozjpeg::ColorSpace,
    progressive: bool,
) -> Vec<u8> {
    let mut c = mozjpeg::Compress::new(space);
    c.set_size(w, h);
    c.set_quality(92.0);
    if progressive {
        c.set_progressive_mode();
    } else {
        c.set_fastest_defaults(); // baseline, plain Huffman tables
    }
    let mut c = c.start_compress(Vec::new()).unwrap();
    c.write_scanlines(pixels).unwrap();
    c.finish().unwrap()
}

/// Decodes with DCT scaling on and off: (info on, out on, out off). Both must succeed.
fn scaled_and_full(bytes: &[u8], size: u32) -> (SourceInfo, Vec<u8>, Vec<u8>) {
    let (info, scaled) = decode(bytes, size).unwrap();
    let (full_info, full) = decode_full_size(bytes, size).unwrap();
    assert_eq!(full_info, info);
    (info, scaled, full)
}

#[test]
fn reduction_is_the_largest_that_keeps_the_shorter_side() {
    assert_eq!(jpeg::reduction(640, 480, 96), Some(4)); // 120 ≥ 96, 60 < 96
    assert_eq!(jpeg::reduction(480, 640, 120), Some(4)); // exactly 120
    assert_eq!(jpeg::reduction(640, 480, 121), Some(2)); // 240 ≥ 121
    assert_eq!(jpeg::reduction(640, 480, 240), Some(2)); // exactly 240
    assert_eq!(jpeg::reduction(640, 480, 241), None); // only the full size would do
    assert_eq!(jpeg::reduction(1600, 1200, 96), Some(8));
    assert_eq!(jpeg::reduction(1600, 1200, 150), Some(8)); // exactly 150
    assert_eq!(jpeg::reduction(1600, 1200, 151), Some(4));
    assert_eq!(jpeg::reduction(100_000, 3, 2), None);
}

#[test]
fn scaled_jpeg_is_close_to_the_full_size_decode() {
    // 1/4 (640x480 → 96, 4:2:0 from `image`'s encoder), 1/8 (1600x1000 → 96), 1/2 (640x480 →
    // 224), landscape and portrait, baseline and progressive (libjpeg's encoder).
    let image_jpeg = |w, h, seed| {
        encode(
            &DynamicImage::ImageRgb8(photo_like(w, h, seed)),
            ImageFormat::Jpeg,
        )
    };
    let libjpeg = |w: u32, h: u32, seed, progressive| {
        libjpeg_encode(
            photo_like(w, h, seed).as_raw(),
            w as usize,
            h as usize,
            mozjpeg::ColorSpace::JCS_RGB,
            progressive,
        )
    };
    let cases: Vec<(Vec<u8>, u32, &str)> = vec![
        (image_jpeg(640, 480, 7), 96, "1/4 landscape"),
        (image_jpeg(480, 640, 8), 112, "1/4 portrait"),
        (image_jpeg(1600, 1000, 9), 96, "1/8"),
        (libjpeg(700, 520, 10, true), 100, "1/4 progressive"),
        (libjpeg(700, 520, 11, false), 64, "1/8 baseline libjpeg"),
        (image_jpeg(640, 480, 13), 224, "1/2 landscape"),
        (libjpeg(480, 700, 14, true), 200, "1/2 portrait progressive"),
    ];
    for (bytes, size, name) in &cases {
        let mut d = Decoder::new(DecodeSettings::with_size(*size));
        let mut scratch = Vec::new();
        let mut dims = image::ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .unwrap();
        dims.no_limits();
        let (w, h) = dims.into_dimensions().unwrap();
        let r = jpeg::reduction(w, h, *size).expect("the case is meant for the scaled path");
        assert!(
            jpeg::decode_scaled(bytes, r, &mut scratch).is_some(),
            "{name}: scaled path not taken"
        );
        let (info, scaled, full) = scaled_and_full(bytes, *size);
        assert_eq!((info.width, info.height), (w, h), "{name}");
        let (max, mean) = max_and_mean_diff(&scaled, &full);
        assert!(
            mean <= 1.5 && max <= 24,
            "{name}: mean {mean:.2}, max {max}"
        );
        d.decode_into(bytes, &mut scratch).unwrap();
        assert_eq!(scratch, scaled, "{name}: deterministic");
    }
}

#[test]
fn scaled_path_keeps_orientation_grey_and_geometry() {
    // Orientation: every EXIF value gives what the full-size path gives.
    let plain = encode(
        &DynamicImage::ImageRgb8(photo_like(640, 400, 12)),
        ImageFormat::Jpeg,
    );
    for exif in 1..=8u16 {
        let (info, scaled, full) = scaled_and_full(&with_exif_orientation(&plain, exif), 80);
        let swapped = matches!(exif, 5..=8);
        assert_eq!(
            (info.width, info.height),
            if swapped { (400, 640) } else { (640, 400) }
        );
        let (max, mean) = max_and_mean_diff(&scaled, &full);
        assert!(
            mean <= 1.5 && max <= 24,
            "orientation {exif}: mean {mean:.2}, max {max}"
        );
    }
    // Grey JPEG (one component): decoded as grey at 1/4, replicated to R=G=B.
    let grey = DynamicImage::ImageRgb8(photo_like(512, 512, 13)).to_luma8();
    let bytes = libjpeg_encode(
        grey.as_raw(),
        512,
        512,
        mozjpeg::ColorSpace::JCS_GRAYSCALE,
        false,
    );
    let mut buf = Vec::new();
    let s = jpeg::decode_scaled(&bytes, 4, &mut buf).unwrap();
    assert_eq!((s.width, s.height, s.channels), (128, 128, 1));
    let (_, scaled, full) = scaled_and_full(&bytes, 96);
    assert!(scaled.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    let (max, mean) = max_and_mean_diff(&scaled, &full);
    assert!(mean <= 1.5 && max <= 24, "grey: mean {mean:.2}, max {max}");
    // Geometry: the left/right halves split exactly in the middle of the output, as at full size.
    let img = DynamicImage::ImageRgb8(halves(960, 600, [250, 10, 10], [10, 10, 250]));
    let (_, scaled, full) = scaled_and_full(&encode(&img, ImageFormat::Jpeg), 64);
    for y in [0, 31, 63] {
        for x in [0, 30, 33, 63] {
            assert!(
                close(px(&scaled, 64, x, y), px(&full, 64, x, y), 6),
                "({x},{y})"
            );
        }
    }
}

#[test]
fn cmyk_and_bad_jpegs_fall_back_to_the_full_size_decoder() {
    // CMYK (Adobe) JPEG: libjpeg is not asked to convert it; the output is the full-size path's.
    let (w, h) = (400, 320);
    let cmyk: Vec<u8> = photo_like(w, h, 14)
        .pixels()
        .flat_map(|p| [255 - p[0], 255 - p[1], 255 - p[2], 30])
        .collect();
    let bytes = libjpeg_encode(
        &cmyk,
        w as usize,
        h as usize,
        mozjpeg::ColorSpace::JCS_CMYK,
        false,
    );
    assert!(jpeg::decode_scaled(&bytes, 4, &mut Vec::new()).is_none());
    let (_, scaled, full) = scaled_and_full(&bytes, 64);
    assert_eq!(scaled, full);

    // Damaged entropy data: whatever libjpeg makes of it, the verdict (and on failure the
    // message) is the full-size decoder's, and nothing panics.
    let good = encode(
        &DynamicImage::ImageRgb8(photo_like(640, 480, 15)),
        ImageFormat::Jpeg,
    );
    let mut rng = Rng(0xbad);
    let (mut on, mut off) = (
        Decoder::new(DecodeSettings::with_size(64)),
        Decoder::new(DecodeSettings::with_size(64)),
    );
    off.set_dct_scaling(false);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        let mut bad = good.clone();
        for _ in 0..4 {
            let i = 700 + (rng.next() as usize) % (bad.len() - 800);
            bad[i] = rng.byte();
        }
        let (ra, rb) = (on.decode_into(&bad, &mut a), off.decode_into(&bad, &mut b));
        assert_eq!(ra.is_ok(), rb.is_ok(), "{ra:?} vs {rb:?}");
        if ra.is_err() {
            assert_eq!(ra, rb);
        }
    }

    // The pixel limit is checked from the header before either decoder allocates.
    let mut huge = good.clone();
    let sof = huge.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    huge[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]); // 60000 x 60000
    let mut d = Decoder::new(DecodeSettings::with_size(96));
    let err = d.decode_into(&huge, &mut Vec::new()).unwrap_err();
    assert_eq!(err.kind(), "too_large", "{err}");
    assert_eq!(d.decoded.capacity(), 0, "no pixel buffer was allocated");
}
