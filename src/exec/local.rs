//! The in-process executor: runs one job (an agent's prepared work) with the providers,
//! limits and policies of its run, reporting events and one `Report` to the dispatcher.
//! One function per kind of work; agents that run ensembles are in `nested.rs`,
//! `loop_agent.rs` and `dispatch_agent.rs`.

use std::sync::Arc;

use super::call::Caller;
use super::error::AgentError;
use super::event::{EventKind, NodeProgress};
use super::job::{Job, Report, Work};
use super::outcome::AgentStatus;
use super::run::{AgentTx, RunCtx};
use crate::config::{Agent, NodeKind};
use crate::nodes;
use crate::plan::Plan;

/// Runs a job to its report. `plan` is the plan the agent belongs to (a nested ensemble's
/// own plan for its agents).
pub(crate) async fn execute(run: Arc<RunCtx>, plan: Arc<Plan>, job: Job, tx: AgentTx) {
    // If this task ends without a report (a panic in a provider or a node), the agent still
    // finishes, as failed, instead of the run waiting for it forever.
    let mut guard = ReportGuard {
        tx: &tx,
        reported: false,
    };
    let agent = &plan.ensemble.agents[job.agent];
    let exec = Local {
        run: &run,
        agent,
        job: &job,
        tx: &tx,
    };
    let report = match &job.work {
        Work::FanOut(works) => Box::pin(exec.fan_out(works)).await,
        single => exec.single(single).await,
    };
    guard.reported = true;
    tx.done(report);
}

struct ReportGuard<'a> {
    tx: &'a AgentTx,
    reported: bool,
}

impl Drop for ReportGuard<'_> {
    fn drop(&mut self) {
        // A cancelled run aborts its tasks: nobody is waiting for a report then.
        if !self.reported && !std::thread::panicking() {
            return;
        }
        if !self.reported {
            self.tx.done(
                Report::new(AgentStatus::Failed, "", "", "").failed(AgentError::new(
                    "internal",
                    "the agent's task stopped unexpectedly (an internal error; please report it)",
                )),
            );
        }
    }
}

struct Local<'a> {
    run: &'a Arc<RunCtx>,
    agent: &'a Agent,
    job: &'a Job,
    tx: &'a AgentTx,
}

