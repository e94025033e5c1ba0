//! YAML text to a JSON value, within bounds: the one place orc turns YAML into data.
//!
//! serde_yaml's own `Value` expands aliases without limit (a 20 KB file of nested anchors
//! took 2.9 GB to refuse, issue 13), so the text is deserialized straight into a
//! `serde_json::Value` by the visitor below, which counts every node it builds and stops at
//! the first one past the budget. Before that, one pass over the bytes bounds what libyaml
//! allocates on its own (its event list, about 130 bytes per event, is built whole before
//! any visitor runs) and how deep flow brackets nest (its scanner is quadratic in them).
//! Must not: read files, or know about ensembles.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, EnumAccess, Error as _, MapAccess, SeqAccess, VariantAccess};
use serde_json::{Map, Number, Value};

use super::locate::PathSeg;

/// Flow brackets nested deeper than this are refused before parsing: libyaml's time grows
/// with depth times tokens (100,000 `[` take a minute, 1,000 levels over 400,000 items
/// seven seconds). serde_yaml itself stops at 128 levels; this bound leaves room for
/// brackets in text that the pre-scan cannot tell from YAML's.
pub(super) const MAX_FLOW_DEPTH: usize = 256;

/// Most structural marks (`:`, `,`, `-`, `?`, `[`, `{`, line breaks) a file may hold. Every
/// YAML node but the first follows one, so this bounds libyaml's event list (two events per
/// mark at most) before it is built: about 260 bytes a mark at worst, a few MB for real
/// files. A 5,000-agent ensemble has about 40,000; a generated 100,000-agent one (issue 8's
/// benchmark) about 300,000 to 800,000.
pub(super) const MAX_MARKS: usize = 2_000_000;

/// Values that aliases may add beyond what the text itself holds. Anchors for shared
/// settings add a few hundred; an alias bomb adds billions.
pub(super) const MAX_ALIAS_VALUES: usize = 100_000;

/// Deepest nesting of mappings and lists (serde_yaml's own limit, reported as its error).
pub(super) const MAX_DEPTH: usize = 128;

/// A parsed document, and the numbers JSON cannot hold (`.inf`, `.nan`), which became
/// `null` at their paths so that the checks can say where they were.
#[derive(Debug)]
pub(super) struct Parsed {
    pub value: Value,
    pub non_finite: Vec<(Vec<PathSeg>, f64)>,
}

/// Why the text was refused.
#[derive(Debug)]
pub(super) enum YamlProblem {
    /// Too big or too deep before or while building: what, and the byte offset it was
    /// noticed at when known.
    Limit {
        message: String,
        offset: Option<usize>,
    },
    /// libyaml refused the text (or found a duplicate key).
    Syntax(serde_yaml::Error),
}

/// Parses one YAML document into JSON, refusing anything past the bounds above.
pub(super) fn parse(text: &str) -> Result<Parsed, YamlProblem> {
    let marks = prescan(text)?;
    let budget = Budget {
        nodes: Cell::new(0),
        limit: 2 * marks + MAX_ALIAS_VALUES + 16,
        exceeded: Cell::new(false),
        non_finite: std::cell::RefCell::new(Vec::new()),
    };
    let builder = Builder {
        budget: &budget,
        trail: Trail::Root,
    };
    match builder.deserialize(serde_yaml::Deserializer::from_str(text)) {
        Ok(value) => Ok(Parsed {
            value,
            non_finite: budget.non_finite.into_inner(),
        }),
        Err(e) if budget.exceeded.get() => Err(YamlProblem::Limit {
            message: format!("aliases expand to more than {MAX_ALIAS_VALUES} values"),
            offset: e.location().map(|l| l.index()),
        }),
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
            Err(YamlProblem::Limit {
                message: format!("more than {MAX_DEPTH} levels of nesting"),
                offset: e.location().map(|l| l.index()),
            })
        }
        Err(e) if e.to_string().starts_with("repetition limit exceeded") => {
            Err(YamlProblem::Limit {
                message: format!("aliases expand to more than {MAX_ALIAS_VALUES} values"),
                offset: e.location().map(|l| l.index()),
            })
        }
        Err(e) => Err(YamlProblem::Syntax(e)),
    }
}

