//! Support code shared by the criterion benches and the end-to-end benchmark
//! (`src/bin/e2e.rs`): the planner's 10,000-service graph, the engine's 200 concurrent
//! in-memory deployments, and the route-switch measurement against any [`Router`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wharf_core::memory::{MemoryBuilder, MemoryRouter, MemoryRuntime};
use wharf_core::{
    DeploymentState, DynStore, Engine, HealthCheck, Probe, Project, ProjectId, RouteId, Router,
    Service, ServiceId, SourceSpec, Trigger,
};
use wharf_testkit::{route_to, upstream};

/// Services per layer of [`layered_dag`].
pub const LAYER: usize = 200;
/// Dependencies of every service past the first layer of [`layered_dag`].
pub const DEPS: usize = 3;

/// Runs `f` to its end on a multi-thread runtime of two workers: the benchmarks that
/// measure I/O run on one, sized like the two-core machine their figures are for.
pub fn block_on_two_workers<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// xorshift64: deterministic, no dependency.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % n as u64) as usize
    }
}

/// The name of service `i` of [`layered_dag`] (`s00000`...).
pub fn dag_name(i: usize) -> String {
    format!("s{i:05}")
}

/// `n` services in layers of [`LAYER`]; each one past the first layer depends on one
/// service of the previous layer and `DEPS - 1` more anywhere earlier, all distinct,
/// picked by a fixed-seed PRNG (the same graph every run).
pub fn layered_dag(n: usize) -> Vec<Service> {
    let project = ProjectId::from("prj_bench");
    let mut rng = XorShift(0x5eed_cafe_f00d_d00d);
    (0..n)
        .map(|i| {
            let mut s = Service::new(
                &project,
                dag_name(i),
                SourceSpec::Image {
                    image: format!("bench/{i}:1"),
                },
            )
            .expect("valid name");
            s.id = ServiceId::from(format!("svc_{i}"));
            let layer = i / LAYER;
            if layer > 0 {
                let prev_start = (layer - 1) * LAYER;
                let mut deps = vec![prev_start + rng.below(LAYER)];
                let earlier = layer * LAYER;
                while deps.len() < DEPS.min(earlier) {
                    let d = rng.below(earlier);
                    if !deps.contains(&d) {
                        deps.push(d);
                    }
                }
                s.depends_on = deps.into_iter().map(dag_name).collect();
            }
            s
        })
        .collect()
}

/// Deploys `services` services at once on a fresh engine over `store` with the
/// in-memory builder, runtime and router; returns the time from the first `deploy`
/// call to the last deployment going live. Panics unless every deployment went live
/// (none lost). `tmp` holds the source folder and the engine's work dir.
pub async fn deploy_all(store: DynStore, tmp: &Path, services: usize) -> Duration {
    let src = tmp.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.py"), "print('hello')\n").unwrap();
    let engine = Engine::builder()
        .store(store.clone())
        .builder(Arc::new(MemoryBuilder::new()))
        .runtime(Arc::new(MemoryRuntime::new()))
        .router(Arc::new(MemoryRouter::new()))
        .work_dir(tmp.join("work"))
        .max_concurrent_builds(services)
        .stop_grace(Duration::ZERO)
        .build()
        .unwrap();
    let project = Project::new("bench").unwrap();
    store.put_project(&project).await.unwrap();
    let mut ids = Vec::with_capacity(services);
    for i in 0..services {
        let mut svc = Service::new(
            &project.id,
            format!("s{i:03}"),
            SourceSpec::Dir { path: src.clone() },
        )
        .unwrap();
        svc.health_check = Some(HealthCheck {
            probe: Probe::Http { path: "/".into() },
            interval: Duration::from_millis(10),
            timeout: Duration::from_secs(30),
        });
        store.put_service(&svc).await.unwrap();
        ids.push(svc.id);
    }

    let start = Instant::now();
    let mut handles = Vec::with_capacity(services);
    for id in &ids {
        handles.push(engine.deploy(id, Trigger::Manual).await.unwrap());
    }
    let results = futures::future::join_all(handles.iter().map(|h| h.wait())).await;
    let took = start.elapsed();
    let live = results
        .iter()
        .filter(|r| matches!(r, Ok(d) if d.state == DeploymentState::Live))
        .count();
    assert_eq!(live, services, "deployments lost: {results:?}");
    took
}

