//! `fan_out: true`: one instance per element of a dependency's JSON array, gathered back in
//! order; a failed instance is `null` there and named in the agent's error.

use pretty_assertions::assert_eq;
use serde_json::json;

use super::{error_of, output_json, run_json};
use crate::support::agent;

/// A script planner printing `[0, 1, ..., 49]`; a script worker (plain `sh`, so fifty
/// instances start quickly) that fails for element 17 and answers `{"n": i}` otherwise.
const FIFTY: &str = r#"
name: fifty
agents:
  - name: planner
    type: script
    run: [python3, -c, "import json; print(json.dumps(list(range(50))))"]
  - name: worker
    type: script
    depends_on: [planner]
    fan_out: true
    run:
      - sh
      - -c
      - 'if [ "$INPUT_TEXT" = 17 ]; then echo "cannot handle element $INPUT_TEXT" >&2; exit 4; fi; printf "{\"n\": %s}\n" "$INPUT_TEXT"'
  - name: summary
    depends_on: [worker]
    model_profile: mock-fast
"#;

#[test]
fn fifty_elements_from_a_script_with_one_failing_instance() {
    let (doc, stderr) = run_json(FIFTY, "go", 1);
    assert_eq!(doc["status"], "failed");
    assert_eq!(agent(&doc, "planner")["status"], "succeeded");

    let worker = agent(&doc, "worker");
    assert_eq!(worker["status"], "failed");
    assert_eq!(
        worker["metrics"],
        json!({"instances": 50, "failed_instances": 1})
    );
    let gathered = output_json(worker);
    let gathered = gathered
        .as_array()
        .expect("the gathered output is an array");
    assert_eq!(gathered.len(), 50);
    for (i, value) in gathered.iter().enumerate() {
        if i == 17 {
            assert!(value.is_null(), "the failed instance is null: {value}");
        } else {
            assert_eq!(value, &json!({"n": i}), "instance {i} in order");
        }
    }
    let error = error_of(worker);
    assert!(error.contains("1 of 50 instances failed"), "{error}");
    assert!(
        error.contains("`worker[17]`"),
        "the instance is named: {error}"
    );
    assert!(
        error.contains("cannot handle element 17"),
        "the instance's stderr is in the error: {error}"
    );
    for other in ["worker[16]", "worker[18]", "worker[0]"] {
        assert!(!error.contains(other), "only the failed instance: {error}");
    }

    // The default failure policy skips the dependent.
    let summary = agent(&doc, "summary");
    assert_eq!(summary["status"], "skipped");
    assert!(error_of(summary).contains("worker"), "{summary:#}");
    assert!(stderr.contains("worker[17]"), "{stderr}");
}

#[test]
fn fifty_elements_all_succeeding() {
    let yaml = FIFTY.replace("= 17 ]", "= none ]");
    let (doc, _) = run_json(&yaml, "go", 0);
    assert_eq!(doc["status"], "succeeded");
    let worker = agent(&doc, "worker");
    assert_eq!(worker["status"], "succeeded");
    assert_eq!(
        worker["metrics"],
        json!({"instances": 50, "failed_instances": 0})
    );
    let expected: Vec<_> = (0..50).map(|i| json!({"n": i})).collect();
    assert_eq!(output_json(worker), json!(expected));
    assert_eq!(agent(&doc, "summary")["status"], "succeeded");
}

#[test]
fn an_empty_array_gives_an_empty_list_and_success() {
    let yaml = FIFTY.replace("list(range(50))", "[]");
    let (doc, _) = run_json(&yaml, "go", 0);
    assert_eq!(doc["status"], "succeeded");
    let worker = agent(&doc, "worker");
    assert_eq!(worker["status"], "succeeded");
    assert_eq!(output_json(worker), json!([]));
    assert_eq!(
        worker["metrics"],
        json!({"instances": 0, "failed_instances": 0})
    );
    assert!(worker["error"].is_null(), "{worker:#}");
    assert_eq!(agent(&doc, "summary")["status"], "succeeded");
}

/// Object elements reach each instance whole, as `input` on stdin; llm-orc's
/// `{"success": true, "data": [...]}` script answer is fanned out over `data`.
#[test]
fn elements_reach_instances_as_json_and_llm_orc_data_wrapper_is_unwrapped() {
    let yaml = r#"
name: objects
agents:
  - name: planner
    type: script
    run:
      - python3
      - -c
      - |
        import json
        items = [{"id": i, "name": n} for i, n in enumerate(["ada", "grace", "edsger"])]
        print(json.dumps({"success": True, "data": items}))
  - name: worker
    type: script
    depends_on: [planner]
    fan_out: true
    run:
      - python3
      - -c
      - |
        import json, sys
        req = json.load(sys.stdin)
        item = req["input"]
        print(json.dumps({"id": item["id"], "upper": item["name"].upper(), "agent": req["agent_name"]}))
"#;
    let (doc, _) = run_json(yaml, "go", 0);
    let worker = agent(&doc, "worker");
    assert_eq!(worker["status"], "succeeded");
    assert_eq!(
        output_json(worker),
        json!([
            {"id": 0, "upper": "ADA", "agent": "worker"},
            {"id": 1, "upper": "GRACE", "agent": "worker"},
            {"id": 2, "upper": "EDSGER", "agent": "worker"},
        ])
    );
}

#[test]
fn fanning_out_over_something_else_than_an_array_fails_the_agent() {
    let yaml = FIFTY.replace("list(range(50))", "{'not': 'a list'}");
    let (doc, _) = run_json(&yaml, "go", 1);
    let worker = agent(&doc, "worker");
    assert_eq!(worker["status"], "failed");
    assert!(
        error_of(worker).contains("`fan_out` needs a JSON array"),
        "{worker:#}"
    );
}

#[test]
fn fan_out_without_a_dependency_is_a_load_error() {
    let yaml = "\
name: lonely
agents:
  - name: worker
    model_profile: mock-fast
    fan_out: true
";
    let out = crate::support::Test::new()
        .ensemble(yaml)
        .args(["validate", crate::support::ENSEMBLE])
        .run()
        .invalid();
    assert!(out.stderr.contains("fan_out"), "{}", out.stderr);
    assert!(out.stderr.contains("ensemble.yaml:5"), "{}", out.stderr);
}
