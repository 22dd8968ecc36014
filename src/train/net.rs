//! The model a train step is compiled from: the built-in encoder, how a batch enters it
//! ([`InputLayout`]: plain images, jigsaw tiles through a shared encoder, or several views), which
//! of its tensors the head reads ([`Tap`]), and the head as a list of [`HeadLayer`]s.
//!
//! Guarantees:
//! - [`Network::new`] validates the whole spec (every layer's shapes, the loss against the head's
//!   output, the optimizer) before anything is emitted, and every error names what is wrong.
//! - Parameter names are the encoder's own (`stem.conv.weight`, …, as in its `.onnx` file) and
//!   `head.<i>.<name>` for head layer *i*: a checkpoint's encoder part loads into
//!   [`crate::model::BuiltinEncoder::to_onnx`] unchanged.
//! - Training mode differs from the exported forward graph in exactly two places: BatchNorm
//!   normalises with the batch's statistics and outputs updated running statistics, and MaxPool
//!   also outputs its argmax indices (for its gradient). Every other layer is emitted by the same
//!   code (`src/model`'s `emit_forward`) in both, so the exported `.onnx` computes what was trained.
//! - The exported forward graphs ([`Network::encoder_onnx`], [`Network::forward_onnx`]) have a
//!   symbolic batch dimension and use running statistics: samples do not interact.

use serde::{Deserialize, Serialize};

use super::TrainError;
use super::loss::Loss;
use super::optim::Optimizer;
use super::tape::{Shape, Tape};
use super::vjp::batch_norm_train;
use crate::model::encoder::{Features, IMAGES_INPUT};
use crate::model::graph::{Dim, attr_float, attr_ints, attr_string};
use crate::model::onnx::AttributeProto;
use crate::model::onnx::tensor_proto::DataType;
use crate::model::{
    BatchNorm2d, BuiltinEncoder, Conv2d, EncoderSpec, GraphBuilder, Init, Layer, Linear, MaxPool2d,
    NamedLayer, ParamSet, ParamSpec, Relu,
};

/// Name of the forward graph's output (encoder + head).
pub const PREDICTION_OUTPUT: &str = "prediction";

/// How a batch is laid out and fed to the encoder.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum InputLayout {
    /// `images [B, C, S, S]`.
    #[default]
    Images,
    /// `images [B, T, C, S, S]`: T tiles per sample go through the shared encoder as B·T images;
    /// their features are concatenated per sample (`[B, T·D]`) before the head (jigsaw, relative
    /// patch location).
    Tiles { count: usize },
    /// `images [B, V, C, S, S]`: V views per sample go through encoder and head as B·V rows, in
    /// sample-major order (rows V·i … V·i+V−1 are sample i); what contrastive losses expect.
    Views { count: usize },
}

/// Which encoder tensor the head reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tap {
    /// The embedding `[D]` (after the encoder's pooling and its `embed` Linear).
    #[default]
    Embedding,
    /// The last stage's feature map `[C, h, w]` (dense heads: colorization, inpainting). The
    /// encoder's pooling and `embed` layers are then not part of the train step.
    FeatureMap,
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}

/// One layer of a head. Input sizes are taken from the layer before, so a head reads like a
/// PyTorch `nn.Sequential` without the `in_*` arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum HeadLayer {
    /// `[F] → [out_features]`.
    Linear {
        out_features: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    /// 2-D convolution, square kernel, symmetric padding.
    Conv {
        out_channels: usize,
        kernel: usize,
        #[serde(default = "one")]
        stride: usize,
        #[serde(default)]
        padding: usize,
        #[serde(default = "one")]
        groups: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    /// Transposed convolution (learned upsampling), weight `[in, out, k, k]` as in PyTorch.
    ConvTranspose {
        out_channels: usize,
        kernel: usize,
        stride: usize,
        #[serde(default)]
        padding: usize,
        #[serde(default)]
        output_padding: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    /// Nearest-neighbour upsampling by an integer factor (follow with a Conv: Resize+Conv).
    Upsample {
        scale: usize,
    },
    /// BatchNorm over channels (axis 1), for `[C, H, W]` or `[F]` inputs.
    BatchNorm,
    Relu,
    Tanh,
    Sigmoid,
    MaxPool {
        kernel: usize,
        stride: usize,
        #[serde(default)]
        padding: usize,
    },
    /// Average pooling without padding.
    AvgPool {
        kernel: usize,
        stride: usize,
    },
    GlobalAvgPool,
    Flatten,
}

/// Everything a train step is compiled from; serialised into checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    pub encoder: EncoderSpec,
    /// Side of the (square) images the encoder sees, in pixels (a tile's side for `Tiles`).
    pub input_size: u32,
    #[serde(default)]
    pub input: InputLayout,
    #[serde(default)]
    pub tap: Tap,
    pub head: Vec<HeadLayer>,
    pub loss: Loss,
    pub optimizer: Optimizer,
    /// Samples per step (B). Train-step graphs are compiled for exactly this many.
    pub batch_size: usize,
}

/// A head layer with everything resolved: its parameters' prefix and shapes per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadNode {
    pub name: String,
    pub op: HeadOp,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
}

