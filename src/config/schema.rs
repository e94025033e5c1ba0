//! JSON Schemas generated from the `*Spec` types, and the shape check that reports every
//! mismatch of a document against them at once.
//!
//! The schema is the contract editors see (`orc schema`, `schemas/*.json`); validating with
//! it before serde runs is what lets orc report all shape errors of a file together, each
//! with the JSON Pointer of its value (serde stops at the first).

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;

use super::error::ConfigErrorKind;
use super::locate::{PathSeg, parse_pointer};
use super::spec::{EnsembleSpec, PricesFileSpec, ProfilesFileSpec};
use crate::suggest::closest;

/// Which of our file formats a schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaKind {
    /// An ensemble file.
    Ensemble,
    /// A file of model profiles (`profiles/*.yaml`, `config.yaml`).
    Profiles,
    /// The price table (`prices.yaml`).
    Prices,
}

impl SchemaKind {
    pub fn file_name(self) -> &'static str {
        match self {
            SchemaKind::Ensemble => "ensemble.schema.json",
            SchemaKind::Profiles => "profiles.schema.json",
            SchemaKind::Prices => "prices.schema.json",
        }
    }
}

/// The schema as JSON.
pub fn schema(kind: SchemaKind) -> &'static Value {
    static ENSEMBLE: OnceLock<Value> = OnceLock::new();
    static PROFILES: OnceLock<Value> = OnceLock::new();
    static PRICES: OnceLock<Value> = OnceLock::new();
    match kind {
        SchemaKind::Ensemble => ENSEMBLE.get_or_init(generate::<EnsembleSpec>),
        SchemaKind::Profiles => PROFILES.get_or_init(generate::<ProfilesFileSpec>),
        SchemaKind::Prices => PRICES.get_or_init(generate::<PricesFileSpec>),
    }
}

/// The schema as the pretty-printed text committed under `schemas/`.
pub fn schema_text(kind: SchemaKind) -> String {
    let mut text = serde_json::to_string_pretty(schema(kind)).expect("a JSON value serializes");
    text.push('\n');
    text
}

fn generate<T: schemars::JsonSchema>() -> Value {
    let mut value = schemars::schema_for!(T).to_value();
    strip_null(&mut value);
    value
}

/// schemars lets every `Option` field be `null`, which would hide a misspelt key inside an
/// optional section behind one vague "anyOf" error. An absent key already means "unset", so
/// we drop the `null` alternative: `defaults: 5` and `defaults: {typo: 1}` then get precise
/// errors.
fn strip_null(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".into(), only);
                }
            }
            for key in ["anyOf", "oneOf"] {
                if let Some(Value::Array(variants)) = map.get_mut(key) {
                    variants.retain(|v| v.get("type").is_none_or(|t| t != "null"));
                    if variants.len() == 1 {
                        let only = variants.remove(0);
                        map.remove(key);
                        if let Value::Object(inner) = only {
                            for (k, v) in inner {
                                map.entry(k).or_insert(v);
                            }
                        }
                    }
                }
            }
            map.values_mut().for_each(strip_null);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null),
        _ => {}
    }
}

fn validator(kind: SchemaKind) -> &'static jsonschema::Validator {
    static ENSEMBLE: OnceLock<jsonschema::Validator> = OnceLock::new();
    static PROFILES: OnceLock<jsonschema::Validator> = OnceLock::new();
    static PRICES: OnceLock<jsonschema::Validator> = OnceLock::new();
    let cell = match kind {
        SchemaKind::Ensemble => &ENSEMBLE,
        SchemaKind::Profiles => &PROFILES,
        SchemaKind::Prices => &PRICES,
    };
    cell.get_or_init(|| jsonschema::validator_for(schema(kind)).expect("our own schema compiles"))
}

/// Top-level keys of llm-orc ensembles that orc does not use; only so that they are not
/// mistaken for typos of orc's keys (`serves` is not a misspelt `tests`).
const LLM_ORC_TOP_LEVEL_KEYS: [&str; 10] = [
    "validation",
    "test_mode",
    "raw_output",
    "topaz_skill",
    "serves",
    "seat_contract",
    "output_schema",
    "output_substrate",
    "output_retention",
    "calibration_substrate_access",
];

