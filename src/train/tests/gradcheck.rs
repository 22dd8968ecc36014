//! Finite-difference checks of every vector-Jacobian rule and every loss.
//!
//! Method: a tiny graph applies the op under test to random inputs; a non-scalar result y is
//! reduced to L = Σ y ⊙ r with a fixed random r, so every output element's gradient matters. The
//! emitted backward pass gives g = ∂L/∂x for every input x; each is compared with central
//! differences (L(x + εv) − L(x − εv)) / 2ε
//! - along two random directions v (⟨g, v⟩, all elements at once), and
//! - along single coordinates (the largest |g_j| and a few random j).
//!
//! Precision and tolerances:
//! - Float64 wherever ONNX Runtime's CPU provider has double kernels (everything but Conv,
//!   ConvTranspose, AveragePool, GlobalAveragePool, Resize): ε = 1e-5, relative error ≤ 1e-6.
//!   Truncation error is O(ε²) ≈ 1e-10 and rounding ≈ 1e-16/ε ≈ 1e-11, so 1e-6 leaves margin while
//!   any wrong term in a rule (errors of order 1) fails by orders of magnitude.
//! - Float32 for the ops without double kernels. These ops are linear in each input, so L is
//!   linear along every probe and central differences have no truncation error: what remains is
//!   float32 rounding of L (≈ 1e-7 · Σ|y·r|) divided by 2ε. With ε = 0.1 and O(1) data that is
//!   about 1e-5 relative; the tolerance is 1e-3 (see each test's printed figures).
//! - Inputs of non-smooth ops (Relu, Abs, MaxPool) are kept at least 0.05 away from their kinks
//!   (ties, zero) while ε·|v| ≤ 1e-4, so no probe crosses a kink.
//! - The Conv rules are checked in each of their formulations ([`RuleOptions`]).
//! - Whole networks (every input layout and head kind) are checked in `step_tests.rs`, in float32
//!   with their kinks frozen, to 1e-2 (the reasoning is there).
//!
//! Every check prints its worst errors (`cargo test train::tests::gradcheck -- --nocapture`).

use super::{Failure, Host, TestResult, away_from_zero, fail, normal, run, session, uniform};
use crate::model::graph::{attr_int, attr_ints, attr_string};
use crate::model::onnx::tensor_proto::DataType;
use crate::train::TrainError;
use crate::train::autodiff;
use crate::train::loss::Loss;
use crate::train::ops::batch_norm_train;
use crate::train::tape::{Precision, RuleOptions, Tape, WeightGrad};

/// Emits the graph under test on the tape from its input names; returns the result tensor.
type Builder<'a> = dyn Fn(&mut Tape, &[String]) -> Result<String, TrainError> + 'a;

/// One float input of a checked graph.
pub(super) struct In {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
    /// Whether its gradient is checked.
    pub wrt: bool,
}

pub(super) fn inp(name: &str, shape: &[usize], data: Vec<f64>) -> In {
    In {
        name: name.into(),
        shape: shape.to_vec(),
        data,
        wrt: true,
    }
}

pub(super) fn fixed(name: &str, shape: &[usize], data: Vec<f64>) -> In {
    In {
        name: name.into(),
        shape: shape.to_vec(),
        data,
        wrt: false,
    }
}

#[derive(Clone, Copy)]
pub(super) struct Opts {
    pub eps: f64,
    pub tol: f64,
}

impl Opts {
    pub fn f64() -> Self {
        Opts {
            eps: 1e-5,
            tol: 1e-6,
        }
    }
    pub fn f32_linear() -> Self {
        Opts {
            eps: 0.1,
            tol: 1e-3,
        }
    }
}

/// Worst relative errors seen.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Report {
    pub directional: f64,
    pub coordinate: f64,
}

/// Builds `build`'s graph, differentiates it and compares with central differences.
pub(super) fn check(
    label: &str,
    precision: Precision,
    inputs: &[In],
    ints: &[(&str, Vec<usize>, Vec<i64>)],
    opts: Opts,
    build: impl Fn(&mut Tape, &[String], &[String]) -> Result<String, TrainError>,
) -> Result<Report, Failure> {
    check_with(
        label,
        precision,
        RuleOptions::default(),
        inputs,
        ints,
        opts,
        build,
    )
}

