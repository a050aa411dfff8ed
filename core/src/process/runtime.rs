//! The host-process runtime.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use rustix::process::Signal;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};

use super::users::{ProjectUsers, RunAs};
use super::volumes;
use super::{inherited_env, procfs, resolve_program, Manifest, DEFAULT_INHERITED_ENV};
use crate::error::{Error, Result};
use crate::model::label;
use crate::model::*;
use crate::traits::{LogOptions, Runtime};

/// Marks the lines the runtime itself writes into an instance's log file.
const SYSTEM_MARK: &str = "\u{1e}wharf: ";
const RECORD: &str = "instance.json";
const LOG: &str = "output.log";
/// The key sealing instances' environments when none is given.
const KEY_FILE: &str = ".seal-key";

/// How a [`HostRuntime`] behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HostRuntimeConfig {
    /// Where instance records and log files are kept (`<state_dir>/<instance id>/`).
    pub state_dir: PathBuf,
    /// The first wait before restarting a crashed process; doubles on each crash in a
    /// row, up to `max_backoff`. Keep it above the engine's health-check interval, so
    /// an app that crashes at start is seen `Exited`.
    pub restart_backoff: Duration,
    /// The longest wait between restarts.
    pub max_backoff: Duration,
    /// A process that ran this long before crashing restarts after `restart_backoff`
    /// again.
    pub stable_after: Duration,
    /// How long one health probe may take.
    pub probe_timeout: Duration,
    /// Names of the control plane's environment variables apps inherit.
    pub inherit_env: Vec<String>,
    /// An instance's log file is rotated (copied to `output.log.1`, then truncated)
    /// once it grows past this many bytes; checked every few seconds.
    pub max_log_bytes: u64,
    /// Run each project's apps as its own user (the release must come from a
    /// [`super::HostBuilder`] given the same [`ProjectUsers`]); `None`: apps run as the
    /// control plane's account, which any app can then read the files and processes of.
    pub users: Option<Arc<ProjectUsers>>,
    /// The key sealing each instance's environment in its record (it is needed to
    /// restart the app after a control-plane restart). Pass a key derived from the
    /// control plane's own secret; `None`: a random key kept in
    /// `<state_dir>/.seal-key` (mode 0600).
    pub seal_key: Option<[u8; 32]>,
    /// Where volumes' folders are kept (`<volumes_dir>/<project>/<scope>.<name>`); by
    /// default `volumes` beside the state folder. They outlive instances and the
    /// runtime; only [`Runtime::remove_volume`] deletes one.
    pub volumes_dir: PathBuf,
}

impl HostRuntimeConfig {
    /// Defaults: restarts after 1 s doubling to 30 s, 2 s probes, 32 MiB log files, the
    /// [`super::DEFAULT_INHERITED_ENV`] variables.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        let state_dir: PathBuf = state_dir.into();
        HostRuntimeConfig {
            restart_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(2),
            inherit_env: DEFAULT_INHERITED_ENV
                .iter()
                .map(|s| s.to_string())
                .collect(),
            max_log_bytes: 32 * 1024 * 1024,
            users: None,
            seal_key: None,
            volumes_dir: state_dir.with_file_name("volumes"),
            state_dir,
        }
    }

    /// Derives [`HostRuntimeConfig::seal_key`] from a control plane's 32-byte secret
    /// (domain-separated, so the same secret sealing other data gives another key).
    pub fn derive_seal_key(secret: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"wharf host-runtime instance env v1\0");
        h.update(secret);
        h.finalize().into()
    }
}

/// Seals and opens instance environments (ChaCha20-Poly1305, the instance id as
/// associated data, so a record's sealed env does not open in another record).
#[derive(Clone)]
struct Sealer(ChaCha20Poly1305);

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

impl Sealer {
    fn new(key: &[u8; 32]) -> Self {
        Sealer(ChaCha20Poly1305::new(&Key::from(*key)))
    }

    /// The key in `state_dir` (created on first use).
    fn from_state_dir(state_dir: &Path) -> Result<Self> {
        let path = state_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(k) if k.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&k);
                return Ok(Sealer::new(&key));
            }
            Ok(_) => {
                return Err(Error::invalid(format!(
                    "{} is not a 32-byte key",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let mut key = [0u8; 32];
        for chunk in key.chunks_mut(16) {
            chunk.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..16]);
        }
        // Make each uuid's fixed version bits irrelevant: hash them into the key.
        let key: [u8; 32] = Sha256::digest(key).into();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(&key)?;
        f.sync_all()?;
        Ok(Sealer::new(&key))
    }

    fn seal(&self, id: &InstanceId, env: &BTreeMap<String, String>) -> Result<String> {
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..12]);
        let plain = serde_json::to_vec(env)?;
        let ct = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: id.as_str().as_bytes(),
                },
            )
            .map_err(|_| Error::internal("sealing an instance's environment failed"))?;
        Ok(nonce
            .iter()
            .chain(&ct)
            .map(|b| format!("{b:02x}"))
            .collect())
    }

    fn open(&self, id: &InstanceId, sealed: &str) -> Result<BTreeMap<String, String>> {
        let bad = || {
            Error::invalid(format!(
                "the sealed environment of instance {id} does not open"
            ))
        };
        let bytes: Vec<u8> = (0..sealed.len())
            .step_by(2)
            .map(|i| {
                sealed
                    .get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        if bytes.len() < 12 {
            return Err(bad());
        }
        let (nonce, ct) = bytes.split_at(12);
        let plain = self
            .0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: id.as_str().as_bytes(),
                },
            )
            .map_err(|_| bad())?;
        Ok(serde_json::from_slice(&plain)?)
    }
}

