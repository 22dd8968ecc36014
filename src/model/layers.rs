//! The one layer vocabulary models are described in, encoder and heads alike: each [`Layer`] knows
//! the shape it maps an input to, its parameters, its cost, and how to write its forward pass as
//! standard ONNX nodes through [`Emit`] (in either [`Mode`]).
//!
//! Guarantees:
//! - Shapes are per sample (`[C, H, W]` for images, `[F]` after `Flatten`); the batch dimension
//!   never appears here. A layer states only what it produces (`out_channels`, `kernel`, …); input
//!   sizes come from the shape it is given, so a head reads like a PyTorch `nn.Sequential` without
//!   the `in_*` arguments. `output_shape` refuses an input the layer cannot take (wrong rank, a map
//!   smaller than the kernel, channels not divisible by the groups) with a [`ModelError`] naming
//!   the layer, so a model is validated completely before any graph is written; after that,
//!   `params` and `emit` cannot fail on account of the layer.
//! - Parameter names are PyTorch's (`weight`, `bias`, `running_mean`, `running_var`) under the
//!   layer's prefix, so a checkpoint maps onto torchvision-style names without a table.
//! - Each layer is spelled once, in [`Layer::emit`]; the only differences between graphs are the
//!   [`Mode`] (BatchNorm statistics, MaxPool indices) and whether the sink knows static shapes (see
//!   `super::emit`). Differentiation works per ONNX op (`crate::train::ops`), never per layer.
//! - The serialised form (`kind = "conv"`, …, as in training specs and checkpoints) is stable:
//!   fields keep their names, order and defaults.

use serde::{Deserialize, Serialize};

use super::ModelError;
use super::emit::{Emit, Mode};
use super::graph::{attr_float, attr_int, attr_ints, attr_string};
use super::params::{Init, ParamSpec};

/// BatchNorm's epsilon (PyTorch's default).
pub const BN_EPS: f32 = 1e-5;
/// BatchNorm's running-statistics update factor in training (PyTorch convention:
/// new = (1 − m)·old + m·batch).
pub const BN_MOMENTUM: f32 = 0.1;

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}

/// A model's building block. Closed on purpose: a new layer is one variant, and every match over
/// it (shapes, params, emission) is found by the compiler; its ops' shape and gradient rules live
/// in `crate::train::ops`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Layer {
    /// `[F] → [out_features]`: y = x·Wᵀ + b with W stored `[out, in]` (PyTorch layout; Gemm with
    /// transB = 1).
    Linear {
        out_features: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    /// 2-D convolution, square kernel, symmetric padding; weight `[out, in/groups, k, k]`.
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
    /// max(x, 0).
    Relu,
    Tanh,
    Sigmoid,
    /// Max pooling, square window, symmetric padding (padding counts as −inf, as in ONNX).
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
    /// Mean over H and W: `[C, H, W]` → `[C, 1, 1]`.
    GlobalAvgPool,
    /// Everything after the batch axis into one axis: `[C, H, W]` → `[C·H·W]`.
    Flatten,
    /// The ResNet basic block: conv3×3(stride)-BN-ReLU-conv3×3-BN, plus the input (or its 1×1
    /// strided projection + BN when the shape changes), then ReLU.
    BasicBlock {
        out_channels: usize,
        stride: usize,
    },
}

