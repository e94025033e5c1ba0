//! What travels through Redis between a coordinator and its workers: job entries on the
//! jobs stream, and replies (event batches and reports) on the coordinator's reply stream.
//! All JSON inside stream fields; the job and report are `exec`'s own serialisable types.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::exec::{EventKind, Job, Report};

/// One job on the jobs stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct JobEntry {
    /// Unique per job (`<coordinator>:<n>`): replies name it.
    pub id: String,
    /// The coordinator that waits for it (its beacon and reply stream).
    pub coord: String,
    /// The run it belongs to (its cancel and stop flags, its budget).
    pub run: String,
    /// Content hash of the ensemble bundle to load.
    pub bundle: String,
    pub job: Job,
    /// One part of a spread `generate` node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<Part>,
    /// The run's `budget.max_cost_usd`, shared by every worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<f64>,
    /// When the job was first queued (ms since the epoch), and how long it may wait for a
    /// worker that can serve it.
    pub queued_ms: u64,
    pub serve_within_ms: u64,
    /// Workers that could not serve it, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

/// The producer a part of a spread `generate` node runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Part {
    /// The node's shared state (`keys::node`).
    pub node: String,
    pub producer: u32,
    /// When the node started (ms since the epoch, coordinator's clock).
    pub started_ms: u64,
}

/// The stream field holding a job entry.
pub(super) const ENTRY_FIELD: &str = "j";

impl JobEntry {
    pub(super) fn to_field(&self) -> String {
        serde_json::to_string(self).expect("job entries serialize")
    }

    pub(super) fn from_fields(map: &HashMap<String, redis::Value>) -> Result<JobEntry, String> {
        let raw = map
            .get(ENTRY_FIELD)
            .ok_or_else(|| format!("no `{ENTRY_FIELD}` field"))?;
        let text: String =
            redis::FromRedisValue::from_redis_value_ref(raw).map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }
}

/// An event of a job as a worker sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct JobEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nested: Option<Vec<String>>,
    pub kind: EventKind,
}

/// A reply on a coordinator's reply stream.
#[derive(Debug, Clone)]
pub(super) struct Reply {
    pub job: String,
    /// Which execution of the job sent it (`<worker>:<n>`): a job claimed after its
    /// worker stopped runs again under another delivery.
    pub delivery: String,
    /// Numbers a delivery's messages, so one sent twice (a retried write) counts once.
    pub seq: u64,
    pub body: ReplyBody,
}

#[derive(Debug, Clone)]
pub(super) enum ReplyBody {
    Events(Vec<JobEvent>),
    Done(Box<Report>),
}

impl Reply {
    /// The stream fields of a reply.
    pub(super) fn fields(&self) -> Vec<(&'static str, String)> {
        let (kind, body) = match &self.body {
            ReplyBody::Events(events) => (
                "e",
                serde_json::to_string(events).expect("events serialize"),
            ),
            ReplyBody::Done(report) => (
                "d",
                serde_json::to_string(report).expect("reports serialize"),
            ),
        };
        vec![
            ("job", self.job.clone()),
            ("d", self.delivery.clone()),
            ("n", self.seq.to_string()),
            ("k", kind.to_string()),
            ("b", body),
        ]
    }

    pub(super) fn from_fields(map: &HashMap<String, redis::Value>) -> Result<Reply, String> {
        let get = |name: &str| -> Result<String, String> {
            let v = map.get(name).ok_or_else(|| format!("no `{name}` field"))?;
            redis::FromRedisValue::from_redis_value_ref(v).map_err(|e| e.to_string())
        };
        let body = get("b")?;
        let body = match get("k")?.as_str() {
            "e" => ReplyBody::Events(serde_json::from_str(&body).map_err(|e| e.to_string())?),
            "d" => ReplyBody::Done(Box::new(
                serde_json::from_str(&body).map_err(|e| e.to_string())?,
            )),
            other => return Err(format!("unknown reply kind `{other}`")),
        };
        Ok(Reply {
            job: get("job")?,
            delivery: get("d")?,
            seq: get("n")?
                .parse()
                .map_err(|_| "a bad `n` field".to_string())?,
            body,
        })
    }
}

/// Milliseconds since the epoch.
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{AgentStatus, Work};

    #[test]
    fn entries_and_replies_round_trip() {
        let entry = JobEntry {
            id: "c:1".into(),
            coord: "c".into(),
            run: "r".into(),
            bundle: "h".into(),
            job: Job {
                run_id: "run-1".into(),
                agent: 2,
                name: "a".into(),
                work: Work::Prompt("hello".into()),
                input: "in".into(),
                seed: 7,
                stream: false,
                resume: None,
            },
            part: None,
            budget: Some(0.5),
            queued_ms: 1,
            serve_within_ms: 60_000,
            refused: vec![],
        };
        let mut map = HashMap::new();
        map.insert(
            ENTRY_FIELD.to_string(),
            redis::Value::BulkString(entry.to_field().into_bytes()),
        );
        let back = JobEntry::from_fields(&map).expect("the entry parses");
        assert_eq!(back.job.name, "a");
        assert_eq!(back.budget, Some(0.5));

        let reply = Reply {
            job: "c:1".into(),
            delivery: "w:3".into(),
            seq: 4,
            body: ReplyBody::Done(Box::new(Report::new(
                AgentStatus::Succeeded,
                "p",
                "m",
                "mock",
            ))),
        };
        let map: HashMap<String, redis::Value> = reply
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), redis::Value::BulkString(v.into_bytes())))
            .collect();
        let back = Reply::from_fields(&map).expect("the reply parses");
        assert_eq!(back.seq, 4);
        assert!(matches!(back.body, ReplyBody::Done(r) if r.profile == "p"));
    }
}