/// Counts structural marks, then checks flow nesting: both before libyaml sees the text.
fn prescan(text: &str) -> Result<usize, YamlProblem> {
    let marks = count_marks(text.as_bytes())?;
    if let Some(offset) = flow_nesting_beyond(text.as_bytes(), MAX_FLOW_DEPTH) {
        return Err(YamlProblem::Limit {
            message: format!("more than {MAX_FLOW_DEPTH} nested `[` or `{{`"),
            offset: Some(offset),
        });
    }
    Ok(marks)
}

fn is_mark(b: u8) -> bool {
    matches!(b, b':' | b',' | b'-' | b'?' | b'[' | b'{' | b'\n')
}

/// Marks are counted everywhere, in quotes and comments too, so the count is an upper
/// bound whatever the quoting.
fn count_marks(bytes: &[u8]) -> Result<usize, YamlProblem> {
    let mut marks = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        if is_mark(b) {
            marks += 1;
            if marks > MAX_MARKS {
                return Err(YamlProblem::Limit {
                    message: format!(
                        "more than {MAX_MARKS} keys, list items and lines (a bound that keeps parsing within memory)"
                    ),
                    offset: Some(i),
                });
            }
        }
    }
    Ok(marks)
}

/// Offset of the first `[` or `{` nested deeper than `limit`.
///
/// libyaml's time grows with flow depth times tokens, so the depth is bounded before it
/// parses, and no text may hide brackets from this count: where this scan and YAML might
/// disagree, it counts brackets YAML would not, never the reverse. A quote starts a skipped
/// string only where YAML must read one (after `[`, `{`, `,`, or after `:`, `?` and, outside
/// brackets, `-` followed by a blank) and only when it closes on the same line. Comments and
/// strings spanning lines are not skipped but counted one-sided: a bracket in them opens
/// depth and closes only depth they opened, so a `]` in a comment cannot hide a real `[`.
fn flow_nesting_beyond(bytes: &[u8], limit: usize) -> Option<usize> {
    /// A stretch that YAML may read as text, and the depth opened inside it.
    struct Stretch {
        until: Option<u8>,
        opened: usize,
    }
    let mut depth = 0usize;
    // The last significant byte (not blank, not in a comment) and whether a blank followed
    // it; 0 stands for the start of the document.
    let mut last = 0u8;
    let mut blank_after = false;
    let mut stretch: Option<Stretch> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(s) = &mut stretch {
            let end = match s.until {
                // A comment ends at the end of its line.
                None => b == b'\n',
                Some(b'"') if b == b'\\' => {
                    i += 2;
                    continue;
                }
                Some(b'\'') if b == b'\'' && bytes.get(i + 1) == Some(&b'\'') => {
                    i += 2;
                    continue;
                }
                Some(q) => b == q,
            };
            if end {
                blank_after = s.until.is_none();
                if s.until.is_some() {
                    last = b;
                }
                stretch = None;
            } else if b == b'[' || b == b'{' {
                s.opened += 1;
                depth += 1;
                if depth > limit {
                    return Some(i);
                }
            } else if (b == b']' || b == b'}') && s.opened > 0 {
                s.opened -= 1;
                depth -= 1;
            }
            i += 1;
            continue;
        }
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => {
                blank_after = true;
                i += 1;
                continue;
            }
            b'#' if i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'\n' | b'\r') => {
                stretch = Some(Stretch {
                    until: None,
                    opened: 0,
                });
                i += 1;
                continue;
            }
            b'"' | b'\'' => {
                let starts = match last {
                    0 | b'[' | b'{' | b',' => true,
                    b':' | b'?' => blank_after,
                    b'-' => blank_after && depth == 0,
                    _ => false,
                };
                if starts {
                    match closing_quote(bytes, i) {
                        Some(end) => i = end,
                        None => {
                            stretch = Some(Stretch {
                                until: Some(b),
                                opened: 0,
                            });
                            i += 1;
                            continue;
                        }
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        last = b;
        blank_after = false;
        i += 1;
    }
    None
}

/// Offset of the quote closing the one at `open`, when it is on the same line.
fn closing_quote(bytes: &[u8], open: usize) -> Option<usize> {
    let quote = bytes[open];
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' | b'\r' => return None,
            b'\\' if quote == b'"' => i += 1,
            b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
            c if c == quote => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Nodes built so far against the limit; set `exceeded` when refusing so the caller can tell
/// the budget error from libyaml's.
struct Budget {
    nodes: Cell<usize>,
    limit: usize,
    exceeded: Cell<bool>,
    non_finite: std::cell::RefCell<Vec<(Vec<PathSeg>, f64)>>,
}

/// Where a node sits, as a chain of borrowed steps (no allocation per node).
#[derive(Clone, Copy)]
enum Trail<'a> {
    Root,
    Key(&'a Trail<'a>, &'a str),
    Index(&'a Trail<'a>, usize),
}

impl Trail<'_> {
    fn to_path(self) -> Vec<PathSeg> {
        let mut out = Vec::new();
        let mut at = self;
        loop {
            match at {
                Trail::Root => break,
                Trail::Key(parent, key) => {
                    out.push(PathSeg::Key(key.to_string()));
                    at = *parent;
                }
                Trail::Index(parent, i) => {
                    out.push(PathSeg::Index(i));
                    at = *parent;
                }
            }
        }
        out.reverse();
        out
    }
}

#[derive(Clone, Copy)]
struct Builder<'a> {
    budget: &'a Budget,
    trail: Trail<'a>,
}

