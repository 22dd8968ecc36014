//! The layer vocabulary models are described in: each layer knows its parameters, the shape it
//! maps an input to, its cost, and how to write its forward pass as standard ONNX nodes.
//!
//! Guarantees:
//! - Shapes are per sample (`[C, H, W]` for images, `[F]` after `Flatten`); the batch dimension is
//!   the graph's symbolic `N` and never appears here. `output_shape` refuses an input the layer
//!   cannot take (wrong channel count, a map smaller than the kernel) with a [`ModelError`] naming
//!   the layer, so a model is validated completely before any graph is written.
//! - Parameter names are PyTorch's (`weight`, `bias`, `running_mean`, `running_var`) under the
//!   layer's prefix, so a checkpoint maps onto torchvision-style names without a table.
//! - Emission only references tensors by name (`{prefix}.weight`, …): whether those are
//!   initializers (the inference graph) or graph inputs (a train-step graph) is the caller's
//!   choice, and the same layer code serves both.
//!
//! How backward plugs in (the train-step task): differentiation works per *ONNX op*, not per
//! layer. A layer's forward emission appends a known, small set of nodes (Conv, BatchNormalization,
//! Relu, MaxPool, GlobalAveragePool, Flatten, Gemm, Add); the train builder notes
//! `GraphBuilder::nodes().len()` around each emission, then walks the recorded nodes in reverse and
//! applies one vector-Jacobian rule per `op_type` (Conv → ConvTranspose for dx and a Conv over
//! batch-transposed tensors for dW; Relu → `Where(y > 0, dy, 0)`; Gemm → two Gemms; Add → identity
//! to both sides; GlobalAveragePool → Expand of dy / (H·W); Flatten → Reshape). Everything a rule
//! needs is a node input or output name plus the per-sample shapes from `output_shape`. Two layers
//! need a different *forward* in training, which is why a train-mode emission method is the
//! natural extension point: `BatchNorm2d` must normalise with batch statistics (ReduceMean over
//! N,H,W, and it must output the updated running statistics, momentum [`BatchNorm2d::momentum`]),
//! and `MaxPool2d` should emit its optional `Indices` output for the scatter in its backward rule.
//! [`ParamSpec::trainable`] tells which tensors get gradients and optimizer state.

use super::ModelError;
use super::graph::{GraphBuilder, attr_float, attr_int, attr_ints};
use super::params::{Init, ParamSpec};

/// A model's building block. Closed on purpose: a new layer is one variant, and every match over
/// it (shapes, params, emission, later backward) is found by the compiler.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    Conv2d(Conv2d),
    BatchNorm2d(BatchNorm2d),
    Relu(Relu),
    MaxPool2d(MaxPool2d),
    GlobalAvgPool(GlobalAvgPool),
    Flatten(Flatten),
    Linear(Linear),
    BasicBlock(BasicBlock),
}

impl Layer {
    /// The per-sample output shape for a per-sample input shape.
    pub fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ModelError> {
        match self {
            Layer::Conv2d(l) => l.output_shape(input),
            Layer::BatchNorm2d(l) => l.output_shape(input),
            Layer::Relu(l) => l.output_shape(input),
            Layer::MaxPool2d(l) => l.output_shape(input),
            Layer::GlobalAvgPool(l) => l.output_shape(input),
            Layer::Flatten(l) => l.output_shape(input),
            Layer::Linear(l) => l.output_shape(input),
            Layer::BasicBlock(l) => l.output_shape(input),
        }
    }

    /// Parameters, named relative to the layer (`weight`, `bn1.bias`, …).
    pub fn params(&self) -> Vec<ParamSpec> {
        match self {
            Layer::Conv2d(l) => l.params(),
            Layer::BatchNorm2d(l) => l.params(),
            Layer::Linear(l) => l.params(),
            Layer::BasicBlock(l) => l.params(),
            Layer::Relu(_) | Layer::MaxPool2d(_) | Layer::GlobalAvgPool(_) | Layer::Flatten(_) => {
                Vec::new()
            }
        }
    }

    /// Multiply-accumulates per sample (convolutions and matrix products; the element-wise and
    /// pooling work is negligible beside them and not counted).
    pub fn macs(&self, input: &[usize]) -> Result<u64, ModelError> {
        match self {
            Layer::Conv2d(l) => l.macs(input),
            Layer::Linear(l) => l.macs(input),
            Layer::BasicBlock(l) => l.macs(input),
            other => other.output_shape(input).map(|_| 0),
        }
    }

