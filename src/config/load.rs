//! Text to document: reading a file safely, parsing YAML, and checking its shape against the
//! schema. Everything that can go wrong here becomes a located `ConfigError`.

use std::path::Path;

use miette::SourceSpan;
use serde_json::Value;

use super::error::{ConfigError, ConfigErrorKind, ConfigReport, SourceFile};
use super::locate::{Locator, PathSeg};
use super::read::{ReadError, read_capped};
use super::schema::{self, SchemaKind};
use super::yaml::{self, YamlProblem};

/// Ensembles and profiles are written by hand or generated; 16 MiB holds a generated
/// 100,000-agent ensemble with room to spare. Anything larger is a wrong path or junk, and refusing it bounds the memory
/// parsing can take (issue 13).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Reads a file as UTF-8 text, refusing huge, binary and special files.
pub fn read_source(path: &Path) -> Result<SourceFile, ConfigError> {
    let name = path.display().to_string();
    let empty = SourceFile::new(path.to_path_buf(), name.clone(), "");
    let bytes = read_capped(path, MAX_FILE_BYTES, "ensemble and profile files").map_err(|e| {
        let kind = match e {
            ReadError::NotAFile { what } => ConfigErrorKind::NotAFile {
                path: path.to_path_buf(),
                what,
            },
            ReadError::TooLarge { limit, .. } => ConfigErrorKind::TooLarge {
                path: path.to_path_buf(),
                limit,
            },
            ReadError::Io(e) => ConfigErrorKind::Unreadable {
                path: path.to_path_buf(),
                message: e.to_string(),
            },
        };
        ConfigError::new(kind, &empty, None)
    })?;
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
            // Show the valid prefix and a little of the line after it, the bad bytes as
            // `�`, so the caret can point at the first of them.
            let bytes = e.as_bytes();
            let valid = e.utf8_error().valid_up_to();
            let mut text = String::from_utf8_lossy(&bytes[..valid]).into_owned();
            let rest = &bytes[valid..];
            let end = rest
                .iter()
                .take(40)
                .position(|&b| b == b'\n' || b == b'\r')
                .unwrap_or(rest.len().min(40));
            text.push_str(&String::from_utf8_lossy(&rest[..end]));
            let file = SourceFile::new(path.to_path_buf(), name, text);
            let span = SourceSpan::new(valid.into(), char::REPLACEMENT_CHARACTER.len_utf8());
            Err(ConfigError::new(
                ConfigErrorKind::NotUtf8,
                &file,
                Some(span),
            ))
        }
    }
}

/// A parsed document: its text, its value as JSON, and where the shape check already found
/// problems (so that later checks do not report them again).
pub struct Document {
    pub file: SourceFile,
    pub value: Value,
    pub issues: Vec<Vec<PathSeg>>,
}

impl Document {
    /// The value at `at` as a typed spec. A value the schema let through but serde refuses
    /// (`producers: 3.` is a whole number to JSON Schema, not to a `u32`) becomes a located
    /// error here, so no command can refuse the file in silence after `orc validate`
    /// accepted it (issue 13). `None` without an error when the shape check has already
    /// reported a problem inside.
    pub(super) fn typed<T: serde::de::DeserializeOwned>(
        &self,
        at: &[PathSeg],
    ) -> Result<T, Option<(ConfigErrorKind, Vec<PathSeg>)>> {
        let value = pointer(&self.value, at).unwrap_or(&Value::Null);
        let error = match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(spec) => return Ok(spec),
            Err(e) => e,
        };
        let mut path = at.to_vec();
        for segment in error.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => path.push(PathSeg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => path.push(PathSeg::Key(key.clone())),
                _ => {}
            }
        }
        let first = self.issues.partition_point(|issue| issue.as_slice() < at);
        let reported = self.issues[first..]
            .iter()
            .take_while(|issue| issue.starts_with(at))
            .any(|issue| issue.starts_with(&path) || path.starts_with(issue));
        if reported {
            return Err(None);
        }
        let found = pointer(&self.value, &path);
        let message = error.inner().to_string();
        let key = schema::key_name(&path);
        let kind = match found {
            Some(n @ Value::Number(_))
                if message.contains("expected u") || message.contains("expected i") =>
            {
                ConfigErrorKind::WrongType {
                    key,
                    expected: "a whole number".into(),
                    found: schema::describe_value(n),
                }
            }
            _ => ConfigErrorKind::OutOfRange {
                key,
                problem: format!("cannot be read: {message}"),
            },
        };
        Err(Some((kind, path)))
    }
}

/// The value at a path of a document.
fn pointer<'a>(value: &'a Value, path: &[PathSeg]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, seg| match seg {
        PathSeg::Key(k) => v.get(k),
        PathSeg::Index(i) => v.get(i),
    })
}

/// At most this many problems are reported per file; the rest are counted.
pub(super) const MAX_ERRORS_PER_FILE: usize = 50;

