//! Path to span: the one place that turns a position in the parsed document (`/agents/3/depends_on/1`)
//! into a byte span of the file, so every error can put a caret under the YAML it is about.
//!
//! It parses the text a second time with `marked-yaml`, which keeps the position of every
//! node. serde_yaml has already accepted the text by then; should `marked-yaml` refuse it
//! (it does not do anchors), errors are still reported, just without a caret.

use marked_yaml::{LoaderOptions, Node};
use miette::SourceSpan;

use super::error::SourceFile;

/// One step of a path into a YAML document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

impl std::fmt::Display for PathSeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathSeg::Key(k) => write!(f, "/{k}"),
            PathSeg::Index(i) => write!(f, "/{i}"),
        }
    }
}

/// Builds a path: `path!["agents", 3, "depends_on"]`.
#[macro_export]
#[doc(hidden)]
macro_rules! path {
    ($($seg:expr),* $(,)?) => {
        [$($crate::config::locate::PathSeg::from($seg)),*]
    };
}

impl From<&str> for PathSeg {
    fn from(key: &str) -> Self {
        PathSeg::Key(key.to_string())
    }
}

impl From<String> for PathSeg {
    fn from(key: String) -> Self {
        PathSeg::Key(key)
    }
}

impl From<usize> for PathSeg {
    fn from(index: usize) -> Self {
        PathSeg::Index(index)
    }
}

/// Parses a JSON Pointer (`/agents/0/name`) as produced by the schema validator.
pub fn parse_pointer(pointer: &str) -> Vec<PathSeg> {
    pointer
        .split('/')
        .skip(1)
        .map(|raw| {
            let seg = raw.replace("~1", "/").replace("~0", "~");
            match seg.parse::<usize>() {
                Ok(i) => PathSeg::Index(i),
                Err(_) => PathSeg::Key(seg),
            }
        })
        .collect()
}

/// Finds spans in one file. The second parse happens on first use only, so a valid file
/// costs nothing extra.
pub struct Locator<'a> {
    file: &'a SourceFile,
    root: std::cell::OnceCell<Option<Node>>,
    /// Byte offset of the start of every line, so that a position costs a lookup rather
    /// than a walk through the text (thousands of errors in a big file stay cheap).
    line_starts: std::cell::OnceCell<Vec<usize>>,
}

impl<'a> Locator<'a> {
    pub fn new(file: &'a SourceFile) -> Self {
        Locator {
            file,
            root: std::cell::OnceCell::new(),
            line_starts: std::cell::OnceCell::new(),
        }
    }

    /// Byte offset of a 1-based line and a 1-based column counted in characters.
    fn offset_of(&self, line: usize, column: usize) -> usize {
        let text = &*self.file.text;
        let starts = self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let Some(&start) = starts.get(line.saturating_sub(1)) else {
            return text.len();
        };
        let rest = &text[start..];
        let line_end = rest.find('\n').unwrap_or(rest.len());
        start
            + rest[..line_end]
                .char_indices()
                .nth(column.saturating_sub(1))
                .map_or(line_end, |(i, _)| i)
    }

    fn root(&self) -> Option<&Node> {
        self.root
            .get_or_init(|| {
                let parse = |text: &str| {
                    let options = LoaderOptions::default().error_on_duplicate_keys(false);
                    // marked-yaml asserts on event orders it does not expect; the text was
                    // already accepted by serde_yaml, so a panic here only costs the caret.
                    std::panic::catch_unwind(|| {
                        marked_yaml::parse_yaml_with_options(0, text, options).ok()
                    })
                    .ok()
                    .flatten()
                };
                let text = &*self.file.text;
                parse(text).or_else(|| {
                    (text.contains('&') || text.contains('*') || text.contains('!'))
                        .then(|| parse(&without_anchors(text)))
                        .flatten()
                })
            })
            .as_ref()
    }

