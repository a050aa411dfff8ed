//! App lifecycle end to end, on `wharf serve`'s embedded defaults (host processes,
//! built-in proxy) and on Docker with Caddy, from one `wharf.toml`:
//! - `site`: a web process with 3 replicas, redeployed under steady load without a
//!   failed request, then scaled in place with `wharf scale`;
//! - `jobs`: a `Procfile` with `release` (writes a marker in the volume that a web
//!   request reads), `web` and a `worker` that consumes what the web process queues
//!   in the shared volume; a failing release command leaves the old release serving;
//! - `wharf run` returns the command's exit code, with the release's env and volume;
//! - on host processes, a worker with its own health check (`[services.x.checks]`)
//!   is probed on its own `PORT`: a failing check fails the deployment and the old
//!   release serves on.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{docker_and_caddy, steady_load, Server};
use wharf_testkit::{python_app, python_present};

/// The volume's folder: where host processes say, else where Docker mounts it.
const VOLUME: &str = "os.environ.get('WHARF_VOLUME_QUEUE', '/queue')";

/// `site`: answers `VERSION HOST:PID` (which replica answered).
fn write_site(dir: &std::path::Path, bind: &str, version: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let app = python_app(
        "",
        &format!("body = ('{version} ' + os.uname().nodename + ':' + str(os.getpid())).encode()"),
    )
    .replace("127.0.0.1", bind);
    std::fs::write(dir.join("app.py"), app).unwrap();
}

