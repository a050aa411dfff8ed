//! Canary and blue-green end to end, on `wharf serve` with host processes and each
//! router: the built-in proxy, the shared Caddy and the shared Traefik (the ones
//! `scripts/setup-proxies` starts; skipped, with the reason, when absent, and failed
//! under `WHARF_REQUIRE`). `wharf deploy --canary 10` puts v2 beside v1 and about 10 %
//! of 1,000 requests reach it; `wharf promote` leaves v2 alone serving and `wharf
//! abort` (of a v3 canary) leaves v2 alone serving, each under a steady load with 0
//! failed requests.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use wharf_testkit::http::probe_caddy;
use wharf_testkit::{
    caddy_admin_url, caddy_http_port, free_port, python_present, require, write_hello_app,
};

/// 1,000 requests at 10 %: the canary's count is binomial (n = 1000, p = 0.1) for a
/// router that picks at random, with a standard deviation of sqrt(1000 * 0.1 * 0.9)
/// = 9.5 requests. ±40 (10 % ± 4 %) is more than 4 standard deviations, so a correct
/// random router fails it about once in 30,000 runs, while a router that ignored the
/// weights (50 %) or gave the canary nothing (0 %) fails it every time. The three
/// routers here are in fact deterministic (smooth weighted round robin in the built-in
/// proxy and Traefik, Caddy's `weighted_round_robin` cycling over the 9:1 weights)
/// and land on 100; the band does not count on it.
const REQUESTS: usize = 1000;
const BAND: std::ops::RangeInclusive<usize> = 60..=140;

/// GETs `/` through the proxy on `port` with `Host: host`, `n` times (a new
/// connection each, as Caddy closes idle ones on reloads); the bodies, in order.
async fn sample(port: u16, host: &str, n: usize) -> Vec<String> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut bodies = Vec::with_capacity(n);
    for _ in 0..n {
        let get = || {
            http.get(format!("http://127.0.0.1:{port}/"))
                .header("host", host)
                .send()
        };
        let r = match get().await {
            Ok(r) => r,
            // A connection Caddy reset while reloading (another test's route change):
            // sent again once, as a browser would.
            Err(e) if wharf_testkit::http::reset_before_response(&e) => get().await.unwrap(),
            Err(e) => panic!("GET {host}: {e:?}"),
        };
        assert_eq!(r.status(), 200, "GET {host}");
        bodies.push(r.text().await.unwrap().trim().to_owned());
    }
    bodies
}

fn count(bodies: &[String], version: &str) -> usize {
    let want = format!("hello from {version}");
    bodies.iter().filter(|b| **b == want).count()
}

