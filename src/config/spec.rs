//! The `*Spec` types: ensembles and profiles exactly as users write them in YAML.
//!
//! These types are the single source of truth for the file formats: serde reads them and
//! schemars turns them (and their `///` docs) into the JSON Schemas under `schemas/`.
//! Nothing here is validated beyond its shape; `config::validate` lowers them into the
//! domain types of `config::model`. No `flatten`, no `tag = "type"`: they break located
//! errors (see STYLE.md 3).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::bounds::{
    MAX_BATCH_SIZE, MAX_BREAKER_FAILURES, MAX_CONCURRENCY, MAX_FALSE_POSITIVE_RATE, MAX_FEEDBACK,
    MAX_ITEMS, MAX_ITERATIONS, MAX_MAX_TOKENS, MAX_MOCK_ATTEMPTS, MAX_MOCK_LATENCY_MS,
    MAX_PATIENCE, MAX_PRICE_PER_MTOK, MAX_PRODUCERS, MAX_REQUESTS_PER_MINUTE, MAX_RETRIES,
    MAX_RETRY_BACKOFF_MS, MAX_RUN_SECONDS, MAX_TEMPERATURE, MAX_TEST_TOKENS, MAX_TIMEOUT_SECONDS,
    MAX_TOKENS_PER_MINUTE, MAX_USD, MAX_WEIGHT, MIN_FALSE_POSITIVE_RATE, MIN_TIMEOUT_SECONDS,
};

/// An orc ensemble: agents, the models they use, and the `depends_on` edges between them.
/// Other top-level keys are ignored with a warning, as llm-orc ignores them.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "orc ensemble")]
pub struct EnsembleSpec {
    /// URL or path of the JSON Schema for editors; ignored by orc.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Name of the ensemble: letters, digits, `-` and `_`.
    #[schemars(pattern(r"^[A-Za-z0-9_-]+$"))]
    pub name: String,
    /// What the ensemble does, shown by `orc list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Input used when none is given on the command line or stdin (llm-orc compatible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_task: Option<String>,
    /// Settings applied to every agent unless the agent sets them itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<DefaultsSpec>,
    /// Hard limits for the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSpec>,
    /// Model profiles defined inside this file; they override profiles of the same name
    /// from the project and user configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_profiles: Option<BTreeMap<String, ProfileSpec>>,
    /// The agents of the ensemble, in declaration order.
    #[schemars(length(min = 1))]
    pub agents: Vec<AgentSpec>,
    /// Checks that `orc test` runs: inputs and what the run must produce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<Vec<TestSpec>>,
    /// llm-orc's older name for `default_task`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

/// One test of an ensemble, run by `orc test`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// What the test shows.
    pub name: String,
    /// The run input.
    pub input: String,
    /// Seed for the mock provider (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = u64::MAX))]
    pub seed: Option<u64>,
    /// What must hold after the run; every expectation is checked.
    #[schemars(length(min = 1))]
    pub expect: Vec<ExpectSpec>,
}

/// One expectation: about an `agent` (`status`, `contains`, `matches` or `json`), or about
/// the whole run (`max_cost_usd`, `max_tokens`, `status` without `agent`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// The agent the expectation is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// `succeeded`, `failed`, `skipped` or `cancelled` (of the agent; or of the run:
    /// `succeeded`, `failed`, `timed_out`, `budget_exceeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The agent's output contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// The agent's output matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    /// The value at a dotted path of the agent's JSON output equals a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<JsonExpectSpec>,
    /// The run costs at most this much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = MAX_USD))]
    pub max_cost_usd: Option<f64>,
    /// The run uses at most this many tokens (in + out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_TEST_TOKENS))]
    pub max_tokens: Option<u64>,
}

/// `json: {path: route, equals: bug}`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonExpectSpec {
    /// Dotted path into the agent's JSON output (`route`, `items.0.name`).
    pub path: String,
    /// The value expected there.
    pub equals: serde_json::Value,
}

