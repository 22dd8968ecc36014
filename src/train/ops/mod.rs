//! The differentiable ONNX ops: for every op sslpipe emits, its static shape inference (ONNX
//! opset 17 semantics) and, where it has one, its vector-Jacobian rule, side by side in the file
//! of its family:
//!
//! | file | ops |
//! | --- | --- |
//! | `conv.rs` | Conv, ConvTranspose (2-D, dilation 1, any groups) |
//! | `pool.rs` | MaxPool (with its `Indices` output), AveragePool, GlobalAveragePool, GlobalMaxPool, Resize (nearest, integer factors) |
//! | `norm.rs` | BatchNormalization (inference), the fused training-mode BatchNorm (forward and backward) |
//! | `matmul.rs` | Gemm (alpha = beta = 1), MatMul (rank ≥ 2, broadcast batch) |
//! | `reduce.rs` | ReduceMean, ReduceSum, ReduceSumSquare, ReduceMax/Min/Prod, ArgMax/ArgMin, Softmax, LogSoftmax |
//! | `elementwise.rs` | unary math (Relu, Sigmoid, Tanh, Exp, Log, Sqrt, Neg, Abs, Reciprocal, Identity, …), Cast, Add, Sub, Mul, Div, Sum, Pow, Max, Min, comparisons, Where, Clip |
//! | `shape.rs` | Flatten, Reshape, Squeeze, Unsqueeze, Transpose, Expand, Concat, Split, Slice (step 1), Gather(Elements), Scatter, Pad, Constant(OfShape) |
//!
//! Each family file lists its ops in one table (`RULES`: op type → shape rule, gradient rule);
//! [`rule`] looks an op up in those tables. Adding an op is one file's change: its two functions
//! and its table row. Rules write through [`Builder`] (implemented by the tape), so this module
//! depends on no other part of `train` but its error type. A gradient rule states only its
//! mathematics, in one of three forms ([`Vjp`]): the gradient of the one differentiable input,
//! the gradient of input `i`, or all of them at once; [`entry_vjp`] does the bookkeeping.
//!
//! Convolution gradients (the bulk of a train step's work) have equivalent formulations, chosen
//! by [`RuleOptions`]: the input gradient of a stride-1 Conv is a Conv with transposed, flipped
//! weights (ONNX Runtime's CPU ConvTranspose took 1.8–3× the time of a Conv of the same size in
//! our profiles), that of a strided Conv a ConvTranspose with the `output_padding` that restores
//! the input size; the weight gradient is one Gemm per kernel tap on the strided windows of the
//! input (default), one Gemm on the stacked windows (im2col), or one Conv over batch-transposed
//! tensors with the output gradient as a dilated kernel (grouped Convs always use the last).
//!
//! Guarantees:
//! - Shape inference is exact for the attributes it accepts and refuses the rest with a message
//!   (turned into a [`TrainError::Graph`] naming the node by the tape).
//! - A rule returns a gradient for every input it was asked for (`need`), shaped exactly like that
//!   input (broadcasting is undone by summing over the broadcast axes).
//! - A node the rules cannot differentiate exactly (dilated Conv, Gemm with alpha ≠ 1, …) is a
//!   [`TrainError::NoRule`]/[`TrainError::Graph`] when the graph is built, never a wrong gradient.
//! - Each rule has a finite-difference test in `tests/gradcheck.rs`.

mod conv;
mod elementwise;
mod matmul;
mod norm;
mod pool;
mod reduce;
mod shape;

use super::TrainError;
use crate::model::graph::{attr_int, attr_ints, attr_tensor};
use crate::model::onnx::{AttributeProto, NodeProto, TensorProto, tensor_proto::DataType};

pub use conv::{RuleOptions, WeightGrad};
pub(crate) use norm::BnRecord;
pub(crate) use norm::batch_norm_train;

/// A full static shape (batch dimension included).
pub type Shape = Vec<usize>;

