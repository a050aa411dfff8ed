//! A Caddy that `wharf serve` starts and stops itself (`caddy_bin` without
//! `caddy_admin`). Everything of it lives in `data_dir/caddy`: the start-up config
//! (admin API on the unix socket `admin.sock`, which only the server's account opens:
//! apps on this machine cannot reconfigure Caddy), certificates and autosaved config
//! (`XDG_DATA_HOME`/`XDG_CONFIG_HOME` point there), its log, and its pid, so a Caddy
//! left running by a `wharf serve` that was killed is stopped at the next start.
//! Routes are not kept in Caddy: the engine's recovery applies every live route again.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use super::error::ServeError;

/// A running Caddy owned by this process; stopped when dropped.
#[derive(Debug)]
pub struct ManagedCaddy {
    child: tokio::process::Child,
    admin: String,
    dir: PathBuf,
}

/// Whether `pid` is a live Caddy (by its command line).
fn is_caddy(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .next()
                .is_some_and(|argv0| String::from_utf8_lossy(argv0).ends_with("caddy"))
        })
        .unwrap_or(false)
}

/// Stops the Caddy a previous start recorded in `pid_file`, if it still runs.
async fn stop_leftover(pid_file: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return;
    };
    if !is_caddy(pid) {
        return;
    }
    tracing::warn!(
        pid,
        "stopping the Caddy a previous wharf serve left running"
    );
    let Some(target) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let _ = rustix::process::kill_process(target, rustix::process::Signal::TERM);
    for _ in 0..100 {
        if !is_caddy(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = rustix::process::kill_process(target, rustix::process::Signal::KILL);
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// Waits up to 10 s for the admin API on the unix socket `socket` to answer; why
/// not, if it does not.
async fn wait_for_admin(child: &mut tokio::process::Child, socket: &Path) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .unix_socket(socket)
        .build()
        .map_err(|e| format!("no HTTP client for {}: {e}", socket.display()))?;
    for _ in 0..200 {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited {status} at start"));
        }
        if http
            .get("http://localhost/config/")
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "did not answer on its admin API {} within 10 s",
        socket.display()
    ))
}

impl ManagedCaddy {
    /// Starts `bin` with its state under `dir` and waits until its admin API answers.
    pub async fn start(bin: &Path, dir: &Path) -> Result<ManagedCaddy, ServeError> {
        std::fs::create_dir_all(dir).map_err(ServeError::io("create", dir))?;
        let pid_file = dir.join("caddy.pid");
        stop_leftover(&pid_file).await;
        let socket = dir.join("admin.sock");
        if socket.as_os_str().len() > 100 {
            // The kernel's limit for a socket's path is 108 bytes.
            return Err(ServeError::backend(
                "caddy",
                format!(
                    "Caddy's admin socket {} would be longer than a unix socket's path may \
                     be: use a shorter data_dir",
                    socket.display()
                ),
            ));
        }
        // A socket left by a killed Caddy (stopped above) would keep the new one from
        // listening.
        let _ = std::fs::remove_file(&socket);
        let initial = json!({
            "admin": {"listen": format!("unix/{}", socket.display())},
            "storage": {"module": "file_system", "root": dir.join("data")},
        });
        let config = dir.join("start.json");
        std::fs::write(&config, initial.to_string()).map_err(ServeError::io("write", &config))?;
        let log_path = dir.join("caddy.log");
        let log = std::fs::File::create(&log_path).map_err(ServeError::io("write", &log_path))?;
        let err_log = log
            .try_clone()
            .map_err(ServeError::io("write", &log_path))?;
        let mut child = tokio::process::Command::new(bin)
            .args(["run", "--config"])
            .arg(&config)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                ServeError::backend(
                    "caddy",
                    format!("cannot start Caddy ({}): {e}", bin.display()),
                )
            })?;
        if let Some(pid) = child.id() {
            let _ = std::fs::write(&pid_file, format!("{pid}\n"));
        }
        match wait_for_admin(&mut child, &socket).await {
            Ok(()) => Ok(ManagedCaddy {
                child,
                admin: format!("unix://{}", socket.display()),
                dir: dir.to_owned(),
            }),
            Err(why) => Err(ServeError::backend(
                "caddy",
                format!("Caddy ({}) {why}:\n{}", bin.display(), tail(&log_path)),
            )),
        }
    }

    /// The admin API's base URL: `unix://<data_dir>/caddy/admin.sock`.
    pub fn admin_url(&self) -> &str {
        &self.admin
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

impl Drop for ManagedCaddy {
    fn drop(&mut self) {
        // SIGKILL through kill_on_drop; the engine's recovery re-applies every route.
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(self.dir.join("caddy.pid"));
    }
}
