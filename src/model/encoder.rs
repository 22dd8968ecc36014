//! The built-in encoder family: a small ResNet described by an [`EncoderSpec`], validated for an
//! input size, and emitted as a self-contained ONNX model.
//!
//! Architecture (per sample, input `[in_channels, S, S]`):
//! stem Conv3×3 → BN → ReLU (→ MaxPool3×3/2, pad 1), its strides set by [`Stem`]: ÷4 for photos,
//! ÷2 or ÷1 for small images like CIFAR's or MNIST's; stage *i* has `width·2^i` channels and
//! `stages[i]` basic blocks, the first of which strides 2 (except in stage 0); then the features
//! ([`Features`]): `last` (default) is GlobalAveragePool → Flatten → Linear → `embedding`
//! `[embedding_dim]`; `stages` averages every stage's output over a grid of cells (2×2 unless
//! `grid` says otherwise) and concatenates them, without a projection (the multi-layer,
//! spatially pooled features linear probes favour).
//!
//! Guarantees:
//! - [`BuiltinEncoder::new`] checks the whole spec and the input size up front; after it succeeds,
//!   shapes, parameters and emission cannot fail on account of the spec.
//! - The ONNX graph has exactly one input, `images` float `[N, in_channels, S, S]`, and one output,
//!   `embedding` float `[N, embedding_dim]`; samples do not interact (BatchNorm uses running
//!   statistics), so a sample's embedding does not depend on the rest of its batch.
//! - The model carries its own description: the spec as JSON under `sslpipe.encoder_spec` and the
//!   input size under `sslpipe.input_size`; [`BuiltinEncoder::from_onnx`] rebuilds the encoder and
//!   its parameters from such a file (what training and fine-tuning start from).

use prost::Message;
use serde::{Deserialize, Serialize};

use super::ModelError;
use super::emit::{Emit, Mode};
use super::graph::{Dim, GraphBuilder, attr_int, attr_ints};
use super::layers::Layer;
use super::onnx::{ModelProto, tensor_proto::DataType};
use super::params::{ParamSet, ParamSpec};

/// Name of the graph input.
pub const IMAGES_INPUT: &str = "images";
/// Name of the graph output.
pub const EMBEDDING_OUTPUT: &str = "embedding";
/// Metadata key holding the [`EncoderSpec`] as JSON.
pub const SPEC_METADATA_KEY: &str = "sslpipe.encoder_spec";
/// Embedding length of the `last` features unless the pipeline sets one.
pub const DEFAULT_EMBEDDING_DIM: u32 = 256;
/// Metadata key holding the input size in pixels.
pub const INPUT_SIZE_METADATA_KEY: &str = "sslpipe.input_size";

// Limits that keep every size far from overflow and every model within reason for this tool.
const MAX_CHANNELS: u64 = 4096;
const MAX_STAGES: usize = 6;
const MAX_BLOCKS_PER_STAGE: u32 = 32;
const MAX_EMBEDDING_DIM: u32 = 32768;
const MAX_IN_CHANNELS: u32 = 64;
const MAX_INPUT_SIZE: u32 = 8192;
const MAX_GRID: u32 = 16;
/// Cells per side of the `stages` pooling grid unless the spec says otherwise.
pub const DEFAULT_GRID: u32 = 2;

/// What the encoder's embedding is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Features {
    /// The last stage's map, globally averaged, through a linear projection to `embedding_dim`.
    #[default]
    Last,
    /// Every stage's map averaged over a grid of `grid`×`grid` cells (fewer on a map with fewer
    /// pixels per side: then every pixel is a cell; neighbouring cells overlap when the side is
    /// not a multiple of the cell count), flattened channel-major and concatenated in stage
    /// order. No projection: the dimension follows from the widths, the grid and the input size.
    /// Linear probes on such multi-layer, spatially pooled features are the usual evaluation of
    /// pretext-trained encoders (the layer right under a pretext head transfers worst).
    Stages,
}

/// How much the stem shrinks the input before stage 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stem {
    /// Conv3×3 stride 2, then MaxPool3×3 stride 2 (÷4): the ImageNet ResNet's, for photos of
    /// 64 px and more.
    #[default]
    Pooled,
    /// Conv3×3 stride 2, no pooling (÷2): every map has twice the side, so the encoder costs
    /// about 4× the pooled one's compute.
    Strided,
    /// Conv3×3 stride 1, no pooling (÷1): CIFAR ResNets' stem, for images of about 32 px, where
    /// the pooled stem would leave stage 0 an 8×8 map. About 16× the pooled encoder's compute.
    Full,
}

