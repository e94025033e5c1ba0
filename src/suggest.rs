//! "did you mean ...?": the closest candidate by edit distance, if close enough to help.

/// The candidate closest to `word`, when it is plausibly a typo of it.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word_lower = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&word_lower, &c.to_lowercase()),
                c,
            )
        })
        .filter(|(d, c)| {
            let limit = (word.chars().count().max(c.chars().count()) / 3).max(1);
            *d <= limit
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn suggests_near_misses_only() {
        let names = ["research", "summarize", "review"];
        assert_eq!(closest("reseach", names), Some("research"));
        assert_eq!(closest("sumarize", names), Some("summarize"));
        assert_eq!(closest("banana", names), None);
    }
}
