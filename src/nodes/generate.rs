//! `generate`: several producer loops call providers for batches of new, concrete items of a
//! topic, concurrently. Every candidate is normalised and checked against one run-wide
//! uniqueness tracker; a bounded sample of accepted items is fed back into later prompts.
//! Stops at the first stop condition reached. Returns the items with provenance and honest
//! metrics: UAM over wall-clock time since the node started, and every call's tokens and cost,
//! zero-yield and failed calls included.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::normalize::normalize;
use super::optimizer::{Decision, Optimizer};
use super::output::{OutputFile, OutputFiles};
use super::parse::parse_items;
use super::shared::{CallDone, NodeTotals, SharedNode};
use super::tracker::{Tracker, TrackerStats};
use crate::config::Partition;
use crate::config::{GenerateSettings, Profile};
use crate::providers::{Completion, CompletionRequest, GenerationHint, ProviderError, Usage};

/// Facets of `partition: attribute_type`.
pub const ATTRIBUTE_TYPES: [&str; 6] = [
    "physical",
    "functional",
    "contextual",
    "sensory",
    "economic",
    "social",
];
/// Feedback is also bounded by size: about this many characters of accepted items a prompt.
const FEEDBACK_CHARS: usize = 4000;
/// Per-call records kept in memory (the most recent); every call is also in the event
/// stream and the run store, so a long run's memory does not grow with its calls.
const KEPT_RECORDS: usize = 1000;

/// How the node makes its calls: the engine's call policy (global slots, timeouts, events,
/// cache and resume answers). `None` when the run was cancelled meanwhile.
pub trait CallPolicy: Sync {
    fn call(
        &self,
        profile: &Arc<Profile>,
        request: CompletionRequest,
        call: u64,
        producer: Option<u32>,
    ) -> impl Future<Output = Option<CallAnswer>> + Send;

    /// Fires when the run is cancelled.
    fn cancelled(&self) -> &CancellationToken;
}

/// How one call went, as the node counts it.
pub struct CallAnswer {
    pub result: Result<Completion, ProviderError>,
    pub latency: Duration,
    /// Tokens and dollars paid for it (zero when it was answered without a call).
    pub paid: Usage,
    pub cost: Option<f64>,
    /// Answered without a call.
    pub saved: bool,
}

/// One accepted item and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub text: String,
    pub producer: u32,
    pub profile: String,
    /// Number of the call (node-wide, 1-based) that found it.
    pub call: u64,
    /// Milliseconds since the node started.
    pub at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtopic: Option<String>,
}

/// What an interrupted node had found, to go on from (`orc resume`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Resume {
    pub items: Vec<Item>,
    /// Item calls each producer had made (1-based producer numbers).
    pub producer_calls: BTreeMap<u32, u64>,
    /// Every call made, the partition call included.
    pub calls: u64,
    pub usage: Usage,
    pub cost_usd: Option<f64>,
}

/// Per-profile and per-producer tallies.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tally {
    pub calls: u64,
    pub failed_calls: u64,
    pub candidates: u64,
    pub new: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// `null` when the price is unknown.
    pub cost_usd: Option<f64>,
    pub mean_latency_ms: f64,
    #[serde(skip)]
    latency_total_ms: f64,
}

