//! `generate`: several producer loops call providers for batches of new, concrete items of a
//! topic, concurrently. Every candidate is normalised and checked against one run-wide
//! uniqueness tracker; a bounded sample of accepted items is fed back into later prompts.
//! Stops at the first stop condition reached. Returns the items with provenance and honest
//! metrics: UAM over wall-clock time since the node started, and every call's tokens and cost,
//! zero-yield and failed calls included.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::normalize::normalize;
use super::optimizer::{Decision, Optimizer};
use super::parse::parse_items;
use super::tracker::{Tracker, TrackerStats};
use crate::config::spec::PartitionSpec;
use crate::config::{GenerateSettings, Profile};
use crate::providers::{CompletionRequest, GenerationHint, Provider, ProviderError, Usage};

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

/// One accepted item and where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub text: String,
    pub producer: u32,
    pub profile: String,
    /// Number of the call (node-wide, 1-based) that found it.
    pub call: u64,
    /// Milliseconds since the node started.
    pub at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtopic: Option<String>,
}

/// Per-profile and per-producer tallies.
#[derive(Debug, Clone, Default, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
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
    pub purpose: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
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
    pub calls_log: Vec<CallRecord>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub optimizer_decisions: Vec<Decision>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Iterations,
    Unique,
    Seconds,
    CostUsd,
    DiminishingReturns,
    AllCallsFailed,
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
}

pub struct Outcome {
    pub items: Vec<Item>,
    pub metrics: Metrics,
    pub usage: Usage,
    /// Calls made, failed ones included.
    pub calls: u64,
}

/// What the node needs to run.
pub struct Context {
    pub agent: String,
    pub settings: GenerateSettings,
    pub topic: String,
    pub input: String,
    /// One provider per candidate profile, in `settings.profiles` order.
    pub providers: Vec<Arc<dyn Provider>>,
    pub slots: Arc<Semaphore>,
    pub cancel: CancellationToken,
    pub seed: u64,
    pub call_timeout: Duration,
    pub system_prompt: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
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
    calls: u64,
    calls_log: Vec<CallRecord>,
    per_profile: BTreeMap<String, Tally>,
    per_producer: BTreeMap<String, Tally>,
    usage: Usage,
    cost: Option<f64>,
    candidates: u64,
    low_yield_streak: u32,
    failure_streak: u64,
    stop: Option<StopReason>,
    optimizer: Option<Optimizer>,
    output: Option<SharedFile>,
    output_error: Option<String>,
}

/// An items file shared by every run of the process that names it (`--each-line` runs
/// the same node once per input): created (truncated) once, then appended to, a whole line
/// at a time.
type SharedFile = Arc<Mutex<std::io::BufWriter<std::fs::File>>>;

type FileMap = std::collections::HashMap<std::path::PathBuf, SharedFile>;

fn shared_file(path: &std::path::Path, append: bool) -> std::io::Result<SharedFile> {
    static FILES: std::sync::OnceLock<Mutex<FileMap>> = std::sync::OnceLock::new();
    let key = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut files = FILES
        .get_or_init(Default::default)
        .lock()
        .expect("not poisoned");
    if let Some(f) = files.get(&key) {
        return Ok(Arc::clone(f));
    }
    // `append: true` adds to what is there; otherwise the load check made sure replacing
    // the file was asked for (`overwrite: true`) or that there was none.
    let opened = if append {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?
    } else {
        std::fs::File::create(path)?
    };
    let file = Arc::new(Mutex::new(std::io::BufWriter::new(opened)));
    files.insert(key, Arc::clone(&file));
    Ok(file)
}

