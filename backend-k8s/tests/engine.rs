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
    let ns = format!("wharf-{}", project.id.0.replace('_', "-"));
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
    let cluster = FakeCluster::with_behaviour(|_| Outcome::Ready);
    let runtime = per_project(&cluster);
    let store = Arc::new(wharf_core::store::MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(store.clone(), runtime.clone(), dir.path());
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
