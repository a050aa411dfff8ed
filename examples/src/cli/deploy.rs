//! `wharf deploy` (a folder, a `wharf.toml` of several services, a git repository or
//! an image; as a canary too), `wharf rollback`, `wharf promote` and `wharf abort`.

use std::path::Path;

use serde::de::IgnoredAny;
use wharf_core::{Deployment, DeploymentState};

use wharf_server::client::{self, CliError, Client, Scope};
use wharf_server::dto::{
    DatabaseView, DeployRequest, ImageRef, RollbackRequest, ServiceView, SourceInput,
};
use wharf_server::manifest::Manifest;

use super::args::{folder_name, CanaryArgs, DeployArgs, ProjectArg, RollbackArgs, Target};
use super::output::print_event;

/// `wharf deploy`.
pub(crate) async fn run(a: DeployArgs) -> Result<i32, CliError> {
    let c = a.remote.client()?;
    let remote_source = match (&a.image, &a.git) {
        (Some(image), _) => Some((image.clone(), SourceInput::Image(ImageRef(image.clone())))),
        (None, Some(url)) => Some((
            url.clone(),
            SourceInput::Git {
                url: url.clone(),
                reference: a.reference.clone(),
                subdir: None,
            },
        )),
        (None, None) => None,
    };
    if let Some((what, source)) = remote_source {
        return deploy_source(&c, a, &what, source).await;
    }
    if a.service.is_none() {
        if let Some(m) = Manifest::load(&a.path)? {
            if a.canary.is_some() && m.services.len() > 1 {
                return Err("--canary deploys one service: pass --service".into());
            }
            return deploy_manifest(&c, &a.path, m, a.project, a.environment, a.detach).await;
        }
    }
    deploy_folder(&c, a).await
}

/// Deploys `source`, an image or a git repository named `what`, that the server
/// fetches itself.
async fn deploy_source(
    c: &Client,
    a: DeployArgs,
    what: &str,
    source: SourceInput,
) -> Result<i32, CliError> {
    let service = match a.service {
        Some(s) => s,
        None => client::name_from_reference(what)
            .ok_or_else(|| format!("cannot name the service after {what:?}: pass --service"))?,
    };
    let project = a
        .project
        .ok_or("deploying an image or a git repository needs --project")?;
    let scope = Scope {
        project,
        environment: a.environment,
    };
    client::ensure(c, &scope, &service, a.port).await?;
    let request = DeployRequest {
        source: Some(source),
        canary: a.canary,
    };
    let dep = c
        .send(
            reqwest::Method::POST,
            &format!("{}/deployments", scope.service(&service)),
            &request,
        )
        .await?;
    follow_deploy(c, &scope, &service, &dep, a.detach).await
}

/// Packs and uploads the folder of `a` as one service.
async fn deploy_folder(c: &Client, a: DeployArgs) -> Result<i32, CliError> {
    let path = a.path;
    let service = a
        .service
        .or_else(|| folder_name(&path))
        .ok_or("cannot name the service: pass --service")?;
    let project = a
        .project
        .or_else(|| folder_name(&path.join("..")))
        .ok_or("cannot name the project: pass --project")?;
    let scope = Scope {
        project,
        environment: a.environment,
    };
    client::ensure(c, &scope, &service, a.port).await?;
    let archive = client::pack(&path)?;
    println!("uploading {} ({} bytes)", path.display(), archive.len());
    let bar = client::Progress::on_tty(&service, archive.len() as u64);
    let dep = c
        .deploy_archive(&scope, &service, archive, bar, a.canary)
        .await?;
    follow_deploy(c, &scope, &service, &dep, a.detach).await
}

