//! Nested ensembles (`ensemble: NAME|PATH`): the child runs through the same dispatcher one
//! level down, sharing the run's providers, slots and cancellation; its events are forwarded
//! to the parent's stream with the agent's name on their `path`. Its final output is the
//! agent's output; its tokens and cost roll up into the agent's.

use std::sync::Arc;

use super::dispatcher::{Dispatch, Output, dispatch};
use super::error::AgentError;
use super::event::EventKind;
use super::job::Report;
use super::outcome::{AgentOutcome, AgentStatus, RunStatus};
use super::run::{AgentTx, RunCtx};
use crate::config::{Agent, NodeKind};
use crate::plan::Plan;

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
    let child = nested
        .ensemble
        .clone()
        .expect("nested ensembles are loaded with the file that names them");
    tx.send(EventKind::AgentStarted {
        agent: agent.name.clone(),
        attempt: 1,
        profile: "ensemble".into(),
        model: nested.reference.clone(),
    });
    let plan = Arc::new(Plan::new((*child).clone()));
    let outcome = dispatch(
        Dispatch::new(
            Arc::clone(run),
            Arc::clone(&plan),
            input.to_string(),
            format!("{}/{}", agent.name, child.name),
            seed,
        ),
        Output::Nested(tx.clone()),
    )
    .await;
    let finals: Vec<&AgentOutcome> = plan
        .sinks
        .iter()
        .map(|&i| &outcome.agents[i])
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
    report.attempts = outcome.totals.attempts;
    report.usage = outcome.totals.usage;
    report.cost_usd = outcome.totals.cost_usd;
    report.calls_saved = outcome.totals.calls_saved as u32;
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
