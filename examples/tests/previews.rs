//! Pull request previews and per-project webhook secrets, as an attacker would try
//! them: a fork's code never gets the project's or the service's secrets unless an
//! owner approves its commit; only requests into the service's branch make previews;
//! a delivery names no local repository; one project's webhook secret moves nothing
//! of another project.
//!
//! The repositories are real: bare repositories served over git's "dumb" HTTP
//! protocol by python3's static file server on loopback (a base and a fork).

mod inproc;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::{json, Value};
use wharf_core::*;
use wharf_server::auth::Role;
use wharf_testkit::{bare_clone, git, git_present, StaticServer};

/// The API in process with handles on its store and runtime.
struct Hub {
    m: inproc::MemoryApp,
    router: axum::Router,
}

impl Hub {
    fn new() -> Hub {
        Hub::isolated(true)
    }

    /// A hub whose apps run in containers (`true`) or as host processes.
    fn isolated(isolated: bool) -> Hub {
        let mut m = inproc::memory_app(None);
        m.app.isolated = isolated;
        let router = wharf_server::api::router(m.app.clone());
        Hub { m, router }
    }

    async fn send(&self, req: Request<Body>) -> (u16, Value) {
        inproc::send(&self.router, req).await
    }

    /// A token holding `role` in project shop.
    fn token(&self, role: Role) -> String {
        let roles = BTreeMap::from([("shop".into(), role)]);
        self.m.tokens.create("t", false, roles).unwrap()
    }

    /// `POST path` as `token` with `body`: the status.
    async fn post_as(&self, token: &str, path: &str, body: Value) -> u16 {
        self.call(Method::POST, path, token, body).await.0
    }

    async fn call(&self, method: Method, path: &str, token: &str, body: Value) -> (u16, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(req).await
    }

    async fn admin(&self, method: Method, path: &str, body: Value) -> Value {
        let (status, b) = self.call(method, path, &self.m.admin, body).await;
        assert!(status < 300, "{path}: {status} {b}");
        b
    }

    /// A GitHub delivery signed with `secret`.
    async fn github(&self, secret: &str, event: &str, body: &Value) -> (u16, Value) {
        let raw = serde_json::to_vec(body).unwrap();
        let sig = wharf_server::webhooks::github_signature(secret.as_bytes(), &raw);
        let req = Request::builder()
            .method(Method::POST)
            .uri("/hooks/github")
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", testkit_unique())
            .header("x-hub-signature-256", sig)
            .body(Body::from(raw))
            .unwrap();
        self.send(req).await
    }

    /// A GitLab delivery carrying `token`.
    async fn gitlab(&self, token: &str, event: &str, body: &Value) -> (u16, Value) {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/hooks/gitlab")
            .header("content-type", "application/json")
            .header("x-gitlab-event", event)
            .header("x-gitlab-event-uuid", testkit_unique())
            .header("x-gitlab-token", token)
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(req).await
    }

    /// A pull request `number` into `main`, opened, from `head` (url, branch, commit).
    async fn opened(
        &self,
        secret: &str,
        repos: &Repos,
        number: u64,
        head: (&str, &str, &str),
    ) -> (u16, Value) {
        let body = pr(repos, "opened", number, head, "main");
        self.github(secret, "pull_request", &body).await
    }

    /// Project `name`'s environments, and its services that live in one.
    async fn previews_of(&self, name: &str) -> (Vec<String>, Vec<String>) {
        let store = &self.m.store;
        let project = store.project_by_name(name).await.unwrap();
        let envs = store.environments(&project.id).await.unwrap();
        let services = store.services(&project.id).await.unwrap();
        (
            envs.into_iter().map(|e| e.name).collect(),
            services
                .into_iter()
                .filter(|s| s.environment.is_some())
                .map(|s| s.name)
                .collect(),
        )
    }

