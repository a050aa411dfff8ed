//! The harness the `wharf` binary's end-to-end tests share: a `wharf serve` process
//! in a temp folder run as the README runs it, the CLI against it, a python3 sample
//! app, probes for the real components, and a steady load through a proxy.
#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wharf_testkit::free_port;
use wharf_testkit::http::probe_caddy;
use wharf_testkit::http::reset_before_response;
use wharf_testkit::{caddy_admin_url, caddy_http_port, docker_cli_present, require};

/// The server process and every app process it started die with the test.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) data: PathBuf,
    pub(crate) api: String,
    pub(crate) proxy_port: u16,
    /// Apps are served through Caddy (see [`Server::get`]).
    pub(crate) via_caddy: bool,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        wharf_core::process::kill_recorded(&self.data.join("runtime"));
    }
}

/// Makes `dir` and the temporary folders above it enterable by other users, as
/// `wharf serve` run as root needs for each project's user to reach its releases
/// (`tempfile` makes its folders 0700).
fn enterable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = std::env::temp_dir();
    for d in dir.ancestors().filter(|d| d.starts_with(&tmp) && *d != tmp) {
        if let Ok(meta) = std::fs::metadata(d) {
            let mode = meta.permissions().mode();
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o011));
        }
    }
}

impl Server {
    /// Starts `wharf serve` in `dir` on its defaults but for the ports, as the README
    /// does: the data folder is `./wharf-data`, and the CLI (run in `dir` too) finds
    /// the operator token there.
    pub(crate) fn start(dir: &Path) -> Server {
        let proxy_port = free_port();
        Server::start_with(
            dir,
            proxy_port,
            &[("WHARF_RUNTIME", "process"), ("WHARF_ROUTER", "builtin")],
        )
    }

