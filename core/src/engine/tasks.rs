//! Tasks: commands that run once from a release, in an instance of their own: the
//! release command of a deployment ([`crate::Step::Releasing`]), one-off runs
//! ([`Engine::run_command`]: a console, a data fix) and cron jobs.
//!
//! A task's instance is started from the release's artifact with the release's env
//! (and the service's volumes), marked [`InstanceSpec::run_once`] so the runtime never
//! restarts it, and without the service's network alias, so no peer's traffic reaches
//! it. Its output streams to the caller's [`LogSink`] as it comes; the instance is
//! stopped and removed when the command ends, times out or is cancelled.

use std::collections::VecDeque;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::model::*;
use crate::traits::*;

/// The label naming what kind of task an instance runs ([`TaskKind::as_str`]);
/// instances of a service's own process types do not carry it.
pub const TASK_LABEL: &str = "wharf.task";

/// What a task is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskKind {
    /// A deployment's release command.
    Release,
    /// A one-off command asked for by a person (`wharf run`).
    Run,
    /// A scheduled cron job.
    Cron,
}

impl TaskKind {
    /// Its name, as the [`TASK_LABEL`] label and instance names carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Release => "release",
            TaskKind::Run => "run",
            TaskKind::Cron => "cron",
        }
    }
}

/// How [`Engine::run_command`] runs a command.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunOptions {
    /// The longest the command may run; it is then stopped and the outcome says
    /// [`RunOutcome::timed_out`].
    pub timeout: Duration,
    /// Where its output goes, line by line, as it comes.
    pub logs: LogSink,
    /// Stops the command early (the outcome says [`RunOutcome::cancelled`]).
    pub cancel: CancellationToken,
    /// What the task is for (its instance's [`TASK_LABEL`]).
    pub kind: TaskKind,
}

impl RunOptions {
    /// A one-off run ([`TaskKind::Run`]) bounded by `timeout`, its output discarded.
    pub fn new(timeout: Duration) -> Self {
        RunOptions {
            timeout,
            logs: LogSink::discard(),
            cancel: CancellationToken::new(),
            kind: TaskKind::Run,
        }
    }

    /// Sends the output to `logs`.
    pub fn logs(mut self, logs: LogSink) -> Self {
        self.logs = logs;
        self
    }

    /// Stops the command when `cancel` is cancelled.
    pub fn cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Marks the task as being for `kind`.
    pub fn kind(mut self, kind: TaskKind) -> Self {
        self.kind = kind;
        self
    }
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunOutcome {
    /// The instance it ran in (stopped and removed by now).
    pub instance: InstanceId,
    /// Its exit code, when the command ended by itself and the runtime knows it.
    pub exit_code: Option<i32>,
    /// It ran past its timeout and was stopped.
    pub timed_out: bool,
    /// It was cancelled and stopped.
    pub cancelled: bool,
    /// How it ended, for people (`exited with code 0`, `timed out after 5 s`...).
    pub reason: String,
    /// Its last lines of output (at most [`RunOutcome::TAIL_LINES`]).
    pub tail: Vec<String>,
}

impl RunOutcome {
    /// How many of the last output lines [`RunOutcome::tail`] keeps.
    pub const TAIL_LINES: usize = 20;

    /// Whether the command ended by itself with exit code 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.cancelled
    }
}

impl Engine {
    /// Runs `command` (program and arguments, no shell) once in a fresh instance of
    /// `service`'s live release: its artifact, its env and its volumes, on the
    /// project network. Streams the output to [`RunOptions::logs`] and returns how
    /// the command ended; the instance is removed afterwards, whatever happened.
    ///
    /// Errors: NotFound for an unknown service, Conflict when nothing of it is live,
    /// InvalidInput for an empty command, and the runtime's error when it cannot
    /// start the instance (Unsupported where it cannot run tasks). A command that
    /// fails is not an error: see [`RunOutcome::exit_code`].
    pub async fn run_command(
        &self,
        service: &ServiceId,
        command: Vec<String>,
        opts: RunOptions,
    ) -> Result<RunOutcome> {
        check_command(&command)?;
        let store = &self.inner.store;
        let svc = store.service(service).await?;
        let project = store.project(&svc.project).await?;
        // From finding the live release to its task's instance existing, the
        // service cannot be torn down (see Engine::teardown).
        let gate = self.task_gate(&svc.id);
        let open = gate.read().await;
        let live = store.live_deployment(&svc.id).await?.ok_or_else(|| {
            Error::conflict(format!(
                "service {} has no live release to run a command from: deploy it first",
                svc.name
            ))
        })?;
        let spec = self
            .task_spec(&project, &svc, &live, command, opts.kind)
            .await?;
        let instance = self.inner.runtime.start(&spec).await?;
        drop(open);
        self.follow_task(instance.id, &opts).await
    }

