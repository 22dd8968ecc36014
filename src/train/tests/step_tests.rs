//! Whole networks: gradients of every parameter against finite differences (float32, every input
//! layout and head kind), the optimizer updates against host arithmetic, and the exported forward
//! graph against the training-mode forward.

use std::collections::HashMap;

use super::{Host, TestResult, fail, normal, run, session, uniform};
use crate::model::{EncoderSpec, ParamSet};
use crate::rng::Rng;
use crate::train::net::{HeadLayer, InputLayout, Network, Tap, TrainSpec};
use crate::train::step::{
    ElemType, LOSS_OUTPUT, LR_INPUT, STEP_INPUT, Signature, gradient_name, new_name, state_name,
};
use crate::train::tape::Precision;
use crate::train::{Loss, Optimizer, TrainError};

/// A tiny encoder: stem conv/BN/ReLU/maxpool, `stages` residual stages, pool, embed.
pub(super) fn tiny_encoder(width: u32, stages: Vec<u32>, embedding_dim: u32) -> EncoderSpec {
    EncoderSpec {
        width,
        stages,
        embedding_dim,
        in_channels: 3,
    }
}

pub(super) fn linear(out: usize) -> HeadLayer {
    HeadLayer::Linear {
        out_features: out,
        bias: true,
    }
}

/// Initial parameters with BatchNorm affine terms and statistics moved off identity.
pub(super) fn perturbed(net: &Network, seed: u64) -> Result<ParamSet, TrainError> {
    let mut p = net.init_params(seed)?;
    let mut rng = Rng::for_key(seed, "perturb");
    for spec in net.param_specs() {
        let (lo, hi) = if spec.name.ends_with("running_var") {
            (0.5, 1.5)
        } else if spec.name.ends_with("running_mean") {
            (-0.2, 0.2)
        } else if spec.shape.len() == 1 && spec.name.contains("bn")
            || spec.name.contains("head") && spec.shape.len() == 1
        {
            if spec.name.ends_with("weight") {
                (0.6, 1.4)
            } else {
                (-0.2, 0.2)
            }
        } else {
            continue;
        };
        if let Some(d) = p.data_mut(&spec.name) {
            for v in d.iter_mut() {
                *v = lo + (hi - lo) * rng.uniform_f32();
            }
        }
    }
    Ok(p)
}

/// Deterministic batch data for every batch input of `sig`.
pub(super) fn batch_for(
    net: &Network,
    sig: &Signature,
    seed: u64,
) -> Vec<(String, Vec<usize>, Host)> {
    let k = net.prediction_shape().get(1).copied().unwrap_or(1);
    let mut rng = Rng::new(seed);
    sig.batch
        .iter()
        .map(|b| {
            let n = b.numel();
            let data = match (b.name.as_str(), b.elem) {
                (_, ElemType::I64) => Host::I64((0..n).map(|_| rng.index(k) as i64).collect()),
                ("mask", _) => Host::F32(
                    (0..n)
                        .map(|_| if rng.bernoulli(0.5) { 1.0 } else { 0.0 })
                        .collect(),
                ),
                ("targets", _) if matches!(net.spec().loss, Loss::SoftCrossEntropy { .. }) => {
                    // one-hot-ish soft targets along axis 1
                    let inner: usize = b.shape[2..].iter().product();
                    let mut v = vec![0.02f32 / (k as f32); n];
                    for s in 0..b.shape[0] {
                        for p in 0..inner {
                            let c = rng.index(k);
                            v[(s * k + c) * inner + p] += 0.98;
                        }
                    }
                    Host::F32(v)
                }
                _ => Host::F32((0..n).map(|_| 2.0 * rng.uniform_f32() - 1.0).collect()),
            };
            (b.name.clone(), b.shape.clone(), data)
        })
        .collect()
}

fn param_feed(sig: &Signature, params: &ParamSet) -> Vec<(String, Vec<usize>, Host)> {
    sig.params
        .iter()
        .map(|p| {
            let v = params
                .get(&p.name)
                .map(|x| x.data.clone())
                .unwrap_or_default();
            (p.name.clone(), p.shape.clone(), Host::F32(v))
        })
        .collect()
}

