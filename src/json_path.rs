//! Dotted paths into JSON values (`route`, `report.sections.1.title`), as `input_key`,
//! `when` conditions and `orc test` expectations use them. One walk for all three.

use serde_json::Value;

/// The value at `segments` (object keys, or array indices written as numbers).
pub fn get<S: AsRef<str>>(value: &Value, segments: impl IntoIterator<Item = S>) -> Option<&Value> {
    segments.into_iter().try_fold(value, |v, seg| {
        let seg = seg.as_ref();
        match v {
            Value::Object(m) => m.get(seg),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }
    })
}

/// The value at a dotted path; empty segments are ignored, so `""` is the value itself.
pub fn get_dotted<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    get(value, path.split('.').filter(|s| !s.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_objects_and_arrays() {
        let v = serde_json::json!({"a": {"b": [10, {"c": "x"}]}});
        assert_eq!(get_dotted(&v, "a.b.1.c"), Some(&serde_json::json!("x")));
        assert_eq!(get_dotted(&v, "a.b.0"), Some(&serde_json::json!(10)));
        assert_eq!(get_dotted(&v, "a.z"), None);
        assert_eq!(get_dotted(&v, ""), Some(&v));
    }
}
