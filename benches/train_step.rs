//! Train-step throughput: the default built-in encoder (width 32, stages [1,1,1,1], 256-d
//! embedding) + a 4-way linear head + softmax cross-entropy, SGD (momentum) and AdamW, batch 64 of
//! 96×96 images, on ONNX Runtime's CPU provider. Reports images/s (median over timed steps) for
//! each optimizer and graph-optimisation level, and, with `--profile`, where the time goes (ORT's
//! profiler, summed per op type and listing the slowest nodes).
//!
//!   cargo bench --bench train_step [-- --steps 10 --batch 64 --size 96 --threads 0 --profile]
//!
//! Inputs are deterministic (seeded), parameters are the encoder's seeded initialisation. The
//! comparison with PyTorch's eager CPU step of the same architecture is
//! `scripts/dev/train_torch_bench.py` (run it on the same machine, same thread count).

use std::collections::HashMap;
use std::time::Instant;

use ort::session::Session;
use sslpipe::model::EncoderSpec;
use sslpipe::rng::Rng;
use sslpipe::runtime::{Device, Optimization, SessionSettings, environment};
use sslpipe::train::{
    InputLayout, Layer, Loss, Network, Optimizer, RuleOptions, Tap, TrainSpec, Trainer, WeightGrad,
};

struct Args {
    steps: usize,
    batch: usize,
    size: u32,
    threads: usize,
    profile: bool,
    levels: Vec<Optimization>,
    optimizers: Vec<String>,
    rules: Vec<(&'static str, RuleOptions)>,
}

fn parse() -> Args {
    let mut a = Args {
        steps: 8,
        batch: 64,
        size: 96,
        threads: 0,
        profile: false,
        levels: vec![Optimization::Extended, Optimization::All],
        optimizers: vec!["sgd".into(), "adamw".into()],
        rules: vec![("default", RuleOptions::default())],
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let next = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--steps" => a.steps = next.parse().unwrap_or(a.steps),
            "--batch" => a.batch = next.parse().unwrap_or(a.batch),
            "--size" => a.size = next.parse().unwrap_or(a.size),
            "--threads" => a.threads = next.parse().unwrap_or(a.threads),
            "--levels" => {
                a.levels = next
                    .split(',')
                    .filter_map(|l| match l {
                        "disable" => Some(Optimization::Disable),
                        "basic" => Some(Optimization::Basic),
                        "extended" => Some(Optimization::Extended),
                        "all" => Some(Optimization::All),
                        _ => None,
                    })
                    .collect()
            }
            "--optimizers" => a.optimizers = next.split(',').map(String::from).collect(),
            "--rules" => {
                a.rules = next
                    .split(',')
                    .filter_map(|r| match r {
                        "default" => Some(("default", RuleOptions::default())),
                        "convtranspose" => Some((
                            "convtranspose",
                            RuleOptions {
                                conv_dx_as_conv: false,
                                ..RuleOptions::default()
                            },
                        )),
                        "im2col" => Some((
                            "im2col",
                            RuleOptions {
                                conv_dw: WeightGrad::Im2col,
                                ..RuleOptions::default()
                            },
                        )),
                        "dilated" => Some((
                            "dilated",
                            RuleOptions {
                                conv_dw: WeightGrad::DilatedConv,
                                ..RuleOptions::default()
                            },
                        )),
                        "alt" => Some((
                            "alt",
                            RuleOptions {
                                conv_dx_as_conv: false,
                                conv_dw: WeightGrad::DilatedConv,
                            },
                        )),
                        _ => None,
                    })
                    .collect()
            }
            "--profile" => {
                a.profile = true;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn spec(optimizer: Optimizer, batch: usize, size: u32) -> TrainSpec {
    TrainSpec {
        encoder: EncoderSpec::default(),
        input_size: size,
        input: InputLayout::Images,
        tap: Tap::Embedding,
        head: vec![Layer::Linear {
            out_features: 4,
            bias: true,
        }],
        loss: Loss::CrossEntropy,
        optimizer,
        batch_size: batch,
    }
}

/// User + system CPU time of this process so far (Linux `/proc/self/stat`; 0 elsewhere). With one
/// intra-op thread it measures the work of a step even on a busy machine.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn level_name(l: Optimization) -> &'static str {
    match l {
        Optimization::Disable => "disable",
        Optimization::Basic => "basic",
        Optimization::Extended => "extended",
        Optimization::All => "all",
    }
}

/// Sums an ORT profile (chrome-trace JSON) per op type; returns the text of a small report.
fn summarise_profile(path: &str, steps: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return format!("could not read profile {path}");
    };
    let Ok(events) = serde_json::from_str::<Vec<serde_json::Value>>(&text) else {
        return "profile is not a JSON array".into();
    };
    let mut per_op: HashMap<String, (f64, usize)> = HashMap::new();
    let mut per_node: HashMap<String, (String, f64)> = HashMap::new();
    let mut total = 0.0;
    for e in &events {
        if e["cat"] != "Node" || !e["name"].as_str().unwrap_or("").ends_with("_kernel_time") {
            continue;
        }
        let dur = e["dur"].as_f64().unwrap_or(0.0) / 1000.0 / steps as f64;
        let op = e["args"]["op_name"].as_str().unwrap_or("?").to_string();
        let node = e["name"]
            .as_str()
            .unwrap_or("?")
            .trim_end_matches("_kernel_time")
            .to_string();
        let entry = per_op.entry(op.clone()).or_default();
        entry.0 += dur;
        entry.1 += 1;
        per_node.entry(node).or_insert((op, 0.0)).1 += dur;
        total += dur;
    }
    let mut ops: Vec<_> = per_op.into_iter().collect();
    ops.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    let mut out = format!("  kernel time per step {total:.1} ms, by op type:\n");
    for (op, (ms, n)) in ops.iter().take(14) {
        out += &format!(
            "    {op:<22} {ms:8.1} ms  {:5.1} %  ({} nodes)\n",
            100.0 * ms / total,
            n / steps.max(1)
        );
    }
    let mut nodes: Vec<_> = per_node.into_iter().collect();
    nodes.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    out += "  slowest nodes:\n";
    for (name, (op, ms)) in nodes.iter().take(12) {
        out += &format!("    {ms:8.2} ms  {op:<16} {name}\n");
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse();
    let env = environment(None)?;
    println!(
        "train step: default encoder + linear(4) + cross-entropy, batch {} of 3x{}x{}, {} timed steps after 2 warm-up, intra-op threads {}",
        args.batch,
        args.size,
        args.size,
        args.steps,
        if args.threads == 0 {
            "auto".to_string()
        } else {
            args.threads.to_string()
        }
    );
    for opt_name in &args.optimizers {
        let optimizer = match opt_name.as_str() {
            "sgd" => Optimizer::sgd(0.9, 5e-4),
            _ => Optimizer::adamw(0.05),
        };
        let net = Network::new(spec(optimizer, args.batch, args.size))?;
        for &(rules_name, rules) in &args.rules {
            let step = net.train_step_with(rules)?;
            let params = net.init_params(7)?;
            let n = args.batch * 3 * (args.size as usize).pow(2);
            let mut rng = Rng::new(3);
            let images: Vec<f32> = (0..n).map(|_| 2.0 * rng.uniform_f32() - 1.0).collect();
            let labels: Vec<i64> = (0..args.batch).map(|_| rng.index(4) as i64).collect();
            for &level in &args.levels {
                let settings = SessionSettings {
                    device: Device::Cpu,
                    intra_threads: args.threads,
                    optimization: level,
                    ..SessionSettings::default()
                };
                let profile_path = std::env::temp_dir()
                    .join(format!(
                        "train_step_profile_{opt_name}_{rules_name}_{}",
                        level_name(level)
                    ))
                    .display()
                    .to_string();
                let mut trainer = if args.profile {
                    let mut b = Session::builder(env)?.with_optimization_level(match level {
                        Optimization::Disable => {
                            ort::session::builder::GraphOptimizationLevel::Disable
                        }
                        Optimization::Basic => {
                            ort::session::builder::GraphOptimizationLevel::Level1
                        }
                        Optimization::Extended => {
                            ort::session::builder::GraphOptimizationLevel::Level2
                        }
                        Optimization::All => ort::session::builder::GraphOptimizationLevel::All,
                    })?;
                    if args.threads > 0 {
                        b = b.with_intra_threads(args.threads)?;
                    }
                    let session = b
                        .with_profiling(&profile_path)?
                        .commit_from_memory(&step.onnx)?;
                    Trainer::from_session(session, Device::Cpu, step.clone(), &params, None, 0)?
                } else {
                    Trainer::new(env, &settings, step.clone(), &params)?
                };
                trainer.set_input_f32("images", &images)?;
                trainer.set_input_i64("labels", &labels)?;
                let mut times = Vec::new();
                let mut losses = Vec::new();
                let mut cpu = Vec::new();
                for s in 0..args.steps + 2 {
                    let t0 = Instant::now();
                    let c0 = cpu_seconds();
                    let out = trainer.step(0.01)?;
                    if s >= 2 {
                        times.push(t0.elapsed().as_secs_f64());
                        cpu.push(cpu_seconds() - c0);
                    }
                    losses.push(out.loss);
                }
                let m = median(times.clone());
                let cpu_m = median(cpu);
                println!(
                    "  {opt_name:<6} opt={:<9} rules={rules_name:<13} {:7.1} images/s  ({:.0} ms/step median, min {:.0} ms, {:.0} CPU-ms; loss {:.3} -> {:.3})",
                    level_name(level),
                    args.batch as f64 / m,
                    1e3 * m,
                    1e3 * times.iter().cloned().fold(f64::MAX, f64::min),
                    1e3 * cpu_m,
                    losses[0],
                    losses[losses.len() - 1]
                );
                if args.profile {
                    let file = trainer.end_profiling()?;
                    println!("{}", summarise_profile(&file, args.steps + 2));
                }
            }
        }
    }
    Ok(())
}
