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
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use wharf_core::{
    Environment, EnvironmentId, EnvironmentKind, GitRef, Service, ServiceId, SourceSpec, Timestamp,
    Trigger,
};

use crate::api::{ApiError, App};
use crate::auth::{constant_time_eq, unhex};

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

/// Checks `X-Hub-Signature-256: sha256=<hex>` over `body`, in constant time.
pub fn github_signature_ok(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Some(given) = unhex(hex) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    constant_time_eq(&expected, &given)
}

/// A repository URL reduced to `host/owner/name` so the forms a forge sends
/// (https, ssh, `git@host:path`, with or without `.git`) compare equal.
pub fn normalize_repo(url: &str) -> String {
    let mut u = url.trim().to_ascii_lowercase();
    for scheme in ["https://", "http://", "ssh://", "git://", "file://"] {
        if let Some(rest) = u.strip_prefix(scheme) {
            u = rest.to_owned();
        }
    }
    if let Some((_, rest)) = u.split_once('@') {
        u = rest.to_owned();
    }
    if let Some((host, path)) = u.split_once(':') {
        if !path.starts_with('/') && !path.chars().all(|c| c.is_ascii_digit()) {
            u = format!("{host}/{path}");
        }
    }
    u.trim_end_matches('/').trim_end_matches(".git").to_owned()
}

/// What a delivery asks for, in forge-neutral terms.
#[derive(Debug)]
enum Action {
    Push {
        repos: Vec<String>,
        branch: String,
        default_branch: Option<String>,
        sha: String,
    },
    Preview {
        repos: Vec<String>,
        base: String,
        number: u64,
        head_url: String,
        head_branch: String,
        /// The head commit, when the forge says.
        head_sha: Option<String>,
        open: bool,
    },
    Ignore(String),
}

/// A full SHA-1 commit id, as forges send in a push (what the git fetcher takes as a
/// commit; a SHA-256 repository's pushes deploy the branch instead).
fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

