//! Deployments: start one (from an upload, a git or image source, or the service's
//! current source; as a canary too), list a service's deployments and releases, roll
//! back, read and cancel a deployment, promote or abort a canary.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use futures::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use wharf_core::StoreExt as _;
use wharf_core::{Deployment, DeploymentFilter, Service, SourceSpec, Trigger};

use super::extract::{role, DeploymentCtx, ServiceCtx};
use super::{ApiError, ApiResult, App, MAX_UPLOAD};
use crate::auth::Role;
use crate::dto::{CancelView, DeployRequest, ReleaseView, RollbackRequest};

/// Streams a request body into `path`, refusing more than [`MAX_UPLOAD`] bytes.
async fn save_upload(body: Body, path: &std::path::Path) -> ApiResult<u64> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut file = tokio::fs::File::create(path).await?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad(format!("upload interrupted: {e}")))?;
        total += chunk.len() as u64;
        if total > MAX_UPLOAD {
            drop(file);
            let _ = tokio::fs::remove_file(path).await;
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("uploads are limited to {MAX_UPLOAD} bytes"),
            ));
        }
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    Ok(total)
}

/// Whether a request body is an archive upload, by its content type.
fn is_upload(headers: &HeaderMap) -> bool {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    [
        "application/gzip",
        "application/x-gzip",
        "application/octet-stream",
    ]
    .iter()
    .any(|t| ctype.starts_with(t))
}

/// The source a deploy request names: an uploaded archive, a JSON source, or
/// (empty body) none, keeping the service's current one.
async fn requested_source(
    app: &App,
    s: &Service,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<(Option<SourceSpec>, Option<u8>)> {
    if is_upload(headers) {
        let path = app
            .data_dir
            .join("uploads")
            .join(s.id.as_str())
            .join(format!("{}.tar.gz", uuid::Uuid::new_v4().simple()));
        if save_upload(body, &path).await? == 0 {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(ApiError::bad("the upload is empty"));
        }
        return Ok((Some(SourceSpec::Archive { path }), None));
    }
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|e| ApiError::bad(format!("cannot read the request body: {e}")))?;
    let input: DeployRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        DeployRequest::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad(format!("bad deploy request: {e}")))?
    };
    let source = input
        .source
        .map(|src| src.into_spec().map_err(ApiError::bad))
        .transpose()?;
    Ok((source, input.canary))
}

/// `?canary=` of a deployment request.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeployQuery {
    /// Deploy as a canary taking this percent of the traffic (0 to 100; 0 is
    /// blue-green) beside the live release, until promoted or aborted.
    #[serde(default)]
    #[param(minimum = 0, maximum = 100)]
    canary: Option<u8>,
}

/// A deployment as responses show it: its source without credentials or the
/// server's paths (see [`SourceSpec::redacted`]).
pub(crate) fn shown(mut d: Deployment) -> Deployment {
    d.source = d.source.redacted();
    d
}

/// Whether a developer's `requested` source becomes the service's own: only a new
/// upload to a service fed by uploads, or the first source of one that has none.
fn saves_as_developer(current: &SourceSpec, requested: &SourceSpec) -> bool {
    match (current, requested) {
        (SourceSpec::Archive { .. }, SourceSpec::Archive { .. }) => true,
        (SourceSpec::Image { image }, _) => image.is_empty(),
        _ => false,
    }
}

/// `POST .../deployments`: starts a deployment from an uploaded `.tar.gz`
/// (`Content-Type: application/gzip`), from a JSON body naming a git source or an
/// image, or (empty body) from the service's current source.
#[utoipa::path(post, path = "/deployments", operation_id = "deploy", tag = "deployments",
    params(super::openapi::ServiceParams, DeployQuery), request_body(description = "A .tar.gz of the app (application/gzip), or JSON naming a git or image source, or an empty body for the service's current source", content((crate::dto::DeployRequest = "application/json"), (Vec<u8> = "application/gzip"))), security(("bearer" = ["developer"])),
    description = "An owner's source becomes the service's own; a developer's is deployed once and not saved (except a new upload to a service fed by uploads, or the first source of a service that has none). With `canary` (query or body), the new release serves that percent of the traffic beside the live one once healthy, until promoted or aborted; 409 while another canary of the service is out.",
    responses((status = 202, description = "Deployment started", body = wharf_core::Deployment)))]
