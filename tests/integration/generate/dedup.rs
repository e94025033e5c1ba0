//! `type: dedup` merges the lists of its dependencies (one item per line or JSON arrays),
//! drops exact duplicates (same normal form) and, when asked, near duplicates, and reports
//! the counts.

use std::collections::{BTreeSet, HashSet};

use pretty_assertions::assert_eq;
use serde_json::Value;

use super::fake::{Fake, Reply};
use super::{answer, assert_distinct_after_normalising, fake_profile, normal_form, num, texts};
use crate::support::{ENSEMBLE, Test, agent};

/// Two models with overlapping lists, in the two shapes the parser reads.
fn two_lists() -> (Fake, Fake) {
    let a = Fake::always(Reply::json(answer(
        "Here are some fruits:\n1. Red Apples!\n2. green pear\n3. ripe yellow banana\n4. Plum",
    )));
    let b = Fake::always(Reply::json(answer(
        r#"["red apple", "Green Pear.", "yellow ripe banana split", "plums", "kiwi"]"#,
    )));
    (a, b)
}

/// Agents `a` and `b` ask the two fakes; `dedup` agents (name, extra keys) merge them.
fn merging(a: &Fake, b: &Fake, dedups: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "name: merge\nmodel_profiles:\n  pa: {}\n  pb: {}\nagents:\n  \
         - name: a\n    model_profile: pa\n  - name: b\n    model_profile: pb\n",
        fake_profile(a, ""),
        fake_profile(b, ""),
    );
    for (name, keys) in dedups {
        yaml.push_str(&format!(
            "  - name: {name}\n    type: dedup\n    depends_on: [a, b]\n"
        ));
        if !keys.is_empty() {
            yaml.push_str(&format!("    {keys}\n"));
        }
    }
    yaml
}

#[track_caller]
fn run(yaml: &str) -> Value {
    Test::new()
        .ensemble(yaml)
        .args(["invoke", ENSEMBLE, "fruit", "--output", "json", "-q"])
        .run()
        .success()
        .json()
}

#[test]
fn drops_exact_and_near_duplicates_and_counts_them() {
    let (a, b) = two_lists();
    let yaml = merging(
        &a,
        &b,
        &[
            ("exact", ""),
            ("near", "near_duplicates: 0.7"),
            ("verbatim", "normalize: false"),
        ],
    );
    let doc = run(&yaml);

    let exact = agent(&doc, "exact");
    assert_eq!(exact["status"], "succeeded", "{exact:#}");
    assert_eq!(
        texts(exact),
        [
            "Red Apples!",
            "green pear",
            "ripe yellow banana",
            "Plum",
            "yellow ripe banana split",
            "kiwi"
        ]
    );
    assert_eq!(
        exact["output"],
        "Red Apples!\ngreen pear\nripe yellow banana\nPlum\nyellow ripe banana split\nkiwi"
    );
    let sources: Vec<&str> = exact["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["a", "a", "a", "a", "b", "b"]);
    let m = &exact["metrics"];
    assert_eq!(num(m, "input"), 9, "the preamble is not an item: {m:#}");
    assert_eq!(num(m, "kept"), 6);
    assert_eq!(num(m, "dropped_exact"), 3, "red apple, Green Pear., plums");
    assert_eq!(num(m, "dropped_near"), 0);
    assert_distinct_after_normalising(&texts(exact));

    // "yellow ripe banana split" shares three of its four words with "ripe yellow banana".
    let near = agent(&doc, "near");
    assert_eq!(
        texts(near),
        [
            "Red Apples!",
            "green pear",
            "ripe yellow banana",
            "Plum",
            "kiwi"
        ]
    );
    let m = &near["metrics"];
    assert_eq!(
        (
            num(m, "input"),
            num(m, "kept"),
            num(m, "dropped_exact"),
            num(m, "dropped_near")
        ),
        (9, 5, 3, 1),
        "{m:#}"
    );

    // Without normalising, only identical text is a duplicate: none here.
    let verbatim = agent(&doc, "verbatim");
    let m = &verbatim["metrics"];
    assert_eq!((num(m, "kept"), num(m, "dropped_exact")), (9, 0), "{m:#}");
}

/// Two explorations of the same topic overlap; the merge keeps their union once.
#[test]
fn merges_generate_outputs() {
    let yaml = "\
name: merge
model_profiles:
  m: {provider: mock, vocabulary: 300}
agents:
  - name: left
    type: generate
    topic: kitchen tools
    model_profile: m
    producers: 2
    stop: {iterations: 5}
  - name: right
    type: generate
    topic: kitchen tools
    model_profile: m
    producers: 3
    stop: {iterations: 5}
  - name: merged
    type: dedup
    model_profile: m
    depends_on: [left, right]
  - name: loose
    type: dedup
    model_profile: m
    depends_on: [left, right]
    near_duplicates: 0.5
";
    let doc = run(yaml);
    let left = texts(agent(&doc, "left"));
    let right = texts(agent(&doc, "right"));
    let merged = agent(&doc, "merged");
    let keys =
        |items: &[String]| -> BTreeSet<String> { items.iter().map(|i| normal_form(i)).collect() };
    let (l, r) = (keys(&left), keys(&right));
    let overlap = l.intersection(&r).count() as u64;
    assert!(overlap > 10, "the two runs overlap: {overlap}");
    let m = &merged["metrics"];
    assert_eq!(num(m, "input"), (left.len() + right.len()) as u64);
    assert_eq!(num(m, "dropped_exact"), overlap, "{m:#}");
    assert_eq!(num(m, "kept"), l.union(&r).count() as u64, "{m:#}");
    assert_eq!(keys(&texts(merged)), l.union(&r).cloned().collect());
    assert_distinct_after_normalising(&texts(merged));

    // With near-duplicate detection at 0.5, no two kept items share two of their three
    // words ("matte oak lid", "matte oak handle").
    let loose = agent(&doc, "loose");
    let m = &loose["metrics"];
    assert!(num(m, "dropped_near") > 0, "{m:#}");
    assert_eq!(
        num(m, "kept") + num(m, "dropped_exact") + num(m, "dropped_near"),
        num(m, "input"),
        "{m:#}"
    );
    let kept = texts(loose);
    let words: Vec<HashSet<String>> = kept
        .iter()
        .map(|k| normal_form(k).split(' ').map(String::from).collect())
        .collect();
    for i in 0..words.len() {
        for j in 0..i {
            let inter = words[i].intersection(&words[j]).count();
            let union = words[i].len() + words[j].len() - inter;
            assert!(
                (inter as f64) / (union as f64) < 0.5,
                "`{}` and `{}` are near duplicates, both kept",
                kept[j],
                kept[i]
            );
        }
    }
}
