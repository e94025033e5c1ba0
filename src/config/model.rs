//! Validated domain types: what the rest of orc works with after `config::load`.
//! Every name here has been resolved (profiles exist, dependencies exist, no cycles).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::error::SourceFile;
use super::spec::{
    AgentKind, InputScope, MockFailure, OnDependencyFailure, OptimizerSpec, OptimizerStrategy,
    PartitionSpec, ProviderKind, StopSpec,
};

/// Where a profile was defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Compiled into orc (`profiles/mock.yaml`).
    Builtin,
    /// A user or project profile file.
    File(PathBuf),
    /// `model_profiles:` inside an ensemble file.
    Ensemble(PathBuf),
    /// `model:` + `provider:` written directly on an agent.
    Agent(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Builtin => f.write_str("built-in"),
            Origin::File(p) | Origin::Ensemble(p) => write!(f, "{}", p.display()),
            Origin::Agent(a) => write!(f, "agent `{a}`"),
        }
    }
}

/// Whether identical requests are answered from the store and coalesced in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    Off,
    /// Reuse answers at most `ttl` old (any age when `None`).
    On {
        ttl: Option<Duration>,
    },
}

impl Cache {
    /// The policy in effect: the agent's, else its profile's, else off.
    pub fn effective(agent: Option<Cache>, profile: Option<Cache>) -> Cache {
        agent.or(profile).unwrap_or(Cache::Off)
    }
}

/// Settings of the offline mock provider.
#[derive(Debug, Clone, PartialEq)]
pub struct MockSettings {
    pub latency: Duration,
    pub jitter: Duration,
    pub fail_rate: f64,
    pub fail_attempts: u32,
    pub fail_with: MockFailure,
    pub invalid_json_attempts: u32,
    pub vocabulary: u32,
    pub zipf: f64,
    pub yield_rate: f64,
    pub feedback_adherence: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub max_concurrency: Option<u32>,
}

/// Dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    pub cached_input_per_mtok: f64,
}

impl Price {
    /// Dollars for a call; `cached` input tokens are part of `input` and billed at the
    /// cached rate.
    pub fn cost(&self, input: u64, cached: u64, output: u64) -> f64 {
        let cached = cached.min(input);
        ((input - cached) as f64 * self.input_per_mtok
            + cached as f64 * self.cached_input_per_mtok
            + output as f64 * self.output_per_mtok)
            / 1_000_000.0
    }
}

/// A resolved model profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub origin: Origin,
    pub description: Option<String>,
    pub provider: ProviderKind,
    pub model: String,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub timeout: Option<Duration>,
    pub first_byte_timeout: Option<Duration>,
    /// Cap on a response's size; `None` is the default cap.
    pub max_response_bytes: Option<u64>,
    pub limits: Limits,
    pub breaker_failures: Option<u32>,
    pub breaker_cool_down: Option<Duration>,
    /// Name of the profile to fall back to (resolved when an agent uses this one).
    pub fallback: Option<String>,
    pub price: Option<Price>,
    pub options: BTreeMap<String, serde_json::Value>,
    pub cache: Option<Cache>,
    pub mock: MockSettings,
    /// System prompt of agents that set none (llm-orc profiles carry one).
    pub system_prompt: Option<String>,
}

/// Settings of a `generate` node.
#[derive(Debug, Clone)]
pub struct GenerateSettings {
    /// Template of the topic; `None` means the run input.
    pub topic: Option<String>,
    pub producers: u32,
    pub batch_size: u32,
    /// Candidate profiles (at least one).
    pub profiles: Vec<Arc<Profile>>,
    /// Template overriding the built-in prompt.
    pub prompt: Option<String>,
    pub feedback: u32,
    pub partition: Partition,
    pub stop: Stop,
    pub normalize: bool,
    pub output: Option<PathBuf>,
    /// `output` may replace an existing file (checked at load: without this or `append`,
    /// an existing file is refused).
    pub overwrite: bool,
    /// `output` is appended to rather than replaced.
    pub append: bool,
    pub optimizer: Option<OptimizerSettings>,
    pub expected_items: u64,
    pub false_positive_rate: f64,
}

/// Settings of a `dedup` node.
#[derive(Debug, Clone)]
pub struct DedupSettings {
    pub normalize: bool,
    /// Drop near-duplicates at or above this token-set similarity.
    pub near_duplicates: Option<f64>,
}

