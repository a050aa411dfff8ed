//! Criterion bench of the engine's throughput: 200 services deployed at once on the
//! in-memory builder, runtime and router, with the in-memory store and with the SQLite
//! store side by side. Every iteration checks that all 200 deployments went live (none
//! lost). See `benches/README.md`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use wharf_benches::deploy_all;
use wharf_core::store::{MemoryStore, SqliteStore};
use wharf_core::DynStore;

const SERVICES: usize = 200;

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
                    total += rt.block_on(deploy_all(store, tmp.path(), SERVICES));
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
