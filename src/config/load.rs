//! Text to document: reading a file safely, parsing YAML, and checking its shape against the
//! schema. Everything that can go wrong here becomes a located `ConfigError`.

use std::io::Read;
use std::path::Path;

use miette::SourceSpan;
use serde_json::Value;

use super::error::{ConfigError, ConfigErrorKind, ConfigReport, SourceFile};
use super::locate::Locator;
use super::schema::{self, SchemaKind};

/// Ensembles and profiles are hand-written; anything larger is a wrong path or generated
/// junk, and refusing it keeps a 50 MB file from taking seconds and memory.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Reads a file as UTF-8 text, refusing huge and binary files.
pub fn read_source(path: &Path) -> Result<SourceFile, ConfigError> {
    let name = path.display().to_string();
    let empty = SourceFile::new(path.to_path_buf(), name.clone(), "");
    let unreadable = |e: std::io::Error| {
        ConfigError::new(
            ConfigErrorKind::Unreadable {
                path: path.to_path_buf(),
                message: e.to_string(),
            },
            &empty,
            None,
        )
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        let size = std::fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
        return Err(ConfigError::new(
            ConfigErrorKind::TooLarge {
                size,
                limit: MAX_FILE_BYTES,
            },
            &empty,
            None,
        ));
    }
    source_from_bytes(path, name, bytes)
}

pub(super) fn source_from_bytes(
    path: &Path,
    name: String,
    bytes: Vec<u8>,
) -> Result<SourceFile, ConfigError> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(SourceFile::new(path.to_path_buf(), name, text)),
        Err(e) => {
            // Show the valid prefix so the caret can point at the first bad byte.
            let valid = e.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]).into_owned();
            let file = SourceFile::new(path.to_path_buf(), name, prefix);
            let span = (!file.text.is_empty() && file.text.len() < 4096)
                .then(|| SourceSpan::new(valid.saturating_sub(1).into(), 1));
            Err(ConfigError::new(ConfigErrorKind::NotUtf8, &file, span))
        }
    }
}

/// A parsed document: its text and its value as JSON.
pub struct Document {
    pub file: SourceFile,
    pub value: Value,
}

/// Parses YAML text into a JSON value and checks its shape against `kind`'s schema.
/// Returns the document (when it could be parsed at all) and every problem found.
pub fn parse_document(file: SourceFile, kind: SchemaKind) -> (Option<Document>, ConfigReport) {
    let (doc, mut report) = parse_mapping(file);
    let Some(Document { file, value }) = doc else {
        return (None, report);
    };
    report.extend(check_shape(&file, &value, kind));
    (Some(Document { file, value }), report)
}

/// Parses YAML text into a JSON mapping with every limit of `parse_document`, but checks no
/// schema: for files in formats orc reads but does not define (llm-orc's configuration).
pub(super) fn parse_mapping(file: SourceFile) -> (Option<Document>, ConfigReport) {
    let mut report = ConfigReport::default();
    if let Some(offset) = flow_nesting_beyond(&file.text, MAX_FLOW_DEPTH) {
        let span = SourceSpan::new(offset.into(), 1);
        report.push(ConfigError::new(
            ConfigErrorKind::YamlLimit {
                message: format!("more than {MAX_FLOW_DEPTH} nested `[` or `{{`"),
            },
            &file,
            Some(span),
        ));
        return (None, report);
    }
    let yaml: serde_yaml::Value = match serde_yaml::from_str(&file.text) {
        Ok(v) => v,
        Err(e) => {
            report.push(syntax_error(&file, &e));
            return (None, report);
        }
    };
    let value = to_json(yaml);
    match &value {
        Value::Null => {
            report.push(ConfigError::new(ConfigErrorKind::Empty, &file, None));
            return (None, report);
        }
        Value::Object(_) => {}
        other => {
            let found = match other {
                Value::Array(_) => "a list",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "something else",
            };
            let span = first_content_span(&file);
            report.push(ConfigError::new(
                ConfigErrorKind::NotAMapping {
                    found: found.into(),
                },
                &file,
                span,
            ));
            return (None, report);
        }
    }
    (Some(Document { file, value }), report)
}

fn check_shape(file: &SourceFile, value: &Value, kind: SchemaKind) -> ConfigReport {
    let mut report = ConfigReport::default();
    let issues = schema::check(kind, value);
    if !issues.is_empty() {
        let locator = Locator::new(file);
        for issue in issues {
            let span = if issue.path.is_empty() {
                // A problem with the document as a whole: point at its first line.
                first_content_span(file)
            } else if issue.at_key {
                locator.key_span(&issue.path)
            } else {
                locator.value_span(&issue.path)
            }
            .or_else(|| locator.nearest_span(&issue.path));
            report.push(ConfigError::new(issue.kind, file, span));
        }
    }
    report
}