/// Until `host` answers `hello from <version>` on `port` (a file-provider router
/// applies a change a moment after it is written).
async fn until_serving(port: u16, host: &str, version: &str) {
    let want = format!("hello from {version}");
    for _ in 0..100 {
        let r = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/"))
            .header("host", host)
            .send()
            .await;
        if let Ok(r) = r {
            if r.status() == 200 && r.text().await.unwrap_or_default().trim() == want {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{host} never served {version}");
}

/// Runs `cli` (promote or abort) while a steady load runs through the proxy; the
/// load keeps going a moment after the command returned, across the old instances'
/// stop.
async fn under_load(server: &Server, port: u16, host: &str, args: &[&str]) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(steady_load(port, host.to_owned(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, out) = server.cli(args);
    assert!(ok, "wharf {args:?} failed:\n{out}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap()
}

/// The scenario, on a `wharf serve` whose router serves apps on `port`.
async fn canary_promote_abort(server: &Server, root: &Path, project: &str, port: u16) {
    let app = root.join(project).join("web");
    let host = format!("web.{project}.localhost");
    let deploy = |version: &str, canary: Option<&str>| {
        std::fs::write(app.join("version.txt"), format!("{version}\n")).unwrap();
        let mut args = vec!["deploy", app.to_str().unwrap()];
        if let Some(c) = canary {
            args.extend(["--canary", c]);
        }
        server.cli(&args)
    };
    write_hello_app(&app, "127.0.0.1", "v1");
    let (ok, out) = deploy("v1", None);
    assert!(ok, "wharf deploy failed:\n{out}");
    until_serving(port, &host, "v1").await;

    // v2 at 10 %, beside v1.
    let (ok, out) = deploy("v2", Some("10"));
    assert!(ok, "wharf deploy --canary 10 failed:\n{out}");
    assert!(out.contains("out as a canary"), "{out}");
    let (_, status) = server.cli(&["status", "-p", project]);
    assert!(status.contains("canary"), "{status}");
    until_serving(port, &host, "v2").await;
    let bodies = sample(port, &host, REQUESTS).await;
    let (v1, v2) = (count(&bodies, "v1"), count(&bodies, "v2"));
    assert_eq!(v1 + v2, REQUESTS, "only v1 and v2 answer");
    eprintln!("canary share on port {port}: v2 {v2} of {REQUESTS} (v1 {v1})");
    assert!(BAND.contains(&v2), "v2 got {v2} of {REQUESTS} (v1 {v1})");

    // Another deploy is refused while the canary is out.
    let (ok, out) = deploy("v9", None);
    assert!(!ok && out.contains("canary"), "{out}");

    // Promote: v2 alone serves, and nothing failed on the way.
    let load = under_load(
        server,
        port,
        &host,
        &["promote", "-p", project, "-s", "web"],
    )
    .await;
    assert_eq!(load.failed, 0, "failed requests during promote");
    assert!(load.bodies.contains("hello from v2\n"), "{:?}", load.bodies);
    let after = sample(port, &host, 50).await;
    assert_eq!(count(&after, "v2"), 50, "{after:?}");

    // A v3 canary, aborted: v2 alone serves again, nothing failed.
    let (ok, out) = deploy("v3", Some("50"));
    assert!(ok, "wharf deploy --canary 50 failed:\n{out}");
    until_serving(port, &host, "v3").await;
    let load = under_load(server, port, &host, &["abort", "-p", project, "-s", "web"]).await;
    assert_eq!(load.failed, 0, "failed requests during abort");
    let after = sample(port, &host, 50).await;
    assert_eq!(count(&after, "v2"), 50, "{after:?}");
    let (ok, out) = server.cli(&["abort", "-p", project, "-s", "web"]);
    assert!(!ok && out.contains("no canary"), "{out}");
}

fn project_name() -> String {
    format!("cn{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

#[tokio::test]
async fn canary_on_the_builtin_proxy() {
    if !python_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path());
    server.wait_ready(tmp.path()).await;
    let port = server.proxy_port;
    canary_promote_abort(&server, tmp.path(), &project_name(), port).await;
}

#[tokio::test]
async fn canary_on_caddy() {
    let admin = caddy_admin_url();
    if !require("caddy", probe_caddy(&admin).await) || !python_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = caddy_http_port();
    let settings = [
        ("WHARF_RUNTIME", "process"),
        ("WHARF_ROUTER", "caddy"),
        ("WHARF_CADDY_ADMIN", admin.as_str()),
    ];
    let mut server = Server::start_with(tmp.path(), port, &settings);
    server.via_caddy = true;
    server.wait_ready(tmp.path()).await;
    canary_promote_abort(&server, tmp.path(), &project_name(), port).await;
}

#[tokio::test]
async fn canary_on_traefik() {
    let Some((dynamic, web)) = shared_traefik().await else {
        return;
    };
    if !python_present() {
        return;
    }
    let _cleanup = TraefikCleanup(dynamic.clone());
    let tmp = tempfile::tempdir().unwrap();
    let settings = [
        ("WHARF_RUNTIME", "process"),
        ("WHARF_ROUTER", "traefik"),
        ("WHARF_TRAEFIK_DIR", dynamic.to_str().unwrap()),
    ];
    let mut server = Server::start_with(tmp.path(), free_port(), &settings);
    server.wait_ready(tmp.path()).await;
    canary_promote_abort(&server, tmp.path(), &project_name(), web).await;
}