    /// As [`Server::start`], with apps served on `proxy_port` and more settings.
    pub(crate) fn start_with(dir: &Path, proxy_port: u16, settings: &[(&str, &str)]) -> Server {
        enterable(dir);
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
            via_caddy: false,
        }
    }

    pub(crate) async fn wait_ready(&mut self, dir: &Path) {
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

    pub(crate) fn cli(&self, args: &[&str]) -> (bool, String) {
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

    /// `wharf serve` in `dir` on the Docker engine with `caddy` routing (python apps
    /// built on the local Debian runtime image), plus `more` settings.
    pub(crate) fn start_on_docker(
        dir: &Path,
        caddy: &SharedCaddy,
        more: &[(&str, &str)],
    ) -> Server {
        let mut settings = vec![
            ("WHARF_RUNTIME", "docker"),
            ("WHARF_CADDY_ADMIN", caddy.admin.as_str()),
            (
                "WHARF_BASE_IMAGES",
                "python=wharf-local/debian-runtimes:bookworm",
            ),
        ];
        settings.extend_from_slice(more);
        let mut server = Server::start_with(dir, caddy.http_port, &settings);
        server.via_caddy = true;
        server
    }

    /// `method /v1<path>` with the operator token: status and JSON body (null if none).
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let token = std::fs::read_to_string(self.data.join("admin-token")).unwrap();
        let r = reqwest::Client::new()
            .request(method, format!("{}/v1{path}", self.api))
            .bearer_auth(token.trim())
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// `GET /v1<path>` with the operator token: status and JSON body.
    pub(crate) async fn read(&self, path: &str) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::GET, path, serde_json::Value::Null)
            .await
    }

    /// `DELETE /v1<path>` with the operator token: the status.
    pub(crate) async fn delete(&self, path: &str) -> u16 {
        let none = serde_json::Value::Null;
        self.call(reqwest::Method::DELETE, path, none).await.0
    }

    /// GET `/` on the apps' proxy port with `Host: host`: (status, body).
    ///
    /// Through Caddy, a request that gets no response at all is sent once more, as a
    /// browser does with an idempotent GET: every route change (by any test on the
    /// shared Caddy) reloads Caddy, which re-binds its listeners (SO_REUSEPORT) and so
    /// resets connections still queued on the old socket; see `benches/README.md`. The
    /// built-in proxy swaps its table in place, so there no response is a failure.
    pub(crate) async fn get(&self, host: &str) -> (u16, String) {
        self.get_path(host, "/").await
    }

    /// As [`Server::get`], for `path` (with its query).
    pub(crate) async fn get_path(&self, host: &str, path: &str) -> (u16, String) {
        let send = || {
            reqwest::Client::new()
                .get(format!("http://127.0.0.1:{}{path}", self.proxy_port))
                .header("host", host)
                .send()
        };
        let r = match send().await {
            Ok(r) => r,
            Err(e) if self.via_caddy && reset_before_response(&e) => {
                eprintln!("GET {host} through Caddy: no response ({e:?}); sending again");
                send().await.unwrap()
            }
            Err(e) => panic!("GET {host}: no response: {e:?}"),
        };
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

/// The Caddy the setup scripts run (`WHARF_CADDY_ADMIN`, `WHARF_CADDY_HTTP_PORT`).
pub(crate) struct SharedCaddy {
    pub(crate) admin: String,
    pub(crate) http_port: u16,
}

/// The Docker engine and the shared Caddy, when both answer (else the test skips, or
/// fails when `WHARF_REQUIRE` names them).
pub(crate) async fn docker_and_caddy() -> Option<SharedCaddy> {
    if !docker_cli_present() {
        return None;
    }
    let admin = caddy_admin_url();
    if !require("caddy", probe_caddy(&admin).await) {
        return None;
    }
    Some(SharedCaddy {
        admin,
        http_port: caddy_http_port(),
    })
}

/// What the steady load saw.
pub(crate) struct Load {
    pub(crate) sent: u64,
    pub(crate) failed: u64,
    /// Requests whose connection to the proxy broke before any response and that were
    /// sent again at once, as browsers resend an idempotent GET.
    pub(crate) resent: u64,
    pub(crate) bodies: std::collections::BTreeSet<String>,
}

/// Sends GETs to `host` through the proxy until `stop` is set. An HTTP error status
/// (a 502 from a stopped upstream, a 404 from a missing route) is a failure; so is a
/// request that gets no response twice.
pub(crate) async fn steady_load(
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
        if let Err(e) = resp.as_ref().map(drop) {
            if reset_before_response(e) {
                eprintln!("load: no response ({e:?}); sending again");
                load.resent += 1;
                resp = get().await;
            }
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

/// The shared Traefik's watched folder and `web` entry point port, when Traefik
/// answers (else skip, or fail under `WHARF_REQUIRE=traefik`): the one
/// `scripts/setup-proxies` starts (`WHARF_TRAEFIK_HTTP_PORT`, `WHARF_TRAEFIK_API_PORT`,
/// `WHARF_TRAEFIK_DYNAMIC_DIR`, default `$WHARF_CI_DIR/traefik/dynamic`).
pub(crate) async fn shared_traefik() -> Option<(PathBuf, u16)> {
    let dynamic = std::env::var_os("WHARF_TRAEFIK_DYNAMIC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| wharf_testkit::ci_dir().join("traefik/dynamic"));
    let web: u16 = wharf_testkit::env_or("WHARF_TRAEFIK_HTTP_PORT", "20280")
        .parse()
        .unwrap();
    let ping = format!(
        "http://127.0.0.1:{}/ping",
        wharf_testkit::env_or("WHARF_TRAEFIK_API_PORT", "20281")
    );
    let probe = match reqwest::get(&ping).await {
        Ok(r) if r.status().is_success() && dynamic.is_dir() => Ok(()),
        Ok(r) if r.status().is_success() => Err(format!(
            "Traefik answers but its watched folder {} is absent; set WHARF_CI_DIR or \
             WHARF_TRAEFIK_DYNAMIC_DIR",
            dynamic.display()
        )),
        Ok(r) => Err(format!("{ping} answered {}", r.status())),
        Err(e) => Err(format!(
            "no Traefik at {ping} ({e}); run scripts/setup-proxies"
        )),
    };
    require("traefik", probe).then_some((dynamic, web))
}

/// Removes what `wharf serve` wrote into the shared Traefik's watched folder, when
/// dropped. The file provider watches that one folder, not its sub-folders; the test
/// binaries that write there run one after the other under `cargo test`.
pub(crate) struct TraefikCleanup(pub(crate) PathBuf);

impl Drop for TraefikCleanup {
    fn drop(&mut self) {
        for name in ["wharf.yaml", "wharf.wharf.json"] {
            let _ = std::fs::remove_file(self.0.join(name));
        }
    }
}
