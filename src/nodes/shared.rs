//! The state a `generate` node's producers share when the node runs as several jobs (one
//! per producer) on different machines: one uniqueness tracker, one feedback sample and the
//! node-wide counters its stop conditions read. `SharedNode` is what the node needs from it;
//! the Redis implementation is in `worker/`, where every operation is one atomic script so
//! two producers never accept the same item. In one process none of this is used: the node
//! keeps its tracker and sample in memory (`generate.rs`), as fast as before.

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::generate::StopReason;
use crate::providers::Usage;

/// Node-wide state shared by the parts of a spread `generate` node.
#[async_trait]
pub trait SharedNode: Send + Sync {
    /// The producers (1-based) this part runs.
    fn producers(&self) -> Vec<u32>;

    /// How long the node had been running when this part started, so item times, UAM and
    /// `seconds` count from the node's start.
    fn elapsed_before(&self) -> Duration;

    /// Whether this part asks for the subtopics (`partition: semantic`); the others wait
    /// for them.
    fn asks_partition(&self) -> bool;

    /// Makes the subtopics known to every part.
    async fn publish_subtopics(&self, subtopics: &[Option<String>]) -> Result<(), String>;

    /// Waits for the subtopics the asking part publishes; `None` when cancelled first.
    async fn subtopics(
        &self,
        cancel: &CancellationToken,
    ) -> Result<Option<Vec<Option<String>>>, String>;

    /// Starts a call: its node-wide number, the feedback sample for `subtopic` (at most
    /// `feedback` items, most repeated first, then recent finds), and the node's stop
    /// reason if another part reached one.
    async fn begin(&self, subtopic: Option<&str>, feedback: usize) -> Result<Begin, String>;

    /// Records a finished call: checks its candidates against the tracker (accepting the
    /// new ones, with their items, atomically) and adds it to the node's counters.
    async fn record(&self, call: CallDone<'_>) -> Result<Recorded, String>;

    /// Sets the node's stop reason (the first one set wins) so every part stops.
    async fn stop(&self, reason: StopReason) -> Result<(), String>;
}

/// What `begin` returns.
#[derive(Debug, Clone)]
pub struct Begin {
    pub call: u64,
    pub feedback: Vec<String>,
    pub stop: Option<StopReason>,
}

/// A finished call, as `record` takes it.
pub struct CallDone<'a> {
    pub subtopic: Option<&'a str>,
    /// Normal form and the item (JSON) it would be, per candidate in answer order.
    pub candidates: Vec<(String, String, String)>,
    pub usage: Usage,
    /// `None` when the price is unknown.
    pub cost: Option<f64>,
    pub failed: bool,
    /// `min_new_per_call`, for the node's low-yield streak.
    pub min_new: Option<f64>,
}

/// The node after `record`.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// Per candidate, whether it was new.
    pub new: Vec<bool>,
    pub totals: NodeTotals,
}

/// The node's counters, across every part.
#[derive(Debug, Clone, Default)]
pub struct NodeTotals {
    pub unique: u64,
    pub candidates: u64,
    /// Calls finished.
    pub calls: u64,
    pub cost: Option<f64>,
    pub low_yield_streak: u32,
    pub failure_streak: u64,
}