/// A resolved head layer: a `src/model` layer where one exists, else the few head-only ops.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadOp {
    Model(Layer),
    BatchNorm(BatchNorm2d),
    ConvTranspose {
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        output_padding: usize,
        bias: bool,
    },
    Upsample(usize),
    AvgPool {
        kernel: usize,
        stride: usize,
    },
    Tanh,
    Sigmoid,
}

/// A validated [`TrainSpec`].
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    spec: TrainSpec,
    encoder: BuiltinEncoder,
    /// The encoder layers the train step runs (all of them for `Tap::Embedding`).
    used: usize,
    head: Vec<HeadNode>,
    /// Full shape of the `images` input.
    images_shape: Shape,
    /// Rows the encoder sees per step (B, or B·T / B·V).
    rows: usize,
    /// Full shape of the head's output.
    pred_shape: Shape,
}

fn spec_err(m: impl Into<String>) -> TrainError {
    TrainError::Spec(m.into())
}

impl HeadLayer {
    fn resolve(&self, input: &[usize], name: &str) -> Result<HeadOp, TrainError> {
        let chan = || -> Result<usize, TrainError> {
            input
                .first()
                .copied()
                .ok_or_else(|| spec_err(format!("{name}: empty input shape")))
        };
        Ok(match self {
            HeadLayer::Linear { out_features, bias } => {
                if input.len() != 1 {
                    return Err(spec_err(format!(
                        "{name}: linear needs a flat input [F], found {input:?}; put `flatten` (or `global_avg_pool`, `flatten`) before it"
                    )));
                }
                HeadOp::Model(Layer::Linear(Linear {
                    in_features: input[0],
                    out_features: *out_features,
                    bias: *bias,
                }))
            }
            HeadLayer::Conv {
                out_channels,
                kernel,
                stride,
                padding,
                groups,
                bias,
            } => HeadOp::Model(Layer::Conv2d(Conv2d {
                in_channels: chan()?,
                out_channels: *out_channels,
                kernel: *kernel,
                stride: *stride,
                padding: *padding,
                groups: *groups,
                bias: *bias,
            })),
            HeadLayer::ConvTranspose {
                out_channels,
                kernel,
                stride,
                padding,
                output_padding,
                bias,
            } => {
                if input.len() != 3
                    || *kernel == 0
                    || *stride == 0
                    || *out_channels == 0
                    || *output_padding >= *stride
                    || *padding >= *kernel
                {
                    return Err(spec_err(format!(
                        "{name}: conv_transpose needs a [C, H, W] input, kernel, stride, out_channels > 0, padding < kernel and output_padding < stride; found input {input:?}, {self:?}"
                    )));
                }
                HeadOp::ConvTranspose {
                    in_channels: input[0],
                    out_channels: *out_channels,
                    kernel: *kernel,
                    stride: *stride,
                    padding: *padding,
                    output_padding: *output_padding,
                    bias: *bias,
                }
            }
            HeadLayer::Upsample { scale } => {
                if input.len() != 3 || *scale < 1 {
                    return Err(spec_err(format!(
                        "{name}: upsample needs a [C, H, W] input and scale ≥ 1, found {input:?}, {scale}"
                    )));
                }
                HeadOp::Upsample(*scale)
            }
            HeadLayer::BatchNorm => HeadOp::BatchNorm(BatchNorm2d::new(chan()?)),
            HeadLayer::Relu => HeadOp::Model(Layer::Relu(Relu)),
            HeadLayer::Tanh => HeadOp::Tanh,
            HeadLayer::Sigmoid => HeadOp::Sigmoid,
            HeadLayer::MaxPool {
                kernel,
                stride,
                padding,
            } => HeadOp::Model(Layer::MaxPool2d(MaxPool2d {
                kernel: *kernel,
                stride: *stride,
                padding: *padding,
            })),
            HeadLayer::AvgPool { kernel, stride } => {
                if input.len() != 3
                    || *kernel == 0
                    || *stride == 0
                    || input[1] < *kernel
                    || input[2] < *kernel
                {
                    return Err(spec_err(format!(
                        "{name}: avg_pool {kernel}/{stride} does not fit {input:?}"
                    )));
                }
                HeadOp::AvgPool {
                    kernel: *kernel,
                    stride: *stride,
                }
            }
            HeadLayer::GlobalAvgPool => {
                HeadOp::Model(Layer::GlobalAvgPool(crate::model::GlobalAvgPool))
            }
            HeadLayer::Flatten => HeadOp::Model(Layer::Flatten(crate::model::Flatten)),
        })
    }
}

