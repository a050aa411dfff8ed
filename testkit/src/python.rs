//! python3: the probe, a static file server, and a sample app.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{command_runs, free_port, require};

/// A python3 standard-library app that answers every GET with `hello from <version>`,
/// `<version>` read from `version.txt` next to it, on 127.0.0.1:`$PORT`.
pub const HELLO_APP: &str = r#"
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
    child: Child,
    port: u16,
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
            child: child.unwrap(),
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
