//! GitHub and GitLab webhooks: a push deploys the services built from the pushed
//! branch; a pull/merge request opened or updated deploys a preview environment
//! (`pr-<n>.<service>.<project>.<base domain>`), closed tears it down with everything
//! it created. A secret is always required and checked in constant time; replayed
//! deliveries are refused. Each project has its own secret (`wharf webhooks secret`):
//! a delivery it signs acts on that project only. The server-wide `webhook_secret` is
//! the operator's and acts on every project.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::Value;
use sha2::{Digest, Sha256};
use wharf_core::{ProjectId, Trigger};

mod parse;
mod previews;

pub use parse::{github_signature, github_signature_ok, normalize_repo};

use crate::api::{ApiError, App};
use crate::auth::constant_time_eq;
use crate::dto::{HookDeployment, HookOutcome};
use parse::{github_action, gitlab_action, Action};
pub(crate) use previews::{deploy_at, preview_env};
use previews::{matching, preview_down, preview_up, Head, Signer};

/// Delivery ids seen in the last week, per signer (the server's secret or a
/// project's), to refuse replays; kept in a file across restarts when made with
/// [`Deliveries::load`]. Each signer keeps its own last [`Deliveries::KEEP_PER_SIGNER`]
/// ids: one tenant sending many deliveries never pushes another's out of the window.
#[derive(Debug, Default)]
pub struct Deliveries {
    /// `(signer + "\n" + id, when)`, oldest first (entries of older versions have
    /// no signer part).
    seen: Mutex<VecDeque<(String, u64)>>,
    file: Option<PathBuf>,
}

impl Deliveries {
    /// Ids one signer keeps.
    pub const KEEP_PER_SIGNER: usize = 2_000;
    /// Ids kept in all (the oldest go first past it).
    const KEEP: usize = 100_000;
    const WINDOW_MS: u64 = 7 * 24 * 3600 * 1000;

    /// The deliveries recorded in `data_dir/deliveries.json` (none if absent).
    pub fn load(data_dir: &Path) -> std::io::Result<Deliveries> {
        let file = data_dir.join("deliveries.json");
        let seen = crate::json_file::load_or_default(&file)?;
        Ok(Deliveries {
            seen: Mutex::new(seen),
            file: Some(file),
        })
    }

    /// Records delivery `id` signed by `signer`; false if it was seen within the
    /// window.
    pub fn seen_first(&self, signer: &str, id: &str) -> bool {
        let now = crate::auth::now_ms();
        let key = format!("{signer}\n{id}");
        let prefix = format!("{signer}\n");
        let mut g = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        while g
            .front()
            .is_some_and(|(_, t)| now.saturating_sub(*t) > Self::WINDOW_MS)
            || g.len() >= Self::KEEP
        {
            g.pop_front();
        }
        if g.iter().any(|(seen, _)| *seen == key) {
            return false;
        }
        // The server's secret signs for every project: it keeps as many as all did
        // before ids were kept per signer.
        let share = match signer {
            "server" => Self::KEEP_PER_SIGNER * 5,
            _ => Self::KEEP_PER_SIGNER,
        };
        if g.iter().filter(|(k, _)| k.starts_with(&prefix)).count() >= share {
            if let Some(oldest) = g.iter().position(|(k, _)| k.starts_with(&prefix)) {
                g.remove(oldest);
            }
        }
        g.push_back((key, now));
        if let Some(file) = &self.file {
            let saved = serde_json::to_vec(&*g)
                .map_err(std::io::Error::other)
                .and_then(|b| crate::auth::write_private(file, &b));
            if let Err(e) = saved {
                tracing::error!(error = %e, "cannot record a webhook delivery; a restart forgets it");
            }
        }
        true
    }
}

fn refuse(status: StatusCode, code: &'static str, why: &str, provider: &str) -> ApiError {
    tracing::warn!(provider, reason = why, "webhook delivery refused");
    ApiError::new(status, code, why)
}

/// Whose secret `check` accepts: the server's, else that of a project deploying one
/// of the repositories the body names (a project's secret only ever acts on those, so
/// no other is tried: a delivery costs one check per such project, not one per
/// project of the server). 503 while no secret is set anywhere, 401 when none matches.
async fn signer(
    app: &App,
    provider: &str,
    body: &[u8],
    check: impl Fn(&[u8]) -> bool,
) -> Result<Signer, ApiError> {
    let projects = app.store.projects().await?;
    if app.webhook_secret.is_none() && projects.iter().all(|p| p.webhook_secret.is_none()) {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks_off",
            "webhooks are off: neither the server nor any project has a webhook secret",
            provider,
        ));
    }
    if let Some(s) = &app.webhook_secret {
        if check(s.expose().as_bytes()) {
            return Ok(Signer::Server);
        }
    }
    let named = parse::repos_named(body);
    if !named.is_empty() {
        for p in projects {
            let Some(secret) = &p.webhook_secret else {
                continue;
            };
            if deploys_any(app, &p.id, &named).await? && check(secret.expose().as_bytes()) {
                return Ok(Signer::Project(p.id));
            }
        }
    }
    Err(refuse(
        StatusCode::UNAUTHORIZED,
        "bad_signature",
        "the delivery is not signed with the secret of the server or of a project deploying its repository",
        provider,
    ))
}

