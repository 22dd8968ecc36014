//! ONNX Runtime: finding and loading the shared library, choosing the execution provider,
//! and building sessions.
//!
//! Guarantees:
//! - The library is looked for in a fixed, documented order (explicit path from the pipeline or
//!   CLI, `ORT_DYLIB_PATH`, the project's install location, beside the executable); a missing or
//!   too-old library is a [`RuntimeError`] that says how to get one, never a panic.
//! - The library is loaded once per process; later calls reuse it.
//! - Asking for CUDA where the CUDA provider cannot be registered is an error, never a silent
//!   fall-back to CPU.

mod library;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use thiserror::Error;

pub use library::{LIBRARY_FILE, ORT_VERSION, install_dir, library_candidates};

/// Where tensors are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda {
        device_id: i32,
    },
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda { device_id } => write!(f, "cuda:{device_id}"),
        }
    }
}

/// How sessions are built: the same settings serve the embed and the train sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    pub device: Device,
    /// ORT intra-op threads; 0 lets ORT choose (one per physical core).
    pub intra_threads: usize,
    pub optimization: Optimization,
    /// Let idle ORT threads spin waiting for work. Off by default: the spinning threads compete
    /// with the decode workers for the same cores (measured: 514 → 562 img/s end to end at 96 px
    /// on 2 cores with spinning off, 628 with one intra-op thread as well).
    pub spinning: bool,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            intra_threads: 0,
            optimization: Optimization::Extended,
            spinning: false,
        }
    }
}

/// Graph optimisation level. `All` is the default: its layout transformations (NCHWc convolutions)
/// made the built-in encoder 1.6–1.9× faster on CPU with embeddings within 6e-7 of `Extended`.
/// The wrong outputs once seen at `All` came with weights supplied through `with_initializer`;
/// our models carry their weights inside the graph, and a test compares the two levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optimization {
    Disable,
    Basic,
    Extended,
    All,
}

impl Optimization {
    fn level(self) -> GraphOptimizationLevel {
        match self {
            Optimization::Disable => GraphOptimizationLevel::Disable,
            Optimization::Basic => GraphOptimizationLevel::Level1,
            Optimization::Extended => GraphOptimizationLevel::Level2,
            Optimization::All => GraphOptimizationLevel::All,
        }
    }
}

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(
        "the ONNX Runtime library ({LIBRARY_FILE}) was not found; looked in:\n{}\n\
         Get it with `scripts/setup.sh` (it installs ONNX Runtime {ORT_VERSION} from the `onnxruntime` \
         Python wheel into {}), or point ORT_DYLIB_PATH or `[runtime] library` at a libonnxruntime.so \
         of version 1.31 or newer",
        .tried.iter().map(|(p, why)| format!("  - {} ({why})", p.display())).collect::<Vec<_>>().join("\n"),
        install_dir().display()
    )]
    LibraryNotFound { tried: Vec<(PathBuf, &'static str)> },
    #[error(
        "could not load the ONNX Runtime library {path}: {reason}\n\
         sslpipe needs ONNX Runtime 1.31 or newer; `scripts/setup.sh` installs a matching one"
    )]
    LibraryLoad { path: PathBuf, reason: String },
    #[error(
        "ONNX Runtime was already loaded from {loaded}; cannot switch to {requested} in the same process"
    )]
    LibraryConflict { loaded: PathBuf, requested: PathBuf },
    #[error(
        "the CUDA execution provider could not be used: {reason}\n\
         It needs the GPU build of ONNX Runtime (`onnxruntime-gpu` wheel: libonnxruntime_providers_cuda.so and \
         libonnxruntime_providers_shared.so beside libonnxruntime.so) and the CUDA/cuDNN libraries on \
         LD_LIBRARY_PATH; see the README's GPU section. Use device = \"cpu\" to run without a GPU"
    )]
    CudaUnavailable { reason: String },
    #[error("ONNX Runtime could not {what}: {reason}")]
    Ort { what: String, reason: String },
}

impl RuntimeError {
    pub(crate) fn ort(what: impl Into<String>, err: impl std::fmt::Display) -> Self {
        RuntimeError::Ort {
            what: what.into(),
            reason: err.to_string(),
        }
    }
}

struct Loaded {
    path: PathBuf,
    environment: Environment,
}

static LOADED: OnceLock<Loaded> = OnceLock::new();
static LOAD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Loads ONNX Runtime (once per process) and returns its environment.
///
/// `explicit` is the path the user gave (pipeline `[runtime] library` or `--ort-lib`); it wins over
/// every other place.
pub fn environment(explicit: Option<&Path>) -> Result<&'static Environment, RuntimeError> {
    if let Some(loaded) = LOADED.get() {
        return check_same(loaded, explicit);
    }
    let _guard = LOAD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(loaded) = LOADED.get() {
        return check_same(loaded, explicit);
    }
    let path = library::find(explicit)?;
    let builder = ort::init_from(&path).map_err(|e| RuntimeError::LibraryLoad {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let environment = builder
        .with_name("sslpipe")
        .with_telemetry(false)
        .build()
        .map_err(|e| RuntimeError::LibraryLoad {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    let _ = LOADED.set(Loaded { path, environment });
    Ok(&LOADED.get().expect("just set").environment)
}

fn check_same(
    loaded: &'static Loaded,
    explicit: Option<&Path>,
) -> Result<&'static Environment, RuntimeError> {
    if let Some(requested) = explicit {
        let same =
            std::fs::canonicalize(requested).ok() == std::fs::canonicalize(&loaded.path).ok();
        if !same {
            return Err(RuntimeError::LibraryConflict {
                loaded: loaded.path.clone(),
                requested: requested.to_path_buf(),
            });
        }
    }
    Ok(&loaded.environment)
}

/// Environment variable naming a file prefix for ONNX Runtime's profiling traces.
pub const PROFILE_ENV: &str = "SSLPIPE_ORT_PROFILE";

/// Builds a session for an in-memory ONNX model with the given settings.
pub fn session_from_bytes(
    environment: &Environment,
    settings: &SessionSettings,
    model: &[u8],
) -> Result<Session, RuntimeError> {
    let mut builder = Session::builder(environment)
        .map_err(|e| RuntimeError::ort("create a session builder", e))?
        .with_optimization_level(settings.optimization.level())
        .map_err(|e| RuntimeError::ort("set the optimisation level", e))?;
    if settings.intra_threads > 0 {
        builder = builder
            .with_intra_threads(settings.intra_threads)
            .map_err(|e| RuntimeError::ort("set intra-op threads", e))?;
    }
    builder = builder
        .with_intra_op_spinning(settings.spinning)
        .map_err(|e| RuntimeError::ort("set intra-op spinning", e))?;
    // A developer's switch, not a pipeline setting: ONNX Runtime writes a per-node timing trace
    // (Chrome trace JSON, `<prefix>_<date>.json`) for every session of the run.
    if let Some(prefix) = std::env::var_os(PROFILE_ENV) {
        builder = builder
            .with_profiling(prefix)
            .map_err(|e| RuntimeError::ort("enable profiling", e))?;
    }
    if let Device::Cuda { device_id } = settings.device {
        let cuda = ort::ep::CUDA::default()
            .with_device_id(device_id)
            .build()
            .error_on_failure();
        builder = builder.with_execution_providers([cuda]).map_err(|e| {
            RuntimeError::CudaUnavailable {
                reason: e.to_string(),
            }
        })?;
    }
    builder
        .commit_from_memory(model)
        .map_err(|e| RuntimeError::ort("load the model", e))
}
