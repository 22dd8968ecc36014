//! The trainer: a learnable synthetic task, exact resume from a checkpoint, checkpoint
//! validation, and the non-finite-loss guard.

use super::step_tests::{linear, tiny_encoder};
use super::{TestResult, fail};
use crate::rng::Rng;
use crate::runtime::{SessionSettings, environment};
use crate::train::checkpoint::Checkpoint;
use crate::train::net::{InputLayout, Network, Tap, TrainSpec};
use crate::train::{Loss, Optimizer, TrainError, Trainer};

/// "Which quadrant holds the bright square?": 16×16 RGB noise with a 5×5 bright square placed
/// at random inside one quadrant; label = quadrant. Batch `step` is a pure function of the step.
pub(super) fn quadrant_batch(batch: usize, step: u64, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut rng = Rng::for_sample(seed, "quadrants", step);
    let s = 16;
    let mut images = vec![0f32; batch * 3 * s * s];
    let mut labels = vec![0i64; batch];
    for b in 0..batch {
        let q = rng.index(4);
        labels[b] = q as i64;
        let (oy, ox) = ((q / 2) * 8, (q % 2) * 8);
        let (y0, x0) = (oy + rng.index(4), ox + rng.index(4));
        for c in 0..3 {
            for y in 0..s {
                for x in 0..s {
                    let inside = (y0..y0 + 5).contains(&y) && (x0..x0 + 5).contains(&x);
                    let noise = 0.5 * (rng.uniform_f32() - 0.5);
                    images[((b * 3 + c) * s + y) * s + x] = noise + if inside { 1.5 } else { -0.3 };
                }
            }
        }
    }
    (images, labels)
}

fn quadrant_spec(optimizer: Optimizer, batch: usize) -> TrainSpec {
    TrainSpec {
        encoder: tiny_encoder(8, vec![1], 16),
        input_size: 16,
        input: InputLayout::Images,
        tap: Tap::Embedding,
        head: vec![linear(4)],
        loss: Loss::CrossEntropy,
        optimizer,
        batch_size: batch,
    }
}

fn settings() -> SessionSettings {
    // One thread: the CI machine is shared, and determinism is per thread count anyway.
    SessionSettings {
        intra_threads: 1,
        ..SessionSettings::default()
    }
}

fn trainer(spec: TrainSpec, seed: u64) -> Result<Trainer, super::Failure> {
    let net = Network::new(spec)?;
    let params = net.init_params(seed)?;
    Ok(Trainer::new(
        environment(None)?,
        &settings(),
        net.train_step()?,
        &params,
    )?)
}

fn feed(tr: &mut Trainer, step: u64, batch: usize) -> Result<(), TrainError> {
    let (x, y) = quadrant_batch(batch, step, 17);
    tr.set_input_f32("images", &x)?;
    tr.set_input_i64("labels", &y)
}

fn lr_at(step: u64, total: u64, peak: f32) -> f32 {
    // warm-up then cosine: computed outside the graph, as a pipeline does.
    let warm = 10;
    if step < warm {
        peak * (step + 1) as f32 / warm as f32
    } else {
        let p = (step - warm) as f32 / (total - warm) as f32;
        0.5 * peak * (1.0 + (std::f32::consts::PI * p).cos())
    }
}

#[test]
fn learns_the_quadrant_task() -> TestResult {
    let (batch, steps) = (32, 150);
    let mut tr = trainer(quadrant_spec(Optimizer::adamw(1e-4), batch), 1)?;
    let mut curve = Vec::new();
    let mut last = Vec::new();
    let started = std::time::Instant::now();
    for step in 0..steps {
        feed(&mut tr, step, batch)?;
        let out = tr.step(lr_at(step, steps, 1e-2))?;
        if step % 15 == 0 || step == steps - 1 {
            curve.push(format!("{}:{:.3}", out.step, out.loss));
        }
        if step >= steps - 20 {
            last.push((out.loss, out.metrics[0].1));
        }
    }
    let mean_loss = last.iter().map(|l| l.0).sum::<f32>() / last.len() as f32;
    let mean_acc = last.iter().map(|l| l.1).sum::<f32>() / last.len() as f32;
    eprintln!(
        "quadrant task, {steps} AdamW steps of {batch} in {:.2?}: loss {}; last 20 steps: loss {mean_loss:.4}, accuracy {mean_acc:.3}",
        started.elapsed(),
        curve.join(" ")
    );
    assert_eq!(tr.step_count(), steps);
    if mean_loss > 0.1 || mean_acc < 0.97 {
        return Err(fail(format!(
            "the task was not learnt: loss {mean_loss}, accuracy {mean_acc}"
        )));
    }
    // Held-out batches through the exported inference graph (running statistics).
    let net = Network::new(tr.train_step().spec.clone())?;
    let fwd = net.forward_onnx(&tr.params()?)?;
    let mut s = super::session(&fwd)?;
    let (x, y) = quadrant_batch(64, 10_000, 99);
    let out = super::run(
        &mut s,
        &[("images".into(), vec![64, 3, 16, 16], super::Host::F32(x))],
    )?;
    let pred = &out["prediction"].1;
    let hits = y
        .iter()
        .enumerate()
        .filter(|(i, l)| {
            let row = &pred[i * 4..i * 4 + 4];
            let am = (0..4).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            am as i64 == **l
        })
        .count();
    eprintln!("held-out accuracy through the exported forward graph: {hits}/64");
    if hits < 58 {
        return Err(fail(format!(
            "exported model classifies only {hits}/64 held-out images"
        )));
    }
    Ok(())
}

