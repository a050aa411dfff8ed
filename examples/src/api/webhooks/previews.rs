//! Which services a delivery concerns, and the preview environments of pull/merge
//! requests: created, deployed at the commit the forge named, torn down.
//!
//! A pull request from the service's own repository builds from the URL the owner
//! configured (never one a delivery names). One from a fork builds from the fork,
//! which must live on the same forge host and be reached over http(s); its code is
//! anyone's, so the project's fork policy ([`ForkPreviews`]) decides: deployed without
//! secrets (the default), held for an owner's approval, or not at all.

use wharf_core::{
    Environment, EnvironmentId, EnvironmentKind, ForkPreviews, GitRef, Project, ProjectId, Service,
    ServiceId, SourceSpec, Timestamp, Trigger,
};

use super::parse::{is_sha, normalize_repo};
use crate::api::{ApiError, App};
use crate::dto::HookDeployment;

/// Whose secret signed a delivery: the server's own (`webhook_secret`, the
/// operator's: it acts on every project) or one project's (it acts on that one only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Signer {
    /// The server-wide secret.
    Server,
    /// A project's own secret.
    Project(ProjectId),
}

impl Signer {
    fn covers(&self, project: &ProjectId) -> bool {
        match self {
            Signer::Server => true,
            Signer::Project(p) => p == project,
        }
    }
}

/// Services whose git source is one of `repos` at `branch` (or at the repository's
/// default branch when the service names none and the forge says which it is) in the
/// projects `signer` covers: the projects' own services, and with `in_environments`
/// those of standing environments too (a staging service tracking `develop`); never
/// a preview's.
pub(super) async fn matching(
    app: &App,
    signer: &Signer,
    repos: &[String],
    (branch, default_branch): (&str, Option<&str>),
    in_environments: bool,
) -> Result<Vec<(Project, Service)>, ApiError> {
    let mut out = Vec::new();
    for p in app.store.projects().await? {
        if !signer.covers(&p.id) {
            continue;
        }
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
                GitRef::Default => default_branch == Some(branch),
                _ => false,
            };
            if hit {
                out.push((p.clone(), svc));
            }
        }
    }
    Ok(out)
}

fn preview_name(number: u64) -> String {
    format!("pr-{number}")
}

/// The preview environment of pull request `number` in `project`, if it exists.
pub(crate) async fn preview_env(
    app: &App,
    project: &ProjectId,
    number: u64,
) -> Result<Option<Environment>, ApiError> {
    let name = preview_name(number);
    let env = crate::api::extract::found(app.store.environment_by_name(project, &name).await)?;
    Ok(env.filter(|e| matches!(e.kind, EnvironmentKind::Preview { .. })))
}

/// A pull request's head, as the delivery names it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Head<'a> {
    /// Where the head branch lives; `None` when the forge does not say.
    pub(super) url: Option<&'a str>,
    /// The head branch.
    pub(super) branch: &'a str,
    /// The head commit, when the forge says.
    pub(super) sha: Option<&'a str>,
}

