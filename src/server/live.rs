//! Starting runs and fanning their live events out to event-stream clients. Every run the
//! server starts gets one subscriber of its own (subscribed before the run starts, so it
//! sees every event) that serialises each event once and rebroadcasts the JSON; SSE clients
//! and `/v1` streams subscribe to that. A client that falls behind is never waited for: it
//! is told it lagged and catches up from the store, which has every event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::exec::{EventKind, PendingRun, RunHandle};

/// One event as sent to clients.
#[derive(Clone, Debug)]
pub(crate) enum Frame {
    Event {
        seq: u64,
        json: Arc<str>,
        /// The run's own `run_finished`: the last event.
        last: bool,
    },
    /// The fan-out fell behind the run; what it missed is in the store.
    Lagged,
}

/// Events one live subscriber may fall behind by before it must catch up from the store.
const CAPACITY: usize = 4096;

#[derive(Default)]
pub(crate) struct Live {
    runs: Mutex<HashMap<String, broadcast::Sender<Frame>>>,
}

impl Live {
    /// Starts a prepared run with its fan-out.
    pub(crate) fn start(self: &Arc<Self>, pending: PendingRun) -> RunHandle {
        let mut events = pending.subscribe();
        let id = pending.id().to_string();
        let (tx, _) = broadcast::channel(CAPACITY);
        self.runs
            .lock()
            .expect("not poisoned")
            .insert(id.clone(), tx.clone());
        let handle = pending.start();
        let live = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let frame = match &event.kind {
                    EventKind::Lagged { .. } => Frame::Lagged,
                    kind => Frame::Event {
                        seq: event.seq,
                        json: Arc::from(serde_json::to_string(&*event).expect("events serialize")),
                        last: event.path.is_empty() && kind.is_run_finished(),
                    },
                };
                let last = matches!(frame, Frame::Event { last: true, .. });
                let _ = tx.send(frame);
                if last {
                    break;
                }
            }
            live.runs.lock().expect("not poisoned").remove(&id);
        });
        handle
    }

    /// A subscription to a run's frames, when the run is live here.
    pub(crate) fn subscribe(&self, id: &str) -> Option<broadcast::Receiver<Frame>> {
        self.runs
            .lock()
            .expect("not poisoned")
            .get(id)
            .map(broadcast::Sender::subscribe)
    }
}