/// Agent keys of llm-orc that orc accepts but does not use (reported as warnings).
pub const LLM_ORC_IGNORED_AGENT_KEYS: [&str; 1] = ["output_format"];

/// Settings applied to every agent that does not set them itself.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultsSpec {
    /// Model profile used by agents that name neither `model_profile` nor `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_profile: Option<String>,
    /// Timeout of each provider call once it is sent, in seconds (default 60); waiting for
    /// the profile's limits, a rate-limit cool-down or the circuit breaker does not count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_TIMEOUT_SECONDS, max = MAX_TIMEOUT_SECONDS))]
    pub timeout_seconds: Option<f64>,
    /// How many times a retryable failure (timeout, rate limit, server error) is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_RETRIES))]
    pub retries: Option<u32>,
    /// First retry delay in milliseconds; doubles on each retry, with jitter (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_RETRY_BACKOFF_MS))]
    pub retry_backoff_ms: Option<u64>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = MAX_TEMPERATURE))]
    pub temperature: Option<f64>,
    /// Maximum number of output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_MAX_TOKENS))]
    pub max_tokens: Option<u32>,
    /// What a dependent does when a dependency failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_dependency_failure: Option<OnDependencyFailure>,
}

/// Hard limits for the whole run.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// Stop starting new calls and cancel running ones once the run has cost this much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = MAX_USD))]
    pub max_cost_usd: Option<f64>,
}

/// The kind of node an agent is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    /// One call to a language model (the default).
    #[default]
    Llm,
    /// Multi-producer topic exploration with deduplication.
    Generate,
    /// Deduplicates the list outputs of its dependencies.
    Dedup,
    /// Runs a program with the agent's input as JSON on stdin.
    Script,
}

/// What a dependent agent does when one of its dependencies failed or was skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnDependencyFailure {
    /// Do not run; mark the agent `skipped` (the default).
    #[default]
    Skip,
    /// Run anyway with whatever the dependencies produced.
    Run,
}

/// A dependency: an agent name, or llm-orc's `{agent_name: NAME}` form.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum DependencySpec {
    /// Name of an agent of this ensemble.
    Name(String),
    /// llm-orc form: `{agent_name: NAME}`.
    Object(DependencyObjectSpec),
}

/// llm-orc's object form of a dependency.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DependencyObjectSpec {
    /// Name of an agent of this ensemble.
    pub agent_name: String,
}

impl DependencySpec {
    pub fn name(&self) -> &str {
        match self {
            DependencySpec::Name(name) => name,
            DependencySpec::Object(object) => &object.agent_name,
        }
    }
}

