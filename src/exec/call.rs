//! The call policy, shared by plain agents and `generate` producers: one provider call,
//! admitted by its provider first (limits, cool-down, circuit breaker; not call time), then
//! made under a global slot and the agent's timeout, racing cancellation, with `call_started` /
//! `call_finished` events; answered without a call when this run already paid for the same
//! request before it was interrupted (resume), when the store has it (`cache`), or when an
//! identical cacheable request is in flight (coalescing). On top, `attempt_all` is the
//! policy of an LLM agent: retries with backoff, then fallback profiles, and
//! `response_format` validation with the error told to the model.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::error::AgentError;
use super::event::{CallFinished, CallSource, CallStatus, EventKind};
use super::finish::check_answer;
use super::job::Report;
use super::outcome::{AgentStatus, ProfileFailure};
use super::retry::backoff_delay;
use super::run::{AgentTx, RunCtx};
use crate::config::{Agent, Cache, Profile};
use crate::providers::replay::request_key;
use crate::providers::{Completion, CompletionRequest, FinishReason, ProviderError, Usage};

/// A completed call as the store keeps it, to answer the same request again.
#[derive(Debug, Clone)]
pub struct StoredAnswer {
    pub text: String,
    pub usage: Usage,
    pub cost_usd: Option<f64>,
    pub finish_reason: Option<FinishReason>,
}

/// Calls a run completed before it was interrupted, by request hash, in the order made.
#[derive(Debug, Default)]
pub struct ResumeAnswers {
    by_hash: Mutex<HashMap<String, VecDeque<StoredAnswer>>>,
    /// The (top-level) agents those calls belong to.
    agents: std::collections::HashSet<String>,
}

impl ResumeAnswers {
    /// From (agent, request hash, answer) triples.
    pub fn new(answers: impl IntoIterator<Item = (String, String, StoredAnswer)>) -> ResumeAnswers {
        let mut by_hash: HashMap<String, VecDeque<StoredAnswer>> = HashMap::new();
        let mut agents = std::collections::HashSet::new();
        for (agent, hash, answer) in answers {
            by_hash.entry(hash).or_default().push_back(answer);
            agents.insert(agent);
        }
        ResumeAnswers {
            by_hash: Mutex::new(by_hash),
            agents,
        }
    }

    /// Whether calls of `agent` are on record (it must run where these answers are).
    pub fn holds_answers_of(&self, agent: &str) -> bool {
        self.agents.contains(agent)
    }

    fn take(&self, hash: &str) -> Option<StoredAnswer> {
        let mut by_hash = self.by_hash.lock().expect("not poisoned");
        let queue = by_hash.get_mut(hash)?;
        let answer = queue.pop_front();
        if queue.is_empty() {
            by_hash.remove(hash);
        }
        answer
    }

