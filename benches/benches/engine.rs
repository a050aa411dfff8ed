//! Criterion bench of the engine's throughput: 200 services deployed at once on the
//! in-memory builder, runtime and router, with the in-memory store and with the SQLite
//! store side by side. Every iteration checks that all 200 deployments went live (none
//! lost). See `benches/README.md`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use wharf_core::memory::{MemoryBuilder, MemoryRouter, MemoryRuntime};
use wharf_core::store::{MemoryStore, SqliteStore};
use wharf_core::*;

const SERVICES: usize = 200;

/// Deploys `SERVICES` services at once on a fresh engine over `store`; returns the time
/// from the first `deploy` call to the last deployment going live.
async fn deploy_all(store: DynStore, tmp: &Path) -> Duration {
    let src = tmp.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.py"), "print('hello')\n").unwrap();
    let engine = Engine::builder()
        .store(store.clone())
        .builder(Arc::new(MemoryBuilder::new()))
        .runtime(Arc::new(MemoryRuntime::new()))
        .router(Arc::new(MemoryRouter::new()))
        .work_dir(tmp.join("work"))
        .max_concurrent_builds(SERVICES)
        .stop_grace(Duration::ZERO)
        .build()
        .unwrap();
    let project = Project::new("bench").unwrap();
    store.put_project(&project).await.unwrap();
    let mut ids = Vec::with_capacity(SERVICES);
    for i in 0..SERVICES {
        let mut svc = Service::new(
            &project.id,
            format!("s{i:03}"),
            SourceSpec::Dir { path: src.clone() },
        )
        .unwrap();
        svc.health_check = Some(HealthCheck {
            probe: Probe::Http { path: "/".into() },
            interval: Duration::from_millis(1),
            timeout: Duration::from_secs(30),
        });
        store.put_service(&svc).await.unwrap();
        ids.push(svc.id);
    }

    let start = Instant::now();
    let mut handles = Vec::with_capacity(SERVICES);
    for id in &ids {
        handles.push(engine.deploy(id, Trigger::Manual).await.unwrap());
    }
    let results = futures::future::join_all(handles.iter().map(|h| h.wait())).await;
    let took = start.elapsed();
    let live = results
        .iter()
        .filter(|r| matches!(r, Ok(d) if d.state == DeploymentState::Live))
        .count();
    assert_eq!(live, SERVICES, "deployments lost: {results:?}");
    took
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(SERVICES as u64));
    g.sample_size(10);
    for store_kind in ["memory", "sqlite"] {
        g.bench_function(BenchmarkId::new("deploy_concurrent", store_kind), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let tmp = tempfile::tempdir().unwrap();
                    let store: DynStore = match store_kind {
                        "memory" => Arc::new(MemoryStore::new()),
                        _ => Arc::new(SqliteStore::open(tmp.path().join("wharf.db")).unwrap()),
                    };
                    total += rt.block_on(deploy_all(store, tmp.path()));
                }
                total
            })
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
