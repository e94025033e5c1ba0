//! The public event stream of a run: `{run_id, seq, ts, elapsed_ms, type, ...}`.
//!
//! The dispatcher (the one owner loop of a run) stamps every event with the run's next
//! sequence number, applies it to its `RunState`, and publishes it: to the store over a
//! lossless channel, and to live subscribers (progress view, `--output jsonl`, SSE) over a
//! bounded broadcast channel. A subscriber that falls behind is never waited for; it gets a
//! `lagged` event saying how many events it missed. Events serialise both ways, so the
//! store, the server and workers all speak the same JSON.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::broadcast;

use super::outcome::{AgentOutcome, RunOutcome};
use crate::providers::Usage;

/// One event of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub run_id: Arc<str>,
    /// 1, 2, 3, ... within a run (a resumed run continues its numbering).
    pub seq: u64,
    /// Wall-clock time, RFC 3339 UTC with milliseconds.
    pub ts: Timestamp,
    /// Milliseconds since the run (or this resumption of it) started.
    pub elapsed_ms: u64,
    /// The agents enclosing this event when it comes from a nested ensemble, outermost
    /// first; empty for the run's own agents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// The same header (run, number, time, path) with an empty kind, to build a variant of
    /// this event.
    pub fn clone_header(&self) -> Event {
        Event {
            run_id: Arc::clone(&self.run_id),
            seq: self.seq,
            ts: self.ts,
            elapsed_ms: self.elapsed_ms,
            path: self.path.clone(),
            kind: EventKind::Lagged { missed: 0 },
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    RunStarted {
        ensemble: String,
        /// Number of agents.
        agents: usize,
        /// Their names, in declaration order.
        names: Vec<String>,
        input: String,
        /// This run continues an earlier one (`orc resume`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resumed: bool,
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
    /// What an LLM agent's attempt sends: its system prompt and its prompt, rendered (the
    /// dashboard's agent panel shows them). Right after that attempt's `agent_started`.
    AgentPrompt {
        agent: String,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        system: Option<String>,
        prompt: String,
    },
    /// A provider call is about to be sent.
    CallStarted {
        agent: String,
        /// Number of the call within the run, 1-based.
        call: u64,
        attempt: u32,
        profile: String,
        model: String,
        /// Identity of the request (provider, model, messages, settings), as the cache and
        /// recordings key it.
        request_hash: String,
    },
    /// A provider call ended (or was answered without being sent: `source`).
    CallFinished(Box<CallFinished>),
    /// Text as it streams in. A retried attempt streams again from the start.
    AgentDelta {
        agent: String,
        attempt: u32,
        text: String,
    },
    AgentRetrying {
        agent: String,
        attempt: u32,
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error_kind: Option<String>,
        delay_ms: u64,
    },
    /// A fallback profile takes over after the previous one failed.
    AgentFallback {
        agent: String,
        from: String,
        to: String,
        error: String,
    },
    /// A multi-call node's running numbers (`generate`), after each call.
    NodeProgress(Box<NodeProgress>),
    /// A `generate` node accepted a new unique item.
    ItemAccepted {
        agent: String,
        text: String,
        producer: u32,
        profile: String,
        call: u64,
        /// Milliseconds since the node started.
        at: u64,
    },
    AgentFinished {
        agent: String,
        #[serde(flatten)]
        outcome: Arc<AgentOutcome>,
    },
    RunFinished {
        result: Arc<RunOutcome>,
    },
    /// This subscriber fell behind and missed `missed` events (live streams only; the store
    /// never misses one).
    Lagged {
        missed: u64,
    },
}

/// Where a call's answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallSource {
    /// Sent to the provider.
    Provider,
    /// An identical earlier response in the store (`cache: true`).
    Cache,
    /// An identical request in flight at the same time; sent once, shared.
    Coalesced,
    /// A call this run completed before it was interrupted (`orc resume`).
    Resume,
}

impl CallSource {
    /// Whether the call was paid for in this run (or, for `resume`, by this run before it
    /// was interrupted), so its tokens and cost count.
    pub fn is_paid(self) -> bool {
        matches!(self, CallSource::Provider | CallSource::Resume)
    }
}

/// A finished provider call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallFinished {
    pub agent: String,
    pub call: u64,
    pub attempt: u32,
    pub profile: String,
    pub model: String,
    pub provider: String,
    pub latency_ms: u64,
    /// `null` when the provider did not report it.
    #[serde(
        serialize_with = "Usage::serialize_or_null",
        deserialize_with = "Usage::deserialize_or_null"
    )]
    pub usage: Usage,
    pub cost_usd: Option<f64>,
    /// Why the model stopped: `stop`, `length`, `content_filter`, `tool_use`, `refused`,
    /// `other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<crate::providers::FinishKind>,
    /// The provider's own value (`end_turn`, `MAX_TOKENS`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason_raw: Option<String>,
    /// `ok` or `error`.
    pub status: CallStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub source: CallSource,
    pub request_hash: String,
    /// `generate`: the producer that made the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<u32>,
    /// The answer text, for the store (resume and cache read it back). Not part of the
    /// public JSON: it is already in the agent's output or the deltas.
    #[serde(skip)]
    pub response: Option<Arc<str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    Ok,
    Error,
}

