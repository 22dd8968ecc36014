//! From raw sections to the validated [`Pipeline`] the engine runs. All checks of meaning happen
//! here: paths exist, sizes fit the model, the output folder is writable. Sections owned by a
//! registry of kinds (`[source]`, `[pretext]`) are checked by their kind, called generically;
//! this file names none of them.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::raw::{self, EmbeddingType, ModelSection, OnError};
use super::{ConfigErrors, Locator, Problems};
use crate::decode::DecodeSettings;
use crate::model::{BuiltinEncoder, DEFAULT_EMBEDDING_DIM, DEFAULT_GRID, EncoderSpec, Features};
use crate::pretext::TaskConfig;
use crate::runtime::{Device, Optimization, SessionSettings};
use crate::source::{SourceConfig, SourceSpec};

/// ImageNet statistics: what most encoders (and ours, by default) are normalised with.
const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

const SECTIONS: &[&str] = &[
    "pipeline", "source", "decode", "pretext", "pretrain", "model", "runtime", "embed", "export",
    "output",
];

/// A checked pipeline: everything the engine needs, nothing left to validate.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub file: PathBuf,
    /// The pipeline text as written (stored in the output's metadata).
    pub text: String,
    pub locator: Locator,
    pub name: String,
    pub on_error: OnError,
    /// Decode workers, resolved (≥ 1).
    pub workers: usize,
    /// Nice levels the decode workers run below the rest of the process (0–19).
    pub worker_nice: u8,
    pub queue: usize,
    /// Seed of per-sample randomness.
    pub seed: u64,
    pub source: SourceSpec,
    pub decode: DecodeSettings,
    /// What the run does with the images.
    pub mode: Mode,
    pub model: ModelSpec,
    pub runtime: RuntimeSpec,
    pub embed: EmbedSpec,
    pub output: OutputSpec,
}

/// What a run does with the images, resolved from the sections present: `[export]` writes the
/// pretext dataset, `[pretrain]` trains the built-in encoder (and then embeds, unless
/// `[embed] enabled = false`), neither embeds with `[model]`.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Images → `[model]` → feature files. A `[pretext]` section here only serves
    /// `sslpipe preview`.
    Embed { pretext: Option<TaskConfig> },
    /// Pretext samples (inputs and pseudo-labels) → Parquet, `epochs` passes.
    Export { task: TaskConfig, epochs: u64 },
    /// Train the built-in encoder on `task`; with `then_embed`, embed the images with it.
    Pretrain {
        task: TaskConfig,
        spec: PretrainSpec,
        then_embed: bool,
    },
}

impl Pipeline {
    /// The pretext task, if the pipeline names one.
    pub fn pretext(&self) -> Option<&TaskConfig> {
        match &self.mode {
            Mode::Embed { pretext } => pretext.as_ref(),
            Mode::Export { task, .. } | Mode::Pretrain { task, .. } => Some(task),
        }
    }

