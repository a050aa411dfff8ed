//! Webhooks end to end on the real components: `wharf serve` on the Docker engine
//! with Caddy in front, a git repository served over HTTP on loopback (git's "dumb"
//! protocol, from python3's static file server), and signed GitHub deliveries:
//! - a push deploys the pushed commit, and a second push redeploys (that commit,
//!   not a later one on the branch);
//! - a pull request opened against it brings up a preview at
//!   `pr-<n>.<service>.<project>.<base domain>` with the PR branch's code, beside the
//!   standing service;
//! - closing it tears the preview down: its route answers 404 and its containers are
//!   gone, while the standing service keeps serving.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use common::*;
use wharf_testkit::{bare_clone, git, python_present, unique, write_hello_app, StaticServer};

const SECRET: &str = "e2e-webhook-secret";

struct Forge {
    work: std::path::PathBuf,
    bare: std::path::PathBuf,
    url: String,
    _http: StaticServer,
}

impl Forge {
    /// A work tree with the app at `v1` on `main`, pushed to a bare repository served
    /// at `http://127.0.0.1:<port>/app.git`.
    async fn start(root: &Path) -> Forge {
        let work = root.join("work");
        let srv = root.join("srv");
        std::fs::create_dir_all(&srv).unwrap();
        write_hello_app(&work, "0.0.0.0", "v1");
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", "v1"]);
        let bare = srv.join("app.git");
        bare_clone(&work, &bare);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        let http = StaticServer::start(&srv).expect("python3 serves the repositories");
        Forge {
            work,
            bare,
            url: format!("{}/app.git", http.base()),
            _http: http,
        }
    }

    /// Commits `version` on `branch` (created from main when new) and pushes it;
    /// returns the commit's sha.
    fn push(&self, branch: &str, version: &str) -> String {
        let exists = Command::new("git")
            .args(["rev-parse", "--verify", "-q", branch])
            .current_dir(&self.work)
            .output()
            .unwrap()
            .status
            .success();
        if exists {
            git(&self.work, &["checkout", "-q", branch]);
        } else {
            git(&self.work, &["checkout", "-q", "-b", branch]);
        }
        std::fs::write(self.work.join("version.txt"), format!("{version}\n")).unwrap();
        git(&self.work, &["commit", "-q", "-am", version]);
        git(&self.work, &["push", "-q", "origin", branch]);
        git(&self.bare, &["update-server-info"]);
        let sha = git(&self.work, &["rev-parse", "HEAD"]);
        git(&self.work, &["checkout", "-q", "main"]);
        sha
    }

    fn repository(&self) -> Value {
        json!({"clone_url": self.url, "default_branch": "main", "full_name": "e2e/app"})
    }
}

/// Signs and sends GitHub deliveries to a server, and waits for what they started.
struct Api<'a> {
    server: &'a Server,
    http: reqwest::Client,
}

