//! The tape: a [`GraphBuilder`] that knows the static shape and element type of every tensor it
//! holds, and records the forward nodes a backward pass has to walk.
//!
//! Guarantees:
//! - Every node added through the tape gets its output shapes inferred at once from the ONNX
//!   operator definition (opset 17) for the ops sslpipe emits; a node whose shapes cannot be
//!   inferred, or whose inputs do not fit, is a [`TrainError::Graph`] naming the node, at build
//!   time. Shapes are fully static: train-step graphs are built for one batch size.
//! - [`Tape::node`] records the node for differentiation; [`Tape::emit`] adds a node that is never
//!   differentiated (backward nodes, optimizer updates, metrics). Recording order is topological.
//! - Float constants follow the tape's [`Precision`], so the same emission code builds float32
//!   graphs (training) and float64 graphs (gradient checks, where ONNX Runtime has double kernels).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::model::graph::{Dim, attr_tensor, tensor_f32, tensor_i64};
use crate::model::onnx::{AttributeProto, NodeProto, TensorProto, tensor_proto::DataType};
use crate::model::{GraphBuilder, ModelError};

/// A full static shape (batch dimension included).
pub type Shape = Vec<usize>;

/// Element type of the float tensors of a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// What training runs in.
    #[default]
    F32,
    /// For gradient checks; ONNX Runtime's CPU provider has no double Conv, ConvTranspose,
    /// AveragePool, GlobalAveragePool or Resize, so graphs with those stay in F32.
    F64,
}

impl Precision {
    pub fn data_type(self) -> DataType {
        match self {
            Precision::F32 => DataType::Float,
            Precision::F64 => DataType::Double,
        }
    }
}

/// Choices between equivalent formulations of some backward rules (all give the same gradients;
/// they differ in speed per execution provider).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleOptions {
    /// Input gradient of a stride-1 Conv as a Conv with transposed, flipped weights (ONNX Runtime's
    /// CPU ConvTranspose took 1.8–3× the time of a Conv of the same size here); strided Convs use
    /// ConvTranspose.
    pub conv_dx_as_conv: bool,
    /// How the weight gradient of an ungrouped Conv is computed (grouped Convs always use
    /// [`WeightGrad::DilatedConv`]).
    pub conv_dw: WeightGrad,
}

/// Formulations of a convolution's weight gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightGrad {
    /// The k² strided windows of the input stacked (im2col, one Concat) and one Gemm.
    Im2col,
    /// One Gemm per kernel tap on its strided window; no stacked copy.
    PerTap,
    /// One Conv over batch-transposed tensors with the output gradient as a dilated kernel.
    DilatedConv,
}

impl Default for RuleOptions {
    fn default() -> Self {
        RuleOptions {
            conv_dx_as_conv: true,
            conv_dw: WeightGrad::PerTap,
        }
    }
}

