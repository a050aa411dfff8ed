//! `/v1/projects/{project}/services/{service}` (and the same under
//! `/environments/{environment}/`): read, create or change, delete a service, set its
//! env vars, and ask the runtime how its live instance is.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use wharf_core::StoreExt as _;
use wharf_core::{ErrorKind, Service, SourceSpec};

use super::extract::{role, ProjectCtx, ServiceCtx, ServiceSlot};
use super::{
    apply_env, check_references, is_preview_name, service_view, service_views, ApiError, ApiResult,
    App, JsonBody,
};
use crate::dto::{
    self, EnvChanges, EnvView, InstanceState, ServiceInput, ServiceStatus, ServiceView,
};

/// `GET /v1/projects/{project}/services`: the project's own services.
#[utoipa::path(get, path = "/projects/{project}/services", operation_id = "list_services", tag = "services",
    params(super::openapi::ProjectParams), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "The project's own services, with URL and live deployment", body = Vec<crate::dto::ServiceView>)))]
pub(crate) async fn list(
    State(app): State<App>,
    ctx: ProjectCtx<role::Viewer>,
) -> ApiResult<Json<Vec<ServiceView>>> {
    let services = app.store.services(&ctx.project.id).await?;
    Ok(Json(service_views(&app, &ctx.project, services).await?))
}

/// `GET .../services/{service}`.
#[utoipa::path(get, path = "/", operation_id = "get_service", tag = "services",
    params(super::openapi::ServiceParams), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "The service", body = crate::dto::ServiceView)))]
pub(crate) async fn get(
    State(app): State<App>,
    ctx: ServiceCtx<role::Viewer>,
) -> ApiResult<Json<ServiceView>> {
    Ok(Json(service_view(&app, &ctx.project, &ctx.service).await?))
}

/// A new service named `key` in the slot's project (and environment), with no source.
fn new_service(slot: &ServiceSlot<role::Owner>) -> ApiResult<Service> {
    if is_preview_name(&slot.key) {
        return Err(ApiError::bad(format!(
            "service name {} is reserved: pr-<number> names preview environments",
            slot.key
        )));
    }
    let mut s = Service::new(
        &slot.project.id,
        &slot.key,
        SourceSpec::Image {
            image: String::new(),
        },
    )?;
    s.environment = slot.environment.as_ref().map(|e| e.id.clone());
    Ok(s)
}

/// Applies the fields a request gives.
fn apply(s: &mut Service, body: ServiceInput) -> ApiResult<()> {
    if let Some(src) = body.source {
        let src = src.into_spec().map_err(ApiError::bad)?;
        // A source sent back as responses show it (its URL's credentials as `***`)
        // keeps the credentials stored.
        if src != s.source.redacted() {
            s.source = src;
        }
    }
    if let Some(b) = body.build {
        s.build = b;
    }
    if body.port.is_some() {
        s.port = body.port;
    }
    apply_env(&mut s.env, body.env)?;
    if let Some(d) = body.depends_on {
        s.depends_on = d;
    }
    if body.health_check.is_some() {
        s.health_check = body.health_check;
    }
    if let Some(r) = body.resources {
        s.resources = r;
    }
    if let Some(v) = body.volumes {
        // Checked here too: a service created without a source skips the full check.
        wharf_core::VolumeMount::validate_all(&v)?;
        s.volumes = v;
    }
    if let Some(p) = body.processes {
        // Checked here too, for the same reason.
        for (name, command) in &p {
            wharf_core::validate_process(name, command)?;
        }
        s.processes = p;
    }
    if let Some(r) = body.replicas {
        wharf_core::validate_replicas(&r)?;
        s.replicas = r;
    }
    if let Some(c) = body.process_checks {
        // Checked here too; whether the types exist is known once a deployment
        // knows the app's Procfile.
        wharf_core::validate_process_checks(&c)?;
        s.process_checks = c;
    }
    if let Some(c) = body.cron {
        wharf_core::CronJob::validate_all(&c)?;
        s.cron = c;
    }
    Ok(())
}

