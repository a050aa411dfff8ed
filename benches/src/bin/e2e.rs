//! The end-to-end benchmark: Wharf beside the plain tools a user would otherwise use,
//! on the same machine in one run, interleaved, printing one Markdown table.
//!
//! Run it with `benches/e2e/run` (it builds `wharf` and this binary in release and
//! finds Caddy and Traefik); see `benches/README.md` for what each figure measures.
//! It starts its own Caddy, Traefik and `wharf serve` on free loopback ports in a
//! temporary folder, names and labels everything it creates in Docker with a run id
//! (`wb<id>`, label `wharf.bench=<id>`), and removes exactly that at the end.
//!
//! Settings (environment): `WHARF_BENCH_RUNS` (deploy rounds, 5),
//! `WHARF_BENCH_MULTI_RUNS` (multi-service rounds, 3), `WHARF_BENCH_SERVICES`
//! (services for the footprint, 100), `WHARF_BENCH_CADDY`, `WHARF_BENCH_TRAEFIK`
//! (binaries; the run script sets them), `WHARF_BIN` (default: `wharf` beside this
//! binary), `WHARF_BENCH_ONLY` (sections to run, e.g. `1,3,5`; all by default).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::process::Command;
use wharf_benches::{deploy_all, layered_dag, quantile, route_switch};
use wharf_testkit::free_port;

type R<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const APP: &str = r#"import os, signal, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = open("version.txt").read().strip()
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle's algorithm and the
    # client's delayed ACK add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True

    def do_GET(self):
        body = f"hello from {VERSION}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
"#;

const DOCKERFILE: &str = "FROM wharf-local/debian-runtimes:bookworm\nWORKDIR /app\nCOPY . .\n\
EXPOSE 8000\nCMD [\"python3\", \"app.py\"]\n";

const TINY_DOCKERFILE: &str = "FROM wharf-local/busybox:1\nCOPY index.html /www/index.html\n\
EXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n";

fn env_num(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1000.0;
    if m < 1.0 {
        format!("{:.0} µs", m * 1000.0)
    } else if m >= 100.0 {
        format!("{m:.0} ms")
    } else if m >= 10.0 {
        format!("{m:.1} ms")
    } else {
        format!("{m:.2} ms")
    }
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    if v.is_empty() {
        return Duration::ZERO;
    }
    quantile(&mut v, 0.5)
}

fn ratio(b: Duration, a: Duration) -> String {
    format!("{:.2}", b.as_secs_f64() / a.as_secs_f64().max(1e-9))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("e2e: {}", msg.as_ref());
}

