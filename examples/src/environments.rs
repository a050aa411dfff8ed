//! Environments of a project (`/v1/projects/{project}/environments`): standing ones
//! (staging, qa) created through the API, and the `pr-<n>` previews webhooks create.
//! Each has env vars layered between the project's and its services' own, and its
//! own services, addressed under
//! `/v1/projects/{project}/environments/{environment}/services/{service}` with the
//! same routes as the project's own services. A standing environment's service is
//! served at `<service>.<environment>.<project>.<base domain>`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use wharf_core::{Environment, EnvironmentId, EnvironmentKind, Project, Service, Timestamp};

use crate::api::{
    apply_env, env_json, environment_in, is_preview_name, project_for, service_json, ApiError,
    ApiResult, App, EnvInput, JsonBody,
};
use crate::auth::{Principal, Role};

/// The services of environment `e`.
async fn services_of(app: &App, e: &Environment) -> ApiResult<Vec<Service>> {
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

async fn environment_json(app: &App, e: &Environment) -> ApiResult<Value> {
    let services: Vec<String> = services_of(app, e)
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect();
    let kind = match &e.kind {
        EnvironmentKind::Standing => json!({"kind": "standing"}),
        EnvironmentKind::Preview { number, branch } => {
            json!({"kind": "preview", "number": number, "branch": branch})
        }
    };
    Ok(json!({
        "id": e.id,
        "name": e.name,
        "kind": kind,
        "env": env_json(&e.env),
        "services": services,
        "created_at": e.created_at,
    }))
}

async fn found(app: &App, p: &Project, key: &str) -> ApiResult<Environment> {
    Ok(environment_in(app, p, Some(key))
        .await?
        .expect("a named environment or an error"))
}

/// `GET /v1/projects/{project}/environments`.
pub(crate) async fn list(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(project): Path<String>,
) -> ApiResult<Json<Value>> {
    let p = project_for(&app, &who, &project, Role::Viewer).await?;
    let mut out = Vec::new();
    for e in app.store.environments(&p.id).await? {
        out.push(environment_json(&app, &e).await?);
    }
    Ok(Json(json!(out)))
}

/// Body of creating or changing an environment.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnvironmentInput {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, EnvInput>,
}

async fn upsert(
    app: &App,
    p: &Project,
    name: &str,
    env: BTreeMap<String, EnvInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let existing = app
        .store
        .environments(&p.id)
        .await?
        .into_iter()
        .find(|e| e.name == name || e.id.as_str() == name);
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
    Ok((status, Json(environment_json(app, &e).await?)))
}

/// `POST /v1/projects/{project}/environments` `{name, env}`: a standing environment.
pub(crate) async fn create(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(project): Path<String>,
    JsonBody(body): JsonBody<EnvironmentInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let p = project_for(&app, &who, &project, Role::Owner).await?;
    let name = body
        .name
        .ok_or_else(|| ApiError::bad("an environment needs a name"))?;
    if app
        .store
        .environments(&p.id)
        .await?
        .iter()
        .any(|e| e.name == name)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("environment {name} exists in project {}", p.name),
        ));
    }
    upsert(&app, &p, &name, body.env).await
}

/// `GET /v1/projects/{project}/environments/{environment}`.
pub(crate) async fn get(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path((project, environment)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let p = project_for(&app, &who, &project, Role::Viewer).await?;
    let e = found(&app, &p, &environment).await?;
    Ok(Json(environment_json(&app, &e).await?))
}

/// `PUT /v1/projects/{project}/environments/{environment}` `{env}`: creates the
/// standing environment or changes its env vars (`null` removes one).
pub(crate) async fn put(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path((project, environment)): Path<(String, String)>,
    JsonBody(body): JsonBody<EnvironmentInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let p = project_for(&app, &who, &project, Role::Owner).await?;
    let current = environment_in(&app, &p, Some(&environment))
        .await
        .ok()
        .flatten();
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
pub(crate) async fn delete(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path((project, environment)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let p = project_for(&app, &who, &project, Role::Owner).await?;
    let e = found(&app, &p, &environment).await?;
    tear_down(&app, &e).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/projects/{project}/environments/{environment}/services`.
pub(crate) async fn services(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path((project, environment)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let p = project_for(&app, &who, &project, Role::Viewer).await?;
    let e = found(&app, &p, &environment).await?;
    let mut out = Vec::new();
    for s in services_of(&app, &e).await? {
        out.push(service_json(&app, &p, &s).await?);
    }
    Ok(Json(json!(out)))
}
