//! GitHub and GitLab webhooks: a push deploys the services built from the pushed
//! branch; a pull/merge request opened or updated deploys a preview environment
//! (`pr-<n>.<service>.<project>.<base domain>`), closed tears it down with everything
//! it created. A secret is always required and checked in constant time; replayed
//! deliveries are refused. Each project has its own secret (`wharf webhooks secret`):
//! a delivery it signs acts on that project only. The server-wide `webhook_secret` is
//! the operator's and acts on every project.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::Value;
use sha2::{Digest, Sha256};
use wharf_core::{ProjectId, Secret, Trigger};

mod parse;
mod previews;

pub use parse::{github_signature_ok, normalize_repo};

use crate::api::{ApiError, App};
use crate::auth::constant_time_eq;
use crate::dto::{HookDeployment, HookOutcome};
use parse::{github_action, gitlab_action, Action};
pub(crate) use previews::{deploy_at, preview_env};
use previews::{matching, preview_down, preview_up, Head, Signer};

/// Delivery ids seen lately, to refuse replays.
#[derive(Debug, Default)]
pub struct Deliveries {
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl Deliveries {
    const KEEP: usize = 10_000;

    /// Records `id`; false if it was seen before.
    fn first_time(&self, id: &str) -> bool {
        let mut g = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if !g.0.insert(id.to_owned()) {
            return false;
        }
        g.1.push_back(id.to_owned());
        if g.1.len() > Self::KEEP {
            if let Some(old) = g.1.pop_front() {
                g.0.remove(&old);
            }
        }
        true
    }
}

fn refuse(status: StatusCode, code: &'static str, why: &str, provider: &str) -> ApiError {
    tracing::warn!(provider, reason = why, "webhook delivery refused");
    ApiError::new(status, code, why)
}

/// Whose secret `check` accepts: the server's, else the project's whose own secret it
/// is. 503 while no secret is set anywhere, 401 when none matches.
async fn signer(
    app: &App,
    provider: &str,
    check: impl Fn(&[u8]) -> bool,
) -> Result<Signer, ApiError> {
    let keyed: Vec<(ProjectId, Secret)> = app
        .store
        .projects()
        .await?
        .into_iter()
        .filter_map(|p| Some((p.id, p.webhook_secret?)))
        .collect();
    if app.webhook_secret.is_none() && keyed.is_empty() {
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
    for (id, s) in keyed {
        if check(s.expose().as_bytes()) {
            return Ok(Signer::Project(id));
        }
    }
    Err(refuse(
        StatusCode::UNAUTHORIZED,
        "bad_signature",
        "the delivery is not signed with the secret of the server or of any project",
        provider,
    ))
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
    let sig = required(&headers, "x-hub-signature-256", "github")?;
    let who = signer(&app, "github", |key| github_signature_ok(key, &body, sig)).await?;
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

/// `POST /hooks/gitlab`.
#[utoipa::path(post, path = "/hooks/gitlab", operation_id = "gitlab_webhook", tag = "webhooks",
    request_body = serde_json::Value, security(()),
    responses((status = 202, description = "What the delivery did (Push Hook, Merge Request Hook); X-Gitlab-Token must be a project's webhook secret (it then acts on that project only) or the server's", body = crate::dto::HookOutcome)))]
pub async fn gitlab(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<HookOutcome>), ApiError> {
    let token = required(&headers, "x-gitlab-token", "gitlab")?;
    // Digests of equal length are compared, so the time taken does not tell the
    // secret's length.
    let given = Sha256::digest(token.as_bytes());
    let who = signer(&app, "gitlab", |key| {
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
    if !app.deliveries.first_time(delivery) {
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
    } = action
    else {
        return Ok(Vec::new());
    };
    let repos: Vec<String> = repos.iter().map(|r| normalize_repo(r)).collect();
    let mut started = Vec::new();
    let wanted = (branch.as_str(), default_branch.as_deref());
    for (_, svc) in matching(app, who, &repos, wanted, true).await? {
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
            preview_down(app, &project.id, number).await?;
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
