//! Test helpers: loopback upstreams that say who answered, and a client that sends
//! requests through a proxy with a Host header.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wharf_core::Endpoint;

/// Starts an HTTP/1.1 server on 127.0.0.1 that answers every request with 200 and
/// the body `name` (keep-alive supported). Runs until the test's runtime ends.
pub async fn upstream(name: &str) -> Endpoint {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let name = name.to_owned();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let name = name.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{}",
                            name.len(),
                            name
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

/// A client for requests through the proxy. It keeps no idle connections: the proxy
/// closes idle keep-alive connections when it reloads its config (other tests in the
/// binary change routes all the time), and a request sent on one fails half-way (seen
/// in CI). A browser would retry such a GET; a fresh connection per request avoids it.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// GET `http://<proxy>/<path>` with `Host: host`: (status, body).
///
/// A request that gets no response at all is sent once more, as a browser does with
/// an idempotent GET: every route change reloads Caddy, which re-binds its listeners
/// (SO_REUSEPORT) and so resets connections still queued on the old socket (about one
/// per reload at a few thousand new connections per second; see `benches/README.md`).
/// Other tests change routes on the shared Caddy at any moment. No response twice
/// fails, and so does a refused connection or a timeout at once: a reset queued
/// connection is neither.
pub async fn get(c: &reqwest::Client, proxy: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let send = || {
        c.get(format!("http://{proxy}{path}"))
            .header("Host", host)
            .send()
    };
    let resp = match send().await {
        Ok(resp) => resp,
        Err(e) if e.is_connect() || e.is_timeout() => {
            panic!("request to {proxy} for {host}: {e:?}")
        }
        Err(e) => {
            eprintln!("request to {proxy} for {host}: no response ({e:?}); sending again");
            send().await.unwrap_or_else(|e| {
                panic!("request to {proxy} for {host}: no response twice: {e:?}")
            })
        }
    };
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// Sends `n` requests and counts the bodies.
pub async fn spread(
    c: &reqwest::Client,
    proxy: SocketAddr,
    host: &str,
    n: usize,
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let (status, body) = get(c, proxy, host, "/").await;
        assert_eq!(status, 200, "{host}: {body}");
        *counts.entry(body).or_default() += 1;
    }
    counts
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A random suffix for names in a shared proxy.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}{:x}{n}", nanos ^ std::process::id())
}

/// The workspace root (tests run in the crate's directory).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where `scripts/setup-proxies` put the venv, configs and logs: `WHARF_CI_DIR`
/// (relative to the workspace root unless absolute), default `.wharf-ci`.
pub fn ci_dir() -> std::path::PathBuf {
    workspace_root().join(env_or("WHARF_CI_DIR", ".wharf-ci"))
}

/// `var` from the environment, or `default`.
pub fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}