/// Prints the deployment's id, then (unless `detach`) follows it: 0 and the service's
/// URL as the last line once live, 1 with how it ended otherwise.
async fn follow_deploy(
    c: &Client,
    scope: &Scope,
    service: &str,
    dep: &Deployment,
    detach: bool,
) -> Result<i32, CliError> {
    println!("deployment {}", dep.id);
    if detach {
        return Ok(0);
    }
    let state = c.follow(dep.id.as_str(), print_event).await?;
    let svc: ServiceView = c.get(&scope.service(service)).await?;
    if state == DeploymentState::Live {
        println!("live at {}", svc.url);
        Ok(0)
    } else if state == DeploymentState::Canary {
        println!(
            "out as a canary at {} beside the live release: `wharf promote` or `wharf abort`",
            svc.url
        );
        Ok(0)
    } else {
        eprintln!("deployment ended {}", state.name());
        Ok(1)
    }
}

/// Deploys every service of a `wharf.toml`, wave by wave in dependency order; a
/// failure stops the waves after it.
async fn deploy_manifest(
    c: &Client,
    dir: &Path,
    m: Manifest,
    project: Option<String>,
    environment: Option<String>,
    detach: bool,
) -> Result<i32, CliError> {
    let waves = m.waves()?;
    let project = project
        .or_else(|| m.project.clone())
        .or_else(|| folder_name(dir))
        .ok_or("cannot name the project: pass --project")?;
    let scope = Scope {
        project,
        environment,
    };
    client::ensure_scope(c, &scope).await?;
    if !ensure_databases(c, &scope, &m, detach).await? {
        return Ok(1);
    }
    configure_services(c, &scope, &m, &waves).await?;
    for (i, wave) in waves.iter().enumerate() {
        println!("==> wave {}: {}", i + 1, wave.join(", "));
        let started = upload_wave(c, &scope, dir, &m, wave).await?;
        if detach {
            continue;
        }
        for (name, id) in &started {
            let state = c
                .follow(id, |ev| {
                    print!("[{name}] ");
                    print_event(ev)
                })
                .await?;
            if state != DeploymentState::Live {
                let rest: Vec<String> = waves[i + 1..].iter().flatten().cloned().collect();
                eprintln!("{name}: deployment ended {}", state.name());
                if !rest.is_empty() {
                    eprintln!(
                        "not deployed (they depend on this wave): {}",
                        rest.join(", ")
                    );
                }
                return Ok(1);
            }
        }
    }
    for name in m.services.keys() {
        let svc: ServiceView = c.get(&scope.service(name)).await?;
        println!("{name} live at {}", svc.url);
    }
    Ok(0)
}

/// Makes the databases `m` declares that `scope`'s project lacks (an existing one is
/// kept as it is: its data and credentials stay), then, unless `detach`, waits for
/// each new one to go live. False when one did not.
async fn ensure_databases(
    c: &Client,
    scope: &Scope,
    m: &Manifest,
    detach: bool,
) -> Result<bool, CliError> {
    if m.databases.is_empty() {
        return Ok(true);
    }
    if scope.environment.is_some() {
        return Err(format!(
            "wharf.toml declares databases, which belong to the project's own services: deploy without --environment (in {scope} they are not made)"
        )
        .into());
    }
    let path = format!("/projects/{}/databases", scope.project);
    let have: Vec<DatabaseView> = c.get(&path).await?;
    let mut started = Vec::new();
    for (name, d) in &m.databases {
        let body = d.input(name)?;
        if let Some(v) = have.iter().find(|v| v.name == *name) {
            if v.engine != body.engine {
                eprintln!(
                    "{name}: wharf.toml says {} but the database is {}: kept as it is",
                    body.engine, v.engine
                );
            }
            continue;
        }
        let v: DatabaseView = c.send(reqwest::Method::POST, &path, &body).await?;
        println!("==> database {name}: {} {} created", v.engine, v.version);
        if let Some(id) = v.deployment {
            started.push((name.clone(), id));
        }
    }
    if detach {
        return Ok(true);
    }
    for (name, id) in started {
        let state = c
            .follow(&id, |ev| {
                print!("[{name}] ");
                print_event(ev)
            })
            .await?;
        if state != DeploymentState::Live {
            eprintln!(
                "database {name}: deployment ended {}; no service deployed",
                state.name()
            );
            return Ok(false);
        }
    }
    Ok(true)
}

