//! DockerBuilder against the real engine: the conformance kit, a zero-config Python
//! app built and run answering HTTP, labels and tags, the layer cache, a project's
//! own Dockerfile with mapped base images, .dockerignore, cancellation and failures.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio_util::sync::CancellationToken;
use wharf_core::conformance::builder::{run_all, BuildCase};
use wharf_core::detect::detect;
use wharf_core::traits::{BuildRequest, Builder, LogSink, Runtime};
use wharf_core::*;
use wharf_docker::{DockerBuilder, DockerRuntime};

/// A stdlib-only Python app answering on $PORT with a line of its env.
const PY_APP: &str = r#"import os
from http.server import BaseHTTPRequestHandler, HTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello from python, MESSAGE=%s\n" % os.environ.get("MESSAGE", "")).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

print("listening on", os.environ.get("PORT", "8000"), flush=True)
HTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), H).serve_forever()
"#;

async fn builder() -> Option<DockerBuilder> {
    if !docker_ready().await {
        return None;
    }
    Some(DockerBuilder::connect(images()).await.expect("connect"))
}

/// The builder, a run name of its own (see [`unique`]) and a folder for the app; `None`
/// (the test skips) without Docker.
async fn setup(prefix: &str) -> Option<(DockerBuilder, String, tempfile::TempDir)> {
    let b = builder().await?;
    Some((b, unique(prefix), tempfile::tempdir().unwrap()))
}

fn python_app(dir: &Path) {
    std::fs::write(dir.join("app.py"), PY_APP).unwrap();
}

fn collecting_sink() -> (LogSink, Arc<Mutex<Vec<LogLine>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    (
        LogSink::from_fn(move |line| l.lock().unwrap().push(line)),
        lines,
    )
}

fn request(dir: &Path, plan: BuildPlan, tag: &str, labels: Labels) -> BuildRequest {
    BuildRequest {
        source_dir: dir.to_owned(),
        plan,
        tag: tag.to_owned(),
        labels,
        logs: LogSink::discard(),
        cancel: CancellationToken::new(),
    }
}

/// A request to build `dir` as `wharf-test/<run>:<n>`, labelled for `run`.
fn tagged(dir: &Path, plan: BuildPlan, run: &str, n: u32) -> BuildRequest {
    request(dir, plan, &format!("wharf-test/{run}:{n}"), labels(run))
}

/// Runs the built `image` (listening on `port`, with `env`) as an instance named
/// `name`; it must become healthy. The instance and the answer to its `GET /`.
async fn serve_built(
    rt: &DockerRuntime,
    (name, run): (&str, &str),
    image: &str,
    port: u16,
    env: &[(&str, &str)],
) -> (Instance, (u16, String)) {
    let mut spec = busybox_site(name, "", run);
    spec.image = image.to_owned();
    spec.command = None;
    spec.port = port;
    for (k, v) in env {
        spec.env.insert((*k).into(), (*v).into());
    }
    let inst = rt.start(&spec).await.expect("start");
    let answer = get_when_healthy(rt, &inst, Duration::from_secs(60)).await;
    (inst, answer)
}