/// Directional finite-difference check of every trainable tensor of a network (float32).
fn net_check(label: &str, spec: TrainSpec, eps: f64, tol: f64) -> TestResult {
    let net = Network::new(spec)?;
    let gg = net.gradient_graph(Precision::F32)?;
    let sig = &gg.signature;
    let params = perturbed(&net, 3)?;
    let batch = batch_for(&net, sig, 4);
    let mut s = session(&gg.onnx)?;
    let mut feed = param_feed(sig, &params);
    feed.extend(batch);
    let base = run(&mut s, &feed)?;
    let l0 = base[LOSS_OUTPUT].1[0].abs().max(1.0);
    let mut worst = 0f64;
    let mut checked = 0;
    for (k, p) in sig.params.iter().enumerate().filter(|(_, p)| p.trainable) {
        let g = &base[&gradient_name(&p.name)].1;
        let x = match &feed[k].2 {
            Host::F32(v) => v.clone(),
            _ => return Err(fail("param feed is not f32")),
        };
        let v = normal(x.len(), 40 + k as u64);
        let gn = g.iter().map(|a| a * a).sum::<f64>().sqrt();
        let vn = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        let mut at = |sign: f64| -> Result<f64, super::Failure> {
            let mut f = feed.clone();
            f[k].2 = Host::F32(
                x.iter()
                    .zip(&v)
                    .map(|(a, d)| (f64::from(*a) + sign * eps * d) as f32)
                    .collect(),
            );
            Ok(run(&mut s, &f)?[LOSS_OUTPUT].1[0])
        };
        let fd = (at(1.0)? - at(-1.0)?) / (2.0 * eps);
        let an: f64 = g.iter().zip(&v).map(|(a, b)| a * b).sum();
        // Floors: 1 % of the largest possible directional derivative, and float32 rounding of the
        // loss (1e-6·|L|) divided by the probe step, for gradients that are zero in exact terms.
        let rel = (fd - an).abs()
            / an.abs()
                .max(fd.abs())
                .max(1e-2 * gn * vn)
                .max(1e-6 * l0 / eps);
        worst = worst.max(rel);
        checked += 1;
        if rel > tol {
            return Err(fail(format!(
                "{label}: d/d{}: finite differences {fd:.6e}, gradient {an:.6e}, relative error {rel:.2e} > {tol:.0e}",
                p.name
            )));
        }
    }
    eprintln!(
        "network gradcheck {label:<44} {checked:>3} tensors, worst directional relative error {worst:.1e}"
    );
    Ok(())
}

/// Probe step and tolerance of the whole-network checks. Float32 rounding of the loss (≈1e-7·L)
/// limits how small the step can be, and Relu/MaxPool kinks crossed by a probe add an error that
/// shrinks with the step: the worst relative errors seen were 1.2 at ε = 1e-2, 0.9 at 1e-3 and
/// 0.05 at 3e-4 (at 1e-4 rounding dominates). A wiring mistake (a gradient not flowing through a
/// reshape, a missing contribution of a shared encoder) gives errors of order 1 at every ε, so
/// 0.1 at 3e-4 separates the two. Each rule is checked precisely in `gradcheck`.
const NET_EPS: f64 = 3e-4;
const NET_TOL: f64 = 0.1;

fn spec(
    input: InputLayout,
    tap: Tap,
    head: Vec<HeadLayer>,
    loss: Loss,
    batch: usize,
    size: u32,
) -> TrainSpec {
    TrainSpec {
        encoder: tiny_encoder(4, vec![1, 1], 6),
        input_size: size,
        input,
        tap,
        head,
        loss,
        optimizer: Optimizer::sgd(0.9, 0.0),
        batch_size: batch,
    }
}

#[test]
fn network_gradients_classification() -> TestResult {
    net_check(
        "images → encoder → linear → cross_entropy",
        spec(
            InputLayout::Images,
            Tap::Embedding,
            vec![linear(4)],
            Loss::CrossEntropy,
            4,
            16,
        ),
        NET_EPS,
        NET_TOL,
    )
}

#[test]
fn network_gradients_jigsaw_tiles() -> TestResult {
    net_check(
        "tiles(3) → shared encoder → concat → mlp → ce",
        spec(
            InputLayout::Tiles { count: 3 },
            Tap::Embedding,
            vec![linear(8), HeadLayer::Relu, linear(5)],
            Loss::CrossEntropy,
            3,
            8,
        ),
        NET_EPS,
        NET_TOL,
    )
}

