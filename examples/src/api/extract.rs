//! Extractors that resolve who is asking and what they ask about, with the minimum
//! role in the type: a handler taking `ServiceCtx<Developer>` runs only for a caller
//! holding at least developer in the service's project, and never looks anything up
//! itself. A project (or its services, environments and deployments) that the caller
//! holds no role in is reported as absent: its existence is not revealed.

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use serde::Deserialize;
use wharf_core::{
    Deployment, DeploymentId, DynStore, Environment, EnvironmentId, ErrorKind, Project, ProjectId,
    Service, ServiceId,
};

use super::{ApiError, ApiResult, App};
use crate::auth::{Principal, Role};

/// The minimum role a handler needs, as a type.
pub trait MinRole: Send + Sync + 'static {
    /// The role.
    const ROLE: Role;
}

/// Role markers for the extractors' type parameter.
pub mod role {
    use super::{MinRole, Role};

    /// Reads.
    #[derive(Debug)]
    pub struct Viewer;
    /// Deploys, cancels, rolls back, sets env vars.
    #[derive(Debug)]
    pub struct Developer;
    /// Creates, changes and deletes services, environments, domains, the project.
    #[derive(Debug)]
    pub struct Owner;

    impl MinRole for Viewer {
        const ROLE: Role = Role::Viewer;
    }
    impl MinRole for Developer {
        const ROLE: Role = Role::Developer;
    }
    impl MinRole for Owner {
        const ROLE: Role = Role::Owner;
    }
}

/// The caller, as the authentication layer found it (401 if there is none).
impl FromRequestParts<App> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &App) -> ApiResult<Self> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))
    }
}

/// The operator (403 for any other caller).
#[derive(Debug)]
pub struct Operator(pub Principal);

impl FromRequestParts<App> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> ApiResult<Self> {
        let who = Principal::from_request_parts(parts, app).await?;
        if !who.is_admin() {
            return Err(ApiError::forbidden("only the operator creates projects"));
        }
        Ok(Operator(who))
    }
}

/// Every path parameter the API uses, each optional.
#[derive(Debug, Default, Deserialize)]
struct Params {
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

async fn params(parts: &mut Parts, app: &App) -> ApiResult<Params> {
    match Path::<Params>::from_request_parts(parts, app).await {
        Ok(Path(p)) => Ok(p),
        Err(e) => Err(ApiError::bad(e.body_text())),
    }
}

fn param(value: Option<String>, name: &str) -> ApiResult<String> {
    value.ok_or_else(|| ApiError::bad(format!("the path has no {{{name}}}")))
}

/// `Ok(None)` for a NotFound, the error otherwise.
pub(crate) fn found<T>(r: wharf_core::Result<T>) -> ApiResult<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The project named (or with id) `key`: one indexed look-up, by id when `key` has
/// the shape of a project id (which no name can have), else by name.
pub(crate) async fn find_project(store: &DynStore, key: &str) -> ApiResult<Option<Project>> {
    if ProjectId::is_shaped(key) {
        found(store.project(&ProjectId(key.to_owned())).await)
    } else {
        found(store.project_by_name(key).await)
    }
}

/// The environment of `project` named (or with id) `key`: one indexed look-up.
pub(crate) async fn find_environment(
    store: &DynStore,
    project: &Project,
    key: &str,
) -> ApiResult<Option<Environment>> {
    if EnvironmentId::is_shaped(key) {
        let e = found(store.environment(&EnvironmentId(key.to_owned())).await)?;
        Ok(e.filter(|e| e.project == project.id))
    } else {
        found(store.environment_by_name(&project.id, key).await)
    }
}

/// The service named (or with id) `key` in `environment` of `project` (none: the
/// project's own services): one indexed look-up, by id when `key` has the shape of a
/// service id (then it must be a service of the same project and environment), else
/// by name.
pub(crate) async fn find_service(
    store: &DynStore,
    project: &Project,
    environment: Option<&Environment>,
    key: &str,
) -> ApiResult<Option<Service>> {
    let env_id = environment.map(|e| &e.id);
    if ServiceId::is_shaped(key) {
        let by_id = found(store.service(&ServiceId(key.to_owned())).await)?;
        Ok(by_id.filter(|s| s.project == project.id && s.environment.as_ref() == env_id))
    } else {
        found(store.service_by_name(&project.id, env_id, key).await)
    }
}

/// Checks that `who` holds at least `need` in `project`; a project they hold no role
/// in is absent.
fn allowed(who: &Principal, project: &Project, key: &str, need: Role) -> ApiResult<()> {
    match who.role(&project.name) {
        None => Err(ApiError::not_found(format!("no project {key}"))),
        Some(r) if r < need => Err(ApiError::forbidden(format!(
            "this token is {r} in project {}; this needs {need}",
            project.name
        ))),
        Some(_) => Ok(()),
    }
}

async fn project_of(app: &App, who: &Principal, key: &str, need: Role) -> ApiResult<Project> {
    let absent = || ApiError::not_found(format!("no project {key}"));
    // A name the caller holds no role in is absent without asking the store, so how
    // long the answer takes says nothing about whether such a project exists.
    if !ProjectId::is_shaped(key) && who.role(key).is_none() {
        return Err(absent());
    }
    let project = find_project(&app.store, key).await?.ok_or_else(absent)?;
    allowed(who, &project, key, need)?;
    Ok(project)
}

async fn environment_of(app: &App, project: &Project, key: &str) -> ApiResult<Environment> {
    find_environment(&app.store, project, key)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("no environment {key} in project {}", project.name))
        })
}

