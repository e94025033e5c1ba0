//! Anthropic Messages: `POST {base}/v1/messages` with `x-api-key` and `anthropic-version`;
//! `max_tokens` is required. Streaming is SSE: `message_start` (input usage),
//! `content_block_delta` (text), `message_delta` (cumulative output tokens), `message_stop`,
//! `ping`, and a mid-stream `error`; unknown event types are ignored. Only `text` blocks are
//! answer text (not `thinking` or `tool_use`); `stop_reason: refusal` is an error.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::credentials::ApiKey;
use super::http::{self, Framing, ReadLimits, SseParser};
use super::{
    Completion, CompletionRequest, FinishKind, FinishReason, Provider, ProviderError, Usage,
    apply_options,
};
use crate::config::Profile;

pub(super) const API_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; used when neither agent nor profile sets one.
pub(super) const DEFAULT_MAX_TOKENS: u32 = 4096;

pub(super) struct Anthropic {
    profile: Arc<Profile>,
    url: String,
    key: Option<ApiKey>,
    first_byte: Duration,
}

impl Anthropic {
    pub(super) fn new(
        profile: Arc<Profile>,
        base_url: String,
        key: Option<ApiKey>,
        first_byte: Duration,
    ) -> Anthropic {
        let base = base_url.trim_end_matches('/');
        let url = if base.ends_with("/v1") {
            format!("{base}/messages")
        } else {
            format!("{base}/v1/messages")
        };
        Anthropic {
            profile,
            url,
            key,
            first_byte,
        }
    }

    fn body(&self, request: &CompletionRequest) -> Value {
        let mut body = json!({
            "model": self.profile.model,
            "max_tokens": request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            "messages": [{"role": "user", "content": request.prompt}],
        });
        // Messages has no JSON mode: the instruction goes into the system prompt, and orc
        // validates (and retries) the answer itself.
        let json_note = request.response_format.as_ref().map(|f| match f.schema() {
            Some(schema) => format!("Answer with JSON only, matching this JSON Schema: {schema}"),
            None => "Answer with JSON only.".to_string(),
        });
        let system = match (&request.system, json_note) {
            (Some(s), Some(n)) => Some(format!("{s}\n\n{n}")),
            (Some(s), None) => Some(s.clone()),
            (None, n) => n,
        };
        if let Some(system) = system {
            body["system"] = json!(system);
        }
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        if request.deltas.is_some() {
            body["stream"] = json!(true);
        }
        apply_options(&mut body, &request.options);
        body
    }

    fn limits(&self) -> ReadLimits {
        ReadLimits::for_profile(&self.profile, self.first_byte)
    }
}

/// `stop_reason`, normalised.
fn finish_reason(raw: &str) -> FinishReason {
    let kind = match raw {
        "end_turn" | "stop_sequence" => FinishKind::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishKind::Length,
        "tool_use" => FinishKind::ToolUse,
        "refusal" => FinishKind::Refused,
        _ => FinishKind::Other,
    };
    FinishReason::new(kind, raw)
}

/// The answer, unless the model refused (its text, if any, is the refusal).
fn completion(
    text: String,
    usage: Usage,
    finish_reason: Option<FinishReason>,
) -> Result<Completion, ProviderError> {
    if let Some(f) = finish_reason
        .as_ref()
        .filter(|f| f.kind == FinishKind::Refused)
    {
        return Err(ProviderError::Refused {
            refusal: if text.trim().is_empty() {
                "no reason given".into()
            } else {
                text
            },
            finish: Some(f.raw.clone()),
        });
    }
    Completion {
        text,
        usage,
        finish_reason,
    }
    .into_checked()
}

/// Input tokens include cache reads and writes; Anthropic reports them apart.
fn input_usage(u: &Value) -> (u64, u64) {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cache_read_input_tokens");
    (
        n("input_tokens") + cached + n("cache_creation_input_tokens"),
        cached,
    )
}

/// A mid-stream or body `error` object as a classified error.
fn stream_error(error: &Value) -> ProviderError {
    let kind = error
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("error")
        .to_string();
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match kind.as_str() {
        "overloaded_error" => ProviderError::Http {
            status: 529,
            kind: Some(kind),
            body_excerpt: message,
            retry_after: None,
        },
        "rate_limit_error" => ProviderError::RateLimited {
            retry_after: None,
            message,
        },
        "api_error" => ProviderError::Http {
            status: 500,
            kind: Some(kind),
            body_excerpt: message,
            retry_after: None,
        },
        _ => ProviderError::StreamBroken {
            message: format!("{kind}: {message}"),
        },
    }
}

