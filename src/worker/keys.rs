//! The Redis keys orc uses, in one place. Everything lives under `orc:`; keys that belong
//! to one coordinator, run or node carry its id, and expire if nobody cleans them up.

/// The stream of jobs, read by every worker through one consumer group.
pub(super) const JOBS: &str = "orc:jobs";
/// The workers' consumer group.
pub(super) const GROUP: &str = "orc-workers";

/// How long per-run and per-node state outlives a coordinator that never cleaned it up.
pub(super) const STATE_TTL_SECS: u64 = 24 * 3600;

/// A coordinator's beacon: present while it runs (refreshed every second, short expiry).
pub(super) fn coordinator(id: &str) -> String {
    format!("orc:coord:{id}")
}

/// A coordinator's reply stream: events and reports of its jobs.
pub(super) fn replies(id: &str) -> String {
    format!("orc:replies:{id}")
}

/// An ensemble file (with what a worker needs to load it), by content hash.
pub(super) fn bundle(hash: &str) -> String {
    format!("orc:ensemble:{hash}")
}

/// The workers seen lately: a sorted set of names scored by when each last said so (ms
/// since the epoch).
pub(super) const WORKERS: &str = "orc:workers";

/// Per-run flags and counters: `cancel`, `stop`, `spent` (the budget).
pub(super) fn run(run: &str, what: &str) -> String {
    format!("orc:run:{run}:{what}")
}

/// A spread `generate` node's shared state.
pub(super) fn node(node: &str, what: &str) -> String {
    format!("orc:node:{node}:{what}")
}

/// A profile's shared limits.
pub(super) fn limit(profile: &str, what: &str) -> String {
    format!("orc:limit:{profile}:{what}")
}