/// What the state folder records about an instance (file mode 0600). On disk the
/// environment is sealed (`sealed_env`) and the spec's copy of it left out: it holds
/// secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: InstanceId,
    spec: InstanceSpec,
    command: Vec<String>,
    cwd: PathBuf,
    /// In memory only, but for records written before sealing (read, then rewritten).
    #[serde(default, skip_serializing)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    sealed_env: String,
    /// The project's account the app runs as (`None`: the control plane's).
    #[serde(default)]
    user: Option<RunAs>,
    port: u16,
    pid: i32,
    start_time: u64,
    restarts: u32,
}

#[derive(Debug)]
enum Proc {
    Child(tokio::process::Child),
    Adopted,
}

#[derive(Debug)]
struct Inst {
    dir: PathBuf,
    sealer: Sealer,
    record: Mutex<Record>,
    exited: Mutex<Option<(Option<i32>, String)>>,
    grace: Mutex<Duration>,
    stop: CancellationToken,
    done: watch::Sender<bool>,
}

impl Inst {
    fn record(&self) -> Record {
        self.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    fn instance(&self) -> Instance {
        let r = self.record();
        Instance {
            id: r.id,
            endpoint: Endpoint {
                host: "127.0.0.1".into(),
                port: r.port,
            },
            labels: r.spec.labels,
        }
    }
    fn set_exited(&self, v: Option<(Option<i32>, String)>) {
        *self.exited.lock().unwrap_or_else(|p| p.into_inner()) = v;
    }
    fn note(&self, text: &str) {
        append_note(&self.dir, text);
    }
}

fn append_note(dir: &Path, text: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(dir.join(LOG))
    {
        let _ = writeln!(f, "{SYSTEM_MARK}{text}");
    }
}

fn write_record(dir: &Path, rec: &Record, sealer: &Sealer) -> Result<()> {
    let mut rec = rec.clone();
    rec.sealed_env = sealer.seal(&rec.id, &std::mem::take(&mut rec.env))?;
    rec.spec.env.clear();
    super::write_private(&dir.join(RECORD), &serde_json::to_vec_pretty(&rec)?)?;
    Ok(())
}

/// A record as written, its environment still sealed.
fn read_record(dir: &Path) -> Result<Record> {
    Ok(serde_json::from_slice(&std::fs::read(dir.join(RECORD))?)?)
}

/// A record with its environment opened; `true` when it was in clear on disk (written
/// before sealing: rewrite it).
fn open_record(dir: &Path, sealer: &Sealer) -> Result<(Record, bool)> {
    let mut rec = read_record(dir)?;
    if rec.sealed_env.is_empty() {
        return Ok((rec, true));
    }
    rec.env = sealer.open(&rec.id, &rec.sealed_env)?;
    Ok((rec, false))
}

/// Picks a free loopback port (the OS hands out an unused ephemeral one).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

fn spawn_process(
    dir: &Path,
    rec: &Record,
    inherit: &[String],
) -> Result<(tokio::process::Child, i32, u64)> {
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(dir.join(LOG))?;
    let (program, args) = rec
        .command
        .split_first()
        .ok_or_else(|| Error::invalid("empty start command"))?;
    let mut command = tokio::process::Command::new(resolve_program(program, &rec.cwd));
    command
        .args(args)
        .current_dir(&rec.cwd)
        .env_clear()
        .envs(inherited_env(inherit))
        .envs(&rec.env);
    if let Some(u) = &rec.user {
        super::run_as(&mut command, u);
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| {
            Error::new(
                crate::ErrorKind::Backend,
                format!(
                    "could not start `{}` in {}: {e}",
                    rec.command.join(" "),
                    rec.cwd.display()
                ),
            )
            .with_backend("host")
        })?;
    let pid = child.id().unwrap_or(0) as i32;
    let start = procfs::stat(pid).map_or(0, |s| s.start_time);
    Ok((child, pid, start))
}

fn describe(status: std::process::ExitStatus) -> (Option<i32>, String) {
    match (status.code(), status.signal()) {
        (Some(c), _) => (Some(c), format!("exited with code {c}")),
        (None, Some(s)) => (None, format!("killed by signal {s}")),
        _ => (None, "exited".to_owned()),
    }
}

/// Waits for the current process to end (a child of ours: its exit status; an adopted
/// one: polled through `/proc`, exit status unknown).
async fn wait_exit(proc: &mut Proc, pid: i32, start: u64) -> (Option<i32>, String) {
    match proc {
        Proc::Child(c) => match c.wait().await {
            Ok(s) => describe(s),
            Err(e) => (None, format!("could not wait for the process: {e}")),
        },
        Proc::Adopted => {
            while procfs::alive(pid, start) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (
                None,
                "exited (adopted after a control-plane restart: exit code unknown)".to_owned(),
            )
        }
    }
}

/// The supervisor of one instance: waits for its process, restarts it with back-off
/// after a crash, stops it on request, and leaves it running when the runtime is
/// dropped (a control-plane restart re-adopts it).
async fn supervise(
    inst: Arc<Inst>,
    mut proc: Option<Proc>,
    cfg: Arc<HostRuntimeConfig>,
    detach: CancellationToken,
) {
    let mut backoff = cfg.restart_backoff;
    let mut started_at = Instant::now();
    loop {
        let rec = inst.record();
        if let Some(p) = proc.as_mut() {
            let exit = tokio::select! {
                e = wait_exit(p, rec.pid, rec.start_time) => Some(e),
                _ = inst.stop.cancelled() => None,
                _ = detach.cancelled() => return,
            };
            match exit {
                None => {
                    let grace = *inst.grace.lock().unwrap_or_else(|p| p.into_inner());
                    terminate(p, rec.pid, rec.start_time, grace).await;
                    inst.set_exited(Some((None, "stopped".into())));
                    inst.done.send_replace(true);
                    return;
                }
                Some((code, reason)) => {
                    // Whatever the app left in its group goes with it.
                    procfs::signal_group(rec.pid, rec.start_time, Signal::KILL);
                    if rec.spec.run_once {
                        // A task ran once: it is never restarted.
                        inst.set_exited(Some((code, reason)));
                        inst.done.send_replace(true);
                        return;
                    }
                    if started_at.elapsed() >= cfg.stable_after {
                        backoff = cfg.restart_backoff;
                    }
                    inst.note(&format!(
                        "process {} {reason}; restarting in {:.1}s",
                        rec.pid,
                        backoff.as_secs_f64()
                    ));
                    inst.set_exited(Some((code, reason)));
                    proc = None;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = inst.stop.cancelled() => {
                inst.done.send_replace(true);
                return;
            }
            _ = detach.cancelled() => return,
        }
        backoff = (backoff * 2).min(cfg.max_backoff);
        let mut rec = inst.record();
        match spawn_process(&inst.dir, &rec, &cfg.inherit_env) {
            Ok((child, pid, start)) => {
                rec.pid = pid;
                rec.start_time = start;
                rec.restarts += 1;
                if let Err(e) = write_record(&inst.dir, &rec, &inst.sealer) {
                    tracing::warn!(instance = %rec.id, "could not record restart: {e}");
                }
                *inst.record.lock().unwrap_or_else(|p| p.into_inner()) = rec;
                inst.set_exited(None);
                started_at = Instant::now();
                proc = Some(Proc::Child(child));
            }
            Err(e) => inst.note(&format!("restart failed: {e}")),
        }
    }
}

/// Keeps an instance's log file under `max` bytes: copy to `output.log.1`, truncate.
/// The app writes with `O_APPEND`, so its next line lands at the new end; lines written
/// between the copy and the truncation are lost (as with logrotate's copytruncate).
fn rotate_if_big(dir: &Path, max: u64) -> std::io::Result<bool> {
    let path = dir.join(LOG);
    if std::fs::metadata(&path)?.len() <= max {
        return Ok(false);
    }
    std::fs::copy(&path, dir.join(format!("{LOG}.1")))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)?
        .set_len(0)?;
    Ok(true)
}

async fn rotate_logs(inst: Arc<Inst>, max: u64, detach: CancellationToken) {
    let mut done = inst.done.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = done.wait_for(|d| *d) => return,
            _ = detach.cancelled() => return,
        }
        let dir = inst.dir.clone();
        if let Ok(Ok(true)) = tokio::task::spawn_blocking(move || rotate_if_big(&dir, max)).await {
            inst.note("log file rotated (the previous part is output.log.1)");
        }
    }
}