#[test]
fn network_gradients_contrastive_views() -> TestResult {
    net_check(
        "views(2) → encoder → proj(bn) → nt_xent",
        spec(
            InputLayout::Views { count: 2 },
            Tap::Embedding,
            vec![linear(8), HeadLayer::BatchNorm, HeadLayer::Relu, linear(4)],
            Loss::NtXent { temperature: 0.5 },
            4,
            8,
        ),
        NET_EPS,
        NET_TOL,
    )
}

#[test]
fn network_gradients_dense_decoders() -> TestResult {
    net_check(
        "feature map → convT/up+conv decoder → masked_l2",
        spec(
            InputLayout::Images,
            Tap::FeatureMap,
            vec![
                HeadLayer::ConvTranspose {
                    out_channels: 6,
                    kernel: 4,
                    stride: 2,
                    padding: 1,
                    output_padding: 0,
                    bias: true,
                },
                HeadLayer::BatchNorm,
                HeadLayer::Relu,
                HeadLayer::Upsample { scale: 2 },
                HeadLayer::Conv {
                    out_channels: 2,
                    kernel: 3,
                    stride: 1,
                    padding: 1,
                    groups: 1,
                    bias: true,
                },
                HeadLayer::Tanh,
            ],
            Loss::MaskedL1 {
                mask_shape: Some(vec![1, 8, 8]),
            },
            3,
            16,
        ),
        NET_EPS,
        NET_TOL,
    )?;
    net_check(
        "feature map → up+conv → avgpool → soft ce (weighted)",
        spec(
            InputLayout::Images,
            Tap::FeatureMap,
            vec![
                HeadLayer::Upsample { scale: 4 },
                HeadLayer::Conv {
                    out_channels: 5,
                    kernel: 3,
                    stride: 1,
                    padding: 1,
                    groups: 1,
                    bias: true,
                },
                HeadLayer::AvgPool {
                    kernel: 2,
                    stride: 2,
                },
            ],
            Loss::SoftCrossEntropy {
                class_weights: Some(vec![1.0, 0.5, 2.0, 1.5, 0.7]),
            },
            2,
            16,
        ),
        NET_EPS,
        NET_TOL,
    )
}

/// Runs `graph` on params, state, batch, lr and step; returns every output.
fn run_step(
    onnx: &[u8],
    sig: &Signature,
    params: &ParamSet,
    state: &HashMap<String, Vec<f32>>,
    batch: &[(String, Vec<usize>, Host)],
    lr: f32,
    step: i64,
) -> Result<super::Outputs, super::Failure> {
    let mut feed = param_feed(sig, params);
    for s in &sig.state {
        feed.push((
            s.name.clone(),
            s.shape.clone(),
            Host::F32(state[&s.name].clone()),
        ));
    }
    feed.extend(batch.iter().cloned());
    if sig.has_optimizer {
        feed.push((LR_INPUT.into(), vec![], Host::F32(vec![lr])));
        feed.push((STEP_INPUT.into(), vec![], Host::I64(vec![step])));
    }
    let mut s = session(onnx)?;
    run(&mut s, &feed)
}