/// Stops `inst` and removes the image `tag` it ran.
async fn stop_and_remove(rt: &DockerRuntime, inst: &Instance, tag: &str) {
    rt.stop(&inst.id, Duration::ZERO).await.expect("stop");
    docker_cli(&["rmi", tag]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_kit() {
    let Some(b) = builder().await else { return };
    let ok_dir = tempfile::tempdir().unwrap();
    python_app(ok_dir.path());
    let ok = BuildCase {
        source_dir: ok_dir.path().to_owned(),
        plan: detect(ok_dir.path()).unwrap(),
        labels: labels("builder-kit"),
    };
    let bad_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        bad_dir.path().join("Dockerfile"),
        "FROM busybox:stable\nRUN echo about to fail && exit 7\n",
    )
    .unwrap();
    let failing = BuildCase {
        source_dir: bad_dir.path().to_owned(),
        plan: detect(bad_dir.path()).unwrap(),
        labels: labels("builder-kit"),
    };
    run_all(&b, &ok, &failing).await;
    // The kit tags wharf-conformance/<run>:latest: remove what it made.
    let tags = docker_cli(&[
        "images",
        "--filter",
        "label=wharf.test=builder-kit",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ])
    .await;
    for t in tags.lines() {
        docker_cli(&["rmi", t]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_config_python_app_builds_runs_and_answers_http() {
    let Some((b, run, dir)) = setup("py").await else {
        return;
    };
    let rt = DockerRuntime::connect().await.expect("connect");
    python_app(dir.path());
    let plan = detect(dir.path()).unwrap();
    assert_eq!(plan.kind, ProjectKind::Python);
    let tag = format!("wharf-test/{run}:1");
    let mut labels = labels(&run);
    labels.insert(label::PROJECT.into(), "prj_test".into());
    labels.insert(label::SERVICE.into(), "svc_test".into());
    labels.insert(label::RELEASE.into(), "rel_1".into());
    let (sink, lines) = collecting_sink();
    let mut req = request(dir.path(), plan.clone(), &tag, labels.clone());
    req.logs = sink;
    let art = b.build(req).await.expect("build");
    assert_eq!(art.image, tag);
    assert!(art.digest.as_deref().unwrap().starts_with("sha256:"));
    let lines = lines.lock().unwrap().clone();
    assert!(lines
        .iter()
        .all(|l| matches!(l.stream, LogStream::Build | LogStream::System)));
    assert!(
        lines.iter().any(|l| l.text.contains("FROM")),
        "build output streamed: {lines:?}"
    );

    // Labels (all of the request's) are on the tagged image; the generated
    // Dockerfile did not end up in the app folder.
    let got = docker_cli(&[
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"wharf.release\"}} {{index .Config.Labels \"wharf.service\"}} {{index .Config.Labels \"wharf.managed\"}}",
        &tag,
    ])
    .await;
    assert_eq!(got.trim(), "rel_1 svc_test true");

    let port = plan.port.to_string();
    let env = [("PORT", port.as_str()), ("MESSAGE", "it works")];
    let name = format!("py-{run}");
    let (inst, (code, body)) = serve_built(&rt, (&name, &run), &art.image, plan.port, &env).await;
    assert_eq!(code, 200);
    assert_eq!(body, "hello from python, MESSAGE=it works\n");
    let files = docker_cli(&["exec", inst.id.as_str(), "ls", "-a", "/app"]).await;
    let files: Vec<&str> = files.lines().collect();
    assert_eq!(
        files,
        [".", "..", "app.py"],
        "only the app's files are in /app"
    );
    stop_and_remove(&rt, &inst, &tag).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_rebuild_reuses_the_cache_and_a_change_rebuilds() {
    let Some((b, run, dir)) = setup("cache").await else {
        return;
    };
    std::fs::write(dir.path().join("index.html"), format!("<p>{run}</p>\n")).unwrap();
    let plan = detect(dir.path()).unwrap();
    assert_eq!(plan.kind, ProjectKind::Static);
    let a = b
        .build(tagged(dir.path(), plan.clone(), &run, 1))
        .await
        .expect("build 1");
    let (sink, lines) = collecting_sink();
    let mut req = tagged(dir.path(), plan.clone(), &run, 2);
    req.logs = sink;
    // Another release: other labels (a value the Dockerfile parser would read as
    // quotes, a variable and an escape, were it not quoted), the same content.
    let odd = r#"dep "2" $HOME \ x"#;
    req.labels.insert(label::DEPLOYMENT.into(), odd.into());
    let again = b.build(req).await.expect("build 2");
    assert_eq!(
        a.digest, again.digest,
        "an unchanged rebuild is the same image"
    );
    assert_ne!(a.image, again.image);
    let on_image = docker_cli(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        &again.image,
    ])
    .await;
    let on_image: std::collections::BTreeMap<String, String> =
        serde_json::from_str(on_image.trim()).unwrap();
    assert_eq!(on_image[label::DEPLOYMENT], odd, "{on_image:?}");
    assert_eq!(on_image[label::MANAGED], "true");
    assert_eq!(on_image[TEST_LABEL], run);
    // One build, one label step: no second image on top.
    let history = docker_cli(&["history", "--format", "{{.CreatedBy}}", &again.image]).await;
    let label_steps = history.lines().filter(|l| l.contains("LABEL")).count();
    assert_eq!(label_steps, 1, "{history}");
    let cached = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.text.contains("Using cache"))
        .count();
    assert!(cached >= 2, "the rebuild used the layer cache");

    std::fs::write(dir.path().join("index.html"), "<p>changed</p>\n").unwrap();
    let changed = b
        .build(tagged(dir.path(), plan, &run, 3))
        .await
        .expect("build 3");
    assert_ne!(a.digest, changed.digest, "a changed source is a new image");
    for i in 1..=3 {
        docker_cli(&["rmi", &format!("wharf-test/{run}:{i}")]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_dockerfile_with_mapped_base_and_dockerignore() {
    let Some((b, run, dir)) = setup("df").await else {
        return;
    };
    let rt = DockerRuntime::connect().await.expect("connect");
    let d = dir.path();
    // Production would pull node:20-slim; here the map sends it to the local image.
    std::fs::write(
        d.join("Dockerfile"),
        "FROM node:20-slim AS base\nWORKDIR /srv\nCOPY . .\nFROM base\nEXPOSE 3000\nCMD [\"node\", \"server.js\"]\n",
    )
    .unwrap();
    std::fs::write(
        d.join("server.js"),
        "require('http').createServer((q, s) => { s.end('node ok ' + require('fs').readdirSync('.').sort().join(',')) }).listen(3000);\n",
    )
    .unwrap();
    std::fs::write(d.join(".dockerignore"), "secrets/\n*.log\n").unwrap();
    std::fs::create_dir(d.join("secrets")).unwrap();
    std::fs::write(d.join("secrets/key"), "s3cr3t").unwrap();
    std::fs::write(d.join("debug.log"), "x").unwrap();
    let plan = detect(d).unwrap();
    assert_eq!(plan.kind, ProjectKind::Dockerfile);
    assert_eq!(plan.port, 3000);
    let tag = format!("wharf-test/{run}:1");
    let art = b
        .build(request(d, plan.clone(), &tag, labels(&run)))
        .await
        .expect("build");
    let name = format!("node-{run}");
    let (inst, (code, body)) = serve_built(&rt, (&name, &run), &art.image, 3000, &[]).await;
    assert_eq!(code, 200);
    // Ignored files and Wharf's own Dockerfile never reach the image.
    assert_eq!(body, "node ok Dockerfile,server.js");
    stop_and_remove(&rt, &inst, &tag).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_build_stops_it_on_the_engine() {
    let Some((b, run, dir)) = setup("cancel").await else {
        return;
    };
    // A marker in the command finds the build's container from the outside.
    let marker = format!("{}.{}", 3000, run.len());
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM busybox:stable\nRUN echo {run} && sleep {marker}\n"),
    )
    .unwrap();
    let plan = detect(dir.path()).unwrap();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let seen = run.clone();
    let mut req = tagged(dir.path(), plan, &run, 1);
    // Cancel as soon as the slow step has started.
    req.logs = LogSink::from_fn(move |l| {
        if l.text.trim() == seen {
            c.cancel();
        }
    });
    req.cancel = cancel;
    let err = tokio::time::timeout(Duration::from_secs(60), b.build(req))
        .await
        .expect("the build returns soon after cancel")
        .expect_err("cancelled");
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");

    // The engine stops the step's container and removes it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ps = docker_cli(&["ps", "-a", "--no-trunc", "--format", "{{.Command}}"]).await;
        if !ps.contains(&marker) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cancelled build's container is still there: {ps}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tagged = docker_cli(&["images", "-q", &format!("wharf-test/{run}:1")]).await;
    assert!(tagged.trim().is_empty(), "a cancelled build tags nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_say_why() {
    let Some(b) = builder().await else { return };
    let run = unique("fail");

    // A base image that is neither local nor mapped (and no registry is reachable).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM wharf-test/no-such-base:{run}\n"),
    )
    .unwrap();
    let plan = detect(dir.path()).unwrap();
    let err = b
        .build(tagged(dir.path(), plan, &run, 1))
        .await
        .expect_err("missing base");
    assert_eq!(err.kind(), ErrorKind::BuildFailed, "{err}");
    assert!(err.message().contains("no-such-base"), "{err}");
    assert!(
        err.message()
            .contains("is not on this engine and could not be pulled"),
        "{err}"
    );

    // A failing step: the message carries the step's output.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.py"), "print(1)\n").unwrap();
    let mut plan = detect(dir.path()).unwrap();
    plan.build = vec![format!("echo compile error in {run} >&2; exit 3")];
    let err = b
        .build(tagged(dir.path(), plan, &run, 2))
        .await
        .expect_err("failing step");
    assert_eq!(err.kind(), ErrorKind::BuildFailed, "{err}");
    assert!(
        err.message().contains(&format!("compile error in {run}")),
        "{err}"
    );
    assert!(
        err.message().contains("returned a non-zero code: 3"),
        "{err}"
    );

    // A Dockerfile path leading out of the source.
    let mut plan = detect(dir.path()).unwrap();
    plan.kind = ProjectKind::Dockerfile;
    plan.dockerfile = Some("../Dockerfile".into());
    let err = b
        .build(tagged(dir.path(), plan, &run, 3))
        .await
        .expect_err("path out");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}
