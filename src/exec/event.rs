//! Events the executor emits. The progress view and `--output jsonl` subscribe to them;
//! the executor itself never prints.

use serde::Serialize;

use super::outcome::{AgentStatus, RunOutcome};
use crate::providers::Usage;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        ensemble: String,
        agents: usize,
    },
    /// All dependencies finished; waiting for a concurrency slot.
    AgentQueued {
        agent: String,
    },
    AgentStarted {
        agent: String,
        attempt: u32,
        profile: String,
        model: String,
    },
    AgentRetrying {
        agent: String,
        attempt: u32,
        error: String,
        delay_ms: u64,
    },
    /// A fallback profile takes over after the previous one failed.
    AgentFallback {
        agent: String,
        from: String,
        to: String,
        error: String,
    },
    /// Text as it streams in. A retried attempt streams again from the start.
    AgentDelta {
        agent: String,
        attempt: u32,
        text: String,
    },
    /// A multi-call node's running numbers (`generate`), after each call.
    NodeProgress {
        agent: String,
        unique: u64,
        candidates: u64,
        calls: u64,
        /// Unique attributes per minute so far, over wall-clock time.
        uam: f64,
        cost_usd: Option<f64>,
    },
    AgentTokens {
        agent: String,
        #[serde(serialize_with = "Usage::serialize_or_null")]
        usage: Usage,
    },
    AgentFinished {
        agent: String,
        status: AgentStatus,
        output: Option<String>,
        error: Option<String>,
        attempts: u32,
        latency_ms: u64,
        #[serde(serialize_with = "Usage::serialize_or_null")]
        usage: Usage,
        cost_usd: Option<f64>,
    },
    RunFinished {
        result: Box<RunOutcome>,
    },
}

/// A subscriber to executor events.
pub trait EventSink: Send {
    fn emit(&mut self, event: &Event);
}

impl EventSink for Vec<Event> {
    fn emit(&mut self, event: &Event) {
        self.push(event.clone());
    }
}

/// Sends every event to each of several sinks.
impl EventSink for Vec<Box<dyn EventSink>> {
    fn emit(&mut self, event: &Event) {
        for sink in self.iter_mut() {
            sink.emit(event);
        }
    }
}

/// Ignores events.
pub struct NoSink;

impl EventSink for NoSink {
    fn emit(&mut self, _event: &Event) {}
}
