//! Tests of the dependency planner.

use std::collections::HashMap;

use wharf_core::planner::DependencyGraph;
use wharf_core::{ErrorKind, ProjectId, Service, ServiceId, SourceSpec};

/// A service named `name` depending on `deps`, with a predictable id.
fn svc(name: &str, deps: &[&str]) -> Service {
    let mut s = Service::new(
        &ProjectId::from("prj_test"),
        name,
        SourceSpec::Image {
            image: format!("test/{name}:1"),
        },
    )
    .expect("valid name");
    s.id = ServiceId::from(format!("svc_{name}"));
    s.depends_on = deps.iter().map(|d| d.to_string()).collect();
    s
}

fn graph(services: &[Service]) -> DependencyGraph {
    DependencyGraph::new(services).expect("valid graph")
}

/// The error refusing `services`' graph, checked to be InvalidInput.
#[track_caller]
fn err_of(services: &[Service]) -> wharf_core::Error {
    let err = DependencyGraph::new(services).expect_err("graph must be refused");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    err
}

fn w(waves: &[&[&str]]) -> Vec<Vec<String>> {
    waves
        .iter()
        .map(|wave| wave.iter().map(|s| s.to_string()).collect())
        .collect()
}

fn diamond() -> Vec<Service> {
    vec![
        svc("d", &["b", "c"]),
        svc("c", &["a"]),
        svc("b", &["a"]),
        svc("a", &[]),
    ]
}

#[test]
fn diamond_waves() {
    let g = graph(&diamond());
    assert_eq!(g.waves(), w(&[&["a"], &["b", "c"], &["d"]]));
    assert_eq!(g.len(), 4);
    assert!(!g.is_empty());
}