/// Gradients of a node's inputs (`None` where not asked for).
pub(crate) type Grads = Vec<Option<String>>;

/// Output shapes and element types of a node, or why they cannot be inferred.
pub(crate) type Inferred = Result<Vec<(Shape, DataType)>, String>;

/// What the rules need of the graph they read and write: static shapes, the values of int64
/// constants, and node emission (the tape implements it).
pub(crate) trait Builder {
    /// The static shape of a known tensor.
    fn shape(&self, name: &str) -> Result<Shape, TrainError>;
    fn dtype(&self, name: &str) -> Option<DataType>;
    /// The values of an int64 constant made on the graph (shapes, axes).
    fn ints(&self, name: &str) -> Option<&[i64]>;
    /// The element type of float tensors.
    fn float(&self) -> DataType;
    /// Which formulations the backward rules use.
    fn rules(&self) -> RuleOptions;
    /// Adds a node that is never differentiated; returns its output.
    fn emit(
        &mut self,
        op: &str,
        inputs: &[&str],
        base: &str,
        attrs: Vec<AttributeProto>,
    ) -> Result<String, TrainError>;
    /// [`Builder::emit`] with several outputs.
    fn emit_multi(
        &mut self,
        op: &str,
        inputs: &[&str],
        bases: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Result<Vec<String>, TrainError>;
    /// A 1-D int64 constant.
    fn ints1(&mut self, base: &str, data: &[i64]) -> Result<String, TrainError>;
    /// A float constant in the graph's precision.
    fn const_float(
        &mut self,
        base: &str,
        shape: &[usize],
        data: &[f64],
    ) -> Result<String, TrainError>;
    /// A rank-0 float constant (shared by every node that needs the same value).
    fn scalar(&mut self, v: f64) -> Result<String, TrainError>;
    /// Records a fused training-mode BatchNorm for the backward pass.
    fn record_batch_norm(&mut self, rec: BnRecord);

    fn numel(&self, name: &str) -> Result<usize, TrainError> {
        Ok(self.shape(name)?.iter().product())
    }
}

/// One differentiable step of the forward pass.
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    Node(NodeProto),
    BatchNorm(BnRecord),
}

impl Entry {
    pub fn inputs(&self) -> Vec<String> {
        match self {
            Entry::Node(n) => n.input.clone(),
            Entry::BatchNorm(b) => vec![b.x.clone(), b.gamma.clone(), b.beta.clone()],
        }
    }

    pub fn outputs(&self) -> Vec<String> {
        match self {
            Entry::Node(n) => n.output.clone(),
            Entry::BatchNorm(b) => vec![b.y.clone()],
        }
    }
}

