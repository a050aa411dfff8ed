//! The wharf-core engine driving the real Docker builder and runtime: zero-config
//! deploys answering HTTP on their published loopback ports, redeploys, failures that
//! keep the previous release serving, a worker probed by its own check, cancel during
//! a build, services reaching each other by name, and recovery after containers
//! vanished behind the engine's back.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use wharf_core::memory::MemoryRouter;
use wharf_core::store::MemoryStore;
use wharf_core::traits::Runtime;
use wharf_core::*;
use wharf_docker::{DockerBuilder, DockerRuntime};

struct World {
    engine: Engine,
    store: Arc<MemoryStore>,
    runtime: Arc<DockerRuntime>,
    router: Arc<MemoryRouter>,
    project: Project,
    dir: tempfile::TempDir,
}

/// A stdlib Python app answering `GET /` with `body` (and `GET /fail` with 500).
fn py_app(body: &str) -> String {
    format!(
        r#"import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        code, text = (500, "failing") if self.path == "/fail" else (200, {body:?})
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a):
        print("request", self.path, flush=True)
print("listening", flush=True)
HTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#
    )
}

fn health(timeout: Duration) -> HealthCheck {
    HealthCheck {
        probe: Probe::Http { path: "/".into() },
        interval: Duration::from_millis(100),
        timeout,
    }
}

async fn world() -> Option<World> {
    if !docker_ready().await {
        return None;
    }
    let store = Arc::new(MemoryStore::new());
    let builder = Arc::new(DockerBuilder::connect(images()).await.expect("connect"));
    let runtime = Arc::new(DockerRuntime::connect().await.expect("connect"));
    let router = Arc::new(MemoryRouter::new());
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .store(store.clone())
        .builder(builder)
        .runtime(runtime.clone())
        .router(router.clone())
        .work_dir(dir.path().join("work"))
        .stop_grace(Duration::from_secs(2))
        .build()
        .unwrap();
    let project = Project::new(unique("e")).unwrap();
    store.put_project(&project).await.unwrap();
    Some(World {
        engine,
        store,
        runtime,
        router,
        project,
        dir,
    })
}

impl World {
    /// A service whose source folder holds `files`.
    async fn service(&self, name: &str, files: &[(&str, &str)]) -> Service {
        let src = self.src(name);
        std::fs::create_dir_all(&src).unwrap();
        for (f, text) in files {
            std::fs::write(src.join(f), text).unwrap();
        }
        let mut svc = Service::new(&self.project.id, name, SourceSpec::Dir { path: src }).unwrap();
        svc.health_check = Some(health(Duration::from_secs(60)));
        self.store.put_service(&svc).await.unwrap();
        svc
    }

    /// A service `name` whose `app.py` answers `message` (see [`py_app`]).
    async fn python(&self, name: &str, message: &str) -> Service {
        self.service(name, &[("app.py", &py_app(message))]).await
    }

    /// A [`python`](Self::python) service, deployed: it must go live.
    async fn live_python(&self, name: &str, message: &str) -> (Service, Deployment) {
        let svc = self.python(name, message).await;
        let dep = self.deploy_live(&svc).await;
        (svc, dep)
    }

    /// The state deployment `id` is in now, as stored.
    async fn state_now(&self, id: &DeploymentId) -> DeploymentState {
        self.store.deployment(id).await.unwrap().state
    }

    fn src(&self, name: &str) -> PathBuf {
        self.dir.path().join("src").join(name)
    }

    async fn deploy(&self, svc: &Service) -> Deployment {
        wharf_testkit::deploy(&self.engine, &svc.id).await
    }

    /// Deploys `svc`, which must go live.
    async fn deploy_live(&self, svc: &Service) -> Deployment {
        let dep = self.deploy(svc).await;
        assert_eq!(dep.state, DeploymentState::Live, "{dep:?}");
        dep
    }