    /// The spec of a task of `dep`'s release: the deployment's own instance spec,
    /// running `command` once, unprobed, without the service's network alias.
    pub(super) async fn task_spec(
        &self,
        project: &Project,
        svc: &Service,
        dep: &Deployment,
        command: Vec<String>,
        kind: TaskKind,
    ) -> Result<InstanceSpec> {
        let artifact = dep
            .artifact
            .clone()
            .ok_or_else(|| Error::internal("a task of a deployment without artifact"))?;
        let port = dep.plan.as_ref().map_or(8080, |p| p.port);
        let config = self.config_for(project, svc, dep).await?;
        let mut spec = self
            .instance_spec(project, svc, dep, (&artifact, port), &config)
            .await?;
        spec.name = format!(
            "{}-{}-{}-{}",
            project.name,
            svc.name,
            kind.as_str(),
            super::short_id()
        );
        spec.command = Some(command);
        spec.run_once = true;
        spec.network_alias = None;
        spec.health_check = HealthCheck {
            probe: Probe::None,
            ..HealthCheck::default()
        };
        spec.labels.insert(TASK_LABEL.into(), kind.as_str().into());
        Ok(spec)
    }

    /// Starts `spec` (a [`InstanceSpec::run_once`] spec), follows its output into
    /// `opts.logs` until it exits, times out or is cancelled, then removes it.
    pub(super) async fn run_task(
        &self,
        spec: InstanceSpec,
        opts: &RunOptions,
    ) -> Result<RunOutcome> {
        let instance = self.inner.runtime.start(&spec).await?;
        self.follow_task(instance.id, opts).await
    }

    /// Follows started task `id`'s output into `opts.logs` until it exits, times
    /// out or is cancelled, then removes it.
    async fn follow_task(&self, id: InstanceId, opts: &RunOptions) -> Result<RunOutcome> {
        let runtime = &self.inner.runtime;
        let tail = std::sync::Arc::new(std::sync::Mutex::new(VecDeque::new()));
        let follower = {
            let logs = runtime
                .logs(
                    &id,
                    LogOptions {
                        follow: true,
                        tail: None,
                    },
                )
                .await;
            let sink = opts.logs.clone();
            let tail = tail.clone();
            tokio::spawn(async move {
                let Ok(mut logs) = logs else { return };
                while let Some(Ok(line)) = logs.next().await {
                    {
                        let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                        if t.len() == RunOutcome::TAIL_LINES {
                            t.pop_front();
                        }
                        t.push_back(line.text.clone());
                    }
                    sink.send(line.stream, line.text);
                }
            })
        };
        let ended = self.wait_exit(&id, opts).await;
        // The output of a command that ended by itself is complete once its stream
        // ends; give it a moment, then stop following either way.
        let follower_abort = follower.abort_handle();
        if matches!(ended, Ok(Ended::Exited(..))) {
            let _ = tokio::time::timeout(Duration::from_secs(5), follower).await;
        }
        follower_abort.abort();
        let stopped = runtime.stop(&id, self.inner.config.stop_grace).await;
        let tail: Vec<String> = tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let outcome = |exit_code, timed_out, cancelled, reason| RunOutcome {
            instance: id.clone(),
            exit_code,
            timed_out,
            cancelled,
            reason,
            tail: tail.clone(),
        };
        let outcome = match ended? {
            Ended::Exited(code, reason) => {
                let reason = match code {
                    Some(c) => format!("exited with code {c}"),
                    None => format!("exited ({reason}; exit code unknown)"),
                };
                outcome(code, false, false, reason)
            }
            Ended::TimedOut => outcome(
                None,
                true,
                false,
                format!(
                    "ran longer than {} and was stopped",
                    duration_text(opts.timeout)
                ),
            ),
            Ended::Cancelled => outcome(None, false, true, "cancelled and stopped".into()),
        };
        if let Err(e) = stopped {
            tracing::warn!(instance = %id, error = %e, "could not remove a task's instance");
        }
        Ok(outcome)
    }

    /// Polls the task's status until it exits, its timeout passes or it is cancelled.
    async fn wait_exit(&self, id: &InstanceId, opts: &RunOptions) -> Result<Ended> {
        let deadline = tokio::time::Instant::now() + opts.timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            match self.inner.runtime.status(id).await {
                Ok(InstanceStatus::Exited { code, reason }) => {
                    return Ok(Ended::Exited(code, reason))
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(Error::new(
                        ErrorKind::Backend,
                        format!("the instance {id} of the command disappeared before it ended"),
                    ))
                }
                Err(e) if e.is_retryable() => {}
                Err(e) => return Err(e),
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(Ended::TimedOut),
                _ = opts.cancel.cancelled() => return Ok(Ended::Cancelled),
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

enum Ended {
    Exited(Option<i32>, String),
    TimedOut,
    Cancelled,
}

/// A command must name a program: not empty, no empty program name, no NUL byte.
pub(super) fn check_command(command: &[String]) -> Result<()> {
    match command.first() {
        None => Err(Error::invalid(
            "the command is empty: name a program to run",
        )),
        Some(p) if p.trim().is_empty() => Err(Error::invalid("the command's program is empty")),
        Some(_) if command.iter().any(|a| a.contains('\0')) => {
            Err(Error::invalid("the command holds a NUL byte"))
        }
        Some(_) => Ok(()),
    }
}

/// `90 s`, `10 min`, `2 h`: a timeout as people write it.
pub(super) fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s % 3600 == 0 {
        format!("{} h", s / 3600)
    } else if s >= 60 && s % 60 == 0 {
        format!("{} min", s / 60)
    } else if s > 0 {
        format!("{s} s")
    } else {
        format!("{} ms", d.as_millis())
    }
}