/// An op's shape rule and, if it is differentiable, its gradient rule.
pub(crate) struct Rule {
    pub op: &'static str,
    pub infer: fn(&Infer<'_>) -> Inferred,
    pub vjp: Option<Vjp>,
}

/// The gradient of one input: the name of the tensor holding it.
type Dx = Result<String, TrainError>;

/// A gradient rule: for one forward node ([`Parts`]) and the gradients of its outputs, the nodes
/// computing the gradients of its inputs. Each form says only the mathematics; [`entry_vjp`] does
/// the bookkeeping (which output gradient, which inputs were asked for, the slots of the result).
#[derive(Clone, Copy)]
pub(crate) enum Vjp {
    /// Ops with one differentiable input, the first: its gradient from the first output's
    /// gradient `dy` (the other inputs are shapes, axes, indices: they get none).
    Unary(fn(&mut dyn Builder, &Parts<'_>, &str) -> Dx),
    /// The gradient of input `i` from the first output's gradient `dy`, called for each input
    /// asked for (`need`), in input order.
    Each(fn(&mut dyn Builder, &Parts<'_>, &str, usize) -> Dx),
    /// The whole rule: from the gradients of every output (`dys`, `None` where an output has
    /// none), the gradients of the inputs flagged in `need`.
    All(AllFn),
}

/// A rule in the [`Vjp::All`] form.
type AllFn =
    fn(&mut dyn Builder, &Parts<'_>, &[Option<String>], &[bool]) -> Result<Grads, TrainError>;

/// Every family's table, searched in order.
const FAMILIES: &[&[Rule]] = &[
    conv::RULES,
    pool::RULES,
    norm::RULES,
    matmul::RULES,
    reduce::RULES,
    elementwise::RULES,
    shape::RULES,
];

/// The rules of `op`, if sslpipe knows it.
pub(crate) fn rule(op: &str) -> Option<&'static Rule> {
    FAMILIES
        .iter()
        .flat_map(|family| family.iter())
        .find(|r| r.op == op)
}

/// What shape inference sees of a node: its op, inputs (names and known shapes), attributes
/// and output count.
pub(crate) struct Infer<'a> {
    pub op: &'a str,
    pub inputs: &'a [&'a str],
    pub attrs: &'a [AttributeProto],
    pub n_out: usize,
    pub ins: Vec<(Shape, DataType)>,
    graph: &'a dyn Builder,
}

impl Infer<'_> {
    fn first(&self) -> Result<(Shape, DataType), String> {
        self.ins
            .first()
            .cloned()
            .ok_or_else(|| format!("{} needs an input", self.op))
    }

    fn const_ints(&self, name: &str) -> Result<Vec<i64>, String> {
        self.graph
            .ints(name)
            .map(<[i64]>::to_vec)
            .ok_or_else(|| format!("`{name}` must be an int64 constant made on the tape"))
    }
}

fn same(s: Shape, t: DataType) -> Inferred {
    Ok(vec![(s, t)])
}

/// Output shapes and types of one node (ONNX opset 17 semantics, static shapes).
pub(crate) fn infer(
    graph: &dyn Builder,
    op: &str,
    inputs: &[&str],
    attrs: &[AttributeProto],
    n_out: usize,
) -> Inferred {
    let mut ins = Vec::with_capacity(inputs.len());
    for name in inputs {
        ins.push(if name.is_empty() {
            (Vec::new(), DataType::Undefined)
        } else {
            match (graph.shape(name), graph.dtype(name)) {
                (Ok(s), Some(t)) => (s, t),
                _ => return Err(format!("input `{name}` has no known shape")),
            }
        });
    }
    let rule = rule(op).ok_or_else(|| format!("shape inference does not know `{op}`"))?;
    (rule.infer)(&Infer {
        op,
        inputs,
        attrs,
        n_out,
        ins,
        graph,
    })
}

/// The gradients of an entry's inputs (see [`Vjp`]).
pub(crate) fn entry_vjp(
    t: &mut dyn Builder,
    e: &Entry,
    dys: &[Option<String>],
    need: &[bool],
) -> Result<Grads, TrainError> {
    match e {
        Entry::BatchNorm(rec) => {
            let dy = dys[0]
                .clone()
                .ok_or_else(|| TrainError::graph("BatchNorm", &rec.y, "no output gradient"))?;
            norm::batch_norm_backward(t, rec, &dy, need)
        }
        Entry::Node(node) => match rule(op_of(node)).and_then(|r| r.vjp) {
            Some(vjp) => node_vjp(t, vjp, node, dys, need),
            None => Err(no_rule(node)),
        },
    }
}

/// Runs one node's rule in its form (see [`Vjp`]).
fn node_vjp(
    t: &mut dyn Builder,
    vjp: Vjp,
    node: &NodeProto,
    dys: &[Option<String>],
    need: &[bool],
) -> Result<Grads, TrainError> {
    let p = parts(node);
    let mut g: Grads = vec![None; node.input.len()];
    match vjp {
        Vjp::Unary(rule) => {
            let dy = need_dy(node, dys)?;
            g[0] = Some(rule(t, &p, &dy)?);
        }
        Vjp::Each(rule) => {
            let dy = need_dy(node, dys)?;
            for (i, slot) in g.iter_mut().enumerate() {
                if need.get(i).copied().unwrap_or(false) {
                    *slot = Some(rule(t, &p, &dy, i)?);
                }
            }
        }
        Vjp::All(rule) => return rule(t, &p, dys, need),
    }
    Ok(g)
}

/// A float zero tensor shaped like `name`.
pub(crate) fn zeros_like(t: &mut dyn Builder, name: &str) -> Result<String, TrainError> {
    let shape = t.shape(name)?;
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let s = t.ints1("shape", &dims)?;
    let zero = zero_value(t);
    t.emit(
        "ConstantOfShape",
        &[&s],
        &format!("zeros.{name}"),
        vec![attr_tensor("value", zero)],
    )
}

/// The one-element zero tensor `ConstantOfShape` takes as its `value`, in the graph's precision.
pub(crate) fn zero_value(t: &dyn Builder) -> TensorProto {
    let (dt, raw) = match t.float() {
        DataType::Double => (DataType::Double, 0f64.to_le_bytes().to_vec()),
        _ => (DataType::Float, 0f32.to_le_bytes().to_vec()),
    };
    TensorProto {
        dims: vec![1],
        data_type: Some(dt as i32),
        raw_data: Some(raw),
        ..Default::default()
    }
}

fn ai(attrs: &[AttributeProto], name: &str) -> Option<i64> {
    attrs
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
        .and_then(|a| a.i)
}

fn aints(attrs: &[AttributeProto], name: &str) -> Option<Vec<i64>> {
    attrs
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
        .map(|a| a.ints.clone())
}

fn atensor<'a>(attrs: &'a [AttributeProto], name: &str) -> Option<&'a TensorProto> {
    attrs
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
        .and_then(|a| a.t.as_ref())
}

