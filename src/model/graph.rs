//! `GraphBuilder`: writes one ONNX graph node by node and serialises it as a model.
//!
//! Guarantees:
//! - Tensor names are unique and every node input exists before the node that reads it (graph
//!   input, initializer, or an earlier node's output), checked as each node is added; so a
//!   finished graph is in topological order and a mistake is reported where it is made, not by
//!   ONNX Runtime later.
//! - Initializers are stored as `raw_data`, little-endian, whatever the host; non-finite weights
//!   are refused (a diverged checkpoint must not become a model file).
//! - `finish` writes IR version 8 with the `ai.onnx` operator set 17 and producer
//!   `sslpipe <version>`: loadable by ONNX Runtime 1.14+ and current `onnx` tooling.
//! - Emission is deterministic: the same calls give the same bytes, hence the same `model_id`.

use std::collections::HashSet;

use prost::Message;

use super::ModelError;
use super::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto, type_proto,
};

/// ONNX IR version written into every model (ONNX 1.10+; ONNX Runtime 1.10+).
pub const IR_VERSION: i64 = 8;
/// Version of the default operator set. 17 is the newest every op we emit is stable in, and old
/// enough for any ONNX Runtime a user may deploy to.
pub const OPSET_VERSION: i64 = 17;
/// The symbolic batch dimension of graph inputs and outputs.
pub const BATCH_DIM: &str = "N";

/// One dimension of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    Symbolic(String),
}

impl Dim {
    /// The batch dimension, `"N"`.
    pub fn batch() -> Self {
        Dim::Symbolic(BATCH_DIM.to_string())
    }

    /// `[N, dims...]`: the usual signature of a batched tensor.
    pub fn batched(dims: &[usize]) -> Vec<Dim> {
        std::iter::once(Dim::batch())
            .chain(dims.iter().map(|&d| Dim::Fixed(d)))
            .collect()
    }
}

/// Builds one graph; see the module doc for what it checks.
#[derive(Debug, Clone)]
pub struct GraphBuilder {
    name: String,
    doc: Option<String>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    metadata: Vec<(String, String)>,
    /// Every name handed out or used: reserved by `fresh_name` or defined.
    taken: HashSet<String>,
    /// Names that have a producer (input, initializer, node output).
    defined: HashSet<String>,
}

impl GraphBuilder {
    pub fn new(name: impl Into<String>) -> Self {
        GraphBuilder {
            name: name.into(),
            doc: None,
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            metadata: Vec::new(),
            taken: HashSet::new(),
            defined: HashSet::new(),
        }
    }

    /// A name not used yet, `base` itself if free, else `base_1`, `base_2`, …; reserved at once.
    pub fn fresh_name(&mut self, base: &str) -> String {
        let mut candidate = base.to_string();
        let mut k = 1usize;
        while self.taken.contains(&candidate) {
            candidate = format!("{base}_{k}");
            k += 1;
        }
        self.taken.insert(candidate.clone());
        candidate
    }

    /// Whether `name` can be read by a node now.
    pub fn is_defined(&self, name: &str) -> bool {
        self.defined.contains(name)
    }

    /// The nodes emitted so far, in order. A caller can note `nodes().len()` before and after a
    /// layer's emission to know which nodes it added (what a backward pass walks in reverse).
    pub fn nodes(&self) -> &[NodeProto] {
        &self.nodes
    }

    fn define(&mut self, name: &str) -> Result<(), ModelError> {
        if name.is_empty() {
            return Err(ModelError::Graph("a tensor name must not be empty".into()));
        }
        if self.defined.contains(name) {
            return Err(ModelError::Graph(format!(
                "tensor `{name}` is defined twice"
            )));
        }
        self.taken.insert(name.to_string());
        self.defined.insert(name.to_string());
        Ok(())
    }

