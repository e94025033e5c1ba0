//! The scheduler: dispatch-when-dependencies-done over a `Plan`.
//!
//! Protocol: the owner loop (`run`) holds all run state. It spawns one task per agent when
//! the agent's last dependency finishes, and each task reports back over one unbounded
//! channel (`Msg`). Tasks hold a permit of the global semaphore only while a provider call
//! is in flight, never while backing off, so retries do not starve other agents. Every
//! await in a task races the run's `CancellationToken`, so Ctrl-C, `--timeout` and the
//! budget stop in-flight calls at once; completed results stay in the owner's state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::event::{Event, EventSink};
use super::finish::{AnswerMeta, check_answer};
use super::layout::{DepView, default_prompt, render_prompt};
use super::outcome::{AgentOutcome, AgentStatus, ProfileFailure, RunOutcome, RunStatus};
use super::retry::backoff_delay;
use crate::config::{Agent, AgentIndex, NodeKind, Profile};
use crate::nodes;
use crate::plan::Plan;
use crate::providers::{self, CompletionRequest, Provider, ProviderError, Usage};

/// One provider client per profile, built once per process and shared by every run.
#[derive(Default, Clone)]
pub struct ProviderRegistry {
    providers: HashMap<String, Arc<dyn Provider>>,
}

impl ProviderRegistry {
    /// Builds a client for every profile the plan uses. Fails before any call is made when
    /// a profile cannot work (e.g. its key is missing).
    pub fn for_plan(plan: &Plan) -> Result<ProviderRegistry, (String, ProviderError)> {
        Self::for_plan_with(plan, &Mode::Live)
    }

    /// As `for_plan`, recording every response, or replaying them from a recording (then
    /// no real provider is built, so no key is needed and no request leaves the machine).
    pub fn for_plan_with(
        plan: &Plan,
        mode: &Mode,
    ) -> Result<ProviderRegistry, (String, ProviderError)> {
        let mut registry = ProviderRegistry::default();
        let mut factory = providers::Factory::default();
        // Every ensemble the plan runs, nested ones included.
        let mut ensembles: Vec<&crate::config::Ensemble> = vec![&plan.ensemble];
        let mut agents: Vec<&Agent> = Vec::new();
        while let Some(e) = ensembles.pop() {
            for agent in &e.agents {
                agents.push(agent);
                if let NodeKind::Nested(n) = &agent.node {
                    ensembles.extend(n.ensemble.as_deref());
                }
            }
        }
        for agent in agents {
            let candidates: &[Arc<Profile>] = match &agent.node {
                NodeKind::Generate(g) => &g.profiles,
                _ => &[],
            };
            for profile in std::iter::once(&agent.profile)
                .chain(&agent.fallbacks)
                .chain(candidates)
            {
                if !registry.providers.contains_key(&profile.name) {
                    let provider: Arc<dyn Provider> = match mode {
                        Mode::Replay(recorded) => Arc::new(providers::replay::Replay {
                            profile: Arc::clone(profile),
                            recorded: Arc::clone(recorded),
                        }),
                        Mode::Live => factory
                            .build(profile)
                            .map_err(|e| (profile.name.clone(), e))?,
                        Mode::Record(recorder) => Arc::new(providers::replay::Recording {
                            inner: factory
                                .build(profile)
                                .map_err(|e| (profile.name.clone(), e))?,
                            profile: Arc::clone(profile),
                            recorder: Arc::clone(recorder),
                        }),
                    };
                    registry.providers.insert(profile.name.clone(), provider);
                }
            }
        }
        Ok(registry)
    }

    /// Adds or replaces the client of a profile (tests use in-memory providers).
    pub fn insert(&mut self, profile: &str, provider: Arc<dyn Provider>) {
        self.providers.insert(profile.to_string(), provider);
    }

    fn get(&self, profile: &Profile) -> Arc<dyn Provider> {
        Arc::clone(
            self.providers
                .get(&profile.name)
                .expect("the registry was built for every profile of the plan"),
        )
    }
}

/// Where provider responses come from.
pub enum Mode {
    /// The providers themselves.
    Live,
    /// The providers, with every response appended to a recording.
    Record(Arc<providers::replay::Recorder>),
    /// A recording only.
    Replay(Arc<providers::replay::Recorded>),
}

/// What a run needs besides the plan and its input.
#[derive(Clone)]
pub struct RunOptions {
    pub run_id: String,
    pub seed: u64,
    /// Wall-clock limit of the whole run.
    pub timeout: Option<Duration>,
    /// Cancelled on Ctrl-C; shared by all runs of a batch.
    pub interrupt: CancellationToken,
    /// Global cap on provider calls in flight, shared by all runs of a batch.
    pub slots: Arc<Semaphore>,
    pub providers: ProviderRegistry,
    /// Ask providers to stream, and forward text as it arrives (`Event::AgentDelta`).
    pub stream_tokens: bool,
}

enum Msg {
    Progress {
        agent: AgentIndex,
        progress: nodes::generate::Progress,
    },
    Delta {
        agent: AgentIndex,
        attempt: u32,
        text: String,
    },
    Started {
        agent: AgentIndex,
        attempt: u32,
        profile: Arc<Profile>,
        at: Instant,
    },
    Retrying {
        agent: AgentIndex,
        attempt: u32,
        error: String,
        delay: Duration,
    },
    Fallback {
        agent: AgentIndex,
        from: String,
        to: String,
        error: String,
    },
    Done {
        agent: AgentIndex,
        result: Box<TaskResult>,
    },
}

