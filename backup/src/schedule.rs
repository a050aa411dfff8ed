//! Scheduled backups: a background task that, once a minute, backs up every volume
//! whose cron expression (5 fields, UTC) fell due since it last looked.

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use wharf_core::{Error, Result, VolumeRef};

use crate::Backups;

/// Checks a cron expression (`minute hour day-of-month month day-of-week`).
pub fn validate_cron(expr: &str) -> Result<()> {
    parse(expr).map(drop)
}

fn parse(expr: &str) -> Result<Cron> {
    if expr.split_whitespace().count() != 5 {
        return Err(Error::invalid(format!(
            "schedule {expr:?}: 5 fields (minute hour day-of-month month day-of-week)"
        )));
    }
    // `FromStr` does not parse (croner 2): `parse` does.
    Cron::new(expr)
        .parse()
        .map_err(|e| Error::invalid(format!("schedule {expr:?}: {e}")))
}

/// Whether `expr` fell due in `(after, until]`.
pub(crate) fn due(expr: &str, after: DateTime<Utc>, until: DateTime<Utc>) -> bool {
    parse(expr)
        .ok()
        .and_then(|c| c.find_next_occurrence(&after, false).ok())
        .is_some_and(|next| next <= until)
}

/// Starts the scheduler: each tick, every volume of every project whose schedule
/// fell due since the last tick is backed up (one at a time). `resolve` maps a
/// project id and volume name to the project's name and the volume (`None`: the
/// project is gone, skipped).
pub fn spawn_scheduler<F, Fut>(
    backups: Backups,
    tick: Duration,
    resolve: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(String, String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<(String, VolumeRef)>> + Send,
{
    tokio::spawn(async move {
        let mut last = Utc::now();
        loop {
            tokio::time::sleep(tick).await;
            let now = Utc::now();
            for (project_id, settings) in backups.projects_with_settings() {
                for (volume, policy) in &settings.volumes {
                    let Some(expr) = &policy.schedule else {
                        continue;
                    };
                    if !due(expr, last, now) {
                        continue;
                    }
                    let Some((name, vref)) = resolve(project_id.clone(), volume.clone()).await
                    else {
                        continue;
                    };
                    if let Err(e) = backups.backup_volume_scheduled(&name, &vref).await {
                        tracing::warn!(project = %name, volume = %volume, error = %e, "scheduled backup could not start");
                    }
                }
            }
            last = now;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_schedule_is_due_once_its_time_passed() {
        let e = "30 2 * * *";
        assert!(due(
            e,
            at("2026-01-01T02:29:00Z"),
            at("2026-01-01T02:30:00Z")
        ));
        assert!(!due(
            e,
            at("2026-01-01T02:30:00Z"),
            at("2026-01-01T02:31:00Z")
        ));
        assert!(!due(
            e,
            at("2026-01-01T01:00:00Z"),
            at("2026-01-01T02:29:59Z")
        ));
    }

    #[test]
    fn bad_expressions_are_refused() {
        assert!(validate_cron("*/15 * * * *").is_ok());
        for bad in ["", "* * *", "61 * * * *", "* * * * * *", "every day"] {
            assert!(validate_cron(bad).is_err(), "{bad}");
        }
    }
}
