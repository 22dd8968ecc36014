//! The tape: a [`GraphBuilder`] that knows the static shape and element type of every tensor it
//! holds, and records the forward nodes a backward pass has to walk.
//!
//! Guarantees:
//! - Every node added through the tape gets its output shapes inferred at once from the ONNX
//!   operator definition (opset 17) for the ops sslpipe emits (the rules are in
//!   [`super::ops`], each beside its gradient rule); a node whose shapes cannot be
//!   inferred, or whose inputs do not fit, is a [`TrainError::Graph`] naming the node, at build
//!   time. Shapes are fully static: train-step graphs are built for one batch size.
//! - [`Tape::node`] records the node for differentiation; [`Tape::emit`] adds a node that is never
//!   differentiated (backward nodes, optimizer updates, metrics). Recording order is topological.
//! - Layers emit onto the tape through [`crate::model::Emit`] exactly as onto a plain
//!   `GraphBuilder` (the same node and tensor names), and rules emit through [`ops::Builder`].
//! - Float constants follow the tape's [`Precision`], so the same emission code builds float32
//!   graphs (training) and float64 graphs (gradient checks, where ONNX Runtime has double kernels).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::TrainError;
use super::ops::{self, BnRecord, Builder};
use crate::model::graph::{Dim, attr_tensor, tensor_f32, tensor_i64};
use crate::model::onnx::{AttributeProto, TensorProto, tensor_proto::DataType};
use crate::model::{Emit, GraphBuilder};

pub(crate) use super::ops::Entry;
pub use super::ops::{RuleOptions, Shape, WeightGrad};

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
    /// `(running statistic, its new value)` of every training-mode BatchNorm.
    running_updates: Vec<(String, String)>,
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
            running_updates: Vec::new(),
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
        let inferred = ops::infer(self, op, inputs, &attrs, bases.len())
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

    /// Takes the updated running statistics that training-mode BatchNorms emitted so far
    /// (`(buffer name, tensor holding its new value)`, in emission order).
    pub fn take_running_updates(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.running_updates)
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
}

/// Layers emit onto the tape exactly as onto a [`GraphBuilder`] (the same names), and every node
/// is shape-inferred and recorded for differentiation.
impl Emit for Tape {
    type Error = TrainError;

    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        base: &str,
        attrs: Vec<AttributeProto>,
    ) -> Result<String, TrainError> {
        Tape::node(self, op, inputs, base, attrs)
    }

    fn node_multi(
        &mut self,
        op: &str,
        inputs: &[&str],
        bases: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Result<Vec<String>, TrainError> {
        self.nodes(op, inputs, bases, attrs)
    }

    fn const_i64(
        &mut self,
        base: &str,
        shape: &[usize],
        data: &[i64],
    ) -> Result<String, TrainError> {
        Tape::const_i64(self, base, shape, data)
    }

    fn const_f32(
        &mut self,
        base: &str,
        shape: &[usize],
        data: &[f32],
    ) -> Result<String, TrainError> {
        let wide: Vec<f64> = data.iter().map(|&v| f64::from(v)).collect();
        self.const_float(base, shape, &wide)
    }

    fn static_shape(&self, name: &str) -> Option<Vec<usize>> {
        self.info.get(name).map(|(s, _)| s.clone())
    }

    fn batch_norm_train(
        &mut self,
        x: &str,
        params: [&str; 4],
        eps: f32,
        momentum: f32,
        base: &str,
    ) -> Result<String, TrainError> {
        let [gamma, beta, mean, var] = params;
        let (y, new_mean, new_var) =
            ops::batch_norm_train(self, x, gamma, beta, mean, var, eps, momentum, base)?;
        self.running_updates.push((mean.to_string(), new_mean));
        self.running_updates.push((var.to_string(), new_var));
        Ok(y)
    }
}

/// What the op rules read and write.
impl Builder for Tape {
    fn shape(&self, name: &str) -> Result<Shape, TrainError> {
        Tape::shape(self, name)
    }

    fn dtype(&self, name: &str) -> Option<DataType> {
        Tape::dtype(self, name)
    }

    fn ints(&self, name: &str) -> Option<&[i64]> {
        Tape::ints(self, name)
    }

    fn float(&self) -> DataType {
        Tape::float(self)
    }

    fn rules(&self) -> RuleOptions {
        self.rules
    }

    fn emit(
        &mut self,
        op: &str,
        inputs: &[&str],
        base: &str,
        attrs: Vec<AttributeProto>,
    ) -> Result<String, TrainError> {
        Tape::emit(self, op, inputs, base, attrs)
    }

    fn emit_multi(
        &mut self,
        op: &str,
        inputs: &[&str],
        bases: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Result<Vec<String>, TrainError> {
        Tape::emit_multi(self, op, inputs, bases, attrs)
    }

    fn ints1(&mut self, base: &str, data: &[i64]) -> Result<String, TrainError> {
        Tape::ints1(self, base, data)
    }

    fn const_float(
        &mut self,
        base: &str,
        shape: &[usize],
        data: &[f64],
    ) -> Result<String, TrainError> {
        Tape::const_float(self, base, shape, data)
    }

    fn scalar(&mut self, v: f64) -> Result<String, TrainError> {
        Tape::scalar(self, v)
    }

    fn record_batch_norm(&mut self, rec: BnRecord) {
        Tape::record_batch_norm(self, rec)
    }
}
