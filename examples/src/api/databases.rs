//! `/v1/projects/{project}/databases`: managed databases ([`wharf_core::database`]).
//! Creating one (owners) makes a service from the engine's template (image, data
//! volume, generated credentials sealed as its secrets, protocol probe, no public
//! route unless asked) and deploys it; listing shows them without passwords;
//! `.../credentials` shows the password and URL, to owners only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use wharf_core::database::{self, Credentials, DatabaseSpec};
use wharf_core::{ErrorKind, Project, Service, SourceSpec, StoreExt as _, Trigger};

use super::extract::{role, ProjectCtx};
use super::{is_preview_name, ApiError, ApiResult, App, JsonBody};
use crate::dto::{DatabaseCredentials, DatabaseInput, DatabaseRotated, DatabaseView};

/// `{database}` of the path.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by utoipa only
pub(crate) struct DatabaseParams {
    /// The project's name or id.
    project: String,
    /// The database's name.
    database: String,
}

/// `GET /v1/projects/{project}/databases`.
#[utoipa::path(get, path = "/projects/{project}/databases", operation_id = "list_databases", tag = "databases",
    params(super::openapi::ProjectParams), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "The project's managed databases (no passwords)", body = Vec<crate::dto::DatabaseView>)))]
pub(crate) async fn list(
    State(app): State<App>,
    ctx: ProjectCtx<role::Viewer>,
) -> ApiResult<Json<Vec<DatabaseView>>> {
    let mut out = Vec::new();
    for s in app.store.services(&ctx.project.id).await? {
        if s.environment.is_none() && s.database.is_some() {
            out.push(view(&app, &s).await?);
        }
    }
    Ok(Json(out))
}

/// `POST /v1/projects/{project}/databases` `{name, engine, version?, public?}`.
#[utoipa::path(post, path = "/projects/{project}/databases", operation_id = "create_database", tag = "databases",
    params(super::openapi::ProjectParams), request_body = crate::dto::DatabaseInput, security(("bearer" = ["owner"])),
    description = "Makes a service from the engine's template (its image, a data volume `<name>-data`, generated credentials held as its secrets, a protocol-level health check, no public route unless `public`) and deploys it. Other services reach it by references: `${{ <name>.DATABASE_URL }}` (`REDIS_URL` for Redis), `USER`, `PASSWORD`, `DATABASE`, `HOST`, `PORT`.",
    responses((status = 201, description = "Created; its first deployment started", body = crate::dto::DatabaseView)))]
pub(crate) async fn create(
    State(app): State<App>,
    ctx: ProjectCtx<role::Owner>,
    JsonBody(body): JsonBody<DatabaseInput>,
) -> ApiResult<(StatusCode, Json<DatabaseView>)> {
    let svc = ensure(&app, &ctx.project, body).await?;
    let handle = app
        .engine
        .deploy(
            &svc.id,
            Trigger::Webhook {
                provider: "api".into(),
                reference: ctx.who.name.clone(),
            },
        )
        .await?;
    let mut v = view(&app, &svc).await?;
    v.deployment = Some(handle.id().to_string());
    Ok((StatusCode::CREATED, Json(v)))
}

/// Stores a new database service in `project` from `body`; Conflict when a service
/// of that name exists.
pub(crate) async fn ensure(
    app: &App,
    project: &Project,
    body: DatabaseInput,
) -> ApiResult<Service> {
    if !app.isolated {
        return Err(ApiError::bad(
            "managed databases run their engine's image: they need a container runtime (Docker, Kubernetes), and this server runs apps as host processes",
        ));
    }
    if is_preview_name(&body.name) {
        return Err(ApiError::bad(format!(
            "name {} is reserved: pr-<number> names preview environments",
            body.name
        )));
    }
    match app
        .store
        .service_by_name(&project.id, None, &body.name)
        .await
    {
        Ok(_) => {
            return Err(ApiError::conflict(format!(
                "service {} exists in project {}",
                body.name, project.name
            )))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let mut spec = DatabaseSpec::new(body.engine, body.version.as_deref())?;
    spec.public = body.public;
    let svc = database::service(&project.id, &body.name, spec, &app.database_images)?;
    app.store.put_service(&svc).await?;
    Ok(svc)
}

/// `GET /v1/projects/{project}/databases/{database}/credentials`.
#[utoipa::path(get, path = "/projects/{project}/databases/{database}/credentials", operation_id = "database_credentials", tag = "databases",
    params(DatabaseParams), security(("bearer" = ["owner"])),
    responses((status = 200, description = "User, password, database and URL at its address on the project network", body = crate::dto::DatabaseCredentials)))]