/// SIGTERM to the group, up to `grace` for the leader to exit, then SIGKILL to the
/// group; waits for the leader either way.
async fn terminate(proc: &mut Proc, pid: i32, start: u64, grace: Duration) {
    if !grace.is_zero()
        && procfs::signal_group(pid, start, Signal::TERM)
        && tokio::time::timeout(grace, wait_exit(proc, pid, start))
            .await
            .is_ok()
    {
        // The leader is gone; whatever it left in its group goes too.
        procfs::signal_group(pid, start, Signal::KILL);
        return;
    }
    procfs::signal_group(pid, start, Signal::KILL);
    let _ = tokio::time::timeout(Duration::from_secs(10), wait_exit(proc, pid, start)).await;
}

#[derive(Debug)]
struct Inner {
    cfg: Arc<HostRuntimeConfig>,
    sealer: Sealer,
    /// Held (flock) while the runtime lives: one runtime per state folder.
    _lock: std::fs::File,
    instances: Mutex<HashMap<InstanceId, Arc<Inst>>>,
    detach: CancellationToken,
}

/// A [`Runtime`] that runs each instance as a supervised child process of the control
/// plane (see the [module docs](super)).
///
/// Dropping it leaves the processes running (as a container engine would); a new
/// runtime opened on the same state folder re-adopts them. [`HostRuntime::shutdown`]
/// stops them all; [`kill_recorded`] kills them without a runtime (test teardown).
#[derive(Debug)]
pub struct HostRuntime {
    inner: Arc<Inner>,
}