#[test]
fn optimizer_updates_match_host_arithmetic() -> TestResult {
    let optimizers = [
        Optimizer::Sgd {
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        },
        Optimizer::Sgd {
            momentum: 0.9,
            weight_decay: 5e-4,
            nesterov: false,
        },
        Optimizer::Sgd {
            momentum: 0.8,
            weight_decay: 1e-3,
            nesterov: true,
        },
        Optimizer::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.05,
        },
        Optimizer::AdamW {
            beta1: 0.8,
            beta2: 0.99,
            eps: 1e-6,
            weight_decay: 0.0,
        },
    ];
    for opt in optimizers {
        let mut sp = spec(
            InputLayout::Images,
            Tap::Embedding,
            vec![linear(3)],
            Loss::CrossEntropy,
            4,
            16,
        );
        sp.optimizer = opt.clone();
        let net = Network::new(sp)?;
        let ts = net.train_step()?;
        let gg = net.gradient_graph(Precision::F32)?;
        let params = perturbed(&net, 5)?;
        let batch = batch_for(&net, &ts.signature, 6);
        let grads = run_step(
            &gg.onnx,
            &gg.signature,
            &params,
            &HashMap::new(),
            &batch,
            0.0,
            0,
        )?;
        let mut state = HashMap::new();
        for (i, s) in ts.signature.state.iter().enumerate() {
            let v: Vec<f32> = uniform(s.numel(), 0.0, 0.01, 50 + i as u64)
                .iter()
                .map(|&x| x as f32)
                .collect();
            // exp_avg may be negative; exp_avg_sq must not be.
            let v = if s.name.contains("exp_avg_sq") {
                v
            } else {
                v.iter().map(|x| x - 0.005).collect()
            };
            state.insert(s.name.clone(), v);
        }
        let (lr, step) = (0.05f32, 3i64);
        let out = run_step(&ts.onnx, &ts.signature, &params, &state, &batch, lr, step)?;
        assert_eq!(
            out[LOSS_OUTPUT].1, grads[LOSS_OUTPUT].1,
            "loss differs between step and gradient graph"
        );
        let mut worst = 0f64;
        for p in &ts.signature.params {
            let x: Vec<f64> = params
                .get(&p.name)
                .map(|q| q.data.iter().map(|&v| f64::from(v)).collect())
                .unwrap_or_default();
            let got = &out[&new_name(&p.name)].1;
            if !p.trainable {
                assert_eq!(
                    got,
                    &grads[&new_name(&p.name)].1,
                    "running statistics differ"
                );
                continue;
            }
            let g = &grads[&gradient_name(&p.name)].1;
            let st = |slot: &str| -> Vec<f64> {
                state[&state_name(slot, &p.name)]
                    .iter()
                    .map(|&v| f64::from(v))
                    .collect()
            };
            let lr = f64::from(lr);
            let (expect, expect_state): (Vec<f64>, Vec<(String, Vec<f64>)>) = match opt {
                Optimizer::Sgd {
                    momentum,
                    weight_decay,
                    nesterov,
                } => {
                    let (mu, wd) = (f64::from(momentum), f64::from(weight_decay));
                    let gg: Vec<f64> = g.iter().zip(&x).map(|(g, x)| g + wd * x).collect();
                    if mu > 0.0 {
                        let v: Vec<f64> = st("momentum")
                            .iter()
                            .zip(&gg)
                            .map(|(v, g)| mu * v + g)
                            .collect();
                        let d: Vec<f64> = if nesterov {
                            gg.iter().zip(&v).map(|(g, v)| g + mu * v).collect()
                        } else {
                            v.clone()
                        };
                        (
                            x.iter().zip(&d).map(|(x, d)| x - lr * d).collect(),
                            vec![("momentum".into(), v)],
                        )
                    } else {
                        (x.iter().zip(&gg).map(|(x, d)| x - lr * d).collect(), vec![])
                    }
                }
                Optimizer::AdamW {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let (b1, b2, e, wd) = (
                        f64::from(beta1),
                        f64::from(beta2),
                        f64::from(eps),
                        f64::from(weight_decay),
                    );
                    let t = (step + 1) as f64;
                    let m: Vec<f64> = st("exp_avg")
                        .iter()
                        .zip(g)
                        .map(|(m, g)| b1 * m + (1.0 - b1) * g)
                        .collect();
                    let v: Vec<f64> = st("exp_avg_sq")
                        .iter()
                        .zip(g)
                        .map(|(v, g)| b2 * v + (1.0 - b2) * g * g)
                        .collect();
                    let (bc1, bc2) = (1.0 - b1.powf(t), 1.0 - b2.powf(t));
                    let np = x
                        .iter()
                        .zip(m.iter().zip(&v))
                        .map(|(x, (m, v))| {
                            x * (1.0 - lr * wd) - lr / bc1 * m / (v.sqrt() / bc2.sqrt() + e)
                        })
                        .collect();
                    (np, vec![("exp_avg".into(), m), ("exp_avg_sq".into(), v)])
                }
            };
            let cmp = |what: &str, got: &[f64], want: &[f64]| -> Result<f64, super::Failure> {
                let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
                let err = got
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f64, f64::max)
                    / scale;
                if err > 2e-6 {
                    return Err(fail(format!(
                        "{opt:?}: {what} of {} differs from host arithmetic by {err:.2e} (relative to its largest entry)",
                        p.name
                    )));
                }
                Ok(err)
            };
            worst = worst.max(cmp("update", got, &expect)?);
            for (slot, want) in expect_state {
                worst = worst.max(cmp(
                    &slot,
                    &out[&new_name(&state_name(&slot, &p.name))].1,
                    &want,
                )?);
            }
        }
        eprintln!(
            "optimizer {opt:?}: worst relative difference from f64 host arithmetic {worst:.1e}"
        );
    }
    Ok(())
}