impl Stem {
    fn conv_stride(self) -> usize {
        match self {
            Stem::Pooled | Stem::Strided => 2,
            Stem::Full => 1,
        }
    }

    /// Halvings of the side: the conv's stride, then the max-pool of the pooled stem.
    fn halvings(self) -> u32 {
        self.conv_stride().trailing_zeros() + u32::from(self == Stem::Pooled)
    }
}

/// What a user chooses about the built-in encoder (the `[model]` part of a pipeline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderSpec {
    /// Channels of the stem and of stage 0; stage *i* has `width·2^i`.
    pub width: u32,
    /// Residual blocks per stage; its length is the number of stages.
    pub stages: Vec<u32>,
    /// Length of the embedding vector (with [`Features::Stages`], set by [`BuiltinEncoder::new`]).
    pub embedding_dim: u32,
    /// Channels of the input image (3 for RGB, 1 for the L channel of colorization).
    pub in_channels: u32,
    /// What the embedding is made of.
    pub features: Features,
    /// How much the stem downsamples (models saved before this field existed have `pooled`).
    pub stem: Stem,
    /// Cells per side of each stage's pooling grid with [`Features::Stages`].
    pub grid: u32,
}

impl Default for EncoderSpec {
    fn default() -> Self {
        EncoderSpec {
            width: 32,
            stages: vec![1, 1, 1, 1],
            embedding_dim: DEFAULT_EMBEDDING_DIM,
            in_channels: 3,
            features: Features::Last,
            stem: Stem::Pooled,
            grid: DEFAULT_GRID,
        }
    }
}

impl EncoderSpec {
    /// How many times the spatial size shrinks from input to the last stage.
    fn downsampling(&self) -> u32 {
        // The stem halves up to twice; every stage after the first halves once.
        let halvings = self.stem.halvings() + self.stages.len().saturating_sub(1) as u32;
        1u32.checked_shl(halvings).unwrap_or(u32::MAX)
    }

    fn validate(&self) -> Result<(), ModelError> {
        let invalid = |field, expected: String, found: String| {
            Err(ModelError::InvalidSpec {
                field,
                expected,
                found,
            })
        };
        if self.width == 0 {
            return invalid("width", "at least 1".into(), "0".into());
        }
        if self.features == Features::Last
            && (self.embedding_dim == 0 || self.embedding_dim > MAX_EMBEDDING_DIM)
        {
            return invalid(
                "embedding_dim",
                format!("between 1 and {MAX_EMBEDDING_DIM}"),
                self.embedding_dim.to_string(),
            );
        }
        if self.grid == 0 || self.grid > MAX_GRID {
            return invalid(
                "grid",
                format!("between 1 and {MAX_GRID} cells per side"),
                self.grid.to_string(),
            );
        }
        if self.in_channels == 0 || self.in_channels > MAX_IN_CHANNELS {
            return invalid(
                "in_channels",
                format!("between 1 and {MAX_IN_CHANNELS}"),
                self.in_channels.to_string(),
            );
        }
        if self.stages.is_empty() || self.stages.len() > MAX_STAGES {
            return invalid(
                "stages",
                format!("a list of 1 to {MAX_STAGES} block counts"),
                format!("{:?}", self.stages),
            );
        }
        if let Some((i, &n)) = self
            .stages
            .iter()
            .enumerate()
            .find(|(_, n)| **n == 0 || **n > MAX_BLOCKS_PER_STAGE)
        {
            return invalid(
                "stages",
                format!("between 1 and {MAX_BLOCKS_PER_STAGE} blocks in every stage"),
                format!("{n} in stage {i} of {:?}", self.stages),
            );
        }
        let widest = u64::from(self.width) << (self.stages.len() - 1);
        if widest > MAX_CHANNELS {
            return invalid(
                "width",
                format!(
                    "small enough that the last stage (width·2^{}) has at most {MAX_CHANNELS} channels",
                    self.stages.len() - 1
                ),
                format!("{} ({widest} channels in the last stage)", self.width),
            );
        }
        Ok(())
    }
}

/// A layer of the encoder with its place in the model: its name (the prefix of its parameters)
/// and the per-sample shapes it maps between.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedLayer {
    pub name: String,
    pub layer: Layer,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
}

impl NamedLayer {
    /// The layer's parameters, fully named (`{name}.weight`, …).
    pub fn params(&self) -> Vec<ParamSpec> {
        self.layer
            .params(&self.input_shape)
            .into_iter()
            .map(|p| p.prefixed(&self.name))
            .collect()
    }

