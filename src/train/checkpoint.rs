//! Checkpoints: parameters, optimizer state, step count, the caller's RNG/data-position state and
//! the model description, in one [safetensors](https://huggingface.co/docs/safetensors) file.
//!
//! Layout: 8-byte little-endian header length, a JSON header (`{name: {dtype, shape,
//! data_offsets}}` plus `__metadata__` of strings), then the raw little-endian f32 data. Model
//! tensors keep their model names (`stem.conv.weight`, `head.0.bias`, …), so the file opens as a
//! state dict in Python (`safetensors.numpy.load_file`); optimizer state is stored as
//! `state.<slot>.<param>`. `__metadata__` holds `format`, `step`, `spec` (the [`TrainSpec`] as
//! JSON), `rng` (JSON, the caller's) and `sha256` (of the data section).
//!
//! Guarantees:
//! - Writing is atomic: the file is written as `<path>.tmp`, synced, then renamed over `path`; a
//!   reader (or a resumed run after a crash) sees the old checkpoint or the new one, never half.
//! - Loading checks everything before returning anything: header bounds, dtypes, that the tensors
//!   tile the data section exactly (a truncated or padded file fails), the SHA-256 of the data (a
//!   flipped bit fails), the format tag, and finite values. A bad file is a
//!   [`TrainError::Checkpoint`] that names the file and the problem; nothing is half-loaded.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::TrainError;
use super::net::TrainSpec;
use crate::model::ParamSet;

/// The `format` written into every checkpoint.
pub const FORMAT: &str = "sslpipe.train.v1";
/// Largest header accepted (a real one is a few tens of kB).
const MAX_HEADER: u64 = 64 << 20;

/// What a checkpoint says about the run besides its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Updates applied so far.
    pub step: u64,
    pub spec: TrainSpec,
    /// The caller's resumable randomness and data position (seed, epoch, samples seen, …).
    pub rng: serde_json::Value,
}

/// A loaded (or to-be-written) checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    /// Every model tensor, parameters and buffers.
    pub params: ParamSet,
    /// Optimizer state, `state.<slot>.<param>`.
    pub state: ParamSet,
}