/// [`check`] with a choice of rule formulations.
pub(super) fn check_with(
    label: &str,
    precision: Precision,
    rules: RuleOptions,
    inputs: &[In],
    ints: &[(&str, Vec<usize>, Vec<i64>)],
    opts: Opts,
    build: impl Fn(&mut Tape, &[String], &[String]) -> Result<String, TrainError>,
) -> Result<Report, Failure> {
    let mut t = Tape::new(label, precision);
    t.set_rules(rules);
    let mut names = Vec::new();
    for i in inputs {
        names.push(t.input_float(&i.name, &i.shape)?);
    }
    let mut inames = Vec::new();
    for (n, s, _) in ints {
        inames.push(t.input(n, DataType::Int64, s)?);
    }
    let y = build(&mut t, &names, &inames)?;
    let ys = t.shape(&y)?;
    let loss = if ys.is_empty() {
        y
    } else {
        let n: usize = ys.iter().product();
        let r = t.const_float("probe", &ys, &uniform(n, -1.0, 1.0, 7))?;
        let m = t.node("Mul", &[&y, &r], "probe", vec![])?;
        t.node("ReduceSum", &[&m], "probe", vec![attr_int("keepdims", 0)])?
    };
    let wrt: Vec<String> = inputs
        .iter()
        .filter(|i| i.wrt)
        .map(|i| i.name.clone())
        .collect();
    let grads = autodiff::backward(&mut t, &loss, &wrt)?;
    t.rename(&loss, "L")?;
    t.output("L")?;
    for w in &wrt {
        let n = format!("g:{w}");
        t.rename(&grads[w], &n)?;
        t.output(&n)?;
    }
    let bytes = t.finish()?;
    let mut s = session(&bytes)?;

    let host = |v: &[f64]| match precision {
        Precision::F32 => Host::F32(v.iter().map(|&x| x as f32).collect()),
        Precision::F64 => Host::F64(v.to_vec()),
    };
    let feed = |over: Option<(usize, &[f64])>| {
        let mut f: Vec<(String, Vec<usize>, Host)> = Vec::new();
        for (k, i) in inputs.iter().enumerate() {
            let data = match over {
                Some((j, d)) if j == k => host(d),
                _ => host(&i.data),
            };
            f.push((i.name.clone(), i.shape.clone(), data));
        }
        for (n, sh, d) in ints {
            f.push((n.to_string(), sh.clone(), Host::I64(d.clone())));
        }
        f
    };
    let base = run(&mut s, &feed(None))?;
    let mut eval = |k: usize, x: &[f64]| -> Result<f64, Failure> {
        let out = run(&mut s, &feed(Some((k, x))))?;
        Ok(out["L"].1[0])
    };
    let mut report = Report::default();
    for (k, i) in inputs.iter().enumerate().filter(|(_, i)| i.wrt) {
        let g = &base[&format!("g:{}", i.name)].1;
        if g.len() != i.data.len() {
            return Err(fail(format!(
                "{label}: gradient of {} has {} values, expected {}",
                i.name,
                g.len(),
                i.data.len()
            )));
        }
        if g.iter().any(|v| !v.is_finite()) {
            return Err(fail(format!(
                "{label}: gradient of {} is not finite",
                i.name
            )));
        }
        let gnorm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        for trial in 0..2u64 {
            let v = normal(g.len(), 100 + trial + 10 * k as u64);
            let vnorm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let plus: Vec<f64> = i
                .data
                .iter()
                .zip(&v)
                .map(|(x, d)| x + opts.eps * d)
                .collect();
            let minus: Vec<f64> = i
                .data
                .iter()
                .zip(&v)
                .map(|(x, d)| x - opts.eps * d)
                .collect();
            let fd = (eval(k, &plus)? - eval(k, &minus)?) / (2.0 * opts.eps);
            let an: f64 = g.iter().zip(&v).map(|(a, b)| a * b).sum();
            let scale = an.abs().max(fd.abs()).max(1e-2 * gnorm * vnorm).max(1e-12);
            let rel = (fd - an).abs() / scale;
            report.directional = report.directional.max(rel);
            if rel > opts.tol {
                return Err(fail(format!(
                    "{label}: d/d{} along a random direction: finite differences {fd:.9e}, rule {an:.9e} (relative error {rel:.2e} > {:.0e})",
                    i.name, opts.tol
                )));
            }
        }
        // Single coordinates: the largest gradient entry and three random ones.
        let gmax = g.iter().fold(0f64, |m, v| m.max(v.abs()));
        let argmax = g
            .iter()
            .enumerate()
            .fold(0, |b, (j, v)| if v.abs() > g[b].abs() { j } else { b });
        let mut coords = vec![argmax];
        coords.extend(
            uniform(3, 0.0, g.len() as f64, 5 + k as u64)
                .iter()
                .map(|&u| (u as usize).min(g.len() - 1)),
        );
        for j in coords {
            let mut p = i.data.clone();
            p[j] += opts.eps;
            let mut m = i.data.clone();
            m[j] -= opts.eps;
            let fd = (eval(k, &p)? - eval(k, &m)?) / (2.0 * opts.eps);
            let scale = g[j].abs().max(fd.abs()).max(1e-2 * gmax).max(1e-12);
            let rel = (fd - g[j]).abs() / scale;
            report.coordinate = report.coordinate.max(rel);
            if rel > opts.tol {
                return Err(fail(format!(
                    "{label}: d/d{}[{j}]: finite differences {fd:.9e}, rule {:.9e} (relative error {rel:.2e} > {:.0e})",
                    i.name, g[j], opts.tol
                )));
            }
        }
    }
    eprintln!(
        "gradcheck {label:<40} {:?}  directional {:.1e}  coordinate {:.1e}",
        precision, report.directional, report.coordinate
    );
    Ok(report)
}

