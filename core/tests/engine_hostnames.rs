//! The hostnames the engine generates for a service, which depend on the environment
//! it is in: the engine reads that environment from the store by id.

use std::path::PathBuf;
use std::sync::Arc;

use wharf_core::memory::{MemoryBuilder, MemoryRouter, MemoryRuntime};
use wharf_core::store::MemoryStore;
use wharf_core::*;

async fn environment(
    store: &MemoryStore,
    project: &Project,
    name: &str,
    kind: EnvironmentKind,
) -> Environment {
    let e = Environment {
        id: EnvironmentId::random(),
        project: project.id.clone(),
        name: name.into(),
        kind,
        env: EnvVars::new(),
        created_at: Timestamp::now(),
    };
    store.put_environment(&e).await.unwrap();
    e
}

fn web(project: &Project, env: Option<&Environment>) -> Service {
    let mut s = Service::new(
        &project.id,
        "web",
        SourceSpec::Dir {
            path: PathBuf::from("/src"),
        },
    )
    .unwrap();
    s.environment = env.map(|e| e.id.clone());
    s
}

#[tokio::test]
async fn hostnames_follow_the_services_environment() {
    let store = Arc::new(MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .store(store.clone())
        .builder(Arc::new(MemoryBuilder::new()))
        .runtime(Arc::new(MemoryRuntime::new()))
        .router(Arc::new(MemoryRouter::new()))
        .work_dir(dir.path().join("work"))
        .base_domain("example.test")
        .build()
        .unwrap();
    let demo = Project::new("demo").unwrap();
    let other = Project::new("other").unwrap();
    for p in [&demo, &other] {
        store.put_project(p).await.unwrap();
    }
    let staging = environment(&store, &demo, "staging", EnvironmentKind::Standing).await;
    let preview = EnvironmentKind::Preview {
        number: 12,
        branch: "feature/x".into(),
        fork: None,
    };
    let pr = environment(&store, &demo, "pr-12", preview).await;
    let foreign = environment(&store, &other, "staging", EnvironmentKind::Standing).await;

    let host = |svc: Service| {
        let (engine, demo) = (&engine, &demo);
        async move { engine.hostname(demo, &svc).await.unwrap() }
    };
    assert_eq!(host(web(&demo, None)).await, "web.demo.example.test");
    assert_eq!(
        host(web(&demo, Some(&staging))).await,
        "web.staging.demo.example.test"
    );
    assert_eq!(
        host(web(&demo, Some(&pr))).await,
        "pr-12.web.demo.example.test"
    );

    // An environment of another project, or one that is gone, is no environment (as
    // when the engine scanned the project's own environments for it).
    assert_eq!(
        host(web(&demo, Some(&foreign))).await,
        "web.demo.example.test"
    );
    store.delete_environment(&staging.id).await.unwrap();
    assert_eq!(
        host(web(&demo, Some(&staging))).await,
        "web.demo.example.test"
    );
}
