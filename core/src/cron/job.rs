//! What a cron job is ([`CronJob`]) and what one run of it left behind ([`CronRun`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{validate_name, CronRunId, ProjectId, ServiceId, Timestamp};

/// A command a service runs on a schedule, from its live release (its artifact and
/// env), in an instance of its own that is removed when the command ends.
///
/// ```
/// use wharf_core::{Concurrency, CronJob};
/// let mut job = CronJob::new("cleanup", "*/5 * * * *", "python3 cleanup.py --old");
/// job.concurrency = Concurrency::Replace;
/// assert!(job.validate().is_ok());
/// assert_eq!(job.argv(), ["sh", "-c", "python3 cleanup.py --old"]);
/// job.schedule = "every day".into();
/// assert!(job.validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CronJob {
    /// Its name, unique in the service (see [`validate_name`]).
    pub name: String,
    /// When it runs: a cron expression in UTC, 5 fields (`minute hour day-of-month
    /// month day-of-week`) or 6 with seconds first (not on Kubernetes, whose
    /// CronJobs count in minutes).
    pub schedule: String,
    /// A shell command line, run as `sh -c COMMAND` (like a Procfile line).
    pub command: String,
    /// What happens when a run falls due while the previous one still runs.
    #[serde(default)]
    pub concurrency: Concurrency,
    /// How long a run may take before it is stopped (and recorded `timed_out`). In
    /// milliseconds on the wire; 1 hour when absent.
    #[serde(with = "crate::model::duration_ms", default = "default_timeout")]
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub timeout: Duration,
    /// How late a run may still start: after the control plane was down, the
    /// latest missed run is started once if it fell due at most this long ago, and
    /// not at all otherwise (Kubernetes' `startingDeadlineSeconds`). In milliseconds
    /// on the wire; 1 hour when absent.
    #[serde(with = "crate::model::duration_ms", default = "default_deadline")]
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub starting_deadline: Duration,
}

fn default_timeout() -> Duration {
    CronJob::DEFAULT_TIMEOUT
}

fn default_deadline() -> Duration {
    CronJob::DEFAULT_STARTING_DEADLINE
}

impl CronJob {
    /// The timeout of a job that sets none.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
    /// The starting deadline of a job that sets none.
    pub const DEFAULT_STARTING_DEADLINE: Duration = Duration::from_secs(3600);
    /// The shortest timeout.
    pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);
    /// The longest timeout (a day: a job running longer is a service).
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
    /// The shortest starting deadline (shorter, a scheduler tick could miss it).
    pub const MIN_STARTING_DEADLINE: Duration = Duration::from_secs(10);
    /// The longest starting deadline.
    pub const MAX_STARTING_DEADLINE: Duration = Duration::from_secs(7 * 24 * 3600);
    /// The longest command line.
    pub const MAX_COMMAND_BYTES: usize = 4096;

    /// A job with the default concurrency (`forbid`), timeout and deadline.
    pub fn new(
        name: impl Into<String>,
        schedule: impl Into<String>,
        command: impl Into<String>,
    ) -> Self {
        CronJob {
            name: name.into(),
            schedule: schedule.into(),
            command: command.into(),
            concurrency: Concurrency::default(),
            timeout: Self::DEFAULT_TIMEOUT,
            starting_deadline: Self::DEFAULT_STARTING_DEADLINE,
        }
    }

    /// The argv it runs: `["sh", "-c", command]`.
    pub fn argv(&self) -> Vec<String> {
        vec!["sh".into(), "-c".into(), self.command.clone()]
    }

    /// Checks its name, schedule, command, timeout and deadline.
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name).map_err(|e| e.context("cron job"))?;
        let ctx = |e: Error| e.context(format!("cron job {}", self.name));
        super::schedule::parse(&self.schedule).map_err(ctx)?;
        if self.command.trim().is_empty() {
            return Err(ctx(Error::invalid("the command is empty")));
        }
        if self.command.len() > Self::MAX_COMMAND_BYTES || self.command.contains('\0') {
            return Err(ctx(Error::invalid(format!(
                "the command must be at most {} bytes without NUL",
                Self::MAX_COMMAND_BYTES
            ))));
        }
        let within = |d: Duration, lo: Duration, hi: Duration| (lo..=hi).contains(&d);
        if !within(self.timeout, Self::MIN_TIMEOUT, Self::MAX_TIMEOUT) {
            return Err(ctx(Error::invalid(format!(
                "timeout must be from {} s to {} s, not {} ms",
                Self::MIN_TIMEOUT.as_secs(),
                Self::MAX_TIMEOUT.as_secs(),
                self.timeout.as_millis()
            ))));
        }
        if !within(
            self.starting_deadline,
            Self::MIN_STARTING_DEADLINE,
            Self::MAX_STARTING_DEADLINE,
        ) {
            return Err(ctx(Error::invalid(format!(
                "starting_deadline must be from {} s to {} s, not {} ms",
                Self::MIN_STARTING_DEADLINE.as_secs(),
                Self::MAX_STARTING_DEADLINE.as_secs(),
                self.starting_deadline.as_millis()
            ))));
        }
        Ok(())
    }

    /// Checks every job of a service and that their names are unique.
    pub fn validate_all(jobs: &[CronJob]) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for j in jobs {
            j.validate()?;
            if !seen.insert(j.name.as_str()) {
                return Err(Error::invalid(format!(
                    "cron job {} is declared twice",
                    j.name
                )));
            }
        }
        Ok(())
    }
}

