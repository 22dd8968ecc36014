//! The model a train step is compiled from: the built-in encoder, how a batch enters it
//! ([`InputLayout`]: plain images, jigsaw tiles through a shared encoder, or several views), which
//! of its tensors the head reads ([`Tap`]), and the head as a list of [`Layer`]s (the same
//! vocabulary as the encoder's).
//!
//! Guarantees:
//! - [`Network::new`] validates the whole spec (every layer's shapes, the loss against the head's
//!   output, the optimizer) before anything is emitted, and every error names what is wrong.
//! - Parameter names are the encoder's own (`stem.conv.weight`, …, as in its `.onnx` file) and
//!   `head.<i>.<name>` for head layer *i*: a checkpoint's encoder part loads into
//!   [`crate::model::BuiltinEncoder::to_onnx`] unchanged.
//! - Every graph of a network — the train step, the evaluation step and both exports
//!   ([`Network::encoder_onnx`], [`Network::forward_onnx`]) — is emitted by one function,
//!   [`Network::emit`], through the [`Emit`] trait. Training mode differs from inference in
//!   exactly two places ([`Mode`]): BatchNorm normalises with the batch's statistics and outputs
//!   updated running statistics, and MaxPool also outputs its argmax indices (for its gradient).
//!   So the exported `.onnx` computes what was trained and evaluated.
//! - The exported forward graphs have a symbolic batch dimension and use running statistics:
//!   samples do not interact.

use serde::{Deserialize, Serialize};

use super::TrainError;
use super::loss::Loss;
use super::optim::Optimizer;
use super::tape::Shape;
use crate::model::encoder::{Features, IMAGES_INPUT};
use crate::model::graph::Dim;
use crate::model::onnx::tensor_proto::DataType;
use crate::model::{
    BuiltinEncoder, Emit, EncoderSpec, GraphBuilder, Layer, Mode, ModelError, NamedLayer, Param,
    ParamSet, ParamSpec,
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
    /// The head, applied to the tapped tensor (`head.<i>` names layer *i*'s parameters).
    pub head: Vec<Layer>,
    pub loss: Loss,
    pub optimizer: Optimizer,
    /// Samples per step (B). Train-step graphs are compiled for exactly this many.
    pub batch_size: usize,
}

/// A validated [`TrainSpec`].
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    spec: TrainSpec,
    encoder: BuiltinEncoder,
    /// The encoder layers the train step runs (all of them for `Tap::Embedding`).
    used: usize,
    head: Vec<NamedLayer>,
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
            let out = layer
                .output_shape(&shape)
                .map_err(|e| spec_err(format!("{name} ({layer:?}): {e}")))?;
            head.push(NamedLayer {
                name,
                layer: layer.clone(),
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

    /// The head's layers with their names and per-sample shapes.
    pub fn head(&self) -> &[NamedLayer] {
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
        v.extend(self.head.iter().flat_map(NamedLayer::params));
        v
    }

    /// The tensors the train step reads (the encoder layers it runs and the head).
    pub fn step_param_specs(&self) -> Vec<ParamSpec> {
        self.encoder_layers()
            .iter()
            .chain(&self.head)
            .flat_map(NamedLayer::params)
            .collect()
    }

    /// Fresh parameters for every tensor of [`Network::param_specs`].
    pub fn init_params(&self, seed: u64) -> Result<ParamSet, TrainError> {
        Ok(ParamSet::init(&self.param_specs(), seed)?)
    }

    /// Emits the forward pass in `mode` on `e`, reading `images` (the full batch, shaped as
    /// [`Network::images_shape`] with any batch size where `e` has a symbolic one) and the
    /// parameters by their names (which must be defined). Returns the prediction. In
    /// [`Mode::Train`] the sink keeps every BatchNorm's updated running statistics
    /// ([`super::Tape::take_running_updates`]).
    pub fn emit<E: Emit>(&self, e: &mut E, mode: Mode, images: &str) -> Result<String, E::Error> {
        // The leading dimension of a reshape: the static row count where the sink knows shapes.
        let fixed = e.static_shape(images).is_some();
        let lead = |rows: usize| if fixed { rows as i64 } else { -1 };
        let mut x = images.to_string();
        if self.images_shape.len() == 5 {
            let c = i64::from(self.spec.encoder.in_channels);
            let s = i64::from(self.spec.input_size);
            let shape = e.const_i64("shape", &[4], &[lead(self.rows), c, s, s])?;
            x = e.node("Reshape", &[&x, &shape], "images.rows", vec![])?;
        }
        let outputs = self.encoder.emit_layers(e, mode, &x, self.used)?;
        if let Some(last) = outputs.last() {
            x = last.clone();
        }
        if let InputLayout::Tiles { count } = self.spec.input {
            let last = &self.encoder_layers()[self.used - 1].output_shape;
            let mut shape = vec![lead(self.spec.batch_size), (last[0] * count) as i64];
            shape.extend(last[1..].iter().map(|&d| d as i64));
            let sh = e.const_i64("shape", &[shape.len()], &shape)?;
            x = e.node("Reshape", &[&x, &sh], "tiles.concat", vec![])?;
        }
        for h in &self.head {
            x = h.emit(e, mode, &x)?;
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
            let p = required(params, &spec)?;
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
            let p = required(params, spec)?;
            g.initializer_f32(&p.name, &p.shape, &p.data)?;
        }
        let x = self.emit(&mut g, Mode::Infer, &images)?;
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

/// The tensor `spec` names, out of `params`.
fn required<'a>(params: &'a ParamSet, spec: &ParamSpec) -> Result<&'a Param, ModelError> {
    params
        .get(&spec.name)
        .ok_or_else(|| ModelError::MissingParam {
            name: spec.name.clone(),
            shape: spec.shape.clone(),
        })
}
