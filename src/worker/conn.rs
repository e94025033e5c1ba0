//! Connections to Redis: the URL (shown without its password), the `redis` crate's
//! connection managers (which reconnect by themselves after Redis went away), and backoff
//! between attempts while Redis is unreachable.
//!
//! Each side keeps two managers: one for commands and one for blocking reads (`XREAD`,
//! `XREADGROUP` with `BLOCK`), because a blocking command holds up everything queued behind
//! it on a multiplexed connection.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long a blocking read waits for entries before it returns empty.
pub(super) const BLOCK: Duration = Duration::from_millis(1000);

/// Why Redis could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("`{url}` is not a Redis URL: {message}")]
    BadUrl { url: String, message: String },
    #[error("cannot reach Redis at `{url}`: {message}")]
    Unreachable { url: String, message: String },
}

/// A Redis URL, kept with a form safe to print (no password).
#[derive(Clone)]
pub struct RedisUrl {
    client: redis::Client,
    shown: String,
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl RedisUrl {
    /// `redis://[user:password@]host[:port][/db]`, or a bare `host:port`.
    pub fn parse(url: &str) -> Result<RedisUrl, RedisError> {
        let url = url.trim();
        let full = if url.contains("://") {
            url.to_string()
        } else {
            format!("redis://{url}")
        };
        let shown = redact(&full);
        let client = redis::Client::open(full.as_str()).map_err(|e| RedisError::BadUrl {
            url: shown.clone(),
            message: e.to_string(),
        })?;
        Ok(RedisUrl { client, shown })
    }

    /// A connection manager for commands: replies within `response` or the command fails
    /// (and is retried by the caller).
    pub(super) async fn manager(
        &self,
        response: Duration,
    ) -> Result<ConnectionManager, RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(response))
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(3);
        ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map_err(|e| RedisError::Unreachable {
                url: self.shown.clone(),
                message: e.to_string(),
            })
    }

    /// A connection manager for blocking reads.
    pub(super) async fn blocking_manager(&self) -> Result<ConnectionManager, RedisError> {
        self.manager(BLOCK + Duration::from_secs(5)).await
    }
}

/// The URL without its password.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((auth, host)) => {
            let user = auth.split(':').next().unwrap_or("");
            if auth.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                format!("{scheme}://{user}@{host}")
            }
        }
        None => url.to_string(),
    }
}

/// Waits between attempts while Redis is unreachable: 50 ms doubling to at most 2 s.
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(super) fn new() -> Backoff {
        Backoff {
            next: Duration::from_millis(50),
        }
    }

    pub(super) async fn wait(&mut self) {
        let jitter = fastrand::f64() * 0.5 + 0.75;
        tokio::time::sleep(self.next.mul_f64(jitter)).await;
        self.next = (self.next * 2).min(Duration::from_secs(2));
    }

    pub(super) fn reset(&mut self) {
        self.next = Duration::from_millis(50);
    }
}

/// Whether an error means the connection (not the command) failed: such commands are
/// retried once Redis is back.
pub(super) fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(
                redis::ServerErrorKind::BusyLoading
                    | redis::ServerErrorKind::TryAgain
                    | redis::ServerErrorKind::MasterDown
            )
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_never_shown() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact("redis://:secret@host"), "redis://:***@host");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
        let url = RedisUrl::parse("127.0.0.1:6390").expect("a bare host:port parses");
        assert_eq!(url.to_string(), "redis://127.0.0.1:6390");
    }
}
