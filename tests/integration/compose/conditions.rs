//! `when` guards over a dependency's JSON output: a false guard skips the agent neutrally
//! (the run still succeeds), and a dependent of only-skipped agents is skipped too.

use pretty_assertions::assert_eq;

use super::{error_of, run_json};
use crate::support::{ENSEMBLE, Test, agent};

/// A classifier script and one guarded agent per kind of condition; the name says whether
/// it should run.
const GUARDED: &str = r#"
name: guarded
agents:
  - name: classify
    type: script
    run: [python3, -c, "import json; print(json.dumps({'route': 'bug', 'count': 3, 'flags': {'urgent': True, 'quiet': False, 'note': ''}}))"]
  - name: eq-true
    model_profile: mock-fast
    depends_on: [classify]
    when: "${classify.route} == 'bug'"
  - name: eq-false
    model_profile: mock-fast
    depends_on: [classify]
    when: "${classify.route} == 'feature'"
  - name: eq-number
    model_profile: mock-fast
    depends_on: [classify]
    when: "${classify.count} == 3"
  - name: eq-missing
    model_profile: mock-fast
    depends_on: [classify]
    when: "${classify.severity.level} == 'high'"
  - name: truthy-missing
    model_profile: mock-fast
    depends_on: [classify]
    when: "${classify.severity}"
  - name: ne-true
    model_profile: mock-fast
    depends_on: [classify]
    when: "${classify.route} != 'feature'"
  - name: ne-false
    model_profile: mock-fast
    depends_on: [classify]
    when: '${classify.route} != "bug"'
  - name: ne-missing
    model_profile: mock-fast
    depends_on: [classify]
    when: "${classify.severity} != 'high'"
  - name: truthy-true
    model_profile: mock-fast
    depends_on: [classify]
    when: "${classify.flags.urgent}"
  - name: truthy-false
    model_profile: mock-fast
    depends_on: [classify]
    when: "${classify.flags.quiet}"
  - name: truthy-empty-string
    model_profile: mock-fast
    depends_on: [classify]
    when: "${classify.flags.note}"
  - name: after-only-skipped
    model_profile: mock-fast
    depends_on: [eq-false, eq-missing]
  - name: after-some-ran
    model_profile: mock-fast
    depends_on: [eq-false, eq-true, truthy-missing]
"#;

#[test]
fn guards_true_false_and_on_a_missing_path() {
    let (doc, stderr) = run_json(GUARDED, "the app crashes", 0);
    assert_eq!(
        doc["status"], "succeeded",
        "a false guard does not fail the run"
    );
    let expect = [
        ("classify", "succeeded"),
        ("eq-true", "succeeded"),
        ("eq-false", "skipped"),
        ("eq-number", "succeeded"),
        ("eq-missing", "skipped"),
        ("truthy-missing", "skipped"),
        ("ne-true", "succeeded"),
        ("ne-false", "skipped"),
        ("ne-missing", "succeeded"),
        ("truthy-true", "succeeded"),
        ("truthy-false", "skipped"),
        ("truthy-empty-string", "skipped"),
        ("after-only-skipped", "skipped"),
        ("after-some-ran", "succeeded"),
    ];
    let actual: Vec<(&str, &str)> = expect
        .iter()
        .map(|(name, _)| (*name, agent(&doc, name)["status"].as_str().unwrap()))
        .collect();
    assert_eq!(actual, expect);
    assert_eq!(doc["totals"]["failed"], 0);
    assert_eq!(doc["totals"]["skipped"], 7);

    // A skipped agent says which guard was false, and has no output.
    let skipped = agent(&doc, "eq-false");
    assert!(skipped["output"].is_null(), "{skipped:#}");
    assert!(
        error_of(skipped).contains("${classify.route} == 'feature'"),
        "{skipped:#}"
    );
    let missing = agent(&doc, "eq-missing");
    assert!(
        error_of(missing).contains("${classify.severity.level}"),
        "{missing:#}"
    );
    assert!(agent(&doc, "after-only-skipped")["output"].is_null());
    assert!(!stderr.contains("error:"), "no agent failed:\n{stderr}");
}

#[test]
fn a_skipped_guard_does_not_feed_its_dependents() {
    // The dependent of a ran and a skipped agent sees only the one that ran.
    let yaml = r#"
name: feed
agents:
  - name: classify
    type: script
    run: [python3, -c, "print('{\"route\": \"bug\"}')"]
  - name: bug
    type: script
    depends_on: [classify]
    when: "${classify.route} == 'bug'"
    run: [python3, -c, "print('{\"answer\": \"fix it\"}')"]
  - name: feature
    type: script
    depends_on: [classify]
    when: "${classify.route} == 'feature'"
    run: [python3, -c, "print('{\"answer\": \"build it\"}')"]
  - name: reply
    type: script
    depends_on: [bug, feature]
    run: [python3, -c, "import json, sys; print(json.dumps(sorted(json.load(sys.stdin)['dependencies'])))"]
"#;
    let (doc, _) = run_json(yaml, "x", 0);
    assert_eq!(doc["status"], "succeeded");
    assert_eq!(agent(&doc, "feature")["status"], "skipped");
    assert_eq!(agent(&doc, "reply")["output"], r#"["bug"]"#);
}

#[test]
fn a_failed_guard_source_is_a_failure_not_a_neutral_skip() {
    let yaml = r#"
name: broken
agents:
  - name: classify
    type: script
    run: [sh, -c, "echo classifier broke >&2; exit 1"]
  - name: bug
    model_profile: mock-fast
    depends_on: [classify]
    when: "${classify.route} == 'bug'"
"#;
    let (doc, _) = run_json(yaml, "x", 1);
    assert_eq!(doc["status"], "failed");
    let bug = agent(&doc, "bug");
    assert_eq!(bug["status"], "skipped");
    assert!(error_of(bug).contains("classify"), "{bug:#}");
}

#[test]
fn a_guard_naming_a_non_dependency_is_a_load_error() {
    let yaml = "\
name: unrelated
agents:
  - name: classify
    model_profile: mock-fast
  - name: other
    model_profile: mock-fast
  - name: bug
    model_profile: mock-fast
    depends_on: [other]
    when: \"${classify.route} == 'bug'\"
";
    let out = Test::new()
        .ensemble(yaml)
        .args(["validate", ENSEMBLE])
        .run()
        .invalid();
    assert!(out.stderr.contains("classify"), "{}", out.stderr);
    assert!(out.stderr.contains("ensemble.yaml:10"), "{}", out.stderr);
    assert!(out.stderr.contains("depends_on"), "{}", out.stderr);
}
