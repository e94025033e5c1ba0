//! The coordinator side: `RedisExecutor`, the engine's executor when jobs run on workers.
//!
//! Protocol, per job: the ensemble's bundle is stored once under its content hash
//! (`keys::bundle`); the job is added to `orc:jobs` (`JobEntry`, naming this coordinator, its
//! run and the bundle); replies come back on this coordinator's reply stream, read by one
//! reader task and routed by job id to the task waiting for that job, which forwards events
//! to the dispatcher and ends with the job's report. The first report of a job wins: the
//! route is removed as soon as it arrives, so a second report (a job run twice because its
//! worker looked dead) is dropped, and each delivery's messages are numbered so one written
//! twice (a retried write) counts once.
//!
//! Nested ensembles and `dedup` run here (`LocalExecutor`): they make no calls, and a
//! nested ensemble's own agents come back through this executor as jobs of their own file.
//! A `generate` node with several producers is spread over one job per producer
//! (`spread.rs`).
//!
//! Redis going away: every command is retried with backoff; a beacon task notices when
//! Redis has been unreachable for `timeout` and every job waiting on it fails with a clear
//! error (the run ends `failed`, completed agents are in the store, `orc resume` goes on). A
//! Redis that came back empty (restarted without persistence) is noticed by the beacon
//! (`SET ... GET` finds it missing) and the outstanding jobs are queued again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::streams::StreamReadReply;
use tokio::sync::{mpsc, watch};

use super::bundle::Bundle;
use super::conn::{Backoff, RedisError, RedisUrl, is_connection_error};
use super::keys;
use super::protocol::{ENTRY_FIELD, JobEntry, JobEvent, Part, Reply, ReplyBody, now_ms};
use crate::config::{Agent, NodeKind};
use crate::exec::{
    AgentError, AgentStatus, AgentTx, Executor, Job, LocalExecutor, Report, RunCtx, Work,
};
use crate::plan::Plan;

/// How the coordinator uses Redis.
#[derive(Clone)]
pub struct RedisSettings {
    pub url: RedisUrl,
    /// How long Redis may be unreachable before outstanding jobs fail; also how long a job
    /// may wait for a worker that can serve its profiles.
    pub timeout: Duration,
    /// `--profile-map` renames, sent with every ensemble so workers apply them too.
    pub profile_map: Vec<(String, String)>,
}

/// Runs jobs on `orc worker`s through Redis Streams.
pub struct RedisExecutor {
    inner: Arc<Coordinator>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Health {
    Up,
    Down {
        since: Instant,
    },
    /// Unreachable for longer than the timeout: jobs waiting on Redis fail.
    Gone,
}

pub(super) struct Coordinator {
    pub id: String,
    pub url: RedisUrl,
    pub conn: ConnectionManager,
    pub timeout: Duration,
    profile_map: Vec<(String, String)>,
    replies: String,
    beacon: String,
    router: Mutex<HashMap<String, mpsc::UnboundedSender<Reply>>>,
    runs: Mutex<Vec<Arc<RunEntry>>>,
    /// Bundles stored in Redis (by hash), with their JSON to store them again after Redis
    /// lost its data.
    bundles: Mutex<HashMap<String, String>>,
    published: Mutex<HashSet<String>>,
    /// Entries of jobs without a report yet, to queue again after Redis lost its data.
    outstanding: Mutex<HashMap<String, String>>,
    health: watch::Sender<Health>,
    next: AtomicU64,
    warned_no_workers: AtomicBool,
}

/// What the jobs of one run share.
pub(super) struct RunEntry {
    ctx: Weak<RunCtx>,
    /// The run's key in Redis (its first job's run id).
    pub key: String,
    /// The run's `budget.max_cost_usd`, for the workers.
    pub budget: Option<f64>,
    cancel_sent: AtomicBool,
    stop_sent: AtomicBool,
}

impl RedisExecutor {
    /// Connects, and starts the reader of this coordinator's replies and its beacon.
    pub async fn connect(settings: RedisSettings) -> Result<RedisExecutor, RedisError> {
        let conn = settings.url.manager(Duration::from_secs(5)).await?;
        let blocking = settings.url.blocking_manager().await?;
        let id = coordinator_id();
        let (health, _) = watch::channel(Health::Up);
        let inner = Arc::new(Coordinator {
            replies: keys::replies(&id),
            beacon: keys::coordinator(&id),
            id,
            url: settings.url,
            conn,
            timeout: settings.timeout,
            profile_map: settings.profile_map,
            router: Mutex::new(HashMap::new()),
            runs: Mutex::new(Vec::new()),
            bundles: Mutex::new(HashMap::new()),
            published: Mutex::new(HashSet::new()),
            outstanding: Mutex::new(HashMap::new()),
            health,
            next: AtomicU64::new(1),
            warned_no_workers: AtomicBool::new(false),
        });
        // The beacon must exist before any job names this coordinator.
        let mut conn = inner.conn.clone();
        let _: () = redis::cmd("SET")
            .arg(&inner.beacon)
            .arg(1)
            .arg("EX")
            .arg(30)
            .query_async(&mut conn)
            .await
            .map_err(|e| RedisError::Unreachable {
                url: inner.url.to_string(),
                message: e.to_string(),
            })?;
        tokio::spawn(read_replies(Arc::downgrade(&inner), blocking));
        tokio::spawn(beacon(Arc::downgrade(&inner)));
        Ok(RedisExecutor { inner })
    }

