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
        let data = dir.join("wharf-data");
        let (api_port, proxy_port) = (free_port(), free_port());
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .arg("serve")
            .current_dir(dir)
            .env_remove("WHARF_DATA_DIR")
            .env("WHARF_LISTEN", format!("127.0.0.1:{api_port}"))
            .env("WHARF_PROXY_LISTEN", format!("127.0.0.1:{proxy_port}"))
            .env("WHARF_RUNTIME", "process")
            .env("WHARF_ROUTER", "builtin")
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
