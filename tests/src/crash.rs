//! File-backed doubles for crash tests: a [`FileRuntime`] and a [`FileRouter`] that keep
//! their state in JSON files (written atomically: temp file + rename), and crash points
//! where the process kills itself with SIGKILL half-way through an operation, after its
//! side effect is durable and before the engine hears back. That is the worst moment for
//! a control plane to die, and the one `Engine::recover` must handle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use wharf_core::*;

/// Where the control plane dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// As the build starts (the deployment is `Building`).
    Build,
    /// Right after the runtime started the release command's instance (the
    /// deployment is `Releasing`; the service has a `release` process).
    Release,
    /// Right after the runtime created the new instance (the deployment is `Starting`
    /// and does not know its instance yet: the instance is an orphan).
    AfterStart,
    /// On the first health probe of the new instance (`HealthChecking`).
    Health,
    /// Right after the router switched the route to the new instance (`Routing`).
    AfterRoute,
    /// While stopping the previous release's instance (the new one is live).
    StopOld,
    /// A canary deploy (10 %), right after the router shared the route with its
    /// instance (`Routing`).
    CanaryRoute,
    /// A canary deploy, once it is out (`Canary`): a restart with a canary out.
    CanaryOut,
    /// Promoting a canary, right after the router moved all the traffic to it (it is
    /// still `Canary`).
    PromoteRoute,
    /// Promoting a canary, while stopping the previous release's instance (the
    /// canary is live).
    PromoteStopOld,
}

impl CrashPoint {
    /// Every crash point, in deployment order.
    pub const ALL: [CrashPoint; 10] = [
        CrashPoint::Build,
        CrashPoint::Release,
        CrashPoint::AfterStart,
        CrashPoint::Health,
        CrashPoint::AfterRoute,
        CrashPoint::StopOld,
        CrashPoint::CanaryRoute,
        CrashPoint::CanaryOut,
        CrashPoint::PromoteRoute,
        CrashPoint::PromoteStopOld,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::Build => "build",
            CrashPoint::Release => "release",
            CrashPoint::AfterStart => "after-start",
            CrashPoint::Health => "health",
            CrashPoint::AfterRoute => "after-route",
            CrashPoint::StopOld => "stop-old",
            CrashPoint::CanaryRoute => "canary-route",
            CrashPoint::CanaryOut => "canary-out",
            CrashPoint::PromoteRoute => "promote-route",
            CrashPoint::PromoteStopOld => "promote-stop-old",
        }
    }

    /// Parses [`CrashPoint::name`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Whether the new release should be the live one after recovery: it is once the
    /// route switched to its healthy instance, or when recovery requested the
    /// interrupted deployment again ([`CrashPoint::retried`]).
    pub fn new_release_wins(self) -> bool {
        self.retried()
            || matches!(
                self,
                CrashPoint::AfterRoute | CrashPoint::StopOld | CrashPoint::PromoteStopOld
            )
    }

    /// Whether recovery fails the interrupted deployment and requests it again
    /// (once): it was the newest request of its service, caught in a step before its
    /// release command or its route switch.
    pub fn retried(self) -> bool {
        matches!(
            self,
            CrashPoint::Build | CrashPoint::AfterStart | CrashPoint::Health
        )
    }

    /// Whether the new release is deployed as a canary.
    pub fn canary(self) -> bool {
        matches!(
            self,
            CrashPoint::CanaryRoute
                | CrashPoint::CanaryOut
                | CrashPoint::PromoteRoute
                | CrashPoint::PromoteStopOld
        )
    }

    /// Whether the new release should still be out as a canary after recovery,
    /// beside the old one: it is until a promote recorded it live (a promote the
    /// crash cut short is done again by hand).
    pub fn canary_stays_out(self) -> bool {
        self.canary() && !self.new_release_wins()
    }
}

/// Kills this process with SIGKILL: no destructor, no flush, no exit handler runs.
pub fn die() -> ! {
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status();
    // `kill` returns before the signal is delivered on some kernels; never go on.
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn read<T: DeserializeOwned + Default>(path: &Path) -> Result<T> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e.into()),
    }
}

fn write<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// What a [`FileRuntime`] keeps on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RuntimeState {
    /// The last port handed out.
    pub last_port: u16,
    /// Running instances by id.
    pub instances: BTreeMap<String, Instance>,
}

/// A [`Runtime`] whose instances are records in a JSON file: every instance it started
/// and did not stop is "running" and healthy, across processes.
#[derive(Debug)]
pub struct FileRuntime {
    path: PathBuf,
    crash: Option<CrashPoint>,
    lock: Mutex<()>,
}

impl FileRuntime {
    /// A runtime keeping its state in `dir/runtime.json`, dying at `crash` if given.
    pub fn new(dir: &Path, crash: Option<CrashPoint>) -> Self {
        FileRuntime {
            path: dir.join("runtime.json"),
            crash,
            lock: Mutex::new(()),
        }
    }

