//! Route change -> first request served by the new upstream, per proxy, beside the
//! cost of the change itself (Caddy's admin calls; Traefik's atomic file write).
//!
//! Uses the proxies `scripts/setup-proxies` starts (same environment variables as the
//! tests); skips a proxy with a printed reason when it is absent. A plain `fn main`:
//! each round switches one route between two loopback upstreams and then sends
//! requests back to back until the new upstream answers. See `benches/README.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wharf_caddy::{CaddyOptions, CaddyRouter};
use wharf_core::{Endpoint, Labels, Route, RouteId, Router, TlsPolicy, Upstream};
use wharf_traefik::{TraefikOptions, TraefikRouter};

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

fn workspace_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

async fn upstream(name: &'static str) -> Endpoint {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                            name.len()
                        );
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    Endpoint {
        host: "127.0.0.1".into(),
        port,
    }
}

fn route(host: &str, to: &Endpoint) -> Route {
    Route {
        id: RouteId("bench-switch".into()),
        hosts: vec![host.into()],
        path_prefix: None,
        upstreams: vec![Upstream {
            endpoint: to.clone(),
            weight: 1,
        }],
        tls: TlsPolicy::None,
        labels: Labels::new(),
    }
}

/// (status, body); status 0 when the request failed.
async fn body(c: &reqwest::Client, proxy: SocketAddr, host: &str) -> (u16, String) {
    let resp = c
        .get(format!("http://{proxy}/"))
        .header("Host", host)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    match resp {
        Ok(r) => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            if std::env::var_os("BENCH_DEBUG").is_some() {
                eprintln!("{host}: {status} {text:?}");
            }
            (status.as_u16(), text)
        }
        Err(e) => {
            if std::env::var_os("BENCH_DEBUG").is_some() {
                eprintln!("{host}: {e}");
            }
            (0, String::new())
        }
    }
}

/// (change, change -> first request served by the new upstream) per round, and the
/// number of requests answered neither by the old nor by the new upstream.
async fn measure(
    name: &str,
    router: &dyn Router,
    proxy: SocketAddr,
    host: &str,
    rounds: usize,
) -> (Vec<Duration>, Vec<Duration>, usize) {
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let (a, b) = (upstream("a").await, upstream("b").await);
    // Warm up: the route exists and serves "a".
    router.upsert(&route(host, &a)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while body(&c, proxy, host).await.1 != "a" {
        assert!(Instant::now() < deadline, "{name}: route never served");
    }
    let (mut change, mut live, mut failed) = (Vec::new(), Vec::new(), 0);
    for i in 0..rounds {
        let (to, want) = if i % 2 == 0 { (&b, "b") } else { (&a, "a") };
        let start = Instant::now();
        router.upsert(&route(host, to)).await.unwrap();
        change.push(start.elapsed());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, text) = body(&c, proxy, host).await;
            if text == want {
                break;
            }
            if status != 200 {
                failed += 1;
            }
            assert!(Instant::now() < deadline, "{name}: switch never served");
        }
        live.push(start.elapsed());
    }
    router
        .remove(&RouteId("bench-switch".into()))
        .await
        .unwrap();
    (change, live, failed)
}

fn report(name: &str, what: &str, mut d: Vec<Duration>) {
    d.sort();
    let at = |q: f64| d[((d.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:8} {what:34} n={:4} min {:>9.2?} median {:>9.2?} p90 {:>9.2?} max {:>9.2?}",
        d.len(),
        d[0],
        at(0.5),
        at(0.9),
        d[d.len() - 1]
    );
}

async fn probe(url: &str) -> Result<(), String> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .map(drop)
        .map_err(|e| format!("{url}: {e}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let admin = env_or("WHARF_CADDY_ADMIN", "http://127.0.0.1:20190");
    let admin = admin
        .strip_prefix("http://")
        .unwrap_or(&admin)
        .trim_end_matches('/');
    match probe(&format!("http://{admin}/config/")).await {
        Err(why) => println!("caddy: skipped, absent ({why}); run scripts/setup-proxies"),
        Ok(()) => {
            let port = env_or("WHARF_CADDY_HTTP_PORT", "20180");
            let opts = CaddyOptions {
                http_listen: format!("127.0.0.1:{port}"),
                https_listen: Some(format!(
                    "127.0.0.1:{}",
                    env_or("WHARF_CADDY_HTTPS_PORT", "20443")
                )),
                ..CaddyOptions::new(format!("http://{admin}"))
            };
            let router = CaddyRouter::new(opts).unwrap();
            let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let (change, live, failed) =
                measure("caddy", &router, proxy, "bench.caddy.test", 200).await;
            report("caddy", "upsert (admin API calls)", change);
            report("caddy", "upsert -> first new answer", live);
            println!("caddy    requests failed during switches: {failed}");
        }
    }

    let api = env_or("WHARF_TRAEFIK_API_PORT", "20281");
    let dir = std::env::var_os("WHARF_TRAEFIK_DYNAMIC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root()
                .join(env_or("WHARF_CI_DIR", ".wharf-ci"))
                .join("traefik/dynamic")
        });
    match probe(&format!("http://127.0.0.1:{api}/ping")).await {
        Err(why) => println!("traefik: skipped, absent ({why}); run scripts/setup-proxies"),
        Ok(()) if !dir.is_dir() => {
            println!("traefik: skipped, no watched directory {}", dir.display())
        }
        Ok(()) => {
            let file = dir.join("bench-switch.yaml");
            let router = TraefikRouter::with_file(TraefikOptions::default(), &file)
                .await
                .unwrap();
            let port = env_or("WHARF_TRAEFIK_HTTP_PORT", "20280");
            let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let (change, live, failed) =
                measure("traefik", &router, proxy, "bench.traefik.test", 40).await;
            report("traefik", "upsert (atomic file write)", change);
            report("traefik", "upsert -> first new answer", live);
            println!("traefik  requests failed during switches: {failed}");
            let _ = std::fs::remove_file(&file);
            if let Some(state) = router.state_file() {
                let _ = std::fs::remove_file(state);
            }
        }
    }
}
