//! The host builder.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rustix::process::Signal;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::users::{chown_tree, owned_dir, ProjectUsers, RunAs};
use super::{inherited_env, procfs, Manifest, DEFAULT_INHERITED_ENV, MANIFEST};
use crate::error::{Error, Result};
use crate::model::{label, Artifact, BuildPlan, LogStream, ProjectKind};
use crate::traits::{BuildRequest, Builder, LogSink};

/// A [`Builder`] that copies the fetched source into a release folder
/// (`<root>/<digest>/app`) and runs the plan's install and build commands there with
/// `sh -c`, streaming their output as build log lines.
///
/// The folder is named by a digest of the source and the plan, so an unchanged rebuild
/// reuses the finished folder (the build cache) and gives the same digest. A cancelled
/// build kills its command's whole process group. Dockerfile projects are refused
/// ([`crate::ErrorKind::Unsupported`]): they need a container engine.
///
/// By default build commands run as the control plane's own account. With
/// [`HostBuilder::users`] each project's build runs as that project's own uid (no
/// supplementary groups, `HOME` a folder of its own) in
/// `<root>/u<uid>/<digest>/app`, which only that uid and root can enter; `<root>`
/// itself is made mode 0711 (enter, not list).
#[derive(Debug)]
pub struct HostBuilder {
    root: PathBuf,
    inherit_env: Vec<String>,
    users: Option<Arc<ProjectUsers>>,
    static_server: Option<Vec<String>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl HostBuilder {
    /// A builder keeping release folders under `root` (created when needed).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        HostBuilder {
            root: root.into(),
            inherit_env: DEFAULT_INHERITED_ENV
                .iter()
                .map(|s| s.to_string())
                .collect(),
            users: None,
            static_server: None,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// How static sites are served: `command` (program and arguments) gets the
    /// site's folder as its last argument and `PORT` in its environment, and
    /// serves it on `127.0.0.1:$PORT`. Without it, busybox `httpd` from the build
    /// plan, which a host may lack. The `wharf` binary passes its own static file
    /// server (`wharf static-server`).
    pub fn static_server(mut self, command: Vec<String>) -> Self {
        self.static_server = (!command.is_empty()).then_some(command);
        self
    }

    /// Runs each project's build commands as the project's own user (see the type's
    /// docs); the [`super::HostRuntime`] given the same `users` runs the apps so.
    pub fn users(mut self, users: Arc<ProjectUsers>) -> Self {
        self.users = Some(users);
        self
    }

    /// Replaces the names of the control plane's environment variables that build
    /// commands inherit (default: [`super::DEFAULT_INHERITED_ENV`]).
    pub fn inherit_env(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.inherit_env = names.into_iter().map(Into::into).collect();
        self
    }

    /// Where release folders are kept.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes the release folders under the root that no artifact in `keep` points
    /// at and no build is writing; returns the folders removed. Keep the artifacts of
    /// every release that may be rolled back to, and of running instances.
    pub async fn prune(&self, keep: &[Artifact]) -> Result<Vec<PathBuf>> {
        let busy: Vec<PathBuf> = {
            let g = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            g.iter()
                .filter(|(_, l)| l.try_lock().is_err())
                .map(|(release, _)| PathBuf::from(release))
                .collect()
        };
        let keep: Vec<PathBuf> = keep.iter().map(|a| PathBuf::from(&a.image)).collect();
        let mut removed = Vec::new();
        let mut entries = match tokio::fs::read_dir(&self.root).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
            Err(e) => return Err(e.into()),
        };
        let mut user_dirs = Vec::new();
        loop {
            while let Some(e) = entries.next_entry().await? {
                let path = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if !e.file_type().await?.is_dir() || keep.contains(&path) || busy.contains(&path) {
                    continue;
                }
                if is_user_dir(&name) {
                    user_dirs.push(path);
                    continue;
                }
                if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                    // A project's home folder, or nothing of ours.
                    continue;
                }
                tokio::fs::remove_dir_all(&path).await?;
                removed.push(path);
            }
            match user_dirs.pop() {
                Some(dir) => entries = tokio::fs::read_dir(dir).await?,
                None => return Ok(removed),
            }
        }
    }

    /// The account a build for `labels` runs as (`None`: the control plane's own), its
    /// folders made ready.
    fn account(&self, labels: &crate::model::Labels) -> Result<Option<RunAs>> {
        let Some(users) = &self.users else {
            return Ok(None);
        };
        let project = labels.get(label::PROJECT).map_or("", String::as_str);
        let uid = users.uid_of(project)?;
        let dir = self.user_dir(uid);
        let home = dir.join("home");
        let prepare = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.root)?;
            std::fs::set_permissions(
                &self.root,
                std::os::unix::fs::PermissionsExt::from_mode(0o711),
            )?;
            owned_dir(&dir, 0, uid, 0o750)?;
            owned_dir(&home, uid, uid, 0o700)
        };
        prepare()
            .map_err(|e| Error::from(e).context(format!("preparing the folders of uid {uid}")))?;
        Ok(Some(RunAs {
            uid,
            gid: uid,
            home,
        }))
    }

    fn user_dir(&self, uid: u32) -> PathBuf {
        self.root.join(format!("u{uid}"))
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut g = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        g.entry(key.to_owned()).or_default().clone()
    }
}

