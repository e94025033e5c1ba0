//! `orc explore TOPIC`: the one-node generate ensemble without a file.

use std::collections::BTreeSet;

use pretty_assertions::assert_eq;
use serde_json::Value;

use super::{assert_consistent, assert_distinct_after_normalising, calls_by_profile, num, texts};
use crate::support::{Test, agent};

fn explore(args: &[&str]) -> Test {
    Test::new().arg("explore").args(args)
}

#[test]
fn text_is_one_item_per_line() {
    let out = explore(&[
        "kitchen tools",
        "--profile",
        "mock-fast",
        "--producers",
        "2",
        "--iterations",
        "3",
        "--batch-size",
        "4",
        "-q",
    ])
    .run()
    .success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.len() > 4 && lines.len() <= 24, "{}", out.stdout);
    assert!(out.stdout.ends_with('\n'));
    let items: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    assert_distinct_after_normalising(&items);
    for line in &lines {
        assert!(!line.trim().is_empty() && line.trim() == *line, "{line:?}");
    }
    assert_eq!(out.stderr, "", "-q is quiet");
}

#[test]
fn json_matches_the_text() {
    let args = [
        "kitchen tools",
        "--profile",
        "mock-fast",
        "--producers",
        "3",
        "--iterations",
        "4",
        "--seed",
        "5",
        "-q",
    ];
    let text = explore(&args).run().success().stdout;
    let out = explore(&args).args(["--output", "json"]).run().success();
    let doc = out.json();
    assert_eq!(doc["input"], "kitchen tools");
    let node = agent(&doc, "explore");
    assert_consistent(node);
    assert_eq!(texts(node).join("\n") + "\n", text);
    let m = &node["metrics"];
    assert_eq!(num(m, "calls"), 12);
    assert_eq!(m["stop_reason"], "iterations");
    for key in [
        "uam",
        "unique",
        "candidates",
        "uniqueness_ratio",
        "calls",
        "cost_usd",
        "cost_per_minute",
        "new_per_call",
        "per_profile",
        "stop_reason",
    ] {
        assert!(
            m.get(key).is_some_and(|v| !v.is_null()),
            "no `{key}` in {m:#}"
        );
    }
    for item in node["items"].as_array().unwrap() {
        for key in ["text", "producer", "profile", "call", "at"] {
            assert!(item.get(key).is_some(), "no `{key}` in {item}");
        }
        assert_eq!(item["profile"], "mock-fast");
    }
}

#[test]
fn save_writes_the_items_as_json_lines() {
    let out = explore(&[
        "kitchen tools",
        "--profile",
        "mock-fast",
        "--iterations",
        "2",
        "--save",
        "items.jsonl",
        "--output",
        "json",
        "-q",
    ])
    .run()
    .success();
    let node = agent(&out.json(), "explore").clone();
    let saved = std::fs::read_to_string(out.test.path().join("items.jsonl")).expect("saved");
    let lines: Vec<Value> = saved
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), texts(&node).len());
    for (line, item) in lines.iter().zip(node["items"].as_array().unwrap()) {
        for key in ["text", "producer", "profile", "call", "at"] {
            assert_eq!(line[key], item[key], "`{key}` of {line}");
        }
    }
}

#[test]
fn each_line_explores_one_topic_per_line() {
    let out = explore(&[
        "--each-line",
        "--profile",
        "mock-fast",
        "--producers",
        "1",
        "--iterations",
        "1",
        "--batch-size",
        "3",
        "--output",
        "jsonl",
        "-q",
    ])
    .stdin("kitchen tools\n\ngarden tools\nboard games\n")
    .run()
    .success();
    let results = out.json_lines();
    assert_eq!(results.len(), 3, "{}", out.stdout);
    let topics: BTreeSet<&str> = results
        .iter()
        .map(|r| r["input"].as_str().unwrap())
        .collect();
    assert_eq!(
        topics,
        ["board games", "garden tools", "kitchen tools"].into()
    );
    let mut all_items = Vec::new();
    for r in &results {
        let node = agent(r, "explore");
        assert_eq!(node["status"], "succeeded");
        assert_consistent(node);
        assert_eq!(texts(node).len(), 3, "{node:#}");
        all_items.extend(texts(node));
    }
    // Each topic has a vocabulary of its own.
    let distinct: BTreeSet<&String> = all_items.iter().collect();
    assert!(distinct.len() > 3, "{all_items:?}");
}