impl Tally {
    /// Adds another part's tally of the same profile or producer (a spread node).
    pub fn merge(&mut self, other: &Tally) {
        let latency =
            self.mean_latency_ms * self.calls as f64 + other.mean_latency_ms * other.calls as f64;
        self.cost_usd = match (self.calls, other.calls, self.cost_usd, other.cost_usd) {
            (0, _, _, c) => c,
            (_, 0, c, _) => c,
            (_, _, Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.calls += other.calls;
        self.failed_calls += other.failed_calls;
        self.candidates += other.candidates;
        self.new += other.new;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.latency_total_ms = latency;
        if self.calls > 0 {
            self.mean_latency_ms = (latency / self.calls as f64 * 10.0).round() / 10.0;
        }
    }

    fn add(&mut self, call: &CallRecord) {
        self.calls += 1;
        self.failed_calls += u64::from(call.error.is_some());
        self.candidates += call.candidates;
        self.new += call.new;
        self.input_tokens += call.usage.input_tokens;
        self.output_tokens += call.usage.output_tokens;
        self.cost_usd = match (self.calls, self.cost_usd, call.cost_usd) {
            (1, _, c) => c,
            (_, Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.latency_total_ms += call.latency_ms as f64;
        self.mean_latency_ms = (self.latency_total_ms / self.calls as f64 * 10.0).round() / 10.0;
    }
}

/// One provider call of the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRecord {
    pub call: u64,
    pub producer: u32,
    pub profile: String,
    pub at: u64,
    pub latency_ms: u64,
    pub candidates: u64,
    pub new: u64,
    pub usage: Usage,
    pub cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `partition` for the call that split the topic; absent for item calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<std::borrow::Cow<'static, str>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metrics {
    /// Unique attributes per minute, over wall-clock time since the node started.
    pub uam: f64,
    pub unique: u64,
    pub candidates: u64,
    /// unique / candidates.
    pub uniqueness_ratio: f64,
    pub calls: u64,
    pub failed_calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// `null` when some call used a profile without a known price.
    pub cost_usd: Option<f64>,
    pub cost_per_minute: Option<f64>,
    pub elapsed_ms: u64,
    /// New unique items of each call, in completion order.
    pub new_per_call: Vec<u64>,
    pub per_profile: BTreeMap<String, Tally>,
    pub per_producer: BTreeMap<String, Tally>,
    pub stop_reason: StopReason,
    pub subtopics: Vec<String>,
    pub tracker: TrackerStats,
    /// The most recent calls (at most 1000; every call is in the event stream and the store).
    pub calls_log: VecDeque<CallRecord>,
    /// Calls left out of `calls_log`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub calls_log_dropped: u64,
    /// The most recent routing decisions (at most 1000).
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub optimizer_decisions: VecDeque<Decision>,
    /// Calls answered without being sent (cache, coalesced, resume).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub calls_saved: u64,
    /// Items found before the run was interrupted and resumed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resumed_items: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Iterations,
    Unique,
    Seconds,
    CostUsd,
    DiminishingReturns,
    AllCallsFailed,
    /// Stopped on request (the dashboard's Stop button); what was found is kept.
    Stopped,
    Cancelled,
}

/// Live numbers, sent after every call.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub unique: u64,
    pub candidates: u64,
    pub calls: u64,
    pub uam: f64,
    pub cost_usd: Option<f64>,
    pub cost_per_minute: Option<f64>,
    /// The call just finished and the new items it found.
    pub call: u64,
    pub new: u64,
}

/// What the node tells the run as it goes.
pub enum NodeEvent<'a> {
    Progress(Progress),
    Item(&'a Item),
}

pub struct Outcome {
    pub items: Vec<Item>,
    pub metrics: Metrics,
    pub usage: Usage,
    /// Calls made, failed ones included.
    pub calls: u64,
    pub calls_saved: u32,
    /// The last failure, when every call failed.
    pub last_error: Option<ProviderError>,
}

/// What the node needs to run.
pub struct Context<'a, P: CallPolicy> {
    pub caller: P,
    pub agent: &'a crate::config::Agent,
    pub settings: &'a GenerateSettings,
    pub topic: String,
    pub input: String,
    pub seed: u64,
    pub resume: Option<Resume>,
    /// The engine's open output files (`output:`).
    pub files: &'a OutputFiles,
    /// Fires on a graceful stop: finish with what was found.
    pub stop: CancellationToken,
    /// This job is one part of a node spread over several jobs (workers): the tracker,
    /// feedback sample and counters are shared through this, and only its producers run.
    pub shared: Option<Arc<dyn SharedNode>>,
}

struct State {
    tracker: Tracker,
    items: Vec<Item>,
    /// How often each accepted item (by normal form) was proposed again.
    repeats: std::collections::HashMap<String, u32>,
    /// The most often repeated items, most first (bounded), for feedback.
    /// (times repeated, normal form, text as first repeated).
    hot: Vec<(u32, String, String)>,
    /// Recent accepted items by subtopic, newest last, for feedback.
    recent: BTreeMap<Option<String>, VecDeque<String>>,
    /// Calls started (node-wide numbering).
    calls: u64,
    /// Calls finished.
    finished: u64,
    failed_calls: u64,
    calls_saved: u64,
    calls_log: VecDeque<CallRecord>,
    calls_log_dropped: u64,
    new_per_call: Vec<u64>,
    per_profile: BTreeMap<String, Tally>,
    per_producer: BTreeMap<String, Tally>,
    usage: Usage,
    cost: Option<f64>,
    candidates: u64,
    low_yield_streak: u32,
    failure_streak: u64,
    last_error: Option<ProviderError>,
    stop: Option<StopReason>,
    optimizer: Option<Optimizer>,
    output: Option<OutputFile>,
    /// A spread node: its counters across every part, as the last shared call returned
    /// them (the stop conditions read these instead of this part's own).
    node: Option<NodeTotals>,
    /// A spread node whose shared state could not be reached.
    shared_error: Option<String>,
}

impl State {
    /// Unique items, cost, streaks: the node's (spread: every part's) as stop conditions
    /// read them.
    fn view(&self) -> NodeTotals {
        match &self.node {
            Some(node) => node.clone(),
            None => NodeTotals {
                unique: self.items.len() as u64,
                candidates: self.candidates,
                calls: self.finished,
                cost: self.cost,
                low_yield_streak: self.low_yield_streak,
                failure_streak: self.failure_streak,
            },
        }
    }