/// Attribute accessors for rules (they read the node's own attributes).
pub(crate) fn attr_i(node: &NodeProto, name: &str) -> Option<i64> {
    ai(&node.attribute, name)
}

pub(crate) fn attr_is(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    aints(&node.attribute, name)
}

pub(crate) fn attr_s(node: &NodeProto, name: &str) -> Option<String> {
    node.attr(name)
        .and_then(|a| a.s.as_ref())
        .map(|s| String::from_utf8_lossy(s).into_owned())
}

/// Numpy-style (multidirectional) broadcasting of static shapes.
pub(crate) fn broadcast(a: &[usize], b: &[usize]) -> Option<Shape> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// Output length of a sliding window (ONNX floor semantics).
fn window_len(
    size: usize,
    k: usize,
    s: usize,
    pad_begin: usize,
    pad_end: usize,
    d: usize,
) -> Option<usize> {
    let eff = (k.checked_sub(1)?) * d + 1;
    let padded = size + pad_begin + pad_end;
    if padded < eff || s == 0 {
        return None;
    }
    Some((padded - eff) / s + 1)
}

fn to_usize(v: &[i64]) -> Option<Vec<usize>> {
    v.iter().map(|&x| usize::try_from(x).ok()).collect()
}

fn op_of(node: &NodeProto) -> &str {
    node.op_type.as_deref().unwrap_or("")
}

/// What a gradient rule reads of its node: the node itself (op, attributes), its inputs and
/// outputs, the first of each (`x`, `y`) and the base name of `x`'s gradient.
pub(crate) struct Parts<'a> {
    node: &'a NodeProto,
    ins: Vec<String>,
    outs: Vec<String>,
    x: String,
    y: String,
    gx: String,
}

impl Parts<'_> {
    fn op(&self) -> &str {
        op_of(self.node)
    }

    /// A build error naming the node.
    fn bad(&self, msg: impl Into<String>) -> TrainError {
        bad(self.node, msg)
    }
}

