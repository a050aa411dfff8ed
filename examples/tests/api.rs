//! The HTTP API over real HTTP on loopback, with the in-memory backends: auth and
//! roles, uploads, events, secrets, rollback and errors.

mod common;
mod inproc;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use wharf_core::memory::{MemoryRouter, MemoryRuntime};
use wharf_core::store::MemoryStore;
use wharf_core::*;
use wharf_server::api;
use wharf_server::auth::{Role, Tokens};
use wharf_server::client;

use wharf_testkit::git;

/// The API path of the service `web` of the project `shop` (see [`shop`]).
const WEB: &str = "/v1/projects/shop/services/web";

struct Server {
    base: String,
    admin: String,
    store: Arc<MemoryStore>,
    tokens: Arc<Tokens>,
    router: Arc<MemoryRouter>,
    runtime: Arc<MemoryRuntime>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn server() -> Server {
    server_with(None).await
}

/// A server with the project `shop` and its service `web` (see [`Server::project`]).
async fn shop() -> Server {
    let s = server().await;
    s.project("shop").await;
    s
}

async fn server_with(webhook_secret: Option<&str>) -> Server {
    let m = inproc::memory_app(webhook_secret);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = m.app;
    tokio::spawn(async move { axum::serve(listener, api::router(app)).await });
    Server {
        base,
        admin: m.admin,
        store: m.store,
        tokens: m.tokens,
        router: m.router,
        runtime: m.runtime,
        http: reqwest::Client::new(),
        _dir: m.dir,
    }
}

impl Server {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn admin_call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(method, path, Some(&self.admin), body).await;
        assert!(status < 300, "{path}: {status} {body}");
        body
    }

    async fn project(&self, name: &str) {
        self.admin_call(Method::POST, "/v1/projects", Some(json!({"name": name})))
            .await;
        self.admin_call(
            Method::PUT,
            &format!("/v1/projects/{name}/services/web"),
            Some(json!({})),
        )
        .await;
    }

    fn app_archive(&self, body: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), body).unwrap();
        client::pack(dir.path()).unwrap()
    }

    async fn upload(&self, project: &str, token: &str, archive: Vec<u8>) -> (u16, Value) {
        let resp = self
            .http
            .post(format!(
                "{}/v1/projects/{project}/services/web/deployments",
                self.base
            ))
            .bearer_auth(token)
            .header("content-type", "application/gzip")
            .body(archive)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// A new token `name` holding `role` in `project` (and nothing else).
    fn token(&self, name: &str, project: &str, role: Role) -> String {
        let roles = BTreeMap::from([(project.to_owned(), role)]);
        self.tokens.create(name, false, roles).unwrap()
    }

    /// [`Server::call`] with the operator's token.
    async fn as_admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(&self.admin), body).await
    }

    /// [`Server::as_admin`], which must answer `want`; the body.
    async fn admin_expect(
        &self,
        want: u16,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let (status, b) = self.as_admin(method.clone(), path, body).await;
        assert_eq!(status, want, "{method} {path}: {b}");
        b
    }

    /// Uploads an app whose `app.py` is `app_py` to `project`'s `web` as the operator,
    /// and follows its deployment to the end: its events.
    async fn deploy_app(&self, project: &str, app_py: &str) -> Vec<(u64, Value)> {
        let (_, dep) = self
            .upload(project, &self.admin, self.app_archive(app_py))
            .await;
        self.events_of(&dep).await
    }

    /// [`Server::events`] of the deployment `dep` shows, from the start.
    async fn events_of(&self, dep: &Value) -> Vec<(u64, Value)> {
        self.events(dep["id"].as_str().unwrap(), None).await
    }

    /// Every SSE frame of a deployment's event stream (which ends with it).
    async fn events(&self, id: &str, last_event_id: Option<u64>) -> Vec<(u64, Value)> {
        let mut req = self
            .http
            .get(format!("{}/v1/deployments/{id}/events", self.base))
            .bearer_auth(&self.admin);
        if let Some(l) = last_event_id {
            req = req.header("Last-Event-ID", l.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut text = String::new();
        let mut s = resp.bytes_stream();
        let collect = async {
            while let Some(c) = s.next().await {
                text.push_str(&String::from_utf8_lossy(&c.unwrap()));
            }
        };
        tokio::time::timeout(Duration::from_secs(30), collect)
            .await
            .expect("the event stream did not end with the deployment");
        let mut out = Vec::new();
        for frame in text.split("\n\n") {
            let mut id = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                }
                if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).ok();
                }
            }
            if let (Some(i), Some(d)) = (id, data) {
                out.push((i, d));
            }
        }
        out
    }
}

