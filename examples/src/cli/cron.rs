//! `wharf cron ls|runs`: a service's cron jobs and the history of their runs.

use wharf_core::{CronRun, Timestamp};
use wharf_server::client::CliError;
use wharf_server::dto::CronJobView;

use super::args::CronAction;
use super::output::{print_table, printable};

/// `wharf cron ...`.
pub(crate) async fn run(action: CronAction) -> Result<i32, CliError> {
    match action {
        CronAction::Ls { target, remote } => {
            let (scope, service) = target.resolve()?;
            let path = format!("{}/cron", scope.service(&service));
            let jobs: Vec<CronJobView> = remote.client()?.get(&path).await?;
            if jobs.is_empty() {
                println!("{} has no cron jobs", scope.label(&service));
                return Ok(0);
            }
            let now = Timestamp::now();
            print_table(
                &["JOB", "SCHEDULE", "CONCURRENCY", "NEXT", "LAST", "COMMAND"],
                jobs.iter().map(|j| {
                    vec![
                        j.job.name.clone(),
                        j.job.schedule.clone(),
                        j.job.concurrency.as_str().to_owned(),
                        j.next_run_at.map_or("-".into(), |t| when(t, now)),
                        j.last_run.as_ref().map_or("-".into(), |r| {
                            format!("{} {}", r.outcome.as_str(), when(r.scheduled_for, now))
                        }),
                        printable(&j.job.command).into_owned(),
                    ]
                }),
            );
            Ok(0)
        }
        CronAction::Runs {
            job,
            limit,
            output,
            target,
            remote,
        } => {
            let (scope, service) = target.resolve()?;
            let mut path = format!("{}/cron/runs?limit={}", scope.service(&service), limit);
            if let Some(j) = &job {
                wharf_core::validate_name(j).map_err(|e| e.message().to_owned())?;
                path.push_str(&format!("&job={j}"));
            }
            let runs: Vec<CronRun> = remote.client()?.get(&path).await?;
            if runs.is_empty() {
                println!("no cron runs of {} yet", scope.label(&service));
                return Ok(0);
            }
            let now = Timestamp::now();
            let row = |r: &CronRun| {
                vec![
                    r.id.to_string(),
                    r.job.clone(),
                    when(r.scheduled_for, now),
                    r.outcome.as_str().to_owned(),
                    r.exit_code.map_or("-".into(), |c| c.to_string()),
                    r.ended_at
                        .map_or("-".into(), |e| duration(e.0 - r.started_at.0)),
                    printable(&r.reason).into_owned(),
                ]
            };
            let header = [
                "RUN",
                "JOB",
                "SCHEDULED",
                "OUTCOME",
                "EXIT",
                "TOOK",
                "REASON",
            ];
            if !output {
                print_table(&header, runs.iter().map(row));
                return Ok(0);
            }
            for r in &runs {
                print_table(&header, std::iter::once(row(r)));
                for line in r.output.lines() {
                    println!("    {}", printable(line));
                }
                println!();
            }
            Ok(0)
        }
    }
}

/// `t` relative to `now`: `in 4m`, `12s ago`.
fn when(t: Timestamp, now: Timestamp) -> String {
    let d = (t.0 - now.0) / 1000;
    if d >= 0 {
        format!("in {}", duration(d * 1000))
    } else {
        format!("{} ago", duration(-d * 1000))
    }
}

/// Milliseconds as `850ms`, `42s`, `7m`, `3h`, `2d`.
fn duration(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_relative_to_now() {
        let now = Timestamp(1_000_000);
        assert_eq!(when(Timestamp(1_000_000 + 240_000), now), "in 4m");
        assert_eq!(when(Timestamp(1_000_000 - 12_000), now), "12s ago");
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(3 * 3_600_000), "3h");
    }
}
