//! The real wire protocols: the `orc` binary against local fake servers that speak OpenAI,
//! Anthropic, Gemini and Ollama (`fake`). Each protocol module checks the request shape,
//! plain and streamed answers, usage and cost, and how every kind of failure is classified
//! and retried; `resilience` covers fallbacks, the circuit breaker and the per-profile
//! limits; `secrets` checks that API keys never reach the output or the logs.
//!
//! Timing is measured where it happens, in the fake (when each request arrived), never as
//! the duration of a whole run.

mod anthropic;
pub(crate) mod fake;
mod gemini;
mod ollama;
mod openai;
mod resilience;
mod response_cap;
mod secrets;
mod streaming;
mod wire;

use std::time::Duration;

use serde_json::Value;

use crate::support::{ENSEMBLE, Output, Test, agent};

/// The price every priced test profile uses: $1 per million input tokens, $2 per million
/// output tokens.
const PRICE: &str = "price: {input_per_mtok: 1.0, output_per_mtok: 2.0}";

/// What `PRICE` charges for these token counts (cached input at the input price).
fn cost(input: u64, output: u64) -> f64 {
    (input as f64 * 1.0 + output as f64 * 2.0) / 1_000_000.0
}

/// An ensemble with one agent `x` on profile `p`; `agent` holds extra agent keys.
fn one_agent(profile: &str, agent: &[&str]) -> String {
    let mut yaml = format!(
        "name: t\nmodel_profiles:\n  p: {profile}\nagents:\n  - name: x\n    model_profile: p\n"
    );
    for line in agent {
        yaml.push_str("    ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

/// Agent keys for tests of retries: two retries, a short backoff, a system prompt.
const RETRYING: &[&str] = &["retries: 2", "retry_backoff_ms: 10"];

/// `orc invoke ensemble.yaml hello` in a clean temp dir (no keys in the environment).
fn invoke(yaml: &str) -> Test {
    Test::new()
        .ensemble(yaml)
        .args(["invoke", ENSEMBLE, "hello"])
}

/// Runs with `--output json`, checks the exit code, returns the document and the output.
#[track_caller]
fn run_json(test: Test, code: i32) -> (Value, Output) {
    let out = test.args(["--output", "json"]).run().code(code);
    (out.json(), out)
}

/// Runs with `--output jsonl`, checks the exit code, returns the events.
#[track_caller]
fn run_jsonl(test: Test, code: i32) -> (Vec<Value>, Output) {
    let out = test.args(["--output", "jsonl"]).run().code(code);
    (out.json_lines(), out)
}

/// The events of one type.
fn events<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// The text of every `agent_delta` of attempt `attempt`, joined.
fn deltas(all: &[Value], attempt: u64) -> String {
    events(all, "agent_delta")
        .into_iter()
        .filter(|e| e["attempt"] == attempt)
        .map(|e| e["text"].as_str().expect("delta text"))
        .collect()
}

/// Agent `x` of a `--output json` document.
#[track_caller]
fn x(doc: &Value) -> &Value {
    agent(doc, "x")
}

/// Agent `x` of the `run_finished` event of a JSON lines run.
#[track_caller]
fn x_finished(all: &[Value]) -> Value {
    let finished = events(all, "run_finished");
    assert_eq!(finished.len(), 1, "one run_finished event: {all:#?}");
    agent(&finished[0]["result"], "x").clone()
}

#[track_caller]
fn assert_cost(agent: &Value, expected: f64) {
    let got = agent["cost_usd"]
        .as_f64()
        .unwrap_or_else(|| panic!("no cost_usd in {agent:#}"));
    assert!(
        (got - expected).abs() < 1e-12,
        "cost_usd {got} != {expected} in {agent:#}"
    );
}

/// The agent failed after one request, with an error mentioning every one of `words`.
#[track_caller]
fn assert_failed_once(fake: &fake::Fake, doc: &Value, words: &[&str]) {
    let x = x(doc);
    assert_eq!(x["status"], "failed", "{x:#}");
    assert_eq!(x["attempts"], 1, "not retried: {x:#}");
    assert!(x["output"].is_null(), "{x:#}");
    let error = x["error"].as_str().expect("an error");
    for word in words {
        assert!(error.contains(word), "error lacks {word:?}: {error}");
    }
    assert_eq!(
        fake.count(),
        1,
        "exactly one request: {:#?}",
        fake.requests()
    );
}

/// The second request came at least `at_least` after the first (a provider's hint).
#[track_caller]
fn assert_waited(fake: &fake::Fake, at_least: Duration) {
    let gap = fake.gap(0, 1);
    assert!(
        gap >= at_least,
        "the retry came {gap:?} after the first request, sooner than {at_least:?}"
    );
}