fn f64c(
    label: &str,
    inputs: &[In],
    build: impl Fn(&mut Tape, &[String], &[String]) -> Result<String, TrainError>,
) -> TestResult {
    check(label, Precision::F64, inputs, &[], Opts::f64(), build)?;
    Ok(())
}

fn unary(op: &str, data: Vec<f64>) -> TestResult {
    let shape = [3, 5];
    f64c(op, &[inp("x", &shape, data)], |t, x, _| {
        t.node(op, &[&x[0]], "y", vec![])
    })
}

#[test]
fn elementwise_unary_rules() -> TestResult {
    unary("Relu", away_from_zero(15, 0.05, 2.0, 1))?;
    unary("Sigmoid", uniform(15, -3.0, 3.0, 2))?;
    unary("Tanh", uniform(15, -2.0, 2.0, 3))?;
    unary("Exp", uniform(15, -2.0, 2.0, 4))?;
    unary("Log", uniform(15, 0.2, 3.0, 5))?;
    unary("Sqrt", uniform(15, 0.2, 3.0, 6))?;
    unary("Neg", uniform(15, -2.0, 2.0, 7))?;
    unary("Abs", away_from_zero(15, 0.05, 2.0, 8))?;
    unary("Reciprocal", away_from_zero(15, 0.3, 2.0, 9))?;
    unary("Identity", uniform(15, -2.0, 2.0, 10))?;
    f64c(
        "Softmax axis 1",
        &[inp("x", &[2, 4, 3], uniform(24, -2.0, 2.0, 11))],
        |t, x, _| t.node("Softmax", &[&x[0]], "y", vec![attr_int("axis", 1)]),
    )?;
    f64c(
        "LogSoftmax axis -1",
        &[inp("x", &[3, 5], uniform(15, -2.0, 2.0, 12))],
        |t, x, _| t.node("LogSoftmax", &[&x[0]], "y", vec![attr_int("axis", -1)]),
    )?;
    Ok(())
}

#[test]
fn broadcasting_binary_rules() -> TestResult {
    for op in ["Add", "Sub", "Mul", "Div"] {
        // a [2,3,4] with b [3,1] (broadcast both over the batch and over the last axis)
        let b = if op == "Div" {
            away_from_zero(3, 0.5, 2.0, 2)
        } else {
            uniform(3, -2.0, 2.0, 2)
        };
        f64c(
            &format!("{op} [2,3,4] by [3,1]"),
            &[
                inp("a", &[2, 3, 4], uniform(24, -2.0, 2.0, 1)),
                inp("b", &[3, 1], b),
            ],
            |t, x, _| t.node(op, &[&x[0], &x[1]], "y", vec![]),
        )?;
        // and the other way round: a scalar-like [1] left operand
        let a = uniform(1, 0.5, 2.0, 3);
        let b = if op == "Div" {
            away_from_zero(6, 0.5, 2.0, 4)
        } else {
            uniform(6, -2.0, 2.0, 4)
        };
        f64c(
            &format!("{op} [1] by [2,3]"),
            &[inp("a", &[1], a), inp("b", &[2, 3], b)],
            |t, x, _| t.node(op, &[&x[0], &x[1]], "y", vec![]),
        )?;
    }
    f64c(
        "Mul x by x (one tensor, two uses)",
        &[inp("x", &[4], uniform(4, -2.0, 2.0, 5))],
        |t, x, _| t.node("Mul", &[&x[0], &x[0]], "y", vec![]),
    )?;
    f64c(
        "Sum of three",
        &[
            inp("a", &[2, 3], uniform(6, -1.0, 1.0, 6)),
            inp("b", &[3], uniform(3, -1.0, 1.0, 7)),
            inp("c", &[2, 3], uniform(6, -1.0, 1.0, 8)),
        ],
        |t, x, _| t.node("Sum", &[&x[0], &x[1], &x[2]], "y", vec![]),
    )?;
    f64c(
        "Where",
        &[
            inp("a", &[2, 3], uniform(6, -1.0, 1.0, 9)),
            inp("b", &[3], uniform(3, -1.0, 1.0, 10)),
        ],
        |t, x, _| {
            let z = t.scalar(0.0)?;
            let c = t.emit("Greater", &[&x[0], &z], "c", vec![])?;
            t.node("Where", &[&c, &x[0], &x[1]], "y", vec![])
        },
    )?;
    Ok(())
}

