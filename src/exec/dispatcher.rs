//! The dispatcher: the one owner loop of a run. It starts each agent the moment all of its
//! dependencies have finished (no barrier between phases), turns what executing agents
//! report into public events (stamped with the run's sequence numbers, applied to its
//! `RunState`, published), and decides when the run ends: every agent done, or the run
//! cancelled (Ctrl-C, `--timeout`, the budget, a `cancel`) with every completed result kept.
//!
//! Protocol: agents run as tasks in a `JoinSet` and report over one unbounded channel
//! (`JobUpdate`); nothing else mutates run state. A nested ensemble runs this same loop one level
//! down with `Output::Nested`, which forwards its events to the parent's channel instead of
//! publishing them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;

use super::event::{Event, EventKind, Timestamp};
use super::job::{Job, Report};
use super::outcome::{AgentOutcome, AgentStatus, RunOutcome, RunStatus};
use super::prepare::{NotRun, prepare};
use super::run::{AgentTx, JobUpdate, RunCtx};
use super::state::RunState;
use crate::config::{Agent, AgentIndex, NodeKind};
use crate::plan::Plan;

/// Where a run's events go.
pub(crate) enum Output {
    /// A top-level run: to the store (lossless) and live subscribers (bounded).
    Root {
        live: broadcast::Sender<Arc<Event>>,
        store: Option<Arc<dyn super::record::Recorder>>,
        /// Why the run was cancelled, when it was from outside (set before the token fires).
        reason: Arc<std::sync::Mutex<Option<RunStatus>>>,
    },
    /// A nested ensemble: to the agent that runs it.
    Nested(AgentTx),
}

/// Everything one run of a plan needs.
pub(crate) struct Dispatch {
    pub run: Arc<RunCtx>,
    pub plan: Arc<Plan>,
    pub input: String,
    pub run_id: Arc<str>,
    pub seed: u64,
    pub timeout: Option<Duration>,
    /// Resume: agents that already succeeded, and what `generate` nodes had found.
    pub restored: Vec<AgentOutcome>,
    pub generate_resume: HashMap<String, crate::nodes::generate::Resume>,
    /// Resume: the sequence number to continue from.
    pub first_seq: u64,
    pub resumed: bool,
}

impl Dispatch {
    pub(crate) fn new(
        run: Arc<RunCtx>,
        plan: Arc<Plan>,
        input: String,
        run_id: String,
        seed: u64,
    ) -> Dispatch {
        Dispatch {
            run,
            plan,
            input,
            run_id: Arc::from(run_id),
            seed,
            timeout: None,
            restored: Vec::new(),
            generate_resume: HashMap::new(),
            first_seq: 0,
            resumed: false,
        }
    }
}

enum Sched {
    Waiting { remaining: usize },
    Running,
    Done,
}

struct Loop {
    out: Output,
    /// Published, not yet handed to the store.
    unstored: Vec<Arc<Event>>,
    state: RunState,
    run_id: Arc<str>,
    seq: u64,
    started: Instant,
}

/// Events still buffered when the loop ends early (a panic, an aborted task) go to the store
/// all the same: a `call_finished` there is an answer a resume need not pay for again.
impl Drop for Loop {
    fn drop(&mut self) {
        self.store_events();
    }
}

impl Loop {
    fn emit(&mut self, kind: EventKind) {
        self.emit_at(Vec::new(), kind);
    }

    fn emit_at(&mut self, path: Vec<String>, kind: EventKind) {
        self.seq += 1;
        let event = Event {
            run_id: Arc::clone(&self.run_id),
            seq: self.seq,
            ts: Timestamp::now(),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            path,
            kind,
        };
        self.state.apply(&event);
        match &self.out {
            Output::Root { live, store, .. } => {
                let event = Arc::new(event);
                if store.is_some() {
                    // Published with the batch it is stored in (`store_events`).
                    self.unstored.push(event);
                } else if live.receiver_count() > 0 {
                    let _ = live.send(event);
                }
            }
            Output::Nested(parent) => parent.send_nested(event.path, event.kind),
        }
    }