    /// The state on disk.
    pub fn state(dir: &Path) -> Result<RuntimeState> {
        read(&dir.join("runtime.json"))
    }

    fn update<R>(&self, f: impl FnOnce(&mut RuntimeState) -> R) -> Result<R> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut st: RuntimeState = read(&self.path)?;
        let r = f(&mut st);
        write(&self.path, &st)?;
        Ok(r)
    }
}

#[async_trait]
impl Runtime for FileRuntime {
    async fn start(&self, spec: &InstanceSpec) -> Result<Instance> {
        let inst = self.update(|st| {
            st.last_port = st.last_port.max(20000) + 1;
            let inst = Instance {
                id: InstanceId(format!("{}-{}", spec.name, st.last_port)),
                endpoint: Endpoint {
                    host: "127.0.0.1".into(),
                    port: st.last_port,
                },
                labels: spec.labels.clone(),
            };
            st.instances.insert(inst.id.0.clone(), inst.clone());
            inst
        })?;
        if self.crash == Some(CrashPoint::AfterStart) && !spec.run_once {
            die();
        }
        if self.crash == Some(CrashPoint::Release) && spec.run_once {
            die();
        }
        Ok(inst)
    }

    async fn stop(&self, id: &InstanceId, _grace: Duration) -> Result<()> {
        if matches!(
            self.crash,
            Some(CrashPoint::StopOld | CrashPoint::PromoteStopOld)
        ) {
            die();
        }
        self.update(|st| {
            st.instances.remove(&id.0);
        })
    }

    async fn status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        if self.crash == Some(CrashPoint::Health) {
            die();
        }
        let st: RuntimeState = read(&self.path)?;
        match st.instances.contains_key(&id.0) {
            true => Ok(InstanceStatus::Healthy),
            false => Err(Error::not_found(format!("instance {id}"))),
        }
    }

    async fn logs(
        &self,
        id: &InstanceId,
        _opts: LogOptions,
    ) -> Result<BoxStream<'static, Result<LogLine>>> {
        self.status(id).await?;
        Ok(Box::pin(futures::stream::empty()))
    }

    async fn list(&self, labels: &Labels) -> Result<Vec<Instance>> {
        let st: RuntimeState = read(&self.path)?;
        Ok(st
            .instances
            .into_values()
            .filter(|i| labels.iter().all(|(k, v)| i.labels.get(k) == Some(v)))
            .collect())
    }
}

/// A [`Router`] whose routes are records in a JSON file.
#[derive(Debug)]
pub struct FileRouter {
    path: PathBuf,
    crash: Option<CrashPoint>,
    lock: Mutex<()>,
}

impl FileRouter {
    /// A router keeping its routes in `dir/routes.json`, dying at `crash` if given.
    pub fn new(dir: &Path, crash: Option<CrashPoint>) -> Self {
        FileRouter {
            path: dir.join("routes.json"),
            crash,
            lock: Mutex::new(()),
        }
    }

    /// The routes on disk.
    pub fn routes(dir: &Path) -> Result<BTreeMap<String, Route>> {
        read(&dir.join("routes.json"))
    }
}

#[async_trait]
impl Router for FileRouter {
    async fn upsert(&self, route: &Route) -> Result<()> {
        route.validate()?;
        {
            let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut routes: BTreeMap<String, Route> = read(&self.path)?;
            routes.insert(route.id.0.clone(), route.clone());
            write(&self.path, &routes)?;
        }
        if matches!(
            self.crash,
            Some(CrashPoint::AfterRoute | CrashPoint::CanaryRoute | CrashPoint::PromoteRoute)
        ) {
            die();
        }
        Ok(())
    }

    async fn remove(&self, id: &RouteId) -> Result<()> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut routes: BTreeMap<String, Route> = read(&self.path)?;
        routes.remove(&id.0);
        write(&self.path, &routes)
    }

    async fn list(&self) -> Result<Vec<Route>> {
        let routes: BTreeMap<String, Route> = read(&self.path)?;
        Ok(routes.into_values().collect())
    }
}

/// A [`Builder`] that hands over to the in-memory builder, dying first at
/// [`CrashPoint::Build`].
#[derive(Debug)]
pub struct CrashBuilder {
    inner: wharf_core::memory::MemoryBuilder,
    crash: Option<CrashPoint>,
}

impl CrashBuilder {
    /// A builder dying at `crash` if it is [`CrashPoint::Build`].
    pub fn new(crash: Option<CrashPoint>) -> Self {
        CrashBuilder {
            inner: wharf_core::memory::MemoryBuilder::new(),
            crash,
        }
    }
}

#[async_trait]
impl Builder for CrashBuilder {
    async fn build(&self, req: BuildRequest) -> Result<Artifact> {
        if self.crash == Some(CrashPoint::Build) {
            die();
        }
        self.inner.build(req).await
    }
}
