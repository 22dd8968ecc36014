//! Models described in Rust and emitted as standard ONNX: the layer vocabulary, the built-in
//! encoder family, seeded parameters, and the protobuf writer/reader they share.
//!
//! Guarantees:
//! - A pipeline needs no model file: [`BuiltinEncoder`] emits a self-contained `.onnx` (opset 17,
//!   only `ai.onnx` operators) whose weights come from a seed, bit-identically on every machine.
//! - One layer vocabulary ([`Layer`]) describes the encoder and the pretext heads, and each layer is
//!   written once, through one trait ([`Emit`]) that both the inference graph builder here and the
//!   training tape (`crate::train`) implement: every graph built from a description (the exported
//!   encoder, the train step, the evaluation step) computes the same thing in its [`Mode`].
//! - Every failure a user can cause (a bad spec, an input too small, parameters that do not fit)
//!   is a [`ModelError`] that says what was expected and what was found; nothing here panics on
//!   user input.

pub mod emit;
pub mod encoder;
pub mod graph;
pub mod layers;
pub mod onnx;
pub mod params;

#[cfg(test)]
mod encoder_tests;
#[cfg(test)]
mod ort_tests;

use sha2::{Digest, Sha256};
use thiserror::Error;

pub use emit::{Emit, Mode};
pub use encoder::{
    BuiltinEncoder, DEFAULT_EMBEDDING_DIM, DEFAULT_GRID, EMBEDDING_OUTPUT, EncoderSpec, Features,
    IMAGES_INPUT, INPUT_SIZE_METADATA_KEY, NamedLayer, SPEC_METADATA_KEY, Stem,
};
pub use graph::{Dim, GraphBuilder, OPSET_VERSION};
pub use layers::{BN_EPS, BN_MOMENTUM, Layer};
pub use params::{Init, Param, ParamSet, ParamSpec};

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("invalid encoder spec: `{field}` must be {expected}, found {found}")]
    InvalidSpec {
        field: &'static str,
        expected: String,
        found: String,
    },
    #[error(
        "input size {size} px is too small for this encoder: its strides shrink the image \
         {downsampling}x, so the input must be at least {minimum} px"
    )]
    InputTooSmall {
        size: u32,
        minimum: u32,
        downsampling: u32,
    },
    #[error("layer `{layer}` expects an input of shape {expected}, found {found:?}")]
    ShapeMismatch {
        layer: String,
        expected: String,
        found: Vec<usize>,
    },
    #[error("parameter `{name}` is missing: the model expects it with shape {shape:?}")]
    MissingParam { name: String, shape: Vec<usize> },
    #[error("parameter `{name}` should have shape {expected:?}, found {found:?}")]
    ParamShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("parameter `{name}` is not part of this model (it expects {expected} parameters)")]
    UnexpectedParam { name: String, expected: usize },
    #[error("parameter `{name}` appears twice")]
    DuplicateParam { name: String },
    #[error("tensor `{name}` with shape {shape:?} needs {expected} values, found {found}")]
    DataLength {
        name: String,
        shape: Vec<usize>,
        expected: usize,
        found: usize,
    },
    #[error("tensor `{name}` contains a non-finite value ({value}) at index {index}")]
    NonFinite {
        name: String,
        index: usize,
        value: f32,
    },
    #[error("graph construction failed: {0}")]
    Graph(String),
    #[error("not a readable ONNX model: {0}")]
    Decode(String),
}

/// A short, stable identity for an ONNX model: the first 16 hex digits of the SHA-256 of its
/// bytes. Written into every feature row so features from different encoders never mix silently.
pub fn model_id(onnx_bytes: &[u8]) -> String {
    let digest = Sha256::digest(onnx_bytes);
    let mut hex = String::with_capacity(16);
    for byte in digest.iter().take(8) {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_id_is_sha256_prefix() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223...
        assert_eq!(model_id(b"abc"), "ba7816bf8f01cfea");
        assert_eq!(model_id(b"").len(), 16);
    }
}