    /// The pretraining settings, when the run pretrains.
    pub fn pretrain(&self) -> Option<&PretrainSpec> {
        match &self.mode {
            Mode::Pretrain { spec, .. } => Some(spec),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Debug, Clone)]
pub enum ModelSpec {
    Builtin {
        spec: EncoderSpec,
        seed: u64,
        norm: Normalization,
    },
    Onnx {
        path: PathBuf,
        input: Option<String>,
        output: Option<String>,
        norm: Normalization,
    },
}

impl ModelSpec {
    pub fn normalization(&self) -> Normalization {
        match self {
            ModelSpec::Builtin { norm, .. } | ModelSpec::Onnx { norm, .. } => *norm,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RuntimeSpec {
    pub library: Option<PathBuf>,
    pub session: SessionSettings,
}

#[derive(Debug, Clone)]
pub struct EmbedSpec {
    pub batch_size: usize,
}

/// When pretraining stops: the first limit reached (at least one is set).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Budget {
    pub steps: Option<u64>,
    pub epochs: Option<f64>,
    pub minutes: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Linear warm-up, then half a cosine from `lr` down to `min_lr` over the budget.
    Cosine,
    /// Linear warm-up, then `lr`.
    Constant,
}

/// `[pretrain]`, checked.
#[derive(Debug, Clone)]
pub struct PretrainSpec {
    pub budget: Budget,
    pub batch_size: usize,
    pub optimizer: crate::train::Optimizer,
    pub lr: f32,
    pub min_lr: f32,
    /// `None`: 5 % of the budget's steps, at most 500 (20 when the budget is only a duration).
    pub warmup_steps: Option<u64>,
    pub schedule: Schedule,
    pub temperature: f32,
    pub holdout: u64,
    pub eval_every: u64,
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    pub log_every: u64,
    pub preview: usize,
}

#[derive(Debug, Clone)]
pub struct OutputSpec {
    pub dir: PathBuf,
    pub rows_per_file: usize,
    pub row_group_rows: usize,
    pub embedding_type: EmbeddingType,
    /// Publish rows no later than this after they are computed (also by time, not only by rows).
    pub roll: Option<std::time::Duration>,
}

/// `roll_seconds` when a continuous source (a watched folder) leaves it unset.
pub const DEFAULT_CONTINUOUS_ROLL_SECONDS: f64 = 10.0;

pub(super) fn build(file: &Path, text: &str) -> Result<Pipeline, ConfigErrors> {
    let locator = Locator::new(text);
    let mut problems = Problems::new(file, &locator);

    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            let line = e.span().map(|s| locator.line_of(s.start));
            problems.add_at(line, "", format!("not valid TOML: {}", e.message().trim()));
            return Err(problems.finish().unwrap_err());
        }
    };
    for key in table.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            problems.add(
                key,
                format!(
                    "unknown section `[{key}]`; expected one of: {}",
                    SECTIONS.join(", ")
                ),
            );
        }
    }

    let pipeline: Option<raw::PipelineSection> = section(&table, "pipeline", &mut problems);
    let source: Option<SourceConfig> = required(&table, "source", &mut problems);
    let decode: Option<DecodeSettings> = section(&table, "decode", &mut problems);
    let pretext: Option<TaskConfig> = section(&table, "pretext", &mut problems);
    let export: Option<raw::ExportSection> = section(&table, "export", &mut problems);
    let model: Option<ModelSection> = section(&table, "model", &mut problems);
    let runtime: Option<raw::RuntimeSection> = section(&table, "runtime", &mut problems);
    let embed: Option<raw::EmbedSection> = section(&table, "embed", &mut problems);
    let pretrain: Option<raw::PretrainSection> = section(&table, "pretrain", &mut problems);
    let output: Option<raw::OutputSection> = required(&table, "output", &mut problems);

    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let resolve = |p: &Path| {
        normalize(&if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        })
    };

    let pipeline = pipeline.unwrap_or_default();
    if pipeline.queue == 0 {
        problems.add("pipeline.queue", "must be at least 1");
    }
    if pipeline.workers > 1024 {
        problems.add(
            "pipeline.workers",
            format!("{} worker threads is more than 1024", pipeline.workers),
        );
    }
    if pipeline.worker_nice > 19 {
        problems.add(
            "pipeline.worker_nice",
            format!(
                "{} is outside 0–19 (nice levels below the rest of the process)",
                pipeline.worker_nice
            ),
        );
    }
    let workers = if pipeline.workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        pipeline.workers
    };

    let source = source.and_then(|s| check_source(s, &resolve, &mut problems));
    let decode = decode.unwrap_or_default();
    check_decode(&decode, &mut problems);
    let pretext = pretext.map(|p| check_pretext(p, decode.size, &resolve, &mut problems));
    let export = export.map(|e| {
        if e.epochs == 0 {
            problems.add("export.epochs", "must be at least 1");
        }
        if !table.contains_key("pretext") {
            problems.add(
                "export",
                "needs a [pretext] section: the export writes a pretext task's samples",
            );
        }
        e.epochs
    });
    let model = check_model(
        model.unwrap_or_default(),
        decode.size,
        &resolve,
        &mut problems,
    );
    let runtime = check_runtime(runtime.unwrap_or_default(), &resolve, &mut problems);
    let embed = embed.unwrap_or_default();
    if embed.batch_size == 0 || embed.batch_size > 4096 {
        problems.add(
            "embed.batch_size",
            format!("must be between 1 and 4096, found {}", embed.batch_size),
        );
    }
    let output = output.and_then(|o| check_output(o, &resolve, &mut problems));
    let pretrain = pretrain.map(|p| check_pretrain(p, &mut problems));
    if pretrain.is_some() {
        if !table.contains_key("pretext") {
            problems.add(
                "pretrain",
                "needs a [pretext] section: pretraining learns a pretext task",
            );
        }
        if table.contains_key("export") {
            problems.add(
                "export",
                "[export] and [pretrain] exclude each other: a pipeline either writes the pretext dataset or trains on it",
            );
        }
        if matches!(model, Some(ModelSpec::Onnx { .. })) {
            problems.add(
                "model.kind",
                "pretraining trains the built-in encoder (kind = \"builtin\"); an ONNX file cannot be trained",
            );
        }
    } else if !embed.enabled {
        problems.add(
            "embed.enabled",
            "is false and there is no [pretrain]: the pipeline would do nothing",
        );
    }

    if let Some(why) = source.as_ref().and_then(SourceSpec::single_pass) {
        if pretrain.is_some() {
            problems.add(
                "source.kind",
                format!(
                    "is single-pass ({why}), but pretraining reads its source several times (once for the held-out set, then once per epoch); save the input first (`kind = \"tar\"` for a tar stream, `kind = \"list\"` for paths) and pretrain on that"
                ),
            );
        } else if let Some(epochs) = export.filter(|&e| e > 1) {
            problems.add(
                "source.kind",
                format!(
                    "is single-pass ({why}), but `[export] epochs = {epochs}` reads the source {epochs} times; use epochs = 1, or save the input first (`kind = \"tar\"` or `kind = \"list\"`)"
                ),
            );
        }
    }

    problems.finish()?;
    let (Some(source), Some(model), Some(runtime), Some(mut output)) =
        (source, model, runtime, output)
    else {
        unreachable!("every None above recorded a problem");
    };
    if source.continuous() && output.roll.is_none() {
        // Rows of a stream that never ends must become visible by time, not only by count.
        output.roll = Some(std::time::Duration::from_secs_f64(
            DEFAULT_CONTINUOUS_ROLL_SECONDS,
        ));
    }
    let mode = match (export, pretrain, pretext) {
        (Some(epochs), None, Some(task)) => Mode::Export { task, epochs },
        (None, Some(spec), Some(task)) => Mode::Pretrain {
            task,
            spec,
            then_embed: embed.enabled,
        },
        (None, None, pretext) => Mode::Embed { pretext },
        _ => unreachable!("[export] with [pretrain], or either without [pretext], was recorded"),
    };
    let name = pipeline.name.unwrap_or_else(|| {
        file.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pipeline".into())
    });
    Ok(Pipeline {
        file: file.to_path_buf(),
        text: text.to_string(),
        locator,
        name,
        on_error: pipeline.on_error,
        seed: pipeline.seed,
        mode,
        workers,
        worker_nice: pipeline.worker_nice,
        queue: pipeline.queue,
        source,
        decode,
        model,
        runtime,
        embed: EmbedSpec {
            batch_size: embed.batch_size,
        },
        output,
    })
}