#[test]
fn matrix_product_rules() -> TestResult {
    for (ta, tb) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        let a_shape = if ta == 1 { [4, 3] } else { [3, 4] };
        let b_shape = if tb == 1 { [5, 4] } else { [4, 5] };
        f64c(
            &format!("Gemm transA={ta} transB={tb} bias [5]"),
            &[
                inp("a", &a_shape, uniform(12, -1.0, 1.0, 1)),
                inp("b", &b_shape, uniform(20, -1.0, 1.0, 2)),
                inp("c", &[5], uniform(5, -1.0, 1.0, 3)),
            ],
            |t, x, _| {
                t.node(
                    "Gemm",
                    &[&x[0], &x[1], &x[2]],
                    "y",
                    vec![attr_int("transA", ta), attr_int("transB", tb)],
                )
            },
        )?;
    }
    f64c(
        "Gemm bias [3,1]",
        &[
            inp("a", &[3, 4], uniform(12, -1.0, 1.0, 4)),
            inp("b", &[4, 5], uniform(20, -1.0, 1.0, 5)),
            inp("c", &[3, 1], uniform(3, -1.0, 1.0, 6)),
        ],
        |t, x, _| t.node("Gemm", &[&x[0], &x[1], &x[2]], "y", vec![]),
    )?;
    f64c(
        "MatMul [2,3,4]x[4,5]",
        &[
            inp("a", &[2, 3, 4], uniform(24, -1.0, 1.0, 7)),
            inp("b", &[4, 5], uniform(20, -1.0, 1.0, 8)),
        ],
        |t, x, _| t.node("MatMul", &[&x[0], &x[1]], "y", vec![]),
    )?;
    f64c(
        "MatMul [3,4]x[2,4,5]",
        &[
            inp("a", &[3, 4], uniform(12, -1.0, 1.0, 9)),
            inp("b", &[2, 4, 5], uniform(40, -1.0, 1.0, 10)),
        ],
        |t, x, _| t.node("MatMul", &[&x[0], &x[1]], "y", vec![]),
    )?;
    Ok(())
}