/// `PUT .../services/{service}`: creates the service (201) or changes it (200).
#[utoipa::path(put, path = "/", operation_id = "put_service", tag = "services",
    params(super::openapi::ServiceParams), request_body = crate::dto::ServiceInput, security(("bearer" = ["owner"])),
    responses((status = 200, description = "Changed", body = crate::dto::ServiceView), (status = 201, description = "Created", body = crate::dto::ServiceView)))]
pub(crate) async fn put(
    State(app): State<App>,
    slot: ServiceSlot<role::Owner>,
    JsonBody(mut body): JsonBody<ServiceInput>,
) -> ApiResult<(StatusCode, Json<ServiceView>)> {
    let created = slot.service.is_none();
    let mut s = match &slot.service {
        Some(s) => s.clone(),
        None => new_service(&slot)?,
    };
    let wanted_domains = body.domains.take();
    apply(&mut s, body)?;
    if !created || !matches!(&s.source, SourceSpec::Image { image } if image.is_empty()) {
        s.validate()?;
    }
    check_references(&app, &s).await?;
    // Bad or taken domains are refused before anything is stored.
    let domains = wanted_domains
        .map(|d| super::domains::precheck(&app, s.id.as_str(), &d))
        .transpose()?;
    app.store.put_service(&s).await?;
    if let Some(d) = domains {
        // Each domain is claimed, and routed once DNS shows it points here.
        super::domains::set(&app, &slot.project, &mut s, &d).await?;
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(service_view(&app, &slot.project, &s).await?)))
}

/// `DELETE .../services/{service}`: tears it down and deletes it.
#[utoipa::path(delete, path = "/", operation_id = "delete_service", tag = "services",
    params(super::openapi::ServiceParams), security(("bearer" = ["owner"])),
    responses((status = 204, description = "Torn down and deleted")))]
pub(crate) async fn delete(
    State(app): State<App>,
    ctx: ServiceCtx<role::Owner>,
) -> ApiResult<StatusCode> {
    let s = ctx.service;
    app.engine.teardown(&s.id).await?;
    app.store.delete_service(&s.id).await?;
    app.domains.release_service(s.id.as_str())?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT .../services/{service}/env`: `{KEY: "value" | {"secret": "value"} | null}`.
#[utoipa::path(put, path = "/env", operation_id = "set_env", tag = "services",
    params(super::openapi::ServiceParams), request_body = crate::dto::EnvChanges, security(("bearer" = ["developer"])),
    responses((status = 200, description = "The service's env vars, secrets masked", body = crate::dto::EnvView)))]
pub(crate) async fn set_env(
    State(app): State<App>,
    ctx: ServiceCtx<role::Developer>,
    JsonBody(body): JsonBody<EnvChanges>,
) -> ApiResult<Json<EnvView>> {
    let mut s = ctx.service;
    apply_env(&mut s.env, body)?;
    check_references(&app, &s).await?;
    app.store.put_service(&s).await?;
    Ok(Json(dto::env_view(&s.env)))
}

/// `GET .../services/{service}/status`: the live instance's status as the runtime
/// reports it now (its health probed), so the dashboard can tell a live release
/// whose app has since crashed.
#[utoipa::path(get, path = "/status", operation_id = "service_status", tag = "services",
    params(super::openapi::ServiceParams), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "The live instance's status from the runtime, health probed now (nulls when nothing is live)", body = crate::dto::ServiceStatus)))]
pub(crate) async fn status(
    State(app): State<App>,
    ctx: ServiceCtx<role::Viewer>,
) -> ApiResult<Json<ServiceStatus>> {
    let live = app.store.live_deployment(&ctx.service.id).await?;
    let Some((dep, instance)) = live.and_then(|d| d.instance.clone().map(|i| (d, i))) else {
        return Ok(Json(ServiceStatus {
            live_deployment: None,
            release: None,
            instance: None,
            status: None,
        }));
    };
    let status = match app.engine.runtime().status(&instance.id).await {
        Ok(status) => InstanceState::Runtime(status),
        Err(e) if e.kind() == ErrorKind::NotFound => InstanceState::Missing {
            kind: "missing".into(),
            reason: "the runtime no longer has this instance".into(),
        },
        Err(e) => return Err(e.into()),
    };
    Ok(Json(ServiceStatus {
        live_deployment: Some(dep.id),
        release: dep.release,
        instance: Some(instance.id),
        status: Some(status),
    }))
}