impl HeadOp {
    fn output_shape(&self, input: &[usize], name: &str) -> Result<Vec<usize>, TrainError> {
        Ok(match self {
            HeadOp::Model(l) => l.output_shape(input)?,
            HeadOp::BatchNorm(bn) => {
                if input.first() != Some(&bn.channels) || input.len() == 2 {
                    return Err(spec_err(format!(
                        "{name}: batch_norm needs [C, H, W] or [F], found {input:?}"
                    )));
                }
                input.to_vec()
            }
            HeadOp::ConvTranspose {
                out_channels,
                kernel,
                stride,
                padding,
                output_padding,
                ..
            } => {
                let size = |s: usize| (s - 1) * stride + kernel + output_padding;
                let (h, w) = (size(input[1]), size(input[2]));
                if h <= 2 * padding || w <= 2 * padding {
                    return Err(spec_err(format!(
                        "{name}: conv_transpose output would be empty"
                    )));
                }
                vec![*out_channels, h - 2 * padding, w - 2 * padding]
            }
            HeadOp::Upsample(s) => vec![input[0], input[1] * s, input[2] * s],
            HeadOp::AvgPool { kernel, stride } => {
                vec![
                    input[0],
                    (input[1] - kernel) / stride + 1,
                    (input[2] - kernel) / stride + 1,
                ]
            }
            HeadOp::Tanh | HeadOp::Sigmoid => input.to_vec(),
        })
    }

    fn params(&self) -> Vec<ParamSpec> {
        match self {
            HeadOp::Model(l) => l.params(),
            HeadOp::BatchNorm(bn) => bn.params(),
            HeadOp::ConvTranspose {
                in_channels,
                out_channels,
                kernel,
                bias,
                ..
            } => {
                let mut v = vec![ParamSpec::new(
                    "weight",
                    vec![*in_channels, *out_channels, *kernel, *kernel],
                    Init::KaimingNormalFanOut {
                        fan_out: in_channels * kernel * kernel,
                    },
                )];
                if *bias {
                    v.push(ParamSpec::new("bias", vec![*out_channels], Init::Zeros));
                }
                v
            }
            _ => Vec::new(),
        }
    }
}

