//! The HTTP API under `/v1`: JSON in and out, errors as `{"error": {"code", "message"}}`
//! with a stable code, bearer-token auth with a role per project, and deployment events
//! as server-sent events resumable with `Last-Event-ID`.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;
use wharf_core::{
    DeploymentFilter, DeploymentId, DynStore, Engine, EnvValue, ErrorKind, Event, EventKind,
    GitRef, Project, Secret, Service, SourceSpec, StoreExt, Trigger,
};

use crate::auth::{Principal, Role, Tokens};

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
    pub deliveries: Arc<crate::webhooks::Deliveries>,
    /// Custom-domain claims and how they are checked.
    pub domains: Arc<crate::domains::Domains>,
}

/// An API error: HTTP status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with `status`, the stable `code` and a message for humans.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
}

impl From<wharf_core::Error> for ApiError {
    fn from(e: wharf_core::Error) -> Self {
        let (status, code) = match e.kind() {
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::InvalidInput => (StatusCode::BAD_REQUEST, "invalid_input"),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ErrorKind::Cancelled => (StatusCode::CONFLICT, "cancelled"),
            ErrorKind::BuildFailed => (StatusCode::UNPROCESSABLE_ENTITY, "build_failed"),
            ErrorKind::HealthCheckFailed => {
                (StatusCode::UNPROCESSABLE_ENTITY, "health_check_failed")
            }
            ErrorKind::Unsupported => (StatusCode::NOT_IMPLEMENTED, "unsupported"),
            ErrorKind::Backend => (StatusCode::BAD_GATEWAY, "backend"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::warn!(error = %e, "request failed");
        }
        ApiError::new(status, code, e.message().to_owned())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// A JSON request body whose rejections (malformed JSON, unknown fields, wrong types,
/// missing content type) are API errors like every other.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(e) => Err(ApiError::bad(e.body_text())),
        }
    }
}

/// The API's routes, with auth on everything under `/v1` but `/v1/health`.
pub fn router(app: App) -> Router {
    let v1 = Router::new()
        .route("/projects", get(list_projects).post(create_project))
        .route(
            "/projects/{project}",
            get(get_project).delete(delete_project),
        )
        .route("/projects/{project}/services", get(list_services))
        .nest("/projects/{project}/services/{service}", service_routes())
        .route(
            "/projects/{project}/environments",
            get(crate::environments::list).post(crate::environments::create),
        )
        .route(
            "/projects/{project}/environments/{environment}",
            get(crate::environments::get)
                .put(crate::environments::put)
                .delete(crate::environments::delete),
        )
        .route(
            "/projects/{project}/environments/{environment}/services",
            get(crate::environments::services),
        )
        .nest(
            "/projects/{project}/environments/{environment}/services/{service}",
            service_routes(),
        )
        .route("/deployments/{id}", get(get_deployment))
        .route("/deployments/{id}/cancel", post(cancel))
        .route("/deployments/{id}/events", get(events))
        .route_layer(middleware::from_fn_with_state(app.clone(), authenticate))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }));
    Router::new()
        .nest("/v1", v1)
        .route("/hooks/github", post(crate::webhooks::github))
        .route("/hooks/gitlab", post(crate::webhooks::gitlab))
        .route(
            "/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
        .merge(crate::dashboard::routes())
        .with_state(app)
}

/// Whether `name` has the shape of a preview environment's name (`pr-<number>`).
pub(crate) fn is_preview_name(name: &str) -> bool {
    name.strip_prefix("pr-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The routes of one service, nested under `/projects/{project}/services/{service}`
/// (environment-less services) and under
/// `/projects/{project}/environments/{environment}/services/{service}`.
fn service_routes() -> Router<App> {
    Router::new()
        .route(
            "/",
            get(get_service).put(put_service).delete(delete_service),
        )
        .route("/env", put(set_env))
        .route("/logs", get(service_logs))
        .route("/deployments", get(list_deployments).post(deploy))
        .route("/releases", get(list_releases))
        .route("/rollback", post(rollback))
        .route(
            "/domains",
            get(crate::domains::list).post(crate::domains::add),
        )
        .route(
            "/domains/{domain}",
            axum::routing::delete(crate::domains::remove),
        )
        .route(
            "/domains/{domain}/verify",
            post(crate::domains::verify_again),
        )
        .route("/status", get(service_status))
}

async fn authenticate(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token (Authorization: Bearer <token>)",
        )
        .into_response();
    };
    match app.tokens.authenticate(token) {
        Some(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        None => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token").into_response()
        }
    }
}