/// Commands written for a container put the app in `/app`; on the host it is the
/// release's app folder.
fn rehome(text: &str, app: &Path) -> String {
    let app = app.to_string_lossy();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("/app") {
        let before_ok = i == 0 || rest[..i].ends_with([' ', '=', '"', '\'']);
        let after = &rest[i + 4..];
        let after_ok = after.is_empty() || after.starts_with(['/', ' ', '"', '\'']);
        out.push_str(&rest[..i]);
        if before_ok && after_ok {
            out.push_str(&app);
        } else {
            out.push_str("/app");
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `u<uid>`: the folder of one project's releases.
fn is_user_dir(name: &str) -> bool {
    name.strip_prefix('u')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn hash_dir(hasher: &mut Sha256, root: &Path, dir: &Path) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if e.file_name() == ".git" {
            continue;
        }
        let path = e.path();
        let rel = path.strip_prefix(root).unwrap_or(&path);
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        let ft = e.file_type()?;
        if ft.is_dir() {
            hash_dir(hasher, root, &path)?;
        } else if ft.is_symlink() {
            hasher.update(std::fs::read_link(&path)?.to_string_lossy().as_bytes());
        } else if ft.is_file() {
            hasher.update(std::fs::read(&path)?);
        }
        hasher.update([0]);
    }
    Ok(())
}

/// Copies `from` into `to` (files, folders, symlinks as links, permission bits kept
/// but set-user-id, set-group-id and sticky: a source must never put a set-uid program
/// of the control plane's account in a release), leaving out `.git`.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_name() == ".git" {
            continue;
        }
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type()?;
        if ft.is_dir() {
            copy_tree(&src, &dst)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if ft.is_file() {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let mut input = std::fs::File::open(&src)?;
            let mode = input.metadata()?.permissions().mode() & 0o777;
            let mut output = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&dst)?;
            std::io::copy(&mut input, &mut output)?;
        }
    }
    Ok(())
}

/// Kills a build command's process group if the build future is dropped mid-way.
struct GroupGuard {
    pid: i32,
    start_time: u64,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            procfs::signal_group(self.pid, self.start_time, Signal::KILL);
        }
    }
}

async fn pump(stream: impl AsyncRead + Unpin, logs: LogSink, tail: Arc<Mutex<Vec<String>>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        {
            let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
            if t.len() == 20 {
                t.remove(0);
            }
            t.push(line.clone());
        }
        logs.send(LogStream::Build, line);
    }
}