/// A shape problem: what is wrong, where, and whether the caret belongs under the key.
#[derive(Debug)]
pub(super) struct SchemaIssue {
    pub path: Vec<PathSeg>,
    pub kind: ConfigErrorKind,
    pub at_key: bool,
}

/// Every mismatch of `instance` against the schema, in document order.
pub(super) fn check(kind: SchemaKind, instance: &Value) -> Vec<SchemaIssue> {
    let root = schema(kind);
    let mut issues = Vec::new();
    for error in validator(kind).iter_errors(instance) {
        let path = parse_pointer(error.instance_path().as_str());
        let found = error.instance();
        let key = key_name(&path);
        match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let valid = properties_at(root, &path);
                for extra in unexpected {
                    let mut key_path = path.clone();
                    key_path.push(PathSeg::Key(extra.clone()));
                    if path.is_empty() && kind == SchemaKind::Ensemble {
                        // llm-orc ignores top-level keys it does not read (`serves`,
                        // `seat_contract`, ...), so for its files to run as they are these
                        // are warnings; a near miss of a real key still gets its suggestion.
                        let known_elsewhere = LLM_ORC_TOP_LEVEL_KEYS.contains(&extra.as_str());
                        issues.push(SchemaIssue {
                            path: key_path,
                            kind: ConfigErrorKind::IgnoredTopLevelKey {
                                key: extra.clone(),
                                suggestion: closest(extra, valid.iter().map(String::as_str))
                                    .filter(|_| !known_elsewhere)
                                    .map(str::to_string),
                            },
                            at_key: true,
                        });
                        continue;
                    }
                    issues.push(SchemaIssue {
                        path: key_path,
                        kind: ConfigErrorKind::UnknownKey {
                            key: extra.clone(),
                            context: context(instance, &path),
                            suggestion: closest(extra, valid.iter().map(String::as_str))
                                .map(str::to_string),
                            valid: valid.clone(),
                        },
                        at_key: true,
                    });
                }
            }
            ValidationErrorKind::Required { property } => issues.push(SchemaIssue {
                kind: ConfigErrorKind::MissingKey {
                    key: property.as_str().unwrap_or_default().to_string(),
                    context: context(instance, &path),
                },
                path,
                at_key: false,
            }),
            ValidationErrorKind::Type { kind } => {
                let expected = match kind {
                    TypeKind::Single(t) => describe_type(&t.to_string()),
                    TypeKind::Multiple(set) => set
                        .iter()
                        .map(|t| describe_type(&t.to_string()))
                        .collect::<Vec<_>>()
                        .join(" or "),
                };
                issues.push(SchemaIssue {
                    kind: ConfigErrorKind::WrongType {
                        key,
                        expected,
                        found: describe_value(found),
                    },
                    path,
                    at_key: false,
                });
            }
            ValidationErrorKind::Enum { options } => {
                let valid: Vec<String> = options
                    .as_array()
                    .map(|o| {
                        o.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                issues.push(invalid_value(key, found, valid, path));
            }
            // A one-value enum (`input_scope: dependencies`) is a `const`.
            ValidationErrorKind::Constant { expected_value } => {
                let valid = expected_value
                    .as_str()
                    .map(String::from)
                    .into_iter()
                    .collect();
                issues.push(invalid_value(key, found, valid, path));
            }
            ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. } => {
                let sub = subschema(root, &path);
                let consts = sub.map(const_variants).unwrap_or_default();
                if consts.is_empty() {
                    let expected =
                        sub.map_or_else(|| "something else".to_string(), describe_schema);
                    issues.push(SchemaIssue {
                        kind: ConfigErrorKind::WrongType {
                            key,
                            expected,
                            found: describe_value(found),
                        },
                        path,
                        at_key: false,
                    });
                } else {
                    issues.push(invalid_value(key, found, consts, path));
                }
            }
            ValidationErrorKind::Pattern { .. } => issues.push(SchemaIssue {
                kind: ConfigErrorKind::InvalidName {
                    name: found.as_str().unwrap_or_default().to_string(),
                },
                path,
                at_key: false,
            }),
            other => {
                let problem = match other {
                    ValidationErrorKind::Minimum { limit } => {
                        format!("must be at least {}", show_limit(limit))
                    }
                    ValidationErrorKind::Maximum { limit } => {
                        format!("must be at most {}", show_limit(limit))
                    }
                    ValidationErrorKind::MinItems { limit } => {
                        format!(
                            "needs at least {limit} entr{}",
                            if *limit == 1 { "y" } else { "ies" }
                        )
                    }
                    ValidationErrorKind::MinLength { .. } => "must not be empty".to_string(),
                    _ => error.to_string(),
                };
                issues.push(SchemaIssue {
                    kind: ConfigErrorKind::OutOfRange { key, problem },
                    path,
                    at_key: false,
                });
            }
        }
    }
    issues
}