/// Removes `.` and folds `dir/..` without touching the disk, so messages and summaries show
/// `out/embed` rather than `pipelines/../out/embed`.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

/// Deserializes an optional section; a malformed one records a problem and yields `None`.
fn section<T: DeserializeOwned>(
    table: &toml::Table,
    name: &str,
    problems: &mut Problems,
) -> Option<T> {
    let value = table.get(name)?.clone();
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.inner().to_string();
            let mut field = name.to_string();
            let path = e.path().to_string();
            if path != "." && !path.is_empty() {
                field = format!("{name}.{path}");
            }
            // For an unknown field the path ends at the key for plain structs, but stops at the
            // section for tagged enums ([source], [pretext]): only the message names it there.
            if let Some(unknown) = inner
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
                && !field.ends_with(&format!(".{unknown}"))
            {
                field = format!("{field}.{unknown}");
            }
            // Likewise for a value outside an enum's variants: find the key that holds it.
            if field == name
                && let Some(bad) = inner
                    .strip_prefix("unknown variant `")
                    .and_then(|r| r.split('`').next())
                && let Some(key) = table.get(name).and_then(|v| v.as_table()).and_then(|t| {
                    t.iter()
                        .find(|(_, v)| v.as_str() == Some(bad))
                        .map(|(k, _)| k)
                })
            {
                field = format!("{name}.{key}");
            }
            problems.add(&field, inner);
            None
        }
    }
}

