//! `dispatch:` agents, with llm-orc's semantics: run the ensemble a dependency's output named
//! (resolved in `prepare.rs`), loaded now by the `EnsembleLoader` the file was loaded with,
//! through the same dispatcher one level down. Its events reach the parent's stream under
//! the agent's name, its tokens and cost roll up into the agent's. The agent's output is
//! llm-orc's record of the child run (`{"ensemble", "status", "has_errors", "deliverable",
//! "results": {agent: {"response", "status", "error"}}}`), which llm-orc's scripts read; it
//! fails when none of the child's final agents succeeded.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::error::AgentError;
use super::job::Report;
use super::nested::{
    bounded, child_ctx, deliverable, roll_up, run_child, started, terminal_failure, was_stopped,
};
use super::outcome::{AgentStatus, RunOutcome, RunStatus};
use super::run::{AgentTx, RunCtx};
use crate::config::{Agent, DispatchSettings, Ensemble, LoadFailure, Nested};
use crate::plan::Plan;

#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    run: &Arc<RunCtx>,
    agent: &Agent,
    nested: &Nested,
    settings: &DispatchSettings,
    target: &str,
    input: &str,
    seed: u64,
    tx: &AgentTx,
) -> Report {
    started(tx, agent, target);
    let mut report = Report::new(AgentStatus::Succeeded, "ensemble", target, "ensemble");
    let fail =
        |report: Report, message: String| report.failed(AgentError::new("dispatch", message));
    // Named in the file: loaded with it, its profiles among the run's.
    let (child, providers) = match &nested.ensemble {
        Some(child) => (Arc::clone(child), None),
        None => {
            let loaded: Result<Arc<Ensemble>, LoadFailure> = match &settings.loader {
                Some(loader) => loader.load(target),
                None => Err(LoadFailure::NotFound {
                    reference: target.to_string(),
                }),
            };
            let child = match loaded {
                Ok(child) => child,
                Err(e) => {
                    return fail(
                        report,
                        format!("`{}` chose ensemble `{target}`: {e}", agent.name),
                    );
                }
            };
            let plan = Plan::new((*child).clone());
            match run.engine.providers_for(&plan) {
                Ok(providers) => (child, Some(providers)),
                Err((profile, error)) => {
                    return fail(
                        report,
                        format!("ensemble `{target}`: profile `{profile}`: {error}"),
                    );
                }
            }
        }
    };
    let plan = Arc::new(Plan::new((*child).clone()));
    let ctx = child_ctx(run, providers);
    let (outcome, timed_out) = bounded(
        settings.timeout,
        &ctx.cancel,
        run_child(&ctx, &plan, input.to_string(), seed, tx, None),
    )
    .await;
    roll_up(&mut report, &outcome);
    report.metrics = Some(json!({ "ensemble": child.name, "run": &*outcome }));
    if timed_out {
        let limit = settings.timeout.unwrap_or_default().as_secs_f64();
        return report.failed(AgentError::new(
            "timeout",
            format!(
                "ensemble `{}` did not finish within the timeout_seconds of `{}` ({limit}s)",
                child.name, agent.name
            ),
        ));
    }
    if was_stopped(&ctx, &outcome) {
        return report.failed(AgentError::cancelled());
    }
    if let Some(why) = terminal_failure(&plan, &outcome) {
        return fail(
            report,
            format!(
                "ensemble `{}` produced no successful final agent: {why}",
                child.name
            ),
        );
    }
    report.output = Some(record(&plan, &outcome).to_string());
    report
}

/// llm-orc's record of a child run, as its `dispatch` agents answer.
fn record(plan: &Plan, outcome: &RunOutcome) -> Value {
    let results: Map<String, Value> = outcome
        .agents
        .iter()
        .map(|a| {
            let status = match a.status {
                AgentStatus::Succeeded => "success",
                AgentStatus::Failed => "failed",
                AgentStatus::Skipped => "skipped",
                AgentStatus::Cancelled => "cancelled",
            };
            let mut entry = json!({ "response": a.output, "status": status });
            if let Some(error) = &a.error {
                entry["error"] = json!(error);
            }
            (a.name.clone(), entry)
        })
        .collect();
    let has_errors = outcome.status != RunStatus::Succeeded;
    let mut record = json!({
        "ensemble": outcome.ensemble,
        "status": if has_errors { "completed_with_errors" } else { "completed" },
        "has_errors": has_errors,
        "results": results,
    });
    if let Some(text) = deliverable(plan, outcome) {
        record["deliverable"] = json!(text);
    }
    record
}