impl Drop for HostRuntime {
    fn drop(&mut self) {
        self.inner.detach.cancel();
    }
}

impl HostRuntime {
    /// Opens the state folder (creating it; a second runtime on the same folder is a
    /// [`crate::ErrorKind::Conflict`] while the first lives): re-adopts the recorded processes that
    /// still run and cleans up after those that died (their leftover process group is
    /// killed and their record and log removed). Call it inside a Tokio runtime.
    pub async fn open(cfg: HostRuntimeConfig) -> Result<Self> {
        tokio::fs::create_dir_all(&cfg.state_dir).await?;
        // Records and logs are the control plane's alone (apps may run as other users).
        tokio::fs::set_permissions(
            &cfg.state_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .await?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(cfg.state_dir.join(".lock"))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |e| {
                Error::conflict(format!(
                    "another host runtime uses {} ({e}): two would both restart and stop the same processes",
                    cfg.state_dir.display()
                ))
                .with_backend("host")
            },
        )?;
        let sealer = match &cfg.seal_key {
            Some(k) => Sealer::new(k),
            None => Sealer::from_state_dir(&cfg.state_dir)?,
        };
        let rt = HostRuntime {
            inner: Arc::new(Inner {
                sealer,
                _lock: lock,
                cfg: Arc::new(cfg),
                instances: Mutex::new(HashMap::new()),
                detach: CancellationToken::new(),
            }),
        };
        let mut entries = tokio::fs::read_dir(&rt.inner.cfg.state_dir).await?;
        while let Some(e) = entries.next_entry().await? {
            let dir = e.path();
            if !dir.is_dir() {
                continue;
            }
            let (rec, in_clear) = match open_record(&dir, &rt.inner.sealer) {
                Ok(r) => r,
                Err(err) => {
                    tracing::warn!(dir = %dir.display(), "ignoring unreadable instance record: {err}");
                    continue;
                }
            };
            let foreign = match &rt.inner.cfg.users {
                Some(users) => {
                    let project = rec
                        .spec
                        .labels
                        .get(label::PROJECT)
                        .map_or("", String::as_str);
                    let uid = users.uid_of(project).ok();
                    rec.user.as_ref().map(|u| u.uid) != uid
                }
                None => false,
            };
            if foreign && procfs::alive(rec.pid, rec.start_time) {
                // Started before each project ran as its own user (as the control
                // plane's account): it must not go on with those rights.
                tracing::error!(
                    instance = %rec.id,
                    service = %rec.spec.name,
                    pid = rec.pid,
                    "stopping an app that runs as the control plane's account, not its project's user: deploy it again"
                );
                procfs::signal_group(rec.pid, rec.start_time, Signal::KILL);
                let _ = tokio::fs::remove_dir_all(&dir).await;
                continue;
            }
            if procfs::alive(rec.pid, rec.start_time) {
                if in_clear {
                    // Written before environments were sealed: seal it now.
                    write_record(&dir, &rec, &rt.inner.sealer)?;
                }
                tracing::info!(instance = %rec.id, pid = rec.pid, "re-adopted a running instance");
                append_note(
                    &dir,
                    &format!(
                        "re-adopted process {} after a control-plane restart",
                        rec.pid
                    ),
                );
                rt.adopt(dir, rec, Some(Proc::Adopted));
            } else {
                tracing::info!(instance = %rec.id, pid = rec.pid, "removing an instance whose process died");
                procfs::signal_group(rec.pid, rec.start_time, Signal::KILL);
                let _ = tokio::fs::remove_dir_all(&dir).await;
            }
        }
        Ok(rt)
    }

