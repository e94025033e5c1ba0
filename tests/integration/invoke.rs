//! `orc invoke`: where the input comes from, and what the output looks like.

use pretty_assertions::assert_eq;
use serde_json::Value;

use crate::support::{ENSEMBLE, Test, agent};

/// Two independent agents and one that depends on both, all answering at once.
const FAN_IN: &str = "\
name: fan-in
defaults:
  model_profile: mock-fast
agents:
  - name: security
    system_prompt: Find security bugs.
  - name: performance
    system_prompt: Find slow code.
  - name: summary
    depends_on: [security, performance]
    system_prompt: Merge the reviews.
";

fn fan_in() -> Test {
    Test::new().ensemble(FAN_IN)
}

/// The `input` field of `--output json` for a run with these extra arguments.
#[track_caller]
fn json_input(test: Test, extra: &[&str]) -> Value {
    let out = test
        .args(["invoke", ENSEMBLE, "--output", "json"])
        .args(extra)
        .run()
        .success();
    out.json()["input"].clone()
}

#[test]
fn stdin_is_the_input_without_its_final_newline() {
    assert_eq!(
        json_input(fan_in().stdin("fn main() {}\n"), &[]),
        "fn main() {}"
    );
}

#[test]
fn only_one_final_newline_is_removed() {
    assert_eq!(
        json_input(fan_in().stdin("line one\nline two\n\n"), &[]),
        "line one\nline two\n"
    );
    assert_eq!(json_input(fan_in().stdin("crlf\r\n"), &[]), "crlf");
    assert_eq!(json_input(fan_in().stdin("no newline"), &[]), "no newline");
}

#[test]
fn positional_input() {
    assert_eq!(
        json_input(fan_in().stdin("ignored\n"), &["is this safe?"]),
        "is this safe?"
    );
}

#[test]
fn input_option() {
    assert_eq!(
        json_input(fan_in(), &["--input", "from the option"]),
        "from the option"
    );
    assert_eq!(json_input(fan_in(), &["-i", "short form"]), "short form");
}

#[test]
fn input_file() {
    let test = fan_in().file("input.txt", "from a file\n");
    assert_eq!(
        json_input(test, &["--input-file", "input.txt"]),
        "from a file"
    );
}

#[test]
fn missing_input_file() {
    fan_in()
        .args(["invoke", ENSEMBLE, "--input-file", "missing.txt"])
        .run()
        .invalid()
        .stderr_contains("cannot read `missing.txt`");
}

#[test]
fn two_inputs_are_a_usage_error() {
    fan_in()
        .args(["invoke", ENSEMBLE, "positional", "--input", "option"])
        .run()
        .invalid();
}

#[test]
fn default_task_is_used_without_input() {
    let yaml = format!("default_task: review the default\n{FAN_IN}");
    let out = Test::new()
        .ensemble(&yaml)
        .args(["invoke", ENSEMBLE, "--output", "json"])
        .stdin("")
        .run()
        .success();
    assert_eq!(out.json()["input"], "review the default");
}

#[test]
fn text_output_is_the_final_agent() {
    let out = fan_in().args(["invoke", ENSEMBLE, "hello"]).run().success();
    let json = fan_in()
        .args(["invoke", ENSEMBLE, "hello", "--output", "json"])
        .run()
        .success()
        .json();
    assert_eq!(
        out.stdout,
        format!("{}\n", agent(&json, "summary")["output"].as_str().unwrap())
    );
    assert!(
        out.stderr.starts_with("orc: done: 3 succeeded"),
        "{}",
        out.stderr
    );
}

#[test]
fn text_output_with_several_final_agents_has_headers() {
    let yaml =
        "name: two\ndefaults:\n  model_profile: mock-fast\nagents:\n  - name: one\n  - name: two\n";
    let out = Test::new()
        .ensemble(yaml)
        .args(["invoke", ENSEMBLE, "hello", "-q"])
        .run()
        .success();
    assert!(out.stdout.starts_with("== one ==\n"), "{}", out.stdout);
    assert!(out.stdout.contains("\n\n== two ==\n"), "{}", out.stdout);
    assert_eq!(out.stderr, "", "--quiet prints no summary");
}