/// The fork a pull request comes from (`None`: the service's own repository), after
/// checking a delivery may name it: an http(s) URL without credentials on the host of
/// the service's repository. `file://`, local paths and other transports are refused.
fn fork_of(svc: &Service, head_url: &str) -> Result<Option<String>, ApiError> {
    let SourceSpec::Git { url, .. } = &svc.source else {
        return Err(ApiError::bad("previews need a git source"));
    };
    if normalize_repo(head_url) == normalize_repo(url) {
        return Ok(None);
    }
    let refuse = |why: &str| {
        ApiError::bad(format!(
            "the pull request's head repository {head_url:?} is refused: {why}"
        ))
    };
    let parsed = reqwest::Url::parse(head_url).map_err(|_| refuse("not a URL"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(refuse("only http(s) repositories are fetched for a fork"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(refuse("credentials in the URL"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(refuse("a query or fragment in the URL"));
    }
    // The hosts as a URL parser reads them (what git will connect to), not as text.
    let base_host = match reqwest::Url::parse(url) {
        Ok(u) => u
            .host_str()
            .map(|h| (h.to_owned(), u.port_or_known_default())),
        Err(_) => normalize_repo(url)
            .split('/')
            .next()
            .map(|h| (h.to_owned(), None)),
    };
    let fork_host = parsed
        .host_str()
        .map(|h| (h.to_owned(), parsed.port_or_known_default()));
    let same = match (&fork_host, &base_host) {
        (Some((fh, fp)), Some((bh, bp))) => fh == bh && (bp.is_none() || fp == bp),
        _ => false,
    };
    if !same {
        return Err(refuse("not on the service's repository host"));
    }
    Ok(Some(head_url.to_owned()))
}

/// Creates or updates the preview of pull request `number` for `svc` and deploys it,
/// unless the project's fork policy holds it (then the outcome says why).
pub(super) async fn preview_up(
    app: &App,
    (project, svc): (&Project, &Service),
    number: u64,
    head: Head<'_>,
    provider: &str,
) -> Result<HookDeployment, ApiError> {
    let mut out = HookDeployment {
        service: svc.name.clone(),
        preview: Some(number),
        deployment: None,
        removed: None,
        waiting: None,
    };
    let Some(head_url) = head.url else {
        out.waiting = Some("the forge names no head repository (a deleted fork?)".into());
        return Ok(out);
    };
    let fork = fork_of(svc, head_url)?;
    if fork.is_some() && !app.isolated {
        out.waiting = Some(
            "previews of forks are refused: this server runs apps as host processes, with its own rights"
                .into(),
        );
        return Ok(out);
    }
    if let Some(env) = preview_env(app, &project.id, number).await? {
        if !owned_by(app, &env, svc).await? {
            out.waiting = Some(format!(
                "preview pr-{number} belongs to pull request {number} of another repository of this project"
            ));
            return Ok(out);
        }
    }
    let policy = project.previews.forks;
    if fork.is_some() && policy == ForkPreviews::Off {
        out.waiting = Some("previews of forks are off for this project".into());
        return Ok(out);
    }
    let sha = head.sha.filter(|s| is_sha(s)).map(str::to_ascii_lowercase);
    if fork.is_some() && policy == ForkPreviews::Approve && sha.is_none() {
        out.waiting = Some("a fork's preview needs its head commit to be approved".into());
        return Ok(out);
    }
    let env = preview_environment(app, project, number, head.branch, fork.clone(), &sha).await?;
    let copy = preview_service(app, svc, &env, fork.as_deref(), head.branch).await?;
    if let EnvironmentKind::Preview { fork: Some(f), .. } = &env.kind {
        if policy == ForkPreviews::Approve && f.approved.as_ref() != sha.as_ref() {
            out.waiting = Some(format!(
                "waiting for an owner's approval: wharf previews approve {number} --project {}",
                project.name
            ));
            return Ok(out);
        }
    }
    let trigger = Trigger::Webhook {
        provider: provider.into(),
        reference: format!("pull request {number} ({})", head.branch),
    };
    // The preview tracks the branch; this deployment builds the commit the forge named.
    let h = deploy_at(app, &copy, trigger, sha.as_deref()).await?;
    out.deployment = Some(h.id().clone());
    Ok(out)
}

/// The preview environment, created with the project's preview env, its fork and
/// the commit awaiting approval recorded.
async fn preview_environment(
    app: &App,
    project: &Project,
    number: u64,
    branch: &str,
    fork: Option<String>,
    sha: &Option<String>,
) -> Result<Environment, ApiError> {
    let mut env = match preview_env(app, &project.id, number).await? {
        Some(e) => e,
        None => Environment {
            id: EnvironmentId::random(),
            project: project.id.clone(),
            name: preview_name(number),
            kind: EnvironmentKind::Standing,
            env: project.previews.env.clone(),
            created_at: Timestamp::now(),
        },
    };
    let approved = match &env.kind {
        EnvironmentKind::Preview { fork: Some(f), .. } => f.approved.clone(),
        _ => None,
    };
    env.kind = EnvironmentKind::Preview {
        number,
        branch: branch.to_owned(),
        fork: fork.map(|repository| wharf_core::Fork {
            repository,
            awaiting: sha.clone().filter(|s| approved.as_ref() != Some(s)),
            approved,
        }),
    };
    app.store.put_environment(&env).await?;
    Ok(env)
}

/// The preview's copy of `svc`, its source at the head branch: of the service's own
/// repository (the URL its owner configured), or of the fork.
async fn preview_service(
    app: &App,
    svc: &Service,
    env: &Environment,
    fork: Option<&str>,
    branch: &str,
) -> Result<Service, ApiError> {
    let existing = crate::api::extract::found(
        app.store
            .service_by_name(&svc.project, Some(&env.id), &svc.name)
            .await,
    )?;
    let mut copy = existing.unwrap_or_else(|| {
        let mut c = svc.clone();
        c.id = ServiceId::random();
        c.environment = Some(env.id.clone());
        c.domains.clear();
        // A preview runs one instance of each process type and no cron jobs: the
        // production schedule (charging, mailing) must not run once per pull request,
        // and a pull request must not multiply the production replica counts.
        c.replicas.clear();
        c.cron.clear();
        c.created_at = Timestamp::now();
        c
    });
    let SourceSpec::Git { url, subdir, .. } = &svc.source else {
        return Err(ApiError::bad("previews need a git source"));
    };
    copy.source = SourceSpec::Git {
        url: fork.unwrap_or(url).to_owned(),
        reference: GitRef::Branch(branch.to_owned()),
        subdir: subdir.clone(),
    };
    copy.validate()?;
    app.store.put_service(&copy).await?;
    Ok(copy)
}

/// Deploys `svc` at the commit a delivery named (a full sha), not whatever its branch
/// points at when the deployment gets to fetch it; at its own source otherwise.
pub(crate) async fn deploy_at(
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

/// Tears down the preview of pull request `number` of `svc`'s repository, if it is
/// that repository's (another repository of the project may have its own `number`).
pub(super) async fn preview_down(app: &App, svc: &Service, number: u64) -> Result<(), ApiError> {
    let Some(env) = preview_env(app, &svc.project, number).await? else {
        return Ok(());
    };
    if !owned_by(app, &env, svc).await? {
        return Ok(());
    }
    crate::api::environments::tear_down(app, &env).await
}

/// Whether every service of the preview `env` copies a project service built from
/// the same repository as `svc`: a pull request number is unique per repository only,
/// and two repositories of one project must not share (or approve, or close) one
/// preview.
async fn owned_by(app: &App, env: &Environment, svc: &Service) -> Result<bool, ApiError> {
    let repo_of = |s: &Service| match &s.source {
        SourceSpec::Git { url, .. } => Some(normalize_repo(url)),
        _ => None,
    };
    let ours = repo_of(svc);
    let services = app.store.services(&env.project).await?;
    Ok(services
        .iter()
        .filter(|s| s.environment.as_ref() == Some(&env.id))
        .all(|copy| {
            services
                .iter()
                .find(|p| p.environment.is_none() && p.name == copy.name)
                .is_some_and(|parent| repo_of(parent) == ours)
        }))
}