    fn adopt(&self, dir: PathBuf, rec: Record, proc: Option<Proc>) -> Arc<Inst> {
        let inst = Arc::new(Inst {
            dir,
            sealer: self.inner.sealer.clone(),
            record: Mutex::new(rec.clone()),
            exited: Mutex::new(None),
            grace: Mutex::new(Duration::ZERO),
            stop: CancellationToken::new(),
            done: watch::channel(false).0,
        });
        self.lock().insert(rec.id, inst.clone());
        tokio::spawn(supervise(
            inst.clone(),
            proc,
            self.inner.cfg.clone(),
            self.inner.detach.clone(),
        ));
        tokio::spawn(rotate_logs(
            inst.clone(),
            self.inner.cfg.max_log_bytes,
            self.inner.detach.clone(),
        ));
        inst
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InstanceId, Arc<Inst>>> {
        self.inner
            .instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &InstanceId) -> Result<Arc<Inst>> {
        self.lock()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("instance {id} not found")))
    }

    /// The ids of every instance this runtime supervises.
    pub fn instance_ids(&self) -> Vec<InstanceId> {
        self.lock().keys().cloned().collect()
    }

    /// The process id an instance currently runs as (`None` between a crash and its
    /// restart).
    pub fn pid(&self, id: &InstanceId) -> Result<Option<u32>> {
        let inst = self.get(id)?;
        let rec = inst.record();
        Ok(procfs::alive(rec.pid, rec.start_time).then_some(rec.pid as u32))
    }

    /// How many times an instance was restarted after a crash.
    pub fn restarts(&self, id: &InstanceId) -> Result<u32> {
        Ok(self.get(id)?.record().restarts)
    }

    /// The log file of an instance (stdout and stderr together).
    pub fn log_path(&self, id: &InstanceId) -> Result<PathBuf> {
        Ok(self.get(id)?.dir.join(LOG))
    }

    /// Stops every instance (SIGTERM, then SIGKILL after `grace`).
    pub async fn shutdown(&self, grace: Duration) -> Result<()> {
        let ids = self.instance_ids();
        let stops = ids.iter().map(|id| self.stop(id, grace));
        for r in futures::future::join_all(stops).await {
            r?;
        }
        Ok(())
    }

    /// The folders of `spec`'s volumes, made ready, with the variable each is given in.
    fn mount(&self, spec: &InstanceSpec, user: Option<&RunAs>) -> Result<Vec<(String, PathBuf)>> {
        spec.volumes
            .iter()
            .map(|v| {
                let path =
                    volumes::prepare(&self.inner.cfg.volumes_dir, &volume_of(spec, &v.name), user)?;
                Ok((volumes::env_name(&v.name), path))
            })
            .collect()
    }

    /// With [`HostRuntimeConfig::users`], a release must be the builder's folder for
    /// the spec's project, `.../u<uid>/<24 hex digits>`, with no link on the way:
    /// nothing else is read as root.
    fn check_release_path(&self, spec: &InstanceSpec, release: &Path) -> Result<()> {
        let Some(users) = &self.inner.cfg.users else {
            return Ok(());
        };
        let project = spec.labels.get(label::PROJECT).map_or("", String::as_str);
        let uid = users.uid_of(project)?;
        let name_ok = release
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()));
        let parent_ok = release
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| *n == *format!("u{uid}"));
        let real = std::fs::canonicalize(release).ok();
        if !name_ok || !parent_ok || real.as_deref() != Some(release) {
            return Err(Error::unsupported(format!(
                "{} is not a release folder the host builder made for project {project}",
                release.display()
            ))
            .with_backend("host"));
        }
        Ok(())
    }

    /// The account an instance of `spec` runs as: with [`HostRuntimeConfig::users`],
    /// its project's, which the release must have been built as (in a folder the
    /// project's apps cannot write); else the control plane's.
    fn account_for(
        &self,
        spec: &InstanceSpec,
        release: &Path,
        manifest: &Manifest,
    ) -> Result<Option<RunAs>> {
        let Some(users) = &self.inner.cfg.users else {
            return Ok(manifest.user.clone());
        };
        let project = spec.labels.get(label::PROJECT).map_or("", String::as_str);
        let uid = users.uid_of(project)?;
        let refuse = |why: String| {
            Err(Error::unsupported(format!(
                "{} cannot run as project {project}'s user: {why}; deploy again to rebuild it",
                release.display()
            ))
            .with_backend("host"))
        };
        match &manifest.user {
            Some(u) if u.uid == uid && u.gid == uid => {}
            Some(u) => return refuse(format!("it was built for uid {}", u.uid)),
            None => return refuse("it was built to run as the control plane's account".into()),
        }
        let meta = std::fs::metadata(release.join(super::MANIFEST))?;
        let dir = std::fs::metadata(release)?;
        use std::os::unix::fs::MetadataExt;
        if meta.uid() != 0 || dir.uid() != 0 || dir.mode() & 0o022 != 0 {
            return refuse("its manifest is not root's alone".into());
        }
        Ok(manifest.user.clone())
    }

    async fn probe(&self, rec: &Record) -> std::result::Result<(), String> {
        let timeout = self.inner.cfg.probe_timeout;
        let addr = ("127.0.0.1", rec.port);
        match &rec.spec.health_check.probe {
            Probe::None => Ok(()),
            Probe::Postgres | Probe::Mysql | Probe::Redis => {
                crate::dbprobe::check(&rec.spec.health_check.probe, "127.0.0.1", rec.port)
                    .await
                    .unwrap_or(Ok(()))
            }
            Probe::Tcp => {
                match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("TCP connect to 127.0.0.1:{}: {e}", rec.port)),
                    Err(_) => Err(format!("TCP connect to 127.0.0.1:{} timed out", rec.port)),
                }
            }
            Probe::Http { path } => {
                let get = async {
                    let mut s = tokio::net::TcpStream::connect(addr).await?;
                    let req = format!(
                        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: wharf-health\r\nConnection: close\r\n\r\n",
                        rec.port
                    );
                    s.write_all(req.as_bytes()).await?;
                    // Read the whole answer (bounded), so the app never sees its
                    // client vanish mid-response.
                    let mut buf = Vec::with_capacity(256);
                    let mut chunk = [0u8; 1024];
                    loop {
                        let n = s.read(&mut chunk).await?;
                        if n == 0 {
                            break;
                        }
                        if buf.len() < 1024 {
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        if buf.len() > 64 * 1024 {
                            break;
                        }
                    }
                    Ok::<_, std::io::Error>(buf)
                };
                let buf = match tokio::time::timeout(timeout, get).await {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => return Err(format!("GET {path} on 127.0.0.1:{}: {e}", rec.port)),
                    Err(_) => {
                        return Err(format!("GET {path} on 127.0.0.1:{} timed out", rec.port))
                    }
                };
                let line = String::from_utf8_lossy(&buf);
                let code: Option<u16> = line
                    .lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|c| c.parse().ok());
                match code {
                    Some(c) if (200..400).contains(&c) => Ok(()),
                    Some(c) => Err(format!("GET {path} answered {c}")),
                    None => Err(format!("GET {path} got no HTTP answer")),
                }
            }
        }
    }
}

