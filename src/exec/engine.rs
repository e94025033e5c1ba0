//! `Engine`: built once per process, it owns what runs share (provider clients with their
//! limits and circuit breakers, the global concurrency cap, the run store, in-flight calls for
//! coalescing, open output files) and starts runs. `engine.prepare(plan, input, options)`
//! then `.start()` is the one way every front end runs an ensemble (`invoke`, `test`,
//! `explore`, `serve`, workers); several runs share one engine at once. A `RunHandle` gives
//! the run id, event subscriptions, cancel and stop, and the outcome.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::call::{InFlight, ResumeAnswers};
use super::dispatcher::{Dispatch, Output, dispatch};
use super::event::{EventKind, Subscription};
use super::outcome::{AgentOutcome, RunOutcome, RunStatus};
use super::record::{Recorder, RunRecord};
use super::registry::{Clients, Mode, ProviderRegistry};
use super::run::{AgentTx, Executor, JobUpdate, RunCtx};
use crate::nodes::output::OutputFiles;
use crate::plan::Plan;
use crate::providers::ProviderError;

/// How an engine is set up.
pub struct EngineConfig {
    /// Most provider calls in flight at once, across every run of the engine.
    pub max_concurrency: usize,
    pub mode: Mode,
    /// The run store; `None` runs without one (`--no-store`).
    pub store: Option<Arc<dyn Recorder>>,
    /// Ignore `cache:` (`--no-cache`): every request is sent.
    pub no_cache: bool,
    /// Events a live subscriber may fall behind by before it gets `lagged`.
    pub live_capacity: usize,
    /// Where jobs run (`None`: in this process).
    pub executor: Option<Arc<dyn Executor>>,
    /// Per-profile limits shared with other processes (`None`: this process alone).
    pub limits: Option<Arc<dyn crate::providers::LimitBackend>>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_concurrency: 10_000,
            mode: Mode::Live,
            store: None,
            no_cache: false,
            live_capacity: 16_384,
            executor: None,
            limits: None,
        }
    }
}

pub(crate) struct EngineInner {
    pub slots: Arc<Semaphore>,
    /// Most agents one run (or nested run) has started and not finished: as many as may
    /// call at once, but never fewer than `MIN_JOBS` (an agent waiting out a retry's
    /// backoff holds no call slot, and others may call meanwhile), so the rest of a huge
    /// run waits as numbers in a queue, not as spawned tasks.
    pub max_jobs: usize,
    pub executor: Arc<dyn Executor>,
    clients: Clients,
    pub store: Option<Arc<dyn Recorder>>,
    pub in_flight: InFlight,
    pub files: OutputFiles,
    no_cache: bool,
    live_capacity: usize,
    runs: Mutex<HashMap<String, RunHandle>>,
}

impl EngineInner {
    /// The clients of a plan's profiles, for an ensemble a `dispatch` loads while a run goes on.
    pub(crate) fn providers_for(
        &self,
        plan: &Plan,
    ) -> Result<ProviderRegistry, (String, ProviderError)> {
        self.clients.for_plan(plan)
    }

    pub(crate) fn forget_in_flight(&self, hash: &str) {
        self.in_flight
            .calls
            .lock()
            .expect("not poisoned")
            .remove(hash);
    }
}

/// Starts and tracks runs. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

/// What a run needs besides the plan and its input.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Given by the caller (each line of `--each-line`, a resumed run), else generated.
    pub run_id: Option<String>,
    pub seed: u64,
    /// Wall-clock limit of the whole run.
    pub timeout: Option<Duration>,
    /// Forward streamed text as `agent_delta` events.
    pub stream: bool,
    /// The ensemble file, for the store (and `orc resume`).
    pub source: Option<RunSource>,
    /// The options as the user gave them, kept in the store.
    pub options: serde_json::Value,
    /// Continue an interrupted run.
    pub resume: Option<Arc<ResumeData>>,
}

/// The ensemble file a run came from.
#[derive(Clone, Debug)]
pub struct RunSource {
    pub path: Option<PathBuf>,
    pub text: String,
}

/// What a resumed run starts from, read back from the store.
#[derive(Debug, Default)]
pub struct ResumeData {
    /// Agents that succeeded, with their outcomes.
    pub succeeded: Vec<AgentOutcome>,
    /// Calls that completed, answered again without a call.
    pub answers: ResumeAnswers,
    /// What each interrupted `generate` node had found, by agent name.
    pub generate: HashMap<String, crate::nodes::generate::Resume>,
    /// The last sequence number stored.
    pub last_seq: u64,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("profile `{profile}`: {error}")]
    Profile {
        profile: String,
        error: ProviderError,
    },
    #[error("a run with id `{0}` is already running")]
    AlreadyRunning(String),
    #[error("the plan has no agent `{0}` at the job's index")]
    UnknownAgent(String),
}

/// How a job run outside a dispatcher (`Engine::run_job_with`) is controlled.
pub struct JobControl {
    /// Stops everything now.
    pub cancel: CancellationToken,
    /// A graceful stop: a `generate` node finishes with what it found.
    pub stop: CancellationToken,
    /// One part of a `generate` node spread over several jobs: the state the parts share.
    pub shared_node: Option<Arc<dyn crate::nodes::shared::SharedNode>>,
}

