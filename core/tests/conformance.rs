//! The conformance kits run against the in-memory backends: the same suites every real
//! backend's tests call, so the kits themselves are exercised on every test run and the
//! memory backends stay honest doubles of the real ones.

use std::path::PathBuf;
use std::time::Duration;

use wharf_core::conformance::{builder, router, runtime};
use wharf_core::memory::{Faults, MemoryBuilder, MemoryRouter, MemoryRuntime};
use wharf_core::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn plan() -> BuildPlan {
    BuildPlan {
        processes: Default::default(),
        kind: ProjectKind::Python,
        base_image: "python:3.12-slim".into(),
        install: vec![],
        build: vec![],
        start: vec!["python3".into(), "app.py".into()],
        port: 8080,
        dockerfile: None,
    }
}

fn labels(service: &str) -> Labels {
    Labels::from([
        (label::MANAGED.to_string(), "true".to_string()),
        (label::SERVICE_NAME.to_string(), service.to_string()),
    ])
}

fn spec(service: &str) -> InstanceSpec {
    wharf_testkit::spec(service, "example/web:1")
        .health_timeout(Duration::from_secs(5))
        .labels(labels(service))
        .build()
}

/// A build the kit expects to succeed: the python-app fixture for service `web`.
fn ok_build() -> builder::BuildCase {
    builder::BuildCase {
        source_dir: fixture("python-app"),
        plan: plan(),
        labels: labels("web"),
    }
}

#[tokio::test]
async fn memory_builder_passes_the_builder_kit() {
    let faults = Faults::default();
    faults.update("broken", |f| f.fail_build = true);
    let b = MemoryBuilder::with_faults(faults);
    let ok = ok_build();
    let failing = builder::BuildCase {
        labels: labels("broken"),
        ..ok.clone()
    };
    builder::run_all(&b, &ok, &failing).await;
    // builds: 1, rebuild: 2, failure: 1, cancelled: 1.
    assert_eq!(b.builds(), 5, "the kit ran every build it claims to");
}

#[tokio::test]
async fn builder_kit_catches_a_builder_that_never_fails() {
    // The failing case builds fine here, so the kit must reject this builder.
    let b = MemoryBuilder::new();
    let ok = ok_build();
    let caught = tokio::spawn(async move { builder::build_failure(&b, &ok).await })
        .await
        .is_err();
    assert!(caught, "the builder kit accepted a build that should fail");
}

#[tokio::test]
async fn memory_runtime_passes_the_runtime_kit() {
    let faults = Faults::default();
    faults.update("exits", |f| f.exit_at_start = true);
    let rt = MemoryRuntime::with_faults(faults);
    let mut task = spec("task");
    task.command = Some(vec![
        "sh".into(),
        "-c".into(),
        "echo task-output; exit 4".into(),
    ]);
    task.run_once = true;
    let case = runtime::RuntimeCase {
        healthy: spec("web"),
        exits_at_start: Some(spec("exits")),
        task: Some(task),
    };
    runtime::run_all(&rt, &case).await;
}

#[tokio::test]
async fn memory_router_passes_the_router_kit() {
    let r = MemoryRouter::new();
    let upstream = Endpoint {
        host: "127.0.0.1".into(),
        port: 18080,
    };
    router::run_all(&r, "conformance.localhost", upstream.clone()).await;
    // The kit cleans up after itself: nothing of its routes is left to serve.
    assert!(r.list().await.unwrap().is_empty(), "the kit left routes");
    // And a route it would have used really serves once added.
    let route = router::sample_route("probe", "conformance.localhost", upstream.clone());
    r.upsert(&route).await.unwrap();
    assert_eq!(
        r.resolve("probe.conformance.localhost", "/"),
        Some(upstream)
    );
}
