//! Maps a dotted field path (`source.path`, `model.width`) to its line in the TOML text, so every
//! configuration error can name the line a user has to fix. Built once per file.

use std::collections::HashMap;

/// Line numbers (1-based) of every key and table header in a TOML document.
#[derive(Debug, Clone, Default)]
pub struct Locator {
    lines: HashMap<String, usize>,
    line_starts: Vec<usize>,
}

impl Locator {
    /// Indexes `text`. A document that does not parse yields an empty index: the parse error
    /// itself carries the position.
    pub fn new(text: &str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect::<Vec<_>>();
        let mut locator = Locator {
            lines: HashMap::new(),
            line_starts,
        };
        if let Ok(doc) = toml_edit::Document::parse(text) {
            locator.index_table(doc.as_table(), "");
        }
        locator
    }

    fn index_table(&mut self, table: &toml_edit::Table, prefix: &str) {
        if let Some(span) = table.span() {
            self.insert(prefix, span.start);
        }
        for (key, item) in table.iter() {
            let path = if prefix.is_empty() {
                key.to_string()
            } else {
                format!("{prefix}.{key}")
            };
            if let Some(span) = table.key(key).and_then(|k| k.span()) {
                self.insert(&path, span.start);
            }
            match item {
                toml_edit::Item::Table(t) => self.index_table(t, &path),
                toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => {
                    for (k, _) in t.iter() {
                        if let Some(span) = t.key(k).and_then(|k| k.span()) {
                            self.insert(&format!("{path}.{k}"), span.start);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn insert(&mut self, path: &str, offset: usize) {
        if path.is_empty() {
            return;
        }
        let line = self.line_of(offset);
        self.lines.entry(path.to_string()).or_insert(line);
    }

    /// 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        self.line_starts
            .partition_point(|&start| start <= offset)
            .max(1)
    }

    /// The line of `path`, or of its closest enclosing table that is written in the file.
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(&line) = self.lines.get(p) {
                return Some(line);
            }
            p = &p[..p.rfind('.')?];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_tables_and_falls_back_to_the_section() {
        let text = "[source]\nkind = \"dir\"\npath = \"x\"\n\n[model]\nwidth = 3\n";
        let l = Locator::new(text);
        assert_eq!(l.line("source.path"), Some(3));
        assert_eq!(l.line("model.width"), Some(6));
        assert_eq!(
            l.line("model.seed"),
            Some(5),
            "absent key points at its table"
        );
        assert_eq!(l.line("nowhere.at_all"), None);
    }
}