fn states(evs: &[(u64, Value)]) -> Vec<String> {
    evs.iter()
        .filter(|(_, e)| e["kind"]["kind"] == "state")
        .map(|(_, e)| e["kind"]["to"]["state"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401_with_a_json_error() {
    let s = server().await;
    let (status, body) = s.call(Method::GET, "/v1/projects", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = s
        .call(Method::GET, "/v1/projects", Some("wharf_guess"), None)
        .await;
    assert_eq!(status, 401);
    // Health and the OpenAPI document need no token.
    let (status, _) = s.call(Method::GET, "/v1/health", None, None).await;
    assert_eq!(status, 200);
    let (status, doc) = s.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(
        doc["paths"]["/v1/projects/{project}/services/{service}/deployments"]["post"].is_object()
    );
}

#[tokio::test]
async fn roles_limit_what_a_token_does_and_hide_other_projects() {
    let s = shop().await;
    s.project("blog").await;
    let viewer = s.token("v", "shop", Role::Viewer);
    let dev = s.token("d", "shop", Role::Developer);

    // Listing shows only projects the token holds a role in.
    let (_, list) = s
        .call(Method::GET, "/v1/projects", Some(&viewer), None)
        .await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shop"]);

    // Another project is absent, not forbidden; a viewer reads; a developer cannot
    // delete; only the operator creates projects.
    for (token, method, path, body, want) in [
        (&dev, Method::GET, "/v1/projects/blog", None, 404),
        (
            &viewer,
            Method::GET,
            "/v1/projects/shop/services",
            None,
            200,
        ),
        (&dev, Method::DELETE, "/v1/projects/shop", None, 403),
        (
            &dev,
            Method::POST,
            "/v1/projects",
            Some(json!({"name": "mine"})),
            403,
        ),
    ] {
        let (status, b) = s.call(method.clone(), path, Some(token), body).await;
        assert_eq!(status, want, "{method} {path}: {b}");
    }
    // Uploads: absent in another project, forbidden to a viewer, a developer deploys.
    for (project, token, want, code) in [
        ("blog", &dev, 404, None),
        ("shop", &viewer, 403, Some("forbidden")),
        ("shop", &dev, 202, None),
    ] {
        let (status, body) = s.upload(project, token, s.app_archive("print(1)\n")).await;
        assert_eq!(status, want, "{project}: {body}");
        if let Some(code) = code {
            assert_eq!(body["error"]["code"], code);
        }
    }
}

#[tokio::test]
async fn an_upload_deploys_and_events_stream_to_the_end_and_resume() {
    let s = shop().await;
    let (status, dep) = s
        .upload("shop", &s.admin, s.app_archive("print('v1')\n"))
        .await;
    assert_eq!(status, 202, "{dep}");
    let id = dep["id"].as_str().unwrap();

    let all = s.events(id, None).await;
    assert_eq!(states(&all), wharf_testkit::STATES_TO_LIVE);
    let seqs: Vec<u64> = all.iter().map(|(i, _)| *i).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "ids not increasing: {seqs:?}"
    );

    // Resuming after an event gives exactly the ones after it.
    let (cut, _) = all[all.len() / 2];
    let rest = s.events(id, Some(cut)).await;
    assert_eq!(
        rest.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        seqs.iter()
            .copied()
            .filter(|i| *i > cut)
            .collect::<Vec<_>>()
    );

    // The route serves it, and the service reports its URL and live deployment.
    assert!(s.router.resolve("web.shop.localhost", "/").is_some());
    let svc = s.admin_call(Method::GET, WEB, None).await;
    assert_eq!(svc["url"], "http://web.shop.localhost:8080");
    assert_eq!(svc["live_deployment"], id);
}

#[tokio::test]
async fn custom_domains_are_stored_and_routed_in_canonical_form() {
    let s = shop().await;
    let svc = s
        .admin_call(
            Method::PUT,
            WEB,
            Some(json!({"domains": ["Shop.Example.COM", "bücher.example"]})),
        )
        .await;
    assert_eq!(
        svc["domains"],
        json!(["shop.example.com", "xn--bcher-kva.example"])
    );
    s.deploy_app("shop", "print(1)\n").await;
    for host in [
        "web.shop.localhost",
        "shop.example.com",
        "xn--bcher-kva.example",
    ] {
        assert!(s.router.resolve(host, "/").is_some(), "{host} not routed");
    }
    // Another service cannot take a proven domain, and a refused PUT stores nothing.
    s.admin_expect(
        409,
        Method::PUT,
        "/v1/projects/shop/services/other",
        Some(json!({"domains": ["SHOP.example.com"]})),
    )
    .await;
    let (status, _) = s
        .as_admin(Method::GET, "/v1/projects/shop/services/other", None)
        .await;
    assert_eq!(status, 404, "the refused service was created anyway");
}

#[tokio::test]
async fn secrets_are_write_only() {
    let s = shop().await;
    let env = s
        .admin_call(
            Method::PUT,
            &format!("{WEB}/env"),
            Some(json!({"DATABASE_URL": {"secret": "postgres://u:hunter2@db/x"}, "MODE": "prod"})),
        )
        .await;
    assert_eq!(env["MODE"], "prod");
    assert_eq!(env["DATABASE_URL"], json!({"secret": true}));
    let svc = s.admin_call(Method::GET, WEB, None).await;
    assert!(!svc.to_string().contains("hunter2"), "secret leaked: {svc}");
    // null removes.
    let env = s
        .admin_call(
            Method::PUT,
            &format!("{WEB}/env"),
            Some(json!({"MODE": null})),
        )
        .await;
    assert!(env.get("MODE").is_none());
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let s = shop().await;
    for (path, body, code) in [
        (
            "/v1/projects",
            json!({"name": "Bad Name!"}),
            "invalid_input",
        ),
        ("/v1/projects", json!({"name": "shop"}), "conflict"),
    ] {
        let (status, b) = s.as_admin(Method::POST, path, Some(body)).await;
        assert_eq!(b["error"]["code"], code, "{path}: {status} {b}");
    }
    for body in [
        json!({"env": {"1BAD": "x"}}),
        json!({"source": {"dir": "/etc"}}),
        json!({"source": {"git": {"url": "file:///etc"}}}),
        json!({"source": {"git": {"url": "https://example.invalid/r.git", "subdir": "../.."}}}),
        json!({"domains": ["bad`host.example.com"]}),
    ] {
        let (status, b) = s.as_admin(Method::PUT, WEB, Some(body.clone())).await;
        assert!(
            (400..500).contains(&status) && b["error"]["code"].is_string(),
            "{body}: {status} {b}"
        );
    }
    // An empty upload and a service without any source are refused.
    let (status, b) = s.upload("shop", &s.admin, Vec::new()).await;
    assert_eq!(status, 400, "{b}");
    s.admin_expect(
        400,
        Method::POST,
        &format!("{WEB}/deployments"),
        Some(json!({})),
    )
    .await;
    // A broken archive fails the deployment at fetch, with the reason.
    let (status, dep) = s.upload("shop", &s.admin, b"not a tarball".to_vec()).await;
    assert_eq!(status, 202);
    let evs = s.events_of(&dep).await;
    assert_eq!(states(&evs).last().map(String::as_str), Some("failed"));
}

#[tokio::test]
async fn rollback_reactivates_the_previous_release() {
    let s = shop().await;
    for v in ["v1", "v2"] {
        // Each release runs with its own env, a secret among it.
        s.admin_call(
            Method::PUT,
            &format!("{WEB}/env"),
            Some(json!({"MODE": v, "TOKEN": {"secret": format!("tok-{v}")}})),
        )
        .await;
        let evs = s.deploy_app("shop", &format!("print('{v}')\n")).await;
        assert_eq!(states(&evs).last().map(String::as_str), Some("live"));
    }
    let releases = s
        .admin_call(Method::GET, &format!("{WEB}/releases"), None)
        .await;
    assert_eq!(releases.as_array().unwrap().len(), 2);
    let dep = s
        .admin_call(Method::POST, &format!("{WEB}/rollback"), Some(json!({})))
        .await;
    let evs = s.events_of(&dep).await;
    assert_eq!(states(&evs).last().map(String::as_str), Some("live"));
    let dep = s
        .admin_call(
            Method::GET,
            &format!("/v1/deployments/{}", dep["id"].as_str().unwrap()),
            None,
        )
        .await;
    let v1 = releases
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["number"] == 1)
        .unwrap();
    assert_eq!(
        dep["artifact"], v1["artifact"],
        "rolled back to another artifact"
    );
    // ...and with v1's env, not the service's current one.
    let up = s.router.resolve("web.shop.localhost", "/").unwrap();
    let inst = s
        .runtime
        .instances()
        .into_iter()
        .find(|i| i.endpoint == up)
        .unwrap();
    let env = s.runtime.spec(&inst.id).unwrap().env;
    assert_eq!(
        (env["MODE"].as_str(), env["TOKEN"].as_str()),
        ("v1", "tok-v1")
    );
    // The releases listing shows the snapshot's keys, never a secret's value.
    assert_eq!(v1["config"]["env"]["MODE"], "v1");
    assert_eq!(v1["config"]["env"]["TOKEN"], json!({"secret": true}));
    assert!(!releases.to_string().contains("tok-v"), "{releases}");
}

#[tokio::test]
async fn deleting_a_service_takes_it_off_the_air() {
    let s = shop().await;
    s.deploy_app("shop", "print(1)\n").await;
    assert!(s.router.resolve("web.shop.localhost", "/").is_some());
    assert_eq!(s.runtime.instances().len(), 1);

    s.admin_expect(204, Method::DELETE, WEB, None).await;
    assert!(s.router.resolve("web.shop.localhost", "/").is_none());
    assert!(
        s.runtime.instances().is_empty(),
        "an instance outlived its service"
    );
    s.admin_expect(404, Method::GET, WEB, None).await;
}

// ---- webhooks ----

const HOOK_SECRET: &str = "a-webhook-secret-of-some-length";

/// A repository with `main` and `feature` branches, and a service built from `main`.
async fn repo_and_service(s: &Server) -> (tempfile::TempDir, String) {
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(repo.path().join("app.py"), "print('main')\n").unwrap();
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "one"]);
    git(repo.path(), &["checkout", "-q", "-b", "feature"]);
    std::fs::write(repo.path().join("app.py"), "print('feature')\n").unwrap();
    git(repo.path(), &["commit", "-q", "-am", "two"]);
    git(repo.path(), &["checkout", "-q", "main"]);
    let url = format!("file://{}", repo.path().display());
    let project = Project::new("shop").unwrap();
    s.store.put_project(&project).await.unwrap();
    let svc = Service::new(
        &project.id,
        "web",
        SourceSpec::Git {
            url: url.clone(),
            reference: GitRef::Branch("main".into()),
            subdir: None,
        },
    )
    .unwrap();
    s.store.put_service(&svc).await.unwrap();
    (repo, url)
}