/// Whether a service of `project` is built from one of `repos` (normalized).
async fn deploys_any(app: &App, project: &ProjectId, repos: &[String]) -> Result<bool, ApiError> {
    Ok(app.store.services(project).await?.iter().any(|svc| {
        matches!(&svc.source, wharf_core::SourceSpec::Git { url, .. } if repos.contains(&normalize_repo(url)))
    }))
}

fn required<'a>(headers: &'a HeaderMap, name: &str, provider: &str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            refuse(
                StatusCode::UNAUTHORIZED,
                "unsigned",
                &format!("missing {name}"),
                provider,
            )
        })
}

/// `POST /hooks/github`.
#[utoipa::path(post, path = "/hooks/github", operation_id = "github_webhook", tag = "webhooks",
    request_body = serde_json::Value, security(()),
    responses((status = 202, description = "What the delivery did (push: deployments started; pull_request: previews deployed or removed). Signed with X-Hub-Signature-256 over the body with a project's webhook secret (it then acts on that project only) or the server's", body = crate::dto::HookOutcome)))]
pub async fn github(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<HookOutcome>), ApiError> {
    let answer = async {
        let sig = required(&headers, "x-hub-signature-256", "github")?;
        let who = signer(&app, "github", &body, |key| {
            github_signature_ok(key, &body, sig)
        })
        .await?;
        let event = header(&headers, "x-github-event");
        let delivery = header(&headers, "x-github-delivery");
        handle(
            &app,
            ("github", &who),
            &event,
            &delivery,
            &body,
            github_action,
        )
        .await
    }
    .await;
    counted(&app, "github", answer)
}

/// Counts a delivery's answer in the metrics (`accepted`, or the refusal's code).
fn counted<T>(
    app: &App,
    provider: &'static str,
    answer: Result<T, ApiError>,
) -> Result<T, ApiError> {
    let result = match &answer {
        Ok(_) => "accepted",
        Err(e) => e.code(),
    };
    app.metrics.webhook(provider, result);
    answer
}

/// `POST /hooks/gitlab`.
#[utoipa::path(post, path = "/hooks/gitlab", operation_id = "gitlab_webhook", tag = "webhooks",
    request_body = serde_json::Value, security(()),
    responses((status = 202, description = "What the delivery did (Push Hook, Merge Request Hook); X-Gitlab-Token must be a project's webhook secret (it then acts on that project only) or the server's", body = crate::dto::HookOutcome)))]
pub async fn gitlab(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<HookOutcome>), ApiError> {
    let answer = async {
        let token = required(&headers, "x-gitlab-token", "gitlab")?;
        // Digests of equal length are compared, so the time taken does not tell the
        // secret's length.
        let given = Sha256::digest(token.as_bytes());
        let who = signer(&app, "gitlab", &body, |key| {
            constant_time_eq(&Sha256::digest(key), &given)
        })
        .await?;
        let event = header(&headers, "x-gitlab-event");
        let delivery = header(&headers, "x-gitlab-event-uuid");
        handle(
            &app,
            ("gitlab", &who),
            &event,
            &delivery,
            &body,
            gitlab_action,
        )
        .await
    }
    .await;
    counted(&app, "gitlab", answer)
}

/// What a delivery of `provider` (`github` or `gitlab`) with event `event` and body
/// `body` asks for, in words (`None`: not JSON). The parsing the webhook endpoints do,
/// without a server around it: for fuzzing and tests.
pub fn describe_delivery(provider: &str, event: &str, body: &[u8]) -> Option<String> {
    let payload: Value = serde_json::from_slice(body).ok()?;
    let action = match provider {
        "gitlab" => gitlab_action(event, &payload),
        _ => github_action(event, &payload),
    };
    Some(format!("{action:?}"))
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

async fn handle(
    app: &App,
    (provider, who): (&'static str, &Signer),
    event: &str,
    delivery: &str,
    body: &[u8],
    parse: fn(&str, &Value) -> Action,
) -> Result<(StatusCode, Json<HookOutcome>), ApiError> {
    if delivery.is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "missing delivery id header",
            provider,
        ));
    }
    let signed_by = match who {
        Signer::Server => "server",
        Signer::Project(p) => p.as_str(),
    };
    if !app.deliveries.seen_first(signed_by, delivery) {
        return Err(refuse(
            StatusCode::CONFLICT,
            "replayed",
            "this delivery was already processed",
            provider,
        ));
    }
    let payload: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("bad JSON: {e}"),
        )
    })?;
    let action = parse(event, &payload);
    tracing::info!(provider, event, delivery, "webhook delivery");
    let out = match action {
        Action::Ignore(why) => HookOutcome::Ignored(why),
        Action::Push { .. } => HookOutcome::Deployments(push(app, provider, who, action).await?),
        Action::Preview { .. } => HookOutcome::Previews(preview(app, provider, who, action).await?),
    };
    Ok((StatusCode::ACCEPTED, Json(out)))
}

