//! Decode + resize hot path: bytes → RGB8 working size, and RGB8 → normalised CHW f32.
//!
//! Inputs are generated deterministically in the setup (smooth gradients + noise, which compress
//! like photos), so runs are comparable across machines and commits. One thread, one `Decoder`,
//! as in a pipeline worker. Throughput is reported in images/s. For real photos, DCT scaling off
//! against on in alternation, see `benches/decode_corpus.rs`.

use std::hint::black_box;
use std::io::Cursor;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Rgb, RgbImage};
use sslpipe::decode::{DecodeSettings, Decoder, rgb_to_chw};

fn photo_like(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut s = seed | 1;
    let mut noise = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as f32 / 255.0 - 0.5
    };
    RgbImage::from_fn(w, h, |x, y| {
        let fx = x as f32 / w as f32;
        let fy = y as f32 / h as f32;
        let base = [
            255.0 * fx,
            255.0 * fy,
            127.0 + 100.0 * ((fx * 6.0).sin() * (fy * 4.0).cos()),
        ];
        Rgb(base.map(|v| (v + noise() * 24.0).clamp(0.0, 255.0) as u8))
    })
}

fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut buf = Vec::new();
    JpegEncoder::new_with_quality(&mut buf, 90)
        .encode_image(img)
        .unwrap();
    buf
}

fn png(img: &RgbImage) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut buf, ImageFormat::Png)
        .unwrap();
    buf.into_inner()
}

fn bench_decode_resize(c: &mut Criterion) {
    let small = photo_like(640, 480, 1);
    let big = photo_like(1920, 1080, 2);
    let jpeg_small = jpeg(&small);
    let png_small = png(&small);
    let jpeg_big = jpeg(&big);

    // JPEGs at least 4× the working size are decoded at 1/4 or 1/8 scale (DCT domain); the
    // `_full` variants turn that off, which is the path every JPEG took before.
    let mut g = c.benchmark_group("decode_resize");
    g.throughput(Throughput::Elements(1));
    for (name, bytes, size, scaling) in [
        ("jpeg_640x480_to_96", &jpeg_small, 96, true),
        ("jpeg_640x480_to_96_full", &jpeg_small, 96, false),
        ("jpeg_640x480_to_224", &jpeg_small, 224, true),
        ("png_640x480_to_96", &png_small, 96, true),
        ("jpeg_1920x1080_to_96", &jpeg_big, 96, true),
        ("jpeg_1920x1080_to_96_full", &jpeg_big, 96, false),
        ("jpeg_1920x1080_to_224", &jpeg_big, 224, true),
        ("jpeg_1920x1080_to_224_full", &jpeg_big, 224, false),
    ] {
        let mut decoder = Decoder::new(DecodeSettings::with_size(size));
        decoder.set_dct_scaling(scaling);
        let mut out = Vec::new();
        g.bench_function(name, |b| {
            b.iter(|| decoder.decode_into(black_box(bytes), &mut out).unwrap())
        });
    }
    g.finish();

    // The decode alone, the way `decode_into` calls it (header parse + read_image into a reused
    // buffer), to split decode+resize time into its parts.
    let mut g = c.benchmark_group("decode_only");
    g.throughput(Throughput::Elements(1));
    for (name, bytes) in [
        ("jpeg_640x480", &jpeg_small),
        ("png_640x480", &png_small),
        ("jpeg_1920x1080", &jpeg_big),
    ] {
        let mut buf = Vec::new();
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut dec = ImageReader::new(Cursor::new(black_box(bytes.as_slice())))
                    .with_guessed_format()
                    .unwrap()
                    .into_decoder()
                    .unwrap();
                let _ = dec.orientation();
                buf.resize(dec.total_bytes() as usize, 0);
                dec.read_image(&mut buf).unwrap();
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("resize_only");
    g.throughput(Throughput::Elements(1));
    for (name, img, size) in [
        ("640x480_to_96", &small, 96),
        ("640x480_to_224", &small, 224),
        ("1920x1080_to_224", &big, 224),
    ] {
        let mut decoder = Decoder::new(DecodeSettings::with_size(size));
        let mut out = Vec::new();
        g.bench_function(name, |b| {
            b.iter(|| {
                decoder
                    .resize_rgb8_into(black_box(img.as_raw()), img.width(), img.height(), &mut out)
                    .unwrap()
            })
        });
    }
    g.finish();
}

fn bench_rgb_to_chw(c: &mut Criterion) {
    let mut g = c.benchmark_group("rgb_to_chw");
    g.throughput(Throughput::Elements(1));
    for size in [96usize, 224] {
        let img = photo_like(size as u32, size as u32, 3);
        let mut out = vec![0.0f32; size * size * 3];
        g.bench_function(size.to_string(), |b| {
            b.iter(|| {
                rgb_to_chw(
                    black_box(img.as_raw()),
                    size,
                    size,
                    [0.485, 0.456, 0.406],
                    [0.229, 0.224, 0.225],
                    &mut out,
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_decode_resize, bench_rgb_to_chw);
criterion_main!(benches);