/// What a run that falls due does while an earlier run of its job still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// It does not start (it is recorded [`CronOutcome::Skipped`]).
    #[default]
    Forbid,
    /// It starts beside the earlier run.
    Allow,
    /// The earlier run is stopped (recorded [`CronOutcome::Replaced`]) and it starts.
    Replace,
}

impl Concurrency {
    /// Its name in `wharf.toml` and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Concurrency::Forbid => "forbid",
            Concurrency::Allow => "allow",
            Concurrency::Replace => "replace",
        }
    }
}

impl std::str::FromStr for Concurrency {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "forbid" => Ok(Concurrency::Forbid),
            "allow" => Ok(Concurrency::Allow),
            "replace" => Ok(Concurrency::Replace),
            other => Err(Error::invalid(format!(
                "concurrency {other:?}: use forbid, allow or replace"
            ))),
        }
    }
}

/// How a run ended (or that it still runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CronOutcome {
    /// Started, not ended yet.
    Running,
    /// The command exited 0.
    Succeeded,
    /// The command exited non-zero, could not start, or the control plane stopped
    /// while it ran (see the run's `reason`).
    Failed,
    /// It ran past the job's timeout and was stopped.
    TimedOut,
    /// It did not start: an earlier run still ran and the job forbids overlaps.
    Skipped,
    /// It was stopped because a newer run replaced it.
    Replaced,
}

impl CronOutcome {
    /// Its name on the wire and in the SQL stores.
    pub fn as_str(self) -> &'static str {
        match self {
            CronOutcome::Running => "running",
            CronOutcome::Succeeded => "succeeded",
            CronOutcome::Failed => "failed",
            CronOutcome::TimedOut => "timed_out",
            CronOutcome::Skipped => "skipped",
            CronOutcome::Replaced => "replaced",
        }
    }
}

/// A run that a runtime scheduling cron jobs itself ([`crate::Runtime::schedules_cron`])
/// fired and that has ended, as it reports it ([`crate::Runtime::cron_runs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduledRun {
    /// What names this run uniquely and stably on the runtime (a Kubernetes Job's
    /// uid): it is recorded once.
    pub key: String,
    /// The job's name.
    pub job: String,
    /// The time the schedule named.
    pub scheduled_for: Timestamp,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub ended_at: Timestamp,
    /// The command's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Whether it was stopped for running past its timeout.
    pub timed_out: bool,
    /// Why it failed, in the runtime's words (empty when it succeeded).
    pub reason: String,
    /// The tail of its output.
    pub output: String,
}

impl ScheduledRun {
    /// A run of `job` named `key` that ran from `started_at` to `ended_at`; the rest
    /// is set field by field.
    pub fn new(key: &str, job: &str, started_at: Timestamp, ended_at: Timestamp) -> Self {
        ScheduledRun {
            key: key.to_owned(),
            job: job.to_owned(),
            scheduled_for: started_at,
            started_at,
            ended_at,
            exit_code: None,
            timed_out: false,
            reason: String::new(),
            output: String::new(),
        }
    }

    /// The stored record of this run of `service`'s job: its id comes from
    /// [`ScheduledRun::key`], so recording it twice is a Conflict, not a duplicate.
    pub fn record(&self, project: &ProjectId, service: &ServiceId) -> CronRun {
        let key: String = self
            .key
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .flat_map(char::to_lowercase)
            .take(48)
            .collect();
        let (outcome, reason) = if self.timed_out {
            (CronOutcome::TimedOut, self.reason.clone())
        } else if self.exit_code == Some(0) {
            (CronOutcome::Succeeded, String::new())
        } else if self.reason.is_empty() {
            let why = match self.exit_code {
                Some(c) => format!("exited with code {c}"),
                None => "ended without an exit code".to_owned(),
            };
            (CronOutcome::Failed, why)
        } else {
            (CronOutcome::Failed, self.reason.clone())
        };
        let mut output = OutputTail::new(CronRun::MAX_OUTPUT_BYTES);
        for line in self.output.lines() {
            output.push_line(line);
        }
        CronRun {
            id: CronRunId(format!("{}{key}", CronRunId::PREFIX)),
            project: project.clone(),
            service: service.clone(),
            job: self.job.clone(),
            scheduled_for: self.scheduled_for,
            started_at: self.started_at,
            ended_at: Some(self.ended_at.max(self.started_at)),
            exit_code: self.exit_code,
            outcome,
            reason: clip_head(reason, CronRun::MAX_REASON_BYTES),
            output: output.as_str().to_owned(),
        }
    }
}

