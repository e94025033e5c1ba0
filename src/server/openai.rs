//! `/v1`: an OpenAI-compatible endpoint, so any OpenAI client library can call an ensemble.
//! `GET /v1/models` lists the ensembles; `POST /v1/chat/completions` with `model` = an
//! ensemble's name runs it on the last user message and answers with the final output as
//! the assistant's message, with usage; `stream: true` streams the final agent's text as
//! `chat.completion.chunk` events ending with `[DONE]`. Errors use OpenAI's shape. A client
//! that goes away cancels its run.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::AppState;
use super::api::runs::{StartOptions, start_error};
use super::catalog::Loaded;
use super::error::{AppError, AppResult};
use crate::exec::{
    AgentStatus, EventKind, RunHandle, RunOptions, RunOutcome, RunSource, RunStatus, Subscription,
};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/models/{model}", get(model))
        .route("/v1/chat/completions", post(chat))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn model_json(name: &str, path: &std::path::Path) -> Value {
    let created = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    json!({ "id": name, "object": "model", "created": created, "owned_by": "orc" })
}

async fn models(State(state): State<AppState>) -> AppResult<Json<Value>> {
    let data = tokio::task::spawn_blocking(move || {
        state
            .catalog
            .entries()
            .iter()
            .map(|e| model_json(&e.name, &e.path))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| AppError::from(e).openai())?;
    Ok(Json(json!({ "object": "list", "data": data })))
}

async fn model(State(state): State<AppState>, Path(name): Path<String>) -> AppResult<Json<Value>> {
    match state.catalog.find(&name) {
        Some(e) => Ok(Json(model_json(&e.name, &e.path))),
        None => Err(unknown_model(&state, &name)),
    }
}

fn unknown_model(state: &AppState, name: &str) -> AppError {
    let mut message = format!("The model `{name}` does not exist: no ensemble has that name");
    let names = state.catalog.names();
    if let Some(s) = crate::suggest::closest(name, names.iter().map(String::as_str)) {
        message.push_str(&format!("; did you mean `{s}`?"));
    }
    AppError::not_found(message)
        .with_code("model_not_found")
        .param("model")
        .openai()
}

fn invalid(message: impl Into<String>, param: &'static str) -> AppError {
    AppError::bad_request(message)
        .with_code("invalid_request")
        .param(param)
        .openai()
}

/// The text of a message's `content`: a string, or the text parts of an array.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str())
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

struct Chat {
    model: String,
    input: String,
    stream: bool,
    include_usage: bool,
    seed: Option<u64>,
}

fn parse(body: &[u8]) -> AppResult<Chat> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the request body is not JSON: {e}"), "body"))?;
    let model = doc["model"]
        .as_str()
        .ok_or_else(|| invalid("`model` is required: the name of an ensemble", "model"))?
        .to_string();
    let messages = doc["messages"]
        .as_array()
        .ok_or_else(|| invalid("`messages` is required: an array of messages", "messages"))?;
    let input = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| content_text(&m["content"]))
        .ok_or_else(|| {
            invalid(
                "`messages` has no user message with text: the last one is the ensemble's input",
                "messages",
            )
        })?;
    Ok(Chat {
        model,
        input,
        stream: doc["stream"].as_bool().unwrap_or(false),
        include_usage: doc["stream_options"]["include_usage"]
            .as_bool()
            .unwrap_or(false),
        seed: doc["seed"].as_u64(),
    })
}

/// Cancels the run when dropped armed: the client went away before the answer.
struct CancelOnDrop(Option<RunHandle>);

impl CancelOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            if !h.is_finished() {
                h.cancel(RunStatus::Cancelled);
            }
        }
    }
}

