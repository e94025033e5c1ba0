//! Classified provider failures: the retry policy matches on these, never on strings.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("request timed out")]
    Timeout,
    #[error("rate limited (HTTP 429){}", retry_hint(.retry_after))]
    RateLimited { retry_after: Option<Duration> },
    #[error("HTTP {status}: {body_excerpt}")]
    Http { status: u16, body_excerpt: String },
    #[error("connection failed: {message}")]
    Connection { message: String },
    #[error("could not decode the response: {message}")]
    Decode { message: String },
    #[error("authentication failed: {message}")]
    Auth { message: String },
    #[error("provider `{provider}` is not available in this version of orc")]
    Unavailable { provider: String },
}

fn retry_hint(after: &Option<Duration>) -> String {
    after.map_or_else(String::new, |d| {
        format!(", retry after {} ms", d.as_millis())
    })
}

impl ProviderError {
    /// Whether trying again can succeed: timeouts, connection errors, 408, 409, 429, 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Timeout
            | ProviderError::RateLimited { .. }
            | ProviderError::Connection { .. } => true,
            ProviderError::Http { status, .. } => {
                matches!(status, 408 | 409 | 429 | 500 | 502 | 503 | 504 | 529)
            }
            ProviderError::Decode { .. }
            | ProviderError::Auth { .. }
            | ProviderError::Unavailable { .. } => false,
        }
    }

    /// The provider's own hint of when to retry.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// Short machine-readable kind for JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Timeout => "timeout",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Http { .. } => "http",
            ProviderError::Connection { .. } => "connection",
            ProviderError::Decode { .. } => "decode",
            ProviderError::Auth { .. } => "auth",
            ProviderError::Unavailable { .. } => "unavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_retryable() {
        assert!(ProviderError::Timeout.is_retryable());
        assert!(
            ProviderError::Http {
                status: 503,
                body_excerpt: String::new()
            }
            .is_retryable()
        );
        assert!(
            !ProviderError::Http {
                status: 400,
                body_excerpt: String::new()
            }
            .is_retryable()
        );
        assert!(
            !ProviderError::Auth {
                message: String::new()
            }
            .is_retryable()
        );
    }
}
