//! The HTTP API under `/v1`: JSON in and out ([`crate::dto`]), errors as
//! `{"error": {"code", "message"}}` with a stable code ([`error`]), bearer-token auth
//! with a role per project enforced by the extractors ([`extract`]), and deployment
//! events as server-sent events resumable with `Last-Event-ID` ([`streams`]).
//!
//! One module per resource: [`projects`], [`services`], [`deployments`],
//! [`environments`], [`domains`], [`previews`], [`volumes`], [`databases`], [`backups`], [`cron`], [`webhooks`]; [`openapi`] documents
//! them all.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wharf_core::StoreExt as _;
use wharf_core::{DynStore, Engine, Project, Service};

use crate::auth::Tokens;
use crate::dto;

pub mod backups;
pub mod cron;
pub mod databases;
pub mod deployments;
pub mod domains;
pub mod environments;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod openapi;
pub mod previews;
pub mod projects;
pub mod run;
pub mod services;
pub mod streams;
pub mod volumes;
pub mod webhooks;

pub use error::ApiError;
pub(crate) use error::{ApiResult, JsonBody};

/// Largest accepted upload.
pub const MAX_UPLOAD: u64 = 512 * 1024 * 1024;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct App {
    /// The engine.
    pub engine: Engine,
    /// Its store.
    pub store: DynStore,
    /// API tokens.
    pub tokens: Arc<Tokens>,
    /// Uploads go under `data_dir/uploads`.
    pub data_dir: PathBuf,
    /// Where apps are served: the proxy's port appended to hostnames in URLs
    /// (`None` for the default port 80).
    pub proxy_port: Option<u16>,
    /// Whether apps are served over HTTPS (their URLs say `https://`).
    pub https: bool,
    /// The secret webhook deliveries must be signed with; webhooks are off without it.
    pub webhook_secret: Option<wharf_core::Secret>,
    /// Deliveries seen, to refuse replays.
    pub deliveries: Arc<webhooks::Deliveries>,
    /// Custom-domain claims and how they are checked.
    pub domains: Arc<domains::Domains>,
    /// Whether apps run isolated from the server (in containers). Host processes run
    /// as the server's account or as the project's production user: previews of forks,
    /// anyone's code, are refused there.
    pub isolated: bool,
    /// The server's metrics (`GET /v1/metrics`).
    pub metrics: Arc<metrics::Metrics>,
    /// Backups of the projects' volumes.
    pub backups: wharf_backup::Backups,
    /// The images managed databases run: the engines' production images mapped as
    /// the operator says (`database_images`).
    pub database_images: wharf_core::detect::ImageMap,
}

/// The API's routes, with auth on everything under `/v1` but `/v1/health`, and the
/// OpenAPI document generated with them.
pub fn routes(app: App) -> (Router<App>, utoipa::openapi::OpenApi) {
    let v1 = OpenApiRouter::new()
        .routes(routes!(projects::list, projects::create))
        .routes(routes!(projects::get, projects::delete))
        .routes(routes!(services::list))
        .routes(routes!(volumes::list))
        .routes(routes!(volumes::delete))
        .routes(routes!(databases::list, databases::create))
        .routes(routes!(databases::credentials))
        .routes(routes!(databases::backup))
        .routes(routes!(databases::rotate))
        .routes(routes!(backups::list, backups::now))
        .routes(routes!(backups::get_settings, backups::put_settings))
        .routes(routes!(backups::restore))
        .routes(routes!(backups::check))
        .routes(routes!(previews::get, previews::set))
        .routes(routes!(previews::approve))
        .routes(routes!(previews::rotate_secret))
        .nest("/projects/{project}/services/{service}", service_routes())
        .routes(routes!(environments::list, environments::create))
        .routes(routes!(
            environments::get,
            environments::put,
            environments::delete
        ))
        .routes(routes!(environments::services))
        .nest(
            "/projects/{project}/environments/{environment}/services/{service}",
            service_routes(),
        )
        .routes(routes!(deployments::get))
        .routes(routes!(deployments::cancel))
        .routes(routes!(deployments::promote))
        .routes(routes!(deployments::abort))
        .routes(routes!(streams::events))
        .routes(routes!(metrics::get))
        .route_layer(middleware::from_fn_with_state(app, authenticate))
        .routes(routes!(health));
    let (router, doc) = OpenApiRouter::with_openapi(openapi::Frame::openapi())
        .nest("/v1", v1)
        .routes(routes!(webhooks::github))
        .routes(routes!(webhooks::gitlab))
        .split_for_parts();
    (router, openapi::finish(doc))
}

/// The whole HTTP surface: the API, `/openapi.json` and the dashboard.
pub fn router(app: App) -> Router {
    let (api, doc) = routes(app.clone());
    let doc = Arc::new(doc);
    api.route(
        "/openapi.json",
        get(move || async move { Json(doc.as_ref().clone()) }),
    )
    .merge(crate::dashboard::routes())
    .with_state(app)
}

