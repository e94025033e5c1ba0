//! `when` conditions over dependency outputs, in llm-orc's syntax: `${agent.path}` alone
//! (truthiness) or compared with `==` / `!=` to a literal (`'bug'`, `"bug"`, `bug`, `3`,
//! `true`, `null`). A path that is missing is `null`, so the condition is false (or, with
//! `!=`, true). Pure: parsed at load time, evaluated when the agent becomes ready.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub agent: String,
    pub path: Vec<String>,
    pub compare: Option<(bool, Value)>,
    pub source: String,
}

/// Parses a condition, or says what is wrong with it.
pub fn parse(source: &str) -> Result<Condition, String> {
    let text = source.trim();
    let rest = text
        .strip_prefix("${")
        .ok_or_else(|| "a condition starts with `${agent.path}`".to_string())?;
    let close = rest
        .find('}')
        .ok_or_else(|| "`${` is not closed with `}`".to_string())?;
    let reference = rest[..close].trim();
    let mut parts = reference.split('.').map(str::trim);
    let agent = parts
        .next()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| "`${}` names no agent".to_string())?;
    let path: Vec<String> = parts.map(String::from).collect();
    if path.iter().any(String::is_empty) {
        return Err(format!("`{reference}` has an empty path segment"));
    }
    let tail = rest[close + 1..].trim();
    let compare = if tail.is_empty() {
        None
    } else {
        let (equal, literal) = if let Some(l) = tail.strip_prefix("==") {
            (true, l)
        } else if let Some(l) = tail.strip_prefix("!=") {
            (false, l)
        } else {
            return Err(format!(
                "expected `==` or `!=` after `${{{reference}}}`, found `{tail}`"
            ));
        };
        Some((equal, literal_value(literal.trim())?))
    };
    Ok(Condition {
        agent: agent.to_string(),
        path,
        compare,
        source: text.to_string(),
    })
}

fn literal_value(text: &str) -> Result<Value, String> {
    if text.is_empty() {
        return Err("a comparison needs a value".into());
    }
    for q in ['\'', '"'] {
        if let Some(inner) = text.strip_prefix(q) {
            return inner
                .strip_suffix(q)
                .map(|s| Value::String(s.to_string()))
                .ok_or_else(|| format!("unclosed quote in `{text}`"));
        }
    }
    Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())))
}

impl Condition {
    /// Evaluates against the named dependency's output (JSON when it parses, else text).
    pub fn eval(&self, output: Option<&str>) -> bool {
        let root = output
            .map(|o| serde_json::from_str(o).unwrap_or_else(|_| Value::String(o.to_string())));
        let value = root
            .as_ref()
            .and_then(|r| crate::json_path::get(r, &self.path))
            .cloned()
            .unwrap_or(Value::Null);
        match &self.compare {
            None => truthy(&value),
            Some((equal, literal)) => loosely_equal(&value, literal) == *equal,
        }
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty() && s != "false",
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// `3 == '3'` and `'Bug' == 'Bug'`: numbers and strings compare by their text.
fn loosely_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x == y,
        (Value::String(s), other) | (other, Value::String(s)) if !other.is_null() => {
            s.as_str() == other.to_string().as_str()
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_evaluates() {
        let c = parse("${classifier.route} == 'bug'").unwrap();
        assert_eq!(c.agent, "classifier");
        assert!(c.eval(Some(r#"{"route": "bug"}"#)));
        assert!(!c.eval(Some(r#"{"route": "feature"}"#)));
        assert!(!c.eval(Some("not json")));
        let c = parse("${classifier.route} != bug").unwrap();
        assert!(c.eval(Some(r#"{"route": "feature"}"#)));
        let c = parse("${check.ok}").unwrap();
        assert!(c.eval(Some(r#"{"ok": true}"#)));
        assert!(!c.eval(Some(r#"{"ok": false}"#)));
        assert!(!c.eval(Some(r#"{}"#)), "a missing path is false");
        let c = parse("${scores.count} == 3").unwrap();
        assert!(c.eval(Some(r#"{"count": 3}"#)));
        assert!(c.eval(Some(r#"{"count": "3"}"#)));
    }

    #[test]
    fn rejects_malformed() {
        assert!(parse("classifier.route == bug").is_err());
        assert!(parse("${classifier.route} = bug").is_err());
        assert!(parse("${classifier.route").is_err());
        assert!(parse("${a} == 'x").is_err());
    }
}