/// What the backward pass of a fused training-mode BatchNorm needs (see `vjp::batch_norm`).
#[derive(Debug, Clone)]
pub(crate) struct BnRecord {
    pub x: String,
    pub gamma: String,
    pub beta: String,
    pub y: String,
    /// x − batch mean, `[N, C, H, W]`.
    pub xc: String,
    /// 1/sqrt(var + eps), `[1, C, 1, 1]`.
    pub inv: String,
    /// inv · gamma, `[1, C, 1, 1]`.
    pub scale: String,
    /// N·H·W: the number of values each channel's statistics average over.
    pub count: usize,
    pub channels: usize,
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

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Tape {
    g: GraphBuilder,
    precision: Precision,
    info: HashMap<String, (Shape, DataType)>,
    /// Values of small int64 constants (shapes, axes, indices) that shape inference reads.
    ints: HashMap<String, Vec<i64>>,
    entries: Vec<Entry>,
    scalars: HashMap<u64, String>,
    rules: RuleOptions,
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
fn window(
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

impl Tape {
    pub fn new(name: &str, precision: Precision) -> Self {
        Tape {
            g: GraphBuilder::new(name),
            precision,
            info: HashMap::new(),
            ints: HashMap::new(),
            entries: Vec::new(),
            scalars: HashMap::new(),
            rules: RuleOptions::default(),
        }
    }

    /// Which formulations the backward rules use (see [`RuleOptions`]).
    pub fn rules(&self) -> RuleOptions {
        self.rules
    }

    pub fn set_rules(&mut self, rules: RuleOptions) {
        self.rules = rules;
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The element type of float tensors in this graph.
    pub fn float(&self) -> DataType {
        self.precision.data_type()
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The static shape of a tensor the tape knows.
    pub fn shape(&self, name: &str) -> Result<Shape, TrainError> {
        self.info
            .get(name)
            .map(|(s, _)| s.clone())
            .ok_or_else(|| TrainError::graph("?", name, "the tape knows no tensor of that name"))
    }

    pub fn dtype(&self, name: &str) -> Option<DataType> {
        self.info.get(name).map(|(_, t)| *t)
    }

    pub fn numel(&self, name: &str) -> Result<usize, TrainError> {
        Ok(self.shape(name)?.iter().product())
    }

    /// The values of an int64 constant made by [`Tape::const_i64`].
    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        self.ints.get(name).map(|v| v.as_slice())
    }

    fn set(&mut self, name: &str, shape: Shape, dtype: DataType) {
        self.info.insert(name.to_string(), (shape, dtype));
    }

    /// Declares a graph input called exactly `name`.
    pub fn input(
        &mut self,
        name: &str,
        dtype: DataType,
        shape: &[usize],
    ) -> Result<String, TrainError> {
        let dims: Vec<Dim> = shape.iter().map(|&d| Dim::Fixed(d)).collect();
        let n = self.g.input(name, dtype, &dims)?;
        self.set(&n, shape.to_vec(), dtype);
        Ok(n)
    }

    /// Declares a float input in the tape's precision.
    pub fn input_float(&mut self, name: &str, shape: &[usize]) -> Result<String, TrainError> {
        let t = self.float();
        self.input(name, t, shape)
    }

    /// Declares `name` (already computed) as a graph output with its known shape and type.
    pub fn output(&mut self, name: &str) -> Result<(), TrainError> {
        let (shape, dtype) = self
            .info
            .get(name)
            .cloned()
            .ok_or_else(|| TrainError::graph("output", name, "unknown tensor"))?;
        let dims: Vec<Dim> = shape.iter().map(|&d| Dim::Fixed(d)).collect();
        self.g.output(name, dtype, &dims)?;
        Ok(())
    }

    /// `Identity(src)` named exactly `name` (how graph outputs get their contract names).
    pub fn rename(&mut self, src: &str, name: &str) -> Result<String, TrainError> {
        self.g
            .node_with_outputs("Identity", &[src], &[name], vec![])?;
        let (s, t) = self
            .info
            .get(src)
            .cloned()
            .ok_or_else(|| TrainError::graph("Identity", src, "unknown tensor"))?;
        self.set(name, s, t);
        Ok(name.to_string())
    }

    fn float_tensor(&self, shape: &[usize], data: &[f64]) -> Result<TensorProto, TrainError> {
        match self.precision {
            Precision::F32 => {
                let v: Vec<f32> = data.iter().map(|&x| x as f32).collect();
                Ok(tensor_f32("", shape, &v)?)
            }
            Precision::F64 => {
                let numel: usize = shape.iter().product();
                if numel != data.len() || data.iter().any(|v| !v.is_finite()) {
                    return Err(TrainError::graph(
                        "Constant",
                        "",
                        format!("{} finite values expected for shape {shape:?}", numel),
                    ));
                }
                let mut raw = Vec::with_capacity(data.len() * 8);
                for v in data {
                    raw.extend_from_slice(&v.to_le_bytes());
                }
                Ok(TensorProto {
                    dims: shape.iter().map(|&d| d as i64).collect(),
                    data_type: Some(DataType::Double as i32),
                    raw_data: Some(raw),
                    ..Default::default()
                })
            }
        }
    }

    /// A float constant (tape precision).
    pub fn const_float(
        &mut self,
        base: &str,
        shape: &[usize],
        data: &[f64],
    ) -> Result<String, TrainError> {
        let t = self.float_tensor(shape, data)?;
        let n = self
            .g
            .node("Constant", &[], base, vec![attr_tensor("value", t)])?;
        let ft = self.float();
        self.set(&n, shape.to_vec(), ft);
        Ok(n)
    }

    /// A rank-0 float constant, shared by every node that needs the same value.
    pub fn scalar(&mut self, v: f64) -> Result<String, TrainError> {
        let key = v.to_bits();
        if let Some(n) = self.scalars.get(&key) {
            return Ok(n.clone());
        }
        let n = self.const_float("c", &[], &[v])?;
        self.scalars.insert(key, n.clone());
        Ok(n)
    }

    /// An int64 constant whose values shape inference can read.
    pub fn const_i64(
        &mut self,
        base: &str,
        shape: &[usize],
        data: &[i64],
    ) -> Result<String, TrainError> {
        let t = tensor_i64("", shape, data)?;
        let n = self
            .g
            .node("Constant", &[], base, vec![attr_tensor("value", t)])?;
        self.set(&n, shape.to_vec(), DataType::Int64);
        self.ints.insert(n.clone(), data.to_vec());
        Ok(n)
    }

    /// A 1-D int64 constant (shapes, axes).
    pub fn ints1(&mut self, base: &str, data: &[i64]) -> Result<String, TrainError> {
        self.const_i64(base, &[data.len()], data)
    }

    /// Adds a node recorded for differentiation; returns its (single) output.
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        base: &str,
        attrs: Vec<AttributeProto>,
    ) -> Result<String, TrainError> {
        Ok(self.add(op, inputs, &[base], attrs, true)?.remove(0))
    }

    /// A recorded node with several outputs (one base name each).
    pub fn nodes(
        &mut self,
        op: &str,
        inputs: &[&str],
        bases: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Result<Vec<String>, TrainError> {
        self.add(op, inputs, bases, attrs, true)
    }

    /// Adds a node that is never differentiated (backward, optimizer, metrics).
    pub fn emit(
        &mut self,
        op: &str,
        inputs: &[&str],
        base: &str,
        attrs: Vec<AttributeProto>,
    ) -> Result<String, TrainError> {
        Ok(self.add(op, inputs, &[base], attrs, false)?.remove(0))
    }

    /// [`Tape::emit`] with several outputs.
    pub fn emit_multi(
        &mut self,
        op: &str,
        inputs: &[&str],
        bases: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Result<Vec<String>, TrainError> {
        self.add(op, inputs, bases, attrs, false)
    }

    fn add(
        &mut self,
        op: &str,
        inputs: &[&str],
        bases: &[&str],
        attrs: Vec<AttributeProto>,
        record: bool,
    ) -> Result<Vec<String>, TrainError> {
        let inferred = self
            .infer(op, inputs, &attrs, bases.len())
            .map_err(|m| TrainError::graph(op, bases.first().copied().unwrap_or(""), m))?;
        let outs: Vec<String> = bases.iter().map(|b| self.g.fresh_name(b)).collect();
        let out_refs: Vec<&str> = outs.iter().map(|s| s.as_str()).collect();
        self.g.node_with_outputs(op, inputs, &out_refs, attrs)?;
        for (n, (s, t)) in outs.iter().zip(inferred) {
            self.set(n, s, t);
        }
        if record {
            let node = self
                .g
                .nodes()
                .last()
                .cloned()
                .ok_or_else(|| TrainError::graph(op, "", "node vanished"))?;
            self.entries.push(Entry::Node(node));
        }
        Ok(outs)
    }

    /// Runs a `src/model` layer's emission on the underlying builder and records (and
    /// shape-infers) every node it added.
    pub fn absorb(
        &mut self,
        f: impl FnOnce(&mut GraphBuilder) -> Result<String, ModelError>,
    ) -> Result<String, TrainError> {
        let before = self.g.nodes().len();
        let out = f(&mut self.g)?;
        let added: Vec<NodeProto> = self.g.nodes()[before..].to_vec();
        for node in added {
            let op = node.op_type.clone().unwrap_or_default();
            let inputs: Vec<&str> = node.input.iter().map(|s| s.as_str()).collect();
            let inferred = self
                .infer(&op, &inputs, &node.attribute, node.output.len())
                .map_err(|m| {
                    TrainError::graph(&op, node.output.first().cloned().unwrap_or_default(), m)
                })?;
            for (n, (s, t)) in node.output.iter().zip(inferred) {
                self.set(n, s, t);
            }
            if op == "Constant" {
                if let Some(v) = atensor(&node.attribute, "value").and_then(|t| t.to_i64_vec()) {
                    self.ints.insert(node.output[0].clone(), v);
                }
            } else {
                self.entries.push(Entry::Node(node));
            }
        }
        Ok(out)
    }

    pub(crate) fn record_batch_norm(&mut self, rec: BnRecord) {
        self.entries.push(Entry::BatchNorm(rec));
    }

    /// Sets a model metadata entry.
    pub fn metadata(&mut self, key: &str, value: &str) {
        self.g.metadata(key, value);
    }

    pub fn doc_string(&mut self, doc: &str) {
        self.g.doc_string(doc);
    }

    /// The serialised model.
    pub fn finish(self) -> Result<Vec<u8>, TrainError> {
        Ok(self.g.finish()?)
    }

    fn get(&self, name: &str) -> Result<(Shape, DataType), String> {
        if name.is_empty() {
            return Ok((Vec::new(), DataType::Undefined));
        }
        self.info
            .get(name)
            .cloned()
            .ok_or_else(|| format!("input `{name}` has no known shape"))
    }

    fn const_ints(&self, name: &str) -> Result<Vec<i64>, String> {
        self.ints
            .get(name)
            .cloned()
            .ok_or_else(|| format!("`{name}` must be an int64 constant made on the tape"))
    }

    /// Output shapes and types of one node (ONNX opset 17 semantics, static shapes).
    fn infer(
        &self,
        op: &str,
        inputs: &[&str],
        attrs: &[AttributeProto],
        n_out: usize,
    ) -> Result<Vec<(Shape, DataType)>, String> {
        let ins: Vec<(Shape, DataType)> = inputs
            .iter()
            .map(|n| self.get(n))
            .collect::<Result<_, _>>()?;
        let first = || {
            ins.first()
                .cloned()
                .ok_or_else(|| format!("{op} needs an input"))
        };
        let same = |s: Shape, t: DataType| Ok(vec![(s, t)]);
        match op {
            "Relu" | "Sigmoid" | "Tanh" | "Exp" | "Log" | "Sqrt" | "Neg" | "Abs" | "Sign"
            | "Reciprocal" | "Identity" | "Softmax" | "LogSoftmax" | "Floor" | "LeakyRelu" => {
                let (s, t) = first()?;
                same(s, t)
            }
            "BatchNormalization" => {
                let (s, t) = first()?;
                same(s, t)
            }
            "Cast" => {
                let (s, _) = first()?;
                let to = ai(attrs, "to").ok_or("Cast needs `to`")?;
                let t = DataType::try_from(to as i32).map_err(|_| "bad Cast type".to_string())?;
                same(s, t)
            }
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" => {
                let mut s = first()?.0;
                for (x, _) in &ins[1..] {
                    s = broadcast(&s, x)
                        .ok_or_else(|| format!("shapes {s:?} and {x:?} do not broadcast"))?;
                }
                same(s, ins[0].1)
            }
            "Equal" | "Greater" | "Less" | "GreaterOrEqual" | "LessOrEqual" | "And" | "Or"
            | "Not" => {
                let mut s = first()?.0;
                for (x, _) in &ins[1..] {
                    s = broadcast(&s, x)
                        .ok_or_else(|| format!("shapes {s:?} and {x:?} do not broadcast"))?;
                }
                same(s, DataType::Bool)
            }
            "Where" => {
                if ins.len() != 3 {
                    return Err("Where needs 3 inputs".into());
                }
                let s = broadcast(&ins[0].0, &ins[1].0)
                    .and_then(|s| broadcast(&s, &ins[2].0))
                    .ok_or("Where inputs do not broadcast")?;
                same(s, ins[1].1)
            }
            "Conv" => {
                let (x, t) = first()?;
                let w = &ins.get(1).ok_or("Conv needs a weight")?.0;
                if x.len() != 4 || w.len() != 4 {
                    return Err(format!("Conv supports 2-D maps: input {x:?}, weight {w:?}"));
                }
                let g = ai(attrs, "group").unwrap_or(1) as usize;
                if g == 0 || x[1] != w[1] * g || w[0] % g != 0 {
                    return Err(format!(
                        "Conv channels do not fit: input {x:?}, weight {w:?}, group {g}"
                    ));
                }
                let s = to_usize(&aints(attrs, "strides").unwrap_or(vec![1, 1]))
                    .ok_or("bad strides")?;
                let p = to_usize(&aints(attrs, "pads").unwrap_or(vec![0; 4])).ok_or("bad pads")?;
                let d = to_usize(&aints(attrs, "dilations").unwrap_or(vec![1, 1]))
                    .ok_or("bad dilations")?;
                let oh = window(x[2], w[2], s[0], p[0], p[2], d[0])
                    .ok_or("Conv kernel larger than its input")?;
                let ow = window(x[3], w[3], s[1], p[1], p[3], d[1])
                    .ok_or("Conv kernel larger than its input")?;
                same(vec![x[0], w[0], oh, ow], t)
            }
            "ConvTranspose" => {
                let (x, t) = first()?;
                let w = &ins.get(1).ok_or("ConvTranspose needs a weight")?.0;
                if x.len() != 4 || w.len() != 4 || x[1] != w[0] {
                    return Err(format!(
                        "ConvTranspose shapes do not fit: input {x:?}, weight {w:?}"
                    ));
                }
                if aints(attrs, "output_shape").is_some() {
                    return Err(
                        "ConvTranspose `output_shape` is not supported; use output_padding".into(),
                    );
                }
                let g = ai(attrs, "group").unwrap_or(1) as usize;
                let s = to_usize(&aints(attrs, "strides").unwrap_or(vec![1, 1]))
                    .ok_or("bad strides")?;
                let p = to_usize(&aints(attrs, "pads").unwrap_or(vec![0; 4])).ok_or("bad pads")?;
                let d = to_usize(&aints(attrs, "dilations").unwrap_or(vec![1, 1]))
                    .ok_or("bad dilations")?;
                let op_ = to_usize(&aints(attrs, "output_padding").unwrap_or(vec![0, 0]))
                    .ok_or("bad output_padding")?;
                let size = |i: usize, k: usize, j: usize| -> Result<usize, String> {
                    (s[j] * (i - 1) + op_[j] + (k - 1) * d[j] + 1)
                        .checked_sub(p[j] + p[j + 2])
                        .filter(|&v| v > 0)
                        .ok_or_else(|| "ConvTranspose output would be empty".to_string())
                };
                same(
                    vec![x[0], w[1] * g, size(x[2], w[2], 0)?, size(x[3], w[3], 1)?],
                    t,
                )
            }
            "MaxPool" | "AveragePool" => {
                let (x, t) = first()?;
                if x.len() != 4 {
                    return Err(format!("{op} supports 2-D maps, found {x:?}"));
                }
                if ai(attrs, "ceil_mode").unwrap_or(0) != 0 {
                    return Err("ceil_mode is not supported".into());
                }
                let k = to_usize(&aints(attrs, "kernel_shape").ok_or("kernel_shape missing")?)
                    .ok_or("bad kernel")?;
                let s = to_usize(&aints(attrs, "strides").unwrap_or(vec![1, 1]))
                    .ok_or("bad strides")?;
                let p = to_usize(&aints(attrs, "pads").unwrap_or(vec![0; 4])).ok_or("bad pads")?;
                let oh = window(x[2], k[0], s[0], p[0], p[2], 1)
                    .ok_or("pool window larger than its input")?;
                let ow = window(x[3], k[1], s[1], p[1], p[3], 1)
                    .ok_or("pool window larger than its input")?;
                let y = vec![x[0], x[1], oh, ow];
                let mut out = vec![(y.clone(), t)];
                if n_out > 1 {
                    out.push((y, DataType::Int64));
                }
                Ok(out)
            }
            "GlobalAveragePool" | "GlobalMaxPool" => {
                let (x, t) = first()?;
                if x.len() < 3 {
                    return Err(format!("{op} needs [N, C, spatial...], found {x:?}"));
                }
                let mut y = x.clone();
                for d in y.iter_mut().skip(2) {
                    *d = 1;
                }
                same(y, t)
            }
            "Flatten" => {
                let (x, t) = first()?;
                let axis =
                    norm_axis(ai(attrs, "axis").unwrap_or(1), x.len() + 1).ok_or("bad axis")?;
                same(
                    vec![x[..axis].iter().product(), x[axis..].iter().product()],
                    t,
                )
            }
            "Reshape" => {
                let (x, t) = first()?;
                let target = self.const_ints(inputs.get(1).ok_or("Reshape needs a shape")?)?;
                let numel: usize = x.iter().product();
                let mut out = Vec::with_capacity(target.len());
                let mut infer_at = None;
                for (i, &d) in target.iter().enumerate() {
                    match d {
                        0 => out.push(*x.get(i).ok_or("Reshape 0 beyond the input rank")?),
                        -1 if infer_at.is_none() => {
                            infer_at = Some(i);
                            out.push(1);
                        }
                        d if d > 0 => out.push(d as usize),
                        _ => return Err(format!("bad Reshape target {target:?}")),
                    }
                }
                let known: usize = out.iter().product();
                if let Some(i) = infer_at {
                    if known == 0 || !numel.is_multiple_of(known) {
                        return Err(format!("cannot reshape {x:?} to {target:?}"));
                    }
                    out[i] = numel / known;
                }
                if out.iter().product::<usize>() != numel {
                    return Err(format!(
                        "cannot reshape {x:?} ({numel} values) to {target:?}"
                    ));
                }
                same(out, t)
            }
            "Transpose" => {
                let (x, t) = first()?;
                let perm =
                    aints(attrs, "perm").unwrap_or_else(|| (0..x.len() as i64).rev().collect());
                let y: Option<Vec<usize>> =
                    perm.iter().map(|&p| x.get(p as usize).copied()).collect();
                same(y.ok_or("bad perm")?, t)
            }
            "Gemm" => {
                let (a, t) = first()?;
                let b = &ins.get(1).ok_or("Gemm needs B")?.0;
                if a.len() != 2 || b.len() != 2 {
                    return Err("Gemm needs matrices".into());
                }
                let (m, k) = if ai(attrs, "transA").unwrap_or(0) != 0 {
                    (a[1], a[0])
                } else {
                    (a[0], a[1])
                };
                let (k2, n) = if ai(attrs, "transB").unwrap_or(0) != 0 {
                    (b[1], b[0])
                } else {
                    (b[0], b[1])
                };
                if k != k2 {
                    return Err(format!("Gemm inner sizes differ: A {a:?}, B {b:?}"));
                }
                if let Some((c, _)) = ins.get(2)
                    && broadcast(&[m, n], c) != Some(vec![m, n])
                {
                    return Err(format!("Gemm C {c:?} does not broadcast to [{m}, {n}]"));
                }
                same(vec![m, n], t)
            }
            "MatMul" => {
                let (a, t) = first()?;
                let b = &ins.get(1).ok_or("MatMul needs B")?.0;
                if a.len() < 2 || b.len() < 2 {
                    return Err("MatMul operands of rank < 2 are not supported".into());
                }
                let (m, k) = (a[a.len() - 2], a[a.len() - 1]);
                let (k2, n) = (b[b.len() - 2], b[b.len() - 1]);
                if k != k2 {
                    return Err(format!("MatMul inner sizes differ: {a:?} x {b:?}"));
                }
                let mut batch = broadcast(&a[..a.len() - 2], &b[..b.len() - 2])
                    .ok_or("MatMul batch dims do not broadcast")?;
                batch.extend([m, n]);
                same(batch, t)
            }
            "ReduceMean" | "ReduceSum" | "ReduceSumSquare" | "ReduceMax" | "ReduceMin"
            | "ReduceProd" => {
                let (x, t) = first()?;
                let axes = if op == "ReduceSum" {
                    match inputs.get(1) {
                        Some(n) if !n.is_empty() => Some(self.const_ints(n)?),
                        _ => None,
                    }
                } else {
                    aints(attrs, "axes")
                };
                let axes: Vec<usize> = match axes {
                    Some(a) => a
                        .iter()
                        .map(|&i| norm_axis(i, x.len()))
                        .collect::<Option<_>>()
                        .ok_or("bad axes")?,
                    None => (0..x.len()).collect(),
                };
                let keep = ai(attrs, "keepdims").unwrap_or(1) != 0;
                let y: Shape = x
                    .iter()
                    .enumerate()
                    .filter_map(|(i, &d)| match (axes.contains(&i), keep) {
                        (true, true) => Some(1),
                        (true, false) => None,
                        (false, _) => Some(d),
                    })
                    .collect();
                same(y, t)
            }
            "ArgMax" | "ArgMin" => {
                let (x, _) = first()?;
                let axis = norm_axis(ai(attrs, "axis").unwrap_or(0), x.len()).ok_or("bad axis")?;
                let keep = ai(attrs, "keepdims").unwrap_or(1) != 0;
                let y: Shape = x
                    .iter()
                    .enumerate()
                    .filter_map(|(i, &d)| {
                        if i == axis {
                            keep.then_some(1)
                        } else {
                            Some(d)
                        }
                    })
                    .collect();
                same(y, DataType::Int64)
            }
            "Concat" => {
                let (x, t) = first()?;
                let axis = norm_axis(ai(attrs, "axis").ok_or("Concat needs axis")?, x.len())
                    .ok_or("bad axis")?;
                let mut y = x.clone();
                y[axis] = 0;
                for (s, _) in &ins {
                    if s.len() != x.len()
                        || s.iter().enumerate().any(|(i, &d)| i != axis && d != x[i])
                    {
                        return Err(format!(
                            "Concat inputs {x:?} and {s:?} differ off axis {axis}"
                        ));
                    }
                    y[axis] += s[axis];
                }
                same(y, t)
            }
            "Split" => {
                let (x, t) = first()?;
                let axis = norm_axis(ai(attrs, "axis").unwrap_or(0), x.len()).ok_or("bad axis")?;
                let sizes: Vec<usize> = match inputs.get(1) {
                    Some(n) if !n.is_empty() => {
                        to_usize(&self.const_ints(n)?).ok_or("bad split")?
                    }
                    _ => {
                        if x[axis] % n_out != 0 {
                            return Err("Split without sizes needs an even split".into());
                        }
                        vec![x[axis] / n_out; n_out]
                    }
                };
                if sizes.len() != n_out || sizes.iter().sum::<usize>() != x[axis] {
                    return Err(format!(
                        "split sizes {sizes:?} do not cover {} with {n_out} outputs",
                        x[axis]
                    ));
                }
                Ok(sizes
                    .iter()
                    .map(|&s| {
                        let mut y = x.clone();
                        y[axis] = s;
                        (y, t)
                    })
                    .collect())
            }
            "Slice" => {
                let (x, t) = first()?;
                let get = |i: usize| -> Result<Option<Vec<i64>>, String> {
                    match inputs.get(i) {
                        Some(n) if !n.is_empty() => Ok(Some(self.const_ints(n)?)),
                        _ => Ok(None),
                    }
                };
                let starts = get(1)?.ok_or("Slice needs starts")?;
                let ends = get(2)?.ok_or("Slice needs ends")?;
                let axes = get(3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
                let steps = get(4)?.unwrap_or_else(|| vec![1; starts.len()]);
                let mut y = x.clone();
                for i in 0..starts.len() {
                    let a = norm_axis(axes[i], x.len()).ok_or("bad axis")?;
                    let dim = x[a] as i64;
                    let step = steps[i];
                    let wrap = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
                    let n = if step > 0 {
                        let s = wrap(starts[i]).clamp(0, dim);
                        let e = wrap(ends[i]).clamp(0, dim);
                        if e > s { (e - s + step - 1) / step } else { 0 }
                    } else if step < 0 {
                        let s = wrap(starts[i]).clamp(0, dim - 1);
                        let e = wrap(ends[i]).clamp(-1, dim - 1);
                        if s > e {
                            (s - e + (-step) - 1) / (-step)
                        } else {
                            0
                        }
                    } else {
                        return Err("Slice step 0".into());
                    };
                    y[a] = n as usize;
                }
                same(y, t)
            }
            "Unsqueeze" => {
                let (x, t) = first()?;
                let axes = self.const_ints(inputs.get(1).ok_or("Unsqueeze needs axes")?)?;
                let rank = x.len() + axes.len();
                let mut axes: Vec<usize> = axes
                    .iter()
                    .map(|&a| norm_axis(a, rank))
                    .collect::<Option<_>>()
                    .ok_or("bad axes")?;
                axes.sort_unstable();
                let mut y = x.clone();
                for a in axes {
                    y.insert(a, 1);
                }
                same(y, t)
            }
            "Squeeze" => {
                let (x, t) = first()?;
                let axes = self.const_ints(inputs.get(1).ok_or("Squeeze needs axes")?)?;
                let axes: Vec<usize> = axes
                    .iter()
                    .map(|&a| norm_axis(a, x.len()))
                    .collect::<Option<_>>()
                    .ok_or("bad axes")?;
                let y = x
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !axes.contains(i))
                    .map(|(_, &d)| d)
                    .collect();
                same(y, t)
            }
            "Expand" => {
                let (x, t) = first()?;
                let target =
                    to_usize(&self.const_ints(inputs.get(1).ok_or("Expand needs a shape")?)?)
                        .ok_or("bad shape")?;
                same(
                    broadcast(&x, &target).ok_or("Expand shapes do not broadcast")?,
                    t,
                )
            }
            "GatherElements" => {
                let t = first()?.1;
                let idx = &ins.get(1).ok_or("GatherElements needs indices")?.0;
                same(idx.clone(), t)
            }
            "Gather" => {
                let (x, t) = first()?;
                let idx = &ins.get(1).ok_or("Gather needs indices")?.0;
                let axis = norm_axis(ai(attrs, "axis").unwrap_or(0), x.len()).ok_or("bad axis")?;
                let mut y = x[..axis].to_vec();
                y.extend_from_slice(idx);
                y.extend_from_slice(&x[axis + 1..]);
                same(y, t)
            }
            "ScatterElements" | "ScatterND" => {
                let (x, t) = first()?;
                same(x, t)
            }
            "Constant" => {
                let v = atensor(attrs, "value").ok_or("Constant needs a tensor `value`")?;
                let dims = v.dims.iter().map(|&d| d as usize).collect();
                let t = DataType::try_from(v.data_type.unwrap_or(0))
                    .map_err(|_| "bad Constant type".to_string())?;
                same(dims, t)
            }
            "ConstantOfShape" => {
                let dims = to_usize(
                    &self.const_ints(inputs.first().ok_or("ConstantOfShape needs a shape")?)?,
                )
                .ok_or("bad shape")?;
                let t = atensor(attrs, "value")
                    .and_then(|v| DataType::try_from(v.data_type.unwrap_or(1)).ok())
                    .unwrap_or(DataType::Float);
                same(dims, t)
            }
            "Pad" => {
                let (x, t) = first()?;
                let pads = self.const_ints(inputs.get(1).ok_or("Pad needs pads")?)?;
                if pads.len() != 2 * x.len() {
                    return Err("Pad needs 2·rank pads".into());
                }
                let y = x
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| (d as i64 + pads[i] + pads[i + x.len()]) as usize)
                    .collect();
                same(y, t)
            }
            "Resize" => {
                let (_, t) = first()?;
                let sizes = self.const_ints(
                    inputs
                        .get(3)
                        .ok_or("Resize needs `sizes` (scales are not supported)")?,
                )?;
                same(to_usize(&sizes).ok_or("bad sizes")?, t)
            }
            "Clip" => {
                let (x, t) = first()?;
                same(x, t)
            }
            _ => Err(format!("shape inference does not know `{op}`")),
        }
    }
}