    /// What the router sends the service's hostname to, and what it answers there.
    async fn get(&self, svc: &Service, path: &str) -> (u16, String) {
        let host = format!("{}.{}.localhost", svc.name, self.project.name);
        let ep = self.router.resolve(&host, "/").expect("a route");
        assert_eq!(ep.host, "127.0.0.1");
        http_get(ep.port, path).await.expect("GET")
    }

    /// Removes what the test left: containers, the project network, images.
    async fn cleanup(&self) {
        let mut l = Labels::new();
        l.insert(label::PROJECT.into(), self.project.id.to_string());
        for i in self.runtime.list(&l).await.unwrap_or_default() {
            let _ = self.runtime.stop(&i.id, Duration::ZERO).await;
        }
        docker_cli(&["network", "rm", &format!("wharf-{}", self.project.name)]).await;
        let images = docker_cli(&[
            "images",
            "--filter",
            &format!("label=wharf.project={}", self.project.id),
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ])
        .await;
        for image in images.lines() {
            docker_cli(&["rmi", image]).await;
        }
    }
}

/// Runs a test: `body` in a new [`World`], whose leftovers are removed after it;
/// without Docker the test skips.
async fn in_world(body: impl AsyncFnOnce(&World)) {
    let Some(w) = world().await else { return };
    body(&w).await;
    w.cleanup().await;
}