#[test]
fn reduction_and_shape_rules() -> TestResult {
    let x = || inp("x", &[2, 3, 4], uniform(24, -1.5, 1.5, 1));
    for keep in [0, 1] {
        f64c(
            &format!("ReduceMean axes [0,2] keepdims {keep}"),
            &[x()],
            |t, x, _| {
                t.node(
                    "ReduceMean",
                    &[&x[0]],
                    "y",
                    vec![attr_ints("axes", &[0, 2]), attr_int("keepdims", keep)],
                )
            },
        )?;
        f64c(
            &format!("ReduceSum axes [1] keepdims {keep}"),
            &[x()],
            |t, x, _| {
                let a = t.ints1("axes", &[1])?;
                t.node(
                    "ReduceSum",
                    &[&x[0], &a],
                    "y",
                    vec![attr_int("keepdims", keep)],
                )
            },
        )?;
        f64c(
            &format!("ReduceSumSquare axes [-1] keepdims {keep}"),
            &[x()],
            |t, x, _| {
                t.node(
                    "ReduceSumSquare",
                    &[&x[0]],
                    "y",
                    vec![attr_ints("axes", &[-1]), attr_int("keepdims", keep)],
                )
            },
        )?;
    }
    f64c("ReduceMean all", &[x()], |t, x, _| {
        t.node("ReduceMean", &[&x[0]], "y", vec![attr_int("keepdims", 0)])
    })?;
    f64c("Reshape", &[x()], |t, x, _| {
        let s = t.ints1("shape", &[4, -1])?;
        t.node("Reshape", &[&x[0], &s], "y", vec![])
    })?;
    f64c("Flatten", &[x()], |t, x, _| {
        t.node("Flatten", &[&x[0]], "y", vec![attr_int("axis", 2)])
    })?;
    f64c("Transpose", &[x()], |t, x, _| {
        t.node(
            "Transpose",
            &[&x[0]],
            "y",
            vec![attr_ints("perm", &[2, 0, 1])],
        )
    })?;
    f64c("Unsqueeze+Squeeze", &[x()], |t, x, _| {
        let a = t.ints1("axes", &[1])?;
        let u = t.node("Unsqueeze", &[&x[0], &a], "u", vec![])?;
        let e = t.ints1("shape", &[2, 2, 3, 4])?;
        let u = t.node("Expand", &[&u, &e], "e", vec![])?;
        let b = t.ints1("axes", &[0])?;
        let e1 = t.ints1("ends", &[1])?;
        let s = t.node("Slice", &[&u, &b, &e1, &b], "s", vec![])?;
        t.node("Squeeze", &[&s, &b], "y", vec![])
    })?;
    f64c(
        "Expand [3,1] to [2,3,4]",
        &[inp("x", &[3, 1], uniform(3, -1.0, 1.0, 2))],
        |t, x, _| {
            let s = t.ints1("shape", &[2, 3, 4])?;
            t.node("Expand", &[&x[0], &s], "y", vec![])
        },
    )?;
    f64c(
        "Concat axis 1",
        &[
            inp("a", &[2, 3, 2], uniform(12, -1.0, 1.0, 3)),
            inp("b", &[2, 1, 2], uniform(4, -1.0, 1.0, 4)),
        ],
        |t, x, _| {
            t.node(
                "Concat",
                &[&x[0], &x[1], &x[0]],
                "y",
                vec![attr_int("axis", 1)],
            )
        },
    )?;
    f64c(
        "Split axis -1, one output unused",
        &[inp("x", &[2, 3, 5], uniform(30, -1.0, 1.0, 5))],
        |t, x, _| {
            let s = t.ints1("split", &[2, 1, 2])?;
            let parts = t.nodes(
                "Split",
                &[&x[0], &s],
                &["p0", "p1", "p2"],
                vec![attr_int("axis", -1)],
            )?;
            t.node("Mul", &[&parts[0], &parts[2]], "y", vec![])
        },
    )?;
    f64c(
        "Slice [1:3] on axis 2, [-2:] on axis 0",
        &[inp("x", &[3, 2, 4], uniform(24, -1.0, 1.0, 6))],
        |t, x, _| {
            let s = t.ints1("starts", &[1, -2])?;
            let e = t.ints1("ends", &[3, i64::MAX])?;
            let a = t.ints1("axes", &[2, 0])?;
            t.node("Slice", &[&x[0], &s, &e, &a], "y", vec![])
        },
    )?;
    check(
        "GatherElements axis 1 (repeated indices)",
        Precision::F64,
        &[inp("x", &[2, 4], uniform(8, -1.0, 1.0, 7))],
        &[("idx", vec![2, 3], vec![0, 3, 3, 1, 1, 2])],
        Opts::f64(),
        |t, x, i| {
            t.node(
                "GatherElements",
                &[&x[0], &i[0]],
                "y",
                vec![attr_int("axis", 1)],
            )
        },
    )?;
    Ok(())
}

/// Values 0.1 apart in a shuffled order: no ties, so MaxPool's argmax is stable under probes.
fn distinct(n: usize, seed: u64) -> Vec<f64> {
    let mut v: Vec<f64> = (0..n).map(|i| 0.1 * i as f64 - 0.05 * n as f64).collect();
    crate::rng::Rng::new(seed).shuffle(&mut v);
    v
}