fn parse_line(raw: &str) -> LogLine {
    match raw.strip_prefix(SYSTEM_MARK) {
        Some(t) => LogLine::new(LogStream::System, t),
        None => LogLine::new(LogStream::Stdout, raw),
    }
}

/// The last `n` lines of a file (all if `n` is `None`) and the offset of its end.
fn read_tail(path: &Path, n: Option<usize>) -> std::io::Result<(Vec<String>, u64)> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut start = 0;
    if let Some(n) = n {
        // Read backwards in blocks until n + 1 line breaks are in view.
        let mut pos = len;
        let mut breaks = 0;
        let mut block = vec![0u8; 64 * 1024];
        'back: while pos > 0 {
            let take = block.len().min(pos as usize);
            pos -= take as u64;
            f.seek(SeekFrom::Start(pos))?;
            f.read_exact(&mut block[..take])?;
            for i in (0..take).rev() {
                if block[i] == b'\n' && pos + (i as u64) + 1 != len {
                    breaks += 1;
                    if breaks == n.max(1) {
                        start = pos + i as u64 + 1;
                        break 'back;
                    }
                }
            }
        }
        if n == 0 {
            return Ok((Vec::new(), len));
        }
    }
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(len - start).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if let Some(n) = n {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    Ok((lines, len))
}

