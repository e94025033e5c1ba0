//! `RunState`: a run rebuilt by folding its events. The dispatcher keeps one (it is the
//! run's state), and every reader builds its own from the same stream: the progress view,
//! `--output json`, the store and the server. Pure: no IO, no clocks.

use std::collections::HashMap;
use std::sync::Arc;

use super::event::{Event, EventKind, NodeProgress};
use super::outcome::{AgentOutcome, AgentStatus, RunOutcome, RunStatus};
use crate::providers::Usage;

/// Where an agent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Dependencies not finished yet.
    Waiting,
    /// Ready, waiting for a concurrency slot.
    Queued,
    Running,
    Done,
}

/// One agent as the events tell it.
#[derive(Debug, Clone)]
pub struct AgentState {
    pub name: String,
    pub phase: Phase,
    /// The current attempt and profile while running.
    pub attempt: u32,
    pub profile: Option<String>,
    /// Characters streamed by the current attempt.
    pub streamed_chars: usize,
    /// The system prompt and prompt the latest attempt sent (LLM agents).
    pub system_prompt: Option<String>,
    pub prompt: Option<String>,
    /// Latest numbers of a `generate` node.
    pub progress: Option<Box<NodeProgress>>,
    /// Set once the agent finished.
    pub outcome: Option<Arc<AgentOutcome>>,
}

/// Running totals, counted from call and agent events as they happen.
#[derive(Debug, Clone, Default)]
pub struct LiveTotals {
    pub done: usize,
    pub failed: usize,
    /// Tokens of every paid call so far.
    pub usage: Usage,
    /// Cost of every paid call so far with a known price.
    pub cost_usd: f64,
    /// Some paid call had no known price.
    pub cost_unknown: bool,
    pub calls: u64,
    pub calls_saved: u64,
    pub running: usize,
}

#[derive(Debug, Clone)]
pub struct RunState {
    pub run_id: String,
    pub ensemble: String,
    pub input: String,
    pub agents: Vec<AgentState>,
    index: HashMap<String, usize>,
    pub live: LiveTotals,
    /// Set by `run_finished`.
    pub result: Option<Arc<RunOutcome>>,
    pub last_seq: u64,
    pub elapsed_ms: u64,
}

impl Default for RunState {
    fn default() -> Self {
        RunState::new()
    }
}

impl RunState {
    /// An empty state; `run_started` fills it in.
    pub fn new() -> RunState {
        RunState {
            run_id: String::new(),
            ensemble: String::new(),
            input: String::new(),
            agents: Vec::new(),
            index: HashMap::new(),
            live: LiveTotals::default(),
            result: None,
            last_seq: 0,
            elapsed_ms: 0,
        }
    }