async fn chat(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Response> {
    let body = body.map_err(|e| AppError::from(e).openai())?;
    let chat = parse(&body)?;
    let s = state.clone();
    let name = chat.model.clone();
    let found = tokio::task::spawn_blocking(move || match s.catalog.find(&name) {
        Some(entry) => match s.catalog.load(&entry) {
            Ok(loaded) => Ok((entry, loaded)),
            Err(bad) => Err(AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_ensemble",
                format!("ensemble `{name}` is invalid: {}", bad.message),
            )
            .param("model")
            .openai()),
        },
        None => Err(unknown_model(&s, &name)),
    })
    .await
    .map_err(|e| AppError::from(e).openai())??;
    let (entry, loaded) = found;
    let options = StartOptions {
        seed: chat.seed,
        timeout: None,
        stream: Some(chat.stream),
    };
    let (handle, events) = start(&state, &loaded, &entry.path, chat.input.clone(), &options)
        .map_err(AppError::openai)?;
    let id = format!("chatcmpl-{}", handle.id());
    let sinks: Vec<String> = loaded
        .plan
        .sinks
        .iter()
        .map(|&i| loaded.plan.ensemble.agents[i].name.clone())
        .collect();
    if chat.stream {
        let (tx, rx) = mpsc::channel::<SseEvent>(256);
        let streamer = Streamer {
            id,
            model: chat.model,
            created: now(),
            sinks,
            include_usage: chat.include_usage,
            tx,
        };
        tokio::spawn(streamer.run(handle, events));
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
        });
        return Ok(Sse::new(body)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    drop(events);
    let mut guard = CancelOnDrop(Some(handle.clone()));
    let outcome = handle.wait().await;
    guard.disarm();
    let (text, finish) = final_text(&outcome, &sinks).ok_or_else(|| failed(&outcome))?;
    let mut response = Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": now(),
        "model": chat.model,
        "system_fingerprint": outcome.run_id,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": text, "refusal": null },
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": usage(&outcome),
    }))
    .into_response();
    if let Ok(v) = outcome.run_id.parse() {
        response.headers_mut().insert("x-orc-run-id", v);
    }
    Ok(response)
}

/// Starts the run with a subscription that sees its every event.
fn start(
    state: &AppState,
    loaded: &Loaded,
    path: &std::path::Path,
    input: String,
    options: &StartOptions,
) -> AppResult<(RunHandle, Subscription)> {
    if !loaded.unsupported.is_empty() {
        return Err(AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_runnable",
            format!(
                "ensemble `{}` uses keys this version validates but cannot run yet",
                loaded.plan.ensemble.name
            ),
        ));
    }
    let seed = options.seed.unwrap_or(0);
    let run_options = RunOptions {
        run_id: None,
        seed,
        timeout: None,
        stream: options.stream.unwrap_or(false),
        source: Some(RunSource {
            path: std::fs::canonicalize(path).ok(),
            text: loaded.plan.ensemble.source.text.to_string(),
        }),
        options: json!({ "seed": seed, "via": "v1/chat/completions" }),
        resume: None,
    };
    let pending = state
        .engine
        .prepare(Arc::clone(&loaded.plan), input, run_options)
        .map_err(|e| start_error(&e))?;
    let events = pending.subscribe();
    Ok((state.live.start(pending), events))
}

fn usage(outcome: &RunOutcome) -> Value {
    let u = &outcome.totals.usage;
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
    })
}

/// The assistant's answer: the final agent's output (each final agent's, headed by its
/// name, when there are several), and the finish reason; `None` when none succeeded.
fn final_text(outcome: &RunOutcome, sinks: &[String]) -> Option<(String, &'static str)> {
    let finals: Vec<_> = outcome
        .agents
        .iter()
        .filter(|a| sinks.contains(&a.name) && a.status == AgentStatus::Succeeded)
        .collect();
    if finals.is_empty() {
        return None;
    }
    let finish = if finals.iter().any(|a| a.truncated) {
        "length"
    } else {
        "stop"
    };
    if sinks.len() == 1 {
        return Some((finals[0].output.clone().unwrap_or_default(), finish));
    }
    let text = finals
        .iter()
        .map(|a| format!("== {} ==\n{}", a.name, a.output.as_deref().unwrap_or("")))
        .collect::<Vec<_>>()
        .join("\n\n");
    Some((text, finish))
}

fn failed(outcome: &RunOutcome) -> AppError {
    let why: Vec<String> = outcome
        .agents
        .iter()
        .filter(|a| a.status == AgentStatus::Failed)
        .map(|a| {
            format!(
                "agent `{}` failed: {}",
                a.name,
                a.error.as_deref().unwrap_or("unknown error")
            )
        })
        .collect();
    let mut message = format!(
        "ensemble `{}` ended {} without a final answer (run `{}`)",
        outcome.ensemble,
        outcome.status.as_str(),
        outcome.run_id
    );
    if !why.is_empty() {
        message.push_str(": ");
        message.push_str(&why.join("; "));
    }
    AppError::new(StatusCode::BAD_GATEWAY, "run_failed", message).openai()
}

/// Streams one run's final agent as chunks.
struct Streamer {
    id: String,
    model: String,
    created: u64,
    sinks: Vec<String>,
    include_usage: bool,
    tx: mpsc::Sender<SseEvent>,
}