/// Kills every process a host runtime recorded under `state_dir` (SIGKILL to each
/// process group, guarded against pid reuse) and removes the records. Synchronous, so a
/// test's `Drop` guard can call it: no test leaves a stray process behind.
pub fn kill_recorded(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        if let Ok(rec) = read_record(&dir) {
            procfs::signal_group(rec.pid, rec.start_time, Signal::KILL);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

#[async_trait]
impl Runtime for HostRuntime {
    async fn start(&self, spec: &InstanceSpec) -> Result<Instance> {
        let release = PathBuf::from(&spec.image);
        if !release.is_absolute() {
            return Err(Error::unsupported(format!(
                "the host runtime runs release folders of the host builder, not images: {:?} is not an absolute path",
                spec.image
            ))
            .with_backend("host"));
        }
        self.check_release_path(spec, &release)?;
        let manifest = Manifest::read(&release).map_err(|e| e.with_backend("host"))?;
        let command = spec.command.clone().unwrap_or(manifest.start.clone());
        if command.is_empty() {
            return Err(Error::invalid("no start command").with_backend("host"));
        }
        let user = self.account_for(spec, &release, &manifest)?;
        let mounted = self.mount(spec, user.as_ref())?;
        let port = free_port()?;
        let command: Vec<String> = command
            .into_iter()
            .map(|a| {
                if a == super::PORT_PLACEHOLDER {
                    port.to_string()
                } else {
                    a
                }
            })
            .collect();
        let mut env = manifest.env.clone();
        env.extend(spec.env.clone());
        for (var, path) in &mounted {
            env.insert(var.clone(), path.to_string_lossy().into_owned());
        }
        env.insert("PORT".into(), port.to_string());
        let id = InstanceId::random();
        let dir = self.inner.cfg.state_dir.join(id.as_str());
        tokio::fs::create_dir_all(&dir).await?;
        let mut rec = Record {
            id: id.clone(),
            spec: spec.clone(),
            command,
            cwd: manifest.app_dir.clone(),
            env,
            sealed_env: String::new(),
            user,
            port,
            pid: 0,
            start_time: 0,
            restarts: 0,
        };
        if !spec.run_once {
            append_note(&dir, &format!("starting {} on 127.0.0.1:{port}", spec.name));
        }
        if spec.resources != Resources::default() && !spec.run_once {
            append_note(&dir, "resource limits are not enforced by the host runtime");
        }
        // A task's output is the command's own (`wharf run` prints it as it is).
        for (var, path) in mounted.iter().filter(|_| !spec.run_once) {
            append_note(
                &dir,
                &format!(
                    "volume folder {} in {var} (host processes cannot mount it at its path)",
                    path.display()
                ),
            );
        }
        let (child, pid, start) = match spawn_process(&dir, &rec, &self.inner.cfg.inherit_env) {
            Ok(v) => v,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&dir).await;
                return Err(e);
            }
        };
        rec.pid = pid;
        rec.start_time = start;
        if let Err(e) = write_record(&dir, &rec, &self.inner.sealer) {
            procfs::signal_group(pid, start, Signal::KILL);
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(e.context("recording the instance"));
        }
        let inst = self.adopt(dir, rec, Some(Proc::Child(child)));
        Ok(inst.instance())
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<()> {
        let Some(inst) = self.lock().get(id).cloned() else {
            return Ok(());
        };
        *inst.grace.lock().unwrap_or_else(|p| p.into_inner()) = grace;
        let mut done = inst.done.subscribe();
        inst.stop.cancel();
        let timed_out = tokio::time::timeout(grace + Duration::from_secs(15), async {
            let _ = done.wait_for(|d| *d).await;
        })
        .await
        .is_err();
        if timed_out {
            let rec = inst.record();
            procfs::signal_group(rec.pid, rec.start_time, Signal::KILL);
        }
        self.lock().remove(id);
        match tokio::fs::remove_dir_all(&inst.dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        let inst = self.get(id)?;
        if let Some((code, reason)) = inst
            .exited
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(InstanceStatus::Exited { code, reason });
        }
        let rec = inst.record();
        if rec.spec.run_once {
            // A task is not probed: running until it exits.
            return Ok(InstanceStatus::Running);
        }
        Ok(match self.probe(&rec).await {
            Ok(()) => InstanceStatus::Healthy,
            Err(reason) => InstanceStatus::Unhealthy { reason },
        })
    }

    async fn logs(
        &self,
        id: &InstanceId,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, Result<LogLine>>> {
        let inst = self.get(id)?;
        let path = inst.dir.join(LOG);
        let p = path.clone();
        let (lines, end) = tokio::task::spawn_blocking(move || read_tail(&p, opts.tail))
            .await
            .map_err(|e| Error::internal(format!("log task failed: {e}")))?
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok((Vec::new(), 0))
                } else {
                    Err(e)
                }
            })?;
        let past = stream::iter(lines.into_iter().map(|l| Ok(parse_line(&l))));
        if !opts.follow {
            return Ok(past.boxed());
        }
        struct Follow {
            path: PathBuf,
            offset: u64,
            partial: Vec<u8>,
            ready: std::collections::VecDeque<String>,
            done: watch::Receiver<bool>,
            detach: CancellationToken,
            /// The file was read to its end after the process ended.
            drained: bool,
        }
        let state = Follow {
            path,
            offset: end,
            partial: Vec::new(),
            ready: Default::default(),
            done: inst.done.subscribe(),
            detach: self.inner.detach.clone(),
            drained: false,
        };
        let live = stream::unfold(state, |mut s| async move {
            loop {
                if let Some(l) = s.ready.pop_front() {
                    return Some((Ok(parse_line(&l)), s));
                }
                // Once the process ended, one last read takes what it wrote before
                // it exited (a short task may end before the first read).
                let ending = *s.done.borrow() || s.detach.is_cancelled();
                if ending && s.drained {
                    return None;
                }
                let mut buf = Vec::new();
                if let Ok(mut f) = tokio::fs::File::open(&s.path).await {
                    use tokio::io::AsyncSeekExt;
                    if f.metadata().await.is_ok_and(|m| m.len() < s.offset) {
                        // Rotated: the file starts again.
                        s.offset = 0;
                        s.partial.clear();
                    }
                    if f.seek(SeekFrom::Start(s.offset)).await.is_ok() {
                        let _ = f.read_to_end(&mut buf).await;
                    }
                }
                if buf.is_empty() {
                    if ending {
                        s.drained = true;
                        if !s.partial.is_empty() {
                            let last = std::mem::take(&mut s.partial);
                            s.ready
                                .push_back(String::from_utf8_lossy(&last).into_owned());
                        }
                        continue;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = s.done.changed() => {}
                        _ = s.detach.cancelled() => {}
                    }
                    continue;
                }
                s.offset += buf.len() as u64;
                s.partial.extend_from_slice(&buf);
                while let Some(i) = s.partial.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = s.partial.drain(..=i).collect();
                    let text = String::from_utf8_lossy(&line[..i]).into_owned();
                    s.ready.push_back(text);
                }
            }
        });
        Ok(past.chain(live).boxed())
    }

    async fn list(&self, labels: &Labels) -> Result<Vec<Instance>> {
        let all: Vec<Arc<Inst>> = self.lock().values().cloned().collect();
        Ok(all
            .iter()
            .map(|i| i.instance())
            .filter(|i| labels.iter().all(|(k, v)| i.labels.get(k) == Some(v)))
            .collect())
    }

    async fn volumes(&self, project: &ProjectId, wanted: &[VolumeRef]) -> Result<Vec<VolumeInfo>> {
        let _ = wanted; // Every volume of the project is in its folder, found by name.
        let (root, project) = (self.inner.cfg.volumes_dir.clone(), project.clone());
        // Sizes walk folders apps fill: off the async workers.
        tokio::task::spawn_blocking(move || volumes::list(&root, &project))
            .await
            .map_err(|e| Error::internal(format!("volume listing task failed: {e}")))?
            .map_err(|e| e.with_backend("host"))
    }

    async fn remove_volume(&self, volume: &VolumeRef) -> Result<()> {
        let path = volumes::folder(&self.inner.cfg.volumes_dir, volume)?;
        if !path.is_dir() {
            return Err(Error::not_found(format!(
                "project {} has no volume {} here",
                volume.project, volume.name
            ))
            .with_backend("host"));
        }
        if self.mounted(volume) {
            return Err(Error::conflict(format!(
                "volume {} is in use by an app: stop the services that mount it first",
                volume.name
            ))
            .with_backend("host"));
        }
        tokio::fs::remove_dir_all(&path).await?;
        tracing::info!(volume = %path.display(), "removed a volume and its data, as asked");
        Ok(())
    }

    async fn export_volume(&self, volume: &VolumeRef) -> Result<crate::ByteStream> {
        let path = volumes::folder(&self.inner.cfg.volumes_dir, volume)?;
        if !path.is_dir() {
            return Err(Error::not_found(format!(
                "project {} has no volume {} here",
                volume.project, volume.name
            ))
            .with_backend("host"));
        }
        Ok(super::archive::export(path))
    }

    /// Unpacks into a folder beside the volumes (`.restore-<uuid>` under the volumes
    /// folder, never listed as a volume), then swaps it in with two renames: a
    /// failed or refused archive leaves the volume untouched.
    async fn import_volume(&self, volume: &VolumeRef, tar: crate::ByteStream) -> Result<()> {
        let root = &self.inner.cfg.volumes_dir;
        let path = volumes::folder(root, volume)?;
        if self.mounted(volume) {
            return Err(Error::conflict(format!(
                "volume {} is in use by an app: stop the services that mount it first",
                volume.name
            ))
            .with_backend("host"));
        }
        let user = match &self.inner.cfg.users {
            Some(users) => {
                let uid = users.uid_of(volume.project.as_str())?;
                Some(RunAs {
                    uid,
                    gid: uid,
                    home: PathBuf::new(),
                })
            }
            None => None,
        };
        volumes::prepare(root, volume, user.as_ref())?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let staging = root.join(format!(".restore-{id}"));
        let result = async {
            let unpacked = super::archive::unpack(tar, staging.clone()).await?;
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(&path)?;
            super::users::chown_tree(&unpacked, meta.uid(), meta.gid())?;
            std::fs::set_permissions(&unpacked, meta.permissions())?;
            let old = root.join(format!(".replaced-{id}"));
            std::fs::rename(&path, &old)?;
            if let Err(e) = std::fs::rename(&unpacked, &path) {
                let _ = std::fs::rename(&old, &path);
                return Err(e.into());
            }
            let _ = std::fs::remove_dir_all(&old);
            Ok::<(), Error>(())
        }
        .await;
        let _ = std::fs::remove_dir_all(&staging);
        result.map_err(|e| {
            e.context(format!("restoring volume {}", volume.name))
                .with_backend("host")
        })?;
        tracing::info!(volume = %path.display(), "replaced a volume's contents from an archive, as asked");
        Ok(())
    }
}