impl Network {
    pub fn new(spec: TrainSpec) -> Result<Self, TrainError> {
        let encoder = BuiltinEncoder::new(spec.encoder.clone(), spec.input_size)?;
        if spec.batch_size == 0 {
            return Err(spec_err("batch_size must be at least 1"));
        }
        spec.optimizer.validate()?;
        let c = spec.encoder.in_channels as usize;
        let s = spec.input_size as usize;
        let b = spec.batch_size;
        let (images_shape, group) = match spec.input {
            InputLayout::Images => (vec![b, c, s, s], 1),
            InputLayout::Tiles { count } | InputLayout::Views { count } => {
                if count < 1 {
                    return Err(spec_err("tiles/views count must be at least 1"));
                }
                (vec![b, count, c, s, s], count)
            }
        };
        let layers = encoder.layers();
        let used = match spec.tap {
            Tap::Embedding if encoder.spec().features != Features::Last => {
                return Err(spec_err(
                    "a head on the embedding needs the encoder's features = \"last\"",
                ));
            }
            Tap::Embedding => layers.len(),
            Tap::FeatureMap => encoder.feature_map_layers(),
        };
        let enc_out = layers[used - 1].output_shape.clone();
        let mut shape = match spec.input {
            InputLayout::Tiles { count } => {
                let mut v = enc_out.clone();
                v[0] *= count;
                v
            }
            _ => enc_out,
        };
        let mut head = Vec::with_capacity(spec.head.len());
        for (i, layer) in spec.head.iter().enumerate() {
            let name = format!("head.{i}");
            let op = layer.resolve(&shape, &name)?;
            let out = op.output_shape(&shape, &name)?;
            head.push(HeadNode {
                name,
                op,
                input_shape: shape.clone(),
                output_shape: out.clone(),
            });
            shape = out;
        }
        let rows = b * group;
        let head_rows = match spec.input {
            InputLayout::Tiles { .. } => b,
            _ => rows,
        };
        let mut pred_shape = vec![head_rows];
        pred_shape.extend_from_slice(&shape);
        spec.loss.targets(&pred_shape, DataType::Float)?;
        if matches!(spec.loss, Loss::NtXent { .. })
            && spec.input != (InputLayout::Views { count: 2 })
        {
            return Err(spec_err(
                "nt_xent needs input = { kind = \"views\", count = 2 }",
            ));
        }
        Ok(Network {
            spec,
            encoder,
            used,
            head,
            images_shape,
            rows,
            pred_shape,
        })
    }

    pub fn spec(&self) -> &TrainSpec {
        &self.spec
    }

    pub fn encoder(&self) -> &BuiltinEncoder {
        &self.encoder
    }

    pub fn head(&self) -> &[HeadNode] {
        &self.head
    }

    /// Full shape of the `images` input of a train step.
    pub fn images_shape(&self) -> &[usize] {
        &self.images_shape
    }

    /// Full shape of the head's output.
    pub fn prediction_shape(&self) -> &[usize] {
        &self.pred_shape
    }

    /// The encoder layers the train step runs.
    pub fn encoder_layers(&self) -> &[NamedLayer] {
        &self.encoder.layers()[..self.used]
    }