struct TaskResult {
    /// How the last answer or error ended (finish reason, error kind).
    meta: AnswerMeta,
    /// Profiles that failed before the one that answered (or all of them).
    failed_profiles: Vec<ProfileFailure>,
    /// Cost when the node computed it (several calls, several profiles); else from usage.
    cost: Option<f64>,
    items: Option<serde_json::Value>,
    metrics: Option<serde_json::Value>,
    status: AgentStatus,
    output: Option<String>,
    error: Option<String>,
    profile: Arc<Profile>,
    attempts: u32,
    usage: Usage,
    first_start: Option<Instant>,
}

enum Slot {
    Waiting { remaining: usize },
    Running,
    Done(Box<AgentOutcome>),
}

/// Runs the plan to completion (or cancellation), emitting events to `sink`.
/// Boxed, so a nested ensemble's run can await this same function (see `AgentTask::nested`).
pub fn run<'a>(
    plan: Arc<Plan>,
    input: String,
    options: RunOptions,
    sink: &'a mut dyn EventSink,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = RunOutcome> + Send + 'a>> {
    Box::pin(run_inner(plan, input, options, sink))
}

async fn run_inner(
    plan: Arc<Plan>,
    input: String,
    options: RunOptions,
    sink: &mut dyn EventSink,
) -> RunOutcome {
    let started = Instant::now();
    let n = plan.len();
    let cancel = options.interrupt.child_token();
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let mut tasks = JoinSet::new();
    let mut slots: Vec<Slot> = plan
        .ensemble
        .agents
        .iter()
        .map(|a| Slot::Waiting {
            remaining: a.depends_on.len(),
        })
        .collect();
    let mut first_start: Vec<Option<Instant>> = vec![None; n];
    let mut running = 0usize;
    let mut done = 0usize;
    let mut status: Option<RunStatus> = None;
    let mut cost_so_far = 0.0f64;
    let deadline = options.timeout.map(|t| tokio::time::Instant::now() + t);

    sink.emit(&Event::RunStarted {
        run_id: options.run_id.clone(),
        ensemble: plan.ensemble.name.clone(),
        agents: n,
    });

    let ms_since = |t: Instant| t.saturating_duration_since(started).as_millis() as u64;

    // Ready agents, started in declaration order.
    let mut ready: Vec<AgentIndex> = (0..n)
        .filter(|&i| plan.ensemble.agents[i].depends_on.is_empty())
        .collect();

    loop {
        // Start (or skip) everything that became ready. Skips can make more agents ready.
        while !ready.is_empty() {
            ready.sort_unstable();
            for i in std::mem::take(&mut ready) {
                let agent = &plan.ensemble.agents[i];
                if cancel.is_cancelled() {
                    continue;
                }
                match prepare(&plan, agent, &input, &slots) {
                    Ok(work) => {
                        slots[i] = Slot::Running;
                        running += 1;
                        sink.emit(&Event::AgentQueued {
                            agent: agent.name.clone(),
                        });
                        let task = AgentTask {
                            agent: agent.clone(),
                            work,
                            input: input.clone(),
                            seed: options.seed,
                            cancel: cancel.clone(),
                            slots: Arc::clone(&options.slots),
                            providers: options.providers.clone(),
                            stream: options.stream_tokens,
                            tx: tx.clone(),
                        };
                        tasks.spawn(task.run());
                    }
                    Err(finished) => {
                        let outcome = finish(agent, finished, None, None);
                        emit_finished(sink, &outcome);
                        slots[i] = Slot::Done(Box::new(outcome));
                        done += 1;
                        release_dependents(&plan, i, &mut slots, &mut ready);
                    }
                }
            }
        }
        if done == n || (running == 0 && cancel.is_cancelled()) {
            break;
        }
        let msg = tokio::select! {
            biased;
            () = cancel.cancelled(), if status.is_none() => {
                status = Some(if options.interrupt.is_cancelled() { RunStatus::Interrupted } else { RunStatus::TimedOut });
                continue;
            }
            () = sleep_until(deadline), if status.is_none() => {
                status = Some(RunStatus::TimedOut);
                cancel.cancel();
                continue;
            }
            msg = rx.recv() => msg,
        };
        let Some(msg) = msg else { break };
        match msg {
            Msg::Progress { agent, progress } => sink.emit(&Event::NodeProgress {
                agent: plan.ensemble.agents[agent].name.clone(),
                unique: progress.unique,
                candidates: progress.candidates,
                calls: progress.calls,
                uam: progress.uam,
                cost_usd: progress.cost_usd,
            }),
            Msg::Delta {
                agent,
                attempt,
                text,
            } => sink.emit(&Event::AgentDelta {
                agent: plan.ensemble.agents[agent].name.clone(),
                attempt,
                text,
            }),
            Msg::Started {
                agent,
                attempt,
                profile,
                at,
            } => {
                first_start[agent].get_or_insert(at);
                sink.emit(&Event::AgentStarted {
                    agent: plan.ensemble.agents[agent].name.clone(),
                    attempt,
                    profile: profile.name.clone(),
                    model: profile.model.clone(),
                });
            }
            Msg::Retrying {
                agent,
                attempt,
                error,
                delay,
            } => sink.emit(&Event::AgentRetrying {
                agent: plan.ensemble.agents[agent].name.clone(),
                attempt,
                error,
                delay_ms: delay.as_millis() as u64,
            }),
            Msg::Fallback {
                agent,
                from,
                to,
                error,
            } => sink.emit(&Event::AgentFallback {
                agent: plan.ensemble.agents[agent].name.clone(),
                from,
                to,
                error,
            }),
            Msg::Done { agent: i, result } => {
                running -= 1;
                done += 1;
                let agent = &plan.ensemble.agents[i];
                let now = Instant::now();
                let mut outcome = finish(agent, Finished::Task(result), Some(started), Some(now));
                if outcome.status == AgentStatus::Cancelled && outcome.started_ms.is_none() {
                    outcome.started_ms = first_start[i].map(ms_since);
                }
                if outcome.usage != Usage::default() {
                    sink.emit(&Event::AgentTokens {
                        agent: agent.name.clone(),
                        usage: outcome.usage,
                    });
                }
                emit_finished(sink, &outcome);
                cost_so_far += outcome.cost_usd.unwrap_or(0.0);
                slots[i] = Slot::Done(Box::new(outcome));
                if let Some(max) = plan.ensemble.max_cost_usd {
                    if cost_so_far >= max && status.is_none() && done < n {
                        status = Some(RunStatus::BudgetExceeded);
                        cancel.cancel();
                    }
                }
                release_dependents(&plan, i, &mut slots, &mut ready);
            }
        }
    }
    drop(tx);
    tasks.abort_all();
    if status.is_none() && cancel.is_cancelled() {
        // The last task may report before the loop saw the token fire.
        status = Some(if options.interrupt.is_cancelled() {
            RunStatus::Interrupted
        } else {
            RunStatus::TimedOut
        });
    }

    // Whatever never started was cancelled.
    let agents: Vec<AgentOutcome> = slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| match slot {
            Slot::Done(outcome) => *outcome,
            Slot::Waiting { .. } | Slot::Running => {
                let outcome = finish(&plan.ensemble.agents[i], Finished::Cancelled, None, None);
                emit_finished(sink, &outcome);
                outcome
            }
        })
        .collect();
    let totals = RunOutcome::compute_totals(&agents, started.elapsed().as_millis() as u64);
    let failure_skips = agents
        .iter()
        .filter(|a| a.status == AgentStatus::Skipped && !a.neutral_skip)
        .count();
    let status = status.unwrap_or(if totals.failed + failure_skips + totals.cancelled > 0 {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    });
    let outcome = RunOutcome {
        run_id: options.run_id,
        ensemble: plan.ensemble.name.clone(),
        input,
        status,
        agents,
        totals,
    };
    sink.emit(&Event::RunFinished {
        result: Box::new(outcome.clone()),
    });
    outcome
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn emit_finished(sink: &mut dyn EventSink, o: &AgentOutcome) {
    sink.emit(&Event::AgentFinished {
        agent: o.name.clone(),
        status: o.status,
        output: o.output.clone(),
        error: o.error.clone(),
        attempts: o.attempts,
        latency_ms: o.latency_ms,
        usage: o.usage,
        cost_usd: o.cost_usd,
    });
}

