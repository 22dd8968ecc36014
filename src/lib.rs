//! sslpipe: a streaming engine for self-supervised visual learning.
//!
//! Images flow from a source through decode/resize and a pretext stage into ONNX Runtime
//! (training or embedding) and out to Parquet. See `DESIGN.md`-style notes in each module:
//! every module opens with what it is for and what it guarantees.

pub mod atomic;
pub mod config;
pub mod decode;
pub mod error;
pub mod eval;
pub mod model;
pub mod pipeline;
pub mod pretext;
pub mod pretrain;
pub mod rng;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod train;