    /// Every tensor of the model (the whole encoder, then the head), in order.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let mut v = self.encoder.param_specs();
        for h in &self.head {
            v.extend(h.op.params().into_iter().map(|p| p.prefixed(&h.name)));
        }
        v
    }

    /// The tensors the train step reads (the encoder layers it runs and the head).
    pub fn step_param_specs(&self) -> Vec<ParamSpec> {
        let mut v: Vec<ParamSpec> = self
            .encoder_layers()
            .iter()
            .flat_map(|l| l.layer.params().into_iter().map(|p| p.prefixed(&l.name)))
            .collect();
        for h in &self.head {
            v.extend(h.op.params().into_iter().map(|p| p.prefixed(&h.name)));
        }
        v
    }

    /// Fresh parameters for every tensor of [`Network::param_specs`].
    pub fn init_params(&self, seed: u64) -> Result<ParamSet, TrainError> {
        Ok(ParamSet::init(&self.param_specs(), seed)?)
    }

    /// Emits the training-mode forward pass on `t`, reading parameters by their names (which must
    /// be defined) and `images`. Returns the prediction and, for every BatchNorm, the tensors
    /// holding its updated running statistics (`(buffer name, new value)`).
    pub fn emit_train(
        &self,
        t: &mut Tape,
        images: &str,
    ) -> Result<(String, Vec<(String, String)>), TrainError> {
        let mut updates = Vec::new();
        let mut x = images.to_string();
        let c = self.spec.encoder.in_channels as usize;
        let s = self.spec.input_size as usize;
        if self.images_shape.len() == 5 {
            let shape = t.ints1("shape", &[self.rows as i64, c as i64, s as i64, s as i64])?;
            x = t.node("Reshape", &[&x, &shape], "images.rows", vec![])?;
        }
        for l in self.encoder_layers() {
            x = emit_layer_train(t, &l.layer, &x, &l.name, &mut updates)?;
        }
        if let InputLayout::Tiles { count } = self.spec.input {
            let mut shape = t.shape(&x)?;
            shape[0] /= count;
            shape[1] *= count;
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let shape = t.ints1("shape", &dims)?;
            x = t.node("Reshape", &[&x, &shape], "tiles.concat", vec![])?;
        }
        for h in &self.head {
            x = emit_head_train(t, &h.op, &x, &h.name, &mut updates)?;
        }
        Ok((x, updates))
    }

    /// Emits the inference-mode forward pass on `t` (BatchNorm with running statistics, as in the
    /// exported graphs), reading parameters by their names and `images`. Returns the prediction.
    pub fn emit_eval(&self, t: &mut Tape, images: &str) -> Result<String, TrainError> {
        let mut x = images.to_string();
        let c = self.spec.encoder.in_channels as i64;
        let s = self.spec.input_size as i64;
        if self.images_shape.len() == 5 {
            let shape = t.ints1("shape", &[self.rows as i64, c, s, s])?;
            x = t.node("Reshape", &[&x, &shape], "images.rows", vec![])?;
        }
        for l in self.encoder_layers() {
            x = t.absorb(|g| l.layer.emit_forward(g, &x, &l.name))?;
        }
        if let InputLayout::Tiles { count } = self.spec.input {
            let mut shape = t.shape(&x)?;
            shape[0] /= count;
            shape[1] *= count;
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let shape = t.ints1("shape", &dims)?;
            x = t.node("Reshape", &[&x, &shape], "tiles.concat", vec![])?;
        }
        for h in &self.head {
            x = match h.op {
                // The static-shape form (Resize with `sizes`), which the tape can infer.
                HeadOp::Upsample(_) => emit_head_train(t, &h.op, &x, &h.name, &mut Vec::new())?,
                _ => t.absorb(|g| emit_head_eval(g, &h.op, &x, &h.name))?,
            };
        }
        Ok(x)
    }

    /// The encoder alone as a standard inference `.onnx` (what the embed phase runs), with the
    /// encoder's tensors taken from `params`.
    pub fn encoder_onnx(&self, params: &ParamSet) -> Result<Vec<u8>, TrainError> {
        Ok(self.encoder.to_onnx(&self.encoder_params(params)?)?)
    }

    /// The encoder's tensors out of a full parameter set (encoder + head).
    pub fn encoder_params(&self, params: &ParamSet) -> Result<ParamSet, TrainError> {
        let mut enc = ParamSet::new();
        for spec in self.encoder.param_specs() {
            let p =
                params
                    .get(&spec.name)
                    .ok_or_else(|| crate::model::ModelError::MissingParam {
                        name: spec.name.clone(),
                        shape: spec.shape.clone(),
                    })?;
            enc.push(p.name.clone(), p.shape.clone(), p.data.clone())?;
        }
        Ok(enc)
    }

    /// Encoder + head as one inference `.onnx`: input `images` (`[N, …]` as in training, N
    /// symbolic), output `prediction`.
    pub fn forward_onnx(&self, params: &ParamSet) -> Result<Vec<u8>, TrainError> {
        let specs = self.param_specs();
        params.check_against(&specs)?;
        let mut g = GraphBuilder::new("sslpipe_encoder_head");
        g.doc_string(
            "sslpipe encoder + pretext head (inference form: BatchNorm uses running statistics)",
        );
        let per_sample: Vec<usize> = self.images_shape[1..].to_vec();
        let images = g.input(IMAGES_INPUT, DataType::Float, &Dim::batched(&per_sample))?;
        for spec in &specs {
            let p =
                params
                    .get(&spec.name)
                    .ok_or_else(|| crate::model::ModelError::MissingParam {
                        name: spec.name.clone(),
                        shape: spec.shape.clone(),
                    })?;
            g.initializer_f32(&p.name, &p.shape, &p.data)?;
        }
        let c = self.spec.encoder.in_channels as i64;
        let s = self.spec.input_size as i64;
        let mut x = images;
        if per_sample.len() == 4 {
            let shape = g.constant_i64("shape", &[4], &[-1, c, s, s])?;
            x = g.node("Reshape", &[&x, &shape], "images.rows", vec![])?;
        }
        for l in self.encoder_layers() {
            x = l.layer.emit_forward(&mut g, &x, &l.name)?;
        }
        if let InputLayout::Tiles { count } = self.spec.input {
            let last = &self.encoder_layers()[self.used - 1].output_shape;
            let mut shape: Vec<i64> = vec![-1, last[0] as i64 * count as i64];
            shape.extend(last[1..].iter().map(|&d| d as i64));
            let sh = g.constant_i64("shape", &[shape.len()], &shape)?;
            x = g.node("Reshape", &[&x, &sh], "tiles.concat", vec![])?;
        }
        for h in &self.head {
            x = emit_head_eval(&mut g, &h.op, &x, &h.name)?;
        }
        g.node_with_outputs("Identity", &[&x], &[PREDICTION_OUTPUT], vec![])?;
        g.output(
            PREDICTION_OUTPUT,
            DataType::Float,
            &Dim::batched(&self.pred_shape[1..]),
        )?;
        let spec_json = serde_json::to_string(&self.spec)
            .map_err(|e| spec_err(format!("cannot serialise the spec: {e}")))?;
        g.metadata("sslpipe.train_spec", spec_json);
        Ok(g.finish()?)
    }
}