    /// Adds a node with one output named after `output_base` (made unique); returns that name.
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        output_base: &str,
        attrs: Vec<AttributeProto>,
    ) -> Result<String, ModelError> {
        let output = self.fresh_name(output_base);
        self.node_with_outputs(op, inputs, &[output.as_str()], attrs)?;
        Ok(output)
    }

    /// Adds a node whose outputs have exactly the given names (reserved by [`Self::fresh_name`]
    /// or not used before). An empty input name marks an omitted optional input, as in ONNX.
    pub fn node_with_outputs(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Result<(), ModelError> {
        for input in inputs {
            if !input.is_empty() && !self.defined.contains(*input) {
                return Err(ModelError::Graph(format!(
                    "{op} node reads `{input}`, which no earlier node, input or initializer defines"
                )));
            }
        }
        if outputs.is_empty() {
            return Err(ModelError::Graph(format!(
                "{op} node needs at least one output"
            )));
        }
        for output in outputs {
            self.define(output)?;
        }
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: Some(format!("{}/{op}", outputs[0])),
            op_type: Some(op.to_string()),
            attribute: attrs,
            ..Default::default()
        });
        Ok(())
    }

    /// Adds an f32 initializer called exactly `name` (parameter names are part of the model's
    /// contract, so they are never renamed).
    pub fn initializer_f32(
        &mut self,
        name: &str,
        shape: &[usize],
        data: &[f32],
    ) -> Result<String, ModelError> {
        let tensor = tensor_f32(name, shape, data)?;
        self.define(name)?;
        self.initializers.push(tensor);
        Ok(name.to_string())
    }

    /// Adds an int64 initializer called exactly `name`.
    pub fn initializer_i64(
        &mut self,
        name: &str,
        shape: &[usize],
        data: &[i64],
    ) -> Result<String, ModelError> {
        let tensor = tensor_i64(name, shape, data)?;
        self.define(name)?;
        self.initializers.push(tensor);
        Ok(name.to_string())
    }

    /// A `Constant` node holding an int64 tensor (shapes, axes); returns its output name.
    pub fn constant_i64(
        &mut self,
        base: &str,
        shape: &[usize],
        data: &[i64],
    ) -> Result<String, ModelError> {
        let value = tensor_i64("", shape, data)?;
        self.node("Constant", &[], base, vec![attr_tensor("value", value)])
    }

    /// A `Constant` node holding an f32 tensor (scalars such as epsilons and learning-rate
    /// factors in train-step graphs); returns its output name.
    pub fn constant_f32(
        &mut self,
        base: &str,
        shape: &[usize],
        data: &[f32],
    ) -> Result<String, ModelError> {
        let value = tensor_f32("", shape, data)?;
        self.node("Constant", &[], base, vec![attr_tensor("value", value)])
    }

    /// Declares a graph input called exactly `name`.
    pub fn input(
        &mut self,
        name: &str,
        elem_type: DataType,
        dims: &[Dim],
    ) -> Result<String, ModelError> {
        self.define(name)?;
        self.inputs.push(value_info(name, elem_type, dims));
        Ok(name.to_string())
    }

    /// Declares an already defined tensor as a graph output.
    pub fn output(
        &mut self,
        name: &str,
        elem_type: DataType,
        dims: &[Dim],
    ) -> Result<(), ModelError> {
        if !self.defined.contains(name) {
            return Err(ModelError::Graph(format!(
                "graph output `{name}` is never computed"
            )));
        }
        if self.outputs.iter().any(|o| o.name.as_deref() == Some(name)) {
            return Err(ModelError::Graph(format!(
                "graph output `{name}` is declared twice"
            )));
        }
        self.outputs.push(value_info(name, elem_type, dims));
        Ok(())
    }

    /// Sets a model metadata entry (`metadata_props`); a later value for the same key wins.
    pub fn metadata(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key, value)),
        }
    }

    /// Sets the model's human-readable description.
    pub fn doc_string(&mut self, doc: impl Into<String>) {
        self.doc = Some(doc.into());
    }

    /// The finished model as a message (for inspection or further editing).
    pub fn into_model(self) -> Result<ModelProto, ModelError> {
        if self.outputs.is_empty() {
            return Err(ModelError::Graph(format!(
                "graph `{}` declares no output",
                self.name
            )));
        }
        let graph = GraphProto {
            node: self.nodes,
            name: Some(self.name),
            initializer: self.initializers,
            input: self.inputs,
            output: self.outputs,
            ..Default::default()
        };
        Ok(ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(OPSET_VERSION),
            }],
            producer_name: Some("sslpipe".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            doc_string: self.doc,
            graph: Some(graph),
            metadata_props: self
                .metadata
                .into_iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: Some(k),
                    value: Some(v),
                })
                .collect(),
            ..Default::default()
        })
    }

    /// The serialised `.onnx` bytes.
    pub fn finish(self) -> Result<Vec<u8>, ModelError> {
        Ok(self.into_model()?.encode_to_vec())
    }
}

