//! `dispatch:` (issue 11): the ensemble an upstream agent's output names runs as the agent,
//! loaded when it runs (next to the file or by name on the search path); its record is the
//! output, as llm-orc gives it; tokens and cost roll up; a target that cannot run fails the
//! agent with the reason; `input_scope: dependencies` keeps the run input out.

use pretty_assertions::assert_eq;

use super::output_json;
use crate::support::{ENSEMBLE, Test, agent};

/// Routes `!`-inputs to `shout`, others to `whisper`; `text` is what the target gets.
const ROUTE_PY: &str = "\
import json, sys
text = json.load(sys.stdin)['input_data']
target = 'shout' if '!' in text else ('whisper' if text else '')
print(json.dumps({'target': target, 'text': text.strip('!')}))
";

const SHOUT: &str = "\
name: shout
agents:
  - name: up
    run: [python3, -c, \"import json, sys; print(json.load(sys.stdin)['input_data'].upper())\"]
";

/// On the search path, with a priced mock model.
const WHISPER: &str = "\
name: whisper
model_profiles:
  priced: {provider: mock, latency_ms: 0, price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}
agents:
  - name: low
    model_profile: priced
";

const ROUTER: &str = "\
name: router
agents:
  - name: route
    script: route.py
  - name: run
    dispatch: \"${route.target}\"
    input_key: text
    depends_on: [route]
";

fn router() -> Test {
    Test::new()
        .file("route.py", ROUTE_PY)
        .file("shout.yaml", SHOUT)
        .file(".orc/ensembles/whisper.yaml", WHISPER)
        .ensemble(ROUTER)
}

#[test]
fn dispatch_runs_the_ensemble_a_dependency_names() {
    let out = router()
        .args(["invoke", ENSEMBLE, "hello there!", "--output", "json"])
        .run()
        .success();
    let doc = out.json();
    let run = agent(&doc, "run");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(
        run["model"], "shout",
        "the outcome names the chosen ensemble"
    );
    assert_eq!(run["provider"], "ensemble");
    assert_eq!(
        output_json(run),
        serde_json::json!({
            "ensemble": "shout",
            "status": "completed",
            "has_errors": false,
            "deliverable": "HELLO THERE",
            "results": {"up": {"response": "HELLO THERE", "status": "success"}},
        })
    );
    assert_eq!(run["metrics"]["ensemble"], "shout");
    assert_eq!(run["metrics"]["run"]["input"], "hello there");
}

#[test]
fn a_target_on_the_search_path_runs_and_its_usage_rolls_up() {
    let out = router()
        .args(["invoke", ENSEMBLE, "hello there", "--output", "jsonl"])
        .run()
        .success();
    let events = out.json_lines();
    let child_start = events
        .iter()
        .find(|e| e["type"] == "run_started" && e.get("path").is_some())
        .expect("the dispatched run is on the stream");
    assert_eq!(child_start["path"], serde_json::json!(["run"]));
    assert_eq!(child_start["ensemble"], "whisper");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "call_finished" && e["path"] == serde_json::json!(["run"])),
        "the dispatched run's calls are on the stream"
    );
    let doc = &events.last().unwrap()["result"];
    let run = agent(doc, "run");
    let record = output_json(run);
    assert_eq!(record["ensemble"], "whisper");
    assert!(
        record["deliverable"]
            .as_str()
            .unwrap()
            .contains("\"hello there\""),
        "{record:#}"
    );
    let child = &run["metrics"]["run"];
    assert_eq!(run["usage"], child["totals"]["usage"]);
    assert!(run["usage"]["output_tokens"].as_u64().unwrap() > 0);
    assert_eq!(run["cost_usd"], child["totals"]["cost_usd"]);
    assert!(run["cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(doc["totals"]["cost_usd"], run["cost_usd"]);
}

#[test]
fn a_target_that_cannot_be_resolved_fails_the_agent() {
    // An empty input makes the router name no ensemble.
    let out = router()
        .args(["invoke", ENSEMBLE, "", "--output", "json"])
        .run()
        .failure();
    let run = agent(&out.json(), "run").clone();
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error_kind"], "dispatch");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("`${route.target}` names no ensemble"),
        "{run:#}"
    );
}

