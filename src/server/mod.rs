//! `orc serve`: the engine over HTTP. Owns the axum routers and everything they share; runs
//! nothing itself: every run goes through the one `exec::Engine` of the process, and every
//! answer about past runs comes from the run store.
//!
//! Layout: `api/` (JSON: ensembles, validation, runs, generation, cost), `events.rs` (a run's
//! events as SSE), `openai.rs` (`/v1`, OpenAI-compatible), `metrics.rs` (`/metrics`),
//! `dashboard.rs` (the embedded web page), `live.rs` (starting runs and fanning their events
//! out), `catalog.rs` (the ensembles served), `error.rs` (`AppError`, the one error shape).
//! Authentication, body limits, timeouts and tracing are layers here.

mod api;
mod catalog;
mod dashboard;
mod error;
mod events;
mod live;
mod metrics;
mod openai;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::{Dirs, ProfileSet};
use crate::exec::{Engine, EngineConfig, Recorder, RunStatus};
use crate::store::Store;
use error::{AppError, Shape};
use metrics::Metrics;

/// How long an API request may take before it is answered with 408.
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// Event streams reading the store at once (see `Shared::catch_ups`).
const CATCH_UPS: usize = 8;
/// How long `/v1/chat/completions` waits for its run (without `stream`).
const CHAT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// What a server is set up with.
pub struct ServeConfig {
    pub dirs: Dirs,
    /// Ensemble files and folders given on the command line.
    pub paths: Vec<PathBuf>,
    pub profiles: ProfileSet,
    pub store: Arc<Store>,
    /// Required in `Authorization: Bearer` when set.
    pub token: Option<String>,
    pub max_concurrency: usize,
    pub no_cache: bool,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Where jobs run (`--redis`: on `orc worker`s); `None` in this process.
    pub executor: Option<Arc<dyn crate::exec::Executor>>,
}

/// What `AppState` holds.
pub struct Shared {
    engine: Engine,
    store: Arc<Store>,
    catalog: catalog::Catalog,
    metrics: Arc<Metrics>,
    live: Arc<live::Live>,
    token: Option<String>,
    max_body: usize,
    /// Event streams catching up from the store at once. Each read holds a store connection
    /// (with its page cache) and a page of events: hundreds of clients connecting together
    /// take turns instead of opening hundreds of connections.
    catch_ups: tokio::sync::Semaphore,
    /// Fires when the server shuts down: event streams end.
    shutdown: CancellationToken,
}

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// Builds the engine (with the store, counted into the metrics) and the state around it.
    /// Must be called inside a tokio runtime.
    pub fn new(config: ServeConfig) -> (AppState, usize) {
        let metrics = Arc::new(Metrics::new());
        let recorder: Arc<dyn Recorder> = Arc::new(metrics::Metered {
            store: Arc::clone(&config.store),
            metrics: Arc::clone(&metrics),
        });
        let engine = Engine::new(EngineConfig {
            max_concurrency: config.max_concurrency,
            store: Some(recorder),
            no_cache: config.no_cache,
            // Each run's live channel allocates this many slots up front. Its one
            // subscriber here is the run's fan-out (`live.rs`), which only serialises, and
            // anything that falls behind catches up from the store.
            live_capacity: 1 << 12,
            executor: config.executor,
            ..EngineConfig::default()
        });
        let catalog = catalog::Catalog::new(config.dirs, config.paths, config.profiles);
        let ensembles = catalog.entries().len();
        let state = AppState(Arc::new(Shared {
            engine,
            store: config.store,
            catalog,
            metrics,
            live: Arc::new(live::Live::default()),
            token: config.token.filter(|t| !t.is_empty()),
            max_body: config.max_body,
            catch_ups: tokio::sync::Semaphore::new(CATCH_UPS),
            shutdown: CancellationToken::new(),
        }));
        (state, ensembles)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// Every route, with authentication, limits, timeouts and tracing.
pub fn router(state: AppState) -> Router {
    let api = api::router()
        .route("/metrics", get(metrics::metrics))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            API_TIMEOUT,
        ));
    let v1 = openai::router().layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        CHAT_TIMEOUT,
    ));
    let guarded = api
        .merge(v1)
        .route("/api/runs/{id}/events", get(events::events))
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(dashboard::router())
        .merge(guarded)
        .fallback(not_found)
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(state.max_body))
        .layer(middleware::from_fn(json_errors))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves until `shutdown` resolves; then cancels every running run as `interrupted` (so
/// it can be resumed), waits for them to be recorded, ends the event streams and lets open
/// requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let stopping = state.clone();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Requests are still served until this future ends: a run started meanwhile is
            // stopped the same way.
            loop {
                let runs = stopping.engine.active_runs();
                if runs.is_empty() {
                    break;
                }
                stopping.engine.cancel_all(RunStatus::Interrupted);
                for run in runs {
                    run.wait().await;
                }
            }
            stopping.engine.flush().await;
            stopping.shutdown.cancel();
        })
        .await;
    state.engine.flush().await;
    result
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn not_found(request: Request) -> AppError {
    let e = AppError::not_found(format!(
        "no route `{} {}`",
        request.method(),
        request.uri().path()
    ));
    if request.uri().path().starts_with("/v1/") {
        e.openai()
    } else {
        e
    }
}