#[test]
fn pooling_rules() -> TestResult {
    let mp = |k: i64, s: i64, p: i64| {
        vec![
            attr_ints("kernel_shape", &[k, k]),
            attr_ints("strides", &[s, s]),
            attr_ints("pads", &[p, p, p, p]),
        ]
    };
    for (k, s, p, hw) in [(3, 2, 1, 7), (2, 2, 0, 6), (3, 1, 1, 5)] {
        let label = format!("MaxPool k{k} s{s} p{p} on {hw}x{hw}");
        let n = 2 * 3 * hw * hw;
        check(
            &label,
            Precision::F64,
            &[inp("x", &[2, 3, hw, hw], distinct(n, 3))],
            &[],
            Opts {
                eps: 1e-4,
                tol: 1e-6,
            },
            |t, x, _| {
                let o = t.nodes("MaxPool", &[&x[0]], &["y", "idx"], mp(k, s, p))?;
                Ok(o[0].clone())
            },
        )?;
    }
    let f32c = |label: &str, x: In, build: &Builder<'_>| -> TestResult {
        check(
            label,
            Precision::F32,
            &[x],
            &[],
            Opts::f32_linear(),
            |t, n, _| build(t, n),
        )?;
        Ok(())
    };
    f32c(
        "GlobalAveragePool",
        inp("x", &[2, 3, 5, 4], uniform(120, -1.0, 1.0, 1)),
        &|t, x| t.node("GlobalAveragePool", &[&x[0]], "y", vec![]),
    )?;
    f32c(
        "AveragePool k2 s2",
        inp("x", &[2, 3, 6, 7], uniform(252, -1.0, 1.0, 2)),
        &|t, x| {
            t.node(
                "AveragePool",
                &[&x[0]],
                "y",
                vec![
                    attr_ints("kernel_shape", &[2, 2]),
                    attr_ints("strides", &[2, 2]),
                ],
            )
        },
    )?;
    f32c(
        "AveragePool k3 s2 p1 count_include_pad",
        inp("x", &[2, 2, 7, 6], uniform(168, -1.0, 1.0, 3)),
        &|t, x| {
            let mut a = mp(3, 2, 1);
            a.push(attr_int("count_include_pad", 1));
            t.node("AveragePool", &[&x[0]], "y", a)
        },
    )?;
    f32c(
        "Resize nearest x2",
        inp("x", &[2, 3, 3, 4], uniform(72, -1.0, 1.0, 4)),
        &|t, x| {
            let s = t.ints1("sizes", &[2, 3, 6, 8])?;
            t.node(
                "Resize",
                &[&x[0], "", "", &s],
                "y",
                vec![
                    attr_string("mode", "nearest"),
                    attr_string("coordinate_transformation_mode", "asymmetric"),
                    attr_string("nearest_mode", "floor"),
                ],
            )
        },
    )?;
    Ok(())
}

fn conv_case(
    label: &str,
    x: [usize; 4],
    w: [usize; 4],
    stride: i64,
    pad: i64,
    group: i64,
    bias: bool,
) -> TestResult {
    let mut ins = vec![
        inp("x", &x, uniform(x.iter().product(), -1.0, 1.0, 1)),
        inp("w", &w, uniform(w.iter().product(), -1.0, 1.0, 2)),
    ];
    if bias {
        ins.push(inp("b", &[w[0]], uniform(w[0], -1.0, 1.0, 3)));
    }
    // Both formulations of the Conv rules: the default (stride-1 input gradient as a Conv with
    // flipped weights, weight gradient by im2col + Gemm) and the alternative (ConvTranspose,
    // dilated Conv over batch-transposed tensors).
    let alt = RuleOptions {
        conv_dx_as_conv: false,
        conv_dw: WeightGrad::DilatedConv,
    };
    let im2col = RuleOptions {
        conv_dw: WeightGrad::Im2col,
        ..RuleOptions::default()
    };
    for (rules, tag) in [
        (RuleOptions::default(), ""),
        (im2col, " [im2col]"),
        (alt, " [alt rules]"),
    ] {
        check_with(
            &format!("{label}{tag}"),
            Precision::F32,
            rules,
            &ins,
            &[],
            Opts::f32_linear(),
            |t, n, _| {
                let refs: Vec<&str> = n.iter().map(|s| s.as_str()).collect();
                t.node(
                    "Conv",
                    &refs,
                    "y",
                    vec![
                        attr_ints("kernel_shape", &[w[2] as i64, w[3] as i64]),
                        attr_ints("strides", &[stride, stride]),
                        attr_ints("pads", &[pad, pad, pad, pad]),
                        attr_int("group", group),
                    ],
                )
            },
        )?;
    }
    Ok(())
}

