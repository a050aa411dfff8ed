//! End-to-end timings on the real Docker engine (plain `fn main`, no criterion: each
//! sample takes a second or more, so a few timed runs and their median say enough).
//!
//! 1. Build cache: a cold build of a zero-config Python app (new source, so every
//!    layer from `COPY` on is built) against an unchanged rebuild (all from the layer
//!    cache), through `DockerBuilder`, beside the same builds with `docker build`.
//! 2. Deploy to first HTTP 200: `Engine::deploy` of a new source version (fetch,
//!    detect, build, start, health check, route) until the route points at the new
//!    instance and it answers 200 there, beside the same steps with the CLI
//!    (`docker build`, `docker run -p 127.0.0.1::8000`, `docker port`, poll until
//!    200). Retiring the previous instance is not counted (the CLI run has none).
//!
//! Needs the engine and the local base images (`scripts/setup-docker`,
//! `scripts/base-images`); without them it prints why and exits 0.
//!
//! `cargo bench -p wharf-benches --bench docker_build` (`WHARF_BENCH_RUNS`, default 5).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use wharf_core::detect::{detect, render_dockerfile, ImageMap};
use wharf_core::memory::MemoryRouter;
use wharf_core::store::MemoryStore;
use wharf_core::traits::{BuildRequest, Builder, LogSink, Runtime};

use wharf_core::*;
use wharf_docker::{DockerBuilder, DockerRuntime};

const DEBIAN: &str = "wharf-local/debian-runtimes:bookworm";

fn app(version: &str) -> String {
    format!(
        r#"import os
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        data = b"{version}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
HTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), H).serve_forever()
"#
    )
}