/// Compares without stopping at the first difference, so response times say nothing about
/// how much of a guessed token was right. Written here: it is four lines, and the one crate
/// for it (`subtle`) would be a dependency for this alone.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// With a token, every guarded route needs `Authorization: Bearer TOKEN`.
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes())) {
        return next.run(request).await;
    }
    let message = if given.is_some() {
        "the bearer token is wrong"
    } else {
        "this server needs a token: send `Authorization: Bearer TOKEN`"
    };
    let e = AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
    if request.uri().path().starts_with("/v1/") {
        e.with_code("invalid_api_key").openai().into_response()
    } else {
        e.into_response()
    }
}

/// Errors made by layers (a body over the limit, a timeout, a method not allowed) come
/// without a body or as plain text; give them the JSON shape every other error has.
async fn json_errors(request: Request, next: Next) -> Response {
    let shape = if request.uri().path().starts_with("/v1/") {
        Shape::OpenAi
    } else {
        Shape::Api
    };
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "body_too_large",
            "the request body is larger than the server accepts (`orc serve --max-body`)",
        ),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long and was abandoned"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "this route does not take that method")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "the request body has the wrong content type",
        ),
        _ => ("error", "the request failed"),
    };
    let mut e = AppError::new(status, code, message);
    e.shape = shape;
    let mut out = e.into_response();
    for name in [header::ALLOW, header::WWW_AUTHENTICATE] {
        if let Some(v) = response.headers().get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

/// A JSON body with a `Location` header.
pub(crate) fn accepted(location: String, body: serde_json::Value) -> Response {
    let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    fn state(dir: &std::path::Path, token: Option<&str>) -> AppState {
        let store = Store::open(&dir.join("orc.db"), Box::new(|_| {})).unwrap();
        AppState::new(ServeConfig {
            dirs: Dirs::default(),
            paths: Vec::new(),
            profiles: ProfileSet::builtin(),
            store,
            token: token.map(String::from),
            max_concurrency: 4,
            no_cache: false,
            max_body: 1024,
            executor: None,
        })
        .0
    }

    async fn call(app: &Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn guarded_routes_need_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path(), Some("t")));
        assert_eq!(call(&app, get("/healthz")).await.0, StatusCode::OK);
        let (status, body) = call(&app, get("/api/runs")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "unauthorized");
        let authed = Request::get("/api/runs")
            .header("authorization", "Bearer t")
            .body(Body::empty())
            .unwrap();
        let (status, body) = call(&app, authed).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["runs"], serde_json::json!([]));
        let (status, body) = call(&app, get("/v1/models")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["type"], "authentication_error");
    }

    #[tokio::test]
    async fn layer_errors_are_json() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path(), None));
        let big = Request::post("/api/validate")
            .header("content-length", "5000")
            .body(Body::from("x".repeat(5000)))
            .unwrap();
        let (status, body) = call(&app, big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"]["code"], "body_too_large");
        let wrong = Request::delete("/api/runs").body(Body::empty()).unwrap();
        let (status, body) = call(&app, wrong).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body["error"]["code"], "method_not_allowed");
        let (status, body) = call(&app, get("/v1/nothing")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["type"], "not_found_error");
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