pub(crate) async fn create(
    State(app): State<App>,
    ctx: ServiceCtx<role::Developer>,
    Query(query): Query<DeployQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Deployment>)> {
    let mut s = ctx.service;
    let (requested, in_body) = requested_source(&app, &s, &headers, body).await?;
    let canary = match (query.canary, in_body) {
        (Some(q), Some(b)) if q != b => {
            return Err(ApiError::bad(format!(
                "canary is {q} in the query and {b} in the body: give one"
            )))
        }
        (q, b) => q.or(b),
    };
    if canary.is_some_and(|p| p > 100) {
        return Err(ApiError::bad(
            "canary is a percent of the traffic: 0 to 100",
        ));
    }
    let owner = ctx.who.is_admin() || ctx.who.role(&ctx.project.name) == Some(Role::Owner);
    let trigger = Trigger::Webhook {
        provider: "api".into(),
        reference: ctx.who.name.clone(),
    };
    let handle = match requested {
        // Changing what a service is built from is an owner's call: a developer's
        // source is deployed once and not saved, except where it is how the service
        // is fed (a new upload to an upload-fed service, the first source of one
        // created without any).
        Some(source) if !owner && !saves_as_developer(&s.source, &source) => match canary {
            Some(p) => {
                app.engine
                    .deploy_canary(&s.id, trigger, Some(source), p)
                    .await?
            }
            None => app.engine.deploy_source(&s.id, trigger, source).await?,
        },
        requested => {
            if let Some(source) = requested {
                s.source = source;
            }
            if matches!(&s.source, SourceSpec::Image { image } if image.is_empty()) {
                return Err(ApiError::bad(
                    "the service has no source yet: upload a .tar.gz or give a git or image source",
                ));
            }
            s.validate()?;
            // Refused before the service's source changes, not after.
            if let Some(c) = app.engine.canary_of(&s.id).await? {
                return Err(ApiError::conflict(format!(
                    "deployment {} of this service is out as a canary: promote or abort it first",
                    c.id
                )));
            }
            app.store.put_service(&s).await?;
            match canary {
                Some(p) => app.engine.deploy_canary(&s.id, trigger, None, p).await?,
                None => app.engine.deploy(&s.id, trigger).await?,
            }
        }
    };
    let dep = app.store.deployment(handle.id()).await?;
    prune_uploads(&app, &s.id).await;
    Ok((StatusCode::ACCEPTED, Json(shown(dep))))
}

/// Removes the service's uploads that nothing needs any more: neither its own source
/// nor the source of one of its deployments still under way. Best effort: a file
/// that cannot be removed stays, and the server log says why.
async fn prune_uploads(app: &App, service: &wharf_core::ServiceId) {
    let dir = app.data_dir.join("uploads").join(service.as_str());
    let mut keep = Vec::new();
    if let Ok(s) = app.store.service(service).await {
        keep.push(s.source);
    }
    let active = DeploymentFilter {
        service: Some(service.clone()),
        active_only: true,
        ..Default::default()
    };
    match app.store.deployments(&active).await {
        Ok(deps) => keep.extend(deps.into_iter().map(|d| d.source)),
        // Not knowing what is in use, remove nothing.
        Err(_) => return,
    }
    let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
        return;
    };
    while let Ok(Some(e)) = entries.next_entry().await {
        let path = e.path();
        let used = keep
            .iter()
            .any(|s| matches!(s, SourceSpec::Archive { path: p } if *p == path));
        if !used {
            if let Err(err) = tokio::fs::remove_file(&path).await {
                tracing::warn!(path = %path.display(), error = %err, "cannot remove an old upload");
            }
        }
    }
}

/// `?limit=` of a listing.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// How many, newest first (default 50, at most 500).
    #[serde(default)]
    #[param(minimum = 0)]
    limit: Option<usize>,
}

/// `GET .../deployments`: newest first, `?limit=` (default 50, at most 500).
#[utoipa::path(get, path = "/deployments", operation_id = "list_deployments", tag = "deployments",
    params(super::openapi::ServiceParams, ListQuery), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "Deployments, newest first", body = Vec<wharf_core::Deployment>)))]
pub(crate) async fn list(
    State(app): State<App>,
    ctx: ServiceCtx<role::Viewer>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<Deployment>>> {
    let filter = DeploymentFilter {
        service: Some(ctx.service.id.clone()),
        limit: Some(q.limit.unwrap_or(50).min(500)),
        ..Default::default()
    };
    let deployments = app.store.deployments(&filter).await?;
    Ok(Json(deployments.into_iter().map(shown).collect()))
}

/// `GET .../releases`: newest first; secret values are write-only, so a release's
/// configuration shows keys and plain values.
#[utoipa::path(get, path = "/releases", operation_id = "list_releases", tag = "deployments",
    params(super::openapi::ServiceParams), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "Releases, newest first", body = Vec<crate::dto::ReleaseView>)))]
pub(crate) async fn releases(
    State(app): State<App>,
    ctx: ServiceCtx<role::Viewer>,
) -> ApiResult<Json<Vec<ReleaseView>>> {
    let releases = app.store.releases(&ctx.service.id).await?;
    Ok(Json(releases.into_iter().map(ReleaseView::from).collect()))
}

