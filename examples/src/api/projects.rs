//! `/v1/projects`: list, create (operator only), get and delete projects.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;

use super::extract::{find_project, role, Operator, ProjectCtx};
use super::{apply_env, project_view, ApiError, ApiResult, App, JsonBody};
use crate::auth::Principal;
use crate::dto::{NewProject, ProjectView};

/// `GET /v1/projects`: the projects this token holds a role in.
#[utoipa::path(get, path = "/projects", operation_id = "list_projects", tag = "projects",
    security(("bearer" = [])),
    responses((status = 200, description = "Projects this token holds a role in", body = Vec<crate::dto::ProjectView>)))]
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
#[utoipa::path(post, path = "/projects", operation_id = "create_project", tag = "projects",
    request_body = crate::dto::NewProject, security(("bearer" = ["operator"])),
    responses((status = 201, description = "Created", body = crate::dto::ProjectView)))]
pub(crate) async fn create(
    State(app): State<App>,
    _: Operator,
    JsonBody(body): JsonBody<NewProject>,
) -> ApiResult<(StatusCode, Json<ProjectView>)> {
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
#[utoipa::path(get, path = "/projects/{project}", operation_id = "get_project", tag = "projects",
    params(super::openapi::ProjectParams), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "The project (by name or id)", body = crate::dto::ProjectView)))]
pub(crate) async fn get(ctx: ProjectCtx<role::Viewer>) -> Json<ProjectView> {
    Json(project_view(&ctx.project))
}

/// What deleting a project does with its volumes.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteProjectQuery {
    /// `keep` (the default: the volumes and their data stay on the runtime) or
    /// `delete` (they are deleted with the project).
    #[serde(default)]
    volumes: Option<String>,
    /// With `volumes=delete`: the project's name, confirming that its data goes.
    #[serde(default)]
    confirm: Option<String>,
}

/// `DELETE /v1/projects/{project}`: tears down every service, then deletes it. Its
/// volumes stay unless `?volumes=delete&confirm=<project>` says otherwise.
#[utoipa::path(delete, path = "/projects/{project}", operation_id = "delete_project", tag = "projects",
    params(super::openapi::ProjectParams, DeleteProjectQuery), security(("bearer" = ["owner"])),
    responses((status = 204, description = "Every service torn down and the project deleted (its volumes too with ?volumes=delete&confirm=<project>)")))]
pub(crate) async fn delete(
    State(app): State<App>,
    ctx: ProjectCtx<role::Owner>,
    Query(q): Query<DeleteProjectQuery>,
) -> ApiResult<StatusCode> {
    let delete_volumes = match q.volumes.as_deref() {
        None | Some("keep") => false,
        Some("delete") => true,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "volumes={other:?}: say keep (the default) or delete"
            )))
        }
    };
    let p = ctx.project;
    if delete_volumes && q.confirm.as_deref() != Some(p.name.as_str()) {
        return Err(ApiError::bad(format!(
            "volumes=delete deletes every volume of {0} and its data: confirm with \
             &confirm={0}",
            p.name
        )));
    }
    let volumes = match delete_volumes {
        true => super::volumes::held(&app, &p).await?,
        false => Vec::new(),
    };
    let services = app.store.services(&p.id).await?;
    for s in &services {
        app.engine.teardown(&s.id).await?;
    }
    for v in &volumes {
        app.engine.runtime().remove_volume(v).await?;
    }
    if delete_volumes {
        tracing::info!(project = %p.name, volumes = volumes.len(), "deleted the project's volumes, as asked");
    }
    app.store.delete_project(&p.id).await?;
    for s in &services {
        app.domains.release_service(s.id.as_str())?;
    }
    // Roles are held by name: a new project of this name starts with none of them.
    let tokens = app.tokens.forget_project(&p.name).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("project deleted, but its roles stay in the token file: {e}"),
        )
    })?;
    tracing::info!(project = %p.name, tokens, "roles in the deleted project taken from its tokens");
    Ok(StatusCode::NO_CONTENT)
}