impl Streamer {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> SseEvent {
        SseEvent::default().data(
            json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
            })
            .to_string(),
        )
    }

    async fn send(&self, event: SseEvent) -> bool {
        self.tx.send(event).await.is_ok()
    }

    async fn run(self, handle: RunHandle, mut events: Subscription) {
        let mut guard = CancelOnDrop(Some(handle.clone()));
        let streamed = (self.sinks.len() == 1).then(|| self.sinks[0].clone());
        let mut text = Deltas::default();
        if !self
            .send(self.chunk(json!({ "role": "assistant", "content": "" }), None))
            .await
        {
            return;
        }
        while let Some(event) = events.recv().await {
            if !event.path.is_empty() {
                continue;
            }
            match &event.kind {
                EventKind::AgentDelta {
                    agent,
                    attempt,
                    text: piece,
                } if Some(agent) == streamed.as_ref() => {
                    if let Some(new) = text.push(*attempt, piece) {
                        if !self.send(self.chunk(json!({ "content": new }), None)).await {
                            return;
                        }
                    }
                }
                EventKind::RunFinished { .. } => break,
                _ => {}
            }
        }
        let outcome = handle.wait().await;
        guard.disarm();
        match final_text(&outcome, &self.sinks) {
            Some((full, finish)) => {
                if let Some(rest) = text.finish(&full) {
                    if !self
                        .send(self.chunk(json!({ "content": rest }), None))
                        .await
                    {
                        return;
                    }
                }
                if !self.send(self.chunk(json!({}), Some(finish))).await {
                    return;
                }
                if self.include_usage {
                    let chunk = json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": usage(&outcome),
                    });
                    if !self.send(SseEvent::default().data(chunk.to_string())).await {
                        return;
                    }
                }
                let _ = self.send(SseEvent::default().data("[DONE]")).await;
            }
            None => {
                // OpenAI's clients raise an error event met in the middle of a stream.
                let body = failed(&outcome).body();
                let _ = self.send(SseEvent::default().data(body.to_string())).await;
            }
        }
    }
}

/// What of the final agent's streamed text has been sent, so a retried attempt (which
/// streams again from the start) never sends the same text twice: only what it adds
/// beyond what was sent goes out. A retry that says something else is not streamed.
#[derive(Default)]
struct Deltas {
    sent: String,
    attempt: Option<u32>,
    current: String,
    diverged: bool,
}

impl Deltas {
    fn push(&mut self, attempt: u32, piece: &str) -> Option<String> {
        if self.attempt != Some(attempt) {
            self.attempt = Some(attempt);
            self.current.clear();
        }
        self.current.push_str(piece);
        if self.diverged {
            return None;
        }
        if let Some(rest) = self.current.strip_prefix(self.sent.as_str()) {
            if rest.is_empty() {
                return None;
            }
            let rest = rest.to_string();
            self.sent.push_str(&rest);
            Some(rest)
        } else {
            if !self.sent.starts_with(self.current.as_str()) {
                self.diverged = true;
            }
            None
        }
    }

    /// What of the final output was not sent yet. An output that does not continue what
    /// was sent (a diverged retry, a reformatted `response_format` answer) is sent whole
    /// only when nothing was sent before.
    fn finish(&mut self, output: &str) -> Option<String> {
        let rest = if self.sent.is_empty() {
            output
        } else {
            output.strip_prefix(self.sent.as_str())?
        };
        (!rest.is_empty()).then(|| rest.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_stream_is_sent_once() {
        let mut d = Deltas::default();
        assert_eq!(d.push(1, "Hello"), Some("Hello".into()));
        assert_eq!(d.push(1, " wor"), Some(" wor".into()));
        // The stream broke; attempt 2 repeats the start, then goes further.
        assert_eq!(d.push(2, "Hello"), None);
        assert_eq!(d.push(2, " world"), Some("ld".into()));
        assert_eq!(d.finish("Hello world!"), Some("!".into()));
        assert_eq!(d.finish("Hello world"), None);
    }

    #[test]
    fn reads_the_last_user_message() {
        let chat = parse(
            br#"{"model":"m","messages":[{"role":"user","content":"first"},{"role":"assistant","content":"x"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#,
        )
        .unwrap();
        assert_eq!(chat.input, "a\nb");
        assert!(parse(br#"{"model":"m","messages":[]}"#).is_err());
        assert!(parse(br#"{"messages":[]}"#).is_err());
    }
}