    /// Moves every answer out (a run consumes its own copy).
    pub fn drain(&self) -> ResumeAnswers {
        ResumeAnswers {
            by_hash: Mutex::new(std::mem::take(
                &mut *self.by_hash.lock().expect("not poisoned"),
            )),
            agents: self.agents.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.by_hash
            .lock()
            .expect("not poisoned")
            .values()
            .map(VecDeque::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Identical cacheable requests in flight, by request hash: the first is sent, the others
/// wait for its answer. Engine-wide, so concurrent runs share too.
#[derive(Default)]
pub(crate) struct InFlight {
    pub(crate) calls: Mutex<HashMap<String, watch::Receiver<Option<SharedResult>>>>,
}

type SharedResult = Result<Completion, ProviderError>;

/// How one call ended.
pub(crate) struct CallResult {
    pub result: Result<Completion, ProviderError>,
    pub source: CallSource,
    /// Dollars paid for this call by this run (zero when it was not sent); `None` when the
    /// price is unknown.
    pub cost: Option<f64>,
    /// Tokens paid for by this run (zero when the call was not sent).
    pub paid: Usage,
}

/// One agent's access to providers within a run.
pub(crate) struct Caller<'a> {
    pub run: &'a RunCtx,
    pub agent: &'a Agent,
    pub tx: &'a AgentTx,
}

impl Caller<'_> {
    /// One call to `profile`. `None` when the run was cancelled meanwhile. `call` numbers
    /// the agent's calls (1-based); `producer` is set for `generate` producers. With
    /// `announce`, the attempt is announced with `agent_started` once it has its slot (or its
    /// answer, when it needs no call).
    pub(crate) async fn call(
        &self,
        profile: &Arc<Profile>,
        mut request: CompletionRequest,
        call: u64,
        producer: Option<u32>,
        announce: bool,
    ) -> Option<CallResult> {
        let attempt = request.attempt;
        let sent = announce.then(|| (request.system.clone(), request.prompt.clone()));
        let announce = || {
            if let Some((system, prompt)) = &sent {
                self.tx.send(EventKind::AgentStarted {
                    agent: self.agent.name.clone(),
                    attempt,
                    profile: profile.name.clone(),
                    model: profile.model.clone(),
                });
                self.tx.send(EventKind::AgentPrompt {
                    agent: self.agent.name.clone(),
                    attempt,
                    system: system.clone(),
                    prompt: prompt.clone(),
                });
            }
        };
        let hash = call_identity(profile, &request);
        let policy = Cache::effective(self.agent.cache, profile.cache);
        let cacheable = !self.run.no_cache && matches!(policy, Cache::On { .. });
        let answered = |answer: StoredAnswer, source: CallSource| {
            let paid = source.is_paid();
            let completion = Completion {
                text: answer.text,
                usage: answer.usage,
                finish_reason: answer.finish_reason,
            };
            CallResult {
                cost: if paid { answer.cost_usd } else { Some(0.0) },
                paid: if paid {
                    completion.usage
                } else {
                    Usage::default()
                },
                result: Ok(completion),
                source,
            }
        };
        if let Some(answer) = self.run.resume.as_ref().and_then(|r| r.take(&hash)) {
            announce();
            let result = answered(answer, CallSource::Resume);
            self.finished(
                profile,
                &hash,
                call,
                attempt,
                producer,
                &result,
                Duration::ZERO,
            );
            return Some(result);
        }
        // Coalescing: the first of identical cacheable requests is the leader.
        let mut leader: Option<watch::Sender<Option<SharedResult>>> = None;
        if cacheable {
            let waiting = {
                let mut calls = self
                    .run
                    .engine
                    .in_flight
                    .calls
                    .lock()
                    .expect("not poisoned");
                match calls.get(&hash) {
                    Some(rx) => Some(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        calls.insert(hash.clone(), rx);
                        leader = Some(tx);
                        None
                    }
                }
            };
            if let Some(mut rx) = waiting {
                let shared = tokio::select! {
                    r = rx.wait_for(Option::is_some) => r.ok().and_then(|v| v.clone()),
                    () = self.run.cancel.cancelled() => return None,
                };
                // A leader that was cancelled leaves nothing: call ourselves.
                if let Some(Ok(completion)) = shared {
                    announce();
                    let answer = StoredAnswer {
                        text: completion.text,
                        usage: completion.usage,
                        cost_usd: None,
                        finish_reason: completion.finish_reason,
                    };
                    let result = answered(answer, CallSource::Coalesced);
                    self.finished(
                        profile,
                        &hash,
                        call,
                        attempt,
                        producer,
                        &result,
                        Duration::ZERO,
                    );
                    return Some(result);
                }
            }
            if let Some(store) = &self.run.engine.store {
                let ttl = match policy {
                    Cache::On { ttl } => ttl,
                    Cache::Off => None,
                };
                if let Some(answer) = store.cached_answer(&hash, ttl).await {
                    let completion = Completion {
                        text: answer.text.clone(),
                        usage: answer.usage,
                        finish_reason: answer.finish_reason.clone(),
                    };
                    announce();
                    let result = answered(answer, CallSource::Cache);
                    if let Some(tx) = leader.take() {
                        let _ = tx.send(Some(Ok(completion)));
                        self.run.engine.forget_in_flight(&hash);
                    }
                    self.finished(
                        profile,
                        &hash,
                        call,
                        attempt,
                        producer,
                        &result,
                        Duration::ZERO,
                    );
                    return Some(result);
                }
            }
        }
        // Whatever happens next, waiting followers must not wait forever.
        let _release = leader.as_ref().map(|_| ReleaseInFlight {
            run: self.run,
            hash: &hash,
        });
        // Admission: the profile's limits, a 429 cool-down, the circuit breaker's probe.
        // Waiting for them is not call time (#13): `timeout_seconds` starts once the request
        // is sent, the wait is bounded by the run (cancellation, `--timeout`) alone, and it
        // holds no global slot.
        let provider = self.run.providers.get(profile);
        let call_started = || {
            announce();
            self.tx.send(EventKind::CallStarted {
                agent: self.agent.name.clone(),
                call,
                attempt,
                profile: profile.name.clone(),
                model: profile.model.clone(),
                request_hash: hash.clone(),
            });
        };
        let (admission, permit) = loop {
            let admitted = tokio::select! {
                admitted = provider.admit(&request) => admitted,
                () = self.run.cancel.cancelled() => return None,
            };
            let admission = match admitted {
                Ok(admission) => admission,
                // Never sent (the breaker's probe failed while this call waited for it); an
                // attempt like any other, so the agent's retries wait for the next probe.
                Err(e) => {
                    call_started();
                    let result = CallResult {
                        result: Err(e),
                        source: CallSource::Provider,
                        cost: Some(0.0),
                        paid: Usage::default(),
                    };
                    if let Some(tx) = leader.take() {
                        let _ = tx.send(Some(result.result.clone()));
                    }
                    self.finished(
                        profile,
                        &hash,
                        call,
                        attempt,
                        producer,
                        &result,
                        Duration::ZERO,
                    );
                    return Some(result);
                }
            };
            let permit = tokio::select! {
                permit = Arc::clone(&self.run.engine.slots).acquire_owned() => permit.ok()?,
                () = self.run.cancel.cancelled() => return None,
            };
            // The endpoint may have failed, or a 429 come in, while this call waited for its
            // global slot: then it waits its turn again rather than go now.
            if !admission.is_stale() {
                break (admission, permit);
            }
        };
        call_started();
        let (deltas_tx, mut deltas) = mpsc::unbounded_channel::<String>();
        if self.run.stream {
            request.deltas = Some(deltas_tx);
        } else {
            drop(deltas_tx);
        }
        let forward = |text: String| {
            self.tx.send(EventKind::AgentDelta {
                agent: self.agent.name.clone(),
                attempt,
                text,
            });
        };
        let started = Instant::now();
        let timeout = self.agent.timeout;
        let sent = tokio::time::timeout(timeout, provider.complete(request));
        tokio::pin!(sent);
        let result = loop {
            tokio::select! {
                biased;
                () = self.run.cancel.cancelled() => return None,
                Some(text) = deltas.recv() => forward(text),
                r = &mut sent => break r.unwrap_or(Err(ProviderError::Deadline {
                    seconds: timeout.as_secs_f64(),
                })),
            }
        };
        while let Ok(text) = deltas.try_recv() {
            forward(text);
        }
        admission.finish(result.as_ref().map(|_| ()));
        drop(permit);
        let latency = started.elapsed();
        let paid = result.as_ref().map(|c| c.usage).unwrap_or_default();
        let cost = profile.price.and_then(|p| paid.cost(&p));
        let result = CallResult {
            result,
            source: CallSource::Provider,
            cost: if paid == Usage::default() {
                Some(0.0)
            } else {
                cost
            },
            paid,
        };
        if let Some(tx) = leader.take() {
            let _ = tx.send(Some(result.result.clone()));
        }
        self.finished(profile, &hash, call, attempt, producer, &result, latency);
        Some(result)
    }

    #[allow(clippy::too_many_arguments)]
    fn finished(
        &self,
        profile: &Profile,
        hash: &str,
        call: u64,
        attempt: u32,
        producer: Option<u32>,
        result: &CallResult,
        latency: Duration,
    ) {
        let (status, error_kind, error, response, finish) = match &result.result {
            Ok(c) => (
                CallStatus::Ok,
                None,
                None,
                Some(Arc::from(c.text.as_str())),
                c.finish_reason.clone(),
            ),
            Err(e) => (
                CallStatus::Error,
                Some(e.kind().to_string()),
                Some(e.to_string()),
                None,
                e.finish_reason(),
            ),
        };
        self.tx.send(EventKind::CallFinished(Box::new(CallFinished {
            agent: self.agent.name.clone(),
            call,
            attempt,
            profile: profile.name.clone(),
            model: profile.model.clone(),
            provider: profile.provider.to_string(),
            latency_ms: latency.as_millis() as u64,
            usage: result.paid,
            cost_usd: result.cost,
            finish_reason: finish.as_ref().map(|f| f.kind),
            finish_reason_raw: finish.map(|f| f.raw),
            status,
            error_kind,
            error,
            source: result.source,
            request_hash: hash.to_string(),
            producer,
            response,
        })));
    }

    /// An LLM agent's whole policy: the primary profile with its retries, then each fallback
    /// with its own; `response_format` answers are validated and retried with the error.
    pub(crate) async fn attempt_all(&self, prompt: &str, seed: u64) -> Report {
        let agent = self.agent;
        let chain: Vec<&Arc<Profile>> = std::iter::once(&agent.profile)
            .chain(&agent.fallbacks)
            .collect();
        let mut attempts = 0u32;
        let mut usage = Usage::default();
        let mut cost = Some(0.0);
        let mut calls_saved = 0u32;
        let mut errors: Vec<ProfileFailure> = Vec::new();
        let mut last_error = AgentError::new("unknown", "no profile was tried");
        let mut last_finish: Option<FinishReason> = None;
        let cancelled = |profile: &Profile, attempts, usage, cost| {
            let mut r = Report::new(
                AgentStatus::Cancelled,
                &profile.name,
                &profile.model,
                profile.provider.as_str(),
            );
            r.attempts = attempts;
            r.usage = usage;
            r.cost_usd = cost;
            r.failed(AgentError::cancelled())
        };
        for (p, profile) in chain.iter().enumerate() {
            let mut retry = 0u32;
            // Why the previous answer was rejected (`response_format`), told to the model.
            let mut rejection: Option<String> = None;
            let (error, finish) = loop {
                attempts += 1;
                tracing::debug!(agent = %agent.name, profile = %profile.name, attempt = attempts, "calling provider");
                let prompt = match &rejection {
                    Some(why) => format!(
                        "{prompt}\n\nYour previous answer was rejected: {why}\nReply again with only the JSON{}.",
                        if agent
                            .response_format
                            .as_ref()
                            .is_some_and(|f| f.schema().is_some())
                        {
                            " that matches the schema"
                        } else {
                            ""
                        }
                    ),
                    None => prompt.to_string(),
                };
                let request = CompletionRequest {
                    agent: agent.name.clone(),
                    system: agent.system_prompt.clone(),
                    prompt,
                    temperature: agent.temperature.or(profile.temperature),
                    max_tokens: agent.max_tokens.or(profile.max_tokens),
                    options: crate::providers::merged_options(&profile.options, &agent.options),
                    attempt: attempts,
                    seed,
                    deltas: None,
                    generation: None,
                    response_format: agent.response_format.clone(),
                };
                // Boxed: the call's state lives on the heap only while it is made, so the
                // agent's task stays small while it waits.
                let Some(answer) =
                    Box::pin(self.call(profile, request, u64::from(attempts), None, true)).await
                else {
                    return cancelled(profile, attempts - 1, usage, cost);
                };
                usage += answer.paid;
                cost = cost.zip(answer.cost).map(|(a, b)| a + b);
                if !answer.source.is_paid() {
                    calls_saved += 1;
                }
                if answer.source == super::event::CallSource::Cache
                    || answer.source == super::event::CallSource::Coalesced
                {
                    // Not a call: it does not count as an attempt.
                    attempts -= 1;
                }
                let result = answer.result.and_then(|c| {
                    check_answer(agent.response_format.as_ref(), c)
                        .map_err(|(why, _)| ProviderError::InvalidOutput { message: why })
                });
                match result {
                    Ok(completion) => {
                        let mut r = Report::new(
                            AgentStatus::Succeeded,
                            &profile.name,
                            &profile.model,
                            profile.provider.as_str(),
                        );
                        r.finish_reason = completion.finish_reason;
                        r.output = Some(completion.text);
                        r.attempts = attempts;
                        r.usage = usage;
                        r.cost_usd = cost;
                        r.failed_profiles = errors;
                        r.cached = !answer.source.is_paid();
                        r.calls_saved = calls_saved;
                        return r;
                    }
                    Err(ProviderError::InvalidOutput { message }) => {
                        let error = AgentError {
                            kind: "invalid_output".into(),
                            retryable: true,
                            message: format!(
                                "the answer is not valid JSON for `response_format`: {message}"
                            ),
                        };
                        if retry >= agent.retries {
                            break (error, None);
                        }
                        retry += 1;
                        tracing::warn!(agent = %agent.name, attempt = attempts, error = %error, "retrying with the validation error");
                        self.tx.send(EventKind::AgentRetrying {
                            agent: agent.name.clone(),
                            attempt: attempts,
                            error: error.message,
                            error_kind: Some(error.kind),
                            delay_ms: 0,
                        });
                        rejection = Some(message);
                    }
                    Err(e) => {
                        let error = AgentError::from(&e);
                        if !error.retryable || retry >= agent.retries {
                            break (error, e.finish_reason());
                        }
                        retry += 1;
                        let unit = xxh3_64_with_seed(
                            format!("{}/{}", agent.name, attempts).as_bytes(),
                            seed,
                        ) as f64
                            / u64::MAX as f64;
                        let delay =
                            backoff_delay(agent.retry_backoff, retry, e.retry_after(), unit);
                        tracing::warn!(
                            agent = %agent.name,
                            profile = %profile.name,
                            attempt = attempts,
                            error = %error,
                            delay_ms = delay.as_millis() as u64,
                            "retrying"
                        );
                        self.tx.send(EventKind::AgentRetrying {
                            agent: agent.name.clone(),
                            attempt: attempts,
                            error: error.message,
                            error_kind: Some(error.kind),
                            delay_ms: delay.as_millis() as u64,
                        });
                        // Boxed, like the call: only an agent that backs off carries a timer.
                        let waited = Box::pin(async {
                            tokio::select! {
                                () = tokio::time::sleep(delay) => true,
                                () = self.run.cancel.cancelled() => false,
                            }
                        })
                        .await;
                        if !waited {
                            return cancelled(profile, attempts, usage, cost);
                        }
                    }
                }
            };
            tracing::warn!(agent = %agent.name, profile = %profile.name, error = %error, "profile failed");
            if let Some(next) = chain.get(p + 1) {
                self.tx.send(EventKind::AgentFallback {
                    agent: agent.name.clone(),
                    from: profile.name.clone(),
                    to: next.name.clone(),
                    error: error.message.clone(),
                });
            }
            errors.push(ProfileFailure {
                profile: profile.name.clone(),
                error: error.message.clone(),
            });
            last_error = error;
            last_finish = finish;
        }
        if errors.len() > 1 {
            let each: Vec<String> = errors
                .iter()
                .map(|f| format!("`{}`: {}", f.profile, f.error))
                .collect();
            last_error.message = format!("every profile failed: {}", each.join("; "));
        }
        let last = chain.last().expect("the chain has the primary profile");
        let mut r = Report::new(
            AgentStatus::Failed,
            &last.name,
            &last.model,
            last.provider.as_str(),
        );
        r.attempts = attempts;
        r.usage = usage;
        r.cost_usd = cost;
        r.failed_profiles = errors;
        r.calls_saved = calls_saved;
        r.finish_reason = last_finish;
        r.failed(last_error)
    }
}

/// The identity of a call for resume, the cache and coalescing: the recording key
/// (provider, model, messages, settings), and the endpoint too, so two servers that serve a
/// model of the same name never share answers. Recordings keep the plain key.
fn call_identity(profile: &Profile, request: &CompletionRequest) -> String {
    let key = request_key(profile, request);
    match &profile.base_url {
        Some(base) => format!(
            "{:032x}",
            xxhash_rust::xxh3::xxh3_128(format!("{key}\u{0}{base}").as_bytes())
        ),
        None => key,
    }
}

/// Removes a leader's in-flight entry when it finishes or is dropped (cancelled), so later
/// identical requests do not wait on a call that will never answer.
struct ReleaseInFlight<'a> {
    run: &'a RunCtx,
    hash: &'a str,
}

impl Drop for ReleaseInFlight<'_> {
    fn drop(&mut self) {
        self.run.engine.forget_in_flight(self.hash);
    }
}

impl crate::nodes::generate::CallPolicy for Caller<'_> {
    async fn call(
        &self,
        profile: &Arc<Profile>,
        request: CompletionRequest,
        call: u64,
        producer: Option<u32>,
    ) -> Option<crate::nodes::generate::CallAnswer> {
        let started = Instant::now();
        let answer = Caller::call(self, profile, request, call, producer, false).await?;
        Some(crate::nodes::generate::CallAnswer {
            latency: started.elapsed(),
            paid: answer.paid,
            cost: answer.cost,
            saved: !answer.source.is_paid(),
            result: answer.result,
        })
    }

    fn cancelled(&self) -> &tokio_util::sync::CancellationToken {
        &self.run.cancel
    }
}
