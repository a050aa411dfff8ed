//! A control plane to kill: `crash-child DIR setup|deploy POINT|recover`.
//!
//! - `setup`: creates project `demo` with service `web` (a folder source) on a SQLite
//!   store in DIR, deploys it and waits until it is live.
//! - `deploy POINT`: changes the source and deploys again, dying by SIGKILL at POINT
//!   (see `wharf_tests::crash::CrashPoint`; at `release`, the service gets a release
//!   command first; the canary points deploy a canary at 10 %, and the promote
//!   points promote it). Exits 3 if it never got there.
//! - `recover`: a fresh engine on the same store and doubles runs `Engine::recover`,
//!   waits for what it resumed, and prints the report as JSON.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wharf_core::store::SqliteStore;
use wharf_core::*;
use wharf_tests::crash::{CrashBuilder, CrashPoint, FileRouter, FileRuntime};

fn engine(dir: &Path, store: Arc<SqliteStore>, crash: Option<CrashPoint>) -> Result<Engine> {
    Engine::builder()
        .store(store)
        .builder(Arc::new(CrashBuilder::new(crash)))
        .runtime(Arc::new(FileRuntime::new(dir, crash)))
        .router(Arc::new(FileRouter::new(dir, crash)))
        .work_dir(dir.join("work"))
        .stop_grace(Duration::ZERO)
        .build()
}

async fn web(store: &SqliteStore) -> Result<Service> {
    let project = store
        .projects()
        .await?
        .into_iter()
        .find(|p| p.name == "demo")
        .ok_or_else(|| Error::not_found("project demo: run setup first"))?;
    store
        .services(&project.id)
        .await?
        .into_iter()
        .find(|s| s.name == "web")
        .ok_or_else(|| Error::not_found("service web"))
}

async fn run(dir: PathBuf, mode: &str, point: Option<&str>) -> Result<()> {
    let store = Arc::new(SqliteStore::open(dir.join("wharf.db"))?);
    let src = dir.join("src");
    match mode {
        "setup" => {
            std::fs::create_dir_all(&src)?;
            std::fs::write(src.join("app.py"), "print('v1')\n")?;
            let project = Project::new("demo")?;
            store.put_project(&project).await?;
            let mut svc = Service::new(&project.id, "web", SourceSpec::Dir { path: src })?;
            svc.health_check = Some(HealthCheck {
                probe: Probe::Http { path: "/".into() },
                interval: Duration::from_millis(10),
                timeout: Duration::from_secs(5),
            });
            store.put_service(&svc).await?;
            let engine = engine(&dir, store.clone(), None)?;
            let dep = engine
                .deploy(&svc.id, Trigger::Manual)
                .await?
                .wait()
                .await?;
            println!("{}", dep.id);
            if dep.state != DeploymentState::Live {
                return Err(Error::internal(format!("setup ended {}", dep.state)));
            }
        }
        "deploy" => {
            let point = point
                .and_then(CrashPoint::parse)
                .ok_or_else(|| Error::invalid("deploy needs a crash point"))?;
            std::fs::write(src.join("app.py"), "print('v2')\n")?;
            let engine = engine(&dir, store.clone(), Some(point))?;
            let mut svc = web(&store).await?;
            if point == CrashPoint::Release {
                svc.processes
                    .insert("release".into(), "./migrate --all".into());
                store.put_service(&svc).await?;
            }
            if point.canary() {
                return canary(&dir, store.clone(), &svc, point).await;
            }
            let dep = engine
                .deploy(&svc.id, Trigger::Manual)
                .await?
                .wait()
                .await?;
            eprintln!(
                "crash point {} never reached: ended {}",
                point.name(),
                dep.state
            );
            std::process::exit(3);
        }
        "recover" => {
            let engine = engine(&dir, store.clone(), None)?;
            let report = engine.recover().await?;
            // Wait for deployments that recovery restarted to end (their old
            // release retired).
            engine.wait_idle().await;
            println!("{}", serde_json::to_string(&report)?);
        }
        other => return Err(Error::invalid(format!("unknown mode {other}"))),
    }
    Ok(())
}

/// The canary crash points: deploys a canary at 10 % (dying on the way at
/// `canary-route`), dies once it is out (`canary-out`), or promotes it with an
/// engine that dies on the way (`promote-*`).
async fn canary(
    dir: &Path,
    store: Arc<SqliteStore>,
    svc: &Service,
    point: CrashPoint,
) -> Result<()> {
    let deploying = if point == CrashPoint::CanaryRoute {
        Some(point)
    } else {
        None
    };
    let deployer = engine(dir, store.clone(), deploying)?;
    let dep = deployer
        .deploy_canary(&svc.id, Trigger::Manual, None, 10)
        .await?
        .wait()
        .await?;
    if dep.state != DeploymentState::Canary {
        eprintln!("the canary ended {}", dep.state);
        std::process::exit(3);
    }
    if point == CrashPoint::CanaryOut {
        wharf_tests::crash::die();
    }
    let promoting = engine(dir, store, Some(point))?;
    let dep = promoting.promote(&dep.id).await?;
    eprintln!(
        "crash point {} never reached: ended {}",
        point.name(),
        dep.state
    );
    std::process::exit(3);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(mode)) = (args.first(), args.get(1)) else {
        eprintln!("usage: crash-child DIR setup|deploy POINT|recover");
        std::process::exit(2);
    };
    if let Err(e) = run(PathBuf::from(dir), mode, args.get(2).map(String::as_str)).await {
        eprintln!("crash-child {mode}: {e}");
        std::process::exit(1);
    }
}
