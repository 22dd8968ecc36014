//! The labels file: which class each key belongs to and, optionally, whether it is a training or a
//! test example.
//!
//! Two formats, told apart by content (Parquet files start with `PAR1`):
//! - CSV (RFC 4180: `"`-quoted fields, `""` inside quotes, LF or CRLF, an optional UTF-8 BOM) with
//!   a header naming the columns `key`, `label` and optionally `split`, in any order, with any
//!   other columns ignored. Header names are matched case-insensitively; unquoted values are
//!   trimmed; empty lines are skipped.
//! - Parquet with the same columns: `key` a string, `label` a string or an integer, `split` a
//!   string.
//!
//! Guarantees: every problem is an [`EvalError`] naming the file and the line (CSV) or row
//! (Parquet) — a missing column, an empty key or label, a `split` other than `train`/`test`, a
//! duplicate key (both lines named). Never panics on bad input.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::EvalError;

/// Which side of the train/test split a labeled key is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// One labeled key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRow {
    pub key: String,
    pub label: String,
    pub split: Option<Split>,
    /// CSV line number, or Parquet row number (both 1-based), for messages.
    pub line: usize,
}

/// A whole labels file.
#[derive(Debug, Clone)]
pub struct Labels {
    pub path: PathBuf,
    pub rows: Vec<LabelRow>,
    /// Whether the file has a `split` column (then every row has a split).
    pub has_split: bool,
    /// Row index of every key.
    pub index: HashMap<String, usize>,
}

fn read_err(path: &Path, e: impl std::fmt::Display) -> EvalError {
    EvalError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Reads and checks the labels file at `path`.
pub fn read_labels(path: &Path) -> Result<Labels, EvalError> {
    let mut head = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(|e| read_err(path, e))?;
    let n = file.read(&mut head).map_err(|e| read_err(path, e))?;
    let (rows, has_split) = if n == 4 && &head == b"PAR1" {
        read_parquet(path)?
    } else {
        let bytes = std::fs::read(path).map_err(|e| read_err(path, e))?;
        let text = String::from_utf8(bytes)
            .map_err(|e| read_err(path, format!("not UTF-8 text ({e})")))?;
        read_csv(path, &text)?
    };
    let mut index = HashMap::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        if let Some(prev) = index.insert(row.key.clone(), i) {
            let unit = if has_parquet_rows(path) {
                "rows"
            } else {
                "lines"
            };
            return Err(EvalError::DuplicateKey {
                key: row.key.clone(),
                place: format!(
                    "labels file {} ({unit} {} and {})",
                    path.display(),
                    rows[prev].line,
                    row.line
                ),
            });
        }
    }
    Ok(Labels {
        path: path.to_path_buf(),
        rows,
        has_split,
        index,
    })
}

fn has_parquet_rows(path: &Path) -> bool {
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == b"PAR1"
}

fn parse_split(path: &Path, line: usize, value: &str) -> Result<Split, EvalError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "train" => Ok(Split::Train),
        "test" => Ok(Split::Test),
        _ => Err(EvalError::Csv {
            path: path.to_path_buf(),
            line,
            reason: format!("split must be \"train\" or \"test\", found {value:?}"),
        }),
    }
}

/// One CSV record: the line number where it starts, and its fields.
pub type CsvRecord = (usize, Vec<String>);

