//! The embedded defaults end to end: a python3 standard-library app deployed through
//! the real [`Engine`] with the host builder, the host-process runtime and the built-in
//! proxy, reached by Host header; a redeploy under steady load (GETs and POSTs with a
//! body) drops no request; a control-plane restart re-adopts the app and `recover()`
//! routes it again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use wharf_core::fetch::Fetchers;
use wharf_core::process::{kill_recorded, HostBuilder, HostRuntime, HostRuntimeConfig};
use wharf_core::proxy::{DrainingRuntime, ProxyRouter, ProxyServer};
use wharf_core::store::MemoryStore;
use wharf_core::*;
use wharf_testkit::python_present;

const APP: &str = r#"
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

VERSION = open("version.txt").read().strip()

class Handler(BaseHTTPRequestHandler):
    def reply(self, text):
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.reply(f"{VERSION} from {os.getpid()}\n")

    def do_POST(self):
        got = self.rfile.read(int(self.headers["Content-Length"]))
        self.reply(f"{VERSION} got {len(got)} bytes\n")

    def log_message(self, *args):
        pass

print(f"{VERSION} listening on {os.environ['PORT']}", flush=True)
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

/// Kills every app process the test started, pass or panic.
struct Teardown(std::path::PathBuf);

impl Drop for Teardown {
    fn drop(&mut self) {
        kill_recorded(&self.0);
    }
}

struct World {
    engine: Engine,
    runtime: Arc<HostRuntime>,
    proxy: ProxyServer,
    store: Arc<MemoryStore>,
    dir: std::path::PathBuf,
    service: Service,
}

async fn engine_on(
    store: Arc<MemoryStore>,
    dir: &std::path::Path,
) -> (Engine, Arc<HostRuntime>, ProxyServer) {
    let runtime = Arc::new(
        HostRuntime::open(HostRuntimeConfig::new(dir.join("state")))
            .await
            .unwrap(),
    );
    let router = ProxyRouter::new();
    let proxy = router.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let engine = Engine::builder()
        .store(store)
        .fetcher(Arc::new(Fetchers::default()))
        .builder(Arc::new(HostBuilder::new(dir.join("builds"))))
        .runtime(Arc::new(DrainingRuntime::new(
            runtime.clone(),
            router.clone(),
            Duration::from_secs(10),
        )))
        .router(Arc::new(router))
        .work_dir(dir.join("work"))
        .stop_grace(Duration::from_secs(2))
        .build()
        .unwrap();
    (engine, runtime, proxy)
}

async fn world(dir: &std::path::Path) -> World {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.py"), APP).unwrap();
    std::fs::write(src.join("version.txt"), "v1").unwrap();
    let store = Arc::new(MemoryStore::new());
    let project = Project::new("demo").unwrap();
    store.put_project(&project).await.unwrap();
    let mut service = Service::new(&project.id, "web", SourceSpec::Dir { path: src }).unwrap();
    service.health_check = Some(HealthCheck {
        probe: Probe::Http { path: "/".into() },
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(30),
    });
    store.put_service(&service).await.unwrap();
    let (engine, runtime, proxy) = engine_on(store.clone(), dir).await;
    World {
        engine,
        runtime,
        proxy,
        store,
        dir: dir.to_path_buf(),
        service,
    }
}

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

async fn get(
    c: &TestClient,
    proxy: std::net::SocketAddr,
    host: &str,
) -> Result<(StatusCode, String), String> {
    send(c, proxy, host, None).await
}