/// What kind of work a node does, with its settings.
#[derive(Debug, Clone)]
pub enum NodeKind {
    Llm,
    Generate(Box<GenerateSettings>),
    Dedup(DedupSettings),
    Script(Script),
    /// Runs another ensemble (`ensemble: NAME|PATH`), resolved and loaded with the file.
    Nested(Nested),
}

/// An agent that runs another ensemble: once (`ensemble:`), in a bounded loop (`loop:`), or
/// chosen at run time (`dispatch:`).
#[derive(Debug, Clone)]
pub struct Nested {
    /// As written: a name or a path (`ensemble:`, `loop.body`), or the `dispatch:` text.
    pub reference: String,
    /// The ensemble, loaded with the file that names it; `None` only for a `dispatch` whose
    /// target is chosen at run time.
    pub ensemble: Option<Arc<Ensemble>>,
    pub control: Control,
}

/// How an agent runs its ensemble.
#[derive(Debug, Clone)]
pub enum Control {
    /// `ensemble:`: once; the agent's output is the ensemble's final output.
    Once,
    /// `loop:`: again and again under a bound.
    Loop(Box<LoopSettings>),
    /// `dispatch:`: the ensemble a dependency names.
    Dispatch(Box<DispatchSettings>),
}

/// A validated `loop:`.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    /// Holds over the body's output object; its `path` is the whole path into that object.
    pub until: crate::config::condition::Condition,
    pub max_iterations: u32,
    /// Path into the body's output whose value becomes the next input.
    pub carry: Option<Vec<String>>,
    /// The agent's own `timeout_seconds`: a bound on the whole loop.
    pub timeout: Option<Duration>,
}

/// A validated `dispatch:`.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// Where the target's name comes from; `None` when `dispatch:` names an ensemble, which
    /// is then loaded with the file.
    pub source: Option<DispatchSource>,
    /// Loads the chosen ensemble at run time.
    pub loader: Option<Arc<super::nested::EnsembleLoader>>,
    /// The agent's own `timeout_seconds`: a bound on the whole dispatched run.
    pub timeout: Option<Duration>,
}

/// `${agent.path}`: the value at `path` of dependency `agent`'s JSON output (its whole
/// output when `path` is empty) names the ensemble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchSource {
    pub agent: String,
    pub path: Vec<String>,
    /// As written.
    pub text: String,
}

/// Index of an agent in declaration order.
pub type AgentIndex = usize;

/// A validated agent.
#[derive(Debug, Clone)]
pub struct Agent {
    pub index: AgentIndex,
    pub name: String,
    pub kind: AgentKind,
    pub node: NodeKind,
    /// Run only if this holds over a dependency's output.
    pub condition: Option<Box<crate::config::condition::Condition>>,
    /// Dotted path into a dependency's JSON output used as the input.
    pub input_key: Option<String>,
    /// One instance per element of the input array.
    pub fan_out: bool,
    /// `input_scope: dependencies`: the input is the dependencies' outputs only.
    pub input_scope: Option<InputScope>,
    /// Passed to scripts as `parameters`.
    pub parameters: Option<serde_json::Value>,
    pub profile: Arc<Profile>,
    /// Tried in order when the primary still fails after its retries.
    pub fallbacks: Vec<Arc<Profile>>,
    pub system_prompt: Option<String>,
    pub prompt: Option<String>,
    pub depends_on: Vec<AgentIndex>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub options: BTreeMap<String, serde_json::Value>,
    pub response_format: Option<ResponseFormat>,
    pub cache: Option<Cache>,
    pub timeout: Duration,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub on_dependency_failure: OnDependencyFailure,
}

/// A validated ensemble, ready to plan and run.
#[derive(Debug, Clone)]
pub struct Ensemble {
    pub name: String,
    pub description: Option<String>,
    pub default_task: Option<String>,
    pub max_cost_usd: Option<f64>,
    pub agents: Vec<Agent>,
    pub source: SourceFile,
    /// `tests:` of the file, checked for agent names and regexes.
    pub tests: Vec<super::spec::TestSpec>,
}

pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
pub(super) const DEFAULT_RETRIES: u32 = 2;
pub(super) const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(500);
pub const DEFAULT_PROFILE: &str = "mock";

/// What a script node runs.
#[derive(Debug, Clone)]
pub struct Script {
    pub argv: Vec<String>,
    /// Where it runs, decided at load: the project root in a project with `.llm-orc/` (as
    /// llm-orc runs scripts), else the ensemble file's folder.
    pub cwd: Option<PathBuf>,
}

