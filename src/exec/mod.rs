//! The engine: runs plans against providers and publishes what happens as events.
//!
//! Roles (see `docs/executor.md`): `Engine` (`engine.rs`) owns what runs share and starts
//! runs; the dispatcher (`dispatcher.rs`) is each run's one owner loop, starting agents when
//! their dependencies finish and turning what they report into public `Event`s
//! (`event.rs`), folded into a `RunState` (`state.rs`); `prepare.rs` turns a ready agent into
//! a serialisable `Job` (`job.rs`); the local executor (`local.rs`; `nested.rs`, `loop_agent.rs` and
//! `dispatch_agent.rs` for agents that run ensembles) runs jobs
//! in-process under the one call policy (`call.rs`). The run store subscribes through the
//! `Recorder` trait (`record.rs`).

mod call;
mod dispatch_agent;
mod dispatcher;
mod engine;
mod error;
mod event;
mod finish;
mod job;
pub mod layout;
mod local;
mod loop_agent;
mod nested;
mod outcome;
mod prepare;
mod record;
mod registry;
mod retry;
mod run;
mod state;

pub use call::{ResumeAnswers, StoredAnswer};
pub use engine::{
    Engine, EngineConfig, JobControl, PendingRun, ResumeData, RunHandle, RunOptions, RunSource,
    StartError, new_run_id,
};
pub use error::AgentError;
pub use event::{
    CallFinished, CallSource, CallStatus, Event, EventKind, NodeProgress, Subscription, Timestamp,
};
pub use finish::{tokens_summary, warnings};
pub use job::{Job, Report, Work};
pub use outcome::{AgentOutcome, AgentStatus, ProfileFailure, RunOutcome, RunStatus, Totals};
pub use record::{BoxFuture, Recorder, RunRecord};
pub use registry::{Mode, ProviderRegistry};
pub use retry::backoff_delay;
pub use run::{AgentTx, Executor, JobUpdate, LocalExecutor, RunCtx};
pub use state::{AgentState, LiveTotals, Phase, RunState};