/// `{project}` of the path, seen by a caller holding at least `R` in it.
#[derive(Debug)]
pub struct ProjectCtx<R> {
    /// The caller.
    pub who: Principal,
    /// The project.
    pub project: Project,
    _role: PhantomData<R>,
}

impl<R: MinRole> FromRequestParts<App> for ProjectCtx<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> ApiResult<Self> {
        let who = Principal::from_request_parts(parts, app).await?;
        let key = param(params(parts, app).await?.project, "project")?;
        let project = project_of(app, &who, &key, R::ROLE).await?;
        Ok(ProjectCtx {
            who,
            project,
            _role: PhantomData,
        })
    }
}

/// `{environment}` of `{project}`.
#[derive(Debug)]
pub struct EnvironmentCtx<R> {
    /// The caller.
    pub who: Principal,
    /// The project.
    pub project: Project,
    /// The environment.
    pub environment: Environment,
    _role: PhantomData<R>,
}

impl<R: MinRole> FromRequestParts<App> for EnvironmentCtx<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> ApiResult<Self> {
        let who = Principal::from_request_parts(parts, app).await?;
        let p = params(parts, app).await?;
        let key = param(p.project, "project")?;
        let project = project_of(app, &who, &key, R::ROLE).await?;
        let environment =
            environment_of(app, &project, &param(p.environment, "environment")?).await?;
        Ok(EnvironmentCtx {
            who,
            project,
            environment,
            _role: PhantomData,
        })
    }
}

/// A service slot: `{service}` of `{project}` (or of `{environment}` when the path
/// names one), which may not exist yet (for the handler that creates it).
#[derive(Debug)]
pub struct ServiceSlot<R> {
    /// The caller.
    pub who: Principal,
    /// The project.
    pub project: Project,
    /// The environment the path names, if any.
    pub environment: Option<Environment>,
    /// The service name (or id) as the path gives it.
    pub key: String,
    /// The service, if it exists.
    pub service: Option<Service>,
    /// `{domain}`, for the domain routes.
    pub domain: Option<String>,
    _role: PhantomData<R>,
}

impl<R: MinRole> FromRequestParts<App> for ServiceSlot<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> ApiResult<Self> {
        let who = Principal::from_request_parts(parts, app).await?;
        let p = params(parts, app).await?;
        let project = project_of(app, &who, &param(p.project, "project")?, R::ROLE).await?;
        let environment = match p.environment {
            Some(key) => Some(environment_of(app, &project, &key).await?),
            None => None,
        };
        let key = param(p.service, "service")?;
        let service = find_service(&app.store, &project, environment.as_ref(), &key).await?;
        Ok(ServiceSlot {
            who,
            project,
            environment,
            key,
            service,
            domain: p.domain,
            _role: PhantomData,
        })
    }
}

/// `{service}` of `{project}` (or of `{environment}`), which must exist.
#[derive(Debug)]
pub struct ServiceCtx<R> {
    /// The caller.
    pub who: Principal,
    /// The project.
    pub project: Project,
    /// The service.
    pub service: Service,
    /// `{domain}`, for the domain routes.
    pub domain: Option<String>,
    _role: PhantomData<R>,
}

impl<R: MinRole> FromRequestParts<App> for ServiceCtx<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> ApiResult<Self> {
        let slot = ServiceSlot::<R>::from_request_parts(parts, app).await?;
        let Some(service) = slot.service else {
            let where_ = match &slot.environment {
                Some(e) => format!("environment {} of project {}", e.name, slot.project.name),
                None => format!("project {}", slot.project.name),
            };
            return Err(ApiError::not_found(format!(
                "no service {} in {where_}",
                slot.key
            )));
        };
        Ok(ServiceCtx {
            who: slot.who,
            project: slot.project,
            service,
            domain: slot.domain,
            _role: PhantomData,
        })
    }
}

/// `{id}` of `/deployments/{id}`: a deployment of a project the caller holds at
/// least `R` in (absent otherwise, whoever owns it).
#[derive(Debug)]
pub struct DeploymentCtx<R> {
    /// The caller.
    pub who: Principal,
    /// The deployment.
    pub deployment: Deployment,
    _role: PhantomData<R>,
}

impl<R: MinRole> FromRequestParts<App> for DeploymentCtx<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> ApiResult<Self> {
        let who = Principal::from_request_parts(parts, app).await?;
        let id = param(params(parts, app).await?.id, "id")?;
        let absent = || ApiError::not_found(format!("no deployment {id}"));
        let deployment = app
            .store
            .deployment(&DeploymentId(id.clone()))
            .await
            .map_err(|_| absent())?;
        let project = app
            .store
            .project(&deployment.project)
            .await
            .map_err(|_| absent())?;
        allowed(&who, &project, &id, R::ROLE).map_err(|e| {
            if e.status == axum::http::StatusCode::NOT_FOUND {
                absent()
            } else {
                e
            }
        })?;
        Ok(DeploymentCtx {
            who,
            deployment,
            _role: PhantomData,
        })
    }
}
