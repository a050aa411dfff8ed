//! The engine on in-memory backends: the deployment flow, zero-downtime switch,
//! failures that leave the previous release serving, cancel, supersede, the build
//! limit, rollback, cascades and recovery.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use wharf_core::memory::{Faults, MemoryBuilder, MemoryRouter, MemoryRuntime};
use wharf_core::store::MemoryStore;
use wharf_core::*;

struct World {
    engine: Engine,
    store: Arc<MemoryStore>,
    builder: Arc<MemoryBuilder>,
    runtime: Arc<MemoryRuntime>,
    router: Arc<MemoryRouter>,
    faults: Faults,
    project: Project,
    dir: tempfile::TempDir,
}

fn fast_health() -> HealthCheck {
    HealthCheck {
        probe: Probe::Http { path: "/".into() },
        interval: Duration::from_millis(10),
        timeout: Duration::from_millis(300),
    }
}

async fn world() -> World {
    world_with(|b| b).await
}

async fn world_with(f: impl FnOnce(EngineBuilder) -> EngineBuilder) -> World {
    let faults = Faults::default();
    let store = Arc::new(MemoryStore::new());
    let builder = Arc::new(MemoryBuilder::with_faults(faults.clone()));
    let runtime = Arc::new(MemoryRuntime::with_faults(faults.clone()));
    let router = Arc::new(MemoryRouter::with_faults(faults.clone()));
    let dir = tempfile::tempdir().unwrap();
    let engine = f(Engine::builder()
        .store(store.clone())
        .builder(builder.clone())
        .runtime(runtime.clone())
        .router(router.clone())
        .work_dir(dir.path().join("work"))
        .stop_grace(Duration::ZERO))
    .build()
    .unwrap();
    let project = Project::new("demo").unwrap();
    store.put_project(&project).await.unwrap();
    World {
        engine,
        store,
        builder,
        runtime,
        router,
        faults,
        project,
        dir,
    }
}

impl World {
    /// A service whose source is a folder holding `app.py` with `body`.
    async fn service(&self, name: &str, deps: &[&str]) -> Service {
        let src = self.dir.path().join("src").join(name);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("app.py"), format!("print('{name} v1')\n")).unwrap();
        let mut svc = Service::new(&self.project.id, name, SourceSpec::Dir { path: src }).unwrap();
        svc.depends_on = deps.iter().map(|d| d.to_string()).collect();
        svc.health_check = Some(fast_health());
        self.store.put_service(&svc).await.unwrap();
        svc
    }

    fn change_source(&self, svc: &Service, text: &str) {
        let SourceSpec::Dir { path } = &svc.source else {
            panic!()
        };
        std::fs::write(path.join("app.py"), text).unwrap();
    }

    async fn deploy(&self, svc: &Service) -> Deployment {
        wharf_testkit::deploy(&self.engine, &svc.id).await
    }

    fn host(&self, svc: &Service) -> String {
        format!("{}.{}.localhost", svc.name, self.project.name)
    }

    fn served_by(&self, svc: &Service) -> Option<Endpoint> {
        self.router.resolve(&self.host(svc), "/")
    }

    /// The deployments recorded (only the active ones with `active_only`).
    async fn deployments(&self, active_only: bool) -> Vec<Deployment> {
        let filter = DeploymentFilter {
            active_only,
            ..Default::default()
        };
        self.store.deployments(&filter).await.unwrap()
    }

    /// The ids of the instances running, sorted.
    fn instance_ids(&self) -> Vec<InstanceId> {
        let mut ids: Vec<_> = self.runtime.instances().into_iter().map(|i| i.id).collect();
        ids.sort();
        ids
    }

    /// Deploys `svc` with a slow build (`delay`) and returns once it is building,
    /// with its handle and event stream.
    async fn building(
        &self,
        svc: &Service,
        delay: Duration,
    ) -> (DeploymentHandle, BoxStream<'static, Event>) {
        self.faults
            .update(&svc.name, |f| f.build_delay = Some(delay));
        let mut h = self.engine.deploy(&svc.id, Trigger::Manual).await.unwrap();
        let mut events = h.events();
        wharf_testkit::reach(&mut events, &DeploymentState::Building).await;
        (h, events)
    }

    /// A deployment `id` of `live`'s service caught mid-way, as a crash leaves it:
    /// recorded, moved by `events` from the queue, with an instance of `live`'s
    /// artifact running for it. Returns it as first recorded, its instance, and that
    /// instance's spec.
    async fn mid_way(
        &self,
        live: &Deployment,
        id: DeploymentId,
        events: &[DeployEvent],
    ) -> (Deployment, Instance, InstanceSpec) {
        let mut spec = self
            .runtime
            .spec(&live.instance.as_ref().unwrap().id)
            .unwrap();
        spec.labels.insert(label::DEPLOYMENT.into(), id.to_string());
        let inst = self.runtime.start(&spec).await.unwrap();
        let mut d = live.clone();
        d.id = id;
        d.version = 0;
        d.state = DeploymentState::Queued;
        d.release = None;
        d.instance = Some(inst.clone());
        self.store.insert_deployment(&d).await.unwrap();
        let mut moved = d.clone();
        for e in events {
            moved = self.store.apply(&moved, e).await.unwrap();
        }
        (d, inst, spec)
    }

    /// Services `db`, `api` (on db) and `web` (on api); returns db.
    async fn chain(&self) -> Service {
        let db = self.service("db", &[]).await;
        self.service("api", &["db"]).await;
        self.service("web", &["api"]).await;
        db
    }
}

/// A world whose service `web` went live.
async fn live_web() -> (World, Service, Deployment) {
    let w = world().await;
    let svc = w.service("web", &[]).await;
    let live = w.deploy(&svc).await;
    (w, svc, live)
}

/// A world whose service `web` went live twice, the second time from changed source.
async fn redeployed() -> (World, Service, Deployment, Deployment) {
    let (w, svc, first) = live_web().await;
    w.change_source(&svc, "print('v2')\n");
    let second = w.deploy(&svc).await;
    (w, svc, first, second)
}

/// The step and reason of a failed deployment.
#[track_caller]
fn failure(dep: &Deployment) -> (Step, &str) {
    match &dep.state {
        DeploymentState::Failed { step, reason } => (*step, reason),
        other => panic!("expected a failure, got {other}"),
    }
}

/// An engine builder on fresh in-memory backends.
fn memory_engine() -> EngineBuilder {
    Engine::builder()
        .store(Arc::new(MemoryStore::new()))
        .builder(Arc::new(MemoryBuilder::new()))
        .runtime(Arc::new(MemoryRuntime::new()))
        .router(Arc::new(MemoryRouter::new()))
}

fn states(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::State { to, .. } => Some(to.name().to_owned()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn deploy_goes_live_through_every_step_and_persists_events() {
    let w = world().await;
    let svc = w.service("web", &[]).await;
    let mut h = w.engine.deploy(&svc.id, Trigger::Manual).await.unwrap();
    let events: Vec<Event> = h.events().collect().await;
    let dep = h.wait().await.unwrap();

    assert_eq!(dep.state, DeploymentState::Live);
    assert_eq!(states(&events), wharf_testkit::STATES_TO_LIVE);
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::Log(l) if l.stream == LogStream::Build)),
        "build output was not streamed"
    );
    // The events are persisted, with increasing sequence numbers, identical to the stream.
    let stored = w.store.events(&dep.id, 0).await.unwrap();
    assert_eq!(stored, events);
    assert!(stored.windows(2).all(|p| p[0].seq < p[1].seq));

    let inst = dep.instance.clone().unwrap();
    assert_eq!(w.served_by(&svc), Some(inst.endpoint.clone()));
    let releases = w.store.releases(&svc.id).await.unwrap();
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0].number, 1);
    assert_eq!(dep.release, Some(releases[0].id.clone()));
    // The instance got the service's labels and the PORT variable.
    let spec = w.runtime.spec(&inst.id).unwrap();
    assert_eq!(spec.labels[label::SERVICE], svc.id.to_string());
    assert_eq!(spec.labels[label::DEPLOYMENT], dep.id.to_string());
    assert_eq!(spec.env["PORT"], dep.plan.unwrap().port.to_string());
    assert_eq!(spec.network.as_deref(), Some("wharf-demo"));
}

#[tokio::test]
async fn env_layers_override_in_order() {
    let w = world().await;
    let mut project = w.project.clone();
    project
        .env
        .insert("A".into(), EnvValue::Plain("project".into()));
    project
        .env
        .insert("B".into(), EnvValue::Plain("project".into()));
    w.store.put_project(&project).await.unwrap();
    let mut svc = w.service("web", &[]).await;
    svc.env
        .insert("B".into(), EnvValue::Plain("service".into()));
    svc.env
        .insert("TOKEN".into(), EnvValue::Secret(Secret::new("s3cret")));
    w.store.put_service(&svc).await.unwrap();
    let dep = w.deploy(&svc).await;
    let spec = w.runtime.spec(&dep.instance.unwrap().id).unwrap();
    assert_eq!(spec.env["A"], "project");
    assert_eq!(spec.env["B"], "service");
    assert_eq!(spec.env["TOKEN"], "s3cret");
    // The secret never shows up in the deployment's events.
    let events = w.store.events(&dep.id, 0).await.unwrap();
    assert!(!serde_json::to_string(&events).unwrap().contains("s3cret"));
}

#[tokio::test]
async fn redeploy_switches_traffic_then_stops_the_old_instance() {
    let (w, svc, first, second) = redeployed().await;

    assert_eq!(second.state, DeploymentState::Live);
    let first = w.store.deployment(&first.id).await.unwrap();
    assert_eq!(first.state, DeploymentState::Superseded);
    let old = first.instance.unwrap();
    let new = second.instance.clone().unwrap();
    assert_eq!(w.served_by(&svc), Some(new.endpoint));
    assert_eq!(
        w.instance_ids(),
        vec![new.id],
        "old instance {} not stopped",
        old.id
    );
    assert_ne!(
        first.artifact, second.artifact,
        "changed source gave the same artifact"
    );
    let numbers: Vec<u64> = w
        .store
        .releases(&svc.id)
        .await
        .unwrap()
        .iter()
        .map(|r| r.number)
        .collect();
    assert_eq!(numbers, [2, 1]);
}

