//! `/v1/projects/{project}/backups`: backups of a project's volumes. Viewers list
//! them and read the settings (never the destination's secret); developers back a
//! volume up now (a backup changes no data); owners set the destination, schedule
//! and retention, and restore. A restore replaces a volume's contents, so it needs
//! the volume's name as confirmation and is refused (409) while a live service
//! mounts the volume: the owner stops or removes those services first, and nothing
//! is stopped behind their back.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use wharf_backup::{BackupId, BackupRecord, Destination, S3Destination, Settings, VolumePolicy};
use wharf_core::{network_name, DeploymentState, Environment, Project, StoreExt as _, VolumeRef};

use super::extract::{find_environment, role, ProjectCtx};
use super::{ApiError, ApiResult, App, JsonBody};
use crate::dto::{
    BackupNow, BackupRestore, BackupSettingsInput, BackupSettingsView, BackupView,
    DestinationInput, DestinationShown, VolumeBackupPolicy,
};

/// `{backup}` of the path.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct BackupParams {
    /// The project's name or id.
    #[allow(dead_code)] // read by the project extractor
    #[serde(default)]
    project: String,
    /// The backup's id.
    backup: String,
}

/// `GET /v1/projects/{project}/backups`.
#[utoipa::path(get, path = "/projects/{project}/backups", operation_id = "list_backups", tag = "backups",
    params(super::openapi::ProjectParams), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "The project's backups, newest first: state (running, succeeded, failed with its error), size, checksum, age", body = Vec<crate::dto::BackupView>)))]
pub(crate) async fn list(
    State(app): State<App>,
    ctx: ProjectCtx<role::Viewer>,
) -> ApiResult<Json<Vec<BackupView>>> {
    let envs = app.store.environments(&ctx.project.id).await?;
    Ok(Json(
        app.backups
            .list(ctx.project.id.as_str())
            .iter()
            .map(|r| view(&ctx.project, &envs, r))
            .collect(),
    ))
}

/// `POST /v1/projects/{project}/backups` `{"volume": "data"}`.
#[utoipa::path(post, path = "/projects/{project}/backups", operation_id = "backup_now", tag = "backups",
    params(super::openapi::ProjectParams), request_body = crate::dto::BackupNow, security(("bearer" = ["developer"])),
    responses((status = 201, description = "The backup ran: its record says whether it succeeded or failed (and why)", body = crate::dto::BackupView),
        (status = 400, description = "Bad volume name, or no destination set")))]
pub(crate) async fn now(
    State(app): State<App>,
    ctx: ProjectCtx<role::Developer>,
    JsonBody(body): JsonBody<BackupNow>,
) -> ApiResult<(StatusCode, Json<BackupView>)> {
    let project = ctx.project;
    let env = environment(&app, &project, body.environment.as_deref()).await?;
    let volume = volume_ref(&project, env.as_ref(), &body.volume)?;
    let record = app.backups.backup_volume(&project.name, &volume).await?;
    let envs = app.store.environments(&project.id).await?;
    Ok((StatusCode::CREATED, Json(view(&project, &envs, &record))))
}

/// The backup `raw` of `project`: NotFound for a backup of another project, as for
/// one that does not exist.
fn project_backup(app: &App, project: &Project, raw: &str) -> ApiResult<(BackupId, BackupRecord)> {
    let id = BackupId::parse(raw)?;
    let record = app
        .backups
        .get(&id)
        .ok()
        .filter(|r| r.project_id == project.id.as_str())
        .ok_or_else(|| {
            ApiError::not_found(format!("no backup {id} in project {}", project.name))
        })?;
    Ok((id, record))
}

/// `POST /v1/projects/{project}/backups/{backup}/restore` `{"confirm": "<volume>"}`.
#[utoipa::path(post, path = "/projects/{project}/backups/{backup}/restore", operation_id = "restore_backup", tag = "backups",
    params(BackupParams), request_body = crate::dto::BackupRestore, security(("bearer" = ["owner"])),
    responses((status = 204, description = "The volume holds the backup's contents; with restart, the services that mount it were stopped first and started again on their live releases"),
        (status = 400, description = "The confirmation does not name the volume"),
        (status = 404, description = "No such backup in this project"),
        (status = 409, description = "A live service mounts the volume and restart was not asked for, the backup did not succeed, or its object is corrupt (the volume is untouched)")))]
