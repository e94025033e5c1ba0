//! Per-profile limits held in Redis, so they hold across every worker: requests and tokens
//! per minute (a reservation script, `scripts::RATE`), calls in flight (leases that expire
//! if their holder dies, `scripts::ACQUIRE`), and the 429 cool-down (`scripts::COOL`).
//! A profile is identified by its name: every process on the same Redis that uses a
//! profile of that name shares its limits. Plugged into the providers through
//! `providers::LimitBackend`; when Redis cannot be reached the providers fall back to
//! their own limits for a while.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use super::keys;
use super::scripts;
use crate::config::{Limits, Profile};
use crate::providers::{Lease, LimitBackend, SharedLimits};

/// How long a concurrency lease lasts without renewal (its holder renews it every third).
const LEASE: Duration = Duration::from_secs(30);
/// How long one admission may keep failing to reach Redis before the caller falls back.
const ATTEMPT: Duration = Duration::from_secs(2);

/// Hands out Redis-held limits per profile.
pub struct RedisLimits {
    conn: ConnectionManager,
    /// Names concurrency leases: unique per process and admission.
    holder: String,
    next: Arc<AtomicU64>,
}

impl RedisLimits {
    pub(super) fn new(conn: ConnectionManager, holder: String) -> RedisLimits {
        RedisLimits {
            conn,
            holder,
            next: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl LimitBackend for RedisLimits {
    fn shared(&self, profile: &Profile) -> Option<Arc<dyn SharedLimits>> {
        Some(Arc::new(ProfileLimits {
            conn: self.conn.clone(),
            limits: profile.limits.clone(),
            requests: keys::limit(&profile.name, "requests"),
            tokens: keys::limit(&profile.name, "tokens"),
            cool: keys::limit(&profile.name, "cool"),
            leases: keys::limit(&profile.name, "leases"),
            holder: self.holder.clone(),
            next: Arc::clone(&self.next),
        }))
    }
}

struct ProfileLimits {
    conn: ConnectionManager,
    limits: Limits,
    requests: String,
    tokens: String,
    cool: String,
    leases: String,
    holder: String,
    next: Arc<AtomicU64>,
}

/// A wait in milliseconds as a script answered it. Read defensively: whatever Redis holds
/// (`inf`, `NaN`, a negative or huge number) must not panic (issue 13); it is bounded by a
/// day, like every provider hint.
fn ms(text: &str) -> Duration {
    let ms = text.trim().parse::<f64>().unwrap_or(0.0);
    Duration::try_from_secs_f64(ms.clamp(0.0, 86_400_000.0) / 1000.0).unwrap_or(Duration::ZERO)
}

impl ProfileLimits {
    async fn rate(&self, tokens: u64) -> Result<(), String> {
        loop {
            let mut conn = self.conn.clone();
            let (wait, kind): (String, String) = tokio::time::timeout(
                ATTEMPT,
                scripts::RATE
                    .key(&self.requests)
                    .key(&self.tokens)
                    .key(&self.cool)
                    .arg(self.limits.requests_per_minute.unwrap_or(0))
                    .arg(self.limits.tokens_per_minute.unwrap_or(0))
                    .arg(tokens.max(1))
                    .invoke_async(&mut conn),
            )
            .await
            .map_err(|_| "no answer from Redis".to_string())?
            .map_err(|e| e.to_string())?;
            tokio::time::sleep(ms(&wait)).await;
            if kind == "ok" {
                return Ok(());
            }
        }
    }

    async fn acquire(&self, max: u32) -> Result<Lease, String> {
        let holder = format!(
            "{}:{}",
            self.holder,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let mut busy = Duration::from_millis(5);
        loop {
            let mut conn = self.conn.clone();
            let answer: String = tokio::time::timeout(
                ATTEMPT,
                scripts::ACQUIRE
                    .key(&self.leases)
                    .key(&self.cool)
                    .arg(max)
                    .arg(&holder)
                    .arg(LEASE.as_millis() as u64)
                    .invoke_async(&mut conn),
            )
            .await
            .map_err(|_| "no answer from Redis".to_string())?
            .map_err(|e| e.to_string())?;
            match answer.as_str() {
                "0" => break,
                // Every slot is held (possibly on another machine): ask again shortly.
                "-1" => {
                    let jitter = fastrand::f64() * 0.5 + 0.75;
                    tokio::time::sleep(busy.mul_f64(jitter)).await;
                    busy = (busy * 2).min(Duration::from_millis(100));
                }
                wait => tokio::time::sleep(ms(wait)).await,
            }
        }
        Ok(Some(Box::new(LeaseGuard::start(
            self.conn.clone(),
            self.leases.clone(),
            holder,
        ))))
    }
}

#[async_trait]
impl SharedLimits for ProfileLimits {
    async fn admit(&self, tokens: u64) -> Result<Lease, String> {
        // Like the local limiter: the rate budgets first, then a slot.
        self.rate(tokens).await?;
        match self.limits.max_concurrency {
            Some(max) => self.acquire(max.max(1)).await,
            None => Ok(None),
        }
    }

    async fn cool_down(&self, delay: Duration) -> Result<(), String> {
        let mut conn = self.conn.clone();
        let _: i64 = tokio::time::timeout(
            ATTEMPT,
            scripts::COOL
                .key(&self.cool)
                .arg(delay.as_millis() as u64)
                .invoke_async(&mut conn),
        )
        .await
        .map_err(|_| "no answer from Redis".to_string())?
        .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// A held concurrency slot: renewed while held, released when dropped.
struct LeaseGuard {
    renew: tokio::task::JoinHandle<()>,
    conn: ConnectionManager,
    leases: String,
    holder: String,
}

impl LeaseGuard {
    fn start(conn: ConnectionManager, leases: String, holder: String) -> LeaseGuard {
        let (c, l, h) = (conn.clone(), leases.clone(), holder.clone());
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                let mut conn = c.clone();
                let renewed: Result<i64, _> = scripts::RENEW
                    .key(&l)
                    .arg(&h)
                    .arg(LEASE.as_millis() as u64)
                    .invoke_async(&mut conn)
                    .await;
                if let Err(e) = renewed {
                    tracing::debug!(error = %e, "cannot renew a concurrency lease");
                }
            }
        });
        LeaseGuard {
            renew,
            conn,
            leases,
            holder,
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renew.abort();
        let mut conn = self.conn.clone();
        let leases = std::mem::take(&mut self.leases);
        let holder = std::mem::take(&mut self.holder);
        // Released in the background: a drop cannot wait. If this fails, the lease expires.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _: Result<i64, _> = redis::cmd("ZREM")
                    .arg(&leases)
                    .arg(&holder)
                    .query_async(&mut conn)
                    .await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_from_redis_never_panic() {
        assert_eq!(ms("250"), Duration::from_millis(250));
        assert_eq!(ms(" 1.5 "), Duration::from_micros(1500));
        assert_eq!(ms("-5"), Duration::ZERO);
        assert_eq!(ms("NaN"), Duration::ZERO);
        assert_eq!(ms("garbage"), Duration::ZERO);
        assert_eq!(ms("inf"), Duration::from_secs(86_400));
        assert_eq!(ms("1e300"), Duration::from_secs(86_400));
    }
}