/// The routes of one service, nested under `/projects/{project}/services/{service}`
/// (environment-less services) and under
/// `/projects/{project}/environments/{environment}/services/{service}`.
fn service_routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(services::get, services::put, services::delete))
        .routes(routes!(services::set_env))
        .routes(routes!(streams::logs))
        .routes(routes!(deployments::list, deployments::create))
        .routes(routes!(deployments::releases))
        .routes(routes!(deployments::rollback))
        .routes(routes!(domains::list, domains::add))
        .routes(routes!(domains::remove))
        .routes(routes!(domains::verify_again))
        .routes(routes!(services::status))
        .routes(routes!(run::run))
        .routes(routes!(run::scale))
        .routes(routes!(cron::jobs))
        .routes(routes!(cron::runs))
}

#[utoipa::path(get, path = "/health", operation_id = "health", tag = "health",
    security(()),
    responses((status = 200, description = "The API answers", body = dto::Health)))]
async fn health() -> Json<dto::Health> {
    Json(dto::Health {
        status: "ok".into(),
    })
}

async fn authenticate(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        return ApiError::unauthorized("missing bearer token (Authorization: Bearer <token>)")
            .into_response();
    };
    match app.tokens.authenticate(token) {
        Some(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        None => ApiError::unauthorized("unknown token").into_response(),
    }
}

/// Whether `name` has the shape of a preview environment's name (`pr-<number>`).
pub(crate) fn is_preview_name(name: &str) -> bool {
    name.strip_prefix("pr-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Applies env var changes from a request (keys checked first).
pub(crate) fn apply_env(env: &mut wharf_core::EnvVars, input: dto::EnvChanges) -> ApiResult<()> {
    for (k, v) in input {
        wharf_core::model::validate_env_key(&k)?;
        match v {
            dto::EnvInput::Plain(s) => {
                env.insert(k, wharf_core::EnvValue::Plain(s));
            }
            dto::EnvInput::Secret { secret } => {
                env.insert(
                    k,
                    wharf_core::EnvValue::Secret(wharf_core::Secret::new(secret)),
                );
            }
            dto::EnvInput::Remove(()) => {
                env.remove(&k);
            }
        }
    }
    Ok(())
}

/// Refuses (400) a service about to be saved whose env references a service of its
/// project and environment that does not exist, a variable that service does not
/// have, or itself (see [`wharf_core::refs`]); the engine checks again at deploy time.
pub(crate) async fn check_references(app: &App, s: &Service) -> ApiResult<()> {
    if wharf_core::refs::references(&s.env)?.is_empty() {
        return Ok(());
    }
    let mut known: std::collections::BTreeMap<String, wharf_core::EnvVars> = app
        .store
        .services(&s.project)
        .await?
        .into_iter()
        .filter(|o| o.environment == s.environment)
        .map(|o| {
            let env = o.referable_env(None);
            (o.name, env)
        })
        .collect();
    known.insert(s.name.clone(), s.referable_env(None));
    wharf_core::refs::check(&s.name, &s.env, &known)?;
    Ok(())
}

/// A project as responses show it.
pub(crate) fn project_view(p: &Project) -> dto::ProjectView {
    dto::ProjectView {
        id: p.id.clone(),
        name: p.name.clone(),
        env: dto::env_view(&p.env),
        created_at: p.created_at,
    }
}

/// A service as responses show it: with its URL, live deployment and domain claims.
pub(crate) async fn service_view(
    app: &App,
    project: &Project,
    s: &Service,
) -> ApiResult<dto::ServiceView> {
    let host = app.engine.hostname(project, s).await?;
    let scheme = if app.https { "https" } else { "http" };
    let url = match app.proxy_port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    };
    let live = app.store.live_deployment(&s.id).await?;
    let environment_name = match &s.environment {
        Some(id) => extract::found(app.store.environment(id).await)?.map(|e| e.name),
        None => None,
    };
    Ok(dto::ServiceView {
        id: s.id.clone(),
        project: s.project.clone(),
        environment: s.environment.clone(),
        environment_name,
        name: s.name.clone(),
        source: s.source.redacted(),
        build: s.build.clone(),
        port: s.port,
        env: dto::env_view(&s.env),
        depends_on: s.depends_on.clone(),
        health_check: s.health_check.clone(),
        resources: s.resources,
        domains: s.domains.clone(),
        volumes: s.volumes.clone(),
        processes: s.processes.clone(),
        replicas: s.replicas.clone(),
        process_checks: s.process_checks.clone(),
        cron: s.cron.clone(),
        created_at: s.created_at,
        custom_domains: domains::claims(app, s, &host),
        url,
        routed: s.routed(),
        hostname: host,
        live_deployment: live.map(|d| d.id),
    })
}

/// Services as responses show them.
pub(crate) async fn service_views(
    app: &App,
    project: &Project,
    services: impl IntoIterator<Item = Service>,
) -> ApiResult<Vec<dto::ServiceView>> {
    let mut out = Vec::new();
    for s in services {
        out.push(service_view(app, project, &s).await?);
    }
    Ok(out)
}