/// Counts down the dependents of `i`; those with nothing left to wait for become ready.
fn release_dependents(plan: &Plan, i: AgentIndex, slots: &mut [Slot], ready: &mut Vec<AgentIndex>) {
    for &j in &plan.dependents[i] {
        if let Slot::Waiting { remaining } = &mut slots[j] {
            *remaining -= 1;
            if *remaining == 0 {
                ready.push(j);
            }
        }
    }
}

enum Finished {
    /// Not run; `neutral` when that is by design (a false `when`), not because of a failure.
    Skipped {
        reason: String,
        neutral: bool,
    },
    PromptFailed(String),
    Cancelled,
    Task(Box<TaskResult>),
}

/// The prompt of a ready agent, or why it will not run.
/// What a ready agent will work on.
enum Work {
    /// The user message of an LLM call.
    Prompt(String),
    /// The topic of a `generate` node.
    Topic(String),
    /// The outputs of a `dedup` node's dependencies.
    Lists(Vec<(String, String)>),
    /// The JSON a script gets on stdin.
    Script(serde_json::Value),
    /// The input of a nested ensemble.
    Ensemble(String),
    /// One piece of work per element of the fanned-out array, in order.
    FanOut(Vec<Work>),
}

fn prepare(plan: &Plan, agent: &Agent, input: &str, slots: &[Slot]) -> Result<Work, Finished> {
    let outcome_of = |d: AgentIndex| match &slots[d] {
        Slot::Done(o) => o,
        _ => unreachable!("a ready agent's dependencies are done"),
    };
    // A dependency skipped by its own `when` is neutral (llm-orc's routing): it neither
    // fails its dependents nor feeds them. Any other non-success is a failure.
    let is_neutral = |o: &AgentOutcome| o.status == AgentStatus::Skipped && o.neutral_skip;
    let run_anyway = agent.on_dependency_failure == crate::config::spec::OnDependencyFailure::Run;
    if let Some(&bad) = agent.depends_on.iter().find(|&&d| {
        let o = outcome_of(d);
        o.status != AgentStatus::Succeeded && !is_neutral(o)
    }) {
        if !run_anyway {
            let dep = outcome_of(bad);
            return Err(Finished::Skipped {
                reason: format!("dependency `{}` {}", dep.name, dep.status.as_str()),
                neutral: false,
            });
        }
    }
    if !run_anyway
        && !agent.depends_on.is_empty()
        && agent.depends_on.iter().all(|&d| is_neutral(outcome_of(d)))
    {
        return Err(Finished::Skipped {
            reason: "every dependency was skipped by its condition".into(),
            neutral: true,
        });
    }
    if let Some(condition) = &agent.condition {
        let output = agent
            .depends_on
            .iter()
            .map(|&d| outcome_of(d))
            .find(|o| o.name == condition.agent)
            .and_then(|o| o.output.as_deref());
        if !condition.eval(output) {
            return Err(Finished::Skipped {
                reason: format!("condition `{}` is false", condition.source),
                neutral: true,
            });
        }
    }
    let view = |d: AgentIndex| {
        let o = outcome_of(d);
        let output = o.output.as_deref().unwrap_or("");
        DepView {
            name: &o.name,
            output,
            json: serde_json::from_str(output).ok(),
            status: o.status,
            neutral: o.status == AgentStatus::Skipped && o.neutral_skip,
        }
    };
    let deps: Vec<DepView<'_>> = agent.depends_on.iter().map(|&d| view(d)).collect();
    // `input_key`: a slice of a dependency's JSON output replaces the input.
    let selected: Option<serde_json::Value> = match &agent.input_key {
        Some(key) => {
            let found = deps
                .iter()
                .find_map(|d| crate::json_path::get_dotted(d.json.as_ref()?, key).cloned());
            match found {
                Some(v) => Some(v),
                None => {
                    return Err(Finished::PromptFailed(format!(
                        "no dependency output has the key `{key}`"
                    )));
                }
            }
        }
        // Fanning out without `input_key`: the (first) dependency's whole output.
        None if agent.fan_out => deps.iter().find_map(|d| d.json.clone()),
        None => None,
    };
    let as_text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let has_slice = selected.is_some();
    let work_for = |item_input: &str, item: Option<&serde_json::Value>| -> Result<Work, Finished> {
        match &agent.node {
            NodeKind::Dedup(_) => Ok(Work::Lists(
                deps.iter()
                    .filter(|d| d.status == AgentStatus::Succeeded)
                    .map(|d| (d.name.to_string(), d.output.to_string()))
                    .collect(),
            )),
            NodeKind::Script(_) => {
                // Both orc's fields and llm-orc's (`input_data`, dependencies as
                // `{response, status}`), so llm-orc scripts run unchanged.
                let dependencies: serde_json::Map<String, serde_json::Value> = deps
                    .iter()
                    .filter(|d| d.status == AgentStatus::Succeeded)
                    .map(|d| {
                        let value = d
                            .json
                            .clone()
                            .unwrap_or_else(|| serde_json::Value::String(d.output.to_string()));
                        let entry = serde_json::json!({
                            "response": d.output, "status": "success", "output": value,
                        });
                        (d.name.to_string(), entry)
                    })
                    .collect();
                Ok(Work::Script(serde_json::json!({
                    "agent_name": agent.name,
                    "input": item.cloned().unwrap_or_else(|| serde_json::Value::String(item_input.to_string())),
                    "input_data": item_input,
                    "parameters": agent.parameters.clone().unwrap_or_else(|| serde_json::json!({})),
                    "dependencies": dependencies,
                    "context": {"run_input": input},
                })))
            }
            NodeKind::Generate(g) => match &g.topic {
                Some(source) => {
                    let ancestors: Vec<DepView<'_>> =
                        ancestors(plan, agent.index).into_iter().map(view).collect();
                    render_prompt(source, item_input, &deps, &ancestors)
                        .map(Work::Topic)
                        .map_err(Finished::PromptFailed)
                }
                None => Ok(Work::Topic(item_input.to_string())),
            },
            NodeKind::Llm | NodeKind::Nested(_) => {
                let text = match &agent.prompt {
                    Some(source) => {
                        let ancestors: Vec<DepView<'_>> =
                            ancestors(plan, agent.index).into_iter().map(view).collect();
                        render_prompt(source, item_input, &deps, &ancestors)
                            .map_err(Finished::PromptFailed)?
                    }
                    // With an input slice the agent works on that alone.
                    None if has_slice => item_input.to_string(),
                    None => default_prompt(item_input, &deps),
                };
                Ok(if matches!(agent.node, NodeKind::Nested(_)) {
                    Work::Ensemble(text)
                } else {
                    Work::Prompt(text)
                })
            }
        }
    };
    if agent.fan_out {
        let items = match selected {
            Some(serde_json::Value::Array(items)) => items,
            // llm-orc's script output shape: `{"data": [...]}`.
            Some(serde_json::Value::Object(mut map))
                if agent.input_key.is_none()
                    && map.get("data").is_some_and(serde_json::Value::is_array) =>
            {
                match map.remove("data") {
                    Some(serde_json::Value::Array(items)) => items,
                    _ => unreachable!("checked to be an array"),
                }
            }
            Some(other) => {
                return Err(Finished::PromptFailed(format!(
                    "`fan_out` needs a JSON array, found `{}`",
                    crate::providers::http::excerpt(&other.to_string())
                )));
            }
            None => {
                return Err(Finished::PromptFailed(
                    "`fan_out` needs a dependency whose output is a JSON array".into(),
                ));
            }
        };
        let total = items.len();
        let works = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                // Without a template an LLM instance sees its element in context, as
                // llm-orc shows it.
                let text = if matches!(agent.node, NodeKind::Llm) && agent.prompt.is_none() {
                    format!(
                        "Processing chunk {} of {total}.\n\nOriginal task: {input}\n\nChunk content:\n{}",
                        i + 1,
                        as_text(item)
                    )
                } else {
                    as_text(item)
                };
                work_for(&text, Some(item))
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Work::FanOut(works));
    }
    match &selected {
        Some(v) => work_for(&as_text(v), Some(v)),
        None => work_for(input, None),
    }
}