    /// Appends the layer's nodes reading `x` (see [`Layer::emit`]).
    pub fn emit<E: Emit>(&self, e: &mut E, mode: Mode, x: &str) -> Result<String, E::Error> {
        self.layer.emit(e, mode, x, &self.name, &self.input_shape)
    }
}

/// Cells per side of a stage's pooling grid: `grid`, or the side itself when it is shorter.
fn grid_cells(grid: u32, side: usize) -> usize {
    side.clamp(1, grid as usize)
}

/// The AveragePool window that cuts `side` pixels into `cells` cells covering all of them:
/// stride `⌊side/cells⌋` and kernel `side − (cells−1)·stride` (so odd remainders widen every
/// cell, and neighbours overlap, rather than dropping the last pixels).
pub(super) fn cell_window(side: usize, cells: usize) -> (i64, i64) {
    let stride = side / cells;
    ((side - (cells - 1) * stride) as i64, stride as i64)
}

/// A validated encoder for one input size.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltinEncoder {
    spec: EncoderSpec,
    input_size: u32,
    layers: Vec<NamedLayer>,
    /// Index in `layers` of each stage's last block.
    stage_ends: Vec<usize>,
}

impl BuiltinEncoder {
    /// Validates `spec` for square inputs of `input_size` pixels and lays out the layers.
    pub fn new(mut spec: EncoderSpec, input_size: u32) -> Result<Self, ModelError> {
        spec.validate()?;
        let downsampling = spec.downsampling();
        if input_size < downsampling {
            return Err(ModelError::InputTooSmall {
                size: input_size,
                minimum: downsampling,
                downsampling,
            });
        }
        if input_size > MAX_INPUT_SIZE {
            return Err(ModelError::InvalidSpec {
                field: "input size",
                expected: format!("at most {MAX_INPUT_SIZE} px"),
                found: format!("{input_size} px"),
            });
        }

        let width = spec.width as usize;
        let mut plan: Vec<(String, Layer)> = vec![
            (
                "stem.conv".into(),
                Layer::conv(width, 3, spec.stem.conv_stride(), 1),
            ),
            ("stem.bn".into(), Layer::BatchNorm),
            ("stem.relu".into(), Layer::Relu),
        ];
        if spec.stem == Stem::Pooled {
            plan.push((
                "stem.pool".into(),
                Layer::MaxPool {
                    kernel: 3,
                    stride: 2,
                    padding: 1,
                },
            ));
        }
        let mut stage_ends = Vec::with_capacity(spec.stages.len());
        for (i, &blocks) in spec.stages.iter().enumerate() {
            let out = width << i;
            for j in 0..blocks as usize {
                let stride = if i > 0 && j == 0 { 2 } else { 1 };
                plan.push((
                    format!("stage{i}.block{j}"),
                    Layer::BasicBlock {
                        out_channels: out,
                        stride,
                    },
                ));
            }
            stage_ends.push(plan.len() - 1);
        }
        if spec.features == Features::Last {
            plan.push(("pool".into(), Layer::GlobalAvgPool));
            plan.push(("flatten".into(), Layer::Flatten));
            plan.push((
                "embed".into(),
                Layer::Linear {
                    out_features: spec.embedding_dim as usize,
                    bias: true,
                },
            ));
        }

        let mut shape = vec![
            spec.in_channels as usize,
            input_size as usize,
            input_size as usize,
        ];
        let mut layers = Vec::with_capacity(plan.len());
        for (name, layer) in plan {
            let output_shape = layer.output_shape(&shape)?;
            layers.push(NamedLayer {
                name,
                layer,
                input_shape: shape,
                output_shape: output_shape.clone(),
            });
            shape = output_shape;
        }
        if spec.features == Features::Stages {
            let dim: usize = stage_ends
                .iter()
                .map(|&i| {
                    let s = &layers[i].output_shape;
                    s[0] * grid_cells(spec.grid, s[1]) * grid_cells(spec.grid, s[2])
                })
                .sum();
            if dim > MAX_EMBEDDING_DIM as usize {
                return Err(ModelError::InvalidSpec {
                    field: "features",
                    expected: format!(
                        "at most {MAX_EMBEDDING_DIM} values (every stage's channels × grid cells)"
                    ),
                    found: format!("{dim} (lower `grid` or `width`)"),
                });
            }
            spec.embedding_dim = dim as u32;
        }
        Ok(BuiltinEncoder {
            spec,
            input_size,
            layers,
            stage_ends,
        })
    }

    /// How many of [`layers`](Self::layers) compute feature maps: the stem and every stage, up to
    /// the last stage's output (what dense heads and pooled heads read).
    pub fn feature_map_layers(&self) -> usize {
        self.stage_ends.last().map_or(0, |&i| i + 1)
    }

