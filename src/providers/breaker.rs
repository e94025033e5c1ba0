//! A circuit breaker per provider endpoint: after `failures` consecutive endpoint failures
//! (timeouts, connection errors, 5xx) it opens for `cool_down`; then it lets `PROBES` calls
//! through (half-open) and closes once one succeeds, or opens again.
//!
//! Calls do not fail fast on an open breaker: they wait for its probe (#13, "retry time is
//! not call time"). Only when a probe this call waited for fails does the call fail, with
//! `circuit_open` (it was never sent). So every attempt spent on a dead endpoint stands for
//! one real test of it, a dead endpoint sees one request per cool-down, and a run against it
//! still ends: each agent's attempts run out, one probe at a time. The waiting happens during
//! admission, before the call's `timeout_seconds` starts; the run's cancellation bounds it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::ProviderError;

pub(super) const DEFAULT_FAILURES: u32 = 5;
pub(super) const DEFAULT_COOL_DOWN: Duration = Duration::from_secs(30);
const PROBES: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { in_flight: u32 },
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Probes that failed so far: a waiter that sees this grow knows its probe failed.
    failed_probes: u64,
}

pub struct CircuitBreaker {
    endpoint: String,
    failures: u32,
    cool_down: Duration,
    inner: Mutex<Inner>,
    /// Woken on every change of state, for the calls waiting on a probe.
    changed: Notify,
}

/// What a waiting call does next.
enum Next {
    Go(bool),
    Fail(Duration),
    SleepUntil(Instant),
    AwaitProbe,
}

impl CircuitBreaker {
    pub fn new(endpoint: String, failures: u32, cool_down: Duration) -> CircuitBreaker {
        CircuitBreaker {
            endpoint,
            failures: failures.max(1),
            cool_down,
            inner: Mutex::new(Inner {
                state: State::Closed { failures: 0 },
                failed_probes: 0,
            }),
            changed: Notify::new(),
        }
    }

    /// Waits until a call may go to the endpoint: at once while closed; while open, until
    /// this call is the probe or a probe succeeded. Fails, unsent, when a probe this call
    /// waited for failed. The pass must be told how the call ended (`Pass::finish`).
    pub async fn pass(self: &Arc<Self>) -> Result<Pass, ProviderError> {
        let start = self.inner.lock().expect("not poisoned").failed_probes;
        loop {
            // Registered before the state is read, so a change in between is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.next(start) {
                Next::Go(probe) => {
                    return Ok(Pass {
                        breaker: Arc::clone(self),
                        probe,
                        settled: false,
                    });
                }
                Next::Fail(retry_in) => {
                    return Err(ProviderError::CircuitOpen {
                        endpoint: self.endpoint.clone(),
                        retry_in,
                    });
                }
                Next::SleepUntil(until) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until.into()) => {}
                        () = changed => {}
                    }
                }
                Next::AwaitProbe => changed.await,
            }
        }
    }

    fn next(&self, start: u64) -> Next {
        let mut inner = self.inner.lock().expect("not poisoned");
        let now = Instant::now();
        match inner.state {
            State::Closed { .. } => Next::Go(false),
            State::Open { until } if inner.failed_probes > start => {
                Next::Fail(until.saturating_duration_since(now))
            }
            State::Open { until } if now < until => Next::SleepUntil(until),
            State::Open { .. } => {
                inner.state = State::HalfOpen { in_flight: 1 };
                Next::Go(true)
            }
            State::HalfOpen { in_flight } if in_flight < PROBES => {
                inner.state = State::HalfOpen {
                    in_flight: in_flight + 1,
                };
                Next::Go(true)
            }
            State::HalfOpen { .. } => Next::AwaitProbe,
        }
    }

    /// Records how a call that was let through ended.
    fn settle(&self, probe: bool, result: Result<(), &ProviderError>) {
        // The call policy's own deadline (`timeout_seconds`) says the endpoint did not answer.
        let failed = matches!(result, Err(e) if e.is_endpoint_failure() || matches!(e, ProviderError::Deadline { .. }));
        let mut inner = self.inner.lock().expect("not poisoned");
        let state = inner.state;
        inner.state = match (state, failed) {
            (_, false) => State::Closed { failures: 0 },
            (State::Closed { failures }, true) if failures + 1 < self.failures => State::Closed {
                failures: failures + 1,
            },
            (_, true) => State::Open {
                until: Instant::now() + self.cool_down,
            },
        };
        if probe && failed {
            inner.failed_probes += 1;
        }
        if matches!(inner.state, State::Open { .. }) && !matches!(state, State::Open { .. }) {
            tracing::debug!(endpoint = %self.endpoint, probe, "circuit breaker open");
        }
        if inner.state != state {
            self.changed.notify_waiters();
        }
    }

    /// A call that was let through was not made, or was given up without an answer (the
    /// run was cancelled): it says nothing about the endpoint, but a probe's turn goes to
    /// the next caller.
    fn abandon(&self, probe: bool) {
        if !probe {
            return;
        }
        let mut inner = self.inner.lock().expect("not poisoned");
        if let State::HalfOpen { in_flight } = inner.state {
            inner.state = State::HalfOpen {
                in_flight: in_flight.saturating_sub(1),
            };
            self.changed.notify_waiters();
        }
    }
}