    /// Appends the forward nodes reading `input`; parameters are read as `{prefix}.{name}`.
    /// Returns the name of the output tensor.
    pub fn emit_forward(
        &self,
        g: &mut GraphBuilder,
        input: &str,
        prefix: &str,
    ) -> Result<String, ModelError> {
        match self {
            Layer::Conv2d(l) => l.emit_forward(g, input, prefix),
            Layer::BatchNorm2d(l) => l.emit_forward(g, input, prefix),
            Layer::Relu(l) => l.emit_forward(g, input, prefix),
            Layer::MaxPool2d(l) => l.emit_forward(g, input, prefix),
            Layer::GlobalAvgPool(l) => l.emit_forward(g, input, prefix),
            Layer::Flatten(l) => l.emit_forward(g, input, prefix),
            Layer::Linear(l) => l.emit_forward(g, input, prefix),
            Layer::BasicBlock(l) => l.emit_forward(g, input, prefix),
        }
    }
}

fn param_name(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn chw(
    layer: &str,
    input: &[usize],
    channels: Option<usize>,
) -> Result<(usize, usize, usize), ModelError> {
    let mismatch = || ModelError::ShapeMismatch {
        layer: layer.to_string(),
        expected: match channels {
            Some(c) => format!("[{c}, H, W]"),
            None => "[C, H, W]".to_string(),
        },
        found: input.to_vec(),
    };
    match *input {
        [c, h, w] if channels.is_none_or(|want| want == c) && h > 0 && w > 0 => Ok((c, h, w)),
        _ => Err(mismatch()),
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

/// 2-D convolution, square kernel, symmetric padding.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
    pub bias: bool,
}

impl Conv2d {
    /// A bias-free convolution with one group: what precedes a BatchNorm.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Self {
        Conv2d {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            groups: 1,
            bias: false,
        }
    }

    fn check(&self) -> Result<(), ModelError> {
        let ok = self.kernel > 0
            && self.stride > 0
            && self.groups > 0
            && self.in_channels > 0
            && self.out_channels > 0
            && self.in_channels.is_multiple_of(self.groups)
            && self.out_channels.is_multiple_of(self.groups)
            && self.padding < self.kernel;
        if ok {
            Ok(())
        } else {
            Err(ModelError::Graph(format!(
                "Conv2d needs positive sizes, channels divisible by groups and padding smaller than the kernel, found {self:?}"
            )))
        }
    }

    pub fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ModelError> {
        self.check()?;
        let (_, h, w) = chw("Conv2d", input, Some(self.in_channels))?;
        let too_small = || ModelError::ShapeMismatch {
            layer: "Conv2d".into(),
            expected: format!(
                "a map of at least {0}x{0} after padding {1}",
                self.kernel, self.padding
            ),
            found: input.to_vec(),
        };
        let oh = window_out(h, self.kernel, self.stride, self.padding).ok_or_else(too_small)?;
        let ow = window_out(w, self.kernel, self.stride, self.padding).ok_or_else(too_small)?;
        Ok(vec![self.out_channels, oh, ow])
    }

    pub fn weight_shape(&self) -> Vec<usize> {
        vec![
            self.out_channels,
            self.in_channels / self.groups.max(1),
            self.kernel,
            self.kernel,
        ]
    }

    pub fn params(&self) -> Vec<ParamSpec> {
        let fan_out = self.out_channels * self.kernel * self.kernel;
        let mut specs = vec![ParamSpec::new(
            "weight",
            self.weight_shape(),
            Init::KaimingNormalFanOut { fan_out },
        )];
        if self.bias {
            specs.push(ParamSpec::new("bias", vec![self.out_channels], Init::Zeros));
        }
        specs
    }

    pub fn macs(&self, input: &[usize]) -> Result<u64, ModelError> {
        let out = self.output_shape(input)?;
        let per_output = (self.in_channels / self.groups) * self.kernel * self.kernel;
        Ok(out.iter().product::<usize>() as u64 * per_output as u64)
    }

    pub fn emit_forward(
        &self,
        g: &mut GraphBuilder,
        input: &str,
        prefix: &str,
    ) -> Result<String, ModelError> {
        self.check()?;
        let weight = param_name(prefix, "weight");
        let bias = param_name(prefix, "bias");
        let mut inputs = vec![input, weight.as_str()];
        if self.bias {
            inputs.push(bias.as_str());
        }
        let (k, s, p) = (
            to_i64(self.kernel),
            to_i64(self.stride),
            to_i64(self.padding),
        );
        g.node(
            "Conv",
            &inputs,
            prefix,
            vec![
                attr_ints("kernel_shape", &[k, k]),
                attr_ints("strides", &[s, s]),
                attr_ints("pads", &[p, p, p, p]),
                attr_ints("dilations", &[1, 1]),
                attr_int("group", to_i64(self.groups)),
            ],
        )
    }
}

/// Batch normalisation over channels; the inference form (running statistics).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm2d {
    pub channels: usize,
    pub eps: f32,
    /// Running-statistics update factor for training (PyTorch convention: new = (1-m)·old + m·batch).
    pub momentum: f32,
}