    pub fn spec(&self) -> &EncoderSpec {
        &self.spec
    }

    pub fn input_size(&self) -> u32 {
        self.input_size
    }

    /// `[in_channels, S, S]`.
    pub fn input_shape(&self) -> Vec<usize> {
        let s = self.input_size as usize;
        vec![self.spec.in_channels as usize, s, s]
    }

    pub fn embedding_dim(&self) -> usize {
        self.spec.embedding_dim as usize
    }

    /// The smallest input size this spec accepts.
    pub fn min_input_size(spec: &EncoderSpec) -> u32 {
        spec.downsampling()
    }

    /// The layers in order, with names and shapes.
    pub fn layers(&self) -> &[NamedLayer] {
        &self.layers
    }

    /// Every parameter and buffer, fully named, in model order.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        self.layers.iter().flat_map(NamedLayer::params).collect()
    }

    /// Fresh parameters from `seed` (bit-identical on every machine).
    pub fn init_params(&self, seed: u64) -> ParamSet {
        ParamSet::init_validated(&self.param_specs(), seed)
    }

    /// Learnable scalars (BatchNorm running statistics are not counted, as in PyTorch).
    pub fn num_params(&self) -> usize {
        self.param_specs()
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.numel())
            .sum()
    }

    /// Multiply-accumulates per image (convolutions and the final Linear), the usual "FLOPs" of
    /// ResNet tables.
    pub fn flops_per_image(&self) -> u64 {
        // Shapes were checked in `new`, so no layer can refuse its input here.
        self.layers
            .iter()
            .map(|l| l.layer.macs(&l.input_shape).unwrap_or(0))
            .sum()
    }

    /// Appends the encoder's inference nodes reading `input` (`[N, C, S, S]`); parameters are read
    /// by their names, which must already be defined (initializers or graph inputs). Returns the
    /// name of the `[N, embedding_dim]` result.
    pub fn emit_forward(&self, g: &mut GraphBuilder, input: &str) -> Result<String, ModelError> {
        self.emit(g, Mode::Infer, input)
    }

    /// Appends the first `count` layers in `mode` reading `input`; returns every layer's output.
    pub fn emit_layers<E: Emit>(
        &self,
        e: &mut E,
        mode: Mode,
        input: &str,
        count: usize,
    ) -> Result<Vec<String>, E::Error> {
        let mut outputs: Vec<String> = Vec::with_capacity(count);
        for l in self.layers.iter().take(count) {
            let x = outputs.last().map_or(input, String::as_str);
            let y = l.emit(e, mode, x)?;
            outputs.push(y);
        }
        Ok(outputs)
    }

    /// Appends the whole encoder in `mode` reading `input`: every layer, then (features =
    /// `stages`) the per-stage grid pooling. Returns the name of the embedding.
    pub fn emit<E: Emit>(&self, e: &mut E, mode: Mode, input: &str) -> Result<String, E::Error> {
        let outputs = self.emit_layers(e, mode, input, self.layers.len())?;
        if self.spec.features == Features::Last {
            return Ok(outputs.last().map_or(input, String::as_str).to_string());
        }
        let stage_outputs = self.stage_ends.iter().map(|&i| (i, outputs[i].clone()));
        let cells = |side| grid_cells(self.spec.grid, side);
        let mut pooled = Vec::with_capacity(stage_outputs.len());
        for (i, out) in stage_outputs {
            let (name, shape) = (&self.layers[i].name, &self.layers[i].output_shape);
            let (h, w) = (shape[1], shape[2]);
            let grid = if cells(h) * cells(w) == 1 {
                e.node(
                    "GlobalAveragePool",
                    &[&out],
                    &format!("{name}.grid"),
                    vec![],
                )?
            } else {
                let (kh, sh) = cell_window(h, cells(h));
                let (kw, sw) = cell_window(w, cells(w));
                e.node(
                    "AveragePool",
                    &[&out],
                    &format!("{name}.grid"),
                    vec![
                        attr_ints("kernel_shape", &[kh, kw]),
                        attr_ints("strides", &[sh, sw]),
                    ],
                )?
            };
            pooled.push(e.node(
                "Flatten",
                &[&grid],
                &format!("{name}.grid_flat"),
                vec![attr_int("axis", 1)],
            )?);
        }
        let inputs: Vec<&str> = pooled.iter().map(String::as_str).collect();
        e.node(
            "Concat",
            &inputs,
            "stage_features",
            vec![attr_int("axis", 1)],
        )
    }

    /// A graph documented by `doc`, with the `images` input (`[N, channels, S, S]`) and `params`
    /// as initializers; returns it with the input's name. What comes between the input and the
    /// encoder (a prelude that converts the input) is the caller's.
    pub fn graph_with_params(
        &self,
        params: &ParamSet,
        channels: usize,
        doc: String,
    ) -> Result<(GraphBuilder, String), ModelError> {
        let mut g = GraphBuilder::new("sslpipe_encoder");
        g.doc_string(doc);
        let s = self.input_size as usize;
        let images = g.input(
            IMAGES_INPUT,
            DataType::Float,
            &Dim::batched(&[channels, s, s]),
        )?;
        for spec in self.param_specs() {
            let p = params
                .get(&spec.name)
                .ok_or_else(|| ModelError::MissingParam {
                    name: spec.name.clone(),
                    shape: spec.shape.clone(),
                })?;
            g.initializer_f32(&p.name, &p.shape, &p.data)?;
        }
        Ok((g, images))
    }

    /// The encoder's forward pass from `input` and the graph's `embedding` output.
    pub fn emit_embedding(&self, g: &mut GraphBuilder, input: &str) -> Result<(), ModelError> {
        let out = self.emit_forward(g, input)?;
        g.node_with_outputs("Identity", &[&out], &[EMBEDDING_OUTPUT], vec![])?;
        g.output(
            EMBEDDING_OUTPUT,
            DataType::Float,
            &Dim::batched(&[self.embedding_dim()]),
        )
    }

    /// The inference model with `params` baked in as initializers.
    pub fn to_onnx(&self, params: &ParamSet) -> Result<Vec<u8>, ModelError> {
        let specs = self.param_specs();
        params.check_against(&specs)?;
        let doc = format!(
            "sslpipe built-in encoder: ResNet-style, width {}, stages {:?}, {}-d embedding, input {}x{}x{}",
            self.spec.width,
            self.spec.stages,
            self.spec.embedding_dim,
            self.spec.in_channels,
            self.input_size,
            self.input_size
        );
        let (mut g, images) =
            self.graph_with_params(params, self.spec.in_channels as usize, doc)?;
        self.emit_embedding(&mut g, &images)?;
        let spec_json = serde_json::to_string(&self.spec)
            .map_err(|e| ModelError::Graph(format!("could not serialise the encoder spec: {e}")))?;
        g.metadata(SPEC_METADATA_KEY, spec_json);
        g.metadata(INPUT_SIZE_METADATA_KEY, self.input_size.to_string());
        g.finish()
    }

    /// Rebuilds the encoder and its parameters from a model written by [`Self::to_onnx`].
    pub fn from_onnx(bytes: &[u8]) -> Result<(Self, ParamSet), ModelError> {
        let model = ModelProto::decode(bytes).map_err(|e| ModelError::Decode(e.to_string()))?;
        let spec_json = model.metadata(SPEC_METADATA_KEY).ok_or_else(|| {
            ModelError::Decode(format!(
                "no `{SPEC_METADATA_KEY}` metadata: not a model written by sslpipe's built-in encoder"
            ))
        })?;
        let spec: EncoderSpec = serde_json::from_str(spec_json).map_err(|e| {
            ModelError::Decode(format!("`{SPEC_METADATA_KEY}` is not a valid spec: {e}"))
        })?;
        let size_text = model.metadata(INPUT_SIZE_METADATA_KEY).unwrap_or_default();
        let input_size: u32 = size_text.parse().map_err(|_| {
            ModelError::Decode(format!(
                "`{INPUT_SIZE_METADATA_KEY}` should be a pixel count, found {size_text:?}"
            ))
        })?;
        let encoder = BuiltinEncoder::new(spec, input_size)?;
        let graph = model.graph.unwrap_or_default();
        let mut params = ParamSet::new();
        for spec in encoder.param_specs() {
            let tensor = graph
                .initializer
                .iter()
                .find(|t| t.name.as_deref() == Some(spec.name.as_str()))
                .ok_or_else(|| ModelError::MissingParam {
                    name: spec.name.clone(),
                    shape: spec.shape.clone(),
                })?;
            let shape: Vec<usize> = tensor
                .dims
                .iter()
                .map(|&d| usize::try_from(d).unwrap_or(0))
                .collect();
            if shape != spec.shape {
                return Err(ModelError::ParamShape {
                    name: spec.name,
                    expected: spec.shape,
                    found: shape,
                });
            }
            let data = tensor.to_f32_vec().ok_or_else(|| {
                ModelError::Decode(format!(
                    "initializer `{}` is not inline float data",
                    spec.name
                ))
            })?;
            params.push(spec.name, shape, data)?;
        }
        Ok((encoder, params))
    }
}
