//! Cron jobs: commands a service runs on a schedule from its live release.
//!
//! A service declares them in [`crate::Service::cron`] ([`CronJob`]: a name, a cron
//! expression in UTC, a shell command line, a [`Concurrency`] policy, a timeout and
//! a starting deadline). The [`CronScheduler`] fires them through a [`CronRunner`]
//! (the engine runs each command in a fresh instance of the live release) and
//! records every run, skipped ones included, as a [`CronRun`] in the store.
//!
//! After the control plane was down, missed runs are not fired in a burst: each job
//! gets at most one catch-up run, for its latest missed time, and only if that time
//! is within the job's starting deadline (as Kubernetes' `startingDeadlineSeconds`).

mod engine;
mod job;
mod schedule;
mod scheduler;

pub use job::{
    parse_duration, Concurrency, CronJob, CronOutcome, CronRun, OutputTail, ScheduledRun,
};
pub use schedule::{has_seconds, latest_due, next_after};
pub use scheduler::{CronConfig, CronRunner, CronScheduler, JobOutcome, JobRequest, TickReport};