pub(crate) async fn restore(
    State(app): State<App>,
    ctx: ProjectCtx<role::Owner>,
    Path(path): Path<BackupParams>,
    JsonBody(body): JsonBody<BackupRestore>,
) -> ApiResult<StatusCode> {
    let project = ctx.project;
    let (id, record) = project_backup(&app, &project, &path.backup)?;
    if record.source != wharf_backup::SourceKind::Volume {
        return restore_dump(&app, &project, &id, &record, body).await;
    }
    let target = body.into.clone().unwrap_or_else(|| record.volume.clone());
    wharf_core::validate_name(&target)?;
    if body.confirm != target {
        return Err(ApiError::bad(format!(
            "restoring replaces the contents of volume {target}: send {{\"confirm\": \"{target}\"}} to confirm"
        )));
    }
    let into = VolumeRef {
        project: project.id.clone(),
        scope: record.scope.clone(),
        name: target.clone(),
    };
    // The live services that mount the target, with what to stop and start again.
    let mut live = Vec::new();
    for s in app.store.services(&project.id).await? {
        let Some(dep) = app.store.live_deployment(&s.id).await? else {
            continue;
        };
        let Some(release) = dep.release.clone() else {
            continue;
        };
        // Every instance: its web replicas, its workers and the tasks it runs (a
        // `wharf run`, a cron job) mount the volume alike.
        let mut instances: Vec<wharf_core::InstanceId> =
            dep.instances().map(|(_, i)| i.id.clone()).collect();
        let labels = wharf_core::Labels::from([
            (wharf_core::label::MANAGED.to_owned(), "true".to_owned()),
            (wharf_core::label::SERVICE.to_owned(), s.id.to_string()),
        ]);
        for task in app.engine.runtime().list(&labels).await? {
            if task.labels.contains_key(wharf_core::TASK_LABEL) && !instances.contains(&task.id) {
                instances.push(task.id);
            }
        }
        if !instances.is_empty() && app.engine.volume_refs(&project, &s).await?.contains(&into) {
            live.push((s.name.clone(), instances, release));
        }
    }
    if !live.is_empty() && !body.restart {
        let names: Vec<&str> = live.iter().map(|(n, _, _)| n.as_str()).collect();
        return Err(ApiError::conflict(format!(
            "volume {target} is mounted by live services ({}): send \"restart\": true to stop them, restore and start them again, or restore into a new volume with \"into\"",
            names.join(", ")
        )));
    }
    // Stopped one by one; if one cannot be stopped nothing is restored, and those
    // already stopped start again below.
    let mut stopped = Vec::new();
    let mut failed_stop = None;
    'services: for (name, instances, release) in &live {
        tracing::info!(project = %project.name, service = %name, "stopping for a restore of volume {target}");
        for instance in instances {
            if let Err(e) = app
                .engine
                .runtime()
                .stop(instance, std::time::Duration::from_secs(10))
                .await
            {
                failed_stop = Some(e.context(format!(
                    "stopping {name} before the restore (nothing was restored)"
                )));
                // Started again below with the others, as a whole.
                stopped.push((name, release));
                break 'services;
            }
        }
        stopped.push((name, release));
    }
    let restored = match failed_stop {
        Some(e) => Err(e),
        None => app.backups.restore(&id, &into).await,
    };
    // Whatever the restore did, the stopped services start again: on their live
    // release, as a rollback to it (the volume holds the backup, or what it held).
    let mut restarts = Vec::new();
    for (name, release) in stopped {
        match app.engine.rollback(release).await {
            Ok(handle) => restarts.push((name, handle)),
            Err(e) => tracing::warn!(service = %name, "could not start again after a restore: {e}"),
        }
    }
    for (name, handle) in restarts {
        match handle.wait().await {
            Ok(d) if !matches!(d.state, DeploymentState::Live) => {
                tracing::warn!(service = %name, state = ?d.state, "did not come back after a restore")
            }
            Err(e) => tracing::warn!(service = %name, "did not come back after a restore: {e}"),
            Ok(_) => {}
        }
    }
    restored?;
    tracing::info!(project = %project.name, backup = %id, volume = %target, "backup restored by its owner");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/projects/{project}/backups/{backup}/check`.
#[utoipa::path(post, path = "/projects/{project}/backups/{backup}/check", operation_id = "check_backup", tag = "backups",
    params(BackupParams), security(("bearer" = ["developer"])),
    description = "Restores a database dump into a scratch database beside the live one (same server), counts the tables it made, and drops the scratch database again: proof that the dump restores, without touching the live data.",
    responses((status = 200, description = "The dump restored; how many tables it made", body = crate::dto::BackupCheck),
        (status = 404, description = "No such backup in this project, or its database is gone"),
        (status = 409, description = "Not a succeeded dump (a volume backup, a failed one), the database is not live, or the dump did not restore")))]
pub(crate) async fn check(
    State(app): State<App>,
    ctx: ProjectCtx<role::Developer>,
    Path(path): Path<BackupParams>,
) -> ApiResult<Json<crate::dto::BackupCheck>> {
    let project = ctx.project;
    let (id, record) = project_backup(&app, &project, &path.backup)?;
    if record.source == wharf_backup::SourceKind::Volume {
        return Err(ApiError::conflict(format!(
            "backup {id} is of volume {}: a restore check is for database dumps",
            record.volume
        )));
    }
    let svc = super::databases::database_named(&app, &project, &record.volume).await?;
    let live = super::databases::dump_source(&app, &svc).await?;
    let engine = svc.database.as_ref().map(|d| d.engine).ok_or_else(|| {
        ApiError::not_found(format!(
            "no database {} in project {}",
            svc.name, project.name
        ))
    })?;
    let creds = wharf_core::database::Credentials::of(&svc.env).ok_or_else(|| {
        ApiError::conflict(format!("database {} has lost its credentials", svc.name))
    })?;
    let scratch = format!("wharf_check_{}", &BackupId::new().to_string()[..12]);
    let cmds = creds
        .check_commands(engine, &scratch)
        .ok_or_else(|| ApiError::conflict(format!("database {} has no restore check", svc.name)))?;
    let runtime = app.engine.runtime().clone();
    let run = |cmd: Vec<String>| {
        let (runtime, instance, env) = (runtime.clone(), live.instance.clone(), cmds.env.clone());
        async move {
            let mut out = runtime.exec(&instance, &cmd, &env, None).await?;
            let mut text = Vec::new();
            while let Some(chunk) = futures::StreamExt::next(&mut out).await {
                text.extend_from_slice(&chunk?);
            }
            Ok::<_, wharf_core::Error>(String::from_utf8_lossy(&text).trim().to_owned())
        }
    };
    run(cmds.create.clone()).await?;
    let scratch_source = wharf_backup::ExecSource {
        restore: cmds.restore.clone(),
        env: cmds.env.clone(),
        ..live.clone()
    };
    let target = volume_ref(&project, None, &svc.name)?;
    let checked = async {
        app.backups
            .restore_with(&id, &target, &scratch_source)
            .await
            .map_err(|e| e.context("restoring the dump into a scratch database"))?;
        let n = run(cmds.query.clone()).await?;
        n.parse::<u64>().map_err(|_| {
            wharf_core::Error::internal(format!("counting the restored tables printed {n:?}"))
        })
    }
    .await;
    // The scratch database goes whatever happened.
    if let Err(e) = run(cmds.drop.clone()).await {
        tracing::warn!(project = %project.name, database = %svc.name, %scratch, "could not drop the scratch database of a restore check: {e}");
    }
    let tables = checked.map_err(|e| {
        ApiError::conflict(format!(
            "backup {id} did not pass its restore check: {}",
            e.message()
        ))
    })?;
    tracing::info!(project = %project.name, backup = %id, database = %svc.name, tables, "restore check passed");
    Ok(Json(crate::dto::BackupCheck {
        backup: id.to_string(),
        database: svc.name.clone(),
        scratch,
        tables,
    }))
}

/// Restores a database dump into the live database it was taken of (its name as
/// the confirmation), through the engine's client in its instance.
async fn restore_dump(
    app: &App,
    project: &Project,
    id: &BackupId,
    record: &BackupRecord,
    body: BackupRestore,
) -> ApiResult<StatusCode> {
    let name = &record.volume;
    if body.into.is_some() {
        return Err(ApiError::bad(format!(
            "backup {id} is a {} of database {name}: it restores into that database only",
            record.source.as_str()
        )));
    }
    if body.confirm != *name {
        return Err(ApiError::bad(format!(
            "restoring replaces what the dump holds in database {name}: send {{\"confirm\": \"{name}\"}} to confirm"
        )));
    }
    let svc = super::databases::database_named(app, project, name).await?;
    let source = super::databases::dump_source(app, &svc).await?;
    let into = volume_ref(project, None, name)?;
    app.backups.restore_with(id, &into, &source).await?;
    tracing::info!(project = %project.name, backup = %id, database = %name, "database dump restored by its owner");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/projects/{project}/backups/settings`.