fn ancestors(plan: &Plan, i: AgentIndex) -> Vec<AgentIndex> {
    let mut seen = vec![false; plan.len()];
    let mut stack = plan.ensemble.agents[i].depends_on.clone();
    let mut out = Vec::new();
    while let Some(d) = stack.pop() {
        if !std::mem::replace(&mut seen[d], true) {
            out.push(d);
            stack.extend(plan.ensemble.agents[d].depends_on.iter().copied());
        }
    }
    out.sort_unstable();
    out
}

fn finish(
    agent: &Agent,
    finished: Finished,
    run_start: Option<Instant>,
    now: Option<Instant>,
) -> AgentOutcome {
    let mut outcome = AgentOutcome {
        name: agent.name.clone(),
        status: AgentStatus::Cancelled,
        output: None,
        profile: agent.profile.name.clone(),
        model: agent.profile.model.clone(),
        provider: agent.profile.provider.to_string(),
        attempts: 0,
        usage: Usage::default(),
        cost_usd: None,
        latency_ms: 0,
        error: None,
        error_kind: None,
        finish_reason: None,
        finish_reason_raw: None,
        truncated: false,
        neutral_skip: false,
        failed_profiles: Vec::new(),
        items: None,
        metrics: None,
        started_ms: None,
        finished_ms: None,
    };
    if let NodeKind::Nested(n) = &agent.node {
        outcome.profile = "ensemble".into();
        outcome.provider = "ensemble".into();
        outcome.model = n.reference.clone();
    }
    if let NodeKind::Script(script) = &agent.node {
        outcome.profile = "script".into();
        outcome.provider = "script".into();
        outcome.model = script.argv.first().cloned().unwrap_or_default();
    }
    match finished {
        Finished::Skipped { reason, neutral } => {
            outcome.status = AgentStatus::Skipped;
            outcome.error = Some(reason);
            outcome.neutral_skip = neutral;
        }
        Finished::PromptFailed(error) => {
            outcome.status = AgentStatus::Failed;
            outcome.error = Some(format!("prompt template failed: {error}"));
        }
        Finished::Cancelled => {}
        Finished::Task(r) => {
            outcome.status = r.status;
            outcome.output = r.output;
            outcome.error = r.error;
            if !matches!(agent.node, NodeKind::Script(_) | NodeKind::Nested(_)) {
                outcome.profile = r.profile.name.clone();
                outcome.model = r.profile.model.clone();
                outcome.provider = r.profile.provider.to_string();
            }
            outcome.attempts = r.attempts;
            outcome.failed_profiles = r.failed_profiles;
            outcome.items = r.items;
            outcome.metrics = r.metrics;
            outcome.usage = r.usage;
            // Nodes with many calls (generate, dedup) add up their own cost.
            outcome.cost_usd = if outcome.metrics.is_some() {
                r.cost
            } else {
                r.profile.price.and_then(|p| r.usage.cost(&p))
            };
            r.meta.apply(&mut outcome);
            if let (Some(first), Some(now), Some(run_start)) = (r.first_start, now, run_start) {
                outcome.latency_ms = now.saturating_duration_since(first).as_millis() as u64;
                outcome.started_ms =
                    Some(first.saturating_duration_since(run_start).as_millis() as u64);
                outcome.finished_ms =
                    Some(now.saturating_duration_since(run_start).as_millis() as u64);
            }
        }
    }
    outcome
}