    /// Waits until deployment `id` ends; its state.
    async fn settle(&self, id: &str) -> Deployment {
        let id = DeploymentId(id.to_owned());
        for _ in 0..600 {
            let d = self.m.store.deployment(&id).await.unwrap();
            if d.state.is_terminal() || d.state == DeploymentState::Live {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("deployment {id} did not settle");
    }

    /// The env the live instance of deployment `id` runs with.
    async fn env_of(&self, id: &str) -> BTreeMap<String, String> {
        let d = self.settle(id).await;
        assert_eq!(d.state, DeploymentState::Live, "{d:?}");
        self.m
            .runtime
            .spec(&d.instance.unwrap().id)
            .unwrap()
            .env
            .into_iter()
            .collect()
    }

    /// A project `name` whose service `web` deploys `url` at `main`, with secrets
    /// at both levels and a preview env; its new webhook secret.
    async fn project(&self, name: &str, url: &str) -> String {
        self.project_at(name, url, GitRef::Branch("main".into()))
            .await
    }

    async fn project_at(&self, name: &str, url: &str, reference: GitRef) -> String {
        let mut p = Project::new(name).unwrap();
        p.env
            .insert("SHARED_SECRET".into(), EnvValue::Secret(Secret::new("s3")));
        p.env
            .insert("SHARED_PLAIN".into(), EnvValue::Plain("p".into()));
        self.m.store.put_project(&p).await.unwrap();
        let mut svc = git_service(&p.id, "web", url, reference);
        svc.env.insert(
            "DB_PASSWORD".into(),
            EnvValue::Secret(Secret::new("hunter2")),
        );
        svc.env
            .insert("MODE".into(), EnvValue::Plain("prod".into()));
        // Production's replica counts and schedule: never a preview's.
        svc.replicas.insert("web".into(), 3);
        svc.cron = vec![wharf_core::CronJob::new(
            "charge",
            "0 * * * *",
            "./charge-subscriptions",
        )];
        self.m.store.put_service(&svc).await.unwrap();
        self.admin(
            Method::PUT,
            &format!("/v1/projects/{name}/previews"),
            json!({"env": {"PREVIEW_ONLY": "yes"}}),
        )
        .await;
        let v = self
            .admin(
                Method::POST,
                &format!("/v1/projects/{name}/webhook-secret"),
                json!(null),
            )
            .await;
        v["secret"].as_str().unwrap().to_owned()
    }
}

fn testkit_unique() -> String {
    wharf_testkit::unique("delivery")
}

/// A base repository (`acme/shop.git`: `main`, `feature`) and a fork of it
/// (`mallory/shop.git` with a branch `evil`), served over HTTP; their URLs and the
/// fork's head commit.
struct Repos {
    _dir: tempfile::TempDir,
    server: StaticServer,
    work: std::path::PathBuf,
}

impl Repos {
    fn new() -> Option<Repos> {
        if !git_present() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join("app.py"), "print('main')\n").unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", "one"]);
        git(&work, &["checkout", "-q", "-b", "feature"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", "feature"]);
        git(&work, &["checkout", "-q", "main"]);
        std::fs::create_dir_all(dir.path().join("www/acme")).unwrap();
        bare_clone(&work, &dir.path().join("www/acme/shop.git"));
        let server = StaticServer::start(&dir.path().join("www"))?;
        let r = Repos {
            _dir: dir,
            server,
            work,
        };
        r.push_fork("env | grep SECRET", "evil");
        Some(r)
    }

    fn www(&self) -> std::path::PathBuf {
        self.work.parent().unwrap().join("www")
    }

    /// Commits `text` on the fork's `evil` branch and republishes the fork; the commit.
    fn push_fork(&self, text: &str, msg: &str) -> String {
        git(&self.work, &["checkout", "-q", "-B", "evil"]);
        std::fs::write(self.work.join("app.py"), format!("print('{text}')\n")).unwrap();
        git(&self.work, &["commit", "-q", "-am", msg]);
        let sha = git(&self.work, &["rev-parse", "HEAD"]);
        git(&self.work, &["checkout", "-q", "main"]);
        let fork = self.www().join("mallory/shop.git");
        let _ = std::fs::remove_dir_all(&fork);
        std::fs::create_dir_all(fork.parent().unwrap()).unwrap();
        bare_clone(&self.work, &fork);
        sha
    }

    fn base(&self) -> String {
        format!("{}/acme/shop.git", self.server.base())
    }

    fn fork(&self) -> String {
        format!("{}/mallory/shop.git", self.server.base())
    }

    fn head(&self, branch: &str) -> String {
        git(&self.work, &["rev-parse", branch])
    }
}

/// A GitHub `pull_request` delivery.
fn pr(
    repos: &Repos,
    action: &str,
    number: u64,
    (head_url, branch, sha): (&str, &str, &str),
    base: &str,
) -> Value {
    json!({
        "action": action,
        "number": number,
        "pull_request": {
            "base": {"ref": base},
            "head": {"ref": branch, "sha": sha, "repo": {"clone_url": head_url}},
        },
        "repository": {"clone_url": repos.base(), "default_branch": "main"},
    })
}

/// That a delivery's first preview was held (nothing deployed) for a reason saying `why`.
fn assert_held(b: &Value, why: &str) {
    let p = &b["previews"][0];
    assert!(p["deployment"].is_null(), "{b}");
    assert!(
        p["waiting"].as_str().is_some_and(|w| w.contains(why)),
        "{b}"
    );
}

/// A service `name` of `project` built from `url` at `reference`.
fn git_service(project: &ProjectId, name: &str, url: &str, reference: GitRef) -> Service {
    let source = SourceSpec::Git {
        url: url.to_owned(),
        reference,
        subdir: None,
    };
    Service::new(project, name, source).unwrap()
}

fn secrets_in(env: &BTreeMap<String, String>) -> Vec<&str> {
    ["DB_PASSWORD", "SHARED_SECRET"]
        .into_iter()
        .filter(|k| env.contains_key(*k))
        .collect()
}

#[tokio::test]
async fn a_forks_preview_runs_without_secrets_and_only_requests_into_the_branch_preview() {
    let Some(repos) = Repos::new() else { return };
    let hub = Hub::new();
    // The service deploys the repository's default branch.
    let secret = hub.project_at("shop", &repos.base(), GitRef::Default).await;
    let evil = repos.head("evil");

    // From the fork: deployed, without the project's or the service's secrets, with
    // the preview env and the plain variables.
    let fork = repos.fork();
    let head = (fork.as_str(), "evil", evil.as_str());
    let (status, b) = hub.opened(&secret, &repos, 7, head).await;
    assert_eq!(status, 202, "{b}");
    let id = b["previews"][0]["deployment"]
        .as_str()
        .expect("deployed")
        .to_owned();
    let env = hub.env_of(&id).await;
    assert_eq!(secrets_in(&env), Vec::<&str>::new(), "{env:?}");
    assert_eq!(env.get("MODE").map(String::as_str), Some("prod"));
    assert_eq!(env.get("SHARED_PLAIN").map(String::as_str), Some("p"));
    assert_eq!(env.get("PREVIEW_ONLY").map(String::as_str), Some("yes"));
    let d = hub.settle(&id).await;
    let preview = hub.m.store.service(&d.service).await.unwrap();
    assert!(preview.replicas.is_empty(), "{:?}", preview.replicas);
    assert!(preview.cron.is_empty(), "{:?}", preview.cron);
    assert_eq!(d.more_instances, vec![], "one web instance in a preview");
    assert!(
        format!("{:?}", d.source).contains("mallory"),
        "{:?}",
        d.source
    );
    let v = hub
        .admin(Method::GET, "/v1/projects/shop/previews", json!(null))
        .await;
    assert_eq!(
        v["previews"][0]["fork"]["repository"],
        json!(repos.fork()),
        "{v}"
    );

    // From the repository itself: the secrets, as before.
    let feature = repos.head("feature");
    let base_url = repos.base();
    let head = (base_url.as_str(), "feature", feature.as_str());
    let (_, b) = hub.opened(&secret, &repos, 8, head).await;
    let env = hub
        .env_of(b["previews"][0]["deployment"].as_str().unwrap())
        .await;
    assert_eq!(secrets_in(&env), ["DB_PASSWORD", "SHARED_SECRET"]);

    // Into another branch than the service's: no preview.
    let (status, b) = hub
        .github(
            &secret,
            "pull_request",
            &pr(&repos, "opened", 9, head, "develop"),
        )
        .await;
    assert_eq!((status, &b["previews"]), (202, &json!([])), "{b}");

    // Into another branch, from a forge that does not say which is the default: no
    // preview either (the default branch is not guessed).
    let mut unsaid = pr(&repos, "opened", 9, head, "develop");
    unsaid["repository"]
        .as_object_mut()
        .unwrap()
        .remove("default_branch");
    let (status, b) = hub.github(&secret, "pull_request", &unsaid).await;
    assert_eq!((status, &b["previews"]), (202, &json!([])), "{b}");

    // A local repository, another transport or credentials, another host (also one
    // dressed up to look like ours to a text comparison): refused, nothing made.
    let disguised = format!(
        "http://elsewhere.example#@127.0.0.1:{}/mallory/shop.git",
        repos.server.port()
    );
    for bad in [
        "file:///etc",
        "/srv/git/shop.git",
        "ext::sh -c id",
        "http://u:p@127.0.0.1/x.git",
        "https://elsewhere.example/mallory/shop.git",
        disguised.as_str(),
    ] {
        let head = (bad, "evil", evil.as_str());
        let (status, b) = hub.opened(&secret, &repos, 10, head).await;
        assert_eq!(status, 400, "{bad}: {b}");
    }
    let (envs, _) = hub.previews_of("shop").await;
    assert_eq!(envs, ["pr-7", "pr-8"]);
}

#[tokio::test]
async fn a_forks_commit_waits_for_an_owner_and_only_the_approved_commit_gets_secrets() {
    let Some(repos) = Repos::new() else { return };
    let hub = Hub::new();
    let secret = hub.project("shop", &repos.base()).await;
    hub.admin(
        Method::PUT,
        "/v1/projects/shop/previews",
        json!({"forks": "approve"}),
    )
    .await;
    let fork = repos.fork();
    let evil = repos.head("evil");

    let (status, b) = hub.opened(&secret, &repos, 3, (&fork, "evil", &evil)).await;
    assert_eq!(status, 202, "{b}");
    assert_held(&b, "approve");
    assert!(
        hub.m.runtime.instances().is_empty(),
        "built before approval"
    );
    let v = hub
        .admin(Method::GET, "/v1/projects/shop/previews", json!(null))
        .await;
    assert_eq!(v["previews"][0]["fork"]["awaiting"], json!(evil), "{v}");

    // A developer cannot approve; an owner can, naming the commit reviewed.
    let approve = "/v1/projects/shop/previews/3/approve";
    let reviewed = json!({ "commit": evil });
    let dev = hub.token(Role::Developer);
    assert_eq!(hub.post_as(&dev, approve, reviewed.clone()).await, 403);
    let owner = hub.token(Role::Owner);
    // Another commit than the one waiting (a push after the review) is not approved.
    let other = json!({"commit": "1".repeat(40)});
    assert_eq!(hub.post_as(&owner, approve, other).await, 409);
    let (status, b) = hub
        .call(Method::POST, approve, &owner, reviewed.clone())
        .await;
    assert_eq!(status, 202, "{b}");
    let env = hub.env_of(b[0]["deployment"].as_str().unwrap()).await;
    assert_eq!(secrets_in(&env), ["DB_PASSWORD", "SHARED_SECRET"]);
    assert_eq!(
        hub.post_as(&owner, approve, reviewed).await,
        409,
        "nothing waits any more"
    );

    // A new push to the fork waits again; the approved commit keeps running.
    let next = repos.push_fork("still evil", "two");
    let (_, b) = hub
        .github(
            &secret,
            "pull_request",
            &pr(&repos, "synchronize", 3, (&fork, "evil", &next), "main"),
        )
        .await;
    assert!(b["previews"][0]["deployment"].is_null(), "{b}");
    assert_eq!(hub.m.runtime.instances().len(), 1);

    // Off: nothing is made for a fork.
    hub.admin(
        Method::PUT,
        "/v1/projects/shop/previews",
        json!({"forks": "off"}),
    )
    .await;
    let (_, b) = hub.opened(&secret, &repos, 4, (&fork, "evil", &next)).await;
    assert_held(&b, "off");
    let project = hub.m.store.project_by_name("shop").await.unwrap();
    assert_eq!(
        hub.m.store.environments(&project.id).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_projects_webhook_secret_moves_nothing_of_another_project() {
    let Some(repos) = Repos::new() else { return };
    let hub = Hub::new();
    // Both projects deploy the same repository.
    let shop = hub.project("shop", &repos.base()).await;
    let blog = hub.project("blog", &repos.base()).await;
    let push = json!({
        "ref": "refs/heads/main", "after": repos.head("main"),
        "repository": {"clone_url": repos.base(), "default_branch": "main"},
    });
    let (status, b) = hub.github(&blog, "push", &push).await;
    assert_eq!(status, 202, "{b}");
    let deps = b["deployments"].as_array().unwrap();
    assert_eq!(deps.len(), 1, "{b}");
    let d = hub.settle(deps[0]["deployment"].as_str().unwrap()).await;
    let blog_id = hub.m.store.project_by_name("blog").await.unwrap().id;
    assert_eq!(d.project, blog_id, "blog's secret deployed another project");

    // GitLab: the same rule with the token.
    let gl = json!({
        "ref": "refs/heads/main", "after": repos.head("main"), "checkout_sha": repos.head("main"),
        "project": {"git_http_url": repos.base(), "default_branch": "main"},
    });
    let (status, b) = hub.gitlab(&shop, "Push Hook", &gl).await;
    assert_eq!(status, 202, "{b}");
    let d = hub
        .settle(b["deployments"][0]["deployment"].as_str().unwrap())
        .await;
    assert_ne!(d.project, blog_id);
    assert_eq!(b["deployments"].as_array().unwrap().len(), 1);

    // Rotation: the old secret stops working at once; a wrong one never did.
    let v = hub
        .admin(
            Method::POST,
            "/v1/projects/shop/webhook-secret",
            json!(null),
        )
        .await;
    assert_ne!(v["secret"].as_str().unwrap(), shop);
    assert_eq!(hub.github(&shop, "push", &push).await.0, 401);
    assert_eq!(hub.gitlab(&shop, "Push Hook", &gl).await.0, 401);
    assert_eq!(hub.github("guess", "push", &push).await.0, 401);
    // Only an owner makes a secret, and none is ever shown again.
    let rotate = "/v1/projects/shop/webhook-secret";
    let dev = hub.token(Role::Developer);
    assert_eq!(hub.post_as(&dev, rotate, json!(null)).await, 403);
    let shown = hub
        .admin(Method::GET, "/v1/projects/shop", json!(null))
        .await;
    assert!(!shown.to_string().contains(v["secret"].as_str().unwrap()));
    let stored = hub.m.store.project_by_name("shop").await.unwrap();
    assert!(stored.webhook_secret.is_some());
}

/// A project's secret is tried only on deliveries about a repository the project
/// deploys: one delivery costs a check per such project, not one per project of the
/// server, and a secret never signs for a repository its project does not build.
#[tokio::test]
async fn a_projects_secret_signs_only_for_the_repositories_it_deploys() {
    let Some(repos) = Repos::new() else { return };
    let hub = Hub::new();
    let shop = hub.project("shop", &repos.base()).await;
    let blog = hub
        .project("blog", "http://127.0.0.1:9/acme/blog.git")
        .await;
    let push = json!({
        "ref": "refs/heads/main", "after": repos.head("main"),
        "repository": {"clone_url": repos.base(), "default_branch": "main"},
    });
    let (status, b) = hub.github(&blog, "push", &push).await;
    assert_eq!(status, 401, "blog does not deploy shop's repository: {b}");
    let gl = json!({
        "ref": "refs/heads/main", "after": repos.head("main"), "checkout_sha": repos.head("main"),
        "project": {"git_http_url": repos.base(), "default_branch": "main"},
    });
    assert_eq!(hub.gitlab(&blog, "Push Hook", &gl).await.0, 401);
    // A body naming no repository is signed by no project.
    assert_eq!(
        hub.github(&shop, "ping", &json!({"zen": "hi"})).await.0,
        401
    );
    let (status, b) = hub.github(&shop, "push", &push).await;
    assert_eq!(status, 202, "{b}");
    assert_eq!(b["deployments"].as_array().unwrap().len(), 1, "{b}");
}

/// Credentials in a git URL are the owner's: no response shows them (a viewer reads
/// services and deployments), and a source sent back as shown keeps them.
#[tokio::test]
async fn credentials_in_a_git_url_are_never_shown_and_survive_a_round_trip() {
    let hub = Hub::new();
    hub.admin(Method::POST, "/v1/projects", json!({"name": "shop"}))
        .await;
    // Port 9 on loopback: nothing listens, the fetch fails at once.
    let url = "http://bob:tok3n@127.0.0.1:9/acme/shop.git";
    let web = "/v1/projects/shop/services/web";
    let source = json!({"git": {"url": url}});
    let shown = hub
        .admin(Method::PUT, web, json!({"source": source, "port": 8000}))
        .await;
    let dep = hub
        .admin(Method::POST, &format!("{web}/deployments"), json!({}))
        .await;
    let id = dep["id"].as_str().unwrap().to_owned();
    let listed = hub
        .admin(Method::GET, &format!("{web}/deployments"), json!(null))
        .await;
    let one = hub
        .admin(Method::GET, &format!("/v1/deployments/{id}"), json!(null))
        .await;
    for body in [&shown, &dep, &listed, &one] {
        let text = body.to_string();
        assert!(!text.contains("tok3n") && !text.contains("bob"), "{text}");
        assert!(text.contains("***@127.0.0.1:9/acme/shop.git"), "{text}");
    }
    // Sent back as shown, with another change: the stored URL keeps its credentials.
    let (status, _) = hub
        .call(
            Method::PUT,
            web,
            &hub.m.admin,
            json!({"source": shown["source"], "port": 8001}),
        )
        .await;
    assert_eq!(status, 200);
    let project = hub.m.store.project_by_name("shop").await.unwrap();
    let stored = hub
        .m
        .store
        .service_by_name(&project.id, None, "web")
        .await
        .unwrap();
    assert_eq!(stored.port, Some(8001));
    assert!(
        matches!(&stored.source, SourceSpec::Git { url: u, .. } if u == url),
        "{:?}",
        stored.source
    );
}

impl Repos {
    /// Commits on `main` and republishes the base repository; the commit.
    fn commit_main(&self, text: &str) -> String {
        std::fs::write(self.work.join("app.py"), format!("print('{text}')\n")).unwrap();
        git(&self.work, &["commit", "-q", "-am", text]);
        let base = self.www().join("acme/shop.git");
        std::fs::remove_dir_all(&base).unwrap();
        bare_clone(&self.work, &base);
        self.head("main")
    }
}

/// A signed push can be sent again under a new delivery id (or after a restart): it
/// must not deploy an old commit over a newer one, unless the forge says it was forced.
#[tokio::test]
async fn a_replayed_push_does_not_deploy_an_old_commit() {
    let Some(repos) = Repos::new() else { return };
    let hub = Hub::new();
    let secret = hub.project("shop", &repos.base()).await;
    let push = |before: &str, after: &str, forced: bool| {
        json!({
            "ref": "refs/heads/main", "before": before, "after": after, "forced": forced,
            "repository": {"clone_url": repos.base(), "default_branch": "main"},
        })
    };
    let c1 = repos.head("main");
    let c2 = repos.commit_main("two");
    let c3 = repos.commit_main("three");
    let deployed = |b: &Value| {
        b["deployments"][0]["deployment"]
            .as_str()
            .map(str::to_owned)
    };
    for (before, after) in [(&c1, &c2), (&c2, &c3)] {
        let (status, b) = hub
            .github(&secret, "push", &push(before, after, false))
            .await;
        assert_eq!(status, 202, "{b}");
        let d = hub.settle(&deployed(&b).expect("deployed")).await;
        assert_eq!(d.state, DeploymentState::Live, "{d:?}");
    }
    // The first push again, under a new delivery id: refused, says why.
    let (status, b) = hub.github(&secret, "push", &push(&c1, &c2, false)).await;
    assert_eq!(status, 202, "{b}");
    assert_eq!(deployed(&b), None, "an old commit was deployed again: {b}");
    assert!(
        b["deployments"][0]["waiting"]
            .as_str()
            .unwrap()
            .contains(&c3),
        "{b}"
    );
    // The last push again: nothing to do.
    let (_, b) = hub.github(&secret, "push", &push(&c2, &c3, false)).await;
    assert_eq!(deployed(&b), None, "{b}");
    // A push the forge says was forced goes back to c2.
    let (_, b) = hub.github(&secret, "push", &push(&c3, &c2, true)).await;
    assert!(deployed(&b).is_some(), "{b}");
}

/// Seen delivery ids outlive a restart.
#[test]
fn seen_deliveries_are_kept_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let before = wharf_server::webhooks::Deliveries::load(dir.path()).unwrap();
    assert!(before.seen_first("server", "d-1"));
    assert!(!before.seen_first("server", "d-1"));
    let after = wharf_server::webhooks::Deliveries::load(dir.path()).unwrap();
    assert!(
        !after.seen_first("server", "d-1"),
        "a restart forgot a delivery"
    );
    assert!(after.seen_first("server", "d-2"));
}

/// One signer flooding the window with its own deliveries never pushes another
/// signer's ids out of it (a replay of the other's would then pass), and the same id
/// from two signers is two deliveries.
#[test]
fn each_signer_keeps_its_own_window_of_deliveries() {
    use wharf_server::webhooks::Deliveries;
    let seen = Deliveries::default();
    assert!(seen.seen_first("prj_b", "b-1"));
    for n in 0..10_001 {
        assert!(seen.seen_first("prj_a", &format!("a-{n}")));
    }
    assert!(
        !seen.seen_first("prj_b", "b-1"),
        "b's delivery was forgotten"
    );
    assert!(seen.seen_first("prj_a", "b-1"));
    // A's own oldest went, within its share.
    assert!(seen.seen_first("prj_a", "a-0"));
    assert!(!seen.seen_first("prj_a", &format!("a-{}", 10_000)));
    const { assert!(Deliveries::KEEP_PER_SIGNER < 10_001) };
    // The server's secret signs for every project: it keeps a larger share.
    assert!(seen.seen_first("server", "s-1"));
    for n in 0..Deliveries::KEEP_PER_SIGNER + 500 {
        assert!(seen.seen_first("server", &format!("s-{}", n + 2)));
    }
    assert!(
        !seen.seen_first("server", "s-1"),
        "the server's delivery was forgotten"
    );
}

/// On a server whose apps run as host processes (with the server's own rights), a
/// fork's code is never built or run, whatever the policy.
#[tokio::test]
async fn host_process_servers_refuse_previews_of_forks() {
    let Some(repos) = Repos::new() else { return };
    let hub = Hub::isolated(false);
    let secret = hub.project("shop", &repos.base()).await;
    let (fork, evil) = (repos.fork(), repos.head("evil"));
    let head = (fork.as_str(), "evil", evil.as_str());
    let (status, b) = hub.opened(&secret, &repos, 7, head).await;
    assert_eq!(status, 202, "{b}");
    assert_held(&b, "host processes");
    let project = hub.m.store.project_by_name("shop").await.unwrap();
    assert!(hub
        .m
        .store
        .environments(&project.id)
        .await
        .unwrap()
        .is_empty());
    // The repository's own pull requests still get previews.
    let feature = repos.head("feature");
    let base = repos.base();
    let head = (base.as_str(), "feature", feature.as_str());
    let (_, b) = hub.opened(&secret, &repos, 8, head).await;
    assert!(b["previews"][0]["deployment"].is_string(), "{b}");
}

/// Pull request numbers are per repository: two repositories of one project never
/// share, take over or close each other's `pr-<n>`.
#[tokio::test]
async fn another_repositorys_pull_request_cannot_take_over_a_preview() {
    let Some(repos) = Repos::new() else { return };
    let hub = Hub::new();
    let secret = hub.project("shop", &repos.base()).await;
    // A second service of the project, built from another repository (the fork
    // stands in for it here).
    let project = hub.m.store.project_by_name("shop").await.unwrap();
    let other = repos.fork();
    let api = git_service(&project.id, "api", &other, GitRef::Branch("main".into()));
    hub.m.store.put_service(&api).await.unwrap();
    let feature = repos.head("feature");
    let base = repos.base();
    let (_, b) = hub
        .opened(&secret, &repos, 5, (&base, "feature", &feature))
        .await;
    assert!(b["previews"][0]["deployment"].is_string(), "{b}");
    // Pull request 5 of the other repository, opened then closed.
    let evil = repos.head("evil");
    let theirs = |action: &str| {
        let mut body = pr(&repos, action, 5, (&other, "evil", &evil), "main");
        body["repository"]["clone_url"] = json!(other);
        body
    };
    let (_, b) = hub.github(&secret, "pull_request", &theirs("opened")).await;
    assert_eq!(b["previews"][0]["service"], "api", "{b}");
    assert_held(&b, "another repository");
    hub.github(&secret, "pull_request", &theirs("closed")).await;
    let (_, names) = hub.previews_of("shop").await;
    assert_eq!(
        names,
        ["web"],
        "the first repository's preview was changed or closed"
    );
}