#[utoipa::path(get, path = "/projects/{project}/backups/settings", operation_id = "get_backup_settings", tag = "backups",
    params(super::openapi::ProjectParams), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "Destination (without its secret), schedules and retention", body = crate::dto::BackupSettingsView)))]
pub(crate) async fn get_settings(
    State(app): State<App>,
    ctx: ProjectCtx<role::Viewer>,
) -> ApiResult<Json<BackupSettingsView>> {
    let s = app.backups.settings(ctx.project.id.as_str())?;
    Ok(Json(BackupSettingsView {
        destination: s.as_ref().map(|s| shown(&s.destination)),
        volumes: s
            .map(|s| {
                s.volumes
                    .into_iter()
                    .map(|(k, p)| {
                        (
                            k,
                            VolumeBackupPolicy {
                                schedule: p.schedule,
                                keep_last: p.keep_last,
                                keep_days: p.keep_days,
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }))
}

/// `PUT /v1/projects/{project}/backups/settings`.
#[utoipa::path(put, path = "/projects/{project}/backups/settings", operation_id = "put_backup_settings", tag = "backups",
    params(super::openapi::ProjectParams), request_body = crate::dto::BackupSettingsInput, security(("bearer" = ["owner"])),
    responses((status = 204, description = "Set; the destination's secret is sealed at rest"),
        (status = 400, description = "A bad destination, volume name, cron expression, keep_last or keep_days")))]
pub(crate) async fn put_settings(
    State(app): State<App>,
    ctx: ProjectCtx<role::Owner>,
    JsonBody(body): JsonBody<BackupSettingsInput>,
) -> ApiResult<StatusCode> {
    let destination = match body.destination {
        DestinationInput::Local => Destination::Local,
        DestinationInput::S3 {
            endpoint,
            bucket,
            region,
            prefix,
            access_key_id,
            secret_access_key,
        } => Destination::S3(S3Destination {
            endpoint,
            bucket,
            region: region.unwrap_or_else(|| "us-east-1".into()),
            prefix,
            access_key_id,
            secret_access_key,
        }),
    };
    let settings = Settings {
        destination,
        volumes: body
            .volumes
            .into_iter()
            .map(|(k, p)| {
                (
                    k,
                    VolumePolicy {
                        schedule: p.schedule,
                        keep_last: p.keep_last,
                        keep_days: p.keep_days,
                    },
                )
            })
            .collect(),
    };
    app.backups
        .set_settings(ctx.project.id.as_str(), Some(settings))?;
    Ok(StatusCode::NO_CONTENT)
}

fn shown(d: &Destination) -> DestinationShown {
    match d.view() {
        wharf_backup::DestinationView::Local => DestinationShown::Local,
        wharf_backup::DestinationView::S3 {
            endpoint,
            bucket,
            region,
            prefix,
            access_key_id,
        } => DestinationShown::S3 {
            endpoint,
            bucket,
            region,
            prefix,
            access_key_id,
        },
    }
}

async fn environment(
    app: &App,
    project: &Project,
    key: Option<&str>,
) -> ApiResult<Option<Environment>> {
    match key {
        None => Ok(None),
        Some(key) => Ok(Some(
            find_environment(&app.store, project, key)
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(format!("no environment {key} in project {}", project.name))
                })?,
        )),
    }
}

/// The volume `name` of `project` (in `env`).
pub(crate) fn volume_ref(
    project: &Project,
    env: Option<&Environment>,
    name: &str,
) -> ApiResult<VolumeRef> {
    wharf_core::validate_name(name)?;
    Ok(VolumeRef {
        project: project.id.clone(),
        scope: Some(network_name(project, env)),
        name: name.to_owned(),
    })
}

fn env_of_scope(project: &Project, envs: &[Environment], scope: Option<&str>) -> Option<String> {
    envs.iter()
        .find(|e| Some(network_name(project, Some(e)).as_str()) == scope)
        .map(|e| e.name.clone())
}

pub(crate) fn view(project: &Project, envs: &[Environment], r: &BackupRecord) -> BackupView {
    BackupView {
        id: r.id.to_string(),
        volume: r.volume.clone(),
        environment: env_of_scope(project, envs, r.scope.as_deref()),
        scope: r.scope.clone(),
        source: r.source.as_str().to_owned(),
        scheduled: r.scheduled,
        state: match r.state {
            wharf_backup::BackupState::Running => "running",
            wharf_backup::BackupState::Succeeded => "succeeded",
            wharf_backup::BackupState::Failed => "failed",
        }
        .to_owned(),
        error: r.error.clone(),
        created_at: r.created_at.to_rfc3339(),
        finished_at: r.finished_at.map(|t| t.to_rfc3339()),
        age_seconds: (chrono::Utc::now() - r.created_at).num_seconds(),
        size_bytes: r.size_bytes,
        sha256: r.sha256.clone(),
        key: r.key.clone(),
    }
}