/// A bound as `bounds` writes it, so that the schema and the semantic checks word it alike.
fn show_limit(limit: &Value) -> String {
    match limit {
        Value::Number(n) if n.is_f64() => n
            .as_f64()
            .map_or_else(|| n.to_string(), super::bounds::show),
        other => other.to_string(),
    }
}

fn invalid_value(
    key: String,
    found: &Value,
    valid: Vec<String>,
    path: Vec<PathSeg>,
) -> SchemaIssue {
    let value = match found {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    SchemaIssue {
        kind: ConfigErrorKind::InvalidValue {
            suggestion: closest(&value, valid.iter().map(String::as_str)).map(str::to_string),
            key,
            value,
            valid,
        },
        path,
        at_key: false,
    }
}

/// `depends_on[1]`, `agents[0]`, `name`: the tail of a path as a user reads it.
pub(super) fn key_name(path: &[PathSeg]) -> String {
    let mut indices = Vec::new();
    for seg in path.iter().rev() {
        match seg {
            PathSeg::Index(i) => indices.push(*i),
            PathSeg::Key(k) => {
                let mut name = k.clone();
                for i in indices.iter().rev() {
                    name.push_str(&format!("[{i}]"));
                }
                return name;
            }
        }
    }
    "document".to_string()
}

/// "agent `security`", "profile `fast`", "`defaults`": where a mapping sits.
fn context(instance: &Value, path: &[PathSeg]) -> Option<String> {
    match path {
        [] => None,
        [PathSeg::Key(section), PathSeg::Index(i)] if section == "agents" => Some(
            instance
                .pointer(&format!("/agents/{i}/name"))
                .and_then(Value::as_str)
                .map_or_else(|| format!("agent #{}", i + 1), |n| format!("agent `{n}`")),
        ),
        [PathSeg::Key(section), PathSeg::Key(name)] if section == "model_profiles" => {
            Some(format!("profile `{name}`"))
        }
        _ => Some(format!("`{}`", key_name(path))),
    }
}

fn describe_type(t: &str) -> String {
    match t {
        "string" => "a string",
        "array" => "a list",
        "object" => "a mapping",
        "integer" => "a whole number",
        "number" => "a number",
        "boolean" => "`true` or `false`",
        "null" => "empty",
        other => other,
    }
    .to_string()
}

pub(super) fn describe_value(value: &Value) -> String {
    match value {
        Value::Null => "nothing".to_string(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("the number `{n}`"),
        Value::String(s) if s.chars().count() <= 40 => format!("the string `{s}`"),
        Value::String(_) => "a string".to_string(),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a mapping".to_string(),
    }
}

fn resolve<'a>(root: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..16 {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(target) => schema = target,
                None => break,
            },
            None => break,
        }
    }
    schema
}