fn parts(node: &NodeProto) -> Parts<'_> {
    let x = node.input.first().cloned().unwrap_or_default();
    Parts {
        node,
        ins: node.input.clone(),
        outs: node.output.clone(),
        y: node.output.first().cloned().unwrap_or_default(),
        gx: gname(&x),
        x,
    }
}

fn gname(x: &str) -> String {
    format!("grad.{x}")
}

fn i64s(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&d| d as i64).collect()
}

/// `Reshape(x, shape)` with a constant target.
pub(crate) fn reshape(
    t: &mut dyn Builder,
    x: &str,
    shape: &[usize],
    base: &str,
) -> Result<String, TrainError> {
    if t.shape(x)? == shape {
        return Ok(x.to_string());
    }
    let s = t.ints1("shape", &i64s(shape))?;
    t.emit("Reshape", &[x, &s], base, vec![])
}

fn transpose(t: &mut dyn Builder, x: &str, perm: &[i64], base: &str) -> Result<String, TrainError> {
    t.emit("Transpose", &[x], base, vec![attr_ints("perm", perm)])
}

fn expand(t: &mut dyn Builder, x: &str, shape: &[usize], base: &str) -> Result<String, TrainError> {
    if t.shape(x)? == shape {
        return Ok(x.to_string());
    }
    let s = t.ints1("shape", &i64s(shape))?;
    t.emit("Expand", &[x, &s], base, vec![])
}

fn reduce_sum(
    t: &mut dyn Builder,
    x: &str,
    axes: &[usize],
    keep: bool,
    base: &str,
) -> Result<String, TrainError> {
    let a = t.ints1("axes", &i64s(axes))?;
    t.emit(
        "ReduceSum",
        &[x, &a],
        base,
        vec![attr_int("keepdims", i64::from(keep))],
    )
}

/// Sums `d` down to the shape of the input `x` it was broadcast from, named as `x`'s gradient.
fn unbroadcast_to(t: &mut dyn Builder, d: &str, x: &str) -> Dx {
    let s = t.shape(x)?;
    unbroadcast(t, d, &s, &gname(x))
}

/// Sums `dy` (shaped `out`) down to the shape `to` it was broadcast from.
pub(crate) fn unbroadcast(
    t: &mut dyn Builder,
    dy: &str,
    to: &[usize],
    base: &str,
) -> Result<String, TrainError> {
    let out = t.shape(dy)?;
    if out == to {
        return Ok(dy.to_string());
    }
    let lead = out.len().checked_sub(to.len()).ok_or_else(|| {
        TrainError::graph(
            "unbroadcast",
            dy,
            format!("cannot sum {out:?} down to {to:?}"),
        )
    })?;
    let mut axes: Vec<usize> = (0..lead).collect();
    for (i, &d) in to.iter().enumerate() {
        if d == 1 && out[lead + i] != 1 {
            axes.push(lead + i);
        } else if d != out[lead + i] {
            return Err(TrainError::graph(
                "unbroadcast",
                dy,
                format!("{to:?} does not broadcast to {out:?}"),
            ));
        }
    }
    let r = if axes.is_empty() {
        dy.to_string()
    } else {
        reduce_sum(t, dy, &axes, true, base)?
    };
    reshape(t, &r, to, base)
}

fn no_rule(node: &NodeProto) -> TrainError {
    TrainError::NoRule {
        op: op_of(node).to_string(),
        tensor: node.output.first().cloned().unwrap_or_default(),
    }
}

fn bad(node: &NodeProto, msg: impl Into<String>) -> TrainError {
    TrainError::graph(
        op_of(node),
        node.output.first().cloned().unwrap_or_default(),
        msg,
    )
}

/// Kernel geometry of a Conv/ConvTranspose/pool node.
struct Window {
    k: [usize; 2],
    s: [usize; 2],
    /// top, left, bottom, right
    p: [usize; 4],
    group: usize,
}

