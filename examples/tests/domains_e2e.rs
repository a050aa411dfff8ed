//! Custom domains end to end: the real `wharf serve` (host runtime, built-in proxy)
//! checks each domain against a real DNS server (dnsmasq on loopback, authoritative
//! for `.test`) before routing it:
//! - a CNAME to the service's generated hostname proves a domain at once;
//! - an apex domain is proven by the TXT record `_wharf-challenge.<domain>` holding
//!   the token Wharf handed out, once it is published;
//! - a CNAME pointing elsewhere proves nothing, and the domain is not routed;
//! - a domain is claimed by one service only, until its owner repoints its CNAME at
//!   another service, which may then take it over; names under the base domain are
//!   refused; removing a domain unroutes it.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use common::*;
use wharf_testkit::{
    free_port, free_port_udp, python_present, require, write_hello_app, KillOnDrop,
};

/// Claims `domain` for the service whose domains are at `path`: (status, body).
async fn claim(server: &Server, path: &str, domain: &str) -> (u16, serde_json::Value) {
    let body = json!({ "domain": domain });
    server.call(reqwest::Method::POST, path, body).await
}

/// dnsmasq serving fixed records on a loopback port (dies with the value).
struct Dns {
    child: KillOnDrop,
    port: u16,
}

fn dnsmasq() -> Option<&'static str> {
    ["dnsmasq", "/usr/sbin/dnsmasq"].into_iter().find(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn dnsmasq_present() -> bool {
    let probe = dnsmasq()
        .map(drop)
        .ok_or_else(|| "dnsmasq is not installed; run scripts/setup-dns".to_owned());
    require("dnsmasq", probe)
}

impl Dns {
    /// Serves `records` (dnsmasq options such as `--cname=a,b`) on `port`, answering
    /// NXDOMAIN for every other name under `.test`.
    async fn start(port: u16, records: &[String]) -> Dns {
        let child = Command::new(dnsmasq().unwrap())
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--pid-file=",
                "--local=/test/",
                "--host-record=web.shop.apps.test,127.0.0.1",
                "--host-record=elsewhere.test,127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut dns = Dns {
            child: KillOnDrop(child),
            port,
        };
        // Ready once it answers a query for its own record.
        let server = format!("127.0.0.1:{port}").parse().unwrap();
        for _ in 0..100 {
            let probe = wharf_server::dns::lookup(
                server,
                "web.shop.apps.test",
                wharf_server::dns::RecordType::Cname,
            );
            if tokio::time::timeout(Duration::from_millis(500), probe)
                .await
                .is_ok_and(|r| r.is_ok())
            {
                return dns;
            }
            if let Ok(Some(status)) = dns.child.0.try_wait() {
                let mut err = String::new();
                use std::io::Read;
                dns.child
                    .0
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("dnsmasq exited {status}: {err}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("dnsmasq did not answer on port {port}");
    }
}

impl Dns {
    /// Stops this server and serves `records` instead, on the same port.
    async fn with_records(self, records: &[String]) -> Dns {
        let port = self.port;
        drop(self);
        Dns::start(port, records).await
    }
}

#[tokio::test]
async fn custom_domains_are_routed_once_dns_proves_them() {
    if !python_present() || !dnsmasq_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dns_port = free_port_udp();
    let mut dns = Dns::start(
        dns_port,
        &[
            "--cname=www.example-shop.test,web.shop.apps.test".into(),
            "--cname=wrong.test,elsewhere.test".into(),
        ],
    )
    .await;

    let app = tmp.path().join("shop").join("web");
    write_hello_app(&app, "127.0.0.1", "v1");
    let dns_addr = format!("127.0.0.1:{}", dns.port);
    let mut server = Server::start_with(
        tmp.path(),
        free_port(),
        &[
            ("WHARF_RUNTIME", "process"),
            ("WHARF_ROUTER", "builtin"),
            ("WHARF_BASE_DOMAIN", "apps.test"),
            ("WHARF_DNS_SERVER", dns_addr.as_str()),
        ],
    );
    server.wait_ready(tmp.path()).await;
    let (ok, out) = server.cli(&["deploy", app.to_str().unwrap()]);
    assert!(ok, "deploy failed:\n{out}");
    assert_eq!(
        server.get("web.shop.apps.test").await,
        (200, "hello from v1\n".into())
    );
    let domains = "/projects/shop/services/web/domains";

    // A CNAME to the generated hostname proves the domain: routed at once.
    let (status, body) = claim(&server, domains, "WWW.Example-Shop.test").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["domain"], "www.example-shop.test");
    assert_eq!(body["verified"], true);
    assert_eq!(
        server.get("www.example-shop.test").await,
        (200, "hello from v1\n".into())
    );

    // A CNAME pointing elsewhere proves nothing: pending, not routed, and told why.
    let (status, body) = claim(&server, domains, "wrong.test").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["verified"], false);
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("elsewhere.test"), "{reason}");
    assert_eq!(server.get("wrong.test").await.0, 404);

    // An apex domain: pending until the TXT record with its token is published.
    let (status, body) = claim(&server, domains, "apex.test").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["verify"]["txt"]["name"], "_wharf-challenge.apex.test");
    let txt = body["verify"]["txt"]["value"].as_str().unwrap().to_owned();
    assert!(txt.starts_with("wharf-verify="), "{txt}");
    let verify_path = format!("{domains}/apex.test/verify");
    let verify = || server.call(reqwest::Method::POST, &verify_path, json!(null));
    let (status, body) = verify().await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "domain_unverified");
    assert_eq!(server.get("apex.test").await.0, 404);
    // A TXT record with another token does not do either.
    dns = dns
        .with_records(&[
            "--cname=www.example-shop.test,web.shop.apps.test".into(),
            "--txt-record=_wharf-challenge.apex.test,wharf-verify=not-the-token".into(),
        ])
        .await;
    let (status, body) = verify().await;
    assert_eq!(status, 409, "{body}");
    let dns = dns
        .with_records(&[
            "--cname=www.example-shop.test,web.shop.apps.test".into(),
            format!("--txt-record=_wharf-challenge.apex.test,{txt}"),
        ])
        .await;
    let (status, body) = verify().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server.get("apex.test").await,
        (200, "hello from v1\n".into())
    );

    // The listing says which are proven.
    let (status, list) = server.read(domains).await;
    assert_eq!(status, 200);
    let proven: Vec<(&str, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["domain"].as_str().unwrap(), d["verified"] == true))
        .collect();
    assert_eq!(
        proven,
        [
            ("apex.test", true),
            ("wrong.test", false),
            ("www.example-shop.test", true)
        ]
    );

    // The CLI says the same, and what to publish for a pending one.
    let (ok, out) = server.cli(&["domains", "ls", "-p", "shop", "-s", "web"]);
    assert!(ok, "{out}");
    assert!(out.contains("apex.test  routed"), "{out}");
    assert!(out.contains("wrong.test  waiting for DNS"), "{out}");
    assert!(
        out.contains("CNAME wrong.test -> web.shop.apps.test"),
        "{out}"
    );
    let (ok, out) = server.cli(&["domains", "add", "new.test", "-p", "shop", "-s", "web"]);
    assert!(!ok, "a pending domain is not a success: {out}");
    assert!(out.contains("TXT _wharf-challenge.new.test"), "{out}");

    // One service per domain; generated names are not for claiming.
    let api_app = tmp.path().join("shop").join("api");
    write_hello_app(&api_app, "127.0.0.1", "api");
    let (ok, out) = server.cli(&["deploy", api_app.to_str().unwrap()]);
    assert!(ok, "{out}");
    let other = "/projects/shop/services/api/domains";
    let (status, body) = claim(&server, other, "www.example-shop.test").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    // An unproven claim blocks nobody: api takes wrong.test over from web.
    let (status, body) = claim(&server, other, "wrong.test").await;
    assert_eq!(status, 202, "{body}");
    let (_, list) = server.read(domains).await;
    assert!(
        !list.to_string().contains("wrong.test"),
        "web still lists wrong.test: {list}"
    );
    let (status, body) = claim(&server, other, "web.shop.apps.test").await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = claim(&server, other, "bad..name").await;
    assert_eq!(status, 400);

    // Removing a domain unroutes it and frees it.
    assert_eq!(
        server
            .delete(&format!("{domains}/www.example-shop.test"))
            .await,
        204
    );
    assert_eq!(server.get("www.example-shop.test").await.0, 404);
    assert_eq!(
        server.get("apex.test").await,
        (200, "hello from v1\n".into())
    );
    let (status, body) = claim(&server, other, "www.example-shop.test").await;
    assert_eq!(
        status, 202,
        "now free, but its CNAME names web, not api: {body}"
    );

    // DNS stays the authority: a proven domain moves when its owner repoints it.
    let api_host = "--host-record=api.shop.apps.test,127.0.0.1".to_owned();
    let apex_txt = format!("--txt-record=_wharf-challenge.apex.test,{txt}");
    let dns = dns
        .with_records(&[
            api_host.clone(),
            apex_txt.clone(),
            "--cname=moving.test,web.shop.apps.test".into(),
        ])
        .await;
    let (status, body) = claim(&server, domains, "moving.test").await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = claim(&server, other, "moving.test").await;
    assert_eq!(status, 409, "DNS still names web: {body}");
    let why = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        why.contains("make moving.test a CNAME for api.shop.apps.test"),
        "{body}"
    );
    assert_eq!(
        server.get("moving.test").await,
        (200, "hello from v1\n".into())
    );
    let dns = dns
        .with_records(&[
            api_host,
            apex_txt,
            "--cname=moving.test,api.shop.apps.test".into(),
        ])
        .await;
    let (status, body) = claim(&server, other, "moving.test").await;
    assert_eq!(status, 201, "the CNAME now names api: {body}");
    assert_eq!(body["verified"], true);
    assert_eq!(
        server.get("moving.test").await,
        (200, "hello from api\n".into())
    );
    let (_, list) = server.read(domains).await;
    assert!(
        !list.to_string().contains("moving.test"),
        "web still lists moving.test: {list}"
    );
    assert_eq!(
        server.get("apex.test").await,
        (200, "hello from v1\n".into()),
        "web keeps its other domains"
    );
    // And web cannot take it back while DNS names api.
    let (status, body) = claim(&server, domains, "moving.test").await;
    assert_eq!(status, 409, "{body}");
    drop(dns);
}