fn dims_i64(name: &str, shape: &[usize]) -> Result<(Vec<i64>, usize), ModelError> {
    let mut numel = 1usize;
    let mut dims = Vec::with_capacity(shape.len());
    for &d in shape {
        numel = numel.checked_mul(d).ok_or_else(|| {
            ModelError::Graph(format!("tensor `{name}` shape {shape:?} overflows"))
        })?;
        dims.push(i64::try_from(d).map_err(|_| {
            ModelError::Graph(format!(
                "tensor `{name}` dimension {d} does not fit in int64"
            ))
        })?);
    }
    Ok((dims, numel))
}

/// A FLOAT `TensorProto` with raw little-endian data; checks length and finiteness.
pub fn tensor_f32(name: &str, shape: &[usize], data: &[f32]) -> Result<TensorProto, ModelError> {
    let (dims, numel) = dims_i64(name, shape)?;
    if data.len() != numel {
        return Err(ModelError::DataLength {
            name: name.into(),
            shape: shape.to_vec(),
            expected: numel,
            found: data.len(),
        });
    }
    if let Some((index, &value)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(ModelError::NonFinite {
            name: name.into(),
            index,
            value,
        });
    }
    let mut raw = Vec::with_capacity(data.len() * 4);
    for v in data {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    Ok(TensorProto {
        dims,
        data_type: Some(DataType::Float as i32),
        name: (!name.is_empty()).then(|| name.to_string()),
        raw_data: Some(raw),
        ..Default::default()
    })
}

/// An INT64 `TensorProto` with raw little-endian data.
pub fn tensor_i64(name: &str, shape: &[usize], data: &[i64]) -> Result<TensorProto, ModelError> {
    let (dims, numel) = dims_i64(name, shape)?;
    if data.len() != numel {
        return Err(ModelError::DataLength {
            name: name.into(),
            shape: shape.to_vec(),
            expected: numel,
            found: data.len(),
        });
    }
    let mut raw = Vec::with_capacity(data.len() * 8);
    for v in data {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    Ok(TensorProto {
        dims,
        data_type: Some(DataType::Int64 as i32),
        name: (!name.is_empty()).then(|| name.to_string()),
        raw_data: Some(raw),
        ..Default::default()
    })
}

fn value_info(name: &str, elem_type: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                // usize -> i64 cannot lose anything on the sizes a graph signature carries.
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
                Dim::Symbolic(s) => tensor_shape_proto::dimension::Value::DimParam(s.clone()),
            }),
            denotation: None,
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem_type as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: None,
        }),
        ..Default::default()
    }
}

fn attr(name: &str, kind: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(kind as i32),
        ..Default::default()
    }
}

/// An INT attribute.
pub fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        i: Some(value),
        ..attr(name, AttributeType::Int)
    }
}

/// An INTS attribute.
pub fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: values.to_vec(),
        ..attr(name, AttributeType::Ints)
    }
}

/// A FLOAT attribute.
pub fn attr_float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        f: Some(value),
        ..attr(name, AttributeType::Float)
    }
}

/// A FLOATS attribute.
pub fn attr_floats(name: &str, values: &[f32]) -> AttributeProto {
    AttributeProto {
        floats: values.to_vec(),
        ..attr(name, AttributeType::Floats)
    }
}

/// A STRING attribute.
pub fn attr_string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        s: Some(value.as_bytes().to_vec()),
        ..attr(name, AttributeType::String)
    }
}

