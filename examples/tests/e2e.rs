//! The `wharf` binary end to end on the embedded defaults: `wharf serve` with the
//! host-process runtime and the built-in proxy, `wharf deploy` of a python3 app, HTTP
//! 200 through the proxy at `<service>.<project>.localhost`, then a redeploy and a
//! rollback served by the same hostname.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wharf_core::conformance::require;

const APP: &str = r#"
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

VERSION = open("version.txt").read().strip()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from {VERSION}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn python_present() -> bool {
    let probe = Command::new("python3")
        .arg("--version")
        .output()
        .map_err(|e| format!("python3 cannot run: {e}"))
        .and_then(|o| {
            o.status
                .success()
                .then_some(())
                .ok_or_else(|| "python3 --version failed".to_owned())
        });
    require("python3", probe)
}

/// The server process and every app process it started die with the test.
struct Server {
    child: Child,
    data: PathBuf,
    api: String,
    proxy_port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        wharf_core::process::kill_recorded(&self.data.join("runtime"));
    }
}

impl Server {
    /// Starts `wharf serve` in `dir` on its defaults but for the ports, as the README
    /// does: the data folder is `./wharf-data`, and the CLI (run in `dir` too) finds
    /// the operator token there.
    fn start(dir: &Path) -> Server {
        let proxy_port = free_port();
        Server::start_with(
            dir,
            proxy_port,
            &[("WHARF_RUNTIME", "process"), ("WHARF_ROUTER", "builtin")],
        )
    }

