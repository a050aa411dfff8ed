//! git runs for one project with nothing of the server's account: a cleared
//! environment (no SSH agent, no home folder with credential helpers or `.netrc`, no
//! git settings), and the credentials of an http(s) URL neither on git's command line
//! (which every user sees in `ps`) nor in the checkout's `.git/config`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use wharf_core::fetch::GitFetcher;
use wharf_core::{ErrorKind, GitRef, LogSink, SourceFetcher, SourceSpec};
use wharf_testkit::{bare_clone, free_port, git, git_present, python_present, KillOnDrop};

/// A git program that records its arguments and environment, then runs git.
fn recording_git(dir: &Path) -> PathBuf {
    let path = dir.join("git-recorder");
    let log = dir.join("log");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nprintf 'ARG %s\\n' \"$@\" >> {log:?}\nenv | sed 's/^/ENV /' >> {log:?}\nexec git \"$@\"\n"
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).unwrap();
    path
}

/// A repository with one commit, as a bare repository under `www/repo.git`.
fn repository(dir: &Path) -> PathBuf {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("app.py"), "print('hi')\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "one"]);
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    bare_clone(&work, &www.join("repo.git"));
    www
}

fn spec(url: &str) -> SourceSpec {
    SourceSpec::Git {
        url: url.to_owned(),
        reference: GitRef::Branch("main".into()),
        subdir: None,
    }
}

/// A folder holding a served repository (`www/repo.git`) and a recording git, or
/// `None` without git.
fn setup() -> Option<(tempfile::TempDir, PathBuf, GitFetcher)> {
    if !git_present() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let www = repository(dir.path());
    let fetcher = GitFetcher::with_program(recording_git(dir.path()));
    Some((dir, www, fetcher))
}

#[tokio::test]
async fn git_runs_without_the_servers_environment() {
    let Some((dir, www, fetcher)) = setup() else {
        return;
    };
    let url = format!("file://{}", www.join("repo.git").display());
    fetcher
        .fetch(&spec(&url), &dir.path().join("out"), &LogSink::discard())
        .await
        .unwrap();
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    // Cargo sets CARGO_PKG_NAME for every test process: it must not reach git.
    assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
    assert!(!log.contains("ENV CARGO_PKG_NAME="), "{log}");
    assert!(log.contains("ENV HOME=/nonexistent\n"), "{log}");
    assert!(log.contains("ENV GIT_CONFIG_GLOBAL=/dev/null\n"), "{log}");
    assert!(
        log.contains("ENV GIT_SSH_COMMAND=ssh -F /dev/null"),
        "{log}"
    );
    let real_home = std::env::var("HOME").unwrap_or_default();
    if !real_home.is_empty() {
        assert!(!log.contains(&format!("ENV HOME={real_home}\n")), "{log}");
    }
}

/// python3's static file server behind HTTP basic auth (`user:password`), serving
/// `dir` on a free loopback port.
fn basic_auth_server(dir: &Path, credentials: &str) -> Option<(KillOnDrop, u16)> {
    if !python_present() {
        return None;
    }
    let script = r#"
import base64, functools, http.server, sys
want = "Basic " + base64.b64encode(sys.argv[2].encode()).decode()
class H(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.headers.get("Authorization") != want:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()
    def log_message(self, *args):
        pass
handler = functools.partial(H, directory=sys.argv[3])
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
"#;
    let port = free_port();
    let child = Command::new("python3")
        .args(["-c", script, &port.to_string(), credentials])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((child, port));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the basic-auth server did not listen on {port}");
}

#[tokio::test]
async fn url_credentials_reach_the_server_but_not_the_command_line_or_git_config() {
    let Some((dir, www, fetcher)) = setup() else {
        return;
    };
    let Some((_server, port)) = basic_auth_server(&www, "alice:s3cr@t-token") else {
        return;
    };
    let out = dir.path().join("out");
    let url = format!("http://alice:s3cr%40t-token@127.0.0.1:{port}/repo.git");
    let fetched = fetcher
        .fetch(&spec(&url), &out, &LogSink::discard())
        .await
        .unwrap();
    assert_eq!(fetched.revision.len(), 40);
    let args: String = std::fs::read_to_string(dir.path().join("log"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("ARG "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        args.contains(&format!("127.0.0.1:{port}/repo.git")),
        "{args}"
    );
    assert!(
        !args.contains("s3cr"),
        "credentials on git's command line: {args}"
    );
    let config = std::fs::read_to_string(out.join(".git/config")).unwrap();
    assert!(
        !config.contains("s3cr") && !config.contains("alice"),
        "{config}"
    );

    // A wrong password is refused by the server, and said so.
    let wrong = format!("http://alice:nope@127.0.0.1:{port}/repo.git");
    let err = GitFetcher::new()
        .fetch(&spec(&wrong), &dir.path().join("out2"), &LogSink::discard())
        .await
        .unwrap_err();
    assert_ne!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(!err.message().contains("nope"), "{err}");
}