/// The project named (or with id) `key`, if `who` may see it with at least `need`.
/// A project the caller holds no role in is reported as absent: its existence is not
/// revealed.
pub(crate) async fn project_for(
    app: &App,
    who: &Principal,
    key: &str,
    need: Role,
) -> ApiResult<Project> {
    let project = app
        .store
        .projects()
        .await?
        .into_iter()
        .find(|p| p.name == key || p.id.as_str() == key)
        .ok_or_else(|| ApiError::not_found(format!("no project {key}")))?;
    match who.role(&project.name) {
        None => Err(ApiError::not_found(format!("no project {key}"))),
        Some(r) if r < need => Err(ApiError::forbidden(format!(
            "this token is {} in project {}; this needs {}",
            role_name(r),
            project.name,
            role_name(need)
        ))),
        Some(_) => Ok(project),
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Viewer => "viewer",
        Role::Developer => "developer",
        Role::Owner => "owner",
    }
}

/// The path of a service route: project and service (by name or id), and the
/// environment under `/environments/{environment}/` (none: the project's own
/// services); `domain` for the domain routes.
#[derive(Debug, Deserialize)]
pub(crate) struct SvcPath {
    pub(crate) project: String,
    pub(crate) service: String,
    #[serde(default)]
    pub(crate) environment: Option<String>,
    #[serde(default)]
    pub(crate) domain: Option<String>,
}

/// The environment a service path names, if any (404 if it has none of that name).
pub(crate) async fn environment_in(
    app: &App,
    project: &Project,
    key: Option<&str>,
) -> ApiResult<Option<wharf_core::Environment>> {
    let Some(key) = key else {
        return Ok(None);
    };
    app.store
        .environments(&project.id)
        .await?
        .into_iter()
        .find(|e| e.name == key || e.id.as_str() == key)
        .map(Some)
        .ok_or_else(|| {
            ApiError::not_found(format!("no environment {key} in project {}", project.name))
        })
}

/// The service a path names, in its environment (or among the project's own).
pub(crate) async fn service_in(app: &App, project: &Project, key: &SvcPath) -> ApiResult<Service> {
    let env = environment_in(app, project, key.environment.as_deref()).await?;
    let env_id = env.as_ref().map(|e| &e.id);
    let where_ = match &env {
        Some(e) => format!("environment {} of project {}", e.name, project.name),
        None => format!("project {}", project.name),
    };
    app.store
        .services(&project.id)
        .await?
        .into_iter()
        .find(|s| {
            s.environment.as_ref() == env_id
                && (s.name == key.service || s.id.as_str() == key.service)
        })
        .ok_or_else(|| ApiError::not_found(format!("no service {} in {where_}", key.service)))
}