fn param_name(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn mismatch(layer: &str, expected: impl Into<String>, input: &[usize]) -> ModelError {
    ModelError::ShapeMismatch {
        layer: layer.to_string(),
        expected: expected.into(),
        found: input.to_vec(),
    }
}

/// `[C, H, W]` with positive sizes (and `channels` channels when given).
fn chw(
    layer: &str,
    input: &[usize],
    channels: Option<usize>,
) -> Result<(usize, usize, usize), ModelError> {
    match *input {
        [c, h, w] if c > 0 && channels.is_none_or(|want| want == c) && h > 0 && w > 0 => {
            Ok((c, h, w))
        }
        _ => Err(mismatch(
            layer,
            match channels {
                Some(c) => format!("[{c}, H, W]"),
                None => "[C, H, W]".to_string(),
            },
            input,
        )),
    }
}

/// Output length of a window sliding over `size` (ONNX floor semantics); `None` when the padded
/// input is shorter than the kernel.
fn window_out(size: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    let padded = size.checked_add(2 * padding)?;
    if padded < kernel || stride == 0 {
        return None;
    }
    Some((padded - kernel) / stride + 1)
}

fn to_i64(v: usize) -> i64 {
    // Kernel sizes, strides and paddings are validated small numbers; saturate rather than wrap.
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `kernel_shape`, `strides` and `pads` of a square, symmetric window.
fn window_attrs(kernel: usize, stride: usize, padding: usize) -> Vec<super::onnx::AttributeProto> {
    let (k, s, p) = (to_i64(kernel), to_i64(stride), to_i64(padding));
    vec![
        attr_ints("kernel_shape", &[k, k]),
        attr_ints("strides", &[s, s]),
        attr_ints("pads", &[p, p, p, p]),
    ]
}

/// `[x, {prefix}.weight]`, plus `{prefix}.bias` when the layer has one.
fn weight_inputs(x: &str, prefix: &str, bias: bool) -> Vec<String> {
    let mut inputs = vec![x.to_string(), param_name(prefix, "weight")];
    if bias {
        inputs.push(param_name(prefix, "bias"));
    }
    inputs
}

impl Layer {
    /// A bias-free convolution with one group: what precedes a BatchNorm.
    pub fn conv(out_channels: usize, kernel: usize, stride: usize, padding: usize) -> Self {
        Layer::Conv {
            out_channels,
            kernel,
            stride,
            padding,
            groups: 1,
            bias: false,
        }
    }

    /// A basic block's convolutions: conv1, conv2, and the 1×1 projection of the shortcut when
    /// the stride or the channel count changes (`None` for the identity shortcut).
    fn block_convs(
        out_channels: usize,
        stride: usize,
        input: &[usize],
    ) -> (Layer, Layer, Option<Layer>) {
        let projects = stride != 1 || input.first() != Some(&out_channels);
        (
            Layer::conv(out_channels, 3, stride, 1),
            Layer::conv(out_channels, 3, 1, 1),
            projects.then(|| Layer::conv(out_channels, 1, stride, 0)),
        )
    }

    /// The per-sample output shape for a per-sample input shape; an input the layer cannot take
    /// is a [`ModelError`] naming the layer.
    pub fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ModelError> {
        match *self {
            Layer::Linear { out_features, .. } => match *input {
                [f] if f > 0 && out_features > 0 => Ok(vec![out_features]),
                _ => Err(mismatch(
                    "Linear",
                    "a flat [F] (put `flatten`, or `global_avg_pool` then `flatten`, before it) \
                     and a positive output size",
                    input,
                )),
            },
            Layer::Conv {
                out_channels,
                kernel,
                stride,
                padding,
                groups,
                ..
            } => {
                let (c, h, w) = chw("Conv", input, None)?;
                let ok = kernel > 0
                    && stride > 0
                    && groups > 0
                    && out_channels > 0
                    && c.is_multiple_of(groups)
                    && out_channels.is_multiple_of(groups)
                    && padding < kernel;
                if !ok {
                    return Err(ModelError::Graph(format!(
                        "Conv needs positive sizes, channels divisible by groups and padding smaller than the kernel, found {self:?} on {c} input channels"
                    )));
                }
                let too_small = || {
                    mismatch(
                        "Conv",
                        format!("a map of at least {kernel}x{kernel} after padding {padding}"),
                        input,
                    )
                };
                let oh = window_out(h, kernel, stride, padding).ok_or_else(too_small)?;
                let ow = window_out(w, kernel, stride, padding).ok_or_else(too_small)?;
                Ok(vec![out_channels, oh, ow])
            }
            Layer::ConvTranspose {
                out_channels,
                kernel,
                stride,
                padding,
                output_padding,
                ..
            } => {
                let (_, h, w) = chw("ConvTranspose", input, None)?;
                let bad = || {
                    mismatch(
                        "ConvTranspose",
                        format!(
                            "[C, H, W] with kernel, stride, out_channels > 0, padding < kernel, output_padding < stride and a non-empty output; the layer is {self:?}"
                        ),
                        input,
                    )
                };
                if kernel == 0
                    || stride == 0
                    || out_channels == 0
                    || output_padding >= stride
                    || padding >= kernel
                {
                    return Err(bad());
                }
                let size = |s: usize| {
                    ((s - 1) * stride + kernel + output_padding).checked_sub(2 * padding)
                };
                match (size(h), size(w)) {
                    (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Ok(vec![out_channels, oh, ow]),
                    _ => Err(bad()),
                }
            }
            Layer::Upsample { scale } => {
                let (c, h, w) = chw("Upsample", input, None)?;
                if scale < 1 {
                    return Err(mismatch("Upsample", "[C, H, W] and scale ≥ 1", input));
                }
                Ok(vec![c, h * scale, w * scale])
            }
            Layer::BatchNorm => match *input {
                [c] | [c, _, _] if input.iter().all(|&d| d > 0) && c > 0 => Ok(input.to_vec()),
                _ => Err(mismatch("BatchNorm", "[C, H, W] or [F]", input)),
            },
            Layer::Relu | Layer::Tanh | Layer::Sigmoid => Ok(input.to_vec()),
            Layer::MaxPool {
                kernel,
                stride,
                padding,
            } => {
                let (c, h, w) = chw("MaxPool", input, None)?;
                let bad = || {
                    mismatch(
                        "MaxPool",
                        format!(
                            "a map of at least {kernel}x{kernel} (with padding {padding} < kernel {kernel}, stride > 0)"
                        ),
                        input,
                    )
                };
                if kernel == 0 || padding >= kernel {
                    return Err(bad());
                }
                let oh = window_out(h, kernel, stride, padding).ok_or_else(bad)?;
                let ow = window_out(w, kernel, stride, padding).ok_or_else(bad)?;
                Ok(vec![c, oh, ow])
            }
            Layer::AvgPool { kernel, stride } => {
                let (c, h, w) = chw("AvgPool", input, None)?;
                let bad = || {
                    mismatch(
                        "AvgPool",
                        format!("a map of at least {kernel}x{kernel} (stride {stride} > 0)"),
                        input,
                    )
                };
                if kernel == 0 {
                    return Err(bad());
                }
                let oh = window_out(h, kernel, stride, 0).ok_or_else(bad)?;
                let ow = window_out(w, kernel, stride, 0).ok_or_else(bad)?;
                Ok(vec![c, oh, ow])
            }
            Layer::GlobalAvgPool => {
                let (c, _, _) = chw("GlobalAvgPool", input, None)?;
                Ok(vec![c, 1, 1])
            }
            Layer::Flatten => {
                let n = input.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                match n {
                    Some(n) if n > 0 => Ok(vec![n]),
                    _ => Err(mismatch("Flatten", "a non-empty shape", input)),
                }
            }
            Layer::BasicBlock {
                out_channels,
                stride,
            } => {
                let (conv1, conv2, shortcut) = Self::block_convs(out_channels, stride, input);
                let h = conv2.output_shape(&conv1.output_shape(input)?)?;
                let s = match shortcut {
                    Some(conv) => conv.output_shape(input)?,
                    None => input.to_vec(),
                };
                if s != h {
                    return Err(ModelError::ShapeMismatch {
                        layer: "BasicBlock shortcut".into(),
                        expected: format!("{h:?} (the residual branch's shape)"),
                        found: s,
                    });
                }
                Ok(h)
            }
        }
    }

    /// Parameters for an input of shape `input` (one [`Self::output_shape`] accepted), named
    /// relative to the layer (`weight`, `bn1.bias`, …).
    pub fn params(&self, input: &[usize]) -> Vec<ParamSpec> {
        let in_ch = input.first().copied().unwrap_or(0);
        let with_bias = |mut specs: Vec<ParamSpec>, bias: Option<ParamSpec>| {
            specs.extend(bias);
            specs
        };
        match *self {
            Layer::Linear { out_features, bias } => {
                let bound = 1.0 / (in_ch.max(1) as f32).sqrt();
                with_bias(
                    vec![ParamSpec::new(
                        "weight",
                        vec![out_features, in_ch],
                        Init::Uniform { bound },
                    )],
                    bias.then(|| {
                        ParamSpec::new("bias", vec![out_features], Init::Uniform { bound })
                    }),
                )
            }
            Layer::Conv {
                out_channels,
                kernel,
                groups,
                bias,
                ..
            } => with_bias(
                vec![ParamSpec::new(
                    "weight",
                    vec![out_channels, in_ch / groups.max(1), kernel, kernel],
                    Init::KaimingNormalFanOut {
                        fan_out: out_channels * kernel * kernel,
                    },
                )],
                bias.then(|| ParamSpec::new("bias", vec![out_channels], Init::Zeros)),
            ),
            Layer::ConvTranspose {
                out_channels,
                kernel,
                bias,
                ..
            } => with_bias(
                vec![ParamSpec::new(
                    "weight",
                    vec![in_ch, out_channels, kernel, kernel],
                    Init::KaimingNormalFanOut {
                        fan_out: in_ch * kernel * kernel,
                    },
                )],
                bias.then(|| ParamSpec::new("bias", vec![out_channels], Init::Zeros)),
            ),
            Layer::BatchNorm => {
                let c = vec![in_ch];
                vec![
                    ParamSpec::new("weight", c.clone(), Init::Ones),
                    ParamSpec::new("bias", c.clone(), Init::Zeros),
                    ParamSpec::buffer("running_mean", c.clone(), Init::Zeros),
                    ParamSpec::buffer("running_var", c, Init::Ones),
                ]
            }
            Layer::BasicBlock {
                out_channels,
                stride,
            } => {
                let (conv1, conv2, shortcut) = Self::block_convs(out_channels, stride, input);
                let mid = [out_channels];
                let mut specs = Vec::new();
                let mut add = |layer: &Layer, input: &[usize], name: &str| {
                    specs.extend(layer.params(input).into_iter().map(|p| p.prefixed(name)));
                };
                add(&conv1, input, "conv1");
                add(&Layer::BatchNorm, &mid, "bn1");
                add(&conv2, &mid, "conv2");
                add(&Layer::BatchNorm, &mid, "bn2");
                if let Some(c) = &shortcut {
                    add(c, input, "shortcut.conv");
                    add(&Layer::BatchNorm, &mid, "shortcut.bn");
                }
                specs
            }
            Layer::Upsample { .. }
            | Layer::Relu
            | Layer::Tanh
            | Layer::Sigmoid
            | Layer::MaxPool { .. }
            | Layer::AvgPool { .. }
            | Layer::GlobalAvgPool
            | Layer::Flatten => Vec::new(),
        }
    }

    /// Multiply-accumulates per sample (convolutions and matrix products; the element-wise and
    /// pooling work is negligible beside them and not counted).
    pub fn macs(&self, input: &[usize]) -> Result<u64, ModelError> {
        let out = self.output_shape(input)?;
        let in_ch = input.first().copied().unwrap_or(0) as u64;
        let numel = |s: &[usize]| s.iter().product::<usize>() as u64;
        Ok(match *self {
            Layer::Conv { kernel, groups, .. } => {
                numel(&out) * (in_ch / groups.max(1) as u64) * (kernel * kernel) as u64
            }
            Layer::ConvTranspose { kernel, .. } => {
                numel(input) * out[0] as u64 * (kernel * kernel) as u64
            }
            Layer::Linear { out_features, .. } => in_ch * out_features as u64,
            Layer::BasicBlock {
                out_channels,
                stride,
            } => {
                let (conv1, conv2, shortcut) = Self::block_convs(out_channels, stride, input);
                let mid = conv1.output_shape(input)?;
                let mut total = conv1.macs(input)? + conv2.macs(&mid)?;
                if let Some(conv) = shortcut {
                    total += conv.macs(input)?;
                }
                total
            }
            _ => 0,
        })
    }

    /// Appends the forward nodes of this layer reading `x` (whose per-sample shape is `input`);
    /// parameters are read as `{prefix}.{name}`. Returns the name of the output tensor.
    pub fn emit<E: Emit>(
        &self,
        e: &mut E,
        mode: Mode,
        x: &str,
        prefix: &str,
        input: &[usize],
    ) -> Result<String, E::Error> {
        match *self {
            Layer::Linear { bias, .. } => {
                let inputs = weight_inputs(x, prefix, bias);
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                e.node("Gemm", &inputs, prefix, vec![attr_int("transB", 1)])
            }
            Layer::Conv {
                kernel,
                stride,
                padding,
                groups,
                bias,
                ..
            } => {
                let inputs = weight_inputs(x, prefix, bias);
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                let mut attrs = window_attrs(kernel, stride, padding);
                attrs.push(attr_ints("dilations", &[1, 1]));
                attrs.push(attr_int("group", to_i64(groups)));
                e.node("Conv", &inputs, prefix, attrs)
            }
            Layer::ConvTranspose {
                kernel,
                stride,
                padding,
                output_padding,
                bias,
                ..
            } => {
                let inputs = weight_inputs(x, prefix, bias);
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                let o = to_i64(output_padding);
                let mut attrs = window_attrs(kernel, stride, padding);
                attrs.push(attr_ints("output_padding", &[o, o]));
                e.node("ConvTranspose", &inputs, prefix, attrs)
            }
            Layer::Upsample { scale } => {
                let attrs = vec![
                    attr_string("mode", "nearest"),
                    attr_string("coordinate_transformation_mode", "asymmetric"),
                    attr_string("nearest_mode", "floor"),
                ];
                match e.static_shape(x) {
                    // Static shapes (the tape): `sizes`, from which the output shape is known.
                    Some(xs) => {
                        let [n, c, h, w] = xs[..] else {
                            return Err(ModelError::Graph(format!(
                                "{prefix}: Upsample needs [N, C, H, W], found {xs:?}"
                            ))
                            .into());
                        };
                        let s = scale;
                        let dims = [n, c, h * s, w * s].map(to_i64);
                        let sizes = e.const_i64("sizes", &[4], &dims)?;
                        e.node("Resize", &[x, "", "", &sizes], prefix, attrs)
                    }
                    // A symbolic batch: `scales`.
                    None => {
                        let s = scale as f32;
                        let sc = e.const_f32("scales", &[4], &[1.0, 1.0, s, s])?;
                        e.node("Resize", &[x, "", &sc], prefix, attrs)
                    }
                }
            }
            Layer::BatchNorm => {
                let n = ["weight", "bias", "running_mean", "running_var"]
                    .map(|name| param_name(prefix, name));
                match mode {
                    Mode::Infer => e.node(
                        "BatchNormalization",
                        &[x, &n[0], &n[1], &n[2], &n[3]],
                        prefix,
                        vec![attr_float("epsilon", BN_EPS)],
                    ),
                    Mode::Train => e.batch_norm_train(
                        x,
                        [&n[0], &n[1], &n[2], &n[3]],
                        BN_EPS,
                        BN_MOMENTUM,
                        prefix,
                    ),
                }
            }
            Layer::Relu => e.node("Relu", &[x], prefix, vec![]),
            Layer::Tanh => e.node("Tanh", &[x], prefix, vec![]),
            Layer::Sigmoid => e.node("Sigmoid", &[x], prefix, vec![]),
            Layer::MaxPool {
                kernel,
                stride,
                padding,
            } => {
                let attrs = window_attrs(kernel, stride, padding);
                match mode {
                    Mode::Infer => e.node("MaxPool", &[x], prefix, attrs),
                    Mode::Train => {
                        let indices = format!("{prefix}.indices");
                        let outs = e.node_multi("MaxPool", &[x], &[prefix, &indices], attrs)?;
                        outs.into_iter().next().ok_or_else(|| {
                            ModelError::Graph(format!("{prefix}: MaxPool has no output")).into()
                        })
                    }
                }
            }
            Layer::AvgPool { kernel, stride } => {
                let (k, s) = (to_i64(kernel), to_i64(stride));
                e.node(
                    "AveragePool",
                    &[x],
                    prefix,
                    vec![
                        attr_ints("kernel_shape", &[k, k]),
                        attr_ints("strides", &[s, s]),
                    ],
                )
            }
            Layer::GlobalAvgPool => e.node("GlobalAveragePool", &[x], prefix, vec![]),
            Layer::Flatten => e.node("Flatten", &[x], prefix, vec![attr_int("axis", 1)]),
            Layer::BasicBlock {
                out_channels,
                stride,
            } => {
                let (conv1, conv2, shortcut) = Self::block_convs(out_channels, stride, input);
                let sub = |name: &str| param_name(prefix, name);
                // Only the channel count of a shape matters to emission.
                let mid = [out_channels];
                let h = conv1.emit(e, mode, x, &sub("conv1"), input)?;
                let h = Layer::BatchNorm.emit(e, mode, &h, &sub("bn1"), &mid)?;
                let h = Layer::Relu.emit(e, mode, &h, &sub("relu1"), &mid)?;
                let h = conv2.emit(e, mode, &h, &sub("conv2"), &mid)?;
                let h = Layer::BatchNorm.emit(e, mode, &h, &sub("bn2"), &mid)?;
                let s = match shortcut {
                    Some(conv) => {
                        let s = conv.emit(e, mode, x, &sub("shortcut.conv"), input)?;
                        Layer::BatchNorm.emit(e, mode, &s, &sub("shortcut.bn"), &mid)?
                    }
                    None => x.to_string(),
                };
                let sum = e.node("Add", &[&h, &s], &sub("add"), vec![])?;
                Layer::Relu.emit(e, mode, &sum, &sub("relu"), &mid)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_and_pool_shapes_follow_onnx_floor_rules() -> Result<(), ModelError> {
        let conv = Layer::conv(8, 3, 2, 1);
        assert_eq!(conv.output_shape(&[3, 96, 96])?, vec![8, 48, 48]);
        assert_eq!(conv.output_shape(&[3, 7, 5])?, vec![8, 4, 3]);
        let pool = Layer::MaxPool {
            kernel: 3,
            stride: 2,
            padding: 1,
        };
        assert_eq!(pool.output_shape(&[8, 48, 48])?, vec![8, 24, 24]);
        assert_eq!(pool.output_shape(&[8, 1, 1])?, vec![8, 1, 1]);
        // Input channels come from the input; groups must divide them.
        let grouped = Layer::Conv {
            out_channels: 8,
            kernel: 3,
            stride: 1,
            padding: 1,
            groups: 2,
            bias: true,
        };
        assert!(matches!(
            grouped.output_shape(&[3, 96, 96]),
            Err(ModelError::Graph(_))
        ));
        assert_eq!(grouped.params(&[4, 9, 9])[0].shape, vec![8, 2, 3, 3]);
        assert!(matches!(
            conv.output_shape(&[3, 96]),
            Err(ModelError::ShapeMismatch { .. })
        ));
        let big = Layer::conv(8, 7, 1, 0);
        assert!(matches!(
            big.output_shape(&[3, 5, 5]),
            Err(ModelError::ShapeMismatch { .. })
        ));
        Ok(())
    }

    #[test]
    fn basic_block_projects_only_when_needed() -> Result<(), ModelError> {
        let same = Layer::BasicBlock {
            out_channels: 16,
            stride: 1,
        };
        assert!(
            same.params(&[16, 10, 10])
                .iter()
                .all(|p| !p.name.starts_with("shortcut"))
        );
        assert_eq!(same.output_shape(&[16, 10, 10])?, vec![16, 10, 10]);
        let down = Layer::BasicBlock {
            out_channels: 32,
            stride: 2,
        };
        assert_eq!(down.output_shape(&[16, 10, 10])?, vec![32, 5, 5]);
        assert_eq!(down.output_shape(&[16, 11, 11])?, vec![32, 6, 6]);
        // conv1 16·32·9 + 2 BN·4·32 + conv2 32·32·9 + shortcut 16·32 + BN 4·32
        let n: usize = down.params(&[16, 10, 10]).iter().map(|p| p.numel()).sum();
        assert_eq!(n, 16 * 32 * 9 + 32 * 32 * 9 + 16 * 32 + 3 * 4 * 32);
        let names: Vec<_> = down
            .params(&[16, 10, 10])
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert!(names.contains(&"shortcut.bn.running_var".to_string()));
        // MACs at 10x10 → 5x5: conv1 25·32·144, conv2 25·32·288, shortcut 25·32·16.
        assert_eq!(down.macs(&[16, 10, 10])?, 25 * 32 * (144 + 288 + 16));
        Ok(())
    }

    #[test]
    fn linear_and_flatten() -> Result<(), ModelError> {
        assert_eq!(Layer::Flatten.output_shape(&[64, 1, 1])?, vec![64]);
        let fc = Layer::Linear {
            out_features: 10,
            bias: true,
        };
        assert_eq!(fc.output_shape(&[64])?, vec![10]);
        assert!(matches!(
            fc.output_shape(&[64, 1, 1]),
            Err(ModelError::ShapeMismatch { expected, .. }) if expected.contains("flatten")
        ));
        assert_eq!(fc.params(&[64])[0].shape, vec![10, 64]);
        Ok(())
    }

    #[test]
    fn serialised_form_is_the_head_layer_format() -> Result<(), serde_json::Error> {
        // The form training specs (and so checkpoints) have always stored, defaults included.
        let text = r#"[{"kind":"linear","out_features":8},{"kind":"conv","out_channels":4,"kernel":3},
            {"kind":"conv_transpose","out_channels":6,"kernel":4,"stride":2},{"kind":"upsample","scale":2},
            {"kind":"batch_norm"},{"kind":"relu"},{"kind":"tanh"},{"kind":"sigmoid"},
            {"kind":"max_pool","kernel":2,"stride":2},{"kind":"avg_pool","kernel":2,"stride":2},
            {"kind":"global_avg_pool"},{"kind":"flatten"}]"#;
        let layers: Vec<Layer> = serde_json::from_str(text)?;
        assert_eq!(
            layers[1],
            Layer::Conv {
                out_channels: 4,
                kernel: 3,
                stride: 1,
                padding: 0,
                groups: 1,
                bias: true,
            }
        );
        assert_eq!(
            serde_json::to_string(&layers[..3])?,
            r#"[{"kind":"linear","out_features":8,"bias":true},{"kind":"conv","out_channels":4,"kernel":3,"stride":1,"padding":0,"groups":1,"bias":true},{"kind":"conv_transpose","out_channels":6,"kernel":4,"stride":2,"padding":0,"output_padding":0,"bias":true}]"#
        );
        let back: Vec<Layer> = serde_json::from_str(&serde_json::to_string(&layers)?)?;
        assert_eq!(back, layers);
        assert!(
            serde_json::from_str::<Layer>(r#"{"kind":"conv","out_channels":1,"kernel":1,"x":1}"#)
                .is_err()
        );
        Ok(())
    }
}