pub(crate) async fn credentials(
    State(app): State<App>,
    ctx: ProjectCtx<role::Owner>,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<Json<DatabaseCredentials>> {
    let svc = database_named(&app, &ctx.project, &name).await?;
    let spec = svc.database.clone().expect("checked by database_named");
    let creds = Credentials::of(&svc.env).ok_or_else(|| {
        ApiError::conflict(format!(
            "database {name} has lost its USER, PASSWORD or DATABASE variable"
        ))
    })?;
    let (host, port) = address(&app, &svc).await?;
    tracing::info!(project = %ctx.project.name, database = %name, who = %ctx.who.name, "database credentials shown");
    Ok(Json(DatabaseCredentials {
        name: svc.name.clone(),
        engine: spec.engine,
        url: creds.url(spec.engine, &host, port).expose().to_owned(),
        host,
        port,
        user: creds.user,
        password: creds.password.expose().to_owned(),
        database: creds.database,
    }))
}

/// `POST /v1/projects/{project}/databases/{database}/backups`: a dump now.
#[utoipa::path(post, path = "/projects/{project}/databases/{database}/backups", operation_id = "backup_database", tag = "databases",
    params(DatabaseParams), security(("bearer" = ["developer"])),
    description = "Dumps the live database (pg_dump, mysqldump) to the project's backup destination. Restore it with POST .../backups/{backup}/restore, confirming with the database's name. Redis is refused: back up its volume.",
    responses((status = 201, description = "The dump ran: its record says whether it succeeded or failed (and why)", body = crate::dto::BackupView),
        (status = 409, description = "The database is not live")))]
pub(crate) async fn backup(
    State(app): State<App>,
    ctx: ProjectCtx<role::Developer>,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<crate::dto::BackupView>)> {
    let svc = database_named(&app, &ctx.project, &name).await?;
    let source = dump_source(&app, &svc).await?;
    let target = super::backups::volume_ref(&ctx.project, None, &svc.name)?;
    let record = app
        .backups
        .backup_with(&ctx.project.name, &target, &source)
        .await?;
    let envs = app.store.environments(&ctx.project.id).await?;
    Ok((
        StatusCode::CREATED,
        Json(super::backups::view(&ctx.project, &envs, &record)),
    ))
}

/// `POST /v1/projects/{project}/databases/{database}/rotate`.
#[utoipa::path(post, path = "/projects/{project}/databases/{database}/rotate", operation_id = "rotate_database_password", tag = "databases",
    params(DatabaseParams), security(("bearer" = ["owner"])),
    description = "Gives the database's user a new random password: recorded (sealed) first, then set in the running server (the statement on the client's standard input, never a command line), then the database and every service referencing or depending on it redeploy with it. If the server refuses, the old password stays recorded.",
    responses((status = 200, description = "Rotated; the final state of each redeployed service", body = crate::dto::DatabaseRotated),
        (status = 409, description = "The database is not live, or its server refused the change")))]
