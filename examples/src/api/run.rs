//! One-off commands: `POST .../run` runs a command in a fresh instance of a service's
//! live release (its artifact, env and volumes) and streams its output, then how it
//! ended. A console, a data fix, a migration run by hand.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wharf_core::{LogLine, LogSink, RunOptions, RunOutcome, TaskKind};

use super::extract::{role, ServiceCtx};
use super::{ApiError, ApiResult, App, JsonBody};
use crate::dto::{RunRequest, RunResult};
use wharf_core::StoreExt as _;

/// The longest a one-off command may be asked to run.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// How long it runs when the request does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// What the stream sends: output lines, then the end.
enum Item {
    Line(LogLine),
    Done(wharf_core::Result<RunOutcome>),
}

/// `POST .../run`: runs `command` once in a fresh instance of the live release and
/// streams server-sent events: `event: log` (a LogLine) for each line of output, then
/// one `event: exit` (a RunResult), or `event: error` (a message) if it could not
/// run. The instance is removed when the command ends; a client that goes away
/// stops it. Developers and owners only.
#[utoipa::path(post, path = "/run", operation_id = "run_command", tag = "services",
    params(super::openapi::ServiceParams), request_body = crate::dto::RunRequest, security(("bearer" = ["developer"])),
    responses(
        (status = 200, description = "The command's output (event: log, data a LogLine), then how it ended (event: exit, data a RunResult)", content_type = "text/event-stream", body = crate::dto::RunResult),
        (status = 400, description = "Empty command or bad timeout", body = crate::dto::ErrorBody),
        (status = 409, description = "Nothing of the service is live", body = crate::dto::ErrorBody)))]
pub(crate) async fn run(
    State(app): State<App>,
    ctx: ServiceCtx<role::Developer>,
    JsonBody(body): JsonBody<RunRequest>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
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
    // Refused before the stream starts: a bad command, nothing live.
    if body.command.first().is_none_or(|p| p.trim().is_empty()) {
        return Err(ApiError::bad("command must name a program to run"));
    }
    if app.store.live_deployment(&svc.id).await?.is_none() {
        return Err(ApiError::conflict(format!(
            "service {} has no live release to run a command from: deploy it first",
            svc.name
        )));
    }
    tracing::info!(
        service = %svc.name,
        project = %ctx.project.name,
        who = %ctx.who.name,
        "one-off command started"
    );
    let (tx, rx) = mpsc::unbounded_channel::<Item>();
    let cancel = CancellationToken::new();
    let sink = {
        let tx = tx.clone();
        LogSink::from_fn(move |line| {
            let _ = tx.send(Item::Line(line));
        })
    };
    let opts = RunOptions::new(timeout)
        .logs(sink)
        .cancel(cancel.clone())
        .kind(TaskKind::Run);
    let engine = app.engine.clone();
    tokio::spawn(async move {
        let out = engine.run_command(&svc.id, body.command, opts).await;
        let _ = tx.send(Item::Done(out));
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
                return Some((Ok(ev), Some((rx, guard))));
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
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