impl BatchNorm2d {
    pub fn new(channels: usize) -> Self {
        BatchNorm2d {
            channels,
            eps: 1e-5,
            momentum: 0.1,
        }
    }

    pub fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ModelError> {
        chw("BatchNorm2d", input, Some(self.channels))?;
        Ok(input.to_vec())
    }

    pub fn params(&self) -> Vec<ParamSpec> {
        let c = vec![self.channels];
        vec![
            ParamSpec::new("weight", c.clone(), Init::Ones),
            ParamSpec::new("bias", c.clone(), Init::Zeros),
            ParamSpec::buffer("running_mean", c.clone(), Init::Zeros),
            ParamSpec::buffer("running_var", c, Init::Ones),
        ]
    }

    pub fn emit_forward(
        &self,
        g: &mut GraphBuilder,
        input: &str,
        prefix: &str,
    ) -> Result<String, ModelError> {
        let names =
            ["weight", "bias", "running_mean", "running_var"].map(|n| param_name(prefix, n));
        g.node(
            "BatchNormalization",
            &[input, &names[0], &names[1], &names[2], &names[3]],
            prefix,
            vec![attr_float("epsilon", self.eps)],
        )
    }
}

/// max(x, 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Relu;

impl Relu {
    pub fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ModelError> {
        Ok(input.to_vec())
    }

    pub fn emit_forward(
        &self,
        g: &mut GraphBuilder,
        input: &str,
        prefix: &str,
    ) -> Result<String, ModelError> {
        g.node("Relu", &[input], prefix, vec![])
    }
}

/// Max pooling, square window, symmetric padding (padding counts as -inf, as in ONNX).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl MaxPool2d {
    pub fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ModelError> {
        let (c, h, w) = chw("MaxPool2d", input, None)?;
        let bad = || ModelError::ShapeMismatch {
            layer: "MaxPool2d".into(),
            expected: format!(
                "a map of at least {0}x{0} (with padding {1} < kernel {0}, stride > 0)",
                self.kernel, self.padding
            ),
            found: input.to_vec(),
        };
        if self.kernel == 0 || self.padding >= self.kernel {
            return Err(bad());
        }
        let oh = window_out(h, self.kernel, self.stride, self.padding).ok_or_else(bad)?;
        let ow = window_out(w, self.kernel, self.stride, self.padding).ok_or_else(bad)?;
        Ok(vec![c, oh, ow])
    }

    pub fn emit_forward(
        &self,
        g: &mut GraphBuilder,
        input: &str,
        prefix: &str,
    ) -> Result<String, ModelError> {
        let (k, s, p) = (
            to_i64(self.kernel),
            to_i64(self.stride),
            to_i64(self.padding),
        );
        g.node(
            "MaxPool",
            &[input],
            prefix,
            vec![
                attr_ints("kernel_shape", &[k, k]),
                attr_ints("strides", &[s, s]),
                attr_ints("pads", &[p, p, p, p]),
            ],
        )
    }
}

/// Mean over H and W: `[C, H, W]` → `[C, 1, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GlobalAvgPool;

impl GlobalAvgPool {
    pub fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ModelError> {
        let (c, _, _) = chw("GlobalAvgPool", input, None)?;
        Ok(vec![c, 1, 1])
    }

    pub fn emit_forward(
        &self,
        g: &mut GraphBuilder,
        input: &str,
        prefix: &str,
    ) -> Result<String, ModelError> {
        g.node("GlobalAveragePool", &[input], prefix, vec![])
    }
}

/// Everything after the batch axis into one axis: `[C, H, W]` → `[C·H·W]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flatten;

