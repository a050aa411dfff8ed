//! The five backend traits.
//!
//! Each is object safe, `Send + Sync + Debug + 'static`, and held as `Arc<dyn Trait>`.
//! The required surface is small; conveniences live on `*Ext` traits so wrappers
//! cannot silently fall back to a default.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::model::*;
use crate::state::DeploymentState;

/// Where a backend sends the lines it produces (build output, app output).
///
/// Cheap to clone; sending never blocks and never fails (lines sent after the receiver
/// is gone are dropped).
#[derive(Clone)]
pub struct LogSink {
    f: Option<Arc<dyn Fn(LogLine) + Send + Sync>>,
}

impl LogSink {
    /// A sink feeding a channel.
    pub fn new(tx: mpsc::UnboundedSender<LogLine>) -> Self {
        Self::from_fn(move |line| {
            let _ = tx.send(line);
        })
    }
    /// A sink calling `f` for every line (it must not block).
    pub fn from_fn(f: impl Fn(LogLine) + Send + Sync + 'static) -> Self {
        LogSink {
            f: Some(Arc::new(f)),
        }
    }
    /// A sink that drops every line.
    pub fn discard() -> Self {
        LogSink { f: None }
    }
    /// Sends one line.
    pub fn send(&self, stream: LogStream, text: impl Into<String>) {
        if let Some(f) = &self.f {
            f(LogLine::new(stream, text));
        }
    }
}

impl Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSink")
            .field("connected", &self.f.is_some())
            .finish()
    }
}

/// The result of fetching a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The folder to build from (the fetch destination, or a sub-folder of it).
    pub dir: PathBuf,
    /// What was fetched: a commit sha, `sha256:<digest>` of an archive, or a digest of
    /// a folder's content.
    pub revision: String,
}

/// Materialises a [`SourceSpec`] into a folder.
#[async_trait]
pub trait SourceFetcher: Send + Sync + Debug + 'static {
    /// Fetches `spec` into `dest` (an empty folder the caller owns). Returns
    /// [`crate::ErrorKind::Unsupported`] for a source kind this fetcher does not handle.
    async fn fetch(&self, spec: &SourceSpec, dest: &Path, logs: &LogSink) -> Result<Fetched>;
}

/// What a builder is asked to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The fetched source.
    pub source_dir: PathBuf,
    /// How to build it.
    pub plan: BuildPlan,
    /// The tag to give the image (`wharf/<project>-<service>:<deployment>`).
    pub tag: String,
    /// Labels for the image (see [`label`]).
    pub labels: Labels,
    /// Where build output goes.
    pub logs: LogSink,
    /// Cancelled when the deployment is: stop building and return
    /// [`crate::ErrorKind::Cancelled`].
    pub cancel: CancellationToken,
}

/// Turns fetched source and a build plan into a runnable [`Artifact`].
#[async_trait]
pub trait Builder: Send + Sync + Debug + 'static {
    /// Builds; streams output to `req.logs`; honours `req.cancel`; reuses its cache.
    async fn build(&self, req: BuildRequest) -> Result<Artifact>;
}

/// Options for [`Runtime::logs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogOptions {
    /// Keep the stream open and follow new lines.
    pub follow: bool,
    /// Only the last `n` lines already written.
    pub tail: Option<usize>,
}

impl LogOptions {
    /// The last `n` lines already written, without following.
    pub fn last(n: usize) -> Self {
        LogOptions {
            follow: false,
            tail: Some(n),
        }
    }

    /// Only the lines written from now on, following them.
    pub fn follow_new() -> Self {
        LogOptions {
            follow: true,
            tail: Some(0),
        }
    }
}

/// Bytes flowing from or to a backend without being held whole in memory: a
/// volume's contents as a tar archive ([`Runtime::export_volume`],
/// [`Runtime::import_volume`]). An `Err` item ends the stream as failed.
pub type ByteStream = BoxStream<'static, Result<bytes::Bytes>>;

