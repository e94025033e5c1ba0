//! `orc worker`: takes jobs from `orc:jobs` through the workers' consumer group and runs
//! them with the engine (`Engine::run_job_with`), with this machine's profiles and keys,
//! limits held in Redis, and the run's budget shared through Redis.
//!
//! Protocol, per job:
//! 1. Read with `XREADGROUP` (at most as many as there are free slots), or claimed with
//!    `XAUTOCLAIM` after its holder stopped heart-beating for the visibility timeout. A job
//!    delivered more than `max_crashes` times (each delivery after the first means a worker
//!    stopped while holding it) fails with a clear error instead of running again.
//! 2. Skipped (acknowledged, nothing run) when its coordinator is gone or its run cancelled.
//! 3. Refused when this worker cannot serve it (the ensemble does not load with its
//!    profiles, a key is missing): put back at the end of the stream for another worker, or
//!    failed once it has waited longer than its coordinator allows.
//! 4. Run: events go to the coordinator's reply stream in batches; every paid call adds
//!    its cost to the run's `spent` counter, and the job is cancelled once that reaches the
//!    run's budget. A heartbeat task re-claims the entry every tick (resetting its idle
//!    time) and tells the job when its run was cancelled or stopped, when its coordinator
//!    went away, or when another worker took it over (then it stops without reporting).
//! 5. The report is written to the reply stream and the job acknowledged (and deleted) in
//!    one script: acknowledged only once the result is stored. If Redis is away, the write
//!    is retried; a job whose report cannot be delivered stays pending and is claimed again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::StreamReadReply;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::bundle::{Bundle, PlanCache};
use super::conn::{Backoff, RedisError, RedisUrl, is_connection_error};
use super::executor::report_for;
use super::keys;
use super::limits::RedisLimits;
use super::node::{NodeKeys, RedisNode};
use super::protocol::{ENTRY_FIELD, JobEntry, JobEvent, Reply, ReplyBody, now_ms};
use super::scripts;
use crate::config::ProfileSet;
use crate::exec::{
    AgentError, AgentStatus, Engine, EngineConfig, EventKind, JobControl, JobUpdate, Mode, Report,
    StartError,
};
use crate::nodes::shared::SharedNode;
use crate::plan::Plan;

/// How a worker runs.
pub struct WorkerSettings {
    pub url: RedisUrl,
    /// The consumer name in the group; unique among the workers.
    pub name: String,
    /// Jobs run at once.
    pub concurrency: usize,
    /// A job whose holder has not heart-beaten for this long is claimed by another worker.
    pub visibility: Duration,
    /// A job delivered more than this many times after the first fails instead.
    pub max_crashes: u32,
    /// This machine's profiles: jobs are loaded with these.
    pub profiles: ProfileSet,
}

/// A worker connected to Redis.
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    settings: WorkerSettings,
    conn: ConnectionManager,
    engine: Engine,
    plans: PlanCache,
    slots: Arc<Semaphore>,
    /// Jobs running, by entry id.
    running: Mutex<HashMap<String, Running>>,
    deliveries: AtomicU64,
    /// Redis is unreachable (for warning once per outage).
    down: AtomicBool,
}

struct Running {
    entry: JobEntry,
    cancel: CancellationToken,
    stop: CancellationToken,
    /// Another worker holds the entry now: stop without reporting.
    lost: Arc<AtomicBool>,
}

/// A claimed entry: its id, fields and how many times it has been delivered.
type Claimed = (String, Vec<(String, redis::Value)>, u64);

/// How long a refused job waits before it is put back (so a lone worker that cannot
/// serve it does not spin on it).
const REFUSE_DELAY: Duration = Duration::from_millis(300);
/// How long a report keeps being retried while Redis is away.
const REPORT_PATIENCE: Duration = Duration::from_secs(600);

impl Worker {
    /// Connects to Redis and makes sure the consumer group exists.
    pub async fn connect(settings: WorkerSettings) -> Result<Worker, RedisError> {
        let conn = settings.url.manager(Duration::from_secs(5)).await?;
        let engine = Engine::new(EngineConfig {
            mode: Mode::Live,
            store: None,
            limits: Some(Arc::new(RedisLimits::new(
                conn.clone(),
                format!("{}-{}", settings.name, now_ms()),
            ))),
            ..EngineConfig::default()
        });
        let inner = Arc::new(Inner {
            slots: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            settings,
            conn,
            engine,
            plans: PlanCache::default(),
            running: Mutex::new(HashMap::new()),
            deliveries: AtomicU64::new(0),
            down: AtomicBool::new(false),
        });
        inner
            .ensure_group()
            .await
            .map_err(|e| RedisError::Unreachable {
                url: inner.settings.url.to_string(),
                message: e.to_string(),
            })?;
        Ok(Worker { inner })
    }