/// Parses YAML text into a JSON value and checks its shape against `kind`'s schema.
/// Returns the document (when it could be parsed at all) and every problem found.
pub fn parse_document(file: SourceFile, kind: SchemaKind) -> (Option<Document>, ConfigReport) {
    let mut report = ConfigReport::default();
    let Some((file, parsed)) = parse_yaml_mapping(file, &mut report) else {
        return (None, report);
    };
    let value = parsed.value;
    let locator = Locator::new(&file);
    let mut problems: Vec<(ConfigErrorKind, Option<SourceSpan>)> = Vec::new();
    let mut issues: Vec<Vec<PathSeg>> = parsed.non_finite.iter().map(|(p, _)| p.clone()).collect();
    // JSON has no infinity: `.inf` and `.nan` became null, and are reported here, once,
    // instead of as "found nothing" by the schema.
    for (path, number) in &parsed.non_finite {
        let span = locator
            .value_span(path)
            .or_else(|| locator.nearest_span(path));
        problems.push((
            ConfigErrorKind::OutOfRange {
                key: schema::key_name(path),
                problem: format!("must be a finite number, found `{}`", yaml_float(*number)),
            },
            span,
        ));
    }
    for issue in schema::check(kind, &value) {
        if parsed.non_finite.iter().any(|(p, _)| *p == issue.path) {
            continue;
        }
        // Past the cap, only count: locating costs, and nobody reads the ten-thousandth.
        if problems.len() > MAX_ERRORS_PER_FILE {
            problems.push((issue.kind, None));
            issues.push(issue.path);
            continue;
        }
        let span = if issue.path.is_empty() {
            // A problem with the document as a whole: point at its first line.
            first_content_span(&file)
        } else if issue.at_key {
            locator.key_span(&issue.path)
        } else {
            locator.value_span(&issue.path)
        }
        .or_else(|| locator.nearest_span(&issue.path));
        problems.push((issue.kind, span));
        issues.push(issue.path);
    }
    // Sorted, so that `Document::typed` finds those under a path by binary search.
    issues.sort();
    let more = problems.len().saturating_sub(MAX_ERRORS_PER_FILE);
    let next = problems
        .get(MAX_ERRORS_PER_FILE)
        .and_then(|(_, span)| *span);
    for (kind, span) in problems.into_iter().take(MAX_ERRORS_PER_FILE) {
        report.push(ConfigError::new(kind, &file, span));
    }
    if more > 0 {
        report.push(ConfigError::new(
            ConfigErrorKind::TooManyErrors {
                more,
                warnings_only: false,
            },
            &file,
            next,
        ));
    }
    drop(locator);
    (
        Some(Document {
            file,
            value,
            issues,
        }),
        report,
    )
}

/// How YAML writes a number JSON cannot hold.
fn yaml_float(n: f64) -> String {
    if n.is_nan() {
        ".nan".into()
    } else if n > 0.0 {
        ".inf".into()
    } else {
        "-.inf".into()
    }
}

/// A one-character span at `offset`, moved back onto a character boundary.
fn char_span(text: &str, offset: usize) -> SourceSpan {
    let mut offset = offset.min(text.len().saturating_sub(1));
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    SourceSpan::new(offset.into(), 1)
}

fn syntax_error(file: &SourceFile, error: &serde_yaml::Error) -> ConfigError {
    let mut message = error.to_string();
    // libyaml's index is the byte offset; clamped into the text (an error at the very end
    // would get no caret) and onto a char boundary. The few errors without a position
    // (a second document) point at where the text stops being one document, or its start.
    let span = error
        .location()
        .map(|loc| char_span(&file.text, loc.index()))
        .or_else(|| second_document(&file.text))
        .or_else(|| first_content_span(file));
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
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

/// Where a second YAML document starts: a `---` after content, or the first line indented
/// less than the first content line (libyaml ends the document there).
fn second_document(text: &str) -> Option<SourceSpan> {
    let mut offset = 0;
    let mut first_indent: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        let indent = line.len() - line.trim_start().len();
        if !trimmed.is_empty() && !trimmed.starts_with('#') && !trimmed.starts_with('%') {
            match first_indent {
                None if trimmed != "---" => first_indent = Some(indent),
                None => {}
                Some(first)
                    if trimmed.starts_with("---")
                        || trimmed.starts_with("...")
                        || indent < first =>
                {
                    return Some(SourceSpan::new(
                        (offset + indent).into(),
                        trimmed.len().max(1),
                    ));
                }
                Some(_) => {}
            }
        }
        offset += line.len();
    }
    None
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

/// Parses YAML text into a JSON mapping with every limit of `parse_document`, but checks no
/// schema: for files in formats orc reads but does not define (llm-orc's configuration).
pub(super) fn parse_mapping(file: SourceFile) -> (Option<Document>, ConfigReport) {
    let mut report = ConfigReport::default();
    let doc = parse_yaml_mapping(file, &mut report).map(|(file, parsed)| Document {
        file,
        value: parsed.value,
        issues: Vec::new(),
    });
    (doc, report)
}

/// The YAML of a file, which must be a mapping; otherwise the problem is in `report`.
fn parse_yaml_mapping(
    file: SourceFile,
    report: &mut ConfigReport,
) -> Option<(SourceFile, yaml::Parsed)> {
    let parsed = match yaml::parse(&file.text) {
        Ok(parsed) => parsed,
        Err(YamlProblem::Limit { message, offset }) => {
            let span = offset.map(|o| char_span(&file.text, o));
            report.push(ConfigError::new(
                ConfigErrorKind::YamlLimit { message },
                &file,
                span,
            ));
            return None;
        }
        Err(YamlProblem::Syntax(e)) => {
            report.push(syntax_error(&file, &e));
            return None;
        }
    };
    match &parsed.value {
        Value::Null if parsed.non_finite.is_empty() => {
            report.push(ConfigError::new(ConfigErrorKind::Empty, &file, None));
            return None;
        }
        Value::Object(_) => {}
        other => {
            let found = match other {
                Value::Array(_) => "a list",
                Value::String(_) => "a string",
                Value::Number(_) | Value::Null => "a number",
                Value::Bool(_) => "a boolean",
                Value::Object(_) => "a mapping",
            };
            let span = first_content_span(&file);
            report.push(ConfigError::new(
                ConfigErrorKind::NotAMapping {
                    found: found.into(),
                },
                &file,
                span,
            ));
            return None;
        }
    }
    Some((file, parsed))
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