/// One agent (node) of the ensemble.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Unique name of the agent: letters, digits, `-` and `_`.
    #[schemars(pattern(r"^[A-Za-z0-9_-]+$"))]
    pub name: String,
    /// Node type: `llm` (default), `generate`, `dedup` or `script`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<AgentKind>,
    /// Name of the model profile to use. Exclusive with `model` + `provider`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_profile: Option<String>,
    /// Model name, used together with `provider` instead of a `model_profile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Provider of `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderKind>,
    /// Base URL of the provider's API, with `model` + `provider`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// System prompt: the agent's role and instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// minijinja template for the user message. Sees `input`, `deps` (list of
    /// `{name, output, json, status}`) and `agents.NAME`. Without it the agent receives the
    /// input followed by each dependency's output (see the README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Agents whose output this agent needs; it starts as soon as all of them finish.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<DependencySpec>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = MAX_TEMPERATURE))]
    pub temperature: Option<f64>,
    /// Maximum number of output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_MAX_TOKENS))]
    pub max_tokens: Option<u32>,
    /// Provider-specific options, passed through unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, serde_json::Value>>,
    /// `json`, or a JSON Schema the output must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormatSpec>,
    /// Timeout of each provider call once it is sent, in seconds (default 60); waiting for
    /// the profile's limits, a rate-limit cool-down or the circuit breaker does not count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_TIMEOUT_SECONDS, max = MAX_TIMEOUT_SECONDS))]
    pub timeout_seconds: Option<f64>,
    /// How many times a retryable failure is retried (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_RETRIES))]
    pub retries: Option<u32>,
    /// First retry delay in milliseconds; doubles on each retry, with jitter (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_RETRY_BACKOFF_MS))]
    pub retry_backoff_ms: Option<u64>,
    /// Profile tried when the primary profile still fails after its retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_model_profile: Option<String>,
    /// What to do when a dependency failed or was skipped: `skip` (default) or `run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_dependency_failure: Option<OnDependencyFailure>,
    /// Run only if this condition over a dependency's JSON output holds, e.g.
    /// `"${classifier.route} == bug"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Dotted path into a dependency's JSON output used as this agent's input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_key: Option<String>,
    /// Run one instance per element of the `input_key` array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<bool>,
    /// `true` to answer a request identical to an earlier one (provider, model, messages,
    /// settings) from the run store, and to send identical requests in flight at the same
    /// time once; `{ttl: 1h}` to reuse only answers that recent; `false` to turn off a
    /// profile's caching for this agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
    /// Candidate profiles for `generate` nodes and the optimizer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiles: Option<Vec<String>>,
    /// How calls are routed among `profiles`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<OptimizerSpec>,
    /// `generate`: the topic to explore (template; default the run input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// `generate`: number of concurrent producer loops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_PRODUCERS))]
    pub producers: Option<u32>,
    /// `generate`: items asked for per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_BATCH_SIZE))]
    pub batch_size: Option<u32>,
    /// `generate`: how many accepted items are fed back per prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_FEEDBACK))]
    pub feedback: Option<u32>,
    /// `generate`: how the topic is split among producers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<PartitionSpec>,
    /// `generate`: stop conditions; the first reached wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopSpec>,
    /// `generate` and `dedup`: normalise items before comparing them (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
    /// `dedup`: also drop near-duplicates at or above this similarity (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub near_duplicates: Option<f64>,
    /// `generate`: size of the uniqueness tracker's Bloom filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracker: Option<TrackerSpec>,
    /// `generate`: JSONL file the unique items are written to (relative to the working
    /// directory). An existing file is refused unless `overwrite` or `append` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// `generate`: replace an existing `output` file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overwrite: Option<bool>,
    /// `generate`: add to an existing `output` file instead of replacing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append: Option<bool>,
    /// `script`: program and arguments to run (no shell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub run: Option<Vec<String>>,
    /// `script` (llm-orc form): path of the script to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// `script` (llm-orc form): parameters passed to the script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, serde_json::Value>>,
    /// Run another ensemble (name or path) as this agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<String>,
    /// `dependencies`: the agent receives its dependencies' outputs without the run input
    /// (llm-orc's isolation of verifier agents). For `llm` agents and agents that run
    /// ensembles (`ensemble`, `loop`, `dispatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_scope: Option<InputScope>,
    /// llm-orc compatibility: accepted and reported as a warning; orc does not use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_format: Option<serde_json::Value>,
    /// Run another ensemble (`body`) again and again, until a condition over its output
    /// holds or `max_iterations` is reached (llm-orc's bounded loop). The agent's output is
    /// `{"output": ..., "iterations": N, "terminated": "until"|"exhausted", ...}`.
    #[serde(default, rename = "loop", skip_serializing_if = "Option::is_none")]
    pub loop_spec: Option<LoopSpec>,
    /// Run the ensemble a dependency's output names, chosen at run time:
    /// `${route.target}` (a dotted path into that dependency's JSON output), or an ensemble's
    /// name. The agent's output is llm-orc's record of the run:
    /// `{"ensemble", "status", "has_errors", "deliverable", "results"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch: Option<String>,
}

/// What an agent's input is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputScope {
    /// Only the outputs of the agent's dependencies, without the run input.
    Dependencies,
}