#[test]
fn resume_from_a_checkpoint_continues_exactly() -> TestResult {
    let batch = 16;
    for opt in [Optimizer::sgd(0.9, 1e-4), Optimizer::adamw(0.01)] {
        let spec = quadrant_spec(opt.clone(), batch);
        let (k, n) = (7u64, 14u64);
        let mut a = trainer(spec.clone(), 3)?;
        let mut straight = Vec::new();
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("ckpt.safetensors");
        for step in 0..n {
            if step == k {
                a.save_checkpoint(&path, serde_json::json!({"seed": 17, "next_batch": step}))?;
            }
            feed(&mut a, step, batch)?;
            straight.push(a.step(lr_at(step, n, 5e-3))?.loss);
        }
        assert!(!dir.path().join("ckpt.safetensors.tmp").exists());
        let ckpt = Checkpoint::load(&path)?;
        assert_eq!(ckpt.meta.step, k);
        let next = ckpt.meta.rng["next_batch"]
            .as_u64()
            .ok_or_else(|| fail("rng state lost"))?;
        let net = Network::new(ckpt.meta.spec.clone())?;
        let mut b = Trainer::resume(environment(None)?, &settings(), net.train_step()?, &ckpt)?;
        let mut resumed = Vec::new();
        for step in next..n {
            feed(&mut b, step, batch)?;
            resumed.push(b.step(lr_at(step, n, 5e-3))?.loss);
        }
        let tail = &straight[k as usize..];
        eprintln!("{opt:?}: uninterrupted {tail:?}\n        resumed at {k}: {resumed:?}");
        for (x, y) in tail.iter().zip(&resumed) {
            if (x - y).abs() > 1e-6 * x.abs().max(1e-6) {
                return Err(fail(format!(
                    "resumed losses {resumed:?} differ from uninterrupted {tail:?}"
                )));
            }
        }
        assert_eq!(a.params()?, b.params()?, "final parameters differ");
        assert_eq!(
            a.optimizer_state()?,
            b.optimizer_state()?,
            "final optimizer state differs"
        );
    }
    Ok(())
}

#[test]
fn corrupt_or_mismatched_checkpoints_are_refused() -> TestResult {
    let spec = quadrant_spec(Optimizer::adamw(0.01), 8);
    let mut tr = trainer(spec.clone(), 5)?;
    feed(&mut tr, 0, 8)?;
    tr.step(1e-3)?;
    let ck = tr.checkpoint(serde_json::json!({"epoch": 0}))?;
    let bytes = ck.to_bytes()?;
    assert_eq!(Checkpoint::from_bytes(&bytes).map_err(fail)?, ck);

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("c.safetensors");
    let bad = |name: &str, data: &[u8], expect: &str| -> TestResult {
        std::fs::write(&path, data)?;
        match Checkpoint::load(&path) {
            Err(TrainError::Checkpoint { reason, .. }) if reason.contains(expect) => Ok(()),
            other => Err(fail(format!(
                "{name}: expected an error about `{expect}`, got {other:?}"
            ))),
        }
    };
    bad("truncated", &bytes[..bytes.len() - 4], "truncated")?;
    bad("empty", &[], "too short")?;
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    bad("bit flip", &flipped, "SHA-256")?;
    let mut header = bytes.clone();
    header[8] = b'[';
    bad("header", &header, "JSON")?;
    let mut long = bytes.clone();
    long[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    bad("header length", &long, "header length")?;

    // A checkpoint of another model is refused when resuming.
    let other = Network::new(TrainSpec {
        head: vec![linear(5)],
        ..spec
    })?;
    match Trainer::resume(environment(None)?, &settings(), other.train_step()?, &ck) {
        Err(TrainError::Checkpoint { .. }) => {}
        Err(e) => return Err(fail(format!("expected a checkpoint mismatch, got {e}"))),
        Ok(_) => return Err(fail("a mismatched checkpoint was accepted")),
    }
    Ok(())
}

#[test]
fn a_non_finite_step_is_not_applied() -> TestResult {
    let mut tr = trainer(quadrant_spec(Optimizer::sgd(0.9, 0.0), 8), 6)?;
    feed(&mut tr, 0, 8)?;
    tr.step(1e-2)?;
    let before = tr.params()?;
    let state = tr.optimizer_state()?;
    let (mut x, _) = quadrant_batch(8, 1, 17);
    x[5] = f32::NAN;
    tr.set_input_f32("images", &x)?;
    match tr.step(1e-2) {
        Err(TrainError::NonFiniteLoss { step: 1, .. }) => {}
        other => {
            return Err(fail(format!(
                "expected NonFiniteLoss at step 1, got {other:?}"
            )));
        }
    }
    assert_eq!(tr.step_count(), 1);
    assert_eq!(tr.params()?, before);
    assert_eq!(tr.optimizer_state()?, state);
    feed(&mut tr, 1, 8)?;
    let out = tr.step(1e-2)?;
    assert!(out.loss.is_finite() && out.step == 2);
    assert!(matches!(
        tr.set_input_f32("images", &[0.0; 3]),
        Err(TrainError::BatchSize { .. })
    ));
    Ok(())
}
