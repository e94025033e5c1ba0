//! Reading items out of a model's answer, exactly as the built-in prompt asks for them: one
//! item per line (numbering, bullets and quotes stripped) or a JSON array of strings. Empty,
//! over-long and obviously non-item lines ("Here are 10 ideas:") are rejected and counted.

/// Longest accepted item, in characters.
pub const MAX_ITEM_CHARS: usize = 120;
/// More words than this is a sentence, not an item.
const MAX_ITEM_WORDS: usize = 14;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub items: Vec<String>,
    pub rejected: usize,
}

pub fn parse_items(text: &str) -> Parsed {
    let trimmed = text.trim();
    if trimmed.starts_with('[') {
        if let Ok(serde_json::Value::Array(values)) =
            serde_json::from_str::<serde_json::Value>(trimmed)
        {
            let mut parsed = Parsed::default();
            for v in values {
                let s = match &v {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Object(o) => ["item", "name", "text"]
                        .iter()
                        .find_map(|k| o.get(*k).and_then(|x| x.as_str()).map(String::from)),
                    _ => None,
                };
                match s.and_then(|s| clean(&s)) {
                    Some(item) => parsed.items.push(item),
                    None => parsed.rejected += 1,
                }
            }
            return parsed;
        }
    }
    let mut parsed = Parsed::default();
    for line in trimmed.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with("```") {
            continue;
        }
        match clean(line) {
            Some(item) => parsed.items.push(item),
            None => parsed.rejected += 1,
        }
    }
    parsed
}

/// One candidate line as an item, or `None` when it is not one.
fn clean(line: &str) -> Option<String> {
    let mut s = line.trim();
    // Bullets and numbering: "- x", "* x", "• x", "1. x", "1) x", "(1) x", "#1 x".
    s = s.trim_start_matches(['-', '*', '•', '+', '·']).trim_start();
    let digits = s.chars().take_while(char::is_ascii_digit).count();
    if s.starts_with('(') {
        let inner = s[1..].chars().take_while(char::is_ascii_digit).count();
        if inner > 0 && s[1 + inner..].starts_with(')') {
            s = s[2 + inner..].trim_start();
        }
    } else if s.starts_with('#') && s[1..].starts_with(|c: char| c.is_ascii_digit()) {
        let n = s[1..].chars().take_while(char::is_ascii_digit).count();
        s = s[1 + n..].trim_start_matches(['.', ')', ':']).trim_start();
    } else if digits > 0 && s[digits..].starts_with(['.', ')', ':']) {
        s = s[digits + 1..].trim_start();
    }
    // Emphasis and quotes around the whole item, with trailing punctuation inside or out.
    for _ in 0..2 {
        s = s.trim().trim_end_matches(['.', ',', ';']).trim();
        for wrap in ["**", "__", "`", "\"", "'", "“", "”", "‘", "’"] {
            s = s.strip_prefix(wrap).unwrap_or(s);
            s = s.strip_suffix(wrap).unwrap_or(s);
        }
    }
    let s = s.trim().trim_end_matches(['.', ',', ';']).trim();
    if s.is_empty() || s.ends_with(':') {
        return None;
    }
    let lower = s.to_lowercase();
    const PREAMBLES: [&str; 8] = [
        "here are",
        "here is",
        "sure",
        "certainly",
        "note:",
        "i hope",
        "let me know",
        "as an ai",
    ];
    if PREAMBLES.iter().any(|p| lower.starts_with(p)) {
        return None;
    }
    if s.chars().count() > MAX_ITEM_CHARS || s.split_whitespace().count() > MAX_ITEM_WORDS {
        return None;
    }
    Some(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_numbering_bullets_and_quotes() {
        let text = "Here are 5 attributes:\n1. Red color\n2) \"weight\"\n- **handle**\n* `lid`.\n(6) spout\n\n#7 base\n";
        let p = parse_items(text);
        assert_eq!(
            p.items,
            vec!["Red color", "weight", "handle", "lid", "spout", "base"]
        );
        assert_eq!(p.rejected, 1);
    }

    #[test]
    fn rejects_long_and_empty_lines() {
        let long = "word ".repeat(30);
        let p = parse_items(&format!("ok item\n{long}\n-\n"));
        assert_eq!(p.items, vec!["ok item"]);
        assert_eq!(p.rejected, 2);
    }

    #[test]
    fn reads_json_arrays() {
        let p = parse_items(r#"["a", "b", {"item": "c"}, 3]"#);
        assert_eq!(p.items, vec!["a", "b", "c"]);
        assert_eq!(p.rejected, 1);
    }
}
