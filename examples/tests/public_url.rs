//! The URL users are told is one that answers: `wharf serve` routing through the shared
//! Traefik (the one `scripts/setup-proxies` starts, found through
//! `WHARF_TRAEFIK_HTTP_PORT` (20280, entry point `web`), `WHARF_TRAEFIK_API_PORT`
//! (20281) and `WHARF_TRAEFIK_DYNAMIC_DIR` (`$WHARF_CI_DIR/traefik/dynamic`)) with
//! `public_url` naming Traefik's entry point. The API's `url` carries that port (not
//! `proxy_listen`'s, which Traefik never listens on) and the app answers there.

mod common;

use std::time::Duration;

use common::*;
use wharf_testkit::{free_port, python_present, write_hello_app};

/// GET `url` through its host's port on loopback (`*.localhost` names need no DNS
/// here): polled, since Traefik applies a changed file a moment later.
async fn get_until_ok(url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, port) = rest.rsplit_once(':').unwrap();
    let mut last = (0, String::new());
    for _ in 0..100 {
        let r = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/"))
            .header("host", host)
            .send()
            .await;
        if let Ok(r) = r {
            last = (r.status().as_u16(), r.text().await.unwrap_or_default());
            if last.0 == 200 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

#[tokio::test]
async fn with_traefik_the_service_url_carries_the_entry_points_port_and_answers() {
    let Some((dynamic, web)) = shared_traefik().await else {
        return;
    };
    if !python_present() {
        return;
    }
    let _cleanup = TraefikCleanup(dynamic.clone());
    let tmp = tempfile::tempdir().unwrap();
    let project = format!("pu{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let app = tmp.path().join(&project).join("web");
    write_hello_app(&app, "127.0.0.1", "v1");

    // proxy_listen gets a port nothing listens on: Traefik serves on its entry point.
    let public_url = format!("http://localhost:{web}");
    let settings = [
        ("WHARF_RUNTIME", "process"),
        ("WHARF_ROUTER", "traefik"),
        ("WHARF_TRAEFIK_DIR", dynamic.to_str().unwrap()),
        ("WHARF_PUBLIC_URL", public_url.as_str()),
    ];
    let mut server = Server::start_with(tmp.path(), free_port(), &settings);
    server.wait_ready(tmp.path()).await;

    let (ok, out) = server.cli(&["deploy", app.to_str().unwrap()]);
    assert!(ok, "wharf deploy failed:\n{out}");
    let expected = format!("http://web.{project}.localhost:{web}");
    assert!(out.contains(&format!("live at {expected}")), "{out}");

    let (status, body) = server
        .call(
            reqwest::Method::GET,
            &format!("/projects/{project}/services/web"),
            serde_json::Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["url"], expected.as_str(), "{body}");
    // Traefik may run as another user: the server's umask (077) does not hide its
    // configuration from it.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dynamic.join("wharf.yaml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "wharf.yaml mode {mode:o}");
    assert_eq!(
        get_until_ok(&expected).await,
        (200, "hello from v1\n".into())
    );
    // `wharf serve` said which URL base it uses, and why.
    let log = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap();
    assert!(
        log.contains(&format!(
            "urls: http://<service>.<project>.localhost:{web} (public_url)"
        )),
        "{log}"
    );
}