/// A GET, or a POST of `body`.
async fn send(
    c: &TestClient,
    proxy: std::net::SocketAddr,
    host: &str,
    body: Option<&'static [u8]>,
) -> Result<(StatusCode, String), String> {
    let req = Request::builder()
        .method(if body.is_some() { "POST" } else { "GET" })
        .uri(format!("http://{proxy}/"))
        .header("host", host)
        .body(Full::new(Bytes::from_static(body.unwrap_or_default())))
        .unwrap();
    let resp = c.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn deploy(w: &World) -> Deployment {
    let dep = wharf_testkit::deploy(&w.engine, &w.service.id).await;
    assert_eq!(dep.state, DeploymentState::Live, "{dep:?}");
    dep
}

#[tokio::test]
async fn python_app_deploys_and_redeploys_under_load_without_dropping_a_request() {
    if !python_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let _teardown = Teardown(tmp.path().join("state"));
    let w = world(tmp.path()).await;
    let host = "web.demo.localhost";
    let addr = w.proxy.local_addr();
    let c = client();

    let first = deploy(&w).await;
    let (st, body) = get(&c, addr, host).await.unwrap();
    assert_eq!(st, StatusCode::OK);
    assert!(body.starts_with("v1 from "), "{body}");
    let (st, _) = get(&c, addr, "other.demo.localhost").await.unwrap();
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Steady load on loopback while v2 is deployed; bounded in count and time.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, v2, failures) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(std::sync::Mutex::new(Vec::<String>::new())),
    );
    let mut load = Vec::new();
    for post in [None, Some(&b"some form data"[..])] {
        let (stop, ok, v2, failures, c) = (
            stop.clone(),
            ok.clone(),
            v2.clone(),
            failures.clone(),
            c.clone(),
        );
        load.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            for _ in 0..200_000 {
                if stop.load(Ordering::SeqCst) || started.elapsed() > Duration::from_secs(120) {
                    break;
                }
                match send(&c, addr, host, post).await {
                    Ok((StatusCode::OK, body))
                        if (body.starts_with("v1 ") || body.starts_with("v2 "))
                            && (post.is_none() || body.contains("got 14 bytes")) =>
                    {
                        ok.fetch_add(1, Ordering::SeqCst);
                        if body.starts_with("v2 ") {
                            v2.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Ok((st, body)) => failures.lock().unwrap().push(format!("{st}: {body}")),
                    Err(e) => failures.lock().unwrap().push(e),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(w.dir.join("src/version.txt"), "v2").unwrap();
    let second = deploy(&w).await;
    // Keep the load on past the old instance's stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let (ok, v2) = (ok.load(Ordering::SeqCst), v2.load(Ordering::SeqCst));
    eprintln!(
        "redeploy under load: {ok} requests answered, {v2} by v2, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        ok > 50 && v2 > 0,
        "too little load to mean anything: {ok} ok, {v2} from v2"
    );
    let (_, body) = get(&c, addr, host).await.unwrap();
    assert!(body.starts_with("v2 from "), "{body}");

    // The old instance is gone (stopped after the switch), the new one runs.
    let old = first.instance.unwrap();
    assert_eq!(
        w.runtime.status(&old.id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let new = second.instance.unwrap();
    assert_eq!(
        w.runtime.list(&Labels::new()).await.unwrap(),
        vec![new.clone()]
    );
    let pid = w.runtime.pid(&new.id).unwrap().unwrap();

    // A control-plane restart: engine, runtime and proxy go away; the app stays up.
    let World {
        engine,
        runtime,
        proxy,
        store,
        dir,
        ..
    } = w;
    proxy.shutdown().await;
    drop(engine);
    drop(runtime);
    let (engine, runtime, proxy) = engine_on(store, &dir).await;
    let report = engine.recover().await.unwrap();
    assert!(
        report.restarted.is_empty() && report.removed_instances.is_empty(),
        "{report:?}"
    );
    assert_eq!(
        runtime.pid(&new.id).unwrap(),
        Some(pid),
        "the app was re-adopted, not restarted"
    );
    let (st, body) = get(&client(), proxy.local_addr(), host).await.unwrap();
    assert_eq!(st, StatusCode::OK);
    assert!(body.starts_with(&format!("v2 from {pid}")), "{body}");
    runtime.shutdown(Duration::from_secs(2)).await.unwrap();
    assert!(runtime.pid(&new.id).is_err());
}
