//! The HTTP side shared by every remote provider: one pooled `reqwest::Client`, separate
//! connect / first-byte / total timeouts, mapping of HTTP failures to `ProviderError`
//! (with `Retry-After`, `retry-after-ms` and the provider's own error type), a small line
//! splitter for SSE and NDJSON streams, and the cap on a response's size: no body is read
//! past the profile's `max_response_bytes`, so memory stays bounded whatever a server sends.

use std::sync::OnceLock;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::HeaderMap;

use super::ProviderError;
use super::credentials::ApiKey;

/// Time allowed to open a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default cap on a response body (`max_response_bytes`): far above any real answer, far
/// below what would hurt the machine.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 32 * 1024 * 1024;

/// Most of an error body read for its message: the rest is never shown.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// How long to wait for the body, and how much of it to accept.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Longest wait for the next chunk.
    pub idle: Duration,
    /// Most bytes a whole body may have.
    pub max_bytes: u64,
}

impl ReadLimits {
    pub fn for_profile(profile: &crate::config::Profile, idle: Duration) -> ReadLimits {
        ReadLimits {
            idle,
            max_bytes: profile
                .max_response_bytes
                .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
        }
    }
}

/// How a successful response's body is framed, by its content type. Clients read what the
/// server sent, not what they asked for: a server may stream to a plain request, or answer
/// a streamed one with one JSON document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Json,
    /// `text/event-stream`
    Sse,
    /// `application/x-ndjson` (Ollama)
    NdJson,
}

pub fn framing(response: &reqwest::Response) -> Framing {
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("text/event-stream") {
        Framing::Sse
    } else if content_type.contains("ndjson") || content_type.contains("jsonl") {
        Framing::NdJson
    } else {
        Framing::Json
    }
}

/// The one client of the process: pooled connections, shared by every profile.
pub fn client() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            // rustls needs one crypto provider per process; ring builds quickly and has no
            // system dependencies. Installing twice is harmless (the second call fails).
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .pool_max_idle_per_host(1024)
                .user_agent(concat!("orc/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("the HTTP client configuration is valid")
        })
        .clone()
}