/// A blocking [`std::io::Read`] over a [`ByteStream`], for code on a blocking thread
/// (tar, gzip) fed by an async stream. Made inside a Tokio runtime, whose handle it
/// keeps to wait for each chunk; never read it from an async task.
pub struct StreamReader {
    stream: ByteStream,
    handle: tokio::runtime::Handle,
    chunk: bytes::Bytes,
}

impl StreamReader {
    /// Reads `stream`, waiting on the current Tokio runtime (panics outside one).
    pub fn new(stream: ByteStream) -> Self {
        StreamReader {
            stream,
            handle: tokio::runtime::Handle::current(),
            chunk: bytes::Bytes::new(),
        }
    }
}

impl std::io::Read for StreamReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use futures::StreamExt;
        while self.chunk.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(c)) => self.chunk = c,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
            }
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// The folder every entry of a volume archive sits under: `volume/notes.txt` is the
/// volume's `notes.txt`. The same layout on every runtime, so an archive exported from
/// Docker imports into a host-process volume and back.
pub const VOLUME_ARCHIVE_ROOT: &str = "volume";

/// Runs instances of artifacts.
#[async_trait]
pub trait Runtime: Send + Sync + Debug + 'static {
    /// Starts an instance; returns once it is created and running (not yet healthy).
    async fn start(&self, spec: &InstanceSpec) -> Result<Instance>;
    /// Stops and removes an instance, waiting up to `grace` for it to exit before
    /// killing it. Stopping an instance that is already gone succeeds.
    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<()>;
    /// The instance's current status, health included (probing as its spec says).
    /// [`crate::ErrorKind::NotFound`] if it does not exist.
    async fn status(&self, id: &InstanceId) -> Result<InstanceStatus>;
    /// The instance's output.
    async fn logs(
        &self,
        id: &InstanceId,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, Result<LogLine>>>;
    /// Every instance carrying all of `labels` (used by recovery).
    async fn list(&self, labels: &Labels) -> Result<Vec<Instance>>;

    /// The volumes of `project` this runtime holds: those of `wanted` that exist
    /// (however the runtime names them) and every other one it made for the project.
    /// Runtimes without volumes of their own answer
    /// [`crate::ErrorKind::Unsupported`] (the default).
    async fn volumes(&self, project: &ProjectId, wanted: &[VolumeRef]) -> Result<Vec<VolumeInfo>> {
        let _ = (project, wanted);
        Err(crate::Error::unsupported(format!(
            "{} cannot list volumes",
            std::any::type_name::<Self>()
        )))
    }

    /// Deletes a volume and its data: NotFound when the runtime holds no such volume
    /// of that project, Conflict while an instance mounts it. Nothing else in Wharf
    /// deletes a volume: stopping, removing and garbage-collecting instances keep
    /// them. The default answers [`crate::ErrorKind::Unsupported`].
    async fn remove_volume(&self, volume: &VolumeRef) -> Result<()> {
        Err(crate::Error::unsupported(format!(
            "{} cannot remove volume {}",
            std::any::type_name::<Self>(),
            volume.name
        )))
    }

    /// Where the other instances of a project reach a service's instance: what
    /// `${{ svc.HOST }}` and `${{ svc.PORT }}` resolve to ([`crate::refs`]). `alias`
    /// is its [`InstanceSpec::network_alias`] (the service name), `port` the port it
    /// listens on inside, `live` its live instance if any.
    ///
    /// The default is the live instance's endpoint (`None` while nothing is live):
    /// right where that endpoint is reachable from other instances (host processes'
    /// loopback ports, a Kubernetes Service's cluster name, an OpenStack address).
    /// A runtime whose endpoints are host-side only but that joins instances to a
    /// network under their alias (Docker) answers `alias:port` instead.
    fn peer_address(&self, alias: &str, port: u16, live: Option<&Instance>) -> Option<Endpoint> {
        let _ = (alias, port);
        live.map(|i| i.endpoint.clone())
    }

    /// The contents of a volume as an uncompressed tar stream, every entry under
    /// [`VOLUME_ARCHIVE_ROOT`]/ (read-only: the volume is not changed). NotFound
    /// when the runtime holds no such volume of that project. The default answers
    /// [`crate::ErrorKind::Unsupported`].
    async fn export_volume(&self, volume: &VolumeRef) -> Result<ByteStream> {
        Err(crate::Error::unsupported(format!(
            "{} cannot export volume {}",
            std::any::type_name::<Self>(),
            volume.name
        )))
    }

    /// Replaces the contents of a volume (created if missing, as [`Runtime::start`]
    /// would make it) with the entries of `tar` under [`VOLUME_ARCHIVE_ROOT`]/;
    /// entries outside it, absolute or with `..`, are refused. Conflict while a
    /// running instance mounts the volume, where the runtime can tell. The caller
    /// checks the archive's integrity first: a stream that fails half-way leaves the
    /// volume partly restored. The default answers [`crate::ErrorKind::Unsupported`].
    async fn import_volume(&self, volume: &VolumeRef, tar: ByteStream) -> Result<()> {
        drop(tar);
        Err(crate::Error::unsupported(format!(
            "{} cannot import into volume {}",
            std::any::type_name::<Self>(),
            volume.name
        )))
    }

    /// Whether it runs an instance's [`InstanceSpec::replicas`] itself, balancing
    /// between them behind the instance's endpoint (Kubernetes). The engine then
    /// starts one instance per process type and changes its count with
    /// [`Runtime::set_replicas`]; otherwise (the default) it starts one instance per
    /// replica and routes to each.
    fn replicates(&self) -> bool {
        false
    }

    /// Changes how many replicas instance `id` runs, for a runtime that
    /// [`Runtime::replicates`]; the engine then waits for it to be healthy again. The
    /// default answers [`crate::ErrorKind::Unsupported`].
    async fn set_replicas(&self, id: &InstanceId, replicas: u32) -> Result<()> {
        let _ = replicas;
        Err(crate::Error::unsupported(format!(
            "{} cannot change the replicas of instance {id}",
            std::any::type_name::<Self>()
        )))
    }

    /// Whether the runtime schedules a service's cron jobs itself (Kubernetes
    /// CronJobs): the engine hands them over with [`Runtime::schedule_cron`] when a
    /// release goes live, and Wharf's scheduler ([`crate::cron::CronScheduler`])
    /// then fires none of them, only recording their runs ([`Runtime::cron_runs`]).
    /// The default, false: Wharf's scheduler runs each as a task.
    fn schedules_cron(&self) -> bool {
        false
    }

    /// Makes `jobs` the cron jobs the runtime schedules for the service of instance
    /// `id` (its web instance), run from that instance's release: creates what is
    /// missing, moves the service's existing jobs onto `id` in place (runs going on
    /// and the history the runtime keeps stay) and removes the service's jobs no
    /// longer in `jobs` (so an empty slice removes them all). They go when the
    /// instance they were last handed to is stopped. Refuses a job the runtime
    /// cannot schedule (InvalidInput or Unsupported) before changing anything. The
    /// default answers [`crate::ErrorKind::Unsupported`].
    async fn schedule_cron(&self, id: &InstanceId, jobs: &[crate::cron::CronJob]) -> Result<()> {
        let _ = jobs;
        Err(crate::Error::unsupported(format!(
            "{} does not schedule cron jobs itself (instance {id})",
            std::any::type_name::<Self>()
        )))
    }

    /// The runs the runtime fired of the cron jobs it schedules for the service of
    /// instance `id` ([`Runtime::schedule_cron`]) that have ended and that it still
    /// keeps, in no particular order, but those whose [`crate::cron::ScheduledRun::key`]
    /// is in `known` (recorded already). The default: none.
    async fn cron_runs(
        &self,
        id: &InstanceId,
        known: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<crate::cron::ScheduledRun>> {
        let _ = (id, known);
        Ok(Vec::new())
    }

    /// Runs `command` (program and arguments, no shell) inside running instance `id`,
    /// with `env` added to its environment (secrets go here, never into `command`),
    /// feeding it `stdin` when given (then closing it) and streaming its standard
    /// output. The stream ends with an error item when the command exits non-zero,
    /// carrying the tail of its standard error. Database dumps and restores use it.
    /// The default answers [`crate::ErrorKind::Unsupported`].
    async fn exec(
        &self,
        id: &InstanceId,
        command: &[String],
        env: &BTreeMap<String, String>,
        stdin: Option<ByteStream>,
    ) -> Result<ByteStream> {
        let _ = (command, env, stdin);
        Err(crate::Error::unsupported(format!(
            "{} cannot run commands in instance {id}",
            std::any::type_name::<Self>()
        )))
    }
}

/// Maps hostnames to upstreams on a reverse proxy.
#[async_trait]
pub trait Router: Send + Sync + Debug + 'static {
    /// Creates or replaces the route with `route.id`. Idempotent.
    async fn upsert(&self, route: &Route) -> Result<()>;
    /// Removes a route. Removing a route that does not exist succeeds.
    async fn remove(&self, id: &RouteId) -> Result<()>;
    /// Every route this router manages.
    async fn list(&self) -> Result<Vec<Route>>;
}

