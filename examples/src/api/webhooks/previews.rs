//! Which services a delivery concerns, and the preview environments of pull/merge
//! requests: created, deployed at the commit the forge named, torn down.

use wharf_core::{
    Environment, EnvironmentId, EnvironmentKind, GitRef, Service, ServiceId, SourceSpec, Timestamp,
    Trigger,
};

use super::parse::{is_sha, normalize_repo};
use crate::api::{ApiError, App};

/// Services whose git source is one of `repos` at `branch` (or at the repository's
/// default branch when the service names none): the projects' own services, and with
/// `in_environments` those of standing environments too (a staging service tracking
/// `develop`); never a preview's.
pub(super) async fn matching(
    app: &App,
    repos: &[String],
    (branch, default_branch): (&str, Option<&str>),
    in_environments: bool,
) -> Result<Vec<Service>, ApiError> {
    let mut out = Vec::new();
    for p in app.store.projects().await? {
        let standing: Vec<EnvironmentId> = app
            .store
            .environments(&p.id)
            .await?
            .into_iter()
            .filter(|e| e.kind == EnvironmentKind::Standing)
            .map(|e| e.id)
            .collect();
        for svc in app.store.services(&p.id).await? {
            match &svc.environment {
                None => {}
                Some(e) if in_environments && standing.contains(e) => {}
                Some(_) => continue,
            }
            let SourceSpec::Git { url, reference, .. } = &svc.source else {
                continue;
            };
            if !repos.contains(&normalize_repo(url)) {
                continue;
            }
            let hit = match reference {
                GitRef::Branch(b) => b == branch,
                GitRef::Default => default_branch.is_none_or(|d| d == branch),
                _ => false,
            };
            if hit {
                out.push(svc);
            }
        }
    }
    Ok(out)
}

fn preview_name(number: u64) -> String {
    format!("pr-{number}")
}

async fn preview_env(
    app: &App,
    svc: &Service,
    number: u64,
) -> Result<Option<Environment>, ApiError> {
    let name = preview_name(number);
    crate::api::extract::found(app.store.environment_by_name(&svc.project, &name).await)
}

pub(super) async fn preview_up(
    app: &App,
    svc: &Service,
    number: u64,
    (head_url, head_branch, head_sha): (&str, &str, Option<&str>),
    provider: &str,
) -> Result<wharf_core::DeploymentId, ApiError> {
    let env = match preview_env(app, svc, number).await? {
        Some(e) => e,
        None => {
            let e = Environment {
                id: EnvironmentId::random(),
                project: svc.project.clone(),
                name: preview_name(number),
                kind: EnvironmentKind::Preview {
                    number,
                    branch: head_branch.to_owned(),
                },
                env: Default::default(),
                created_at: Timestamp::now(),
            };
            app.store.put_environment(&e).await?;
            e
        }
    };
    let existing = match app
        .store
        .service_by_name(&svc.project, Some(&env.id), &svc.name)
        .await
    {
        Ok(s) => Some(s),
        Err(e) if e.kind() == wharf_core::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let mut copy = match existing {
        Some(s) => s,
        None => {
            let mut c = svc.clone();
            c.id = ServiceId::random();
            c.environment = Some(env.id.clone());
            c.domains.clear();
            c.created_at = Timestamp::now();
            c
        }
    };
    let subdir = match &svc.source {
        SourceSpec::Git { subdir, .. } => subdir.clone(),
        _ => None,
    };
    copy.source = SourceSpec::Git {
        url: head_url.to_owned(),
        reference: GitRef::Branch(head_branch.to_owned()),
        subdir,
    };
    copy.validate()?;
    app.store.put_service(&copy).await?;
    let trigger = Trigger::Webhook {
        provider: provider.into(),
        reference: format!("pull request {number} ({head_branch})"),
    };
    // The preview tracks the branch; this deployment builds the commit the forge named.
    let h = deploy_at(app, &copy, trigger, head_sha).await?;
    Ok(h.id().clone())
}

/// Deploys `svc` at the commit a delivery named (a full sha), not whatever its branch
/// points at when the deployment gets to fetch it; at its own source otherwise.
pub(super) async fn deploy_at(
    app: &App,
    svc: &Service,
    trigger: Trigger,
    sha: Option<&str>,
) -> Result<wharf_core::DeploymentHandle, ApiError> {
    Ok(match (sha.filter(|s| is_sha(s)), &svc.source) {
        (Some(sha), SourceSpec::Git { url, subdir, .. }) => {
            let source = SourceSpec::Git {
                url: url.clone(),
                reference: GitRef::Commit(sha.to_ascii_lowercase()),
                subdir: subdir.clone(),
            };
            app.engine.deploy_source(&svc.id, trigger, source).await?
        }
        _ => app.engine.deploy(&svc.id, trigger).await?,
    })
}

pub(super) async fn preview_down(app: &App, svc: &Service, number: u64) -> Result<(), ApiError> {
    let Some(env) = preview_env(app, svc, number).await? else {
        return Ok(());
    };
    crate::api::environments::tear_down(app, &env).await
}
