//! A circuit breaker per provider endpoint: after `failures` consecutive endpoint failures
//! (timeouts, connection errors, 5xx) it opens and calls fail fast for `cool_down`; then it
//! lets `probes` calls through (half-open) and closes once one succeeds, or opens again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

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

pub struct CircuitBreaker {
    endpoint: String,
    failures: u32,
    cool_down: Duration,
    state: Mutex<State>,
}

impl CircuitBreaker {
    pub fn new(endpoint: String, failures: u32, cool_down: Duration) -> CircuitBreaker {
        CircuitBreaker {
            endpoint,
            failures: failures.max(1),
            cool_down,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// May a call go through now?
    pub fn before_call(&self) -> Result<(), ProviderError> {
        let mut state = self.state.lock().expect("not poisoned");
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } if Instant::now() < until => Err(ProviderError::CircuitOpen {
                endpoint: self.endpoint.clone(),
                retry_in: until - Instant::now(),
            }),
            State::Open { .. } => {
                *state = State::HalfOpen { in_flight: 1 };
                Ok(())
            }
            State::HalfOpen { in_flight } if in_flight < PROBES => {
                *state = State::HalfOpen {
                    in_flight: in_flight + 1,
                };
                Ok(())
            }
            State::HalfOpen { .. } => Err(ProviderError::CircuitOpen {
                endpoint: self.endpoint.clone(),
                retry_in: Duration::from_secs(1),
            }),
        }
    }

    /// Records the result of a call that `before_call` let through.
    pub fn after_call(&self, result: Result<(), &ProviderError>) {
        let mut state = self.state.lock().expect("not poisoned");
        let failed = matches!(result, Err(e) if e.is_endpoint_failure());
        *state = match (*state, failed) {
            (_, false) => State::Closed { failures: 0 },
            (State::Closed { failures }, true) if failures + 1 < self.failures => State::Closed {
                failures: failures + 1,
            },
            (_, true) => State::Open {
                until: Instant::now() + self.cool_down,
            },
        };
    }

    pub fn is_open(&self) -> bool {
        matches!(*self.state.lock().expect("not poisoned"), State::Open { until } if Instant::now() < until)
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

    #[test]
    fn opens_probes_and_closes() {
        let b = CircuitBreaker::new("x".into(), 2, Duration::from_millis(30));
        b.before_call().unwrap();
        b.after_call(Err(&fail()));
        b.before_call().unwrap();
        b.after_call(Err(&fail()));
        assert!(b.before_call().is_err(), "open after two failures");
        std::thread::sleep(Duration::from_millis(40));
        b.before_call().unwrap();
        assert!(b.before_call().is_err(), "one probe at a time");
        b.after_call(Ok(()));
        b.before_call().unwrap();
    }

    #[test]
    fn client_errors_do_not_count() {
        let b = CircuitBreaker::new("x".into(), 1, Duration::from_secs(30));
        b.before_call().unwrap();
        b.after_call(Err(&ProviderError::Auth {
            message: String::new(),
        }));
        assert!(b.before_call().is_ok());
    }
}
