//! The in-memory runtime.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use tokio::sync::broadcast;

use super::{service_name, Faults};
use crate::error::{Error, Result};
use crate::model::*;
use crate::traits::{ByteStream, LogOptions, Runtime};

#[derive(Debug)]
struct Entry {
    instance: Instance,
    spec: InstanceSpec,
    started: Instant,
    exited: Option<(Option<i32>, String)>,
    logs: Vec<LogLine>,
    follow: broadcast::Sender<LogLine>,
}

/// A [`Runtime`] that keeps instances as records. Endpoints are made-up loopback ports
/// (nothing listens on them); health follows the injected [`Faults`].
///
/// A task ([`InstanceSpec::run_once`]) is not run either: its command is read as
/// words. One of them `sleep`: it runs until stopped; `exit N`: it exits with code
/// `N` at once; else it exits with 0 at once. Its output is `ran: <command>`.
#[derive(Debug)]
pub struct MemoryRuntime {
    faults: Faults,
    instances: Mutex<BTreeMap<InstanceId, Entry>>,
    /// Volumes made by starts (of specs labelled with a project); kept until
    /// [`Runtime::remove_volume`].
    volumes: Mutex<std::collections::BTreeSet<VolumeRef>>,
    /// What [`Runtime::import_volume`] put into a volume: its archive, as given.
    contents: Mutex<BTreeMap<VolumeRef, bytes::Bytes>>,
    /// The most instances that ever mounted one volume at once.
    most_writers: std::sync::atomic::AtomicUsize,
    next_port: AtomicU16,
    started: std::sync::atomic::AtomicUsize,
    /// Every task ([`InstanceSpec::run_once`]) ever started, in order.
    tasks: Mutex<Vec<InstanceSpec>>,
}

impl Default for MemoryRuntime {
    fn default() -> Self {
        Self::with_faults(Faults::default())
    }
}

