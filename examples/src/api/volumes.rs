//! `/v1/projects/{project}/volumes`: a project's volumes (what its services declare and
//! what the runtime holds), and deleting one: owners only, with the volume's name as
//! confirmation, never while a live service mounts it. Nothing else deletes a volume:
//! redeploys, rollbacks, deleting a service or an environment, recovery and garbage
//! collection all keep them; deleting the project does only when asked
//! (`?volumes=delete`).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use wharf_core::{network_name, ErrorKind, Project, StoreExt as _, VolumeRef};

use super::extract::{find_environment, role, ProjectCtx};
use super::{ApiError, ApiResult, App, JsonBody};
use crate::dto::{VolumeDelete, VolumeMountView, VolumeView};

/// Which environment's volume (`?environment=NAME`; none: the project's own).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct VolumeQuery {
    /// A standing or preview environment of the project.
    #[serde(default)]
    environment: Option<String>,
    /// The scope of a volume left by a deleted environment, as the listing shows it
    /// (`wharf-<project>_<env>`); not with `environment`.
    #[serde(default)]
    scope: Option<String>,
}

/// `{volume}` of the path.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct VolumeParams {
    /// The project's name or id.
    #[allow(dead_code)] // read by the project extractor
    #[serde(default)]
    project: String,
    /// The volume's name.
    volume: String,
}

/// `GET /v1/projects/{project}/volumes`.
#[utoipa::path(get, path = "/projects/{project}/volumes", operation_id = "list_volumes", tag = "volumes",
    params(super::openapi::ProjectParams), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "The project's volumes and its environments': who mounts them, whether the runtime holds them", body = Vec<crate::dto::VolumeView>)))]
pub(crate) async fn list(
    State(app): State<App>,
    ctx: ProjectCtx<role::Viewer>,
) -> ApiResult<Json<Vec<VolumeView>>> {
    Ok(Json(views(&app, &ctx.project).await?))
}

/// Every volume of `project`: declared by a service, held by the runtime, or both.
pub(crate) async fn views(app: &App, project: &Project) -> ApiResult<Vec<VolumeView>> {
    let environments = app.store.environments(&project.id).await?;
    let env_of_scope = |scope: Option<&str>| {
        environments
            .iter()
            .find(|e| Some(network_name(project, Some(e)).as_str()) == scope)
            .map(|e| e.name.clone())
    };
    let own = network_name(project, None);
    let view = |r: &VolumeRef| {
        let environment = env_of_scope(r.scope.as_deref());
        VolumeView {
            name: r.name.clone(),
            orphaned: environment.is_none() && r.scope.as_deref() != Some(own.as_str()),
            environment,
            scope: r.scope.clone(),
            mounted_by: Vec::new(),
            size: None,
            exists: None,
            runtime_name: None,
            size_bytes: None,
        }
    };
    let mut out: BTreeMap<VolumeRef, VolumeView> = BTreeMap::new();
    for s in app.store.services(&project.id).await? {
        let live = app
            .store
            .live_deployment(&s.id)
            .await?
            .is_some_and(|d| d.instance.is_some());
        let refs = app.engine.volume_refs(project, &s).await?;
        for (r, m) in refs.into_iter().zip(&s.volumes) {
            let v = out.entry(r.clone()).or_insert_with(|| view(&r));
            v.size = v.size.take().or_else(|| m.size.clone());
            v.mounted_by.push(VolumeMountView {
                service: s.name.clone(),
                path: m.path.clone(),
                live,
            });
        }
    }
    let wanted: Vec<VolumeRef> = out.keys().cloned().collect();
    match app.engine.runtime().volumes(&project.id, &wanted).await {
        Ok(held) => {
            for v in out.values_mut() {
                v.exists = Some(false);
            }
            for info in held {
                let v = out
                    .entry(info.volume.clone())
                    .or_insert_with(|| view(&info.volume));
                v.exists = Some(true);
                v.runtime_name = Some(info.runtime_name);
                v.size_bytes = info.size_bytes;
            }
        }
        // A runtime without volumes of its own: what the services declare only.
        Err(e) if e.kind() == ErrorKind::Unsupported => {}
        Err(e) => return Err(e.into()),
    }
    Ok(out.into_values().collect())
}

/// `DELETE /v1/projects/{project}/volumes/{volume}` `{"confirm": "<volume>"}`.
#[utoipa::path(delete, path = "/projects/{project}/volumes/{volume}", operation_id = "delete_volume", tag = "volumes",
    params(VolumeParams, VolumeQuery), request_body = crate::dto::VolumeDelete, security(("bearer" = ["owner"])),
    responses((status = 204, description = "The volume and its data are deleted"),
        (status = 400, description = "The confirmation does not name the volume"),
        (status = 409, description = "A live service mounts it")))]
pub(crate) async fn delete(
    State(app): State<App>,
    ctx: ProjectCtx<role::Owner>,
    Path(path): Path<VolumeParams>,
    Query(q): Query<VolumeQuery>,
    JsonBody(body): JsonBody<VolumeDelete>,
) -> ApiResult<StatusCode> {
    let project = ctx.project;
    wharf_core::validate_name(&path.volume)?;
    if body.confirm != path.volume {
        return Err(ApiError::bad(format!(
            "deleting volume {} deletes its data: send {{\"confirm\": \"{}\"}} to confirm",
            path.volume, path.volume
        )));
    }
    let environment = match &q.environment {
        None => None,
        Some(key) => Some(
            find_environment(&app.store, &project, key)
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(format!("no environment {key} in project {}", project.name))
                })?,
        ),
    };
    let listed = views(&app, &project).await?;
    let scope = match (&q.scope, environment) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad("give ?environment= or ?scope=, not both"));
        }
        // Only a volume the listing shows as orphaned, so ?scope= never reaches the
        // project's own volumes or a live environment's by another spelling.
        (Some(scope), None) => {
            let orphaned = listed
                .iter()
                .any(|v| v.name == path.volume && v.orphaned && v.scope.as_ref() == Some(scope));
            if !orphaned {
                return Err(ApiError::not_found(format!(
                    "no volume {} left by a deleted environment in scope {scope}",
                    path.volume
                )));
            }
            scope.clone()
        }
        (None, environment) => network_name(&project, environment.as_ref()),
    };
    let volume = VolumeRef {
        project: project.id.clone(),
        scope: Some(scope),
        name: path.volume.clone(),
    };
    let using: Vec<String> = listed
        .into_iter()
        .filter(|v| v.name == volume.name && v.scope == volume.scope)
        .flat_map(|v| v.mounted_by)
        .filter(|m| m.live)
        .map(|m| m.service)
        .collect();
    if !using.is_empty() {
        return Err(ApiError::conflict(format!(
            "volume {} is mounted by live services ({}): delete them or remove the volume from them first",
            volume.name,
            using.join(", ")
        )));
    }
    app.engine.runtime().remove_volume(&volume).await?;
    tracing::info!(project = %project.name, volume = %volume.name, "volume deleted by its owner");
    Ok(StatusCode::NO_CONTENT)
}

/// Every volume the runtime holds for `project` (for deleting the project with
/// `?volumes=delete`): asked before anything is torn down, so a runtime that cannot
/// list volumes refuses the deletion before it starts.
pub(crate) async fn held(app: &App, project: &Project) -> ApiResult<Vec<VolumeRef>> {
    let mut wanted = Vec::new();
    for s in app.store.services(&project.id).await? {
        wanted.extend(app.engine.volume_refs(project, &s).await?);
    }
    let held = app.engine.runtime().volumes(&project.id, &wanted).await?;
    Ok(held.into_iter().map(|i| i.volume).collect())
}