/// The records of a CSV text, or the line and reason of the first syntax error.
pub fn parse_csv(text: &str) -> Result<Vec<CsvRecord>, (usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false; // the current field was quoted
    let mut in_quotes = false;
    let mut line = 1;
    let mut start = 1;
    let mut chars = text.chars().peekable();
    let finish_field = |field: &mut String, quoted: &mut bool, fields: &mut Vec<String>| {
        let f = std::mem::take(field);
        fields.push(if *quoted { f } else { f.trim().to_string() });
        *quoted = false;
    };
    while let Some(ch) = chars.next() {
        if in_quotes {
            match ch {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                c => field.push(c),
            }
            continue;
        }
        match ch {
            '"' if field.trim().is_empty() && !quoted => {
                field.clear();
                in_quotes = true;
                quoted = true;
            }
            ',' => finish_field(&mut field, &mut quoted, &mut fields),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                finish_field(&mut field, &mut quoted, &mut fields);
                let record = std::mem::take(&mut fields);
                if !(record.len() == 1 && record[0].is_empty()) {
                    records.push((start, record));
                }
                line += 1;
                start = line;
            }
            c if quoted => {
                if !c.is_whitespace() {
                    return Err((line, "text after a closing quote".into()));
                }
            }
            '"' => return Err((line, "a quote inside an unquoted field".into())),
            c => field.push(c),
        }
    }
    if in_quotes {
        return Err((start, "a quoted field is never closed".into()));
    }
    if !field.is_empty() || quoted || !fields.is_empty() {
        finish_field(&mut field, &mut quoted, &mut fields);
        if !(fields.len() == 1 && fields[0].is_empty()) {
            records.push((start, fields));
        }
    }
    Ok(records)
}

