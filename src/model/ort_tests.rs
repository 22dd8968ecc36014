//! Tests that run the emitted encoder in ONNX Runtime. They need the library (see
//! `crate::runtime`); without it they fail with the runtime's message on how to get one — they
//! never skip silently.

use std::error::Error;
use std::path::{Path, PathBuf};

use ort::value::Tensor;

use super::*;
use crate::rng::Rng;
use crate::runtime::{SessionSettings, environment, session_from_bytes};

type TestResult = Result<(), Failure>;

/// A test error shown with its `Display` text: a missing library must print the runtime's
/// instructions, not a `Debug` dump of the error enum.
struct Failure(Box<dyn Error>);

impl<E: Error + 'static> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(Box::new(e))
    }
}

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, "\ncaused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Initial parameters with BatchNorm statistics and affine terms moved off their identity values,
/// so the tests see BN's arithmetic (input order, epsilon) and not a no-op.
pub(super) fn perturbed_params(encoder: &BuiltinEncoder, seed: u64) -> ParamSet {
    let mut params = encoder.init_params(seed);
    let mut rng = Rng::for_key(seed, "test-perturbation");
    for spec in encoder.param_specs() {
        let Some(data) = params.data_mut(&spec.name) else {
            continue;
        };
        let (base, spread) = if spec.name.ends_with("running_var") {
            (0.5, 1.0)
        } else if spec.name.ends_with("running_mean") || spec.name.ends_with("bn.bias") {
            (-0.2, 0.4)
        } else if spec.name.ends_with("bn.weight")
            || spec.name.ends_with("bn1.weight")
            || spec.name.ends_with("bn2.weight")
        {
            (0.6, 0.8)
        } else if spec.name.ends_with("bn1.bias") || spec.name.ends_with("bn2.bias") {
            (-0.2, 0.4)
        } else {
            continue;
        };
        for v in data.iter_mut() {
            *v = base + spread * rng.uniform_f32();
        }
    }
    params
}

/// `n` images of `[c, s, s]` with values roughly in the range of normalised pixels.
fn images(n: usize, c: usize, s: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n * c * s * s)
        .map(|_| 4.0 * rng.uniform_f32() - 2.0)
        .collect()
}

fn run(
    session: &mut ort::session::Session,
    input: Vec<f32>,
    shape: [usize; 4],
) -> Result<(Vec<i64>, Vec<f32>), Failure> {
    let tensor = Tensor::from_array((shape, input))?;
    let outputs = session.run(ort::inputs![IMAGES_INPUT => tensor])?;
    let (out_shape, data) = outputs[EMBEDDING_OUTPUT].try_extract_tensor::<f32>()?;
    Ok((out_shape.to_vec(), data.to_vec()))
}

#[test]
fn ort_runs_default_encoder_and_samples_are_independent() -> TestResult {
    let env = environment(None)?;
    let encoder = BuiltinEncoder::new(EncoderSpec::default(), 96)?;
    let bytes = encoder.to_onnx(&perturbed_params(&encoder, 1))?;
    let mut session = session_from_bytes(env, &SessionSettings::default(), &bytes)?;

    let per_image = 3 * 96 * 96;
    let batch = images(4, 3, 96, 42);
    let (shape, out) = run(&mut session, batch.clone(), [4, 3, 96, 96])?;
    assert_eq!(shape, vec![4, 256]);
    assert!(
        out.iter().all(|v| v.is_finite()),
        "non-finite embedding values"
    );
    let spread = out.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(spread > 1e-3, "embeddings are all ~0 (max |v| = {spread})");
    assert_ne!(
        out[..256],
        out[256..512],
        "different images gave the same embedding"
    );

    let (shape1, alone) = run(&mut session, batch[..per_image].to_vec(), [1, 3, 96, 96])?;
    assert_eq!(shape1, vec![1, 256]);
    let max_diff = alone
        .iter()
        .zip(&out[..256])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        max_diff <= 1e-5,
        "sample 0 alone differs from sample 0 in the batch by {max_diff}"
    );
    Ok(())
}

