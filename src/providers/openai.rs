//! OpenAI Chat Completions, and every server that speaks it (`openai-compatible`: llama.cpp's
//! llama-server, vLLM, LM Studio, Ollama's `/v1`). `POST {base}/chat/completions` with a
//! Bearer key; streaming is SSE with `stream_options.include_usage`, ending at `[DONE]`.
//! Compatible servers are treated leniently: missing usage is estimated, a stream that
//! ends without `[DONE]` after a finish reason is accepted, and their differing error bodies
//! are all understood (`http::parse_error_body`). A `refusal` (whole or streamed) is an
//! error, never an empty answer; `finish_reason` is kept, normalised.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::credentials::ApiKey;
use super::http::{self, Framing, ReadLimits, SseParser};
use super::mock::estimate_tokens;
use super::{
    Completion, CompletionRequest, FinishKind, FinishReason, Provider, ProviderError, Usage,
    apply_options,
};
use crate::config::Profile;

pub(super) struct OpenAi {
    profile: Arc<Profile>,
    url: String,
    key: Option<ApiKey>,
    /// `openai-compatible`: tolerate what local servers leave out.
    lenient: bool,
    first_byte: Duration,
}

/// Reasoning models take `max_completion_tokens` and reject `temperature`.
fn is_reasoning_model(model: &str) -> bool {
    let m = model.rsplit('/').next().unwrap_or(model);
    m.starts_with("o1") || m.starts_with("o3") || m.starts_with("o4") || m.starts_with("gpt-5")
}

impl OpenAi {
    pub(super) fn new(
        profile: Arc<Profile>,
        base_url: String,
        key: Option<ApiKey>,
        lenient: bool,
        first_byte: Duration,
    ) -> OpenAi {
        OpenAi {
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            profile,
            key,
            lenient,
            first_byte,
        }
    }

