//! `loop:` (issue 11): the body ensemble runs until `until` holds over its output or
//! `max_iterations` is reached, `carry` feeding the next iteration; each iteration's events
//! carry `AGENT/#N` on their path; tokens and cost roll up; `--timeout` and the agent's
//! `timeout_seconds` stop a loop; bad loops are load errors at their line.

use pretty_assertions::assert_eq;

use super::output_json;
use crate::support::{ENSEMBLE, Test, agent};

/// A body that counts: its input is a number, its output `{"n": input + 1, "done": ...}`.
const COUNT: &str = "\
name: count
agents:
  - name: step
    script: step.py
";

const STEP_PY: &str = "\
import json, sys
n = int(json.load(sys.stdin)['input_data'] or 0)
print(json.dumps({'n': n + 1, 'done': n + 1 >= 3}))
";

fn counting(loop_spec: &str) -> Test {
    Test::new()
        .file("count.yaml", COUNT)
        .file("step.py", STEP_PY)
        .ensemble(&format!(
            "\
name: counter
agents:
  - name: round
    loop: {loop_spec}
  - name: after
    depends_on: [round]
    model_profile: mock-fast
"
        ))
}

#[test]
fn a_loop_runs_its_body_until_the_condition_holds() {
    let out = counting(r#"{body: count, until: "${done}", max_iterations: 10, carry: "${n}"}"#)
        .args(["invoke", ENSEMBLE, "0", "--output", "json"])
        .run()
        .success();
    let doc = out.json();
    let round = agent(&doc, "round");
    assert_eq!(round["status"], "succeeded");
    assert_eq!(
        output_json(round),
        serde_json::json!({
            "output": {"n": 3, "done": true},
            "iterations": 3,
            "terminated": "until",
            "has_errors": false,
        })
    );
    assert_eq!(round["provider"], "ensemble");
    assert_eq!(round["model"], "count");
    let runs = round["metrics"]["runs"].as_array().unwrap();
    let inputs: Vec<&str> = runs.iter().map(|r| r["input"].as_str().unwrap()).collect();
    assert_eq!(
        inputs,
        ["0", "1", "2"],
        "each iteration gets the carried value"
    );
    // The dependent sees the loop's output.
    assert_eq!(agent(&doc, "after")["status"], "succeeded");
}

#[test]
fn each_iteration_is_on_the_event_stream_with_its_number() {
    let out = counting(r#"{body: count, until: "${n} == 2", max_iterations: 10, carry: "${n}"}"#)
        .args(["invoke", ENSEMBLE, "0", "--output", "jsonl"])
        .run()
        .success();
    let events = out.json_lines();
    let started: Vec<(serde_json::Value, &str)> = events
        .iter()
        .filter(|e| e["type"] == "run_started" && e.get("path").is_some())
        .map(|e| (e["path"].clone(), e["input"].as_str().unwrap()))
        .collect();
    assert_eq!(
        started,
        [
            (serde_json::json!(["round", "#1"]), "0"),
            (serde_json::json!(["round", "#2"]), "1"),
        ]
    );
    let steps = events
        .iter()
        .filter(|e| e["type"] == "agent_finished" && e["agent"] == "step")
        .count();
    assert_eq!(steps, 2);
    // The loop agent's own events have no path; it finishes after its iterations.
    let loop_done = events
        .iter()
        .position(|e| e["type"] == "agent_finished" && e["agent"] == "round")
        .unwrap();
    let last_step = events
        .iter()
        .rposition(|e| e["type"] == "agent_finished" && e["agent"] == "step")
        .unwrap();
    assert!(last_step < loop_done);
    assert!(events[loop_done].get("path").is_none());
}

#[test]
fn a_loop_that_never_meets_its_condition_stops_at_the_bound() {
    let out = counting(r#"{body: count, until: "${n} == 99", max_iterations: 4, carry: "${n}"}"#)
        .args(["invoke", ENSEMBLE, "0", "--output", "json"])
        .run()
        .success();
    let round = output_json(agent(&out.json(), "round"));
    assert_eq!(round["iterations"], 4);
    assert_eq!(round["terminated"], "exhausted");
    assert_eq!(round["output"]["n"], 4);
}

#[test]
fn without_carry_every_iteration_gets_the_same_input() {
    let out = counting(r#"{body: count, until: "${n} == 99", max_iterations: 3}"#)
        .args(["invoke", ENSEMBLE, "5", "--output", "json"])
        .run()
        .success();
    let doc = out.json();
    let round = agent(&doc, "round");
    let inputs: Vec<&str> = round["metrics"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["input"].as_str().unwrap())
        .collect();
    assert_eq!(inputs, ["5", "5", "5"]);
}

/// A body whose first run fails (it remembers runs in a file) and whose later runs succeed.
const FLAKY_PY: &str = "\
import json, os, sys
path = 'runs.txt'
runs = int(open(path).read()) if os.path.exists(path) else 0
open(path, 'w').write(str(runs + 1))
if runs < FAIL_FIRST:
    print('not yet', file=sys.stderr)
    sys.exit(3)
print(json.dumps({'ok': True, 'run': runs + 1}))
";

fn flaky(fail_first: u32, max_iterations: u32) -> Test {
    Test::new()
        .file(
            "flaky.yaml",
            "name: flaky\nagents:\n  - name: attempt\n    script: flaky.py\n",
        )
        .file(
            "flaky.py",
            FLAKY_PY.replace("FAIL_FIRST", &fail_first.to_string()),
        )
        .ensemble(&format!(
            "\
name: retrying
agents:
  - name: retry
    loop: {{body: flaky, until: \"${{ok}}\", max_iterations: {max_iterations}}}
"
        ))
}

#[test]
fn an_earlier_failed_iteration_is_recorded_and_a_later_one_succeeds() {
    let out = flaky(1, 3)
        .args(["invoke", ENSEMBLE, "go", "--output", "json"])
        .run()
        .success();
    let retry = output_json(agent(&out.json(), "retry"));
    assert_eq!(retry["iterations"], 2);
    assert_eq!(retry["terminated"], "until");
    assert_eq!(retry["output"], serde_json::json!({"ok": true, "run": 2}));
    assert_eq!(retry["has_errors"], false);
    let failures = retry["iteration_failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["iteration"], 1);
    assert!(
        failures[0]["error"].as_str().unwrap().contains("not yet"),
        "{retry:#}"
    );
}

#[test]
fn a_loop_whose_last_iteration_fails_fails() {
    let out = flaky(5, 2)
        .args(["invoke", ENSEMBLE, "go", "--output", "json"])
        .run()
        .failure();
    let doc = out.json();
    let retry = agent(&doc, "retry");
    assert_eq!(retry["status"], "failed");
    assert_eq!(retry["error_kind"], "loop");
    let error = retry["error"].as_str().unwrap();
    assert!(
        error.contains("loop body `flaky` produced no successful final agent on iteration 2"),
        "{error}"
    );
    assert!(error.contains("`attempt` failed"), "{error}");
    assert_eq!(retry["metrics"]["iterations"], 2);
}

const PRICED_BODY: &str = "\
name: draft
model_profiles:
  priced: {provider: mock, latency_ms: 0, price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}
agents:
  - name: write
    model_profile: priced
";

#[test]
fn tokens_and_cost_of_every_iteration_roll_up() {
    let out = Test::new()
        .file("draft.yaml", PRICED_BODY)
        .ensemble(
            "\
name: drafts
agents:
  - name: redraft
    loop: {body: draft, until: \"${never}\", max_iterations: 3}
",
        )
        .args(["invoke", ENSEMBLE, "an essay", "--output", "json"])
        .run()
        .success();
    let doc = out.json();
    let redraft = agent(&doc, "redraft");
    let runs = redraft["metrics"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    let sum = |key: &str| -> u64 {
        runs.iter()
            .map(|r| r["totals"]["usage"][key].as_u64().unwrap())
            .sum()
    };
    assert!(sum("output_tokens") > 0);
    assert_eq!(redraft["usage"]["input_tokens"], sum("input_tokens"));
    assert_eq!(redraft["usage"]["output_tokens"], sum("output_tokens"));
    assert_eq!(redraft["attempts"], 3);
    let cost: f64 = runs
        .iter()
        .map(|r| r["totals"]["cost_usd"].as_f64().unwrap())
        .sum();
    assert!(cost > 0.0);
    assert!((redraft["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-12);
    assert_eq!(doc["totals"]["usage"], redraft["usage"]);
}

/// A body that takes a while per iteration and never meets its condition.
fn slow_loop(extra: &str) -> Test {
    Test::new()
        .file(
            "slow.yaml",
            "name: slow\nagents:\n  - name: nap\n    run: [sh, -c, 'sleep 0.3; echo \"{}\"']\n",
        )
        .ensemble(&format!(
            "\
name: endless
agents:
  - name: forever
    loop: {{body: slow, until: \"${{done}}\", max_iterations: 1000}}
{extra}"
        ))
}

#[test]
fn timeout_stops_a_running_loop() {
    let out = slow_loop("")
        .args([
            "invoke",
            ENSEMBLE,
            "go",
            "--output",
            "json",
            "--timeout",
            "1",
        ])
        .run()
        .failure();
    let doc = out.json();
    assert_eq!(doc["status"], "timed_out");
    let forever = agent(&doc, "forever");
    assert_eq!(forever["status"], "cancelled", "{forever:#}");
    let done = forever["metrics"]["iterations"].as_u64().unwrap();
    assert!(done < 1000, "the loop stopped early ({done} iterations)");
}

#[test]
fn the_agents_timeout_seconds_bounds_the_whole_loop() {
    let out = slow_loop("    timeout_seconds: 1\n  - name: next\n    depends_on: [forever]\n")
        .args(["invoke", ENSEMBLE, "go", "--output", "json"])
        .run()
        .failure();
    let doc = out.json();
    assert_eq!(doc["status"], "failed");
    let forever = agent(&doc, "forever");
    assert_eq!(forever["status"], "failed", "{forever:#}");
    assert_eq!(forever["error_kind"], "timeout");
    assert!(
        forever["error"]
            .as_str()
            .unwrap()
            .contains("did not finish within its timeout_seconds"),
        "{forever:#}"
    );
    assert_eq!(agent(&doc, "next")["status"], "skipped");
}

#[test]
fn a_bad_loop_is_a_load_error_at_its_line() {
    let out = Test::new()
        .file("count.yaml", COUNT)
        .ensemble(
            "\
name: bad
agents:
  - name: a
    loop: {body: count, until: \"done\", max_iterations: 2}
  - name: b
    loop: {body: count, until: \"${ok}\", max_iterations: 0}
  - name: c
    loop: {body: count, until: \"${ok}\", max_iterations: 2, carry: \"${x} == 1\"}
  - name: d
    loop: {body: count, until: \"${ok}\", max_iterations: 2}
    ensemble: count
",
        )
        .args(["validate", ENSEMBLE])
        .run()
        .invalid();
    for (message, at) in [
        ("invalid `until` condition", "ensemble.yaml:4:32"),
        ("`max_iterations` must be at least 1", "ensemble.yaml:6:57"),
        ("invalid `carry`", "ensemble.yaml:8:67"),
        (
            "agent `d` sets both `ensemble` and `loop`",
            "ensemble.yaml:10:5",
        ),
    ] {
        assert!(out.stderr.contains(message), "{message}:\n{}", out.stderr);
        assert!(
            out.stderr.contains(at),
            "{message} at {at}:\n{}",
            out.stderr
        );
    }
}

#[test]
fn a_missing_or_cyclic_body_is_a_load_error() {
    let out = Test::new()
        .ensemble(
            "\
name: ensemble
agents:
  - name: a
    loop: {body: nowhere, until: \"${ok}\", max_iterations: 2}
  - name: b
    loop: {body: ensemble, until: \"${ok}\", max_iterations: 2}
",
        )
        .args(["invoke", ENSEMBLE, "x"])
        .run()
        .invalid();
    assert!(
        out.stderr
            .contains("agent `a` runs ensemble `nowhere`, which cannot be found"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("ensemble.yaml:4:18"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("nested ensembles form a cycle: ensemble.yaml -> ensemble.yaml"),
        "{}",
        out.stderr
    );
}
