//! Providers: the small `Provider` trait the executor calls, and the implementations behind
//! it. `exec` sees only the trait; `Providers` builds the concrete client for a profile with
//! a plain `match`.

mod anthropic;
mod breaker;
pub mod credentials;
mod error;
mod gemini;
pub mod http;
mod limits;
mod mock;
mod ollama;
mod openai;
pub mod replay;
mod vocab;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use breaker::CircuitBreaker;
pub use error::ProviderError;
pub use limits::{Lease, LimitBackend, Limiter, SharedLimits};
pub use mock::MockProvider;

use crate::config::{Profile, ProviderKind};

/// Starts each dependency section of the default prompt layout: `exec::layout` writes it,
/// the mock provider reads it to answer about the dependencies.
pub const DEPENDENCY_HEADER: &str = "Output of `";

/// One request to a model.
#[derive(Debug, Clone)]
pub struct CompletionRequest {
    /// The agent making the call (for logs, and the mock's determinism).
    pub agent: String,
    pub system: Option<String>,
    pub prompt: String,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub options: BTreeMap<String, serde_json::Value>,
    /// 1 for the first try.
    pub attempt: u32,
    /// Run seed, for providers that support one.
    pub seed: u64,
    /// When set, the provider streams and sends each piece of text as it arrives.
    pub deltas: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    /// The agent's `response_format`: ask for JSON (matching the schema) where the provider
    /// supports it.
    pub response_format: Option<crate::config::ResponseFormat>,
    /// What a `generate` node asks for, in structured form. Real providers read only the
    /// prompt; the offline mock answers from this.
    pub generation: Option<GenerationHint>,
}

/// The structured meaning of a `generate` node's prompt.
#[derive(Debug, Clone)]
pub enum GenerationHint {
    /// `count` new items about `topic` (and `subtopic`), avoiding those in `avoid`.
    Items {
        topic: String,
        subtopic: Option<String>,
        count: u32,
        avoid: Vec<String>,
    },
    /// `count` subtopics of `topic`.
    Subtopics { topic: String, count: u32 },
}

/// Token counts as the provider reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    /// Tokens of the answer itself; thinking is counted in `reasoning_tokens`.
    pub output_tokens: u64,
    /// Thinking tokens (Gemini `thoughtsTokenCount`, OpenAI `reasoning_tokens`): billed as
    /// output, reported apart from the answer's tokens.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u64,
    /// Input tokens served from the provider's prompt cache (part of `input_tokens`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_input_tokens: u64,
    /// The provider reported no usage; these counts are estimates (four characters a token).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
    /// Some call's usage was never reported (a stream without usage): the counts cover only
    /// the calls that reported theirs. Such usage is shown as `null`, never as zero (#12).
    #[serde(skip)]
    pub unknown: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    /// The usage of a call whose provider did not report it.
    pub const UNKNOWN: Usage = Usage {
        input_tokens: 0,
        output_tokens: 0,
        reasoning_tokens: 0,
        cached_input_tokens: 0,
        estimated: false,
        unknown: true,
    };

    /// What these tokens cost at `price`; `None` when the usage is unknown. Thinking tokens
    /// are billed as output.
    pub fn cost(&self, price: &crate::config::Price) -> Option<f64> {
        (!self.unknown).then(|| {
            price.cost(
                self.input_tokens,
                self.cached_input_tokens,
                self.output_tokens + self.reasoning_tokens,
            )
        })
    }

    /// Serializes unknown usage as `null` (for per-agent usage in the JSON output).
    pub fn serialize_or_null<S: serde::Serializer>(
        usage: &Usage,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        use serde::Serialize;
        if usage.unknown {
            serializer.serialize_none()
        } else {
            usage.serialize(serializer)
        }
    }

    /// Reads what `serialize_or_null` wrote: `null` is unknown usage.
    pub fn deserialize_or_null<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Usage, D::Error> {
        use serde::Deserialize;
        Ok(Option::<Usage>::deserialize(deserializer)?.unwrap_or(Usage::UNKNOWN))
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
        self.cached_input_tokens += other.cached_input_tokens;
        self.estimated |= other.estimated;
        self.unknown |= other.unknown;
    }
}

