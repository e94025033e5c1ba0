//! Agents that run other ensembles: `ensemble:` (once, here), `loop:` (`loop_agent.rs`) and
//! `dispatch:` (`dispatch_agent.rs`). The child runs through the same dispatcher one level
//! down, sharing the run's providers, slots and cancellation; its events are forwarded to
//! the parent's stream with the agent's name on their `path`. Tokens and cost roll up into
//! the agent's. An `ensemble:` agent's output is the child's final output.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::dispatcher::{Dispatch, Output, dispatch};
use super::error::AgentError;
use super::event::EventKind;
use super::job::Report;
use super::outcome::{AgentOutcome, AgentStatus, RunOutcome, RunStatus};
use super::registry::ProviderRegistry;
use super::run::{AgentTx, JobUpdate, RunCtx};
use crate::config::{Agent, Control, NodeKind};
use crate::plan::Plan;

/// Runs an `ensemble:` or `loop:` agent.
pub(crate) async fn run(
    run: &Arc<RunCtx>,
    agent: &Agent,
    input: &str,
    seed: u64,
    tx: &AgentTx,
) -> Report {
    let NodeKind::Nested(nested) = &agent.node else {
        unreachable!("nested work is prepared for nested nodes only")
    };
    if let Control::Loop(settings) = &nested.control {
        return super::loop_agent::run(run, agent, nested, settings, input, seed, tx).await;
    }
    let Some(child) = nested.ensemble.clone() else {
        return not_loaded(&nested.reference);
    };
    started(tx, agent, &nested.reference);
    let plan = Arc::new(Plan::new((*child).clone()));
    let outcome = run_child(run, &plan, input.to_string(), seed, tx, None).await;
    let finals: Vec<&AgentOutcome> = plan
        .sinks
        .iter()
        .map(|&i| &*outcome.agents[i])
        .filter(|a| a.status == AgentStatus::Succeeded)
        .collect();
    let output = match finals.as_slice() {
        [only] => only.output.clone().unwrap_or_default(),
        many => many
            .iter()
            .map(|a| format!("== {} ==\n{}", a.name, a.output.as_deref().unwrap_or("")))
            .collect::<Vec<_>>()
            .join("\n\n"),
    };
    let failed: Vec<String> = outcome
        .agents
        .iter()
        .filter(|a| matches!(a.status, AgentStatus::Failed | AgentStatus::Cancelled))
        .map(|a| {
            format!(
                "`{}`: {}",
                a.name,
                a.error.as_deref().unwrap_or(a.status.as_str())
            )
        })
        .collect();
    let status = match outcome.status {
        RunStatus::Succeeded => AgentStatus::Succeeded,
        RunStatus::Interrupted | RunStatus::Cancelled => AgentStatus::Cancelled,
        _ if run.cancel.is_cancelled() => AgentStatus::Cancelled,
        _ => AgentStatus::Failed,
    };
    let mut report = Report::new(status, "ensemble", &nested.reference, "ensemble");
    roll_up(&mut report, &outcome);
    report.metrics = Some(serde_json::json!({ "ensemble": child.name, "run": &*outcome }));
    match status {
        AgentStatus::Succeeded => {
            report.output = Some(output);
            report
        }
        AgentStatus::Cancelled => report.failed(AgentError::cancelled()),
        _ => {
            let message = if failed.is_empty() {
                format!("nested ensemble `{}` did not succeed", child.name)
            } else {
                format!("nested ensemble `{}`: {}", child.name, failed.join("; "))
            };
            report.failed(AgentError::new("nested", message))
        }
    }
}

/// Runs a `dispatch:` agent on the ensemble it chose.
pub(crate) async fn dispatched(
    run: &Arc<RunCtx>,
    agent: &Agent,
    ensemble: &str,
    input: &str,
    seed: u64,
    tx: &AgentTx,
) -> Report {
    let NodeKind::Nested(nested) = &agent.node else {
        unreachable!("dispatch work is prepared for dispatch nodes only")
    };
    let Control::Dispatch(settings) = &nested.control else {
        unreachable!("dispatch work is prepared for dispatch nodes only")
    };
    super::dispatch_agent::run(run, agent, nested, settings, ensemble, input, seed, tx).await
}

/// The report of an agent whose ensemble was not loaded with its file: the ensemble was
/// loaded from text alone (`orc resume` reads the stored file), which resolves no names.
pub(super) fn not_loaded(reference: &str) -> Report {
    Report::new(AgentStatus::Failed, "ensemble", reference, "ensemble").failed(AgentError::new(
        "nested",
        format!(
            "ensemble `{reference}` was not loaded: it is found from the ensemble's file, and this run has only its text"
        ),
    ))
}

/// Reports that the agent began running its ensemble.
pub(super) fn started(tx: &AgentTx, agent: &Agent, ensemble: &str) {
    tx.send(EventKind::AgentStarted {
        agent: agent.name.clone(),
        attempt: 1,
        profile: "ensemble".into(),
        model: ensemble.to_string(),
    });
}