impl HostBuilder {
    /// The start command of a release in `app`: the plan's, rehomed; a static site's
    /// busybox `httpd` listens on the runtime's `${PORT}`, or the configured static
    /// server serves the site's folder instead.
    fn start_command(&self, plan: &BuildPlan, app: &Path) -> Vec<String> {
        let start: Vec<String> = plan.start.iter().map(|a| rehome(a, app)).collect();
        if plan.kind != ProjectKind::Static || start.first().map(String::as_str) != Some("httpd") {
            return start;
        }
        let arg_after = |flag: &str| {
            start
                .iter()
                .position(|a| a == flag)
                .and_then(|i| start.get(i + 1))
                .cloned()
        };
        let root = arg_after("-h").unwrap_or_else(|| app.to_string_lossy().into_owned());
        match &self.static_server {
            Some(server) => server.iter().cloned().chain([root]).collect(),
            None => {
                let mut httpd = start.clone();
                if let Some(i) = httpd.iter().position(|a| a == "-p") {
                    if let Some(p) = httpd.get_mut(i + 1) {
                        *p = super::PORT_PLACEHOLDER.to_owned();
                    }
                }
                httpd
            }
        }
    }

    async fn run_step(
        &self,
        cmd: &str,
        app: &Path,
        env: &BTreeMap<String, String>,
        user: Option<&RunAs>,
        req: &BuildRequest,
    ) -> Result<()> {
        req.logs.send(LogStream::Build, format!("$ {cmd}"));
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg(cmd)
            .current_dir(app)
            .env_clear()
            .envs(inherited_env(&self.inherit_env))
            .envs(env);
        if let Some(u) = user {
            super::run_as(&mut command, u);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::build_failed(format!("could not run `{cmd}`: {e}")))?;
        let pid = child.id().unwrap_or(0) as i32;
        let mut guard = GroupGuard {
            pid,
            start_time: procfs::stat(pid).map_or(0, |s| s.start_time),
            armed: true,
        };
        let tail = Arc::new(Mutex::new(Vec::new()));
        let out = tokio::spawn(pump(
            child.stdout.take().expect("piped stdout"),
            req.logs.clone(),
            tail.clone(),
        ));
        let err = tokio::spawn(pump(
            child.stderr.take().expect("piped stderr"),
            req.logs.clone(),
            tail.clone(),
        ));
        let status = tokio::select! {
            s = child.wait() => s?,
            _ = req.cancel.cancelled() => {
                procfs::signal_group(guard.pid, guard.start_time, Signal::KILL);
                let _ = child.wait().await;
                guard.armed = false;
                out.abort();
                err.abort();
                req.logs.send(LogStream::Build, "build cancelled");
                return Err(Error::cancelled(format!("build cancelled during `{cmd}`")));
            }
        };
        // Whatever the command left running in its group goes with it.
        procfs::signal_group(guard.pid, guard.start_time, Signal::KILL);
        guard.armed = false;
        let _ = out.await;
        let _ = err.await;
        if status.success() {
            return Ok(());
        }
        let how = match status.code() {
            Some(c) => format!("exited with code {c}"),
            None => "was killed by a signal".to_owned(),
        };
        let tail = tail.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
        Err(Error::build_failed(if tail.is_empty() {
            format!("`{cmd}` {how}")
        } else {
            format!("`{cmd}` {how}; last output:\n{tail}")
        }))
    }
}

fn digest_of(plan: &BuildPlan, source: &Path) -> Result<String> {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(plan)?);
    hash_dir(&mut h, source, source)?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[async_trait]
