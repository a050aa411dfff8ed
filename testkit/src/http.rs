//! Requests through a proxy with a Host header, on reqwest (feature `http`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// A client for requests through a proxy. It keeps no idle connections: a proxy closes
/// idle keep-alive connections when it reloads its config (other tests change routes
/// all the time), and a request sent on one fails half-way. A browser would retry such
/// a GET; a fresh connection per request avoids it.
pub fn client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(10))
}

/// A [`client`] whose requests may take up to `timeout`.
pub fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(timeout)
        .build()
        .unwrap()
}

/// Whether `e` is a request that got no response although its connection was made:
/// what a Caddy reload does to a connection queued in that instant, and worth sending
/// once more. A refused connection or a timeout is not that.
pub fn reset_before_response(e: &reqwest::Error) -> bool {
    !e.is_connect() && !e.is_timeout()
}

/// GET `http://<proxy><path>` with `Host: host`: (status, body).
///
/// A request that gets no response at all is sent once more, as a browser does with
/// an idempotent GET: every route change reloads Caddy, which re-binds its listeners
/// (SO_REUSEPORT) and so resets connections still queued on the old socket (about one
/// per reload at a few thousand new connections per second; see `benches/README.md`).
/// No response twice fails, and so does a refused connection or a timeout at once.
pub async fn get(c: &reqwest::Client, proxy: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let send = || {
        c.get(format!("http://{proxy}{path}"))
            .header("Host", host)
            .send()
    };
    let resp = match send().await {
        Ok(resp) => resp,
        Err(e) if !reset_before_response(&e) => {
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

/// Sends `n` GETs for `host` and counts the bodies; each must answer 200.
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

/// Whether a Caddy admin API answers at `admin_url` (`http://host:port`).
pub async fn probe_caddy(admin_url: &str) -> Result<(), String> {
    client()
        .get(format!("{admin_url}/config/"))
        .send()
        .await
        .map(drop)
        .map_err(|e| format!("no Caddy admin API at {admin_url} ({e}); run scripts/setup-proxies"))
}