pub(crate) fn env_json(env: &wharf_core::EnvVars) -> Value {
    env.iter()
        .map(|(k, v)| {
            let v = match v {
                EnvValue::Plain(s) => json!(s),
                EnvValue::Secret(_) => json!({"secret": true}),
            };
            (k.clone(), v)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn project_json(p: &Project) -> Value {
    json!({"id": p.id, "name": p.name, "env": env_json(&p.env), "created_at": p.created_at})
}

pub(crate) async fn service_json(app: &App, project: &Project, s: &Service) -> ApiResult<Value> {
    let mut v = serde_json::to_value(s).map_err(|e| ApiError::bad(e.to_string()))?;
    v["env"] = env_json(&s.env);
    let host = app.engine.hostname(project, s).await?;
    let scheme = if app.https { "https" } else { "http" };
    let url = match app.proxy_port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    };
    v["url"] = json!(url);
    v["hostname"] = json!(host);
    let live = app.store.live_deployment(&s.id).await?;
    v["live_deployment"] = json!(live.map(|d| d.id));
    v["custom_domains"] = crate::domains::claims_json(app, s, &host);
    if s.environment.is_some() {
        let envs = app.store.environments(&project.id).await?;
        let name = envs
            .iter()
            .find(|e| Some(&e.id) == s.environment.as_ref())
            .map(|e| e.name.clone());
        v["environment_name"] = json!(name);
    }
    Ok(v)
}

async fn list_projects(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    let projects: Vec<Value> = app
        .store
        .projects()
        .await?
        .iter()
        .filter(|p| who.role(&p.name).is_some())
        .map(project_json)
        .collect();
    Ok(Json(json!(projects)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProject {
    name: String,
    #[serde(default)]
    env: BTreeMap<String, EnvInput>,
}

async fn create_project(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    JsonBody(body): JsonBody<NewProject>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !who.is_admin() {
        return Err(ApiError::forbidden("only the operator creates projects"));
    }
    let mut project = Project::new(&body.name)?;
    if app
        .store
        .projects()
        .await?
        .iter()
        .any(|p| p.name == project.name)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("project {} exists", project.name),
        ));
    }
    apply_env(&mut project.env, body.env)?;
    app.store.put_project(&project).await?;
    Ok((StatusCode::CREATED, Json(project_json(&project))))
}

async fn get_project(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(key): Path<String>,
) -> ApiResult<Json<Value>> {
    let p = project_for(&app, &who, &key, Role::Viewer).await?;
    Ok(Json(project_json(&p)))
}

async fn delete_project(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(key): Path<String>,
) -> ApiResult<StatusCode> {
    let p = project_for(&app, &who, &key, Role::Owner).await?;
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

async fn list_services(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(key): Path<String>,
) -> ApiResult<Json<Value>> {
    let p = project_for(&app, &who, &key, Role::Viewer).await?;
    let mut out = Vec::new();
    for s in app.store.services(&p.id).await? {
        out.push(service_json(&app, &p, &s).await?);
    }
    Ok(Json(json!(out)))
}

async fn get_service(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(key): Path<SvcPath>,
) -> ApiResult<Json<Value>> {
    let p = project_for(&app, &who, &key.project, Role::Viewer).await?;
    let s = service_in(&app, &p, &key).await?;
    Ok(Json(service_json(&app, &p, &s).await?))
}

/// A source given through the API: never a path on the server's disk.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum SourceInput {
    Git {
        url: String,
        #[serde(default, rename = "ref")]
        reference: Option<String>,
        #[serde(default)]
        subdir: Option<PathBuf>,
    },
    Image(String),
}

impl SourceInput {
    fn into_spec(self) -> ApiResult<SourceSpec> {
        match self {
            SourceInput::Git {
                url,
                reference,
                subdir,
            } => {
                if !(url.starts_with("https://")
                    || url.starts_with("http://")
                    || url.starts_with("ssh://")
                    || url.starts_with("git@"))
                {
                    return Err(ApiError::bad(format!(
                        "git url {url:?} must be https://, http://, ssh:// or git@host:path"
                    )));
                }
                if let Some(d) = &subdir {
                    if d.is_absolute()
                        || d.components()
                            .any(|c| matches!(c, std::path::Component::ParentDir))
                    {
                        return Err(ApiError::bad(
                            "subdir must be a relative path inside the repository",
                        ));
                    }
                }
                let reference = match reference {
                    None => GitRef::Default,
                    Some(r) if r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()) => {
                        GitRef::Commit(r)
                    }
                    Some(r) => GitRef::Branch(r),
                };
                Ok(SourceSpec::Git {
                    url,
                    reference,
                    subdir,
                })
            }
            SourceInput::Image(image) => {
                if image.is_empty() || image.contains(char::is_whitespace) {
                    return Err(ApiError::bad(format!("bad image reference {image:?}")));
                }
                Ok(SourceSpec::Image { image })
            }
        }
    }
}

/// An env var value in a request: a string, `{"secret": "..."}`, or `null` to remove.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum EnvInput {
    Plain(String),
    Secret { secret: String },
    Remove(()),
}

