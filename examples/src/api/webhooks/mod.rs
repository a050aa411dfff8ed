//! GitHub and GitLab webhooks: a push deploys the services built from the pushed
//! branch; a pull/merge request opened or updated deploys a preview environment
//! (`pr-<n>.<service>.<project>.<base domain>`), closed tears it down with everything
//! it created. A secret is always required and checked in constant time; replayed
//! deliveries are refused.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::Value;
use wharf_core::Trigger;

mod parse;
mod previews;

pub use parse::{github_signature_ok, normalize_repo};

use crate::api::{ApiError, App};
use crate::auth::constant_time_eq;
use crate::dto::{HookDeployment, HookOutcome};
use parse::{github_action, gitlab_action, Action};
use previews::{deploy_at, matching, preview_down, preview_up};

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

/// The secret deliveries must carry; refused while the server has none.
fn webhook_secret<'a>(app: &'a App, provider: &str) -> Result<&'a wharf_core::Secret, ApiError> {
    app.webhook_secret.as_ref().ok_or_else(|| {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks_off",
            "webhooks are off: the server has no webhook_secret",
            provider,
        )
    })
}

/// `POST /hooks/github`.
#[utoipa::path(post, path = "/hooks/github", operation_id = "github_webhook", tag = "webhooks",
    request_body = serde_json::Value, security(()),
    responses((status = 202, description = "What the delivery did (push: deployments started; pull_request: previews deployed or removed). Signed with X-Hub-Signature-256 over the body with the server's webhook_secret", body = crate::dto::HookOutcome)))]
pub async fn github(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<HookOutcome>), ApiError> {
    let secret = webhook_secret(&app, "github")?;
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            refuse(
                StatusCode::UNAUTHORIZED,
                "unsigned",
                "missing X-Hub-Signature-256",
                "github",
            )
        })?;
    if !github_signature_ok(secret.expose().as_bytes(), &body, sig) {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "X-Hub-Signature-256 does not match the body",
            "github",
        ));
    }
    let event = header(&headers, "x-github-event");
    let delivery = header(&headers, "x-github-delivery");
    handle(&app, "github", &event, &delivery, &body, github_action).await
}

/// `POST /hooks/gitlab`.
#[utoipa::path(post, path = "/hooks/gitlab", operation_id = "gitlab_webhook", tag = "webhooks",
    request_body = serde_json::Value, security(()),
    responses((status = 202, description = "What the delivery did (Push Hook, Merge Request Hook); X-Gitlab-Token must equal the server's webhook_secret", body = crate::dto::HookOutcome)))]
pub async fn gitlab(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<HookOutcome>), ApiError> {
    let secret = webhook_secret(&app, "gitlab")?;
    let token = headers
        .get("x-gitlab-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            refuse(
                StatusCode::UNAUTHORIZED,
                "unsigned",
                "missing X-Gitlab-Token",
                "gitlab",
            )
        })?;
    if !constant_time_eq(token.as_bytes(), secret.expose().as_bytes()) {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "X-Gitlab-Token does not match",
            "gitlab",
        ));
    }
    let event = header(&headers, "x-gitlab-event");
    let delivery = header(&headers, "x-gitlab-event-uuid");
    handle(&app, "gitlab", &event, &delivery, &body, gitlab_action).await
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

async fn handle(
    app: &App,
    provider: &'static str,
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
        Action::Push { .. } => HookOutcome::Deployments(push(app, provider, action).await?),
        Action::Preview { .. } => HookOutcome::Previews(preview(app, provider, action).await?),
    };
    Ok((StatusCode::ACCEPTED, Json(out)))
}

/// A push: deploys the services built from the pushed branch at the pushed commit.
async fn push(app: &App, provider: &str, action: Action) -> Result<Vec<HookDeployment>, ApiError> {
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
    for svc in matching(app, &repos, (&branch, default_branch.as_deref()), true).await? {
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
        });
    }
    Ok(started)
}

/// A pull/merge request opened, updated or closed: its previews follow.
async fn preview(
    app: &App,
    provider: &str,
    action: Action,
) -> Result<Vec<HookDeployment>, ApiError> {
    let Action::Preview {
        repos,
        base,
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
    for svc in matching(app, &repos, (&base, None), false).await? {
        let head = (head_url.as_str(), head_branch.as_str(), head_sha.as_deref());
        let (deployment, removed) = if open {
            (
                Some(preview_up(app, &svc, number, head, provider).await?),
                None,
            )
        } else {
            preview_down(app, &svc, number).await?;
            (None, Some(true))
        };
        out.push(HookDeployment {
            service: svc.name,
            preview: Some(number),
            deployment,
            removed,
        });
    }
    Ok(out)
}