    pub fn name(&self) -> &str {
        &self.inner.settings.name
    }

    /// Takes and runs jobs until `shutdown` fires, then waits for the running ones (a
    /// second signal, handled by the caller, exits at once: their entries are claimed by
    /// other workers).
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), RedisError> {
        let inner = Arc::clone(&self.inner);
        let mut blocking = inner.settings.url.blocking_manager().await?;
        let control = tokio::spawn(control(Arc::clone(&inner), shutdown.clone()));
        let mut backoff = Backoff::new();
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&inner.slots).acquire_owned() => p.expect("the semaphore is never closed"),
                () = shutdown.cancelled() => break,
            };
            let count = 1 + inner.slots.available_permits();
            let mut read_cmd = redis::cmd("XREADGROUP");
            read_cmd
                .arg("GROUP")
                .arg(keys::GROUP)
                .arg(&inner.settings.name)
                .arg("COUNT")
                .arg(count)
                .arg("BLOCK")
                .arg(super::conn::BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(keys::JOBS)
                .arg(">");
            // Not raced with `shutdown`: entries Redis hands out are always taken (the read
            // blocks for at most a second).
            let read: redis::RedisResult<Option<StreamReadReply>> =
                read_cmd.query_async(&mut blocking).await;
            match read {
                Ok(reply) => {
                    inner.saw_ok();
                    backoff.reset();
                    let mut permit = Some(permit);
                    for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                        let permit = match permit.take() {
                            Some(p) => p,
                            None => Arc::clone(&inner.slots)
                                .acquire_owned()
                                .await
                                .expect("the semaphore is never closed"),
                        };
                        tokio::spawn(Arc::clone(&inner).handle(entry.id, entry.map, 1, permit));
                    }
                }
                Err(e) if e.code() == Some("NOGROUP") => {
                    drop(permit);
                    if let Err(e) = inner.ensure_group().await {
                        inner.saw_error(&e);
                        backoff.wait().await;
                    }
                }
                Err(e) => {
                    drop(permit);
                    inner.saw_error(&e);
                    backoff.wait().await;
                }
            }
        }
        tracing::info!(worker = %inner.settings.name, "not taking new jobs; waiting for the running ones");
        // Every slot back means every job finished.
        let all = u32::try_from(inner.settings.concurrency.max(1)).unwrap_or(u32::MAX);
        let _ = inner.slots.acquire_many(all).await;
        control.abort();
        let mut conn = inner.conn.clone();
        let _: Result<(), _> = redis::cmd("ZREM")
            .arg(keys::WORKERS)
            .arg(&inner.settings.name)
            .query_async(&mut conn)
            .await;
        Ok(())
    }
}

