//! `GET /metrics`: Prometheus metrics of everything the server's engine runs, in the
//! OpenMetrics text format (`prometheus-client`). They are counted from the engine's events
//! on the store's lossless path (`Metered` wraps the store as the engine's `Recorder`), so a
//! busy server never under-counts the way a lagging live subscriber could.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::AppState;
use super::error::AppResult;
use crate::exec::{
    BoxFuture, CallSource, CallStatus, Event, EventKind, Recorder, RunRecord, StoredAnswer,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    provider: String,
    profile: String,
    status: String,
    error_kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProfileLabel {
    profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    provider: String,
    profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

type Histograms = Family<LatencyLabels, Histogram, fn() -> Histogram>;

/// Every metric the server exports.
pub(crate) struct Metrics {
    registry: Registry,
    runs_started: Counter,
    runs_finished: Family<StatusLabel, Counter>,
    runs_running: Gauge,
    agents: Family<StatusLabel, Counter>,
    calls: Family<CallLabels, Counter>,
    input_tokens: Family<ProfileLabel, Counter>,
    output_tokens: Family<ProfileLabel, Counter>,
    cost: Family<ProfileLabel, Counter<f64, AtomicU64>>,
    latency: Histograms,
    in_flight: Gauge,
    cache_hits: Family<SourceLabel, Counter>,
    pub(crate) sse_clients: Gauge,
    /// Calls in flight per run: a cancelled call never reports back, so what a run still
    /// holds when it finishes is taken off the gauge then.
    open_calls: Mutex<HashMap<Arc<str>, i64>>,
}

fn latency_histogram() -> Histogram {
    // 5 ms to about 80 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("orc");
        let runs_started = Counter::default();
        registry.register(
            "runs_started",
            "Runs started (resumed runs included)",
            runs_started.clone(),
        );
        let runs_finished = Family::<StatusLabel, Counter>::default();
        registry.register(
            "runs_finished",
            "Runs finished, by status",
            runs_finished.clone(),
        );
        let runs_running = Gauge::default();
        registry.register("runs_running", "Runs running now", runs_running.clone());
        let agents = Family::<StatusLabel, Counter>::default();
        registry.register(
            "agents_finished",
            "Agents finished, by status",
            agents.clone(),
        );
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "provider_calls",
            "Provider calls sent, by provider, profile, status and error kind",
            calls.clone(),
        );
        let input_tokens = Family::<ProfileLabel, Counter>::default();
        registry.register(
            "input_tokens",
            "Input tokens paid for, by profile",
            input_tokens.clone(),
        );
        let output_tokens = Family::<ProfileLabel, Counter>::default();
        registry.register(
            "output_tokens",
            "Output tokens paid for, by profile",
            output_tokens.clone(),
        );
        let cost = Family::<ProfileLabel, Counter<f64, AtomicU64>>::default();
        registry.register(
            "cost_usd",
            "Dollars spent, by profile (calls with a known price)",
            cost.clone(),
        );
        let latency: Histograms = Family::new_with_constructor(latency_histogram);
        registry.register(
            "provider_call_duration_seconds",
            "Latency of provider calls, by provider and profile",
            latency.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "provider_calls_in_flight",
            "Provider calls in flight now",
            in_flight.clone(),
        );
        let cache_hits = Family::<SourceLabel, Counter>::default();
        // Shown at zero from the start, so dashboards and alerts find them.
        for source in ["cache", "coalesced", "resume"] {
            let _ = cache_hits.get_or_create(&SourceLabel {
                source: source.into(),
            });
        }
        registry.register(
            "cache_hits",
            "Calls answered without being sent: from the cache, an identical call in flight (coalesced) or the store on resume",
            cache_hits.clone(),
        );
        let sse_clients = Gauge::default();
        registry.register(
            "sse_clients",
            "Event-stream clients connected now",
            sse_clients.clone(),
        );
        Metrics {
            registry,
            runs_started,
            runs_finished,
            runs_running,
            agents,
            calls,
            input_tokens,
            output_tokens,
            cost,
            latency,
            in_flight,
            cache_hits,
            sse_clients,
            open_calls: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one event of a run.
    pub(crate) fn observe(&self, event: &Event) {
        let top = event.path.is_empty();
        match &event.kind {
            EventKind::RunStarted { .. } if top => {
                self.runs_started.inc();
                self.runs_running.inc();
            }
            EventKind::RunFinished { result } if top => {
                self.runs_finished
                    .get_or_create(&StatusLabel {
                        status: result.status.as_str().to_string(),
                    })
                    .inc();
                self.runs_running.dec();
                let open = self
                    .open_calls
                    .lock()
                    .expect("not poisoned")
                    .remove(&event.run_id)
                    .unwrap_or(0);
                self.in_flight.dec_by(open);
            }
            EventKind::AgentFinished { outcome, .. } if top => {
                self.agents
                    .get_or_create(&StatusLabel {
                        status: outcome.status.as_str().to_string(),
                    })
                    .inc();
            }
            EventKind::CallStarted { .. } => {
                self.in_flight.inc();
                *self
                    .open_calls
                    .lock()
                    .expect("not poisoned")
                    .entry(Arc::clone(&event.run_id))
                    .or_insert(0) += 1;
            }
            EventKind::CallFinished(call) => {
                if call.source != CallSource::Provider {
                    let source = match call.source {
                        CallSource::Cache => "cache",
                        CallSource::Coalesced => "coalesced",
                        CallSource::Resume | CallSource::Provider => "resume",
                    };
                    self.cache_hits
                        .get_or_create(&SourceLabel {
                            source: source.into(),
                        })
                        .inc();
                    return;
                }
                let mut open = self.open_calls.lock().expect("not poisoned");
                if let Some(n) = open.get_mut(&event.run_id).filter(|n| **n > 0) {
                    *n -= 1;
                    self.in_flight.dec();
                }
                drop(open);
                self.calls
                    .get_or_create(&CallLabels {
                        provider: call.provider.clone(),
                        profile: call.profile.clone(),
                        status: match call.status {
                            CallStatus::Ok => "ok".into(),
                            CallStatus::Error => "error".into(),
                        },
                        error_kind: call.error_kind.clone().unwrap_or_default(),
                    })
                    .inc();
                let profile = ProfileLabel {
                    profile: call.profile.clone(),
                };
                self.input_tokens
                    .get_or_create(&profile)
                    .inc_by(call.usage.input_tokens);
                self.output_tokens
                    .get_or_create(&profile)
                    .inc_by(call.usage.output_tokens);
                if let Some(c) = call.cost_usd.filter(|c| *c > 0.0) {
                    self.cost.get_or_create(&profile).inc_by(c);
                }
                self.latency
                    .get_or_create(&LatencyLabels {
                        provider: call.provider.clone(),
                        profile: call.profile.clone(),
                    })
                    .observe(Duration::from_millis(call.latency_ms).as_secs_f64());
            }
            _ => {}
        }
    }

    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The store as the engine's `Recorder`, counting every event into the metrics on its way.
pub(crate) struct Metered {
    pub store: Arc<crate::store::Store>,
    pub metrics: Arc<Metrics>,
}

impl Recorder for Metered {
    fn run_started(&self, run: RunRecord) {
        self.store.run_started(run);
    }

    fn events(&self, events: Vec<Arc<Event>>) {
        for event in &events {
            self.metrics.observe(event);
        }
        Recorder::events(&*self.store, events);
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        self.store.flush()
    }

    fn cached_answer<'a>(
        &'a self,
        request_hash: &'a str,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Option<StoredAnswer>> {
        self.store.cached_answer(request_hash, ttl)
    }
}

pub(crate) async fn metrics(State(state): State<AppState>) -> AppResult<impl IntoResponse> {
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    ))
}
