//! Bounds on every number in orc's files. The schema (`#[schemars(range(...))]` in `spec`)
//! and the semantic checks (`validate`, `profiles`) both read them from here, so
//! `validate`, `plan`, `invoke` and `test` agree on what loads, and no conversion further
//! on (`Duration`, allocation sizes) can meet a value that panics or asks for terabytes
//! (issue 13). The caps are far above any real use and far below trouble.

use std::time::Duration;

/// Shortest call timeout: a millisecond.
pub const MIN_TIMEOUT_SECONDS: f64 = 0.001;
/// Longest call timeout, first-byte timeout and circuit-breaker cool-down: a day.
pub const MAX_TIMEOUT_SECONDS: f64 = 86_400.0;
/// Longest run (`--timeout`, a `generate` node's `stop.seconds`): a week.
pub const MAX_RUN_SECONDS: f64 = 604_800.0;
/// Most retries of a call.
pub const MAX_RETRIES: u64 = 20;
/// Longest first retry delay, in milliseconds: ten minutes.
pub const MAX_RETRY_BACKOFF_MS: u64 = 600_000;
/// Most output tokens asked of a model.
pub const MAX_MAX_TOKENS: u64 = 1_000_000;
/// Highest sampling temperature any provider accepts.
pub const MAX_TEMPERATURE: f64 = 2.0;
/// Largest amount of money in a budget, stop condition or test: a million dollars.
pub const MAX_USD: f64 = 1_000_000.0;
/// Highest price per million tokens (ten dollars a token; tests use absurd prices to see
/// cost at all).
pub const MAX_PRICE_PER_MTOK: f64 = 10_000_000.0;
/// Most producer loops of a `generate` node (each is a task with its own prompts).
pub const MAX_PRODUCERS: u64 = 256;
/// Most items asked for per call.
pub const MAX_BATCH_SIZE: u64 = 1_000;
/// Most items fed back per prompt.
pub const MAX_FEEDBACK: u64 = 1_000;
/// Most calls per producer.
pub const MAX_ITERATIONS: u64 = 1_000_000;
/// Most unique items a `generate` node may aim for, and size its tracker for (a Bloom
/// filter for ten million items at 1% takes 12 MB).
pub const MAX_ITEMS: u64 = 10_000_000;
/// Lowest and highest false-positive rate of the tracker's Bloom filter.
pub const MIN_FALSE_POSITIVE_RATE: f64 = 0.000_001;
pub const MAX_FALSE_POSITIVE_RATE: f64 = 0.5;
/// Most calls in a row with few new items before a `generate` node stops.
pub const MAX_PATIENCE: u64 = 10_000;
/// Requests per minute a profile may allow.
pub const MAX_REQUESTS_PER_MINUTE: u64 = 1_000_000;
/// Tokens per minute a profile may allow.
pub const MAX_TOKENS_PER_MINUTE: u64 = 1_000_000_000;
/// Calls in flight per profile.
pub const MAX_CONCURRENCY: u64 = 10_000;
/// Consecutive failures before a circuit breaker opens.
pub const MAX_BREAKER_FAILURES: u64 = 1_000;
/// Longest simulated latency or jitter of the mock provider, in milliseconds: ten minutes.
pub const MAX_MOCK_LATENCY_MS: u64 = 600_000;
/// Most attempts the mock provider fails or answers badly on purpose.
pub const MAX_MOCK_ATTEMPTS: u64 = 1_000;
/// Largest optimizer weight.
pub const MAX_WEIGHT: f64 = 1_000.0;
/// Most tokens a test may allow a run (`expect: max_tokens`).
pub const MAX_TEST_TOKENS: u64 = 1_000_000_000_000;

/// How a bound reads in an error: `86400`, `0.001`.
pub fn show(limit: f64) -> String {
    serde_json::Number::from_f64(limit).map_or_else(
        || limit.to_string(),
        |n| {
            let text = n.to_string();
            text.strip_suffix(".0").map_or(text.clone(), str::to_string)
        },
    )
}

/// Checks a number against its bounds; the error is the problem in words, the same words
/// the schema check uses, so that a value refused twice reads as one error.
pub fn check(value: f64, min: f64, max: f64) -> Result<f64, String> {
    if !value.is_finite() {
        return Err("must be a finite number".to_string());
    }
    if value < min {
        return Err(format!("must be at least {}", show(min)));
    }
    if value > max {
        return Err(format!("must be at most {}", show(max)));
    }
    Ok(value)
}

/// A number of seconds within bounds, as a `Duration` (never a panicking conversion).
pub fn seconds(value: f64, min: f64, max: f64) -> Result<Duration, String> {
    let value = check(value, min, max)?;
    Duration::try_from_secs_f64(value).map_err(|e| e.to_string())
}

/// A whole number within bounds.
pub fn count(value: u64, min: u64, max: u64) -> Result<u64, String> {
    if value < min {
        return Err(format!("must be at least {min}"));
    }
    if value > max {
        return Err(format!("must be at most {max}"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_read_like_the_schema() {
        assert_eq!(show(86_400.0), "86400");
        assert_eq!(show(0.001), "0.001");
        assert_eq!(
            check(-1.0, 0.0, 1.0).unwrap_err(),
            "must be at least 0".to_string()
        );
        assert_eq!(
            seconds(1e300, MIN_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS).unwrap_err(),
            "must be at most 86400"
        );
        assert!(seconds(f64::NAN, 0.0, 1.0).is_err());
        assert_eq!(seconds(1.5, 0.0, 2.0).unwrap(), Duration::from_millis(1500));
        assert_eq!(count(0, 1, 2).unwrap_err(), "must be at least 1");
    }
}