pub async fn run(
    ctx: Context,
    on_progress: impl Fn(Progress) + Send + Sync,
) -> Result<Outcome, String> {
    let started = Instant::now();
    let s = &ctx.settings;
    let output = match &s.output {
        Some(path) => Some(
            shared_file(path, s.append)
                .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?,
        ),
        None => None,
    };
    let (subtopics, partition_call) = partition(&ctx).await;
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
        tracker: Tracker::new(s.expected_items as usize, s.false_positive_rate),
        items: Vec::new(),
        recent: BTreeMap::new(),
        repeats: std::collections::HashMap::new(),
        hot: Vec::new(),
        calls: 0,
        calls_log: Vec::new(),
        per_profile: BTreeMap::new(),
        per_producer: BTreeMap::new(),
        usage: Usage::default(),
        cost: Some(0.0),
        candidates: 0,
        low_yield_streak: 0,
        failure_streak: 0,
        stop: None,
        optimizer,
        output,
        output_error: None,
    }));
    if let Some((usage, latency)) = partition_call {
        let mut st = state.lock().expect("not poisoned");
        st.calls += 1;
        let profile = &s.profiles[0];
        let cost = profile.price.map(|p| {
            p.cost(
                usage.input_tokens,
                usage.cached_input_tokens,
                usage.output_tokens,
            )
        });
        let record = CallRecord {
            call: st.calls,
            producer: 0,
            profile: profile.name.clone(),
            at: started.elapsed().as_millis() as u64,
            latency_ms: latency.as_millis() as u64,
            candidates: 0,
            new: 0,
            usage,
            cost_usd: cost,
            error: None,
            purpose: Some("partition"),
        };
        st.usage += usage;
        st.cost = st.cost.zip(cost).map(|(a, b)| a + b);
        st.per_profile
            .entry(profile.name.clone())
            .or_default()
            .add(&record);
        st.calls_log.push(record);
    }
    let producers: Vec<_> = (0..s.producers)
        .map(|p| producer(&ctx, p + 1, &subtopics, &state, started, &on_progress))
        .collect();
    futures_util::future::join_all(producers).await;

    let mut st = state.lock().expect("not poisoned");
    if let Some(out) = st.output.clone() {
        use std::io::Write;
        if let Err(e) = out.lock().expect("not poisoned").flush() {
            st.output_error = Some(e.to_string());
        }
    }
    if let Some(e) = st.output_error.take() {
        return Err(format!("cannot write the items file: {e}"));
    }
    let elapsed = started.elapsed();
    let minutes = elapsed.as_secs_f64() / 60.0;
    let unique = st.items.len() as u64;
    let stop_reason = if ctx.cancel.is_cancelled() {
        StopReason::Cancelled
    } else {
        st.stop.unwrap_or(StopReason::Iterations)
    };
    let metrics = Metrics {
        uam: round(unique as f64 / minutes.max(1e-9), 2),
        unique,
        candidates: st.candidates,
        uniqueness_ratio: if st.candidates == 0 {
            0.0
        } else {
            round(unique as f64 / st.candidates as f64, 4)
        },
        calls: st.calls,
        failed_calls: st.calls_log.iter().filter(|c| c.error.is_some()).count() as u64,
        input_tokens: st.usage.input_tokens,
        output_tokens: st.usage.output_tokens,
        cost_usd: st.cost,
        cost_per_minute: st.cost.map(|c| c / minutes.max(1e-9)),
        elapsed_ms: elapsed.as_millis() as u64,
        new_per_call: st
            .calls_log
            .iter()
            .filter(|c| c.purpose.is_none())
            .map(|c| c.new)
            .collect(),
        per_profile: st.per_profile.clone(),
        per_producer: st.per_producer.clone(),
        stop_reason,
        subtopics: subtopics.iter().flatten().cloned().collect(),
        tracker: st.tracker.stats(),
        calls_log: std::mem::take(&mut st.calls_log),
        optimizer_decisions: st
            .optimizer
            .as_mut()
            .map(|o| std::mem::take(&mut o.decisions))
            .unwrap_or_default(),
    };
    Ok(Outcome {
        items: std::mem::take(&mut st.items),
        usage: st.usage,
        calls: st.calls,
        metrics,
    })
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// The subtopics producers work through (`[None]` without partitioning), and the usage of
/// the call that asked for them (`partition: semantic`), which is paid for like any other.
async fn partition(ctx: &Context) -> (Vec<Option<String>>, Option<(Usage, Duration)>) {
    match ctx.settings.partition {
        PartitionSpec::None => (vec![None], None),
        PartitionSpec::AttributeType => (
            ATTRIBUTE_TYPES
                .iter()
                .map(|t| Some((*t).to_string()))
                .collect(),
            None,
        ),
        PartitionSpec::Semantic => {
            let count = ctx.settings.producers.max(4);
            let request = CompletionRequest {
                agent: ctx.agent.clone(),
                system: ctx.system_prompt.clone(),
                prompt: format!(
                    "Split the topic \"{}\" into {count} distinct subtopics that together cover it.\n\
                     Answer with one subtopic per line, a few words each, and nothing else.",
                    ctx.topic
                ),
                temperature: ctx.temperature,
                max_tokens: ctx.max_tokens,
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
            let _permit = ctx.slots.acquire().await;
            let started = Instant::now();
            let answer =
                tokio::time::timeout(ctx.call_timeout, ctx.providers[0].complete(request)).await;
            match answer {
                Ok(Ok(c)) => {
                    let parsed = parse_items(&c.text);
                    let subtopics = if parsed.items.is_empty() {
                        vec![None]
                    } else {
                        parsed.items.into_iter().map(Some).collect()
                    };
                    (subtopics, Some((c.usage, started.elapsed())))
                }
                // Without subtopics the producers still work on the whole topic.
                _ => (vec![None], None),
            }
        }
    }
}

async fn producer(
    ctx: &Context,
    p: u32,
    subtopics: &[Option<String>],
    state: &Arc<Mutex<State>>,
    started: Instant,
    on_progress: &(impl Fn(Progress) + Send + Sync),
) {
    let s = &ctx.settings;
    let mut k: u64 = 0;
    loop {
        if let Some(limit) = s.stop.iterations {
            if k >= u64::from(limit) {
                return;
            }
        }
        if ctx.cancel.is_cancelled() || check_stop(ctx, state, started) {
            return;
        }
        let subtopic = subtopics
            [((u64::from(p - 1) + k * u64::from(s.producers)) % subtopics.len() as u64) as usize]
            .clone();
        k += 1;
        let (arm, call_no, seen) = {
            let mut st = state.lock().expect("not poisoned");
            st.calls += 1;
            let call_no = st.calls;
            let arm = match st.optimizer.as_mut() {
                Some(o) => o.choose(p),
                None => (p as usize - 1) % s.profiles.len(),
            };
            (arm, call_no, feedback(&st, &subtopic, s.feedback as usize))
        };
        let profile: &Arc<Profile> = &s.profiles[arm];
        let prompt = match build_prompt(ctx, subtopic.as_deref(), &seen) {
            Ok(p) => p,
            Err(e) => {
                record_call(
                    ctx,
                    state,
                    started,
                    p,
                    arm,
                    call_no,
                    &subtopic,
                    Err(ProviderError::Decode { message: e }),
                    Duration::ZERO,
                    on_progress,
                );
                return;
            }
        };
        let request = CompletionRequest {
            agent: ctx.agent.clone(),
            system: ctx.system_prompt.clone(),
            prompt,
            temperature: ctx.temperature.or(profile.temperature),
            max_tokens: ctx.max_tokens.or(profile.max_tokens),
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
        let permit = tokio::select! {
            p = Arc::clone(&ctx.slots).acquire_owned() => p.ok(),
            () = ctx.cancel.cancelled() => None,
        };
        let Some(permit) = permit else { return };
        let call_start = Instant::now();
        let result = tokio::select! {
            r = tokio::time::timeout(ctx.call_timeout, ctx.providers[arm].complete(request)) => {
                r.unwrap_or(Err(ProviderError::Deadline { seconds: ctx.call_timeout.as_secs_f64() }))
            }
            () = ctx.cancel.cancelled() => return,
        };
        drop(permit);
        let latency = call_start.elapsed();
        let retry_after = result.as_ref().err().and_then(ProviderError::retry_after);
        let failed = result.is_err();
        record_call(
            ctx,
            state,
            started,
            p,
            arm,
            call_no,
            &subtopic,
            result,
            latency,
            on_progress,
        );
        if failed {
            // A failed call is an iteration too; back off a little before the next.
            let delay = retry_after
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_secs(30));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = ctx.cancel.cancelled() => return,
            }
        }
    }
}