fn pname(prefix: &str, n: &str) -> String {
    format!("{prefix}.{n}")
}

/// One `src/model` layer in training mode.
fn emit_layer_train(
    t: &mut Tape,
    layer: &Layer,
    x: &str,
    prefix: &str,
    updates: &mut Vec<(String, String)>,
) -> Result<String, TrainError> {
    match layer {
        Layer::BatchNorm2d(bn) => bn_train(t, bn, x, prefix, updates),
        Layer::MaxPool2d(mp) => {
            let (k, s, p) = (mp.kernel as i64, mp.stride as i64, mp.padding as i64);
            let outs = t.nodes(
                "MaxPool",
                &[x],
                &[prefix, &format!("{prefix}.indices")],
                vec![
                    attr_ints("kernel_shape", &[k, k]),
                    attr_ints("strides", &[s, s]),
                    attr_ints("pads", &[p, p, p, p]),
                ],
            )?;
            Ok(outs[0].clone())
        }
        Layer::BasicBlock(b) => {
            // The same structure and names as `BasicBlock::emit_forward`.
            let sub = |n: &str| pname(prefix, n);
            let h = emit_layer_train(
                t,
                &Layer::Conv2d(b.conv1.clone()),
                x,
                &sub("conv1"),
                updates,
            )?;
            let h = bn_train(t, &b.bn1, &h, &sub("bn1"), updates)?;
            let h = t.absorb(|g| Relu.emit_forward(g, &h, &sub("relu1")))?;
            let h = emit_layer_train(
                t,
                &Layer::Conv2d(b.conv2.clone()),
                &h,
                &sub("conv2"),
                updates,
            )?;
            let h = bn_train(t, &b.bn2, &h, &sub("bn2"), updates)?;
            let s = match &b.shortcut {
                Some((conv, bn)) => {
                    let s = emit_layer_train(
                        t,
                        &Layer::Conv2d(conv.clone()),
                        x,
                        &sub("shortcut.conv"),
                        updates,
                    )?;
                    bn_train(t, bn, &s, &sub("shortcut.bn"), updates)?
                }
                None => x.to_string(),
            };
            let sum = t.node("Add", &[&h, &s], &sub("add"), vec![])?;
            t.absorb(|g| Relu.emit_forward(g, &sum, &sub("relu")))
        }
        other => t.absorb(|g| other.emit_forward(g, x, prefix)),
    }
}

fn bn_train(
    t: &mut Tape,
    bn: &BatchNorm2d,
    x: &str,
    prefix: &str,
    updates: &mut Vec<(String, String)>,
) -> Result<String, TrainError> {
    let rm = pname(prefix, "running_mean");
    let rv = pname(prefix, "running_var");
    let (y, nm, nv) = batch_norm_train(
        t,
        x,
        &pname(prefix, "weight"),
        &pname(prefix, "bias"),
        &rm,
        &rv,
        bn.eps,
        bn.momentum,
        prefix,
    )?;
    updates.push((rm, nm));
    updates.push((rv, nv));
    Ok(y)
}

