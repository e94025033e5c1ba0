//! `response_format`: JSON answers validated against a schema, retried with the validation
//! error, and read parsed by dependents.

use pretty_assertions::assert_eq;

use crate::support::{ENSEMBLE, Test, agent};

const CLASSIFIER: &str = "\
name: route
model_profiles:
  sloppy: {provider: mock, invalid_json_attempts: 1}
agents:
  - name: classifier
    model_profile: sloppy
    retries: RETRIES
    response_format:
      type: object
      required: [route, confidence]
      properties:
        route: {enum: [bug, feature, question]}
        confidence: {type: number}
  - name: reply
    depends_on: [classifier]
    model_profile: mock-fast
    prompt: \"route={{ deps[0].json.route }}\"
";

#[test]
fn invalid_json_is_retried_with_the_validation_error() {
    let out = Test::new()
        .ensemble(&CLASSIFIER.replace("RETRIES", "2"))
        .args([
            "invoke",
            ENSEMBLE,
            "the app crashes on save",
            "--output",
            "jsonl",
        ])
        .run()
        .success();
    let events = out.json_lines();
    let retry = events
        .iter()
        .find(|e| e["type"] == "agent_retrying" && e["agent"] == "classifier")
        .expect("a retry event");
    assert!(
        retry["error"].as_str().unwrap().contains("not valid JSON"),
        "{retry}"
    );
    let result = &events.last().unwrap()["result"];
    let classifier = agent(result, "classifier");
    assert_eq!(classifier["status"], "succeeded");
    assert_eq!(classifier["attempts"], 2);
    let parsed: serde_json::Value =
        serde_json::from_str(classifier["output"].as_str().unwrap()).unwrap();
    let route = parsed["route"].as_str().unwrap();
    assert!(["bug", "feature", "question"].contains(&route), "{parsed}");
    assert!(parsed["confidence"].is_number(), "{parsed}");
    // The dependent's template read the parsed value.
    let reply = agent(result, "reply")["output"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reply.contains(&format!("route={route}")), "{reply}");
}

#[test]
fn invalid_json_without_retries_fails_the_agent() {
    let out = Test::new()
        .ensemble(&CLASSIFIER.replace("RETRIES", "0"))
        .args(["invoke", ENSEMBLE, "x", "--output", "json"])
        .run()
        .failure();
    let doc = out.json();
    let classifier = agent(&doc, "classifier");
    assert_eq!(classifier["status"], "failed");
    assert!(
        classifier["error"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{classifier}"
    );
    assert_eq!(agent(&doc, "reply")["status"], "skipped");
}

#[test]
fn an_invalid_schema_is_a_load_error() {
    Test::new()
        .ensemble("name: s\nagents:\n  - name: a\n    response_format: {type: 12}\n")
        .args(["validate", ENSEMBLE])
        .run()
        .invalid()
        .stderr_contains("not a valid JSON Schema");
}
