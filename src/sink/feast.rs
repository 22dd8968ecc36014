//! `sslpipe feast`: a Feast feature repository for a feature output, so the embeddings sslpipe
//! wrote can be served by a feature store without hand-written definitions.
//!
//! The repository is two files: `feature_store.yaml` (local provider: a file offline store over
//! the Parquet parts, a SQLite online store and registry under `data/`) and `<view>.py` with an
//! Entity on `key`, a `FileSource` on the feature folder with `timestamp_field =
//! "event_timestamp"`, and a FeatureView with `embedding` (`Array(Float32)`), `width`, `height`
//! (`Int64`), `model_id` and `pretext` (`String`). The schema is written out, not inferred: Feast's
//! inference cannot type a `fixed_size_list` column, but with the schema given both embedding
//! types read back (checked by `scripts/dev/feast-roundtrip.sh` with the real Feast SDK).
//!
//! Guarantees: the features are checked to be sslpipe feature files (the columns above, the same
//! schema in every part) before anything is written; names that end up as Python identifiers are
//! checked to be identifiers; paths are written as escaped string literals; each file is written
//! atomically. Nothing is read but the Parquet footers.

use std::path::{Path, PathBuf};

use arrow::datatypes::{DataType, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::SinkError;
use super::inspect::parquet_files;

/// What the repository describes and how its objects are named.
#[derive(Debug, Clone)]
pub struct FeastRepoSpec {
    /// A feature folder (`part-*.parquet`) or one feature file.
    pub features: PathBuf,
    /// The repository folder to write (created if needed).
    pub out: PathBuf,
    /// Feast project name.
    pub project: String,
    /// FeatureView name (also the Python file's name).
    pub view: String,
    /// Entity name; its join key is always `key`.
    pub entity: String,
    /// How far back an entity's newest row is served, in days.
    pub ttl_days: u64,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct FeastRepo {
    pub files: Vec<PathBuf>,
    /// Values per embedding.
    pub dim: Option<usize>,
    /// Part files the FileSource reads.
    pub parts: usize,
}

/// Columns a feature file must have for the repository to describe it.
const REQUIRED: &[&str] = &[
    "key",
    "embedding",
    "width",
    "height",
    "model_id",
    "pretext",
    "event_timestamp",
];

/// Checks the features and writes the repository (see the module documentation).
pub fn write_repo(spec: &FeastRepoSpec) -> Result<FeastRepo, SinkError> {
    for (what, name) in [
        ("project", &spec.project),
        ("view", &spec.view),
        ("entity", &spec.entity),
    ] {
        if !is_identifier(name) {
            return Err(SinkError::Read {
                path: spec.out.clone(),
                reason: format!(
                    "the {what} name {name:?} must be a Python identifier (letters, digits, _; not starting with a digit)"
                ),
            });
        }
    }
    let parts = parquet_files(&spec.features)?;
    let schema = feature_schema(&parts[0])?;
    for part in &parts[1..] {
        if feature_schema(part)? != schema {
            return Err(SinkError::Read {
                path: part.clone(),
                reason: format!(
                    "its schema differs from {}: the parts are not one feature output",
                    parts[0].display()
                ),
            });
        }
    }
    let (embedding_type, dim) = match schema.field_with_name("embedding").map(|f| f.data_type()) {
        Ok(DataType::FixedSizeList(_, n)) => ("fixed_size_list<float32>", Some(*n as usize)),
        _ => ("list<float32>", None),
    };
    let source =
        std::path::absolute(&spec.features).map_err(|e| super::io_err(&spec.features, e))?;
    let data = spec.out.join("data");
    std::fs::create_dir_all(&data).map_err(|e| super::io_err(&data, e))?;

    let yaml = format!(
        "# Written by `sslpipe feast` for {source}.\n\
         project: {project}\n\
         provider: local\n\
         registry: data/registry.db\n\
         online_store:\n  type: sqlite\n  path: data/online_store.db\n\
         offline_store:\n  type: file\n\
         entity_key_serialization_version: 3\n",
        source = literal(&source.to_string_lossy()),
        project = spec.project,
    );
    let metadata = |key: &str| {
        schema
            .metadata()
            .get(key)
            .cloned()
            .unwrap_or_else(|| "unknown".into())
    };
    let python = format!(
        r#""""Feast definitions for sslpipe features (the FileSource below names the folder).

Written by `sslpipe feast`: pipeline {pipeline}, model_id {model_id}, pretext {pretext},
embedding {embedding_type}{dim_note}, {parts} part file(s). Run `feast apply` in this folder, then
`materialize` to serve the newest embedding of every key online.
"""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float32, Int64, String

{entity} = Entity(
    name={entity_literal},
    join_keys=["key"],
    value_type=ValueType.STRING,
    description="An image, by its sslpipe key (the source's stable key).",
)

{view}_source = FileSource(
    name={source_name},
    path={path},
    timestamp_field="event_timestamp",
)

{view} = FeatureView(
    name={view_literal},
    entities=[{entity}],
    ttl=timedelta(days={ttl}),
    schema=[
        Field(name="embedding", dtype=Array(Float32)),
        Field(name="width", dtype=Int64),
        Field(name="height", dtype=Int64),
        Field(name="model_id", dtype=String),
        Field(name="pretext", dtype=String),
    ],
    source={view}_source,
    online=True,
)
"#,
        pipeline = metadata("sslpipe.pipeline_name"),
        model_id = metadata("sslpipe.model_id"),
        pretext = metadata("sslpipe.pretext"),
        dim_note = dim.map(|d| format!("[{d}]")).unwrap_or_default(),
        parts = parts.len(),
        entity = spec.entity,
        entity_literal = literal(&spec.entity),
        view = spec.view,
        view_literal = literal(&spec.view),
        source_name = literal(&format!("{}_parquet", spec.view)),
        path = literal(&source.to_string_lossy()),
        ttl = spec.ttl_days,
    );
    let yaml_path = spec.out.join("feature_store.yaml");
    let py_path = spec.out.join(format!("{}.py", spec.view));
    super::write_atomically(&yaml_path, yaml.as_bytes())?;
    super::write_atomically(&py_path, python.as_bytes())?;
    Ok(FeastRepo {
        files: vec![yaml_path, py_path],
        dim,
        parts: parts.len(),
    })
}

/// The Arrow schema of a feature file (with its key-value metadata), checked for the columns the
/// repository names.
fn feature_schema(path: &Path) -> Result<Schema, SinkError> {
    let bad = |reason: String| SinkError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(e.to_string()))?;
    let schema = builder.schema().as_ref().clone();
    for column in REQUIRED {
        if schema.field_with_name(column).is_err() {
            return Err(bad(format!(
                "not an sslpipe feature file: it has no `{column}` column"
            )));
        }
    }
    match schema.field_with_name("embedding").map(|f| f.data_type()) {
        Ok(DataType::FixedSizeList(item, _) | DataType::List(item))
            if item.data_type() == &DataType::Float32 => {}
        Ok(other) => {
            return Err(bad(format!(
                "its `embedding` column is {other}, not a list of float32"
            )));
        }
        Err(_) => unreachable!("checked above"),
    }
    Ok(schema)
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `text` as a Python string literal (a JSON string is one: double quotes, backslash escapes).
fn literal(text: &str) -> String {
    serde_json::to_string(text).expect("a string always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals() {
        assert!(is_identifier("embeddings_v2") && is_identifier("_x"));
        assert!(!is_identifier("2x") && !is_identifier("a-b") && !is_identifier(""));
        assert_eq!(literal("/a/\"b\"\\c"), r#""/a/\"b\"\\c""#);
    }
}