/// A bounded loop: the body ensemble runs once per iteration.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoopSpec {
    /// The ensemble run each iteration: a path relative to this file, or the name of an
    /// ensemble on the search path.
    pub body: String,
    /// Stop once this holds over the body's output (its final agent's JSON):
    /// `${path}` (truthy), `${path} == value` or `${path} != value`, e.g.
    /// `"${diagnostics.accept}"`.
    pub until: String,
    /// Most iterations (1 to 1000); the loop stops there with `terminated: exhausted`.
    #[schemars(range(min = 1, max = 1000))]
    pub max_iterations: u32,
    /// `${path}` into the body's output whose value is the next iteration's input (text as
    /// it is, anything else as JSON); when it is missing the input stays as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carry: Option<String>,
}

/// `cache:` as written: a switch, or settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum CacheSpec {
    /// `true` or `false`.
    Enabled(bool),
    /// `{ttl: 1h}`.
    Settings(CacheSettingsSpec),
}

/// Cache settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheSettingsSpec {
    /// How old a reused answer may be: `90s`, `30m`, `1h`, `7d` (default: any age).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// `json` or a JSON Schema object.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ResponseFormatSpec {
    /// `json`: the output must be valid JSON.
    Keyword(ResponseFormatKeyword),
    /// A JSON Schema the output must satisfy.
    Schema(BTreeMap<String, serde_json::Value>),
}

impl ResponseFormatSpec {
    /// The JSON Schema, when one is given.
    pub fn schema(&self) -> Option<serde_json::Value> {
        match self {
            ResponseFormatSpec::Keyword(_) => None,
            ResponseFormatSpec::Schema(map) => Some(serde_json::Value::Object(
                map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            )),
        }
    }
}

/// Keyword forms of `response_format`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResponseFormatKeyword {
    /// The output must be valid JSON.
    Json,
}

/// Sizing of the uniqueness tracker (a Bloom filter in front of an exact set: a wrong
/// size costs speed and memory, never items).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackerSpec {
    /// Items the filter is sized for (default 100000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_ITEMS))]
    pub expected_items: Option<u64>,
    /// Target false-positive rate of the filter (default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_FALSE_POSITIVE_RATE, max = MAX_FALSE_POSITIVE_RATE))]
    pub false_positive_rate: Option<f64>,
}

/// Optimizer settings for a node with several candidate `profiles`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSpec {
    /// What to optimise for.
    pub strategy: OptimizerStrategy,
    /// Weights for the `weighted` strategy: `uam`, `cost` and `efficiency` (default 1 each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "weights_schema")]
    pub weights: Option<BTreeMap<String, f64>>,
}

/// `weights`: the three known names, each a bounded number.
fn weights_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let weight = serde_json::json!({
        "type": "number",
        "minimum": 0.0,
        "maximum": MAX_WEIGHT,
    });
    schemars::json_schema!({
        "type": "object",
        "properties": {
            "uam": weight,
            "cost": weight,
            "efficiency": weight,
        },
        "additionalProperties": false,
    })
}

/// Optimizer strategies.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerStrategy {
    /// Most unique attributes per minute.
    MaximizeUam,
    /// Lowest cost.
    MinimizeCost,
    /// Most unique items per dollar.
    MaximizeEfficiency,
    /// A weighted mix of the above.
    Weighted,
}

/// How a `generate` topic is split among producers.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartitionSpec {
    /// No split: every producer works on the whole topic.
    None,
    /// An LLM call splits the topic into subtopics.
    Semantic,
    /// Split by attribute type (physical, functional, contextual, ...).
    AttributeType,
}

/// Stop conditions of a `generate` node; the first reached wins.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopSpec {
    /// Calls per producer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_ITERATIONS))]
    pub iterations: Option<u32>,
    /// Target number of unique items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_ITEMS))]
    pub unique: Option<u64>,
    /// Wall-clock limit in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = MAX_RUN_SECONDS))]
    pub seconds: Option<f64>,
    /// Cost limit in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = MAX_USD))]
    pub cost_usd: Option<f64>,
    /// Diminishing returns: fewer new items per call than this ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = MAX_BATCH_SIZE))]
    pub min_new_per_call: Option<f64>,
    /// ... for this many calls in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_PATIENCE))]
    pub patience: Option<u32>,
}