/// Why the model stopped, normalised across providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishKind {
    /// A natural end (or a stop sequence).
    Stop,
    /// Cut off at the token limit: the answer is incomplete.
    Length,
    /// Stopped by the provider's safety filter.
    ContentFilter,
    /// Stopped to call a tool.
    ToolUse,
    /// The model refused to answer.
    Refused,
    /// Anything else the provider reports.
    Other,
}

impl FinishKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishKind::Stop => "stop",
            FinishKind::Length => "length",
            FinishKind::ContentFilter => "content_filter",
            FinishKind::ToolUse => "tool_use",
            FinishKind::Refused => "refused",
            FinishKind::Other => "other",
        }
    }
}

/// A finish reason: the normalised kind and the provider's own value (`MAX_TOKENS`,
/// `end_turn`, `length`, ...).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FinishReason {
    pub kind: FinishKind,
    pub raw: String,
}

impl FinishReason {
    pub fn new(kind: FinishKind, raw: impl Into<String>) -> FinishReason {
        FinishReason {
            kind,
            raw: raw.into(),
        }
    }

    /// The answer was cut off at the token limit.
    pub fn is_truncated(&self) -> bool {
        self.kind == FinishKind::Length
    }
}

/// A model's answer.
#[derive(Debug, Clone)]
pub struct Completion {
    pub text: String,
    pub usage: Usage,
    /// `None` when the provider did not say why it stopped.
    pub finish_reason: Option<FinishReason>,
}

impl Completion {
    /// A safety stop that left no answer at all is a block, not an empty success.
    fn into_checked(self) -> Result<Completion, ProviderError> {
        match &self.finish_reason {
            Some(f) if f.kind == FinishKind::ContentFilter && self.text.trim().is_empty() => {
                Err(ProviderError::Blocked {
                    reason: f.raw.clone(),
                    prompt: false,
                })
            }
            _ => Ok(self),
        }
    }
}