#[test]
fn diamond_direct_neighbours() {
    let g = graph(&diamond());
    assert_eq!(g.dependencies("d").unwrap(), vec!["b", "c"]);
    assert_eq!(g.dependencies("a").unwrap(), Vec::<String>::new());
    assert_eq!(g.dependents("a").unwrap(), vec!["b", "c"]);
    assert_eq!(g.dependents("d").unwrap(), Vec::<String>::new());
    assert_eq!(
        g.dependencies("nope").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        g.dependents("nope").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn ids_are_carried_per_name() {
    let g = graph(&diamond());
    assert_eq!(g.id("b"), Some(&ServiceId::from("svc_b")));
    assert_eq!(g.id("zz"), None);
    assert!(g.contains("a"));
    assert!(!g.contains("zz"));
}

#[test]
fn independent_services_share_one_wave() {
    let g = graph(&[svc("zeta", &[]), svc("alpha", &[]), svc("mid", &[])]);
    assert_eq!(g.waves(), w(&[&["alpha", "mid", "zeta"]]));
}

#[test]
fn empty_graph() {
    let g = DependencyGraph::new(std::iter::empty::<&Service>()).unwrap();
    assert!(g.is_empty());
    assert_eq!(g.len(), 0);
    assert!(g.waves().is_empty());
}

#[test]
fn service_waits_for_its_deepest_dependency() {
    // c depends on a (wave 0) and b (wave 1): it must be in wave 2.
    let g = graph(&[svc("a", &[]), svc("b", &["a"]), svc("c", &["a", "b"])]);
    assert_eq!(g.waves(), w(&[&["a"], &["b"], &["c"]]));
}

#[test]
fn duplicate_dependency_counts_once() {
    let g = graph(&[svc("a", &[]), svc("b", &["a", "a"])]);
    assert_eq!(g.waves(), w(&[&["a"], &["b"]]));
    assert_eq!(g.dependencies("b").unwrap(), vec!["a"]);
    assert_eq!(g.cascade("a").unwrap(), w(&[&["b"]]));
}

#[test]
fn cascade_of_middle_node() {
    // a <- b <- d, a <- c <- d, d <- e, plus an unrelated x.
    let mut services = diamond();
    services.push(svc("e", &["d"]));
    services.push(svc("x", &[]));
    let g = graph(&services);
    assert_eq!(g.cascade("b").unwrap(), w(&[&["d"], &["e"]]));
    assert_eq!(g.cascade("a").unwrap(), w(&[&["b", "c"], &["d"], &["e"]]));
}

#[test]
fn cascade_orders_within_the_affected_set() {
    // c depends on a and b, b on a: after a changes, b goes before c.
    let g = graph(&[svc("a", &[]), svc("b", &["a"]), svc("c", &["a", "b"])]);
    assert_eq!(g.cascade("a").unwrap(), w(&[&["b"], &["c"]]));
    // A dependency outside the affected set does not delay anything: after b
    // changes only c is redeployed, in the first wave.
    let g = graph(&[
        svc("a", &[]),
        svc("b", &[]),
        svc("c", &["b"]),
        svc("d", &["a", "c"]),
    ]);
    assert_eq!(g.cascade("b").unwrap(), w(&[&["c"], &["d"]]));
    assert_eq!(g.cascade("a").unwrap(), w(&[&["d"]]));
}

#[test]
fn cascade_of_leaf_is_empty() {
    let g = graph(&diamond());
    assert!(g.cascade("d").unwrap().is_empty());
    let g = graph(&[svc("solo", &[])]);
    assert!(g.cascade("solo").unwrap().is_empty());
}

#[test]
fn cascade_of_unknown_service_is_not_found() {
    let g = graph(&diamond());
    let err = g.cascade("nope").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.message().contains("nope"), "{err}");
}

#[test]
fn unknown_dependency_is_named() {
    assert_eq!(
        err_of(&[svc("api", &[]), svc("web", &["api", "db"])]).message(),
        "service web depends on unknown service db"
    );
}

#[test]
fn duplicate_names_are_refused() {
    let err = err_of(&[svc("web", &[]), svc("api", &[]), svc("web", &["api"])]);
    assert!(err.message().contains("duplicate"), "{err}");
    assert!(err.message().contains("web"), "{err}");
}

#[test]
fn three_cycle_is_named_exactly() {
    // a -> b -> c -> a ("depends on"), with unrelated nodes hanging off and around it.
    assert_eq!(
        err_of(&[
            svc("root", &[]),
            svc("a", &["b", "root"]),
            svc("b", &["c"]),
            svc("c", &["a"]),
            svc("after", &["a"]),
            svc("other", &["root"]),
        ])
        .message(),
        "dependency cycle: a -> b -> c -> a"
    );
}

#[test]
fn three_cycle_starts_at_smallest_name_whatever_the_input_order() {
    // x depends on m, m on q, q on x: reported from the smallest name, m.
    let services = [svc("x", &["m"]), svc("q", &["x"]), svc("m", &["q"])];
    for rot in 0..3 {
        let mut s = services.to_vec();
        s.rotate_left(rot);
        let err = err_of(&s);
        assert_eq!(err.message(), "dependency cycle: m -> q -> x -> m");
    }
}

#[test]
fn two_cycle_is_named() {
    assert_eq!(
        err_of(&[svc("web", &["api"]), svc("api", &["web"]), svc("db", &[])]).message(),
        "dependency cycle: api -> web -> api"
    );
}

#[test]
fn self_dependency_is_a_cycle() {
    assert_eq!(
        err_of(&[svc("db", &[]), svc("loop", &["db", "loop"])]).message(),
        "dependency cycle: loop -> loop"
    );
}

#[test]
fn shortest_cycle_in_a_larger_component() {
    // One SCC {a, b, c, d}: a -> b -> c -> d -> a and a shortcut c -> a.
    assert_eq!(
        err_of(&[
            svc("a", &["b"]),
            svc("b", &["c"]),
            svc("c", &["a", "d"]),
            svc("d", &["a"]),
        ])
        .message(),
        "dependency cycle: a -> b -> c -> a"
    );
}

#[test]
fn waves_are_deterministic_whatever_the_input_order() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let services = random_dag(&mut rng, 200);
    let expected = graph(&services).waves();
    let expected_cascade = graph(&services).cascade("s0").unwrap();
    for _ in 0..20 {
        let mut shuffled = services.clone();
        shuffle(&mut rng, &mut shuffled);
        let g = graph(&shuffled);
        assert_eq!(g.waves(), expected);
        assert_eq!(g.waves(), g.waves());
        assert_eq!(g.cascade("s0").unwrap(), expected_cascade);
    }
}

#[test]
fn property_random_dags() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for round in 0..200 {
        let n = 1 + (rng.next() % 60) as usize;
        let mut services = random_dag(&mut rng, n);
        shuffle(&mut rng, &mut services);
        let deps: HashMap<&str, &[String]> = services
            .iter()
            .map(|s| (s.name.as_str(), s.depends_on.as_slice()))
            .collect();
        let g = graph(&services);
        assert_eq!(g.len(), n);

        // Every service exactly once, each after all its dependencies, each wave sorted
        // and non-empty, and each service as early as possible.
        let waves = g.waves();
        let mut wave_of: HashMap<&str, usize> = HashMap::new();
        for (i, wave) in waves.iter().enumerate() {
            assert!(!wave.is_empty(), "round {round}: empty wave {i}");
            assert!(
                wave.windows(2).all(|p| p[0] < p[1]),
                "round {round}: unsorted"
            );
            for name in wave {
                assert!(
                    wave_of.insert(name.as_str(), i).is_none(),
                    "round {round}: {name} appears twice"
                );
            }
        }
        assert_eq!(wave_of.len(), n, "round {round}: a service is missing");
        for (name, ds) in &deps {
            let mine = wave_of[name];
            let earliest = ds
                .iter()
                .map(|d| wave_of[d.as_str()] + 1)
                .max()
                .unwrap_or(0);
            assert_eq!(
                mine, earliest,
                "round {round}: {name} not in its first possible wave"
            );
        }

        // The cascade of a random service: exactly its transitive dependents, each
        // after its dependencies in the set.
        let changed = &services[(rng.next() % n as u64) as usize].name;
        let cascade = g.cascade(changed).unwrap();
        let expected = transitive_dependents(&deps, changed);
        let mut pos: HashMap<&str, usize> = HashMap::new();
        for (i, wave) in cascade.iter().enumerate() {
            assert!(!wave.is_empty());
            for name in wave {
                assert!(pos.insert(name.as_str(), i).is_none());
            }
        }
        let mut got: Vec<&str> = pos.keys().copied().collect();
        got.sort_unstable();
        assert_eq!(got, expected, "round {round}: cascade of {changed}");
        for (name, &i) in &pos {
            for d in deps[name].iter() {
                if let Some(&j) = pos.get(d.as_str()) {
                    assert!(j < i, "round {round}: {name} before its dependency {d}");
                }
            }
        }
    }
}