/// The wire protocol a profile speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// Built-in offline provider with synthetic output; needs no key.
    #[default]
    Mock,
    /// OpenAI Chat Completions.
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini generateContent.
    Gemini,
    /// Ollama `/api/chat`.
    Ollama,
    /// Any server speaking OpenAI Chat Completions at `base_url` (llama.cpp, vLLM, LM Studio).
    OpenaiCompatible,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 6] = [
        ProviderKind::Mock,
        ProviderKind::Openai,
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
        ProviderKind::Ollama,
        ProviderKind::OpenaiCompatible,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Mock => "mock",
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Ollama => "ollama",
            ProviderKind::OpenaiCompatible => "openai-compatible",
        }
    }

    /// The environment variable a key is read from when the profile names none.
    pub fn default_api_key_env(self) -> Option<&'static str> {
        match self {
            ProviderKind::Openai => Some("OPENAI_API_KEY"),
            ProviderKind::Anthropic => Some("ANTHROPIC_API_KEY"),
            ProviderKind::Gemini => Some("GEMINI_API_KEY"),
            ProviderKind::Mock | ProviderKind::Ollama | ProviderKind::OpenaiCompatible => None,
        }
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file of model profiles: `~/.config/orc/profiles/*.yaml`, `.orc/profiles/*.yaml`,
/// `config.yaml`, or the shipped `profiles/*.yaml`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "orc profiles")]
pub struct ProfilesFileSpec {
    /// URL or path of the JSON Schema for editors; ignored by orc.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Named model profiles.
    #[serde(default)]
    pub model_profiles: BTreeMap<String, ProfileSpec>,
    /// Folders searched for `script:` files after the ensemble's own folder, the project and
    /// `ORC_SCRIPT_PATH`; relative paths are relative to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_path: Option<Vec<String>>,
}

/// A named model configuration: provider, model and settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// What the profile is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Wire protocol: `mock`, `openai`, `anthropic`, `gemini`, `ollama`, `openai-compatible`.
    pub provider: ProviderKind,
    /// Model name as the provider knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Base URL of the API (required for `openai-compatible`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Environment variable holding the API key (default per provider, e.g. `OPENAI_API_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Maximum number of output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_MAX_TOKENS))]
    pub max_tokens: Option<u32>,
    /// Sampling temperature (sent only if the model accepts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = MAX_TEMPERATURE))]
    pub temperature: Option<f64>,
    /// Timeout of each call, in seconds; an agent's own `timeout_seconds` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_TIMEOUT_SECONDS, max = MAX_TIMEOUT_SECONDS))]
    pub timeout_seconds: Option<f64>,
    /// Longest wait for the first byte of a response, and between two chunks of a stream,
    /// in seconds (default 60, never more than the call's timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_TIMEOUT_SECONDS, max = MAX_TIMEOUT_SECONDS))]
    pub first_byte_timeout_seconds: Option<f64>,
    /// Largest response accepted from the provider, in bytes (default 33554432, 32 MiB); a
    /// bigger one, plain or streamed, fails the call without being read further.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub max_response_bytes: Option<u64>,
    /// Rate and concurrency limits shared by every agent using this profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
    /// When calls to this profile's endpoint wait for a probe after repeated failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    /// Profile tried when this one still fails after its retries (a chain when that one has
    /// its own). An agent's `fallback_model_profile` comes first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_model_profile: Option<String>,
    /// Price per million tokens. Without one, cost is reported as unknown (never as zero),
    /// except for `mock` profiles, which are free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<PriceSpec>,
    /// Provider-specific options, passed through unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, serde_json::Value>>,
    /// Reuse identical earlier answers for every agent using this profile (see the agent's
    /// `cache`, which wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
    /// `mock`: simulated latency of each call, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_MOCK_LATENCY_MS))]
    pub latency_ms: Option<u64>,
    /// `mock`: random extra latency up to this many milliseconds (deterministic per seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_MOCK_LATENCY_MS))]
    pub jitter_ms: Option<u64>,
    /// `mock`: probability (0 to 1) that a call fails with `fail_with`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub fail_rate: Option<f64>,
    /// `mock`: every call fails on its first this-many attempts, then succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_MOCK_ATTEMPTS))]
    pub fail_attempts: Option<u32>,
    /// `mock`: the failure injected by `fail_rate` and `fail_attempts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_with: Option<MockFailure>,
    /// `mock`: with `response_format`, the first this-many attempts of each call answer with
    /// text that is not valid JSON (to see validation and retries work).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_MOCK_ATTEMPTS))]
    pub invalid_json_attempts: Option<u32>,
    /// `mock`, for `generate`: how many distinct items a topic has (default 2000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64000))]
    pub vocabulary: Option<u32>,
    /// `mock`, for `generate`: skew of the item distribution (Zipf exponent, default 1.0);
    /// higher means more repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 4.0))]
    pub zipf: Option<f64>,
    /// `mock`, for `generate`: fraction of the asked-for items a call returns (default 1.0).
    #[serde(default, rename = "yield", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub yield_rate: Option<f64>,
    /// `mock`, for `generate`: how often an item shown as already found is avoided
    /// (default 0.8; real models avoid most, not all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub feedback_adherence: Option<f64>,
}

