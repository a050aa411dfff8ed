//! The engine that drives deployments.
//!
//! [`Engine::deploy`] records a deployment, then moves it through the state machine
//! ([`crate::state`]) one step at a time: every transition is persisted
//! (compare-and-set) before the engine acts on it, and emits an [`Event`].
//!
//! Guarantees:
//! - one active deployment per service: a newer request waits for the running one and
//!   supersedes any request still queued;
//! - at most [`EngineConfig::max_concurrent_builds`] builds at once;
//! - zero-downtime switch: start new, health-check, switch the route, then stop old; a
//!   failure anywhere stops the new instance and leaves the previous release serving;
//! - except for a service with volumes, which has one writer per volume: its live
//!   instance stops before the new one starts (stop-then-start, said in the
//!   deployment's events), and a failure starts the previous release again;
//! - volumes are never removed by a deployment, a rollback, a teardown or recovery;
//! - [`Engine::rollback`] re-activates an earlier release's artifact without building;
//! - [`Engine::deploy_cascade`] and [`Engine::deploy_project`] deploy in dependency
//!   waves and skip (with the reason) the dependents of a service that failed;
//! - a service's references to other services' values (`${{ db.PASSWORD }}`, see
//!   [`crate::refs`]) are resolved when it starts, after the services it references
//!   (they are dependencies in every rollout); a reference to an unknown service or
//!   variable is refused before anything is recorded;
//! - [`Engine::deploy_canary`] puts a new release beside the live one with a share
//!   of the traffic until [`Engine::promote`] or [`Engine::abort_canary`]; while it
//!   is out, nothing else deploys, rolls back or scales the service (see [`canary`]);
//! - [`Engine::recover`] at start-up reconciles the store with runtime and router;
//! - backend calls that are safe to repeat (runtime `status` and `list`, router
//!   `upsert`, `remove` and `list`) are retried when they fail with a retryable
//!   error, as [`EngineConfig::retry`] says; builds and starts never are. (The
//!   health check polls `status` until its own deadline, which already rides out
//!   retryable failures.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use tokio::sync::{broadcast, mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Result};
use crate::model::*;
use crate::planner::DependencyGraph;
use crate::retry::RetryPolicy;
use crate::state::{DeployEvent, DeploymentState};
use crate::traits::*;

pub mod canary;
mod health;
mod scale;
mod tasks;

pub use canary::canary_upstreams;

pub use tasks::{RunOptions, RunOutcome, TaskKind, TASK_LABEL};

/// Settings of an [`Engine`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Where sources are fetched to (one sub-folder per deployment, removed after).
    pub work_dir: PathBuf,
    /// How many builds may run at once.
    pub max_concurrent_builds: usize,
    /// How many of them one project may hold (default `None`: all but one, so a
    /// project whose builds hang never blocks every other project).
    pub max_builds_per_project: Option<usize>,
    /// The longest a build may run; it then fails and frees its slot at once.
    pub build_timeout: Duration,
    /// How many lines of build output a deployment keeps (in the store and in its
    /// event stream); what comes after is dropped with one note saying so. Each line
    /// is cut at [`MAX_LOG_LINE_BYTES`].
    pub max_log_lines: usize,
    /// How many bytes of log lines of any stream a deployment keeps (git's output,
    /// which a repository's server controls, comes as system lines); then one note.
    pub max_log_bytes: usize,
    /// Generated hostnames are `<service>.<project>.<base_domain>`.
    pub base_domain: String,
    /// TLS policy of generated routes.
    pub tls: TlsPolicy,
    /// Whether public URLs ([`Engine::url`], `${{ svc.URL }}`) are `https`.
    pub public_https: bool,
    /// The port public URLs name, when the router does not serve on the scheme's
    /// default one.
    pub public_port: Option<u16>,
    /// How long an old instance gets to exit after its traffic moved.
    pub stop_grace: Duration,
    /// How long the router may take to apply a route change after it accepted it
    /// (default 0: the built-in proxy and Caddy apply it before they answer). An
    /// instance a route change took traffic from is stopped only this long after
    /// the change, so a router that applies changes later (Traefik's file provider,
    /// throttled by its `providersThrottleDuration`) never sends a request to it.
    pub route_settle: Duration,
    /// The longest a release command ([`crate::Step::Releasing`]) may run; it is then
    /// stopped and the deployment fails, the previous release serving on.
    pub release_timeout: Duration,
    /// How many of an instance's last log lines go into a failure reason.
    pub failure_log_lines: usize,
    /// How the engine retries backend calls that are safe to repeat (runtime `status`
    /// and `list`, router `upsert`, `remove` and `list`) when they fail with a
    /// retryable error; builds and starts are never retried. Default:
    /// [`RetryPolicy::default`] (4 attempts, backoff from 100 ms).
    pub retry: RetryPolicy,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            work_dir: std::env::temp_dir().join("wharf-work"),
            max_concurrent_builds: 2,
            max_builds_per_project: None,
            build_timeout: Duration::from_secs(30 * 60),
            max_log_lines: 20_000,
            max_log_bytes: 16 * 1024 * 1024,
            base_domain: "localhost".into(),
            tls: TlsPolicy::None,
            public_https: false,
            public_port: None,
            stop_grace: Duration::from_secs(10),
            route_settle: Duration::ZERO,
            release_timeout: Duration::from_secs(10 * 60),
            failure_log_lines: 20,
            retry: RetryPolicy::default(),
        }
    }
}

/// Builds an [`Engine`] from its backends.
///
/// ```
/// use std::sync::Arc;
/// use wharf_core::{memory::*, store::MemoryStore, Engine};
/// let engine = Engine::builder()
///     .store(Arc::new(MemoryStore::new()))
///     .builder(Arc::new(MemoryBuilder::new()))
///     .runtime(Arc::new(MemoryRuntime::new()))
///     .router(Arc::new(MemoryRouter::new()))
///     .max_concurrent_builds(4)
///     .build()
///     .unwrap();
/// # drop(engine);
/// ```
#[derive(Debug, Default)]
pub struct EngineBuilder {
    store: Option<DynStore>,
    fetcher: Option<DynFetcher>,
    builder: Option<DynBuilder>,
    runtime: Option<DynRuntime>,
    router: Option<DynRouter>,
    config: EngineConfig,
}

impl EngineBuilder {
    setters! {
        /// The store (required).
        store(store: DynStore) => store = Some(store);
        /// The source fetcher (default: [`crate::fetch::Fetchers`], for folders, archives
        /// and git).
        fetcher(fetcher: DynFetcher) => fetcher = Some(fetcher);
        /// The builder (required).
        builder(builder: DynBuilder) => builder = Some(builder);
        /// The runtime (required).
        runtime(runtime: DynRuntime) => runtime = Some(runtime);
        /// The router (required).
        router(router: DynRouter) => router = Some(router);
        /// All settings at once.
        config(config: EngineConfig) => config = config;
        /// See [`EngineConfig::work_dir`].
        work_dir(dir: impl Into<PathBuf>) => config.work_dir = dir.into();
        /// See [`EngineConfig::max_concurrent_builds`].
        max_concurrent_builds(n: usize) => config.max_concurrent_builds = n;
        /// See [`EngineConfig::max_builds_per_project`].
        max_builds_per_project(n: usize) => config.max_builds_per_project = Some(n);
        /// See [`EngineConfig::build_timeout`].
        build_timeout(timeout: Duration) => config.build_timeout = timeout;
        /// See [`EngineConfig::max_log_lines`].
        max_log_lines(n: usize) => config.max_log_lines = n;
        /// See [`EngineConfig::max_log_bytes`].
        max_log_bytes(n: usize) => config.max_log_bytes = n;
        /// See [`EngineConfig::base_domain`].
        base_domain(domain: impl Into<String>) => config.base_domain = domain.into();
        /// See [`EngineConfig::stop_grace`].
        stop_grace(grace: Duration) => config.stop_grace = grace;
        /// See [`EngineConfig::route_settle`].
        route_settle(settle: Duration) => config.route_settle = settle;
        /// See [`EngineConfig::release_timeout`].
        release_timeout(timeout: Duration) => config.release_timeout = timeout;
        /// See [`EngineConfig::tls`].
        tls(tls: TlsPolicy) => config.tls = tls;
        /// See [`EngineConfig::public_https`].
        public_https(https: bool) => config.public_https = https;
        /// See [`EngineConfig::public_port`].
        public_port(port: Option<u16>) => config.public_port = port;
        /// See [`EngineConfig::retry`] ([`RetryPolicy::none`] turns retries off).
        retry(policy: RetryPolicy) => config.retry = policy;
    }

    /// The engine, or InvalidInput naming what is missing or wrong.
    pub fn build(self) -> Result<Engine> {
        let missing = |what: &str| Error::invalid(format!("engine builder: no {what} given"));
        let store = self.store.ok_or_else(|| missing("store"))?;
        let builder = self.builder.ok_or_else(|| missing("builder"))?;
        let runtime = self.runtime.ok_or_else(|| missing("runtime"))?;
        let router = self.router.ok_or_else(|| missing("router"))?;
        let fetcher = self
            .fetcher
            .unwrap_or_else(|| Arc::new(crate::fetch::Fetchers::default()));
        if self.config.max_concurrent_builds == 0 || self.config.max_builds_per_project == Some(0) {
            return Err(Error::invalid(
                "engine builder: max_concurrent_builds and max_builds_per_project must be at least 1",
            ));
        }
        if self.config.build_timeout.is_zero() {
            return Err(Error::invalid(
                "engine builder: build_timeout must not be zero",
            ));
        }
        crate::hostname::validate_hostname(&self.config.base_domain)
            .map_err(|e| e.context("engine builder: base_domain"))?;
        let (events, _) = broadcast::channel(1024);
        Ok(Engine {
            inner: Arc::new(Inner {
                build_slots: Arc::new(Semaphore::new(self.config.max_concurrent_builds)),
                project_build_slots: Mutex::new(HashMap::new()),
                store,
                fetcher,
                builder,
                runtime,
                router,
                config: self.config,
                service_locks: Mutex::new(HashMap::new()),
                route_locks: Mutex::new(HashMap::new()),
                task_gates: Mutex::new(HashMap::new()),
                running: Mutex::new(HashMap::new()),
                events,
                taken_out: Mutex::new(HashMap::new()),
            }),
        })
    }
}

#[derive(Debug)]
struct Inner {
    store: DynStore,
    fetcher: DynFetcher,
    builder: DynBuilder,
    runtime: DynRuntime,
    router: DynRouter,
    config: EngineConfig,
    build_slots: Arc<Semaphore>,
    /// Each project's share of the build slots.
    project_build_slots: Mutex<HashMap<ProjectId, Arc<Semaphore>>>,
    service_locks: Mutex<HashMap<ServiceId, Arc<tokio::sync::Mutex<()>>>>,
    /// Held while a service's route is written and its live deployment changes, so a
    /// route refresh never puts back the instance a deployment is switching away from.
    route_locks: Mutex<HashMap<ServiceId, Arc<tokio::sync::Mutex<()>>>>,
    /// Held for reading while a task of a service's live release is looked up and
    /// started, and for writing while [`Engine::teardown`] ends that release, so no
    /// task starts from a release being torn down once its instances are listed.
    task_gates: Mutex<HashMap<ServiceId, Arc<tokio::sync::RwLock<()>>>>,
    running: Mutex<HashMap<DeploymentId, CancellationToken>>,
    events: broadcast::Sender<Event>,
    /// Per service, the endpoints [`Engine::check_routes`] took out of its route
    /// because their instance was not healthy (cleared by every other publish).
    taken_out: Mutex<HashMap<ServiceId, Vec<Endpoint>>>,
}