impl Flatten {
    pub fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ModelError> {
        let n = input.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        match n {
            Some(n) if n > 0 => Ok(vec![n]),
            _ => Err(ModelError::ShapeMismatch {
                layer: "Flatten".into(),
                expected: "a non-empty shape".into(),
                found: input.to_vec(),
            }),
        }
    }

    pub fn emit_forward(
        &self,
        g: &mut GraphBuilder,
        input: &str,
        prefix: &str,
    ) -> Result<String, ModelError> {
        g.node("Flatten", &[input], prefix, vec![attr_int("axis", 1)])
    }
}

/// y = x·Wᵀ + b with W stored `[out, in]` (PyTorch layout; Gemm with transB = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
}

impl Linear {
    pub fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ModelError> {
        if input != [self.in_features] || self.out_features == 0 {
            return Err(ModelError::ShapeMismatch {
                layer: "Linear".into(),
                expected: format!("[{}] (and a positive output size)", self.in_features),
                found: input.to_vec(),
            });
        }
        Ok(vec![self.out_features])
    }

    pub fn params(&self) -> Vec<ParamSpec> {
        let bound = 1.0 / (self.in_features.max(1) as f32).sqrt();
        let mut specs = vec![ParamSpec::new(
            "weight",
            vec![self.out_features, self.in_features],
            Init::Uniform { bound },
        )];
        if self.bias {
            specs.push(ParamSpec::new(
                "bias",
                vec![self.out_features],
                Init::Uniform { bound },
            ));
        }
        specs
    }

    pub fn macs(&self, input: &[usize]) -> Result<u64, ModelError> {
        self.output_shape(input)?;
        Ok(self.in_features as u64 * self.out_features as u64)
    }

    pub fn emit_forward(
        &self,
        g: &mut GraphBuilder,
        input: &str,
        prefix: &str,
    ) -> Result<String, ModelError> {
        let weight = param_name(prefix, "weight");
        let bias = param_name(prefix, "bias");
        let mut inputs = vec![input, weight.as_str()];
        if self.bias {
            inputs.push(bias.as_str());
        }
        g.node("Gemm", &inputs, prefix, vec![attr_int("transB", 1)])
    }
}

/// The ResNet basic block: conv3×3(stride)-BN-ReLU-conv3×3-BN, plus the input (or its 1×1
/// strided projection + BN when the shape changes), then ReLU.
#[derive(Debug, Clone, PartialEq)]
pub struct BasicBlock {
    pub conv1: Conv2d,
    pub bn1: BatchNorm2d,
    pub conv2: Conv2d,
    pub bn2: BatchNorm2d,
    /// `Some` when stride ≠ 1 or the channel count changes.
    pub shortcut: Option<(Conv2d, BatchNorm2d)>,
}

impl BasicBlock {
    pub fn new(in_channels: usize, out_channels: usize, stride: usize) -> Self {
        let shortcut = (stride != 1 || in_channels != out_channels).then(|| {
            (
                Conv2d::new(in_channels, out_channels, 1, stride, 0),
                BatchNorm2d::new(out_channels),
            )
        });
        BasicBlock {
            conv1: Conv2d::new(in_channels, out_channels, 3, stride, 1),
            bn1: BatchNorm2d::new(out_channels),
            conv2: Conv2d::new(out_channels, out_channels, 3, 1, 1),
            bn2: BatchNorm2d::new(out_channels),
            shortcut,
        }
    }