fn required<T: DeserializeOwned>(
    table: &toml::Table,
    name: &str,
    problems: &mut Problems,
) -> Option<T> {
    if !table.contains_key(name) {
        problems.add_at(None, name, format!("missing section `[{name}]`"));
        return None;
    }
    section(table, name, problems)
}

fn check_source(
    s: SourceConfig,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Problems,
) -> Option<SourceSpec> {
    s.check(resolve)
        .map_err(|found| {
            for (field, message) in found {
                problems.add(field, message);
            }
        })
        .ok()
}

fn check_pretext(
    mut task: TaskConfig,
    size: u32,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Problems,
) -> TaskConfig {
    task.resolve_paths(resolve);
    if let Err(e) = crate::pretext::build(&task, size as usize) {
        problems.add("pretext", e.to_string());
    }
    task
}

fn check_pretrain(p: raw::PretrainSection, problems: &mut Problems) -> PretrainSpec {
    let budget = Budget {
        steps: p.steps,
        epochs: p.epochs,
        minutes: p.minutes,
    };
    if budget.steps.is_none() && budget.epochs.is_none() && budget.minutes.is_none() {
        problems.add(
            "pretrain",
            "needs a budget: `steps`, `epochs` or `minutes` (the first one reached ends pretraining)",
        );
    }
    if budget.steps == Some(0) {
        problems.add("pretrain.steps", "must be at least 1");
    }
    for (field, v) in [
        ("pretrain.epochs", budget.epochs),
        ("pretrain.minutes", budget.minutes),
    ] {
        if let Some(v) = v
            && !(v.is_finite() && v > 0.0)
        {
            problems.add(field, format!("must be a positive number, found {v}"));
        }
    }
    if !(2..=4096).contains(&p.batch_size) {
        problems.add(
            "pretrain.batch_size",
            format!("must be between 2 and 4096, found {}", p.batch_size),
        );
    }
    let sgd = p.optimizer == "sgd";
    let optimizer = match p.optimizer.as_str() {
        "adamw" => crate::train::Optimizer::adamw(p.weight_decay.unwrap_or(0.05)),
        "sgd" => crate::train::Optimizer::sgd(p.momentum, p.weight_decay.unwrap_or(5e-4)),
        other => {
            problems.add(
                "pretrain.optimizer",
                format!("expected \"adamw\" or \"sgd\", found {other:?}"),
            );
            crate::train::Optimizer::adamw(0.0)
        }
    };
    if let Err(e) = optimizer.validate() {
        problems.add("pretrain", e.to_string());
    }
    let lr = p.lr.unwrap_or(if sgd { 0.1 } else { 0.002 });
    if !(lr.is_finite() && lr > 0.0) {
        problems.add("pretrain.lr", format!("must be positive, found {lr}"));
    }
    if !(p.min_lr.is_finite() && p.min_lr >= 0.0 && p.min_lr <= lr) {
        problems.add(
            "pretrain.min_lr",
            format!("must be between 0 and lr ({lr}), found {}", p.min_lr),
        );
    }
    let schedule = match p.schedule.as_str() {
        "cosine" => Schedule::Cosine,
        "constant" => Schedule::Constant,
        other => {
            problems.add(
                "pretrain.schedule",
                format!("expected \"cosine\" or \"constant\", found {other:?}"),
            );
            Schedule::Constant
        }
    };
    if !(p.temperature.is_finite() && p.temperature > 0.0) {
        problems.add(
            "pretrain.temperature",
            format!("must be positive, found {}", p.temperature),
        );
    }
    for (field, v) in [
        ("pretrain.eval_every", p.eval_every),
        ("pretrain.checkpoint_every", p.checkpoint_every),
        ("pretrain.log_every", p.log_every),
    ] {
        if v == 0 {
            problems.add(field, "must be at least 1");
        }
    }
    if p.keep_checkpoints == 0 {
        problems.add(
            "pretrain.keep_checkpoints",
            "must be at least 1 (the newest checkpoint is what --resume continues from)",
        );
    }
    PretrainSpec {
        budget,
        batch_size: p.batch_size,
        optimizer,
        lr,
        min_lr: p.min_lr,
        warmup_steps: p.warmup_steps,
        schedule,
        temperature: p.temperature,
        holdout: p.holdout,
        eval_every: p.eval_every,
        checkpoint_every: p.checkpoint_every,
        keep_checkpoints: p.keep_checkpoints,
        log_every: p.log_every,
        preview: p.preview,
    }
}

