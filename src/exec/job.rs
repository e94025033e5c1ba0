//! A unit of work and its report, both serialisable: the dispatcher turns a ready agent into
//! a `Job`, an executor (in-process today) runs it and sends back events and one `Report`.
//! Nothing here refers to process-local state (no `Instant`, no `Arc<Profile>`), so a job
//! can travel to another process and its report come back.

use serde::{Deserialize, Serialize};

use super::error::AgentError;
use super::outcome::{AgentStatus, ProfileFailure};
use crate::config::AgentIndex;
use crate::providers::Usage;

/// What a ready agent will work on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Work {
    /// The user message of an LLM call.
    Prompt(String),
    /// The topic of a `generate` node.
    Topic(String),
    /// The outputs of a `dedup` node's dependencies: (agent, output).
    Lists(Vec<(String, String)>),
    /// The JSON a script gets on stdin.
    Script(serde_json::Value),
    /// The input of a nested ensemble (`ensemble:`, `loop:`).
    Ensemble(String),
    /// `dispatch:`: the ensemble chosen from a dependency's output, and its input.
    Dispatch { ensemble: String, input: String },
    /// One piece of work per element of the fanned-out array, in order.
    FanOut(Vec<Work>),
}

/// One agent's work in one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub run_id: String,
    pub agent: AgentIndex,
    pub name: String,
    pub work: Work,
    /// The run input (templates of `generate` see it as `input`); shared by every job of
    /// the run.
    pub input: std::sync::Arc<str>,
    pub seed: u64,
    /// Forward streamed text as `agent_delta` events.
    pub stream: bool,
    /// A `generate` node resumed after an interruption: what it had found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<crate::nodes::generate::Resume>,
}

/// How a job ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub status: AgentStatus,
    pub output: Option<String>,
    pub error: Option<AgentError>,
    /// The profile that answered, or the last one tried; for scripts and nested ensembles,
    /// what ran.
    pub profile: String,
    pub model: String,
    pub provider: String,
    /// Provider calls made, across retries and fallbacks.
    pub attempts: u32,
    pub usage: Usage,
    /// `None` when some call's price is unknown.
    pub cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_profiles: Vec<ProfileFailure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<serde_json::Value>,
    /// The answer was not a new call (cache, coalesced, resume).
    #[serde(default)]
    pub cached: bool,
    #[serde(default)]
    pub calls_saved: u32,
    /// Why the model stopped, on the answer (or the error) that ended the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<crate::providers::FinishReason>,
}

impl Report {
    /// A report without any call: the caller sets what it knows.
    pub fn new(status: AgentStatus, profile: &str, model: &str, provider: &str) -> Report {
        Report {
            status,
            output: None,
            error: None,
            profile: profile.to_string(),
            model: model.to_string(),
            provider: provider.to_string(),
            attempts: 0,
            usage: Usage::default(),
            cost_usd: Some(0.0),
            failed_profiles: Vec::new(),
            items: None,
            metrics: None,
            cached: false,
            calls_saved: 0,
            finish_reason: None,
        }
    }

    pub fn failed(mut self, error: AgentError) -> Report {
        self.status = if error.kind == "cancelled" {
            AgentStatus::Cancelled
        } else {
            AgentStatus::Failed
        };
        self.error = Some(error);
        self
    }
}