fn err(path: &Path, reason: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

impl Checkpoint {
    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TrainError> {
        let mut header = serde_json::Map::new();
        let mut data: Vec<u8> =
            Vec::with_capacity((self.params.num_elements() + self.state.num_elements()) * 4);
        for p in self.params.iter().chain(self.state.iter()) {
            if header.contains_key(&p.name) || p.name == "__metadata__" {
                return Err(TrainError::Checkpoint {
                    path: String::new(),
                    reason: format!("tensor name `{}` appears twice", p.name),
                });
            }
            let start = data.len();
            for v in &p.data {
                data.extend_from_slice(&v.to_le_bytes());
            }
            header.insert(
                p.name.clone(),
                serde_json::json!({"dtype": "F32", "shape": p.shape, "data_offsets": [start, data.len()]}),
            );
        }
        let digest: String = Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let spec =
            serde_json::to_string(&self.meta.spec).map_err(|e| TrainError::Spec(e.to_string()))?;
        header.insert(
            "__metadata__".into(),
            serde_json::json!({
                "format": FORMAT,
                "step": self.meta.step.to_string(),
                "spec": spec,
                "rng": self.meta.rng.to_string(),
                "sha256": digest,
            }),
        );
        let mut h = serde_json::Value::Object(header).to_string().into_bytes();
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        let mut out = Vec::with_capacity(8 + h.len() + data.len());
        out.extend_from_slice(&(h.len() as u64).to_le_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Writes atomically (see [`crate::atomic`]: a temporary, fsync, rename, fsync of the folder).
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let bytes = self.to_bytes().map_err(|e| err(path, e.to_string()))?;
        crate::atomic::write(path, &bytes)
            .map_err(|e| err(path, format!("could not write: {}", e.source)))
    }

    /// Reads and fully validates a checkpoint file.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let bytes = std::fs::read(path).map_err(|e| err(path, format!("could not read: {e}")))?;
        Self::from_bytes(&bytes).map_err(|reason| err(path, reason))
    }

    /// Parses safetensors bytes written by [`Checkpoint::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 8 {
            return Err(format!(
                "{} bytes is too short for a safetensors file (truncated?)",
                bytes.len()
            ));
        }
        let n = u64::from_le_bytes(bytes[..8].try_into().map_err(|_| "bad length prefix")?);
        if n > MAX_HEADER || n > (bytes.len() - 8) as u64 {
            return Err(format!(
                "header length {n} does not fit a file of {} bytes (truncated or not safetensors)",
                bytes.len()
            ));
        }
        let header_end = 8 + n as usize;
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&bytes[8..header_end])
                .map_err(|e| format!("header is not a JSON object: {e}"))?;
        let data = &bytes[header_end..];

        let meta = header
            .get("__metadata__")
            .and_then(|m| m.as_object())
            .ok_or("no __metadata__ (not an sslpipe checkpoint)")?;
        let field = |k: &str| {
            meta.get(k)
                .and_then(|v| v.as_str())
                .ok_or_else(|| format!("__metadata__ lacks `{k}`"))
        };
        let format = field("format")?;
        if format != FORMAT {
            return Err(format!("format is `{format}`, expected `{FORMAT}`"));
        }
        let step: u64 = field("step")?
            .parse()
            .map_err(|_| "`step` is not a number".to_string())?;
        let spec: TrainSpec = serde_json::from_str(field("spec")?)
            .map_err(|e| format!("`spec` is not a valid training spec: {e}"))?;
        let rng: serde_json::Value =
            serde_json::from_str(field("rng")?).map_err(|e| format!("`rng` is not JSON: {e}"))?;

        struct Entry {
            name: String,
            shape: Vec<usize>,
            start: usize,
            end: usize,
        }
        let mut entries = Vec::new();
        for (name, v) in &header {
            if name == "__metadata__" {
                continue;
            }
            let o = v
                .as_object()
                .ok_or_else(|| format!("tensor `{name}`: entry is not an object"))?;
            let dtype = o.get("dtype").and_then(|d| d.as_str()).unwrap_or("?");
            if dtype != "F32" {
                return Err(format!("tensor `{name}`: dtype {dtype}, expected F32"));
            }
            let shape: Vec<usize> = o
                .get("shape")
                .and_then(|s| s.as_array())
                .and_then(|a| {
                    a.iter()
                        .map(|d| d.as_u64().map(|d| d as usize))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| format!("tensor `{name}`: bad shape"))?;
            let offs: Vec<usize> = o
                .get("data_offsets")
                .and_then(|s| s.as_array())
                .and_then(|a| {
                    a.iter()
                        .map(|d| d.as_u64().map(|d| d as usize))
                        .collect::<Option<Vec<_>>>()
                })
                .filter(|v| v.len() == 2)
                .ok_or_else(|| format!("tensor `{name}`: bad data_offsets"))?;
            let numel = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| format!("tensor `{name}`: shape overflows"))?;
            if offs[1] < offs[0] || offs[1] - offs[0] != numel * 4 {
                return Err(format!(
                    "tensor `{name}`: {} bytes for shape {shape:?}",
                    offs[1].saturating_sub(offs[0])
                ));
            }
            entries.push(Entry {
                name: name.clone(),
                shape,
                start: offs[0],
                end: offs[1],
            });
        }
        entries.sort_by_key(|e| (e.start, e.end));
        let mut pos = 0usize;
        for e in &entries {
            if e.start != pos {
                return Err(format!(
                    "tensor `{}` starts at byte {}, expected {pos} (overlap or hole)",
                    e.name, e.start
                ));
            }
            pos = e.end;
        }
        if pos != data.len() {
            return Err(format!(
                "tensors cover {pos} bytes but the data section has {} (truncated or padded)",
                data.len()
            ));
        }
        let digest: String = Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if digest != field("sha256")? {
            return Err("the data does not match its SHA-256 (the file is corrupt)".into());
        }
        let mut params = ParamSet::new();
        let mut state = ParamSet::new();
        for e in entries {
            let values: Vec<f32> = data[e.start..e.end]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(format!(
                    "tensor `{}` holds a non-finite value at index {i}",
                    e.name
                ));
            }
            let target = if e.name.starts_with("state.") {
                &mut state
            } else {
                &mut params
            };
            target
                .push(e.name, e.shape, values)
                .map_err(|x| x.to_string())?;
        }
        Ok(Checkpoint {
            meta: CheckpointMeta { step, spec, rng },
            params,
            state,
        })
    }
}
