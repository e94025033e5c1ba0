//! Ollama's native API: `POST {base}/api/chat`, streaming as NDJSON (one JSON object a line,
//! the last with `done: true`), usage as `prompt_eval_count` / `eval_count`. The address
//! comes from the profile's `base_url` or `OLLAMA_HOST` (scheme optional). `done_reason` is
//! the finish reason; usage is unknown when neither count is reported.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::credentials::ApiKey;
use super::http::{self, Framing, ReadLimits};
use super::{
    Completion, CompletionRequest, FinishKind, FinishReason, Provider, ProviderError, Usage,
    apply_options,
};
use crate::config::Profile;

pub(super) struct Ollama {
    profile: Arc<Profile>,
    url: String,
    key: Option<ApiKey>,
    first_byte: Duration,
}

impl Ollama {
    pub(super) fn new(
        profile: Arc<Profile>,
        base_url: String,
        key: Option<ApiKey>,
        first_byte: Duration,
    ) -> Ollama {
        Ollama {
            url: format!("{}/api/chat", base_url.trim_end_matches('/')),
            profile,
            key,
            first_byte,
        }
    }

    fn body(&self, request: &CompletionRequest) -> Value {
        let mut messages = Vec::new();
        if let Some(system) = &request.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": request.prompt}));
        let mut options = serde_json::Map::new();
        if let Some(t) = request.temperature {
            options.insert("temperature".into(), json!(t));
        }
        if let Some(m) = request.max_tokens {
            options.insert("num_predict".into(), json!(m));
        }
        options.insert("seed".into(), json!(request.seed));
        let mut body = json!({
            "model": self.profile.model,
            "messages": messages,
            "stream": request.deltas.is_some(),
            "options": options,
        });
        if let Some(format) = &request.response_format {
            body["format"] = format.schema().cloned().unwrap_or_else(|| json!("json"));
        }
        apply_options(&mut body, &request.options);
        body
    }

    fn limits(&self) -> ReadLimits {
        ReadLimits::for_profile(&self.profile, self.first_byte)
    }
}

/// Usage of the final object. Ollama leaves `prompt_eval_count` out when the whole prompt
/// came from its cache (none evaluated), so one count is enough to know the usage.
fn usage_of(done: &Value) -> Usage {
    let n = |k: &str| done.get(k).and_then(Value::as_u64);
    match (n("prompt_eval_count"), n("eval_count")) {
        (None, None) => Usage::UNKNOWN,
        (input, output) => Usage {
            input_tokens: input.unwrap_or(0),
            output_tokens: output.unwrap_or(0),
            ..Usage::default()
        },
    }
}

/// `done_reason`, normalised.
fn finish_of(done: &Value) -> Option<FinishReason> {
    let raw = done.get("done_reason").and_then(Value::as_str)?;
    let kind = match raw {
        "stop" => FinishKind::Stop,
        "length" => FinishKind::Length,
        _ => FinishKind::Other,
    };
    Some(FinishReason::new(kind, raw))
}

#[async_trait]
impl Provider for Ollama {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, ProviderError> {
        let mut builder = http::client().post(&self.url).json(&self.body(&request));
        if let Some(key) = &self.key {
            builder = builder.bearer_auth(key.expose());
        }
        let response = http::send(builder, self.first_byte, self.key.as_ref()).await?;
        let deltas = request.deltas.as_ref();
        if http::framing(&response) != Framing::NdJson {
            let body = http::json_body(response, self.limits()).await?;
            if let Some(error) = body.get("error") {
                return Err(ProviderError::StreamBroken {
                    message: error
                        .as_str()
                        .map_or_else(|| error.to_string(), String::from),
                });
            }
            let text = body
                .pointer("/message/content")
                .and_then(Value::as_str)
                .ok_or_else(|| ProviderError::Decode {
                    message: format!(
                        "no `message.content` in `{}`",
                        http::excerpt(&body.to_string())
                    ),
                })?
                .to_string();
            if let Some(tx) = deltas {
                let _ = tx.send(text.clone());
            }
            return Ok(Completion {
                text,
                usage: usage_of(&body),
                finish_reason: finish_of(&body),
            });
        }
        let mut text = String::new();
        let mut done: Option<Value> = None;
        http::for_each_line(response, self.limits(), |line| {
            // Anything after the final object (a proxy's signature line) is not the answer.
            if line.trim().is_empty() || done.is_some() {
                return Ok(());
            }
            let chunk: Value = serde_json::from_str(line).map_err(|e| ProviderError::Decode {
                message: format!("bad stream line: {e}"),
            })?;
            if let Some(error) = chunk.get("error") {
                return Err(ProviderError::StreamBroken {
                    message: error
                        .as_str()
                        .map_or_else(|| error.to_string(), String::from),
                });
            }
            if let Some(piece) = chunk.pointer("/message/content").and_then(Value::as_str) {
                if !piece.is_empty() {
                    text.push_str(piece);
                    if let Some(tx) = deltas {
                        let _ = tx.send(piece.to_string());
                    }
                }
            }
            if chunk.get("done").and_then(Value::as_bool) == Some(true) {
                done = Some(chunk);
            }
            Ok(())
        })
        .await?;
        let done = done.ok_or_else(|| ProviderError::StreamBroken {
            message: "the stream ended before `done: true`".into(),
        })?;
        Ok(Completion {
            text,
            usage: usage_of(&done),
            finish_reason: finish_of(&done),
        })
    }
}