impl Builder for HostBuilder {
    async fn build(&self, req: BuildRequest) -> Result<Artifact> {
        if req.cancel.is_cancelled() {
            return Err(Error::cancelled("build cancelled before it started"));
        }
        let plan = &req.plan;
        if plan.kind == ProjectKind::Dockerfile {
            return Err(Error::unsupported(
                "the host builder cannot build a Dockerfile: it needs a container engine (use the Docker builder)",
            )
            .with_backend("host"));
        }
        if plan.start.is_empty() {
            return Err(Error::invalid("the build plan has no start command").with_backend("host"));
        }
        let source = req.source_dir.clone();
        let plan_c = plan.clone();
        let digest = tokio::task::spawn_blocking(move || digest_of(&plan_c, &source))
            .await
            .map_err(|e| Error::internal(format!("hashing task failed: {e}")))??;
        let user = self.account(&req.labels)?;
        let release = match &user {
            Some(u) => self.user_dir(u.uid).join(&digest[..24]),
            None => self.root.join(&digest[..24]),
        };
        let app = release.join("app");
        let artifact = Artifact {
            image: release.to_string_lossy().into_owned(),
            digest: Some(format!("sha256:{digest}")),
            local_only: true,
        };

        let lock = self.lock_for(&release.to_string_lossy());
        let _held = tokio::select! {
            g = lock.lock() => g,
            _ = req.cancel.cancelled() => return Err(Error::cancelled("build cancelled")),
        };
        if release.join(MANIFEST).is_file() {
            req.logs.send(
                LogStream::Build,
                format!("reusing the cached build in {}", release.display()),
            );
            return Ok(artifact);
        }
        req.logs.send(
            LogStream::Build,
            format!(
                "building {} ({} project) in {}",
                req.tag,
                plan.kind,
                release.display()
            ),
        );
        if release.exists() {
            // Left by an interrupted build: start over.
            tokio::fs::remove_dir_all(&release).await?;
        }
        if user.is_some() {
            // Root's alone while it is filled and handed over: no process of the
            // project's uid (a running app, a build step's leftover) may enter it
            // before every file in it is the uid's, or it could swap a folder for a
            // link that the handing over would follow.
            let release = release.clone();
            tokio::task::spawn_blocking(move || owned_dir(&release, 0, 0, 0o700))
                .await
                .map_err(|e| Error::internal(format!("mkdir task failed: {e}")))?
                .map_err(|e| Error::from(e).context("creating the release folder"))?;
        }
        let (from, to) = (req.source_dir.clone(), app.clone());
        tokio::task::spawn_blocking(move || copy_tree(&from, &to))
            .await
            .map_err(|e| Error::internal(format!("copy task failed: {e}")))?
            .map_err(|e| Error::from(e).context("copying the source into the release folder"))?;
        if let Some(u) = &user {
            // The release folder stays root's (the manifest in it is the runtime's to
            // trust); the app folder is the project's.
            let (release, app, uid) = (release.clone(), app.clone(), u.uid);
            tokio::task::spawn_blocking(move || {
                chown_tree(&app, uid, uid)?;
                owned_dir(&release, 0, uid, 0o750)
            })
            .await
            .map_err(|e| Error::internal(format!("chown task failed: {e}")))?
            .map_err(|e| Error::from(e).context("giving the app folder to the project's user"))?;
        }

        let mut env = BTreeMap::new();
        let mut run_env = BTreeMap::new();
        if plan.kind == ProjectKind::Python {
            // Packages go next to the app, not into the host's Python.
            let deps = app.join(".wharf-python");
            env.insert("PIP_TARGET".to_owned(), deps.to_string_lossy().into_owned());
            env.insert("PIP_DISABLE_PIP_VERSION_CHECK".to_owned(), "1".to_owned());
            run_env.insert("PYTHONPATH".to_owned(), deps.to_string_lossy().into_owned());
        }
        let result = async {
            for cmd in plan.install.iter().chain(&plan.build) {
                self.run_step(&rehome(cmd, &app), &app, &env, user.as_ref(), &req)
                    .await?;
            }
            let manifest = Manifest {
                kind: plan.kind,
                start: self.start_command(plan, &app),
                app_dir: app.clone(),
                env: run_env,
                user: user.clone(),
            };
            let tmp = release.join(format!("{MANIFEST}.tmp"));
            tokio::fs::write(&tmp, serde_json::to_vec_pretty(&manifest)?).await?;
            tokio::fs::rename(&tmp, release.join(MANIFEST)).await?;
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_dir_all(&release).await;
            return Err(e.with_backend("host"));
        }
        req.logs.send(
            LogStream::Build,
            format!("built {} sha256:{}", req.tag, &digest[..12]),
        );
        Ok(artifact)
    }
}

#[cfg(test)]
mod tests {
    use super::rehome;
    use std::path::Path;

    #[test]
    fn rehomes_container_paths_only() {
        let app = Path::new("/srv/rel/app");
        assert_eq!(
            rehome("go build -o /app/server .", app),
            "go build -o /srv/rel/app/server ."
        );
        assert_eq!(rehome("/app/server", app), "/srv/rel/app/server");
        assert_eq!(rehome("/application/x", app), "/application/x");
        assert_eq!(rehome("cp x /srv/app/y", app), "cp x /srv/app/y");
    }
}
