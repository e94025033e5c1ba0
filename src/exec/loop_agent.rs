//! `loop:` agents, with llm-orc's semantics: the body ensemble runs again and again (through
//! the same dispatcher one level down) until `until` holds over its output or
//! `max_iterations` is reached. The body's output is its last final agent's output, read as
//! a JSON object (anything else is `{"value": ...}`); `carry` picks from it the next
//! iteration's input. The agent's output is `{"output", "iterations", "terminated",
//! "has_errors"}` (plus `iteration_failures` when an earlier iteration's body failed), and
//! it fails only when the last iteration's body did.
//!
//! Each iteration's events reach the parent's stream with `AGENT/#N` on their path; every
//! iteration's tokens and cost roll up into the agent. Cancelling the run stops the loop
//! between and within iterations; the agent's own `timeout_seconds` bounds the whole loop.

use std::sync::Arc;

use serde_json::{Value, json};

use super::error::AgentError;
use super::job::Report;
use super::nested::{
    bounded, child_ctx, deliverable, roll_up, run_child, started, terminal_failure, was_stopped,
};
use super::outcome::{AgentStatus, RunOutcome, RunStatus};
use super::run::{AgentTx, RunCtx};
use crate::config::{Agent, LoopSettings, Nested};
use crate::plan::Plan;

/// What the iterations came to.
struct Iterations {
    done: u32,
    /// `until` held (else the bound was reached, or the loop was stopped).
    until: bool,
    /// The last iteration's body output.
    output: Value,
    runs: Vec<Arc<RunOutcome>>,
    /// (iteration, why its body failed).
    failures: Vec<(u32, String)>,
    stopped: bool,
}

pub(super) async fn run(
    run: &Arc<RunCtx>,
    agent: &Agent,
    nested: &Nested,
    settings: &LoopSettings,
    input: &str,
    seed: u64,
    tx: &AgentTx,
) -> Report {
    let Some(body) = nested.ensemble.clone() else {
        return super::nested::not_loaded(&nested.reference);
    };
    started(tx, agent, &nested.reference);
    let plan = Arc::new(Plan::new((*body).clone()));
    let ctx = child_ctx(run, None);
    let (it, timed_out) = bounded(
        settings.timeout,
        &ctx.cancel,
        iterate(&ctx, &plan, settings, input, seed, tx),
    )
    .await;
    let mut report = Report::new(
        AgentStatus::Succeeded,
        "ensemble",
        &nested.reference,
        "ensemble",
    );
    for outcome in &it.runs {
        roll_up(&mut report, outcome);
    }
    let terminated = if it.until { "until" } else { "exhausted" };
    report.metrics = Some(json!({
        "ensemble": body.name,
        "iterations": it.done,
        "terminated": terminated,
        "runs": it.runs,
    }));
    if timed_out {
        let limit = settings.timeout.unwrap_or_default().as_secs_f64();
        return report.failed(AgentError::new(
            "timeout",
            format!(
                "loop `{}` did not finish within its timeout_seconds ({limit}s; {} iteration{} done)",
                agent.name,
                it.done,
                if it.done == 1 { "" } else { "s" }
            ),
        ));
    }
    if it.stopped || run.cancel.is_cancelled() {
        return report.failed(AgentError::cancelled());
    }
    if let Some((n, why)) = it.failures.last().filter(|(n, _)| *n == it.done) {
        return report.failed(AgentError::new(
            "loop",
            format!(
                "loop body `{}` produced no successful final agent on iteration {n}: {why}",
                body.name
            ),
        ));
    }
    let has_errors = it
        .runs
        .last()
        .is_some_and(|o| o.status != RunStatus::Succeeded);
    let mut output = json!({
        "output": it.output,
        "iterations": it.done,
        "terminated": terminated,
        "has_errors": has_errors,
    });
    if !it.failures.is_empty() {
        output["iteration_failures"] = it
            .failures
            .iter()
            .map(|(n, why)| json!({"iteration": n, "error": why}))
            .collect();
    }
    report.output = Some(output.to_string());
    report
}

async fn iterate(
    ctx: &Arc<RunCtx>,
    plan: &Arc<Plan>,
    settings: &LoopSettings,
    input: &str,
    seed: u64,
    tx: &AgentTx,
) -> Iterations {
    let mut it = Iterations {
        done: 0,
        until: false,
        output: json!({}),
        runs: Vec::new(),
        failures: Vec::new(),
        stopped: false,
    };
    let mut current = input.to_string();
    for n in 1..=settings.max_iterations {
        if ctx.cancel.is_cancelled() {
            it.stopped = true;
            break;
        }
        let outcome = run_child(ctx, plan, current.clone(), seed, tx, Some(format!("#{n}"))).await;
        it.runs.push(Arc::clone(&outcome));
        if was_stopped(ctx, &outcome) {
            it.stopped = true;
            break;
        }
        it.done = n;
        if let Some(why) = terminal_failure(plan, &outcome) {
            it.failures.push((n, why));
        }
        it.output = body_output(deliverable(plan, &outcome));
        let text = it.output.to_string();
        if settings.until.eval(Some(&text)) {
            it.until = true;
            break;
        }
        // A missing (or null) carried value keeps the input as it was.
        let carried = settings
            .carry
            .as_ref()
            .and_then(|path| crate::json_path::get(&it.output, path))
            .filter(|v| !v.is_null());
        match carried {
            Some(Value::String(s)) => current.clone_from(s),
            Some(other) => current = other.to_string(),
            None => {}
        }
    }
    it
}

/// The body's output as `until` and `carry` read it: a JSON object, `{"value": ...}` for
/// other JSON or text, `{}` when the body delivered nothing.
fn body_output(delivered: Option<&str>) -> Value {
    match delivered {
        None => json!({}),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Value::Object(map),
            Ok(other) => json!({ "value": other }),
            Err(_) => json!({ "value": text }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_output_is_always_an_object() {
        assert_eq!(body_output(None), json!({}));
        assert_eq!(body_output(Some(r#"{"a": 1}"#)), json!({"a": 1}));
        assert_eq!(body_output(Some("[1, 2]")), json!({"value": [1, 2]}));
        assert_eq!(
            body_output(Some("plain text")),
            json!({"value": "plain text"})
        );
    }
}