#[tokio::test]
async fn failed_health_check_leaves_the_previous_release_serving() {
    let (w, svc, v1) = live_web().await;
    w.faults.update("web", |f| f.fail_health = true);
    let v2 = w.deploy(&svc).await;

    let (step, reason) = failure(&v2);
    assert_eq!(step, Step::HealthChecking);
    assert!(reason.contains("GET / answered 500"), "{reason}");
    assert!(reason.contains("last log lines"), "{reason}");
    assert_eq!(
        w.store.deployment(&v1.id).await.unwrap().state,
        DeploymentState::Live
    );
    assert_eq!(
        w.served_by(&svc),
        Some(v1.instance.clone().unwrap().endpoint)
    );
    assert_eq!(
        w.instance_ids(),
        vec![v1.instance.unwrap().id],
        "failed instance not removed"
    );
    assert_eq!(w.store.releases(&svc.id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn exit_at_start_fails_with_the_apps_last_lines() {
    let w = world().await;
    let svc = w.service("web", &[]).await;
    w.faults.update("web", |f| f.exit_at_start = true);
    let dep = w.deploy(&svc).await;
    let (step, reason) = failure(&dep);
    assert_eq!(step, Step::HealthChecking);
    assert!(reason.contains("exited (code 1"), "{reason}");
    assert!(
        reason.contains("Error: injected crash at start"),
        "{reason}"
    );
    assert!(w.served_by(&svc).is_none());
}

#[tokio::test]
async fn each_failing_step_is_recorded_and_cleaned_up() {
    for (fault, step) in [
        ("build", Step::Building),
        ("start", Step::Starting),
        ("route", Step::Routing),
    ] {
        let w = world().await;
        let svc = w.service("web", &[]).await;
        let v1 = w.deploy(&svc).await;
        w.faults.update("web", |f| match fault {
            "build" => f.fail_build = true,
            "start" => f.fail_start = true,
            _ => f.fail_route = true,
        });
        let v2 = w.deploy(&svc).await;
        match &v2.state {
            DeploymentState::Failed { step: s, reason } => {
                assert_eq!(*s, step, "{fault}: {reason}");
                assert!(reason.contains("injected"), "{fault}: {reason}");
            }
            other => panic!("{fault}: expected failure, got {other}"),
        }
        let v1_inst = v1.instance.clone().unwrap();
        assert_eq!(w.served_by(&svc), Some(v1_inst.endpoint.clone()), "{fault}");
        assert_eq!(
            w.instance_ids(),
            vec![v1_inst.id],
            "{fault}: new instance left behind"
        );
    }
}

#[tokio::test]
async fn cancel_during_build_ends_cancelled_without_an_instance() {
    let w = world().await;
    let svc = w.service("web", &[]).await;
    // Wait until it is building, then cancel.
    let (h, _events) = w.building(&svc, Duration::from_secs(30)).await;
    h.cancel();
    let dep = tokio::time::timeout(Duration::from_secs(5), h.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dep.state, DeploymentState::Cancelled);
    assert!(w.runtime.instances().is_empty());
    assert_eq!(w.runtime.starts(), 0);
}

#[tokio::test]
async fn a_newer_request_supersedes_the_queued_one() {
    let w = world().await;
    let svc = w.service("web", &[]).await;
    // Let the first one leave the queue (a request still queued would be superseded too).
    let (a, a_events) = w.building(&svc, Duration::from_millis(300)).await;
    let b = w.engine.deploy(&svc.id, Trigger::Manual).await.unwrap();
    let c = w.engine.deploy(&svc.id, Trigger::Manual).await.unwrap();
    drop(a_events);
    let (a, b, c) = (
        a.wait().await.unwrap(),
        b.wait().await.unwrap(),
        c.wait().await.unwrap(),
    );
    assert_eq!(
        b.state,
        DeploymentState::Superseded,
        "queued request not superseded"
    );
    assert_eq!(c.state, DeploymentState::Live);
    assert_eq!(
        w.store.deployment(&a.id).await.unwrap().state,
        DeploymentState::Superseded,
        "the first release should have been replaced by the third"
    );
    assert_eq!(
        w.builder.builds(),
        2,
        "the superseded request must not build"
    );
}

#[tokio::test]
async fn builds_never_exceed_the_limit() {
    let w = world_with(|b| b.max_concurrent_builds(1)).await;
    w.faults
        .update("*", |f| f.build_delay = Some(Duration::from_millis(50)));
    let mut handles = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let svc = w.service(name, &[]).await;
        handles.push(w.engine.deploy(&svc.id, Trigger::Manual).await.unwrap());
    }
    for h in handles {
        assert_eq!(h.wait().await.unwrap().state, DeploymentState::Live);
    }
    assert_eq!(w.builder.builds(), 4);
    assert_eq!(w.builder.max_concurrent(), 1);

    let w = world_with(|b| b.max_concurrent_builds(3)).await;
    w.faults
        .update("*", |f| f.build_delay = Some(Duration::from_millis(200)));
    let mut handles = Vec::new();
    for name in ["a", "b", "c", "d", "e"] {
        let svc = w.service(name, &[]).await;
        handles.push(w.engine.deploy(&svc.id, Trigger::Manual).await.unwrap());
    }
    for h in handles {
        h.wait().await.unwrap();
    }
    assert!(w.builder.max_concurrent() <= 3);
    assert!(
        w.builder.max_concurrent() >= 2,
        "builds did not run in parallel at all"
    );
}

#[tokio::test]
async fn rollback_reactivates_an_old_artifact_without_building() {
    let (w, svc, v1, v2) = redeployed().await;
    let builds = w.builder.builds();
    let rel1 = w.store.releases(&svc.id).await.unwrap().pop().unwrap();
    assert_eq!(rel1.number, 1);

    let mut h = w.engine.rollback(&rel1.id).await.unwrap();
    let events: Vec<Event> = h.events().collect().await;
    let back = h.wait().await.unwrap();
    assert_eq!(back.state, DeploymentState::Live);
    assert_eq!(
        states(&events),
        ["starting", "health_checking", "routing", "live"]
    );
    assert_eq!(w.builder.builds(), builds, "rollback must not build");
    assert_eq!(back.artifact, v1.artifact);
    assert_eq!(
        w.store.deployment(&v2.id).await.unwrap().state,
        DeploymentState::RolledBack
    );
    assert_eq!(w.served_by(&svc), Some(back.instance.unwrap().endpoint));
    let rels = w.store.releases(&svc.id).await.unwrap();
    assert_eq!(rels[0].number, 3);
    assert_eq!(rels[0].artifact, rel1.artifact);

    let missing = w
        .engine
        .rollback(&ReleaseId("rel_missing".into()))
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn image_sources_skip_fetch_and_build() {
    let w = world().await;
    let mut svc = Service::new(
        &w.project.id,
        "cache",
        SourceSpec::Image {
            image: "redis:7".into(),
        },
    )
    .unwrap();
    svc.port = Some(6379);
    svc.health_check = Some(fast_health());
    w.store.put_service(&svc).await.unwrap();
    let dep = w.deploy(&svc).await;
    assert_eq!(dep.state, DeploymentState::Live);
    assert_eq!(w.builder.builds(), 0);
    let spec = w.runtime.spec(&dep.instance.unwrap().id).unwrap();
    assert_eq!(spec.image, "redis:7");
    assert_eq!(spec.port, 6379);
}

#[tokio::test]
async fn cascade_deploys_dependents_after_their_dependency() {
    let w = world().await;
    let db = w.chain().await;
    w.service("other", &[]).await;
    let handle = w
        .engine
        .deploy_cascade(&db.id, Trigger::Manual)
        .await
        .unwrap();
    assert_eq!(
        handle.waves(),
        [
            vec!["db".to_string()],
            vec!["api".into()],
            vec!["web".into()]
        ]
    );
    let report = handle.wait().await.unwrap();
    assert!(report.all_live(), "{report:?}");
    assert_eq!(report.deployments.len(), 3, "'other' is not a dependent");
    let (db_d, api_d, web_d) = (
        &report.deployments["db"],
        &report.deployments["api"],
        &report.deployments["web"],
    );
    assert!(
        db_d.updated_at <= api_d.created_at,
        "api started before db was live"
    );
    assert!(
        api_d.updated_at <= web_d.created_at,
        "web started before api was live"
    );
    assert_eq!(
        api_d.trigger,
        Trigger::Cascade {
            from: db.id.clone()
        }
    );
}

#[tokio::test]
async fn a_failed_dependency_skips_its_dependents_with_the_reason() {
    let w = world().await;
    let db = w.chain().await;
    w.service("worker", &["db"]).await;
    w.faults.update("api", |f| f.fail_build = true);
    let project = w
        .engine
        .deploy_project(&w.project.id, None, Trigger::Manual)
        .await
        .unwrap();
    assert_eq!(project.waves()[0], ["db"]);
    let report = project.wait().await.unwrap();
    assert_eq!(report.deployments["db"].state, DeploymentState::Live);
    assert_eq!(report.deployments["worker"].state, DeploymentState::Live);
    assert!(matches!(
        report.deployments["api"].state,
        DeploymentState::Failed {
            step: Step::Building,
            ..
        }
    ));
    match &report.deployments["web"].state {
        DeploymentState::Skipped { reason } => {
            assert!(reason.contains("dependency api"), "{reason}")
        }
        other => panic!("web should be skipped, is {other}"),
    }
    // The skip is recorded, not just reported.
    let web = &report.deployments["web"];
    assert_eq!(w.store.deployment(&web.id).await.unwrap().state, web.state);
    let _ = db;
}

#[tokio::test]
async fn bad_input_gives_clear_errors_and_records_nothing() {
    let w = world().await;
    let err = w
        .engine
        .deploy(&ServiceId("svc_nope".into()), Trigger::Manual)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    let err = Engine::builder().build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("no store"), "{err}");
    let err = memory_engine()
        .max_concurrent_builds(0)
        .build()
        .unwrap_err();
    assert!(err.message().contains("max_concurrent_builds"), "{err}");
    let err = memory_engine()
        .base_domain("bad domain")
        .build()
        .unwrap_err();
    assert!(err.message().contains("base_domain"), "{err}");

    // A cycle is refused before anything is recorded.
    w.service("a", &["b"]).await;
    w.service("b", &["a"]).await;
    let err = w
        .engine
        .deploy_project(&w.project.id, None, Trigger::Manual)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(w.deployments(false).await.is_empty());
}

#[tokio::test]
async fn recover_fails_interrupted_work_and_removes_orphans_but_keeps_live() {
    let (w, web, live) = live_web().await;
    let live_inst = live.instance.clone().unwrap();

    // A deployment caught mid-way in HealthChecking with its instance running.
    let (interrupted, stray, mut spec) = w
        .mid_way(
            &live,
            DeploymentId("dep_interrupted".into()),
            &[
                DeployEvent::Begin,
                DeployEvent::Fetched,
                DeployEvent::Built,
                DeployEvent::Started,
            ],
        )
        .await;
    // It was itself a retry (of a deployment a restart interrupted before): it is
    // not asked for again.
    let mut marked = w.store.deployment(&interrupted.id).await.unwrap();
    marked.retry_of = Some(DeploymentId("dep_earlier".into()));
    w.store.update_deployment(&marked).await.unwrap();
    // An orphan with no deployment at all.
    spec.labels
        .insert(label::DEPLOYMENT.into(), "dep_ghost".into());
    let orphan = w.runtime.start(&spec).await.unwrap();
    // An instance of a project this store does not know: not ours to touch.
    let mut foreign = spec.clone();
    foreign
        .labels
        .insert(label::PROJECT.into(), "prj_elsewhere".into());
    let foreign = w.runtime.start(&foreign).await.unwrap();
    // The router lost the live route (e.g. a proxy restart).
    w.router.remove(&RouteId(web.id.0.clone())).await.unwrap();

    let report = w.engine.recover().await.unwrap();
    assert_eq!(report.failed, vec![interrupted.id.clone()]);
    assert!(report.retried.is_empty(), "{report:?}");
    let mut removed = report.removed_instances.clone();
    removed.sort();
    let mut want = [stray.id.clone(), orphan.id.clone()];
    want.sort();
    assert_eq!(
        removed, want,
        "exactly the interrupted and the orphaned instance go"
    );
    let d = w.store.deployment(&interrupted.id).await.unwrap();
    let (step, reason) = failure(&d);
    assert_eq!(step, Step::HealthChecking);
    assert!(reason.contains("interrupted"), "{reason}");
    let ids = w.instance_ids();
    let mut expect = vec![live_inst.id.clone(), foreign.id.clone()];
    expect.sort();
    assert_eq!(
        ids, expect,
        "live or foreign instance touched, or orphan left"
    );
    assert_eq!(
        w.store.deployment(&live.id).await.unwrap().state,
        DeploymentState::Live
    );
    assert_eq!(
        w.served_by(&web),
        Some(live_inst.endpoint),
        "live route not re-applied"
    );
    // No deployment left in a non-terminal state.
    assert!(w.deployments(true).await.is_empty());
}

/// A deployment a restart interrupted is failed and, when it was the newest request
/// of its service, asked for again once: same trigger and source, marked as its
/// retry; the retry goes live and retires the release that was live.
#[tokio::test]
async fn recover_retries_the_newest_interrupted_deployment_once() {
    let (w, web, live) = live_web().await;
    let (interrupted, stray, _) = w
        .mid_way(
            &live,
            DeploymentId::random(),
            &[DeployEvent::Begin, DeployEvent::Fetched],
        )
        .await;
    let report = w.engine.recover().await.unwrap();
    assert_eq!(report.failed, std::slice::from_ref(&interrupted.id));
    assert_eq!(report.retried.len(), 1, "{report:?}");
    assert!(report.removed_instances.contains(&stray.id));
    w.engine.wait_idle().await;
    let retry = w.store.deployment(&report.retried[0]).await.unwrap();
    assert_eq!(retry.retry_of, Some(interrupted.id.clone()));
    assert_eq!(retry.trigger, interrupted.trigger);
    assert_eq!(retry.state, DeploymentState::Live);
    assert_eq!(
        w.store.deployment(&live.id).await.unwrap().state,
        DeploymentState::Superseded
    );
    let failed = w.store.deployment(&interrupted.id).await.unwrap();
    let (step, reason) = failure(&failed);
    assert_eq!(step, Step::Building);
    assert!(reason.contains("interrupted"), "{reason}");
    assert_eq!(w.served_by(&web), Some(retry.instance.unwrap().endpoint));
}

/// An interrupted deployment that a newer request of its service followed is only
/// failed: the newer request is what runs.
#[tokio::test]
async fn recover_does_not_retry_an_interrupted_deployment_a_newer_request_followed() {
    let (w, web, live) = live_web().await;
    let (interrupted, _, _) = w
        .mid_way(
            &live,
            DeploymentId::random(),
            &[DeployEvent::Begin, DeployEvent::Fetched],
        )
        .await;
    // Newer: a request recorded after it, never started.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut newer = w.store.deployment(&interrupted.id).await.unwrap();
    newer.id = DeploymentId::random();
    newer.version = 0;
    newer.state = DeploymentState::Queued;
    newer.instance = None;
    newer.created_at = Timestamp::now();
    newer.updated_at = newer.created_at;
    w.store.insert_deployment(&newer).await.unwrap();
    let report = w.engine.recover().await.unwrap();
    assert_eq!(report.failed, std::slice::from_ref(&interrupted.id));
    assert!(report.retried.is_empty(), "{report:?}");
    assert!(report.resumed.contains(&newer.id));
    w.engine.wait_idle().await;
    assert_eq!(
        w.store.deployment(&newer.id).await.unwrap().state,
        DeploymentState::Live
    );
    assert!(w.served_by(&web).is_some());
}

#[tokio::test]
async fn recover_restarts_a_live_instance_removed_behind_its_back() {
    let (w, web, live) = live_web().await;
    let old = live.instance.clone().unwrap();
    assert!(w.runtime.remove_behind_back(&old.id));
    let report = w.engine.recover().await.unwrap();
    assert_eq!(report.restarted, vec![web.id.clone()]);
    let now = w.store.deployment(&live.id).await.unwrap();
    assert_eq!(now.state, DeploymentState::Live);
    let fresh = now.instance.unwrap();
    assert_ne!(fresh.id, old.id);
    assert_eq!(w.served_by(&web), Some(fresh.endpoint));
    assert_eq!(
        w.runtime.spec(&fresh.id).unwrap().image,
        live.artifact.unwrap().image
    );
}

#[tokio::test]
async fn recover_resumes_queued_and_routing_deployments() {
    let w = world().await;
    let web = w.service("web", &[]).await;
    let api = w.service("api", &[]).await;
    let v1 = w.deploy(&web).await;

    // web: a deployment whose instance passed its health check; the crash came
    // before the route switched.
    let (routing, inst, _) = w
        .mid_way(
            &v1,
            DeploymentId::random(),
            &[
                DeployEvent::Begin,
                DeployEvent::Fetched,
                DeployEvent::Built,
                DeployEvent::Started,
                DeployEvent::Healthy,
            ],
        )
        .await;
    // api: a request recorded but never started.
    let queued = Deployment::queued(&api, Trigger::Manual);
    w.store.insert_deployment(&queued).await.unwrap();

    let report = w.engine.recover().await.unwrap();
    assert!(
        report.resumed.contains(&routing.id) && report.resumed.contains(&queued.id),
        "{report:?}"
    );
    assert_eq!(
        w.store.deployment(&routing.id).await.unwrap().state,
        DeploymentState::Live
    );
    assert_eq!(
        w.store.deployment(&v1.id).await.unwrap().state,
        DeploymentState::Superseded
    );
    assert_eq!(w.served_by(&web), Some(inst.endpoint));
    // The queued one runs in the background.
    for _ in 0..200 {
        if w.store.deployment(&queued.id).await.unwrap().state == DeploymentState::Live {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        w.store.deployment(&queued.id).await.unwrap().state,
        DeploymentState::Live
    );
    assert!(w.served_by(&api).is_some());
}

#[tokio::test]
async fn subscribers_see_every_deployment() {
    let w = world().await;
    let svc = w.service("web", &[]).await;
    let mut rx = w.engine.subscribe();
    let dep = w.deploy(&svc).await;
    let mut seen = Vec::new();
    while let Ok(e) = rx.try_recv() {
        seen.push(e);
    }
    assert!(seen.iter().all(|e| e.deployment == dep.id));
    assert_eq!(states(&seen).last().map(String::as_str), Some("live"));
}

#[tokio::test]
async fn a_deployment_routes_the_hosts_of_when_it_goes_live_and_refresh_route_applies_changes() {
    let w = world().await;
    let mut svc = w.service("web", &[]).await;
    svc.domains = vec!["old.example.com".into()];
    w.store.put_service(&svc).await.unwrap();
    let first = w.deploy(&svc).await;
    assert_eq!(first.state, DeploymentState::Live);
    assert!(w.router.resolve("old.example.com", "/").is_some());

    // The domains change while the next deployment builds: it routes the new ones.
    w.faults
        .update("web", |f| f.build_delay = Some(Duration::from_millis(300)));
    w.change_source(&svc, "print('web v2')\n");
    let h = w.engine.deploy(&svc.id, Trigger::Manual).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    svc.domains = vec!["new.example.com".into()];
    w.store.put_service(&svc).await.unwrap();
    let second = h.wait().await.unwrap();
    assert_eq!(second.state, DeploymentState::Live);
    let live = second.instance.unwrap().endpoint;
    assert_eq!(w.router.resolve("new.example.com", "/"), Some(live.clone()));
    assert_eq!(w.router.resolve("old.example.com", "/"), None);

    // A change without a deployment takes effect through refresh_route.
    svc.domains.push("more.example.com".into());
    w.store.put_service(&svc).await.unwrap();
    assert!(w.engine.refresh_route(&svc.id).await.unwrap());
    assert_eq!(w.router.resolve("more.example.com", "/"), Some(live));
    assert_eq!(w.served_by(&svc), w.router.resolve("new.example.com", "/"));

    // Nothing live: nothing to refresh.
    let idle = w.service("idle", &[]).await;
    assert!(!w.engine.refresh_route(&idle.id).await.unwrap());
}

/// One service whose secret no longer opens (a wrong key, a tampered value) must not
/// stop the server's start, nor lose its running app: recovery leaves its instance and
/// route alone and reports them, and recovers the others.
#[tokio::test]
async fn recover_leaves_an_unreadable_service_running_and_recovers_the_rest() {
    use wharf_core::store::SealedStore;
    let sealed = std::sync::OnceLock::new();
    let w = world_with(|b| {
        // The engine reads through a sealing store; the test writes the inner one.
        let inner = Arc::new(MemoryStore::new());
        let s = Arc::new(SealedStore::new(inner.clone(), &[9u8; 32]));
        sealed.set(inner).unwrap();
        b.store(s)
    })
    .await;
    let inner = sealed.get().unwrap().clone();
    inner.put_project(&w.project).await.unwrap();
    let web = w.service("web", &[]).await;
    let api = w.service("api", &[]).await;
    inner.put_service(&web).await.unwrap();
    inner.put_service(&api).await.unwrap();
    let web_live = w.deploy(&web).await;
    w.deploy(&api).await;
    let api_inst = w.served_by(&api).unwrap();

    // web's stored secret stops opening; api's live instance vanishes.
    let mut broken = inner.service(&web.id).await.unwrap();
    broken.env.insert(
        "TOKEN".into(),
        EnvValue::Secret(Secret::new("wharf-sealed:v1:00ff")),
    );
    inner.put_service(&broken).await.unwrap();
    let api_dep = inner
        .deployments(&DeploymentFilter {
            service: Some(api.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .remove(0);
    assert!(w.runtime.remove_behind_back(&api_dep.instance.unwrap().id));

    let report = w.engine.recover().await.unwrap();
    let web_inst = web_live.instance.unwrap();
    assert!(
        report.left_alone.contains(&web_inst.id.to_string()),
        "{report:?}"
    );
    assert!(
        !report.removed_instances.contains(&web_inst.id),
        "{report:?}"
    );
    assert!(
        w.runtime.spec(&web_inst.id).is_some(),
        "web's app was stopped"
    );
    assert_eq!(
        w.served_by(&web),
        Some(web_inst.endpoint),
        "web's route was removed"
    );
    assert_eq!(report.restarted, vec![api.id.clone()], "{report:?}");
    assert_ne!(w.served_by(&api), Some(api_inst));
}

/// `h`'s end, or a panic if it does not come within a minute (what the tests below
/// wait for would otherwise wait behind an hour-long build).
async fn ends(h: DeploymentHandle) -> Deployment {
    tokio::time::timeout(Duration::from_secs(60), h.wait())
        .await
        .expect("the deployment waited behind a hung build")
        .unwrap()
}

/// A build that never ends (`RUN sleep infinity`), and does not stop when told to.
fn stuck(w: &World, name: &str) {
    w.faults.update(name, |f| {
        f.build_delay = Some(Duration::from_secs(3600));
        f.build_ignores_cancel = true;
    });
}

#[tokio::test]
async fn a_build_past_the_timeout_fails_and_frees_its_slot() {
    let w = world_with(|b| {
        b.max_concurrent_builds(1)
            .build_timeout(Duration::from_millis(300))
    })
    .await;
    let hung = w.service("hung", &[]).await;
    let next = w.service("next", &[]).await;
    stuck(&w, "hung");
    let h = w.engine.deploy(&hung.id, Trigger::Manual).await.unwrap();
    let n = w.engine.deploy(&next.id, Trigger::Manual).await.unwrap();
    let d = ends(h).await;
    assert!(matches!(d.state, DeploymentState::Failed { .. }), "{d:?}");
    let events = w.store.events(&d.id, 0).await.unwrap();
    assert!(
        format!("{events:?}").contains("build_timeout"),
        "the reason does not say why"
    );
    assert_eq!(ends(n).await.state, DeploymentState::Live);
}

#[tokio::test]
async fn a_cancelled_build_frees_its_slot_at_once() {
    let w = world_with(|b| b.max_concurrent_builds(1)).await;
    let hung = w.service("hung", &[]).await;
    let next = w.service("next", &[]).await;
    stuck(&w, "hung");
    let mut h = w.engine.deploy(&hung.id, Trigger::Manual).await.unwrap();
    let mut events = h.events();
    wharf_testkit::reach(&mut events, &DeploymentState::Building).await;
    let n = w.engine.deploy(&next.id, Trigger::Manual).await.unwrap();
    assert!(w.engine.cancel(h.id()));
    assert_eq!(ends(h).await.state, DeploymentState::Cancelled);
    // The builder is still "building" (it ignores the cancel); the slot is free anyway.
    assert_eq!(ends(n).await.state, DeploymentState::Live);
}

#[tokio::test]
async fn one_projects_hung_builds_leave_a_slot_to_other_projects() {
    let w = world_with(|b| b.max_concurrent_builds(2)).await;
    let (a, b) = (w.service("a", &[]).await, w.service("b", &[]).await);
    stuck(&w, "a");
    stuck(&w, "b");
    let mut ha = w.engine.deploy(&a.id, Trigger::Manual).await.unwrap();
    let mut hb = w.engine.deploy(&b.id, Trigger::Manual).await.unwrap();
    // One of them builds; the other waits for the project's share, not for a slot.
    let mut first = ha.events();
    wharf_testkit::reach(&mut first, &DeploymentState::Building).await;
    let mut second = hb.events();
    wharf_testkit::reach(&mut second, &DeploymentState::Building).await;
    // Time for both to take a slot, if they could (without the share, they would and
    // the other project's build below would wait an hour).
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Another team's project, with a service of its own.
    let other = Project::new("other").unwrap();
    w.store.put_project(&other).await.unwrap();
    let mut svc = w.service("c", &[]).await;
    w.store.delete_service(&svc.id).await.unwrap();
    svc.id = ServiceId::random();
    svc.project = other.id.clone();
    w.store.put_service(&svc).await.unwrap();
    let c = w.engine.deploy(&svc.id, Trigger::Manual).await.unwrap();
    assert_eq!(ends(c).await.state, DeploymentState::Live);
}

/// A build that prints without end fills neither the store nor the event stream:
/// past `max_log_lines`, one note, then nothing more of it; the deployment goes on.
#[tokio::test]
async fn build_output_is_capped_in_the_store() {
    let w = world_with(|b| b.max_log_lines(50)).await;
    let svc = w.service("chatty", &[]).await;
    w.faults.update("chatty", |f| f.build_output_lines = 5_000);
    let d = w.deploy(&svc).await;
    assert_eq!(d.state, DeploymentState::Live);
    let events = w.store.events(&d.id, 0).await.unwrap();
    let output = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Log(l) if l.stream != LogStream::System))
        .count();
    assert_eq!(output, 50, "build output kept past the cap");
    let notes: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Log(l) if l.text.contains("max_log_lines") => Some(l.text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
}

/// Every stream counts against the byte budget, the system lines a git server can
/// fill too: past it, one note and nothing more.
#[tokio::test]
async fn log_bytes_are_capped_whatever_the_stream() {
    let w = world_with(|b| b.max_log_lines(1_000_000).max_log_bytes(2_000)).await;
    let svc = w.service("chatty", &[]).await;
    w.faults.update("chatty", |f| f.build_output_lines = 5_000);
    let d = w.deploy(&svc).await;
    assert_eq!(d.state, DeploymentState::Live);
    let events = w.store.events(&d.id, 0).await.unwrap();
    let bytes: usize = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Log(l) => Some(l.text.len()),
            _ => None,
        })
        .sum();
    assert!(bytes < 2_000 + 200, "{bytes} bytes kept");
    assert!(events
        .iter()
        .any(|e| matches!(&e.kind, EventKind::Log(l) if l.text.contains("max_log_bytes"))));
}

/// The notes (Wharf's own log lines) of a deployment's events.
async fn notes(w: &World, dep: &Deployment) -> Vec<String> {
    w.store
        .events(&dep.id, 0)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Log(l) if l.stream == LogStream::System => Some(l.text),
            _ => None,
        })
        .collect()
}

/// A live service `web` that mounts volume `data`.
async fn live_web_with_volume() -> (World, Service, Deployment) {
    let w = world().await;
    let mut svc = w.service("web", &[]).await;
    svc.volumes = vec![VolumeMount::new("data", "/data")];
    w.store.put_service(&svc).await.unwrap();
    let live = w.deploy(&svc).await;
    assert_eq!(live.state, DeploymentState::Live);
    (w, svc, live)
}

#[tokio::test]
async fn a_service_with_volumes_redeploys_stop_then_start() {
    let (w, svc, v1) = live_web_with_volume().await;
    w.change_source(&svc, "print('v2')\n");
    let v2 = w.deploy(&svc).await;
    let rel1 = w.store.releases(&svc.id).await.unwrap().pop().unwrap();
    let back = w
        .engine
        .rollback(&rel1.id)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();

    assert_eq!(v2.state, DeploymentState::Live);
    assert_eq!(back.state, DeploymentState::Live);
    assert_eq!(
        w.runtime.most_writers(),
        1,
        "two instances mounted the volume at once"
    );
    // Each says it stopped the instance that was live before it started its own.
    for (dep, stopped) in [(&v2, &v1), (&back, &v2)] {
        let said = notes(&w, dep).await;
        assert!(
            said.iter()
                .any(|n| n.contains("stop-then-start") && n.contains(stopped.id.as_str())),
            "{said:?}"
        );
    }
    assert_eq!(w.instance_ids(), vec![back.instance.clone().unwrap().id]);
    assert_eq!(w.served_by(&svc), Some(back.instance.unwrap().endpoint));
}

#[tokio::test]
async fn a_failed_stop_then_start_deploy_starts_the_previous_release_again() {
    let (w, svc, v1) = live_web_with_volume().await;
    w.faults.update("web", |f| f.fail_health = true);
    let v2 = w.deploy(&svc).await;
    w.faults.update("web", |f| f.fail_health = false);

    assert_eq!(failure(&v2).0, Step::HealthChecking);
    let v1_now = w.store.deployment(&v1.id).await.unwrap();
    assert_eq!(v1_now.state, DeploymentState::Live);
    let back = v1_now.instance.clone().unwrap();
    assert_ne!(
        back.id,
        v1.instance.clone().unwrap().id,
        "the old instance was stopped, so a new one serves"
    );
    assert_eq!(
        w.instance_ids(),
        vec![back.id.clone()],
        "only the previous release runs"
    );
    assert_eq!(w.served_by(&svc), Some(back.endpoint));
    assert_eq!(w.runtime.most_writers(), 1);
    let said = notes(&w, &v2).await;
    assert!(
        said.iter()
            .any(|n| n.contains("started the previous release again")),
        "{said:?}"
    );
}

#[tokio::test]
async fn a_service_without_volumes_still_starts_before_it_stops() {
    let (w, svc, _) = live_web().await;
    w.change_source(&svc, "print('v2')\n");
    let v2 = w.deploy(&svc).await;
    assert!(!notes(&w, &v2)
        .await
        .iter()
        .any(|n| n.contains("stop-then-start")));
}

// ------------------------------------------------------------ release command

/// The deployment's log lines of `stream`, in order.
async fn lines_of(w: &World, dep: &Deployment, stream: LogStream) -> Vec<String> {
    w.store
        .events(&dep.id, 0)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Log(l) if l.stream == stream => Some(l.text),
            _ => None,
        })
        .collect()
}