impl Builder<'_> {
    fn count<E: serde::de::Error>(&self) -> Result<(), E> {
        let n = self.budget.nodes.get() + 1;
        self.budget.nodes.set(n);
        if n > self.budget.limit {
            self.budget.exceeded.set(true);
            return Err(E::custom("too many values"));
        }
        Ok(())
    }

    fn float<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.count()?;
        Ok(match Number::from_f64(v) {
            Some(n) => Value::Number(n),
            None => {
                self.budget
                    .non_finite
                    .borrow_mut()
                    .push((self.trail.to_path(), v));
                Value::Null
            }
        })
    }
}

impl<'de> DeserializeSeed<'de> for Builder<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Builder<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::from(v))
    }

    // Integers past 64 bits (`2^64`) are kept as the nearest float, so range checks can
    // say "must be at most" instead of failing to parse.
    #[allow(clippy::cast_precision_loss)]
    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Value, E> {
        self.float(v as f64)
    }

    #[allow(clippy::cast_precision_loss)]
    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Value, E> {
        self.float(v as f64)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.float(v)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut items = Vec::new();
        loop {
            let trail = Trail::Index(&self.trail, items.len());
            let item = Builder {
                budget: self.budget,
                trail,
            };
            match seq.next_element_seed(item)? {
                Some(v) => items.push(v),
                None => break,
            }
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(self)? {
            let key = match key {
                Value::String(s) => s,
                Value::Null => "null".to_string(),
                other => other.to_string(),
            };
            if out.contains_key(&key) {
                return Err(A::Error::custom(format_args!(
                    "duplicate entry with key \"{key}\""
                )));
            }
            let value = map.next_value_seed(Builder {
                budget: self.budget,
                trail: Trail::Key(&self.trail, &key),
            })?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }

    // A tagged node (`!custom value`): the tag is dropped, as orc's formats use none.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (_tag, contents): (String, _) = data.variant()?;
        contents.newtype_variant_seed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(text: &str) -> String {
        match parse(text) {
            Err(YamlProblem::Limit { message, .. }) => message,
            other => panic!("expected a limit, got {other:?}"),
        }
    }

    #[test]
    fn plain_documents_become_json() {
        let parsed = parse("a: 1\nb: [x, 2.5, true, ~]\n3: !tag {c: d}\n").unwrap();
        assert_eq!(
            parsed.value,
            serde_json::json!({"a": 1, "b": ["x", 2.5, true, null], "3": {"c": "d"}})
        );
    }

    #[test]
    fn non_finite_numbers_are_recorded_with_their_path() {
        let parsed = parse("a: [1, .inf]\nb: {c: .nan}\n").unwrap();
        assert_eq!(parsed.non_finite.len(), 2);
        assert_eq!(
            parsed.non_finite[0].0,
            vec![PathSeg::Key("a".into()), PathSeg::Index(1)]
        );
        assert!(parsed.non_finite[1].1.is_nan());
    }

    #[test]
    fn huge_integers_become_floats() {
        let parsed = parse("a: 18446744073709551616\n").unwrap();
        assert_eq!(
            parsed.value["a"].as_f64(),
            Some(18_446_744_073_709_551_616.0)
        );
    }

    #[test]
    fn duplicate_keys_are_syntax_errors() {
        assert!(matches!(parse("a: 1\na: 2\n"), Err(YamlProblem::Syntax(_))));
    }

    #[test]
    fn shared_anchors_are_fine() {
        let parsed = parse("base: &b {x: 1}\nuse: *b\n").unwrap();
        assert_eq!(parsed.value["use"], serde_json::json!({"x": 1}));
    }

    #[test]
    fn alias_bombs_stop_at_the_budget() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        assert!(limit(&text).contains("aliases expand"));
    }

    #[test]
    fn wide_anchors_aliased_many_times_stop_at_the_budget() {
        let big = vec!["ab"; 3000].join(", ");
        let refs = vec!["*big"; 3000].join(", ");
        let text = format!("big: &big [{big}]\nrefs: [{refs}]\n");
        assert!(limit(&text).contains("aliases expand"));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(limit(&text).contains("nested"));
        let text = format!("a: {}{}", "[".repeat(200), "]".repeat(200));
        assert!(limit(&text).contains("levels of nesting"));
        let text = format!("a:\n{}x\n", "  - ".repeat(300));
        assert!(limit(&text).contains("levels of nesting"));
    }

    #[test]
    fn too_many_marks_are_refused_before_parsing() {
        let text = format!("a: [{}]\n", vec!["1"; MAX_MARKS + 1].join(","));
        assert!(limit(&text).contains("keys, list items and lines"));
    }

    /// Each of these hides 300 real levels of `[` behind text the scan might take for a
    /// string or a comment (issue 13: the first took minutes to parse).
    #[test]
    fn brackets_cannot_hide_behind_quotes_or_comments() {
        let deep = format!("{}x{}", "[".repeat(300), "]".repeat(300));
        let cases = [
            format!("a: x 'y\nb: {deep}\n"),
            format!("a: |\n  - 'x\nb: {deep}\nc: '\n"),
            format!("a: [{}]\n", "[ #]\n".repeat(300)),
            format!("a: [\"\n{}\", {deep}]\n", "]".repeat(300)),
            format!("a: [&x \"y #\", {deep}]\n"),
            format!("a: [{}]\n", "[ \"]\" ".repeat(300)),
        ];
        for text in cases {
            assert!(
                flow_nesting_beyond(text.as_bytes(), MAX_FLOW_DEPTH).is_some(),
                "{text:.80}"
            );
        }
    }

    #[test]
    fn commented_out_lists_do_not_add_up() {
        let text = "# depends_on: [a, b]\n".repeat(1000) + "a: 'it''s [' # [x]\n";
        assert_eq!(flow_nesting_beyond(text.as_bytes(), MAX_FLOW_DEPTH), None);
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_nest() {
        let text = format!(
            "a: \"{}\" # {}\nb: '{}'\n",
            "[".repeat(2000),
            "{}".repeat(2000),
            "[".repeat(2000)
        );
        assert!(parse(&text).is_ok());
    }
}