#[test]
fn ort_accepts_every_variant_of_the_family() -> TestResult {
    let env = environment(None)?;
    let spec = EncoderSpec {
        width: 8,
        stages: vec![2, 1, 1],
        embedding_dim: 12,
        in_channels: 1,
        ..Default::default()
    };
    let encoder = BuiltinEncoder::new(spec, 37)?;
    let bytes = encoder.to_onnx(&perturbed_params(&encoder, 2))?;
    let mut session = session_from_bytes(env, &SessionSettings::default(), &bytes)?;
    let (shape, out) = run(&mut session, images(3, 1, 37, 5), [3, 1, 37, 37])?;
    assert_eq!(shape, vec![3, 12]);
    assert!(out.iter().all(|v| v.is_finite()));
    Ok(())
}

#[test]
fn stage_features_are_grid_averages_of_every_stage() -> TestResult {
    let env = environment(None)?;
    let stages = EncoderSpec {
        width: 4,
        stages: vec![1, 1, 1],
        features: Features::Stages,
        ..Default::default()
    };
    // At 64 px the stages end in 16², 8² and 4² maps: exact 2×2 cells.
    let encoder = BuiltinEncoder::new(stages.clone(), 64)?;
    assert_eq!(encoder.embedding_dim(), 4 * (4 + 8 + 16));
    let params = perturbed_params(&encoder, 3);
    let bytes = encoder.to_onnx(&params)?;
    let mut session = session_from_bytes(env, &SessionSettings::default(), &bytes)?;
    let input = images(2, 3, 64, 8);
    let (shape, out) = run(&mut session, input.clone(), [2, 3, 64, 64])?;
    assert_eq!(shape, vec![2, 112]);

    // The same weights with `last` features and an identity projection give the last map's
    // global average, which must be the mean of its four cells.
    let last = BuiltinEncoder::new(
        EncoderSpec {
            features: Features::Last,
            embedding_dim: 16,
            ..stages
        },
        64,
    )?;
    let mut with_embed = ParamSet::new();
    for p in params.iter() {
        with_embed.push(p.name.clone(), p.shape.clone(), p.data.clone())?;
    }
    let eye: Vec<f32> = (0..256)
        .map(|i| if i % 17 == 0 { 1.0 } else { 0.0 })
        .collect();
    with_embed.push("embed.weight", vec![16, 16], eye)?;
    with_embed.push("embed.bias", vec![16], vec![0.0; 16])?;
    let mut pooled = session_from_bytes(
        env,
        &SessionSettings::default(),
        &last.to_onnx(&with_embed)?,
    )?;
    let (_, gap) = run(&mut pooled, input, [2, 3, 64, 64])?;
    for n in 0..2 {
        // Last stage: 16 channels × 4 cells, after 4·4 + 4·8 values of the earlier stages.
        let cells = &out[n * 112 + 48..(n + 1) * 112];
        for c in 0..16 {
            let mean = cells[c * 4..c * 4 + 4].iter().sum::<f32>() / 4.0;
            let want = gap[n * 16 + c];
            assert!(
                (mean - want).abs() <= 1e-4 * want.abs().max(1.0),
                "sample {n} channel {c}: cells average {mean}, global average {want}"
            );
        }
    }
    Ok(())
}

