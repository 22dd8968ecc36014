//! Whole networks: gradients of every parameter against finite differences (float32, every input
//! layout and head kind), the optimizer updates against host arithmetic, and the exported forward
//! graph against the training-mode forward.

use std::collections::HashMap;

use super::{Host, TestResult, fail, normal, run, session, uniform};
use crate::model::Layer;
use crate::model::onnx::tensor_proto::DataType;
use crate::model::{EncoderSpec, ParamSet};
use crate::rng::Rng;
use crate::train::net::{InputLayout, Network, Tap, TrainSpec};
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
        ..Default::default()
    }
}

pub(super) fn linear(out: usize) -> Layer {
    Layer::Linear {
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

/// The kinks of a network (Relu, Abs, MaxPool's argmax) frozen at a base point, so finite
/// differences see a smooth function with the same gradient there.
///
/// `probe` is the graph with extra outputs (each Relu's output, each Abs's input, each MaxPool's
/// indices); `frozen` replaces Relu(z) by z·m and Abs(d) by d·s with m, s new inputs, and MaxPool
/// by a Gather of its input at given indices. Fed the masks/signs/indices the probe saw at the base
/// point, `frozen` equals the network there and has the same derivatives, and it stays smooth
/// under the probes of a finite-difference check (no kink is ever crossed).
struct Frozen {
    probe: Vec<u8>,
    frozen: Vec<u8>,
    /// (new input of `frozen`, probe output it is derived from, kind)
    kinks: Vec<(String, String, &'static str)>,
}

fn freeze_kinks(bytes: &[u8]) -> Result<Frozen, super::Failure> {
    use crate::model::graph::{attr_int as ai, attr_tensor, tensor_i64};
    use crate::model::onnx::{NodeProto, TypeProto, ValueInfoProto, decode_model, type_proto};
    use prost::Message;
    let vi = |name: &str, t: DataType| ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(t as i32),
                shape: None,
            })),
            denotation: None,
        }),
        ..Default::default()
    };
    let node = |op: &str,
                i: Vec<String>,
                o: Vec<String>,
                a: Vec<crate::model::onnx::AttributeProto>| NodeProto {
        name: Some(format!("{}/{op}", o[0])),
        op_type: Some(op.to_string()),
        input: i,
        output: o,
        attribute: a,
        ..Default::default()
    };
    let model = decode_model(bytes).map_err(|e| fail(e.to_string()))?;
    let graph = model.graph.clone().ok_or_else(|| fail("no graph"))?;
    let mut probe = model.clone();
    let mut frozen = model.clone();
    let pg = probe.graph.as_mut().ok_or_else(|| fail("no graph"))?;
    let fg = frozen.graph.as_mut().ok_or_else(|| fail("no graph"))?;
    fg.node.clear();
    let mut kinks = Vec::new();
    for n in &graph.node {
        let op = n.op_type.as_deref().unwrap_or("");
        let k = format!("kink.{}", kinks.len());
        match op {
            "Relu" | "Abs" => {
                let seen = if op == "Relu" {
                    n.output[0].clone()
                } else {
                    n.input[0].clone()
                };
                pg.output.push(vi(&seen, DataType::Float));
                fg.input.push(vi(&k, DataType::Float));
                fg.node.push(node(
                    "Mul",
                    vec![n.input[0].clone(), k.clone()],
                    n.output.clone(),
                    vec![],
                ));
                kinks.push((k, seen, if op == "Relu" { "relu" } else { "abs" }));
            }
            "MaxPool" => {
                let idx = n
                    .output
                    .get(1)
                    .cloned()
                    .ok_or_else(|| fail("MaxPool without indices"))?;
                pg.output.push(vi(&idx, DataType::Int64));
                fg.input.push(vi(&k, DataType::Int64));
                let minus1 = tensor_i64("", &[1], &[-1]).map_err(|e| fail(e.to_string()))?;
                let c = format!("{k}.flat_shape");
                fg.node.push(node(
                    "Constant",
                    vec![],
                    vec![c.clone()],
                    vec![attr_tensor("value", minus1)],
                ));
                fg.node.push(node(
                    "Reshape",
                    vec![n.input[0].clone(), c.clone()],
                    vec![format!("{k}.x")],
                    vec![],
                ));
                fg.node.push(node(
                    "Reshape",
                    vec![k.clone(), c],
                    vec![format!("{k}.i")],
                    vec![],
                ));
                fg.node.push(node(
                    "Gather",
                    vec![format!("{k}.x"), format!("{k}.i")],
                    vec![format!("{k}.y")],
                    vec![ai("axis", 0)],
                ));
                fg.node.push(node(
                    "Shape",
                    vec![k.clone()],
                    vec![format!("{k}.shape")],
                    vec![],
                ));
                fg.node.push(node(
                    "Reshape",
                    vec![format!("{k}.y"), format!("{k}.shape")],
                    vec![n.output[0].clone()],
                    vec![],
                ));
                fg.node
                    .push(node("Identity", vec![k.clone()], vec![idx], vec![]));
                kinks.push((k, n.output[1].clone(), "maxpool"));
            }
            _ => fg.node.push(n.clone()),
        }
    }
    Ok(Frozen {
        probe: probe.encode_to_vec(),
        frozen: frozen.encode_to_vec(),
        kinks,
    })
}