/// `service`'s lock in `locks`, made on first use.
fn lock_of<L: Default>(locks: &Mutex<HashMap<ServiceId, Arc<L>>>, service: &ServiceId) -> Arc<L> {
    let mut locks = locks.lock().unwrap_or_else(|p| p.into_inner());
    locks.entry(service.clone()).or_default().clone()
}

/// Drives deployments over a store and backends. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// A deployment in flight: its events, a way to cancel it, and its outcome.
#[derive(Debug)]
pub struct DeploymentHandle {
    id: DeploymentId,
    cancel: CancellationToken,
    events: Option<mpsc::UnboundedReceiver<Event>>,
    done: watch::Receiver<Option<Deployment>>,
}

impl DeploymentHandle {
    /// The deployment's id.
    pub fn id(&self) -> &DeploymentId {
        &self.id
    }
    /// Asks the deployment to stop. It ends `Cancelled` unless it is already routing
    /// traffic (too late to cancel) or done.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
    /// The deployment's events (state changes and log lines) from the start, in order.
    /// Can be taken once; ends when the deployment does.
    pub fn events(&mut self) -> BoxStream<'static, Event> {
        event_stream(self.events.take())
    }
    /// Waits for the deployment to end (live, failed, cancelled...) and returns it.
    pub async fn wait(&self) -> Result<Deployment> {
        let mut done = self.done.clone();
        let d = done
            .wait_for(|d| d.is_some())
            .await
            .map_err(|_| Error::internal("deployment task ended without an outcome"))?;
        Ok(d.clone().expect("checked by wait_for"))
    }
}

/// The events `rx` receives, as a stream (empty once the receiver was taken).
fn event_stream(rx: Option<mpsc::UnboundedReceiver<Event>>) -> BoxStream<'static, Event> {
    match rx {
        Some(rx) => {
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
                .boxed()
        }
        None => futures::stream::empty().boxed(),
    }
}

/// The outcome of a multi-service rollout, per service name.
#[derive(Debug, Clone, Default)]
pub struct RolloutReport {
    /// The final deployment of each service in the rollout.
    pub deployments: BTreeMap<String, Deployment>,
}

impl RolloutReport {
    /// Whether every service went live.
    pub fn all_live(&self) -> bool {
        self.deployments
            .values()
            .all(|d| d.state == DeploymentState::Live)
    }
}

/// A rollout of several services in dependency waves.
#[derive(Debug)]
pub struct RolloutHandle {
    waves: Vec<Vec<String>>,
    events: Option<mpsc::UnboundedReceiver<Event>>,
    task: tokio::task::JoinHandle<Result<RolloutReport>>,
}

impl RolloutHandle {
    /// The waves, in order (services of one wave deploy in parallel).
    pub fn waves(&self) -> &[Vec<String>] {
        &self.waves
    }
    /// The events of every deployment of the rollout. Can be taken once.
    pub fn events(&mut self) -> BoxStream<'static, Event> {
        event_stream(self.events.take())
    }
    /// Waits for every service to end.
    pub async fn wait(self) -> Result<RolloutReport> {
        self.task
            .await
            .map_err(|e| Error::internal(format!("rollout task failed: {e}")))?
    }
}

/// What [`Engine::recover`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecoveryReport {
    /// Deployments resumed (queued ones restarted; routing ones finished).
    pub resumed: Vec<DeploymentId>,
    /// Deployments failed because they were interrupted mid-way.
    pub failed: Vec<DeploymentId>,
    /// Deployments requested again for an interrupted one that was the newest
    /// request of its service (see [`Deployment::retry_of`]); they run once
    /// recovery is done (also listed in `resumed`).
    #[serde(default)]
    pub retried: Vec<DeploymentId>,
    /// Instances removed because no live or resumed deployment owns them.
    pub removed_instances: Vec<InstanceId>,
    /// Services whose live instance was gone and was started again from the release.
    pub restarted: Vec<ServiceId>,
    /// Canaries kept out beside their live release (their instances still ran).
    #[serde(default)]
    pub canaries: Vec<DeploymentId>,
    /// Routes removed because their service has nothing live.
    pub removed_routes: Vec<RouteId>,
    /// Instances and routes left running because their service could not be read
    /// (see the server log): never removed on a guess.
    pub left_alone: Vec<String>,
}

/// Emits the events of one deployment: persists them, then hands them to the
/// deployment's handle and to [`Engine::subscribe`]rs, in order.
#[derive(Debug, Clone)]
struct Emitter {
    tx: mpsc::UnboundedSender<EventKind>,
}

impl Emitter {
    fn spawn(
        inner: &Arc<Inner>,
        dep: &Deployment,
        extra: Option<mpsc::UnboundedSender<Event>>,
    ) -> (
        Emitter,
        mpsc::UnboundedReceiver<Event>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, mut rx) = mpsc::unbounded_channel::<EventKind>();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let store = inner.store.clone();
        let global = inner.events.clone();
        let (deployment, service) = (dep.id.clone(), dep.service.clone());
        let mut cap = LogCap::new(inner.config.max_log_lines, inner.config.max_log_bytes);
        let pump = tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, 256).await > 0 {
                let events: Vec<Event> = batch
                    .drain(..)
                    .filter_map(|kind| cap.admit(kind))
                    .map(|kind| Event {
                        seq: 0,
                        deployment: deployment.clone(),
                        service: service.clone(),
                        at: Timestamp::now(),
                        kind,
                    })
                    .collect();
                let events = match store.append_events(events.clone()).await {
                    Ok(saved) => saved,
                    Err(e) => {
                        tracing::warn!(deployment = %deployment, error = %e, "could not persist events");
                        events
                    }
                };
                for e in events {
                    let _ = out_tx.send(e.clone());
                    if let Some(x) = &extra {
                        let _ = x.send(e.clone());
                    }
                    let _ = global.send(e);
                }
            }
        });
        (Emitter { tx }, out_rx, pump)
    }

    /// An emitter whose notes go nowhere.
    fn discard() -> Emitter {
        Emitter {
            tx: mpsc::unbounded_channel().0,
        }
    }

    fn state(&self, from: &DeploymentState, to: &DeploymentState) {
        let _ = self.tx.send(EventKind::State {
            from: from.clone(),
            to: to.clone(),
        });
    }

    fn note(&self, text: impl Into<String>) {
        let _ = self
            .tx
            .send(EventKind::Log(LogLine::new(LogStream::System, text)));
    }

    fn sink(&self) -> LogSink {
        let tx = self.tx.clone();
        LogSink::from_fn(move |line| {
            let _ = tx.send(EventKind::Log(line));
        })
    }
}

/// The longest log line a deployment keeps, in bytes; a longer one is cut.
pub const MAX_LOG_LINE_BYTES: usize = 16 * 1024;

/// Bounds what a deployment's output may store: lines cut at
/// [`MAX_LOG_LINE_BYTES`], and past `max` lines of build or app output, nothing more
/// but one note. State changes and the engine's own notes always pass.
struct LogCap {
    max: usize,
    max_bytes: usize,
    seen: usize,
    /// Bytes of log lines kept so far, of every stream (git's output, which a
    /// repository's server controls, comes as system lines).
    bytes: usize,
    full: bool,
}

impl LogCap {
    fn new(max: usize, max_bytes: usize) -> Self {
        LogCap {
            max,
            max_bytes,
            seen: 0,
            bytes: 0,
            full: false,
        }
    }

    fn admit(&mut self, kind: EventKind) -> Option<EventKind> {
        let EventKind::Log(mut line) = kind else {
            return Some(kind);
        };
        if line.text.len() > MAX_LOG_LINE_BYTES {
            let mut end = MAX_LOG_LINE_BYTES;
            while !line.text.is_char_boundary(end) {
                end -= 1;
            }
            line.text.truncate(end);
            line.text.push_str(" [line cut]");
        }
        if self.full {
            return None;
        }
        self.bytes += line.text.len();
        if self.bytes > self.max_bytes {
            self.full = true;
            return Some(EventKind::Log(LogLine::new(
                LogStream::System,
                format!(
                    "output past {} bytes is not kept (max_log_bytes); the deployment goes on",
                    self.max_bytes
                ),
            )));
        }
        if line.stream == LogStream::System {
            return Some(EventKind::Log(line));
        }
        self.seen += 1;
        match self.seen.cmp(&(self.max + 1)) {
            std::cmp::Ordering::Less => Some(EventKind::Log(line)),
            std::cmp::Ordering::Equal => Some(EventKind::Log(LogLine::new(
                LogStream::System,
                format!(
                    "output past {} lines is not kept (max_log_lines); the deployment goes on",
                    self.max
                ),
            ))),
            std::cmp::Ordering::Greater => None,
        }
    }
}

/// Why a run stopped early.
enum Stop {
    Cancelled,
    Failed(String),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        if e.kind() == ErrorKind::Cancelled {
            Stop::Cancelled
        } else {
            Stop::Failed(e.to_string())
        }
    }
}

impl Engine {
    /// Starts building an engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The store the engine records into.
    pub fn store(&self) -> &DynStore {
        &self.inner.store
    }