struct AgentTask {
    agent: Agent,
    work: Work,
    input: String,
    seed: u64,
    cancel: CancellationToken,
    slots: Arc<Semaphore>,
    providers: ProviderRegistry,
    stream: bool,
    tx: mpsc::UnboundedSender<Msg>,
}

impl AgentTask {
    async fn run(self) {
        let index = self.agent.index;
        let result = match &self.work {
            Work::FanOut(works) => self.fan_out(works).await,
            single => self.run_single(single).await,
        };
        // The owner may be gone after cancellation; nothing to report to then.
        let _ = self.tx.send(Msg::Done {
            agent: index,
            result: Box::new(result),
        });
    }

    async fn run_single(&self, work: &Work) -> TaskResult {
        match work {
            Work::Prompt(prompt) => self.attempt_all(prompt).await,
            Work::Topic(topic) => self.generate(topic).await,
            Work::Lists(lists) => self.dedup(lists),
            Work::Script(stdin) => self.script(stdin).await,
            Work::Ensemble(input) => self.nested(input).await,
            Work::FanOut(_) => unreachable!("fan-out instances are single pieces of work"),
        }
    }

    /// Every instance concurrently (each takes its own slots), gathered back in order as a
    /// JSON array; a failed instance is `null` there and named in the error.
    async fn fan_out(&self, works: &[Work]) -> TaskResult {
        let first_start = Some(Instant::now());
        let results =
            futures_util::future::join_all(works.iter().map(|w| self.run_single(w))).await;
        let mut outputs = Vec::with_capacity(results.len());
        let mut failures = Vec::new();
        let mut usage = Usage::default();
        let mut attempts = 0;
        let mut cost = Some(0.0);
        let mut cancelled = false;
        for (i, r) in results.iter().enumerate() {
            usage += r.usage;
            attempts += r.attempts;
            let instance_cost = r
                .cost
                .or_else(|| r.profile.price.and_then(|p| r.usage.cost(&p)));
            cost = cost.zip(instance_cost).map(|(a, b)| a + b);
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
                        r.error.as_deref().unwrap_or("failed")
                    ));
                    outputs.push(serde_json::Value::Null);
                }
            }
        }
        let status = if cancelled {
            AgentStatus::Cancelled
        } else if failures.is_empty() {
            AgentStatus::Succeeded
        } else {
            AgentStatus::Failed
        };
        TaskResult {
            meta: AnswerMeta::default(),
            status,
            output: Some(serde_json::Value::Array(outputs).to_string()),
            error: (!failures.is_empty()).then(|| {
                format!(
                    "{} of {} instances failed: {}",
                    failures.len(),
                    works.len(),
                    failures.join("; ")
                )
            }),
            profile: Arc::clone(&self.agent.profile),
            attempts,
            usage,
            cost,
            first_start,
            failed_profiles: Vec::new(),
            items: None,
            metrics: Some(serde_json::json!({
                "instances": works.len(),
                "failed_instances": failures.len(),
            })),
        }
    }

    /// Runs the nested ensemble to completion with this agent's input; its final output is
    /// this agent's output, and its usage and cost roll up into this agent's.
    async fn nested(&self, input: &str) -> TaskResult {
        let NodeKind::Nested(nested) = &self.agent.node else {
            unreachable!("nested work is prepared for nested nodes only")
        };
        let child = nested
            .ensemble
            .clone()
            .expect("nested ensembles are loaded with the file that names them");
        let at = Instant::now();
        let _ = self.tx.send(Msg::Started {
            agent: self.agent.index,
            attempt: 1,
            profile: Arc::clone(&self.agent.profile),
            at,
        });
        let plan = Arc::new(Plan::new((*child).clone()));
        let options = RunOptions {
            run_id: format!("{}/{}", self.agent.name, child.name),
            seed: self.seed,
            timeout: None,
            interrupt: self.cancel.clone(),
            slots: Arc::clone(&self.slots),
            providers: self.providers.clone(),
            stream_tokens: false,
        };
        let mut sink = super::event::NoSink;
        // Boxed: the nested run is this same function one level down.
        let outcome = run(Arc::clone(&plan), input.to_string(), options, &mut sink).await;
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
            RunStatus::Interrupted => AgentStatus::Cancelled,
            _ if self.cancel.is_cancelled() => AgentStatus::Cancelled,
            _ => AgentStatus::Failed,
        };
        TaskResult {
            meta: AnswerMeta::default(),
            status,
            output: (status == AgentStatus::Succeeded).then_some(output),
            error: (status != AgentStatus::Succeeded).then(|| {
                if failed.is_empty() {
                    format!("nested ensemble `{}` did not succeed", child.name)
                } else {
                    format!("nested ensemble `{}`: {}", child.name, failed.join("; "))
                }
            }),
            profile: Arc::clone(&self.agent.profile),
            attempts: outcome.totals.attempts,
            usage: outcome.totals.usage,
            cost: outcome.totals.cost_usd,
            first_start: Some(at),
            failed_profiles: Vec::new(),
            items: None,
            metrics: Some(serde_json::json!({ "ensemble": child.name, "run": outcome })),
        }
    }

    async fn script(&self, stdin: &serde_json::Value) -> TaskResult {
        let NodeKind::Script(script) = &self.agent.node else {
            unreachable!("script work is prepared for script nodes only")
        };
        let at = Instant::now();
        let _ = self.tx.send(Msg::Started {
            agent: self.agent.index,
            attempt: 1,
            profile: Arc::clone(&self.agent.profile),
            at,
        });
        let result = nodes::script::run(script, stdin, self.agent.timeout, &self.cancel).await;
        let (status, output, error) = match result {
            Ok(out) => (AgentStatus::Succeeded, Some(out), None),
            Err(nodes::script::ScriptError::Cancelled) => {
                (AgentStatus::Cancelled, None, Some("cancelled".to_string()))
            }
            Err(nodes::script::ScriptError::Failed(e)) => (AgentStatus::Failed, None, Some(e)),
        };
        TaskResult {
            meta: AnswerMeta::default(),
            status,
            output,
            error,
            profile: Arc::clone(&self.agent.profile),
            attempts: 1,
            usage: Usage::default(),
            cost: Some(0.0),
            first_start: Some(at),
            failed_profiles: Vec::new(),
            items: None,
            metrics: None,
        }
    }

    fn dedup(&self, lists: &[(String, String)]) -> TaskResult {
        let NodeKind::Dedup(settings) = &self.agent.node else {
            unreachable!("dedup work is prepared for dedup nodes only")
        };
        let (items, metrics) =
            nodes::dedup::dedup(lists, settings.normalize, settings.near_duplicates);
        let output = items
            .iter()
            .map(|i| i.text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        TaskResult {
            meta: AnswerMeta::default(),
            status: AgentStatus::Succeeded,
            output: Some(output),
            error: None,
            profile: Arc::clone(&self.agent.profile),
            attempts: 0,
            usage: Usage::default(),
            cost: Some(0.0),
            first_start: Some(Instant::now()),
            failed_profiles: Vec::new(),
            items: Some(serde_json::to_value(&items).expect("items serialize")),
            metrics: Some(serde_json::to_value(&metrics).expect("metrics serialize")),
        }
    }

    async fn generate(&self, topic: &str) -> TaskResult {
        let NodeKind::Generate(settings) = &self.agent.node else {
            unreachable!("a topic is prepared for generate nodes only")
        };
        let agent = &self.agent;
        let first_start = Some(Instant::now());
        let _ = self.tx.send(Msg::Started {
            agent: agent.index,
            attempt: 1,
            profile: Arc::clone(&settings.profiles[0]),
            at: Instant::now(),
        });
        let ctx = nodes::generate::Context {
            agent: agent.name.clone(),
            settings: (**settings).clone(),
            topic: topic.to_string(),
            input: self.input.clone(),
            providers: settings
                .profiles
                .iter()
                .map(|p| self.providers.get(p))
                .collect(),
            slots: Arc::clone(&self.slots),
            cancel: self.cancel.clone(),
            seed: self.seed,
            call_timeout: agent.timeout,
            system_prompt: agent.system_prompt.clone(),
            temperature: agent.temperature,
            max_tokens: agent.max_tokens,
        };
        let tx = self.tx.clone();
        let index = agent.index;
        let progress = move |p: nodes::generate::Progress| {
            let _ = tx.send(Msg::Progress {
                agent: index,
                progress: p,
            });
        };
        match nodes::generate::run(ctx, progress).await {
            Ok(outcome) => {
                let output = outcome
                    .items
                    .iter()
                    .map(|i| i.text.as_str())
                    .collect::<Vec<_>>()
                    .join("\n");
                let cancelled =
                    outcome.metrics.stop_reason == nodes::generate::StopReason::Cancelled;
                let all_failed =
                    outcome.metrics.stop_reason == nodes::generate::StopReason::AllCallsFailed;
                TaskResult {
                    meta: AnswerMeta::default(),
                    status: if cancelled {
                        AgentStatus::Cancelled
                    } else if all_failed {
                        AgentStatus::Failed
                    } else {
                        AgentStatus::Succeeded
                    },
                    error: all_failed.then(|| {
                        outcome
                            .metrics
                            .calls_log
                            .last()
                            .and_then(|c| c.error.clone())
                            .map_or_else(
                                || "every call failed".to_string(),
                                |e| format!("every call failed; last: {e}"),
                            )
                    }),
                    output: Some(output),
                    profile: Arc::clone(&settings.profiles[0]),
                    attempts: outcome.calls as u32,
                    usage: outcome.usage,
                    cost: outcome.metrics.cost_usd,
                    first_start,
                    failed_profiles: Vec::new(),
                    items: Some(serde_json::to_value(&outcome.items).expect("items serialize")),
                    metrics: Some(
                        serde_json::to_value(&outcome.metrics).expect("metrics serialize"),
                    ),
                }
            }
            Err(error) => TaskResult {
                meta: AnswerMeta::default(),
                status: AgentStatus::Failed,
                output: None,
                error: Some(error),
                profile: Arc::clone(&settings.profiles[0]),
                attempts: 0,
                usage: Usage::default(),
                cost: Some(0.0),
                first_start,
                failed_profiles: Vec::new(),
                items: None,
                metrics: None,
            },
        }
    }

    /// The primary profile with its retries, then each fallback with its own.
    async fn attempt_all(&self, prompt: &str) -> TaskResult {
        let agent = &self.agent;
        let chain: Vec<&Arc<Profile>> = std::iter::once(&agent.profile)
            .chain(&agent.fallbacks)
            .collect();
        let mut attempts = 0u32;
        let mut usage = Usage::default();
        let mut first_start = None;
        let mut errors: Vec<ProfileFailure> = Vec::new();
        // How the last failure ended (its error kind), for the outcome.
        let mut last_meta = AnswerMeta::default();
        for (p, profile) in chain.iter().enumerate() {
            let provider = self.providers.get(profile);
            let mut retry = 0u32;
            // Why the previous answer was rejected (`response_format`), told to the model.
            let mut rejection: Option<String> = None;
            let last_error = loop {
                attempts += 1;
                let Some(permit) = self.acquire().await else {
                    return self.cancelled(profile, attempts - 1, usage, first_start);
                };
                let at = Instant::now();
                first_start.get_or_insert(at);
                tracing::debug!(agent = %agent.name, profile = %profile.name, attempt = attempts, "calling provider");
                let _ = self.tx.send(Msg::Started {
                    agent: agent.index,
                    attempt: attempts,
                    profile: Arc::clone(profile),
                    at,
                });
                let prompt = match &rejection {
                    Some(why) => format!(
                        "{prompt}\n\nYour previous answer was rejected: {why}\nReply again with only the JSON{}.",
                        if agent
                            .response_format
                            .as_ref()
                            .is_some_and(|f| f.schema().is_some())
                        {
                            " that matches the schema"
                        } else {
                            ""
                        }
                    ),
                    None => prompt.to_string(),
                };
                let request = CompletionRequest {
                    agent: agent.name.clone(),
                    system: agent.system_prompt.clone(),
                    prompt,
                    temperature: agent.temperature.or(profile.temperature),
                    max_tokens: agent.max_tokens.or(profile.max_tokens),
                    options: providers::merged_options(&profile.options, &agent.options),
                    attempt: attempts,
                    seed: self.seed,
                    deltas: None,
                    generation: None,
                    response_format: agent.response_format.clone(),
                };
                let Some(result) = self.call(provider.as_ref(), request, attempts).await else {
                    return self.cancelled(profile, attempts, usage, first_start);
                };
                drop(permit);
                let result = result.and_then(|c| {
                    check_answer(agent.response_format.as_ref(), c).map_err(|(why, spent)| {
                        usage += spent;
                        ProviderError::InvalidOutput { message: why }
                    })
                });
                match result {
                    Ok(completion) => {
                        usage += completion.usage;
                        return TaskResult {
                            meta: AnswerMeta::answered(&completion),
                            status: AgentStatus::Succeeded,
                            output: Some(completion.text),
                            error: None,
                            profile: Arc::clone(profile),
                            attempts,
                            usage,
                            first_start,
                            failed_profiles: errors,
                            cost: None,
                            items: None,
                            metrics: None,
                        };
                    }
                    Err(ProviderError::InvalidOutput { message }) => {
                        let error_text = format!(
                            "the answer is not valid JSON for `response_format`: {message}"
                        );
                        if retry >= agent.retries {
                            last_meta =
                                AnswerMeta::failed(&ProviderError::InvalidOutput { message });
                            break error_text;
                        }
                        retry += 1;
                        tracing::warn!(agent = %agent.name, attempt = attempts, error = %error_text, "retrying with the validation error");
                        let _ = self.tx.send(Msg::Retrying {
                            agent: agent.index,
                            attempt: attempts,
                            error: error_text,
                            delay: Duration::ZERO,
                        });
                        rejection = Some(message);
                    }
                    Err(error) => {
                        let error_text = error.to_string();
                        if !error.is_retryable() || retry >= agent.retries {
                            last_meta = AnswerMeta::failed(&error);
                            break error_text;
                        }
                        retry += 1;
                        let unit = xxh3_64_with_seed(
                            format!("{}/{}", agent.name, attempts).as_bytes(),
                            self.seed,
                        ) as f64
                            / u64::MAX as f64;
                        let delay =
                            backoff_delay(agent.retry_backoff, retry, error.retry_after(), unit);
                        tracing::warn!(
                            agent = %agent.name,
                            profile = %profile.name,
                            attempt = attempts,
                            error = %error_text,
                            delay_ms = delay.as_millis() as u64,
                            "retrying"
                        );
                        let _ = self.tx.send(Msg::Retrying {
                            agent: agent.index,
                            attempt: attempts,
                            error: error_text,
                            delay,
                        });
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = self.cancel.cancelled() => {
                                return self.cancelled(profile, attempts, usage, first_start);
                            }
                        }
                    }
                }
            };
            tracing::warn!(agent = %agent.name, profile = %profile.name, error = %last_error, "profile failed");
            if let Some(next) = chain.get(p + 1) {
                let _ = self.tx.send(Msg::Fallback {
                    agent: agent.index,
                    from: profile.name.clone(),
                    to: next.name.clone(),
                    error: last_error.clone(),
                });
            }
            errors.push(ProfileFailure {
                profile: profile.name.clone(),
                error: last_error,
            });
        }
        let error = if errors.len() == 1 {
            errors[0].error.clone()
        } else {
            let each: Vec<String> = errors
                .iter()
                .map(|f| format!("`{}`: {}", f.profile, f.error))
                .collect();
            format!("every profile failed: {}", each.join("; "))
        };
        TaskResult {
            meta: last_meta,
            status: AgentStatus::Failed,
            output: None,
            error: Some(error),
            profile: Arc::clone(chain.last().expect("the chain has the primary profile")),
            attempts,
            usage,
            first_start,
            failed_profiles: errors,
            cost: None,
            items: None,
            metrics: None,
        }
    }

    /// One provider call under the agent's timeout, forwarding streamed text as it
    /// arrives. `None` when the run was cancelled meanwhile.
    async fn call(
        &self,
        provider: &dyn Provider,
        mut request: CompletionRequest,
        attempt: u32,
    ) -> Option<Result<crate::providers::Completion, ProviderError>> {
        let (deltas_tx, mut deltas) = mpsc::unbounded_channel::<String>();
        if self.stream {
            request.deltas = Some(deltas_tx);
        } else {
            drop(deltas_tx);
        }
        let forward = |text: String| {
            let _ = self.tx.send(Msg::Delta {
                agent: self.agent.index,
                attempt,
                text,
            });
        };
        let call = tokio::time::timeout(self.agent.timeout, provider.complete(request));
        tokio::pin!(call);
        let result = loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return None,
                Some(text) = deltas.recv() => forward(text),
                r = &mut call => break r.unwrap_or(Err(ProviderError::Deadline {
                    seconds: self.agent.timeout.as_secs_f64(),
                })),
            }
        };
        while let Ok(text) = deltas.try_recv() {
            forward(text);
        }
        Some(result)
    }

    async fn acquire(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        tokio::select! {
            permit = Arc::clone(&self.slots).acquire_owned() => permit.ok(),
            () = self.cancel.cancelled() => None,
        }
    }

    fn cancelled(
        &self,
        profile: &Arc<Profile>,
        attempts: u32,
        usage: Usage,
        first_start: Option<Instant>,
    ) -> TaskResult {
        TaskResult {
            meta: AnswerMeta::default(),
            failed_profiles: Vec::new(),
            cost: None,
            items: None,
            metrics: None,
            status: AgentStatus::Cancelled,
            output: None,
            error: Some("cancelled".into()),
            profile: Arc::clone(profile),
            attempts,
            usage,
            first_start,
        }
    }
}