/// Directional finite-difference check of every trainable tensor of a network (float32), on the
/// network with its kinks frozen at the base point (see [`Frozen`]).
fn net_check(label: &str, spec: TrainSpec, eps: f64, tol: f64) -> TestResult {
    let net = Network::new(spec)?;
    let gg = net.gradient_graph(Precision::F32)?;
    let sig = &gg.signature;
    let params = perturbed(&net, 3)?;
    let batch = batch_for(&net, sig, 4);
    let fz = freeze_kinks(&gg.onnx)?;
    let mut feed = param_feed(sig, &params);
    feed.extend(batch);
    let base = run(&mut session(&fz.probe)?, &feed)?;
    let mut frozen_feed = feed.clone();
    for (input, seen, kind) in &fz.kinks {
        let (shape, v) = &base[seen];
        let data = match *kind {
            "relu" => Host::F32(v.iter().map(|&y| if y > 0.0 { 1.0 } else { 0.0 }).collect()),
            "abs" => Host::F32(
                v.iter()
                    .map(|&d| {
                        if d > 0.0 {
                            1.0
                        } else if d < 0.0 {
                            -1.0
                        } else {
                            0.0
                        }
                    })
                    .collect(),
            ),
            _ => Host::I64(v.iter().map(|&i| i as i64).collect()),
        };
        frozen_feed.push((input.clone(), shape.clone(), data));
    }
    let mut s = session(&fz.frozen)?;
    let l0 = base[LOSS_OUTPUT].1[0];
    let lf = run(&mut s, &frozen_feed)?[LOSS_OUTPUT].1[0];
    if (lf - l0).abs() > 1e-6 * l0.abs().max(1.0) {
        return Err(fail(format!(
            "{label}: the frozen network gives loss {lf}, the network {l0}"
        )));
    }
    let l0 = l0.abs().max(1.0);
    let mut worst = 0f64;
    let mut worst_name = String::new();
    let mut checked = 0;
    for (k, p) in sig.params.iter().enumerate().filter(|(_, p)| p.trainable) {
        let g = &base[&gradient_name(&p.name)].1;
        let x = match &feed[k].2 {
            Host::F32(v) => v.clone(),
            _ => return Err(fail("param feed is not f32")),
        };
        // A random direction plus the gradient's own direction at the same length: a random
        // direction alone sees only ~1/√n of the gradient, which float32 noise would swamp.
        let r = normal(x.len(), 40 + k as u64);
        let gn = g.iter().map(|a| a * a).sum::<f64>().sqrt();
        let rn = r.iter().map(|a| a * a).sum::<f64>().sqrt();
        let v: Vec<f64> = r
            .iter()
            .zip(g)
            .map(|(r, g)| r + if gn > 0.0 { g * rn / gn } else { 0.0 })
            .collect();
        let vn = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        // The probe moves the tensor by ε of its own size (at least 0.1 per element's RMS).
        let xn = x.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
        let eps = eps * xn.max(0.1 * (x.len() as f64).sqrt()) / vn;
        let mut at = |step: f64| -> Result<f64, super::Failure> {
            let mut f = frozen_feed.clone();
            f[k].2 = Host::F32(
                x.iter()
                    .zip(&v)
                    .map(|(a, d)| (f64::from(*a) + step * d) as f32)
                    .collect(),
            );
            Ok(run(&mut s, &f)?[LOSS_OUTPUT].1[0])
        };
        // Central differences at ε and ε/2, combined by Richardson extrapolation: the O(ε²)
        // truncation term cancels.
        let d1 = (at(eps)? - at(-eps)?) / (2.0 * eps);
        let d2 = (at(eps / 2.0)? - at(-eps / 2.0)?) / eps;
        let fd = (4.0 * d2 - d1) / 3.0;
        let an: f64 = g.iter().zip(&v).map(|(a, b)| a * b).sum();
        // Floors: 1 % of the largest possible directional derivative, and float32 rounding of the
        // loss (1e-6·|L|) divided by the probe step, for gradients that are zero in exact terms.
        let rel = (fd - an).abs()
            / an.abs()
                .max(fd.abs())
                .max(1e-2 * gn * vn)
                .max(2e-6 * l0 / eps);
        if rel > worst {
            worst = worst.max(rel);
            worst_name = p.name.clone();
        }
        checked += 1;
        if rel > tol {
            return Err(fail(format!(
                "{label}: d/d{}: finite differences {fd:.6e}, gradient {an:.6e}, relative error {rel:.2e} > {tol:.0e}",
                p.name
            )));
        }
    }
    eprintln!(
        "network gradcheck {label:<44} {checked:>3} tensors, {} kinks frozen, worst directional relative error {worst:.1e} ({worst_name})",
        fz.kinks.len()
    );
    Ok(())
}