/// One run of a cron job (or one that was skipped), as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CronRun {
    /// Its id.
    pub id: CronRunId,
    /// The project.
    pub project: ProjectId,
    /// The service whose job it is.
    pub service: ServiceId,
    /// The job's name.
    pub job: String,
    /// The time the schedule named (a catch-up run after downtime starts later).
    pub scheduled_for: Timestamp,
    /// When it started (or was skipped).
    pub started_at: Timestamp,
    /// When it ended (`None` while running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// The command's exit code, if it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// How it ended.
    pub outcome: CronOutcome,
    /// Why it failed, was skipped or replaced (empty when it succeeded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The last [`CronRun::MAX_OUTPUT_BYTES`] of its output (stdout and stderr
    /// interleaved, one line each). Kept as the app printed it: what a job prints
    /// is its own business, so readers of the history must be members of its
    /// project, and Wharf never logs it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
}

impl CronRun {
    /// The most output a run keeps (its tail).
    pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;
    /// The longest reason.
    pub const MAX_REASON_BYTES: usize = 4096;

    /// A run of `job` of `service` due at `scheduled_for`, starting now.
    pub fn start(
        project: &ProjectId,
        service: &ServiceId,
        job: &str,
        scheduled_for: Timestamp,
    ) -> Self {
        CronRun {
            id: CronRunId::random(),
            project: project.clone(),
            service: service.clone(),
            job: job.to_owned(),
            scheduled_for,
            started_at: Timestamp::now(),
            ended_at: None,
            exit_code: None,
            outcome: CronOutcome::Running,
            reason: String::new(),
            output: String::new(),
        }
    }

    /// Marks it ended now with `outcome` and `reason`.
    pub fn end(&mut self, outcome: CronOutcome, reason: impl Into<String>) {
        self.outcome = outcome;
        self.reason = clip_head(reason.into(), Self::MAX_REASON_BYTES);
        self.ended_at = Some(Timestamp::now().max(self.started_at));
    }

    /// Checks what a store refuses: a bad job name, an output or reason over its
    /// bound, an end before the start.
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.job).map_err(|e| e.context("cron run"))?;
        if self.output.len() > Self::MAX_OUTPUT_BYTES {
            return Err(Error::invalid(format!(
                "cron run {}: output is {} bytes, more than {}",
                self.id,
                self.output.len(),
                Self::MAX_OUTPUT_BYTES
            )));
        }
        if self.reason.len() > Self::MAX_REASON_BYTES {
            return Err(Error::invalid(format!(
                "cron run {}: reason is longer than {} bytes",
                self.id,
                Self::MAX_REASON_BYTES
            )));
        }
        if self.ended_at.is_some_and(|e| e < self.started_at) {
            return Err(Error::invalid(format!(
                "cron run {}: it ends before it starts",
                self.id
            )));
        }
        Ok(())
    }
}

/// The first `max` bytes of `s` (cut at a character boundary).
fn clip_head(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The last bytes of a run's output, bounded: lines are appended, the oldest are
/// dropped once the total passes the bound.
#[derive(Debug, Clone, Default)]
pub struct OutputTail {
    text: String,
    max: usize,
}

impl OutputTail {
    /// A tail of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        OutputTail {
            text: String::new(),
            max,
        }
    }

    /// Appends one line (a newline is added).
    pub fn push_line(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
        if self.text.len() > self.max {
            let mut cut = self.text.len() - self.max;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            self.text.drain(..cut);
        }
    }

    /// The tail so far.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Parses a duration as people write it in `wharf.toml`: a sequence of a number and
/// a unit, `ms`, `s`, `m`, `h` or `d` (`"90s"`, `"10m"`, `"1h30m"`).
///
/// ```
/// use std::time::Duration;
/// use wharf_core::cron::parse_duration;
/// assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
/// assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
/// assert!(parse_duration("10").is_err());
/// assert!(parse_duration("-1s").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || {
        Error::invalid(format!(
            "duration {text:?}: use a number and a unit (ms, s, m, h, d), e.g. \"10m\" or \"1h30m\""
        ))
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (ms_per, tail) = match &rest[..unit] {
            "ms" => (1, &rest[unit..]),
            "s" => (1_000, &rest[unit..]),
            "m" => (60_000, &rest[unit..]),
            "h" => (3_600_000, &rest[unit..]),
            "d" => (86_400_000, &rest[unit..]),
            _ => return Err(bad()),
        };
        total += Duration::from_millis(n * ms_per);
        rest = tail;
    }
    Ok(total)
}
