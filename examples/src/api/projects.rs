//! `/v1/projects`: list, create (operator only), get and delete projects.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::extract::{find_project, role, ProjectCtx};
use super::{apply_env, project_view, ApiError, ApiResult, App, JsonBody};
use crate::auth::Principal;
use crate::dto::{NewProject, ProjectView};

/// `GET /v1/projects`: the projects this token holds a role in.
pub(crate) async fn list(
    State(app): State<App>,
    who: Principal,
) -> ApiResult<Json<Vec<ProjectView>>> {
    let projects = app.store.projects().await?;
    Ok(Json(
        projects
            .iter()
            .filter(|p| who.role(&p.name).is_some())
            .map(project_view)
            .collect(),
    ))
}

/// `POST /v1/projects`: the operator creates a project.
pub(crate) async fn create(
    State(app): State<App>,
    who: Principal,
    JsonBody(body): JsonBody<NewProject>,
) -> ApiResult<(StatusCode, Json<ProjectView>)> {
    if !who.is_admin() {
        return Err(ApiError::forbidden("only the operator creates projects"));
    }
    let mut project = wharf_core::Project::new(&body.name)?;
    if find_project(&app.store, &project.name).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "project {} exists",
            project.name
        )));
    }
    apply_env(&mut project.env, body.env)?;
    app.store.put_project(&project).await?;
    Ok((StatusCode::CREATED, Json(project_view(&project))))
}

/// `GET /v1/projects/{project}`.
pub(crate) async fn get(ctx: ProjectCtx<role::Viewer>) -> Json<ProjectView> {
    Json(project_view(&ctx.project))
}

/// `DELETE /v1/projects/{project}`: tears down every service, then deletes it.
pub(crate) async fn delete(
    State(app): State<App>,
    ctx: ProjectCtx<role::Owner>,
) -> ApiResult<StatusCode> {
    let p = ctx.project;
    let services = app.store.services(&p.id).await?;
    for s in &services {
        app.engine.teardown(&s.id).await?;
    }
    app.store.delete_project(&p.id).await?;
    for s in &services {
        app.domains.release_service(s.id.as_str())?;
    }
    Ok(StatusCode::NO_CONTENT)
}