/// The states a deployment went through, in order.
async fn states_of(w: &World, dep: &Deployment) -> Vec<&'static str> {
    let mut out = vec!["queued"];
    for e in w.store.events(&dep.id, 0).await.unwrap() {
        if let EventKind::State { to, .. } = e.kind {
            out.push(to.name());
        }
    }
    out
}

/// Rolls back to `dep`'s release (running its release command again with
/// `run_release`) and waits for the rollback to end.
async fn roll_back_to(w: &World, dep: &Deployment, run_release: bool) -> Deployment {
    w.engine
        .rollback_with(dep.release.as_ref().unwrap(), run_release)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap()
}

async fn with_release(w: &World, name: &str, release: &str) -> Service {
    let mut svc = w.service(name, &[]).await;
    svc.processes.insert("release".into(), release.into());
    w.store.put_service(&svc).await.unwrap();
    svc
}

#[tokio::test]
async fn the_release_command_runs_once_from_the_new_artifact_before_anything_starts() {
    let w = world().await;
    let mut svc = with_release(&w, "web", "./manage.py migrate").await;
    svc.env.insert(
        "DATABASE_URL".into(),
        EnvValue::Plain("postgres://db/app".into()),
    );
    w.store.put_service(&svc).await.unwrap();
    let dep = w.deploy(&svc).await;
    assert_eq!(dep.state, DeploymentState::Live);
    assert_eq!(
        states_of(&w, &dep).await,
        [
            "queued",
            "fetching",
            "building",
            "releasing",
            "starting",
            "health_checking",
            "routing",
            "live"
        ]
    );
    let tasks = w.runtime.tasks();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let task = &tasks[0];
    let web = w.runtime.spec(&dep.instance.as_ref().unwrap().id).unwrap();
    // The new release's artifact and env, run once, unprobed, unreachable by name.
    assert_eq!(task.image, dep.artifact.as_ref().unwrap().image);
    assert_eq!(task.image, web.image);
    assert_eq!(task.env, web.env);
    assert_eq!(task.env["DATABASE_URL"], "postgres://db/app");
    assert_eq!(
        task.command.as_deref(),
        Some(&["./manage.py".to_owned(), "migrate".to_owned()][..])
    );
    assert!(task.run_once && !web.run_once);
    assert_eq!(task.network_alias, None);
    assert_eq!(task.health_check.probe, Probe::None);
    assert_eq!(task.labels[TASK_LABEL], "release");
    // Its output streamed as the deployment's events; its instance is gone.
    assert!(lines_of(&w, &dep, LogStream::Stdout)
        .await
        .contains(&"ran: ./manage.py migrate".to_owned()));
    assert_eq!(w.instance_ids(), vec![dep.instance.unwrap().id]);
}

