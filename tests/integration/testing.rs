//! `orc test` (expectations in ensemble files, readable failures) and `--record` /
//! `--replay` (a suite recorded once runs offline and deterministically).

use pretty_assertions::assert_eq;
use serde_json::json;

use crate::providers::fake::{Fake, Reply};
use crate::support::{ENSEMBLE, Test, agent};

const ROUTED: &str = "\
name: routed
defaults: {model_profile: mock-fast}
agents:
  - name: classifier
    type: script
    run: [python3, -c, \"import json,sys; t=json.load(sys.stdin)['input']; print(json.dumps({'route': 'bug' if 'crash' in t else 'question'}))\"]
  - name: bug
    depends_on: [classifier]
    when: \"${classifier.route} == 'bug'\"
  - name: reply
    depends_on: [bug]
tests:
  - name: crashes go to bug
    input: it crashes
    expect:
      - {agent: classifier, json: {path: route, equals: bug}}
      - {agent: bug, status: succeeded}
      - {agent: reply, contains: Building on bug}
      - {max_cost_usd: 0.0}
      - {max_tokens: 10000}
EXTRA";

#[test]
fn passing_tests_exit_zero() {
    let out = Test::new()
        .ensemble(&ROUTED.replace("EXTRA", ""))
        .args(["test", ENSEMBLE])
        .run()
        .success();
    assert!(
        out.stdout.contains("  ok    crashes go to bug"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.ends_with("1 passed, 0 failed\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn failing_tests_show_expected_and_actual() {
    let extra = "  - name: questions also go to bug
    input: how do I export?
    expect:
      - {agent: bug, status: succeeded}
      - {agent: classifier, json: {path: route, equals: bug}}
      - {agent: reply, matches: \"^never$\"}
";
    let out = Test::new()
        .ensemble(&ROUTED.replace("EXTRA", extra))
        .args(["test", ENSEMBLE])
        .run()
        .failure();
    let stdout = out.stdout;
    assert!(
        stdout.contains("  FAIL  questions also go to bug"),
        "{stdout}"
    );
    assert!(
        stdout.contains("- agent `bug`: status\n            expected: succeeded\n            actual:   skipped (condition `${classifier.route} == 'bug'` is false)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("- agent `classifier`: json `route`\n            expected: \"bug\"\n            actual:   \"question\""),
        "{stdout}"
    );
    assert!(stdout.contains("output should match /^never$/"), "{stdout}");
    assert!(stdout.ends_with("1 passed, 1 failed\n"), "{stdout}");
}

#[test]
fn tests_naming_unknown_agents_are_load_errors() {
    let extra = "  - name: typo
    input: x
    expect:
      - {agent: clasifier, status: succeeded}
";
    Test::new()
        .ensemble(&ROUTED.replace("EXTRA", extra))
        .args(["test", ENSEMBLE])
        .run()
        .invalid()
        .stderr_contains("did you mean `classifier`?");
}

fn chat(text: &str) -> Reply {
    Reply::json(json!({
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    }))
}

fn remote(base_url: &str) -> String {
    format!(
        "name: remote
model_profiles:
  local: {{provider: openai-compatible, base_url: \"{base_url}/v1\", model: m, price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}}}
defaults: {{model_profile: local, retries: 0}}
agents:
  - name: a
  - name: b
    depends_on: [a]
tests:
  - name: b answers
    input: hello
    expect:
      - {{agent: b, contains: second}}
"
    )
}

#[test]
fn a_recording_replays_identically_with_no_provider_reachable() {
    let fake = Fake::start(vec![chat("first answer"), chat("second answer")]);
    let yaml = remote(&fake.url());
    let keep = tempfile::tempdir().unwrap();
    let rec = keep.path().join("rec.jsonl");
    let recorded = Test::new()
        .ensemble(&yaml)
        .args(["invoke", ENSEMBLE, "hello", "--output", "json", "--record"])
        .arg(&rec)
        .run()
        .success()
        .json();
    assert_eq!(fake.count(), 2);
    // Nothing listens at the recorded address any more: replay must not need it.
    drop(fake);
    let recording = std::fs::read_to_string(&rec).unwrap();
    assert_eq!(recording.lines().count(), 2, "{recording}");
    let replayed = Test::new()
        .ensemble(&yaml)
        .file("rec.jsonl", &recording)
        .args([
            "invoke",
            ENSEMBLE,
            "hello",
            "--output",
            "json",
            "--replay",
            "rec.jsonl",
        ])
        .run()
        .success()
        .json();
    for name in ["a", "b"] {
        assert_eq!(
            agent(&replayed, name)["output"],
            agent(&recorded, name)["output"]
        );
        assert_eq!(
            agent(&replayed, name)["usage"],
            agent(&recorded, name)["usage"]
        );
    }
    assert_eq!(
        replayed["totals"]["cost_usd"],
        recorded["totals"]["cost_usd"]
    );
    // `orc test --replay` runs the file's tests from the recording.
    Test::new()
        .ensemble(&yaml)
        .file("rec.jsonl", &recording)
        .args(["test", ENSEMBLE, "--replay", "rec.jsonl"])
        .run()
        .success()
        .stdout_contains("1 passed, 0 failed");
}

#[test]
fn a_request_missing_from_the_recording_fails_its_agent() {
    let fake = Fake::start(vec![chat("first answer"), chat("second answer")]);
    let yaml = remote(&fake.url());
    let keep = tempfile::tempdir().unwrap();
    let rec = keep.path().join("rec.jsonl");
    Test::new()
        .ensemble(&yaml)
        .args(["invoke", ENSEMBLE, "hello", "--quiet", "--record"])
        .arg(&rec)
        .run()
        .success();
    drop(fake);
    let recording = std::fs::read_to_string(&rec).unwrap();
    let out = Test::new()
        .ensemble(&yaml)
        .file("rec.jsonl", &recording)
        .args([
            "invoke",
            ENSEMBLE,
            "a different input",
            "--output",
            "json",
            "--replay",
            "rec.jsonl",
        ])
        .run()
        .failure();
    let doc = out.json();
    let a = agent(&doc, "a");
    assert_eq!(a["status"], "failed");
    assert_eq!(a["attempts"], 1);
    let error = a["error"].as_str().unwrap();
    assert!(
        error.contains("agent `a`") && error.contains("not in the recording"),
        "{error}"
    );
}