/// The context a child run gets: the run's own, with a cancellation token of its own (so a
/// loop's or dispatch's `timeout_seconds` can stop it alone; cancelling the run still stops
/// it), and the providers of its plan when they are not the run's.
pub(super) fn child_ctx(run: &RunCtx, providers: Option<ProviderRegistry>) -> Arc<RunCtx> {
    Arc::new(RunCtx {
        engine: Arc::clone(&run.engine),
        providers: providers.unwrap_or_else(|| run.providers.clone()),
        stream: run.stream,
        cancel: run.cancel.child_token(),
        stop: run.stop.clone(),
        no_cache: run.no_cache,
        resume: run.resume.clone(),
        // A spread `generate` producer's shared state is that node's, not the child's.
        shared_node: None,
    })
}

/// Runs `plan` as the child of the agent `tx` reports for. Its events reach the parent's
/// stream under the agent's name; with a `label` (a loop's `#N`), under `AGENT/label`.
pub(super) async fn run_child(
    run: &Arc<RunCtx>,
    plan: &Arc<Plan>,
    input: String,
    seed: u64,
    tx: &AgentTx,
    label: Option<String>,
) -> Arc<RunOutcome> {
    let run_id = format!("{}/{}", plan.ensemble.name, label.as_deref().unwrap_or(""));
    let child = |out: AgentTx| {
        dispatch(
            Dispatch::new(Arc::clone(run), Arc::clone(plan), input, run_id, seed),
            Output::Nested(out),
        )
    };
    let Some(label) = label else {
        return child(tx.clone()).await;
    };
    // The child's dispatcher sends to a channel of ours; every event is passed on with the
    // label in front of its path. The child's sender goes away with its dispatcher, which
    // ends the forwarding once everything it sent is through, before the agent reports.
    let (proxy, mut received) = mpsc::unbounded_channel();
    let outcome = child(AgentTx {
        agent: tx.agent,
        tx: proxy,
    });
    let forward = async {
        while let Some(update) = received.recv().await {
            if let JobUpdate::Event { nested, kind, .. } = update {
                let mut path = Vec::with_capacity(1 + nested.as_ref().map_or(0, Vec::len));
                path.push(label.clone());
                path.extend(nested.unwrap_or_default());
                tx.send_nested(path, kind);
            }
        }
    };
    let (outcome, ()) = tokio::join!(outcome, forward);
    outcome
}

/// Runs `work` within `limit`: past it, `cancel` fires and the work winds down (its agents
/// report `cancelled`, scripts are killed); `true` when that happened.
pub(super) async fn bounded<T>(
    limit: Option<Duration>,
    cancel: &CancellationToken,
    work: impl Future<Output = T>,
) -> (T, bool) {
    let Some(limit) = limit else {
        return (work.await, false);
    };
    tokio::pin!(work);
    tokio::select! {
        out = &mut work => (out, false),
        () = tokio::time::sleep(limit) => {
            cancel.cancel();
            (work.await, true)
        }
    }
}

/// Adds a child run's provider calls, tokens and cost to the agent's.
pub(super) fn roll_up(report: &mut Report, outcome: &RunOutcome) {
    report.attempts += outcome.totals.attempts;
    report.usage += outcome.totals.usage;
    report.cost_usd = report
        .cost_usd
        .zip(outcome.totals.cost_usd)
        .map(|(a, b)| a + b);
    report.calls_saved += u32::try_from(outcome.totals.calls_saved).unwrap_or(u32::MAX);
}

/// What a child run delivers, as llm-orc reads it: the output of its last final agent (by
/// declaration order) that succeeded with some text.
pub(super) fn deliverable<'a>(plan: &Plan, outcome: &'a RunOutcome) -> Option<&'a str> {
    plan.sinks.iter().rev().find_map(|&i| {
        let a = &outcome.agents[i];
        (a.status == AgentStatus::Succeeded)
            .then_some(a.output.as_deref())
            .flatten()
            .filter(|o| !o.is_empty())
    })
}

/// Why a child run counts as failed for the agent running it, as in llm-orc: none of its
/// final agents succeeded, and some did not merely skip by their own condition. `None`
/// when it counts as done.
pub(super) fn terminal_failure(plan: &Plan, outcome: &RunOutcome) -> Option<String> {
    let finals: Vec<&AgentOutcome> = plan.sinks.iter().map(|&i| &*outcome.agents[i]).collect();
    if finals.iter().any(|a| a.status == AgentStatus::Succeeded) {
        return None;
    }
    let failures: Vec<String> = finals
        .iter()
        .filter(|a| !(a.status == AgentStatus::Skipped && a.neutral_skip))
        .map(|a| {
            format!(
                "`{}` {}{}",
                a.name,
                a.status.as_str(),
                a.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    (!failures.is_empty()).then(|| failures.join("; "))
}

/// Whether a child run was stopped from outside (Ctrl-C, `--timeout`, the budget, a
/// `timeout_seconds`) rather than finishing.
pub(super) fn was_stopped(ctx: &RunCtx, outcome: &RunOutcome) -> bool {
    ctx.cancel.is_cancelled()
        || matches!(
            outcome.status,
            RunStatus::Interrupted | RunStatus::Cancelled | RunStatus::TimedOut
        )
}