#[tokio::test]
async fn a_failing_release_command_leaves_the_previous_release_serving() {
    let w = world().await;
    let svc = w.service("web", &[]).await;
    let first = w.deploy(&svc).await;
    let serving = w.served_by(&svc).unwrap();
    let starts = w.runtime.starts();

    let mut svc = svc;
    svc.processes
        .insert("release".into(), "migrate; exit 3".into());
    w.store.put_service(&svc).await.unwrap();
    w.change_source(&svc, "print('v2')\n");
    let dep = w.deploy(&svc).await;
    let (step, reason) = failure(&dep);
    assert_eq!(step, Step::Releasing);
    assert!(reason.contains("exited with code 3"), "{reason}");
    assert!(
        reason.contains("failed: exit 3"),
        "the output's tail: {reason}"
    );
    // Only the task started: no instance of the new release ever ran.
    assert_eq!(w.runtime.starts(), starts + 1);
    assert_eq!(w.served_by(&svc), Some(serving));
    assert_eq!(
        w.store.live_deployment(&svc.id).await.unwrap().unwrap().id,
        first.id
    );
    assert_eq!(w.instance_ids(), vec![first.instance.unwrap().id]);
}

#[tokio::test]
async fn a_release_command_past_its_timeout_is_stopped_and_fails_the_deployment() {
    let w = world_with(|b| b.release_timeout(Duration::from_millis(200))).await;
    let svc = with_release(&w, "web", "sleep 3600").await;
    let dep = w.deploy(&svc).await;
    let (step, reason) = failure(&dep);
    assert_eq!(step, Step::Releasing);
    assert!(reason.contains("ran longer than 200 ms"), "{reason}");
    assert!(w.instance_ids().is_empty(), "the task was not removed");
    assert!(w.served_by(&svc).is_none());
}