pub(crate) fn apply_env(
    env: &mut wharf_core::EnvVars,
    input: BTreeMap<String, EnvInput>,
) -> ApiResult<()> {
    for (k, v) in input {
        wharf_core::model::validate_env_key(&k)?;
        match v {
            EnvInput::Plain(s) => {
                env.insert(k, EnvValue::Plain(s));
            }
            EnvInput::Secret { secret } => {
                env.insert(k, EnvValue::Secret(Secret::new(secret)));
            }
            EnvInput::Remove(()) => {
                env.remove(&k);
            }
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceInput {
    #[serde(default)]
    source: Option<SourceInput>,
    #[serde(default)]
    build: Option<wharf_core::BuildSpec>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    env: BTreeMap<String, EnvInput>,
    #[serde(default)]
    depends_on: Option<Vec<String>>,
    #[serde(default)]
    health_check: Option<wharf_core::HealthCheck>,
    #[serde(default)]
    resources: Option<wharf_core::Resources>,
    #[serde(default)]
    domains: Option<Vec<String>>,
}

async fn put_service(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(key): Path<SvcPath>,
    JsonBody(body): JsonBody<ServiceInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let p = project_for(&app, &who, &key.project, Role::Owner).await?;
    let env = environment_in(&app, &p, key.environment.as_deref()).await?;
    let existing = service_in(&app, &p, &key).await.ok();
    let created = existing.is_none();
    let mut s = match existing {
        Some(s) => s,
        None => {
            if is_preview_name(&key.service) {
                return Err(ApiError::bad(format!(
                    "service name {} is reserved: pr-<number> names preview environments",
                    key.service
                )));
            }
            let mut s = Service::new(
                &p.id,
                &key.service,
                SourceSpec::Image {
                    image: String::new(),
                },
            )?;
            s.environment = env.map(|e| e.id);
            s
        }
    };
    if let Some(src) = body.source {
        s.source = src.into_spec()?;
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
    if !created || !matches!(&s.source, SourceSpec::Image { image } if image.is_empty()) {
        s.validate()?;
    }
    // Bad or taken domains are refused before anything is stored.
    let domains = body
        .domains
        .map(|d| crate::domains::precheck(&app, s.id.as_str(), &d))
        .transpose()?;
    app.store.put_service(&s).await?;
    if let Some(d) = domains {
        // Each domain is claimed, and routed once DNS shows it points here.
        crate::domains::set(&app, &p, &mut s, &d).await?;
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(service_json(&app, &p, &s).await?)))
}

async fn delete_service(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(key): Path<SvcPath>,
) -> ApiResult<StatusCode> {
    let p = project_for(&app, &who, &key.project, Role::Owner).await?;
    let s = service_in(&app, &p, &key).await?;
    app.engine.teardown(&s.id).await?;
    app.store.delete_service(&s.id).await?;
    app.domains.release_service(s.id.as_str())?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_env(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(key): Path<SvcPath>,
    JsonBody(body): JsonBody<BTreeMap<String, EnvInput>>,
) -> ApiResult<Json<Value>> {
    let p = project_for(&app, &who, &key.project, Role::Developer).await?;
    let mut s = service_in(&app, &p, &key).await?;
    apply_env(&mut s.env, body)?;
    app.store.put_service(&s).await?;
    Ok(Json(env_json(&s.env)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DeployInput {
    #[serde(default)]
    source: Option<SourceInput>,
}

/// Streams a request body into `path`, refusing more than [`MAX_UPLOAD`] bytes.
async fn save_upload(body: Body, path: &std::path::Path) -> ApiResult<u64> {
    let io = |e: std::io::Error| ApiError::from(wharf_core::Error::from(e));
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
    }
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
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
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    Ok(total)
}

/// Starts a deployment: from an uploaded `.tar.gz` (`Content-Type: application/gzip`),
/// from a JSON body naming a git source or an image, or (empty JSON body) from the
/// service's current source.
async fn deploy(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(key): Path<SvcPath>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let p = project_for(&app, &who, &key.project, Role::Developer).await?;
    let mut s = service_in(&app, &p, &key).await?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ctype.starts_with("application/gzip")
        || ctype.starts_with("application/x-gzip")
        || ctype.starts_with("application/octet-stream")
    {
        let path = app
            .data_dir
            .join("uploads")
            .join(s.id.as_str())
            .join(format!("{}.tar.gz", uuid::Uuid::new_v4().simple()));
        let size = save_upload(body, &path).await?;
        if size == 0 {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(ApiError::bad("the upload is empty"));
        }
        s.source = SourceSpec::Archive { path };
    } else {
        let bytes = axum::body::to_bytes(body, 64 * 1024)
            .await
            .map_err(|e| ApiError::bad(format!("cannot read the request body: {e}")))?;
        let input: DeployInput = if bytes.iter().all(u8::is_ascii_whitespace) {
            DeployInput::default()
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::bad(format!("bad deploy request: {e}")))?
        };
        if let Some(src) = input.source {
            s.source = src.into_spec()?;
        }
    }
    if matches!(&s.source, SourceSpec::Image { image } if image.is_empty()) {
        return Err(ApiError::bad(
            "the service has no source yet: upload a .tar.gz or give a git or image source",
        ));
    }
    s.validate()?;
    app.store.put_service(&s).await?;
    let handle = app
        .engine
        .deploy(
            &s.id,
            Trigger::Webhook {
                provider: "api".into(),
                reference: who.name.clone(),
            },
        )
        .await?;
    let dep = app.store.deployment(handle.id()).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(dep))))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    limit: Option<usize>,
}

async fn list_deployments(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(key): Path<SvcPath>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let p = project_for(&app, &who, &key.project, Role::Viewer).await?;
    let s = service_in(&app, &p, &key).await?;
    let deps = app
        .store
        .deployments(&DeploymentFilter {
            service: Some(s.id.clone()),
            limit: Some(q.limit.unwrap_or(50).min(500)),
            ..Default::default()
        })
        .await?;
    Ok(Json(json!(deps)))
}

async fn list_releases(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(key): Path<SvcPath>,
) -> ApiResult<Json<Value>> {
    let p = project_for(&app, &who, &key.project, Role::Viewer).await?;
    let s = service_in(&app, &p, &key).await?;
    let releases: Vec<Value> = app
        .store
        .releases(&s.id)
        .await?
        .into_iter()
        .map(|r| {
            let env = r.config.as_ref().map(|c| env_json(&c.env));
            let mut v = json!(r);
            if let Some(env) = env {
                // Secret values are write-only: the snapshot shows keys and plain values.
                v["config"]["env"] = env;
            }
            v
        })
        .collect();
    Ok(Json(json!(releases)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackInput {
    /// Release number; default: the one before the live release.
    #[serde(default)]
    release: Option<u64>,
}

async fn rollback(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(key): Path<SvcPath>,
    body: Option<Json<RollbackInput>>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let p = project_for(&app, &who, &key.project, Role::Developer).await?;
    let s = service_in(&app, &p, &key).await?;
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
    let handle = app.engine.rollback(&target.id).await?;
    let dep = app.store.deployment(handle.id()).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(dep))))
}

/// The live instance's status as the runtime reports it now (its health probed), so
/// the dashboard can tell a live release whose app has since crashed.
async fn service_status(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(key): Path<SvcPath>,
) -> ApiResult<Json<Value>> {
    let p = project_for(&app, &who, &key.project, Role::Viewer).await?;
    let s = service_in(&app, &p, &key).await?;
    let live = app.store.live_deployment(&s.id).await?;
    let Some((dep, instance)) = live.and_then(|d| d.instance.clone().map(|i| (d, i))) else {
        return Ok(Json(
            json!({"live_deployment": null, "instance": null, "status": null}),
        ));
    };
    let status = match app.engine.runtime().status(&instance.id).await {
        Ok(status) => json!(status),
        Err(e) if e.kind() == ErrorKind::NotFound => json!({
            "kind": "missing",
            "reason": "the runtime no longer has this instance",
        }),
        Err(e) => return Err(e.into()),
    };
    Ok(Json(json!({
        "live_deployment": dep.id,
        "release": dep.release,
        "instance": instance.id,
        "status": status,
    })))
}

async fn deployment_for(
    app: &App,
    who: &Principal,
    id: &str,
    need: Role,
) -> ApiResult<wharf_core::Deployment> {
    let dep = app
        .store
        .deployment(&DeploymentId(id.to_owned()))
        .await
        .map_err(|_| ApiError::not_found(format!("no deployment {id}")))?;
    let project = app
        .store
        .project(&dep.project)
        .await
        .map_err(|_| ApiError::not_found(format!("no deployment {id}")))?;
    project_for(app, who, project.id.as_str(), need)
        .await
        .map_err(|e| {
            if e.status == StatusCode::NOT_FOUND {
                ApiError::not_found(format!("no deployment {id}"))
            } else {
                e
            }
        })?;
    Ok(dep)
}

async fn get_deployment(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(json!(
        deployment_for(&app, &who, &id, Role::Viewer).await?
    )))
}

async fn cancel(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let dep = deployment_for(&app, &who, &id, Role::Developer).await?;
    if !dep.state.is_active() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("deployment {id} already ended {}", dep.state),
        ));
    }
    let cancelled = app.engine.cancel(&dep.id);
    Ok(Json(json!({"cancel_requested": cancelled})))
}

