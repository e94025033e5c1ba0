//! What the pieces of one run share: the engine, the run's providers, its cancellation
//! tokens and flags (`RunCtx`), the channel on which executing agents report to the
//! dispatcher (`AgentTx`, carrying `JobUpdate`s), and the `Executor` that runs jobs.

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
pub struct RunCtx {
    pub(crate) engine: Arc<EngineInner>,
    pub(crate) providers: ProviderRegistry,
    /// Forward streamed text as `agent_delta` events.
    pub(crate) stream: bool,
    /// Fires on Ctrl-C, `--timeout`, the budget and `cancel`: stop everything now.
    pub cancel: CancellationToken,
    /// Fires on a graceful stop: `generate` nodes finish with what they found.
    pub stop: CancellationToken,
    /// `--no-cache`.
    pub(crate) no_cache: bool,
    /// Calls an interrupted run completed, answered again without a call.
    pub(crate) resume: Option<Arc<ResumeAnswers>>,
    /// A `generate` job that is one part of a node spread over several jobs (workers):
    /// the node-wide state it shares with the other parts.
    pub(crate) shared_node: Option<Arc<dyn crate::nodes::shared::SharedNode>>,
}

/// Runs jobs: the dispatcher hands every ready agent's job to the engine's executor. The
/// local executor runs it in this process; another (Redis workers) can run it elsewhere, as
/// long as it reports the job's events and then its report on `tx`.
pub trait Executor: Send + Sync {
    /// Starts `job` of a run (an agent of `plan`) as a task in `tasks`.
    fn spawn(
        &self,
        run: Arc<RunCtx>,
        plan: Arc<crate::plan::Plan>,
        job: super::job::Job,
        tx: AgentTx,
        tasks: &mut tokio::task::JoinSet<()>,
    );

    /// Whether jobs call providers in this process, so a run needs working clients (keys)
    /// here. Executors that send jobs elsewhere say no: keys live where calls are made.
    fn calls_providers_here(&self) -> bool {
        true
    }
}

/// Runs every job in this process.
pub struct LocalExecutor;

impl Executor for LocalExecutor {
    fn spawn(
        &self,
        run: Arc<RunCtx>,
        plan: Arc<crate::plan::Plan>,
        job: super::job::Job,
        tx: AgentTx,
        tasks: &mut tokio::task::JoinSet<()>,
    ) {
        tasks.spawn(super::local::execute(run, plan, job, tx));
    }
}

/// What an executing job reports to the dispatcher (or, for `Engine::run_job`, to whoever
/// runs it): events as they happen, then its report.
#[derive(Debug)]
pub enum JobUpdate {
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
pub struct AgentTx {
    pub(crate) agent: AgentIndex,
    pub(crate) tx: mpsc::UnboundedSender<JobUpdate>,
}

impl AgentTx {
    pub(crate) fn send(&self, kind: EventKind) {
        // The dispatcher may be gone after cancellation; nothing to report to then.
        let _ = self.tx.send(JobUpdate::Event {
            agent: self.agent,
            nested: None,
            kind,
        });
    }

    pub(crate) fn send_nested(&self, path: Vec<String>, kind: EventKind) {
        let _ = self.tx.send(JobUpdate::Event {
            agent: self.agent,
            nested: Some(path),
            kind,
        });
    }

    pub(crate) fn done(&self, report: Report) {
        let _ = self.tx.send(JobUpdate::Done {
            agent: self.agent,
            report: Box::new(report),
        });
    }
}