    fn log(&mut self, record: CallRecord) {
        if self.calls_log.len() == KEPT_RECORDS {
            self.calls_log.pop_front();
            self.calls_log_dropped += 1;
        }
        self.calls_log.push_back(record);
    }
}

pub async fn run<P: CallPolicy>(
    ctx: Context<'_, P>,
    on_event: impl Fn(NodeEvent<'_>) + Send + Sync,
) -> Result<Outcome, String> {
    let started = match &ctx.shared {
        // Every part counts from the node's start.
        Some(shared) => {
            let now = Instant::now();
            now.checked_sub(shared.elapsed_before()).unwrap_or(now)
        }
        None => Instant::now(),
    };
    let s = ctx.settings;
    let output = match &s.output {
        // A spread node's items file is written by the coordinator, which gathers them.
        Some(_) if ctx.shared.is_some() => None,
        Some(path) => Some(
            ctx.files
                .open(path, s.append)
                .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?,
        ),
        None => None,
    };
    let resume = ctx.resume.clone().unwrap_or_default();
    // A resumed node that replaces its file (`overwrite: true`) writes what it had found
    // first; with `append: true` those items are in the file already.
    if let (Some(out), false) = (&output, s.append) {
        for item in &resume.items {
            out.write_line(serde_json::to_string(item).expect("items serialize"));
        }
    }
    let resumed_items = resume.items.len() as u64;
    let mut tracker = Tracker::new(
        (s.expected_items as usize).max(resume.items.len()),
        s.false_positive_rate,
    );
    let mut recent: BTreeMap<Option<String>, VecDeque<String>> = BTreeMap::new();
    // A spread node's resumed items were put in the shared tracker by the coordinator.
    let resumed: &[Item] = if ctx.shared.is_some() {
        &[]
    } else {
        &resume.items
    };
    for item in resumed {
        tracker.insert(&normalize(&item.text, s.normalize));
        let r = recent.entry(item.subtopic.clone()).or_default();
        r.push_back(item.text.clone());
        if r.len() > 256 {
            r.pop_front();
        }
    }
    // A resumed node re-asks for subtopics: the answer is the same (from the store when
    // the call was made before), and producers go on where they were.
    let (subtopics, partition_call, shared_error) = match &ctx.shared {
        None => {
            let (subtopics, call) = partition(&ctx, resume.calls + 1).await;
            (subtopics, call, None)
        }
        Some(shared) => shared_partition(&ctx, shared.as_ref()).await,
    };
    let optimizer = s
        .optimizer
        .as_ref()
        .filter(|_| s.profiles.len() > 1)
        .map(|spec| {
            Optimizer::new(
                spec,
                s.profiles.iter().map(|p| p.name.clone()).collect(),
                s.profiles.iter().map(|p| p.price.is_some()).collect(),
            )
        });
    let state = Arc::new(Mutex::new(State {
        tracker,
        items: resumed.to_vec(),
        recent,
        repeats: std::collections::HashMap::new(),
        hot: Vec::new(),
        calls: resume.calls,
        finished: resume.calls,
        failed_calls: 0,
        calls_saved: 0,
        calls_log: VecDeque::new(),
        calls_log_dropped: 0,
        new_per_call: Vec::new(),
        per_profile: BTreeMap::new(),
        per_producer: BTreeMap::new(),
        usage: resume.usage,
        cost: resume
            .cost_usd
            .or(if resume.calls == 0 { Some(0.0) } else { None }),
        candidates: 0,
        low_yield_streak: 0,
        failure_streak: 0,
        last_error: None,
        stop: None,
        optimizer,
        output,
        node: ctx.shared.as_ref().map(|_| NodeTotals::default()),
        shared_error,
    }));
    if let Some(answer) = partition_call {
        let mut st = state.lock().expect("not poisoned");
        st.calls += 1;
        st.finished += 1;
        let profile = &s.profiles[0];
        let record = CallRecord {
            call: st.calls,
            producer: 0,
            profile: profile.name.clone(),
            at: started.elapsed().as_millis() as u64,
            latency_ms: answer.latency.as_millis() as u64,
            candidates: 0,
            new: 0,
            usage: answer.paid,
            cost_usd: answer.cost,
            error: None,
            purpose: Some("partition".into()),
        };
        st.usage += answer.paid;
        st.cost = st.cost.zip(answer.cost).map(|(a, b)| a + b);
        st.calls_saved += u64::from(answer.saved);
        st.per_profile
            .entry(profile.name.clone())
            .or_default()
            .add(&record);
        st.log(record);
    }
    let numbers: Vec<u32> = match &ctx.shared {
        Some(shared) => shared.producers(),
        None => (1..=s.producers).collect(),
    };
    let producers: Vec<_> = numbers
        .into_iter()
        .map(|p| {
            let done = resume.producer_calls.get(&p).copied().unwrap_or(0);
            producer(&ctx, p, done, &subtopics, &state, started, &on_event)
        })
        .collect();
    if state.lock().expect("not poisoned").shared_error.is_none() {
        futures_util::future::join_all(producers).await;
    }
    if let Some(e) = state.lock().expect("not poisoned").shared_error.clone() {
        if !ctx.caller.cancelled().is_cancelled() {
            return Err(format!("the node's shared state is unavailable: {e}"));
        }
    }

    let output = state.lock().expect("not poisoned").output.take();
    if let Some(out) = output {
        out.finish()
            .await
            .map_err(|e| format!("cannot write the items file: {e}"))?;
    }
    let mut st = state.lock().expect("not poisoned");
    let elapsed = started.elapsed();
    let minutes = elapsed.as_secs_f64() / 60.0;
    let unique = st.items.len() as u64;
    let stop_reason = if ctx.caller.cancelled().is_cancelled() {
        StopReason::Cancelled
    } else {
        st.stop.unwrap_or(StopReason::Iterations)
    };
    let new_unique = unique - resumed_items;
    let metrics = Metrics {
        uam: round(new_unique as f64 / minutes.max(1e-9), 2),
        unique,
        candidates: st.candidates,
        uniqueness_ratio: if st.candidates == 0 {
            0.0
        } else {
            round(new_unique as f64 / st.candidates as f64, 4)
        },
        calls: st.finished,
        failed_calls: st.failed_calls,
        input_tokens: st.usage.input_tokens,
        output_tokens: st.usage.output_tokens,
        cost_usd: st.cost,
        cost_per_minute: st.cost.map(|c| c / minutes.max(1e-9)),
        elapsed_ms: elapsed.as_millis() as u64,
        new_per_call: std::mem::take(&mut st.new_per_call),
        per_profile: st.per_profile.clone(),
        per_producer: st.per_producer.clone(),
        stop_reason,
        subtopics: subtopics.iter().flatten().cloned().collect(),
        tracker: st.tracker.stats(),
        calls_log: std::mem::take(&mut st.calls_log),
        calls_log_dropped: st.calls_log_dropped,
        optimizer_decisions: st
            .optimizer
            .as_mut()
            .map(|o| std::mem::take(&mut o.decisions))
            .unwrap_or_default(),
        calls_saved: st.calls_saved,
        resumed_items,
    };
    Ok(Outcome {
        items: std::mem::take(&mut st.items),
        usage: st.usage,
        calls: st.finished,
        calls_saved: st.calls_saved as u32,
        last_error: if stop_reason == StopReason::AllCallsFailed {
            st.last_error.take()
        } else {
            None
        },
        metrics,
    })
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn fixed_subtopics(partition: Partition) -> Vec<Option<String>> {
    match partition {
        Partition::AttributeType => ATTRIBUTE_TYPES
            .iter()
            .map(|t| Some((*t).to_string()))
            .collect(),
        _ => vec![None],
    }
}

/// The subtopics producers work through (`[None]` without partitioning), and the call
/// that asked for them (`partition: semantic`, node-wide call number `call`), which is paid
/// for like any other. A resumed node asks again: the same request is answered from the
/// store, not sent.
async fn partition<P: CallPolicy>(
    ctx: &Context<'_, P>,
    call: u64,
) -> (Vec<Option<String>>, Option<CallAnswer>) {
    if !matches!(ctx.settings.partition, Partition::Semantic) {
        return (fixed_subtopics(ctx.settings.partition), None);
    }
    let count = ctx.settings.producers.max(4);
    let profile = &ctx.settings.profiles[0];
    let request = CompletionRequest {
        agent: ctx.agent.name.clone(),
        system: ctx.agent.system_prompt.clone(),
        prompt: format!(
            "Split the topic \"{}\" into {count} distinct subtopics that together cover it.\n\
             Answer with one subtopic per line, a few words each, and nothing else.",
            ctx.topic
        ),
        temperature: ctx.agent.temperature,
        max_tokens: ctx.agent.max_tokens,
        options: Default::default(),
        attempt: 1,
        seed: ctx.seed,
        deltas: None,
        response_format: None,
        generation: Some(GenerationHint::Subtopics {
            topic: ctx.topic.clone(),
            count,
        }),
    };
    match ctx.caller.call(profile, request, call, None).await {
        Some(answer) => {
            let subtopics = match &answer.result {
                Ok(c) => {
                    let parsed = parse_items(&c.text);
                    if parsed.items.is_empty() {
                        vec![None]
                    } else {
                        parsed.items.into_iter().map(Some).collect()
                    }
                }
                // Without subtopics the producers still work on the whole topic.
                Err(_) => vec![None],
            };
            let counted = answer.result.is_ok().then_some(answer);
            (subtopics, counted)
        }
        None => (vec![None], None),
    }
}

/// A spread node's subtopics: the asking part makes the partition call (numbered and
/// counted node-wide) and publishes them; the others wait for them.
async fn shared_partition<P: CallPolicy>(
    ctx: &Context<'_, P>,
    shared: &dyn SharedNode,
) -> (Vec<Option<String>>, Option<CallAnswer>, Option<String>) {
    if !matches!(ctx.settings.partition, Partition::Semantic) {
        return (fixed_subtopics(ctx.settings.partition), None, None);
    }
    if !shared.asks_partition() {
        return match shared.subtopics(ctx.caller.cancelled()).await {
            Ok(Some(subtopics)) => (subtopics, None, None),
            Ok(None) => (vec![None], None, None),
            Err(e) => (vec![None], None, Some(e)),
        };
    }
    let call = match shared.begin(None, 0).await {
        Ok(begin) => begin.call,
        Err(e) => return (vec![None], None, Some(e)),
    };
    let (subtopics, answer) = partition(ctx, call).await;
    if let Some(answer) = &answer {
        let done = CallDone {
            subtopic: None,
            candidates: Vec::new(),
            usage: answer.paid,
            cost: answer.cost,
            failed: false,
            min_new: None,
        };
        if let Err(e) = shared.record(done).await {
            return (subtopics, None, Some(e));
        }
    }
    match shared.publish_subtopics(&subtopics).await {
        // The partition call is counted by the node's shared counters, not again here.
        Ok(()) => (subtopics, answer, None),
        Err(e) => (subtopics, answer, Some(e)),
    }
}

async fn producer<P: CallPolicy>(
    ctx: &Context<'_, P>,
    p: u32,
    done: u64,
    subtopics: &[Option<String>],
    state: &Arc<Mutex<State>>,
    started: Instant,
    on_event: &(impl Fn(NodeEvent<'_>) + Send + Sync),
) {
    let s = ctx.settings;
    let cancel = ctx.caller.cancelled();
    let mut k: u64 = done;
    loop {
        if let Some(limit) = s.stop.iterations {
            if k >= u64::from(limit) {
                return;
            }
        }
        if cancel.is_cancelled() || check_stop(ctx, state, started) {
            publish_stop(ctx, state).await;
            return;
        }
        let subtopic = subtopics
            [((u64::from(p - 1) + k * u64::from(s.producers)) % subtopics.len() as u64) as usize]
            .clone();
        k += 1;
        let shared_begin = match &ctx.shared {
            Some(shared) => match shared.begin(subtopic.as_deref(), s.feedback as usize).await {
                Ok(begin) => Some(begin),
                Err(e) => {
                    state.lock().expect("not poisoned").shared_error = Some(e);
                    return;
                }
            },
            None => None,
        };
        let (arm, call_no, seen) = {
            let mut st = state.lock().expect("not poisoned");
            if let Some(stop) = shared_begin.as_ref().and_then(|b| b.stop) {
                st.stop.get_or_insert(stop);
                return;
            }
            st.calls += 1;
            let call_no = shared_begin.as_ref().map_or(st.calls, |b| b.call);
            let arm = match st.optimizer.as_mut() {
                Some(o) => o.choose(p),
                None => (p as usize - 1) % s.profiles.len(),
            };
            let seen = match shared_begin {
                Some(b) => b.feedback,
                None => feedback(&st, &subtopic, s.feedback as usize),
            };
            (arm, call_no, seen)
        };
        let profile: &Arc<Profile> = &s.profiles[arm];
        let prompt = match build_prompt(ctx, subtopic.as_deref(), &seen) {
            Ok(p) => p,
            Err(e) => {
                let answer = CallAnswer {
                    result: Err(ProviderError::Decode { message: e }),
                    latency: Duration::ZERO,
                    paid: Usage::default(),
                    cost: Some(0.0),
                    saved: false,
                };
                record_call(
                    ctx, state, started, p, arm, call_no, &subtopic, answer, on_event,
                )
                .await;
                return;
            }
        };
        let request = CompletionRequest {
            agent: ctx.agent.name.clone(),
            system: ctx.agent.system_prompt.clone(),
            prompt,
            temperature: ctx.agent.temperature.or(profile.temperature),
            max_tokens: ctx.agent.max_tokens.or(profile.max_tokens),
            options: profile.options.clone(),
            attempt: 1,
            seed: ctx.seed.wrapping_add(call_no.wrapping_mul(0x9e37_79b9)),
            deltas: None,
            response_format: None,
            generation: Some(GenerationHint::Items {
                topic: ctx.topic.clone(),
                subtopic: subtopic.clone(),
                count: s.batch_size,
                avoid: seen,
            }),
        };
        let Some(answer) = ctx.caller.call(profile, request, call_no, Some(p)).await else {
            return;
        };
        let retry_after = answer
            .result
            .as_ref()
            .err()
            .and_then(ProviderError::retry_after);
        let failed = answer.result.is_err();
        record_call(
            ctx, state, started, p, arm, call_no, &subtopic, answer, on_event,
        )
        .await;
        if state.lock().expect("not poisoned").shared_error.is_some() {
            return;
        }
        if failed {
            // A failed call is an iteration too; back off a little before the next.
            let delay = retry_after
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_secs(30));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cancel.cancelled() => return,
            }
        }
    }
}

/// Whether a node-wide stop condition holds (and records which).
fn check_stop<P: CallPolicy>(
    ctx: &Context<'_, P>,
    state: &Arc<Mutex<State>>,
    started: Instant,
) -> bool {
    let stop = &ctx.settings.stop;
    let mut st = state.lock().expect("not poisoned");
    if st.stop.is_some() {
        return true;
    }
    let node = st.view();
    let reason = if ctx.stop.is_cancelled() {
        Some(StopReason::Stopped)
    } else if stop.unique.is_some_and(|u| node.unique >= u) {
        Some(StopReason::Unique)
    } else if stop
        .seconds
        .is_some_and(|secs| started.elapsed().as_secs_f64() >= secs)
    {
        Some(StopReason::Seconds)
    } else if stop.cost_usd.is_some_and(|c| node.cost.unwrap_or(0.0) >= c) {
        Some(StopReason::CostUsd)
    } else if stop.min_new_per_call.is_some() && node.low_yield_streak >= stop.patience.unwrap_or(3)
    {
        Some(StopReason::DiminishingReturns)
    } else if node.failure_streak
        >= 3 * u64::from(ctx.settings.producers) * ctx.settings.profiles.len() as u64
        && node.unique == 0
    {
        Some(StopReason::AllCallsFailed)
    } else {
        None
    };
    st.stop = reason;
    reason.is_some()
}

/// A spread node: once this part has a stop reason, every part gets it.
async fn publish_stop<P: CallPolicy>(ctx: &Context<'_, P>, state: &Arc<Mutex<State>>) {
    let Some(shared) = &ctx.shared else { return };
    let reason = state.lock().expect("not poisoned").stop;
    if let Some(reason) = reason {
        if let Err(e) = shared.stop(reason).await {
            state.lock().expect("not poisoned").shared_error = Some(e);
        }
    }
}

/// Accepted items to show a producer: recent ones of its own subtopic first, then recent
/// others, at most `n` and about `FEEDBACK_CHARS` characters.
fn feedback(st: &State, subtopic: &Option<String>, n: usize) -> Vec<String> {
    let own = st
        .recent
        .get(subtopic)
        .into_iter()
        .flat_map(|q| q.iter().rev());
    let others = st
        .recent
        .iter()
        .filter(|(k, _)| *k != subtopic)
        .flat_map(|(_, q)| q.iter().rev());
    assemble_feedback(
        st.hot.iter().map(|(_, _, item)| item.as_str()),
        own.chain(others).map(String::as_str),
        n,
    )
}

/// The feedback sample from the most repeated items (most first) and recent finds (own
/// subtopic's newest first, then the others'): at most `n` items and about
/// `FEEDBACK_CHARS` characters. Shared by the in-memory sample and a spread node's.
pub fn assemble_feedback<'a>(
    hot: impl Iterator<Item = &'a str>,
    recent: impl Iterator<Item = &'a str>,
    n: usize,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut chars = 0;
    // Half the budget goes to the items models keep proposing again (the common ones found
    // early, which recency alone soon forgets), the rest to recent finds.
    for item in hot.take(n / 2) {
        if chars + item.len() > FEEDBACK_CHARS / 2 {
            break;
        }
        chars += item.len() + 3;
        out.push(item.to_string());
    }
    for item in recent {
        if out.len() >= n || chars + item.len() > FEEDBACK_CHARS {
            break;
        }
        if out.iter().any(|o| o == item) {
            continue;
        }
        chars += item.len() + 3;
        out.push(item.to_string());
    }
    out
}

/// Longest list of often-repeated items kept for feedback.
const HOT_ITEMS: usize = 64;

/// Keeps `hot` the most repeated items (one entry per normal form), most first, in
/// O(HOT_ITEMS) a repeat.
fn promote(hot: &mut Vec<(u32, String, String)>, count: u32, key: &str, text: &str) {
    if let Some(i) = hot.iter().position(|(_, k, _)| k == key) {
        hot[i].0 = count;
    } else if hot.len() < HOT_ITEMS {
        hot.push((count, key.to_string(), text.to_string()));
    } else if hot.last().is_some_and(|(c, _, _)| *c < count) {
        hot.pop();
        hot.push((count, key.to_string(), text.to_string()));
    } else {
        return;
    }
    hot.sort_by_key(|(count, _, _)| std::cmp::Reverse(*count));
}

fn build_prompt<P: CallPolicy>(
    ctx: &Context<'_, P>,
    subtopic: Option<&str>,
    seen: &[String],
) -> Result<String, String> {
    let s = &ctx.settings;
    if let Some(template) = &s.prompt {
        let env = crate::template::environment();
        let t = env.template_from_str(template).map_err(|e| e.to_string())?;
        return t
            .render(minijinja::context! {
                topic => &ctx.topic, subtopic => subtopic, seen => seen.to_vec(), batch_size => s.batch_size, input => &ctx.input,
            })
            .map_err(|e| e.to_string());
    }
    let mut prompt = format!(
        "List {} new, concrete attributes of \"{}\"",
        s.batch_size, ctx.topic
    );
    if let Some(sub) = subtopic {
        prompt.push_str(&format!(", focusing on {sub}"));
    }
    prompt.push_str(".\nAnswer with one attribute per line, each a few words, and nothing else: no numbering, no commentary.");
    if !seen.is_empty() {
        prompt.push_str("\nThese are already found; do not repeat them:\n");
        for item in seen {
            prompt.push_str("- ");
            prompt.push_str(item);
            prompt.push('\n');
        }
    }
    Ok(prompt)
}

#[allow(clippy::too_many_arguments)]
async fn record_call<P: CallPolicy>(
    ctx: &Context<'_, P>,
    state: &Arc<Mutex<State>>,
    started: Instant,
    producer: u32,
    arm: usize,
    call_no: u64,
    subtopic: &Option<String>,
    answer: CallAnswer,
    on_event: &(impl Fn(NodeEvent<'_>) + Send + Sync),
) {
    let s = ctx.settings;
    let profile = &s.profiles[arm];
    let at = started.elapsed().as_millis() as u64;
    let item_of = |text: &str| Item {
        text: text.to_string(),
        producer,
        profile: profile.name.clone(),
        call: call_no,
        at,
        subtopic: subtopic.clone(),
    };
    // A spread node checks the candidates against the shared tracker (one atomic step for
    // the whole answer) before taking the lock; in one process the tracker is checked
    // under the lock below.
    let shared_verdicts: Option<(u64, Vec<(String, bool)>)> = match &ctx.shared {
        None => None,
        Some(shared) => {
            let (count, candidates) = match &answer.result {
                Ok(completion) => {
                    let parsed = parse_items(&completion.text);
                    let candidates: Vec<(String, String, String)> = parsed
                        .items
                        .iter()
                        .filter_map(|text| {
                            let key = normalize(text, s.normalize);
                            (!key.is_empty()).then(|| {
                                let json =
                                    serde_json::to_string(&item_of(text)).expect("items serialize");
                                (key, text.clone(), json)
                            })
                        })
                        .collect();
                    (parsed.items.len() as u64, candidates)
                }
                Err(_) => (0, Vec::new()),
            };
            let texts: Vec<String> = candidates.iter().map(|(_, t, _)| t.clone()).collect();
            let done = CallDone {
                subtopic: subtopic.as_deref(),
                candidates,
                usage: answer.paid,
                cost: answer.cost,
                failed: answer.result.is_err(),
                min_new: s.stop.min_new_per_call,
            };
            let verdicts = match shared.record(done).await {
                Ok(recorded) => {
                    let mut st = state.lock().expect("not poisoned");
                    st.node = Some(recorded.totals);
                    recorded.new
                }
                Err(e) => {
                    state.lock().expect("not poisoned").shared_error = Some(e);
                    Vec::new()
                }
            };
            let checked = texts
                .into_iter()
                .enumerate()
                .map(|(i, t)| (t, verdicts.get(i).copied().unwrap_or(false)))
                .collect();
            Some((count, checked))
        }
    };
    let mut st = state.lock().expect("not poisoned");
    let (candidates, new, error) = match answer.result {
        Ok(_) if shared_verdicts.is_some() => {
            let (count, checked) = shared_verdicts.expect("checked just above");
            let mut new = 0u64;
            for (text, is_new) in checked {
                if !is_new {
                    continue;
                }
                new += 1;
                let item = item_of(&text);
                on_event(NodeEvent::Item(&item));
                st.items.push(item);
            }
            (count, new, None)
        }
        Ok(completion) => {
            let parsed = parse_items(&completion.text);
            let mut new = 0u64;
            for text in &parsed.items {
                let key = normalize(text, s.normalize);
                if key.is_empty() {
                    continue;
                }
                if !st.tracker.insert(&key) {
                    let entry = st.repeats.entry(key.clone()).or_insert(0);
                    *entry += 1;
                    let count = *entry;
                    promote(&mut st.hot, count, &key, text);
                    continue;
                }
                new += 1;
                let item = item_of(text);
                if let Some(out) = &st.output {
                    out.write_line(serde_json::to_string(&item).expect("items serialize"));
                }
                let recent = st.recent.entry(subtopic.clone()).or_default();
                recent.push_back(text.clone());
                if recent.len() > 256 {
                    recent.pop_front();
                }
                on_event(NodeEvent::Item(&item));
                st.items.push(item);
            }
            (parsed.items.len() as u64, new, None)
        }
        Err(e) => (0, 0, Some(e)),
    };
    let record = CallRecord {
        call: call_no,
        producer,
        profile: profile.name.clone(),
        at,
        latency_ms: answer.latency.as_millis() as u64,
        candidates,
        new,
        usage: answer.paid,
        cost_usd: answer.cost,
        error: error.as_ref().map(ToString::to_string),
        purpose: None,
    };
    st.finished += 1;
    st.usage += answer.paid;
    st.candidates += candidates;
    st.calls_saved += u64::from(answer.saved);
    st.cost = match (st.cost, answer.cost) {
        (Some(a), Some(b)) => Some(a + b),
        _ => None,
    };
    st.per_profile
        .entry(profile.name.clone())
        .or_default()
        .add(&record);
    st.per_producer
        .entry(format!("producer-{producer}"))
        .or_default()
        .add(&record);
    if let Some(o) = st.optimizer.as_mut() {
        o.report(
            arm,
            new,
            answer.latency.as_secs_f64(),
            answer.cost,
            error.is_some(),
        );
    }
    if let Some(e) = error {
        st.failed_calls += 1;
        st.failure_streak += 1;
        st.last_error = Some(e);
    } else {
        st.failure_streak = 0;
        match s.stop.min_new_per_call {
            Some(min) if (new as f64) < min => st.low_yield_streak += 1,
            _ => st.low_yield_streak = 0,
        }
    }
    st.new_per_call.push(new);
    st.log(record);
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let node = st.view();
    on_event(NodeEvent::Progress(Progress {
        unique: node.unique,
        candidates: node.candidates,
        calls: node.calls,
        uam: round(node.unique as f64 / minutes.max(1e-9), 1),
        cost_usd: node.cost,
        cost_per_minute: node.cost.map(|c| round(c / minutes.max(1e-9), 6)),
        call: call_no,
        new,
    }));
}
