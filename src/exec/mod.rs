//! Execution: runs a `Plan` against providers and emits `Event`s.
//!
//! The scheduler (`scheduler.rs`) starts each agent the moment all of its dependencies have
//! finished; there is no barrier between phases. Results come back over one channel to one
//! owner loop, the only code that mutates run state. UIs (progress bars, JSON lines) only
//! subscribe to events. See `docs/executor.md`.

mod event;
mod finish;
pub mod layout;
mod outcome;
mod retry;
mod scheduler;

pub use event::{Event, EventSink, NoSink};
pub use finish::{tokens_summary, warnings};
pub use outcome::{AgentOutcome, AgentStatus, ProfileFailure, RunOutcome, RunStatus, Totals};
pub use retry::backoff_delay;
pub use scheduler::{Mode, ProviderRegistry, RunOptions, run};
