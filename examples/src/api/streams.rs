//! Server-sent event streams: a deployment's events (resumable with
//! `Last-Event-ID`) and a live instance's app output.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;
use wharf_core::StoreExt as _;
use wharf_core::{DeploymentId, DynStore, Event, EventKind};

use super::extract::{role, DeploymentCtx, ServiceCtx};
use super::{ApiError, ApiResult, App};

/// `?after=` of the events stream.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Only events after this sequence number (as `Last-Event-ID`).
    #[serde(default)]
    after: Option<u64>,
}

fn sse(event: &Event) -> SseEvent {
    let name = match &event.kind {
        EventKind::State { .. } => "state",
        EventKind::Log(_) => "log",
    };
    SseEvent::default()
        .id(event.seq.to_string())
        .event(name)
        .json_data(event)
        .unwrap_or_else(|_| SseEvent::default().comment("unencodable event"))
}

fn ends(event: &Event) -> bool {
    matches!(&event.kind, EventKind::State { to, .. } if !to.is_active())
}

/// Where a follower of one deployment's events is.
struct Follow {
    store: DynStore,
    rx: broadcast::Receiver<Event>,
    id: DeploymentId,
    last: u64,
    queue: VecDeque<Event>,
    done: bool,
}

impl Follow {
    /// The next event to send, or `None` once the deployment has ended.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                if ev.seq <= self.last {
                    continue;
                }
                self.last = ev.seq;
                if ends(&ev) {
                    self.done = true;
                    self.queue.clear();
                }
                return Some(ev);
            }
            if self.done {
                return None;
            }
            match self.rx.recv().await {
                Ok(ev) if ev.deployment == self.id => self.queue.push_back(ev),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the live feed: catch up from the store.
                    let evs = self.store.events(&self.id, self.last).await.ok()?;
                    self.queue.extend(evs);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// `GET /v1/deployments/{id}/events`: the stored events after `Last-Event-ID` (or
/// `?after=`), then live ones, ending after the deployment's final state.
#[utoipa::path(get, path = "/deployments/{id}/events", operation_id = "deployment_events", tag = "deployments",
    params(super::openapi::DeploymentParams, EventsQuery), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "State changes (event: state) and log lines (event: log) as server-sent events, each data an Event; resumable with Last-Event-ID; ends after the final state", content_type = "text/event-stream", body = wharf_core::Event)))]
pub(crate) async fn events(
    State(app): State<App>,
    ctx: DeploymentCtx<role::Viewer>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let dep = ctx.deployment;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(q.after)
        .unwrap_or(0);
    // Subscribe before reading the store, so nothing falls between the two.
    let rx = app.engine.subscribe();
    let stored = app.store.events(&dep.id, after).await?;
    let follow = Follow {
        store: app.store.clone(),
        rx,
        id: dep.id.clone(),
        last: after,
        queue: stored.into(),
        // An ended deployment's stream ends once its stored events are sent.
        done: !dep.state.is_active(),
    };
    let stream = futures::stream::unfold(follow, |mut f| async move {
        let ev = f.next().await?;
        Some((Ok(sse(&ev)), f))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// `?follow=&tail=` of the logs stream.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogsQuery {
    /// Keep streaming new lines until the instance stops.
    #[serde(default)]
    follow: bool,
    /// How many past lines (default 100, at most 10000).
    #[serde(default)]
    #[param(minimum = 0)]
    tail: Option<usize>,
}

/// Most lines `tail` may ask for.
pub(crate) const MAX_TAIL: usize = 10_000;

/// `GET .../logs`: the live instance's runtime (app) output as server-sent events
/// (`event: log`, data `{at, stream, text}`), read through the runtime's `logs`: the
/// last `tail` lines (default 100), then with `follow=true` new lines as the app
/// writes them, until the instance stops (a redeploy replaces it). A runtime error
/// mid-stream arrives as one `event: error` whose data is the message, and ends the
/// stream.
#[utoipa::path(get, path = "/logs", operation_id = "service_logs", tag = "services",
    params(super::openapi::ServiceParams, LogsQuery), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "The live instance's app output as server-sent events (event: log, data a LogLine)", content_type = "text/event-stream", body = wharf_core::LogLine)))]
pub(crate) async fn logs(
    State(app): State<App>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
    ctx: ServiceCtx<role::Viewer>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let Query(q) = query.map_err(|e| ApiError::bad(e.body_text()))?;
    let s = ctx.service;
    let instance = app
        .store
        .live_deployment(&s.id)
        .await?
        .and_then(|d| d.instance)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "service {} in project {} has no live instance",
                s.name, ctx.project.name
            ))
        })?;
    let opts = wharf_core::LogOptions {
        follow: q.follow,
        tail: Some(q.tail.unwrap_or(100).min(MAX_TAIL)),
    };
    let lines = app.engine.runtime().logs(&instance.id, opts).await?;
    let stream = futures::stream::unfold(Some(lines), |lines| async move {
        let mut lines = lines?;
        match lines.next().await? {
            Ok(line) => {
                let ev = SseEvent::default()
                    .event("log")
                    .json_data(&line)
                    .unwrap_or_else(|_| SseEvent::default().comment("unencodable line"));
                Some((Ok(ev), Some(lines)))
            }
            Err(e) => Some((
                Ok(SseEvent::default().event("error").data(e.to_string())),
                None,
            )),
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
