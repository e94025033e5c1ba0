//! A spread `generate` node's shared state in Redis (`nodes::shared::SharedNode`): the
//! exact set of accepted items' normal forms, the accepted items in discovery order, the
//! feedback sample (newest finds per subtopic, most repeated items) and the node's
//! counters, under `orc:node:<id>:*`. Each call is two round trips: `begin` (a call
//! number, the feedback sample, the node's stop reason) and `record` (the candidates
//! checked and accepted in one atomic script). The coordinator seeds it (a resumed node),
//! reads it back when every part is done (`spread.rs`) and deletes it.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use super::keys;
use super::scripts;
use crate::nodes::generate::{Item, StopReason, assemble_feedback};
use crate::nodes::shared::{Begin, CallDone, NodeTotals, Recorded, SharedNode};

/// How long one shared step may keep failing (Redis away) before the part gives up.
const PATIENCE: Duration = Duration::from_secs(30);

/// The keys of one node.
#[derive(Clone)]
pub(super) struct NodeKeys {
    pub id: String,
}

impl NodeKeys {
    pub(super) fn counters(&self) -> String {
        keys::node(&self.id, "n")
    }
    pub(super) fn seen(&self) -> String {
        keys::node(&self.id, "seen")
    }
    pub(super) fn items(&self) -> String {
        keys::node(&self.id, "items")
    }
    pub(super) fn subs(&self) -> String {
        keys::node(&self.id, "subs")
    }
    pub(super) fn hot(&self) -> String {
        keys::node(&self.id, "hot")
    }
    pub(super) fn hot_texts(&self) -> String {
        keys::node(&self.id, "hottext")
    }
    pub(super) fn stop(&self) -> String {
        keys::node(&self.id, "stop")
    }
    pub(super) fn subtopics(&self) -> String {
        keys::node(&self.id, "subtopics")
    }
    pub(super) fn recent_prefix(&self) -> String {
        keys::node(&self.id, "recent:")
    }
    pub(super) fn recent(&self, subtopic: Option<&str>) -> String {
        format!("{}{}", self.recent_prefix(), subtopic_name(subtopic))
    }

    /// Every key of the node (the recent lists of `subs`).
    pub(super) fn all(&self, subs: &[String]) -> Vec<String> {
        let mut all = vec![
            self.counters(),
            self.seen(),
            self.items(),
            self.subs(),
            self.hot(),
            self.hot_texts(),
            self.stop(),
            self.subtopics(),
        ];
        all.extend(subs.iter().map(|s| format!("{}{s}", self.recent_prefix())));
        all
    }
}

/// How a subtopic is named in keys (`-` for none).
pub(super) fn subtopic_name(subtopic: Option<&str>) -> String {
    match subtopic {
        Some(s) => format!("s:{s}"),
        None => "-".to_string(),
    }
}

pub(super) fn stop_name(reason: StopReason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub(super) fn parse_stop(name: &str) -> Option<StopReason> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

/// One part's view of the node.
pub(super) struct RedisNode {
    pub conn: ConnectionManager,
    pub keys: NodeKeys,
    pub producer: u32,
    pub elapsed_before: Duration,
}

impl RedisNode {
    /// Runs a step until it succeeds, retrying while Redis is away (at most `PATIENCE`).
    async fn retry<T, F, Fut>(&self, what: &str, mut step: F) -> Result<T, String>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut backoff = super::conn::Backoff::new();
        loop {
            match step(self.conn.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if super::conn::is_connection_error(&e) => {
                    if tokio::time::Instant::now() > deadline {
                        return Err(format!("{what}: {e}"));
                    }
                    backoff.wait().await;
                }
                Err(e) => return Err(format!("{what}: {e}")),
            }
        }
    }
}

fn num<T: std::str::FromStr + Default>(v: &redis::Value) -> T {
    let text: Option<String> = redis::FromRedisValue::from_redis_value_ref(v).ok();
    text.and_then(|t| t.parse().ok()).unwrap_or_default()
}

#[async_trait]
impl SharedNode for RedisNode {
    fn producers(&self) -> Vec<u32> {
        vec![self.producer]
    }

    fn elapsed_before(&self) -> Duration {
        self.elapsed_before
    }

    fn asks_partition(&self) -> bool {
        self.producer == 1
    }

