//! The engine retries backend calls that are safe to repeat (router `upsert`, `remove`,
//! `list`; runtime `status`, `list`) when they fail with a retryable error, gives up
//! after its policy's bound, never retries an error that is not retryable, and never
//! retries a build or a start. Checked with flaky wrappers around the in-memory
//! backends.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use wharf_core::memory::{MemoryBuilder, MemoryRouter, MemoryRuntime};
use wharf_core::retry::RetryPolicy;
use wharf_core::store::MemoryStore;
use wharf_core::*;

fn flake() -> Error {
    Error::unavailable("injected flake").with_backend("flaky")
}

fn refusal() -> Error {
    Error::invalid("injected refusal").with_backend("flaky")
}

/// One operation's fault: the next `remaining` calls fail with `error()` (`u32::MAX`:
/// every call); every call is counted.
#[derive(Debug)]
struct Flaky {
    remaining: AtomicU32,
    calls: AtomicU32,
    error: Mutex<fn() -> Error>,
}

impl Default for Flaky {
    fn default() -> Self {
        Flaky {
            remaining: AtomicU32::new(0),
            calls: AtomicU32::new(0),
            error: Mutex::new(flake),
        }
    }
}

impl Flaky {
    /// From now on fail `times` times with `error`; the call count starts again at 0.
    fn arm(&self, times: u32, error: fn() -> Error) {
        *self.error.lock().unwrap() = error;
        self.calls.store(0, Ordering::SeqCst);
        self.remaining.store(times, Ordering::SeqCst);
    }
    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
    fn hit(&self) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let left = self.remaining.load(Ordering::SeqCst);
        if left == 0 {
            return Ok(());
        }
        if left != u32::MAX {
            self.remaining.store(left - 1, Ordering::SeqCst);
        }
        Err((self.error.lock().unwrap())())
    }
}

/// A [`MemoryRouter`] whose `upsert`, `remove` and `list` can be made to fail.
#[derive(Debug, Default)]
struct FlakyRouter {
    inner: MemoryRouter,
    upsert: Flaky,
    remove: Flaky,
    list: Flaky,
}

#[async_trait]
impl Router for FlakyRouter {
    async fn upsert(&self, route: &Route) -> Result<()> {
        self.upsert.hit()?;
        self.inner.upsert(route).await
    }
    async fn remove(&self, id: &RouteId) -> Result<()> {
        self.remove.hit()?;
        self.inner.remove(id).await
    }
    async fn list(&self) -> Result<Vec<Route>> {
        self.list.hit()?;
        self.inner.list().await
    }
}

/// A [`MemoryRuntime`] whose `start`, `status` and `list` can be made to fail.
#[derive(Debug, Default)]
struct FlakyRuntime {
    inner: MemoryRuntime,
    start: Flaky,
    status: Flaky,
    list: Flaky,
}

#[async_trait]
impl Runtime for FlakyRuntime {
    async fn start(&self, spec: &InstanceSpec) -> Result<Instance> {
        self.start.hit()?;
        self.inner.start(spec).await
    }
    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<()> {
        self.inner.stop(id, grace).await
    }
    async fn status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        self.status.hit()?;
        self.inner.status(id).await
    }
    async fn logs(
        &self,
        id: &InstanceId,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, Result<LogLine>>> {
        self.inner.logs(id, opts).await
    }
    async fn list(&self, labels: &Labels) -> Result<Vec<Instance>> {
        self.list.hit()?;
        self.inner.list(labels).await
    }
}

/// A [`MemoryBuilder`] whose `build` can be made to fail.
#[derive(Debug, Default)]
struct FlakyBuilder {
    inner: MemoryBuilder,
    build: Flaky,
}

#[async_trait]
impl Builder for FlakyBuilder {
    async fn build(&self, req: BuildRequest) -> Result<Artifact> {
        self.build.hit()?;
        self.inner.build(req).await
    }
}