/// Probe size and tolerance of the whole-network checks (float32). With the kinks frozen the
/// loss is smooth along every probe; each probe moves a tensor by 1 % of its norm, along a random
/// direction plus the gradient's own direction, and two central differences (ε, ε/2) are
/// combined by Richardson extrapolation, so truncation error is O(ε⁴). What remains is float32
/// rounding of the loss (≈ 1e-6·L through the whole network) divided by the probe: the worst
/// relative errors seen were 1.3e-3 … 2.5e-3 at 1 % (BatchNorm biases, whose gradients are
/// smallest), 2e-2 at 0.3 % and 4e-2 at 0.1 % (noise-dominated). Without freezing the kinks,
/// crossed Relu/MaxPool kinks gave errors up to 1.2. A wiring mistake gives errors of order 1.
const NET_EPS: f64 = 1e-2;
const NET_TOL: f64 = 1e-2;

fn spec(
    input: InputLayout,
    tap: Tap,
    head: Vec<Layer>,
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
            vec![linear(8), Layer::Relu, linear(5)],
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
            vec![linear(8), Layer::BatchNorm, Layer::Relu, linear(4)],
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
                Layer::ConvTranspose {
                    out_channels: 6,
                    kernel: 4,
                    stride: 2,
                    padding: 1,
                    output_padding: 0,
                    bias: true,
                },
                Layer::BatchNorm,
                Layer::Relu,
                Layer::Upsample { scale: 2 },
                Layer::Conv {
                    out_channels: 2,
                    kernel: 3,
                    stride: 1,
                    padding: 1,
                    groups: 1,
                    bias: true,
                },
                Layer::Tanh,
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
                Layer::Upsample { scale: 4 },
                Layer::Conv {
                    out_channels: 5,
                    kernel: 3,
                    stride: 1,
                    padding: 1,
                    groups: 1,
                    bias: true,
                },
                Layer::AvgPool {
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
        vec![linear(6), Layer::BatchNorm, Layer::Relu, linear(3)],
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
    let _ = net.emit(&mut t, crate::model::Mode::Train, &images)?;
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
        vec![linear(8), Layer::BatchNorm, Layer::Relu, linear(4)],
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
    let mut sp = spec(
        InputLayout::Images,
        Tap::Embedding,
        vec![linear(4)],
        Loss::CrossEntropy,
        8,
        16,
    );
    sp.optimizer = Optimizer::adamw(0.01);
    let net = Network::new(sp)?;
    let ts = net.train_step()?;
    let params = perturbed(&net, 11)?;
    let batch = batch_for(&net, &ts.signature, 12);
    let mut feed = param_feed(&ts.signature, &params);
    for s in &ts.signature.state {
        feed.push((
            s.name.clone(),
            s.shape.clone(),
            Host::F32(vec![0.0; s.numel()]),
        ));
    }
    feed.extend(batch);
    feed.push((LR_INPUT.into(), vec![], Host::F32(vec![0.01])));
    feed.push((STEP_INPUT.into(), vec![], Host::I64(vec![0])));
    let mut results = Vec::new();
    for level in [
        Optimization::Disable,
        Optimization::Extended,
        Optimization::All,
    ] {
        let settings = SessionSettings {
            optimization: level,
            ..SessionSettings::default()
        };
        let mut s = session_from_bytes(environment(None)?, &settings, &ts.onnx)?;
        results.push((level, run(&mut s, &feed)?));
    }
    let (_, base) = &results[0];
    for (level, out) in &results[1..] {
        for (name, (_, v)) in base {
            let w = &out[name].1;
            let err = v
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0f64, f64::max);
            let scale = v.iter().fold(1e-3f64, |m, x| m.max(x.abs()));
            if err > 1e-4 * scale {
                return Err(fail(format!(
                    "{level:?}: output {name} differs from level Disable by {err:.2e}"
                )));
            }
        }
    }
    Ok(())
}

