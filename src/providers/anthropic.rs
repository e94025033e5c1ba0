//! Anthropic Messages: `POST {base}/v1/messages` with `x-api-key` and `anthropic-version`;
//! `max_tokens` is required. Streaming is SSE: `message_start` (input usage),
//! `content_block_delta` (text), `message_delta` (cumulative output tokens), `message_stop`,
//! `ping`, and a mid-stream `error`; unknown event types are ignored.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::credentials::ApiKey;
use super::http::{self, SseParser};
use super::{Completion, CompletionRequest, Provider, ProviderError, Usage};
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
        for (k, v) in &request.options {
            body[k] = v.clone();
        }
        body
    }
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
        if request.deltas.is_none() {
            let body = http::json_body(response, self.first_byte).await?;
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
            let usage = body.get("usage").ok_or_else(|| ProviderError::Decode {
                message: "no `usage`".into(),
            })?;
            let (input, cached) = input_usage(usage);
            return Ok(Completion {
                text,
                usage: Usage {
                    input_tokens: input,
                    output_tokens: usage
                        .get("output_tokens")
                        .and_then(Value::as_u64)
                        .unwrap_or(0),
                    cached_input_tokens: cached,
                    estimated: false,
                },
            });
        }
        let deltas = request.deltas.as_ref();
        let mut parser = SseParser::default();
        let mut text = String::new();
        let mut usage = Usage::default();
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
                    if let Some(u) = event.pointer("/message/usage") {
                        let (input, cached) = input_usage(u);
                        usage.input_tokens = input;
                        usage.cached_input_tokens = cached;
                        usage.output_tokens =
                            u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0);
                    }
                }
                "content_block_delta" => {
                    if let Some(piece) = event.pointer("/delta/text").and_then(Value::as_str) {
                        text.push_str(piece);
                        if let Some(tx) = deltas {
                            let _ = tx.send(piece.to_string());
                        }
                    }
                }
                // Output tokens are cumulative in `message_delta`.
                "message_delta" => {
                    if let Some(n) = event
                        .pointer("/usage/output_tokens")
                        .and_then(Value::as_u64)
                    {
                        usage.output_tokens = n;
                    }
                }
                "message_stop" => stopped = true,
                "error" => return Err(stream_error(event.get("error").unwrap_or(&Value::Null))),
                _ => {}
            }
            Ok(())
        };
        http::for_each_line(response, self.first_byte, |line| match parser.line(line) {
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
        Ok(Completion { text, usage })
    }
}
