//! The normaliser: two items are the same when their normal forms are equal. Case,
//! whitespace, punctuation and simple English plurals are folded ("Red Apples!" and
//! "red apple" are one item). Used by `generate` and `dedup` alike.

/// Normal form of an item, or the trimmed text itself when normalising is off.
pub fn normalize(item: &str, enabled: bool) -> String {
    if !enabled {
        return item.trim().to_string();
    }
    let mut words: Vec<String> = Vec::new();
    for raw in item
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
    {
        let word = raw.trim_matches('\'').to_lowercase();
        if word.is_empty() {
            continue;
        }
        words.push(singular(&word));
    }
    words.join(" ")
}

/// Simple plural folding: `batteries` → `battery`, `boxes` → `box`, `cars` → `car`; leaves
/// `glass`, `bus`, `analysis` and short words alone.
fn singular(word: &str) -> String {
    let n = word.chars().count();
    if n <= 3 || !word.is_ascii() {
        return word.to_string();
    }
    if let Some(stem) = word.strip_suffix("ies") {
        return format!("{stem}y");
    }
    for ending in ["sses", "shes", "ches", "xes", "zzes"] {
        if word.ends_with(ending) {
            return word[..word.len() - 2].to_string();
        }
    }
    if word.ends_with('s')
        && !word.ends_with("ss")
        && !word.ends_with("us")
        && !word.ends_with("is")
    {
        return word[..word.len() - 1].to_string();
    }
    word.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_space_punctuation_and_plurals() {
        assert_eq!(normalize("  Red   Apples! ", true), "red apple");
        assert_eq!(normalize("red-apple", true), "red apple");
        assert_eq!(normalize("Batteries", true), "battery");
        assert_eq!(normalize("boxes", true), "box");
        assert_eq!(normalize("glass", true), "glass");
        assert_eq!(normalize("analysis", true), "analysis");
        assert_eq!(normalize("bus", true), "bus");
        assert_eq!(normalize("Red Apples!", false), "Red Apples!");
    }
}
