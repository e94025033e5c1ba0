//! Retry delays: exponential backoff with jitter, or the provider's own hint.

use std::time::Duration;

/// The longest orc waits between two attempts, whatever the backoff says.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Delay before retry number `retry` (1 for the first retry): `base * 2^(retry-1)`, capped,
/// with "equal jitter" (between half and all of it) so callers that failed together do not
/// retry together. A provider hint (`Retry-After`) wins when present.
pub fn backoff_delay(
    base: Duration,
    retry: u32,
    hint: Option<Duration>,
    unit_random: f64,
) -> Duration {
    if let Some(hint) = hint {
        return hint.min(MAX_BACKOFF * 4);
    }
    let exp = base
        .saturating_mul(
            1u32.checked_shl(retry.saturating_sub(1))
                .unwrap_or(u32::MAX),
        )
        .min(MAX_BACKOFF);
    exp.mul_f64(0.5 + 0.5 * unit_random.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_with_bounded_jitter() {
        let base = Duration::from_millis(100);
        assert_eq!(
            backoff_delay(base, 1, None, 1.0),
            Duration::from_millis(100)
        );
        assert_eq!(
            backoff_delay(base, 3, None, 1.0),
            Duration::from_millis(400)
        );
        assert_eq!(
            backoff_delay(base, 3, None, 0.0),
            Duration::from_millis(200)
        );
        assert_eq!(backoff_delay(base, 60, None, 1.0), MAX_BACKOFF);
    }

    #[test]
    fn provider_hint_wins() {
        let hint = Some(Duration::from_millis(1234));
        assert_eq!(
            backoff_delay(Duration::from_millis(100), 1, hint, 0.3),
            Duration::from_millis(1234)
        );
    }
}