/// A call's way past the breaker, held while it is made.
pub struct Pass {
    breaker: Arc<CircuitBreaker>,
    probe: bool,
    settled: bool,
}

impl Pass {
    /// The breaker opened (or a probe went out) since this pass was given while it was
    /// closed: the call should wait for the probe instead.
    pub fn is_stale(&self) -> bool {
        !self.probe
            && !matches!(
                self.breaker.inner.lock().expect("not poisoned").state,
                State::Closed { .. }
            )
    }

    /// Tells the breaker how the call ended.
    pub fn finish(mut self, result: Result<(), &ProviderError>) {
        self.settled = true;
        self.breaker.settle(self.probe, result);
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.abandon(self.probe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail() -> ProviderError {
        ProviderError::Http {
            status: 503,
            kind: None,
            body_excerpt: String::new(),
            retry_after: None,
        }
    }

    fn breaker(failures: u32, cool_down_ms: u64) -> Arc<CircuitBreaker> {
        Arc::new(CircuitBreaker::new(
            "x".into(),
            failures,
            Duration::from_millis(cool_down_ms),
        ))
    }

    /// The pass, if it is given within `ms` milliseconds.
    async fn within(b: &Arc<CircuitBreaker>, ms: u64) -> Option<Result<Pass, ProviderError>> {
        tokio::time::timeout(Duration::from_millis(ms), b.pass())
            .await
            .ok()
    }

    #[tokio::test]
    async fn opens_then_waits_for_the_probe_instead_of_failing() {
        let b = breaker(2, 100);
        b.pass().await.unwrap().finish(Err(&fail()));
        b.pass().await.unwrap().finish(Err(&fail()));
        assert!(
            within(&b, 20).await.is_none(),
            "open: a call waits for the cool-down"
        );
        let probe = b.pass().await.expect("the probe goes after the cool-down");
        assert!(probe.probe);
        // A second call waits for the probe's answer, and goes when it succeeds.
        let waiter = tokio::spawn({
            let b = Arc::clone(&b);
            async move { b.pass().await.map(|p| p.probe) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one probe at a time");
        probe.finish(Ok(()));
        assert!(!waiter.await.unwrap().unwrap(), "closed again");
    }

    #[tokio::test]
    async fn a_failed_probe_fails_its_waiters_unsent() {
        let b = breaker(1, 50);
        b.pass().await.unwrap().finish(Err(&fail()));
        let probe = b.pass().await.unwrap();
        let waiter = tokio::spawn({
            let b = Arc::clone(&b);
            async move { b.pass().await.err() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        probe.finish(Err(&ProviderError::Deadline { seconds: 1.0 }));
        let error = waiter.await.unwrap().expect("the waiter fails");
        assert_eq!(error.kind(), "circuit_open");
        // A call that arrives now waits for the next probe.
        let next = b.pass().await.expect("the next probe");
        assert!(next.probe);
    }

    #[tokio::test]
    async fn an_abandoned_probe_lets_the_next_caller_probe() {
        let b = breaker(1, 10);
        b.pass().await.unwrap().finish(Err(&fail()));
        let probe = b.pass().await.unwrap();
        let waiter = tokio::spawn({
            let b = Arc::clone(&b);
            async move { b.pass().await.map(|p| p.probe) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(probe);
        assert!(
            waiter.await.unwrap().unwrap(),
            "the waiter became the probe"
        );
    }

    #[tokio::test]
    async fn client_errors_do_not_count() {
        let b = breaker(1, 30_000);
        b.pass().await.unwrap().finish(Err(&ProviderError::Auth {
            message: String::new(),
        }));
        assert!(within(&b, 100).await.is_some_and(|p| p.is_ok()));
    }
}
