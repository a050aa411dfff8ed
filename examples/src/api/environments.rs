//! Environments of a project (`/v1/projects/{project}/environments`): standing ones
//! (staging, qa) created through the API, and the `pr-<n>` previews webhooks create.
//! Each has env vars layered between the project's and its services' own, and its
//! own services, addressed under
//! `/v1/projects/{project}/environments/{environment}/services/{service}` with the
//! same routes as the project's own services. A standing environment's service is
//! served at `<service>.<environment>.<project>.<base domain>`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use wharf_core::{Environment, EnvironmentId, EnvironmentKind, Project, Service, Timestamp};

use super::extract::{find_environment, role, EnvironmentCtx, ProjectCtx};
use super::{apply_env, is_preview_name, service_views, ApiError, ApiResult, App, JsonBody};
use crate::dto::{self, EnvChanges, EnvironmentInput, EnvironmentView, ServiceView};

/// The services of environment `e`.
pub(crate) async fn services_of(app: &App, e: &Environment) -> ApiResult<Vec<Service>> {
    Ok(app
        .store
        .services(&e.project)
        .await?
        .into_iter()
        .filter(|s| s.environment.as_ref() == Some(&e.id))
        .collect())
}

/// Takes environment `e`'s services off the air, deletes them with it and releases
/// their custom domains (an operator's delete, or a closed pull request's preview).
pub(crate) async fn tear_down(app: &App, e: &Environment) -> ApiResult<()> {
    let services = services_of(app, e).await?;
    for s in &services {
        app.engine.teardown(&s.id).await?;
    }
    app.store.delete_environment(&e.id).await?;
    for s in &services {
        app.domains.release_service(s.id.as_str())?;
    }
    Ok(())
}

async fn view(app: &App, e: &Environment) -> ApiResult<EnvironmentView> {
    let services = services_of(app, e).await?;
    Ok(EnvironmentView {
        id: e.id.clone(),
        name: e.name.clone(),
        kind: e.kind.clone(),
        env: dto::env_view(&e.env),
        services: services.into_iter().map(|s| s.name).collect(),
        created_at: e.created_at,
    })
}

/// `GET /v1/projects/{project}/environments`.
#[utoipa::path(get, path = "/projects/{project}/environments", operation_id = "list_environments", tag = "environments",
    params(super::openapi::ProjectParams), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "Standing environments and pr-<n> previews, with their services", body = Vec<crate::dto::EnvironmentView>)))]
pub(crate) async fn list(
    State(app): State<App>,
    ctx: ProjectCtx<role::Viewer>,
) -> ApiResult<Json<Vec<EnvironmentView>>> {
    let mut out = Vec::new();
    for e in app.store.environments(&ctx.project.id).await? {
        out.push(view(&app, &e).await?);
    }
    Ok(Json(out))
}

async fn upsert(
    app: &App,
    p: &Project,
    name: &str,
    env: EnvChanges,
) -> ApiResult<(StatusCode, Json<EnvironmentView>)> {
    let existing = find_environment(&app.store, p, name).await?;
    let (mut e, status) = match existing {
        Some(e) => (e, StatusCode::OK),
        None => {
            wharf_core::model::validate_name(name)?;
            if is_preview_name(name) {
                return Err(ApiError::bad(format!(
                    "environment name {name} is reserved: pr-<number> names are previews, made by webhooks"
                )));
            }
            let e = Environment {
                id: EnvironmentId::random(),
                project: p.id.clone(),
                name: name.to_owned(),
                kind: EnvironmentKind::Standing,
                env: Default::default(),
                created_at: Timestamp::now(),
            };
            (e, StatusCode::CREATED)
        }
    };
    apply_env(&mut e.env, env)?;
    app.store.put_environment(&e).await?;
    Ok((status, Json(view(app, &e).await?)))
}