impl MemoryRuntime {
    /// A runtime without faults.
    pub fn new() -> Self {
        Self::default()
    }
    /// A runtime reading faults from `faults`.
    pub fn with_faults(faults: Faults) -> Self {
        MemoryRuntime {
            faults,
            instances: Mutex::new(BTreeMap::new()),
            volumes: Mutex::default(),
            contents: Mutex::default(),
            most_writers: Default::default(),
            next_port: AtomicU16::new(20000),
            started: Default::default(),
            tasks: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<InstanceId, Entry>> {
        self.instances.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every instance that exists (running or exited), by id.
    pub fn instances(&self) -> Vec<Instance> {
        self.lock().values().map(|e| e.instance.clone()).collect()
    }

    /// The spec an instance was started with.
    pub fn spec(&self, id: &InstanceId) -> Option<InstanceSpec> {
        self.lock().get(id).map(|e| e.spec.clone())
    }

    /// The volumes `spec` mounts, if it names its project.
    fn volume_refs(spec: &InstanceSpec) -> Vec<VolumeRef> {
        let Some(project) = spec.labels.get(label::PROJECT) else {
            return Vec::new();
        };
        spec.volumes
            .iter()
            .map(|v| VolumeRef {
                project: ProjectId(project.clone()),
                scope: spec.network.clone(),
                name: v.name.clone(),
            })
            .collect()
    }

    /// The most instances that ever mounted one volume at the same time (one
    /// writer per volume keeps it at 1).
    pub fn most_writers(&self) -> usize {
        self.most_writers.load(Ordering::SeqCst)
    }

    /// Every task ([`InstanceSpec::run_once`]) ever started, oldest first.
    pub fn tasks(&self) -> Vec<InstanceSpec> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many instances were ever started.
    pub fn starts(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// Makes an instance crash (as if the process died) with `code`.
    pub fn crash(&self, id: &InstanceId, code: i32) {
        if let Some(e) = self.lock().get_mut(id) {
            e.exited = Some((Some(code), "crashed".into()));
        }
    }

    /// Brings a crashed instance back, as a runtime that restarts crashed instances
    /// does: it runs (and is healthy) again.
    pub fn restart(&self, id: &InstanceId) {
        if let Some(e) = self.lock().get_mut(id) {
            e.exited = None;
        }
    }

    /// Removes an instance behind the engine's back (as `docker rm -f` would).
    pub fn remove_behind_back(&self, id: &InstanceId) -> bool {
        self.lock().remove(id).is_some()
    }
}

#[async_trait]
impl Runtime for MemoryRuntime {
    async fn start(&self, spec: &InstanceSpec) -> Result<Instance> {
        spec.validate()?;
        let faults = self.faults.get(service_name(&spec.labels));
        if faults.fail_start {
            return Err(Error::new(
                crate::ErrorKind::Backend,
                format!("injected start failure for {}", spec.name),
            )
            .with_backend("memory"));
        }
        self.started.fetch_add(1, Ordering::SeqCst);
        let id = InstanceId::random();
        let port = self.next_port.fetch_add(1, Ordering::SeqCst);
        let instance = Instance {
            id: id.clone(),
            endpoint: Endpoint {
                host: "127.0.0.1".into(),
                port,
            },
            labels: spec.labels.clone(),
        };
        let (follow, _) = broadcast::channel(256);
        let mut logs = vec![LogLine::new(
            LogStream::Stdout,
            format!("{} starting from {}", spec.name, spec.image),
        )];
        let exited = if spec.run_once {
            // A task: its "program" is read, not run (see the type's docs).
            let command = spec.command.clone().unwrap_or_default();
            logs.push(LogLine::new(
                LogStream::Stdout,
                format!("ran: {}", command.join(" ")),
            ));
            self.tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(spec.clone());
            let words: Vec<&str> = command.iter().flat_map(|a| a.split_whitespace()).collect();
            if words.contains(&"sleep") {
                None
            } else {
                let code = words
                    .windows(2)
                    .rev()
                    .find(|w| w[0] == "exit")
                    .and_then(|w| {
                        w[1].trim_matches(|c: char| !c.is_ascii_digit() && c != '-')
                            .parse()
                            .ok()
                    })
                    .unwrap_or(0);
                if code != 0 {
                    logs.push(LogLine::new(
                        LogStream::Stderr,
                        format!("failed: exit {code}"),
                    ));
                }
                Some((Some(code), "exited".to_owned()))
            }
        } else if faults.exit_at_start {
            logs.push(LogLine::new(
                LogStream::Stderr,
                "Error: injected crash at start",
            ));
            Some((Some(1), "exited at start".to_owned()))
        } else {
            logs.push(LogLine::new(
                LogStream::Stdout,
                format!("listening on port {}", spec.port),
            ));
            None
        };
        let mounts = Self::volume_refs(spec);
        let mut g = self.lock();
        g.insert(
            id,
            Entry {
                instance: instance.clone(),
                spec: spec.clone(),
                started: Instant::now(),
                exited,
                logs,
                follow,
            },
        );
        for v in &mounts {
            let writers = g
                .values()
                .filter(|e| Self::volume_refs(&e.spec).contains(v))
                .count();
            self.most_writers.fetch_max(writers, Ordering::SeqCst);
        }
        drop(g);
        self.volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(mounts);
        Ok(instance)
    }

    async fn stop(&self, id: &InstanceId, _grace: Duration) -> Result<()> {
        let mut g = self.lock();
        if let Some(e) = g.get(id) {
            if self.faults.get(service_name(&e.spec.labels)).fail_stop {
                return Err(Error::new(
                    crate::ErrorKind::Backend,
                    format!("injected fault: instance {id} could not be stopped"),
                ));
            }
        }
        // Dropping the entry drops its broadcast sender, which ends followers.
        g.remove(id);
        Ok(())
    }

    async fn status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        let g = self.lock();
        let e = g
            .get(id)
            .ok_or_else(|| Error::not_found(format!("instance {id} not found")))?;
        if let Some((code, reason)) = &e.exited {
            return Ok(InstanceStatus::Exited {
                code: *code,
                reason: reason.clone(),
            });
        }
        let faults = self.faults.get(service_name(&e.spec.labels));
        let process = e.spec.labels.get(label::PROCESS);
        let probe_fails = e.spec.health_check.probe != Probe::None
            && process.is_some_and(|p| faults.failing_probes.contains(p));
        if faults.fail_health || probe_fails {
            let what = match &e.spec.health_check.probe {
                Probe::Http { path } => format!("GET {path} answered 500"),
                Probe::Tcp => "connection refused".to_owned(),
                Probe::None => "injected failure".to_owned(),
                Probe::Postgres => "the database system is starting up".to_owned(),
                Probe::Mysql => "no greeting".to_owned(),
                Probe::Redis => "LOADING".to_owned(),
            };
            return Ok(InstanceStatus::Unhealthy { reason: what });
        }
        if let Some(d) = faults.health_delay {
            if e.started.elapsed() < d {
                return Ok(InstanceStatus::Running);
            }
        }
        Ok(InstanceStatus::Healthy)
    }

    async fn logs(
        &self,
        id: &InstanceId,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, Result<LogLine>>> {
        let g = self.lock();
        let e = g
            .get(id)
            .ok_or_else(|| Error::not_found(format!("instance {id} not found")))?;
        let skip = opts.tail.map_or(0, |n| e.logs.len().saturating_sub(n));
        let past: Vec<Result<LogLine>> = e.logs[skip..].iter().cloned().map(Ok).collect();
        let past = stream::iter(past);
        if !opts.follow {
            return Ok(past.boxed());
        }
        let rx = e.follow.subscribe();
        let live = stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(line) => return Some((Ok(line), rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(past.chain(live).boxed())
    }

    async fn list(&self, labels: &Labels) -> Result<Vec<Instance>> {
        Ok(self
            .lock()
            .values()
            .filter(|e| {
                labels
                    .iter()
                    .all(|(k, v)| e.instance.labels.get(k) == Some(v))
            })
            .map(|e| e.instance.clone())
            .collect())
    }

    async fn volumes(&self, project: &ProjectId, _wanted: &[VolumeRef]) -> Result<Vec<VolumeInfo>> {
        let vols = self.volumes.lock().unwrap_or_else(|p| p.into_inner());
        Ok(vols
            .iter()
            .filter(|v| &v.project == project)
            .map(|v| VolumeInfo {
                volume: v.clone(),
                runtime_name: format!("{}.{}", v.scope.as_deref().unwrap_or("-"), v.name),
                size_bytes: Some(0),
            })
            .collect())
    }

    async fn remove_volume(&self, volume: &VolumeRef) -> Result<()> {
        if self
            .lock()
            .values()
            .any(|e| Self::volume_refs(&e.spec).contains(volume))
        {
            return Err(Error::conflict(format!(
                "volume {} is mounted by an instance",
                volume.name
            )));
        }
        let mut vols = self.volumes.lock().unwrap_or_else(|p| p.into_inner());
        self.contents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(volume);
        if vols.remove(volume) {
            Ok(())
        } else {
            Err(Error::not_found(format!("no volume {}", volume.name)))
        }
    }

    /// The archive last imported into the volume (an empty archive before any).
    async fn export_volume(&self, volume: &VolumeRef) -> Result<ByteStream> {
        if !self
            .volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(volume)
        {
            return Err(Error::not_found(format!("no volume {}", volume.name)));
        }
        let data = self
            .contents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(volume)
            .cloned()
            // An empty tar archive: two zero blocks.
            .unwrap_or_else(|| bytes::Bytes::from(vec![0u8; 1024]));
        Ok(stream::iter([Ok(data)]).boxed())
    }

    /// Keeps the archive as the volume's contents after checking its entries as a
    /// real runtime would; Conflict while an instance mounts the volume.
    async fn import_volume(&self, volume: &VolumeRef, tar: ByteStream) -> Result<()> {
        if self
            .lock()
            .values()
            .any(|e| e.exited.is_none() && Self::volume_refs(&e.spec).contains(volume))
        {
            return Err(Error::conflict(format!(
                "volume {} is mounted by a running instance",
                volume.name
            )));
        }
        let parts: Vec<bytes::Bytes> = tar.try_collect().await?;
        let data = bytes::Bytes::from(parts.concat());
        let mut archive = ::tar::Archive::new(std::io::Cursor::new(&data[..]));
        for entry in archive.entries()? {
            let entry = entry?;
            let path = entry.path()?;
            let mut parts = path.components();
            let under_root = parts.next().is_some_and(|c| {
                c == std::path::Component::Normal(crate::traits::VOLUME_ARCHIVE_ROOT.as_ref())
            });
            if !under_root || !parts.all(|c| matches!(c, std::path::Component::Normal(_))) {
                return Err(Error::invalid(format!(
                    "archive entry {} is outside {}/",
                    path.display(),
                    crate::traits::VOLUME_ARCHIVE_ROOT
                )));
            }
        }
        self.volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(volume.clone());
        self.contents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(volume.clone(), data);
        Ok(())
    }

    /// As Docker: instances of a network reach each other by alias, on the port they
    /// listen on inside.
    fn peer_address(&self, alias: &str, port: u16, _live: Option<&Instance>) -> Option<Endpoint> {
        Some(Endpoint {
            host: alias.to_owned(),
            port,
        })
    }
}