#[test]
fn convolution_rules() -> TestResult {
    conv_case("Conv 3x3 s1 p1", [2, 3, 6, 6], [4, 3, 3, 3], 1, 1, 1, false)?;
    conv_case(
        "Conv 3x3 s2 p1 odd input, bias",
        [2, 3, 7, 7],
        [4, 3, 3, 3],
        2,
        1,
        1,
        true,
    )?;
    conv_case(
        "Conv 3x3 s2 p1 even input",
        [2, 2, 8, 6],
        [3, 2, 3, 3],
        2,
        1,
        1,
        false,
    )?;
    conv_case(
        "Conv 1x1 s2 p0 (projection)",
        [2, 4, 7, 7],
        [6, 4, 1, 1],
        2,
        0,
        1,
        false,
    )?;
    conv_case("Conv 5x5 s3 p2", [2, 2, 11, 9], [3, 2, 5, 5], 3, 2, 1, true)?;
    conv_case(
        "Conv 3x3 groups 2",
        [2, 4, 6, 6],
        [6, 2, 3, 3],
        1,
        1,
        2,
        true,
    )?;
    conv_case(
        "Conv 3x3 s2 depthwise (x2 multiplier)",
        [2, 3, 7, 7],
        [6, 1, 3, 3],
        2,
        1,
        3,
        false,
    )?;
    for (s, p, op) in [(2, 1, 1), (2, 0, 0), (1, 1, 0), (3, 1, 2)] {
        let label = format!("ConvTranspose 3x3 s{s} p{p} output_padding {op}, bias");
        let ins = [
            inp("x", &[2, 4, 4, 5], uniform(160, -1.0, 1.0, 4)),
            inp("w", &[4, 3, 3, 3], uniform(108, -1.0, 1.0, 5)),
            inp("b", &[3], uniform(3, -1.0, 1.0, 6)),
        ];
        let dilated = RuleOptions {
            conv_dw: WeightGrad::DilatedConv,
            ..RuleOptions::default()
        };
        for (rules, tag) in [(RuleOptions::default(), ""), (dilated, " [dilated]")] {
            check_with(
                &format!("{label}{tag}"),
                Precision::F32,
                rules,
                &ins,
                &[],
                Opts::f32_linear(),
                |t, n, _| {
                    t.node(
                        "ConvTranspose",
                        &[&n[0], &n[1], &n[2]],
                        "y",
                        vec![
                            attr_ints("kernel_shape", &[3, 3]),
                            attr_ints("strides", &[s, s]),
                            attr_ints("pads", &[p, p, p, p]),
                            attr_ints("output_padding", &[op, op]),
                        ],
                    )
                },
            )?;
        }
    }
    check(
        "ConvTranspose 2x2 s2 groups 2",
        Precision::F32,
        &[
            inp("x", &[2, 4, 3, 3], uniform(72, -1.0, 1.0, 7)),
            inp("w", &[4, 1, 2, 2], uniform(16, -1.0, 1.0, 8)),
        ],
        &[],
        Opts::f32_linear(),
        |t, n, _| {
            t.node(
                "ConvTranspose",
                &[&n[0], &n[1]],
                "y",
                vec![
                    attr_ints("kernel_shape", &[2, 2]),
                    attr_ints("strides", &[2, 2]),
                    attr_int("group", 2),
                ],
            )
        },
    )?;
    Ok(())
}

#[test]
fn batch_norm_training_rule() -> TestResult {
    for shape in [vec![4, 3, 3, 2], vec![6, 5]] {
        let c = shape[1];
        let n: usize = shape.iter().product();
        // Per-channel offsets and scales so the statistics are far from the identity.
        let mut x = uniform(n, -1.0, 1.0, 1);
        for (i, v) in x.iter_mut().enumerate() {
            let ch = (i / shape[2..].iter().product::<usize>()) % c;
            *v = *v * (0.5 + ch as f64) + ch as f64 - 1.0;
        }
        let ins = [
            inp("x", &shape, x),
            inp("gamma", &[c], uniform(c, 0.5, 1.5, 2)),
            inp("beta", &[c], uniform(c, -0.5, 0.5, 3)),
            fixed("rm", &[c], vec![0.0; c]),
            fixed("rv", &[c], vec![1.0; c]),
        ];
        f64c(
            &format!("BatchNorm (training) {shape:?}"),
            &ins,
            |t, n, _| {
                let (y, _, _) =
                    batch_norm_train(t, &n[0], &n[1], &n[2], &n[3], &n[4], 1e-5, 0.1, "bn")?;
                // A non-linearity after BN makes the check sensitive to every term of dx.
                t.node("Tanh", &[&y], "y", vec![])
            },
        )?;
    }
    Ok(())
}

fn loss_check(
    label: &str,
    loss: Loss,
    pred: In,
    targets: Vec<In>,
    ints: &[(&str, Vec<usize>, Vec<i64>)],
) -> TestResult {
    let mut ins = vec![pred];
    ins.extend(targets);
    check(label, Precision::F64, &ins, ints, Opts::f64(), |t, n, i| {
        let mut targets: Vec<String> = i.to_vec();
        targets.extend(n[1..].iter().cloned());
        Ok(loss.emit(t, &n[0], &targets)?.loss)
    })?;
    Ok(())
}