/// `jobs`: GET /marker shows what the release command left, GET /enqueue/NAME
/// queues NAME, GET /done/NAME shows what the worker made of it.
fn write_jobs(dir: &std::path::Path, bind: &str, version: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let app = python_app(
        &format!(
            "VOL = {VOLUME}\n\
             os.makedirs(os.path.join(VOL, 'queue'), exist_ok=True)\n\
             os.makedirs(os.path.join(VOL, 'done'), exist_ok=True)"
        ),
        "parts = self.path.strip('/').split('/')\n\
         if parts[0] == 'enqueue':\n\
         \x20   open(os.path.join(VOL, 'queue', parts[1]), 'w').write(parts[1])\n\
         \x20   body = b'queued'\n\
         elif parts[0] == 'done':\n\
         \x20   p = os.path.join(VOL, 'done', parts[1])\n\
         \x20   body = open(p, 'rb').read() if os.path.exists(p) else b'pending'\n\
         else:\n\
         \x20   p = os.path.join(VOL, 'marker')\n\
         \x20   body = open(p, 'rb').read() if os.path.exists(p) else b'no marker'",
    )
    .replace("127.0.0.1", bind);
    std::fs::write(dir.join("app.py"), app).unwrap();
    std::fs::write(
        dir.join("worker.py"),
        format!(
            "import os, time\n\
             VOL = {VOLUME}\n\
             q, d = os.path.join(VOL, 'queue'), os.path.join(VOL, 'done')\n\
             os.makedirs(q, exist_ok=True); os.makedirs(d, exist_ok=True)\n\
             print('worker up', flush=True)\n\
             while True:\n\
             \x20   for name in os.listdir(q):\n\
             \x20       job = open(os.path.join(q, name)).read()\n\
             \x20       open(os.path.join(d, name), 'w').write(job.upper() + ' done by the worker')\n\
             \x20       os.remove(os.path.join(q, name))\n\
             \x20   time.sleep(0.1)\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("migrate.py"),
        format!(
            "import os, sys\n\
             print('migrating to {version}', flush=True)\n\
             if os.environ.get('FAIL_RELEASE'):\n\
             \x20   print('migration 7 failed: column exists', file=sys.stderr)\n\
             \x20   sys.exit(2)\n\
             open(os.path.join({VOLUME}, 'marker'), 'w').write('migrated for {version} in ' + os.environ['MODE'])\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("Procfile"),
        "web: python3 app.py\nworker: python3 worker.py\nrelease: python3 migrate.py\n",
    )
    .unwrap();
}

fn manifest(project: &str) -> String {
    format!(
        r#"project = "{project}"

[services.site]
path = "site"
replicas = {{ web = 3 }}

[services.jobs]
path = "jobs"
env = {{ MODE = "prod" }}
volumes = [{{ name = "queue", mount = "/queue" }}]
"#
    )
}

/// The whole scenario against `server` (apps binding `bind`), whose apps answer on
/// `port` for `<service>.<project>.localhost<suffix>`.
async fn scenario(server: &Server, root: &std::path::Path, project: &str, bind: &str) {
    write_site(&root.join("site"), bind, "v1");
    write_jobs(&root.join("jobs"), bind, "v1");
    std::fs::write(root.join("wharf.toml"), manifest(project)).unwrap();
    let (ok, out) = server.cli(&["deploy", root.to_str().unwrap()]);
    assert!(ok, "wharf deploy failed:\n{out}");
    assert!(out.contains("started worker instance"), "{out}");
    // The release command's output is part of the deployment's.
    assert!(out.contains("migrating to v1"), "{out}");

    let suffix = if server.via_caddy {
        String::new()
    } else {
        format!(":{}", server.proxy_port)
    };
    let site = format!("site.{project}.localhost{suffix}");
    let jobs = format!("jobs.{project}.localhost{suffix}");

    // The release command ran before the web process served.
    assert_eq!(
        server.get(&jobs).await,
        (200, "migrated for v1 in prod".into())
    );

    // Three replicas answer, in turn.
    let mut replicas = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let (status, body) = server.get(&site).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("v1 "), "{body}");
        replicas.insert(body);
    }
    assert_eq!(replicas.len(), 3, "{replicas:?}");

    // The worker takes what the web process queues in the shared volume.
    assert_eq!(
        server.get_path(&jobs, "/enqueue/invoice-7").await.1,
        "queued"
    );
    let mut done = String::new();
    for _ in 0..150 {
        done = server.get_path(&jobs, "/done/invoice-7").await.1;
        if done != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(done, "INVOICE-7 done by the worker");

    // A redeploy of the three replicas under steady load: not one failed request.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(steady_load(server.proxy_port, site.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_site(&root.join("site"), bind, "v2");
    let site_dir = root.join("site");
    let (ok, out) = server.cli(&[
        "deploy",
        site_dir.to_str().unwrap(),
        "-p",
        project,
        "-s",
        "site",
    ]);
    assert!(ok, "redeploy failed:\n{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let load = load.await.unwrap();
    assert_eq!(
        load.failed, 0,
        "{} of {} requests failed",
        load.failed, load.sent
    );
    assert!(
        load.bodies.iter().any(|b| b.starts_with("v1 ")),
        "{:?}",
        load.bodies
    );
    assert!(
        load.bodies.iter().any(|b| b.starts_with("v2 ")),
        "{:?}",
        load.bodies
    );

    // A release command that fails: the deployment fails at releasing, v1 serves on.
    write_jobs(&root.join("jobs"), bind, "v2");
    let (ok, out) = server.cli(&["env", "set", "FAIL_RELEASE=1", "-p", project, "-s", "jobs"]);
    assert!(ok, "{out}");
    let jobs_dir = root.join("jobs");
    let (ok, out) = server.cli(&[
        "deploy",
        jobs_dir.to_str().unwrap(),
        "-p",
        project,
        "-s",
        "jobs",
    ]);
    assert!(!ok, "the deploy should have failed:\n{out}");
    assert!(out.contains("migration 7 failed: column exists"), "{out}");
    assert!(out.contains("releasing"), "{out}");
    assert_eq!(
        server.get(&jobs).await,
        (200, "migrated for v1 in prod".into())
    );

    // `wharf run`: the live release's env and volume; the command's exit code.
    let script =
        "cat \"${WHARF_VOLUME_QUEUE:-/queue}/marker\"; echo \" MODE=$MODE\"; echo oops >&2; exit 5";
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["run", "-p", project, "-s", "jobs", "--", "sh", "-c", script])
        .env("WHARF_SERVER", &server.api)
        .current_dir(server.data.parent().unwrap())
        .env_remove("WHARF_DATA_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(5), "{stdout}");
    assert!(
        stdout.contains("migrated for v1 in prod MODE=prod"),
        "{stdout}"
    );
    // Docker keeps the streams apart; host processes write both to one log file.
    let err_out = if server.via_caddy {
        &run.stderr
    } else {
        &run.stdout
    };
    assert!(String::from_utf8_lossy(err_out).contains("oops"));
    let (ok, out) = server.cli(&["run", "-p", project, "-s", "jobs", "--", "true"]);
    assert!(ok, "{out}");

    // Scaled in place: one replica left, no new release, still serving v2.
    let (ok, out) = server.cli(&["scale", "-p", project, "-s", "site", "web=1"]);
    assert!(ok, "{out}");
    assert!(out.contains("web=1 (1 running)"), "{out}");
    let mut replicas = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let (status, body) = server.get(&site).await;
        assert_eq!(status, 200);
        assert!(body.starts_with("v2 "), "{body}");
        replicas.insert(body);
    }
    assert_eq!(replicas.len(), 1, "{replicas:?}");
    let (_, releases) = server
        .read(&format!("/projects/{project}/services/site/releases"))
        .await;
    assert_eq!(releases.as_array().unwrap().len(), 2, "{releases}");
    let (ok, out) = server.cli(&["scale", "-p", project, "-s", "site", "wrker=2"]);
    assert!(!ok && out.contains("no process type wrker"), "{out}");
}

#[tokio::test]
async fn lifecycle_on_host_processes() {
    if !python_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path());
    server.wait_ready(tmp.path()).await;
    scenario(&server, &tmp.path().join("procs"), "procs", "127.0.0.1").await;
    // Nothing of the runs is left: only the instances of the two live releases
    // (site: 1 web; jobs: web and worker).
    let instances = std::fs::read_dir(server.data.join("runtime"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_dir())
        .count();
    assert_eq!(instances, 3, "task instances were left behind");
}

#[tokio::test]
async fn lifecycle_on_docker() {
    let Some(caddy) = docker_and_caddy().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start_on_docker(tmp.path(), &caddy, &[]);
    server.wait_ready(tmp.path()).await;
    let project = wharf_testkit::unique("procs");
    scenario(&server, &tmp.path().join(&project), &project, "0.0.0.0").await;
    let (status, _) = server
        .call(
            reqwest::Method::DELETE,
            &format!("/projects/{project}?volumes=delete&confirm={project}"),
            serde_json::Value::Null,
        )
        .await;
    assert!(status < 300, "deleting the project: {status}");
}

/// `beat`: a web process answering `web v<version>`, and a worker that serves
/// `GET /health` on its own `PORT` (a status page beside its real work): 200, or 503
/// while `WORKER_SICK` is set. It logs each probe, so its log shows it was asked.
fn write_beat(dir: &std::path::Path, version: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("app.py"),
        python_app("", &format!("body = b'web {version}'")),
    )
    .unwrap();
    std::fs::write(
        dir.join("worker.py"),
        "import os\n\
         from http.server import BaseHTTPRequestHandler, HTTPServer\n\
         SICK = os.environ.get('WORKER_SICK')\n\
         class H(BaseHTTPRequestHandler):\n\
         \x20   def do_GET(self):\n\
         \x20       code = 503 if SICK or self.path != '/health' else 200\n\
         \x20       print('probed', self.path, code, flush=True)\n\
         \x20       self.send_response(code)\n\
         \x20       self.send_header('Content-Length', '0')\n\
         \x20       self.end_headers()\n\
         \x20   def log_message(self, *args):\n\
         \x20       pass\n\
         print('worker serving its health on', os.environ['PORT'], flush=True)\n\
         HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("Procfile"),
        "web: python3 app.py\nworker: python3 worker.py\n",
    )
    .unwrap();
}