    /// As [`Server::start`], with apps served on `proxy_port` and more settings.
    fn start_with(dir: &Path, proxy_port: u16, settings: &[(&str, &str)]) -> Server {
        let data = dir.join("wharf-data");
        let api_port = free_port();
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .arg("serve")
            .current_dir(dir)
            .env_remove("WHARF_DATA_DIR")
            .env("WHARF_LISTEN", format!("127.0.0.1:{api_port}"))
            .env("WHARF_PROXY_LISTEN", format!("127.0.0.1:{proxy_port}"))
            .envs(settings.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Server {
            child,
            data,
            api: format!("http://127.0.0.1:{api_port}"),
            proxy_port,
        }
    }

    async fn wait_ready(&mut self, dir: &Path) {
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = http.get(format!("{}/v1/health", self.api)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "wharf serve exited {status}: {}",
                    std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("wharf serve did not answer");
    }

    fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(args)
            .env("WHARF_SERVER", &self.api)
            .current_dir(self.data.parent().unwrap())
            .env_remove("WHARF_DATA_DIR")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    async fn get(&self, host: &str) -> (u16, String) {
        let r = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/", self.proxy_port))
            .header("host", host)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

#[tokio::test]
async fn serve_then_deploy_a_python_app_answers_through_the_builtin_proxy() {
    if !python_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("shop").join("web");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("app.py"), APP).unwrap();
    std::fs::write(app.join("version.txt"), "v1\n").unwrap();

    let mut server = Server::start(tmp.path());
    server.wait_ready(tmp.path()).await;

    // Project and service default to the folder names: shop / web.
    let (ok, out) = server.cli(&["deploy", app.to_str().unwrap()]);
    assert!(ok, "wharf deploy failed:\n{out}");
    let host = format!("web.shop.localhost:{}", server.proxy_port);
    assert!(out.contains(&format!("live at http://{host}")), "{out}");
    assert_eq!(server.get(&host).await, (200, "hello from v1\n".into()));

    // Unknown hosts get the proxy's 404.
    assert_eq!(server.get("nothing.shop.localhost").await.0, 404);

    // A redeploy switches the same hostname to the new release.
    std::fs::write(app.join("version.txt"), "v2\n").unwrap();
    let (ok, out) = server.cli(&["deploy", app.to_str().unwrap()]);
    assert!(ok, "second deploy failed:\n{out}");
    assert_eq!(server.get(&host).await, (200, "hello from v2\n".into()));

    // Rollback brings v1 back without a rebuild.
    let (ok, out) = server.cli(&["rollback", "shop", "web"]);
    assert!(ok, "rollback failed:\n{out}");
    assert_eq!(server.get(&host).await, (200, "hello from v1\n".into()));

    let (ok, out) = server.cli(&["ls"]);
    assert!(ok && out.contains("web") && out.contains(&host), "{out}");
}

#[tokio::test]
async fn a_manifest_deploys_three_services_in_dependency_order() {
    if !python_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("stack");
    for name in ["db", "api", "web"] {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("app.py"), APP).unwrap();
        std::fs::write(dir.join("version.txt"), format!("{name}\n")).unwrap();
    }
    std::fs::write(
        root.join("wharf.toml"),
        r#"project = "stack"

[services.web]
path = "web"
depends_on = ["api"]
health_path = "/"

[services.api]
path = "api"
depends_on = ["db"]
env = { MODE = "prod" }

[services.db]
path = "db"
"#,
    )
    .unwrap();

    let mut server = Server::start(tmp.path());
    server.wait_ready(tmp.path()).await;
    let (ok, out) = server.cli(&["deploy", root.to_str().unwrap()]);
    assert!(ok, "manifest deploy failed:\n{out}");
    let waves: Vec<&str> = out.lines().filter(|l| l.starts_with("==> wave")).collect();
    assert_eq!(
        waves,
        ["==> wave 1: db", "==> wave 2: api", "==> wave 3: web"],
        "{out}"
    );
    for name in ["db", "api", "web"] {
        let host = format!("{name}.stack.localhost:{}", server.proxy_port);
        assert_eq!(
            server.get(&host).await,
            (200, format!("hello from {name}\n")),
            "{name}"
        );
    }

    // A cycle is refused before anything is uploaded.
    std::fs::write(
        root.join("wharf.toml"),
        "[services.a]\ndepends_on = [\"b\"]\n[services.b]\ndepends_on = [\"a\"]\n",
    )
    .unwrap();
    let (ok, out) = server.cli(&["deploy", root.to_str().unwrap()]);
    assert!(!ok && out.contains("cycle"), "{out}");
}

fn docker_present() -> bool {
    let probe = Command::new("docker")
        .arg("info")
        .output()
        .map_err(|e| format!("docker cannot run: {e}"))
        .and_then(|o| {
            o.status.success().then_some(()).ok_or_else(|| {
                format!(
                    "no Docker engine answers ({}); run scripts/setup-docker",
                    String::from_utf8_lossy(&o.stderr).trim()
                )
            })
        });
    require("docker", probe)
}

async fn caddy_present(admin: &str) -> bool {
    let probe = reqwest::Client::new()
        .get(format!("{admin}/config/"))
        .send()
        .await
        .map(drop)
        .map_err(|e| format!("no Caddy admin API at {admin} ({e}); run scripts/setup-proxies"));
    require("caddy", probe)
}

/// What the steady load saw.
struct Load {
    sent: u64,
    failed: u64,
    /// Requests whose connection to the proxy broke before any response and that were
    /// sent again at once, as browsers resend an idempotent GET.
    resent: u64,
    bodies: std::collections::BTreeSet<String>,
}

/// Sends GETs to `host` through the proxy until `stop` is set. An HTTP error status
/// (a 502 from a stopped upstream, a 404 from a missing route) is a failure; so is a
/// request that gets no response twice.
async fn steady_load(
    port: u16,
    host: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Load {
    // A new connection per request: Caddy closes idle keep-alive connections when it
    // reloads its config (which every route change does).
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut load = Load {
        sent: 0,
        failed: 0,
        resent: 0,
        bodies: Default::default(),
    };
    let get = || {
        http.get(format!("http://127.0.0.1:{port}/"))
            .header("host", &host)
            .send()
    };
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        load.sent += 1;
        let mut resp = get().await;
        if let Err(e) = &resp {
            // Caddy swaps its servers on every config reload; a connection accepted
            // in that instant can be reset before it is served.
            eprintln!("load: no response ({e:?}); sending again");
            load.resent += 1;
            resp = get().await;
        }
        match resp {
            Ok(r) if r.status() == 200 => {
                load.bodies.insert(r.text().await.unwrap_or_default());
            }
            Ok(r) => {
                load.failed += 1;
                let status = r.status();
                eprintln!("load: {status}: {}", r.text().await.unwrap_or_default());
            }
            Err(e) => {
                load.failed += 1;
                eprintln!("load: no response twice: {e:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    load
}

#[tokio::test]
async fn docker_and_caddy_serve_redeploy_under_load_and_roll_back() {
    if !docker_present() {
        return;
    }
    let admin =
        std::env::var("WHARF_CADDY_ADMIN").unwrap_or_else(|_| "http://127.0.0.1:20190".into());
    if !caddy_present(&admin).await {
        return;
    }
    let caddy_port: u16 = std::env::var("WHARF_CADDY_HTTP_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(20180);
    let tmp = tempfile::tempdir().unwrap();
    // A project name of its own, so parallel or earlier runs never collide.
    let project = format!("e2e{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let app = tmp.path().join(&project).join("web");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("app.py"), APP.replace("127.0.0.1", "0.0.0.0")).unwrap();
    std::fs::write(app.join("version.txt"), "v1\n").unwrap();

    let mut server = Server::start_with(
        tmp.path(),
        caddy_port,
        &[
            ("WHARF_RUNTIME", "docker"),
            ("WHARF_CADDY_ADMIN", admin.as_str()),
            (
                "WHARF_BASE_IMAGES",
                "python=wharf-local/debian-runtimes:bookworm",
            ),
        ],
    );
    server.wait_ready(tmp.path()).await;
    let log = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap();
    assert!(
        log.contains("runtime: Docker") && log.contains("router: Caddy"),
        "{log}"
    );

    let (ok, out) = server.cli(&["deploy", app.to_str().unwrap()]);
    assert!(ok, "deploy on Docker + Caddy failed:\n{out}");
    let host = format!("web.{project}.localhost");
    assert_eq!(server.get(&host).await, (200, "hello from v1\n".into()));

    // Redeploy under a steady load through Caddy: no request may fail.
    std::fs::write(app.join("version.txt"), "v2\n").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(steady_load(caddy_port, host.clone(), stop.clone()));
    let (ok, out) = tokio::task::spawn_blocking({
        let app = app.clone();
        let api = server.api.clone();
        let dir = tmp.path().to_owned();
        move || {
            let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
                .args(["deploy", app.to_str().unwrap()])
                .env("WHARF_SERVER", api)
                .current_dir(dir)
                .env_remove("WHARF_DATA_DIR")
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let Load {
        sent,
        failed,
        resent,
        bodies,
    } = load.await.unwrap();
    eprintln!(
        "redeploy on Docker + Caddy under load: {sent} requests, {failed} failed, {resent} resent"
    );
    assert!(ok, "redeploy failed:\n{out}");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during the redeploy"
    );
    assert!(
        bodies.contains("hello from v2\n"),
        "never served v2: {bodies:?}"
    );
    assert_eq!(server.get(&host).await, (200, "hello from v2\n".into()));

    // Rollback serves v1 again, from its image (no build).
    let (ok, out) = server.cli(&["rollback", &project, "web"]);
    assert!(ok, "rollback failed:\n{out}");
    assert_eq!(server.get(&host).await, (200, "hello from v1\n".into()));

    // Deleting the project removes its containers and its route.
    let token = std::fs::read_to_string(server.data.join("admin-token")).unwrap();
    let resp = reqwest::Client::new()
        .delete(format!("{}/v1/projects/{project}", server.api))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(server.get(&host).await.0, 404);
    let left = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("name={project}-")])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "containers left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
