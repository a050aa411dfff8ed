//! `runtime = auto` decides once: a server whose services run on one runtime never
//! moves them to another because Docker answered (or did not) at a later start, and
//! says what it chose and why. The data folder and the secrets in it are the server
//! account's alone from the moment they exist.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::Server;
use serde_json::json;

/// Settings for a server on `auto` that finds no Docker engine.
const NO_DOCKER: &[(&str, &str)] = &[
    ("WHARF_RUNTIME", "auto"),
    ("WHARF_ROUTER", "builtin"),
    ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
];

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
}

#[tokio::test]
async fn auto_keeps_the_runtime_the_servers_services_run_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("wharf-data");

    // First start without Docker: host processes, recorded; a service is made.
    let mut s = Server::start_with(dir.path(), wharf_testkit::free_port(), NO_DOCKER);
    s.wait_ready(dir.path()).await;
    // 0700, or 0711 when each project runs as its own user (enter, never list).
    assert_eq!(
        mode(&data) & 0o766,
        0o700,
        "data_dir readable by other accounts"
    );
    for secret in ["admin-token", "secret-key"] {
        assert_eq!(mode(&data.join(secret)), 0o600, "{secret}");
    }
    let (status, b) = s
        .call(reqwest::Method::POST, "/projects", json!({"name": "shop"}))
        .await;
    assert_eq!(status, 201, "{b}");
    let body = json!({"source": {"image": "nginx:1"}, "port": 80});
    let (status, b) = s
        .call(reqwest::Method::PUT, "/projects/shop/services/web", body)
        .await;
    assert_eq!(status, 201, "{b}");
    drop(s);
    let choice = std::fs::read_to_string(data.join("runtime-choice")).unwrap();
    assert_eq!(choice.trim(), "process");

    // Started again, whether Docker answers now or not: still host processes, and
    // the banner says why.
    let settings = [("WHARF_RUNTIME", "auto"), ("WHARF_ROUTER", "builtin")];
    let mut s = Server::start_with(dir.path(), wharf_testkit::free_port(), &settings);
    s.wait_ready(dir.path()).await;
    drop(s);
    let text = log(dir.path());
    assert!(text.contains("auto never moves them"), "{text}");

    // Services recorded on Docker, and no Docker engine answers: the server refuses
    // to start rather than run them as host processes.
    std::fs::write(data.join("runtime-choice"), "docker\n").unwrap();
    let mut s = Server::start_with(dir.path(), wharf_testkit::free_port(), NO_DOCKER);
    let mut exited = None;
    for _ in 0..300 {
        if let Ok(Some(status)) = s.child.try_wait() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = exited.expect("wharf serve kept running without the Docker its services need");
    assert!(!status.success());
    let text = log(dir.path());
    assert!(
        text.contains("no Docker engine answers") && text.contains("runtime = process"),
        "{text}"
    );
}