pub(crate) async fn rotate(
    State(app): State<App>,
    ctx: ProjectCtx<role::Owner>,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<Json<DatabaseRotated>> {
    let svc = database_named(&app, &ctx.project, &name).await?;
    let instance = live_instance(&app, &svc).await?;
    let engine = svc.database.as_ref().map(|d| d.engine).ok_or_else(|| {
        ApiError::not_found(format!(
            "no database {name} in project {}",
            ctx.project.name
        ))
    })?;
    let old = Credentials::of(&svc.env)
        .ok_or_else(|| ApiError::conflict(format!("database {name} has lost its credentials")))?;
    let new = old.rotated();
    let cmd = old.rotate_command(engine, &new.password).ok_or_else(|| {
        ApiError::conflict(format!(
            "database {name}: its user cannot be rotated by Wharf"
        ))
    })?;
    // Recorded first: a server that took the new password while the record kept the
    // old one would lock every service out for good.
    let mut rotated = svc.clone();
    rotated.env.extend(new.env(engine));
    app.store.put_service(&rotated).await?;
    let stdin = futures::stream::iter([Ok(axum::body::Bytes::from(cmd.stdin.clone()))]);
    let changed = async {
        let mut out = app
            .engine
            .runtime()
            .exec(&instance, &cmd.command, &cmd.env, Some(Box::pin(stdin)))
            .await?;
        let mut printed = Vec::new();
        while let Some(chunk) = futures::StreamExt::next(&mut out).await {
            printed.extend_from_slice(&chunk?);
        }
        // redis-cli exits 0 on a refused command: its answer must be OK.
        let printed = String::from_utf8_lossy(&printed);
        if engine == database::DbEngine::Redis && printed.trim() != "OK" {
            return Err(wharf_core::Error::conflict(format!(
                "redis answered {:?}",
                printed.trim()
            )));
        }
        Ok::<_, wharf_core::Error>(())
    }
    .await;
    if let Err(e) = changed {
        app.store.put_service(&svc).await?;
        return Err(ApiError::conflict(format!(
            "database {name} kept its password: its server refused the change ({})",
            e.message()
        )));
    }
    tracing::info!(project = %ctx.project.name, database = %name, "database password rotated by its owner");
    let report = app
        .engine
        .deploy_cascade(&svc.id, Trigger::Manual)
        .await?
        .wait()
        .await?;
    Ok(Json(DatabaseRotated {
        database: name,
        deployments: report
            .deployments
            .into_iter()
            .map(|(k, d)| (k, d.state.name().to_owned()))
            .collect(),
    }))
}

/// Database `svc`'s live instance; Conflict when it is not live.
async fn live_instance(app: &App, svc: &Service) -> ApiResult<wharf_core::InstanceId> {
    app.store
        .live_deployment(&svc.id)
        .await?
        .and_then(|d| d.instance)
        .map(|i| i.id)
        .ok_or_else(|| {
            ApiError::conflict(format!(
                "database {} is not live: this needs its running server",
                svc.name
            ))
        })
}

/// The dump source of database `svc`'s live instance; Conflict when it is not live.
pub(crate) async fn dump_source(app: &App, svc: &Service) -> ApiResult<wharf_backup::ExecSource> {
    let instance = live_instance(app, svc).await?;
    Ok(wharf_backup::ExecSource::database(
        app.engine.runtime().clone(),
        instance,
        svc,
    )?)
}

/// The project's own database service `name`; NotFound for a service that is not a
/// managed database.
pub(crate) async fn database_named(app: &App, project: &Project, name: &str) -> ApiResult<Service> {
    let not_found =
        || ApiError::not_found(format!("no database {name} in project {}", project.name));
    match app.store.service_by_name(&project.id, None, name).await {
        Ok(s) if s.database.is_some() => Ok(s),
        Ok(_) => Err(not_found()),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}

/// Where the project's services reach `svc`: the runtime's peer address of its live
/// instance, else its name and port.
async fn address(app: &App, svc: &Service) -> ApiResult<(String, u16)> {
    let port = svc.port.unwrap_or_default();
    let live = app.store.live_deployment(&svc.id).await?;
    let instance = live.as_ref().and_then(|d| d.instance.as_ref());
    Ok(
        match app.engine.runtime().peer_address(&svc.name, port, instance) {
            Some(e) => (e.host, e.port),
            None => (svc.name.clone(), port),
        },
    )
}

async fn view(app: &App, s: &Service) -> ApiResult<DatabaseView> {
    let spec = s.database.clone().expect("a database service");
    let creds = Credentials::of(&s.env);
    let live = app.store.live_deployment(&s.id).await?;
    let image = match &s.source {
        SourceSpec::Image { image } => image.clone(),
        _ => String::new(),
    };
    Ok(DatabaseView {
        name: s.name.clone(),
        engine: spec.engine,
        reference: format!("${{{{ {}.{} }}}}", s.name, spec.engine.url_var()),
        version: spec.version,
        public: spec.public,
        image,
        port: s.port.unwrap_or_default(),
        user: creds.as_ref().map(|c| c.user.clone()),
        database: creds.map(|c| c.database),
        live_deployment: live.map(|d| d.id.to_string()),
        deployment: None,
    })
}
