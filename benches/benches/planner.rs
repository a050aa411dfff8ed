//! Criterion benches of the dependency planner at 10,000 services.
//!
//! The graph is a deterministic layered DAG: 50 layers of 200 services, every service
//! after the first layer depending on 3 distinct earlier services (one in the layer
//! just before, so there are exactly 50 waves). See `benches/README.md`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use wharf_benches::layered_dag;
use wharf_core::planner::DependencyGraph;

const SERVICES: usize = 10_000;
const ROOT: &str = "s00000";

fn planner(c: &mut Criterion) {
    let services = layered_dag(SERVICES);
    let graph = DependencyGraph::new(&services).expect("acyclic");
    let waves = graph.waves();
    let cascade = graph.cascade(ROOT).expect("root exists");
    eprintln!(
        "planner bench graph: {} services, {} edges, {} waves; cascade of {ROOT}: {} services in {} waves",
        graph.len(),
        services.iter().map(|s| s.depends_on.len()).sum::<usize>(),
        waves.len(),
        cascade.iter().map(Vec::len).sum::<usize>(),
        cascade.len(),
    );

    let mut group = c.benchmark_group("planner");
    group.throughput(Throughput::Elements(SERVICES as u64));
    group.bench_with_input(
        BenchmarkId::new("new_and_waves", SERVICES),
        &services,
        |b, services| {
            b.iter(|| {
                let g = DependencyGraph::new(black_box(services)).expect("acyclic");
                black_box(g.waves())
            })
        },
    );
    group.bench_with_input(BenchmarkId::new("waves", SERVICES), &graph, |b, g| {
        b.iter(|| black_box(g.waves()))
    });
    group.bench_with_input(
        BenchmarkId::new("cascade_root", SERVICES),
        &graph,
        |b, g| b.iter(|| black_box(g.cascade(black_box(ROOT)).expect("root exists"))),
    );
    group.finish();
}

// A plain `main` rather than `criterion_group!`, whose generated `pub fn` has no docs
// and would trip the workspace's `missing_docs = deny`.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    planner(&mut criterion);
    criterion.final_summary();
}