fn dispatch_to(target: &str) -> Test {
    Test::new()
        .file(
            "pick.py",
            format!("import json\nprint(json.dumps({{'target': {target:?}}}))\n"),
        )
        .file(
            "broken.yaml",
            "name: broken\nagents:\n  - name: a\n    depends_on: [nobody]\n",
        )
        .ensemble(
            "\
name: picker
agents:
  - name: pick
    script: pick.py
  - name: go
    dispatch: \"${pick.target}\"
    depends_on: [pick]
",
        )
}

#[test]
fn an_unknown_or_invalid_target_fails_with_the_reason() {
    for (target, expected) in [
        (
            "nowhere",
            "`go` chose ensemble `nowhere`: no ensemble named `nowhere`",
        ),
        (
            "broken",
            "`go` chose ensemble `broken`: ensemble `broken` is invalid: broken.yaml:4:18: agent `a` depends on unknown agent `nobody`",
        ),
        ("../escape", "`../escape` is not an ensemble name"),
    ] {
        let out = dispatch_to(target)
            .args(["invoke", ENSEMBLE, "x", "--output", "json"])
            .run()
            .failure();
        let go = agent(&out.json(), "go").clone();
        assert_eq!(go["status"], "failed");
        assert!(
            go["error"].as_str().unwrap().contains(expected),
            "{target}: expected {expected:?} in {go:#}"
        );
    }
}

