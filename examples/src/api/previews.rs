//! `/v1/projects/{project}/previews`: a project's preview settings (what forks may
//! do, the env previews start with), approval of a fork's head commit, and the
//! project's own webhook secret.

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use wharf_core::{EnvironmentKind, Fork, Secret};

use super::extract::{role, ProjectCtx};
use super::webhooks::{deploy_at, preview_env};
use super::{apply_env, ApiError, ApiResult, App, JsonBody};
use crate::dto::{
    self, ApproveRequest, HookDeployment, PreviewView, PreviewsInput, PreviewsView,
    WebhookSecretView,
};

async fn view(app: &App, project: &wharf_core::Project) -> ApiResult<PreviewsView> {
    let services = app.store.services(&project.id).await?;
    let mut previews = Vec::new();
    for e in app.store.environments(&project.id).await? {
        if let EnvironmentKind::Preview {
            number,
            branch,
            fork,
        } = e.kind
        {
            previews.push(PreviewView {
                number,
                branch,
                fork,
                services: services
                    .iter()
                    .filter(|s| s.environment.as_ref() == Some(&e.id))
                    .map(|s| s.name.clone())
                    .collect(),
            });
        }
    }
    Ok(PreviewsView {
        forks: project.previews.forks,
        env: dto::env_view(&project.previews.env),
        previews,
    })
}

/// `GET /v1/projects/{project}/previews`.
#[utoipa::path(get, path = "/projects/{project}/previews", operation_id = "get_previews", tag = "previews",
    params(super::openapi::ProjectParams), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "The preview settings and the previews standing", body = crate::dto::PreviewsView)))]
pub(crate) async fn get(
    State(app): State<App>,
    ctx: ProjectCtx<role::Viewer>,
) -> ApiResult<Json<PreviewsView>> {
    Ok(Json(view(&app, &ctx.project).await?))
}

/// `PUT /v1/projects/{project}/previews`.
#[utoipa::path(put, path = "/projects/{project}/previews", operation_id = "set_previews", tag = "previews",
    params(super::openapi::ProjectParams), request_body = crate::dto::PreviewsInput,
    security(("bearer" = ["owner"])),
    responses((status = 200, description = "Changed (new previews start with the env; the fork policy applies to the next delivery)", body = crate::dto::PreviewsView)))]
pub(crate) async fn set(
    State(app): State<App>,
    ctx: ProjectCtx<role::Owner>,
    JsonBody(body): JsonBody<PreviewsInput>,
) -> ApiResult<Json<PreviewsView>> {
    let mut p = ctx.project;
    if let Some(forks) = body.forks {
        p.previews.forks = forks;
    }
    apply_env(&mut p.previews.env, body.env)?;
    app.store.put_project(&p).await?;
    Ok(Json(view(&app, &p).await?))
}

/// The pull request number in the path.
#[derive(Debug, Deserialize)]
pub(crate) struct Number {
    number: u64,
}

/// Path parameters of one preview.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by utoipa only
pub(crate) struct PreviewParams {
    /// The project's name or id.
    project: String,
    /// The pull/merge request number.
    number: u64,
}

/// `POST /v1/projects/{project}/previews/{number}/approve`: an owner vouches for the
/// fork's head commit waiting in that preview; it is deployed, with the secrets.
#[utoipa::path(post, path = "/projects/{project}/previews/{number}/approve", operation_id = "approve_preview", tag = "previews",
    params(PreviewParams), request_body = crate::dto::ApproveRequest, security(("bearer" = ["owner"])),
    responses((status = 202, description = "The approved commit's deployments, one per service of the preview", body = Vec<crate::dto::HookDeployment>)))]
pub(crate) async fn approve(
    State(app): State<App>,
    ctx: ProjectCtx<role::Owner>,
    Path(Number { number }): Path<Number>,
    JsonBody(body): JsonBody<ApproveRequest>,
) -> ApiResult<(axum::http::StatusCode, Json<Vec<HookDeployment>>)> {
    let p = ctx.project;
    let missing = || ApiError::not_found(format!("project {} has no preview {number}", p.name));
    let mut env = preview_env(&app, &p.id, number)
        .await?
        .ok_or_else(missing)?;
    let EnvironmentKind::Preview {
        fork: Some(Fork {
            awaiting, approved, ..
        }),
        ..
    } = &mut env.kind
    else {
        return Err(ApiError::conflict(format!(
            "preview {number} is not of a fork: it needs no approval"
        )));
    };
    let sha = awaiting.take().ok_or_else(|| {
        ApiError::conflict(format!(
            "preview {number} has no commit waiting for approval"
        ))
    })?;
    if !sha.eq_ignore_ascii_case(body.commit.trim()) {
        return Err(ApiError::conflict(format!(
            "preview {number} waits with commit {sha}, not {}: review that one",
            body.commit.trim()
        )));
    }
    *approved = Some(sha.clone());
    app.store.put_environment(&env).await?;
    let mut out = Vec::new();
    for svc in super::environments::services_of(&app, &env).await? {
        let trigger = wharf_core::Trigger::Manual;
        let h = deploy_at(&app, &svc, trigger, Some(&sha)).await?;
        out.push(HookDeployment {
            service: svc.name,
            preview: Some(number),
            deployment: Some(h.id().clone()),
            removed: None,
            waiting: None,
        });
    }
    Ok((axum::http::StatusCode::ACCEPTED, Json(out)))
}

/// `POST /v1/projects/{project}/webhook-secret`: makes (or replaces) the project's
/// webhook secret and shows it this once; the old one stops working at once.
#[utoipa::path(post, path = "/projects/{project}/webhook-secret", operation_id = "rotate_webhook_secret", tag = "previews",
    params(super::openapi::ProjectParams), security(("bearer" = ["owner"])),
    responses((status = 200, description = "The new secret, shown once", body = crate::dto::WebhookSecretView)))]
pub(crate) async fn rotate_secret(
    State(app): State<App>,
    ctx: ProjectCtx<role::Owner>,
) -> ApiResult<Json<WebhookSecretView>> {
    let mut p = ctx.project;
    let secret = crate::auth::generate();
    p.webhook_secret = Some(Secret::new(secret.clone()));
    app.store.put_project(&p).await?;
    Ok(Json(WebhookSecretView {
        secret,
        paths: vec!["/hooks/github".into(), "/hooks/gitlab".into()],
    }))
}