/// Sends a request and waits for the response head at most `first_byte`; a non-success
/// status becomes a classified error (the body is read for the provider's error type).
pub async fn send(
    request: reqwest::RequestBuilder,
    first_byte: Duration,
    secret: Option<&ApiKey>,
) -> Result<reqwest::Response, ProviderError> {
    let redact = |text: &str| match secret {
        Some(key) if key.expose().len() >= 4 => text.replace(key.expose(), "[REDACTED]"),
        _ => text.to_string(),
    };
    // Logs show the method, URL and body, never the headers (they carry the key).
    if tracing::enabled!(tracing::Level::TRACE) {
        if let Some(built) = request.try_clone().and_then(|b| b.build().ok()) {
            let body = built
                .body()
                .and_then(|b| b.as_bytes())
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            tracing::trace!(method = %built.method(), url = %redact(built.url().as_str()), body = %redact(&excerpt(&body)), "request");
        }
    }
    let response = match tokio::time::timeout(first_byte, request.send()).await {
        Err(_) => return Err(ProviderError::Timeout),
        Ok(Err(e)) => return Err(transport_error(&e)),
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    tracing::debug!(status = status.as_u16(), url = %response.url(), "response");
    if status.is_success() {
        return Ok(response);
    }
    let headers = response.headers().clone();
    let limits = ReadLimits {
        idle: first_byte,
        max_bytes: MAX_ERROR_BODY,
    };
    // Only the start of an error body matters; a huge one is cut, never read whole.
    let body = match read_capped(response, limits).await {
        Ok(bytes) | Err(Capped::TooLarge(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(Capped::Failed(_)) => String::new(),
    };
    let body = redact(&body);
    tracing::trace!(status = status.as_u16(), body = %excerpt(&body), "error response");
    Err(status_error(status.as_u16(), &headers, &body))
}

/// Why a capped read stopped early.
enum Capped {
    /// The body is larger than the cap; what was read up to it.
    TooLarge(Vec<u8>),
    Failed(ProviderError),
}

/// Reads a body up to `limits.max_bytes`, waiting at most `limits.idle` for each chunk.
/// A declared `Content-Length` past the cap fails before anything is read.
async fn read_capped(response: reqwest::Response, limits: ReadLimits) -> Result<Vec<u8>, Capped> {
    if response
        .content_length()
        .is_some_and(|n| n > limits.max_bytes)
    {
        return Err(Capped::TooLarge(Vec::new()));
    }
    let cap = usize::try_from(limits.max_bytes).unwrap_or(usize::MAX);
    let mut body: Vec<u8> = Vec::with_capacity(
        response
            .content_length()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
            .min(cap),
    );
    let mut stream = response.bytes_stream();
    loop {
        match tokio::time::timeout(limits.idle, stream.next()).await {
            Err(_) => return Err(Capped::Failed(ProviderError::Timeout)),
            Ok(None) => return Ok(body),
            Ok(Some(Err(e))) => return Err(Capped::Failed(stream_broken(&e))),
            Ok(Some(Ok(chunk))) => {
                let wanted = (body.len() + chunk.len()).min(cap);
                if wanted > body.capacity() {
                    // Doubling, but never past the cap: a body cut at the cap must not
                    // hold twice the cap's memory.
                    let target = (body.capacity() * 2).max(wanted).min(cap);
                    body.reserve_exact(target - body.len());
                }
                if body.len() + chunk.len() > cap {
                    let room = cap - body.len();
                    body.extend_from_slice(&chunk[..room]);
                    return Err(Capped::TooLarge(body));
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}

/// Reads a whole JSON body within `limits`.
pub async fn json_body(
    response: reqwest::Response,
    limits: ReadLimits,
) -> Result<serde_json::Value, ProviderError> {
    let bytes = match read_capped(response, limits).await {
        Ok(bytes) => bytes,
        Err(Capped::TooLarge(_)) => {
            return Err(ProviderError::ResponseTooLarge {
                limit: limits.max_bytes,
            });
        }
        Err(Capped::Failed(e)) => return Err(e),
    };
    serde_json::from_slice(&bytes).map_err(|e| ProviderError::Decode {
        message: format!("{e} in `{}`", excerpt(&String::from_utf8_lossy(&bytes))),
    })
}

/// `OLLAMA_HOST`-style addresses may omit the scheme: `localhost:11434`.
pub fn with_scheme(address: &str) -> String {
    let address = address.trim().trim_end_matches('/');
    if address.starts_with("http://") || address.starts_with("https://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

/// Maps a transport error.
pub fn transport_error(error: &reqwest::Error) -> ProviderError {
    if error.is_timeout() {
        ProviderError::Timeout
    } else if error.is_decode() {
        ProviderError::Decode {
            message: error.to_string(),
        }
    } else {
        // Connection refused, reset, DNS, TLS: all worth another try.
        let mut message = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        ProviderError::Connection { message }
    }
}

/// A retry hint in seconds from a server: never negative, at most a day, `None` when it is
/// not a number at all (`NaN`); a server's `1e300` must not panic (issue 13).
fn hint_seconds(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs.clamp(0.0, 86_400.0)).ok()
}

/// The provider's hint of when to retry: `retry-after-ms`, or `Retry-After` in seconds or
/// as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return hint_seconds(ms / 1000.0);
    }
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<f64>() {
        return hint_seconds(secs);
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Error `type` and `code` and message of a JSON error body, in the shapes providers use:
/// `{"error": {"type", "code", "message"}}` (OpenAI, Anthropic), `{"error": {"status",
/// "message"}}` (Gemini), `{"error": "text"}` (Ollama, llama.cpp), `{"message": ...}`.
pub struct ErrorBody {
    pub kind: Option<String>,
    pub message: String,
    pub json: Option<serde_json::Value>,
}

pub fn parse_error_body(body: &str) -> ErrorBody {
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let error = json.as_ref().and_then(|j| j.get("error"));
    let kind = error
        .and_then(|e| {
            e.get("code")
                .and_then(|c| c.as_str())
                .or_else(|| e.get("type").and_then(|t| t.as_str()))
                .or_else(|| e.get("status").and_then(|t| t.as_str()))
        })
        .map(String::from);
    let message = error
        .and_then(|e| {
            e.get("message")
                .and_then(|m| m.as_str())
                .or_else(|| e.as_str())
        })
        .or_else(|| {
            json.as_ref()
                .and_then(|j| j.get("message"))
                .and_then(|m| m.as_str())
        })
        .map_or_else(|| excerpt(body), excerpt);
    ErrorBody {
        kind,
        message,
        json,
    }
}

/// At most 300 characters of a body, on one line.
pub fn excerpt(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 300 {
        let mut s: String = one_line.chars().take(297).collect();
        s.push_str("...");
        s
    } else {
        one_line
    }
}

/// Error types that mean "this will not succeed by retrying", whatever the status.
const NEVER_RETRY: [&str; 3] = [
    "insufficient_quota",
    "enforced_spend_limit_reached",
    "billing_hard_limit_reached",
];

/// Classifies a non-success HTTP response.
pub fn status_error(status: u16, headers: &HeaderMap, body: &str) -> ProviderError {
    let parsed = parse_error_body(body);
    let kind = parsed.kind.clone();
    let hint =
        || retry_after(headers).or_else(|| parsed.json.as_ref().and_then(gemini_retry_delay));
    if kind.as_deref().is_some_and(|k| NEVER_RETRY.contains(&k))
        || parsed.message.contains("insufficient_quota")
    {
        return ProviderError::Quota {
            message: parsed.message.clone(),
            quota_id: None,
            retry_after: None,
        };
    }
    // A per-day quota resets hours from now: retrying within a run cannot succeed (#12).
    if status == 429 {
        if let Some(quota_id) = parsed.json.as_ref().and_then(per_day_quota) {
            return ProviderError::Quota {
                message: parsed.message.clone(),
                quota_id: Some(quota_id),
                retry_after: hint(),
            };
        }
        if parsed.message.contains("(RPD)") || parsed.message.contains("requests per day") {
            return ProviderError::Quota {
                message: parsed.message.clone(),
                quota_id: None,
                retry_after: hint(),
            };
        }
    }
    match status {
        401 | 403 => ProviderError::Auth {
            message: format!("HTTP {status}: {}", parsed.message),
        },
        429 => ProviderError::RateLimited {
            retry_after: hint(),
            message: parsed.message,
        },
        _ => ProviderError::Http {
            status,
            kind,
            body_excerpt: parsed.message,
            retry_after: retry_after(headers),
        },
    }
}

/// Gemini's `error.details[].retryDelay` ("1.5s") of a `google.rpc.RetryInfo`.
fn gemini_retry_delay(json: &serde_json::Value) -> Option<Duration> {
    json.pointer("/error/details")?
        .as_array()?
        .iter()
        .find_map(|d| d.get("retryDelay")?.as_str())
        .and_then(|s| s.trim_end_matches('s').parse::<f64>().ok())
        .and_then(hint_seconds)
}

/// The id of a per-day quota among Gemini's `google.rpc.QuotaFailure` violations
/// (`GenerateRequestsPerDayPerProjectPerModel-FreeTier`).
fn per_day_quota(json: &serde_json::Value) -> Option<String> {
    json.pointer("/error/details")?
        .as_array()?
        .iter()
        .filter(|d| {
            d.get("@type")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|t| t.ends_with("google.rpc.QuotaFailure"))
        })
        .filter_map(|d| d.get("violations")?.as_array())
        .flatten()
        .filter_map(|v| v.get("quotaId")?.as_str())
        .find(|id| id.contains("PerDay"))
        .map(String::from)
}

/// Reads a response body as complete lines, calling `on_line` for each (without the line
/// ending). Waits at most `limits.idle` for each chunk, so a stalled stream fails as a
/// timeout, and stops with `ResponseTooLarge` past `limits.max_bytes` in all.
pub async fn for_each_line(
    response: reqwest::Response,
    limits: ReadLimits,
    mut on_line: impl FnMut(&str) -> Result<(), ProviderError>,
) -> Result<(), ProviderError> {
    if response
        .content_length()
        .is_some_and(|n| n > limits.max_bytes)
    {
        return Err(ProviderError::ResponseTooLarge {
            limit: limits.max_bytes,
        });
    }
    let mut stream = response.bytes_stream();
    let mut buffer: Vec<u8> = Vec::new();
    let mut total: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout(limits.idle, stream.next()).await {
            Err(_) => return Err(ProviderError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(stream_broken(&e)),
            Ok(Some(Ok(chunk))) => chunk,
        };
        total += chunk.len() as u64;
        if total > limits.max_bytes {
            return Err(ProviderError::ResponseTooLarge {
                limit: limits.max_bytes,
            });
        }
        // Only the new bytes are searched, and consumed lines are dropped once per chunk,
        // so a long line or a chunk of many lines costs linear time.
        let mut searched = buffer.len();
        buffer.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(pos) = buffer[searched..].iter().position(|&b| b == b'\n') {
            let end = searched + pos;
            let text = String::from_utf8_lossy(&buffer[start..end]);
            on_line(text.trim_end_matches('\r'))?;
            start = end + 1;
            searched = start;
        }
        buffer.drain(..start);
    }
    if !buffer.is_empty() {
        let text = String::from_utf8_lossy(&buffer).into_owned();
        on_line(text.trim_end_matches('\r'))?;
    }
    Ok(())
}

fn stream_broken(error: &reqwest::Error) -> ProviderError {
    ProviderError::StreamBroken {
        message: transport_error(error).to_string(),
    }
}

/// Server-sent events: collects `data:` lines into events, separated by blank lines.
#[derive(Default)]
pub struct SseParser {
    event: Option<String>,
    data: Vec<String>,
}

/// One server-sent event.
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

impl SseParser {
    /// Feeds one line; returns an event when a blank line completes one.
    pub fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            if self.data.is_empty() && self.event.is_none() {
                return None;
            }
            return Some(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data).join("\n"),
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => self.data.push(value.to_string()),
            "event" => self.event = Some(value.to_string()),
            _ => {}
        }
        None
    }

    /// The last event, if the stream ended without a blank line.
    pub fn finish(&mut self) -> Option<SseEvent> {
        self.line("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut h = HeaderMap::new();
        let future =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        h.insert("retry-after", future.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30));
    }

    #[test]
    fn classifies_bodies() {
        let h = HeaderMap::new();
        let quota = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        assert!(matches!(
            status_error(429, &h, quota),
            ProviderError::Quota { .. }
        ));
        let spend =
            r#"{"type":"error","error":{"type":"enforced_spend_limit_reached","message":"limit"}}"#;
        assert!(matches!(
            status_error(400, &h, spend),
            ProviderError::Quota { .. }
        ));
        assert!(matches!(
            status_error(401, &h, "nope"),
            ProviderError::Auth { .. }
        ));
        let gemini = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","message":"slow down","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1.5s"}]}}"#;
        match status_error(429, &h, gemini) {
            ProviderError::RateLimited { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_millis(1500)))
            }
            other => panic!("{other:?}"),
        }
        match status_error(
            529,
            &h,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ) {
            e @ ProviderError::Http { .. } => assert!(e.is_retryable()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_per_day_quota_is_not_a_rate_limit() {
        let h = HeaderMap::new();
        let per_day = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","message":"quota","details":[
            {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
            {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"22s"}]}}"#;
        match status_error(429, &h, per_day) {
            e @ ProviderError::Quota { .. } => {
                assert!(!e.is_retryable());
                let message = e.to_string();
                assert!(
                    message.contains("PerDay") && message.contains("22s"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        let per_minute = per_day.replace("PerDay", "PerMinute");
        assert!(matches!(
            status_error(429, &h, &per_minute),
            ProviderError::RateLimited { .. }
        ));
        let rpd = r#"{"error":{"message":"Rate limit reached for gpt-4o on requests per day (RPD): Limit 200","type":"requests","code":"rate_limit_exceeded"}}"#;
        assert!(matches!(
            status_error(429, &h, rpd),
            ProviderError::Quota { .. }
        ));
    }

    #[test]
    fn sse_events() {
        let mut p = SseParser::default();
        assert!(p.line("event: message_start").is_none());
        assert!(p.line("data: {\"a\":1}").is_none());
        let e = p.line("").unwrap();
        assert_eq!(e.event.as_deref(), Some("message_start"));
        assert_eq!(e.data, "{\"a\":1}");
        assert!(p.line(": ping").is_none());
        assert!(p.line("").is_none());
    }
}