fn check_decode(d: &DecodeSettings, problems: &mut Problems) {
    if !(8..=4096).contains(&d.size) {
        problems.add(
            "decode.size",
            format!("must be between 8 and 4096 pixels, found {}", d.size),
        );
    }
    if d.max_pixels == 0 {
        problems.add("decode.max_pixels", "must be positive");
    }
}

fn check_norm(
    mean: Option<[f32; 3]>,
    std: Option<[f32; 3]>,
    problems: &mut Problems,
) -> Normalization {
    let std = std.unwrap_or(IMAGENET_STD);
    if std.iter().any(|s| *s <= 0.0 || !s.is_finite()) {
        problems.add(
            "model.std",
            format!("every value must be positive and finite, found {std:?}"),
        );
    }
    let mean = mean.unwrap_or(IMAGENET_MEAN);
    if mean.iter().any(|m| !m.is_finite()) {
        problems.add(
            "model.mean",
            format!("every value must be finite, found {mean:?}"),
        );
    }
    Normalization { mean, std }
}

fn check_model(
    m: ModelSection,
    size: u32,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Problems,
) -> Option<ModelSpec> {
    match m {
        ModelSection::Builtin(b) => {
            let norm = check_norm(b.mean, b.std, problems);
            if b.features == Features::Stages && b.embedding_dim.is_some() {
                problems.add(
                    "model.embedding_dim",
                    "with features = \"stages\" the embedding is every stage's grid-pooled map, its length follows from width, stages, grid, stem and decode.size: remove embedding_dim",
                );
                return None;
            }
            if b.features == Features::Last && b.grid.is_some() {
                problems.add(
                    "model.grid",
                    "grid sets the pooling of features = \"stages\"; with \"last\" the embedding is the last map's global average: remove grid or set features = \"stages\"",
                );
                return None;
            }
            let spec = EncoderSpec {
                width: b.width,
                stages: b.stages,
                embedding_dim: b.embedding_dim.unwrap_or(DEFAULT_EMBEDDING_DIM),
                in_channels: 3,
                features: b.features,
                stem: b.stem,
                grid: b.grid.unwrap_or(DEFAULT_GRID),
            };
            // The built encoder's spec carries the derived length for `stages`.
            let spec = match BuiltinEncoder::new(spec, size) {
                Ok(encoder) => encoder.spec().clone(),
                Err(e) => {
                    problems.add(
                        "model",
                        format!("the built-in encoder cannot be built: {e}"),
                    );
                    return None;
                }
            };
            Some(ModelSpec::Builtin {
                spec,
                seed: b.seed,
                norm,
            })
        }
        ModelSection::Onnx(o) => {
            let norm = check_norm(o.mean, o.std, problems);
            let path = resolve(&o.path);
            if !path.is_file() {
                problems.add(
                    "model.path",
                    format!("model file {} does not exist", path.display()),
                );
            }
            Some(ModelSpec::Onnx {
                path,
                input: o.input,
                output: o.output,
                norm,
            })
        }
    }
}