/// Which deployments to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentFilter {
    /// Only this project's.
    pub project: Option<ProjectId>,
    /// Only this service's.
    pub service: Option<ServiceId>,
    /// Only active ones (queued or in a step).
    pub active_only: bool,
    /// At most this many, newest first.
    pub limit: Option<usize>,
}

/// Which cron runs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CronRunFilter {
    /// Only this project's.
    pub project: Option<ProjectId>,
    /// Only this service's.
    pub service: Option<ServiceId>,
    /// Only this job's (by name).
    pub job: Option<String>,
    /// Only runs that ended so (or still run, with [`CronOutcome::Running`]).
    pub outcome: Option<CronOutcome>,
    /// At most this many, newest first.
    pub limit: Option<usize>,
}

/// Wharf's records. State changes of deployments compare-and-set on a version, so two
/// controllers can never both move one deployment.
///
/// Look-ups of one record (by id or by name) fail with NotFound when there is none;
/// listings return an empty list. Look-ups by name are indexed in the SQL stores, so
/// callers ask for the one record they need instead of scanning a listing.
#[async_trait]
pub trait Store: Send + Sync + Debug + 'static {
    /// Creates or updates a project. A name used by another project is a Conflict.
    async fn put_project(&self, project: &Project) -> Result<()>;
    /// A project by id.
    async fn project(&self, id: &ProjectId) -> Result<Project>;
    /// A project by name (names are unique). NotFound if no project has it, like
    /// [`Store::project`] for an unknown id.
    async fn project_by_name(&self, name: &str) -> Result<Project>;
    /// Every project, by name.
    async fn projects(&self) -> Result<Vec<Project>>;
    /// Deletes a project with its environments, services, deployments, releases and
    /// events. Deleting a missing project is NotFound.
    async fn delete_project(&self, id: &ProjectId) -> Result<()>;

    /// Creates or updates an environment (name unique in the project).
    async fn put_environment(&self, env: &Environment) -> Result<()>;
    /// An environment by id. NotFound if there is none.
    async fn environment(&self, id: &EnvironmentId) -> Result<Environment>;
    /// An environment by name in `project` (names are unique in a project). NotFound
    /// if the project has none by that name, like [`Store::environment`] for an
    /// unknown id.
    async fn environment_by_name(&self, project: &ProjectId, name: &str) -> Result<Environment>;
    /// A project's environments, by name.
    async fn environments(&self, project: &ProjectId) -> Result<Vec<Environment>>;
    /// Deletes an environment and its services (with their history).
    async fn delete_environment(&self, id: &EnvironmentId) -> Result<()>;

    /// Creates or updates a service (name unique in project + environment; the project
    /// must exist).
    async fn put_service(&self, service: &Service) -> Result<()>;
    /// A service by id.
    async fn service(&self, id: &ServiceId) -> Result<Service>;
    /// A service by name in `project`: with `environment` `None`, among the project's
    /// own (environment-less) services; with `Some(env)`, among that environment's
    /// only. There is no fallback from an environment to the project's own services.
    /// NotFound if there is none, like [`Store::service`] for an unknown id.
    async fn service_by_name(
        &self,
        project: &ProjectId,
        environment: Option<&EnvironmentId>,
        name: &str,
    ) -> Result<Service>;
    /// A project's services, by name.
    async fn services(&self, project: &ProjectId) -> Result<Vec<Service>>;
    /// Deletes a service with its deployments, releases and events.
    async fn delete_service(&self, id: &ServiceId) -> Result<()>;

    /// Records a new deployment (its version must be 0). An existing id is a Conflict.
    async fn insert_deployment(&self, deployment: &Deployment) -> Result<()>;
    /// A deployment by id.
    async fn deployment(&self, id: &DeploymentId) -> Result<Deployment>;
    /// Deployments matching `filter`, newest first.
    async fn deployments(&self, filter: &DeploymentFilter) -> Result<Vec<Deployment>>;
    /// Replaces a deployment if its stored version is still `deployment.version`;
    /// returns it with the version bumped. A stale version is a Conflict and changes
    /// nothing.
    async fn update_deployment(&self, deployment: &Deployment) -> Result<Deployment>;

    /// Records a release. Its number must be the service's next one (Conflict otherwise).
    async fn insert_release(&self, release: &Release) -> Result<()>;
    /// A release by id (NotFound if there is none).
    async fn release(&self, id: &ReleaseId) -> Result<Release>;
    /// A service's releases, newest first.
    async fn releases(&self, service: &ServiceId) -> Result<Vec<Release>>;

    /// Appends events, assigning each the next sequence number; returns them.
    async fn append_events(&self, events: Vec<Event>) -> Result<Vec<Event>>;
    /// A deployment's events with `seq > after`, in order.
    async fn events(&self, deployment: &DeploymentId, after: u64) -> Result<Vec<Event>>;

    /// Records a new cron run. NotFound if its service does not exist, a Conflict if
    /// its id does, InvalidInput if it fails [`CronRun::validate`].
    async fn insert_cron_run(&self, run: &CronRun) -> Result<()>;
    /// Replaces a recorded cron run (its id, project, service and job stay).
    /// NotFound if there is none; InvalidInput if it fails [`CronRun::validate`].
    async fn update_cron_run(&self, run: &CronRun) -> Result<()>;
    /// Cron runs matching `filter`, newest (last recorded) first.
    async fn cron_runs(&self, filter: &CronRunFilter) -> Result<Vec<CronRun>>;
    /// Deletes the ended runs of `job` of `service` but the newest `keep` of them
    /// (runs still going stay); returns how many were deleted.
    async fn prune_cron_runs(&self, service: &ServiceId, job: &str, keep: usize) -> Result<u64>;
}

