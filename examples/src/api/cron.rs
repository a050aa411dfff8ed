//! `.../services/{service}/cron` and `.../cron/runs`: a service's cron jobs with
//! their next run, and the history of their runs. Any member of the project reads
//! them (a run's output is the app's own, as its logs are).

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use wharf_core::{CronRun, CronRunFilter, Timestamp};

use super::extract::{role, ServiceCtx};
use super::{ApiError, ApiResult, App};
use crate::dto::CronJobView;

/// `GET .../cron`: the service's jobs, with when each next falls due and its newest
/// run.
#[utoipa::path(get, path = "/cron", operation_id = "list_cron_jobs", tag = "cron",
    params(super::openapi::ServiceParams), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "The service's cron jobs", body = Vec<crate::dto::CronJobView>)))]
pub(crate) async fn jobs(
    State(app): State<App>,
    ctx: ServiceCtx<role::Viewer>,
) -> ApiResult<Json<Vec<CronJobView>>> {
    let now = Timestamp::now();
    let mut out = Vec::new();
    for job in &ctx.service.cron {
        let last = app
            .store
            .cron_runs(&CronRunFilter {
                service: Some(ctx.service.id.clone()),
                job: Some(job.name.clone()),
                limit: Some(1),
                ..Default::default()
            })
            .await?;
        out.push(CronJobView {
            next_run_at: wharf_core::cron::next_after(&job.schedule, now),
            last_run: last.into_iter().next(),
            job: job.clone(),
        });
    }
    Ok(Json(out))
}

/// `?job=&limit=` of the run history.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RunsQuery {
    /// Only this job's runs.
    #[serde(default)]
    job: Option<String>,
    /// How many, newest first (default 50, at most 500).
    #[serde(default)]
    #[param(minimum = 0)]
    limit: Option<usize>,
}

/// `GET .../cron/runs`: the service's cron runs (skipped ones included), newest
/// first, with their exit code and the tail of their output.
#[utoipa::path(get, path = "/cron/runs", operation_id = "list_cron_runs", tag = "cron",
    params(super::openapi::ServiceParams, RunsQuery), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "Runs, newest first", body = Vec<wharf_core::CronRun>)))]
pub(crate) async fn runs(
    State(app): State<App>,
    ctx: ServiceCtx<role::Viewer>,
    Query(q): Query<RunsQuery>,
) -> ApiResult<Json<Vec<CronRun>>> {
    if let Some(job) = &q.job {
        let known = ctx.service.cron.iter().any(|j| &j.name == job);
        if !known {
            // Runs of a job since removed are still listed by name.
            let any = app
                .store
                .cron_runs(&CronRunFilter {
                    service: Some(ctx.service.id.clone()),
                    job: Some(job.clone()),
                    limit: Some(1),
                    ..Default::default()
                })
                .await?;
            if any.is_empty() {
                return Err(ApiError::from(wharf_core::Error::not_found(format!(
                    "service {} has no cron job {job:?}",
                    ctx.service.name
                ))));
            }
        }
    }
    let filter = CronRunFilter {
        service: Some(ctx.service.id.clone()),
        job: q.job,
        limit: Some(q.limit.unwrap_or(50).min(500)),
        ..Default::default()
    };
    Ok(Json(app.store.cron_runs(&filter).await?))
}
