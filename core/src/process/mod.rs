//! Host-process backends (feature `process`): a [`HostBuilder`] that runs a build
//! plan's install and build commands in a per-release folder, and a [`HostRuntime`] that
//! runs the plan's start command there as a supervised child process. Together they
//! deploy on a machine with no container engine: only the app's language toolchain
//! (python3, node, go, cargo) is needed.
//!
//! How the pieces meet: the builder's [`Artifact::image`](crate::Artifact) is the
//! absolute path of the release folder, which holds the app (`app/`) and a manifest
//! (`wharf-artifact.json`) with the start command. The runtime starts that command with
//! the service's environment and a `PORT` it picks (a free loopback port: the
//! instance's endpoint is `127.0.0.1:PORT`), in its own process group, with stdout and
//! stderr appended to a log file in its state folder, so a control-plane restart loses
//! neither the app nor its logs: [`HostRuntime::open`] re-adopts the children that
//! still run and cleans up the ones that died.
//!
//! Who runs what: by default builds and apps run as the control plane's own account,
//! so any app can read what that account can (fine for one developer's machine). With
//! [`ProjectUsers`] given to both the builder and the runtime (the control plane runs
//! as root), each project's build commands and apps run as a uid of its own with no
//! supplementary groups, in release folders only that uid can enter: one project's
//! app cannot read another's files, `/proc/<pid>/environ` or memory, nor the runtime's
//! records and logs (its state folder is mode 0700). Instance records keep the app's
//! environment sealed (ChaCha20-Poly1305), never in clear.
//!
//! Volumes are folders (`<volumes_dir>/<project>/<network>.<name>`, the path in the
//! app's `WHARF_VOLUME_<NAME>`): a process cannot mount them at the volume's path.
//!
//! What a container would give and a host process does not: resource limits and
//! network aliases are not enforced (a line in the instance's log says so), apps
//! share the host's network (any app can connect to another's loopback port), and the
//! app sees the host's world-readable files. Use the Docker backends where that
//! matters.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use wharf_core::process::{HostBuilder, HostRuntime, HostRuntimeConfig};
//! let dir = std::env::temp_dir().join(format!("wharf-doc-{}", std::process::id()));
//! let builder = HostBuilder::new(dir.join("builds"));
//! let runtime = HostRuntime::open(HostRuntimeConfig::new(dir.join("state"))).await.unwrap();
//! assert!(runtime.instance_ids().is_empty());
//! # drop(builder); drop(runtime); let _ = std::fs::remove_dir_all(&dir);
//! # });
//! ```

mod archive;
mod builder;
mod procfs;
mod runtime;
mod users;
mod volumes;

pub use builder::HostBuilder;
pub use runtime::{kill_recorded, HostRuntime, HostRuntimeConfig};
pub use users::{ProjectUsers, RunAs, DEFAULT_FIRST_UID, DEFAULT_UID_COUNT};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::ProjectKind;

/// The manifest's file name in a release folder.
pub const MANIFEST: &str = "wharf-artifact.json";

/// What the builder leaves for the runtime in a release folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// The kind of project built.
    pub(crate) kind: ProjectKind,
    /// The start command (argv).
    pub(crate) start: Vec<String>,
    /// The folder the app runs in.
    pub(crate) app_dir: PathBuf,
    /// Extra environment the app needs (e.g. `PYTHONPATH` for installed packages).
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    /// The project's own account, when the builder ran as it (see [`ProjectUsers`]).
    #[serde(default)]
    pub(crate) user: Option<RunAs>,
}

impl Manifest {
    /// The manifest of `release_dir`: a regular file of at most 1 MiB, opened without
    /// following a link and without blocking (a FIFO or a device in its place is
    /// refused, never waited on or read without end).
    pub(crate) fn read(release_dir: &Path) -> Result<Manifest> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        const MAX: u64 = 1 << 20;
        let path = release_dir.join(MANIFEST);
        let not_release = |why: String| {
            Error::unsupported(format!(
                "{} is not a release folder of the host builder ({MANIFEST}: {why}); \
                 the host runtime only runs what the host builder built",
                release_dir.display()
            ))
        };
        let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags.bits() as i32)
            .open(&path)
            .map_err(|e| not_release(e.to_string()))?;
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() > MAX {
            return Err(not_release("not a regular file of at most 1 MiB".into()));
        }
        let mut bytes = Vec::new();
        file.take(MAX).read_to_end(&mut bytes)?;
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// Environment variables a child inherits from the control plane; everything else
/// (tokens, database URLs of the control plane itself) stays out of apps and builds.
pub const DEFAULT_INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "PYENV_ROOT",
    "PYENV_VERSION",
    "NVM_DIR",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "GOPATH",
    "GOROOT",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

fn inherited_env(names: &[String]) -> Vec<(String, String)> {
    names
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
        .collect()
}

/// Writes `bytes` to `path` as a file only its owner reads (0600), atomically: a
/// reader sees the old content or the new, never a part.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Makes `command` run as `user`: its uid and gid, no supplementary groups (the
/// standard library drops them when a uid is set), its own `HOME`, and no `USER` or
/// `LOGNAME` of the control plane's account.
fn run_as(command: &mut tokio::process::Command, user: &RunAs) {
    command
        .uid(user.uid)
        .gid(user.gid)
        .env("HOME", &user.home)
        .env_remove("USER")
        .env_remove("LOGNAME");
}

/// An argument of a start command that the host runtime replaces with the port it
/// gave the instance (also in `PORT`), for programs that take it only as an argument.
pub const PORT_PLACEHOLDER: &str = "${PORT}";

/// Resolves a relative program path with a `/` (`./bin/server`) against `dir`; bare
/// names are left for `PATH`.
fn resolve_program(program: &str, dir: &Path) -> PathBuf {
    if program.contains('/') && !program.starts_with('/') {
        dir.join(program)
    } else {
        PathBuf::from(program)
    }
}