fn conv_transpose_attrs(
    kernel: usize,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Vec<AttributeProto> {
    let (k, s, p, o) = (
        kernel as i64,
        stride as i64,
        padding as i64,
        output_padding as i64,
    );
    vec![
        attr_ints("kernel_shape", &[k, k]),
        attr_ints("strides", &[s, s]),
        attr_ints("pads", &[p, p, p, p]),
        attr_ints("output_padding", &[o, o]),
    ]
}

fn resize_attrs() -> Vec<AttributeProto> {
    vec![
        attr_string("mode", "nearest"),
        attr_string("coordinate_transformation_mode", "asymmetric"),
        attr_string("nearest_mode", "floor"),
    ]
}

fn emit_head_train(
    t: &mut Tape,
    op: &HeadOp,
    x: &str,
    prefix: &str,
    updates: &mut Vec<(String, String)>,
) -> Result<String, TrainError> {
    match op {
        HeadOp::Model(l) => emit_layer_train(t, l, x, prefix, updates),
        HeadOp::BatchNorm(bn) => bn_train(t, bn, x, prefix, updates),
        HeadOp::Upsample(s) => {
            // Sizes, not scales: the tape's Resize rule needs the output shape.
            let xs = t.shape(x)?;
            let sizes = t.ints1(
                "sizes",
                &[
                    xs[0] as i64,
                    xs[1] as i64,
                    (xs[2] * s) as i64,
                    (xs[3] * s) as i64,
                ],
            )?;
            t.node("Resize", &[x, "", "", &sizes], prefix, resize_attrs())
        }
        _ => {
            let (op_type, inputs, attrs) = same_in_both_forms(op, x, prefix)?;
            let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            t.node(op_type, &inputs, prefix, attrs)
        }
    }
}

/// The node of a head op that is the same in the train step and in inference (no running
/// statistics, no shape-dependent inputs): op type, inputs, attributes.
fn same_in_both_forms(
    op: &HeadOp,
    x: &str,
    prefix: &str,
) -> Result<(&'static str, Vec<String>, Vec<AttributeProto>), crate::model::ModelError> {
    Ok(match op {
        HeadOp::ConvTranspose {
            kernel,
            stride,
            padding,
            output_padding,
            bias,
            ..
        } => {
            let mut inputs = vec![x.to_string(), pname(prefix, "weight")];
            if *bias {
                inputs.push(pname(prefix, "bias"));
            }
            (
                "ConvTranspose",
                inputs,
                conv_transpose_attrs(*kernel, *stride, *padding, *output_padding),
            )
        }
        HeadOp::AvgPool { kernel, stride } => {
            let (k, s) = (*kernel as i64, *stride as i64);
            (
                "AveragePool",
                vec![x.to_string()],
                vec![
                    attr_ints("kernel_shape", &[k, k]),
                    attr_ints("strides", &[s, s]),
                ],
            )
        }
        HeadOp::Tanh => ("Tanh", vec![x.to_string()], vec![]),
        HeadOp::Sigmoid => ("Sigmoid", vec![x.to_string()], vec![]),
        HeadOp::Model(_) | HeadOp::BatchNorm(_) | HeadOp::Upsample(_) => {
            return Err(crate::model::ModelError::Graph(format!(
                "{prefix}: this head op differs between training and inference"
            )));
        }
    })
}

fn emit_head_eval(
    g: &mut GraphBuilder,
    op: &HeadOp,
    x: &str,
    prefix: &str,
) -> Result<String, crate::model::ModelError> {
    Ok(match op {
        HeadOp::Model(l) => l.emit_forward(g, x, prefix)?,
        HeadOp::BatchNorm(bn) => {
            let n = ["weight", "bias", "running_mean", "running_var"].map(|s| pname(prefix, s));
            g.node(
                "BatchNormalization",
                &[x, &n[0], &n[1], &n[2], &n[3]],
                prefix,
                vec![attr_float("epsilon", bn.eps)],
            )?
        }
        HeadOp::Upsample(s) => {
            let sc = g.constant_f32("scales", &[4], &[1.0, 1.0, *s as f32, *s as f32])?;
            g.node("Resize", &[x, "", &sc], prefix, resize_attrs())?
        }
        _ => {
            let (op_type, inputs, attrs) = same_in_both_forms(op, x, prefix)?;
            let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            g.node(op_type, &inputs, prefix, attrs)?
        }
    })
}