    /// Folds one event in. Events of nested ensembles (a non-empty `path`) belong to the
    /// agent that runs them and do not change this run's agents.
    pub fn apply(&mut self, event: &Event) {
        self.last_seq = self.last_seq.max(event.seq);
        self.elapsed_ms = self.elapsed_ms.max(event.elapsed_ms);
        if !event.path.is_empty() {
            // A nested ensemble's calls are this run's spending as they happen (the budget
            // and the live totals count them); the rest is the agent's own business.
            if let EventKind::CallFinished(call) = &event.kind {
                self.count_call(call);
            }
            return;
        }
        match &event.kind {
            EventKind::RunStarted {
                ensemble,
                names,
                input,
                resumed,
                ..
            } => {
                self.run_id = event.run_id.to_string();
                self.ensemble.clone_from(ensemble);
                self.input.clone_from(input);
                self.result = None;
                if !*resumed || self.agents.len() != names.len() {
                    self.reset_agents(names);
                } else {
                    // A resumed run starts again from what succeeded.
                    for a in &mut self.agents {
                        if a.outcome
                            .as_ref()
                            .is_none_or(|o| o.status != AgentStatus::Succeeded)
                        {
                            a.outcome = None;
                            a.phase = Phase::Waiting;
                        }
                    }
                    self.recount();
                }
            }
            EventKind::AgentQueued { agent } => {
                if let Some(a) = self.agent_mut(agent) {
                    a.phase = Phase::Queued;
                }
            }
            EventKind::AgentStarted {
                agent,
                attempt,
                profile,
                ..
            } => {
                let newly = self.agent(agent).is_some_and(|a| a.phase != Phase::Running);
                if let Some(a) = self.agent_mut(agent) {
                    a.phase = Phase::Running;
                    a.attempt = *attempt;
                    a.profile = Some(profile.clone());
                    a.streamed_chars = 0;
                }
                if newly {
                    self.live.running += 1;
                }
            }
            EventKind::AgentPrompt {
                agent,
                system,
                prompt,
                ..
            } => {
                if let Some(a) = self.agent_mut(agent) {
                    a.system_prompt.clone_from(system);
                    a.prompt = Some(prompt.clone());
                }
            }
            EventKind::AgentDelta { agent, text, .. } => {
                if let Some(a) = self.agent_mut(agent) {
                    a.streamed_chars += text.chars().count();
                }
            }
            EventKind::AgentRetrying { agent, .. } | EventKind::AgentFallback { agent, .. } => {
                if let Some(a) = self.agent_mut(agent) {
                    a.streamed_chars = 0;
                }
            }
            EventKind::CallFinished(call) => self.count_call(call),
            EventKind::NodeProgress(p) => {
                if let Some(a) = self.agent_mut(&p.agent) {
                    a.progress = Some(p.clone());
                }
            }
            EventKind::AgentFinished { agent, outcome } => {
                let was_running = self.agent(agent).is_some_and(|a| a.phase == Phase::Running);
                if let Some(a) = self.agent_mut(agent) {
                    a.phase = Phase::Done;
                    a.outcome = Some(outcome.clone());
                    self.live.done += 1;
                    if outcome.status == AgentStatus::Failed {
                        self.live.failed += 1;
                    }
                    if was_running {
                        self.live.running -= 1;
                    }
                }
            }
            EventKind::RunFinished { result } => {
                self.result = Some(result.clone());
                self.live.running = 0;
            }
            EventKind::CallStarted { .. }
            | EventKind::ItemAccepted { .. }
            | EventKind::Lagged { .. } => {}
        }
    }

    fn count_call(&mut self, call: &super::event::CallFinished) {
        if call.source.is_paid() {
            self.live.calls += 1;
            self.live.usage += call.usage;
            match call.cost_usd {
                Some(c) => self.live.cost_usd += c,
                None => self.live.cost_unknown = true,
            }
        } else {
            self.live.calls_saved += 1;
        }
    }

    fn reset_agents(&mut self, names: &[String]) {
        self.index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        self.agents = names
            .iter()
            .map(|name| AgentState {
                name: name.clone(),
                phase: Phase::Waiting,
                attempt: 0,
                profile: None,
                streamed_chars: 0,
                system_prompt: None,
                prompt: None,
                progress: None,
                outcome: None,
            })
            .collect();
        self.live = LiveTotals::default();
    }

    fn recount(&mut self) {
        self.live.done = self.agents.iter().filter(|a| a.outcome.is_some()).count();
        self.live.failed = 0;
        self.live.running = 0;
    }

    /// Marks an agent finished without an event (a resumed run's earlier successes).
    pub fn restore(&mut self, outcome: AgentOutcome) {
        if let Some(&i) = self.index.get(&outcome.name) {
            self.agents[i].phase = Phase::Done;
            self.agents[i].outcome = Some(Arc::new(outcome));
            self.recount();
        }
    }

    pub fn index_of(&self, agent: &str) -> Option<usize> {
        self.index.get(agent).copied()
    }

    pub fn agent(&self, agent: &str) -> Option<&AgentState> {
        self.index.get(agent).map(|&i| &self.agents[i])
    }

    fn agent_mut(&mut self, agent: &str) -> Option<&mut AgentState> {
        self.index.get(agent).map(|&i| &mut self.agents[i])
    }

    /// The outcome of a finished agent.
    pub fn outcome(&self, i: usize) -> Option<&AgentOutcome> {
        self.agents.get(i).and_then(|a| a.outcome.as_deref())
    }

    pub fn is_finished(&self) -> bool {
        self.result.is_some()
    }