    fn node(&self, path: &[PathSeg]) -> Option<&Node> {
        let mut node = self.root()?;
        for seg in path {
            node = match (seg, node) {
                (PathSeg::Key(k), Node::Mapping(m)) => m.get_node(k)?,
                (PathSeg::Index(i), Node::Sequence(s)) => s.get_node(*i)?,
                (PathSeg::Index(i), Node::Mapping(m)) => m.get_node(&i.to_string())?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// Span of the key of the last path segment (`name` in `name: x`).
    pub fn key_span(&self, path: &[PathSeg]) -> Option<SourceSpan> {
        let (PathSeg::Key(last), parent) = path.split_last()? else {
            return self.value_span(path);
        };
        let Node::Mapping(map) = self.node(parent)? else {
            return None;
        };
        let (key, _) = map.iter().find(|(k, _)| k.as_str() == last)?;
        let start = key.span().start()?;
        let offset = self.offset_of(start.line(), start.column());
        Some(SourceSpan::new(offset.into(), self.scalar_width(offset)))
    }

    /// Span of the value at `path`: the scalar itself, or for a mapping or a list the key
    /// that introduces it (a caret under a whole block would say less).
    pub fn value_span(&self, path: &[PathSeg]) -> Option<SourceSpan> {
        let node = self.node(path)?;
        match node {
            Node::Scalar(scalar) => {
                let start = scalar.span().start()?;
                let offset = self.offset_of(start.line(), start.column());
                let value = scalar.as_str();
                let width = if !value.is_empty() && self.file.text[offset..].starts_with(value) {
                    value.len()
                } else {
                    self.scalar_width(offset)
                };
                Some(SourceSpan::new(offset.into(), width))
            }
            _ => {
                if let Some(PathSeg::Key(_)) = path.last() {
                    return self.key_span(path);
                }
                let start = node.span().start()?;
                let offset = self.offset_of(start.line(), start.column());
                Some(SourceSpan::new(offset.into(), self.scalar_width(offset)))
            }
        }
    }

    /// Span of the value if present, else of the closest ancestor that exists. When the
    /// text cannot be parsed for positions at all (YAML that marked-yaml refuses, such as
    /// a mapping as a key), the keys of the path are looked for in the text instead, so
    /// that every error still points somewhere near its cause.
    pub fn nearest_span(&self, path: &[PathSeg]) -> Option<SourceSpan> {
        if self.root().is_none() {
            return self.textual_span(path);
        }
        (0..=path.len()).rev().find_map(|n| {
            self.value_span(&path[..n])
                .filter(|s| !s.is_empty() || n == 0)
        })
    }

    /// The keys of `path` found in order in the text (`key:` at the start of a line, after
    /// `- `, `{` or `, `), the last one found; else the first line with content.
    fn textual_span(&self, path: &[PathSeg]) -> Option<SourceSpan> {
        let text = &*self.file.text;
        let mut from = 0;
        let mut found = None;
        for seg in path {
            let PathSeg::Key(key) = seg else { continue };
            let needle = format!("{key}:");
            let hit = text[from..]
                .match_indices(&needle)
                .map(|(i, _)| from + i)
                .find(|&i| {
                    let before = text[..i].trim_end_matches(' ');
                    before.is_empty()
                        || before.ends_with('\n')
                        || before.ends_with('-')
                        || before.ends_with('{')
                        || before.ends_with(',')
                });
            match hit {
                Some(i) => {
                    found = Some(SourceSpan::new(i.into(), key.len().max(1)));
                    from = i + needle.len();
                }
                None => break,
            }
        }
        found.or_else(|| {
            let mut offset = 0;
            for line in text.split_inclusive('\n') {
                let trimmed = line.trim();
                if !trimmed.is_empty() && !trimmed.starts_with('#') {
                    let indent = line.len() - line.trim_start().len();
                    return Some(SourceSpan::new(
                        (offset + indent).into(),
                        trimmed.len().max(1),
                    ));
                }
                offset += line.len();
            }
            None
        })
    }

    /// Where the text of a scalar value starts, and whether it is a block scalar (`|`,
    /// `>`), whose lines all share one indentation, so template errors can be mapped line by
    /// line. marked-yaml marks a block scalar at its first content line.
    pub fn block_content_start(&self, path: &[PathSeg]) -> Option<(usize, bool)> {
        let Node::Scalar(scalar) = self.node(path)? else {
            return None;
        };
        let start = scalar.span().start()?;
        let offset = self.offset_of(start.line(), start.column());
        let text = &*self.file.text;
        let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let previous = text[..line_start.saturating_sub(1)]
            .rsplit('\n')
            .next()
            .unwrap_or("");
        let indicator = previous
            .split(" #")
            .next()
            .unwrap_or("")
            .trim_end()
            .trim_end_matches(|c: char| c == '-' || c == '+' || c.is_ascii_digit());
        let block = text[line_start..offset].trim().is_empty()
            && (indicator.ends_with('|') || indicator.ends_with('>'));
        let quoted = text[offset..].starts_with('"') || text[offset..].starts_with('\'');
        Some((offset + usize::from(quoted && !block), block))
    }

    /// Width of the text starting at `offset` up to the end of its line, less a trailing
    /// comment and whitespace: the scalar as the user sees it.
    fn scalar_width(&self, offset: usize) -> usize {
        let rest = &self.file.text[offset.min(self.file.text.len())..];
        let line = &rest[..rest.find('\n').unwrap_or(rest.len())];
        let line = if line.starts_with('"') || line.starts_with('\'') {
            let quote = line.as_bytes()[0] as char;
            match line[1..].find(quote) {
                Some(end) => &line[..end + 2],
                None => line,
            }
        } else {
            let code = line.find(" #").map_or(line, |i| &line[..i]);
            // `key: value` on one line: a key span stops at the colon.
            code.find(": ").map_or(code, |i| &code[..i])
        };
        let line = line.trim_end();
        let line = line.strip_suffix(':').unwrap_or(line);
        line.len().max(1)
    }
}

/// The text with anchors and tags blanked and aliases made plain scalars, byte for byte the
/// same length, for marked-yaml, which refuses all three. Every span it finds is then a
/// span of the real text; a path through an alias stops at the alias, which is where the
/// caret goes. Only a `&`, `!` or `*` that starts a token is touched; one inside a string
/// or a block scalar may be changed too, which moves no offsets and so costs nothing.
fn without_anchors(text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let mut i = 0;
    while i < bytes.len() {
        let starts_token = i == 0
            || matches!(
                bytes[i - 1],
                b' ' | b'\t' | b'\n' | b'\r' | b'[' | b'{' | b','
            );
        match bytes[i] {
            b'&' | b'!' if starts_token => {
                while i < bytes.len()
                    && !matches!(
                        bytes[i],
                        b' ' | b'\t' | b'\n' | b'\r' | b',' | b'[' | b']' | b'{' | b'}'
                    )
                {
                    // Only ASCII bytes are replaced, so the text stays UTF-8.
                    if bytes[i].is_ascii() {
                        bytes[i] = b' ';
                    }
                    i += 1;
                }
                continue;
            }
            b'*' if starts_token => bytes[i] = b'_',
            _ => {}
        }
        i += 1;
    }
    String::from_utf8(bytes).expect("only ASCII bytes were replaced, by ASCII bytes")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn file(text: &str) -> SourceFile {
        SourceFile::new(PathBuf::from("t.yaml"), "t.yaml".into(), text)
    }

    fn at(file: &SourceFile, span: SourceSpan) -> (usize, &str) {
        (
            file.line_of(span.offset()),
            &file.text[span.offset()..span.offset() + span.len()],
        )
    }

    #[test]
    fn locates_keys_values_and_list_items() {
        let f = file(
            "name: x\nagents:\n  - name: a\n    depends_on: [b, \"c d\"]\n  - name: b # the second\n",
        );
        let loc = Locator::new(&f);
        assert_eq!(at(&f, loc.key_span(&path!["name"]).unwrap()), (1, "name"));
        assert_eq!(at(&f, loc.value_span(&path!["name"]).unwrap()), (1, "x"));
        assert_eq!(
            at(
                &f,
                loc.value_span(&path!["agents", 0, "depends_on", 1])
                    .unwrap()
            ),
            (4, "\"c d\"")
        );
        assert_eq!(
            at(&f, loc.value_span(&path!["agents", 1, "name"]).unwrap()),
            (5, "b")
        );
        assert_eq!(
            at(
                &f,
                loc.value_span(&path!["agents", 0, "depends_on"]).unwrap()
            ),
            (4, "depends_on")
        );
    }

    #[test]
    fn nearest_span_falls_back_to_parent() {
        let f = file("name: x\nagents:\n  - name: a\n");
        let loc = Locator::new(&f);
        let span = loc.nearest_span(&path!["agents", 0, "missing"]).unwrap();
        assert_eq!(f.line_of(span.offset()), 3);
    }

    #[test]
    fn block_scalar_content_start() {
        let f = file("prompt: |\n    hello {{ x\n");
        let loc = Locator::new(&f);
        let (offset, block) = loc.block_content_start(&path!["prompt"]).unwrap();
        assert!(block);
        assert!(f.text[offset..].starts_with("hello"));
    }

    #[test]
    fn files_with_anchors_are_located() {
        let f = file("base: &b {x: 1}\nagents:\n  - name: a\n    retries: *b\n");
        let loc = Locator::new(&f);
        assert_eq!(
            at(&f, loc.value_span(&path!["agents", 0, "retries"]).unwrap()),
            (4, "*b")
        );
        assert_eq!(at(&f, loc.key_span(&path!["base"]).unwrap()), (1, "base"));
    }

    #[test]
    fn pointers_unescape() {
        assert_eq!(
            parse_pointer("/a~1b/2/c~0"),
            vec![
                PathSeg::Key("a/b".into()),
                PathSeg::Index(2),
                PathSeg::Key("c~".into())
            ]
        );
    }
}