    async fn publish_subtopics(&self, subtopics: &[Option<String>]) -> Result<(), String> {
        let json = serde_json::to_string(subtopics).expect("subtopics serialize");
        let key = self.keys.subtopics();
        self.retry("publish the subtopics", |mut conn| {
            let (key, json) = (key.clone(), json.clone());
            async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&json)
                    .arg("EX")
                    .arg(keys::STATE_TTL_SECS)
                    .query_async::<()>(&mut conn)
                    .await
            }
        })
        .await
    }

    async fn subtopics(
        &self,
        cancel: &CancellationToken,
    ) -> Result<Option<Vec<Option<String>>>, String> {
        let key = self.keys.subtopics();
        loop {
            let found: Option<String> = self
                .retry("read the subtopics", |mut conn| {
                    let key = key.clone();
                    async move { redis::cmd("GET").arg(&key).query_async(&mut conn).await }
                })
                .await?;
            if let Some(json) = found {
                return serde_json::from_str(&json)
                    .map(Some)
                    .map_err(|e| format!("bad subtopics: {e}"));
            }
            // The first producer's part asks for them; poll until it has.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = cancel.cancelled() => return Ok(None),
            }
        }
    }

    async fn begin(&self, subtopic: Option<&str>, feedback: usize) -> Result<Begin, String> {
        let k = &self.keys;
        let own = subtopic_name(subtopic);
        let reply: (u64, String, Vec<String>, Vec<String>, Vec<String>) = self
            .retry("start a call", |mut conn| {
                let own = own.clone();
                async move {
                    scripts::NODE_BEGIN
                        .key(k.counters())
                        .key(k.hot())
                        .key(k.hot_texts())
                        .key(k.subs())
                        .key(k.stop())
                        .key(k.recent(subtopic))
                        .arg(feedback)
                        .arg(k.recent_prefix())
                        .arg(own)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;
        let (call, stop, hot, own, others) = reply;
        let feedback = assemble_feedback(
            hot.iter().map(String::as_str),
            own.iter().chain(&others).map(String::as_str),
            feedback,
        );
        Ok(Begin {
            call,
            feedback,
            stop: parse_stop(&stop),
        })
    }

    async fn record(&self, call: CallDone<'_>) -> Result<Recorded, String> {
        let k = &self.keys;
        let sub = subtopic_name(call.subtopic);
        let count = call.candidates.len();
        let parsed = call.candidates.len() as u64;
        let reply: Vec<redis::Value> = self
            .retry("record a call", |mut conn| {
                let mut invocation = scripts::NODE_RECORD.prepare_invoke();
                invocation
                    .key(k.counters())
                    .key(k.seen())
                    .key(k.items())
                    .key(k.recent(call.subtopic))
                    .key(k.subs())
                    .key(k.hot())
                    .key(k.hot_texts())
                    .arg(&sub)
                    .arg(u8::from(call.failed))
                    .arg(call.min_new.unwrap_or(-1.0))
                    .arg(call.cost.map_or(String::new(), |c| c.to_string()))
                    .arg(call.usage.input_tokens)
                    .arg(call.usage.output_tokens)
                    .arg(call.usage.reasoning_tokens)
                    .arg(call.usage.cached_input_tokens)
                    .arg(u8::from(call.usage.estimated))
                    .arg(u8::from(call.usage.unknown))
                    .arg(parsed)
                    .arg(keys::STATE_TTL_SECS);
                for (key, text, item) in &call.candidates {
                    invocation.arg(key).arg(text).arg(item);
                }
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        let flags: Vec<i64> = reply
            .first()
            .and_then(|v| redis::FromRedisValue::from_redis_value_ref(v).ok())
            .unwrap_or_default();
        let get = |i: usize| reply.get(i).cloned().unwrap_or(redis::Value::Nil);
        let cost_unknown: u8 = num(&get(4));
        let totals = NodeTotals {
            calls: num(&get(1)),
            candidates: num(&get(2)),
            cost: (cost_unknown == 0).then(|| num::<f64>(&get(3))),
            low_yield_streak: num(&get(5)),
            failure_streak: num(&get(6)),
            unique: redis::FromRedisValue::from_redis_value_ref(&get(7)).unwrap_or(0),
        };
        let mut new: Vec<bool> = flags.into_iter().map(|f| f == 1).collect();
        new.resize(count, false);
        Ok(Recorded { new, totals })
    }

    async fn stop(&self, reason: StopReason) -> Result<(), String> {
        let key = self.keys.stop();
        let name = stop_name(reason);
        self.retry("stop the node", |mut conn| {
            let (key, name) = (key.clone(), name.clone());
            async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&name)
                    .arg("NX")
                    .arg("EX")
                    .arg(keys::STATE_TTL_SECS)
                    .query_async::<()>(&mut conn)
                    .await
            }
        })
        .await
    }
}

/// What the coordinator reads back from a node once every part is done.
pub(super) struct NodeState {
    pub items: Vec<Item>,
    pub counters: std::collections::HashMap<String, String>,
    pub stop: Option<StopReason>,
}

impl NodeState {
    pub(super) fn get<T: std::str::FromStr + Default>(&self, name: &str) -> T {
        self.counters
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    }
}