#[test]
fn each_line_text_keeps_the_topics_apart() {
    let args = [
        "--profile",
        "mock-fast",
        "--producers",
        "1",
        "--iterations",
        "1",
        "--batch-size",
        "2",
        "-q",
    ];
    let batch = explore(&args)
        .arg("--each-line")
        .stdin("kitchen tools\ngarden tools\n")
        .run()
        .success()
        .stdout;
    let single = |topic: &str| explore(&args).arg(topic).run().success().stdout;
    assert_eq!(
        batch,
        format!("{}{}", single("kitchen tools"), single("garden tools"))
    );
    assert_eq!(batch.lines().count(), 4, "{batch}");
}

#[test]
fn unknown_profile_is_a_usage_error() {
    let out = explore(&["kitchen tools", "--profile", "mock-fats"])
        .run()
        .invalid();
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.contains("unknown profile `mock-fats`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("mock-fast"),
        "a suggestion: {}",
        out.stderr
    );
}

#[test]
fn optimizer_flag_routes_among_profiles() {
    let out = Test::new()
        .file(
            ".orc/profiles/explore.yaml",
            "model_profiles:\n  \
             poor: {provider: mock, vocabulary: 20, latency_ms: 10}\n  \
             rich: {provider: mock, vocabulary: 5000, latency_ms: 10}\n",
        )
        .args([
            "explore",
            "kitchen tools",
            "--profile",
            "poor",
            "--profile",
            "rich",
            "--optimizer",
            "maximize-uam",
            "--producers",
            "4",
            "--iterations",
            "15",
            "--output",
            "json",
            "-q",
        ])
        .run()
        .success();
    let doc = out.json();
    let node = agent(&doc, "explore");
    assert_consistent(node);
    let calls = calls_by_profile(node);
    assert!(calls["rich"] * 3 >= 60 * 2, "{calls:?}");
    assert_eq!(
        node["metrics"]["optimizer_decisions"]
            .as_array()
            .map(Vec::len),
        Some(60)
    );
}

/// With `--each-line`, every topic's run writes `--save FILE`; each one re-creates the file,
/// so only the topic that finished last is in it (3 of the 9 items here). The file must
/// hold the items of every topic.
#[test]
fn each_line_save_keeps_every_topic() {
    let out = explore(&[
        "--each-line",
        "--profile",
        "mock-fast",
        "--producers",
        "1",
        "--iterations",
        "1",
        "--batch-size",
        "3",
        "--save",
        "items.jsonl",
        "--output",
        "json",
        "-q",
    ])
    .stdin("kitchen tools\ngarden tools\nboard games\n")
    .run()
    .success();
    let doc = out.json();
    let mut expected: Vec<String> = doc
        .as_array()
        .expect("one result per topic")
        .iter()
        .flat_map(|r| texts(agent(r, "explore")))
        .collect();
    assert_eq!(expected.len(), 9);
    let saved = std::fs::read_to_string(out.test.path().join("items.jsonl")).expect("saved");
    let mut got: Vec<String> = saved
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON line");
            v["text"].as_str().expect("text").to_string()
        })
        .collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "every topic's items are saved");
}

/// Without `topic:`, a generate node explores the run input.
#[test]
fn the_topic_defaults_to_the_input() {
    let yaml = |topic: &str| {
        format!(
            "name: t\nagents:\n  - name: gen\n    type: generate\n    model_profile: mock-fast\n    \
             producers: 2\n    stop: {{iterations: 2}}\n{topic}"
        )
    };
    let run = |yaml: String, input: &str| {
        let out = Test::new()
            .ensemble(&yaml)
            .args([
                "invoke",
                crate::support::ENSEMBLE,
                input,
                "--output",
                "json",
                "-q",
            ])
            .run()
            .success();
        texts(agent(&out.json(), "gen"))
    };
    let from_input = run(yaml(""), "board games");
    let from_key = run(yaml("    topic: board games\n"), "something else");
    let other = run(yaml(""), "garden tools");
    assert_eq!(from_input, from_key);
    assert_ne!(from_input, other);
}