fn window(t: &dyn Builder, node: &NodeProto, weight: Option<&str>) -> Result<Window, TrainError> {
    let u = |v: Vec<i64>| -> Result<Vec<usize>, TrainError> {
        v.iter()
            .map(|&x| usize::try_from(x).map_err(|_| bad(node, "negative attribute")))
            .collect()
    };
    let k = match attr_is(node, "kernel_shape") {
        Some(k) => u(k)?,
        None => {
            let w = t.shape(weight.ok_or_else(|| bad(node, "kernel_shape missing"))?)?;
            w[2..].to_vec()
        }
    };
    let s = u(attr_is(node, "strides").unwrap_or(vec![1, 1]))?;
    let p = u(attr_is(node, "pads").unwrap_or(vec![0; 4]))?;
    if let Some(d) = attr_is(node, "dilations")
        && d.iter().any(|&x| x != 1)
    {
        return Err(bad(node, "dilated convolutions have no gradient rule"));
    }
    if attr_s(node, "auto_pad").is_some_and(|a| a != "NOTSET") {
        return Err(bad(node, "auto_pad is not supported; give explicit pads"));
    }
    if k.len() != 2 || s.len() != 2 || p.len() != 4 {
        return Err(bad(node, "only 2-D windows are supported"));
    }
    Ok(Window {
        k: [k[0], k[1]],
        s: [s[0], s[1]],
        p: [p[0], p[1], p[2], p[3]],
        group: attr_i(node, "group").unwrap_or(1) as usize,
    })
}

/// The `output_padding` that makes a ConvTranspose with this window map `small` back onto `big`.
fn output_padding(
    w: &Window,
    big: &[usize],
    small: &[usize],
    node: &NodeProto,
) -> Result<Vec<i64>, TrainError> {
    let mut op = Vec::with_capacity(2);
    for j in 0..2 {
        let base = (small[2 + j] - 1) * w.s[j] + w.k[j];
        let pads = w.p[j] + w.p[j + 2];
        let v = (big[2 + j] + pads)
            .checked_sub(base)
            .filter(|&v| v < w.s[j].max(1))
            .ok_or_else(|| {
                bad(
                    node,
                    format!("cannot invert the window from {small:?} to {big:?}"),
                )
            })?;
        op.push(v as i64);
    }
    Ok(op)
}

fn conv_attrs(
    w: &Window,
    extra_output_padding: Option<&[i64]>,
) -> Vec<crate::model::onnx::AttributeProto> {
    let mut a = vec![
        attr_ints("kernel_shape", &[w.k[0] as i64, w.k[1] as i64]),
        attr_ints("strides", &[w.s[0] as i64, w.s[1] as i64]),
        attr_ints("pads", &w.p.map(|v| v as i64)),
        attr_int("group", w.group as i64),
    ];
    if let Some(op) = extra_output_padding {
        a.push(attr_ints("output_padding", op));
    }
    a
}

fn need_dy(node: &NodeProto, dys: &[Option<String>]) -> Result<String, TrainError> {
    dys.first()
        .cloned()
        .flatten()
        .ok_or_else(|| bad(node, "no gradient for the output"))
}

/// Shape inference of the ops whose output is shaped and typed like their first input: unary
/// math, `Clip`, `Softmax`, `LogSoftmax`, `ScatterElements`, `ScatterND`, `BatchNormalization`.
pub(super) fn same_shape(c: &Infer<'_>) -> Inferred {
    let (s, t) = c.first()?;
    same(s, t)
}

/// The shape all inputs broadcast to (numpy rules).
fn broadcast_all(c: &Infer<'_>) -> Result<Shape, String> {
    let mut s = c.first()?.0;
    for (x, _) in &c.ins[1..] {
        s = broadcast(&s, x).ok_or_else(|| format!("shapes {s:?} and {x:?} do not broadcast"))?;
    }
    Ok(s)
}