/// `POST .../rollback` `{release}`: re-activates a release without rebuilding;
/// default the one before the live release.
#[utoipa::path(post, path = "/rollback", operation_id = "rollback", tag = "deployments",
    params(super::openapi::ServiceParams), request_body = Option<crate::dto::RollbackRequest>, security(("bearer" = ["developer"])),
    responses((status = 202, description = "Rollback started", body = wharf_core::Deployment)))]
pub(crate) async fn rollback(
    State(app): State<App>,
    ctx: ServiceCtx<role::Developer>,
    body: Option<Json<RollbackRequest>>,
) -> ApiResult<(StatusCode, Json<Deployment>)> {
    let s = ctx.service;
    let input = body.map(|Json(b)| b).unwrap_or_default();
    let releases = app.store.releases(&s.id).await?; // newest first
    let live = app.store.live_deployment(&s.id).await?;
    let live_release = live.and_then(|d| d.release);
    let target = match input.release {
        Some(n) => releases.iter().find(|r| r.number == n),
        None => {
            let pos = releases
                .iter()
                .position(|r| Some(&r.id) == live_release.as_ref());
            match pos {
                Some(i) => releases.get(i + 1),
                None => releases.first(),
            }
        }
    }
    .ok_or_else(|| ApiError::not_found("no such release to roll back to"))?;
    let handle = app
        .engine
        .rollback_with(&target.id, input.run_release)
        .await?;
    let dep = app.store.deployment(handle.id()).await?;
    Ok((StatusCode::ACCEPTED, Json(shown(dep))))
}

/// `GET /v1/deployments/{id}`.
#[utoipa::path(get, path = "/deployments/{id}", operation_id = "get_deployment", tag = "deployments",
    params(super::openapi::DeploymentParams), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "The deployment", body = wharf_core::Deployment)))]
pub(crate) async fn get(ctx: DeploymentCtx<role::Viewer>) -> Json<Deployment> {
    Json(shown(ctx.deployment))
}

/// `POST /v1/deployments/{id}/cancel`: 409 once it has ended.
#[utoipa::path(post, path = "/deployments/{id}/cancel", operation_id = "cancel_deployment", tag = "deployments",
    params(super::openapi::DeploymentParams), security(("bearer" = ["developer"])),
    responses((status = 200, description = "Cancel requested", body = crate::dto::CancelView)))]
pub(crate) async fn cancel(
    State(app): State<App>,
    ctx: DeploymentCtx<role::Developer>,
) -> ApiResult<Json<CancelView>> {
    let dep = ctx.deployment;
    if !dep.state.is_active() {
        return Err(ApiError::conflict(format!(
            "deployment {} already ended {}",
            dep.id, dep.state
        )));
    }
    Ok(Json(CancelView {
        cancel_requested: app.engine.cancel(&dep.id),
    }))
}

/// `POST /v1/deployments/{id}/promote`: the canary takes all the traffic and goes
/// live; the release that was live is superseded and its instances stop. 409 if the
/// deployment is not a canary.
#[utoipa::path(post, path = "/deployments/{id}/promote", operation_id = "promote_deployment", tag = "deployments",
    params(super::openapi::DeploymentParams), security(("bearer" = ["developer"])),
    responses((status = 200, description = "Promoted: live", body = wharf_core::Deployment)))]
pub(crate) async fn promote(
    State(app): State<App>,
    ctx: DeploymentCtx<role::Developer>,
) -> ApiResult<Json<Deployment>> {
    let dep = app.engine.promote(&ctx.deployment.id).await?;
    tracing::info!(deployment = %dep.id, who = %ctx.who.name, "promote");
    Ok(Json(shown(dep)))
}

/// `POST /v1/deployments/{id}/abort`: the canary leaves the route (the live release
/// takes all the traffic back, untouched) and its instances stop; it ends cancelled.
/// 409 if the deployment is not a canary.
#[utoipa::path(post, path = "/deployments/{id}/abort", operation_id = "abort_deployment", tag = "deployments",
    params(super::openapi::DeploymentParams), security(("bearer" = ["developer"])),
    responses((status = 200, description = "Aborted: cancelled", body = wharf_core::Deployment)))]
pub(crate) async fn abort(
    State(app): State<App>,
    ctx: DeploymentCtx<role::Developer>,
) -> ApiResult<Json<Deployment>> {
    let dep = app.engine.abort_canary(&ctx.deployment.id).await?;
    tracing::info!(deployment = %dep.id, who = %ctx.who.name, "abort canary");
    Ok(Json(shown(dep)))
}