#[test]
fn json_document() {
    let out = fan_in()
        .args(["invoke", ENSEMBLE, "--output", "json"])
        .stdin("let x = 1;\n")
        .run()
        .success();
    let doc = out.json();
    assert!(
        doc["run_id"].as_str().is_some_and(|id| !id.is_empty()),
        "{doc:#}"
    );
    assert_eq!(doc["ensemble"], "fan-in");
    assert_eq!(doc["input"], "let x = 1;");
    assert_eq!(doc["status"], "succeeded");
    let names: Vec<&str> = doc["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["security", "performance", "summary"],
        "agents in declaration order"
    );
    for a in doc["agents"].as_array().unwrap() {
        assert_eq!(a["status"], "succeeded", "{a:#}");
        assert!(a["output"].as_str().is_some_and(|o| !o.is_empty()), "{a:#}");
        assert_eq!(a["profile"], "mock-fast");
        assert_eq!(a["model"], "mock-1");
        assert_eq!(a["provider"], "mock");
        assert_eq!(a["attempts"], 1);
        assert!(a["usage"]["input_tokens"].as_u64().unwrap() > 0, "{a:#}");
        assert!(a["usage"]["output_tokens"].as_u64().unwrap() > 0, "{a:#}");
        assert_eq!(a["cost_usd"], 0.0);
        assert!(a["latency_ms"].is_u64(), "{a:#}");
        assert!(a["error"].is_null(), "{a:#}");
        assert!(
            a["started_ms"].is_u64() && a["finished_ms"].is_u64(),
            "{a:#}"
        );
    }
    let totals = &doc["totals"];
    assert_eq!(totals["agents"], 3);
    assert_eq!(totals["succeeded"], 3);
    assert_eq!(totals["failed"], 0);
    assert_eq!(totals["skipped"], 0);
    assert_eq!(totals["cancelled"], 0);
    assert_eq!(totals["attempts"], 3);
    let sum = |key: &str| {
        doc["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["usage"][key].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(totals["usage"]["input_tokens"], sum("input_tokens"));
    assert_eq!(totals["usage"]["output_tokens"], sum("output_tokens"));
    assert_eq!(totals["cost_usd"], 0.0);
    assert!(totals["wall_ms"].is_u64());
}

#[test]
fn cost_is_computed_from_the_price() {
    let yaml = "\
name: priced
model_profiles:
  priced:
    provider: mock
    price: {input_per_mtok: 1000000, output_per_mtok: 2000000}
agents:
  - name: a
    model_profile: priced
";
    let doc = Test::new()
        .ensemble(yaml)
        .args(["invoke", ENSEMBLE, "hello", "--output", "json"])
        .run()
        .success()
        .json();
    let a = agent(&doc, "a");
    let expected = a["usage"]["input_tokens"].as_f64().unwrap()
        + 2.0 * a["usage"]["output_tokens"].as_f64().unwrap();
    assert!(
        (a["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-6,
        "{a:#}"
    );
    assert!(
        (doc["totals"]["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-6,
        "{doc:#}"
    );
}

#[test]
fn jsonl_is_a_stream_of_events_ending_with_run_finished() {
    let out = fan_in()
        .args(["invoke", ENSEMBLE, "--output", "jsonl", "hello"])
        .run()
        .success();
    let events = out.json_lines();
    assert!(events.len() > 3, "{}", out.stdout);
    for e in &events {
        assert!(
            e["type"].is_string(),
            "every line has an `event` field: {e}"
        );
    }
    assert_eq!(events[0]["type"], "run_started");
    assert_eq!(events[0]["ensemble"], "fan-in");
    assert_eq!(events[0]["agents"], 3);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "run_finished");
    assert_eq!(last["result"]["status"], "succeeded");
    assert_eq!(last["result"]["input"], "hello");
    let finished: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "agent_finished")
        .map(|e| e["agent"].as_str().unwrap())
        .collect();
    assert_eq!(finished.len(), 3, "{}", out.stdout);
    assert_eq!(
        *finished.last().unwrap(),
        "summary",
        "the dependent finishes last"
    );
    let started_summary = events
        .iter()
        .position(|e| e["type"] == "agent_started" && e["agent"] == "summary")
        .unwrap();
    for dep in ["security", "performance"] {
        let done = events
            .iter()
            .position(|e| e["type"] == "agent_finished" && e["agent"] == dep)
            .unwrap();
        assert!(
            done < started_summary,
            "`{dep}` finishes before `summary` starts:\n{}",
            out.stdout
        );
    }
}

#[test]
fn dependents_build_on_their_dependencies() {
    let doc = fan_in()
        .args(["invoke", ENSEMBLE, "hello", "--output", "json"])
        .run()
        .success()
        .json();
    let summary = agent(&doc, "summary")["output"].as_str().unwrap();
    assert!(
        summary.contains("Building on security, performance."),
        "{summary}"
    );
    let security = agent(&doc, "security")["output"].as_str().unwrap();
    assert!(!security.contains("Building on"), "{security}");
    assert!(
        security.contains("Find security bugs"),
        "the mock names the role: {security}"
    );
    assert!(
        security.contains("\"hello\""),
        "the mock quotes the input: {security}"
    );
}

#[test]
fn dependents_of_an_empty_input_quote_the_empty_input() {
    let doc = fan_in()
        .args(["invoke", ENSEMBLE, "--input", "", "--output", "json"])
        .run()
        .success()
        .json();
    let summary = agent(&doc, "summary")["output"].as_str().unwrap();
    assert!(summary.contains("On \"\" (0 words)"), "{summary}");
    assert!(
        summary.contains("Building on security, performance."),
        "{summary}"
    );
}

#[test]
fn prompt_template_is_rendered() {
    let yaml = "\
name: templated
defaults:
  model_profile: mock-fast
agents:
  - name: a
  - name: b
    depends_on: [a]
    prompt: \"Shout {{ input | upper }} after {% for d in deps %}{{ d.name }}{% endfor %}\"
";
    let doc = Test::new()
        .ensemble(yaml)
        .args(["invoke", ENSEMBLE, "hi there", "--output", "json"])
        .run()
        .success()
        .json();
    let b = agent(&doc, "b")["output"].as_str().unwrap();
    assert!(b.contains("\"Shout HI THERE after a\""), "{b}");
}

/// Outputs of a run, without the parts that change from run to run.
fn outputs(doc: &Value) -> Vec<(String, String)> {
    doc["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["output"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn same_seed_same_run() {
    let run = |seed: &str| {
        fan_in()
            .args([
                "invoke", ENSEMBLE, "hello", "--output", "json", "--seed", seed,
            ])
            .run()
            .success()
            .json()
    };
    let (a, b, c) = (run("7"), run("7"), run("8"));
    assert_eq!(outputs(&a), outputs(&b));
    assert_eq!(a["totals"]["usage"], b["totals"]["usage"]);
    assert_ne!(outputs(&a), outputs(&c), "another seed gives other outputs");
}

#[test]
fn seed_from_the_environment() {
    let flag = fan_in()
        .args(["invoke", ENSEMBLE, "hello", "-q", "--seed", "42"])
        .run()
        .success();
    let env = fan_in()
        .args(["invoke", ENSEMBLE, "hello", "-q"])
        .env("ORC_SEED", "42")
        .run()
        .success();
    assert_eq!(flag.stdout, env.stdout);
}

#[test]
fn quiet_prints_nothing_on_stderr() {
    fan_in()
        .args(["invoke", ENSEMBLE, "hello", "--quiet"])
        .run()
        .success()
        .stderr("");
}

#[test]
fn agent_on_an_unimplemented_provider_is_refused() {
    let yaml = "name: remote\nagents:\n  - name: a\n    provider: openai\n    model: gpt-4o\n";
    let out = Test::new()
        .ensemble(yaml)
        .args(["invoke", ENSEMBLE, "hello"])
        .run()
        .invalid();
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("openai"), "{}", out.stderr);
}
