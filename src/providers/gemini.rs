//! Google Gemini: `POST {base}/models/{model}:generateContent` (and
//! `:streamGenerateContent?alt=sse`) with `x-goog-api-key`, `systemInstruction` and
//! `usageMetadata`. A stream ends with a candidate's `finishReason`; without one it broke off.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::credentials::ApiKey;
use super::http::{self, SseParser};
use super::{Completion, CompletionRequest, Provider, ProviderError, Usage};
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
                config.insert("responseJsonSchema".into(), schema);
            }
        }
        if !config.is_empty() {
            body["generationConfig"] = Value::Object(config);
        }
        for (k, v) in &request.options {
            body[k] = v.clone();
        }
        body
    }
}

fn text_of(chunk: &Value) -> String {
    chunk
        .pointer("/candidates/0/content/parts")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

fn usage_of(meta: &Value) -> Usage {
    let n = |k: &str| meta.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: n("promptTokenCount"),
        output_tokens: n("candidatesTokenCount") + n("thoughtsTokenCount"),
        cached_input_tokens: n("cachedContentTokenCount"),
        estimated: false,
    }
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
        if !streaming {
            let body = http::json_body(response, self.first_byte).await?;
            if body.pointer("/candidates/0").is_none() {
                return Err(ProviderError::Decode {
                    message: format!("no candidates in `{}`", http::excerpt(&body.to_string())),
                });
            }
            let usage =
                body.get("usageMetadata")
                    .map(usage_of)
                    .ok_or_else(|| ProviderError::Decode {
                        message: "no `usageMetadata`".into(),
                    })?;
            return Ok(Completion {
                text: text_of(&body),
                usage,
            });
        }
        let deltas = request.deltas.as_ref();
        let mut parser = SseParser::default();
        let mut text = String::new();
        let mut usage = None;
        let mut finished = false;
        let mut handle = |data: &str| -> Result<(), ProviderError> {
            let chunk: Value = serde_json::from_str(data).map_err(|e| ProviderError::Decode {
                message: format!("bad stream chunk: {e}"),
            })?;
            if let Some(error) = chunk.get("error") {
                return Err(ProviderError::StreamBroken {
                    message: http::excerpt(&error.to_string()),
                });
            }
            let piece = text_of(&chunk);
            if !piece.is_empty() {
                text.push_str(&piece);
                if let Some(tx) = deltas {
                    let _ = tx.send(piece);
                }
            }
            if let Some(meta) = chunk.get("usageMetadata") {
                usage = Some(usage_of(meta));
            }
            if chunk
                .pointer("/candidates/0/finishReason")
                .is_some_and(|f| !f.is_null())
            {
                finished = true;
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
        if !finished {
            return Err(ProviderError::StreamBroken {
                message: "the stream ended without a finish reason".into(),
            });
        }
        let usage = usage.ok_or_else(|| ProviderError::Decode {
            message: "no `usageMetadata` in the stream".into(),
        })?;
        Ok(Completion { text, usage })
    }
}