fn check_runtime(
    r: raw::RuntimeSection,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Problems,
) -> Option<RuntimeSpec> {
    let device = match r
        .device
        .as_deref()
        .map(parse_device)
        .unwrap_or(Ok(Device::Cpu))
    {
        Ok(d) => d,
        Err(msg) => {
            problems.add("runtime.device", msg);
            Device::Cpu
        }
    };
    let optimization = match r.optimization.as_deref() {
        None | Some("all") => Optimization::All,
        Some("extended") => Optimization::Extended,
        Some("disable") => Optimization::Disable,
        Some("basic") => Optimization::Basic,
        Some(other) => {
            problems.add(
                "runtime.optimization",
                format!(
                    "expected one of \"disable\", \"basic\", \"extended\", \"all\", found {other:?}"
                ),
            );
            Optimization::Extended
        }
    };
    let library = r.library.map(|p| resolve(&p));
    if let Some(lib) = &library
        && !lib.is_file()
    {
        problems.add(
            "runtime.library",
            format!("{} does not exist", lib.display()),
        );
    }
    Some(RuntimeSpec {
        library,
        session: SessionSettings {
            device,
            intra_threads: r.intra_threads,
            optimization,
            spinning: r.spinning,
        },
    })
}

/// `"cpu"`, `"cuda"` or `"cuda:N"`.
pub(crate) fn parse_device(text: &str) -> Result<Device, String> {
    match text {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda { device_id: 0 }),
        other => match other.strip_prefix("cuda:").map(str::parse::<i32>) {
            Some(Ok(id)) if id >= 0 => Ok(Device::Cuda { device_id: id }),
            _ => Err(format!(
                "expected \"cpu\", \"cuda\" or \"cuda:N\", found {other:?}"
            )),
        },
    }
}

fn check_output(
    o: raw::OutputSection,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Problems,
) -> Option<OutputSpec> {
    let dir = resolve(&o.dir);
    if let Err(why) = writable_dir(&dir) {
        problems.add("output.dir", why);
    }
    if o.rows_per_file == 0 {
        problems.add("output.rows_per_file", "must be at least 1");
    }
    if o.row_group_rows == 0 {
        problems.add("output.row_group_rows", "must be at least 1");
    }
    if let Some(s) = o.roll_seconds
        && !(0.1..=86_400.0).contains(&s)
    {
        problems.add(
            "output.roll_seconds",
            format!("{s} is outside 0.1–86,400 seconds"),
        );
    }
    Some(OutputSpec {
        dir,
        rows_per_file: o.rows_per_file,
        row_group_rows: o.row_group_rows.min(o.rows_per_file.max(1)),
        embedding_type: o.embedding_type,
        roll: o.roll_seconds.map(std::time::Duration::from_secs_f64),
    })
}

/// Checks that `dir` is (or can be created as) a writable folder, without creating it: validation
/// must not change the disk.
fn writable_dir(dir: &Path) -> Result<(), String> {
    let mut probe = dir;
    loop {
        if probe.exists() {
            if !probe.is_dir() {
                return Err(format!("{} exists and is not a folder", probe.display()));
            }
            let meta = std::fs::metadata(probe)
                .map_err(|e| format!("cannot inspect {}: {e}", probe.display()))?;
            if meta.permissions().readonly() || !can_write(probe) {
                return Err(format!("{} is not writable", probe.display()));
            }
            return Ok(());
        }
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p,
            _ => return Ok(()),
        }
    }
}

#[cfg(unix)]
fn can_write(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path; access(2) only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

#[cfg(not(unix))]
fn can_write(_dir: &Path) -> bool {
    true
}