#[derive(Deserialize)]
struct EventsQuery {
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

struct Follow {
    store: DynStore,
    rx: broadcast::Receiver<Event>,
    id: DeploymentId,
    last: u64,
    queue: VecDeque<Event>,
    done: bool,
}

/// A deployment's events as server-sent events: the stored ones after `Last-Event-ID`
/// (or `?after=`), then live ones, ending after the deployment's final state.
async fn events(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let dep = deployment_for(&app, &who, &id, Role::Viewer).await?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(q.after)
        .unwrap_or(0);
    // Subscribe before reading the store, so nothing falls between the two.
    let rx = app.engine.subscribe();
    let stored = app.store.events(&dep.id, after).await?;
    // An ended deployment's stream ends once its stored events are sent.
    let done = !dep.state.is_active();
    let follow = Follow {
        store: app.store.clone(),
        rx,
        id: dep.id.clone(),
        last: after,
        queue: stored.into(),
        done,
    };
    let stream = futures::stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(ev) = f.queue.pop_front() {
                if ev.seq <= f.last {
                    continue;
                }
                f.last = ev.seq;
                if ends(&ev) {
                    f.done = true;
                    f.queue.clear();
                }
                return Some((Ok(sse(&ev)), f));
            }
            if f.done {
                return None;
            }
            match f.rx.recv().await {
                Ok(ev) if ev.deployment == f.id => f.queue.push_back(ev),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the live feed: catch up from the store.
                    match f.store.events(&f.id, f.last).await {
                        Ok(evs) => f.queue.extend(evs),
                        Err(_) => return None,
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    #[serde(default)]
    follow: bool,
    #[serde(default)]
    tail: Option<usize>,
}

/// Most lines `tail` may ask for.
const MAX_TAIL: usize = 10_000;

/// The live instance's runtime (app) output as server-sent events (`event: log`, data
/// `{at, stream, text}`), read through the runtime's `logs`: the last `tail` lines
/// (default 100), then with `follow=true` new lines as the app writes them, until the
/// instance stops (a redeploy replaces it). A runtime error mid-stream arrives as one
/// `event: error` whose data is the message, and ends the stream.
async fn service_logs(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(key): Path<SvcPath>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let Query(q) = query.map_err(|e| ApiError::bad(e.body_text()))?;
    let p = project_for(&app, &who, &key.project, Role::Viewer).await?;
    let s = service_in(&app, &p, &key).await?;
    let instance = app
        .store
        .live_deployment(&s.id)
        .await?
        .and_then(|d| d.instance)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "service {} in project {} has no live instance",
                s.name, p.name
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
