//! Classified provider failures: the retry policy matches on these, never on strings.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("request timed out (no response or stream data in time)")]
    Timeout,
    #[error("timed out after {}s (timeout_seconds)", trim_float(*.seconds))]
    Deadline { seconds: f64 },
    #[error("rate limited (HTTP 429){}: {message}", retry_hint(.retry_after))]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    #[error("HTTP {status}{}: {body_excerpt}", .kind.as_ref().map(|k| format!(" ({k})")).unwrap_or_default())]
    Http {
        status: u16,
        /// The provider's error type or code, e.g. `overloaded_error`.
        kind: Option<String>,
        body_excerpt: String,
        retry_after: Option<Duration>,
    },
    #[error("connection failed: {message}")]
    Connection { message: String },
    #[error("the response stream broke off: {message}")]
    StreamBroken { message: String },
    #[error("could not decode the response: {message}")]
    Decode { message: String },
    #[error("authentication failed: {message}")]
    Auth { message: String },
    #[error("quota or spend limit exhausted: {message}{}{}", quota_id_note(.quota_id), retry_note(.retry_after))]
    Quota {
        message: String,
        /// The provider's quota id, e.g. Gemini's `GenerateRequestsPerDayPerProjectPerModel`.
        quota_id: Option<String>,
        /// The wait the provider asked for; orc does not retry within a run, it reports it.
        retry_after: Option<Duration>,
    },
    /// The model declined to answer (OpenAI `refusal`, Anthropic `stop_reason: refusal`).
    #[error("the model refused to answer: {refusal}")]
    Refused {
        refusal: String,
        /// The provider's finish reason of the refused answer (`stop`, `refusal`).
        finish: Option<String>,
    },
    /// The provider's safety system blocked the prompt (Gemini `promptFeedback.blockReason`)
    /// or the whole answer.
    #[error("the provider blocked the {} (`{reason}`)", if *.prompt { "prompt" } else { "answer" })]
    Blocked { reason: String, prompt: bool },
    /// The response grew past the profile's `max_response_bytes`.
    #[error("the response is larger than {limit} bytes (`max_response_bytes` of the profile)")]
    ResponseTooLarge { limit: u64 },
    #[error("no API key: set {variable} or run `orc auth set {provider}`")]
    MissingKey { variable: String, provider: String },
    #[error("circuit breaker open for {endpoint}: it kept failing, its probe too; next probe in {}s", trim_float(.retry_in.as_secs_f64()))]
    CircuitOpen {
        endpoint: String,
        retry_in: Duration,
    },
    #[error("provider `{provider}` is not available in this version of orc")]
    Unavailable { provider: String },
    #[error(
        "agent `{agent}` made a request that is not in the recording `{path}`; record it again with `--record`"
    )]
    NotRecorded { agent: String, path: String },
    /// The answer arrived but does not satisfy the agent's `response_format`.
    #[error("invalid output: {message}")]
    InvalidOutput { message: String },
}