fn sign(body: &[u8]) -> String {
    wharf_server::webhooks::github_signature(HOOK_SECRET.as_bytes(), body)
}

impl Server {
    async fn hook(&self, path: &str, headers: &[(&str, String)], body: &Value) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn github(&self, event: &str, delivery: &str, body: &Value) -> (u16, Value) {
        let raw = serde_json::to_vec(body).unwrap();
        self.hook(
            "/hooks/github",
            &[
                ("x-github-event", event.into()),
                ("x-github-delivery", delivery.into()),
                ("x-hub-signature-256", sign(&raw)),
            ],
            body,
        )
        .await
    }

    async fn settle(&self, id: &str) -> String {
        let evs = self.events(id, None).await;
        states(&evs).last().cloned().unwrap_or_default()
    }
}

#[tokio::test]
async fn webhooks_refuse_unsigned_wrongly_signed_and_replayed_deliveries() {
    let s = server_with(Some(HOOK_SECRET)).await;
    let (_repo, url) = repo_and_service(&s).await;
    let push = json!({"ref": "refs/heads/main", "after": "abc", "repository": {"clone_url": url}});

    let (status, b) = s
        .hook(
            "/hooks/github",
            &[
                ("x-github-event", "push".into()),
                ("x-github-delivery", "d0".into()),
            ],
            &push,
        )
        .await;
    assert_eq!(
        (status, b["error"]["code"].as_str()),
        (401, Some("unsigned"))
    );
    let (status, _) = s
        .hook(
            "/hooks/github",
            &[
                ("x-github-event", "push".into()),
                ("x-github-delivery", "d1".into()),
                ("x-hub-signature-256", format!("sha256={}", "00".repeat(32))),
            ],
            &push,
        )
        .await;
    assert_eq!(status, 401);
    // Signed over another body: refused.
    let other = sign(b"{}");
    let (status, _) = s
        .hook(
            "/hooks/github",
            &[
                ("x-github-event", "push".into()),
                ("x-github-delivery", "d2".into()),
                ("x-hub-signature-256", other),
            ],
            &push,
        )
        .await;
    assert_eq!(status, 401);
    // Nothing was deployed by any of those.
    let deps = s
        .admin_call(Method::GET, &format!("{WEB}/deployments"), None)
        .await;
    assert!(deps.as_array().unwrap().is_empty());

    let (status, b) = s.github("push", "d3", &push).await;
    assert_eq!(status, 202, "{b}");
    let id = b["deployments"][0]["deployment"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(s.settle(&id).await, "live");
    let (status, b) = s.github("push", "d3", &push).await;
    assert_eq!(
        (status, b["error"]["code"].as_str()),
        (409, Some("replayed"))
    );

    // A push to another branch or repository deploys nothing.
    let (_, b) = s
        .github(
            "push",
            "d4",
            &json!({"ref": "refs/heads/other", "after": "x", "repository": {"clone_url": url}}),
        )
        .await;
    assert_eq!(b["deployments"], json!([]));

    // Without a configured secret, webhooks are off.
    let off = server().await;
    let (status, _) = off.github("push", "d5", &push).await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn pull_requests_get_a_preview_that_closing_tears_down() {
    let s = server_with(Some(HOOK_SECRET)).await;
    let (_repo, url) = repo_and_service(&s).await;
    let pr = |action: &str| {
        json!({
            "action": action,
            "number": 7,
            "pull_request": {"base": {"ref": "main"}, "head": {"ref": "feature", "repo": {"clone_url": url}}},
            "repository": {"clone_url": url}
        })
    };
    let (status, b) = s.github("pull_request", "p1", &pr("opened")).await;
    assert_eq!(status, 202, "{b}");
    let id = b["previews"][0]["deployment"].as_str().unwrap().to_owned();
    assert_eq!(s.settle(&id).await, "live");
    assert!(s.router.resolve("pr-7.web.shop.localhost", "/").is_some());
    assert!(
        s.router.resolve("web.shop.localhost", "/").is_none(),
        "the standing service was deployed"
    );
    let dep = s
        .admin_call(Method::GET, &format!("/v1/deployments/{id}"), None)
        .await;
    assert!(
        dep["source"].to_string().contains("\"feature\""),
        "not built from the PR branch: {dep}"
    );

    // An update redeploys the same preview.
    let (_, b) = s.github("pull_request", "p2", &pr("synchronize")).await;
    let id2 = b["previews"][0]["deployment"].as_str().unwrap().to_owned();
    assert_eq!(s.settle(&id2).await, "live");
    assert_eq!(
        s.runtime.instances().len(),
        1,
        "the old preview instance was not retired"
    );

    let (status, _) = s.github("pull_request", "p3", &pr("closed")).await;
    assert_eq!(status, 202);
    assert!(s.router.resolve("pr-7.web.shop.localhost", "/").is_none());
    assert!(s.runtime.instances().is_empty());
    let project = s.store.projects().await.unwrap().remove(0);
    assert!(s.store.environments(&project.id).await.unwrap().is_empty());
    assert_eq!(s.store.services(&project.id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn gitlab_pushes_need_the_token() {
    let s = server_with(Some(HOOK_SECRET)).await;
    let (_repo, url) = repo_and_service(&s).await;
    let push = json!({"ref": "refs/heads/main", "after": "abc1", "checkout_sha": "abc1", "project": {"git_http_url": url}});
    let headers = |token: &str, id: &str| {
        vec![
            ("x-gitlab-event", "Push Hook".to_string()),
            ("x-gitlab-event-uuid", id.to_string()),
            ("x-gitlab-token", token.to_string()),
        ]
    };
    let (status, _) = s
        .hook(
            "/hooks/gitlab",
            &headers("wrong-token-wrong-token", "g1"),
            &push,
        )
        .await;
    assert_eq!(status, 401);
    let (status, b) = s
        .hook("/hooks/gitlab", &headers(HOOK_SECRET, "g2"), &push)
        .await;
    assert_eq!(status, 202, "{b}");
    let id = b["deployments"][0]["deployment"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(s.settle(&id).await, "live");
}

#[tokio::test]
async fn service_logs_are_guarded_like_the_other_service_routes() {
    let s = shop().await;
    s.project("blog").await;
    let viewer = s.token("v", "shop", Role::Viewer);
    let outsider = s.token("o", "blog", Role::Owner);
    let path = &format!("{WEB}/logs?tail=10");
    let get = Method::GET;

    // Nothing is live yet: a clear 404.
    let (status, body) = s.call(get.clone(), path, Some(&s.admin), None).await;
    assert_eq!(status, 404, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("no live instance"), "{msg}");

    let (status, dep) = s
        .upload("shop", &s.admin, s.app_archive("print('v1')\n"))
        .await;
    assert_eq!(status, 202, "{dep}");
    assert_eq!(
        states(&s.events_of(&dep).await).last(),
        Some(&"live".to_owned())
    );

    // A viewer reads them as server-sent events; the stream ends without follow.
    let resp = s
        .http
        .get(format!("{}{path}", s.base))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    tokio::time::timeout(Duration::from_secs(30), resp.text())
        .await
        .expect("without follow the stream ends")
        .unwrap();

    // No token: 401; another project's token: the project is not revealed.
    assert_eq!(s.call(get.clone(), path, None, None).await.0, 401);
    assert_eq!(
        s.call(get.clone(), path, Some(&outsider), None).await.0,
        404
    );
    // A bad query is an API error like any other.
    let (status, body) = s
        .call(get, &format!("{WEB}/logs?tail=lots"), Some(&viewer), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_input"))
    );
}

#[tokio::test]
async fn standing_environments_have_their_own_services_env_and_hostnames() {
    let s = shop().await;
    let post = Method::POST;
    let (status, env) = s
        .call(
            post.clone(),
            "/v1/projects/shop/environments",
            Some(&s.admin),
            Some(json!({"name": "staging", "env": {"MODE": "staging", "KEY": {"secret": "s3"}}})),
        )
        .await;
    assert_eq!(status, 201, "{env}");
    assert_eq!(
        env["env"],
        json!({"MODE": "staging", "KEY": {"secret": true}})
    );
    for (body, code) in [
        (json!({"name": "staging"}), 409),
        (json!({"name": "pr-3"}), 400),
        (json!({"name": "Bad Name"}), 400),
        (json!({}), 400),
    ] {
        let (status, err) = s
            .call(
                post.clone(),
                "/v1/projects/shop/environments",
                Some(&s.admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, code, "{body}: {err}");
    }

    // A service of the same name in the environment is another service.
    let base = "/v1/projects/shop/environments/staging/services/web";
    let svc = s
        .admin_expect(201, Method::PUT, base, Some(json!({})))
        .await;
    assert_eq!(svc["url"], "http://web.staging.shop.localhost:8080");
    assert_eq!(svc["environment_name"], "staging");
    let resp = s
        .http
        .post(format!("{}{base}/deployments", s.base))
        .bearer_auth(&s.admin)
        .header("content-type", "application/gzip")
        .body(s.app_archive("print('staging')\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let dep: Value = resp.json().await.unwrap();
    let evs = s.events_of(&dep).await;
    assert_eq!(states(&evs).last().map(String::as_str), Some("live"));
    let up = s
        .router
        .resolve("web.staging.shop.localhost", "/")
        .expect("staging routed");
    let inst = s
        .runtime
        .instances()
        .into_iter()
        .find(|i| i.endpoint == up)
        .expect("the routed instance runs");
    let spec = s.runtime.spec(&inst.id).unwrap();
    assert_eq!(spec.env["MODE"], "staging");
    assert_eq!(spec.env["KEY"], "s3");
    assert_eq!(spec.network.as_deref(), Some("wharf-shop_staging"));
    // The project's own web is untouched: never deployed, not routed.
    assert!(s.router.resolve("web.shop.localhost", "/").is_none());
    let own = s.admin_expect(200, Method::GET, WEB, None).await;
    assert_eq!(own["live_deployment"], Value::Null);

    let list = s
        .admin_call(Method::GET, "/v1/projects/shop/environments", None)
        .await;
    assert_eq!(list[0]["name"], "staging");
    assert_eq!(list[0]["kind"]["kind"], "standing");
    assert_eq!(list[0]["services"], json!(["web"]));
    s.admin_expect(
        404,
        Method::GET,
        "/v1/projects/shop/environments/nope/services/web",
        None,
    )
    .await;
    let (status, _) = s
        .as_admin(
            Method::PUT,
            "/v1/projects/shop/services/pr-12",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 400, "pr-<n> names are the previews'");

    // Deleting the environment takes its services off the air, and only them.
    s.admin_expect(
        204,
        Method::DELETE,
        "/v1/projects/shop/environments/staging",
        None,
    )
    .await;
    assert!(s
        .router
        .resolve("web.staging.shop.localhost", "/")
        .is_none());
    assert!(s.runtime.instances().is_empty());
    s.admin_expect(404, Method::GET, base, None).await;
    s.admin_expect(200, Method::GET, WEB, None).await;
}

#[tokio::test]
async fn a_push_deploys_standing_environment_services_on_their_branch_but_never_previews() {
    let s = server_with(Some(HOOK_SECRET)).await;
    let (_repo, url) = repo_and_service(&s).await;
    let project = s.store.projects().await.unwrap().remove(0);
    let staging = Environment {
        id: EnvironmentId::random(),
        project: project.id.clone(),
        name: "staging".into(),
        kind: EnvironmentKind::Standing,
        env: Default::default(),
        created_at: Timestamp::now(),
    };
    s.store.put_environment(&staging).await.unwrap();
    let preview = Environment {
        id: EnvironmentId::random(),
        name: "pr-3".into(),
        kind: EnvironmentKind::Preview {
            number: 3,
            branch: "feature".into(),
            fork: None,
        },
        ..staging.clone()
    };
    s.store.put_environment(&preview).await.unwrap();
    // A staging web and a preview web, both tracking `feature`.
    for env in [&staging, &preview] {
        let mut svc = Service::new(
            &project.id,
            "web",
            SourceSpec::Git {
                url: url.clone(),
                reference: GitRef::Branch("feature".into()),
                subdir: None,
            },
        )
        .unwrap();
        svc.environment = Some(env.id.clone());
        s.store.put_service(&svc).await.unwrap();
    }
    let push =
        json!({"ref": "refs/heads/feature", "after": "abc", "repository": {"clone_url": url}});
    let (status, b) = s.github("push", "e1", &push).await;
    assert_eq!(status, 202, "{b}");
    let started = b["deployments"].as_array().unwrap();
    assert_eq!(started.len(), 1, "only staging's web: {b}");
    let id = started[0]["deployment"].as_str().unwrap().to_owned();
    assert_eq!(s.settle(&id).await, "live");
    assert!(s
        .router
        .resolve("web.staging.shop.localhost", "/")
        .is_some());
    assert!(s.router.resolve("pr-3.web.shop.localhost", "/").is_none());
    assert!(s.router.resolve("web.shop.localhost", "/").is_none());
}

/// Uploads are removed once nothing needs them: after three deployments, only the
/// service's current source is left on disk.
#[tokio::test]
async fn old_uploads_are_removed() {
    let s = shop().await;
    for v in ["v1", "v2", "v3"] {
        let archive = s.app_archive(&format!("print('{v}')\n"));
        let (status, dep) = s.upload("shop", &s.admin, archive).await;
        assert_eq!(status, 202, "{dep}");
        assert_eq!(s.settle(dep["id"].as_str().unwrap()).await, "live");
    }
    let uploads = s._dir.path().join("uploads");
    let files: Vec<_> = std::fs::read_dir(&uploads)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    // It is the one the service deploys from: a deploy without a body still works.
    let (status, dep) = s
        .call(
            Method::POST,
            &format!("{WEB}/deployments"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, 202, "{dep}");
    assert_eq!(s.settle(dep["id"].as_str().unwrap()).await, "live");
}