    /// Hands the events since the last call to the store, in one message, then publishes
    /// them: the loop calls it before it waits, so the store hears of a burst once, not event
    /// by event. Stored before published, so a subscriber that flushes the store and reads
    /// it has every event before the first one it is sent live (the server's gap-free
    /// event streams rely on this).
    fn store_events(&mut self) {
        if let Output::Root {
            live,
            store: Some(store),
            ..
        } = &self.out
        {
            if self.unstored.is_empty() {
                return;
            }
            let batch = std::mem::take(&mut self.unstored);
            // Handed over first, whoever is subscribed: one who subscribes right now and
            // reads the store must find this batch there.
            store.events(batch.clone());
            if live.receiver_count() > 0 {
                for event in batch {
                    let _ = live.send(event);
                }
            }
        }
    }

    fn ms_since_start(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.started).as_millis() as u64
    }
}

/// Runs the plan to completion (or cancellation). Boxed: a nested ensemble's run awaits
/// this same function.
pub(crate) fn dispatch(
    d: Dispatch,
    out: Output,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Arc<RunOutcome>> + Send>> {
    Box::pin(dispatch_inner(d, out))
}

async fn dispatch_inner(mut d: Dispatch, out: Output) -> Arc<RunOutcome> {
    let plan = Arc::clone(&d.plan);
    let n = plan.len();
    let cancel = d.run.cancel.clone();
    let (tx, mut rx) = mpsc::unbounded_channel::<JobUpdate>();
    let mut tasks = JoinSet::new();
    let mut lp = Loop {
        out,
        unstored: Vec::new(),
        state: RunState::new(),
        run_id: Arc::clone(&d.run_id),
        seq: d.first_seq,
        started: Instant::now(),
    };
    let names: Vec<String> = plan
        .ensemble
        .agents
        .iter()
        .map(|a| a.name.clone())
        .collect();
    lp.emit(EventKind::RunStarted {
        ensemble: plan.ensemble.name.clone(),
        agents: n,
        names,
        input: d.input.clone(),
        resumed: d.resumed,
    });
    let mut sched: Vec<Sched> = plan
        .ensemble
        .agents
        .iter()
        .map(|a| Sched::Waiting {
            remaining: a.depends_on.len(),
        })
        .collect();
    let mut first_start: Vec<Option<Instant>> = vec![None; n];
    let mut running = 0usize;
    let mut done = 0usize;
    let mut status: Option<RunStatus> = None;
    let deadline = d.timeout.map(|t| tokio::time::Instant::now() + t);
    // Ready agents, lowest index first; at most `max_jobs` of them run at once.
    let mut ready: BinaryHeap<Reverse<AgentIndex>> = BinaryHeap::new();
    let max_jobs = d.run.engine.max_jobs;
    let shared_input: Arc<str> = Arc::from(d.input.as_str());

    // A resumed run starts from what already succeeded.
    for outcome in std::mem::take(&mut d.restored) {
        if let Some(i) = lp.state.index_of(&outcome.name) {
            lp.state.restore(outcome);
            sched[i] = Sched::Done;
            done += 1;
        }
    }
    for i in 0..n {
        if matches!(sched[i], Sched::Done) {
            release_dependents(&plan, i, &mut sched, &mut ready);
        }
    }
    ready.extend(
        (0..n)
            .filter(|&i| matches!(sched[i], Sched::Waiting { remaining: 0 }))
            .map(Reverse),
    );

    loop {
        // Start (or skip) what became ready, up to `max_jobs` running. Skips can make more
        // agents ready; one that is no longer waiting (a duplicate on resume) is passed over.
        while running < max_jobs || cancel.is_cancelled() {
            let Some(Reverse(i)) = ready.pop() else { break };
            if !matches!(sched[i], Sched::Waiting { .. }) || cancel.is_cancelled() {
                continue;
            }
            let agent = &plan.ensemble.agents[i];
            let prepared = {
                let state = &lp.state;
                let outcome_of = |j: AgentIndex| {
                    state
                        .outcome(j)
                        .expect("a ready agent's dependencies are done")
                };
                prepare(&plan, agent, &d.input, &outcome_of)
            };
            match prepared {
                Ok(work) => {
                    sched[i] = Sched::Running;
                    running += 1;
                    lp.emit(EventKind::AgentQueued {
                        agent: agent.name.clone(),
                    });
                    let job = Job {
                        run_id: d.run_id.to_string(),
                        agent: i,
                        name: agent.name.clone(),
                        work,
                        input: Arc::clone(&shared_input),
                        seed: d.seed,
                        stream: d.run.stream,
                        resume: d.generate_resume.remove(&agent.name),
                    };
                    let executor = Arc::clone(&d.run.engine.executor);
                    executor.spawn(
                        Arc::clone(&d.run),
                        Arc::clone(&plan),
                        job,
                        AgentTx {
                            agent: i,
                            tx: tx.clone(),
                        },
                        &mut tasks,
                    );
                }
                Err(not_run) => {
                    let outcome = not_run_outcome(agent, not_run);
                    lp.emit(EventKind::AgentFinished {
                        agent: agent.name.clone(),
                        outcome: Arc::new(outcome),
                    });
                    sched[i] = Sched::Done;
                    done += 1;
                    release_dependents(&plan, i, &mut sched, &mut ready);
                }
            }
        }
        if done == n || (running == 0 && cancel.is_cancelled()) {
            break;
        }
        if rx.is_empty() || lp.unstored.len() >= 4096 {
            lp.store_events();
            // A finished job's task keeps its memory until it is joined: 100,000 agents
            // would otherwise hold 170 MB of finished tasks until the run ends. (A job
            // reports through `tx`, so the results here say nothing new.)
            while tasks.try_join_next().is_some() {}
        }
        let msg = tokio::select! {
            biased;
            () = cancel.cancelled(), if status.is_none() => {
                status = Some(cancel_status(&lp.out));
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
            JobUpdate::Event {
                agent,
                nested,
                kind,
            } => {
                if let Some(path) = nested {
                    // From a nested ensemble: its path gains this agent's name.
                    let mut full = Vec::with_capacity(path.len() + 1);
                    full.push(plan.ensemble.agents[agent].name.clone());
                    full.extend(path);
                    let is_call = matches!(kind, EventKind::CallFinished(_));
                    lp.emit_at(full, kind);
                    if is_call {
                        check_budget(&plan, &lp.state, &mut status, &cancel, done < n);
                    }
                } else {
                    if matches!(kind, EventKind::AgentStarted { .. }) {
                        first_start[agent].get_or_insert_with(Instant::now);
                    }
                    let is_call = matches!(kind, EventKind::CallFinished(_));
                    lp.emit(kind);
                    if is_call {
                        check_budget(&plan, &lp.state, &mut status, &cancel, done < n);
                    }
                }
            }
            JobUpdate::Done { agent: i, report } => {
                running -= 1;
                done += 1;
                let agent = &plan.ensemble.agents[i];
                let now = Instant::now();
                let started_at = first_start[i];
                let mut outcome = outcome_from(agent, *report);
                if let Some(first) = started_at {
                    outcome.latency_ms = now.saturating_duration_since(first).as_millis() as u64;
                    outcome.started_ms = Some(lp.ms_since_start(first));
                    outcome.finished_ms = Some(lp.ms_since_start(now));
                }
                lp.emit(EventKind::AgentFinished {
                    agent: agent.name.clone(),
                    outcome: Arc::new(outcome),
                });
                sched[i] = Sched::Done;
                check_budget(&plan, &lp.state, &mut status, &cancel, done < n);
                release_dependents(&plan, i, &mut sched, &mut ready);
            }
        }
    }
    drop(tx);
    tasks.abort_all();
    if status.is_none() && cancel.is_cancelled() {
        // The last task may report before the loop saw the token fire.
        status = Some(cancel_status(&lp.out));
    }
    // Whatever never finished was cancelled.
    for (i, s) in sched.iter().enumerate() {
        if !matches!(s, Sched::Done) {
            let agent = &plan.ensemble.agents[i];
            let (profile, model, provider) = identity(agent);
            let mut outcome = AgentOutcome::not_run(&agent.name, AgentStatus::Cancelled);
            outcome.profile = profile;
            outcome.model = model;
            outcome.provider = provider;
            outcome.started_ms = first_start[i].map(|t| lp.ms_since_start(t));
            lp.emit(EventKind::AgentFinished {
                agent: agent.name.clone(),
                outcome: Arc::new(outcome),
            });
        }
    }
    let mut result = lp.state.take_outcome(RunStatus::Succeeded);
    result.totals.wall_ms = lp.started.elapsed().as_millis() as u64;
    let failure_skips = result
        .agents
        .iter()
        .filter(|a| a.status == AgentStatus::Skipped && !a.neutral_skip)
        .count();
    let t = &result.totals;
    result.status = status.unwrap_or(if t.failed + failure_skips + t.cancelled > 0 {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    });
    let result = Arc::new(result);
    lp.emit(EventKind::RunFinished {
        result: Arc::clone(&result),
    });
    lp.store_events();
    result
}

/// The status of a run cancelled from outside: what the canceller said, else Ctrl-C.
fn cancel_status(out: &Output) -> RunStatus {
    match out {
        Output::Root { reason, .. } => reason
            .lock()
            .expect("not poisoned")
            .unwrap_or(RunStatus::Interrupted),
        Output::Nested(_) => RunStatus::Interrupted,
    }
}

/// Stops the run once `budget.max_cost_usd` is spent (every paid call counts, also those of
/// agents still running).
fn check_budget(
    plan: &Plan,
    state: &RunState,
    status: &mut Option<RunStatus>,
    cancel: &tokio_util::sync::CancellationToken,
    unfinished: bool,
) {
    if let Some(max) = plan.ensemble.max_cost_usd {
        if state.live.cost_usd >= max && status.is_none() && unfinished {
            *status = Some(RunStatus::BudgetExceeded);
            cancel.cancel();
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Counts down the dependents of `i`; those with nothing left to wait for become ready.
fn release_dependents(
    plan: &Plan,
    i: AgentIndex,
    sched: &mut [Sched],
    ready: &mut BinaryHeap<Reverse<AgentIndex>>,
) {
    for &j in &plan.dependents[i] {
        if let Sched::Waiting { remaining } = &mut sched[j] {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                ready.push(Reverse(j));
            }
        }
    }
}

/// What the outcome of an agent names as its profile, model and provider before it ran.
fn identity(agent: &Agent) -> (String, String, String) {
    match &agent.node {
        NodeKind::Nested(n) => ("ensemble".into(), n.reference.clone(), "ensemble".into()),
        NodeKind::Script(s) => (
            "script".into(),
            s.argv.first().cloned().unwrap_or_default(),
            "script".into(),
        ),
        _ => (
            agent.profile.name.clone(),
            agent.profile.model.clone(),
            agent.profile.provider.to_string(),
        ),
    }
}

fn not_run_outcome(agent: &Agent, not_run: NotRun) -> AgentOutcome {
    let (profile, model, provider) = identity(agent);
    let mut outcome = AgentOutcome::not_run(&agent.name, AgentStatus::Skipped);
    outcome.profile = profile;
    outcome.model = model;
    outcome.provider = provider;
    match not_run {
        NotRun::Skipped { reason, neutral } => {
            outcome.error = Some(reason);
            outcome.error_kind = Some(if neutral { "condition" } else { "dependency" }.into());
            outcome.neutral_skip = neutral;
        }
        NotRun::Failed(error) => {
            outcome.status = AgentStatus::Failed;
            outcome.error = Some(error.message);
            outcome.error_kind = Some(error.kind);
        }
    }
    outcome
}

fn outcome_from(agent: &Agent, r: Report) -> AgentOutcome {
    // A nested agent's report names what ran (a `dispatch` its chosen ensemble).
    let (profile, model, provider) = match &agent.node {
        NodeKind::Script(_) => identity(agent),
        _ => (r.profile, r.model, r.provider),
    };
    let finish = r.finish_reason;
    AgentOutcome {
        truncated: finish
            .as_ref()
            .is_some_and(crate::providers::FinishReason::is_truncated),
        finish_reason_raw: finish.as_ref().map(|f| f.raw.clone()),
        finish_reason: finish.map(|f| f.kind),
        name: agent.name.clone(),
        status: r.status,
        output: r.output,
        profile,
        model,
        provider,
        attempts: r.attempts,
        usage: r.usage,
        cost_usd: r.cost_usd,
        latency_ms: 0,
        error: r.error.as_ref().map(|e| e.message.clone()),
        error_kind: r.error.map(|e| e.kind),
        cached: r.cached,
        calls_saved: r.calls_saved,
        neutral_skip: false,
        failed_profiles: r.failed_profiles,
        items: r.items,
        metrics: r.metrics,
        started_ms: None,
        finished_ms: None,
    }
}
