//! Route change -> first request served by the new upstream, per proxy, beside the
//! cost of the change itself (Caddy's admin calls; Traefik's atomic file write).
//!
//! Uses the proxies `scripts/setup-proxies` starts (same environment variables as the
//! tests); skips a proxy with a printed reason when it is absent. A plain `fn main`:
//! each round switches one route between two loopback upstreams and then sends
//! requests back to back until the new upstream answers. See `benches/README.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use wharf_benches::{route_switch, Switches};
use wharf_caddy::{CaddyOptions, CaddyRouter};
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

/// Prints what [`route_switch`] measured for proxy `name`, whose change is `what`.
fn print_switches(name: &str, what: &str, s: Switches) {
    report(name, what, s.change);
    report(name, "upsert -> first new answer", s.live);
    println!("{name:8} requests failed during switches: {}", s.failed);
    println!(
        "{name:8} new connections meanwhile: {} sent, {} without any response",
        s.load_sent, s.load_dropped
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
            let s = route_switch("caddy", &router, proxy, "bench.caddy.test", 200).await;
            print_switches("caddy", "upsert (admin API calls)", s);
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
            let s = route_switch("traefik", &router, proxy, "bench.traefik.test", 40).await;
            print_switches("traefik", "upsert (atomic file write)", s);
            let _ = std::fs::remove_file(&file);
            if let Some(state) = router.state_file() {
                let _ = std::fs::remove_file(state);
            }
        }
    }
}