/// Conveniences over [`Store`].
#[async_trait]
pub trait StoreExt: Store {
    /// Moves a deployment by `event` through [`crate::state::transition`], persisting the
    /// new state with compare-and-set. Returns the updated deployment.
    async fn apply(
        &self,
        deployment: &Deployment,
        event: &crate::state::DeployEvent,
    ) -> Result<Deployment> {
        let mut next = deployment.clone();
        next.state = crate::state::transition(&deployment.state, event)?;
        next.updated_at = Timestamp::now();
        self.update_deployment(&next).await
    }

    /// The release currently live for a service, if any (the newest release whose
    /// deployment is `Live`).
    async fn live_deployment(&self, service: &ServiceId) -> Result<Option<Deployment>> {
        let all = self
            .deployments(&DeploymentFilter {
                service: Some(service.clone()),
                ..Default::default()
            })
            .await?;
        Ok(all.into_iter().find(|d| d.state == DeploymentState::Live))
    }
}

impl<T: Store + ?Sized> StoreExt for T {}

/// A shared fetcher.
pub type DynFetcher = Arc<dyn SourceFetcher>;
/// A shared builder.
pub type DynBuilder = Arc<dyn Builder>;
/// A shared runtime.
pub type DynRuntime = Arc<dyn Runtime>;
/// A shared router.
pub type DynRouter = Arc<dyn Router>;
/// A shared store.
pub type DynStore = Arc<dyn Store>;