    pub fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ModelError> {
        let h = self.conv1.output_shape(input)?;
        let h = self.bn1.output_shape(&h)?;
        let h = self.conv2.output_shape(&h)?;
        let h = self.bn2.output_shape(&h)?;
        let s = match &self.shortcut {
            Some((conv, bn)) => bn.output_shape(&conv.output_shape(input)?)?,
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

    pub fn params(&self) -> Vec<ParamSpec> {
        let mut specs = Vec::new();
        specs.extend(self.conv1.params().into_iter().map(|p| p.prefixed("conv1")));
        specs.extend(self.bn1.params().into_iter().map(|p| p.prefixed("bn1")));
        specs.extend(self.conv2.params().into_iter().map(|p| p.prefixed("conv2")));
        specs.extend(self.bn2.params().into_iter().map(|p| p.prefixed("bn2")));
        if let Some((conv, bn)) = &self.shortcut {
            specs.extend(
                conv.params()
                    .into_iter()
                    .map(|p| p.prefixed("shortcut.conv")),
            );
            specs.extend(bn.params().into_iter().map(|p| p.prefixed("shortcut.bn")));
        }
        specs
    }

    pub fn macs(&self, input: &[usize]) -> Result<u64, ModelError> {
        let mid = self.conv1.output_shape(input)?;
        let mut total = self.conv1.macs(input)? + self.conv2.macs(&mid)?;
        if let Some((conv, _)) = &self.shortcut {
            total += conv.macs(input)?;
        }
        Ok(total)
    }

    pub fn emit_forward(
        &self,
        g: &mut GraphBuilder,
        input: &str,
        prefix: &str,
    ) -> Result<String, ModelError> {
        let sub = |name: &str| param_name(prefix, name);
        let h = self.conv1.emit_forward(g, input, &sub("conv1"))?;
        let h = self.bn1.emit_forward(g, &h, &sub("bn1"))?;
        let h = Relu.emit_forward(g, &h, &sub("relu1"))?;
        let h = self.conv2.emit_forward(g, &h, &sub("conv2"))?;
        let h = self.bn2.emit_forward(g, &h, &sub("bn2"))?;
        let s = match &self.shortcut {
            Some((conv, bn)) => {
                let s = conv.emit_forward(g, input, &sub("shortcut.conv"))?;
                bn.emit_forward(g, &s, &sub("shortcut.bn"))?
            }
            None => input.to_string(),
        };
        let sum = g.node("Add", &[&h, &s], &sub("add"), vec![])?;
        Relu.emit_forward(g, &sum, &sub("relu"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_and_pool_shapes_follow_onnx_floor_rules() -> Result<(), ModelError> {
        let conv = Conv2d::new(3, 8, 3, 2, 1);
        assert_eq!(conv.output_shape(&[3, 96, 96])?, vec![8, 48, 48]);
        assert_eq!(conv.output_shape(&[3, 7, 5])?, vec![8, 4, 3]);
        let pool = MaxPool2d {
            kernel: 3,
            stride: 2,
            padding: 1,
        };
        assert_eq!(pool.output_shape(&[8, 48, 48])?, vec![8, 24, 24]);
        assert_eq!(pool.output_shape(&[8, 1, 1])?, vec![8, 1, 1]);
        assert!(matches!(
            conv.output_shape(&[4, 96, 96]),
            Err(ModelError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            conv.output_shape(&[3, 96]),
            Err(ModelError::ShapeMismatch { .. })
        ));
        let big = Conv2d::new(3, 8, 7, 1, 0);
        assert!(matches!(
            big.output_shape(&[3, 5, 5]),
            Err(ModelError::ShapeMismatch { .. })
        ));
        Ok(())
    }

    #[test]
    fn basic_block_projects_only_when_needed() -> Result<(), ModelError> {
        let same = BasicBlock::new(16, 16, 1);
        assert!(same.shortcut.is_none());
        assert_eq!(same.output_shape(&[16, 10, 10])?, vec![16, 10, 10]);
        let down = BasicBlock::new(16, 32, 2);
        assert!(down.shortcut.is_some());
        assert_eq!(down.output_shape(&[16, 10, 10])?, vec![32, 5, 5]);
        assert_eq!(down.output_shape(&[16, 11, 11])?, vec![32, 6, 6]);
        // conv1 16·32·9 + 2 BN·4·32 + conv2 32·32·9 + shortcut 16·32 + BN 4·32
        let n: usize = down.params().iter().map(|p| p.numel()).sum();
        assert_eq!(n, 16 * 32 * 9 + 32 * 32 * 9 + 16 * 32 + 3 * 4 * 32);
        let names: Vec<_> = down.params().into_iter().map(|p| p.name).collect();
        assert!(names.contains(&"shortcut.bn.running_var".to_string()));
        // MACs at 10x10 → 5x5: conv1 25·32·144, conv2 25·32·288, shortcut 25·32·16.
        assert_eq!(down.macs(&[16, 10, 10])?, 25 * 32 * (144 + 288 + 16));
        Ok(())
    }

    #[test]
    fn linear_and_flatten() -> Result<(), ModelError> {
        assert_eq!(Flatten.output_shape(&[64, 1, 1])?, vec![64]);
        let fc = Linear {
            in_features: 64,
            out_features: 10,
            bias: true,
        };
        assert_eq!(fc.output_shape(&[64])?, vec![10]);
        assert!(matches!(
            fc.output_shape(&[64, 1, 1]),
            Err(ModelError::ShapeMismatch { .. })
        ));
        assert_eq!(fc.params()[0].shape, vec![10, 64]);
        Ok(())
    }
}