fn failed_reason(dep: &Deployment) -> &str {
    match &dep.state {
        DeploymentState::Failed { reason, .. } => reason,
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_site_and_a_python_app_go_live_with_zero_config() {
    in_world(async |w| {
        let site = w
            .service("site", &[("index.html", "<h1>static ok</h1>\n")])
            .await;
        let api = w.python("api", "python ok").await;

        let dep = w.deploy_live(&site).await;
        assert_eq!(dep.plan.as_ref().unwrap().kind, ProjectKind::Static);
        assert_eq!(
            w.get(&site, "/").await,
            (200, "<h1>static ok</h1>\n".into())
        );

        let dep = w.deploy_live(&api).await;
        assert_eq!(dep.plan.as_ref().unwrap().kind, ProjectKind::Python);
        assert_eq!(w.get(&api, "/").await, (200, "python ok".into()));
        let inst = dep.instance.unwrap();
        assert_eq!(
            w.runtime.status(&inst.id).await.unwrap(),
            InstanceStatus::Healthy
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeploy_switches_to_the_new_container_and_removes_the_old() {
    in_world(async |w| {
        let (api, first) = w.live_python("api", "v1").await;
        assert_eq!(w.get(&api, "/").await.1, "v1");

        std::fs::write(w.src("api").join("app.py"), py_app("v2")).unwrap();
        w.deploy_live(&api).await;
        assert_eq!(w.get(&api, "/").await, (200, "v2".into()));
        let old = first.instance.unwrap().id;
        assert_eq!(
            w.runtime.status(&old).await.unwrap_err().kind(),
            ErrorKind::NotFound,
            "the old container is removed"
        );
        assert_eq!(w.state_now(&first.id).await, DeploymentState::Superseded);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_at_start_and_health_check_keep_the_previous_release_serving() {
    in_world(async |w| {
        let (api, good) = w.live_python("api", "good").await;

        // An app that exits at start.
        std::fs::write(
            w.src("api").join("app.py"),
            "import sys\nprint('fatal: DATABASE_URL is not set', file=sys.stderr, flush=True)\nsys.exit(2)\n",
        )
        .unwrap();
        let dep = w.deploy(&api).await;
        let reason = failed_reason(&dep);
        assert!(reason.contains("instance exited"), "{reason}");
        assert!(
            reason.contains("fatal: DATABASE_URL is not set"),
            "{reason}"
        );
        let gone = dep.instance.as_ref().map(|i| i.id.clone());
        if let Some(id) = gone {
            assert_eq!(
                w.runtime.status(&id).await.unwrap_err().kind(),
                ErrorKind::NotFound,
                "the failed instance is removed"
            );
        }
        assert_eq!(w.get(&api, "/").await, (200, "good".into()));

        // An app that runs but fails its health check.
        std::fs::write(w.src("api").join("app.py"), py_app("never served")).unwrap();
        let mut svc = w.store.service(&api.id).await.unwrap();
        let mut check = health(Duration::from_secs(8));
        check.probe = Probe::Http {
            path: "/fail".into(),
        };
        svc.health_check = Some(check);
        w.store.put_service(&svc).await.unwrap();
        let dep = w.deploy(&svc).await;
        let reason = failed_reason(&dep);
        assert!(reason.contains("health check did not pass"), "{reason}");
        assert!(reason.contains("GET /fail answered 500"), "{reason}");
        assert!(
            reason.contains("request /fail"),
            "the app's last lines: {reason}"
        );
        assert_eq!(w.get(&api, "/").await, (200, "good".into()));
        assert_eq!(w.state_now(&good.id).await, DeploymentState::Live);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_is_probed_by_its_own_check_on_its_published_port() {
    in_world(async |w| {
        // The worker serves HTTP on PORT too (it runs the same app): its container
        // publishes that port like web's, where the runtime probes it.
        let mut api = w
            .service(
                "api",
                &[
                    ("app.py", &py_app("web")),
                    ("Procfile", "web: python3 app.py\nworker: python3 app.py\n"),
                ],
            )
            .await;
        api.process_checks
            .insert("worker".into(), health(Duration::from_secs(60)));
        w.store.put_service(&api).await.unwrap();
        let good = w.deploy_live(&api).await;
        let (_, worker) = good.instances().find(|(p, _)| *p == "worker").unwrap();
        assert_eq!(
            w.runtime.status(&worker.id).await.unwrap(),
            InstanceStatus::Healthy
        );
        assert_eq!(http_get(worker.endpoint.port, "/").await.unwrap().0, 200);

        // A check the worker fails: the deployment fails, naming it; web serves on.
        let mut check = health(Duration::from_secs(8));
        check.probe = Probe::Http {
            path: "/fail".into(),
        };
        api.process_checks.insert("worker".into(), check);
        w.store.put_service(&api).await.unwrap();
        let dep = w.deploy(&api).await;
        let reason = failed_reason(&dep);
        assert!(reason.contains("worker instance"), "{reason}");
        assert!(reason.contains("GET /fail answered 500"), "{reason}");
        assert_eq!(w.get(&api, "/").await, (200, "web".into()));
        assert_eq!(w.state_now(&good.id).await, DeploymentState::Live);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_the_build_ends_cancelled_without_an_instance() {
    in_world(async |w| {
        let slow = w
            .service(
                "slow",
                &[(
                    "Dockerfile",
                    "FROM busybox:stable\nRUN echo building slowly && sleep 300\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\"]\n",
                )],
            )
            .await;
        let mut h = w.engine.deploy(&slow.id, Trigger::Manual).await.unwrap();
        let mut events = h.events();
        while let Some(e) = events.next().await {
            if let EventKind::Log(l) = &e.kind {
                if l.stream == LogStream::Build && l.text.contains("building slowly") {
                    break;
                }
            }
        }
        h.cancel();
        let dep = tokio::time::timeout(Duration::from_secs(60), h.wait())
            .await
            .expect("cancel ends the build soon")
            .unwrap();
        assert_eq!(dep.state, DeploymentState::Cancelled);
        assert!(dep.instance.is_none());
        let mut l = Labels::new();
        l.insert(label::PROJECT.into(), w.project.id.to_string());
        assert!(w.runtime.list(&l).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_reaches_its_dependency_by_name() {
    in_world(async |w| {
        w.service("db", &[("app.py", &py_app("db says hi"))]).await;
        let web_app = r#"import os, urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        got = urllib.request.urlopen("http://db:8000/", timeout=5).read()
        data = b"web got: " + got
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
HTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#;
        let mut web = w.service("web", &[("app.py", web_app)]).await;
        web.depends_on = vec!["db".into()];
        w.store.put_service(&web).await.unwrap();

        let report = w
            .engine
            .deploy_project(&w.project.id, None, Trigger::Manual)
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
        assert!(report.all_live(), "{report:?}");
        assert_eq!(w.get(&web, "/").await, (200, "web got: db says hi".into()));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_restarts_what_was_removed_behind_the_engines_back() {
    in_world(async |w| {
        let (api, dep) = w.live_python("api", "still here").await;
        let old = dep.instance.unwrap();
        // Someone removes the container with the docker CLI, and an orphan appears.
        docker_cli(&["rm", "-f", old.id.as_str()]).await;
        let mut orphan = busybox_site(&format!("orphan-{}", w.project.name), "x", "orphan");
        orphan
            .labels
            .insert(label::PROJECT.into(), w.project.id.to_string());
        let orphan = w.runtime.start(&orphan).await.unwrap();

        let report = w.engine.recover().await.unwrap();
        assert_eq!(report.restarted, vec![api.id.clone()], "{report:?}");
        assert!(report.removed_instances.contains(&orphan.id), "{report:?}");
        // The service answers again through the route, from a new container.
        let now = w.store.deployment(&dep.id).await.unwrap();
        assert_ne!(now.instance.unwrap().id, old.id);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let host = format!("{}.{}.localhost", api.name, w.project.name);
            let ep = w.router.resolve(&host, "/").expect("route");
            if let Ok((200, body)) = http_get(ep.port, "/").await {
                assert_eq!(body, "still here");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            w.runtime.status(&orphan.id).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_runs_an_earlier_image_again_without_building() {
    in_world(async |w| {
        let api = w
            .service("api", &[("app.py", &py_app("release one"))])
            .await;
        w.deploy_live(&api).await;
        std::fs::write(w.src("api").join("app.py"), py_app("release two")).unwrap();
        w.deploy_live(&api).await;
        assert_eq!(w.get(&api, "/").await.1, "release two");

        let releases = w.store.releases(&api.id).await.unwrap();
        let first = releases.iter().find(|r| r.number == 1).unwrap();
        let mut h = w.engine.rollback(&first.id).await.unwrap();
        let events: Vec<Event> = h.events().collect().await;
        let dep = h.wait().await.unwrap();
        assert_eq!(dep.state, DeploymentState::Live, "{dep:?}");
        assert!(
            !events.iter().any(|e| matches!(
                &e.kind,
                EventKind::Log(l) if l.stream == LogStream::Build
            )),
            "a rollback builds nothing"
        );
        assert_eq!(dep.artifact.as_ref().unwrap().image, first.artifact.image);
        assert_eq!(w.get(&api, "/").await, (200, "release one".into()));
    })
    .await;
}

/// A stdlib Python app that, on its first start ever, writes `first-written-by-<v>`
/// into its volume at /data/file, and answers `GET /` with that file's content and
/// its own version: what survived, as the instance serving now sees it.
fn py_volume_app(v: &str) -> String {
    format!(
        r#"import os
from http.server import BaseHTTPRequestHandler, HTTPServer
p = "/data/file"
if not os.path.exists(p):
    with open(p, "w") as f:
        f.write("first-written-by-{v}")
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        with open(p) as f:
            data = (f.read() + " served-by-{v}").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
print("listening", flush=True)
HTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#
    )
}

/// `/data/file` of the Docker volume `name`, read from the outside (a busybox
/// container); `None` when the volume does not exist.
async fn volume_file(name: &str) -> Option<String> {
    if docker_cli(&["volume", "inspect", "--format", "{{.Name}}", name])
        .await
        .trim()
        != name
    {
        return None;
    }
    let out = docker_cli(&[
        "run",
        "--rm",
        "-v",
        &format!("{name}:/data:ro"),
        BUSYBOX,
        "cat",
        "/data/file",
    ])
    .await;
    Some(out.trim().to_owned())
}

/// What the service answers at `/` once it answers (an instance started again is not
/// waited for by the engine): polled for up to 30 s.
async fn answer(w: &World, svc: &Service) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let host = format!("{}.{}.localhost", svc.name, w.project.name);
        let ep = w.router.resolve(&host, "/").expect("a route");
        match http_get(ep.port, "/").await {
            Ok((200, body)) => return body,
            other if tokio::time::Instant::now() >= deadline => panic!("no answer: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Part 5 of issue 17 on Docker: a volume's data survives a redeploy, a rollback, a
/// failed deploy, the runtime's gc, recover() by a restarted control plane and the
/// service's deletion; only the confirmed removal deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_outlives_everything_but_its_confirmed_removal() {
    in_world(async |w| {
        let mut svc = w.service("db", &[("app.py", &py_volume_app("v1"))]).await;
        svc.volumes = vec![VolumeMount::new("data", "/data")];
        w.store.put_service(&svc).await.unwrap();
        let volume = format!("wharf-{}.data", w.project.name);
        let kept = "first-written-by-v1";

        let v1 = w.deploy_live(&svc).await;
        assert_eq!(answer(w, &svc).await, format!("{kept} served-by-v1"));

        // Redeploy: stop-then-start, and the new instance reads the old data.
        std::fs::write(w.src("db").join("app.py"), py_volume_app("v2")).unwrap();
        let v2 = w.deploy_live(&svc).await;
        assert_eq!(answer(w, &svc).await, format!("{kept} served-by-v2"));

        // Rollback to v1's release.
        let rel1 = w.store.releases(&svc.id).await.unwrap().pop().unwrap();
        assert_eq!(rel1.deployment, v1.id);
        let back = w
            .engine
            .rollback(&rel1.id)
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
        assert_eq!(back.state, DeploymentState::Live);
        assert_eq!(answer(w, &svc).await, format!("{kept} served-by-v1"));

        // A failed deploy (the app exits at once): the previous release is started
        // again on the same data.
        std::fs::write(w.src("db").join("app.py"), "import sys\nsys.exit(3)\n").unwrap();
        let failed = w.deploy(&svc).await;
        assert!(
            matches!(failed.state, DeploymentState::Failed { .. }),
            "{failed:?}"
        );
        assert_eq!(answer(w, &svc).await, format!("{kept} served-by-v1"));
        assert_eq!(volume_file(&volume).await.as_deref(), Some(kept));

        // Garbage collection, keeping nothing: containers, images and networks may go;
        // the volume stays.
        w.runtime.gc(&Default::default()).await.expect("gc");
        assert_eq!(volume_file(&volume).await.as_deref(), Some(kept));

        // The control plane restarts (a new engine on the same store) and recovers,
        // with the live instance killed meanwhile.
        let live = w.store.live_deployment(&svc.id).await.unwrap().unwrap();
        docker_cli(&["rm", "-f", live.instance.as_ref().unwrap().id.as_str()]).await;
        let restarted = Engine::builder()
            .store(w.store.clone())
            .builder(Arc::new(DockerBuilder::connect(images()).await.unwrap()))
            .runtime(w.runtime.clone())
            .router(w.router.clone())
            .work_dir(w.dir.path().join("work2"))
            .build()
            .unwrap();
        let report = restarted.recover().await.expect("recover");
        assert_eq!(report.restarted, [svc.id.clone()]);
        assert_eq!(answer(w, &svc).await, format!("{kept} served-by-v1"));

        // The service is deleted (no flag exists at this level: nothing deletes data).
        w.engine.teardown(&svc.id).await.unwrap();
        w.store.delete_service(&svc.id).await.unwrap();
        assert_eq!(volume_file(&volume).await.as_deref(), Some(kept));
        let listed = w.runtime.volumes(&w.project.id, &[]).await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].runtime_name, volume);

        // Only the confirmed removal deletes it.
        w.runtime
            .remove_volume(&listed[0].volume)
            .await
            .expect("remove");
        assert_eq!(volume_file(&volume).await, None);
        let _ = v2;
    })
    .await;
}
