//! `orc plan` in every format.

use crate::support::{ENSEMBLE, Test};

const DIAMOND: &str = "\
name: diamond
description: fan out to two reviewers, then merge
defaults:
  model_profile: mock-fast
agents:
  - name: research
  - name: security
    depends_on: [research]
    model_profile: mock
  - name: performance
    depends_on: [research]
  - name: summary
    depends_on: [security, performance]
    model_profile: mock-slow
  - name: standalone
";

#[track_caller]
fn plan(format: &str) -> String {
    let out = Test::new()
        .ensemble(DIAMOND)
        .args(["plan", ENSEMBLE, "--format", format])
        .run()
        .success();
    assert_eq!(out.stderr, "", "a valid plan prints nothing on stderr");
    out.stdout
}

#[test]
fn text() {
    insta::assert_snapshot!("plan_text", plan("text"));
}

#[test]
fn text_is_the_default() {
    let out = Test::new()
        .ensemble(DIAMOND)
        .args(["plan", ENSEMBLE])
        .run()
        .success();
    assert_eq!(out.stdout, plan("text"));
}

#[test]
fn json() {
    let text = plan("json");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("plan json parses");
    assert_eq!(doc["ensemble"], "diamond");
    assert_eq!(
        doc["phases"],
        serde_json::json!([
            ["research", "standalone"],
            ["security", "performance"],
            ["summary"]
        ])
    );
    insta::assert_snapshot!("plan_json", text);
}

#[test]
fn dot() {
    let text = plan("dot");
    assert!(text.starts_with("digraph"), "{text}");
    assert!(text.contains("\"security\" -> \"summary\""), "{text}");
    insta::assert_snapshot!("plan_dot", text);
}

#[test]
fn mermaid() {
    let text = plan("mermaid");
    assert!(text.starts_with("flowchart"), "{text}");
    insta::assert_snapshot!("plan_mermaid", text);
}

#[test]
fn unknown_format_is_a_usage_error() {
    Test::new()
        .ensemble(DIAMOND)
        .args(["plan", ENSEMBLE, "--format", "svg"])
        .run()
        .invalid()
        .stderr_contains("svg");
}