fn s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn github_action(event: &str, p: &Value) -> Action {
    let repo = &p["repository"];
    let repos: Vec<String> = ["clone_url", "ssh_url", "html_url", "git_url"]
        .iter()
        .filter_map(|k| s(&repo[*k]))
        .collect();
    match event {
        "push" => match p["ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("refs/heads/"))
        {
            Some(branch) if p["deleted"] != true => Action::Push {
                repos,
                branch: branch.to_owned(),
                default_branch: s(&repo["default_branch"]),
                sha: s(&p["after"]).unwrap_or_default(),
            },
            _ => Action::Ignore("not a branch update".into()),
        },
        "pull_request" => {
            let pr = &p["pull_request"];
            let open = match p["action"].as_str().unwrap_or("") {
                "opened" | "reopened" | "synchronize" => true,
                "closed" => false,
                other => return Action::Ignore(format!("pull_request action {other}")),
            };
            Action::Preview {
                repos,
                base: s(&pr["base"]["ref"]).unwrap_or_default(),
                number: p["number"].as_u64().unwrap_or(0),
                head_url: s(&pr["head"]["repo"]["clone_url"])
                    .or_else(|| s(&repo["clone_url"]))
                    .unwrap_or_default(),
                head_branch: s(&pr["head"]["ref"]).unwrap_or_default(),
                head_sha: s(&pr["head"]["sha"]),
                open,
            }
        }
        other => Action::Ignore(format!("event {other}")),
    }
}

fn gitlab_action(event: &str, p: &Value) -> Action {
    let proj = &p["project"];
    let repos: Vec<String> = ["git_http_url", "git_ssh_url", "web_url"]
        .iter()
        .filter_map(|k| s(&proj[*k]))
        .collect();
    match event {
        "Push Hook" => match p["ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("refs/heads/"))
        {
            Some(branch)
                if p["after"]
                    .as_str()
                    .is_some_and(|a| a.bytes().any(|b| b != b'0')) =>
            {
                Action::Push {
                    repos,
                    branch: branch.to_owned(),
                    default_branch: s(&proj["default_branch"]),
                    sha: s(&p["checkout_sha"])
                        .or_else(|| s(&p["after"]))
                        .unwrap_or_default(),
                }
            }
            _ => Action::Ignore("not a branch update".into()),
        },
        "Merge Request Hook" => {
            let mr = &p["object_attributes"];
            let open = match mr["action"].as_str().unwrap_or("") {
                "open" | "reopen" | "update" => true,
                "close" | "merge" => false,
                other => return Action::Ignore(format!("merge request action {other}")),
            };
            Action::Preview {
                repos,
                base: s(&mr["target_branch"]).unwrap_or_default(),
                number: mr["iid"].as_u64().unwrap_or(0),
                head_url: s(&mr["source"]["git_http_url"])
                    .or_else(|| s(&proj["git_http_url"]))
                    .unwrap_or_default(),
                head_branch: s(&mr["source_branch"]).unwrap_or_default(),
                head_sha: s(&mr["last_commit"]["id"]),
                open,
            }
        }
        other => Action::Ignore(format!("event {other}")),
    }
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
pub async fn github(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
pub async fn gitlab(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
        Action::Ignore(why) => json!({"ignored": why}),
        Action::Push {
            repos,
            branch,
            default_branch,
            sha,
        } => {
            let repos: Vec<String> = repos.iter().map(|r| normalize_repo(r)).collect();
            let mut started = Vec::new();
            for svc in matching(app, &repos, (&branch, default_branch.as_deref()), true).await? {
                let trigger = Trigger::Webhook {
                    provider: provider.into(),
                    reference: format!("refs/heads/{branch}@{sha}"),
                };
                let h = deploy_at(app, &svc, trigger, Some(&sha)).await?;
                started.push(json!({"service": svc.name, "deployment": h.id()}));
            }
            json!({"deployments": started})
        }
        Action::Preview {
            repos,
            base,
            number,
            head_url,
            head_branch,
            head_sha,
            open,
        } => {
            let repos: Vec<String> = repos.iter().map(|r| normalize_repo(r)).collect();
            let mut out = Vec::new();
            for svc in matching(app, &repos, (&base, None), false).await? {
                if open {
                    let id = preview_up(
                        app,
                        &svc,
                        number,
                        (&head_url, &head_branch, head_sha.as_deref()),
                        provider,
                    )
                    .await?;
                    out.push(json!({"service": svc.name, "preview": number, "deployment": id}));
                } else {
                    preview_down(app, &svc, number).await?;
                    out.push(json!({"service": svc.name, "preview": number, "removed": true}));
                }
            }
            json!({"previews": out})
        }
    };
    Ok((StatusCode::ACCEPTED, Json(out)))
}

/// Services whose git source is one of `repos` at `branch` (or at the repository's
/// default branch when the service names none): the projects' own services, and with
/// `in_environments` those of standing environments too (a staging service tracking
/// `develop`); never a preview's.
async fn matching(
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
    Ok(app
        .store
        .environments(&svc.project)
        .await?
        .into_iter()
        .find(|e| e.name == preview_name(number)))
}

async fn preview_up(
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
    let existing = app
        .store
        .services(&svc.project)
        .await?
        .into_iter()
        .find(|s| s.environment.as_ref() == Some(&env.id) && s.name == svc.name);
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
async fn deploy_at(
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

async fn preview_down(app: &App, svc: &Service, number: u64) -> Result<(), ApiError> {
    let Some(env) = preview_env(app, svc, number).await? else {
        return Ok(());
    };
    crate::environments::tear_down(app, &env).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_urls_normalize_to_one_form() {
        for u in [
            "https://github.com/Acme/Shop.git",
            "git@github.com:acme/shop.git",
            "ssh://git@github.com/acme/shop",
            "https://github.com/acme/shop/",
        ] {
            assert_eq!(normalize_repo(u), "github.com/acme/shop", "{u}");
        }
        assert_ne!(
            normalize_repo("https://github.com/acme/shop"),
            normalize_repo("https://github.com/acme/shop2")
        );
    }

    #[test]
    fn github_signatures_check_the_whole_body() {
        // The example from GitHub's docs: secret "It's a Secret to Everybody",
        // payload "Hello, World!".
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(github_signature_ok(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            sig
        ));
        assert!(!github_signature_ok(
            b"It's a Secret to Everybody",
            b"Hello, World?",
            sig
        ));
        assert!(!github_signature_ok(
            b"another secret",
            b"Hello, World!",
            sig
        ));
        assert!(!github_signature_ok(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            "sha1=00"
        ));
    }
}