#[tokio::test]
async fn cancelling_during_the_release_command_stops_it() {
    let w = world().await;
    let svc = with_release(&w, "web", "sleep 3600").await;
    let mut h = w.engine.deploy(&svc.id, Trigger::Manual).await.unwrap();
    let mut events = h.events();
    wharf_testkit::reach(&mut events, &DeploymentState::Releasing).await;
    assert_eq!(w.instance_ids().len(), 1, "the task runs");
    h.cancel();
    let dep = h.wait().await.unwrap();
    assert_eq!(dep.state, DeploymentState::Cancelled);
    assert!(w.instance_ids().is_empty(), "the task was not removed");
}

#[tokio::test]
async fn a_rollback_does_not_run_the_release_command_again() {
    let w = world().await;
    let svc = with_release(&w, "web", "./migrate").await;
    let first = w.deploy(&svc).await;
    w.change_source(&svc, "print('v2')\n");
    let second = w.deploy(&svc).await;
    assert_eq!(second.state, DeploymentState::Live);
    assert_eq!(w.runtime.tasks().len(), 2);
    let back = roll_back_to(&w, &first, false).await;
    assert_eq!(back.state, DeploymentState::Live);
    assert_eq!(
        w.runtime.tasks().len(),
        2,
        "the rollback ran the release again"
    );
    assert!(!states_of(&w, &back).await.contains(&"releasing"));
}

#[tokio::test]
async fn run_command_runs_in_a_fresh_instance_of_the_live_release() {
    let w = world().await;
    let svc = w.service("web", &[]).await;
    let opts = || RunOptions::new(Duration::from_secs(5));
    let err = w
        .engine
        .run_command(&svc.id, vec!["true".into()], opts())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("no live release"), "{err}");

    let dep = w.deploy(&svc).await;
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = {
        let lines = lines.clone();
        LogSink::from_fn(move |l| lines.lock().unwrap().push(l.text))
    };
    let out = w
        .engine
        .run_command(
            &svc.id,
            vec!["sh".into(), "-c".into(), "fix-data; exit 7".into()],
            opts().logs(sink),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(7));
    assert!(!out.success() && !out.timed_out);
    assert_eq!(out.reason, "exited with code 7");
    assert!(lines
        .lock()
        .unwrap()
        .contains(&"ran: sh -c fix-data; exit 7".to_owned()));
    let task = w.runtime.tasks().pop().unwrap();
    assert_eq!(task.labels[TASK_LABEL], "run");
    assert_eq!(task.image, dep.artifact.unwrap().image);
    // Removed afterwards; the live instance untouched.
    assert_eq!(w.instance_ids(), vec![dep.instance.unwrap().id]);

    let ok = w
        .engine
        .run_command(&svc.id, vec!["true".into()], opts())
        .await
        .unwrap();
    assert!(ok.success(), "{ok:?}");
    for bad in [vec![], vec![String::new()], vec!["a\0b".to_owned()]] {
        let err = w
            .engine
            .run_command(&svc.id, bad.clone(), opts())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}: {err}");
    }
}

#[tokio::test]
async fn the_procfile_declares_the_release_command() {
    let w = world().await;
    let svc = w.service("web", &[]).await;
    write_procfile(&svc, "# processes\nweb: python3 app.py\nrelease: python3 migrate.py --fast\nworker: python3 worker.py\n");
    let dep = w.deploy(&svc).await;
    assert_eq!(dep.state, DeploymentState::Live);
    let plan = dep.plan.as_ref().unwrap();
    assert_eq!(plan.start, ["python3", "app.py"]);
    assert_eq!(plan.processes["worker"], ["python3", "worker.py"]);
    let tasks = w.runtime.tasks();
    assert_eq!(
        tasks[0].command.as_deref().unwrap(),
        ["python3", "migrate.py", "--fast"]
    );

    // The service's own release process takes precedence over the Procfile's.
    let mut svc = svc;
    svc.processes
        .insert("release".into(), "python3 migrate.py --slow".into());
    w.store.put_service(&svc).await.unwrap();
    w.deploy(&svc).await;
    assert_eq!(
        w.runtime.tasks()[1].command.as_deref().unwrap(),
        ["python3", "migrate.py", "--slow"]
    );
}

// ------------------------------------------------------------ processes and replicas

/// The upstreams of `svc`'s route, sorted.
async fn upstreams(w: &World, svc: &Service) -> Vec<Endpoint> {
    let routes = w.router.list().await.unwrap();
    let route = routes
        .iter()
        .find(|r| r.id.0 == svc.id.0)
        .expect("the service is routed");
    let mut out: Vec<Endpoint> = route.upstreams.iter().map(|u| u.endpoint.clone()).collect();
    out.sort_by_key(|e| e.port);
    out
}

fn sorted(mut e: Vec<Endpoint>) -> Vec<Endpoint> {
    e.sort_by_key(|e| e.port);
    e
}