/// Backends shared by every engine a test makes (a restart keeps them).
struct World {
    store: Arc<MemoryStore>,
    builder: Arc<FlakyBuilder>,
    runtime: Arc<FlakyRuntime>,
    router: Arc<FlakyRouter>,
    project: Project,
    dir: tempfile::TempDir,
}

/// Retries in milliseconds, so tests stay fast.
fn quick(attempts: u32) -> RetryPolicy {
    RetryPolicy::new(attempts, Duration::from_millis(1), Duration::from_millis(5))
}

impl World {
    async fn new() -> World {
        let store = Arc::new(MemoryStore::new());
        let project = Project::new("demo").unwrap();
        store.put_project(&project).await.unwrap();
        World {
            store,
            builder: Arc::default(),
            runtime: Arc::default(),
            router: Arc::default(),
            project,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn engine(&self, retry: RetryPolicy) -> Engine {
        Engine::builder()
            .store(self.store.clone())
            .builder(self.builder.clone())
            .runtime(self.runtime.clone())
            .router(self.router.clone())
            .work_dir(self.dir.path().join("work"))
            .stop_grace(Duration::ZERO)
            .retry(retry)
            .build()
            .unwrap()
    }

    /// A world, an engine on it with `retry`, and its service `web`.
    async fn with_web(retry: RetryPolicy) -> (World, Engine, Service) {
        let w = World::new().await;
        let engine = w.engine(retry);
        let svc = w.service("web").await;
        (w, engine, svc)
    }

    async fn service(&self, name: &str) -> Service {
        let src = self.dir.path().join("src").join(name);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("app.py"), format!("print('{name}')\n")).unwrap();
        let mut svc = Service::new(&self.project.id, name, SourceSpec::Dir { path: src }).unwrap();
        svc.health_check = Some(HealthCheck {
            probe: Probe::Http { path: "/".into() },
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(300),
        });
        self.store.put_service(&svc).await.unwrap();
        svc
    }

    fn served_by(&self, svc: &Service) -> Option<Endpoint> {
        let host = format!("{}.{}.localhost", svc.name, self.project.name);
        self.router.inner.resolve(&host, "/")
    }
}

async fn deploy(engine: &Engine, svc: &Service) -> Deployment {
    let h = engine.deploy(&svc.id, Trigger::Manual).await.unwrap();
    h.wait().await.unwrap()
}

#[track_caller]
fn failed_at(dep: &Deployment, step: Step) -> String {
    match &dep.state {
        DeploymentState::Failed { step: s, reason } => {
            assert_eq!(*s, step, "failed at the wrong step: {reason}");
            reason.clone()
        }
        other => panic!("expected a failure at {step:?}, got {other}"),
    }
}

#[tokio::test]
async fn a_route_write_that_fails_retryably_twice_still_goes_live() {
    let (w, engine, svc) = World::with_web(quick(4)).await;
    w.router.upsert.arm(2, flake);

    let dep = deploy(&engine, &svc).await;

    assert_eq!(dep.state, DeploymentState::Live, "{dep:?}");
    assert_eq!(w.router.upsert.calls(), 3, "two failures, then the write");
    assert_eq!(w.served_by(&svc), dep.instance.map(|i| i.endpoint));
}

#[tokio::test]
async fn a_route_write_refused_without_retry_meaning_fails_at_routing_at_once() {
    let (w, engine, svc) = World::with_web(quick(4)).await;
    w.router.upsert.arm(u32::MAX, refusal);

    let dep = deploy(&engine, &svc).await;

    let reason = failed_at(&dep, Step::Routing);
    assert!(reason.contains("injected refusal"), "{reason}");
    assert_eq!(w.router.upsert.calls(), 1, "a refusal must not be retried");
    assert_eq!(w.served_by(&svc), None);
    assert!(w.runtime.inner.instances().is_empty(), "new instance left");
}

#[tokio::test]
async fn a_router_that_stays_down_is_given_up_on_after_the_bound() {
    let (w, engine, svc) = World::with_web(quick(3)).await;
    let v1 = deploy(&engine, &svc).await;
    w.router.upsert.arm(u32::MAX, flake);

    let v2 = deploy(&engine, &svc).await;

    let reason = failed_at(&v2, Step::Routing);
    assert!(reason.contains("gave up after 3 attempts"), "{reason}");
    // Three tries of the new route, then three of putting the previous one back.
    assert_eq!(w.router.upsert.calls(), 6);
    let v1_inst = v1.instance.unwrap();
    assert_eq!(w.runtime.inner.instances(), vec![v1_inst.clone()]);
}

#[tokio::test]
async fn without_retries_one_flake_fails_the_deployment() {
    // The same flake as in the first test, with retries off: what the policy buys.
    let (w, engine, svc) = World::with_web(RetryPolicy::none()).await;
    w.router.upsert.arm(1, flake);

    let dep = deploy(&engine, &svc).await;

    let reason = failed_at(&dep, Step::Routing);
    assert!(reason.contains("injected flake"), "{reason}");
    assert_eq!(w.router.upsert.calls(), 1);
}

#[tokio::test]
async fn builds_and_starts_are_never_retried() {
    let (w, engine, svc) = World::with_web(quick(4)).await;

    w.builder.build.arm(1, flake);
    let dep = deploy(&engine, &svc).await;
    failed_at(&dep, Step::Building);
    assert_eq!(w.builder.build.calls(), 1, "a build must not be retried");

    w.runtime.start.arm(1, flake);
    let dep = deploy(&engine, &svc).await;
    failed_at(&dep, Step::Starting);
    assert_eq!(w.runtime.start.calls(), 1, "a start must not be retried");
    assert_eq!(w.runtime.inner.starts(), 0);
}

#[tokio::test]
async fn recovery_rides_out_flaky_status_and_listings() {
    let w = World::new().await;
    let svc = w.service("web").await;
    let live = deploy(&w.engine(quick(4)), &svc).await;
    let inst = live.instance.clone().unwrap();

    // A restart while the runtime and the proxy are flaky.
    w.runtime.status.arm(2, flake);
    w.runtime.list.arm(2, flake);
    w.router.list.arm(2, flake);
    w.router.upsert.arm(2, flake);
    let report = w.engine(quick(4)).recover().await.unwrap();

    assert!(report.restarted.is_empty(), "{report:?}");
    assert!(report.removed_instances.is_empty(), "{report:?}");
    assert_eq!(w.runtime.status.calls(), 3);
    assert_eq!(w.runtime.list.calls(), 3);
    assert_eq!(w.router.list.calls(), 3);
    assert_eq!(w.router.upsert.calls(), 3);
    assert_eq!(w.runtime.inner.instances(), vec![inst.clone()]);
    assert_eq!(w.served_by(&svc), Some(inst.endpoint));
}

#[tokio::test]
async fn recovery_does_not_retry_a_status_that_is_not_retryable() {
    let w = World::new().await;
    let svc = w.service("web").await;
    let live = deploy(&w.engine(quick(4)), &svc).await;
    let old = live.instance.unwrap();

    // As before retries existed: an instance whose status cannot be read is started
    // again from its release.
    w.runtime.status.arm(1, refusal);
    let report = w.engine(quick(4)).recover().await.unwrap();

    assert_eq!(w.runtime.status.calls(), 1, "a refusal must not be retried");
    assert_eq!(report.restarted, vec![svc.id.clone()]);
    let now = w.runtime.inner.instances();
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].id, old.id);
    assert_eq!(w.served_by(&svc), Some(now[0].endpoint.clone()));
}

#[tokio::test]
async fn teardown_retries_removing_the_route_and_listing_instances() {
    let (w, engine, svc) = World::with_web(quick(4)).await;
    deploy(&engine, &svc).await;
    w.router.remove.arm(2, flake);
    w.runtime.list.arm(2, flake);

    engine.teardown(&svc.id).await.unwrap();

    assert_eq!(w.router.remove.calls(), 3);
    assert_eq!(w.runtime.list.calls(), 3);
    assert_eq!(w.served_by(&svc), None);
    assert!(w.runtime.inner.instances().is_empty());
}
