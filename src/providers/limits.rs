//! Per-profile limits: calls in flight, requests per minute and tokens per minute (token
//! buckets from governor), and a shared cool-down after a 429 so one caller's rate limit slows
//! everyone using the profile, not just that caller. Waiters are served in arrival order: they
//! queue on a fair (FIFO) tokio mutex before asking the buckets.
//!
//! The limits can be shared with other processes (`orc worker`s on one Redis): a
//! `LimitBackend` hands out `SharedLimits` per profile, and the limiter asks them instead of
//! its own buckets. When the shared limits cannot be reached, the limiter falls back to its
//! own for a while (each process then holds the limits alone) and says so once.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Limits, Profile};

/// Where limits shared with other processes come from.
pub trait LimitBackend: Send + Sync {
    /// The shared limits of a profile (its `limits` and its 429 cool-down); `None` keeps
    /// them in this process.
    fn shared(&self, profile: &Profile) -> Option<Arc<dyn SharedLimits>>;
}

/// One profile's limits, held together with other processes.
#[async_trait]
pub trait SharedLimits: Send + Sync {
    /// Waits for the right to make one call of about `tokens` tokens. The lease is held for
    /// the call (its concurrency slot) and released when dropped.
    async fn admit(&self, tokens: u64) -> Result<Lease, String>;

    /// After a 429: nobody, in any process, calls this profile before `delay` has passed.
    async fn cool_down(&self, delay: Duration) -> Result<(), String>;
}

/// A shared concurrency slot, released when dropped.
pub type Lease = Option<Box<dyn Send + Sync>>;

/// How long the limiter keeps to its own buckets after the shared limits failed.
const DEGRADED_FOR: Duration = Duration::from_secs(5);

/// A profile's limits: its own, or shared ones with its own as the fallback.
pub struct Limiter {
    local: LocalLimiter,
    shared: Option<Arc<dyn SharedLimits>>,
    degraded_until: Mutex<Option<Instant>>,
}

impl Limiter {
    pub fn new(limits: &Limits) -> Limiter {
        Limiter::with_shared(limits, None)
    }

    pub fn with_shared(limits: &Limits, shared: Option<Arc<dyn SharedLimits>>) -> Limiter {
        Limiter {
            local: LocalLimiter::new(limits),
            shared,
            degraded_until: Mutex::new(None),
        }
    }

    fn shared_now(&self) -> Option<&Arc<dyn SharedLimits>> {
        let shared = self.shared.as_ref()?;
        let until = *self.degraded_until.lock().expect("not poisoned");
        until.is_none_or(|t| t <= Instant::now()).then_some(shared)
    }

    fn degrade(&self, error: &str) {
        let mut until = self.degraded_until.lock().expect("not poisoned");
        if until.is_none_or(|t| t <= Instant::now()) {
            tracing::warn!(error = %error, "shared limits unreachable; this process holds the limits alone for now");
        }
        *until = Some(Instant::now() + DEGRADED_FOR);
    }

    /// Waits for the right to make one call expected to use about `tokens` tokens.
    pub async fn admit(&self, tokens: u64) -> Slot {
        if let Some(shared) = self.shared_now() {
            match shared.admit(tokens).await {
                Ok(lease) => {
                    return Slot {
                        _permit: None,
                        _lease: lease,
                    };
                }
                Err(e) => self.degrade(&e),
            }
        }
        self.local.admit(tokens).await
    }

    /// Whether this process is in a 429 cool-down now.
    pub fn is_cooling_down(&self) -> bool {
        self.local
            .cool_until
            .lock()
            .expect("not poisoned")
            .is_some_and(|t| t > Instant::now())
    }

    /// After a 429: nobody calls this profile again before `delay` has passed.
    pub async fn cool_down(&self, delay: Duration) {
        self.local.cool_down(delay);
        if let Some(shared) = self.shared_now() {
            if let Err(e) = shared.cool_down(delay).await {
                self.degrade(&e);
            }
        }
    }
}

/// The limits of one process.
struct LocalLimiter {
    concurrency: Option<Arc<Semaphore>>,
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<(DefaultDirectRateLimiter, u32)>,
    queue: tokio::sync::Mutex<()>,
    cool_until: Mutex<Option<Instant>>,
}

/// A profile's concurrency slot (or shared lease), held for the duration of one call.
pub struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
    _lease: Lease,
}

impl LocalLimiter {
    fn new(limits: &Limits) -> LocalLimiter {
        // A per-minute budget is spent evenly: a burst of one second's worth, refilled
        // continuously, rather than all of it in the first instant.
        let bucket = |per_minute: u32| {
            let per_minute = NonZeroU32::new(per_minute.max(1)).expect("at least one");
            let burst = NonZeroU32::new((per_minute.get() / 60).max(1)).expect("at least one");
            RateLimiter::direct(Quota::per_minute(per_minute).allow_burst(burst))
        };
        LocalLimiter {
            concurrency: limits
                .max_concurrency
                .map(|n| Arc::new(Semaphore::new(n.max(1) as usize))),
            requests: limits.requests_per_minute.map(bucket),
            tokens: limits.tokens_per_minute.map(|t| {
                let burst = (t / 60).max(1);
                (bucket(t), burst)
            }),
            queue: tokio::sync::Mutex::new(()),
            cool_until: Mutex::new(None),
        }
    }

    fn is_unlimited(&self) -> bool {
        self.concurrency.is_none() && self.requests.is_none() && self.tokens.is_none()
    }

    async fn admit(&self, tokens: u64) -> Slot {
        if self.is_unlimited() && self.cool_until.lock().expect("not poisoned").is_none() {
            return Slot {
                _permit: None,
                _lease: None,
            };
        }
        {
            let _turn = self.queue.lock().await;
            self.wait_cool_down().await;
            if let Some(requests) = &self.requests {
                requests.until_ready().await;
            }
            if let Some((bucket, burst)) = &self.tokens {
                // A call larger than the bucket's burst waits for a full bucket.
                let n = NonZeroU32::new((tokens.min(u64::from(*burst))).max(1) as u32)
                    .expect("at least one");
                let _ = bucket.until_n_ready(n).await;
            }
        }
        let permit = match &self.concurrency {
            Some(s) => Arc::clone(s).acquire_owned().await.ok(),
            None => None,
        };
        // A 429 may have arrived while this call waited for its slot.
        self.wait_cool_down().await;
        Slot {
            _permit: permit,
            _lease: None,
        }
    }

    async fn wait_cool_down(&self) {
        loop {
            let until = *self.cool_until.lock().expect("not poisoned");
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t.into()).await,
                _ => break,
            }
        }
    }

    fn cool_down(&self, delay: Duration) {
        // Hints are bounded where they are read; a day more keeps this from ever panicking.
        let until = Instant::now() + delay.min(Duration::from_secs(86_400));
        let mut current = self.cool_until.lock().expect("not poisoned");
        if current.is_none_or(|c| c < until) {
            *current = Some(until);
        }
    }
}