#[test]
fn a_named_target_is_loaded_with_the_file() {
    let out = Test::new()
        .ensemble(
            "\
name: fixed
agents:
  - name: go
    dispatch: elsewhere
",
        )
        .args(["validate", ENSEMBLE])
        .run()
        .invalid();
    assert!(
        out.stderr
            .contains("agent `go` runs ensemble `elsewhere`, which cannot be found"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("ensemble.yaml:4:15"), "{}", out.stderr);
}

#[test]
fn a_bad_dispatch_is_a_load_error_at_its_line() {
    let out = Test::new()
        .ensemble(
            "\
name: bad
agents:
  - name: route
    run: [echo, '{}']
  - name: a
    dispatch: \"${rout.target}\"
    depends_on: [route]
  - name: b
    dispatch: \"${route.target\"
    depends_on: [route]
  - name: c
    dispatch: \"${route.target}\"
    script: c.py
    depends_on: [route]
",
        )
        .args(["validate", ENSEMBLE])
        .run()
        .invalid();
    for (message, at) in [
        (
            "`dispatch` of agent `a` reads `rout`, which is not among its dependencies",
            "ensemble.yaml:6:15",
        ),
        (
            "invalid `dispatch`: `${` is not closed",
            "ensemble.yaml:9:15",
        ),
        (
            "agent `c` sets both `script` and `dispatch`",
            "ensemble.yaml:12:5",
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

/// llm-orc's retry round in small: a loop whose body routes, dispatches and unwraps, and
/// carries the round's verdict into the next round.
#[test]
fn a_loop_of_dispatched_rounds_carries_the_verdict() {
    let out = Test::new()
        .file(
            "round.yaml",
            "\
name: round
agents:
  - name: route
    run: [python3, -c, \"import json, sys; t = json.load(sys.stdin)['input_data']; print(json.dumps({'target': 'fix' if 'retry' in t else 'first', 'input': t}))\"]
  - name: go
    dispatch: \"${route.target}\"
    input_key: input
    depends_on: [route]
  - name: unwrap
    run: [python3, -c, \"import json, sys; d = json.load(sys.stdin)['dependencies']['go']['output']; print(d['deliverable'])\"]
    depends_on: [go]
",
        )
        .file(
            "first.yaml",
            "name: first\nagents:\n  - name: try\n    run: [echo, '{\"accept\": false, \"retry\": \"retry: tests failed\"}']\n",
        )
        .file(
            "fix.yaml",
            "name: fix\nagents:\n  - name: fix\n    run: [echo, '{\"accept\": true}']\n",
        )
        .ensemble(
            "\
name: gated
agents:
  - name: rounds
    loop: {body: round, until: \"${accept}\", max_iterations: 3, carry: \"${retry}\"}
",
        )
        .args(["invoke", ENSEMBLE, "write add()", "--output", "json"])
        .run()
        .success();
    let doc = out.json();
    let rounds = agent(&doc, "rounds");
    let result = output_json(rounds);
    assert_eq!(result["iterations"], 2);
    assert_eq!(result["terminated"], "until");
    assert_eq!(result["output"], serde_json::json!({"accept": true}));
    let runs = rounds["metrics"]["runs"].as_array().unwrap();
    assert_eq!(runs[1]["input"], "retry: tests failed");
    let dispatched: Vec<&str> = runs
        .iter()
        .map(|r| {
            r["agents"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["name"] == "go")
                .unwrap()["model"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(dispatched, ["first", "fix"]);
}

#[test]
fn input_scope_dependencies_keeps_the_run_input_out() {
    let echo = "\
name: echo
agents:
  - name: same
    run: [python3, -c, \"import json, sys; print(json.load(sys.stdin)['input_data'])\"]
";
    let out = Test::new()
        .file("echo.yaml", echo)
        .ensemble(
            "\
name: scoped
agents:
  - name: facts
    run: [echo, the facts]
  - name: isolated
    ensemble: echo
    input_scope: dependencies
    depends_on: [facts]
  - name: open
    ensemble: echo
    depends_on: [facts]
",
        )
        .args(["invoke", ENSEMBLE, "secret context", "--output", "json"])
        .run()
        .success();
    let doc = out.json();
    assert_eq!(
        agent(&doc, "isolated")["output"],
        "Output of `facts`:\nthe facts"
    );
    assert_eq!(
        agent(&doc, "open")["output"],
        "secret context\n\nOutput of `facts`:\nthe facts"
    );
}

#[test]
fn input_scope_dependencies_keeps_the_run_input_from_a_model() {
    // The mock quotes the input part of its prompt, before the dependencies' outputs.
    let out = Test::new()
        .ensemble(
            "\
name: scoped
agents:
  - name: facts
    model_profile: mock-fast
  - name: verifier
    model_profile: mock-fast
    input_scope: dependencies
    depends_on: [facts]
  - name: reviewer
    model_profile: mock-fast
    depends_on: [facts]
",
        )
        .args(["invoke", ENSEMBLE, "the secret context", "--output", "json"])
        .run()
        .success();
    let doc = out.json();
    let output = |name: &str| agent(&doc, name)["output"].as_str().unwrap().to_string();
    assert!(
        output("reviewer").contains("On \"the secret context\""),
        "{doc:#}"
    );
    assert!(output("reviewer").contains("Building on facts"), "{doc:#}");
    assert!(!output("verifier").contains("secret"), "{doc:#}");
    assert!(output("verifier").contains("Building on facts"), "{doc:#}");
}

#[test]
fn input_scope_is_checked_at_load() {
    let out = Test::new()
        .ensemble(
            "\
name: scoped
agents:
  - name: a
    input_scope: dependencies
  - name: b
    input_scope: dependencies
    depends_on: [a]
    prompt: \"{{ input }}: {{ deps[0].output }}\"
  - name: c
    input_scope: everything
",
        )
        .args(["validate", ENSEMBLE])
        .run()
        .invalid();
    for (message, at) in [
        (
            "`input_scope: dependencies` does nothing for agent `a`, which has no dependencies",
            "ensemble.yaml:4:5",
        ),
        (
            "template of agent `b` reads `input`, which `input_scope: dependencies` keeps from it",
            "ensemble.yaml:8:13",
        ),
        (
            "`input_scope` has invalid value `everything`",
            "ensemble.yaml:10:18",
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