    /// Removes this coordinator's beacon and reply stream (at exit).
    pub async fn close(&self) {
        let mut conn = self.inner.conn.clone();
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(&self.inner.beacon)
            .arg(&self.inner.replies)
            .query_async(&mut conn)
            .await;
    }
}

/// Unique per coordinator process: host, process id and start time.
fn coordinator_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("{host}-{}-{:x}", std::process::id(), now_ms())
}

/// Work that runs in the coordinator: nested, looped and dispatched ensembles (their agents
/// come back as jobs) and `dedup` (no call).
fn runs_here(work: &Work) -> bool {
    match work {
        Work::Ensemble(_) | Work::Dispatch { .. } | Work::Lists(_) => true,
        Work::FanOut(works) => works.iter().any(runs_here),
        _ => false,
    }
}

impl Executor for RedisExecutor {
    fn spawn(
        &self,
        run: Arc<RunCtx>,
        plan: Arc<Plan>,
        job: Job,
        tx: AgentTx,
        tasks: &mut tokio::task::JoinSet<()>,
    ) {
        // An agent with calls on record from before a resume runs here, where those
        // answers are: a worker would pay for them again.
        let answered_here = run
            .resume
            .as_ref()
            .is_some_and(|r| r.holds_answers_of(&job.name));
        if runs_here(&job.work) || answered_here {
            LocalExecutor.spawn(run, plan, job, tx, tasks);
            return;
        }
        let coord = Arc::clone(&self.inner);
        let entry = coord.run_entry(&run, &job, &plan);
        if super::spread::is_spread(&plan, &job) {
            tasks.spawn(super::spread::run(coord, run, entry, plan, job, tx));
        } else {
            tasks.spawn(async move {
                let report = coord
                    .dispatch(&run, &entry, &plan, job, None, |e| forward(&tx, e))
                    .await;
                tx.done(report);
            });
        }
    }

    fn calls_providers_here(&self) -> bool {
        false
    }
}

/// Passes a worker's event on to the dispatcher.
pub(super) fn forward(tx: &AgentTx, event: JobEvent) {
    match event.nested {
        Some(path) => tx.send_nested(path, event.kind),
        None => tx.send(event.kind),
    }
}

/// A report for an agent that did not run, named as the agent would be.
pub(super) fn report_for(agent: &Agent, error: AgentError) -> Report {
    let (profile, model, provider) = match &agent.node {
        NodeKind::Script(s) => (
            "script".to_string(),
            s.argv.first().cloned().unwrap_or_default(),
            "script".to_string(),
        ),
        _ => (
            agent.profile.name.clone(),
            agent.profile.model.clone(),
            agent.profile.provider.to_string(),
        ),
    };
    Report::new(AgentStatus::Failed, &profile, &model, &provider).failed(error)
}

/// Removes a job's route (and its outstanding entry) however its task ends.
struct Route<'a> {
    coord: &'a Coordinator,
    id: String,
}