/// Writes `text` as the `Procfile` of `svc`'s source folder.
fn write_procfile(svc: &Service, text: &str) {
    let SourceSpec::Dir { path } = &svc.source else {
        panic!("{} has no folder source", svc.name)
    };
    std::fs::write(path.join("Procfile"), text).unwrap();
}

async fn with_worker(w: &World, name: &str) -> Service {
    let svc = w.service(name, &[]).await;
    write_procfile(
        &svc,
        "web: python3 app.py\nworker: python3 worker.py --queue mail\n",
    );
    svc
}

#[tokio::test]
async fn every_process_type_runs_from_the_release_and_only_web_is_routed() {
    let w = world().await;
    let mut svc = with_worker(&w, "web").await;
    svc.replicas.insert("web".into(), 2);
    w.store.put_service(&svc).await.unwrap();
    let dep = w.deploy(&svc).await;
    assert_eq!(dep.state, DeploymentState::Live);
    let kinds: Vec<&str> = dep.instances().map(|(p, _)| p).collect();
    assert_eq!(kinds, ["web", "web", "worker"]);
    assert_eq!(w.instance_ids().len(), 3);
    // Only the web replicas take traffic, evenly.
    assert_eq!(upstreams(&w, &svc).await, sorted(dep.web_endpoints()));
    assert_eq!(dep.web_endpoints().len(), 2);
    let (_, worker) = dep.instances().find(|(p, _)| *p == "worker").unwrap();
    let worker = w.runtime.spec(&worker.id).unwrap();
    let web = w.runtime.spec(&dep.instance.as_ref().unwrap().id).unwrap();
    assert_eq!(worker.image, web.image);
    assert_eq!(worker.env, web.env);
    assert_eq!(
        worker.command.as_deref().unwrap(),
        ["python3", "worker.py", "--queue", "mail"]
    );
    assert_eq!(worker.network_alias, None, "a worker takes no peer traffic");
    assert_eq!(web.network_alias.as_deref(), Some("web"));
    assert_eq!(worker.health_check.probe, Probe::None);
    assert_eq!(worker.labels[label::PROCESS], "worker");
    assert!(!worker.run_once);

    // A redeploy replaces every process type; the old ones are stopped.
    w.change_source(&svc, "print('v2')\n");
    let next = w.deploy(&svc).await;
    assert_eq!(next.state, DeploymentState::Live);
    let mut now = w.instance_ids();
    let mut want: Vec<InstanceId> = next.instances().map(|(_, i)| i.id.clone()).collect();
    now.sort();
    want.sort();
    assert_eq!(now, want);
    assert_eq!(upstreams(&w, &svc).await, sorted(next.web_endpoints()));

    // A rollback restores them all.
    let back = roll_back_to(&w, &dep, false).await;
    let kinds: Vec<&str> = back.instances().map(|(p, _)| p).collect();
    assert_eq!(kinds, ["web", "web", "worker"]);
    assert_eq!(w.instance_ids().len(), 3);
}

#[tokio::test]
async fn a_process_that_dies_at_start_fails_the_deployment_and_the_old_release_serves() {
    let w = world().await;
    let svc = w.service("web", &[]).await;
    let first = w.deploy(&svc).await;
    let mut svc = svc;
    svc.processes
        .insert("worker".into(), "python3 worker.py".into());
    w.store.put_service(&svc).await.unwrap();
    // Every instance of the service exits at start: the worker's failure is named.
    w.faults.update("web", |f| f.exit_at_start = true);
    let dep = w.deploy(&svc).await;
    let (step, reason) = failure(&dep);
    assert_eq!(step, Step::HealthChecking);
    assert!(reason.contains("exited"), "{reason}");
    assert_eq!(w.instance_ids(), vec![first.instance.clone().unwrap().id]);
    assert_eq!(upstreams(&w, &svc).await, first.web_endpoints());
}

