//! A fake OpenAI-compatible model whose answer depends only on what was asked: the same
//! messages always get the same text, in this process or another. So a run killed midway
//! and resumed, and a fresh run of the same ensemble, can be compared answer for answer,
//! whatever order the requests came in. It counts every request and can hold any of them
//! (by arrival number) for a while before answering, which is how tests catch a run in the
//! middle of a call.
//!
//! The scripted fake in `providers::fake` answers by request number, which a resumed run
//! (that skips what it already has) would shift.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

/// A request as the model received it.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    /// The request's messages, as JSON text: what identifies a request.
    pub(crate) messages: String,
}

struct Shared {
    /// How long request `n` (by arrival) waits before its answer; the last one repeats.
    delays: Vec<Duration>,
    requests: Mutex<Vec<Seen>>,
}

/// A running model. Dropping it stops the server.
pub(crate) struct Model {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// The text the model answers to these messages.
pub(crate) fn answer_to(messages: &str) -> String {
    format!(
        "answer-{:016x}",
        xxhash_rust::xxh3::xxh3_64(messages.as_bytes())
    )
}

impl Model {
    /// A model that waits `delays[n]` before answering request `n` (the last delay repeats).
    pub(crate) fn start(delays: Vec<Duration>) -> Model {
        assert!(!delays.is_empty(), "a model needs at least one delay");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("start the model's runtime");
        let shared = Arc::new(Shared {
            delays,
            requests: Mutex::new(Vec::new()),
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the model");
        let addr = listener.local_addr().expect("the model's address");
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(complete))
            .with_state(Arc::clone(&shared));
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Model {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// A model that answers every request after `delay`.
    pub(crate) fn with_delay(delay: Duration) -> Model {
        Model::start(vec![delay])
    }

    /// A profile on this model, priced at $1 / $2 per million tokens in / out; `extra` holds
    /// more keys (`, cache: true`).
    pub(crate) fn profile(&self, extra: &str) -> String {
        format!(
            "{{provider: openai-compatible, base_url: \"http://{}/v1\", model: fake-1, price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}{extra}}}",
            self.addr
        )
    }

    pub(crate) fn requests(&self) -> Vec<Seen> {
        self.shared.requests.lock().expect("not poisoned").clone()
    }

    pub(crate) fn count(&self) -> usize {
        self.shared.requests.lock().expect("not poisoned").len()
    }

    /// How many requests had `needle` in their messages.
    pub(crate) fn count_with(&self, needle: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.messages.contains(needle))
            .count()
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn complete(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Json<Value> {
    let messages = body["messages"].to_string();
    let delay = {
        let mut requests = shared.requests.lock().expect("not poisoned");
        let n = requests.len();
        requests.push(Seen {
            messages: messages.clone(),
        });
        shared.delays[n.min(shared.delays.len() - 1)]
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let input = messages.len() as u64 / 4 + 1;
    Json(json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": "fake-1",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer_to(&messages)},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": input, "completion_tokens": 3, "total_tokens": input + 3}
    }))
}
