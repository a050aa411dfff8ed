//! Cron expressions (UTC, on croner): parsing and the times they name.

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;

use crate::error::{Error, Result};
use crate::model::Timestamp;

/// Parses a schedule: 5 fields (`minute hour day-of-month month day-of-week`) or 6
/// with seconds first.
pub(crate) fn parse(expr: &str) -> Result<Cron> {
    let fields = expr.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(Error::invalid(format!(
            "schedule {expr:?}: 5 fields (minute hour day-of-month month day-of-week), \
             or 6 with seconds first"
        )));
    }
    Cron::new(expr)
        .with_seconds_optional()
        .parse()
        .map_err(|e| Error::invalid(format!("schedule {expr:?}: {e}")))
}

/// Whether a schedule names seconds (6 fields), which Kubernetes cannot run.
pub fn has_seconds(expr: &str) -> bool {
    expr.split_whitespace().count() == 6
}

fn to_chrono(t: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn from_chrono(t: DateTime<Utc>) -> Timestamp {
    Timestamp(t.timestamp_millis())
}

/// The first time `expr` names strictly after `after` (`None`: never, or a bad
/// expression).
pub fn next_after(expr: &str, after: Timestamp) -> Option<Timestamp> {
    let cron = parse(expr).ok()?;
    cron.find_next_occurrence(&to_chrono(after), false)
        .ok()
        .map(from_chrono)
}

/// What fell due of `expr` in `(after, now]`: the latest such time, if it lies
/// within `deadline` of `now`. Earlier times of the window (downtime) are never
/// returned, so a scheduler calling this fires at most one run per call: after a
/// long outage, one catch-up run at most, and none past the deadline.
pub fn latest_due(
    expr: &str,
    after: Timestamp,
    now: Timestamp,
    deadline: Duration,
) -> Option<Timestamp> {
    let cron = parse(expr).ok()?;
    // Only the deadline's window can hold an answer: start there, so a long
    // outage costs no more iterations than a short one.
    let window_start = Timestamp(now.0.saturating_sub(deadline.as_millis() as i64) - 1);
    let from = after.max(window_start);
    let mut latest = None;
    let mut at = to_chrono(from);
    let end = to_chrono(now);
    while let Ok(next) = cron.find_next_occurrence(&at, false) {
        if next > end {
            break;
        }
        latest = Some(next);
        at = next;
    }
    latest.map(from_chrono)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        from_chrono(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn five_and_six_fields_parse_and_others_do_not() {
        for good in ["*/5 * * * *", "*/2 * * * * *", "0 3 * * 1-5"] {
            assert!(parse(good).is_ok(), "{good}");
        }
        for bad in ["", "* * *", "61 * * * *", "* * * * * * *", "every day"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(has_seconds("*/2 * * * * *"));
        assert!(!has_seconds("*/2 * * * *"));
    }

    #[test]
    fn the_latest_time_in_the_window_is_due_once() {
        let e = "*/5 * * * *";
        assert_eq!(
            latest_due(
                e,
                at("2026-01-01T00:00:00Z"),
                at("2026-01-01T00:05:01Z"),
                HOUR
            ),
            Some(at("2026-01-01T00:05:00Z"))
        );
        // Already handled: nothing.
        assert_eq!(
            latest_due(
                e,
                at("2026-01-01T00:05:00Z"),
                at("2026-01-01T00:09:59Z"),
                HOUR
            ),
            None
        );
        // Thirty missed times: only the latest.
        assert_eq!(
            latest_due(
                e,
                at("2026-01-01T00:00:00Z"),
                at("2026-01-01T02:31:00Z"),
                HOUR
            ),
            Some(at("2026-01-01T02:30:00Z"))
        );
        // The latest missed time is past the deadline: nothing.
        assert_eq!(
            latest_due(
                e,
                at("2026-01-01T00:00:00Z"),
                at("2026-01-01T02:34:00Z"),
                Duration::from_secs(60)
            ),
            None
        );
        assert_eq!(
            next_after(e, at("2026-01-01T00:05:00Z")),
            Some(at("2026-01-01T00:10:00Z"))
        );
    }
}
