//! Google Gemini: `POST {base}/models/{model}:generateContent` (and
//! `:streamGenerateContent?alt=sse`) with `x-goog-api-key`, `systemInstruction` and
//! `usageMetadata`. A stream ends with a candidate's `finishReason`; without one it broke off.
//! Parts marked `thought: true` are thought summaries, not answer text; their tokens
//! (`thoughtsTokenCount`) are reported as reasoning tokens. A prompt the safety system
//! blocked (`promptFeedback.blockReason`, no candidates) is a `Blocked` error.

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

pub(super) struct Gemini {
    profile: Arc<Profile>,
    base: String,
    key: Option<ApiKey>,
    first_byte: Duration,
}

impl Gemini {
    pub(super) fn new(
        profile: Arc<Profile>,
        base_url: String,
        key: Option<ApiKey>,
        first_byte: Duration,
    ) -> Gemini {
        Gemini {
            base: base_url.trim_end_matches('/').to_string(),
            profile,
            key,
            first_byte,
        }
    }

    fn body(&self, request: &CompletionRequest) -> Value {
        let mut body = json!({"contents": [{"role": "user", "parts": [{"text": request.prompt}]}]});
        if let Some(system) = &request.system {
            body["systemInstruction"] = json!({"parts": [{"text": system}]});
        }
        let mut config = serde_json::Map::new();
        if let Some(t) = request.temperature {
            config.insert("temperature".into(), json!(t));
        }
        if let Some(m) = request.max_tokens {
            config.insert("maxOutputTokens".into(), json!(m));
        }
        if let Some(format) = &request.response_format {
            config.insert("responseMimeType".into(), json!("application/json"));
            if let Some(schema) = format.schema() {
                config.insert("responseJsonSchema".into(), schema.clone());
            }
        }
        if !config.is_empty() {
            body["generationConfig"] = Value::Object(config);
        }
        // Deep: a `generationConfig` in options adds to the one built above.
        apply_options(&mut body, &request.options);
        body
    }

    fn limits(&self) -> ReadLimits {
        ReadLimits::for_profile(&self.profile, self.first_byte)
    }
}

/// The answer text of a response or chunk: text parts that are not thoughts.
fn text_of(chunk: &Value) -> String {
    chunk
        .pointer("/candidates/0/content/parts")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter(|p| p.get("thought").and_then(Value::as_bool) != Some(true))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

fn usage_of(meta: &Value) -> Usage {
    let n = |k: &str| meta.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: n("promptTokenCount"),
        output_tokens: n("candidatesTokenCount"),
        reasoning_tokens: n("thoughtsTokenCount"),
        cached_input_tokens: n("cachedContentTokenCount"),
        ..Usage::default()
    }
}

/// `promptFeedback.blockReason`: the prompt was blocked, there is no answer.
fn blocked(chunk: &Value) -> Option<ProviderError> {
    let reason = chunk.pointer("/promptFeedback/blockReason")?.as_str()?;
    Some(ProviderError::Blocked {
        reason: reason.to_string(),
        prompt: true,
    })
}

/// `finishReason`, normalised.
fn finish_reason(raw: &str) -> FinishReason {
    let kind = match raw {
        "STOP" => FinishKind::Stop,
        "MAX_TOKENS" => FinishKind::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishKind::ContentFilter
        }
        "UNEXPECTED_TOOL_CALL" | "TOO_MANY_TOOL_CALLS" => FinishKind::ToolUse,
        _ => FinishKind::Other,
    };
    FinishReason::new(kind, raw)
}

fn finish_of(chunk: &Value) -> Option<FinishReason> {
    chunk
        .pointer("/candidates/0/finishReason")
        .and_then(Value::as_str)
        .map(finish_reason)
}

#[async_trait]
impl Provider for Gemini {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, ProviderError> {
        let streaming = request.deltas.is_some();
        let url = if streaming {
            format!(
                "{}/models/{}:streamGenerateContent?alt=sse",
                self.base, self.profile.model
            )
        } else {
            format!(
                "{}/models/{}:generateContent",
                self.base, self.profile.model
            )
        };
        let mut builder = http::client().post(url).json(&self.body(&request));
        if let Some(key) = &self.key {
            builder = builder.header("x-goog-api-key", key.expose());
        }
        let response = http::send(builder, self.first_byte, self.key.as_ref()).await?;
        if http::framing(&response) != Framing::Sse {
            let body = http::json_body(response, self.limits()).await?;
            if let Some(error) = blocked(&body) {
                return Err(error);
            }
            if body.pointer("/candidates/0").is_none() {
                return Err(ProviderError::Decode {
                    message: format!("no candidates in `{}`", http::excerpt(&body.to_string())),
                });
            }
            let text = text_of(&body);
            if let Some(tx) = &request.deltas {
                let _ = tx.send(text.clone());
            }
            return Completion {
                text,
                usage: body.get("usageMetadata").map_or(Usage::UNKNOWN, usage_of),
                finish_reason: finish_of(&body),
            }
            .into_checked();
        }
        let deltas = request.deltas.as_ref();
        let mut parser = SseParser::default();
        let mut text = String::new();
        // Old API versions send no `usageMetadata` in streams: usage is then unknown.
        let mut usage = Usage::UNKNOWN;
        let mut finish: Option<FinishReason> = None;
        let mut handle = |data: &str| -> Result<(), ProviderError> {
            let chunk: Value = serde_json::from_str(data).map_err(|e| ProviderError::Decode {
                message: format!("bad stream chunk: {e}"),
            })?;
            if let Some(error) = chunk.get("error") {
                return Err(ProviderError::StreamBroken {
                    message: http::excerpt(&error.to_string()),
                });
            }
            if let Some(error) = blocked(&chunk) {
                return Err(error);
            }
            let piece = text_of(&chunk);
            if !piece.is_empty() {
                text.push_str(&piece);
                if let Some(tx) = deltas {
                    let _ = tx.send(piece);
                }
            }
            if let Some(meta) = chunk.get("usageMetadata").filter(|m| m.is_object()) {
                usage = usage_of(meta);
            }
            if let Some(f) = finish_of(&chunk) {
                finish = Some(f);
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
        if finish.is_none() {
            return Err(ProviderError::StreamBroken {
                message: "the stream ended without a finish reason".into(),
            });
        }
        Completion {
            text,
            usage,
            finish_reason: finish,
        }
        .into_checked()
    }
}