/// Configures every service of `m` in `scope` first, so dependencies are known before
/// any deploy; in wave order, so a service referenced by another (`${{ db.URL }}`)
/// exists when the server checks the reference.
async fn configure_services(
    c: &Client,
    scope: &Scope,
    m: &Manifest,
    waves: &[Vec<String>],
) -> Result<(), CliError> {
    for name in waves.iter().flatten() {
        let mut body = m.service_body(name);
        // Custom domains name the project's own services: an environment's copy of a
        // service must not claim them (it gets its own generated hostname).
        if scope.environment.is_some() {
            let dropped = body.domains.take();
            if dropped.is_some_and(|d| !d.is_empty()) {
                eprintln!(
                    "{name}: the custom domains of wharf.toml stay with the project's own \
                     service, not set in {scope}"
                );
            }
        }
        c.send::<IgnoredAny>(reqwest::Method::PUT, &scope.service(name), &body)
            .await?;
    }
    Ok(())
}

/// Packs and uploads every service of `wave`; their names and deployment ids.
async fn upload_wave(
    c: &Client,
    scope: &Scope,
    dir: &Path,
    m: &Manifest,
    wave: &[String],
) -> Result<Vec<(String, String)>, CliError> {
    let mut started = Vec::new();
    for name in wave {
        let folder = dir.join(m.services[name].path.clone().unwrap_or_default());
        let archive = client::pack(&folder)?;
        println!(
            "uploading {name} from {} ({} bytes)",
            folder.display(),
            archive.len()
        );
        let bar = client::Progress::on_tty(name, archive.len() as u64);
        let dep = c.deploy_archive(scope, name, archive, bar, None).await?;
        started.push((name.clone(), dep.id.to_string()));
    }
    Ok(started)
}

/// `wharf rollback`: follows the rollback's deployment; 0 once live, else 1.
pub(crate) async fn rollback(a: RollbackArgs) -> Result<i32, CliError> {
    let (scope, service) = Target {
        scope: ProjectArg {
            project: a.project_arg.or(a.target.scope.project),
            environment: a.target.scope.environment,
        },
        service: a.service_arg.or(a.target.service),
    }
    .resolve()?;
    let c = a.remote.client()?;
    let body = RollbackRequest {
        release: a.release,
        run_release: a.run_release,
    };
    let dep: Deployment = c
        .send(
            reqwest::Method::POST,
            &format!("{}/rollback", scope.service(&service)),
            &body,
        )
        .await?;
    let state = c.follow(dep.id.as_str(), print_event).await?;
    Ok(if state == DeploymentState::Live { 0 } else { 1 })
}

/// `wharf promote` (`action` "promote") and `wharf abort` ("abort"): finds the
/// service's canary among its recent deployments and acts on it; 0 when done.
pub(crate) async fn canary(a: CanaryArgs, action: &str) -> Result<i32, CliError> {
    let (scope, service) = a.target.resolve()?;
    let c = a.remote.client()?;
    let recent: Vec<Deployment> = c
        .get(&format!("{}/deployments?limit=50", scope.service(&service)))
        .await?;
    let canary = recent
        .into_iter()
        .find(|d| d.state == DeploymentState::Canary)
        .ok_or_else(|| format!("service {service} has no canary out"))?;
    let dep: Deployment = c
        .send(
            reqwest::Method::POST,
            &format!("/deployments/{}/{action}", canary.id),
            &serde_json::Value::Null,
        )
        .await?;
    match dep.state {
        DeploymentState::Live => {
            println!("deployment {} is live: it takes all the traffic", dep.id)
        }
        other => println!(
            "deployment {} is {}: the live release takes all the traffic",
            dep.id,
            other.name()
        ),
    }
    Ok(0)
}
