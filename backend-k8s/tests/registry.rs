//! Images reach the cluster through a registry: Wharf's engine builds with the real
//! Docker engine, pushes to a real registry (Debian's docker-registry on
//! 127.0.0.1:25000 from `scripts/setup-registry`; `WHARF_REGISTRY` overrides it) and
//! runs the pushed image by digest on Kubernetes (the in-memory API server of `fake/`).
//! Without a push, the deployment fails early saying to configure one.

mod fake;

use std::sync::Arc;
use std::time::Duration;

use fake::{FakeCluster, Outcome};
use wharf_core::detect::ImageMap;
use wharf_core::memory::MemoryRouter;
use wharf_core::store::MemoryStore;
use wharf_core::*;
use wharf_docker::{DockerBuilder, RegistryPush};
use wharf_k8s::{KubernetesConfig, KubernetesRuntime};
use wharf_testkit::{http_get, probe_registry, registry_addr, require};

/// The Docker engine and the registry answer (else skip, or fail under WHARF_REQUIRE).
async fn ready() -> bool {
    require("docker", wharf_docker::probe_engine().await)
        && require("registry", probe_registry(&registry_addr()).await)
}

fn engine(builder: DockerBuilder, cluster: &FakeCluster, dir: &std::path::Path) -> Engine {
    let runtime = KubernetesRuntime::new(cluster.client(), KubernetesConfig::default());
    Engine::builder()
        .store(Arc::new(MemoryStore::new()))
        .builder(Arc::new(builder))
        .runtime(Arc::new(runtime))
        .router(Arc::new(MemoryRouter::new()))
        .work_dir(dir.join("work"))
        .stop_grace(Duration::ZERO)
        .build()
        .unwrap()
}

/// A project with one service: a busybox static site from a local folder.
async fn site(engine: &Engine, dir: &std::path::Path, name: &str) -> (Project, Service) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("index.html"), format!("<p>{name}</p>\n")).unwrap();
    std::fs::write(
        src.join("Dockerfile"),
        "FROM busybox:1\nCOPY index.html /www/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
    )
    .unwrap();
    let project = Project::new(name).unwrap();
    engine.store().put_project(&project).await.unwrap();
    let mut svc = Service::new(&project.id, "web", SourceSpec::Dir { path: src }).unwrap();
    svc.port = Some(8080);
    svc.health_check = Some(HealthCheck {
        probe: Probe::Http { path: "/".into() },
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(10),
    });
    engine.store().put_service(&svc).await.unwrap();
    (project, svc)
}

/// Removes the images the engine built for `project` (the registry keeps its copy).
async fn untag(project: &Project) {
    let out = tokio::process::Command::new("docker")
        .args([
            "images",
            "--filter",
            &format!("label={}={}", label::PROJECT, project.id),
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ])
        .output()
        .await
        .unwrap();
    for t in String::from_utf8_lossy(&out.stdout).lines() {
        let _ = tokio::process::Command::new("docker")
            .args(["rmi", t])
            .output()
            .await;
    }
}

fn short() -> String {
    DeploymentId::random().0[4..14].to_ascii_lowercase()
}

fn images() -> ImageMap {
    ImageMap::new().with("busybox", "wharf-local/busybox:1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_runs_the_pushed_image_by_digest() {
    if !ready().await {
        return;
    }
    let addr = registry_addr();
    let builder = DockerBuilder::connect(images()).await.unwrap().push_to(
        RegistryPush::new(addr.clone())
            .unwrap()
            .prefix("wharf-test")
            .unwrap(),
    );
    let cluster = FakeCluster::with_behaviour(|_| Outcome::Ready);
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(builder, &cluster, dir.path());
    let name = format!("reg{}", short());
    let (project, svc) = site(&engine, dir.path(), &name).await;

    let live = wharf_testkit::deploy(&engine, &svc.id).await;
    assert_eq!(live.state, DeploymentState::Live, "{live:?}");
    let artifact = live.artifact.clone().unwrap();
    let repo = format!("{addr}/wharf-test/{name}-web");
    let digest = wharf_testkit::digest_of(&artifact.image, &repo);
    assert!(!artifact.local_only);

    // The Deployment runs exactly the pushed reference...
    let deployments = cluster.objects("deployments", "default");
    assert_eq!(deployments.len(), 1);
    let container = &deployments[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], artifact.image.as_str());
    assert!(container.get("imagePullPolicy").is_none());
    // ...which the registry holds under that digest.
    let a = http_get(
        &addr,
        &format!("/v2/wharf-test/{name}-web/manifests/{digest}"),
        &[("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")],
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200, "{:?}", a.headers);
    assert_eq!(
        a.headers.get("docker-content-digest").map(String::as_str),
        Some(digest.as_str()),
        "{:?}",
        a.headers
    );
    untag(&project).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_push_the_deployment_fails_early_saying_to_configure_one() {
    if !ready().await {
        return;
    }
    let builder = DockerBuilder::connect(images()).await.unwrap();
    let cluster = FakeCluster::with_behaviour(|_| Outcome::Ready);
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(builder, &cluster, dir.path());
    let (project, svc) = site(&engine, dir.path(), &format!("loc{}", short())).await;

    let done = wharf_testkit::deploy(&engine, &svc.id).await;
    match &done.state {
        DeploymentState::Failed { reason, .. } => {
            assert!(reason.contains("registry push"), "{reason}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(done.artifact.unwrap().local_only);
    assert!(cluster.objects("deployments", "default").is_empty());
    untag(&project).await;
}