/// A TENSOR attribute (the `value` of a `Constant`).
pub fn attr_tensor(name: &str, value: TensorProto) -> AttributeProto {
    AttributeProto {
        t: Some(value),
        ..attr(name, AttributeType::Tensor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::onnx::decode_model;

    fn tiny() -> Result<GraphBuilder, ModelError> {
        let mut g = GraphBuilder::new("tiny");
        let x = g.input("x", DataType::Float, &Dim::batched(&[4]))?;
        let w = g.initializer_f32("w", &[2, 4], &[0.5; 8])?;
        let y = g.node("Gemm", &[&x, &w], "y", vec![attr_int("transB", 1)])?;
        let y2 = g.node("Relu", &[&y], "y", vec![])?;
        assert_eq!(y2, "y_1");
        g.output(&y2, DataType::Float, &Dim::batched(&[2]))?;
        g.metadata("k", "v1");
        g.metadata("k", "v2");
        Ok(g)
    }

    #[test]
    fn round_trips_through_prost() -> Result<(), ModelError> {
        let bytes = tiny()?.finish()?;
        let m = decode_model(&bytes).map_err(|e| ModelError::Decode(e.to_string()))?;
        assert_eq!(m.ir_version, Some(IR_VERSION));
        assert_eq!(m.default_opset(), Some(OPSET_VERSION));
        assert_eq!(m.producer_name.as_deref(), Some("sslpipe"));
        assert_eq!(m.metadata("k"), Some("v2"));
        let graph = m
            .graph
            .as_ref()
            .ok_or(ModelError::Decode("no graph".into()))?;
        assert_eq!(graph.node.len(), 2);
        assert_eq!(graph.node[0].attr("transB").and_then(|a| a.i), Some(1));
        assert_eq!(graph.initializer[0].to_f32_vec(), Some(vec![0.5; 8]));
        let input = graph.input[0].tensor_type().and_then(|t| t.shape.clone());
        let dims: Vec<_> = input.map(|s| s.dim).unwrap_or_default();
        assert_eq!(
            dims[0].value,
            Some(tensor_shape_proto::dimension::Value::DimParam("N".into()))
        );
        assert_eq!(
            dims[1].value,
            Some(tensor_shape_proto::dimension::Value::DimValue(4))
        );
        Ok(())
    }

    #[test]
    fn rejects_undefined_inputs_duplicates_and_bad_data() {
        let mut g = GraphBuilder::new("bad");
        assert!(matches!(
            g.node("Relu", &["nope"], "y", vec![]),
            Err(ModelError::Graph(_))
        ));
        assert!(g.initializer_f32("w", &[2], &[1.0, 2.0]).is_ok());
        assert!(matches!(
            g.initializer_f32("w", &[1], &[1.0]),
            Err(ModelError::Graph(_))
        ));
        assert!(matches!(
            g.initializer_f32("v", &[3], &[1.0]),
            Err(ModelError::DataLength {
                expected: 3,
                found: 1,
                ..
            })
        ));
        assert!(matches!(
            g.initializer_f32("u", &[1], &[f32::NAN]),
            Err(ModelError::NonFinite { .. })
        ));
        assert!(matches!(
            g.output("missing", DataType::Float, &[]),
            Err(ModelError::Graph(_))
        ));
        assert!(matches!(
            GraphBuilder::new("empty").finish(),
            Err(ModelError::Graph(_))
        ));
    }

    #[test]
    fn emission_is_deterministic() -> Result<(), ModelError> {
        assert_eq!(tiny()?.finish()?, tiny()?.finish()?);
        Ok(())
    }

    #[test]
    fn int64_constants_are_raw_little_endian() -> Result<(), ModelError> {
        let t = tensor_i64("c", &[2], &[-1, 7])?;
        assert_eq!(t.to_i64_vec(), Some(vec![-1, 7]));
        let raw = t.raw_data.unwrap_or_default();
        assert_eq!(&raw[..8], &(-1i64).to_le_bytes());
        Ok(())
    }
}
