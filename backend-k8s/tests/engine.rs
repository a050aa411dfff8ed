//! The whole scale-out composition: Wharf's engine with its records in a real
//! PostgreSQL (`WHARF_POSTGRES_URL`, see `scripts/setup-postgres`) and its apps on
//! Kubernetes (the in-memory API server of `fake/`).

mod fake;

use std::sync::Arc;
use std::time::Duration;

use fake::{FakeCluster, Outcome};
use wharf_core::memory::{MemoryBuilder, MemoryRouter};
use wharf_core::store::{PostgresConfig, PostgresStore};
use wharf_core::*;
use wharf_k8s::{KubernetesConfig, KubernetesRuntime, NamespacePolicy};
use wharf_testkit::{postgres_url, require};

async fn postgres(schema: &str) -> Option<PostgresStore> {
    let store = PostgresStore::connect_with(
        PostgresConfig::new(postgres_url())
            .schema(schema)
            .acquire_timeout(Duration::from_secs(10)),
    )
    .await;
    let probe = store.as_ref().map(|_| ()).map_err(|e| {
        format!("{e} (start one with scripts/setup-postgres or set WHARF_POSTGRES_URL)")
    });
    if !require("postgres", probe) {
        return None;
    }
    store.ok()
}

fn engine(store: DynStore, runtime: DynRuntime, dir: &std::path::Path) -> Engine {
    Engine::builder()
        .store(store)
        .builder(Arc::new(MemoryBuilder::new()))
        .runtime(runtime)
        .router(Arc::new(MemoryRouter::new()))
        .work_dir(dir.join("work"))
        .stop_grace(Duration::ZERO)
        .build()
        .unwrap()
}

/// A runtime on `cluster` with a namespace per project (`wharf-<project>`).
fn per_project(cluster: &FakeCluster) -> Arc<KubernetesRuntime> {
    Arc::new(KubernetesRuntime::new(
        cluster.client(),
        KubernetesConfig {
            namespace: NamespacePolicy::PerProject {
                prefix: "wharf-".into(),
            },
            ..KubernetesConfig::default()
        },
    ))
}

/// An engine on the in-memory store and builder, with its apps on a fake cluster
/// where every pod becomes ready (a namespace per project).
struct MemoryWorld {
    cluster: FakeCluster,
    runtime: Arc<KubernetesRuntime>,
    store: Arc<wharf_core::store::MemoryStore>,
    engine: Engine,
    _dir: tempfile::TempDir,
}