fn trim_float(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn quota_id_note(id: &Option<String>) -> String {
    id.as_ref()
        .map_or_else(String::new, |id| format!(" (quota `{id}`)"))
}

fn retry_note(after: &Option<Duration>) -> String {
    after.map_or_else(String::new, |d| {
        format!(
            "; the provider suggests retrying in {}s, so it is not retried now",
            trim_float(d.as_secs_f64())
        )
    })
}

fn retry_hint(after: &Option<Duration>) -> String {
    after.map_or_else(String::new, |d| {
        format!(", retry after {} ms", d.as_millis())
    })
}

impl ProviderError {
    /// The same error with every occurrence of `secret` replaced: some servers echo the key
    /// they were sent in their error messages.
    pub fn redact(self, secret: &str) -> ProviderError {
        if secret.len() < 4 {
            return self;
        }
        let r = |s: String| s.replace(secret, "[REDACTED]");
        match self {
            ProviderError::RateLimited {
                retry_after,
                message,
            } => ProviderError::RateLimited {
                retry_after,
                message: r(message),
            },
            ProviderError::Http {
                status,
                kind,
                body_excerpt,
                retry_after,
            } => ProviderError::Http {
                status,
                kind: kind.map(r),
                body_excerpt: r(body_excerpt),
                retry_after,
            },
            ProviderError::Connection { message } => ProviderError::Connection {
                message: r(message),
            },
            ProviderError::StreamBroken { message } => ProviderError::StreamBroken {
                message: r(message),
            },
            ProviderError::Decode { message } => ProviderError::Decode {
                message: r(message),
            },
            ProviderError::Auth { message } => ProviderError::Auth {
                message: r(message),
            },
            ProviderError::Quota {
                message,
                quota_id,
                retry_after,
            } => ProviderError::Quota {
                message: r(message),
                quota_id,
                retry_after,
            },
            ProviderError::Refused { refusal, finish } => ProviderError::Refused {
                refusal: r(refusal),
                finish,
            },
            other => other,
        }
    }

    /// Whether trying again can succeed: timeouts, connection errors, broken streams, 408,
    /// 409, 429, 5xx, Anthropic's 529, and an open circuit breaker whose probe failed (the
    /// next attempt waits for the next probe). Never auth, bad requests or exhausted quota.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Timeout
            | ProviderError::Deadline { .. }
            | ProviderError::RateLimited { .. }
            | ProviderError::Connection { .. }
            | ProviderError::StreamBroken { .. }
            | ProviderError::CircuitOpen { .. } => true,
            ProviderError::Http { status, .. } => {
                matches!(status, 408 | 409 | 429 | 500 | 502 | 503 | 504 | 529)
            }
            ProviderError::Decode { .. }
            | ProviderError::Auth { .. }
            | ProviderError::Quota { .. }
            | ProviderError::Refused { .. }
            | ProviderError::Blocked { .. }
            | ProviderError::ResponseTooLarge { .. }
            | ProviderError::MissingKey { .. }
            | ProviderError::Unavailable { .. }
            | ProviderError::InvalidOutput { .. }
            | ProviderError::NotRecorded { .. } => false,
        }
    }

    /// Whether this failure says the endpoint is unhealthy (for the circuit breaker).
    pub fn is_endpoint_failure(&self) -> bool {
        match self {
            ProviderError::Timeout
            | ProviderError::Connection { .. }
            | ProviderError::StreamBroken { .. } => true,
            ProviderError::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The provider's own hint of when to retry.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. }
            | ProviderError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The finish reason an error stands for: a refusal, or a block by the safety filter.
    pub fn finish_reason(&self) -> Option<super::FinishReason> {
        use super::{FinishKind, FinishReason};
        match self {
            ProviderError::Refused { finish, .. } => Some(FinishReason::new(
                FinishKind::Refused,
                finish.as_deref().unwrap_or("refusal"),
            )),
            ProviderError::Blocked { reason, .. } => Some(FinishReason::new(
                FinishKind::ContentFilter,
                reason.as_str(),
            )),
            _ => None,
        }
    }

    /// Short machine-readable kind for JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Timeout | ProviderError::Deadline { .. } => "timeout",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Http { .. } => "http",
            ProviderError::Connection { .. } => "connection",
            ProviderError::StreamBroken { .. } => "stream_broken",
            ProviderError::Decode { .. } => "decode",
            ProviderError::Auth { .. } => "auth",
            ProviderError::Quota { .. } => "quota",
            ProviderError::Refused { .. } => "refused",
            ProviderError::Blocked { .. } => "blocked",
            ProviderError::ResponseTooLarge { .. } => "response_too_large",
            ProviderError::MissingKey { .. } => "missing_key",
            ProviderError::CircuitOpen { .. } => "circuit_open",
            ProviderError::Unavailable { .. } => "unavailable",
            ProviderError::InvalidOutput { .. } => "invalid_output",
            ProviderError::NotRecorded { .. } => "not_recorded",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16) -> ProviderError {
        ProviderError::Http {
            status,
            kind: None,
            body_excerpt: String::new(),
            retry_after: None,
        }
    }

    #[test]
    fn classifies_retryable() {
        assert!(ProviderError::Timeout.is_retryable());
        for s in [408, 409, 429, 500, 502, 503, 504, 529] {
            assert!(http(s).is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert!(!http(s).is_retryable(), "{s}");
        }
        assert!(
            !ProviderError::Auth {
                message: String::new()
            }
            .is_retryable()
        );
        assert!(
            !ProviderError::Quota {
                message: String::new(),
                quota_id: None,
                retry_after: Some(Duration::from_secs(22)),
            }
            .is_retryable()
        );
        for e in [
            ProviderError::Refused {
                refusal: "no".into(),
                finish: None,
            },
            ProviderError::Blocked {
                reason: "SAFETY".into(),
                prompt: true,
            },
            ProviderError::ResponseTooLarge { limit: 10 },
        ] {
            assert!(!e.is_retryable(), "{e}");
            assert!(!e.is_endpoint_failure(), "{e}");
        }
    }
}