/// A run set up but not started: subscribe first, so no event is missed.
pub struct PendingRun {
    engine: Engine,
    handle: RunHandle,
    dispatch: Dispatch,
    record: Option<RunRecord>,
}

/// A started run.
#[derive(Clone)]
pub struct RunHandle {
    id: Arc<str>,
    ensemble: Arc<str>,
    cancel: CancellationToken,
    stop: CancellationToken,
    reason: Arc<Mutex<Option<RunStatus>>>,
    live: broadcast::Sender<Arc<super::event::Event>>,
    done: watch::Receiver<Option<Arc<RunOutcome>>>,
    done_tx: Arc<watch::Sender<Option<Arc<RunOutcome>>>>,
}

/// The fewest agents a run may have started at once, whatever `--max-concurrency`.
const MIN_JOBS: usize = 1024;

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new run id: `run-<ms since epoch, hex>-<4 hex>`, unique across processes sharing a
/// store (the process id and a per-process counter) and sortable by start time.
pub fn new_run_id() -> String {
    let ms = super::event::Timestamp::now().0;
    let n = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt = (u64::from(std::process::id()) * 31 + n * 0x9e37) & 0xffff;
    format!("run-{ms:x}-{salt:04x}")
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            inner: Arc::new(EngineInner {
                slots: Arc::new(Semaphore::new(config.max_concurrency.max(1))),
                max_jobs: config.max_concurrency.max(MIN_JOBS),
                executor: config
                    .executor
                    .unwrap_or_else(|| Arc::new(super::run::LocalExecutor)),
                clients: Clients::new(config.mode, config.limits),
                store: config.store,
                in_flight: InFlight::default(),
                files: OutputFiles::default(),
                no_cache: config.no_cache,
                live_capacity: config.live_capacity.max(16),
                runs: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn store(&self) -> Option<&Arc<dyn Recorder>> {
        self.inner.store.as_ref()
    }

    pub fn mode(&self) -> &Mode {
        self.inner.clients.mode()
    }

    /// The clients of a plan's profiles. Fails when a profile cannot work (a missing key),
    /// before anything runs.
    pub fn providers_for(&self, plan: &Plan) -> Result<ProviderRegistry, StartError> {
        if !self.inner.executor.calls_providers_here() {
            return Ok(ProviderRegistry::default());
        }
        self.inner
            .clients
            .for_plan(plan)
            .map_err(|(profile, error)| StartError::Profile { profile, error })
    }

    /// Sets a run up. Nothing happens until `start`.
    pub fn prepare(
        &self,
        plan: Arc<Plan>,
        input: String,
        options: RunOptions,
    ) -> Result<PendingRun, StartError> {
        let providers = self.providers_for(&plan)?;
        self.prepare_with(plan, input, options, providers)
    }

    /// As `prepare`, with the providers given (tests use in-memory ones).
    pub fn prepare_with(
        &self,
        plan: Arc<Plan>,
        input: String,
        options: RunOptions,
        providers: ProviderRegistry,
    ) -> Result<PendingRun, StartError> {
        let run_id = options.run_id.clone().unwrap_or_else(new_run_id);
        if self.running(&run_id).is_some() {
            return Err(StartError::AlreadyRunning(run_id));
        }
        let cancel = CancellationToken::new();
        let stop = CancellationToken::new();
        let resume = options.resume.clone();
        let ctx = Arc::new(RunCtx {
            engine: Arc::clone(&self.inner),
            providers,
            stream: options.stream,
            cancel: cancel.clone(),
            stop: stop.clone(),
            no_cache: self.inner.no_cache,
            resume: resume.as_ref().map(|r| Arc::new(r.answers.drain())),
            shared_node: None,
        });
        let mut dispatch = Dispatch::new(
            ctx,
            Arc::clone(&plan),
            input.clone(),
            run_id.clone(),
            options.seed,
        );
        dispatch.timeout = options.timeout;
        if let Some(resume) = &resume {
            dispatch.restored = resume.succeeded.clone();
            dispatch.generate_resume = resume.generate.clone();
            dispatch.first_seq = resume.last_seq;
            dispatch.resumed = true;
        }
        let (live, _) = broadcast::channel(self.inner.live_capacity);
        let (done_tx, done) = watch::channel(None);
        let handle = RunHandle {
            id: Arc::from(run_id.as_str()),
            ensemble: Arc::from(plan.ensemble.name.as_str()),
            cancel,
            stop,
            reason: Arc::new(Mutex::new(None)),
            live,
            done,
            done_tx: Arc::new(done_tx),
        };
        let record = self.inner.store.as_ref().map(|_| RunRecord {
            id: run_id,
            ensemble: plan.ensemble.name.clone(),
            path: options.source.as_ref().and_then(|s| s.path.clone()),
            source: options.source.as_ref().map(|s| s.text.clone()),
            input,
            options: options.options.clone(),
            resumed: resume.is_some(),
        });
        Ok(PendingRun {
            engine: self.clone(),
            handle,
            dispatch,
            record,
        })
    }

    /// A run of this engine that has not finished.
    pub fn running(&self, id: &str) -> Option<RunHandle> {
        self.inner
            .runs
            .lock()
            .expect("not poisoned")
            .get(id)
            .cloned()
    }

    /// Every run of this engine that has not finished.
    pub fn active_runs(&self) -> Vec<RunHandle> {
        self.inner
            .runs
            .lock()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Cancels every running run (shutdown) with this status.
    pub fn cancel_all(&self, status: RunStatus) {
        for run in self.active_runs() {
            run.cancel(status);
        }
    }

    /// Runs one job outside any run's dispatcher (a worker taking jobs from elsewhere): the
    /// job's events and then its report arrive on the returned channel. `cancel` stops it.
    pub fn run_job(
        &self,
        plan: Arc<Plan>,
        job: super::job::Job,
        cancel: CancellationToken,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<JobUpdate>, StartError> {
        self.run_job_with(
            plan,
            job,
            JobControl {
                cancel,
                stop: CancellationToken::new(),
                shared_node: None,
            },
        )
    }

    /// As `run_job`, with a graceful stop and, for one part of a `generate` node spread
    /// over several jobs, the node-wide state the parts share. Builds clients only for the
    /// profiles this job's agent can call: a worker serves the jobs whose keys it has.
    pub fn run_job_with(
        &self,
        plan: Arc<Plan>,
        job: super::job::Job,
        control: JobControl,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<JobUpdate>, StartError> {
        let agent = plan
            .ensemble
            .agents
            .get(job.agent)
            .ok_or_else(|| StartError::UnknownAgent(job.name.clone()))?;
        let providers = self
            .inner
            .clients
            .for_agent(agent)
            .map_err(|(profile, error)| StartError::Profile { profile, error })?;
        let run = Arc::new(RunCtx {
            engine: Arc::clone(&self.inner),
            providers,
            stream: job.stream,
            cancel: control.cancel,
            stop: control.stop,
            no_cache: self.inner.no_cache,
            resume: None,
            shared_node: control.shared_node,
        });
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let agent = AgentTx {
            agent: job.agent,
            tx,
        };
        tokio::spawn(super::local::execute(run, plan, job, agent));
        Ok(rx)
    }

    /// Waits until everything recorded so far is in the store.
    pub async fn flush(&self) {
        if let Some(store) = &self.inner.store {
            store.flush().await;
        }
    }
}

impl PendingRun {
    pub fn id(&self) -> &str {
        &self.handle.id
    }

    /// A live subscription that sees every event from the first.
    pub fn subscribe(&self) -> Subscription {
        self.handle.subscribe()
    }

    /// Starts the run on the current tokio runtime.
    pub fn start(self) -> RunHandle {
        let PendingRun {
            engine,
            handle,
            dispatch: d,
            record,
        } = self;
        let store = engine.inner.store.clone();
        if let (Some(store), Some(record)) = (&store, record) {
            store.run_started(record);
        }
        engine
            .inner
            .runs
            .lock()
            .expect("not poisoned")
            .insert(handle.id.to_string(), handle.clone());
        let out = Output::Root {
            live: handle.live.clone(),
            store: store.clone(),
            reason: Arc::clone(&handle.reason),
        };
        let h = handle.clone();
        tokio::spawn(async move {
            let outcome = dispatch(d, out).await;
            // The outcome is reported once it is recorded: a caller that exits right after
            // loses nothing.
            if let Some(store) = &store {
                store.flush().await;
            }
            engine
                .inner
                .runs
                .lock()
                .expect("not poisoned")
                .remove(&*h.id);
            let _ = h.done_tx.send(Some(outcome));
        });
        handle
    }
}

impl RunHandle {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn ensemble(&self) -> &str {
        &self.ensemble
    }

    /// A live subscription from now on (earlier events are in the store).
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(self.live.subscribe(), Arc::clone(&self.id))
    }

    /// Stops new calls, cancels running ones and keeps what completed; the run ends with
    /// `status` (`interrupted` for signals and shutdown, `cancelled` on request).
    pub fn cancel(&self, status: RunStatus) {
        self.reason
            .lock()
            .expect("not poisoned")
            .get_or_insert(status);
        self.cancel.cancel();
    }

    /// A graceful stop: `generate` nodes finish with what they found; other agents go on.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    pub fn is_finished(&self) -> bool {
        self.done.borrow().is_some()
    }

    /// The outcome, once the run is over and recorded.
    pub async fn wait(&self) -> Arc<RunOutcome> {
        let mut done = self.done.clone();
        let outcome = done
            .wait_for(Option::is_some)
            .await
            .expect("the run task sends its outcome before it ends");
        Arc::clone(outcome.as_ref().expect("waited for an outcome"))
    }
}

impl EventKind {
    /// Whether this is the last event of a run.
    pub fn is_run_finished(&self) -> bool {
        matches!(self, EventKind::RunFinished { .. })
    }
}