fn read_csv(path: &Path, text: &str) -> Result<(Vec<LabelRow>, bool), EvalError> {
    let csv_err = |line, reason: String| EvalError::Csv {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let records = parse_csv(text).map_err(|(line, reason)| csv_err(line, reason))?;
    let Some(((_, header), body)) = records.split_first() else {
        return Err(read_err(
            path,
            "the file is empty (expected a header `key,label[,split]`)",
        ));
    };
    let find = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let missing = |name: &str| EvalError::MissingColumn {
        path: path.to_path_buf(),
        missing: name.to_string(),
        found: header.join(", "),
    };
    let key_col = find("key").ok_or_else(|| missing("key"))?;
    let label_col = find("label").ok_or_else(|| missing("label"))?;
    let split_col = find("split");
    let mut rows = Vec::with_capacity(body.len());
    for (line, fields) in body {
        if fields.len() != header.len() {
            return Err(csv_err(
                *line,
                format!(
                    "expected {} fields (as in the header), found {}",
                    header.len(),
                    fields.len()
                ),
            ));
        }
        let key = fields[key_col].clone();
        let label = fields[label_col].clone();
        if key.is_empty() {
            return Err(csv_err(*line, "empty key".into()));
        }
        if label.is_empty() {
            return Err(csv_err(*line, format!("empty label for key {key:?}")));
        }
        let split = match split_col {
            Some(c) => Some(parse_split(path, *line, &fields[c])?),
            None => None,
        };
        rows.push(LabelRow {
            key,
            label,
            split,
            line: *line,
        });
    }
    Ok((rows, split_col.is_some()))
}

fn read_parquet(path: &Path) -> Result<(Vec<LabelRow>, bool), EvalError> {
    let file = std::fs::File::open(path).map_err(|e| read_err(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| read_err(path, e))?;
    let schema = builder.schema().clone();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let find = |name: &str| names.iter().position(|n| n.eq_ignore_ascii_case(name));
    let missing = |name: &str| EvalError::MissingColumn {
        path: path.to_path_buf(),
        missing: name.to_string(),
        found: names.join(", "),
    };
    let key_col = find("key").ok_or_else(|| missing("key"))?;
    let label_col = find("label").ok_or_else(|| missing("label"))?;
    let split_col = find("split");
    let column_type = |col: usize, expected: &'static str| EvalError::ColumnType {
        path: path.to_path_buf(),
        column: names[col].clone(),
        expected,
        found: schema.field(col).data_type().to_string(),
    };
    let is_string =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    if !is_string(schema.field(key_col).data_type()) {
        return Err(column_type(key_col, "a string"));
    }
    let label_type = schema.field(label_col).data_type();
    if !(is_string(label_type) || label_type.is_integer()) {
        return Err(column_type(label_col, "a string or an integer"));
    }
    if let Some(c) = split_col
        && !is_string(schema.field(c).data_type())
    {
        return Err(column_type(c, "a string"));
    }
    let mut roots = vec![key_col, label_col];
    roots.extend(split_col);
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| read_err(path, e))?;
    // After projection the columns keep their relative order.
    let position = |col: usize| roots.iter().filter(|&&r| r < col).count();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| read_err(path, e))?;
        let text = |col: usize| -> Result<Vec<Option<String>>, EvalError> {
            let array = arrow::compute::cast(batch.column(position(col)), &DataType::Utf8)
                .map_err(|e| read_err(path, e))?;
            let strings = array.as_string::<i32>();
            Ok((0..strings.len())
                .map(|i| (!strings.is_null(i)).then(|| strings.value(i).to_string()))
                .collect())
        };
        let keys = text(key_col)?;
        let labels = text(label_col)?;
        let splits = split_col.map(text).transpose()?;
        for (i, (key, label)) in keys.into_iter().zip(labels).enumerate() {
            let line = rows.len() + 1;
            let null = |column: &str| EvalError::Csv {
                path: path.to_path_buf(),
                line,
                reason: format!("row {line}: null or empty {column}"),
            };
            let key = key.filter(|k| !k.is_empty()).ok_or_else(|| null("key"))?;
            let label = label
                .filter(|l| !l.is_empty())
                .ok_or_else(|| null("label"))?;
            let split = match &splits {
                Some(s) => Some(parse_split(
                    path,
                    line,
                    s[i].as_deref().ok_or_else(|| null("split"))?,
                )?),
                None => None,
            };
            rows.push(LabelRow {
                key,
                label,
                split,
                line,
            });
        }
    }
    Ok((rows, split_col.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_handles_quotes_crlf_bom_and_blank_lines() {
        let text =
            "\u{feff}key,label\r\n\"a,1\",cat\r\n\r\n b , \"say \"\"hi\"\"\" \n\"multi\nline\",x";
        let records = parse_csv(text).unwrap();
        assert_eq!(
            records,
            vec![
                (1, vec!["key".to_string(), "label".to_string()]),
                (2, vec!["a,1".to_string(), "cat".to_string()]),
                (4, vec!["b".to_string(), "say \"hi\"".to_string()]),
                (5, vec!["multi\nline".to_string(), "x".to_string()]),
            ]
        );
        assert_eq!(parse_csv("a,\"b").unwrap_err().0, 1);
        assert_eq!(parse_csv("a\nb\"c").unwrap_err().0, 2);
    }

    #[test]
    fn csv_columns_in_any_order_and_clear_errors() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("l.csv");
        std::fs::write(&p, "Split,extra,Label,KEY\ntrain,x,cat,a\nTEST,y,dog,b\n").unwrap();
        let l = read_labels(&p).unwrap();
        assert!(l.has_split);
        assert_eq!(l.rows[1].key, "b");
        assert_eq!(l.rows[1].label, "dog");
        assert_eq!(l.rows[1].split, Some(Split::Test));
        assert_eq!(l.index["a"], 0);

        std::fs::write(&p, "key,class\na,cat\n").unwrap();
        let e = read_labels(&p).unwrap_err().to_string();
        assert!(
            e.contains("l.csv") && e.contains("`label`") && e.contains("key, class"),
            "{e}"
        );

        std::fs::write(&p, "key,label\na,cat\nb,dog\na,dog\n").unwrap();
        let e = read_labels(&p).unwrap_err().to_string();
        assert!(e.contains("\"a\"") && e.contains("lines 2 and 4"), "{e}");

        std::fs::write(&p, "key,label,split\na,cat,validation\n").unwrap();
        let e = read_labels(&p).unwrap_err().to_string();
        assert!(e.contains("l.csv:2") && e.contains("validation"), "{e}");

        std::fs::write(&p, "key,label\na,cat,extra\n").unwrap();
        let e = read_labels(&p).unwrap_err().to_string();
        assert!(
            e.contains("l.csv:2") && e.contains("expected 2 fields"),
            "{e}"
        );
    }
}