/// libyaml's scanner is quadratic in flow nesting (100,000 `[` take a minute to reject),
/// so absurd nesting is refused before parsing. serde_yaml itself stops at 128 levels; this
/// bound only has to be cheap for it to handle.
const MAX_FLOW_DEPTH: usize = 1000;

/// Offset of the first `[` or `{` nested deeper than `limit`, outside quotes and comments.
fn flow_nesting_beyond(text: &str, limit: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut prev = '\n';
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match quote {
            Some('"') if c == '\\' => {
                chars.next();
            }
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' if !prev.is_alphanumeric() => quote = Some(c),
                '#' if prev.is_whitespace() => {
                    while chars.peek().is_some_and(|(_, c)| *c != '\n') {
                        chars.next();
                    }
                }
                '[' | '{' => {
                    depth += 1;
                    if depth > limit {
                        return Some(i);
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = c;
    }
    None
}

fn syntax_error(file: &SourceFile, error: &serde_yaml::Error) -> ConfigError {
    let mut message = error.to_string();
    let span = error.location().map(|loc| {
        // libyaml's index is the byte offset; clamp it into the text (an error at the very
        // end would get no caret) and onto a char boundary.
        let mut offset = loc.index().min(file.text.len().saturating_sub(1));
        while !file.text.is_char_boundary(offset) {
            offset -= 1;
        }
        SourceSpan::new(offset.into(), 1)
    });
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    if message.contains("recursion limit exceeded") || message.contains("repetition limit exceeded")
    {
        return ConfigError::new(ConfigErrorKind::YamlLimit { message }, file, span);
    }
    let tabs = span.is_some_and(|s| {
        let offset = s.offset();
        let start = file.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let end = file.text[offset..]
            .find('\n')
            .map_or(file.text.len(), |i| offset + i);
        // The tab may be on this line or on the line the parser was still reading.
        let prev_start = file.text[..start.saturating_sub(1)]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        file.text[prev_start..end].contains('\t')
    }) || message.contains("tab");
    ConfigError::new(ConfigErrorKind::Syntax { message, tabs }, file, span)
}

fn first_content_span(file: &SourceFile) -> Option<SourceSpan> {
    let mut offset = 0;
    for line in file.text.split_inclusive('\n') {
        let trimmed = line.trim();
        if !trimmed.is_empty() && !trimmed.starts_with('#') && trimmed != "---" {
            let indent = line.len() - line.trim_start().len();
            return Some(SourceSpan::new(
                (offset + indent).into(),
                trimmed.len().max(1),
            ));
        }
        offset += line.len();
    }
    None
}

/// YAML values as JSON: keys become strings, tags are dropped, non-finite floats are null.
fn to_json(value: serde_yaml::Value) -> Value {
    match value {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(b),
        serde_yaml::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        serde_yaml::Value::String(s) => Value::String(s),
        serde_yaml::Value::Sequence(items) => {
            Value::Array(items.into_iter().map(to_json).collect())
        }
        serde_yaml::Value::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match to_json(k) {
                        Value::String(s) => s,
                        Value::Null => "null".to_string(),
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        serde_yaml::Value::Tagged(tagged) => to_json(tagged.value),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn parse(text: &str) -> (Option<Document>, ConfigReport) {
        let file = SourceFile::new(PathBuf::from("t.yaml"), "t.yaml".into(), text);
        parse_document(file, SchemaKind::Ensemble)
    }

    #[test]
    fn tabs_are_explained() {
        let (_, report) = parse("name: x\nagents:\n\t- name: a\n");
        assert!(matches!(
            report.diagnostics[0].kind,
            ConfigErrorKind::Syntax { tabs: true, .. }
        ));
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = if i == 1 {
                "a".to_string()
            } else {
                format!("a{}", i - 1)
            };
            text.push_str(&format!("a{i}: &a{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let (doc, report) = parse(&text);
        assert!(doc.is_none());
        assert!(report.has_errors());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let (doc, report) = parse(&text);
        assert!(doc.is_none());
        assert!(matches!(
            report.diagnostics[0].kind,
            ConfigErrorKind::YamlLimit { .. }
        ));
        let text = format!("a: {}{}", "[".repeat(500), "]".repeat(500));
        let (_, report) = parse(&text);
        assert!(matches!(
            report.diagnostics[0].kind,
            ConfigErrorKind::YamlLimit { .. }
        ));
    }

    #[test]
    fn braces_in_strings_and_comments_do_not_count() {
        let text = format!(
            "a: \"{}\" # {}\nb: '{}'\n",
            "[".repeat(2000),
            "{".repeat(2000),
            "[".repeat(2000)
        );
        assert_eq!(flow_nesting_beyond(&text, 1000), None);
    }

    #[test]
    fn empty_and_scalar_documents() {
        assert!(matches!(
            parse("# only a comment\n").1.diagnostics[0].kind,
            ConfigErrorKind::Empty
        ));
        assert!(matches!(
            parse("- a\n- b\n").1.diagnostics[0].kind,
            ConfigErrorKind::NotAMapping { .. }
        ));
    }
}