/// `POST /v1/projects/{project}/environments` `{name, env}`: a standing environment.
#[utoipa::path(post, path = "/projects/{project}/environments", operation_id = "create_environment", tag = "environments",
    params(super::openapi::ProjectParams), request_body = crate::dto::EnvironmentInput, security(("bearer" = ["owner"])),
    responses((status = 201, description = "Created; its services are served at <service>.<environment>.<project>.<base domain>", body = crate::dto::EnvironmentView)))]
pub(crate) async fn create(
    State(app): State<App>,
    ctx: ProjectCtx<role::Owner>,
    JsonBody(body): JsonBody<EnvironmentInput>,
) -> ApiResult<(StatusCode, Json<EnvironmentView>)> {
    let p = ctx.project;
    let name = body
        .name
        .ok_or_else(|| ApiError::bad("an environment needs a name"))?;
    if find_environment(&app.store, &p, &name).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "environment {name} exists in project {}",
            p.name
        )));
    }
    upsert(&app, &p, &name, body.env).await
}

/// `GET /v1/projects/{project}/environments/{environment}`.
#[utoipa::path(get, path = "/projects/{project}/environments/{environment}", operation_id = "get_environment", tag = "environments",
    params(super::openapi::EnvironmentParams), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "The environment", body = crate::dto::EnvironmentView)))]
pub(crate) async fn get(
    State(app): State<App>,
    ctx: EnvironmentCtx<role::Viewer>,
) -> ApiResult<Json<EnvironmentView>> {
    Ok(Json(view(&app, &ctx.environment).await?))
}

/// `PUT /v1/projects/{project}/environments/{environment}` `{env}`: creates the
/// standing environment or changes its env vars (`null` removes one).
#[utoipa::path(put, path = "/projects/{project}/environments/{environment}", operation_id = "put_environment", tag = "environments",
    params(super::openapi::EnvironmentParams), request_body = crate::dto::EnvironmentInput, security(("bearer" = ["owner"])),
    responses((status = 200, description = "Changed", body = crate::dto::EnvironmentView), (status = 201, description = "Created", body = crate::dto::EnvironmentView)))]
pub(crate) async fn put(
    State(app): State<App>,
    ctx: ProjectCtx<role::Owner>,
    Path((_, environment)): Path<(String, String)>,
    JsonBody(body): JsonBody<EnvironmentInput>,
) -> ApiResult<(StatusCode, Json<EnvironmentView>)> {
    let p = ctx.project;
    let current = find_environment(&app.store, &p, &environment).await?;
    let name = current
        .as_ref()
        .map_or(environment.as_str(), |e| e.name.as_str());
    if body.name.as_ref().is_some_and(|n| n != name) {
        return Err(ApiError::bad("an environment cannot be renamed"));
    }
    upsert(&app, &p, &environment, body.env).await
}

/// `DELETE /v1/projects/{project}/environments/{environment}`: takes its services
/// off the air, then deletes them with the environment.
#[utoipa::path(delete, path = "/projects/{project}/environments/{environment}", operation_id = "delete_environment", tag = "environments",
    params(super::openapi::EnvironmentParams), security(("bearer" = ["owner"])),
    responses((status = 204, description = "Its services torn down, then deleted with it")))]
pub(crate) async fn delete(
    State(app): State<App>,
    ctx: EnvironmentCtx<role::Owner>,
) -> ApiResult<StatusCode> {
    tear_down(&app, &ctx.environment).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/projects/{project}/environments/{environment}/services`.
#[utoipa::path(get, path = "/projects/{project}/environments/{environment}/services", operation_id = "list_environment_services", tag = "environments",
    params(super::openapi::EnvironmentParams), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "The environment's services", body = Vec<crate::dto::ServiceView>)))]
pub(crate) async fn services(
    State(app): State<App>,
    ctx: EnvironmentCtx<role::Viewer>,
) -> ApiResult<Json<Vec<ServiceView>>> {
    let services = services_of(&app, &ctx.environment).await?;
    Ok(Json(service_views(&app, &ctx.project, services).await?))
}