impl HostRuntime {
    /// Whether an instance of this runtime mounts `volume`.
    fn mounted(&self, volume: &VolumeRef) -> bool {
        self.lock().values().any(|i| {
            let spec = &i.record.lock().unwrap_or_else(|p| p.into_inner()).spec;
            spec.volumes
                .iter()
                .any(|v| volume_of(spec, &v.name) == *volume)
        })
    }
}

/// Which volume `name` of an instance of `spec` is: its project's, in its network.
fn volume_of(spec: &InstanceSpec, name: &str) -> VolumeRef {
    VolumeRef {
        project: ProjectId(spec.labels.get(label::PROJECT).cloned().unwrap_or_default()),
        scope: spec.network.clone(),
        name: name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{read_tail, rotate_if_big, LOG};
    use std::io::Write;

    #[test]
    fn rotates_big_logs_keeping_the_appender_working() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(LOG);
        let mut app = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&p)
            .unwrap();
        writeln!(app, "{}", "x".repeat(100)).unwrap();
        assert!(!rotate_if_big(dir.path(), 1000).unwrap());
        assert!(rotate_if_big(dir.path(), 50).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        assert_eq!(
            std::fs::metadata(dir.path().join("output.log.1"))
                .unwrap()
                .len(),
            101
        );
        writeln!(app, "after").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "after\n");
    }

    #[test]
    fn tails_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut f = std::fs::File::create(&p).unwrap();
        for i in 0..5 {
            writeln!(f, "line {i}").unwrap();
        }
        let (all, end) = read_tail(&p, None).unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(end, std::fs::metadata(&p).unwrap().len());
        assert_eq!(read_tail(&p, Some(2)).unwrap().0, ["line 3", "line 4"]);
        assert_eq!(read_tail(&p, Some(9)).unwrap().0.len(), 5);
        assert!(read_tail(&p, Some(0)).unwrap().0.is_empty());
    }
}
