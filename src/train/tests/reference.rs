//! Writes the inputs of `scripts/dev/train_reference.py`, which recomputes one SGD and one AdamW
//! step of a small ResNet in numpy (and PyTorch, where importable) from the model description.
//! Run: `cargo test --lib train::tests::reference::export_reference_steps -- --ignored`, then
//! `.deps/venv-dev/bin/python scripts/dev/train_reference.py`.

use std::path::{Path, PathBuf};

use super::TestResult;
use super::step_tests::{linear, perturbed, tiny_encoder};
use super::trainer_tests::quadrant_batch;
use crate::model::Layer;
use crate::runtime::{SessionSettings, environment};
use crate::train::checkpoint::{Checkpoint, CheckpointMeta};
use crate::train::net::{InputLayout, Network, Tap, TrainSpec};
use crate::train::{Loss, Optimizer, Trainer};

fn write_npy(path: &Path, descr: &str, shape: &[usize], bytes: &[u8]) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("{},", dims[0])
    } else {
        dims.join(", ")
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({tuple}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(bytes);
    std::fs::write(path, out)
}

#[test]
#[ignore = "writes files for the numpy/PyTorch reference check"]
fn export_reference_steps() -> TestResult {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("train_ref");
    let batch = 8;
    for (name, opt) in [
        (
            "sgd",
            Optimizer::Sgd {
                momentum: 0.9,
                weight_decay: 5e-4,
                nesterov: true,
            },
        ),
        (
            "adamw",
            Optimizer::AdamW {
                beta1: 0.9,
                beta2: 0.99,
                eps: 1e-8,
                weight_decay: 0.05,
            },
        ),
    ] {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let spec = TrainSpec {
            encoder: tiny_encoder(8, vec![1, 1], 16),
            input_size: 16,
            input: InputLayout::Images,
            tap: Tap::Embedding,
            head: vec![linear(12), Layer::Relu, linear(4)],
            loss: Loss::CrossEntropy,
            optimizer: opt,
            batch_size: batch,
        };
        let net = Network::new(spec.clone())?;
        let params = perturbed(&net, 21)?;
        let ts = net.train_step()?;
        // Non-zero optimizer state and a later step, so momentum and bias correction matter.
        let mut state = crate::model::ParamSet::new();
        let mut rng = crate::rng::Rng::new(5);
        for s in &ts.signature.state {
            let v: Vec<f32> = (0..s.numel())
                .map(|_| {
                    if s.name.contains("exp_avg_sq") {
                        1e-4 * rng.uniform_f32()
                    } else {
                        1e-2 * (rng.uniform_f32() - 0.5)
                    }
                })
                .collect();
            state.push(s.name.clone(), s.shape.clone(), v)?;
        }
        let (step, lr) = (4u64, 0.02f32);
        Checkpoint {
            meta: CheckpointMeta {
                step,
                spec: spec.clone(),
                rng: serde_json::Value::Null,
            },
            params: params.clone(),
            state: state.clone(),
        }
        .save(&dir.join("before.safetensors"))?;
        let ckpt = Checkpoint::load(&dir.join("before.safetensors"))?;
        let settings = SessionSettings {
            intra_threads: 1,
            ..SessionSettings::default()
        };
        let mut tr = Trainer::resume(environment(None)?, &settings, ts, &ckpt)?;
        let (images, labels) = quadrant_batch(batch, 0, 3);
        tr.set_input_f32("images", &images)?;
        tr.set_input_i64("labels", &labels)?;
        let out = tr.step(lr)?;
        tr.save_checkpoint(&dir.join("after.safetensors"), serde_json::Value::Null)?;
        let fb: Vec<u8> = images.iter().flat_map(|v| v.to_le_bytes()).collect();
        write_npy(&dir.join("images.npy"), "<f4", &[batch, 3, 16, 16], &fb)?;
        let lb: Vec<u8> = labels.iter().flat_map(|v| v.to_le_bytes()).collect();
        write_npy(&dir.join("labels.npy"), "<i8", &[batch], &lb)?;
        let hyper = serde_json::json!({"lr": lr, "step": step, "loss": out.loss});
        std::fs::write(dir.join("hyper.json"), hyper.to_string())?;
        eprintln!("wrote {} (loss {})", dir.display(), out.loss);
    }
    Ok(())
}
