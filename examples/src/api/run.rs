//! One-off commands and scaling. `POST .../run` runs a command in a fresh instance
//! of a service's live release (its artifact, env and volumes) and streams its
//! output, then how it ended: a console, a data fix, a migration run by hand.
//! `PUT .../scale` sets replica counts of process types and applies them to the
//! live release in place.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wharf_core::{LogLine, LogSink, RunOptions, RunOutcome, TaskKind};

use super::extract::{role, ServiceCtx};
use super::{ApiError, ApiResult, App, JsonBody};
use crate::dto::{RunDetached, RunRequest, RunResult, ScaleRequest, ScaleView};
use wharf_core::StoreExt as _;

/// The longest a one-off command may be asked to run.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// How long it runs when the request does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// How many one-off commands one project may run at once.
const MAX_RUNS_PER_PROJECT: usize = 4;
/// How many output lines wait for a slow client before newer ones are dropped.
const BUFFERED_LINES: usize = 4096;

/// The one-off commands running, by project id.
static RUNNING: std::sync::Mutex<std::collections::BTreeMap<String, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// A project's slot among [`MAX_RUNS_PER_PROJECT`], given back when dropped.
struct RunSlot(String);

impl RunSlot {
    fn take(project: &str) -> Option<RunSlot> {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        let n = running.entry(project.to_owned()).or_insert(0);
        if *n >= MAX_RUNS_PER_PROJECT {
            return None;
        }
        *n += 1;
        Some(RunSlot(project.to_owned()))
    }
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = running.get_mut(&self.0) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(&self.0);
            }
        }
    }
}

/// What the stream sends: output lines, then the end.
enum Item {
    Line(LogLine),
    Done(wharf_core::Result<RunOutcome>),
}

/// `POST .../run`: runs `command` once in a fresh instance of the live release and
/// streams server-sent events: `event: log` (a LogLine) for each line of output, then
/// one `event: exit` (a RunResult), or `event: error` (a message) if it could not
/// run. The instance is removed when the command ends; a client that goes away
/// stops it. With `"detach": true` the answer is a 202 at once and the command runs
/// in the background until it ends or its timeout (its time to live). Developers and
/// owners only.
#[utoipa::path(post, path = "/run", operation_id = "run_command", tag = "services",
    params(super::openapi::ServiceParams), request_body = crate::dto::RunRequest, security(("bearer" = ["developer"])),
    responses(
        (status = 200, description = "The command's output (event: log, data a LogLine), then how it ended (event: exit, data a RunResult)", content_type = "text/event-stream", body = crate::dto::RunResult),
        (status = 202, description = "Detached: running in the background", body = crate::dto::RunDetached),
        (status = 400, description = "Empty command or bad timeout", body = crate::dto::ErrorBody),
        (status = 409, description = "Nothing of the service is live", body = crate::dto::ErrorBody)))]
