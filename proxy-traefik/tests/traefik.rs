//! TraefikRouter against a real Traefik (3.x): the Router conformance kit and traffic
//! through the proxy, via the file provider and the HTTP provider.
//!
//! The shared Traefik is the one `scripts/setup-proxies` starts; tests find it through
//! `WHARF_TRAEFIK_HTTP_PORT` (default 20280, entry point `web`),
//! `WHARF_TRAEFIK_HTTPS_PORT` (20282, `websecure`), `WHARF_TRAEFIK_API_PORT` (20281,
//! `/ping`) and `WHARF_TRAEFIK_DYNAMIC_DIR` (`$WHARF_CI_DIR/traefik/dynamic`, the watched
//! directory). The restart test starts its own `WHARF_TRAEFIK_BIN` (default
//! `$WHARF_CI_DIR/venv/bin/traefik`) on free ports.
//!
//! Traefik applies configuration asynchronously (file watch, provider poll), so tests
//! wait for the expected answer, with a generous limit, instead of asserting on time.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use wharf_core::{conformance, Router, TlsPolicy};
use wharf_testkit::http::{client, get, spread};
use wharf_testkit::{ci_dir, env_or, free_port, require, route_to, unique, upstream};
use wharf_traefik::{TraefikOptions, TraefikRouter, HTTP_PROVIDER_PATH};

fn port(var: &str, default: &str) -> u16 {
    env_or(var, default).parse().unwrap()
}
fn dynamic_dir() -> PathBuf {
    std::env::var_os("WHARF_TRAEFIK_DYNAMIC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ci_dir().join("traefik/dynamic"))
}
fn traefik_bin() -> PathBuf {
    std::env::var_os("WHARF_TRAEFIK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| ci_dir().join("venv/bin/traefik"))
}

async fn ping(api_port: u16) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{api_port}/ping");
    match client().get(&url).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("{url} answered {}", r.status())),
        Err(e) => Err(format!(
            "no Traefik at {url} ({e}); run scripts/setup-proxies"
        )),
    }
}

/// A file-provider router on the shared Traefik writing its own file, or `None` (skip).
async fn shared(name: &str) -> Option<(TraefikRouter, SocketAddr, Cleanup)> {
    let probe = ping(port("WHARF_TRAEFIK_API_PORT", "20281")).await;
    let probe = probe.and_then(|()| {
        let d = dynamic_dir();
        if d.is_dir() {
            Ok(())
        } else {
            Err(format!("no watched directory {}", d.display()))
        }
    });
    if !require("traefik", probe) {
        return None;
    }
    let file = dynamic_dir().join(format!("{}.yaml", unique(name)));
    let router = TraefikRouter::with_file(TraefikOptions::default(), &file)
        .await
        .unwrap();
    let proxy = SocketAddr::from(([127, 0, 0, 1], port("WHARF_TRAEFIK_HTTP_PORT", "20280")));
    let cleanup = Cleanup(vec![file.clone(), router.state_file().unwrap()]);
    Some((router, proxy, cleanup))
}