/// An agent's `response_format`: JSON, or JSON that satisfies a schema compiled once, when
/// the ensemble is loaded.
#[derive(Clone)]
pub struct ResponseFormat {
    schema: Option<Arc<(serde_json::Value, jsonschema::Validator)>>,
}

impl ResponseFormat {
    /// Any JSON.
    pub fn json() -> ResponseFormat {
        ResponseFormat { schema: None }
    }

    /// JSON that satisfies `schema`, or why the schema is not a valid JSON Schema.
    pub fn with_schema(schema: serde_json::Value) -> Result<ResponseFormat, String> {
        let validator = jsonschema::validator_for(&schema).map_err(|e| e.to_string())?;
        Ok(ResponseFormat {
            schema: Some(Arc::new((schema, validator))),
        })
    }

    /// The JSON Schema, when one is given.
    pub fn schema(&self) -> Option<&serde_json::Value> {
        self.schema.as_deref().map(|(schema, _)| schema)
    }

    /// Checks a model's answer: JSON (a surrounding code fence is tolerated) that satisfies
    /// the schema. Returns the JSON in compact form, or what is wrong, in words a model can
    /// act on.
    pub fn check(&self, text: &str) -> Result<String, String> {
        let mut body = text.trim();
        if let Some(rest) = body.strip_prefix("```") {
            body = rest.split_once('\n').map_or("", |(_, b)| b);
            body = body.trim_end().strip_suffix("```").unwrap_or(body).trim();
        }
        let value: serde_json::Value =
            serde_json::from_str(body).map_err(|e| format!("it is not JSON ({e})"))?;
        if let Some((_, validator)) = self.schema.as_deref() {
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .take(3)
                .map(|e| {
                    let at = e.instance_path().to_string();
                    if at.is_empty() {
                        e.to_string()
                    } else {
                        format!("at `{at}`: {e}")
                    }
                })
                .collect();
            if !errors.is_empty() {
                return Err(format!(
                    "it does not match the schema: {}",
                    errors.join("; ")
                ));
            }
        }
        Ok(serde_json::to_string(&value).expect("JSON values serialize"))
    }
}

impl std::fmt::Debug for ResponseFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.schema() {
            None => f.write_str("json"),
            Some(schema) => write!(f, "{schema}"),
        }
    }
}

/// As written: `json`, or the schema (request hashes of recordings depend on this form).
impl serde::Serialize for ResponseFormat {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.schema() {
            None => serializer.serialize_str("json"),
            Some(schema) => schema.serialize(serializer),
        }
    }
}

/// When a `generate` node stops: the first limit reached (load makes sure one is set).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stop {
    /// Calls per producer.
    pub iterations: Option<u32>,
    /// Unique items in all.
    pub unique: Option<u64>,
    pub seconds: Option<f64>,
    pub cost_usd: Option<f64>,
    /// Diminishing returns: fewer new items a call than this, `patience` calls in a row.
    pub min_new_per_call: Option<f64>,
    pub patience: Option<u32>,
}

impl From<StopSpec> for Stop {
    fn from(spec: StopSpec) -> Stop {
        Stop {
            iterations: spec.iterations,
            unique: spec.unique,
            seconds: spec.seconds,
            cost_usd: spec.cost_usd,
            min_new_per_call: spec.min_new_per_call,
            patience: spec.patience,
        }
    }
}

/// How a `generate` topic is split among its producers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    /// Every producer works on the whole topic.
    None,
    /// An LLM call splits the topic into subtopics.
    Semantic,
    /// One attribute type (physical, functional, contextual, ...) a producer.
    AttributeType,
}

impl From<PartitionSpec> for Partition {
    fn from(spec: PartitionSpec) -> Partition {
        match spec {
            PartitionSpec::None => Partition::None,
            PartitionSpec::Semantic => Partition::Semantic,
            PartitionSpec::AttributeType => Partition::AttributeType,
        }
    }
}

/// How a `generate` node with several candidate profiles picks the next call's profile.
#[derive(Debug, Clone)]
pub struct OptimizerSettings {
    pub strategy: OptimizerStrategy,
    /// `weighted`'s weights by objective (`uam`, `cost`, `efficiency`); none is 0.
    pub weights: BTreeMap<String, f64>,
}

impl From<&OptimizerSpec> for OptimizerSettings {
    fn from(spec: &OptimizerSpec) -> OptimizerSettings {
        OptimizerSettings {
            strategy: spec.strategy,
            weights: spec.weights.clone().unwrap_or_default(),
        }
    }
}