#[test]
fn exported_forward_graphs_run_for_every_head_kind() -> TestResult {
    let specs = [
        spec(
            InputLayout::Images,
            Tap::Embedding,
            vec![linear(4)],
            Loss::CrossEntropy,
            4,
            16,
        ),
        spec(
            InputLayout::Tiles { count: 3 },
            Tap::Embedding,
            vec![linear(8), Layer::Relu, linear(5)],
            Loss::CrossEntropy,
            3,
            8,
        ),
        spec(
            InputLayout::Views { count: 2 },
            Tap::Embedding,
            vec![linear(8), Layer::BatchNorm, Layer::Relu, linear(4)],
            Loss::NtXent { temperature: 0.5 },
            4,
            8,
        ),
        spec(
            InputLayout::Images,
            Tap::FeatureMap,
            vec![
                Layer::ConvTranspose {
                    out_channels: 6,
                    kernel: 4,
                    stride: 2,
                    padding: 1,
                    output_padding: 0,
                    bias: true,
                },
                Layer::BatchNorm,
                Layer::Relu,
                Layer::Upsample { scale: 2 },
                Layer::Conv {
                    out_channels: 2,
                    kernel: 3,
                    stride: 1,
                    padding: 1,
                    groups: 1,
                    bias: true,
                },
                Layer::AvgPool {
                    kernel: 2,
                    stride: 2,
                },
                Layer::Sigmoid,
            ],
            Loss::MaskedL2 { mask_shape: None },
            3,
            16,
        ),
    ];
    for sp in specs {
        let net = Network::new(sp)?;
        let params = perturbed(&net, 2)?;
        let fwd = net.forward_onnx(&params)?;
        let mut s = session(&fwd)?;
        // Any batch size: the exported graph's batch dimension is symbolic.
        let mut shape = net.images_shape().to_vec();
        shape[0] = 2;
        let n = shape.iter().product();
        let out = run(
            &mut s,
            &[("images".into(), shape.clone(), Host::F32(vec![0.25; n]))],
        )?;
        let (pshape, values) = &out["prediction"];
        let rows = match net.spec().input {
            InputLayout::Views { count } => 2 * count,
            _ => 2,
        };
        assert_eq!(pshape[0], rows, "{:?}", net.spec().input);
        assert_eq!(&pshape[1..], &net.prediction_shape()[1..]);
        assert!(values.iter().all(|v| v.is_finite()));
    }
    Ok(())
}
