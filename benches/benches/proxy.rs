//! Requests per second and latency of the built-in proxy against a direct connection
//! to the same upstream (a minimal hyper server answering 2 bytes), over keep-alive
//! HTTP/1.1 on loopback, at 1 and 16 concurrent clients. Client, proxy and upstream
//! share the machine, so the proxy's figures include its CPU cost. When a `caddy`
//! binary is on `PATH` (or named by `WHARF_BENCH_CADDY`), Caddy proxying to the same
//! upstream is measured too (admin API off, plain HTTP).
//!
//! `cargo bench -p wharf-benches --bench proxy` (set `WHARF_BENCH_SECS` to change the
//! 5 s per run).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use wharf_core::proxy::ProxyRouter;
use wharf_core::*;
use wharf_testkit::{endpoint, route_to};

async fn upstream() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A Caddy process reverse-proxying `bench.localhost` to `upstream`; killed on drop.
struct Caddy {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: std::path::PathBuf,
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

async fn caddy(upstream: SocketAddr) -> Option<Caddy> {
    let bin = std::env::var("WHARF_BENCH_CADDY").unwrap_or_else(|_| "caddy".into());
    let version = std::process::Command::new(&bin)
        .arg("version")
        .output()
        .ok()?;
    if !version.status.success() {
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let dir = std::env::temp_dir().join(format!("wharf-bench-caddy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let config = format!(
        r#"{{"admin":{{"disabled":true}},"logging":{{"logs":{{"default":{{"level":"ERROR"}}}}}},
"apps":{{"http":{{"servers":{{"bench":{{"listen":["127.0.0.1:{port}"],"automatic_https":{{"disable":true}},
"routes":[{{"match":[{{"host":["bench.localhost"]}}],"handle":[{{"handler":"reverse_proxy","upstreams":[{{"dial":"{upstream}"}}]}}]}}]}}}}}}}}}}"#
    );
    let cfg = dir.join("caddy.json");
    std::fs::write(&cfg, config).ok()?;
    let child = std::process::Command::new(&bin)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("XDG_DATA_HOME", &dir)
        .env("XDG_CONFIG_HOME", &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let c = Caddy {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        _dir: dir,
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(c.addr).await.is_ok() {
            println!("caddy: {}", String::from_utf8_lossy(&version.stdout).trim());
            return Some(c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

struct Figures {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

async fn run(target: SocketAddr, host: &'static str, clients: usize, secs: u64) -> Figures {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                // Bounded: stops at the deadline or after 10 million requests.
                for _ in 0..10_000_000u64 {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let t = Instant::now();
                    let req = Request::get(format!("http://{target}/"))
                        .header("host", host)
                        .body(Empty::new())
                        .unwrap();
                    let resp = client.request(req).await.expect("request");
                    assert!(resp.status().is_success(), "{}", resp.status());
                    resp.into_body().collect().await.expect("body");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let took = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Figures {
        rps: all.len() as f64 / took,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once, briefly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs: u64 = std::env::var("WHARF_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 });
    wharf_benches::block_on_two_workers(async {
        let up = upstream().await;
        let router = ProxyRouter::new();
        let server = router.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        router
            .upsert(&route_to(
                "bench",
                "bench.localhost",
                &[(&endpoint(up), 100)],
            ))
            .await
            .unwrap();
        let proxy = server.local_addr();
        let caddy = caddy(up).await;
        let mut targets = vec![("direct", up), ("built-in proxy", proxy)];
        if let Some(c) = &caddy {
            targets.push(("caddy", c.addr));
        }
        // Warm up every path.
        for (_, t) in &targets {
            run(*t, "bench.localhost", 4, 1).await;
        }
        println!("| clients | path | requests/s | p50 | p99 |");
        println!("|---|---|---|---|---|");
        for clients in [1, 16] {
            for (name, target) in &targets {
                let f = run(*target, "bench.localhost", clients, secs).await;
                println!(
                    "| {clients} | {name} | {:.0} | {:.0} µs | {:.0} µs |",
                    f.rps,
                    f.p50.as_secs_f64() * 1e6,
                    f.p99.as_secs_f64() * 1e6
                );
            }
        }
        server.shutdown().await;
    });
}