#[test]
fn a_finer_stage_grid_refines_the_coarser_one() -> TestResult {
    let env = environment(None)?;
    // Strided stem at 32 px: stage maps 16², 8², 4² with 4, 8, 16 channels.
    let spec = |grid| EncoderSpec {
        width: 4,
        stages: vec![1, 1, 1],
        features: Features::Stages,
        stem: Stem::Strided,
        grid,
        ..Default::default()
    };
    let coarse = BuiltinEncoder::new(spec(2), 32)?;
    let fine = BuiltinEncoder::new(spec(4), 32)?;
    let params = perturbed_params(&coarse, 5);
    let input = images(2, 3, 32, 9);
    let mut outs = Vec::new();
    for encoder in [&coarse, &fine] {
        let bytes = encoder.to_onnx(&params)?;
        let mut session = session_from_bytes(env, &SessionSettings::default(), &bytes)?;
        outs.push(run(&mut session, input.clone(), [2, 3, 32, 32])?.1);
    }
    let (c_out, f_out) = (&outs[0], &outs[1]);
    let (c_dim, f_dim) = (4 * 28, 16 * 28);
    assert_eq!((c_out.len(), f_out.len()), (2 * c_dim, 2 * f_dim));
    // Each 2×2 cell is the mean of the four 4×4 cells it covers (all windows exact here).
    for n in 0..2 {
        let (mut c_at, mut f_at) = (n * c_dim, n * f_dim);
        for channels in [4, 8, 16] {
            for ch in 0..channels {
                for (row, col) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let want = c_out[c_at + ch * 4 + row * 2 + col];
                    let mut sum = 0.0;
                    for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        sum += f_out[f_at + ch * 16 + (2 * row + i) * 4 + 2 * col + j];
                    }
                    let got = sum / 4.0;
                    assert!(
                        (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "sample {n}, {channels}-channel stage, channel {ch}, cell {row},{col}: {got} vs {want}"
                    );
                }
            }
            c_at += channels * 4;
            f_at += channels * 16;
        }
    }
    Ok(())
}

#[test]
fn stage_features_work_at_odd_and_one_pixel_maps() -> TestResult {
    let env = environment(None)?;
    // 37 px: maps 10², 5², 3² (odd sides: overlapping cells); 16 px: 4², 2², 1² (one cell).
    for (size, dim) in [(37, 4 * (4 + 8 + 16)), (16, 4 * 4 + 4 * 8 + 16)] {
        let spec = EncoderSpec {
            width: 4,
            stages: vec![1, 1, 1],
            features: Features::Stages,
            ..Default::default()
        };
        let encoder = BuiltinEncoder::new(spec, size)?;
        assert_eq!(encoder.embedding_dim(), dim, "at {size} px");
        let bytes = encoder.to_onnx(&perturbed_params(&encoder, 4))?;
        let mut session = session_from_bytes(env, &SessionSettings::default(), &bytes)?;
        let (shape, out) = run(
            &mut session,
            images(2, 3, size as usize, 6),
            [2, 3, size as usize, size as usize],
        )?;
        assert_eq!(shape, vec![2, dim as i64], "at {size} px");
        assert!(out.iter().all(|v| v.is_finite()));
    }
    Ok(())
}

fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("{},", dims[0])
    } else {
        dims.join(", ")
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({tuple}), }}");
    // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes)
}

/// Writes `target/encoder_ref/{encoder.onnx, input.npy, output.npy}` for
/// `scripts/dev/check_encoder_reference.py`, which recomputes the forward pass with numpy.
/// Run with `cargo test --lib model::ort_tests::export_reference -- --ignored`.
#[test]
#[ignore = "writes files for the numpy reference check"]
fn export_reference() -> TestResult {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("encoder_ref");
    std::fs::create_dir_all(&dir)?;
    let env = environment(None)?;
    let encoder = BuiltinEncoder::new(EncoderSpec::default(), 96)?;
    let bytes = encoder.to_onnx(&perturbed_params(&encoder, 11))?;
    std::fs::write(dir.join("encoder.onnx"), &bytes)?;
    let mut session = session_from_bytes(env, &SessionSettings::default(), &bytes)?;
    let input = images(2, 3, 96, 99);
    write_npy(&dir.join("input.npy"), &[2, 3, 96, 96], &input)?;
    let (shape, out) = run(&mut session, input, [2, 3, 96, 96])?;
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    write_npy(&dir.join("output.npy"), &shape, &out)?;
    eprintln!("wrote {} (model_id {})", dir.display(), model_id(&bytes));
    Ok(())
}
