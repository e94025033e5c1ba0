//! Composing agents (issue 5): script agents, `fan_out`, `input_key`, `when` conditions,
//! `loop`, `dispatch`, `input_scope`, and ensemble files written for llm-orc running unchanged.

mod conditions;
mod dispatch;
mod fan_out;
mod input_key;
mod llm_orc;
mod llm_orc_project;
mod loops;
mod nested;
mod scripts;

use crate::support::{ENSEMBLE, Test};

/// Runs `ensemble.yaml` on `input` with `--output json`, expects exit `code`, and returns
/// the result document and stderr.
#[track_caller]
fn run_json(yaml: &str, input: &str, code: i32) -> (serde_json::Value, String) {
    let out = Test::new()
        .ensemble(yaml)
        .args(["invoke", ENSEMBLE, input, "--output", "json"])
        .run()
        .code(code);
    (out.json(), out.stderr)
}

/// An agent's output parsed as JSON.
#[track_caller]
fn output_json(agent: &serde_json::Value) -> serde_json::Value {
    let text = agent["output"]
        .as_str()
        .unwrap_or_else(|| panic!("agent has no output: {agent:#}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("output is not JSON ({e}): {text}"))
}

/// An agent's error message (panics when there is none).
#[track_caller]
fn error_of(agent: &serde_json::Value) -> &str {
    agent["error"]
        .as_str()
        .unwrap_or_else(|| panic!("agent has no error: {agent:#}"))
}