#[test]
fn exported_forward_matches_training_forward_given_batch_statistics() -> TestResult {
    // Train mode normalises with batch statistics; the export uses running statistics. With the
    // running statistics set to the batch statistics, both must compute the same loss.
    let sp = spec(
        InputLayout::Tiles { count: 2 },
        Tap::Embedding,
        vec![linear(6), HeadLayer::BatchNorm, HeadLayer::Relu, linear(3)],
        Loss::CrossEntropy,
        4,
        8,
    );
    let net = Network::new(sp)?;
    let gg = net.gradient_graph(Precision::F32)?;
    let mut params = perturbed(&net, 8)?;
    for spec in net.param_specs() {
        if (spec.name.ends_with("running_mean") || spec.name.ends_with("running_var"))
            && let Some(d) = params.data_mut(&spec.name)
        {
            d.iter_mut().for_each(|v| *v = 0.0);
        }
    }
    let batch = batch_for(&net, &gg.signature, 9);
    let out = run_step(
        &gg.onnx,
        &gg.signature,
        &params,
        &HashMap::new(),
        &batch,
        0.0,
        0,
    )?;
    // new = 0.9·0 + 0.1·batch (var unbiased): recover the batch statistics.
    let mut eval_params = params.clone();
    for p in &gg.signature.params {
        if p.name.ends_with("running_mean") || p.name.ends_with("running_var") {
            let m = p.shape.iter().product::<usize>();
            let count = bn_count(&net, &p.name)?;
            let new = &out[&new_name(&p.name)].1;
            let v: Vec<f32> = new
                .iter()
                .map(|&x| {
                    if p.name.ends_with("running_var") {
                        (10.0 * x * (count - 1.0) / count) as f32
                    } else {
                        (10.0 * x) as f32
                    }
                })
                .collect();
            assert_eq!(v.len(), m);
            if let Some(d) = eval_params.data_mut(&p.name) {
                d.copy_from_slice(&v);
            }
        }
    }
    let fwd = net.forward_onnx(&eval_params)?;
    let mut s = session(&fwd)?;
    let images = batch
        .iter()
        .find(|b| b.0 == "images")
        .ok_or_else(|| fail("no images"))?
        .clone();
    let labels = match &batch
        .iter()
        .find(|b| b.0 == "labels")
        .ok_or_else(|| fail("no labels"))?
        .2
    {
        Host::I64(v) => v.clone(),
        _ => return Err(fail("labels not i64")),
    };
    let pred = &run(&mut s, &[images])?["prediction"];
    assert_eq!(pred.0, vec![4, 3]);
    let mut loss = 0.0;
    for (i, &l) in labels.iter().enumerate() {
        let row = &pred.1[i * 3..i * 3 + 3];
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        loss += lse - row[l as usize];
    }
    loss /= labels.len() as f64;
    let train_loss = out[LOSS_OUTPUT].1[0];
    let diff = (loss - train_loss).abs();
    eprintln!(
        "exported forward loss {loss:.7}, training forward loss {train_loss:.7}, difference {diff:.1e}"
    );
    if diff > 2e-3 * train_loss.abs().max(1.0) {
        return Err(fail(format!(
            "exported forward gives loss {loss}, training forward {train_loss}"
        )));
    }
    // The encoder export is exactly the model module's.
    let enc = net.encoder_onnx(&eval_params)?;
    let mut only = ParamSet::new();
    for s in net.encoder().param_specs() {
        let p = eval_params.get(&s.name).ok_or_else(|| fail("missing"))?;
        only.push(p.name.clone(), p.shape.clone(), p.data.clone())?;
    }
    assert_eq!(enc, net.encoder().to_onnx(&only)?);
    Ok(())
}

/// Values each channel's statistics average over for the BatchNorm owning buffer `name`.
fn bn_count(net: &Network, name: &str) -> Result<f64, super::Failure> {
    let prefix = name.rsplit_once('.').map(|(a, _)| a).unwrap_or("");
    let mut t = crate::train::tape::Tape::new("probe", Precision::F32);
    for p in net.step_param_specs() {
        t.input_float(&p.name, &p.shape)?;
    }
    let images = t.input_float("images", net.images_shape())?;
    let _ = net.emit_train(&mut t, &images)?;
    for e in t.entries() {
        if let crate::train::tape::Entry::BatchNorm(r) = e
            && r.gamma == format!("{prefix}.weight")
        {
            return Ok(r.count as f64);
        }
    }
    Err(fail(format!("no BatchNorm for {name}")))
}