    fn body(&self, request: &CompletionRequest) -> Value {
        let mut messages = Vec::new();
        if let Some(system) = &request.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": request.prompt}));
        let mut body = json!({"model": self.profile.model, "messages": messages});
        let reasoning = !self.lenient && is_reasoning_model(&self.profile.model);
        if let Some(max) = request.max_tokens {
            let key = if reasoning {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            body[key] = json!(max);
        }
        if let Some(t) = request.temperature.filter(|_| !reasoning) {
            body["temperature"] = json!(t);
        }
        if request.deltas.is_some() {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        if let Some(format) = &request.response_format {
            body["response_format"] = match format.schema() {
                Some(schema) => json!({
                    "type": "json_schema",
                    "json_schema": {"name": "output", "schema": schema, "strict": false},
                }),
                None => json!({"type": "json_object"}),
            };
        }
        apply_options(&mut body, &request.options);
        body
    }

    fn limits(&self) -> ReadLimits {
        ReadLimits::for_profile(&self.profile, self.first_byte)
    }

    /// Usage as reported; unknown when missing (estimated instead on compatible servers).
    fn usage(&self, value: Option<&Value>, request: &CompletionRequest, text: &str) -> Usage {
        let read = |v: &Value, key: &str| v.get(key).and_then(Value::as_u64);
        match value.filter(|u| u.is_object()) {
            Some(u) => {
                // `completion_tokens` includes the reasoning tokens; orc reports them apart.
                let reasoning = u
                    .pointer("/completion_tokens_details/reasoning_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let completion = read(u, "completion_tokens").unwrap_or(0);
                Usage {
                    input_tokens: read(u, "prompt_tokens").unwrap_or(0),
                    output_tokens: completion.saturating_sub(reasoning),
                    reasoning_tokens: reasoning.min(completion),
                    cached_input_tokens: u
                        .pointer("/prompt_tokens_details/cached_tokens")
                        .and_then(Value::as_u64)
                        .unwrap_or(0),
                    estimated: false,
                    unknown: false,
                }
            }
            None if self.lenient => Usage {
                input_tokens: estimate_tokens(&request.prompt)
                    + request.system.as_deref().map_or(0, estimate_tokens),
                output_tokens: estimate_tokens(text),
                estimated: true,
                ..Usage::default()
            },
            None => Usage::UNKNOWN,
        }
    }

    /// One JSON document: `choices[0].message` with `content` or `refusal`.
    fn read_body(
        &self,
        body: &Value,
        request: &CompletionRequest,
    ) -> Result<Completion, ProviderError> {
        let finish_reason = body
            .pointer("/choices/0/finish_reason")
            .and_then(Value::as_str)
            .map(finish_reason);
        let message = body
            .pointer("/choices/0/message")
            .ok_or_else(|| ProviderError::Decode {
                message: format!(
                    "no `choices[0].message` in `{}`",
                    http::excerpt(&body.to_string())
                ),
            })?;
        if let Some(refusal) = message
            .get("refusal")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
        {
            return Err(ProviderError::Refused {
                refusal: refusal.to_string(),
                finish: finish_reason.map(|f| f.raw),
            });
        }
        let text = match message.get("content") {
            Some(Value::String(text)) => text.clone(),
            // No text, e.g. only tool calls: an empty answer, with its finish reason.
            Some(Value::Null) | None if finish_reason.is_some() => String::new(),
            _ => {
                return Err(ProviderError::Decode {
                    message: format!(
                        "no `choices[0].message.content` in `{}`",
                        http::excerpt(&body.to_string())
                    ),
                });
            }
        };
        if let Some(tx) = &request.deltas {
            let _ = tx.send(text.clone());
        }
        let usage = self.usage(body.get("usage"), request, &text);
        Completion {
            text,
            usage,
            finish_reason,
        }
        .into_checked()
    }

    async fn read_stream(
        &self,
        response: reqwest::Response,
        request: &CompletionRequest,
    ) -> Result<Completion, ProviderError> {
        let deltas = request.deltas.as_ref();
        let mut parser = SseParser::default();
        let mut text = String::new();
        let mut refusal = String::new();
        let mut usage: Option<Value> = None;
        let mut finish: Option<FinishReason> = None;
        let mut done = false;
        let mut handle = |data: &str| -> Result<(), ProviderError> {
            if done {
                return Ok(());
            }
            if data.trim() == "[DONE]" {
                done = true;
                return Ok(());
            }
            let chunk: Value = serde_json::from_str(data).map_err(|e| ProviderError::Decode {
                message: format!("bad stream chunk: {e}"),
            })?;
            if let Some(error) = chunk.get("error") {
                return Err(ProviderError::StreamBroken {
                    message: http::excerpt(&error.to_string()),
                });
            }
            if let Some(choice) = chunk.pointer("/choices/0") {
                if let Some(piece) = choice
                    .pointer("/delta/content")
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty())
                {
                    text.push_str(piece);
                    if let Some(tx) = deltas {
                        let _ = tx.send(piece.to_string());
                    }
                }
                // Refusal text streams in its own deltas; it is never answer text.
                if let Some(piece) = choice.pointer("/delta/refusal").and_then(Value::as_str) {
                    refusal.push_str(piece);
                }
                if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
                    finish = Some(finish_reason(f));
                }
            }
            if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
                usage = Some(u.clone());
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
        if !(done || (self.lenient && finish.is_some())) {
            return Err(ProviderError::StreamBroken {
                message: "the stream ended before `[DONE]`".into(),
            });
        }
        if !refusal.is_empty() {
            return Err(ProviderError::Refused {
                refusal,
                finish: finish.map(|f| f.raw),
            });
        }
        let usage = self.usage(usage.as_ref(), request, &text);
        Completion {
            text,
            usage,
            finish_reason: finish,
        }
        .into_checked()
    }
}

/// `finish_reason` of Chat Completions, normalised.
fn finish_reason(raw: &str) -> FinishReason {
    let kind = match raw {
        "stop" => FinishKind::Stop,
        "length" => FinishKind::Length,
        "content_filter" => FinishKind::ContentFilter,
        "tool_calls" | "function_call" => FinishKind::ToolUse,
        _ => FinishKind::Other,
    };
    FinishReason::new(kind, raw)
}

#[async_trait]
impl Provider for OpenAi {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, ProviderError> {
        let mut builder = http::client().post(&self.url).json(&self.body(&request));
        if let Some(key) = &self.key {
            builder = builder.bearer_auth(key.expose());
        }
        let response = http::send(builder, self.first_byte, self.key.as_ref()).await?;
        match http::framing(&response) {
            Framing::Sse => self.read_stream(response, &request).await,
            Framing::Json | Framing::NdJson => {
                let body = http::json_body(response, self.limits()).await?;
                self.read_body(&body, &request)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_models() {
        assert!(is_reasoning_model("o3-mini"));
        assert!(is_reasoning_model("gpt-5"));
        assert!(!is_reasoning_model("gpt-4.1-mini"));
    }
}