impl Drop for Route<'_> {
    fn drop(&mut self) {
        self.coord
            .router
            .lock()
            .expect("not poisoned")
            .remove(&self.id);
        self.coord
            .outstanding
            .lock()
            .expect("not poisoned")
            .remove(&self.id);
    }
}

impl Coordinator {
    pub(super) fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The run a job belongs to: nested ensembles share their root run's context, so the
    /// first job seen for a context names the run.
    fn run_entry(&self, run: &Arc<RunCtx>, job: &Job, plan: &Plan) -> Arc<RunEntry> {
        let mut runs = self.runs.lock().expect("not poisoned");
        runs.retain(|r| r.ctx.strong_count() > 0);
        if let Some(entry) = runs
            .iter()
            .find(|r| std::ptr::eq(r.ctx.as_ptr(), Arc::as_ptr(run)))
        {
            return Arc::clone(entry);
        }
        let entry = Arc::new(RunEntry {
            ctx: Arc::downgrade(run),
            key: format!("{}:{}", job.run_id, self.next_id()),
            budget: plan.ensemble.max_cost_usd,
            cancel_sent: AtomicBool::new(false),
            stop_sent: AtomicBool::new(false),
        });
        runs.push(Arc::clone(&entry));
        entry
    }

    fn saw_ok(&self) {
        self.health.send_if_modified(|h| {
            let changed = *h != Health::Up;
            if matches!(h, Health::Gone | Health::Down { .. }) {
                tracing::warn!(redis = %self.url, "reconnected to Redis");
            }
            *h = Health::Up;
            changed
        });
    }

    fn saw_error(&self, error: &redis::RedisError) {
        self.health.send_if_modified(|h| match h {
            Health::Up => {
                tracing::warn!(redis = %self.url, error = %error, "Redis unreachable; retrying");
                *h = Health::Down {
                    since: Instant::now(),
                };
                true
            }
            _ => false,
        });
    }

    fn is_gone(&self) -> bool {
        *self.health.borrow() == Health::Gone
    }

    fn gone_message(&self) -> String {
        format!(
            "Redis at `{}` was unreachable for {}s (--redis-timeout); run `orc resume` once it is back",
            self.url,
            self.timeout.as_secs_f64()
        )
    }

