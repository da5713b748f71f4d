//! The request's deadline: when the caller stops waiting. Set from an inbound
//! `grpc-timeout`; any code serving the request can read the remaining budget and give
//! outbound calls less, so a callee always gives up before its caller.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// The deadline of the request this task serves, if its caller set one.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// Time left before the deadline (zero once it has passed); `None` without a deadline.
pub fn remaining() -> Option<Duration> {
    current().map(|d| d.saturating_duration_since(Instant::now()))
}

/// Whether the deadline has passed: work for this request should stop, not start.
pub fn expired() -> bool {
    remaining().is_some_and(|r| r.is_zero())
}

/// Runs `fut` with `deadline` as the current deadline; an outer, earlier deadline wins.
pub async fn scope<F: Future>(deadline: Instant, fut: F) -> F::Output {
    DEADLINE.scope(effective(deadline), fut).await
}

/// Runs `f` with `deadline` as the current deadline (an outer, earlier one wins): the
/// synchronous form of [`scope`], for a hand-written future that sets the deadline around
/// each poll of what it wraps instead of wrapping it in one more future.
pub fn sync_scope<R>(deadline: Instant, f: impl FnOnce() -> R) -> R {
    DEADLINE.sync_scope(effective(deadline), f)
}

/// `deadline`, or the current one if that is earlier.
fn effective(deadline: Instant) -> Instant {
    current().map_or(deadline, |outer| outer.min(deadline))
}

/// Parses a `grpc-timeout` value: 1–8 ASCII digits and a unit (`H`, `M`, `S`, `m`, `u`,
/// `n`), as the gRPC over HTTP/2 spec defines it.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a budget as a `grpc-timeout` value, in the finest unit that fits 8 digits.
pub fn format_grpc_timeout(budget: Duration) -> String {
    let nanos = budget.as_nanos();
    for (unit, per) in [
        ("n", 1u128),
        ("u", 1_000),
        ("m", 1_000_000),
        ("S", 1_000_000_000),
    ] {
        let n = nanos.div_ceil(per);
        if n < 100_000_000 {
            return format!("{n}{unit}");
        }
    }
    format!("{}M", budget.as_secs().div_ceil(60).min(99_999_999))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_spec_says() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "100", "123456789m", "1x", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formatting_round_trips_without_shortening_the_budget() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_millis(300),
            Duration::from_secs(5),
            Duration::from_secs(86_400),
        ] {
            let parsed = parse_grpc_timeout(&format_grpc_timeout(d)).unwrap();
            assert!(parsed >= d, "{d:?} -> {parsed:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_shrinks_with_time_and_inner_scopes_cannot_extend_it() {
        assert_eq!(remaining(), None);
        let deadline = Instant::now() + Duration::from_millis(300);
        scope(deadline, async {
            assert_eq!(remaining(), Some(Duration::from_millis(300)));
            tokio::time::advance(Duration::from_millis(100)).await;
            assert_eq!(remaining(), Some(Duration::from_millis(200)));
            let later = Instant::now() + Duration::from_secs(10);
            scope(later, async {
                assert_eq!(remaining(), Some(Duration::from_millis(200)));
            })
            .await;
            tokio::time::advance(Duration::from_millis(250)).await;
            assert!(expired());
        })
        .await;
    }
}