    /// The run as the `--output json` document: the final result once the run finished,
    /// else what is known so far (unfinished agents reported as `cancelled`).
    pub fn to_outcome(&self, status: RunStatus) -> RunOutcome {
        if let Some(result) = &self.result {
            if result.agents.len() == self.agents.len() {
                return (**result).clone();
            }
            // A stored `run_finished` carries the result without its agents (their outcomes
            // are in the `agent_finished` events): the rest is this run's.
            let mut outcome = (**result).clone();
            outcome.agents = self.agent_outcomes();
            return outcome;
        }
        let agents = self.agent_outcomes();
        let totals = RunOutcome::compute_totals(&agents, self.elapsed_ms);
        RunOutcome {
            run_id: self.run_id.clone(),
            ensemble: self.ensemble.clone(),
            input: self.input.clone(),
            status,
            agents,
            totals,
        }
    }

    /// As `to_outcome`, moving the agents' outcomes out of this state instead of copying
    /// them (the dispatcher's last use of its state: a 100,000-agent run keeps one copy).
    pub(crate) fn take_outcome(&mut self, status: RunStatus) -> RunOutcome {
        let agents: Vec<Arc<AgentOutcome>> = self
            .agents
            .iter_mut()
            .map(|a| match a.outcome.take() {
                Some(o) => o,
                None => Arc::new(AgentOutcome::not_run(&a.name, AgentStatus::Cancelled)),
            })
            .collect();
        let totals = RunOutcome::compute_totals(&agents, self.elapsed_ms);
        RunOutcome {
            run_id: self.run_id.clone(),
            ensemble: self.ensemble.clone(),
            input: self.input.clone(),
            status,
            agents,
            totals,
        }
    }

    /// Every agent's outcome in declaration order; unfinished ones as `cancelled`.
    fn agent_outcomes(&self) -> Vec<Arc<AgentOutcome>> {
        self.agents
            .iter()
            .map(|a| match &a.outcome {
                Some(o) => Arc::clone(o),
                None => Arc::new(AgentOutcome::not_run(&a.name, AgentStatus::Cancelled)),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::event::Timestamp;

    fn event(seq: u64, kind: EventKind) -> Event {
        Event {
            run_id: Arc::from("r"),
            seq,
            ts: Timestamp(0),
            elapsed_ms: seq,
            path: Vec::new(),
            kind,
        }
    }

    #[test]
    fn folds_a_run() {
        let mut state = RunState::new();
        state.apply(&event(
            1,
            EventKind::RunStarted {
                ensemble: "e".into(),
                agents: 2,
                names: vec!["a".into(), "b".into()],
                input: "in".into(),
                resumed: false,
            },
        ));
        state.apply(&event(
            2,
            EventKind::AgentStarted {
                agent: "a".into(),
                attempt: 1,
                profile: "mock".into(),
                model: "m".into(),
            },
        ));
        assert_eq!(state.agents[0].phase, Phase::Running);
        assert_eq!(state.live.running, 1);
        let mut outcome = AgentOutcome::not_run("a", AgentStatus::Succeeded);
        outcome.output = Some("out".into());
        state.apply(&event(
            3,
            EventKind::AgentFinished {
                agent: "a".into(),
                outcome: Arc::new(outcome),
            },
        ));
        assert_eq!(state.live.running, 0);
        assert_eq!(state.live.done, 1);
        let doc = state.to_outcome(RunStatus::Interrupted);
        assert_eq!(doc.agents[0].output.as_deref(), Some("out"));
        assert_eq!(doc.agents[1].status, AgentStatus::Cancelled);
        assert_eq!(state.last_seq, 3);
    }

    #[test]
    fn nested_events_do_not_touch_this_run() {
        let mut state = RunState::new();
        state.apply(&event(
            1,
            EventKind::RunStarted {
                ensemble: "e".into(),
                agents: 1,
                names: vec!["a".into()],
                input: String::new(),
                resumed: false,
            },
        ));
        let mut nested = event(2, EventKind::AgentQueued { agent: "a".into() });
        nested.path = vec!["outer".into()];
        state.apply(&nested);
        assert_eq!(state.agents[0].phase, Phase::Waiting);
    }
}