/// Live numbers of a `generate` node, after each of its calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeProgress {
    pub agent: String,
    pub unique: u64,
    pub candidates: u64,
    pub calls: u64,
    /// Unique attributes per minute so far, over wall-clock time.
    pub uam: f64,
    pub cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_minute: Option<f64>,
    /// The call just finished (node-wide number) and how many new items it found: the
    /// diminishing-returns series, one point per event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<u64>,
}

impl EventKind {
    /// The agent an event is about, if any.
    pub fn agent(&self) -> Option<&str> {
        match self {
            EventKind::AgentQueued { agent }
            | EventKind::AgentStarted { agent, .. }
            | EventKind::AgentPrompt { agent, .. }
            | EventKind::CallStarted { agent, .. }
            | EventKind::AgentDelta { agent, .. }
            | EventKind::AgentRetrying { agent, .. }
            | EventKind::AgentFallback { agent, .. }
            | EventKind::ItemAccepted { agent, .. }
            | EventKind::AgentFinished { agent, .. } => Some(agent),
            EventKind::CallFinished(c) => Some(&c.agent),
            EventKind::NodeProgress(p) => Some(&p.agent),
            EventKind::RunStarted { .. }
            | EventKind::RunFinished { .. }
            | EventKind::Lagged { .. } => None,
        }
    }

    /// The `type` of the event, as serialised.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RunStarted { .. } => "run_started",
            EventKind::AgentQueued { .. } => "agent_queued",
            EventKind::AgentStarted { .. } => "agent_started",
            EventKind::AgentPrompt { .. } => "agent_prompt",
            EventKind::CallStarted { .. } => "call_started",
            EventKind::CallFinished(_) => "call_finished",
            EventKind::AgentDelta { .. } => "agent_delta",
            EventKind::AgentRetrying { .. } => "agent_retrying",
            EventKind::AgentFallback { .. } => "agent_fallback",
            EventKind::NodeProgress(_) => "node_progress",
            EventKind::ItemAccepted { .. } => "item_accepted",
            EventKind::AgentFinished { .. } => "agent_finished",
            EventKind::RunFinished { .. } => "run_finished",
            EventKind::Lagged { .. } => "lagged",
        }
    }
}

/// Milliseconds since the Unix epoch; RFC 3339 UTC in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        )
    }

    pub fn to_rfc3339(self) -> String {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(self.0)).to_string()
    }

    pub fn parse(text: &str) -> Option<Timestamp> {
        let t = humantime::parse_rfc3339_weak(text).ok()?;
        Some(Timestamp(
            t.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64
        ))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(
            UNIX_EPOCH + Duration::from_millis(self.0),
        ))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not an RFC 3339 time")))
    }
}

/// A live subscription to a run's events. Never slows the run: when this subscriber falls
/// behind, the events it missed are replaced by one `lagged` event.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Event>>,
    run_id: Arc<str>,
    /// The last sequence number delivered, to stamp `lagged` events.
    last_seq: u64,
}

impl Subscription {
    pub(crate) fn new(rx: broadcast::Receiver<Arc<Event>>, run_id: Arc<str>) -> Subscription {
        Subscription {
            rx,
            run_id,
            last_seq: 0,
        }
    }

    /// The next event; `None` once the run is over and every event was delivered.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        let result = self.rx.recv().await;
        self.deliver(result)
    }

    /// As `recv`, blocking the thread (for subscribers that write to files or terminals,
    /// which must not block the async worker threads).
    pub fn blocking_recv(&mut self) -> Option<Arc<Event>> {
        let result = self.rx.blocking_recv();
        self.deliver(result)
    }

    fn deliver(
        &mut self,
        result: Result<Arc<Event>, broadcast::error::RecvError>,
    ) -> Option<Arc<Event>> {
        match result {
            Ok(event) => {
                self.last_seq = event.seq;
                Some(event)
            }
            Err(broadcast::error::RecvError::Closed) => None,
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Arc::new(Event {
                run_id: Arc::clone(&self.run_id),
                seq: self.last_seq,
                ts: Timestamp::now(),
                elapsed_ms: 0,
                path: Vec::new(),
                kind: EventKind::Lagged { missed },
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_json() {
        let event = Event {
            run_id: "run-1".into(),
            seq: 7,
            ts: Timestamp(1_767_225_600_123),
            elapsed_ms: 42,
            path: vec!["outer".into()],
            kind: EventKind::AgentRetrying {
                agent: "a".into(),
                attempt: 2,
                error: "HTTP 503".into(),
                error_kind: Some("http".into()),
                delay_ms: 500,
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "agent_retrying");
        assert_eq!(json["ts"], "2026-01-01T00:00:00.123Z");
        assert_eq!(json["seq"], 7);
        let back: Event = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
    }

    #[test]
    fn finished_agents_round_trip() {
        let outcome = AgentOutcome::not_run("a", super::super::AgentStatus::Skipped);
        let event = Event {
            run_id: "r".into(),
            seq: 1,
            ts: Timestamp::now(),
            elapsed_ms: 0,
            path: Vec::new(),
            kind: EventKind::AgentFinished {
                agent: "a".into(),
                outcome: Arc::new(outcome),
            },
        };
        let text = serde_json::to_string(&event).unwrap();
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
    }
}
