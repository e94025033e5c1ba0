//! Per-profile limits: calls in flight, requests per minute and tokens per minute (token
//! buckets from governor), and a shared cool-down after a 429 so one caller's rate limit slows
//! everyone using the profile, not just that caller. Waiters are served in arrival order: they
//! queue on a fair (FIFO) tokio mutex before asking the buckets.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;

pub struct Limiter {
    concurrency: Option<Arc<Semaphore>>,
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<(DefaultDirectRateLimiter, u32)>,
    queue: tokio::sync::Mutex<()>,
    cool_until: Mutex<Option<Instant>>,
}

/// Held for the duration of one call.
pub struct Admission {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Limiter {
    pub fn new(limits: &Limits) -> Limiter {
        // A per-minute budget is spent evenly: a burst of one second's worth, refilled
        // continuously, rather than all of it in the first instant.
        let bucket = |per_minute: u32| {
            let per_minute = NonZeroU32::new(per_minute.max(1)).expect("at least one");
            let burst = NonZeroU32::new((per_minute.get() / 60).max(1)).expect("at least one");
            RateLimiter::direct(Quota::per_minute(per_minute).allow_burst(burst))
        };
        Limiter {
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

    pub fn is_unlimited(&self) -> bool {
        self.concurrency.is_none() && self.requests.is_none() && self.tokens.is_none()
    }

    /// Waits for the right to make one call expected to use about `tokens` tokens.
    pub async fn admit(&self, tokens: u64) -> Admission {
        if self.is_unlimited() && self.cool_until.lock().expect("not poisoned").is_none() {
            return Admission { _permit: None };
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
        Admission { _permit: permit }
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

    /// After a 429: nobody calls this profile again before `delay` has passed.
    pub fn cool_down(&self, delay: Duration) {
        let until = Instant::now() + delay;
        let mut current = self.cool_until.lock().expect("not poisoned");
        if current.is_none_or(|c| c < until) {
            *current = Some(until);
        }
    }
}