impl Api<'_> {
    /// A GitHub delivery, signed as GitHub signs it.
    async fn github(&self, event: &str, body: &Value) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        let sig = wharf_server::webhooks::github_signature(SECRET.as_bytes(), &bytes);
        let r = self
            .http
            .post(format!("{}/hooks/github", self.server.api))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", uuid::Uuid::new_v4().to_string())
            .header("x-hub-signature-256", sig)
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Waits for a deployment to end; returns it.
    async fn settle(&self, id: &str) -> Value {
        for _ in 0..1200 {
            let (status, dep) = self
                .server
                .call(
                    reqwest::Method::GET,
                    &format!("/deployments/{id}"),
                    json!(null),
                )
                .await;
            assert_eq!(status, 200, "{dep}");
            let state = dep["state"]["state"].as_str().unwrap_or("").to_owned();
            if ["live", "failed", "cancelled", "superseded", "retired"].contains(&state.as_str()) {
                return dep;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("deployment {id} did not end");
    }
}

fn one_deployment(resp: &Value, key: &str) -> String {
    let list = resp[key].as_array().unwrap_or_else(|| panic!("{resp}"));
    assert_eq!(list.len(), 1, "{resp}");
    list[0]["deployment"].as_str().unwrap().to_owned()
}

fn containers_of(service_id: &str) -> String {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=wharf.service={service_id}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn github_push_and_pull_request_deploy_through_docker_and_caddy() {
    if !python_present() {
        return;
    }
    let Some(caddy) = docker_and_caddy().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let forge = Forge::start(tmp.path()).await;
    let project = unique("hook");

    let mut server =
        Server::start_on_docker(tmp.path(), &caddy, &[("WHARF_WEBHOOK_SECRET", SECRET)]);
    server.wait_ready(tmp.path()).await;
    let api = Api {
        server: &server,
        http: reqwest::Client::new(),
    };
    let (status, body) = server
        .call(reqwest::Method::POST, "/projects", json!({"name": project}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .call(
            reqwest::Method::PUT,
            &format!("/projects/{project}/services/web"),
            json!({"source": {"git": {"url": forge.url, "ref": "main"}}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let host = format!("web.{project}.localhost");
    assert_eq!(server.get(&host).await.0, 404, "routed before any deploy");

    // A push to main deploys main.
    let sha = git(&forge.work, &["rev-parse", "HEAD"]);
    let push = |after: &str| {
        json!({
            "ref": "refs/heads/main",
            "before": "0000000000000000000000000000000000000000",
            "after": after,
            "repository": forge.repository(),
        })
    };
    let (status, resp) = api.github("push", &push(&sha)).await;
    assert_eq!(status, 202, "{resp}");
    let dep = api.settle(&one_deployment(&resp, "deployments")).await;
    assert_eq!(dep["state"]["state"], "live", "{dep}");
    assert_eq!(server.get(&host).await, (200, "hello from v1\n".into()));

    // A push to another branch deploys nothing.
    forge.push("elsewhere", "v9");
    let other =
        json!({"ref": "refs/heads/elsewhere", "after": sha, "repository": forge.repository()});
    let (status, resp) = api.github("push", &other).await;
    assert_eq!(status, 202, "{resp}");
    assert_eq!(resp["deployments"], json!([]), "{resp}");

    // The next push to main redeploys with exactly the pushed commit, even when the
    // branch has moved on by the time the deployment fetches it.
    let sha2 = forge.push("main", "v2");
    forge.push("main", "v2-later");
    let (status, resp) = api.github("push", &push(&sha2)).await;
    assert_eq!(status, 202, "{resp}");
    let dep = api.settle(&one_deployment(&resp, "deployments")).await;
    assert_eq!(dep["state"]["state"], "live", "{dep}");
    assert_eq!(server.get(&host).await, (200, "hello from v2\n".into()));

    // A pull request from `feature` into main: a preview of its own.
    let head = forge.push("feature", "v3-preview");
    forge.push("feature", "v3-later");
    let pr = |action: &str| {
        json!({
            "action": action,
            "number": 7,
            "pull_request": {
                "base": {"ref": "main"},
                "head": {"ref": "feature", "sha": head, "repo": {"clone_url": forge.url}},
            },
            "repository": forge.repository(),
        })
    };
    let (status, resp) = api.github("pull_request", &pr("opened")).await;
    assert_eq!(status, 202, "{resp}");
    let dep = api.settle(&one_deployment(&resp, "previews")).await;
    assert_eq!(dep["state"]["state"], "live", "{dep}");
    let preview_service = dep["service"].as_str().unwrap().to_owned();
    let preview_host = format!("pr-7.{host}");
    assert_eq!(
        server.get(&preview_host).await,
        (200, "hello from v3-preview\n".into())
    );
    assert_eq!(server.get(&host).await, (200, "hello from v2\n".into()));
    assert!(!containers_of(&preview_service).is_empty());

    // Closed: the preview and everything it created are gone; main still serves.
    let (status, resp) = api.github("pull_request", &pr("closed")).await;
    assert_eq!(status, 202, "{resp}");
    assert_eq!(resp["previews"][0]["removed"], true, "{resp}");
    assert_eq!(server.get(&preview_host).await.0, 404);
    assert_eq!(
        containers_of(&preview_service),
        "",
        "preview containers left"
    );
    assert_eq!(server.get(&host).await, (200, "hello from v2\n".into()));

    // Clean up the standing service (its containers and route) with the project.
    assert_eq!(server.delete(&format!("/projects/{project}")).await, 204);
    assert_eq!(server.get(&host).await.0, 404);
    drop(server);
}