/// Failures the mock provider can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MockFailure {
    /// The call times out (retryable).
    Timeout,
    /// HTTP 429 with a short retry hint (retryable).
    RateLimit,
    /// HTTP 500 (retryable).
    #[default]
    ServerError,
    /// HTTP 400 (never retried).
    BadRequest,
}

/// Rate and concurrency limits of a profile.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_REQUESTS_PER_MINUTE))]
    pub requests_per_minute: Option<u32>,
    /// Tokens (in + out) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_TOKENS_PER_MINUTE))]
    pub tokens_per_minute: Option<u32>,
    /// Calls in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_CONCURRENCY))]
    pub max_concurrency: Option<u32>,
}

/// Circuit breaker settings of a profile's endpoint.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerSpec {
    /// Consecutive failures (timeouts, connection errors, 5xx) that open the breaker (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_BREAKER_FAILURES))]
    pub failures: Option<u32>,
    /// Seconds the breaker stays open before letting a probe through (default 30); calls
    /// wait for the probe meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = MAX_TIMEOUT_SECONDS))]
    pub cool_down_seconds: Option<f64>,
}

/// Price of a model in US dollars per million tokens.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    /// Dollars per million input tokens.
    #[schemars(range(min = 0.0, max = MAX_PRICE_PER_MTOK))]
    pub input_per_mtok: f64,
    /// Dollars per million output tokens.
    #[schemars(range(min = 0.0, max = MAX_PRICE_PER_MTOK))]
    pub output_per_mtok: f64,
    /// Dollars per million cached input tokens (default: the input price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = MAX_PRICE_PER_MTOK))]
    pub cached_input_per_mtok: Option<f64>,
}

/// The price table: `profiles/prices.yaml` (built in) and `prices.yaml` in the user's or the
/// project's configuration directory.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "orc prices")]
pub struct PricesFileSpec {
    /// URL or path of the JSON Schema for editors; ignored by orc.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// One entry per provider and model.
    pub prices: Vec<PriceEntrySpec>,
}

/// The price of one model.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceEntrySpec {
    pub provider: ProviderKind,
    /// Model name as the provider knows it.
    pub model: String,
    /// Dollars per million input tokens.
    #[schemars(range(min = 0.0, max = MAX_PRICE_PER_MTOK))]
    pub input_per_mtok: f64,
    /// Dollars per million output tokens.
    #[schemars(range(min = 0.0, max = MAX_PRICE_PER_MTOK))]
    pub output_per_mtok: f64,
    /// Dollars per million cached input tokens (default: the input price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = MAX_PRICE_PER_MTOK))]
    pub cached_input_per_mtok: Option<f64>,
    /// The date the price was read from its source (YYYY-MM-DD).
    pub as_of: String,
    /// Where the price comes from.
    pub source: String,
}