#[test]
fn emission_is_deterministic_and_specs_are_validated() -> TestResult {
    let sp = spec(
        InputLayout::Images,
        Tap::Embedding,
        vec![linear(4)],
        Loss::CrossEntropy,
        4,
        16,
    );
    let a = Network::new(sp.clone())?.train_step()?;
    let b = Network::new(sp.clone())?.train_step()?;
    assert_eq!(a.onnx, b.onnx);
    // Every input has its `new.` output with the same shape (what the ping-pong relies on).
    assert!(
        a.signature
            .params
            .iter()
            .all(|p| !p.name.starts_with("new."))
    );

    let mut bad = sp.clone();
    bad.tap = Tap::FeatureMap;
    assert!(matches!(Network::new(bad), Err(TrainError::Spec(m)) if m.contains("flatten")));
    let mut bad = sp.clone();
    bad.loss = Loss::NtXent { temperature: 0.1 };
    assert!(matches!(Network::new(bad), Err(TrainError::Spec(_))));
    let mut bad = sp.clone();
    bad.loss = Loss::SoftCrossEntropy {
        class_weights: Some(vec![1.0; 3]),
    };
    assert!(matches!(Network::new(bad), Err(TrainError::Spec(m)) if m.contains("class_weights")));
    let mut bad = sp.clone();
    bad.optimizer = Optimizer::Sgd {
        momentum: 1.5,
        weight_decay: 0.0,
        nesterov: false,
    };
    assert!(matches!(Network::new(bad), Err(TrainError::Spec(_))));
    let mut bad = sp;
    bad.batch_size = 0;
    assert!(Network::new(bad).is_err());

    // The spec round-trips through JSON (it is stored in checkpoints and model metadata).
    let sp = spec(
        InputLayout::Views { count: 2 },
        Tap::Embedding,
        vec![linear(8), HeadLayer::BatchNorm, HeadLayer::Relu, linear(4)],
        Loss::NtXent { temperature: 0.2 },
        4,
        8,
    );
    let json = serde_json::to_string(&sp).map_err(|e| fail(e.to_string()))?;
    let back: TrainSpec = serde_json::from_str(&json).map_err(|e| fail(e.to_string()))?;
    assert_eq!(back, sp);
    Ok(())
}

#[test]
fn graph_optimisation_levels_agree() -> TestResult {
    // FACTS.md records wrong outputs at level `All` for weights given as initializers; a train
    // step's parameters are graph inputs, and every level must compute the same update.
    use crate::runtime::{Optimization, SessionSettings, environment, session_from_bytes};
    let mut sp = spec(InputLayout::Images, Tap::Embedding, vec![linear(4)], Loss::CrossEntropy, 8, 16);
    sp.optimizer = Optimizer::adamw(0.01);
    let net = Network::new(sp)?;
    let ts = net.train_step()?;
    let params = perturbed(&net, 11)?;
    let batch = batch_for(&net, &ts.signature, 12);
    let mut feed = param_feed(&ts.signature, &params);
    for s in &ts.signature.state {
        feed.push((s.name.clone(), s.shape.clone(), Host::F32(vec![0.0; s.numel()])));
    }
    feed.extend(batch);
    feed.push((LR_INPUT.into(), vec![], Host::F32(vec![0.01])));
    feed.push((STEP_INPUT.into(), vec![], Host::I64(vec![0])));
    let mut results = Vec::new();
    for level in [Optimization::Disable, Optimization::Extended, Optimization::All] {
        let settings = SessionSettings { optimization: level, ..SessionSettings::default() };
        let mut s = session_from_bytes(environment(None)?, &settings, &ts.onnx)?;
        results.push((level, run(&mut s, &feed)?));
    }
    let (_, base) = &results[0];
    for (level, out) in &results[1..] {
        for (name, (_, v)) in base {
            let w = &out[name].1;
            let err = v.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f64, f64::max);
            let scale = v.iter().fold(1e-3f64, |m, x| m.max(x.abs()));
            if err > 1e-4 * scale {
                return Err(fail(format!("{level:?}: output {name} differs from level Disable by {err:.2e}")));
            }
        }
    }
    Ok(())
}