/// Removes the test's files from the shared watched directory.
struct Cleanup(Vec<PathBuf>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Waits until a request for `host` gets `want` (status, body); panics after 30 s.
async fn until(proxy: SocketAddr, host: &str, path: &str, want: (u16, &str)) {
    let c = client();
    let mut last = (0, String::new());
    for _ in 0..600 {
        if let Ok(resp) = c
            .get(format!("http://{proxy}{path}"))
            .header("Host", host)
            .send()
            .await
        {
            let status = resp.status().as_u16();
            last = (status, resp.text().await.unwrap_or_default());
            if last.0 == want.0 && (want.0 != 200 || last.1 == want.1) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{host}{path} via {proxy}: wanted {want:?}, last answer {last:?}");
}

#[tokio::test]
async fn conformance_kit() {
    let Some((router, _, _cleanup)) = shared("kit").await else {
        return;
    };
    let up = upstream("kit").await;
    conformance::router::run_all(&router, "traefik-kit.test", up).await;
}

#[tokio::test]
async fn traffic_switch_weights_and_removal_via_file_provider() {
    let Some((router, proxy, _cleanup)) = shared("traffic").await else {
        return;
    };
    let c = client();
    let (a, b) = (upstream("A").await, upstream("B").await);
    let id = unique("traffic");
    let host = format!("{id}.traefik.test");
    assert_eq!(get(&c, proxy, &host, "/").await.0, 404);

    let mut r = route_to(&id, &host, &[(&a, 1)]);
    router.upsert(&r).await.unwrap();
    until(proxy, &host, "/", (200, "A")).await;

    r = route_to(&id, &host, &[(&b, 1)]);
    router.upsert(&r).await.unwrap();
    until(proxy, &host, "/", (200, "B")).await;

    r = route_to(&id, &host, &[(&a, 3), (&b, 1)]);
    router.upsert(&r).await.unwrap();
    until(proxy, &host, "/", (200, "A")).await;
    let counts = spread(&c, proxy, &host, 1000).await;
    let on_a = counts.get("A").copied().unwrap_or(0);
    assert!(
        (650..=850).contains(&on_a),
        "weights 3:1 should send about 750 of 1000 requests to A: {counts:?}"
    );

    let mut api = route_to(&format!("{id}-api"), &host, &[(&a, 1)]);
    api.upstreams[0].endpoint = a.clone();
    api.path_prefix = Some("/api".into());
    r = route_to(&id, &host, &[(&b, 1)]);
    router.upsert(&r).await.unwrap();
    router.upsert(&api).await.unwrap();
    until(proxy, &host, "/api/x", (200, "A")).await;
    until(proxy, &host, "/apix", (200, "B")).await;

    router.remove(&api.id).await.unwrap();
    router.remove(&r.id).await.unwrap();
    until(proxy, &host, "/", (404, "")).await;
}

#[tokio::test]
async fn internal_tls_router_answers_https() {
    let Some((router, _, _cleanup)) = shared("tls").await else {
        return;
    };
    let up = upstream("tls").await;
    let id = unique("tls");
    let host = format!("{id}.traefik.test");
    let mut r = route_to(&id, &host, &[(&up, 1)]);
    r.tls = TlsPolicy::Internal;
    router.upsert(&r).await.unwrap();
    let https = port("WHARF_TRAEFIK_HTTPS_PORT", "20282");
    let mut last = String::new();
    for _ in 0..300 {
        // Traefik's default certificate is self-signed: -k, the point is that the TLS
        // router exists and routes.
        let out = tokio::process::Command::new("curl")
            .args(["-sSk", "--max-time", "5", "--resolve"])
            .arg(format!("{host}:{https}:127.0.0.1"))
            .arg(format!("https://{host}:{https}/"))
            .output()
            .await
            .expect("curl is needed for the HTTPS test");
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        if last == "tls" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, "tls");
    router.remove(&r.id).await.unwrap();
}

/// A Traefik of the test's own: file provider on `dir`, HTTP provider polling
/// `http_endpoint` every second.
struct OwnTraefik {
    child: tokio::process::Child,
    web: u16,
    api: u16,
}

impl OwnTraefik {
    async fn start(dir: &Path, http_endpoint: &str, web: u16, api: u16) -> OwnTraefik {
        let dynamic = dir.join("dynamic");
        std::fs::create_dir_all(&dynamic).unwrap();
        let config = dir.join("traefik.yml");
        std::fs::write(
            &config,
            format!(
                r#"global:
  checkNewVersion: false
  sendAnonymousUsage: false
entryPoints:
  web:
    address: "127.0.0.1:{web}"
  traefik:
    address: "127.0.0.1:{api}"
ping:
  entryPoint: traefik
providers:
  providersThrottleDuration: 100ms
  file:
    directory: "{}"
    watch: true
  http:
    endpoint: "{http_endpoint}"
    pollInterval: "1s"
"#,
                dynamic.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join("traefik.log"))
            .unwrap();
        let child = tokio::process::Command::new(traefik_bin())
            .arg(format!("--configFile={}", config.display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        for _ in 0..300 {
            if ping(api).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ping(api).await.expect("own traefik did not start");
        OwnTraefik { child, web, api }
    }

    fn proxy(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.web))
    }
}

#[tokio::test]
async fn http_provider_and_restart_restore_routes() {
    let bin = traefik_bin();
    let present = if bin.exists() {
        Ok(())
    } else {
        Err(format!(
            "no Traefik binary at {}; run scripts/setup-proxies",
            bin.display()
        ))
    };
    if !require("traefik", present) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (upstream("via-http").await, upstream("via-file").await);

    // Wharf's side: an HTTP-provider router served by axum, and a file router.
    let http_router = TraefikRouter::new(TraefikOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!(
        "http://{}{HTTP_PROVIDER_PATH}",
        listener.local_addr().unwrap()
    );
    tokio::spawn({
        let app = http_router.http_provider_app();
        async move { axum::serve(listener, app).await.unwrap() }
    });
    let file = dir.path().join("dynamic/wharf.yaml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let file_router = TraefikRouter::with_file(TraefikOptions::default(), &file)
        .await
        .unwrap();

    let traefik = OwnTraefik::start(dir.path(), &endpoint, free_port(), free_port()).await;
    let via_http = route_to("viahttp", "http.restart.test", &[(&a, 1)]);
    let via_file = route_to("viafile", "file.restart.test", &[(&b, 1)]);
    http_router.upsert(&via_http).await.unwrap();
    file_router.upsert(&via_file).await.unwrap();
    until(traefik.proxy(), "http.restart.test", "/", (200, "via-http")).await;
    until(traefik.proxy(), "file.restart.test", "/", (200, "via-file")).await;

    // Restart Traefik: both providers give the routes back.
    let (web, api) = (traefik.web, traefik.api);
    let mut child = traefik.child;
    child.kill().await.unwrap();
    let traefik = OwnTraefik::start(dir.path(), &endpoint, web, api).await;
    until(traefik.proxy(), "http.restart.test", "/", (200, "via-http")).await;
    until(traefik.proxy(), "file.restart.test", "/", (200, "via-file")).await;

    // Restart Wharf: a new file router reads its routes back; re-applying them (as the
    // engine does from its store) is idempotent and keeps them served.
    drop(file_router);
    let file_router = TraefikRouter::with_file(TraefikOptions::default(), &file)
        .await
        .unwrap();
    assert_eq!(file_router.list().await.unwrap(), vec![via_file.clone()]);
    let fresh_http = TraefikRouter::new(TraefikOptions::default());
    assert!(fresh_http.list().await.unwrap().is_empty());
    file_router.upsert(&via_file).await.unwrap();
    http_router.upsert(&via_http).await.unwrap();
    until(traefik.proxy(), "http.restart.test", "/", (200, "via-http")).await;
    until(traefik.proxy(), "file.restart.test", "/", (200, "via-file")).await;

    // Removal through the HTTP provider reaches Traefik at the next poll.
    http_router.remove(&via_http.id).await.unwrap();
    until(traefik.proxy(), "http.restart.test", "/", (404, "")).await;
}