#[tokio::test]
async fn scale_starts_and_stops_instances_of_the_live_release_in_place() {
    let w = world().await;
    let mut svc = with_worker(&w, "web").await;
    let dep = w.deploy(&svc).await;
    assert_eq!(w.instance_ids().len(), 2);
    let releases = w.store.releases(&svc.id).await.unwrap().len();

    svc.replicas = [("web".to_owned(), 3), ("worker".to_owned(), 0)].into();
    w.store.put_service(&svc).await.unwrap();
    let scaled = w.engine.scale(&svc.id).await.unwrap().unwrap();
    assert_eq!(scaled.id, dep.id, "scaling is not a new deployment");
    let kinds: Vec<&str> = scaled.instances().map(|(p, _)| p).collect();
    assert_eq!(kinds, ["web", "web", "web"]);
    // The first web instance stays; the route takes the new replicas.
    assert_eq!(scaled.instance, dep.instance);
    assert_eq!(upstreams(&w, &svc).await, sorted(scaled.web_endpoints()));
    assert_eq!(w.instance_ids().len(), 3, "the worker was not stopped");
    assert_eq!(w.store.releases(&svc.id).await.unwrap().len(), releases);
    // Recorded: what the store says is what runs.
    let stored = w.store.deployment(&dep.id).await.unwrap();
    assert_eq!(stored.more_instances, scaled.more_instances);
    let events = lines_of(&w, &dep, LogStream::System).await;
    assert!(
        events
            .iter()
            .any(|l| l.contains("scaled to web=3 worker=0 (2 started, 1 stopped)")),
        "{events:?}"
    );

    // Down again: the extra replicas leave the route, then stop.
    svc.replicas = [("web".to_owned(), 1)].into();
    w.store.put_service(&svc).await.unwrap();
    let scaled = w.engine.scale(&svc.id).await.unwrap().unwrap();
    let kinds: Vec<&str> = scaled.instances().map(|(p, _)| p).collect();
    assert_eq!(kinds, ["web", "worker"]);
    assert_eq!(
        upstreams(&w, &svc).await,
        vec![dep.instance.unwrap().endpoint]
    );
    assert_eq!(w.instance_ids().len(), 2);

    // Nothing live: nothing to scale.
    let other = w.service("api", &[]).await;
    assert_eq!(w.engine.scale(&other.id).await.unwrap(), None);
    // Refused counts.
    for bad in [("web", 0), ("web", MAX_REPLICAS + 1), ("release", 2)] {
        let mut svc = svc.clone();
        svc.replicas = [(bad.0.to_owned(), bad.1)].into();
        assert_eq!(
            svc.validate().unwrap_err().kind(),
            ErrorKind::InvalidInput,
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn a_replica_that_fails_its_health_check_when_scaling_changes_nothing() {
    let w = world().await;
    let mut svc = w.service("web", &[]).await;
    let dep = w.deploy(&svc).await;
    svc.replicas.insert("web".into(), 3);
    w.store.put_service(&svc).await.unwrap();
    w.faults.update("web", |f| f.fail_health = true);
    let err = w.engine.scale(&svc.id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HealthCheckFailed, "{err}");
    assert_eq!(w.instance_ids(), vec![dep.instance.clone().unwrap().id]);
    assert_eq!(upstreams(&w, &svc).await, dep.web_endpoints());
    assert_eq!(
        w.store.deployment(&dep.id).await.unwrap().more_instances,
        vec![]
    );
}

#[tokio::test]
async fn recovery_keeps_every_replica_of_the_live_release() {
    let w = world().await;
    let mut svc = with_worker(&w, "web").await;
    svc.replicas.insert("web".into(), 2);
    w.store.put_service(&svc).await.unwrap();
    let dep = w.deploy(&svc).await;
    let before = w.instance_ids();
    assert_eq!(before.len(), 3);
    // All alive: recovery neither restarts nor removes any of them.
    let report = w.engine.recover().await.unwrap();
    assert!(report.removed_instances.is_empty(), "{report:?}");
    assert!(report.restarted.is_empty(), "{report:?}");
    assert_eq!(w.instance_ids(), before);
    // One gone: the release's instances start again, and the route follows.
    let (_, worker) = dep.instances().find(|(p, _)| *p == "worker").unwrap();
    assert!(w.runtime.remove_behind_back(&worker.id));
    let report = w.engine.recover().await.unwrap();
    assert_eq!(report.restarted, vec![svc.id.clone()]);
    let live = w.store.live_deployment(&svc.id).await.unwrap().unwrap();
    let kinds: Vec<&str> = live.instances().map(|(p, _)| p).collect();
    assert_eq!(kinds, ["web", "web", "worker"]);
    let mut want: Vec<InstanceId> = live.instances().map(|(_, i)| i.id.clone()).collect();
    want.sort();
    assert_eq!(w.instance_ids(), want);
    assert_eq!(upstreams(&w, &svc).await, sorted(live.web_endpoints()));
}

#[tokio::test]
async fn a_rollback_asked_to_runs_the_release_command_again() {
    let w = world().await;
    let svc = with_release(&w, "web", "./migrate").await;
    let first = w.deploy(&svc).await;
    w.change_source(&svc, "print('v2')\n");
    w.deploy(&svc).await;
    let back = roll_back_to(&w, &first, true).await;
    assert_eq!(back.state, DeploymentState::Live);
    assert!(states_of(&w, &back).await.contains(&"releasing"));
    let tasks = w.runtime.tasks();
    assert_eq!(tasks.len(), 3);
    // From the release rolled back to.
    assert_eq!(tasks[2].image, first.artifact.unwrap().image);
}

// ------------------------------------------------------------ process checks

/// A health check for process type `worker` that probes `probe`, quickly.
fn worker_check(probe: Probe) -> HealthCheck {
    HealthCheck {
        probe,
        ..fast_health()
    }
}

/// The spec `dep`'s first instance of `process` was started with.
fn spec_of(w: &World, dep: &Deployment, process: &str) -> InstanceSpec {
    let (_, inst) = dep
        .instances()
        .find(|(p, _)| *p == process)
        .unwrap_or_else(|| panic!("{} runs no {process}", dep.id));
    w.runtime.spec(&inst.id).unwrap()
}

#[tokio::test]
async fn a_worker_whose_declared_check_never_passes_fails_the_deployment_and_the_old_release_serves(
) {
    let w = world().await;
    let mut svc = with_worker(&w, "web").await;
    let first = w.deploy(&svc).await;
    assert_eq!(first.state, DeploymentState::Live);
    let mut serving: Vec<InstanceId> = first.instances().map(|(_, i)| i.id.clone()).collect();
    serving.sort();

    // The worker declares an HTTP check that its app never answers; web is fine.
    svc.process_checks.insert(
        "worker".into(),
        worker_check(Probe::Http {
            path: "/ready".into(),
        }),
    );
    w.store.put_service(&svc).await.unwrap();
    w.faults.update("web", |f| {
        f.failing_probes.insert("worker".into());
    });
    w.change_source(&svc, "print('v2')\n");
    let dep = w.deploy(&svc).await;
    let (step, reason) = failure(&dep);
    assert_eq!(step, Step::HealthChecking);
    assert!(reason.contains("worker instance"), "{reason}");
    assert!(reason.contains("GET /ready answered 500"), "{reason}");
    // The old release serves on, untouched: its instances, its route, live.
    assert_eq!(w.instance_ids(), serving);
    assert_eq!(upstreams(&w, &svc).await, first.web_endpoints());
    let live = w.store.live_deployment(&svc.id).await.unwrap().unwrap();
    assert_eq!(live.id, first.id);

    // Scaling the live release starts workers with the check: the new one fails it
    // and nothing changes.
    svc.replicas.insert("worker".into(), 2);
    w.store.put_service(&svc).await.unwrap();
    let err = w.engine.scale(&svc.id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HealthCheckFailed, "{err}");
    assert!(err.message().contains("worker instance"), "{err}");
    assert_eq!(w.instance_ids(), serving);
}

#[tokio::test]
async fn a_worker_with_a_passing_declared_check_deploys_probed_by_it() {
    let w = world().await;
    let mut svc = with_worker(&w, "web").await;
    let check = worker_check(Probe::Tcp);
    svc.process_checks.insert("worker".into(), check.clone());
    w.store.put_service(&svc).await.unwrap();
    let dep = w.deploy(&svc).await;
    assert_eq!(dep.state, DeploymentState::Live);
    // The worker is probed by its own check, web by the service's.
    assert_eq!(spec_of(&w, &dep, "worker").health_check, check);
    assert_eq!(spec_of(&w, &dep, "web").health_check, fast_health());
    let notes = lines_of(&w, &dep, LogStream::System).await;
    assert!(
        notes.iter().any(|l| l == "worker health check passed"),
        "{notes:?}"
    );
    assert_eq!(upstreams(&w, &svc).await, dep.web_endpoints());

    // A redeploy keeps probing it.
    w.change_source(&svc, "print('v2')\n");
    let next = w.deploy(&svc).await;
    assert_eq!(next.state, DeploymentState::Live);
    assert_eq!(spec_of(&w, &next, "worker").health_check, check);

    // So do scaling and recovery.
    svc.replicas.insert("worker".into(), 2);
    w.store.put_service(&svc).await.unwrap();
    let scaled = w.engine.scale(&svc.id).await.unwrap().unwrap();
    let workers: Vec<_> = scaled
        .instances()
        .filter(|(p, _)| *p == "worker")
        .map(|(_, i)| w.runtime.spec(&i.id).unwrap().health_check)
        .collect();
    assert_eq!(workers, [check.clone(), check.clone()]);
    let (_, worker) = scaled.instances().find(|(p, _)| *p == "worker").unwrap();
    assert!(w.runtime.remove_behind_back(&worker.id));
    let report = w.engine.recover().await.unwrap();
    assert_eq!(report.restarted, vec![svc.id.clone()]);
    let live = w.store.live_deployment(&svc.id).await.unwrap().unwrap();
    assert_eq!(spec_of(&w, &live, "worker").health_check, check);

    // A type without a check is still checked by liveness only.
    let other = with_worker(&w, "api").await;
    let dep = w.deploy(&other).await;
    assert_eq!(dep.state, DeploymentState::Live);
    assert_eq!(spec_of(&w, &dep, "worker").health_check.probe, Probe::None);
}

#[tokio::test]
async fn process_checks_name_only_process_types_the_release_runs() {
    let w = world().await;
    let svc = with_worker(&w, "web").await;
    // web has the service's health check; release is never probed.
    for (name, why) in [("web", "health_check"), ("release", "never probed")] {
        let mut bad = svc.clone();
        bad.process_checks.insert(name.into(), fast_health());
        let err = bad.validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(
            err.message().contains(&format!("process check {name}")),
            "{err}"
        );
        assert!(err.message().contains(why), "{err}");
        let err = w.store.put_service(&bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }
    // A bad check is refused like a bad health check.
    let mut bad = svc.clone();
    bad.process_checks.insert(
        "worker".into(),
        worker_check(Probe::Http {
            path: "ready".into(),
        }),
    );
    let err = bad.validate().unwrap_err();
    assert!(err.message().contains("process check worker"), "{err}");

    // A type the release does not run: the deployment fails once its Procfile is
    // known, before the build, naming the type; the old release serves on.
    let first = w.deploy(&svc).await;
    let builds = w.builder.builds();
    let mut typo = svc.clone();
    typo.process_checks.insert("wrker".into(), fast_health());
    w.store.put_service(&typo).await.unwrap();
    let dep = w.deploy(&typo).await;
    let (step, reason) = failure(&dep);
    assert_eq!(step, Step::Fetching);
    assert!(reason.starts_with("invalid_input"), "{reason}");
    assert!(reason.contains("process check wrker"), "{reason}");
    assert!(reason.contains("it runs web, worker"), "{reason}");
    assert_eq!(w.builder.builds(), builds, "nothing was built");
    assert_eq!(
        w.instance_ids().len(),
        first.instances().count(),
        "nothing started"
    );
    assert_eq!(upstreams(&w, &svc).await, first.web_endpoints());

    // An image brings no Procfile: its types are known at once.
    let mut image = Service::new(
        &w.project.id,
        "img",
        SourceSpec::Image {
            image: "registry.example/app:1".into(),
        },
    )
    .unwrap();
    image.process_checks.insert("worker".into(), fast_health());
    let err = image.validate().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.message().contains("it runs web)"), "{err}");
    image.processes.insert("worker".into(), "./worker".into());
    image.validate().unwrap();
}

// ------------------------------------------------------------ canary and blue-green

/// Deploys `svc` as a canary with `percent` of the traffic and waits for its run to
/// end (in the canary step, or failed).
async fn canary(w: &World, svc: &Service, percent: u8) -> Deployment {
    let h = w
        .engine
        .deploy_canary(&svc.id, Trigger::Manual, None, percent)
        .await
        .unwrap();
    h.wait().await.unwrap()
}

/// `svc`'s route: each upstream's endpoint and weight, in route order.
async fn weights(w: &World, svc: &Service) -> Vec<(Endpoint, u32)> {
    let routes = w.router.list().await.unwrap();
    let route = routes.iter().find(|r| r.id.0 == svc.id.0).expect("routed");
    route
        .upstreams
        .iter()
        .map(|u| (u.endpoint.clone(), u.weight))
        .collect()
}

fn web_endpoint(d: &Deployment) -> Endpoint {
    d.instance.as_ref().unwrap().endpoint.clone()
}

#[tokio::test]
async fn a_canary_serves_its_share_beside_the_live_release() {
    let (w, svc, live) = live_web().await;
    w.change_source(&svc, "print('v2')\n");
    let c = canary(&w, &svc, 10).await;
    assert_eq!(c.state, DeploymentState::Canary);
    assert_eq!(c.canary, Some(10));
    assert!(
        c.release.is_some(),
        "its release is recorded when it goes out"
    );
    assert_eq!(
        weights(&w, &svc).await,
        [(web_endpoint(&live), 9), (web_endpoint(&c), 1)],
        "90 % to the live release, 10 % to the canary"
    );
    // Both run; the live release is untouched.
    assert_eq!(w.instance_ids().len(), 2);
    let still = w.store.deployment(&live.id).await.unwrap();
    assert_eq!(still.state, DeploymentState::Live);
    // The canary step is visible in its history, and it is not an active deployment.
    assert_eq!(
        states_of(&w, &c).await.last().copied(),
        Some("canary"),
        "the last state it entered"
    );
    assert!(w.deployments(true).await.is_empty());
}

#[tokio::test]
async fn promote_moves_all_traffic_and_retires_the_old_release() {
    let (w, svc, live) = live_web().await;
    w.change_source(&svc, "print('v2')\n");
    let c = canary(&w, &svc, 10).await;
    let promoted = w.engine.promote(&c.id).await.unwrap();
    assert_eq!(promoted.state, DeploymentState::Live);
    assert_eq!(weights(&w, &svc).await, [(web_endpoint(&c), 1)]);
    let old = w.store.deployment(&live.id).await.unwrap();
    assert_eq!(old.state, DeploymentState::Superseded);
    assert_eq!(
        w.instance_ids(),
        vec![c.instance.as_ref().unwrap().id.clone()],
        "the old release's instance stopped"
    );
    assert_eq!(w.served_by(&svc), Some(web_endpoint(&c)));
    // Promoting twice is a conflict, not a second switch.
    let err = w.engine.promote(&c.id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
}

#[tokio::test]
async fn abort_gives_all_traffic_back_and_stops_the_canary() {
    let (w, svc, live) = live_web().await;
    w.change_source(&svc, "print('v2')\n");
    let c = canary(&w, &svc, 25).await;
    let aborted = w.engine.abort_canary(&c.id).await.unwrap();
    assert_eq!(aborted.state, DeploymentState::Cancelled);
    assert_eq!(weights(&w, &svc).await, [(web_endpoint(&live), 1)]);
    assert_eq!(
        w.instance_ids(),
        vec![live.instance.as_ref().unwrap().id.clone()]
    );
    let still = w.store.deployment(&live.id).await.unwrap();
    assert_eq!(still.state, DeploymentState::Live);
    assert_eq!(
        still.version, live.version,
        "the live release is not touched"
    );
    // Nothing is out any more: the service deploys again.
    let next = w.deploy(&svc).await;
    assert_eq!(next.state, DeploymentState::Live);
}

#[tokio::test]
async fn a_canary_that_fails_its_health_check_leaves_the_old_release_at_full_traffic() {
    let (w, svc, live) = live_web().await;
    w.faults.update("web", |f| f.fail_health = true);
    let c = canary(&w, &svc, 10).await;
    assert_eq!(failure(&c).0, Step::HealthChecking);
    assert_eq!(weights(&w, &svc).await, [(web_endpoint(&live), 1)]);
    assert_eq!(
        w.instance_ids(),
        vec![live.instance.as_ref().unwrap().id.clone()]
    );
}

#[tokio::test]
async fn blue_green_runs_the_new_release_without_traffic_until_promoted() {
    let (w, svc, live) = live_web().await;
    let c = canary(&w, &svc, 0).await;
    assert_eq!(c.state, DeploymentState::Canary);
    // No zero-weight upstream: only the live release is routed, the new one runs.
    assert_eq!(weights(&w, &svc).await, [(web_endpoint(&live), 1)]);
    assert_eq!(w.instance_ids().len(), 2);
    w.engine.promote(&c.id).await.unwrap();
    assert_eq!(weights(&w, &svc).await, [(web_endpoint(&c), 1)]);
}

#[tokio::test]
async fn while_a_canary_is_out_other_deploys_of_the_service_are_refused() {
    let (w, svc, live) = live_web().await;
    let c = canary(&w, &svc, 10).await;
    let refused = w.engine.deploy(&svc.id, Trigger::Manual).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict);
    assert!(refused.message().contains(c.id.as_str()), "{refused}");
    let err = w
        .engine
        .deploy_canary(&svc.id, Trigger::Manual, None, 5)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let err = w
        .engine
        .rollback(live.release.as_ref().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let err = w.engine.scale(&svc.id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    // Nothing was recorded for the refused requests, and the route is unchanged.
    assert_eq!(
        w.store
            .deployments(&DeploymentFilter {
                service: Some(svc.id.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(weights(&w, &svc).await.len(), 2);
    // A refresh of the route (a domain added) keeps the canary's share.
    assert!(w.engine.refresh_route(&svc.id).await.unwrap());
    assert_eq!(
        weights(&w, &svc).await,
        [(web_endpoint(&live), 9), (web_endpoint(&c), 1)]
    );
}

#[tokio::test]
async fn a_deploy_queued_behind_a_canary_fails_once_the_canary_is_out() {
    let (w, svc, _live) = live_web().await;
    // The canary builds slowly; a plain deploy is requested meanwhile, and waits.
    w.faults
        .update("web", |f| f.build_delay = Some(Duration::from_millis(200)));
    let mut h = w
        .engine
        .deploy_canary(&svc.id, Trigger::Manual, None, 10)
        .await
        .unwrap();
    let mut events = h.events();
    wharf_testkit::reach(&mut events, &DeploymentState::Building).await;
    let queued = w.engine.deploy(&svc.id, Trigger::Manual).await.unwrap();
    let c = h.wait().await.unwrap();
    assert_eq!(c.state, DeploymentState::Canary);
    let q = queued.wait().await.unwrap();
    let (step, reason) = failure(&q);
    assert_eq!(step, Step::Queued);
    assert!(reason.contains("canary"), "{reason}");
    assert_eq!(weights(&w, &svc).await.len(), 2, "the canary is still out");
}

#[tokio::test]
async fn a_canary_with_nothing_live_simply_goes_live() {
    let w = world().await;
    let svc = w.service("web", &[]).await;
    let d = canary(&w, &svc, 10).await;
    assert_eq!(d.state, DeploymentState::Live);
    assert_eq!(weights(&w, &svc).await, [(web_endpoint(&d), 1)]);
}

#[tokio::test]
async fn recovery_keeps_a_canary_and_its_shared_route() {
    let (w, svc, live) = live_web().await;
    let c = canary(&w, &svc, 10).await;
    let before = w.instance_ids();
    // A restart that lost the route (a proxy that restarted empty, say).
    w.router.remove(&RouteId(svc.id.0.clone())).await.unwrap();
    let report = w.engine.recover().await.unwrap();
    assert!(report.removed_instances.is_empty(), "{report:?}");
    assert_eq!(report.canaries, vec![c.id.clone()]);
    assert_eq!(
        w.instance_ids(),
        before,
        "neither release's instance is swept"
    );
    assert_eq!(
        weights(&w, &svc).await,
        [(web_endpoint(&live), 9), (web_endpoint(&c), 1)]
    );
    assert_eq!(
        w.store.deployment(&c.id).await.unwrap().state,
        DeploymentState::Canary
    );
    // And it can still be promoted after the restart.
    w.engine.promote(&c.id).await.unwrap();
    assert_eq!(weights(&w, &svc).await, [(web_endpoint(&c), 1)]);
}

#[tokio::test]
async fn recovery_fails_a_canary_whose_instance_is_gone() {
    let (w, svc, live) = live_web().await;
    let c = canary(&w, &svc, 10).await;
    assert!(w
        .runtime
        .remove_behind_back(&c.instance.as_ref().unwrap().id));
    let report = w.engine.recover().await.unwrap();
    assert_eq!(report.failed, vec![c.id.clone()]);
    let failed = w.store.deployment(&c.id).await.unwrap();
    let (step, reason) = failure(&failed);
    assert_eq!(step, Step::Canary);
    assert!(reason.contains("gone"), "{reason}");
    assert_eq!(weights(&w, &svc).await, [(web_endpoint(&live), 1)]);
}

#[tokio::test]
async fn canary_weights_split_each_share_evenly_among_replicas() {
    let e = |port| Endpoint {
        host: "127.0.0.1".into(),
        port,
    };
    let w = |ups: Vec<Upstream>| ups.into_iter().map(|u| u.weight).collect::<Vec<_>>();
    assert_eq!(w(canary_upstreams(&[e(1)], &[e(2)], 10)), [9, 1]);
    // Two live replicas (45 % each) and one canary (10 %).
    assert_eq!(w(canary_upstreams(&[e(1), e(2)], &[e(3)], 10)), [9, 9, 2]);
    // One live instance (90 %), two canary replicas (5 % each).
    assert_eq!(w(canary_upstreams(&[e(1)], &[e(2), e(3)], 10)), [18, 1, 1]);
    assert_eq!(w(canary_upstreams(&[e(1)], &[e(2)], 100)), [1]);
    assert_eq!(
        w(canary_upstreams(&[], &[e(2)], 0)),
        [1],
        "nothing live: all to it"
    );
    assert_eq!(w(canary_upstreams(&[e(1), e(2)], &[], 50)), [1, 1]);
}

#[tokio::test]
async fn a_project_rollout_is_refused_before_anything_deploys_while_a_canary_is_out() {
    let w = world().await;
    let db = w.chain().await;
    let project = w
        .engine
        .deploy_project(&w.project.id, None, Trigger::Manual)
        .await
        .unwrap();
    assert!(project.wait().await.unwrap().all_live());
    let api = w.store.services(&w.project.id).await.unwrap();
    let api = api.iter().find(|s| s.name == "api").unwrap();
    let c = canary(&w, api, 10).await;
    assert_eq!(c.state, DeploymentState::Canary);
    let before = w.deployments(false).await.len();
    let err = w
        .engine
        .deploy_cascade(&db.id, Trigger::Manual)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("service api"), "{err}");
    let err = w
        .engine
        .deploy_project(&w.project.id, None, Trigger::Manual)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(w.deployments(false).await.len(), before, "nothing deployed");
}

#[tokio::test]
async fn teardown_ends_a_canary_and_stops_both_releases() {
    let (w, svc, _live) = live_web().await;
    let c = canary(&w, &svc, 10).await;
    w.engine.teardown(&svc.id).await.unwrap();
    assert_eq!(
        w.store.deployment(&c.id).await.unwrap().state,
        DeploymentState::Cancelled
    );
    assert!(w.instance_ids().is_empty());
    assert!(w.router.list().await.unwrap().is_empty());
}

/// A torn-down service's release ends, so nothing (a cron run, `wharf run`) starts
/// an instance of it between its teardown and the deletion of its records and
/// volumes: such an instance would hold the volumes the deletion removes.
#[tokio::test]
async fn teardown_ends_the_live_release_so_no_task_starts_from_it() {
    let (w, svc, live) = live_web().await;
    w.engine.teardown(&svc.id).await.unwrap();
    assert_eq!(
        w.store.deployment(&live.id).await.unwrap().state,
        DeploymentState::Stopped
    );
    assert_eq!(w.store.live_deployment(&svc.id).await.unwrap(), None);
    let err = w
        .engine
        .run_command(
            &svc.id,
            vec!["true".into()],
            RunOptions::new(Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        w.runtime.tasks().is_empty(),
        "a task started after teardown"
    );
    assert!(w.instance_ids().is_empty());
}

#[tokio::test]
async fn a_replica_that_is_down_leaves_the_route_until_it_is_healthy_again() {
    let w = world().await;
    let mut svc = w.service("web", &[]).await;
    svc.replicas.insert("web".into(), 3);
    w.store.put_service(&svc).await.unwrap();
    let dep = w.deploy(&svc).await;
    let all = sorted(dep.web_endpoints());
    assert_eq!(upstreams(&w, &svc).await, all);
    // All healthy: nothing to change.
    assert_eq!(w.engine.check_routes().await.unwrap(), 0);

    // One crashes (its runtime restarts it later): out of the route meanwhile.
    let (_, down) = dep.instances().nth(1).unwrap();
    w.runtime.crash(&down.id, 137);
    assert_eq!(w.engine.check_routes().await.unwrap(), 1);
    let rest: Vec<Endpoint> = all
        .iter()
        .filter(|e| **e != down.endpoint)
        .cloned()
        .collect();
    assert_eq!(upstreams(&w, &svc).await, rest);
    for _ in 0..6 {
        assert_ne!(w.served_by(&svc), Some(down.endpoint.clone()));
    }
    assert_eq!(w.engine.check_routes().await.unwrap(), 0, "nothing new");

    // Healthy again: back in the route.
    w.runtime.restart(&down.id);
    assert_eq!(w.engine.check_routes().await.unwrap(), 1);
    assert_eq!(upstreams(&w, &svc).await, all);

    // All down: the route stays whole rather than empty.
    for (_, i) in dep.instances() {
        w.runtime.crash(&i.id, 1);
    }
    w.engine.check_routes().await.unwrap();
    assert_eq!(upstreams(&w, &svc).await, all);
}