/// (status, body); status 0 when the request failed.
async fn body(c: &reqwest::Client, proxy: SocketAddr, host: &str) -> (u16, String) {
    let resp = c
        .get(format!("http://{proxy}/"))
        .header("Host", host)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    match resp {
        Ok(r) => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            if std::env::var_os("BENCH_DEBUG").is_some() {
                eprintln!("{host}: {status} {text:?}");
            }
            (status.as_u16(), text)
        }
        Err(e) => {
            if std::env::var_os("BENCH_DEBUG").is_some() {
                eprintln!("{host}: {e}");
            }
            (0, String::new())
        }
    }
}

/// What [`route_switch`] measured.
#[derive(Debug, Default)]
pub struct Switches {
    /// `Router::upsert` alone (the proxy's admin call or file write), per round.
    pub change: Vec<Duration>,
    /// From the start of the upsert to the first request served by the new upstream.
    pub live: Vec<Duration>,
    /// Requests during switches answered by neither upstream (errors, 404, 502).
    pub failed: usize,
    /// Requests a second client sent meanwhile, each on a new connection, back to back.
    pub load_sent: u64,
    /// Of those, the ones that got no HTTP response at all (connection refused or reset,
    /// or closed before a byte came back): what a proxy that re-binds its listeners on
    /// a config change loses.
    pub load_dropped: u64,
}

/// A client on its own thread sending `GET /` with `Host: host` to `proxy` on a new
/// connection each time until `stop` is set: (sent, no response).
fn fresh_connection_load(
    proxy: SocketAddr,
    host: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(u64, u64)> {
    use std::io::{Read, Write};
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let answered = move || -> bool {
        let timeout = Duration::from_secs(5);
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&proxy, timeout) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(timeout));
        if s.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 9];
        let mut got = 0;
        while got < head.len() {
            match s.read(&mut head[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        // Drain the rest so the proxy is not reset mid-response by our close.
        let _ = s.read_to_end(&mut Vec::new());
        head[..got].starts_with(b"HTTP/1.")
    };
    std::thread::spawn(move || {
        let (mut sent, mut dropped) = (0, 0);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            sent += 1;
            if !answered() {
                dropped += 1;
            }
        }
        (sent, dropped)
    })
}

/// Switches one route (`bench-switch`, host `host`) `rounds` times between two
/// loopback upstreams through `router`, whose proxy serves on `proxy`; each round
/// times the change and the change until the new upstream answers. Meanwhile a second
/// client sends requests on new connections and counts those that get no response.
/// Removes the route at the end.
pub async fn route_switch(
    name: &str,
    router: &dyn Router,
    proxy: SocketAddr,
    host: &str,
    rounds: usize,
) -> Switches {
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let (a, b) = (upstream("a").await, upstream("b").await);
    // Warm up: the route exists and serves "a".
    router
        .upsert(&route_to("bench-switch", host, &[(&a, 1)]))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while body(&c, proxy, host).await.1 != "a" {
        assert!(Instant::now() < deadline, "{name}: route never served");
    }
    let mut out = Switches::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = fresh_connection_load(proxy, host.to_owned(), stop.clone());
    for i in 0..rounds {
        let (to, want) = if i % 2 == 0 { (&b, "b") } else { (&a, "a") };
        let start = Instant::now();
        router
            .upsert(&route_to("bench-switch", host, &[(to, 1)]))
            .await
            .unwrap();
        out.change.push(start.elapsed());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, text) = body(&c, proxy, host).await;
            if text == want {
                break;
            }
            if status != 200 {
                out.failed += 1;
            }
            assert!(Instant::now() < deadline, "{name}: switch never served");
        }
        out.live.push(start.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    (out.load_sent, out.load_dropped) = load.join().expect("load thread");
    router
        .remove(&RouteId("bench-switch".into()))
        .await
        .unwrap();
    out
}

/// The value at quantile `q` (0..=1, nearest rank) of `d`, which it sorts.
pub fn quantile<T: Ord + Copy>(d: &mut [T], q: f64) -> T {
    d.sort();
    d[((d.len() - 1) as f64 * q).round() as usize]
}