#[test]
fn ten_thousand_services() {
    let mut rng = XorShift(42);
    let services = random_dag(&mut rng, 10_000);
    let g = graph(&services);
    let total: usize = g.waves().iter().map(Vec::len).sum();
    assert_eq!(total, 10_000);
    let cascade: usize = g.cascade("s0").unwrap().iter().map(Vec::len).sum();
    assert!(cascade < 10_000);
}

#[test]
fn long_chain_does_not_overflow_the_stack() {
    let n = 20_000;
    let services: Vec<Service> = (0..n)
        .map(|i| {
            let name = format!("s{i}");
            if i == 0 {
                svc(&name, &[])
            } else {
                svc(&name, &[&format!("s{}", i - 1)])
            }
        })
        .collect();
    let g = graph(&services);
    assert_eq!(g.waves().len(), n);
    assert_eq!(g.cascade("s0").unwrap().len(), n - 1);

    // Close the chain into one huge cycle: still reported, without recursion trouble.
    let mut cyclic = services;
    cyclic[0].depends_on = vec![format!("s{}", n - 1)];
    let err = err_of(&cyclic);
    assert!(err.message().starts_with("dependency cycle: s0 -> s"));
    assert_eq!(err.message().matches(" -> ").count(), n);
}

// ---- helpers -------------------------------------------------------------------------

/// A tiny deterministic PRNG (xorshift64).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn shuffle<T>(rng: &mut XorShift, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// `n` services `s0..s{n-1}`, each depending on up to 3 random earlier ones (so the
/// graph is acyclic), sometimes naming one twice.
fn random_dag(rng: &mut XorShift, n: usize) -> Vec<Service> {
    (0..n)
        .map(|i| {
            let mut deps = Vec::new();
            if i > 0 {
                for _ in 0..rng.next() % 4 {
                    deps.push(format!("s{}", rng.next() % i as u64));
                }
            }
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            svc(&format!("s{i}"), &deps)
        })
        .collect()
}

fn transitive_dependents<'a>(deps: &HashMap<&'a str, &[String]>, changed: &str) -> Vec<&'a str> {
    // Naive fixed point, independent of the planner's own traversal.
    let mut set: Vec<&str> = Vec::new();
    loop {
        let mut grew = false;
        for (name, ds) in deps {
            if set.contains(name) {
                continue;
            }
            if ds.iter().any(|d| d == changed || set.contains(&d.as_str())) {
                set.push(name);
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    set.sort_unstable();
    set
}

/// `s` with env var `key` set to the plain `value`.
fn with_env(mut s: Service, key: &str, value: &str) -> Service {
    s.env
        .insert(key.into(), wharf_core::EnvValue::Plain(value.into()));
    s
}

#[test]
fn a_reference_orders_like_a_dependency_and_cascades() {
    let services = [
        with_env(svc("web", &[]), "API", "${{ api.URL }}/v1"),
        with_env(
            svc("api", &[]),
            "DB",
            "postgres://${{db.HOST}}:${{ db.PORT }}",
        ),
        svc("db", &[]),
    ];
    let g = graph(&services);
    assert_eq!(g.waves(), w(&[&["db"], &["api"], &["web"]]));
    assert_eq!(g.cascade("db").unwrap(), w(&[&["api"], &["web"]]));
    assert_eq!(g.dependencies("api").unwrap(), vec!["db"]);
}

#[test]
fn a_cycle_through_references_is_named_like_a_depends_on_cycle() {
    let err = err_of(&[
        with_env(svc("api", &[]), "W", "${{ web.URL }}"),
        svc("web", &["api"]),
    ]);
    assert_eq!(err.message(), "dependency cycle: api -> web -> api");
}

#[test]
fn references_to_unknown_services_or_itself_or_malformed_are_refused() {
    let err = err_of(&[with_env(svc("web", &[]), "X", "${{ db.HOST }}")]);
    assert_eq!(err.message(), "service web references unknown service db");
    let err = err_of(&[with_env(svc("web", &[]), "X", "${{ web.HOST }}")]);
    assert_eq!(err.message(), "service web references itself");
    let err = err_of(&[with_env(svc("web", &[]), "X", "${{ db.HOST")]);
    assert!(err.message().contains("unterminated"), "{err}");
}