/// A push: deploys the services built from the pushed branch at the pushed commit.
async fn push(
    app: &App,
    provider: &str,
    who: &Signer,
    action: Action,
) -> Result<Vec<HookDeployment>, ApiError> {
    let Action::Push {
        repos,
        branch,
        default_branch,
        sha,
        before,
        forced,
    } = action
    else {
        return Ok(Vec::new());
    };
    let repos: Vec<String> = repos.iter().map(|r| normalize_repo(r)).collect();
    let mut started = Vec::new();
    let wanted = (branch.as_str(), default_branch.as_deref());
    for (_, svc) in matching(app, who, &repos, wanted, true).await? {
        if let Some(why) = out_of_order(app, &svc, (before.as_deref(), &sha), forced).await? {
            tracing::warn!(provider, service = %svc.id, reason = %why, "push refused");
            started.push(HookDeployment {
                service: svc.name,
                preview: None,
                deployment: None,
                removed: None,
                waiting: Some(why),
            });
            continue;
        }
        let trigger = Trigger::Webhook {
            provider: provider.into(),
            reference: format!("refs/heads/{branch}@{sha}"),
        };
        let h = deploy_at(app, &svc, trigger, Some(&sha)).await?;
        started.push(HookDeployment {
            service: svc.name,
            preview: None,
            deployment: Some(h.id().clone()),
            removed: None,
            waiting: None,
        });
    }
    Ok(started)
}

/// Why a push must not deploy `svc`, if it must not: a replayed or out-of-order
/// delivery (signed, with a new delivery id) would deploy an old commit. A push is
/// taken when it moves the branch on from the last commit a webhook deployed (its
/// `before`), when it creates the branch, when the forge says it was forced, or when
/// no webhook deployed a commit of the service yet.
async fn out_of_order(
    app: &App,
    svc: &wharf_core::Service,
    (before, after): (Option<&str>, &str),
    forced: bool,
) -> Result<Option<String>, ApiError> {
    let filter = wharf_core::DeploymentFilter {
        service: Some(svc.id.clone()),
        limit: Some(50),
        ..Default::default()
    };
    let last = app
        .store
        .deployments(&filter)
        .await?
        .into_iter()
        .find_map(|d| match (&d.trigger, d.source) {
            (
                Trigger::Webhook { .. },
                wharf_core::SourceSpec::Git {
                    reference: wharf_core::GitRef::Commit(c),
                    ..
                },
            ) => Some(c),
            _ => None,
        });
    let Some(last) = last else { return Ok(None) };
    let created = before.is_some_and(|b| !b.is_empty() && b.bytes().all(|c| c == b'0'));
    if after.eq_ignore_ascii_case(&last) {
        return Ok(Some(format!(
            "commit {last} is what the last push deployed"
        )));
    }
    if forced || created || before.is_some_and(|b| b.eq_ignore_ascii_case(&last)) {
        return Ok(None);
    }
    Ok(Some(format!(
        "this push does not follow commit {last}, the last one deployed (a replayed or \
         out-of-order delivery?); deploy by hand if it is right"
    )))
}

/// A pull/merge request opened, updated or closed: its previews follow. Only requests
/// into the branch a service deploys make previews of it.
async fn preview(
    app: &App,
    provider: &str,
    who: &Signer,
    action: Action,
) -> Result<Vec<HookDeployment>, ApiError> {
    let Action::Preview {
        repos,
        base,
        default_branch,
        number,
        head_url,
        head_branch,
        head_sha,
        open,
    } = action
    else {
        return Ok(Vec::new());
    };
    let repos: Vec<String> = repos.iter().map(|r| normalize_repo(r)).collect();
    let mut out = Vec::new();
    let wanted = (base.as_str(), default_branch.as_deref());
    for (project, svc) in matching(app, who, &repos, wanted, false).await? {
        let head = Head {
            url: head_url.as_deref(),
            branch: &head_branch,
            sha: head_sha.as_deref(),
        };
        if open {
            out.push(preview_up(app, (&project, &svc), number, head, provider).await?);
        } else {
            preview_down(app, &svc, number).await?;
            out.push(HookDeployment {
                service: svc.name,
                preview: Some(number),
                deployment: None,
                removed: Some(true),
                waiting: None,
            });
        }
    }
    Ok(out)
}