#[test]
fn loss_gradients() -> TestResult {
    loss_check(
        "cross_entropy [5,4]",
        Loss::CrossEntropy,
        inp("z", &[5, 4], uniform(20, -2.0, 2.0, 1)),
        vec![],
        &[("labels", vec![5], vec![0, 3, 1, 1, 2])],
    )?;
    loss_check(
        "cross_entropy dense [2,3,2,2]",
        Loss::CrossEntropy,
        inp("z", &[2, 3, 2, 2], uniform(24, -2.0, 2.0, 2)),
        vec![],
        &[("labels", vec![2, 2, 2], vec![0, 1, 2, 2, 1, 0, 0, 1])],
    )?;
    // Soft targets that sum to one per position.
    let soft = |b: usize, k: usize, hw: usize, seed: u64| {
        let raw = uniform(b * k * hw, 0.05, 1.0, seed);
        let mut out = raw.clone();
        for n in 0..b {
            for p in 0..hw {
                let s: f64 = (0..k).map(|c| raw[(n * k + c) * hw + p]).sum();
                for c in 0..k {
                    out[(n * k + c) * hw + p] /= s;
                }
            }
        }
        out
    };
    loss_check(
        "soft_cross_entropy weighted [2,4,2,3]",
        Loss::SoftCrossEntropy {
            class_weights: Some(vec![0.5, 2.0, 1.0, 3.0]),
        },
        inp("z", &[2, 4, 2, 3], uniform(48, -2.0, 2.0, 3)),
        vec![fixed("targets", &[2, 4, 2, 3], soft(2, 4, 6, 4))],
        &[],
    )?;
    loss_check(
        "soft_cross_entropy [3,5]",
        Loss::SoftCrossEntropy {
            class_weights: None,
        },
        inp("z", &[3, 5], uniform(15, -2.0, 2.0, 5)),
        vec![fixed("targets", &[3, 5], soft(3, 5, 1, 6))],
        &[],
    )?;
    let mask: Vec<f64> = uniform(2 * 4 * 4, 0.0, 1.0, 7)
        .iter()
        .map(|&u| {
            if u < 0.4 {
                0.0
            } else if u < 0.8 {
                1.0
            } else {
                2.5
            }
        })
        .collect();
    for (name, loss) in [
        (
            "masked_l2",
            Loss::MaskedL2 {
                mask_shape: Some(vec![1, 4, 4]),
            },
        ),
        (
            "masked_l1",
            Loss::MaskedL1 {
                mask_shape: Some(vec![1, 4, 4]),
            },
        ),
    ] {
        loss_check(
            &format!("{name} mask [2,1,4,4] on [2,3,4,4]"),
            loss,
            inp("pred", &[2, 3, 4, 4], uniform(96, -1.0, 1.0, 8)),
            vec![
                fixed("targets", &[2, 3, 4, 4], uniform(96, -1.0, 1.0, 9)),
                fixed("mask", &[2, 1, 4, 4], mask.clone()),
            ],
            &[],
        )?;
    }
    loss_check(
        "nt_xent τ=0.5 [6,4]",
        Loss::NtXent { temperature: 0.5 },
        inp("z", &[6, 4], uniform(24, -1.0, 1.0, 10)),
        vec![],
        &[],
    )?;
    loss_check(
        "nt_xent τ=0.1 [4,3]",
        Loss::NtXent { temperature: 0.1 },
        inp("z", &[4, 3], uniform(12, -1.0, 1.0, 11)),
        vec![],
        &[],
    )?;
    Ok(())
}

#[test]
fn a_rule_for_an_unknown_op_is_a_build_error() -> TestResult {
    let mut t = Tape::new("x", Precision::F32);
    let x = t.input_float("x", &[2, 3])?;
    let y = t.node("Floor", &[&x], "y", vec![])?;
    let l = t.node("ReduceSum", &[&y], "l", vec![attr_int("keepdims", 0)])?;
    match autodiff::backward(&mut t, &l, &[x]) {
        Err(TrainError::NoRule { op, .. }) => {
            assert_eq!(op, "Floor");
            Ok(())
        }
        other => Err(fail(format!("expected NoRule, got {other:?}"))),
    }
}

#[test]
fn unused_parameters_get_zero_gradients_and_data_gets_none() -> TestResult {
    let rep = check(
        "unused input",
        Precision::F64,
        &[
            inp("a", &[3], uniform(3, -1.0, 1.0, 1)),
            inp("unused", &[2], uniform(2, -1.0, 1.0, 2)),
        ],
        &[],
        Opts::f64(),
        |t, n, _| t.node("Mul", &[&n[0], &n[0]], "y", vec![]),
    )?;
    assert!(rep.directional < 1e-6);
    Ok(())
}
