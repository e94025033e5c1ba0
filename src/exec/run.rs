//! What the pieces of one run share: the engine, the run's providers, its cancellation
//! tokens and flags (`RunCtx`), and the channel on which executing agents report to the
//! dispatcher (`AgentTx`, carrying `Msg`s).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::call::ResumeAnswers;
use super::engine::EngineInner;
use super::event::EventKind;
use super::job::Report;
use super::registry::ProviderRegistry;
use crate::config::AgentIndex;

/// Shared by every agent of a run (and of the ensembles it nests).
pub(crate) struct RunCtx {
    pub engine: Arc<EngineInner>,
    pub providers: ProviderRegistry,
    /// Forward streamed text as `agent_delta` events.
    pub stream: bool,
    /// Fires on Ctrl-C, `--timeout`, the budget and `cancel`: stop everything now.
    pub cancel: CancellationToken,
    /// Fires on a graceful stop: `generate` nodes finish with what they found.
    pub stop: CancellationToken,
    /// `--no-cache`.
    pub no_cache: bool,
    /// Calls an interrupted run completed, answered again without a call.
    pub resume: Option<Arc<ResumeAnswers>>,
}

/// A message from an executing agent to the dispatcher.
pub(crate) enum Msg {
    /// An event about the agent, or (`nested`: the path inside it) from the nested
    /// ensemble it runs.
    Event {
        agent: AgentIndex,
        nested: Option<Vec<String>>,
        kind: EventKind,
    },
    Done {
        agent: AgentIndex,
        report: Box<Report>,
    },
}

/// An agent's line to the dispatcher.
#[derive(Clone)]
pub(crate) struct AgentTx {
    pub agent: AgentIndex,
    pub tx: mpsc::UnboundedSender<Msg>,
}

impl AgentTx {
    pub(crate) fn send(&self, kind: EventKind) {
        // The dispatcher may be gone after cancellation; nothing to report to then.
        let _ = self.tx.send(Msg::Event {
            agent: self.agent,
            nested: None,
            kind,
        });
    }

    pub(crate) fn send_nested(&self, path: Vec<String>, kind: EventKind) {
        let _ = self.tx.send(Msg::Event {
            agent: self.agent,
            nested: Some(path),
            kind,
        });
    }

    pub(crate) fn done(&self, report: Report) {
        let _ = self.tx.send(Msg::Done {
            agent: self.agent,
            report: Box::new(report),
        });
    }
}