fn images() -> ImageMap {
    ImageMap::new().with("python", DEBIAN)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

async fn cli(args: &[&str], dir: Option<&Path>) -> String {
    let mut cmd = tokio::process::Command::new("docker");
    cmd.args(args).env("DOCKER_BUILDKIT", "0");
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let out = cmd.output().await.expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn http_200(port: u16) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.1 200")
}

async fn wait_200(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http_200(port).await {
        assert!(Instant::now() < deadline, "no HTTP 200 on {port}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Default)]
struct Figures {
    cold: Vec<Duration>,
    warm: Vec<Duration>,
    cli_cold: Vec<Duration>,
    cli_warm: Vec<Duration>,
    deploy: Vec<Duration>,
    cli_deploy: Vec<Duration>,
}

async fn bench_builds(b: &DockerBuilder, runs: usize, f: &mut Figures) {
    let dir = tempfile::tempdir().unwrap();
    let tag = |n: &str| format!("wharf-bench/build:{n}");
    let service = format!("svc_bench{}", uuid::Uuid::new_v4().simple());
    for i in 0..runs {
        let version = format!("build {} {i}", uuid::Uuid::new_v4());
        std::fs::write(dir.path().join("app.py"), app(&version)).unwrap();
        let plan = detect(dir.path()).unwrap();
        let req = |t: String| BuildRequest {
            source_dir: dir.path().to_owned(),
            plan: plan.clone(),
            tag: t,
            labels: Labels::from([
                (label::MANAGED.to_string(), "true".to_string()),
                (label::SERVICE.to_string(), service.clone()),
            ]),
            logs: LogSink::discard(),
            cancel: CancellationToken::new(),
        };
        let t = Instant::now();
        let a = b.build(req(tag("cold"))).await.expect("cold build");
        f.cold.push(t.elapsed());
        let t = Instant::now();
        let again = b.build(req(tag("warm"))).await.expect("rebuild");
        f.warm.push(t.elapsed());
        assert_eq!(a.digest, again.digest, "the rebuild came from the cache");

        // The CLI on the same Dockerfile, with new content again.
        let cli_dir = tempfile::tempdir().unwrap();
        std::fs::write(
            cli_dir.path().join("app.py"),
            app(&format!("cli {version}")),
        )
        .unwrap();
        std::fs::write(
            cli_dir.path().join("Dockerfile"),
            render_dockerfile(&plan, &images()).unwrap(),
        )
        .unwrap();
        let (cold, warm) = (
            format!("wharf-bench/cli:cold{i}"),
            format!("wharf-bench/cli:warm{i}"),
        );
        let t = Instant::now();
        cli(&["build", "-q", "-t", &cold, "."], Some(cli_dir.path())).await;
        f.cli_cold.push(t.elapsed());
        let t = Instant::now();
        cli(&["build", "-q", "-t", &warm, "."], Some(cli_dir.path())).await;
        f.cli_warm.push(t.elapsed());
        cli_quiet(&["rmi", &cold, &warm]).await;
    }
    remove_images(&format!("label={}={service}", label::SERVICE)).await;
}

/// Removes the images matching a `docker images` filter, tagged or not.
async fn remove_images(filter: &str) {
    let tags = cli(
        &[
            "images",
            "--filter",
            filter,
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ],
        None,
    )
    .await;
    for t in tags.lines().filter(|t| !t.contains("<none>")) {
        let _ = cli_quiet(&["rmi", t]).await;
    }
    let _ = cli_quiet(&["image", "prune", "-f", "--filter", filter]).await;
}

async fn cli_quiet(args: &[&str]) -> bool {
    tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .map(|o| o.status.success())
        .unwrap_or(false)
}

async fn bench_deploys(b: Arc<DockerBuilder>, runs: usize, f: &mut Figures) {
    let store = Arc::new(MemoryStore::new());
    let runtime = Arc::new(DockerRuntime::connect().await.expect("connect"));
    let router = Arc::new(MemoryRouter::new());
    let work = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .store(store.clone())
        .builder(b)
        .runtime(runtime.clone())
        .router(router.clone())
        .work_dir(work.path().join("work"))
        .stop_grace(Duration::ZERO)
        .build()
        .unwrap();
    let project = Project::new(format!(
        "bench{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ))
    .unwrap();
    store.put_project(&project).await.unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut svc = Service::new(&project.id, "api", SourceSpec::Dir { path: src.clone() }).unwrap();
    svc.health_check = Some(HealthCheck {
        probe: Probe::Http { path: "/".into() },
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(60),
    });
    store.put_service(&svc).await.unwrap();
    let host = format!("api.{}.localhost", project.name);

    for i in 0..runs {
        let version = format!("deploy {} {i}", uuid::Uuid::new_v4());
        std::fs::write(src.join("app.py"), app(&version)).unwrap();
        // Timed until the route points at a new endpoint that answers 200 (retiring
        // the old instance comes after and is not counted, as with the CLI below).
        let before = router.resolve(&host, "/");
        let t = Instant::now();
        let handle = engine.deploy(&svc.id, Trigger::Manual).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match router.resolve(&host, "/") {
                Some(ep) if Some(&ep) != before.as_ref() && http_200(ep.port).await => break,
                _ => {}
            }
            assert!(Instant::now() < deadline, "the deploy never answered");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        f.deploy.push(t.elapsed());
        let dep = handle.wait().await.unwrap();
        assert_eq!(dep.state, DeploymentState::Live, "{dep:?}");

        // The same steps by hand with the CLI.
        let cli_dir = tempfile::tempdir().unwrap();
        std::fs::write(
            cli_dir.path().join("app.py"),
            app(&format!("cli {version}")),
        )
        .unwrap();
        let plan = detect(cli_dir.path()).unwrap();
        std::fs::write(
            cli_dir.path().join("Dockerfile"),
            render_dockerfile(&plan, &images()).unwrap(),
        )
        .unwrap();
        let name = format!(
            "wharf-bench-cli-{i}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let image = format!("wharf-bench/cli:deploy{i}");
        let t = Instant::now();
        cli(&["build", "-q", "-t", &image, "."], Some(cli_dir.path())).await;
        cli(
            &[
                "run",
                "-d",
                "--name",
                &name,
                "-p",
                "127.0.0.1::8000",
                &image,
            ],
            None,
        )
        .await;
        let port_line = cli(&["port", &name, "8000/tcp"], None).await;
        let port: u16 = port_line
            .lines()
            .next()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.trim().parse().ok())
            .expect("published port");
        wait_200(port).await;
        f.cli_deploy.push(t.elapsed());
        cli(&["rm", "-f", &name], None).await;
        cli_quiet(&["rmi", &image]).await;
    }

    let mut l = Labels::new();
    l.insert(label::PROJECT.into(), project.id.to_string());
    for i in runtime.list(&l).await.unwrap() {
        let _ = runtime.stop(&i.id, Duration::ZERO).await;
    }
    remove_images(&format!("label={}={}", label::PROJECT, project.id)).await;
    let _ = tokio::process::Command::new("docker")
        .args(["network", "rm", &format!("wharf-{}", project.name)])
        .output()
        .await;
}

fn main() {
    wharf_benches::block_on_two_workers(async {
        if let Err(why) = wharf_docker::probe_engine().await {
            println!("docker_build: skipped: no Docker engine ({why}); run scripts/setup-docker");
            return;
        }
        let have = tokio::process::Command::new("docker")
            .args(["image", "inspect", DEBIAN])
            .output()
            .await
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !have {
            println!("docker_build: skipped: {DEBIAN} is missing; run scripts/base-images");
            return;
        }
        let runs: usize = std::env::var("WHARF_BENCH_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5)
            .max(1);
        let builder = Arc::new(DockerBuilder::connect(images()).await.expect("connect"));
        let mut f = Figures::default();
        // One untimed round first, so the base image's layers are warm on disk.
        bench_builds(&builder, 1, &mut f).await;
        f = Figures::default();
        bench_builds(&builder, runs, &mut f).await;
        bench_deploys(builder, runs, &mut f).await;

        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        println!("docker_build: {runs} runs each, medians (min .. max)");
        let row = |name: &str, v: &Vec<Duration>| {
            let min = v.iter().min().copied().unwrap_or_default();
            let max = v.iter().max().copied().unwrap_or_default();
            println!(
                "  {name:<42} {:>8}  ({} .. {})",
                ms(median(v.clone())),
                ms(min),
                ms(max)
            );
        };
        row("DockerBuilder cold build (new source)", &f.cold);
        row("DockerBuilder unchanged rebuild (cache)", &f.warm);
        row("docker build cold (new source)", &f.cli_cold);
        row("docker build unchanged rebuild (cache)", &f.cli_warm);
        row("Engine::deploy to first HTTP 200", &f.deploy);
        row("CLI build + run + port + first HTTP 200", &f.cli_deploy);
        println!(
            "  cold / rebuild (DockerBuilder): {:.1}x; DockerBuilder / CLI: cold {:.2}, rebuild {:.2}; deploy Wharf / CLI: {:.2}",
            ratio(median(f.cold.clone()), median(f.warm.clone())),
            ratio(median(f.cold.clone()), median(f.cli_cold.clone())),
            ratio(median(f.warm.clone()), median(f.cli_warm.clone())),
            ratio(median(f.deploy.clone()), median(f.cli_deploy.clone())),
        );
    });
}