impl Inner {
    async fn ensure_group(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(keys::JOBS)
            .arg(keys::GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    fn saw_ok(&self) {
        if self.down.swap(false, Ordering::SeqCst) {
            tracing::warn!(redis = %self.settings.url, "reconnected to Redis");
        }
    }

    fn saw_error(&self, e: &redis::RedisError) {
        if !self.down.swap(true, Ordering::SeqCst) {
            tracing::warn!(redis = %self.settings.url, error = %e, "Redis unreachable; retrying");
        }
    }

    /// Runs a command until it succeeds, retrying while Redis is unreachable, for at most
    /// `patience`.
    async fn retry<T, F, Fut>(&self, patience: Duration, mut step: F) -> Result<T, String>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + patience;
        let mut backoff = Backoff::new();
        loop {
            match step(self.conn.clone()).await {
                Ok(v) => {
                    self.saw_ok();
                    return Ok(v);
                }
                Err(e) if is_connection_error(&e) && tokio::time::Instant::now() < deadline => {
                    self.saw_error(&e);
                    backoff.wait().await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Writes a reply; with `ack`, also acknowledges and deletes the job's entry, in the
    /// same step.
    async fn reply(&self, entry_id: &str, entry: &JobEntry, reply: &Reply, ack: bool) -> bool {
        let fields = reply.fields();
        let value = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let (job, delivery, seq, kind, body) =
            (value("job"), value("d"), value("n"), value("k"), value("b"));
        let replies = keys::replies(&entry.coord);
        let beacon = keys::coordinator(&entry.coord);
        let sent: Result<i64, String> = self
            .retry(REPORT_PATIENCE, |mut conn| {
                let mut invocation = scripts::REPLY.prepare_invoke();
                invocation
                    .key(&replies)
                    .key(keys::JOBS)
                    .key(&beacon)
                    .arg(keys::GROUP)
                    .arg(entry_id)
                    .arg(&job)
                    .arg(&delivery)
                    .arg(&seq)
                    .arg(&kind)
                    .arg(&body)
                    .arg(if ack { "1" } else { "0" });
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await;
        match sent {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(job = %entry.id, error = %e, "cannot deliver to the coordinator");
                false
            }
        }
    }

    /// Ends a job without running it: its report goes to the coordinator, the entry is
    /// acknowledged.
    async fn finish_unrun(&self, entry_id: &str, entry: &JobEntry, report: Report) {
        let reply = Reply {
            job: entry.id.clone(),
            delivery: self.next_delivery(),
            seq: 1,
            body: ReplyBody::Done(Box::new(report)),
        };
        self.reply(entry_id, entry, &reply, true).await;
    }

    /// The report of a job that did not run, named after its agent when its ensemble is
    /// loaded here.
    fn unrun_report(&self, entry: &JobEntry, error: AgentError) -> Report {
        let agent = self.plans.get(&entry.bundle).and_then(Result::ok);
        match agent
            .as_ref()
            .and_then(|p| p.ensemble.agents.get(entry.job.agent))
        {
            Some(agent) => report_for(agent, error),
            None => Report::new(AgentStatus::Failed, "", "", "").failed(error),
        }
    }

    fn next_delivery(&self) -> String {
        format!(
            "{}:{}",
            self.settings.name,
            self.deliveries.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The plan of a bundle, loaded with this worker's profiles (cached by hash).
    async fn plan(&self, hash: &str) -> Result<Arc<Plan>, String> {
        if let Some(plan) = self.plans.get(hash) {
            return plan;
        }
        let key = keys::bundle(hash);
        let json: Option<String> = self
            .retry(Duration::from_secs(30), |mut conn| {
                let key = key.clone();
                async move { redis::cmd("GET").arg(&key).query_async(&mut conn).await }
            })
            .await?;
        let json = json.ok_or_else(|| format!("the ensemble `{hash}` is not in Redis"))?;
        let bundle: Bundle =
            serde_json::from_str(&json).map_err(|e| format!("an unreadable ensemble: {e}"))?;
        let plan =
            tokio::task::block_in_place(|| bundle.load(&self.settings.profiles)).map(Arc::new);
        self.plans.insert(hash, plan.clone());
        plan
    }

    /// Puts a job back for a worker that can serve it, or fails it once it has waited too
    /// long.
    async fn refuse(&self, entry_id: &str, mut entry: JobEntry, reason: String) {
        let me = format!("`{}`: {reason}", self.settings.name);
        if !entry.refused.contains(&me) {
            entry.refused.push(me);
        }
        let waited = now_ms().saturating_sub(entry.queued_ms);
        if waited >= entry.serve_within_ms {
            let message = format!(
                "no worker could run agent `{}` within {}s: {}",
                entry.job.name,
                entry.serve_within_ms / 1000,
                entry.refused.join("; ")
            );
            let report = self.unrun_report(&entry, AgentError::new("worker", message));
            self.finish_unrun(entry_id, &entry, report).await;
            return;
        }
        tracing::debug!(job = %entry.id, reason = %reason, "cannot serve; putting it back");
        tokio::time::sleep(REFUSE_DELAY).await;
        let field = entry.to_field();
        let requeued: Result<String, String> = self
            .retry(Duration::from_secs(30), |mut conn| {
                let mut invocation = scripts::REQUEUE.prepare_invoke();
                invocation
                    .key(keys::JOBS)
                    .arg(keys::GROUP)
                    .arg(entry_id)
                    .arg(ENTRY_FIELD)
                    .arg(&field);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await;
        if let Err(e) = requeued {
            tracing::warn!(job = %entry.id, error = %e, "cannot put a job back; it will be claimed again");
        }
    }

    /// Checks before running: the coordinator is there, the run not cancelled, the budget
    /// not spent. `(alive, cancelled, spent)`.
    async fn preflight(&self, entry: &JobEntry) -> Result<(bool, bool, f64), String> {
        let beacon = keys::coordinator(&entry.coord);
        let cancel = keys::run(&entry.run, "cancel");
        let spent = keys::run(&entry.run, "spent");
        let (alive, cancelled, spent): (bool, bool, Option<f64>) = self
            .retry(Duration::from_secs(30), |mut conn| {
                let (beacon, cancel, spent) = (beacon.clone(), cancel.clone(), spent.clone());
                async move {
                    redis::pipe()
                        .cmd("EXISTS")
                        .arg(&beacon)
                        .cmd("EXISTS")
                        .arg(&cancel)
                        .cmd("GET")
                        .arg(&spent)
                        .query_async(&mut conn)
                        .await
                }
            })
            .await?;
        Ok((alive, cancelled, spent.unwrap_or(0.0)))
    }

    /// One delivery of a job, from its entry to its report.
    async fn handle(
        self: Arc<Self>,
        entry_id: String,
        fields: HashMap<String, redis::Value>,
        deliveries: u64,
        permit: OwnedSemaphorePermit,
    ) {
        let entry = match JobEntry::from_fields(&fields) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(entry = %entry_id, error = %e, "an unreadable job; dropping it");
                let mut conn = self.conn.clone();
                let _: Result<(), _> = redis::pipe()
                    .cmd("XACK")
                    .arg(keys::JOBS)
                    .arg(keys::GROUP)
                    .arg(&entry_id)
                    .cmd("XDEL")
                    .arg(keys::JOBS)
                    .arg(&entry_id)
                    .query_async(&mut conn)
                    .await;
                return;
            }
        };
        let crashes = deliveries.saturating_sub(1);
        if crashes >= u64::from(self.settings.max_crashes) && deliveries > 1 {
            let message = format!(
                "agent `{}` was taken by {crashes} worker{} that stopped without finishing it (crashed or killed); it is not run again (`orc worker --max-crashes`)",
                entry.job.name,
                if crashes == 1 { "" } else { "s" }
            );
            tracing::error!(job = %entry.id, agent = %entry.job.name, crashes, "failing a job that keeps crashing workers");
            let report = self.unrun_report(&entry, AgentError::new("crashed", message));
            self.finish_unrun(&entry_id, &entry, report).await;
            return;
        }
        let (alive, cancelled, spent) = match self.preflight(&entry).await {
            Ok(checks) => checks,
            Err(e) => {
                tracing::warn!(job = %entry.id, error = %e, "cannot check the job; it will be claimed again");
                return;
            }
        };
        if !alive || cancelled || entry.budget.is_some_and(|b| spent >= b) {
            tracing::debug!(job = %entry.id, alive, cancelled, "not running the job");
            let report = self.unrun_report(&entry, AgentError::cancelled());
            self.finish_unrun(&entry_id, &entry, report).await;
            return;
        }
        let plan = match self.plan(&entry.bundle).await {
            Ok(plan) => plan,
            Err(reason) => {
                drop(permit);
                self.refuse(&entry_id, entry, reason).await;
                return;
            }
        };
        let matches = plan
            .ensemble
            .agents
            .get(entry.job.agent)
            .is_some_and(|a| a.name == entry.job.name);
        if !matches {
            drop(permit);
            let reason = format!(
                "its ensemble here has no agent `{}` at that place",
                entry.job.name
            );
            self.refuse(&entry_id, entry, reason).await;
            return;
        }
        let cancel = CancellationToken::new();
        let stop = CancellationToken::new();
        let shared_node: Option<Arc<dyn SharedNode>> = entry.part.as_ref().map(|part| {
            Arc::new(RedisNode {
                conn: self.conn.clone(),
                keys: NodeKeys {
                    id: part.node.clone(),
                },
                producer: part.producer,
                elapsed_before: Duration::from_millis(now_ms().saturating_sub(part.started_ms)),
            }) as Arc<dyn SharedNode>
        });
        let control = JobControl {
            cancel: cancel.clone(),
            stop: stop.clone(),
            shared_node,
        };
        let updates = match self
            .engine
            .run_job_with(Arc::clone(&plan), entry.job.clone(), control)
        {
            Ok(rx) => rx,
            Err(StartError::Profile { profile, error }) => {
                drop(permit);
                let reason = format!("profile `{profile}`: {error}");
                self.refuse(&entry_id, entry, reason).await;
                return;
            }
            Err(e) => {
                let agent = &plan.ensemble.agents[entry.job.agent];
                let report = report_for(agent, AgentError::new("worker", e.to_string()));
                self.finish_unrun(&entry_id, &entry, report).await;
                return;
            }
        };
        let lost = Arc::new(AtomicBool::new(false));
        self.running.lock().expect("not poisoned").insert(
            entry_id.clone(),
            Running {
                entry: entry.clone(),
                cancel: cancel.clone(),
                stop,
                lost: Arc::clone(&lost),
            },
        );
        tracing::debug!(job = %entry.id, agent = %entry.job.name, deliveries, "running");
        self.forward(&entry_id, &entry, updates, &cancel, &lost)
            .await;
        self.running.lock().expect("not poisoned").remove(&entry_id);
        drop(permit);
    }

    /// Sends a running job's events (in batches) and finally its report.
    async fn forward(
        &self,
        entry_id: &str,
        entry: &JobEntry,
        mut updates: mpsc::UnboundedReceiver<JobUpdate>,
        cancel: &CancellationToken,
        lost: &AtomicBool,
    ) {
        let delivery = self.next_delivery();
        let mut seq = 0u64;
        let spent_key = keys::run(&entry.run, "spent");
        while let Some(first) = updates.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = updates.try_recv() {
                batch.push(more);
            }
            let mut events = Vec::new();
            let mut report = None;
            let mut paid = 0.0;
            for update in batch {
                match update {
                    JobUpdate::Event { nested, kind, .. } => {
                        if let (None, EventKind::CallFinished(call)) = (&nested, &kind) {
                            if call.source.is_paid() {
                                paid += call.cost_usd.unwrap_or(0.0);
                            }
                        }
                        events.push(JobEvent { nested, kind });
                    }
                    JobUpdate::Done { report: r, .. } => report = Some(r),
                }
            }
            if lost.load(Ordering::SeqCst) {
                // Another worker runs the job now; it reports.
                return;
            }
            if !events.is_empty() {
                seq += 1;
                let reply = Reply {
                    job: entry.id.clone(),
                    delivery: delivery.clone(),
                    seq,
                    body: ReplyBody::Events(events),
                };
                self.reply(entry_id, entry, &reply, false).await;
            }
            if let (Some(budget), true) = (entry.budget, paid > 0.0) {
                let total: Result<f64, String> = self
                    .retry(Duration::from_secs(30), |mut conn| {
                        let key = spent_key.clone();
                        async move {
                            let (total, _): (f64, i64) = redis::pipe()
                                .cmd("INCRBYFLOAT")
                                .arg(&key)
                                .arg(paid)
                                .cmd("EXPIRE")
                                .arg(&key)
                                .arg(keys::STATE_TTL_SECS)
                                .query_async(&mut conn)
                                .await?;
                            Ok(total)
                        }
                    })
                    .await;
                if total.is_ok_and(|t| t >= budget) {
                    tracing::debug!(job = %entry.id, "the run's budget is spent; cancelling");
                    cancel.cancel();
                }
            }
            if let Some(report) = report {
                if lost.load(Ordering::SeqCst) {
                    return;
                }
                seq += 1;
                let reply = Reply {
                    job: entry.id.clone(),
                    delivery: delivery.clone(),
                    seq,
                    body: ReplyBody::Done(report),
                };
                self.reply(entry_id, entry, &reply, true).await;
                return;
            }
        }
    }

    /// One heartbeat: re-claims the running jobs' entries and passes on what happened to
    /// their runs.
    async fn heartbeat(&self) -> redis::RedisResult<()> {
        let jobs: Vec<(String, JobEntry)> = self
            .running
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(id, r)| (id.clone(), r.entry.clone()))
            .collect();
        if jobs.is_empty() {
            return Ok(());
        }
        let mut invocation = scripts::HEARTBEAT.prepare_invoke();
        invocation.key(keys::JOBS);
        for (_, entry) in &jobs {
            invocation
                .key(keys::run(&entry.run, "cancel"))
                .key(keys::run(&entry.run, "stop"))
                .key(keys::coordinator(&entry.coord));
        }
        invocation.arg(keys::GROUP).arg(&self.settings.name);
        for (id, _) in &jobs {
            invocation.arg(id);
        }
        let mut conn = self.conn.clone();
        let states: Vec<(u8, u8, u8, u8)> = invocation.invoke_async(&mut conn).await?;
        let running = self.running.lock().expect("not poisoned");
        for ((id, entry), (mine, cancelled, stopped, alive)) in jobs.iter().zip(states) {
            let Some(job) = running.get(id) else { continue };
            if mine == 0 {
                tracing::warn!(job = %entry.id, "another worker took this job over; stopping it here");
                job.lost.store(true, Ordering::SeqCst);
                job.cancel.cancel();
            } else if cancelled == 1 || alive == 0 {
                job.cancel.cancel();
            } else if stopped == 1 {
                job.stop.cancel();
            }
        }
        Ok(())
    }

    /// Claims jobs whose holders stopped heart-beating. Returns the next cursor.
    async fn claim(self: &Arc<Self>, cursor: &str) -> redis::RedisResult<String> {
        let free = self.slots.available_permits();
        if free == 0 {
            return Ok(cursor.to_string());
        }
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> = scripts::CLAIM
            .key(keys::JOBS)
            .arg(keys::GROUP)
            .arg(&self.settings.name)
            .arg(self.settings.visibility.as_millis() as u64)
            .arg(cursor)
            .arg(free)
            .invoke_async(&mut conn)
            .await?;
        let mut items = reply.into_iter();
        let next: String = items
            .next()
            .and_then(|v| redis::FromRedisValue::from_redis_value(v).ok())
            .unwrap_or_else(|| "0-0".to_string());
        for item in items {
            let parsed: Result<Claimed, _> = redis::FromRedisValue::from_redis_value(item);
            let Ok((id, fields, deliveries)) = parsed else {
                continue;
            };
            let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
                // The slots filled meanwhile: the entry is ours and heart-beaten by nobody,
                // so it is claimed again (by anyone) after the visibility timeout.
                break;
            };
            tracing::warn!(entry = %id, deliveries, "claimed a job whose worker stopped heart-beating");
            let map = fields.into_iter().collect();
            tokio::spawn(Arc::clone(self).handle(id, map, deliveries, permit));
        }
        Ok(next)
    }

    /// Says this worker is there (for coordinators that warn when nobody takes jobs).
    async fn announce(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .cmd("ZADD")
            .arg(keys::WORKERS)
            .arg(now_ms())
            .arg(&self.settings.name)
            .cmd("ZREMRANGEBYSCORE")
            .arg(keys::WORKERS)
            .arg("-inf")
            .arg(now_ms().saturating_sub(24 * 3600 * 1000))
            .query_async(&mut conn)
            .await
    }
}

/// The worker's control loop: heartbeats every tick, claims every half visibility
/// timeout, announces itself every few seconds.
async fn control(inner: Arc<Inner>, shutdown: CancellationToken) {
    let visibility = inner.settings.visibility;
    let tick = (visibility / 4).clamp(Duration::from_millis(50), Duration::from_millis(500));
    let claim_every = (visibility / 2).max(tick);
    let mut last_claim = tokio::time::Instant::now();
    let mut last_announce: Option<tokio::time::Instant> = None;
    let mut cursor = "0-0".to_string();
    loop {
        tokio::time::sleep(tick).await;
        let mut result = inner.heartbeat().await;
        if result.is_ok() && !shutdown.is_cancelled() && last_claim.elapsed() >= claim_every {
            last_claim = tokio::time::Instant::now();
            match inner.claim(&cursor).await {
                Ok(next) => cursor = next,
                Err(e) => result = Err(e),
            }
        }
        if result.is_ok() && last_announce.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            last_announce = Some(tokio::time::Instant::now());
            result = inner.announce().await;
        }
        match result {
            Ok(()) => inner.saw_ok(),
            Err(e) if e.code() == Some("NOGROUP") => {
                let _ = inner.ensure_group().await;
            }
            Err(e) if is_connection_error(&e) => inner.saw_error(&e),
            Err(e) => tracing::warn!(error = %e, "worker control step failed"),
        }
    }
}
