//! `wharf serve` run as root on host processes: each project's app runs as a uid of its
//! own and reaches nothing of the data folder but its own release folder: not the
//! tokens, the secret key, the database, the uploads, the runtime's records, nor
//! another project's release. Needs python3 and root (`WHARF_REQUIRE=root` in CI).

mod common;

use std::path::{Path, PathBuf};

use common::Server;
use wharf_testkit::{python_present, root_present};

/// An app that answers `/whoami` with its uid and groups, and `/read?path=P` with READ
/// when it can read the file (or list the folder) P, else DENIED.
const PROBE: &str = r#"import os, urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/whoami":
            body = f"{os.getuid()} {os.getgid()} {os.getgroups()}"
        elif url.path == "/read":
            path = urllib.parse.parse_qs(url.query)["path"][0]
            try:
                if os.path.isdir(path):
                    os.listdir(path)
                else:
                    open(path, "rb").read(1)
                body = "READ"
            except OSError:
                body = "DENIED"
        else:
            body = "ok"
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

/// Every file and folder under `dir`.
fn everything_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().unwrap().is_dir() {
            out.extend(everything_under(&p));
        }
    }
    out
}

fn query(path: &Path) -> String {
    let mut q = String::from("/read?path=");
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"-_./".contains(&b) {
            q.push(b as char);
        } else {
            q.push_str(&format!("%{b:02X}"));
        }
    }
    q
}

#[tokio::test]
async fn a_projects_app_reads_its_release_and_nothing_else_of_the_data_folder() {
    if !python_present() || !root_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for project in ["alpha", "beta"] {
        let app = tmp.path().join(project).join("web");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(app.join("main.py"), PROBE).unwrap();
    }
    let mut server = Server::start(tmp.path());
    server.wait_ready(tmp.path()).await;
    for project in ["alpha", "beta"] {
        let app = tmp.path().join(project).join("web");
        let (ok, out) = server.cli(&["deploy", app.to_str().unwrap()]);
        assert!(ok, "deploy {project}:\n{out}");
    }
    let log = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap();
    assert!(
        log.contains("each project builds and runs as a uid of its own"),
        "{log}"
    );

    let host = format!("web.alpha.localhost:{}", server.proxy_port);
    let (status, who) = server.get_path(&host, "/whoami").await;
    assert_eq!(status, 200, "{who}");
    let mut parts = who.split_whitespace();
    let uid: u32 = parts.next().unwrap().parse().unwrap();
    let gid: u32 = parts.next().unwrap().parse().unwrap();
    assert!(uid >= wharf_core::process::DEFAULT_FIRST_UID, "{who}");
    assert_eq!(gid, uid, "{who}");
    assert_eq!(
        parts.collect::<Vec<_>>(),
        ["[]"],
        "no supplementary groups: {who}"
    );

    let own = server.data.join("builds").join(format!("u{uid}"));
    assert!(own.is_dir(), "alpha's releases are in {}", own.display());
    let mut checked = 0;
    for path in everything_under(&server.data) {
        let (_, answer) = server.get_path(&host, &query(&path)).await;
        if path.starts_with(&own) {
            // The manifest is the runtime's to trust: root's alone.
            let expected = if path.ends_with(wharf_core::process::MANIFEST) {
                "DENIED"
            } else {
                "READ"
            };
            assert_eq!(answer, expected, "alpha's own {}", path.display());
        } else {
            assert_eq!(answer, "DENIED", "alpha's app reads {}", path.display());
            checked += 1;
        }
    }
    // The secrets, the database, the records and beta's release are among them.
    assert!(checked >= 10, "only {checked} paths checked");
    let (_, answer) = server.get_path(&host, &query(&server.data)).await;
    assert_eq!(answer, "DENIED", "data_dir is enterable, never listable");
}