/// What every instance of `server`'s host runtime wrote to its log, together.
fn instance_logs(server: &Server) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(server.data.join("runtime")).unwrap() {
        let log = entry.unwrap().path().join("output.log");
        out.push_str(&std::fs::read_to_string(log).unwrap_or_default());
    }
    out
}

/// The manifest of `beat`, its worker checked as `check` (a `[services.beat.checks.*]`
/// table's name and body).
fn beat_manifest(check: &str) -> String {
    format!(
        "project = \"checks\"\n\
         [services.beat]\n\
         path = \"beat\"\n\
         {check}"
    )
}

#[tokio::test]
async fn a_worker_is_probed_by_its_own_check_on_host_processes() {
    if !python_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path());
    server.wait_ready(tmp.path()).await;
    let root = tmp.path().join("checks");
    write_beat(&root.join("beat"), "v1");
    let check = "[services.beat.checks.worker]\n\
                 path = \"/health\"\n\
                 interval = \"100ms\"\n\
                 timeout = \"4s\"\n";
    std::fs::write(root.join("wharf.toml"), beat_manifest(check)).unwrap();
    let (ok, out) = server.cli(&["deploy", root.to_str().unwrap()]);
    assert!(ok, "wharf deploy failed:\n{out}");
    assert!(out.contains("started worker instance"), "{out}");
    assert!(out.contains("worker health check passed"), "{out}");
    let beat = format!("beat.checks.localhost:{}", server.proxy_port);
    assert_eq!(server.get(&beat).await, (200, "web v1".into()));
    // The service says so.
    let (_, svc) = server.read("/projects/checks/services/beat").await;
    assert_eq!(
        svc["process_checks"]["worker"],
        serde_json::json!({"probe": {"kind": "http", "path": "/health"}, "interval": 100, "timeout": 4000}),
        "{svc}"
    );
    // The probes reached the worker, on its own port (in its instance's log).
    let logs = instance_logs(&server);
    assert!(logs.contains("probed /health 200"), "{logs}");

    // The worker's check fails in the next release: the deployment fails at
    // health_checking, naming the worker and what its probe got; v1 serves on.
    write_beat(&root.join("beat"), "v2");
    let (ok, out) = server.cli(&["env", "set", "WORKER_SICK=1", "-p", "checks", "-s", "beat"]);
    assert!(ok, "{out}");
    let (ok, out) = server.cli(&["deploy", root.to_str().unwrap()]);
    assert!(!ok, "the deploy should have failed:\n{out}");
    assert!(out.contains("health_checking"), "{out}");
    assert!(out.contains("worker instance"), "{out}");
    assert!(out.contains("GET /health answered 503"), "{out}");
    assert_eq!(server.get(&beat).await, (200, "web v1".into()));

    // A check for a type the app does not run fails before the build, naming it.
    let (ok, out) = server.cli(&["env", "unset", "WORKER_SICK", "-p", "checks", "-s", "beat"]);
    assert!(ok, "{out}");
    std::fs::write(
        root.join("wharf.toml"),
        beat_manifest("[services.beat.checks.wrker]\nprobe = \"tcp\"\n"),
    )
    .unwrap();
    let (ok, out) = server.cli(&["deploy", root.to_str().unwrap()]);
    assert!(!ok, "the deploy should have failed:\n{out}");
    assert!(out.contains("process check wrker"), "{out}");
    assert!(out.contains("it runs web, worker"), "{out}");
    assert_eq!(server.get(&beat).await, (200, "web v1".into()));

    // web and release take no process check: refused by the API as by the manifest.
    for name in ["web", "release"] {
        let body = serde_json::json!({"process_checks": {name: {"probe": {"kind": "tcp"}, "interval": 200, "timeout": 5000}}});
        let (status, err) = server
            .call(reqwest::Method::PUT, "/projects/checks/services/beat", body)
            .await;
        assert_eq!(status, 400, "{err}");
        assert!(
            err.to_string().contains(&format!("process check {name}")),
            "{err}"
        );
    }

    // Back to a healthy worker: the next release goes live with its check.
    std::fs::write(root.join("wharf.toml"), beat_manifest(check)).unwrap();
    let (ok, out) = server.cli(&["deploy", root.to_str().unwrap()]);
    assert!(ok, "wharf deploy failed:\n{out}");
    assert!(out.contains("worker health check passed"), "{out}");
    assert_eq!(server.get(&beat).await, (200, "web v2".into()));
}
