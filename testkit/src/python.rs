//! python3: the probe, a static file server, and a sample app.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{command_runs, free_port, require, KillOnDrop};

/// A python3 standard-library HTTP app on 127.0.0.1:`$PORT`: `setup` (module-level
/// python) runs first, then each GET runs `get` (python that sets `body`, bytes) and
/// answers 200 with `body`. The handler logs nothing.
pub fn python_app(setup: &str, get: &str) -> String {
    let get: String = get.lines().map(|l| format!("        {l}\n")).collect();
    format!(
        r#"
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

{setup}

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
{get}        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#
    )
}

/// A [`python_app`] that answers every GET with `hello from <version>`, `<version>`
/// read from `version.txt` next to it.
pub fn hello_app() -> String {
    python_app(
        r#"VERSION = open("version.txt").read().strip()"#,
        r#"body = f"hello from {VERSION}\n".encode()"#,
    )
}

/// Whether python3 runs (see [`require`]: skips, or fails under `WHARF_REQUIRE=python3`).
pub fn python_present() -> bool {
    require(
        "python3",
        command_runs("python3", &["--version"], "apt-get install python3"),
    )
}

/// python3's static file server (`python3 -m http.server`) for a folder on a free
/// loopback port; it dies with the value. git clones from it over its "dumb" HTTP
/// protocol (after `git update-server-info`).
#[derive(Debug)]
pub struct StaticServer {
    _child: KillOnDrop,
    port: u16,
}

impl StaticServer {
    /// Serves `dir`; returns once the port accepts connections, or `None` when python3
    /// cannot run (see [`require`]).
    pub fn start(dir: &Path) -> Option<StaticServer> {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let probe = child
            .as_ref()
            .map(|_| ())
            .map_err(|e| format!("python3 cannot run: {e}"));
        if !require("python3", probe) {
            return None;
        }
        let server = StaticServer {
            _child: KillOnDrop(child.unwrap()),
            port,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("python3 -m http.server did not listen on {port}");
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`: a file `x` of the folder is at `<base>/x`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Creates `dir` holding a [`hello_app`] (`app.py`) that answers `hello from
/// <version>` and listens on `bind` (`127.0.0.1` on the host, `0.0.0.0` in a container).
pub fn write_hello_app(dir: &Path, bind: &str, version: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let app = hello_app().replace("127.0.0.1", bind);
    std::fs::write(dir.join("app.py"), app).unwrap();
    std::fs::write(dir.join("version.txt"), format!("{version}\n")).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generated app runs and answers what `hello_app` promises.
    #[tokio::test]
    async fn hello_app_answers_with_its_version() {
        if !python_present() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        write_hello_app(dir.path(), "127.0.0.1", "v7");
        let port = free_port();
        let mut child = Command::new("python3")
            .arg("app.py")
            .current_dir(dir.path())
            .env("PORT", port.to_string())
            .spawn()
            .unwrap();
        let mut answer = None;
        for _ in 0..100 {
            if let Ok(a) = crate::http_get(&format!("127.0.0.1:{port}"), "/", &[]).await {
                answer = Some(a);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        let a = answer.expect("the app answers");
        assert_eq!((a.status, a.text()), (200, "hello from v7\n".to_owned()));
    }
}