/// Agent `options` over profile `options`, merged deeply: an object in the agent's options
/// adds to the profile's object of the same key instead of replacing it.
pub fn merged_options(
    profile: &BTreeMap<String, serde_json::Value>,
    agent: &BTreeMap<String, serde_json::Value>,
) -> BTreeMap<String, serde_json::Value> {
    let mut out = profile.clone();
    for (k, v) in agent {
        match out.get_mut(k) {
            Some(existing) => merge_json(existing, v),
            None => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// Merges `overlay` into `target`: objects key by key (recursively), anything else replaced.
pub(crate) fn merge_json(target: &mut serde_json::Value, overlay: &serde_json::Value) {
    match (target, overlay) {
        (serde_json::Value::Object(t), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match t.get_mut(k) {
                    Some(existing) => merge_json(existing, v),
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, o) => *t = o.clone(),
    }
}

/// Merges the request's `options` into a provider request body (deeply, so that e.g. a
/// Gemini `generationConfig` in options adds to the one orc built).
fn apply_options(body: &mut serde_json::Value, options: &BTreeMap<String, serde_json::Value>) {
    for (k, v) in options {
        match body.get_mut(k) {
            Some(existing) => merge_json(existing, v),
            None => body[k] = v.clone(),
        }
    }
}

/// A model endpoint. A call is two steps: `admit` waits for the right to send (the
/// profile's limits, a 429 cool-down, the circuit breaker's probe), then `complete` sends.
/// Only the second is the call: the call policy bounds it by `timeout_seconds` and holds
/// the `Admission` over it, while the wait before is bounded by the run alone (#13).
/// `complete` without `admit` sends at once, past every limit (`orc profiles check`).
#[async_trait]
pub trait Provider: Send + Sync {
    /// Waits until `request` may be sent. Fails, without sending, when the endpoint was
    /// found down meanwhile (`circuit_open`).
    async fn admit(&self, _request: &CompletionRequest) -> Result<Admission, ProviderError> {
        Ok(Admission::default())
    }

    async fn complete(&self, request: CompletionRequest) -> Result<Completion, ProviderError>;
}

/// The right to send one request, held while it is made: the profile's concurrency slot
/// and the breaker's pass. Tell it how the call ended (`finish`); dropped unfinished, the
/// call counts as not made (the run was cancelled), which tells the breaker nothing.
#[derive(Default)]
#[must_use = "an admission is held for the call it admits"]
pub struct Admission {
    _slot: Option<limits::Slot>,
    pass: Option<breaker::Pass>,
    limiter: Option<Arc<Limiter>>,
}

impl Admission {
    /// Something changed while the admitted call waited for a global slot: the endpoint's
    /// breaker opened, or a 429 cooled the profile down. Admit the call again.
    pub fn is_stale(&self) -> bool {
        self.pass.as_ref().is_some_and(breaker::Pass::is_stale)
            || self.limiter.as_ref().is_some_and(|l| l.is_cooling_down())
    }

    /// Reports how the admitted call ended (a `Deadline` when `timeout_seconds` ran out).
    pub fn finish(mut self, result: Result<(), &ProviderError>) {
        if let Some(pass) = self.pass.take() {
            pass.finish(result);
        }
    }
}

/// Builds providers for profiles: one client per profile, wrapped in the profile's limits
/// and its endpoint's circuit breaker (shared by every profile on the same endpoint).
#[derive(Default)]
pub struct Factory {
    breakers: HashMap<String, Arc<CircuitBreaker>>,
    /// Limits shared with other processes, when there are any.
    limits: Option<Arc<dyn LimitBackend>>,
}

impl Factory {
    /// A factory whose clients hold their profile's limits with other processes.
    pub fn with_limits(limits: Option<Arc<dyn LimitBackend>>) -> Factory {
        Factory {
            breakers: HashMap::new(),
            limits,
        }
    }

    /// The provider of a profile. Fails before any call when a needed key is missing.
    pub fn build(&mut self, profile: &Arc<Profile>) -> Result<Arc<dyn Provider>, ProviderError> {
        let first_byte = profile.first_byte_timeout.unwrap_or(DEFAULT_FIRST_BYTE);
        let env = |var: &str| std::env::var(var).ok().filter(|v| !v.trim().is_empty());
        let (inner, endpoint): (Arc<dyn Provider>, String) = match profile.provider {
            ProviderKind::Mock => return Ok(Arc::new(MockProvider::new(Arc::clone(profile)))),
            ProviderKind::Openai | ProviderKind::OpenaiCompatible => {
                let lenient = profile.provider == ProviderKind::OpenaiCompatible;
                // Without a `base_url`, both go where OpenAI's own clients go:
                // `OPENAI_BASE_URL`, else OpenAI.
                let base = profile
                    .base_url
                    .clone()
                    .or_else(|| env("OPENAI_BASE_URL"))
                    .unwrap_or_else(|| "https://api.openai.com/v1".into());
                let key = key_of(profile)?;
                (
                    Arc::new(openai::OpenAi::new(
                        Arc::clone(profile),
                        base.clone(),
                        key,
                        lenient,
                        first_byte,
                    )),
                    base,
                )
            }
            ProviderKind::Anthropic => {
                let base = profile
                    .base_url
                    .clone()
                    .or_else(|| env("ANTHROPIC_BASE_URL"))
                    .unwrap_or_else(|| "https://api.anthropic.com".into());
                let key = credentials::key_for(profile)?;
                (
                    Arc::new(anthropic::Anthropic::new(
                        Arc::clone(profile),
                        base.clone(),
                        key,
                        first_byte,
                    )),
                    base,
                )
            }
            ProviderKind::Gemini => {
                let base = profile
                    .base_url
                    .clone()
                    .or_else(|| env("GEMINI_BASE_URL"))
                    .unwrap_or_else(|| "https://generativelanguage.googleapis.com/v1beta".into());
                let key = credentials::key_for(profile)?;
                (
                    Arc::new(gemini::Gemini::new(
                        Arc::clone(profile),
                        base.clone(),
                        key,
                        first_byte,
                    )),
                    base,
                )
            }
            ProviderKind::Ollama => {
                let base = match (&profile.base_url, env("OLLAMA_HOST")) {
                    (Some(b), _) => http::with_scheme(b),
                    (None, Some(host)) => ollama_host(&host),
                    (None, None) => "http://127.0.0.1:11434".into(),
                };
                // No key by default; one behind a proxy is named with `api_key_env`.
                let key = credentials::key_for(profile)?;
                (
                    Arc::new(ollama::Ollama::new(
                        Arc::clone(profile),
                        base.clone(),
                        key,
                        first_byte,
                    )),
                    base,
                )
            }
        };
        let breaker = Arc::clone(self.breakers.entry(endpoint.clone()).or_insert_with(|| {
            Arc::new(CircuitBreaker::new(
                endpoint,
                profile
                    .breaker_failures
                    .unwrap_or(breaker::DEFAULT_FAILURES),
                profile
                    .breaker_cool_down
                    .unwrap_or(breaker::DEFAULT_COOL_DOWN),
            ))
        }));
        Ok(Arc::new(Guarded {
            inner,
            limiter: Arc::new(Limiter::with_shared(
                &profile.limits,
                self.limits.as_ref().and_then(|l| l.shared(profile)),
            )),
            breaker,
            secret: key_of(profile).ok().flatten(),
        }))
    }
}

/// The base URL `OLLAMA_HOST` means, read as Ollama's own client reads it: the scheme is
/// optional (`http`), a missing host is `127.0.0.1`, and a missing port is 11434 (80 or 443
/// when the scheme is given). Written here because no crate reads this variable.
fn ollama_host(value: &str) -> String {
    let value = value.trim();
    let (scheme, rest, default_port) = match value.split_once("://") {
        Some(("https", rest)) => ("https", rest, "443"),
        Some((scheme, rest)) => (scheme, rest, "80"),
        None => ("http", value, "11434"),
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    // `[::1]:8080`, `host:8080`, `:8080`; a bare IPv6 address has no port.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (host.starts_with('[') || !host.contains(':')) =>
        {
            (host, port)
        }
        _ => (authority, default_port),
    };
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        format!("{scheme}://{host}:{port}")
    } else {
        format!("{scheme}://{host}:{port}/{path}")
    }
}

/// The key of a profile. An `openai-compatible` profile with neither `base_url` nor
/// `api_key_env` talks to `OPENAI_BASE_URL` or OpenAI itself, so it also sends
/// `OPENAI_API_KEY` when that is set, as OpenAI's clients do (it is never required).
fn key_of(profile: &Profile) -> Result<Option<credentials::ApiKey>, ProviderError> {
    let key = credentials::key_for(profile)?;
    let openai_default = profile.provider == ProviderKind::OpenaiCompatible
        && profile.base_url.is_none()
        && profile.api_key_env.is_none();
    if key.is_none() && openai_default {
        return Ok(std::env::var("OPENAI_API_KEY")
            .ok()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .map(credentials::ApiKey::new));
    }
    Ok(key)
}

/// Default wait for a response's first byte and between stream chunks.
pub const DEFAULT_FIRST_BYTE: Duration = Duration::from_secs(60);

/// A remote provider behind its profile's limits and its endpoint's circuit breaker.
struct Guarded {
    inner: Arc<dyn Provider>,
    limiter: Arc<Limiter>,
    breaker: Arc<CircuitBreaker>,
    /// Redacted from every error, in case the server echoes it.
    secret: Option<credentials::ApiKey>,
}

#[async_trait]
impl Provider for Guarded {
    async fn admit(&self, request: &CompletionRequest) -> Result<Admission, ProviderError> {
        let expected = mock::estimate_tokens(&request.prompt)
            + request.system.as_deref().map_or(0, mock::estimate_tokens)
            + u64::from(request.max_tokens.unwrap_or(0));
        // The breaker first, so that a call waiting for its probe holds no slot and spends
        // no budget; then the limits; then, if the endpoint failed while this call waited
        // for its turn, back to waiting for the probe.
        loop {
            let pass = self.breaker.pass().await?;
            let slot = self.limiter.admit(expected).await;
            if !pass.is_stale() {
                return Ok(Admission {
                    _slot: Some(slot),
                    pass: Some(pass),
                    limiter: Some(Arc::clone(&self.limiter)),
                });
            }
        }
    }

    async fn complete(&self, request: CompletionRequest) -> Result<Completion, ProviderError> {
        let result = self.inner.complete(request).await;
        if let Err(ProviderError::RateLimited { retry_after, .. }) = &result {
            self.limiter
                .cool_down(retry_after.unwrap_or(Duration::from_secs(1)))
                .await;
        }
        match &self.secret {
            Some(key) => result.map_err(|e| e.redact(key.expose())),
            None => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_merge_deeply() {
        let profile: BTreeMap<String, serde_json::Value> = [
            (
                "generationConfig".to_string(),
                json!({"topK": 20, "thinkingConfig": {"budget": 1}}),
            ),
            ("seed".to_string(), json!(1)),
        ]
        .into();
        let agent: BTreeMap<String, serde_json::Value> = [
            (
                "generationConfig".to_string(),
                json!({"thinkingConfig": {"include": true}}),
            ),
            ("seed".to_string(), json!(2)),
        ]
        .into();
        let merged = merged_options(&profile, &agent);
        assert_eq!(
            merged["generationConfig"],
            json!({"topK": 20, "thinkingConfig": {"budget": 1, "include": true}})
        );
        assert_eq!(merged["seed"], json!(2));
        let mut body = json!({"generationConfig": {"temperature": 0.1}});
        apply_options(&mut body, &merged);
        assert_eq!(body["generationConfig"]["temperature"], json!(0.1));
        assert_eq!(body["generationConfig"]["topK"], json!(20));
    }

    #[test]
    fn unknown_usage_costs_unknown_and_thinking_is_billed_as_output() {
        let price = crate::config::Price {
            input_per_mtok: 1.0,
            output_per_mtok: 2.0,
            cached_input_per_mtok: 1.0,
        };
        let usage = Usage {
            input_tokens: 10,
            output_tokens: 5,
            reasoning_tokens: 20,
            ..Usage::default()
        };
        assert_eq!(usage.cost(&price), Some((10.0 + 2.0 * 25.0) / 1e6));
        let mut total = usage;
        total += Usage::UNKNOWN;
        assert!(total.unknown);
        assert_eq!(total.cost(&price), None);
        assert_eq!(
            serde_json::to_value(SerializeOrNull(total)).unwrap(),
            serde_json::Value::Null
        );
    }

    struct SerializeOrNull(Usage);

    impl serde::Serialize for SerializeOrNull {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            Usage::serialize_or_null(&self.0, s)
        }
    }

    #[test]
    fn ollama_host_is_read_as_ollama_reads_it() {
        for (value, url) in [
            ("127.0.0.1:9999", "http://127.0.0.1:9999"),
            (":9999", "http://127.0.0.1:9999"),
            ("0.0.0.0", "http://0.0.0.0:11434"),
            ("", "http://127.0.0.1:11434"),
            ("http://box", "http://box:80"),
            ("https://box/ollama/", "https://box:443/ollama"),
            ("[::1]:8080", "http://[::1]:8080"),
            ("box:11435", "http://box:11435"),
        ] {
            assert_eq!(ollama_host(value), url, "OLLAMA_HOST={value}");
        }
    }
}