#[async_trait]
impl Provider for Anthropic {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, ProviderError> {
        let mut builder = http::client()
            .post(&self.url)
            .header("anthropic-version", API_VERSION)
            .json(&self.body(&request));
        if let Some(key) = &self.key {
            builder = builder.header("x-api-key", key.expose());
        }
        let response = http::send(builder, self.first_byte, self.key.as_ref()).await?;
        if http::framing(&response) != Framing::Sse {
            let body = http::json_body(response, self.limits()).await?;
            if let Some(error) = body.get("error").filter(|_| body["type"] == "error") {
                return Err(stream_error(error));
            }
            let content = body
                .get("content")
                .and_then(Value::as_array)
                .ok_or_else(|| ProviderError::Decode {
                    message: format!("no `content` in `{}`", http::excerpt(&body.to_string())),
                })?;
            let text: String = content
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            let usage = match body.get("usage").filter(|u| u.is_object()) {
                Some(usage) => {
                    let (input, cached) = input_usage(usage);
                    Usage {
                        input_tokens: input,
                        output_tokens: usage
                            .get("output_tokens")
                            .and_then(Value::as_u64)
                            .unwrap_or(0),
                        cached_input_tokens: cached,
                        ..Usage::default()
                    }
                }
                None => Usage::UNKNOWN,
            };
            let finish = body
                .get("stop_reason")
                .and_then(Value::as_str)
                .map(finish_reason);
            if let Some(tx) = &request.deltas {
                let _ = tx.send(text.clone());
            }
            return completion(text, usage, finish);
        }
        let deltas = request.deltas.as_ref();
        let mut parser = SseParser::default();
        let mut text = String::new();
        let mut usage = Usage::UNKNOWN;
        let mut finish: Option<FinishReason> = None;
        let mut stopped = false;
        let mut handle = |data: &str| -> Result<(), ProviderError> {
            if stopped {
                return Ok(());
            }
            let event: Value = serde_json::from_str(data).map_err(|e| ProviderError::Decode {
                message: format!("bad stream event: {e}"),
            })?;
            match event.get("type").and_then(Value::as_str).unwrap_or("") {
                "message_start" => {
                    if let Some(u) = event.pointer("/message/usage").filter(|u| u.is_object()) {
                        let (input, cached) = input_usage(u);
                        usage.unknown = false;
                        usage.input_tokens = input;
                        usage.cached_input_tokens = cached;
                        usage.output_tokens =
                            u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0);
                    }
                }
                // Only `text_delta` is answer text (not `thinking_delta` or tool input).
                "content_block_delta"
                    if event
                        .pointer("/delta/type")
                        .and_then(Value::as_str)
                        .is_none_or(|t| t == "text_delta") =>
                {
                    if let Some(piece) = event.pointer("/delta/text").and_then(Value::as_str) {
                        text.push_str(piece);
                        if let Some(tx) = deltas {
                            let _ = tx.send(piece.to_string());
                        }
                    }
                }
                // Usage is cumulative in `message_delta`; newer servers repeat the input
                // counts there.
                "message_delta" => {
                    if let Some(u) = event.get("usage").filter(|u| u.is_object()) {
                        if u.get("input_tokens").is_some() {
                            let (input, cached) = input_usage(u);
                            usage.input_tokens = input;
                            usage.cached_input_tokens = cached;
                            usage.unknown = false;
                        }
                        if let Some(n) = u.get("output_tokens").and_then(Value::as_u64) {
                            usage.output_tokens = n;
                            usage.unknown = false;
                        }
                    }
                    if let Some(f) = event.pointer("/delta/stop_reason").and_then(Value::as_str) {
                        finish = Some(finish_reason(f));
                    }
                }
                "message_stop" => stopped = true,
                "error" => return Err(stream_error(event.get("error").unwrap_or(&Value::Null))),
                _ => {}
            }
            Ok(())
        };
        http::for_each_line(response, self.limits(), |line| match parser.line(line) {
            Some(event) => handle(&event.data),
            None => Ok(()),
        })
        .await?;
        if let Some(event) = parser.finish() {
            handle(&event.data)?;
        }
        if !stopped {
            return Err(ProviderError::StreamBroken {
                message: "the stream ended before `message_stop`".into(),
            });
        }
        completion(text, usage, finish)
    }
}
