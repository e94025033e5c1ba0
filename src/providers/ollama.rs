//! Ollama's native API: `POST {base}/api/chat`, streaming as NDJSON (one JSON object a line,
//! the last with `done: true`), usage as `prompt_eval_count` / `eval_count`. The address
//! comes from the profile's `base_url` or `OLLAMA_HOST` (scheme optional).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::credentials::ApiKey;
use super::http;
use super::{Completion, CompletionRequest, Provider, ProviderError, Usage};
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
            body["format"] = format.schema().unwrap_or_else(|| json!("json"));
        }
        for (k, v) in &request.options {
            body[k] = v.clone();
        }
        body
    }
}

fn usage_of(done: &Value) -> Usage {
    let n = |k: &str| done.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: n("prompt_eval_count"),
        output_tokens: n("eval_count"),
        ..Usage::default()
    }
}

#[async_trait]
impl Provider for Ollama {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, ProviderError> {
        let mut builder = http::client().post(&self.url).json(&self.body(&request));
        if let Some(key) = &self.key {
            builder = builder.bearer_auth(key.expose());
        }
        let response = http::send(builder, self.first_byte, self.key.as_ref()).await?;
        let Some(deltas) = request.deltas.as_ref() else {
            let body = http::json_body(response, self.first_byte).await?;
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
            return Ok(Completion {
                text,
                usage: usage_of(&body),
            });
        };
        let mut text = String::new();
        let mut usage = None;
        http::for_each_line(response, self.first_byte, |line| {
            if line.trim().is_empty() || usage.is_some() {
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
                    let _ = deltas.send(piece.to_string());
                }
            }
            if chunk.get("done").and_then(Value::as_bool) == Some(true) {
                usage = Some(usage_of(&chunk));
            }
            Ok(())
        })
        .await?;
        let usage = usage.ok_or_else(|| ProviderError::StreamBroken {
            message: "the stream ended before `done: true`".into(),
        })?;
        Ok(Completion { text, usage })
    }
}