/// Runs a command to completion; its trimmed stdout, or an error with its output.
async fn run(cmd: &mut Command) -> R<String> {
    let out = cmd.stdin(Stdio::null()).output().await?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn docker<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(args: I) -> Command {
    let mut c = Command::new("docker");
    c.args(args).env("DOCKER_BUILDKIT", "0");
    c
}

/// A background process of this run, killed when dropped.
struct Proc {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, log: PathBuf) -> R<Proc> {
        let f = std::fs::File::create(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .kill_on_drop(true)
            .spawn()?;
        Ok(Proc { child, log })
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Waits until `url` answers anything (any status).
    async fn wait_answering(&mut self, url: &str) -> R<()> {
        let c = client();
        for _ in 0..300 {
            if c.get(url).send().await.is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited {status} before answering at {url}:\n{}",
                    self.log.display(),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("nothing answered at {url} within 30 s").into())
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Status and body of `GET http://127.0.0.1:{port}/` with `Host: host` (status 0 on
/// a transport error).
async fn get(c: &reqwest::Client, port: u16, host: &str) -> (u16, String) {
    match c
        .get(format!("http://127.0.0.1:{port}/"))
        .header("host", host)
        .send()
        .await
    {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

/// Polls until `GET /` on `port` with `host` answers 200 with `want` in its body.
async fn wait_body(c: &reqwest::Client, port: u16, host: &str, want: &str) -> R<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, b) = get(c, port, host).await;
        if s == 200 && b.contains(want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(
                format!("{host} on :{port} never answered {want:?} (last {s} {b:?})").into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Everything one run shares.
struct Bench {
    id: String,
    tmp: PathBuf,
    wharf: PathBuf,
    api: String,
    token: String,
    caddy_admin: String,
    /// Caddy's port for the routes `wharf serve` manages.
    wharf_port: u16,
    /// Caddy's port for the routes the plain sequences add.
    plain_port: u16,
    http: reqwest::Client,
}

impl Bench {
    fn wharf_cmd(&self) -> Command {
        let mut c = Command::new(&self.wharf);
        c.env("WHARF_SERVER", &self.api)
            .env("WHARF_TOKEN", &self.token)
            .env("NO_PROXY", "127.0.0.1")
            .current_dir(&self.tmp);
        c
    }

    /// `wharf deploy` with `args`; its time and stdout.
    async fn wharf_deploy(&self, args: &[&str]) -> R<(Duration, String)> {
        let start = Instant::now();
        let out = run(self.wharf_cmd().arg("deploy").args(args)).await?;
        Ok((start.elapsed(), out))
    }

    /// The successful answer to `GET /v1<path>` with the bench's token.
    async fn api_answer(&self, path: &str) -> R<reqwest::Response> {
        Ok(self
            .http
            .get(format!("{}/v1{path}", self.api))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?)
    }

    async fn api_get(&self, path: &str) -> R<Value> {
        Ok(self.api_answer(path).await?.json().await?)
    }

    /// The state changes of a finished deployment: (state entered, at ms).
    async fn states(&self, dep: &str) -> R<Vec<(String, i64)>> {
        let events = self
            .api_answer(&format!("/deployments/{dep}/events"))
            .await?;
        let text = events.text().await?;
        let mut out = Vec::new();
        for line in text.lines() {
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let ev: Value = serde_json::from_str(data.trim())?;
            if ev["kind"]["kind"] == "state" {
                let to = ev["kind"]["to"]["state"].as_str().unwrap_or("?").to_owned();
                let from = ev["kind"]["from"]["state"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned();
                let at = ev["at"].as_i64().unwrap_or(0);
                if out.is_empty() {
                    out.push((from, at));
                }
                out.push((to, at));
            }
        }
        Ok(out)
    }

    /// Adds (first time) or replaces the plain sequence's Caddy route `id`: `host` to
    /// `127.0.0.1:port`, one admin API call, as a user with curl would.
    async fn plain_route(&self, id: &str, host: &str, port: u16, first: bool) -> R<()> {
        let route = json!({
            "@id": id,
            "match": [{"host": [host]}],
            "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": format!("127.0.0.1:{port}")}]}],
        });
        let req = if first {
            self.http.post(format!(
                "{}/config/apps/http/servers/plain/routes",
                self.caddy_admin
            ))
        } else {
            self.http.patch(format!("{}/id/{id}", self.caddy_admin))
        };
        req.json(&route).send().await?.error_for_status()?;
        Ok(())
    }
}

/// Per-step durations, in the order steps first appear.
#[derive(Default)]
struct Steps(Vec<(String, Vec<Duration>)>);

impl Steps {
    fn add(&mut self, step: &str, d: Duration) {
        match self.0.iter_mut().find(|(s, _)| s == step) {
            Some((_, v)) => v.push(d),
            None => self.0.push((step.to_owned(), vec![d])),
        }
    }

    /// Adds a deployment's steps from its state changes, plus the client's share
    /// before the first and after the last event (`t0`, `t1`: wall clock ms around the
    /// CLI call).
    fn add_states(&mut self, states: &[(String, i64)], t0: i64, t1: i64) {
        let Some(first) = states.first() else { return };
        let dur = |a: i64, b: i64| Duration::from_millis((b - a).max(0) as u64);
        self.add("CLI: pack, upload, create", dur(t0, first.1));
        for w in states.windows(2) {
            self.add(&w[0].0, dur(w[0].1, w[1].1));
        }
        if let Some(last) = states.last() {
            self.add("CLI: exit after live", dur(last.1, t1));
        }
    }

    fn line(&self) -> String {
        self.0
            .iter()
            .map(|(s, v)| format!("{s} {}", ms(median(v))))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn write_app(dir: &Path, version: &str) -> R<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("app.py"), APP)?;
    std::fs::write(dir.join("Dockerfile"), DOCKERFILE)?;
    std::fs::write(dir.join("version.txt"), format!("{version}\n"))?;
    Ok(())
}

/// One timed plain deploy of `version` in a container named `name`: time and steps.
async fn plain_round(
    b: &Bench,
    dir: &Path,
    version: &str,
    name: &str,
    first: bool,
) -> R<(Duration, Steps)> {
    let plain_host = format!("web.wb{}plain.localhost", b.id);
    let route_id = format!("wb{}-plain", b.id);
    write_app(dir, version)?;
    let image = format!("wb{}-plain:{version}", b.id);
    let label = format!("wharf.bench={}", b.id);
    let mut steps = Steps::default();
    let t = Instant::now();
    let mut s = Instant::now();
    run(docker(["build", "-q", "--label", &label, "-t", &image]).arg(dir)).await?;
    steps.add("docker build", s.elapsed());
    s = Instant::now();
    run(&mut docker([
        "run",
        "-d",
        "--label",
        &label,
        "--name",
        name,
        "-p",
        "127.0.0.1::8000",
        &image,
    ]))
    .await?;
    steps.add("docker run", s.elapsed());
    s = Instant::now();
    let port_line = run(&mut docker(["port", name, "8000"])).await?;
    let port: u16 = port_line
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("docker port said {port_line:?}"))?;
    steps.add("docker port", s.elapsed());
    s = Instant::now();
    wait_body(&b.http, port, "localhost", version).await?;
    steps.add("wait for HTTP 200", s.elapsed());
    s = Instant::now();
    b.plain_route(&route_id, &plain_host, port, first).await?;
    steps.add("Caddy admin call", s.elapsed());
    s = Instant::now();
    wait_body(&b.http, b.plain_port, &plain_host, version).await?;
    steps.add("first answer via Caddy", s.elapsed());
    Ok((t.elapsed(), steps))
}

/// One timed `wharf deploy` of `version`: time and steps.
async fn wharf_round(b: &Bench, dir: &Path, host: &str, version: &str) -> R<(Duration, Steps)> {
    write_app(dir, version)?;
    let t0 = now_ms();
    let t = Instant::now();
    let (_, stdout) = b.wharf_deploy(&[dir.to_str().unwrap()]).await?;
    let t1 = now_ms();
    wait_body(&b.http, b.wharf_port, host, version).await?;
    let took = t.elapsed();
    let dep = stdout
        .lines()
        .find_map(|l| l.strip_prefix("deployment "))
        .ok_or_else(|| format!("no deployment id in {stdout:?}"))?
        .trim()
        .to_owned();
    let mut steps = Steps::default();
    steps.add_states(&b.states(&dep).await?, t0, t1);
    let cli = Duration::from_millis((t1 - t0).max(0) as u64);
    steps.add("first answer via Caddy", took.saturating_sub(cli));
    Ok((took, steps))
}

/// Row 1: One app: `docker build` + `docker run` + HTTP 200 + Caddy route vs `wharf deploy`.
/// A round that fails (the shared Docker engine sometimes refuses to create a
/// container) is run again with a new version, and counted.
async fn deploy_compare(b: &Bench, rounds: usize, out: &mut Vec<String>) -> R<String> {
    let project = format!("wb{}d", b.id);
    let wharf_dir = b.tmp.join("apps").join(&project).join("web");
    let plain_dir = b.tmp.join("apps").join("plain");
    let wharf_host = format!("web.{project}.localhost");
    let (mut plain, mut wharf) = (Vec::new(), Vec::new());
    let (mut plain_steps, mut wharf_steps) = (Steps::default(), Steps::default());
    let mut failed = [0, 0];
    let mut last_plain: Option<String> = None;
    let mut route_made = false;
    // Round 0 is an untimed warm-up that creates the service, the route and the cache.
    for round in 0..=rounds {
        for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            for attempt in 0..3 {
                let version = format!("{}-{round}-{attempt}", ["plain", "wharf"][side]);
                let result = if side == 0 {
                    let name = format!("wb{}-plain-{round}-{attempt}", b.id);
                    let r = plain_round(b, &plain_dir, &version, &name, !route_made).await;
                    if r.is_ok() {
                        route_made = true;
                        // Retire the previous container (not timed: Wharf retires after live).
                        if let Some(old) = last_plain.replace(name) {
                            run(&mut docker(["rm", "-f", &old])).await?;
                        }
                    }
                    r
                } else {
                    wharf_round(b, &wharf_dir, &wharf_host, &version).await
                };
                match result {
                    Ok((took, steps)) => {
                        progress(format!("deploy round {round}: {version} {}", ms(took)));
                        if round > 0 {
                            let (all, per) = if side == 0 {
                                (&mut plain, &mut plain_steps)
                            } else {
                                (&mut wharf, &mut wharf_steps)
                            };
                            all.push(took);
                            for (st, v) in steps.0 {
                                per.add(&st, v[0]);
                            }
                        }
                        break;
                    }
                    Err(e) if attempt < 2 => {
                        progress(format!(
                            "deploy round {round}: {version} failed, again: {e}"
                        ));
                        failed[side] += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    if let Some(old) = last_plain {
        run(&mut docker(["rm", "-f", &old])).await?;
    }
    let (a, w) = (median(&plain), median(&wharf));
    out.push(format!(
        "| 1 | Deploy one app (Dockerfile, new source each run), to first answer through Caddy; median of {rounds} | {} | {} | **{}** |",
        ms(a), ms(w), ratio(w, a)
    ));
    Ok(format!(
        "- Deploy, plain sequence per step (medians): {}\n- Deploy, `wharf deploy` per step (medians, from the deployment's state events, ms resolution): {}\n- Deploy attempts that failed and were run again: plain {}, Wharf {}.",
        plain_steps.line(),
        wharf_steps.line(),
        failed[0],
        failed[1]
    ))
}

/// Row 2: Three services with dependencies: `docker-compose up -d --build` vs `wharf.toml`.
async fn multi_compare(b: &Bench, rounds: usize, out: &mut Vec<String>) -> R<String> {
    let names = ["db", "api", "web"];
    let compose_dir = b.tmp.join("compose");
    let stack_dir = b.tmp.join("stack");
    let compose_project = format!("wb{}m", b.id);
    let project = format!("wb{}s", b.id);
    std::fs::create_dir_all(&compose_dir)?;
    std::fs::create_dir_all(&stack_dir)?;
    let label = format!("wharf.bench: \"{}\"", b.id);
    let mut yml = String::from("version: \"2.4\"\nservices:\n");
    for (n, dep) in [("db", None), ("api", Some("db")), ("web", Some("api"))] {
        yml += &format!(
            "  {n}:\n    build: {{context: ./{n}, labels: {{{label}}}}}\n    labels: {{{label}}}\n    ports: [\"127.0.0.1::8000\"]\n"
        );
        if let Some(d) = dep {
            yml += &format!("    depends_on: [{d}]\n");
        }
    }
    std::fs::write(compose_dir.join("docker-compose.yml"), yml)?;
    std::fs::write(
        stack_dir.join("wharf.toml"),
        format!(
            "project = \"{project}\"\n\n[services.web]\npath = \"web\"\ndepends_on = [\"api\"]\n\n\
[services.api]\npath = \"api\"\ndepends_on = [\"db\"]\n\n[services.db]\npath = \"db\"\n"
        ),
    )?;
    let compose = |args: &[&str]| {
        let mut c = Command::new("docker-compose");
        c.arg("-p")
            .arg(&compose_project)
            .args(args)
            .current_dir(&compose_dir)
            .env("DOCKER_BUILDKIT", "0")
            .env("COMPOSE_DOCKER_CLI_BUILD", "0");
        c
    };
    let (mut plain, mut wharf) = (Vec::new(), Vec::new());
    let mut compose_up = Vec::new();
    let mut wharf_steps = Steps::default();
    for round in 0..=rounds {
        for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            for attempt in 0..3 {
                let r: R<()> = async {
                    if side == 0 {
                        let version = format!("compose-{round}");
                        for n in names {
                            write_app(&compose_dir.join(n), &format!("{version}-{n}"))?;
                        }
                        let t = Instant::now();
                        run(&mut compose(&["up", "-d", "--build"])).await?;
                        let up = t.elapsed();
                        for n in names {
                            let line = run(&mut compose(&["port", n, "8000"])).await?;
                            let port: u16 = line
                                .rsplit(':')
                                .next()
                                .and_then(|p| p.trim().parse().ok())
                                .ok_or_else(|| format!("docker-compose port said {line:?}"))?;
                            wait_body(&b.http, port, "localhost", &format!("{version}-{n}"))
                                .await?;
                            let host = format!("{n}.wb{}m.localhost", b.id);
                            b.plain_route(&format!("wb{}-m-{n}", b.id), &host, port, round == 0)
                                .await?;
                            wait_body(&b.http, b.plain_port, &host, &format!("{version}-{n}"))
                                .await?;
                        }
                        let took = t.elapsed();
                        if round > 0 {
                            plain.push(took);
                            compose_up.push(up);
                        }
                        progress(format!("multi round {round}: docker-compose {}", ms(took)));
                    } else {
                        let version = format!("wharf-{round}");
                        for n in names {
                            write_app(&stack_dir.join(n), &format!("{version}-{n}"))?;
                        }
                        let t = Instant::now();
                        b.wharf_deploy(&[stack_dir.to_str().unwrap()]).await?;
                        for n in names {
                            let host = format!("{n}.{project}.localhost");
                            wait_body(&b.http, b.wharf_port, &host, &format!("{version}-{n}"))
                                .await?;
                        }
                        let took = t.elapsed();
                        if round > 0 {
                            wharf.push(took);
                            for n in names {
                                let svc = b
                                    .api_get(&format!("/projects/{project}/services/{n}"))
                                    .await?;
                                if let Some(dep) = svc["live_deployment"].as_str() {
                                    let states = b.states(dep).await?;
                                    for w in states.windows(2) {
                                        wharf_steps.add(
                                            &format!("{n} {}", w[0].0),
                                            Duration::from_millis((w[1].1 - w[0].1).max(0) as u64),
                                        );
                                    }
                                }
                            }
                        }
                        progress(format!("multi round {round}: wharf {}", ms(took)));
                    }
                    Ok(())
                }
                .await;
                match r {
                    Ok(()) => break,
                    Err(e) if attempt < 2 => progress(format!(
                        "multi round {round} side {side} failed, again: {e}"
                    )),
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let _ = run(&mut compose(&["down", "--rmi", "all", "--remove-orphans"])).await;
    let (a, w) = (median(&plain), median(&wharf));
    out.push(format!(
        "| 2 | 3 services (db <- api <- web), new source each run, all answering through Caddy; median of {rounds} | {} (of which `up -d --build` {}) | {} | **{}** |",
        ms(a), ms(median(&compose_up)), ms(w), ratio(w, a)
    ));
    Ok(format!(
        "- Multi-service, Wharf per service and step (medians): {}\n- docker-compose `depends_on` only orders container starts (no health wait) and builds the three images one after the other; Wharf deploys wave by wave, each wave waiting for the previous one to be live (health-checked and routed).",
        wharf_steps.line()
    ))
}

/// One request of the load: (sent at, since the load began; latency; ok).
type Sample = (Duration, Duration, bool);

/// Row 3: Steady load through Caddy during a `wharf deploy` redeploy.
async fn zero_downtime(b: &Bench, out: &mut Vec<String>) -> R<String> {
    let project = format!("wb{}d", b.id);
    let dir = b.tmp.join("apps").join(&project).join("web");
    let host = format!("web.{project}.localhost");
    let workers = env_num("WHARF_BENCH_LOAD_WORKERS", 4);
    let before = Duration::from_secs(5);
    let after = Duration::from_secs(10);
    let stop = Arc::new(AtomicBool::new(false));
    let origin = Instant::now();
    // Keep-alive connections, as browsers and wrk use; no retries.
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (c, host, stop) = (c.clone(), host.clone(), stop.clone());
        let port = b.wharf_port;
        tasks.push(tokio::spawn(async move {
            let mut samples: Vec<Sample> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = origin.elapsed();
                let s = Instant::now();
                let (status, _) = get(&c, port, &host).await;
                samples.push((sent, s.elapsed(), (200..300).contains(&status)));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            samples
        }));
    }
    tokio::time::sleep(before).await;
    write_app(&dir, "zero-downtime")?;
    let d0 = origin.elapsed();
    b.wharf_deploy(&[dir.to_str().unwrap()]).await?;
    let d1 = origin.elapsed();
    tokio::time::sleep(after).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let phase = |name: &str, lo: Duration, hi: Duration| {
        let mut lat: Vec<Duration> = Vec::new();
        let (mut sent, mut failed) = (0, 0);
        for (at, l, ok) in &all {
            if *at >= lo && *at < hi {
                sent += 1;
                if *ok {
                    lat.push(*l);
                } else {
                    failed += 1;
                }
            }
        }
        if lat.is_empty() {
            lat.push(Duration::ZERO);
        }
        let secs = (hi - lo).as_secs_f64();
        format!(
            "| 3 | Load during redeploy: {name} ({:.1} s) | {sent} sent, **{failed} failed**, {:.0} req/s | p50 {} | p90 {} / p99 {} |",
            secs,
            sent as f64 / secs,
            ms(quantile(&mut lat, 0.5)),
            ms(quantile(&mut lat, 0.9)),
            ms(quantile(&mut lat, 0.99)),
        )
    };
    out.push(phase("before", Duration::ZERO, d0));
    out.push(phase("during `wharf deploy`", d0, d1));
    out.push(phase(
        "after (old instance retired)",
        d1,
        d1 + after + Duration::from_secs(1),
    ));
    Ok(format!(
        "- Zero downtime: {workers} clients with keep-alive connections (reqwest, no retries), a 5 ms pause after each answer, `GET /` through Caddy on the service's hostname; failed = transport errors + non-2xx."
    ))
}

/// Row 3b: The same with `wrk` (whole window), when installed.
async fn zero_downtime_wrk(b: &Bench, out: &mut Vec<String>) -> R<()> {
    let present = Command::new("sh")
        .args(["-c", "command -v wrk"])
        .output()
        .await
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !present {
        out.push(
            "| 3 | wrk cross-check | skipped: wrk absent (scripts/setup-bench-tools) | | |".into(),
        );
        return Ok(());
    }
    let project = format!("wb{}d", b.id);
    let dir = b.tmp.join("apps").join(&project).join("web");
    let host = format!("web.{project}.localhost");
    let secs = 20;
    let wrk = Command::new("wrk")
        .args(["-t1", "-c4", &format!("-d{secs}s"), "--latency", "-H"])
        .arg(format!("Host: {host}"))
        .arg(format!("http://127.0.0.1:{}/", b.wharf_port))
        .stdin(Stdio::null())
        .output();
    let deploy = async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        write_app(&dir, "zero-downtime-wrk")?;
        b.wharf_deploy(&[dir.to_str().unwrap()]).await
    };
    let (wrk, dep) = tokio::join!(wrk, deploy);
    let (took, _) = dep?;
    let text = String::from_utf8_lossy(&wrk?.stdout).into_owned();
    let pick = |key: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(key))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    let total = text
        .lines()
        .find(|l| l.contains("requests in"))
        .map(|l| l.trim().to_owned())
        .unwrap_or_default();
    let non2xx = pick("Non-2xx");
    let sock = pick("Socket errors");
    out.push(format!(
        "| 3 | wrk -t1 -c4 over {secs} s with one `wharf deploy` ({}) inside | {total} | {} | {} {} / {} |",
        ms(took),
        if non2xx.is_empty() && sock.is_empty() { "no Non-2xx, no socket errors".to_owned() } else { format!("{non2xx} {sock}") },
        pick("50%"),
        pick("90%"),
        pick("99%"),
    ));
    Ok(())
}

/// Row 4 for one router: [`route_switch`] of `switch.<id>.test` through `router`, whose
/// proxy serves on `proxy`, `rounds` times; `name` names the router in the row and
/// `what` its change.
async fn switch_row(
    out: &mut Vec<String>,
    id: &str,
    router: &dyn wharf_core::Router,
    proxy: SocketAddr,
    rounds: usize,
    (name, what): (&str, &str),
) {
    let s = route_switch(id, router, proxy, &format!("switch.{id}.test"), rounds).await;
    let (mut c, mut l) = (s.change, s.live);
    let n = c.len();
    out.push(format!(
        "| 4 | Route switch, {name} ({n} rounds) | {what}: median {}, p90 {} | change -> first answer from new upstream: median **{}**, p90 {} | {} failed; new connections meanwhile: {} sent, **{} without any response** |",
        ms(quantile(&mut c, 0.5)),
        ms(quantile(&mut c, 0.9)),
        ms(quantile(&mut l, 0.5)),
        ms(quantile(&mut l, 0.9)),
        s.failed,
        s.load_sent,
        s.load_dropped
    ));
}

/// Row 4: Route switch per router.
async fn switches(b: &Bench, traefik: Option<(u16, PathBuf)>, out: &mut Vec<String>) -> R<()> {
    let router = wharf_core::proxy::ProxyRouter::new();
    let server = router.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
    let label = ("built-in proxy (in process)", "table update");
    switch_row(out, "builtin", &router, server.local_addr(), 200, label).await;
    drop(server);

    // The server `wharf serve` uses (a Caddy server on another port than `http_port`
    // would get automatic HTTPS), with its routes loaded.
    let port = b.wharf_port;
    let mut opts = wharf_caddy::CaddyOptions::new(&b.caddy_admin);
    opts.http_listen = format!("127.0.0.1:{port}");
    opts.https_listen = None;
    let caddy = wharf_caddy::CaddyRouter::new(opts)?;
    caddy.bootstrap().await?;
    let label = ("Caddy", "`upsert` (admin API calls)");
    let proxy = format!("127.0.0.1:{port}").parse()?;
    switch_row(out, "caddy", &caddy, proxy, 100, label).await;

    match traefik {
        Some((port, dir)) => {
            let file = dir.join("bench-switch.yaml");
            let t =
                wharf_traefik::TraefikRouter::with_file(Default::default(), &file).await?;
            let label = (
                "Traefik (file provider, 100 ms throttle)",
                "`upsert` (atomic file write)",
            );
            let proxy = format!("127.0.0.1:{port}").parse()?;
            switch_row(out, "traefik", &t, proxy, 30, label).await;
        }
        None => out.push("| 4 | Route switch, Traefik | skipped: no traefik binary (scripts/setup-proxies) | | |".into()),
    }
    Ok(())
}

/// (VmRSS, VmHWM) of `pid` in KiB.
fn rss(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based in proc(5)).
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// CPU% of `pid` over `secs` seconds.
async fn cpu_percent(pid: u32, secs: u64, tck: f64) -> f64 {
    let a = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let b = cpu_ticks(pid);
    (b - a) as f64 / tck / secs as f64 * 100.0
}

/// Row 5b: Deploys `n` tiny busybox httpd services; the time it took and how many failed.
async fn many_services(b: &Bench, n: usize) -> R<(Duration, usize)> {
    let project = format!("wb{}f", b.id);
    let root = b.tmp.join("tiny");
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("Dockerfile"), TINY_DOCKERFILE)?;
    std::fs::write(root.join("index.html"), "tiny\n")?;
    let start = Instant::now();
    if n > 0 {
        // The project first: concurrent deploys would race to create it.
        b.http
            .post(format!("{}/v1/projects", b.api))
            .bearer_auth(&b.token)
            .json(&json!({"name": project}))
            .send()
            .await?
            .error_for_status()?;
    }
    let results: Vec<R<(Duration, String)>> = futures::stream::iter(0..n)
        .map(|i| {
            let service = format!("s{i:03}");
            let root = root.to_str().unwrap().to_owned();
            let project = project.clone();
            async move {
                b.wharf_deploy(&[&root, "-p", &project, "-s", &service])
                    .await
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        progress(format!("a tiny service failed: {e}"));
    }
    Ok((start.elapsed(), failed))
}

/// Row 6: The core in process: planner at 10,000 services; 200 concurrent deployments.
async fn scale(tmp: &Path, out: &mut Vec<String>) -> R<()> {
    let services = layered_dag(10_000);
    let mut plan = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let g = wharf_core::planner::DependencyGraph::new(&services)?;
        let waves = g.waves();
        plan.push(t.elapsed());
        assert_eq!(waves.len(), 50);
    }
    out.push(format!(
        "| 6 | Planner: graph + waves of 10,000 services (29,400 edges, 50 waves), median of 20 | | {} | {:.2} M services/s |",
        ms(median(&plan)),
        10_000.0 / median(&plan).as_secs_f64() / 1e6
    ));
    for (kind, runs) in [("memory", 5), ("sqlite", 3)] {
        let mut took = Vec::new();
        for r in 0..runs {
            let dir = tmp.join(format!("scale-{kind}-{r}"));
            std::fs::create_dir_all(&dir)?;
            let store: wharf_core::DynStore = match kind {
                "memory" => Arc::new(wharf_core::store::MemoryStore::new()),
                _ => Arc::new(wharf_core::store::SqliteStore::open(dir.join("wharf.db"))?),
            };
            took.push(deploy_all(store, &dir, 200).await);
        }
        let m = median(&took);
        out.push(format!(
            "| 6 | Engine: 200 concurrent deployments, in-memory backends, {kind} store, none lost; median of {runs} | | {} | **{:.0} deployments/s** |",
            ms(m),
            200.0 / m.as_secs_f64()
        ));
    }
    Ok(())
}

/// Removes every container, network and image whose name holds `wb<id>` (and only
/// those): the run's own resources.
async fn cleanup(id: &str) {
    let tag = format!("wb{id}");
    let label = format!("label=wharf.bench={id}");
    let by_name = Some(tag.as_str());
    let containers = sweep(
        &["ps", "-a", "--format", "{{.Names}}"],
        by_name,
        &["rm", "-f"],
    )
    .await;
    sweep(&["ps", "-aq", "--filter", &label], None, &["rm", "-f"]).await;
    let networks = sweep(
        &["network", "ls", "--format", "{{.Name}}"],
        by_name,
        &["network", "rm"],
    )
    .await;
    let images = sweep(
        &["images", "--format", "{{.Repository}}:{{.Tag}}"],
        by_name,
        &["rmi"],
    )
    .await;
    sweep(&["images", "-q", "--filter", &label], None, &["rmi"]).await;
    progress(format!(
        "cleaned up {containers} containers, {networks} networks, {images} images named wb{id}"
    ));
}

/// Removes with `docker <remove>` what `docker <list>` lists (only the names holding
/// `holding`, when given); how many.
async fn sweep(list: &[&str], holding: Option<&str>, remove: &[&str]) -> usize {
    let found: Vec<String> = run(&mut docker(list))
        .await
        .unwrap_or_default()
        .lines()
        .filter(|n| holding.is_none_or(|t| n.contains(t)))
        .map(str::to_owned)
        .collect();
    if !found.is_empty() {
        let _ = run(docker(remove).args(&found)).await;
    }
    found.len()
}

async fn sh(cmd: &str) -> String {
    run(Command::new("sh").args(["-c", cmd]))
        .await
        .unwrap_or_else(|e| format!("? ({e})"))
}

async fn machine() -> String {
    let mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo").await;
    format!(
        "{} UTC; {} cores ({}), {mem} RAM, kernel {}; load average at start {}; Docker {}; Caddy {}; Traefik {}; docker-compose {}",
        sh("date -u '+%Y-%m-%d %H:%M'").await,
        sh("nproc").await,
        sh("awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo").await,
        sh("uname -r").await,
        sh("cut -d' ' -f1-3 /proc/loadavg").await,
        sh("docker version --format '{{.Server.Version}}'").await,
        sh("\"$WHARF_BENCH_CADDY\" version | cut -d' ' -f1").await,
        sh("\"$WHARF_BENCH_TRAEFIK\" version 2>/dev/null | awk '/Version/{print $2; exit}'").await,
        sh("docker-compose version --short").await,
    )
}

async fn bench(tmp: PathBuf, id: String) -> R<()> {
    let (tmp, id) = (tmp.as_path(), id.as_str());
    let rounds = env_num("WHARF_BENCH_RUNS", 5);
    let multi_rounds = env_num("WHARF_BENCH_MULTI_RUNS", 3);
    let services = env_num("WHARF_BENCH_SERVICES", 100);
    let wharf = match std::env::var_os("WHARF_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?.with_file_name("wharf"),
    };
    let caddy_bin = std::env::var("WHARF_BENCH_CADDY").unwrap_or_else(|_| "caddy".into());
    for (what, probe) in [
        ("docker", "docker info"),
        ("docker-compose", "docker-compose version"),
        (
            "base images",
            "docker image inspect wharf-local/busybox:1 wharf-local/debian-runtimes:bookworm",
        ),
    ] {
        run(Command::new("sh").args(["-c", &format!("{probe} >/dev/null")]))
            .await
            .map_err(|e| {
                format!("{what} missing ({e}); prepare the machine as benches/README.md says")
            })?;
    }
    let header = machine().await;
    progress(&header);

    // Our own Caddy: admin, a server for the plain sequences, and the port wharf uses.
    let (admin_port, plain_port, wharf_port) = (free_port(), free_port(), free_port());
    let caddy_admin = format!("http://127.0.0.1:{admin_port}");
    let caddy_dir = tmp.join("caddy");
    std::fs::create_dir_all(&caddy_dir)?;
    std::fs::write(
        caddy_dir.join("caddy.json"),
        json!({
            "admin": {"listen": format!("127.0.0.1:{admin_port}")},
            "logging": {"logs": {"default": {"level": "ERROR"}}},
            "apps": {"http": {"http_port": wharf_port, "servers": {"plain": {
                "listen": [format!("127.0.0.1:{plain_port}")],
                "routes": [],
                "automatic_https": {"disable": true},
            }}}},
        })
        .to_string(),
    )?;
    let mut caddy = Proc::spawn(
        Command::new(&caddy_bin)
            .args(["run", "--config"])
            .arg(caddy_dir.join("caddy.json"))
            .env("XDG_DATA_HOME", &caddy_dir)
            .env("XDG_CONFIG_HOME", &caddy_dir),
        tmp.join("caddy.log"),
    )?;
    caddy
        .wait_answering(&format!("{caddy_admin}/config/"))
        .await?;

    // Our own Traefik (file provider in a folder of ours), when a binary is found.
    let traefik_bin = std::env::var("WHARF_BENCH_TRAEFIK")
        .ok()
        .filter(|b| Path::new(b).exists());
    let mut traefik = None;
    if let Some(bin) = traefik_bin {
        let (web, api) = (free_port(), free_port());
        let dir = tmp.join("traefik");
        let dynamic = dir.join("dynamic");
        std::fs::create_dir_all(&dynamic)?;
        std::fs::write(
            dir.join("traefik.yml"),
            format!(
                "global:\n  checkNewVersion: false\n  sendAnonymousUsage: false\nentryPoints:\n  web:\n    address: \"127.0.0.1:{web}\"\n  traefik:\n    address: \"127.0.0.1:{api}\"\nping:\n  entryPoint: traefik\nlog:\n  level: ERROR\nproviders:\n  providersThrottleDuration: 100ms\n  file:\n    directory: \"{}\"\n    watch: true\n",
                dynamic.display()
            ),
        )?;
        let mut p = Proc::spawn(
            Command::new(bin).arg(format!(
                "--configFile={}",
                dir.join("traefik.yml").display()
            )),
            tmp.join("traefik.log"),
        )?;
        p.wait_answering(&format!("http://127.0.0.1:{api}/ping"))
            .await?;
        traefik = Some((p, web, dynamic));
    }

    // Our own `wharf serve`: Docker runtime, our Caddy, a data folder of its own.
    let api_port = free_port();
    let data = tmp.join("wharf-data");
    let mut serve = Proc::spawn(
        Command::new(&wharf)
            .arg("serve")
            .current_dir(tmp)
            .env("WHARF_DATA_DIR", &data)
            .env("WHARF_LISTEN", format!("127.0.0.1:{api_port}"))
            .env("WHARF_PROXY_LISTEN", format!("127.0.0.1:{wharf_port}"))
            .env("WHARF_RUNTIME", "docker")
            .env("WHARF_ROUTER", "caddy")
            .env("WHARF_CADDY_ADMIN", &caddy_admin)
            .env(
                "WHARF_BASE_IMAGES",
                "python=wharf-local/debian-runtimes:bookworm",
            ),
        tmp.join("serve.log"),
    )?;
    let api = format!("http://127.0.0.1:{api_port}");
    serve.wait_answering(&format!("{api}/v1/health")).await?;
    let token = std::fs::read_to_string(data.join("admin-token"))?
        .trim()
        .to_owned();
    let b = Bench {
        id: id.to_owned(),
        tmp: tmp.to_owned(),
        wharf,
        api,
        token,
        caddy_admin,
        wharf_port,
        plain_port,
        http: client(),
    };
    let tck: f64 = sh("getconf CLK_TCK").await.parse().unwrap_or(100.0);
    let pid = serve.pid();

    let mut rows = Vec::new();
    let mut notes = Vec::new();

    // 5a. Footprint idle, before anything is deployed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_rss, _) = rss(pid);
    progress("measuring idle CPU over 10 s");
    let idle_cpu = cpu_percent(pid, 10, tck).await;

    // WHARF_BENCH_ONLY=1,4 runs some sections (3 needs 1's service).
    let only = std::env::var("WHARF_BENCH_ONLY").unwrap_or_default();
    let on = |n: &str| only.is_empty() || only.split(',').any(|s| s.trim() == n);
    if on("1") {
        progress("1. deploy: plain docker vs wharf deploy");
        notes.push(deploy_compare(&b, rounds, &mut rows).await?);
    }
    if on("2") {
        progress("2. multi-service: docker-compose vs wharf.toml");
        notes.push(multi_compare(&b, multi_rounds, &mut rows).await?);
    }
    if on("3") && on("1") {
        progress("3. zero downtime");
        notes.push(zero_downtime(&b, &mut rows).await?);
        zero_downtime_wrk(&b, &mut rows).await?;
    }
    if on("4") {
        progress("4. route switch");
        switches(
            &b,
            traefik.as_ref().map(|(_, web, dir)| (*web, dir.clone())),
            &mut rows,
        )
        .await?;
    }

    let services = if on("5") { services } else { 0 };
    progress(format!("5. footprint: deploying {services} tiny services"));
    let (after_rss, _) = rss(pid);
    let (took, failed) = many_services(&b, services).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (full_rss, peak) = rss(pid);
    progress("measuring CPU with the services deployed over 10 s");
    let full_cpu = cpu_percent(pid, 10, tck).await;
    let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    rows.push(format!(
        "| 5 | `wharf serve` resident memory (VmRSS) | idle, nothing deployed: **{}** | {services} tiny services live (+ the 4 of 1-3): **{}** (peak {}) | after 1-4, before the {services}: {} |",
        mib(idle_rss), mib(full_rss), mib(peak), mib(after_rss)
    ));
    rows.push(format!(
        "| 5 | `wharf serve` CPU while idle, over 10 s (/proc/<pid>/stat, 10 ms ticks: 0.1 % resolution) | nothing deployed: **{idle_cpu:.2} %** | {services} services live: **{full_cpu:.2} %** | of one core |"
    ));
    rows.push(format!(
        "| 5 | Deploying the {services} busybox httpd services (4 `wharf deploy` at a time) | | {} ({:.1} services/s) | {failed} failed |",
        ms(took),
        services as f64 / took.as_secs_f64()
    ));

    if on("6") {
        progress("6. core scale (in process)");
        scale(tmp, &mut rows).await?;
    }

    // Delete the projects through the API (containers and routes), then the rest.
    for p in ["d", "s", "f"] {
        let _ = b
            .http
            .delete(format!("{}/v1/projects/wb{id}{p}", b.api))
            .bearer_auth(&b.token)
            .timeout(Duration::from_secs(300))
            .send()
            .await;
    }
    drop(serve);
    drop(traefik);
    drop(caddy);

    println!("Machine: {header}\n");
    println!("| # | Measure | plain tool / baseline | Wharf | Wharf / plain, or note |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    println!();
    for n in &notes {
        println!("{n}");
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let tmp = tempfile::Builder::new()
        .prefix("wharf-e2e-")
        .tempdir()
        .expect("temp dir");
    progress(format!("run id {id}, working in {}", tmp.path().display()));
    // In a task of its own, so a panic still reaches the cleanup.
    let result = match tokio::spawn(bench(tmp.path().to_owned(), id.clone())).await {
        Ok(r) => r,
        Err(e) => Err(format!("the benchmark panicked: {e}").into()),
    };
    cleanup(&id).await;
    if let Err(e) = result {
        eprintln!("e2e: failed: {e}");
        if std::env::var_os("WHARF_BENCH_KEEP").is_some() {
            let kept = tmp.keep();
            eprintln!("e2e: logs kept in {}", kept.display());
        }
        std::process::exit(1);
    }
}