/// Whether a node-wide stop condition holds (and records which).
fn check_stop(ctx: &Context, state: &Arc<Mutex<State>>, started: Instant) -> bool {
    let stop = &ctx.settings.stop;
    let mut st = state.lock().expect("not poisoned");
    if st.stop.is_some() {
        return true;
    }
    let reason = if stop.unique.is_some_and(|u| st.items.len() as u64 >= u) {
        Some(StopReason::Unique)
    } else if stop
        .seconds
        .is_some_and(|secs| started.elapsed().as_secs_f64() >= secs)
    {
        Some(StopReason::Seconds)
    } else if stop.cost_usd.is_some_and(|c| st.cost.unwrap_or(0.0) >= c) {
        Some(StopReason::CostUsd)
    } else if stop.min_new_per_call.is_some() && st.low_yield_streak >= stop.patience.unwrap_or(3) {
        Some(StopReason::DiminishingReturns)
    } else if st.failure_streak
        >= 3 * u64::from(ctx.settings.producers) * ctx.settings.profiles.len() as u64
        && st.items.is_empty()
    {
        Some(StopReason::AllCallsFailed)
    } else {
        None
    };
    st.stop = reason;
    reason.is_some()
}

/// Accepted items to show a producer: recent ones of its own subtopic first, then recent
/// others, at most `n` and about `FEEDBACK_CHARS` characters.
fn feedback(st: &State, subtopic: &Option<String>, n: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut chars = 0;
    // Half the budget goes to the items models keep proposing again (the common ones found
    // early, which recency alone soon forgets), the rest to recent finds.
    for (_, _, item) in st.hot.iter().take(n / 2) {
        if chars + item.len() > FEEDBACK_CHARS / 2 {
            break;
        }
        chars += item.len() + 3;
        out.push(item.clone());
    }
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
    for item in own.chain(others) {
        if out.len() >= n || chars + item.len() > FEEDBACK_CHARS {
            break;
        }
        if out.contains(item) {
            continue;
        }
        chars += item.len() + 3;
        out.push(item.clone());
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

fn build_prompt(ctx: &Context, subtopic: Option<&str>, seen: &[String]) -> Result<String, String> {
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
fn record_call(
    ctx: &Context,
    state: &Arc<Mutex<State>>,
    started: Instant,
    producer: u32,
    arm: usize,
    call_no: u64,
    subtopic: &Option<String>,
    result: Result<crate::providers::Completion, ProviderError>,
    latency: Duration,
    on_progress: &(impl Fn(Progress) + Send + Sync),
) {
    let s = &ctx.settings;
    let profile = &s.profiles[arm];
    let at = started.elapsed().as_millis() as u64;
    let mut st = state.lock().expect("not poisoned");
    let (usage, candidates, new, error) = match result {
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
                let item = Item {
                    text: text.clone(),
                    producer,
                    profile: profile.name.clone(),
                    call: call_no,
                    at,
                    subtopic: subtopic.clone(),
                };
                if let Some(out) = st.output.clone() {
                    use std::io::Write;
                    let line = serde_json::to_string(&item).expect("items serialize");
                    if let Err(e) = writeln!(out.lock().expect("not poisoned"), "{line}") {
                        st.output_error.get_or_insert(e.to_string());
                    }
                }
                let recent = st.recent.entry(subtopic.clone()).or_default();
                recent.push_back(text.clone());
                if recent.len() > 256 {
                    recent.pop_front();
                }
                st.items.push(item);
            }
            (completion.usage, parsed.items.len() as u64, new, None)
        }
        Err(e) => (Usage::default(), 0, 0, Some(e.to_string())),
    };
    let cost = profile.price.map(|p| {
        p.cost(
            usage.input_tokens,
            usage.cached_input_tokens,
            usage.output_tokens,
        )
    });
    let record = CallRecord {
        call: call_no,
        producer,
        profile: profile.name.clone(),
        at,
        latency_ms: latency.as_millis() as u64,
        candidates,
        new,
        usage,
        cost_usd: cost,
        error: error.clone(),
        purpose: None,
    };
    st.usage += usage;
    st.candidates += candidates;
    st.cost = match (st.cost, cost) {
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
        o.report(arm, new, latency.as_secs_f64(), cost, error.is_some());
    }
    if error.is_some() {
        st.failure_streak += 1;
    } else {
        st.failure_streak = 0;
        match s.stop.min_new_per_call {
            Some(min) if (new as f64) < min => st.low_yield_streak += 1,
            _ => st.low_yield_streak = 0,
        }
    }
    st.calls_log.push(record);
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    on_progress(Progress {
        unique: st.items.len() as u64,
        candidates: st.candidates,
        calls: st.calls_log.len() as u64,
        uam: round(st.items.len() as f64 / minutes.max(1e-9), 1),
        cost_usd: st.cost,
    });
}
