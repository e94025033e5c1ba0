//! `dedup`: merges the list outputs of its dependencies (JSON arrays or one item per line),
//! keeps the first of each group of duplicates (same normal form), and optionally drops
//! near-duplicates: items whose word sets overlap at or above a Jaccard similarity threshold.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::normalize::normalize;
use super::parse::parse_items;

#[derive(Debug, Clone, Serialize)]
pub struct DedupItem {
    pub text: String,
    /// The dependency it came from.
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DedupMetrics {
    pub input: u64,
    pub kept: u64,
    pub dropped_exact: u64,
    pub dropped_near: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub near_threshold: Option<f64>,
}

/// Deduplicates `lists` (dependency name, output text), in order.
pub fn dedup(
    lists: &[(String, String)],
    normalized: bool,
    near: Option<f64>,
) -> (Vec<DedupItem>, DedupMetrics) {
    let mut seen: HashSet<String> = HashSet::new();
    let mut kept: Vec<DedupItem> = Vec::new();
    let mut kept_words: Vec<HashSet<String>> = Vec::new();
    // Word -> kept items containing it, so near-duplicate checks only compare items that
    // share a word instead of every pair.
    let mut index: HashMap<String, Vec<usize>> = HashMap::new();
    let mut m = DedupMetrics {
        input: 0,
        kept: 0,
        dropped_exact: 0,
        dropped_near: 0,
        near_threshold: near,
    };
    for (source, text) in lists {
        for item in parse_items(text).items {
            m.input += 1;
            let key = normalize(&item, normalized);
            if key.is_empty() || !seen.insert(key.clone()) {
                m.dropped_exact += 1;
                continue;
            }
            let words: HashSet<String> = normalize(&item, true)
                .split(' ')
                .map(String::from)
                .collect();
            if let Some(threshold) = near {
                let mut candidates: HashSet<usize> = HashSet::new();
                for w in &words {
                    candidates.extend(index.get(w).into_iter().flatten().copied());
                }
                let is_near = candidates
                    .into_iter()
                    .any(|j| jaccard(&words, &kept_words[j]) >= threshold);
                if is_near {
                    m.dropped_near += 1;
                    continue;
                }
                for w in &words {
                    index.entry(w.clone()).or_default().push(kept.len());
                }
            }
            kept_words.push(words);
            kept.push(DedupItem {
                text: item,
                source: source.clone(),
            });
        }
    }
    m.kept = kept.len() as u64;
    (kept, m)
}

fn jaccard(a: &HashSet<String>, b: &HashSet<String>) -> f64 {
    let inter = a.intersection(b).count();
    let union = a.len() + b.len() - inter;
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_exact_and_near_duplicates() {
        let lists = vec![
            (
                "a".to_string(),
                "1. Red apples\n2. green pear\n3. ripe yellow banana".to_string(),
            ),
            (
                "b".to_string(),
                r#"["red apple", "Green Pear!", "yellow ripe banana split", "plum"]"#.to_string(),
            ),
        ];
        let (kept, m) = dedup(&lists, true, None);
        assert_eq!(m.dropped_exact, 2);
        assert_eq!(kept.len(), 5);
        let (kept, m) = dedup(&lists, true, Some(0.7));
        assert_eq!(m.dropped_near, 1, "{kept:?}");
        assert_eq!(
            kept.iter().map(|k| k.text.as_str()).collect::<Vec<_>>(),
            vec!["Red apples", "green pear", "ripe yellow banana", "plum"]
        );
    }
}