/// The subschema describing the value at `path`, following `$ref`, `properties`, `items`
/// and the first `anyOf`/`oneOf` variant that has the step.
fn subschema<'a>(root: &'a Value, path: &[PathSeg]) -> Option<&'a Value> {
    let mut schema = resolve(root, root);
    for seg in path {
        schema = step(root, schema, seg)?;
    }
    Some(schema)
}

fn step<'a>(root: &'a Value, schema: &'a Value, seg: &PathSeg) -> Option<&'a Value> {
    let direct = match seg {
        PathSeg::Key(k) => schema
            .get("properties")
            .and_then(|p| p.get(k))
            .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object())),
        PathSeg::Index(_) => schema.get("items"),
    };
    if let Some(next) = direct {
        return Some(resolve(root, next));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(variants) = schema.get(key).and_then(Value::as_array) {
            if let Some(found) = variants
                .iter()
                .find_map(|v| step(root, resolve(root, v), seg))
            {
                return Some(found);
            }
        }
    }
    None
}

fn properties_at(root: &Value, path: &[PathSeg]) -> Vec<String> {
    subschema(root, path)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().filter(|k| !k.starts_with('$')).cloned().collect())
        .unwrap_or_default()
}

/// The values of an enum written as `oneOf` of `const`s (how schemars renders documented
/// unit variants) or as a plain `enum`.
fn const_variants(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        out.extend(values.iter().filter_map(|v| v.as_str().map(String::from)));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(variants) = schema.get(key).and_then(Value::as_array) {
            if variants
                .iter()
                .all(|v| v.get("const").is_some() || v.get("enum").is_some())
            {
                for v in variants {
                    out.extend(v.get("const").and_then(Value::as_str).map(String::from));
                    out.extend(const_variants(v));
                }
            }
        }
    }
    out
}

fn describe_schema(schema: &Value) -> String {
    let mut kinds: Vec<String> = Vec::new();
    for key in ["anyOf", "oneOf"] {
        if let Some(variants) = schema.get(key).and_then(Value::as_array) {
            for v in variants {
                let text = if let Some(c) = v.get("const").and_then(Value::as_str) {
                    format!("`{c}`")
                } else if let Some(t) = v.get("type").and_then(Value::as_str) {
                    describe_type(t)
                } else if v.get("$ref").is_some() || v.get("properties").is_some() {
                    describe_type("object")
                } else if let Some(e) = v.get("enum").and_then(Value::as_array) {
                    e.iter()
                        .filter_map(Value::as_str)
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                } else {
                    continue;
                };
                if !kinds.contains(&text) {
                    kinds.push(text);
                }
            }
        }
    }
    if kinds.is_empty() {
        "something else".to_string()
    } else {
        kinds.join(" or ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_sections_are_not_nullable() {
        let text = schema_text(SchemaKind::Ensemble);
        assert!(!text.contains("\"null\""), "{text}");
    }

    #[test]
    fn reports_every_shape_error() {
        let doc = serde_json::json!({
            "name": "x",
            "agents": [
                {"name": "a", "modle": "m"},
                {"name": "b", "retries": "many"},
                {"nam": "c"}
            ]
        });
        let issues = check(SchemaKind::Ensemble, &doc);
        let kinds: Vec<String> = issues.iter().map(|i| i.kind.to_string()).collect();
        assert_eq!(issues.len(), 4, "{kinds:?}");
        assert!(
            kinds
                .iter()
                .any(|k| k == "unknown key `modle` in agent `a`"),
            "{kinds:?}"
        );
        assert!(
            kinds
                .iter()
                .any(|k| k.starts_with("`retries` must be a whole number")),
            "{kinds:?}"
        );
    }

    #[test]
    fn unknown_provider_suggests() {
        let doc = serde_json::json!({"model_profiles": {"p": {"provider": "opnai"}}});
        let issues = check(SchemaKind::Profiles, &doc);
        assert_eq!(issues.len(), 1);
        match &issues[0].kind {
            ConfigErrorKind::InvalidValue { suggestion, .. } => {
                assert_eq!(suggestion.as_deref(), Some("openai"));
            }
            other => panic!("{other:?}"),
        }
    }
}