    /// The runtime the engine starts instances on (for reading a live instance's
    /// logs or status outside a deployment).
    pub fn runtime(&self) -> &DynRuntime {
        &self.inner.runtime
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Every event of every deployment from now on (for live views). A slow receiver
    /// may lag and miss events; the store keeps them all ([`Store::events`]).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Deploys the service's current source. Returns at once with a handle; the
    /// deployment waits for any running deployment of the same service and supersedes
    /// one still queued.
    pub async fn deploy(&self, service: &ServiceId, trigger: Trigger) -> Result<DeploymentHandle> {
        let svc = self.inner.store.service(service).await?;
        svc.validate()?;
        self.check_references(&svc).await?;
        let dep = self.new_deployment(&svc, trigger, None, None);
        self.launch(dep, None).await
    }

    /// Deploys `source` to the service without changing the service's own source: a
    /// webhook deploys the exact commit it was told about (the branch may have moved
    /// on by the time a queued deployment fetches it). The source is the
    /// deployment's, so its release records what was built.
    pub async fn deploy_source(
        &self,
        service: &ServiceId,
        trigger: Trigger,
        source: SourceSpec,
    ) -> Result<DeploymentHandle> {
        let mut svc = self.inner.store.service(service).await?;
        svc.source = source;
        svc.validate()?;
        self.check_references(&svc).await?;
        let dep = self.new_deployment(&svc, trigger, None, None);
        self.launch(dep, None).await
    }

    /// Re-activates `release` of its service: starts its artifact again (no fetch, no
    /// build), health-checks it and switches traffic to it; the release that was live
    /// ends `RolledBack`.
    pub async fn rollback(&self, release: &ReleaseId) -> Result<DeploymentHandle> {
        self.rollback_with(release, false).await
    }

    /// As [`Engine::rollback`]; with `run_release`, the release's release command
    /// ([`crate::Step::Releasing`]) runs again before its instances start (a
    /// migration to run down to it, say).
    pub async fn rollback_with(
        &self,
        release: &ReleaseId,
        run_release: bool,
    ) -> Result<DeploymentHandle> {
        let (svc, rel) = self.find_release(release).await?;
        let original = self.inner.store.deployment(&rel.deployment).await?;
        let mut plan = original.plan.clone();
        if let Some(p) = plan.as_mut() {
            p.port = rel.port;
        }
        let dep = self.new_deployment(
            &svc,
            Trigger::Rollback {
                release: rel.id.clone(),
                run_release,
            },
            Some(rel.artifact.clone()),
            plan.or_else(|| Some(image_plan(&rel.artifact.image, rel.port))),
        );
        self.launch(dep, None).await
    }

    /// Waits until no deployment this engine started (or [`Engine::recover`]
    /// restarted) is running: each has ended, a live one's previous release retired.
    /// For a graceful shutdown, and for tests.
    pub async fn wait_idle(&self) {
        loop {
            let idle = self
                .inner
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty();
            if idle {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Cancels a running or queued deployment started by this engine. Returns whether
    /// it was found running here.
    pub fn cancel(&self, deployment: &DeploymentId) -> bool {
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        match running.get(deployment) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Takes `service` off the air so that deleting it leaves nothing behind: cancels
    /// its running deployments (waiting up to a minute for them to stop), ends its
    /// live release ([`DeploymentState::Stopped`]: no task or cron run starts from it
    /// any more), removes its route and stops every instance carrying its labels.
    /// Its records stay in the store; the caller deletes them.
    pub async fn teardown(&self, service: &ServiceId) -> Result<()> {
        let store = &self.inner.store;
        let active = DeploymentFilter {
            service: Some(service.clone()),
            active_only: true,
            ..Default::default()
        };
        for dep in store.deployments(&active).await? {
            self.cancel(&dep.id);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !store.deployments(&active).await?.is_empty() {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::timeout(format!(
                    "deployments of service {service} did not stop within a minute"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A canary waits for a person: it ends here (its instances stop below).
        if let Some(canary) = self.canary_of(service).await? {
            store.apply(&canary, &DeployEvent::Abort).await?;
        }
        {
            // The live release ends before its instances are listed, and no task of
            // this engine (a cron run, `wharf run`) is between finding it and
            // starting: no task starts from it afterwards (another control plane
            // finds it ended too), so nothing holds its volumes once this returns.
            let gate = self.task_gate(service);
            let _no_tasks = gate.write().await;
            let route_lock = self.route_lock(service);
            let _turn = route_lock.lock().await;
            while let Some(live) = store.live_deployment(service).await? {
                store.apply(&live, &DeployEvent::Stop).await?;
            }
            let route = RouteId(service.0.clone());
            self.retrying(|| self.inner.router.remove(&route)).await?;
        }
        let labels = Labels::from([
            (label::MANAGED.to_string(), "true".to_string()),
            (label::SERVICE.to_string(), service.to_string()),
        ]);
        for inst in self.retrying(|| self.inner.runtime.list(&labels)).await? {
            self.inner
                .runtime
                .stop(&inst.id, self.inner.config.stop_grace)
                .await?;
        }
        Ok(())
    }

    /// Applies the service's route again from its live deployment, so a change of
    /// its hosts (a custom domain added or removed) takes effect without a redeploy.
    /// Returns whether the service had a live deployment to route; without one there
    /// is nothing to do (its next deployment routes the new hosts).
    pub async fn refresh_route(&self, service: &ServiceId) -> Result<bool> {
        let store = &self.inner.store;
        let route_lock = self.route_lock(service);
        let _turn = route_lock.lock().await;
        let svc = store.service(service).await?;
        let project = store.project(&svc.project).await?;
        let recent = store
            .deployments(&DeploymentFilter {
                service: Some(service.clone()),
                ..Default::default()
            })
            .await?;
        let live = recent.iter().find(|d| d.state == DeploymentState::Live);
        let canary = recent.iter().find(|d| d.state == DeploymentState::Canary);
        let upstreams = Self::upstreams_of(live, canary);
        if upstreams.is_empty() {
            return Ok(false);
        }
        self.publish_upstreams(&project, &svc, upstreams).await?;
        Ok(true)
    }

    /// Deploys `service`, then its transitive dependents in dependency waves once it is
    /// live ([`Trigger::Cascade`]). If a service fails, its dependents are skipped
    /// with the reason.
    pub async fn deploy_cascade(
        &self,
        service: &ServiceId,
        trigger: Trigger,
    ) -> Result<RolloutHandle> {
        let svc = self.inner.store.service(service).await?;
        let all = self.inner.store.services(&svc.project).await?;
        let scope: Vec<Service> = all
            .into_iter()
            .filter(|s| s.environment == svc.environment)
            .collect();
        let graph = DependencyGraph::new(&scope)?;
        let mut waves = vec![vec![svc.name.clone()]];
        waves.extend(graph.cascade(&svc.name)?);
        check_scope_references(&scope)?;
        self.refuse_rollout_during_canary(&scope, &waves).await?;
        let from = svc.id.clone();
        let first = svc.name.clone();
        self.rollout(scope, &graph, waves, move |name| {
            if name == first {
                trigger.clone()
            } else {
                Trigger::Cascade { from: from.clone() }
            }
        })
    }

    /// Deploys every service of a project (of its environment-less services, or of
    /// `environment`) in dependency waves; dependents of a failed service are skipped.
    pub async fn deploy_project(
        &self,
        project: &ProjectId,
        environment: Option<&EnvironmentId>,
        trigger: Trigger,
    ) -> Result<RolloutHandle> {
        let all = self.inner.store.services(project).await?;
        let scope: Vec<Service> = all
            .into_iter()
            .filter(|s| s.environment.as_ref() == environment)
            .collect();
        if scope.is_empty() {
            return Err(Error::invalid(format!(
                "project {project} has no services to deploy"
            )));
        }
        let graph = DependencyGraph::new(&scope)?;
        check_scope_references(&scope)?;
        let waves = graph.waves();
        self.refuse_rollout_during_canary(&scope, &waves).await?;
        self.rollout(scope, &graph, waves, move |_| trigger.clone())
    }

    /// Refuses (conflict) a rollout of `waves` if one of its services has a canary
    /// out, before anything deploys. (The rollout checks again as it starts, for a
    /// canary that goes out in between.)
    async fn refuse_rollout_during_canary(
        &self,
        scope: &[Service],
        waves: &[Vec<String>],
    ) -> Result<()> {
        for svc in scope
            .iter()
            .filter(|s| waves.iter().flatten().any(|n| *n == s.name))
        {
            self.refuse_during_canary(&svc.id, None)
                .await
                .map_err(|e| e.context(format!("service {}", svc.name)))?;
        }
        Ok(())
    }

    fn rollout(
        &self,
        scope: Vec<Service>,
        graph: &DependencyGraph,
        waves: Vec<Vec<String>>,
        trigger_for: impl Fn(&str) -> Trigger + Send + 'static,
    ) -> Result<RolloutHandle> {
        // Its dependencies through `depends_on` and through references alike.
        let deps_of: BTreeMap<String, Vec<String>> = scope
            .iter()
            .map(|s| Ok((s.name.clone(), graph.dependencies(&s.name)?)))
            .collect::<Result<_>>()?;
        let by_name: BTreeMap<String, Service> =
            scope.into_iter().map(|s| (s.name.clone(), s)).collect();
        let (tx, rx) = mpsc::unbounded_channel();
        let planned: Vec<ServiceId> = waves
            .iter()
            .flatten()
            .filter_map(|n| by_name.get(n).map(|s| s.id.clone()))
            .collect();
        let engine = self.clone();
        let plan = waves.clone();
        let task = tokio::spawn(async move {
            // Refused before anything deploys, rather than half-way through.
            for svc in &planned {
                engine.refuse_during_canary(svc, None).await?;
            }
            let mut report = RolloutReport::default();
            for wave in plan {
                let mut handles = Vec::new();
                for name in wave {
                    let svc = by_name.get(&name).ok_or_else(|| {
                        Error::internal(format!("planned unknown service {name}"))
                    })?;
                    let deps = deps_of.get(&name).map_or(&[][..], Vec::as_slice);
                    let blocked = deps.iter().find_map(|d| {
                        report
                            .deployments
                            .get(d)
                            .filter(|dep| dep.state != DeploymentState::Live)
                            .map(|dep| (d.clone(), dep.state.clone()))
                    });
                    let dep = engine.new_deployment(svc, trigger_for(&name), None, None);
                    match blocked {
                        Some((d, state)) => {
                            let reason = format!("dependency {d} did not go live ({state})");
                            let skipped = engine.skip(dep, &reason, &tx).await?;
                            report.deployments.insert(name, skipped);
                        }
                        None => handles.push((name, engine.launch(dep, Some(tx.clone())).await?)),
                    }
                }
                for (name, h) in handles {
                    report.deployments.insert(name, h.wait().await?);
                }
            }
            Ok(report)
        });
        Ok(RolloutHandle {
            waves,
            events: Some(rx),
            task,
        })
    }

    async fn skip(
        &self,
        dep: Deployment,
        reason: &str,
        tx: &mpsc::UnboundedSender<Event>,
    ) -> Result<Deployment> {
        self.inner.store.insert_deployment(&dep).await?;
        let (emit, _rx, pump) = Emitter::spawn(&self.inner, &dep, Some(tx.clone()));
        let next = self
            .inner
            .store
            .apply(
                &dep,
                &DeployEvent::Skip {
                    reason: reason.to_owned(),
                },
            )
            .await?;
        emit.state(&dep.state, &next.state);
        drop(emit);
        let _ = pump.await;
        Ok(next)
    }

    fn new_deployment(
        &self,
        svc: &Service,
        trigger: Trigger,
        artifact: Option<Artifact>,
        plan: Option<BuildPlan>,
    ) -> Deployment {
        Deployment {
            plan,
            artifact,
            ..Deployment::queued(svc, trigger)
        }
    }

    /// Waits for the router to apply a route change ([`EngineConfig::route_settle`]).
    async fn settle(&self) {
        let settle = self.inner.config.route_settle;
        if !settle.is_zero() {
            tokio::time::sleep(settle).await;
        }
    }

    /// Runs a backend call that is safe to repeat under the engine's retry policy
    /// (never a build or a start).
    async fn retrying<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.inner.config.retry.run(op).await
    }

    async fn find_release(&self, release: &ReleaseId) -> Result<(Service, Release)> {
        let r = self.inner.store.release(release).await?;
        let s = self.inner.store.service(&r.service).await?;
        Ok((s, r))
    }

    /// Records `dep` as queued, supersedes older queued requests of the service and
    /// spawns its run.
    async fn launch(
        &self,
        dep: Deployment,
        extra: Option<mpsc::UnboundedSender<Event>>,
    ) -> Result<DeploymentHandle> {
        self.refuse_during_canary(&dep.service, None).await?;
        self.inner.store.insert_deployment(&dep).await?;
        let note = format!(
            "deployment {} queued ({})",
            dep.id,
            trigger_text(&dep.trigger)
        );
        let handle = self.spawn_run(dep.clone(), extra, note);
        self.supersede_queued(&dep).await;
        Ok(handle)
    }

    /// Spawns the run of a recorded, queued deployment.
    fn spawn_run(
        &self,
        dep: Deployment,
        extra: Option<mpsc::UnboundedSender<Event>>,
        note: String,
    ) -> DeploymentHandle {
        let (emit, events, pump) = Emitter::spawn(&self.inner, &dep, extra);
        emit.note(note);
        let cancel = CancellationToken::new();
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dep.id.clone(), cancel.clone());
        let (done_tx, done) = watch::channel(None);
        let engine = self.clone();
        let token = cancel.clone();
        let id = dep.id.clone();
        tokio::spawn(async move {
            let final_dep = match engine.run(dep.clone(), &emit, &token).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(deployment = %dep.id, error = %e, "deployment run failed");
                    emit.note(format!("internal error: {e}"));
                    engine.inner.store.deployment(&dep.id).await.unwrap_or(dep)
                }
            };
            engine
                .inner
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&final_dep.id);
            drop(emit);
            let _ = pump.await;
            let _ = done_tx.send(Some(final_dep));
        });
        DeploymentHandle {
            id,
            cancel,
            events: Some(events),
            done,
        }
    }

    async fn supersede_queued(&self, newer: &Deployment) {
        let filter = DeploymentFilter {
            service: Some(newer.service.clone()),
            active_only: true,
            ..Default::default()
        };
        let Ok(active) = self.inner.store.deployments(&filter).await else {
            return;
        };
        for old in active {
            if old.id != newer.id && old.state == DeploymentState::Queued {
                // A Conflict means it just left the queue: then it runs to its end and
                // the newer one waits for it, which is fine.
                if self
                    .inner
                    .store
                    .apply(&old, &DeployEvent::Supersede)
                    .await
                    .is_ok()
                {
                    self.cancel(&old.id);
                }
            }
        }
    }

    fn service_lock(&self, service: &ServiceId) -> Arc<tokio::sync::Mutex<()>> {
        lock_of(&self.inner.service_locks, service)
    }

    fn route_lock(&self, service: &ServiceId) -> Arc<tokio::sync::Mutex<()>> {
        lock_of(&self.inner.route_locks, service)
    }

    fn task_gate(&self, service: &ServiceId) -> Arc<tokio::sync::RwLock<()>> {
        lock_of(&self.inner.task_gates, service)
    }

    /// Persists `event` on `dep` and emits the state change.
    async fn step(&self, dep: &mut Deployment, event: DeployEvent, emit: &Emitter) -> Result<()> {
        let next = self.inner.store.apply(dep, &event).await?;
        emit.state(&dep.state, &next.state);
        *dep = next;
        Ok(())
    }

    /// Runs a deployment from `Queued` to an end state. Errors are only for failures
    /// to record (the store); everything else ends in a state.
    async fn run(
        &self,
        mut dep: Deployment,
        emit: &Emitter,
        cancel: &CancellationToken,
    ) -> Result<Deployment> {
        let lock = self.service_lock(&dep.service);
        let _turn = tokio::select! {
            g = lock.lock_owned() => g,
            _ = cancel.cancelled() => {
                dep = self.inner.store.deployment(&dep.id).await?;
                if dep.state == DeploymentState::Queued {
                    self.step(&mut dep, DeployEvent::Cancel, emit).await?;
                }
                return Ok(dep);
            }
        };
        // Re-read: it may have been superseded or cancelled while it waited.
        dep = self.inner.store.deployment(&dep.id).await?;
        if dep.state != DeploymentState::Queued {
            return Ok(dep);
        }
        // A canary that went out while it waited: it does not replace it.
        if let Err(e) = self.refuse_during_canary(&dep.service, Some(&dep.id)).await {
            let reason = e.message().to_owned();
            self.step(&mut dep, DeployEvent::Fail { reason }, emit)
                .await?;
            return Ok(dep);
        }
        let work = self.inner.config.work_dir.join(dep.id.as_str());
        let mut stopped_previous = None;
        let result = self
            .run_steps(&mut dep, emit, cancel, &work, &mut stopped_previous)
            .await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        match result {
            Ok(()) => Ok(dep),
            Err(stop) => {
                let aborted = self.abort(dep, stop, emit).await;
                // Whatever recording the failure did, the release stopped for this
                // deployment serves again.
                if let Some(previous) = stopped_previous {
                    self.bring_back(&previous, emit).await;
                }
                aborted
            }
        }
    }

    /// After a stop-then-start deployment failed (its own instance already stopped by
    /// [`Self::abort`]), starts the previous live deployment's instance again and
    /// routes to it, so the release that was serving serves again.
    async fn bring_back(&self, previous: &DeploymentId, emit: &Emitter) {
        let result = async {
            let store = &self.inner.store;
            let prev = store.deployment(previous).await?;
            if prev.state != DeploymentState::Live {
                return Ok(None);
            }
            let svc = store.service(&prev.service).await?;
            let project = store.project(&prev.project).await?;
            let _route_turn = self.route_lock(&svc.id).lock_owned().await;
            let prev = self.restart_live(&project, &svc, prev).await?;
            let inst = prev
                .instance
                .clone()
                .ok_or_else(|| Error::internal("restarted without an instance"))?;
            self.publish(&project, &svc, &prev.web_endpoints()).await?;
            Ok::<_, Error>(Some(inst))
        }
        .await;
        match result {
            Ok(Some(inst)) => emit.note(format!(
                "started the previous release again (instance {} at {}): it serves again",
                inst.id, inst.endpoint
            )),
            Ok(None) => {}
            Err(e) => emit.note(format!(
                "could not start the previous release again: {e}; recover() or a new deployment will"
            )),
        }
    }

    /// Starts a new instance for live deployment `live` (whose instance is gone or
    /// stopped) with its own artifact and configuration, and records it. The caller
    /// routes to it.
    async fn restart_live(
        &self,
        project: &Project,
        svc: &Service,
        mut live: Deployment,
    ) -> Result<Deployment> {
        for (_, inst) in live.instances() {
            let _ = self.inner.runtime.stop(&inst.id, Duration::ZERO).await;
        }
        let config = self.config_for(project, svc, &live).await?;
        let specs = self.process_specs(project, svc, &live, &config).await?;
        self.start_all(&mut live, &specs, &Emitter::discard())
            .await?;
        live.updated_at = Timestamp::now();
        let live = self.inner.store.update_deployment(&live).await?;
        // Cron jobs a runtime schedules go with the instance they run from.
        if let Err(e) = self.schedule_cron(svc, &live).await {
            tracing::warn!(service = %svc.name, error = %e, "could not schedule the cron jobs again");
        }
        Ok(live)
    }

    /// Ends a deployment that could not go live: stops its instance (the previous
    /// release keeps serving) and records Failed or Cancelled.
    async fn abort(&self, mut dep: Deployment, stop: Stop, emit: &Emitter) -> Result<Deployment> {
        // The latest record, in case the failure came between a side effect and its
        // persisting.
        dep = self.inner.store.deployment(&dep.id).await?;
        for (_, inst) in dep.instances() {
            if let Err(e) = self.inner.runtime.stop(&inst.id, Duration::ZERO).await {
                emit.note(format!("could not stop instance {}: {e}", inst.id));
            }
        }
        if !dep.state.is_active() {
            return Ok(dep);
        }
        let event = match stop {
            Stop::Cancelled if dep.state != DeploymentState::Routing => DeployEvent::Cancel,
            Stop::Cancelled => DeployEvent::Fail {
                reason: "cancelled while switching traffic".into(),
            },
            Stop::Failed(reason) => DeployEvent::Fail { reason },
        };
        self.step(&mut dep, event, emit).await?;
        Ok(dep)
    }

    async fn run_steps(
        &self,
        dep: &mut Deployment,
        emit: &Emitter,
        cancel: &CancellationToken,
        work: &std::path::Path,
        stopped_previous: &mut Option<DeploymentId>,
    ) -> std::result::Result<(), Stop> {
        let svc = self.inner.store.service(&dep.service).await?;
        let project = self.inner.store.project(&dep.project).await?;
        let cancelled = || {
            if cancel.is_cancelled() {
                Err(Stop::Cancelled)
            } else {
                Ok(())
            }
        };
        cancelled()?;

        if dep.artifact.is_none() {
            if let SourceSpec::Image { image } = &dep.source {
                let port = svc.port.unwrap_or(8080);
                dep.artifact = Some(Artifact {
                    image: image.clone(),
                    digest: None,
                    local_only: false,
                });
                dep.revision = Some(image.clone());
                dep.plan = Some(image_plan(image, port));
            }
        }

        if dep.artifact.is_some() {
            emit.note("artifact available: no fetch or build needed");
            self.check_process_types(&svc, dep)?;
            let next = match self.release_command(&svc, dep) {
                Some(_) => DeployEvent::Release,
                None => DeployEvent::ArtifactReady,
            };
            self.step(dep, next, emit).await?;
        } else {
            // Fetching
            self.step(dep, DeployEvent::Begin, emit).await?;
            let src = work.join("src");
            tokio::fs::create_dir_all(&src).await.map_err(Error::from)?;
            let sink = emit.sink();
            let fetched = tokio::select! {
                r = self.inner.fetcher.fetch(&dep.source, &src, &sink) => r?,
                _ = cancel.cancelled() => return Err(Stop::Cancelled),
            };
            emit.note(format!(
                "fetched {} ({})",
                dep.source.kind(),
                fetched.revision
            ));
            let plan = crate::detect::resolve_plan(&svc.build, svc.port, &fetched.dir)?;
            emit.note(format!(
                "build plan: {} on {}, port {}",
                plan.kind, plan.base_image, plan.port
            ));
            dep.revision = Some(fetched.revision.clone());
            dep.plan = Some(plan.clone());
            // Before the build: a check for a process type the app does not have
            // would fail the deployment after it anyway.
            self.check_process_types(&svc, dep)?;
            self.step(dep, DeployEvent::Fetched, emit).await?;

            // Building: a slot of the project's share, then one of the engine's.
            let share = self.project_build_slots(&project.id);
            let _share = tokio::select! {
                p = share.acquire_owned() => p.map_err(|_| Error::internal("build slots closed"))?,
                _ = cancel.cancelled() => return Err(Stop::Cancelled),
            };
            let _slot = tokio::select! {
                p = self.inner.build_slots.clone().acquire_owned() => p.map_err(|_| Error::internal("build slots closed"))?,
                _ = cancel.cancelled() => return Err(Stop::Cancelled),
            };
            let req = BuildRequest {
                source_dir: fetched.dir,
                plan,
                tag: format!("wharf/{}-{}:{}", project.name, svc.name, dep.id),
                labels: self.labels(&project, &svc, dep),
                logs: emit.sink(),
                cancel: cancel.child_token(),
            };
            let build_cancel = req.cancel.clone();
            let limit = self.inner.config.build_timeout;
            // Cancelled or timed out, the build is abandoned at once (its slots free
            // now), whether or not the builder stops promptly.
            let artifact = tokio::select! {
                r = tokio::time::timeout(limit, self.inner.builder.build(req)) => match r {
                    Ok(r) => r?,
                    Err(_) => {
                        build_cancel.cancel();
                        return Err(Error::build_failed(format!(
                            "the build took longer than {} s (build_timeout) and was stopped",
                            limit.as_secs()
                        ))
                        .into());
                    }
                },
                _ = cancel.cancelled() => {
                    build_cancel.cancel();
                    return Err(Stop::Cancelled);
                }
            };
            cancelled()?;
            emit.note(format!("built {}", artifact.image));
            dep.artifact = Some(artifact);
            let next = match self.release_command(&svc, dep) {
                Some(_) => DeployEvent::Release,
                None => DeployEvent::Built,
            };
            self.step(dep, next, emit).await?;
        }

        // Releasing: the release command, from the new artifact with the new env,
        // before anything of the new release starts.
        if dep.state == DeploymentState::Releasing {
            self.release(dep, &project, &svc, emit, cancel).await?;
            self.step(dep, DeployEvent::Released, emit).await?;
        }

        // Starting: every instance of every process type.
        let config = self.config_for(&project, &svc, dep).await?;
        let specs = self.process_specs(&project, &svc, dep, &config).await?;
        let web = &specs[0].1;
        if !web.volumes.is_empty() {
            self.hand_over_volumes(&svc, web, emit, stopped_previous)
                .await?;
        }
        self.start_all(dep, &specs, emit).await?;
        self.step(dep, DeployEvent::Started, emit).await?;

        // HealthChecking: web instances by their probe, the others by liveness.
        self.wait_all_healthy(dep, &specs, emit, cancel).await?;
        self.step(dep, DeployEvent::Healthy, emit).await?;

        // Routing: past the point of cancelling.
        self.go_live(dep, &project, &svc, config, emit).await?;
        Ok(())
    }

    /// The instances `dep` runs, in order: its `web` replicas (the first is
    /// [`Deployment::instance`]), then each other process type of the release (the
    /// service's own or its `Procfile`'s, but `release`) times its replica count.
    /// All run the same artifact with the same env; only `web` is routed and
    /// reachable by the service's name on the project network. `web` is probed by
    /// the service's health check, another type by its [`Service::process_checks`]
    /// entry if it has one (else [`Probe::None`]: see [`Engine::wait_ready`]).
    async fn process_specs(
        &self,
        project: &Project,
        svc: &Service,
        dep: &Deployment,
        config: &ReleaseConfig,
    ) -> Result<Vec<(String, InstanceSpec)>> {
        let artifact = dep
            .artifact
            .clone()
            .ok_or_else(|| Error::internal("no artifact at start"))?;
        let port = dep.plan.as_ref().map_or(8080, |p| p.port);
        let mut web = self
            .instance_spec(project, svc, dep, (&artifact, port), config)
            .await?;
        web.labels.insert(label::PROCESS.into(), WEB_PROCESS.into());
        let mut out = Vec::new();
        // A runtime that runs replicas itself gets one instance per process type.
        let native = self.inner.runtime.replicates();
        let copies = |n: u32| if native { n.min(1) } else { n };
        if native {
            web.replicas = svc.replicas_of(WEB_PROCESS).max(1);
        }
        for i in 0..copies(svc.replicas_of(WEB_PROCESS).max(1)) {
            let mut spec = web.clone();
            if i > 0 {
                spec.name = format!("{}-{WEB_PROCESS}-{}", web.name, short_id());
            }
            out.push((WEB_PROCESS.to_owned(), spec));
        }
        if svc.database.is_some() {
            return Ok(out);
        }
        for (process, command) in crate::detect::processes(dep.plan.as_ref(), &svc.processes) {
            if process == RELEASE_PROCESS {
                continue;
            }
            for _ in 0..copies(svc.replicas_of(&process)) {
                let mut spec = web.clone();
                spec.replicas = if native { svc.replicas_of(&process) } else { 1 };
                spec.name = format!("{}-{process}-{}", web.name, short_id());
                spec.command = Some(command.clone());
                spec.network_alias = None;
                // Its own check if it declares one (probed at its endpoint, on the
                // `PORT` it gets as web does), else liveness only.
                spec.health_check = match svc.process_checks.get(&process) {
                    Some(check) => check.clone(),
                    None => HealthCheck {
                        probe: Probe::None,
                        ..web.health_check.clone()
                    },
                };
                spec.labels.insert(label::PROCESS.into(), process.clone());
                out.push((process.clone(), spec));
            }
        }
        let total: u32 = out.iter().map(|(_, s)| s.replicas).sum();
        if total > MAX_INSTANCES {
            return Err(Error::invalid(format!(
                "service {} would run {total} instances (its process types times their \
                 replicas): at most {MAX_INSTANCES}",
                svc.name
            )));
        }
        Ok(out)
    }

    /// Refuses (invalid input) a process check of `svc` that names a process type
    /// `dep`'s release does not run (its build plan's `Procfile` and the service's
    /// own processes): see [`Service::check_process_types`].
    fn check_process_types(&self, svc: &Service, dep: &Deployment) -> Result<()> {
        if svc.process_checks.is_empty() {
            return Ok(());
        }
        svc.check_process_types(&crate::detect::processes(dep.plan.as_ref(), &svc.processes))
    }

    /// Starts every spec of `specs` and records them in `dep` (the first as its
    /// [`Deployment::instance`]); if one fails to start, stops those it started.
    async fn start_all(
        &self,
        dep: &mut Deployment,
        specs: &[(String, InstanceSpec)],
        emit: &Emitter,
    ) -> Result<()> {
        let mut started: Vec<(String, Instance)> = Vec::new();
        for (process, spec) in specs {
            match self.inner.runtime.start(spec).await {
                Ok(i) => {
                    let what = match (process.as_str(), started.is_empty()) {
                        (WEB_PROCESS, true) => "instance".to_owned(),
                        (p, _) => format!("{p} instance"),
                    };
                    emit.note(format!("started {what} {} at {}", i.id, i.endpoint));
                    started.push((process.clone(), i));
                }
                Err(e) => {
                    for (_, i) in &started {
                        let _ = self.inner.runtime.stop(&i.id, Duration::ZERO).await;
                    }
                    return Err(e.context(format!("starting a {process} instance")));
                }
            }
        }
        let mut started = started.into_iter();
        dep.instance = started.next().map(|(_, i)| i);
        dep.more_instances = started
            .map(|(process, instance)| ProcessInstance { process, instance })
            .collect();
        Ok(())
    }

    /// Waits for every instance of `dep` to be ready ([`Engine::wait_ready`]).
    async fn wait_all_healthy(
        &self,
        dep: &Deployment,
        specs: &[(String, InstanceSpec)],
        emit: &Emitter,
        cancel: &CancellationToken,
    ) -> std::result::Result<(), Stop> {
        let waits = dep
            .instances()
            .zip(specs)
            .map(|((_, inst), (process, spec))| self.wait_ready(process, inst, spec, emit, cancel));
        futures::future::try_join_all(waits).await?;
        if dep.more_instances.iter().any(|p| p.process != WEB_PROCESS) {
            emit.note("every process is running");
        }
        Ok(())
    }

    /// Waits for `instance` (of `process`, started from `spec`) to be ready: a `web`
    /// instance, or one of another type whose spec has a probe (its
    /// [`Service::process_checks`] entry), to pass its health check; any other to be
    /// running and still running a moment later (not crash-looping). A failure of a
    /// type other than `web` names the type.
    async fn wait_ready(
        &self,
        process: &str,
        instance: &Instance,
        spec: &InstanceSpec,
        emit: &Emitter,
        cancel: &CancellationToken,
    ) -> std::result::Result<(), Stop> {
        let check = &spec.health_check;
        if process == WEB_PROCESS {
            return self.wait_healthy(instance, check, emit, cancel).await;
        }
        if check.probe == Probe::None {
            return self
                .wait_alive(process, instance, check.timeout, cancel)
                .await;
        }
        match self
            .wait_healthy(instance, check, &Emitter::discard(), cancel)
            .await
        {
            Ok(()) => {
                emit.note(format!("{process} health check passed"));
                Ok(())
            }
            Err(Stop::Failed(why)) => Err(Stop::Failed(format!(
                "{process} instance {}: {why}",
                instance.id
            ))),
            Err(stop) => Err(stop),
        }
    }

    /// Liveness of an instance without a probe: running within `timeout`, and still
    /// running [`ALIVE_SETTLE`] later.
    async fn wait_alive(
        &self,
        process: &str,
        instance: &Instance,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> std::result::Result<(), Stop> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut settled = false;
        let mut pause = Duration::from_millis(25);
        loop {
            match self.inner.runtime.status(&instance.id).await {
                Ok(InstanceStatus::Exited { code, reason }) => {
                    let code = code.map_or("unknown".to_owned(), |c| c.to_string());
                    let why = format!("{process} instance exited (code {code}, {reason})");
                    return Err(Stop::Failed(self.with_logs(instance, why).await));
                }
                Ok(InstanceStatus::Healthy | InstanceStatus::Running) if settled => return Ok(()),
                Ok(InstanceStatus::Healthy | InstanceStatus::Running) => {
                    settled = true;
                    tokio::select! {
                        _ = tokio::time::sleep(ALIVE_SETTLE) => {}
                        _ = cancel.cancelled() => return Err(Stop::Cancelled),
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(Stop::Failed(format!(
                        "{process} instance {} disappeared",
                        instance.id
                    )));
                }
                Err(e) if e.is_retryable() => {}
                Err(e) => return Err(e.into()),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Stop::Failed(format!(
                    "{process} instance {} was not running within {timeout:?}",
                    instance.id
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = cancel.cancelled() => return Err(Stop::Cancelled),
            }
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// The release command of `dep`, if it runs one: the service's `release`
    /// process (its own, else its `Procfile`'s). A rollback re-activates a release
    /// that already ran its command: it runs none unless asked to
    /// ([`Engine::rollback_with`]).
    fn release_command(&self, svc: &Service, dep: &Deployment) -> Option<Vec<String>> {
        if matches!(
            dep.trigger,
            Trigger::Rollback {
                run_release: false,
                ..
            }
        ) {
            return None;
        }
        crate::detect::processes(dep.plan.as_ref(), &svc.processes).remove("release")
    }

    /// Runs `dep`'s release command to completion ([`EngineConfig::release_timeout`]),
    /// its output streaming as the deployment's events. Anything but exit code 0 stops
    /// the deployment, before any instance of the new release started.
    async fn release(
        &self,
        dep: &Deployment,
        project: &Project,
        svc: &Service,
        emit: &Emitter,
        cancel: &CancellationToken,
    ) -> std::result::Result<(), Stop> {
        let command = self
            .release_command(svc, dep)
            .ok_or_else(|| Error::internal("releasing without a release command"))?;
        let spec = self
            .task_spec(project, svc, dep, command.clone(), TaskKind::Release)
            .await?;
        emit.note(format!(
            "release command: {} (in instance {}, at most {})",
            shown_command(&command),
            spec.name,
            tasks::duration_text(self.inner.config.release_timeout)
        ));
        let opts = RunOptions::new(self.inner.config.release_timeout)
            .logs(emit.sink())
            .cancel(cancel.child_token())
            .kind(TaskKind::Release);
        let outcome = self.run_task(spec, &opts).await?;
        if outcome.cancelled {
            return Err(Stop::Cancelled);
        }
        if !outcome.success() {
            let mut why = format!("the release command {}", outcome.reason);
            if !outcome.tail.is_empty() {
                let n = self.inner.config.failure_log_lines;
                let from = outcome.tail.len().saturating_sub(n);
                why.push_str(&format!(
                    "; last output lines:\n{}",
                    outcome.tail[from..].join("\n")
                ));
            }
            return Err(Stop::Failed(why));
        }
        emit.note("release command succeeded");
        Ok(())
    }

    /// Stop-then-start for a service with volumes: one writer per volume, so the
    /// live instance stops before the new one starts (the service pauses until the
    /// new one is healthy; if it fails, [`Self::bring_back`] restarts the old one).
    /// Sets `stopped` to the deployment whose instances it stops, before it stops
    /// them (so a stop that fails half-way is brought back too).
    async fn hand_over_volumes(
        &self,
        svc: &Service,
        spec: &InstanceSpec,
        emit: &Emitter,
        stopped: &mut Option<DeploymentId>,
    ) -> Result<()> {
        let names: Vec<&str> = spec.volumes.iter().map(|v| v.name.as_str()).collect();
        let live = self.inner.store.live_deployment(&svc.id).await?;
        let Some((live, inst)) = live.and_then(|d| d.instance.clone().map(|i| (d, i))) else {
            emit.note(format!(
                "volumes {}: stop-then-start (one writer per volume); no instance is live",
                names.join(", ")
            ));
            return Ok(());
        };
        emit.note(format!(
            "volumes {}: stop-then-start (one writer per volume): stopping instance {} of \
             deployment {} before starting the new one; the service is unavailable until \
             the new instance is healthy",
            names.join(", "),
            inst.id,
            live.id
        ));
        // Recorded first: if a stop fails with some stopped already, the caller
        // starts that release again.
        *stopped = Some(live.id.clone());
        // Its other instances (replicas, workers) mount the volumes too.
        for (_, inst) in live.instances() {
            self.inner
                .runtime
                .stop(&inst.id, self.inner.config.stop_grace)
                .await
                .map_err(|e| e.context("stopping the live instances before the new ones start"))?;
        }
        Ok(())
    }

    /// Switches traffic to `dep`'s instance, records the release, marks it live and
    /// retires the previous live deployment. `dep` must be in `Routing`.
    async fn go_live(
        &self,
        dep: &mut Deployment,
        project: &Project,
        svc: &Service,
        config: ReleaseConfig,
        emit: &Emitter,
    ) -> std::result::Result<(), Stop> {
        let store = &self.inner.store;
        let endpoints = dep.web_endpoints();
        if endpoints.is_empty() {
            return Err(Error::internal("no instance to route to").into());
        }
        let shown = endpoints
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let route_lock = self.route_lock(&svc.id);
        let route_turn = route_lock.lock().await;
        // The hosts as they are now (a domain may have been added or removed while
        // this deployment built), not as they were when it started.
        let svc = &store.service(&svc.id).await?;
        let previous = store.live_deployment(&svc.id).await?;
        // A canary shares the route with the live release; with nothing live to
        // share it with, it simply goes live.
        let previous_serves = previous
            .as_ref()
            .is_some_and(|p| !p.web_endpoints().is_empty());
        if dep.canary.is_some() && !previous_serves {
            emit.note("nothing live to share the traffic with: going live instead of a canary");
            dep.canary = None;
        }
        if dep.canary.is_none() {
            // A runtime scheduling cron jobs itself runs them from the release that
            // takes the traffic (a canary's wait for its promotion).
            self.schedule_cron(svc, dep)
                .await
                .map_err(|e| e.context("scheduling the cron jobs"))?;
        }
        let upstreams = match dep.canary {
            Some(_) => Self::upstreams_of(previous.as_ref(), Some(dep)),
            None => canary_upstreams(&endpoints, &[], 0),
        };
        match self.publish_upstreams(project, svc, upstreams).await {
            Ok(Some(route)) if dep.canary.is_some() => emit.note(format!(
                "routed {} to {shown} with {} % of the traffic, beside deployment {}",
                route.hosts.join(", "),
                dep.canary.unwrap_or(0),
                previous.as_ref().map_or("?", |p| p.id.as_str()),
            )),
            Ok(Some(route)) => emit.note(format!("routed {} to {shown}", route.hosts.join(", "))),
            Ok(None) => emit.note(format!(
                "not routed: {} is reachable on the project network only",
                svc.name
            )),
            Err(e) => {
                // Put the previous route back in case the proxy applied part of it,
                // and its cron jobs (handed to this release above).
                if let Some(prev) = previous.as_ref().map(Deployment::web_endpoints) {
                    if !prev.is_empty() {
                        let _ = self.publish(project, svc, &prev).await;
                    }
                }
                if let (Some(prev), None) = (previous.as_ref(), dep.canary) {
                    let _ = self.schedule_cron(svc, prev).await;
                }
                return Err(e.context("routing").into());
            }
        }

        let releases = store.releases(&svc.id).await?;
        let release = match releases.iter().find(|r| r.deployment == dep.id) {
            Some(r) => r.clone(),
            None => {
                let r = Release {
                    id: ReleaseId::random(),
                    project: dep.project.clone(),
                    service: svc.id.clone(),
                    number: releases.first().map_or(1, |r| r.number + 1),
                    deployment: dep.id.clone(),
                    artifact: dep
                        .artifact
                        .clone()
                        .ok_or_else(|| Error::internal("no artifact"))?,
                    port: dep.plan.as_ref().map_or(8080, |p| p.port),
                    revision: dep.revision.clone(),
                    config: Some(config),
                    created_at: Timestamp::now(),
                };
                store.insert_release(&r).await?;
                r
            }
        };
        dep.release = Some(release.id.clone());
        if let Some(percent) = dep.canary {
            self.step(dep, DeployEvent::Canary, emit).await?;
            drop(route_turn);
            emit.note(format!(
                "release v{} is out as a canary with {percent} % of the traffic: promote or abort it",
                release.number
            ));
            return Ok(());
        }
        self.step(dep, DeployEvent::Routed, emit).await?;
        drop(route_turn);
        emit.note(format!("release v{} is live", release.number));

        // Retire whatever else is live for the service (normally one).
        self.retire_others(dep, emit).await?;
        Ok(())
    }

    /// Hands `svc`'s cron jobs to a runtime that schedules them itself
    /// ([`Runtime::schedules_cron`]), from `dep`'s web instance; nothing for other
    /// runtimes (Wharf's scheduler runs the jobs of the live release there).
    pub(crate) async fn schedule_cron(&self, svc: &Service, dep: &Deployment) -> Result<()> {
        let runtime = &self.inner.runtime;
        match &dep.instance {
            Some(web) if runtime.schedules_cron() => {
                runtime.schedule_cron(&web.id, &svc.cron).await
            }
            _ => Ok(()),
        }
    }

    /// Marks every other live deployment of `dep`'s service superseded (or rolled
    /// back) and stops its instance after the grace period.
    async fn retire_others(&self, dep: &Deployment, emit: &Emitter) -> Result<()> {
        let store = &self.inner.store;
        let all = store
            .deployments(&DeploymentFilter {
                service: Some(dep.service.clone()),
                ..Default::default()
            })
            .await?;
        let event = match dep.trigger {
            Trigger::Rollback { .. } => DeployEvent::RollBack,
            _ => DeployEvent::Supersede,
        };
        let mut settled = false;
        for old in all
            .into_iter()
            .filter(|d| d.id != dep.id && d.state == DeploymentState::Live)
        {
            if !settled {
                self.settle().await;
                settled = true;
            }
            let old = store.apply(&old, &event).await?;
            emit.note(format!("deployment {} is now {}", old.id, old.state));
            for (_, inst) in old.instances() {
                if let Err(e) = self
                    .inner
                    .runtime
                    .stop(&inst.id, self.inner.config.stop_grace)
                    .await
                {
                    emit.note(format!("could not stop old instance {}: {e}", inst.id));
                }
            }
        }
        Ok(())
    }

    async fn wait_healthy(
        &self,
        instance: &Instance,
        check: &HealthCheck,
        emit: &Emitter,
        cancel: &CancellationToken,
    ) -> std::result::Result<(), Stop> {
        let deadline = tokio::time::Instant::now() + check.timeout;
        let mut last = String::from("no probe answered yet");
        // Most apps answer within a few hundred ms of starting: probe every 10 ms
        // for the first FAST_PROBING, then back off to the check's interval (20 ms,
        // 40 ms, ... up to `interval`), instead of making every deploy wait a whole
        // interval (or a doubled pause) for the probe after the app came up.
        let fast_until = tokio::time::Instant::now() + FAST_PROBING;
        let mut pause = check.interval.min(HealthCheck::MIN_INTERVAL);
        loop {
            match self.inner.runtime.status(&instance.id).await {
                Ok(InstanceStatus::Healthy) => {
                    emit.note("health check passed");
                    return Ok(());
                }
                Ok(InstanceStatus::Exited { code, reason }) => {
                    let code = code.map_or("unknown".to_owned(), |c| c.to_string());
                    let why = format!("instance exited (code {code}, {reason})");
                    return Err(Stop::Failed(self.with_logs(instance, why).await));
                }
                Ok(InstanceStatus::Unhealthy { reason }) => last = reason,
                Ok(InstanceStatus::Starting | InstanceStatus::Running) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(Stop::Failed(format!(
                        "instance {} disappeared",
                        instance.id
                    )));
                }
                Err(e) if e.is_retryable() => last = e.to_string(),
                Err(e) => return Err(e.into()),
            }
            if tokio::time::Instant::now() >= deadline {
                let why = format!(
                    "health check did not pass within {:?}: {last}",
                    check.timeout
                );
                return Err(Stop::Failed(self.with_logs(instance, why).await));
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = cancel.cancelled() => return Err(Stop::Cancelled),
            }
            if tokio::time::Instant::now() >= fast_until {
                pause = (pause * 2).min(check.interval);
            }
        }
    }

    /// `why`, followed by the instance's last log lines (so a failure says what the
    /// app said).
    async fn with_logs(&self, instance: &Instance, why: String) -> String {
        let opts = LogOptions::last(self.inner.config.failure_log_lines);
        let lines: Vec<String> = match self.inner.runtime.logs(&instance.id, opts).await {
            Ok(stream) => {
                stream
                    .filter_map(|l| async move { l.ok().map(|l| l.text) })
                    .collect()
                    .await
            }
            Err(_) => Vec::new(),
        };
        if lines.is_empty() {
            why
        } else {
            format!("{why}; last log lines:\n{}", lines.join("\n"))
        }
    }

    /// The labels every resource made for a deployment carries (its instance, image).
    fn labels(&self, project: &Project, svc: &Service, dep: &Deployment) -> Labels {
        let mut l = service_labels(project, svc);
        l.insert(label::DEPLOYMENT.into(), dep.id.to_string());
        l
    }

    /// The configuration a deployment runs with: its release's (a live deployment's
    /// own, or the one a rollback re-activates) when recorded, else the service's
    /// current one (project, environment and service env merged).
    async fn config_for(
        &self,
        project: &Project,
        svc: &Service,
        dep: &Deployment,
    ) -> Result<ReleaseConfig> {
        let wanted = match (&dep.release, &dep.trigger) {
            (Some(r), _) => Some(r),
            (None, Trigger::Rollback { release, .. }) => Some(release),
            _ => None,
        };
        if let Some(wanted) = wanted {
            // Only a release of this service counts; any other falls back to the
            // service's current configuration.
            let release = match self.inner.store.release(wanted).await {
                Ok(r) => Some(r).filter(|r| r.service == svc.id),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            if let Some(config) = release.and_then(|r| r.config) {
                return Ok(config);
            }
        }
        let environment = self.environment_of(project, svc).await?;
        // A fork's preview runs anyone's code: it gets no project or service secret
        // (only its own environment's variables), unless an owner approved the commit.
        // A service of an environment that cannot be found (torn down meanwhile) is
        // not trusted either: trust is never the default for what cannot be checked.
        let trusted = match (&svc.environment, &environment) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(_), Some(e)) => e.kind.trusts(&dep.source),
        };
        let keep = |vars: &EnvVars| -> EnvVars {
            vars.iter()
                .filter(|(_, v)| trusted || !v.is_secret())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let mut env = keep(&project.env);
        if let Some(e) = environment {
            env.extend(e.env);
        }
        // The service's own values, references resolved: one that references a
        // secret is a secret (and, untrusted, left out like the service's secrets).
        let targets = self.reference_targets(project, svc).await?;
        env.extend(crate::refs::resolve(
            &svc.name, &svc.env, &targets, trusted,
        )?);
        Ok(ReleaseConfig {
            env,
            resources: svc.resources,
            health_check: svc.health_check.clone(),
        })
    }

    async fn instance_spec(
        &self,
        project: &Project,
        svc: &Service,
        dep: &Deployment,
        (artifact, port): (&Artifact, u16),
        config: &ReleaseConfig,
    ) -> Result<InstanceSpec> {
        let environment = self.environment_of(project, svc).await?;
        let mut env = resolve_env([&config.env]);
        env.insert("PORT".into(), port.to_string());
        let short = dep
            .id
            .as_str()
            .rsplit('_')
            .next()
            .unwrap_or("")
            .get(..8)
            .unwrap_or("");
        Ok(InstanceSpec {
            replicas: 1,
            name: format!("{}-{}-{}", project.name, svc.name, short),
            image: artifact.image.clone(),
            image_local_only: artifact.local_only,
            // The service's own `web` process replaces the image's start command.
            command: svc
                .processes
                .get("web")
                .map(|c| crate::detect::command_argv(c)),
            env,
            port,
            resources: config.resources,
            health_check: config.health_check.clone().unwrap_or_default(),
            volumes: svc.volumes.clone(),
            // Each environment has a network of its own: its services reach each
            // other by name, and never a namesake of another environment.
            network: Some(network_name(project, environment.as_ref())),
            network_alias: Some(svc.name.clone()),
            labels: self.labels(project, svc, dep),
            run_once: false,
        })
    }

    /// The hostname generated for a service: `<service>.<project>.<base domain>`;
    /// in a standing environment `<service>.<environment>.<project>.<base domain>`,
    /// in a preview `pr-<n>.<service>.<project>.<base domain>`.
    pub async fn hostname(&self, project: &Project, svc: &Service) -> Result<String> {
        let base = &self.inner.config.base_domain;
        let host = match self.environment_of(project, svc).await? {
            None => format!("{}.{}.{base}", svc.name, project.name),
            Some(Environment {
                kind: EnvironmentKind::Preview { number, .. },
                ..
            }) => format!("pr-{number}.{}.{}.{base}", svc.name, project.name),
            Some(e) => format!("{}.{}.{}.{base}", svc.name, e.name, project.name),
        };
        crate::hostname::validate_hostname(&host)?;
        Ok(host)
    }

    /// The public URL of a service: its generated hostname with the scheme and port
    /// of [`EngineConfig::public_https`] and [`EngineConfig::public_port`].
    pub async fn url(&self, project: &Project, svc: &Service) -> Result<String> {
        let host = self.hostname(project, svc).await?;
        let c = &self.inner.config;
        let scheme = if c.public_https { "https" } else { "http" };
        Ok(match c.public_port {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        })
    }

    /// Refuses (InvalidInput) a service whose env references a service of its
    /// project and environment that does not exist, a variable that service does not
    /// have, or itself, before anything is recorded or started.
    async fn check_references(&self, svc: &Service) -> Result<()> {
        if crate::refs::references(&svc.env)?.is_empty() {
            return Ok(());
        }
        let scope = self.scope_of(svc).await?;
        let known = scope
            .iter()
            .map(|s| (s.name.clone(), s.referable_env(None)))
            .collect();
        crate::refs::check(&svc.name, &svc.env, &known)
    }

    /// The services of `svc`'s project and environment (`svc` among them).
    async fn scope_of(&self, svc: &Service) -> Result<Vec<Service>> {
        Ok(self
            .inner
            .store
            .services(&svc.project)
            .await?
            .into_iter()
            .filter(|s| s.environment == svc.environment)
            .collect())
    }

    /// What `svc`'s references can resolve to: every service of its scope it
    /// references, directly or through another's variables, with its own variables,
    /// its address on the project network and, once live (routed), its URL.
    async fn reference_targets(
        &self,
        project: &Project,
        svc: &Service,
    ) -> Result<BTreeMap<String, crate::refs::Target>> {
        let mut wanted = crate::refs::referenced_services(&svc.env)?;
        if wanted.is_empty() {
            return Ok(BTreeMap::new());
        }
        let scope: BTreeMap<String, Service> = self
            .scope_of(svc)
            .await?
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let mut targets = BTreeMap::new();
        while let Some(name) = wanted.pop_first() {
            if targets.contains_key(&name) {
                continue;
            }
            // An unknown name is reported by `refs::resolve`, naming the variable.
            let Some(t) = scope.get(&name) else { continue };
            wanted.extend(crate::refs::referenced_services(&t.env)?);
            let live = self.inner.store.live_deployment(&t.id).await?;
            let instance = live.as_ref().and_then(|d| d.instance.as_ref());
            let port = live
                .as_ref()
                .and_then(|d| d.plan.as_ref())
                .map(|p| p.port)
                .or(t.port);
            let address =
                port.and_then(|port| self.inner.runtime.peer_address(&t.name, port, instance));
            let url = match instance {
                Some(_) => Some(self.url(project, t).await?),
                None => None,
            };
            targets.insert(
                name,
                crate::refs::Target {
                    // A managed database adds its connection URL at this address.
                    env: t.referable_env(address.as_ref().map(|a| (a.host.as_str(), a.port))),
                    host: address.as_ref().map(|a| a.host.clone()),
                    port: address.map(|a| a.port),
                    url,
                },
            );
        }
        Ok(targets)
    }

    /// The environment a service is in, if any: one in `project` (a missing one, or
    /// one of another project, is none, as when this scanned the project's list).
    /// The volumes `svc` mounts, as the runtime knows them: scoped by the network of
    /// the project or the service's environment ([`network_name`]).
    pub async fn volume_refs(&self, project: &Project, svc: &Service) -> Result<Vec<VolumeRef>> {
        let environment = self.environment_of(project, svc).await?;
        let scope = network_name(project, environment.as_ref());
        Ok(svc
            .volumes
            .iter()
            .map(|v| VolumeRef {
                project: project.id.clone(),
                scope: Some(scope.clone()),
                name: v.name.clone(),
            })
            .collect())
    }

    async fn environment_of(
        &self,
        project: &Project,
        svc: &Service,
    ) -> Result<Option<Environment>> {
        let Some(env_id) = &svc.environment else {
            return Ok(None);
        };
        match self.inner.store.environment(env_id).await {
            Ok(e) => Ok((e.project == project.id).then_some(e)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Routes `svc`'s hosts to `endpoint` and returns the route; for a service
    /// that is not to be routed ([`Service::routed`]: a private managed database)
    /// removes any route it had instead and returns `None`, so it stays reachable
    /// on the project network only.
    async fn publish(
        &self,
        project: &Project,
        svc: &Service,
        endpoints: &[Endpoint],
    ) -> Result<Option<Route>> {
        // Replicas share the traffic evenly.
        self.publish_upstreams(project, svc, canary_upstreams(endpoints, &[], 0))
            .await
    }

    /// [`Self::publish`] with the upstreams' weights given (a canary's share).
    async fn publish_upstreams(
        &self,
        project: &Project,
        svc: &Service,
        upstreams: Vec<Upstream>,
    ) -> Result<Option<Route>> {
        // A new set of upstreams: what health took out is looked at again.
        self.inner
            .taken_out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&svc.id);
        if !svc.routed() {
            let id = RouteId(svc.id.0.clone());
            self.retrying(|| self.inner.router.remove(&id)).await?;
            return Ok(None);
        }
        let route = self.route_for(project, svc, upstreams).await?;
        self.retrying(|| self.inner.router.upsert(&route)).await?;
        Ok(Some(route))
    }

    async fn route_for(
        &self,
        project: &Project,
        svc: &Service,
        upstreams: Vec<Upstream>,
    ) -> Result<Route> {
        let mut hosts = vec![self.hostname(project, svc).await?];
        for d in &svc.domains {
            // Routers take the canonical form only: lower case, IDNs as punycode.
            let d = crate::hostname::normalize_hostname(d)?;
            if !hosts.contains(&d) {
                hosts.push(d);
            }
        }
        let labels = service_labels(project, svc);
        let route = Route {
            id: RouteId(svc.id.0.clone()),
            hosts,
            path_prefix: None,
            upstreams,
            tls: self.inner.config.tls.clone(),
            labels,
        };
        route.validate()?;
        Ok(route)
    }

    /// `project`'s share of the build slots, made on first use.
    fn project_build_slots(&self, project: &ProjectId) -> Arc<Semaphore> {
        let c = &self.inner.config;
        let share = c
            .max_builds_per_project
            .unwrap_or(c.max_concurrent_builds.saturating_sub(1))
            .clamp(1, c.max_concurrent_builds);
        let mut g = self
            .inner
            .project_build_slots
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        g.entry(project.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(share)))
            .clone()
    }

    /// Whether the service an orphan candidate is labelled with exists but does not
    /// read (e.g. a secret that does not open): its instance and route stay.
    async fn unreadable(&self, service: Option<&String>) -> bool {
        let Some(id) = service else { return false };
        match self.inner.store.service(&ServiceId(id.clone())).await {
            Ok(_) => false,
            Err(e) => e.kind() != ErrorKind::NotFound,
        }
    }

    /// Reconciles the store with the runtime and router after a (re)start:
    /// - queued deployments are started again; deployments caught in `Routing` (their
    ///   instance was healthy) are finished if the instance still runs; every other
    ///   mid-way deployment is failed with the reason and its instance removed, and
    ///   requested again once when it was the newest request of its service and its
    ///   release command had not started ([`Deployment::retry_of`]);
    /// - a service with two live deployments (a crash between going live and retiring
    ///   the old one) keeps the newest;
    /// - each live deployment's route is re-applied (shared with its service's canary
    ///   as the canary's percent says); a live instance that vanished is started again
    ///   from its release's artifact; a canary whose instances vanished fails (the live
    ///   release takes all the traffic) and one whose instances run is kept;
    /// - instances and routes of this store's projects that no live deployment owns
    ///   are removed. What is live is never stopped.
    ///
    /// Call it once at start-up, before deploying.
    pub async fn recover(&self) -> Result<RecoveryReport> {
        let store = &self.inner.store;
        let mut report = RecoveryReport::default();
        let projects = store.projects().await?;
        let project_ids: HashSet<String> = projects.iter().map(|p| p.id.to_string()).collect();

        let active = store
            .deployments(&DeploymentFilter {
                active_only: true,
                ..Default::default()
            })
            .await?;
        let mut queued = Vec::new();
        for dep in active.into_iter().rev() {
            match dep.state {
                DeploymentState::Queued => queued.push(dep),
                DeploymentState::Routing => {
                    let id = dep.id.clone();
                    let instances: Vec<InstanceId> =
                        dep.instances().map(|(_, i)| i.id.clone()).collect();
                    if self.resume_routing(dep).await? {
                        report.resumed.push(id);
                    } else {
                        // A failed resume removes the deployment's instances (if any).
                        report.removed_instances.extend(instances);
                        report.failed.push(id);
                    }
                }
                _ => {
                    let (emit, _rx, pump) = Emitter::spawn(&self.inner, &dep, None);
                    let step = dep.state.clone();
                    let mut reason =
                        format!("interrupted: the control plane stopped during {step}");
                    if step == DeploymentState::Releasing {
                        // Never run twice silently: it may have done part of its work.
                        reason.push_str(
                            "; the release command may have run in part and is not run \
                             again by itself: deploy again to run it",
                        );
                    }
                    emit.note(reason.clone());
                    let id = dep.id.clone();
                    let instances: Vec<InstanceId> =
                        dep.instances().map(|(_, i)| i.id.clone()).collect();
                    let retry = match self.retry_of(&dep).await? {
                        Some(retry) => {
                            emit.note(format!(
                                "recovery: requested again as deployment {} (once)",
                                retry.id
                            ));
                            Some(retry)
                        }
                        None => None,
                    };
                    self.abort(dep, Stop::Failed(reason), &emit).await?;
                    report.removed_instances.extend(instances);
                    drop(emit);
                    let _ = pump.await;
                    report.failed.push(id);
                    if let Some(retry) = retry {
                        store.insert_deployment(&retry).await?;
                        report.retried.push(retry.id.clone());
                        queued.push(retry);
                    }
                }
            }
        }

        // Live deployments: one per service, route applied, instance present.
        let mut owned: HashSet<InstanceId> = HashSet::new();
        let mut live_services: HashSet<ServiceId> = HashSet::new();
        for project in &projects {
            for svc in store.services(&project.id).await? {
                let all = store
                    .deployments(&DeploymentFilter {
                        service: Some(svc.id.clone()),
                        ..Default::default()
                    })
                    .await?;
                let canary = all
                    .iter()
                    .find(|d| d.state == DeploymentState::Canary)
                    .cloned();
                let canary = match canary {
                    Some(c) => self.recover_canary(c, &mut report).await?,
                    None => None,
                };
                if let Some(c) = &canary {
                    owned.extend(c.instances().map(|(_, i)| i.id.clone()));
                }
                let mut live = all.into_iter().filter(|d| d.state == DeploymentState::Live);
                let Some(mut newest) = live.next() else {
                    if let Some(c) = &canary {
                        // Nothing live beside it: it alone keeps the route.
                        live_services.insert(svc.id.clone());
                        let upstreams = Self::upstreams_of(None, Some(c));
                        self.publish_upstreams(project, &svc, upstreams).await?;
                    }
                    continue;
                };
                let (emit, _rx, pump) = Emitter::spawn(&self.inner, &newest, None);
                for old in live {
                    let old = store.apply(&old, &DeployEvent::Supersede).await?;
                    emit.note(format!("recovery: {} superseded by {}", old.id, newest.id));
                }
                live_services.insert(svc.id.clone());
                if newest.instance.is_some() {
                    let mut gone = None;
                    for (_, inst) in newest.instances() {
                        let alive = matches!(
                            self.retrying(|| self.inner.runtime.status(&inst.id)).await,
                            Ok(InstanceStatus::Healthy
                                | InstanceStatus::Running
                                | InstanceStatus::Starting)
                        );
                        if !alive {
                            gone = Some(inst.id.clone());
                            break;
                        }
                    }
                    if let Some(inst) = gone {
                        emit.note(format!(
                            "recovery: live instance {inst} is gone; starting the release's \
                             instances again"
                        ));
                        newest = self.restart_live(project, &svc, newest).await?;
                        report.restarted.push(svc.id.clone());
                    }
                    let upstreams = Self::upstreams_of(Some(&newest), canary.as_ref());
                    self.publish_upstreams(project, &svc, upstreams).await?;
                    owned.extend(newest.instances().map(|(_, i)| i.id.clone()));
                }
                drop(emit);
                let _ = pump.await;
            }
        }

        // Orphans: managed instances of our projects that nothing live owns.
        let mut managed = Labels::new();
        managed.insert(label::MANAGED.into(), "true".into());
        for inst in self.retrying(|| self.inner.runtime.list(&managed)).await? {
            let ours = inst
                .labels
                .get(label::PROJECT)
                .is_some_and(|p| project_ids.contains(p));
            if ours && !owned.contains(&inst.id) {
                if self.unreadable(inst.labels.get(label::SERVICE)).await {
                    report.left_alone.push(inst.id.to_string());
                    continue;
                }
                self.inner.runtime.stop(&inst.id, Duration::ZERO).await?;
                report.removed_instances.push(inst.id);
            }
        }
        for route in self.retrying(|| self.inner.router.list()).await? {
            let ours = route
                .labels
                .get(label::MANAGED)
                .is_some_and(|v| v == "true")
                && route
                    .labels
                    .get(label::PROJECT)
                    .is_some_and(|p| project_ids.contains(p));
            let live = route
                .labels
                .get(label::SERVICE)
                .is_some_and(|s| live_services.contains(&ServiceId(s.clone())));
            if ours && !live {
                if self.unreadable(route.labels.get(label::SERVICE)).await {
                    report.left_alone.push(route.id.to_string());
                    continue;
                }
                self.retrying(|| self.inner.router.remove(&route.id))
                    .await?;
                report.removed_routes.push(route.id);
            }
        }

        // Requests that were waiting: run them now, oldest first.
        for dep in queued {
            report.resumed.push(dep.id.clone());
            self.spawn_run(dep, None, "recovery: running the queued deployment".into());
        }
        Ok(report)
    }

    /// The deployment that retries `dep`, which a restart interrupted, when it
    /// should be retried: once (never a retry itself), only while it is still the
    /// newest request for its service, and never after its release command started
    /// (which may have done part of its work). Same trigger, source and canary
    /// share; a rollback keeps the release's artifact and plan.
    async fn retry_of(&self, dep: &Deployment) -> Result<Option<Deployment>> {
        if dep.retry_of.is_some() || dep.state == DeploymentState::Releasing {
            return Ok(None);
        }
        let store = &self.inner.store;
        let newest = store
            .deployments(&DeploymentFilter {
                service: Some(dep.service.clone()),
                limit: Some(1),
                ..Default::default()
            })
            .await?;
        if newest.first().map(|d| &d.id) != Some(&dep.id) {
            return Ok(None);
        }
        let svc = match store.service(&dep.service).await {
            Ok(svc) => svc,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let (artifact, plan) = match dep.trigger {
            Trigger::Rollback { .. } => (dep.artifact.clone(), dep.plan.clone()),
            _ => (None, None),
        };
        let mut retry = self.new_deployment(&svc, dep.trigger.clone(), artifact, plan);
        retry.source = dep.source.clone();
        retry.canary = dep.canary;
        retry.retry_of = Some(dep.id.clone());
        Ok(Some(retry))
    }

    /// Finishes a deployment found in `Routing`: if its instance still runs, switch
    /// traffic and go live; otherwise fail it. Returns whether it went live.
    async fn resume_routing(&self, mut dep: Deployment) -> Result<bool> {
        let (emit, _rx, pump) = Emitter::spawn(&self.inner, &dep, None);
        let mut running = dep.instance.is_some();
        for (_, i) in dep.instances() {
            running &= matches!(
                self.retrying(|| self.inner.runtime.status(&i.id)).await,
                Ok(InstanceStatus::Healthy | InstanceStatus::Running)
            );
        }
        let live = if running {
            emit.note("recovery: resuming the route switch");
            let svc = self.inner.store.service(&dep.service).await?;
            let project = self.inner.store.project(&dep.project).await?;
            let config = self.config_for(&project, &svc, &dep).await?;
            match self.go_live(&mut dep, &project, &svc, config, &emit).await {
                Ok(()) => true,
                Err(stop) => {
                    self.abort(dep, stop, &emit).await?;
                    false
                }
            }
        } else {
            let reason =
                "interrupted: the control plane stopped while routing and the new instance is gone"
                    .to_owned();
            self.abort(dep, Stop::Failed(reason), &emit).await?;
            false
        };
        drop(emit);
        let _ = pump.await;
        Ok(live)
    }
}

/// The labels that mark a resource as Wharf's and name its project and service: a
/// route carries these, and a deployment's resources add the deployment to them.
/// The container network of a project's own services, or of one environment's:
/// `wharf-<project>` or `wharf-<project>_<environment>`. It is also the scope of their
/// volumes ([`VolumeRef::scope`]): an environment's volume `data` is never the
/// project's.
pub fn network_name(project: &Project, environment: Option<&Environment>) -> String {
    match environment {
        None => format!("wharf-{}", project.name),
        // `_` cannot occur in names, so no project's network is another's.
        Some(e) => format!("wharf-{}_{}", project.name, e.name),
    }
}

fn service_labels(project: &Project, svc: &Service) -> Labels {
    Labels::from([
        (label::MANAGED.to_string(), "true".to_string()),
        (label::PROJECT.to_string(), project.id.to_string()),
        (label::SERVICE.to_string(), svc.id.to_string()),
        (label::SERVICE_NAME.to_string(), svc.name.clone()),
    ])
}

/// Refuses a rollout whose services reference unknown services or variables, before
/// any of them starts.
fn check_scope_references(scope: &[Service]) -> Result<()> {
    let known = scope
        .iter()
        .map(|s| (s.name.clone(), s.referable_env(None)))
        .collect();
    for s in scope {
        crate::refs::check(&s.name, &s.env, &known)?;
    }
    Ok(())
}

/// How long an instance of a process type without a probe must keep running after
/// it first runs to count as started (one that crashes at once is caught).
const ALIVE_SETTLE: Duration = Duration::from_secs(1);

/// How long after an instance started the engine probes it at the shortest
/// interval ([`HealthCheck::MIN_INTERVAL`]) before backing off.
const FAST_PROBING: Duration = Duration::from_millis(300);

/// A short random suffix for instance names.
fn short_id() -> String {
    let id = InstanceId::random();
    let tail = id.as_str().rsplit('_').next().unwrap_or("");
    tail.get(..8).unwrap_or(tail).to_owned()
}

/// A command as a person reads it: its arguments joined by spaces, each quoted
/// when it holds a space or a quote (`sh -c 'echo hi'`).
fn shown_command(command: &[String]) -> String {
    command
        .iter()
        .map(|a| {
            if a.is_empty() || a.contains([' ', '\'', '"', '\t']) {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn image_plan(image: &str, port: u16) -> BuildPlan {
    BuildPlan {
        kind: ProjectKind::Dockerfile,
        base_image: image.to_owned(),
        install: Vec::new(),
        build: Vec::new(),
        start: Vec::new(),
        port,
        dockerfile: None,
        processes: BTreeMap::new(),
    }
}

fn trigger_text(t: &Trigger) -> String {
    match t {
        Trigger::Manual => "manual".into(),
        // The HTTP API records its requests as provider `api`, by token name.
        Trigger::Webhook {
            provider,
            reference,
        } if provider == "api" => format!("API request by {reference}"),
        Trigger::Webhook {
            provider,
            reference,
        } => format!("{provider} webhook for {reference}"),
        Trigger::Cascade { from } => format!("cascade from service {from}"),
        Trigger::Rollback {
            release,
            run_release: false,
        } => format!("rollback to release {release}"),
        Trigger::Rollback { release, .. } => {
            format!("rollback to release {release}, its release command run again")
        }
    }
}