impl Local<'_> {
    fn caller(&self) -> Caller<'_> {
        Caller {
            run: self.run,
            agent: self.agent,
            tx: self.tx,
        }
    }

    /// The future of a plain LLM call stays small; rarer kinds of work are boxed, so every
    /// task of a 100,000-agent run does not carry the largest kind's state.
    async fn single(&self, work: &Work) -> Report {
        match work {
            Work::Prompt(prompt) => self.caller().attempt_all(prompt, self.job.seed).await,
            Work::Topic(topic) => Box::pin(self.generate(topic)).await,
            Work::Lists(lists) => self.dedup(lists),
            Work::Script(stdin) => Box::pin(self.script(stdin)).await,
            Work::Ensemble(input) => {
                Box::pin(super::nested::run(
                    self.run,
                    self.agent,
                    input,
                    self.job.seed,
                    self.tx,
                ))
                .await
            }
            Work::Dispatch { ensemble, input } => {
                Box::pin(super::nested::dispatched(
                    self.run,
                    self.agent,
                    ensemble,
                    input,
                    self.job.seed,
                    self.tx,
                ))
                .await
            }
            Work::FanOut(_) => unreachable!("fan-out instances are single pieces of work"),
        }
    }

    /// Reports that the agent began (for kinds whose calls do not say so themselves).
    fn started(&self, profile: &str, model: &str) {
        self.tx.send(EventKind::AgentStarted {
            agent: self.agent.name.clone(),
            attempt: 1,
            profile: profile.to_string(),
            model: model.to_string(),
        });
    }

    /// Every instance concurrently (each takes its own slots), gathered back in order as a
    /// JSON array; a failed instance is `null` there and named in the error.
    async fn fan_out(&self, works: &[Work]) -> Report {
        let results = futures_util::future::join_all(works.iter().map(|w| self.single(w))).await;
        let mut outputs = Vec::with_capacity(results.len());
        let mut failures = Vec::new();
        let mut report = Report::new(
            AgentStatus::Succeeded,
            &self.agent.profile.name,
            &self.agent.profile.model,
            self.agent.profile.provider.as_str(),
        );
        let mut cancelled = false;
        for (i, r) in results.iter().enumerate() {
            report.usage += r.usage;
            report.attempts += r.attempts;
            report.calls_saved += r.calls_saved;
            report.cost_usd = report.cost_usd.zip(r.cost_usd).map(|(a, b)| a + b);
            match r.status {
                AgentStatus::Succeeded => {
                    let text = r.output.clone().unwrap_or_default();
                    outputs.push(
                        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
                    );
                }
                AgentStatus::Cancelled => {
                    cancelled = true;
                    outputs.push(serde_json::Value::Null);
                }
                _ => {
                    failures.push(format!(
                        "`{}[{i}]`: {}",
                        self.agent.name,
                        r.error.as_ref().map_or("failed", |e| e.message.as_str())
                    ));
                    outputs.push(serde_json::Value::Null);
                }
            }
        }
        report.output = Some(serde_json::Value::Array(outputs).to_string());
        report.metrics = Some(serde_json::json!({
            "instances": works.len(),
            "failed_instances": failures.len(),
        }));
        if cancelled {
            report.failed(AgentError::cancelled())
        } else if failures.is_empty() {
            report
        } else {
            let message = format!(
                "{} of {} instances failed: {}",
                failures.len(),
                works.len(),
                failures.join("; ")
            );
            let mut report = report.failed(AgentError::new("fan_out", message));
            report.status = AgentStatus::Failed;
            report
        }
    }

    async fn script(&self, stdin: &serde_json::Value) -> Report {
        let NodeKind::Script(script) = &self.agent.node else {
            unreachable!("script work is prepared for script nodes only")
        };
        let program = script.argv.first().cloned().unwrap_or_default();
        self.started("script", &program);
        let result = nodes::script::run(script, stdin, self.agent.timeout, &self.run.cancel).await;
        let mut report = Report::new(AgentStatus::Succeeded, "script", &program, "script");
        report.attempts = 1;
        match result {
            Ok(out) => {
                report.output = Some(out);
                report
            }
            Err(nodes::script::ScriptError::Cancelled) => report.failed(AgentError::cancelled()),
            Err(nodes::script::ScriptError::Failed(e)) => {
                report.failed(AgentError::new("script", e))
            }
        }
    }

    fn dedup(&self, lists: &[(String, String)]) -> Report {
        let NodeKind::Dedup(settings) = &self.agent.node else {
            unreachable!("dedup work is prepared for dedup nodes only")
        };
        self.started("dedup", "dedup");
        let (items, metrics) =
            nodes::dedup::dedup(lists, settings.normalize, settings.near_duplicates);
        let output = items
            .iter()
            .map(|i| i.text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let mut report = Report::new(AgentStatus::Succeeded, "dedup", "dedup", "dedup");
        report.output = Some(output);
        report.items = Some(serde_json::to_value(&items).expect("items serialize"));
        report.metrics = Some(serde_json::to_value(&metrics).expect("metrics serialize"));
        report
    }

    async fn generate(&self, topic: &str) -> Report {
        let NodeKind::Generate(settings) = &self.agent.node else {
            unreachable!("a topic is prepared for generate nodes only")
        };
        let first = &settings.profiles[0];
        self.started(&first.name, &first.model);
        let agent_name = self.agent.name.clone();
        let tx = self.tx.clone();
        let events = move |event: nodes::generate::NodeEvent| {
            let kind = match event {
                nodes::generate::NodeEvent::Progress(p) => {
                    EventKind::NodeProgress(Box::new(NodeProgress {
                        agent: agent_name.clone(),
                        unique: p.unique,
                        candidates: p.candidates,
                        calls: p.calls,
                        uam: p.uam,
                        cost_usd: p.cost_usd,
                        cost_per_minute: p.cost_per_minute,
                        call: Some(p.call),
                        new: Some(p.new),
                    }))
                }
                nodes::generate::NodeEvent::Item(item) => EventKind::ItemAccepted {
                    agent: agent_name.clone(),
                    text: item.text.clone(),
                    producer: item.producer,
                    profile: item.profile.clone(),
                    call: item.call,
                    at: item.at,
                },
            };
            tx.send(kind);
        };
        let ctx = nodes::generate::Context {
            caller: self.caller(),
            agent: self.agent,
            settings,
            topic: topic.to_string(),
            input: self.job.input.to_string(),
            seed: self.job.seed,
            resume: self.job.resume.clone(),
            files: &self.run.engine.files,
            stop: self.run.stop.clone(),
            shared: self.run.shared_node.clone(),
        };
        let mut report = Report::new(
            AgentStatus::Succeeded,
            &first.name,
            &first.model,
            first.provider.as_str(),
        );
        match nodes::generate::run(ctx, events).await {
            Ok(outcome) => {
                use nodes::generate::StopReason;
                report.output = Some(
                    outcome
                        .items
                        .iter()
                        .map(|i| i.text.as_str())
                        .collect::<Vec<_>>()
                        .join("\n"),
                );
                report.attempts = outcome.calls as u32;
                report.usage = outcome.usage;
                report.cost_usd = outcome.metrics.cost_usd;
                report.calls_saved = outcome.calls_saved;
                let stop = outcome.metrics.stop_reason;
                let last_error = outcome.last_error.clone();
                report.items = Some(serde_json::to_value(&outcome.items).expect("items serialize"));
                report.metrics =
                    Some(serde_json::to_value(&outcome.metrics).expect("metrics serialize"));
                match stop {
                    StopReason::Cancelled => report.failed(AgentError::cancelled()),
                    StopReason::AllCallsFailed => report.failed(match last_error {
                        Some(e) => {
                            let e = AgentError::from(&e);
                            AgentError {
                                message: format!("every call failed; last: {}", e.message),
                                ..e
                            }
                        }
                        None => AgentError::new("provider", "every call failed"),
                    }),
                    _ => report,
                }
            }
            Err(error) => report.failed(AgentError::new("generate", error)),
        }
    }
}
