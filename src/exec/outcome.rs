//! What a run produced: per-agent outcomes and totals. This is the stable `--output json`
//! document (documented in the README); add fields, never rename them.

use serde::{Deserialize, Serialize};

use crate::providers::{FinishKind, Usage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Succeeded => "succeeded",
            AgentStatus::Failed => "failed",
            AgentStatus::Skipped => "skipped",
            AgentStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every agent succeeded.
    Succeeded,
    /// At least one agent failed or was skipped.
    Failed,
    /// `--timeout` ran out.
    TimedOut,
    /// `budget.max_cost_usd` was reached.
    BudgetExceeded,
    /// Ctrl-C, SIGTERM or SIGHUP, or the server shutting down.
    Interrupted,
    /// Cancelled on request (`POST /api/runs/{id}/cancel`).
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::BudgetExceeded => "budget_exceeded",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<RunStatus> {
        [
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::TimedOut,
            RunStatus::BudgetExceeded,
            RunStatus::Interrupted,
            RunStatus::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Whether `orc resume` can continue a run that ended this way.
    pub fn is_resumable(self) -> bool {
        !matches!(self, RunStatus::Succeeded)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentOutcome {
    pub name: String,
    pub status: AgentStatus,
    pub output: Option<String>,
    /// The profile that answered, or the last one tried.
    pub profile: String,
    pub model: String,
    pub provider: String,
    /// Provider calls made, across retries and fallbacks.
    pub attempts: u32,
    /// `null` when a provider did not report the usage of some call (never a guessed zero).
    #[serde(
        serialize_with = "Usage::serialize_or_null",
        deserialize_with = "Usage::deserialize_or_null"
    )]
    pub usage: Usage,
    /// `null` when the price of the model is unknown.
    pub cost_usd: Option<f64>,
    /// From the first call to the last answer.
    pub latency_ms: u64,
    pub error: Option<String>,
    /// What kind of failure `error` is (`timeout`, `rate_limited`, `http`, `auth`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// The answer came from the cache or an identical call in flight, not a new call.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    /// Provider calls this agent did not make because the answer was already known.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub calls_saved: u32,
    /// Why the model stopped, normalised: `stop`, `length`, `content_filter`, `tool_use`,
    /// `refused` or `other`; `null` when the provider did not say (or no model answered).
    #[serde(default)]
    pub finish_reason: Option<FinishKind>,
    /// The provider's own value: `end_turn`, `MAX_TOKENS`, `length`, ...
    #[serde(default)]
    pub finish_reason_raw: Option<String>,
    /// The answer was cut off at the token limit; it is incomplete.
    #[serde(default)]
    pub truncated: bool,
    /// Skipped by design (its `when` was false, or every dependency was), not because
    /// something failed; such a skip does not fail the run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub neutral_skip: bool,
    /// Profiles tried before the one that answered (or every one, on failure), and why
    /// each did not answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_profiles: Vec<ProfileFailure>,
    /// `generate` and `dedup`: the items, with provenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<serde_json::Value>,
    /// `generate` and `dedup`: the node's metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<serde_json::Value>,
    /// Milliseconds since the run started, when the agent started and finished.
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl AgentOutcome {
    /// An agent that made no call: skipped, cancelled before it started, or failed before
    /// its first call. Profile, model and provider are filled in by the caller when known.
    pub fn not_run(name: &str, status: AgentStatus) -> AgentOutcome {
        AgentOutcome {
            name: name.to_string(),
            status,
            output: None,
            profile: String::new(),
            model: String::new(),
            provider: String::new(),
            attempts: 0,
            usage: Usage::default(),
            cost_usd: None,
            latency_ms: 0,
            error: None,
            error_kind: None,
            cached: false,
            calls_saved: 0,
            finish_reason: None,
            finish_reason_raw: None,
            truncated: false,
            neutral_skip: false,
            failed_profiles: Vec::new(),
            items: None,
            metrics: None,
            started_ms: None,
            finished_ms: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileFailure {
    pub profile: String,
    pub error: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Totals {
    pub agents: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub skipped: usize,
    pub cancelled: usize,
    pub attempts: u32,
    /// The sum of every agent's usage that is known; `usage_unknown_agents` counts the
    /// agents whose usage is not (partly) in it.
    pub usage: Usage,
    /// Agents whose provider did not report usage for some call (their `usage` is `null`).
    pub usage_unknown_agents: usize,
    /// `null` when some agent used a model without a known price.
    pub cost_usd: Option<f64>,
    /// Wall-clock time of the whole run.
    pub wall_ms: u64,
    /// Provider calls not made because the cache, an identical call in flight, or (on
    /// resume) the store already had the answer.
    #[serde(default)]
    pub calls_saved: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOutcome {
    pub run_id: String,
    pub ensemble: String,
    pub input: String,
    pub status: RunStatus,
    /// Shared with the run's `agent_finished` events and state: a 100,000-agent run holds
    /// each outcome once.
    pub agents: Vec<std::sync::Arc<AgentOutcome>>,
    pub totals: Totals,
}

impl RunOutcome {
    /// The document without its agents (their outcomes are recorded apart).
    pub fn clone_without_agents(&self) -> RunOutcome {
        RunOutcome {
            run_id: self.run_id.clone(),
            ensemble: self.ensemble.clone(),
            input: self.input.clone(),
            status: self.status,
            agents: Vec::new(),
            totals: self.totals.clone(),
        }
    }

    pub fn compute_totals(agents: &[std::sync::Arc<AgentOutcome>], wall_ms: u64) -> Totals {
        let mut t = Totals {
            agents: agents.len(),
            wall_ms,
            cost_usd: Some(0.0),
            ..Totals::default()
        };
        for a in agents {
            match a.status {
                AgentStatus::Succeeded => t.succeeded += 1,
                AgentStatus::Failed => t.failed += 1,
                AgentStatus::Skipped => t.skipped += 1,
                AgentStatus::Cancelled => t.cancelled += 1,
            }
            t.attempts += a.attempts;
            t.calls_saved += u64::from(a.calls_saved);
            t.usage += a.usage;
            if a.usage.unknown {
                t.usage_unknown_agents += 1;
            }
            t.cost_usd = match (t.cost_usd, a.cost_usd) {
                (Some(sum), Some(c)) => Some(sum + c),
                (sum, None) if a.attempts == 0 => sum,
                _ => None,
            };
        }
        t
    }
}