fn memory_world() -> MemoryWorld {
    let cluster = FakeCluster::with_behaviour(|_| Outcome::Ready);
    let runtime = per_project(&cluster);
    let store = Arc::new(wharf_core::store::MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(store.clone(), runtime.clone(), dir.path());
    MemoryWorld {
        cluster,
        runtime,
        store,
        engine,
        _dir: dir,
    }
}

/// The namespace of `project`'s instances with [`per_project`].
fn namespace_of(project: &Project) -> String {
    format!("wharf-{}", project.id.0.replace('_', "-"))
}

/// Project `shop` (stored) and its service `web` of a prebuilt image on port 8080
/// (not stored yet: the caller sets it up first).
async fn shop_web(store: &dyn Store) -> (Project, Service) {
    let project = Project::new("shop").unwrap();
    store.put_project(&project).await.unwrap();
    let mut svc = Service::new(
        &project.id,
        "web",
        SourceSpec::Image {
            image: "registry.local/shop/web@sha256:0123abcd".into(),
        },
    )
    .unwrap();
    svc.port = Some(8080);
    (project, svc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_deploys_to_kubernetes_and_records_in_postgres() {
    let schema = format!("t_engine_k8s_{}", &DeploymentId::random().0[4..14]);
    let Some(store) = postgres(&schema).await else {
        return;
    };
    let store = Arc::new(store);
    let cluster = FakeCluster::with_behaviour(|image| {
        if image.contains("missing") {
            Outcome::ImagePullBackOff
        } else {
            Outcome::Ready
        }
    });
    let runtime = per_project(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(store.clone(), runtime.clone(), dir.path());

    let (project, mut svc) = shop_web(store.as_ref()).await;
    svc.health_check = Some(HealthCheck {
        probe: Probe::Http {
            path: "/healthz".into(),
        },
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(10),
    });
    store.put_service(&svc).await.unwrap();

    let live = wharf_testkit::deploy(&engine, &svc.id).await;
    assert_eq!(live.state, DeploymentState::Live, "{live:?}");
    let inst = live.instance.clone().unwrap();
    let ns = namespace_of(&project);
    assert!(
        inst.id.0.starts_with(&format!("{ns}/shop-web-")),
        "{}",
        inst.id
    );
    assert_eq!(inst.endpoint.port, 8080);
    assert_eq!(cluster.objects("deployments", &ns).len(), 1);
    assert_eq!(store.deployment(&live.id).await.unwrap(), live);

    // A release whose image cannot be pulled fails with the pod's reason and leaves
    // the live one serving.
    svc.source = SourceSpec::Image {
        image: "registry.local/shop/missing:2".into(),
    };
    store.put_service(&svc).await.unwrap();
    let failed = engine
        .deploy(&svc.id, Trigger::Manual)
        .await
        .unwrap()
        .wait()
        .await;
    let failed = match failed {
        Ok(d) => d,
        Err(e) => panic!("the failed deployment must be reported as a state: {e}"),
    };
    match &failed.state {
        DeploymentState::Failed { reason, .. } => {
            assert!(reason.contains("ImagePullBackOff"), "{reason}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(
        store.live_deployment(&svc.id).await.unwrap().map(|d| d.id),
        Some(live.id.clone())
    );
    assert_eq!(
        cluster.objects("deployments", &ns).len(),
        1,
        "only the live one is left"
    );
    assert_eq!(
        runtime.status(&inst.id).await.unwrap(),
        InstanceStatus::Healthy
    );

    // A second control plane on the same database and cluster recovers without
    // disturbing what is live.
    let other = engine_for_recovery(store.clone(), runtime.clone(), dir.path());
    other.recover().await.unwrap();
    assert_eq!(
        runtime.status(&inst.id).await.unwrap(),
        InstanceStatus::Healthy
    );
    assert_eq!(
        store.live_deployment(&svc.id).await.unwrap().map(|d| d.id),
        Some(live.id)
    );
    store
        .execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

fn engine_for_recovery(store: DynStore, runtime: DynRuntime, dir: &std::path::Path) -> Engine {
    engine(store, runtime, &dir.join("second"))
}

/// Replicas on Kubernetes are each process type's Deployment's `replicas`, behind its
/// one Service: the engine starts one instance per type, routes to it, and scales by
/// patching the count (no new instance, no new release).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_each_deployments_replicas_and_scale_patches_them() {
    let MemoryWorld {
        cluster,
        runtime: _,
        store,
        engine,
        _dir,
    } = memory_world();
    let (_, mut svc) = shop_web(store.as_ref()).await;
    svc.processes
        .insert("worker".into(), "./worker --queue mail".into());
    svc.replicas = [("web".to_owned(), 3), ("worker".to_owned(), 2)].into();
    store.put_service(&svc).await.unwrap();

    let dep = engine
        .deploy(&svc.id, Trigger::Manual)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(dep.state, DeploymentState::Live, "{}", dep.state);
    let kinds: Vec<&str> = dep.instances().map(|(p, _)| p).collect();
    assert_eq!(kinds, ["web", "worker"], "one instance per process type");
    let replicas_of = |id: &InstanceId| {
        let (ns, name) = id.0.split_once('/').unwrap();
        let d = cluster
            .object("deployments", ns, name)
            .expect("its Deployment");
        d["spec"]["replicas"].as_i64().unwrap()
    };
    let web = dep.instance.clone().unwrap();
    let worker = dep.more_instances[0].instance.clone();
    assert_eq!(replicas_of(&web.id), 3);
    assert_eq!(replicas_of(&worker.id), 2);
    // The worker's command is its own; the route has the web Service only.
    let (ns, name) = worker.id.0.split_once('/').unwrap();
    let d = cluster.object("deployments", ns, name).unwrap();
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["command"],
        serde_json::json!(["./worker", "--queue", "mail"]),
        "{container}"
    );
    assert_eq!(dep.web_endpoints(), vec![web.endpoint.clone()]);

    // Scaled in place: the same instances, their counts patched.
    svc.replicas = [("web".to_owned(), 5), ("worker".to_owned(), 0)].into();
    store.put_service(&svc).await.unwrap();
    let scaled = engine.scale(&svc.id).await.unwrap().unwrap();
    assert_eq!(scaled.instance.as_ref().unwrap().id, web.id);
    assert_eq!(replicas_of(&web.id), 5);
    assert!(
        scaled.more_instances.is_empty(),
        "{:?}",
        scaled.more_instances
    );
    assert!(
        cluster.object("deployments", ns, name).is_none(),
        "the worker's Deployment was not removed"
    );
    assert_eq!(store.releases(&svc.id).await.unwrap().len(), 1);
}

/// Every Job and Secret left in the cluster, as `namespace/name`.
fn jobs_and_secrets(cluster: &FakeCluster, ns: &str) -> (Vec<String>, Vec<String>) {
    let names = |resource: &str| -> Vec<String> {
        cluster
            .objects(resource, ns)
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    (names("jobs"), names("secrets"))
}

/// Tasks run as Jobs: a release command runs once from the new image before the
/// release starts, its output in the deployment's events; a failing one fails the
/// deployment at `releasing` with the previous release serving; a one-off run
/// returns its command's exit code, and one past its timeout is stopped. No Job
/// nor its Secret is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_commands_and_one_off_runs_run_as_jobs() {
    let MemoryWorld {
        cluster,
        runtime: _,
        store,
        engine,
        _dir,
    } = memory_world();
    let (project, mut svc) = shop_web(store.as_ref()).await;
    let ns = namespace_of(&project);
    svc.processes
        .insert("release".into(), "echo migrated 3 tables; exit 0".into());
    store.put_service(&svc).await.unwrap();

    let first = wharf_testkit::deploy(&engine, &svc.id).await;
    assert_eq!(first.state, DeploymentState::Live, "{first:?}");
    let output: Vec<String> = store
        .events(&first.id, 0)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Log(l) => Some(l.text),
            _ => None,
        })
        .collect();
    assert!(
        output.contains(&"migrated 3 tables".to_owned()),
        "the release command's output is not in the events: {output:?}"
    );
    let web = first.instance.clone().unwrap();
    let (jobs, secrets) = jobs_and_secrets(&cluster, &ns);
    assert!(jobs.is_empty(), "the release's Job was left: {jobs:?}");
    assert_eq!(
        secrets,
        [web.id.0.split_once('/').unwrap().1],
        "only the web instance's Secret stays"
    );

    // A release command that fails: the deployment fails at releasing, nothing of
    // the new release starts, the first one keeps serving.
    svc.processes
        .insert("release".into(), "echo cannot migrate; exit 3".into());
    store.put_service(&svc).await.unwrap();
    let failed = wharf_testkit::deploy(&engine, &svc.id).await;
    match &failed.state {
        DeploymentState::Failed { step, reason } => {
            assert_eq!(*step, Step::Releasing);
            assert!(reason.contains("exited with code 3"), "{reason}");
            assert!(reason.contains("cannot migrate"), "{reason}");
        }
        other => panic!("expected a failure at releasing, got {other:?}"),
    }
    assert_eq!(
        store.live_deployment(&svc.id).await.unwrap().unwrap().id,
        first.id
    );
    assert_eq!(cluster.objects("deployments", &ns).len(), 1);

    // One-off runs: the exit code comes back; one past its timeout is stopped.
    let argv = |s: &str| vec!["sh".to_owned(), "-c".to_owned(), s.to_owned()];
    let ran = engine
        .run_command(
            &svc.id,
            argv("echo fixed 12 rows; exit 7"),
            RunOptions::new(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(ran.exit_code, Some(7), "{ran:?}");
    assert_eq!(ran.tail, ["fixed 12 rows"]);
    assert!(
        ran.instance
            .0
            .starts_with(&format!("{ns}/job/shop-web-run-")),
        "{}",
        ran.instance
    );
    let slow = engine
        .run_command(
            &svc.id,
            argv("sleep 600"),
            RunOptions::new(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    assert!(slow.timed_out && slow.exit_code.is_none(), "{slow:?}");
    let (jobs, secrets) = jobs_and_secrets(&cluster, &ns);
    assert!(jobs.is_empty(), "a run's Job was left: {jobs:?}");
    assert_eq!(secrets.len(), 1, "a run's Secret was left: {secrets:?}");
    assert!(
        cluster
            .objects("pods", &ns)
            .iter()
            .all(|p| p["metadata"]["labels"].get(TASK_LABEL).is_none()),
        "a run's pod was left"
    );
}

/// On Kubernetes a service's cron jobs are CronJobs the cluster fires, owned by the
/// live web instance's Deployment: Wharf's scheduler fires none, records each run the
/// cluster made once (exit code, output), hands changed jobs over without a deploy,
/// and a redeploy moves them to the new release. A schedule Kubernetes cannot run
/// (seconds) fails the deployment, leaving the live release and its CronJob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_jobs_are_cron_jobs_the_cluster_fires_and_wharf_records() {
    use wharf_core::cron::{CronConfig, CronScheduler};
    let MemoryWorld {
        cluster,
        runtime,
        store,
        engine,
        _dir,
    } = memory_world();
    let (project, mut svc) = shop_web(store.as_ref()).await;
    let ns = namespace_of(&project);
    svc.cron = vec![CronJob::new(
        "report",
        "*/5 * * * *",
        "echo 42 rows; exit 0",
    )];
    store.put_service(&svc).await.unwrap();
    let first = wharf_testkit::deploy(&engine, &svc.id).await;
    assert_eq!(first.state, DeploymentState::Live, "{first:?}");
    let web = first.instance.clone().unwrap();
    let web_name = web.id.0.split_once('/').unwrap().1.to_owned();
    let cron_of = |job: &str| {
        cluster
            .objects("cronjobs", &ns)
            .into_iter()
            .find(|c| c["metadata"]["labels"][wharf_k8s::cron::CRON_JOB_LABEL] == job)
            .map(|c| c["metadata"]["name"].as_str().unwrap().to_owned())
    };
    let cron_name = cron_of("report").expect("the CronJob of the live release");
    let cron = cluster.object("cronjobs", &ns, &cron_name).unwrap();
    assert_eq!(cron["spec"]["schedule"], "*/5 * * * *");
    let owner = &cron["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Deployment");
    assert_eq!(owner["name"], web_name.as_str());

    let scheduler = CronScheduler::new(
        store.clone(),
        Arc::new(engine.clone()),
        CronConfig {
            collect_every: Duration::ZERO,
            ..CronConfig::default()
        },
    );
    // The cluster fires it (twice); Wharf records each run once and fires nothing.
    let fired = [
        cluster.fire_cron_job(&ns, &cron_name),
        cluster.fire_cron_job(&ns, &cron_name),
    ];
    let runs = || async {
        store
            .cron_runs(&CronRunFilter {
                service: Some(svc.id.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut recorded = Vec::new();
    while recorded.len() < 2 && tokio::time::Instant::now() < deadline {
        let report = scheduler.tick(Timestamp::now()).await.unwrap();
        assert!(report.started.is_empty(), "Wharf fired a run: {report:?}");
        recorded.extend(report.recorded);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stored = runs().await;
    assert_eq!(stored.len(), 2, "{fired:?}: {stored:?}");
    for run in &stored {
        assert_eq!(run.job, "report");
        assert_eq!(run.outcome, CronOutcome::Succeeded, "{run:?}");
        assert_eq!(run.exit_code, Some(0));
        assert_eq!(run.output.trim(), "42 rows");
        assert!(run.ended_at.unwrap() >= run.started_at);
    }
    let again = scheduler.tick(Timestamp::now()).await.unwrap();
    assert!(again.recorded.is_empty(), "recorded twice: {again:?}");
    assert_eq!(runs().await.len(), 2);
    // The cluster's runs are no instances of Wharf's: a restart's recovery leaves
    // them (and so the history not recorded yet) alone.
    let listed = runtime.list(&Labels::new()).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    engine.recover().await.unwrap();
    assert_eq!(cluster.objects("jobs", &ns).len(), 2);
    assert!(
        cluster
            .objects("jobs", &ns)
            .iter()
            .all(|j| j["metadata"]["labels"].get(TASK_LABEL).is_none()),
        "Wharf ran a task of its own"
    );

    // A failing run is recorded failed with its exit code.
    svc.cron = vec![
        CronJob::new("report", "*/5 * * * *", "echo 42 rows; exit 0"),
        CronJob::new("purge", "0 3 * * *", "echo purge failed; exit 5"),
    ];
    store.put_service(&svc).await.unwrap();
    scheduler.tick(Timestamp::now()).await.unwrap();
    let purge_name = cron_of("purge").expect("a new job is handed over without a deploy");
    cluster.fire_cron_job(&ns, &purge_name);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let failed = loop {
        scheduler.tick(Timestamp::now()).await.unwrap();
        let found = runs().await.into_iter().find(|r| r.job == "purge");
        if let Some(f) = found {
            break f;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "purge never recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failed.outcome, CronOutcome::Failed, "{failed:?}");
    assert_eq!(failed.exit_code, Some(5));
    assert!(failed.reason.contains("exited with code 5"), "{failed:?}");
    assert_eq!(failed.output.trim(), "purge failed");

    // A redeploy takes the job over in place: the same CronJob, now of the new
    // release (its image, its owner), its runs and their history kept; the job
    // removed from the service goes.
    svc.cron.truncate(1);
    store.put_service(&svc).await.unwrap();
    let running = cluster.fire_cron_job(&ns, &cron_name);
    let second = wharf_testkit::deploy(&engine, &svc.id).await;
    assert_eq!(second.state, DeploymentState::Live, "{second:?}");
    let new_web = second.instance.clone().unwrap();
    let new_name = new_web.id.0.split_once('/').unwrap().1.to_owned();
    let names: Vec<String> = cluster
        .objects("cronjobs", &ns)
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, std::slice::from_ref(&cron_name));
    let taken = cluster.object("cronjobs", &ns, &cron_name).unwrap();
    assert_eq!(
        taken["metadata"]["ownerReferences"][0]["name"],
        new_name.as_str()
    );
    assert!(
        cluster.object("jobs", &ns, &running).is_some(),
        "a run of the old release was removed with it"
    );

    // Seconds: refused, the deployment fails, the live release keeps its CronJob.
    svc.cron = vec![CronJob::new("tick", "*/10 * * * * *", "true")];
    store.put_service(&svc).await.unwrap();
    let refused = wharf_testkit::deploy(&engine, &svc.id).await;
    match &refused.state {
        DeploymentState::Failed { reason, .. } => {
            assert!(reason.contains("seconds"), "{reason}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(
        store.live_deployment(&svc.id).await.unwrap().unwrap().id,
        second.id
    );
    let kept = cluster.object("cronjobs", &ns, &cron_name).unwrap();
    assert_eq!(
        kept["metadata"]["ownerReferences"][0]["name"],
        new_name.as_str()
    );
}