    /// Runs a command until it succeeds, retrying while Redis is unreachable (until the
    /// coordinator's timeout has passed).
    pub(super) async fn retry<T, F, Fut>(&self, mut step: F) -> Result<T, String>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut backoff = Backoff::new();
        loop {
            match step(self.conn.clone()).await {
                Ok(v) => {
                    self.saw_ok();
                    return Ok(v);
                }
                Err(e) if is_connection_error(&e) => {
                    self.saw_error(&e);
                    if self.is_gone() {
                        return Err(self.gone_message());
                    }
                    backoff.wait().await;
                }
                Err(e) => return Err(format!("Redis at `{}`: {e}", self.url)),
            }
        }
    }

    /// Stores a plan's bundle (once) and returns its hash.
    async fn publish(&self, plan: &Plan) -> Result<String, String> {
        let bundle = Bundle::of(plan, &self.profile_map);
        let hash = bundle.hash();
        if self.published.lock().expect("not poisoned").contains(&hash) {
            return Ok(hash);
        }
        let json = serde_json::to_string(&bundle).expect("bundles serialize");
        let key = keys::bundle(&hash);
        self.retry(|mut conn| {
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
        .await?;
        self.bundles
            .lock()
            .expect("not poisoned")
            .insert(hash.clone(), json);
        self.published
            .lock()
            .expect("not poisoned")
            .insert(hash.clone());
        Ok(hash)
    }

    async fn enqueue(&self, field: &str) -> Result<(), String> {
        self.retry(|mut conn| {
            let field = field.to_string();
            async move {
                redis::cmd("XADD")
                    .arg(keys::JOBS)
                    .arg("*")
                    .arg(ENTRY_FIELD)
                    .arg(&field)
                    .query_async::<String>(&mut conn)
                    .await
            }
        })
        .await
        .map(|_| ())
    }

    /// Sets a run flag (`cancel`, `stop`) for the workers.
    async fn flag(&self, run: &RunEntry, what: &str) {
        let key = keys::run(&run.key, what);
        let set = self
            .retry(|mut conn| {
                let key = key.clone();
                async move {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(1)
                        .arg("EX")
                        .arg(keys::STATE_TTL_SECS)
                        .query_async::<()>(&mut conn)
                        .await
                }
            })
            .await;
        if let Err(e) = set {
            tracing::warn!(error = %e, flag = what, "cannot tell the workers");
        }
    }

    /// Queues one job and waits for its report, passing its events to `on_event`. Ends
    /// with a `cancelled` report when the run is cancelled, and a failed one when Redis is
    /// gone for longer than the timeout.
    pub(super) async fn dispatch(
        &self,
        run: &RunCtx,
        entry: &RunEntry,
        plan: &Plan,
        job: Job,
        part: Option<Part>,
        mut on_event: impl FnMut(JobEvent),
    ) -> Report {
        let agent = &plan.ensemble.agents[job.agent];
        let cancelled = || {
            let mut r = report_for(agent, AgentError::cancelled());
            r.status = AgentStatus::Cancelled;
            r
        };
        if run.cancel.is_cancelled() {
            return cancelled();
        }
        let hash = match self.publish(plan).await {
            Ok(h) => h,
            Err(e) => return report_for(agent, AgentError::new("redis", e)),
        };
        let id = format!("{}:{}", self.id, self.next_id());
        let (reply_tx, mut replies) = mpsc::unbounded_channel();
        self.router
            .lock()
            .expect("not poisoned")
            .insert(id.clone(), reply_tx);
        let _route = Route {
            coord: self,
            id: id.clone(),
        };
        let field = JobEntry {
            id: id.clone(),
            coord: self.id.clone(),
            run: entry.key.clone(),
            bundle: hash,
            job,
            part,
            budget: entry.budget,
            queued_ms: now_ms(),
            serve_within_ms: self.timeout.as_millis() as u64,
            refused: Vec::new(),
        }
        .to_field();
        self.outstanding
            .lock()
            .expect("not poisoned")
            .insert(id.clone(), field.clone());
        if let Err(e) = self.enqueue(&field).await {
            return report_for(agent, AgentError::new("redis", e));
        }
        let mut health = self.health.subscribe();
        // The last message number seen from each delivery of the job.
        let mut seen: HashMap<String, u64> = HashMap::new();
        let mut stop_seen = false;
        loop {
            tokio::select! {
                biased;
                reply = replies.recv() => {
                    let Some(reply) = reply else {
                        return report_for(agent, AgentError::new("redis", "the reply stream closed"));
                    };
                    let last = seen.entry(reply.delivery.clone()).or_insert(0);
                    if reply.seq <= *last {
                        continue;
                    }
                    *last = reply.seq;
                    match reply.body {
                        ReplyBody::Events(events) => events.into_iter().for_each(&mut on_event),
                        ReplyBody::Done(report) => return *report,
                    }
                }
                () = run.cancel.cancelled() => {
                    if !entry.cancel_sent.swap(true, Ordering::SeqCst) {
                        self.flag(entry, "cancel").await;
                    }
                    return cancelled();
                }
                () = run.stop.cancelled(), if !stop_seen => {
                    stop_seen = true;
                    if !entry.stop_sent.swap(true, Ordering::SeqCst) {
                        self.flag(entry, "stop").await;
                    }
                }
                gone = async { health.wait_for(|h| *h == Health::Gone).await.is_ok() } => {
                    if gone {
                        return report_for(agent, AgentError::new("redis", self.gone_message()));
                    }
                }
            }
        }
    }

    /// Passes a reply to the job waiting for it; a report ends the route at once, so any
    /// later report of the same job is dropped.
    fn route(&self, reply: Reply) {
        let mut router = self.router.lock().expect("not poisoned");
        let done = matches!(reply.body, ReplyBody::Done(_));
        let Some(tx) = router.get(&reply.job) else {
            tracing::debug!(job = %reply.job, "a reply for a job that is over");
            return;
        };
        let _ = tx.send(reply.clone());
        if done {
            router.remove(&reply.job);
        }
    }

    /// After Redis lost its data: store the bundles and queue the outstanding jobs again.
    async fn recover(&self) {
        tracing::warn!(redis = %self.url, "Redis lost its data (restarted without persistence?); queueing outstanding jobs again");
        self.published.lock().expect("not poisoned").clear();
        let bundles: Vec<(String, String)> = self
            .bundles
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(h, j)| (h.clone(), j.clone()))
            .collect();
        for (hash, json) in bundles {
            let key = keys::bundle(&hash);
            let stored = self
                .retry(|mut conn| {
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
                .await;
            if stored.is_ok() {
                self.published.lock().expect("not poisoned").insert(hash);
            }
        }
        let jobs: Vec<String> = self
            .outstanding
            .lock()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect();
        for field in jobs {
            if let Err(e) = self.enqueue(&field).await {
                tracing::warn!(error = %e, "cannot queue a job again");
            }
        }
    }
}

/// Reads this coordinator's reply stream and routes every reply; trims what it read.
async fn read_replies(coord: Weak<Coordinator>, mut blocking: ConnectionManager) {
    let mut last = "0-0".to_string();
    let mut backoff = Backoff::new();
    loop {
        let Some(c) = coord.upgrade() else { return };
        let key = c.replies.clone();
        drop(c);
        let read: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(super::conn::BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&key)
            .arg(&last)
            .query_async(&mut blocking)
            .await;
        let Some(c) = coord.upgrade() else { return };
        match read {
            Ok(reply) => {
                c.saw_ok();
                backoff.reset();
                let Some(reply) = reply else { continue };
                for stream in reply.keys {
                    for entry in stream.ids {
                        match Reply::from_fields(&entry.map) {
                            Ok(r) => c.route(r),
                            Err(e) => tracing::warn!(error = %e, "an unreadable reply"),
                        }
                        last = entry.id;
                    }
                }
                // What was read is no longer needed in Redis.
                let mut conn = c.conn.clone();
                let _: Result<i64, _> = redis::cmd("XTRIM")
                    .arg(&key)
                    .arg("MINID")
                    .arg(&last)
                    .query_async(&mut conn)
                    .await;
            }
            Err(e) => {
                c.saw_error(&e);
                drop(c);
                backoff.wait().await;
            }
        }
    }
}

/// Every second: refresh the beacon (noticing a Redis that lost its data), keep the reply
/// stream from expiring, declare Redis gone after the timeout, and warn once when no
/// worker is there to take jobs.
async fn beacon(coord: Weak<Coordinator>) {
    let mut ticks = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        ticks += 1;
        let Some(c) = coord.upgrade() else { return };
        let mut conn = c.conn.clone();
        let refreshed: redis::RedisResult<(Option<String>, i64)> = redis::pipe()
            .cmd("SET")
            .arg(&c.beacon)
            .arg(1)
            .arg("EX")
            .arg(30)
            .arg("GET")
            .cmd("EXPIRE")
            .arg(&c.replies)
            .arg(keys::STATE_TTL_SECS)
            .query_async(&mut conn)
            .await;
        match refreshed {
            Ok((previous, _)) => {
                c.saw_ok();
                if previous.is_none() {
                    c.recover().await;
                }
            }
            Err(e) => {
                c.saw_error(&e);
                let health = *c.health.borrow();
                let expired =
                    matches!(health, Health::Down { since } if since.elapsed() >= c.timeout);
                if expired {
                    tracing::error!(redis = %c.url, "Redis unreachable for too long; failing outstanding jobs");
                    c.health.send_replace(Health::Gone);
                }
            }
        }
        if ticks.is_multiple_of(5)
            && !c.outstanding.lock().expect("not poisoned").is_empty()
            && !c.warned_no_workers.load(Ordering::Relaxed)
        {
            let found: redis::RedisResult<u64> = redis::cmd("ZCOUNT")
                .arg(keys::WORKERS)
                .arg(now_ms().saturating_sub(30_000))
                .arg("+inf")
                .query_async(&mut conn)
                .await;
            if let Ok(workers) = found {
                if workers == 0 {
                    c.warned_no_workers.store(true, Ordering::Relaxed);
                    tracing::warn!(redis = %c.url, "no `orc worker` is connected; jobs wait until one starts");
                }
            }
        }
    }
}
