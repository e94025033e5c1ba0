//! What the engine needs from a run store, as a trait: the store (`crate::store`) is a
//! subscriber of the engine, so it depends on `exec`, never the other way round.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::call::StoredAnswer;
use super::event::Event;

/// A new run, as recorded before its first event.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub id: String,
    pub ensemble: String,
    /// The ensemble file and its text (for `orc resume`).
    pub path: Option<PathBuf>,
    pub source: Option<String>,
    pub input: String,
    pub options: serde_json::Value,
    /// A resumed run: the row exists already.
    pub resumed: bool,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A run store. Recording never blocks the caller: writes are queued to a writer of the
/// store's own, which must not lose an event.
pub trait Recorder: Send + Sync {
    fn run_started(&self, run: RunRecord);
    /// Events of runs, in order, as a batch (the dispatcher hands over a burst at once).
    fn events(&self, events: Vec<Arc<Event>>);
    /// Resolves once everything recorded so far is written.
    fn flush(&self) -> BoxFuture<'_, ()>;
    /// An earlier successful response to the request with this hash, no older than `ttl`.
    fn cached_answer<'a>(
        &'a self,
        request_hash: &'a str,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Option<StoredAnswer>>;
}
