//! `GET /api/runs/{id}/events`: a run's events as Server-Sent Events, each with `id:` = its
//! `seq`. Stored events come first, then live ones; a reconnect with `Last-Event-ID` (or
//! `?after=N`) continues right after that event; the stream ends after `run_finished`.
//!
//! Gap-free protocol: subscribe to the run's live frames first, then flush the store, then
//! send the stored events after the client's last one, then the live frames, skipping seqs
//! already sent. A client that lags (or whose run's fan-out lags) catches up from the store
//! the same way. Each client has its own task and a bounded queue: a slow or vanished client
//! only ever holds up itself. A run that is not live in this server (another `orc` process
//! sharing the store is running it) is followed by polling the store.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use super::AppState;
use super::error::{AppError, AppResult};
use super::live::Frame;

#[derive(Deserialize)]
pub(crate) struct After {
    after: Option<u64>,
}

/// How often a run live in another process is looked up in the store.
const POLL: Duration = Duration::from_millis(250);
/// Events queued for one client before its task waits for it.
const QUEUE: usize = 256;
/// Stored events read at a time when catching up.
const PAGE: usize = 512;

pub(crate) async fn events(
    State(state): State<AppState>,
    Path(run): Path<String>,
    headers: HeaderMap,
    query: Result<Query<After>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Response> {
    let Query(query) = query?;
    let after = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                AppError::bad_request("`Last-Event-ID` must be an event's `seq` (a number)")
            })?,
        None => query.after.unwrap_or(0),
    };
    // A live run needs no lookup (and `catch_up` flushes the store before reading it).
    let id = if state.engine.running(&run).is_some() {
        run
    } else {
        super::api::runs::resolve(&state, run).await?
    };
    let (tx, rx) = mpsc::channel::<SseEvent>(QUEUE);
    let follower = Follower {
        state: state.clone(),
        id,
        last: after,
        tx,
    };
    state.metrics.sse_clients.inc();
    tokio::spawn(follower.run());
    Ok(Sse::new(stream(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn stream(rx: mpsc::Receiver<SseEvent>) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    })
}

/// One client's task.
struct Follower {
    state: AppState,
    id: String,
    /// The last seq sent.
    last: u64,
    tx: mpsc::Sender<SseEvent>,
}

/// Why a follower stops.
enum End {
    /// `run_finished` was sent.
    Finished,
    /// The client went away, or the server is shutting down.
    Gone,
}

impl Follower {
    async fn run(mut self) {
        let _ = self.follow().await;
        self.state.metrics.sse_clients.dec();
    }

    async fn follow(&mut self) -> Result<(), End> {
        let live = self.state.live.subscribe(&self.id);
        // A run live here ends with its live `run_finished`: a stored one is from before
        // it was resumed.
        self.catch_up(live.is_none()).await?;
        match live {
            Some(rx) => self.follow_live(rx).await,
            None => self.poll().await,
        }
    }

    /// Sends what the store has after `last`, a page at a time (a client catching up on a
    /// long log holds one page, not the log); with `may_end`, `Err(Finished)` once the
    /// log's last event, `run_finished`, is sent. The number of events sent.
    async fn catch_up(&mut self, may_end: bool) -> Result<usize, End> {
        self.state.engine.flush().await;
        let mut sent = 0;
        loop {
            let store = Arc::clone(&self.state.store);
            let (id, after) = (self.id.clone(), self.last);
            let permit = self
                .state
                .catch_ups
                .acquire()
                .await
                .map_err(|_| End::Gone)?;
            let page =
                tokio::task::spawn_blocking(move || store.events_raw_page(&id, after, PAGE)).await;
            drop(permit);
            let page = page.map_err(|_| End::Gone)?.map_err(|e| {
                tracing::warn!(run = %self.id, error = %e, "cannot read stored events");
                End::Gone
            })?;
            let n = page.len();
            if n == 0 {
                return Ok(sent);
            }
            let full = n >= PAGE;
            for (i, (seq, line)) in page.into_iter().enumerate() {
                // A resumed run has an earlier `run_finished` in its log: only the last
                // event of the log ends the stream.
                let last = may_end && !full && i + 1 == n && is_run_finished(&line);
                self.send(seq, &line).await?;
                sent += 1;
                if last {
                    return Err(End::Finished);
                }
            }
            if !full {
                return Ok(sent);
            }
        }
    }

    async fn send(&mut self, seq: u64, json: &str) -> Result<(), End> {
        if seq <= self.last {
            return Ok(());
        }
        self.last = seq;
        let event = SseEvent::default().id(seq.to_string()).data(json);
        tokio::select! {
            sent = self.tx.send(event) => sent.map_err(|_| End::Gone),
            () = self.state.shutdown.cancelled() => Err(End::Gone),
        }
    }

    async fn follow_live(&mut self, mut rx: broadcast::Receiver<Frame>) -> Result<(), End> {
        loop {
            let frame = tokio::select! {
                frame = rx.recv() => frame,
                () = self.tx.closed() => return Err(End::Gone),
                () = self.state.shutdown.cancelled() => return Err(End::Gone),
            };
            match frame {
                Ok(Frame::Event { seq, json, last }) => {
                    self.send(seq, &json).await?;
                    if last {
                        return Err(End::Finished);
                    }
                }
                Ok(Frame::Lagged) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.catch_up(false).await?;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    // The run ended (or its fan-out did): the store has the rest.
                    self.catch_up(true).await?;
                    return self.poll().await;
                }
            }
        }
    }

    /// Follows a run through the store until it is no longer running.
    async fn poll(&mut self) -> Result<(), End> {
        loop {
            let store = Arc::clone(&self.state.store);
            let id = self.id.clone();
            let running =
                tokio::task::spawn_blocking(move || store.run(&id).map(|r| r.status == "running"))
                    .await
                    .map_err(|_| End::Gone)?
                    .unwrap_or(false);
            let sent = self.catch_up(true).await?;
            if !running && sent == 0 {
                return Ok(());
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = self.tx.closed() => return Err(End::Gone),
                () = self.state.shutdown.cancelled() => return Err(End::Gone),
            }
        }
    }
}

/// Whether a stored event line is the run's own `run_finished` (not a nested ensemble's).
fn is_run_finished(line: &str) -> bool {
    // An event line is `{"run_id":..,"seq":..,"ts":..,"elapsed_ms":..,["path":[..],]"type":..`:
    // the first `"type":` is the event's own, and a `"path"` before it marks a nested event.
    // Parsing the whole (large) final event just to read its type would be wasted work.
    let Some(at) = line.find("\"type\":") else {
        return false;
    };
    line[at + 7..].starts_with("\"run_finished\"") && !line[..at].contains("\"path\":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_last_event() {
        assert!(is_run_finished(
            r#"{"run_id":"r","seq":9,"ts":"2026-01-01T00:00:00.000Z","elapsed_ms":5,"type":"run_finished","result":{}}"#
        ));
        assert!(!is_run_finished(
            r#"{"run_id":"r","seq":9,"ts":"2026-01-01T00:00:00.000Z","elapsed_ms":5,"path":["a"],"type":"run_finished","result":{}}"#
        ));
        assert!(!is_run_finished(
            r#"{"run_id":"r","seq":3,"ts":"2026-01-01T00:00:00.000Z","elapsed_ms":5,"type":"agent_queued","agent":"a"}"#
        ));
    }
}