pub(crate) async fn run(
    State(app): State<App>,
    ctx: ServiceCtx<role::Developer>,
    JsonBody(body): JsonBody<RunRequest>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let timeout = match body.timeout_secs {
        None => DEFAULT_TIMEOUT,
        Some(s) if s >= 1 && Duration::from_secs(s) <= MAX_TIMEOUT => Duration::from_secs(s),
        Some(s) => {
            return Err(ApiError::bad(format!(
                "timeout_secs must be from 1 to {}, not {s}",
                MAX_TIMEOUT.as_secs()
            )))
        }
    };
    let svc = ctx.service;
    // Refused before the stream starts: a bad command, a database, nothing live,
    // too many runs.
    if body.command.first().is_none_or(|p| p.trim().is_empty()) {
        return Err(ApiError::bad("command must name a program to run"));
    }
    if svc.database.is_some() {
        // Its env holds the superuser password and its volume the data: owners
        // reach it with `wharf db connect`.
        return Err(ApiError::bad(format!(
            "{} is a managed database: commands do not run in it (owners: wharf db connect)",
            svc.name
        )));
    }
    if app.store.live_deployment(&svc.id).await?.is_none() {
        return Err(ApiError::conflict(format!(
            "service {} has no live release to run a command from: deploy it first",
            svc.name
        )));
    }
    let Some(slot) = RunSlot::take(ctx.project.id.as_str()) else {
        return Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_runs",
            format!(
                "project {} already runs {MAX_RUNS_PER_PROJECT} one-off commands: wait for one to end",
                ctx.project.name
            ),
        ));
    };
    tracing::info!(
        service = %svc.name,
        project = %ctx.project.name,
        who = %ctx.who.name,
        detach = body.detach,
        "one-off command started"
    );
    if body.detach {
        let engine = app.engine.clone();
        let opts = RunOptions::new(timeout).kind(TaskKind::Run);
        let name = svc.name.clone();
        tokio::spawn(async move {
            match engine.run_command(&svc.id, body.command, opts).await {
                Ok(out) => {
                    tracing::info!(service = %name, outcome = %out.reason, "detached command ended")
                }
                Err(e) => tracing::warn!(service = %name, "detached command could not run: {e}"),
            }
            drop(slot);
        });
        let ttl = RunDetached {
            ttl_secs: timeout.as_secs(),
        };
        return Ok((axum::http::StatusCode::ACCEPTED, Json(ttl)).into_response());
    }
    // Bounded: a client that reads slowly loses lines (counted and said), never the
    // control plane its memory.
    let (tx, rx) = mpsc::channel::<Item>(BUFFERED_LINES);
    let cancel = CancellationToken::new();
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sink = {
        let (tx, dropped) = (tx.clone(), dropped.clone());
        LogSink::from_fn(move |line| {
            if tx.try_send(Item::Line(line)).is_err() {
                dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let opts = RunOptions::new(timeout)
        .logs(sink)
        .cancel(cancel.clone())
        .kind(TaskKind::Run);
    let engine = app.engine.clone();
    tokio::spawn(async move {
        let out = engine.run_command(&svc.id, body.command, opts).await;
        drop(slot);
        let lost = dropped.load(std::sync::atomic::Ordering::Relaxed);
        if lost > 0 {
            let note = format!(
                "wharf: {lost} lines of output were dropped: the client read them too slowly"
            );
            let _ = tx
                .send(Item::Line(LogLine::new(
                    wharf_core::LogStream::System,
                    note,
                )))
                .await;
        }
        let _ = tx.send(Item::Done(out)).await;
    });
    // Dropped with the stream (the client went away): the command is stopped.
    let guard = cancel.drop_guard();
    let stream = futures::stream::unfold(Some((rx, guard)), |state| async move {
        let (mut rx, guard) = state?;
        let ev = match rx.recv().await? {
            Item::Line(line) => {
                let ev = SseEvent::default()
                    .event("log")
                    .json_data(&line)
                    .unwrap_or_else(|_| SseEvent::default().comment("unencodable line"));
                return Some((Ok::<_, Infallible>(ev), Some((rx, guard))));
            }
            Item::Done(Ok(out)) => SseEvent::default()
                .event("exit")
                .json_data(RunResult {
                    exit_code: out.exit_code,
                    timed_out: out.timed_out,
                    reason: out.reason,
                })
                .unwrap_or_else(|_| SseEvent::default().comment("unencodable result")),
            Item::Done(Err(e)) => SseEvent::default().event("error").data(e.to_string()),
        };
        // The end: disarm the guard (nothing left to stop) and close the stream.
        guard.disarm();
        Some((Ok(ev), None))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `PUT .../scale`: sets the replica counts given (the others keep theirs), then
/// starts or stops instances of the live release to match, without a new build or
/// release (new `web` replicas are healthy before they take traffic; removed ones
/// leave the route before they stop). While a deployment of the service runs, it
/// starts the new counts itself. Developers and owners.
#[utoipa::path(put, path = "/scale", operation_id = "scale_service", tag = "services",
    params(super::openapi::ServiceParams), request_body = crate::dto::ScaleRequest, security(("bearer" = ["developer"])),
    responses(
        (status = 200, description = "The counts, and what runs now", body = crate::dto::ScaleView),
        (status = 400, description = "A bad count or an unknown process type", body = crate::dto::ErrorBody),
        (status = 422, description = "A new instance did not become healthy: nothing changed", body = crate::dto::ErrorBody)))]
pub(crate) async fn scale(
    State(app): State<App>,
    ctx: ServiceCtx<role::Developer>,
    JsonBody(body): JsonBody<ScaleRequest>,
) -> ApiResult<Json<ScaleView>> {
    let mut svc = ctx.service;
    if svc.database.is_some() {
        return Err(ApiError::bad(format!(
            "{} is a managed database: it runs one instance",
            svc.name
        )));
    }
    let live = app.store.live_deployment(&svc.id).await?;
    // A type must be one the service runs (while something is live, where it is known).
    let known: Vec<String> =
        wharf_core::detect::processes(live.as_ref().and_then(|d| d.plan.as_ref()), &svc.processes)
            .into_keys()
            .chain([wharf_core::WEB_PROCESS.to_owned()])
            .collect();
    for name in body.replicas.keys() {
        if live.is_some() && !known.contains(name) {
            return Err(ApiError::bad(format!(
                "service {} has no process type {name} (it has {})",
                svc.name,
                known.join(", ")
            )));
        }
    }
    // Only the counts change: the service as it is now, not as the request began
    // (an env change meanwhile stays).
    svc = app.store.service(&svc.id).await?;
    let mut replicas = svc.replicas.clone();
    replicas.extend(body.replicas);
    wharf_core::validate_replicas(&replicas)?;
    svc.replicas = replicas;
    app.store.put_service(&svc).await?;
    tracing::info!(service = %svc.name, project = %ctx.project.name, who = %ctx.who.name, replicas = ?svc.replicas, "scale");

    let active = app
        .store
        .deployments(&wharf_core::DeploymentFilter {
            service: Some(svc.id.clone()),
            active_only: true,
            ..Default::default()
        })
        .await?;
    let mut counts: std::collections::BTreeMap<String, u32> = known
        .iter()
        .filter(|p| *p != wharf_core::RELEASE_PROCESS)
        .map(|p| (p.clone(), svc.replicas_of(p)))
        .collect();
    counts.extend(svc.replicas.clone());
    let (running, message) = if let Some(d) = active.first() {
        (
            Default::default(),
            format!("deployment {} is under way: it starts these counts", d.id),
        )
    } else {
        match app.engine.scale(&svc.id).await? {
            Some(dep) => {
                let mut running = std::collections::BTreeMap::new();
                for (process, _) in dep.instances() {
                    *running.entry(process.to_owned()).or_insert(0) += 1;
                }
                if app.engine.runtime().replicates() {
                    // One instance per type, running its count (all ready by now).
                    for (process, n) in running.iter_mut() {
                        *n = svc.replicas_of(process);
                    }
                }
                (running, "scaled the live release".to_owned())
            }
            None => (
                Default::default(),
                "nothing is live: the next deployment starts these counts".to_owned(),
            ),
        }
    };
    Ok(Json(ScaleView {
        replicas: counts,
        running,
        message,
    }))
}
