//! What is deployed where: `wharf ls`, `wharf status`, `wharf services`.

use wharf_core::{Deployment, DeploymentId, EnvironmentKind};

use wharf_server::client::{CliError, Client, Scope};
use wharf_server::dto::{EnvironmentView, ProjectView, ReleaseView, ServiceView};

use super::args::{ProjectArg, Remote};
use super::output::{print_table, state_line};

/// `wharf ls`: every project visible to the token, its services and its
/// environments' services.
pub(crate) async fn ls(remote: Remote) -> Result<i32, CliError> {
    let c = remote.client()?;
    let print_services = |services: Vec<ServiceView>, indent: &str| {
        for s in services {
            let live = s.live_deployment.as_ref().map_or("-", DeploymentId::as_str);
            let url = if s.routed {
                s.url.as_str()
            } else {
                "(project network only)"
            };
            println!("{indent}{:<20} {:<45} live: {live}", s.name, url);
        }
    };
    let projects: Vec<ProjectView> = c.get("/projects").await?;
    for p in projects {
        let mut scope = Scope {
            project: p.name,
            environment: None,
        };
        println!("{}", scope.project);
        print_services(c.get(&scope.services()).await?, "  ");
        let envs: Vec<EnvironmentView> = c.get(&format!("{}/environments", scope.path())).await?;
        for e in envs {
            let kind = match e.kind {
                EnvironmentKind::Standing => "standing",
                EnvironmentKind::Preview { .. } => "preview",
            };
            println!("  environment {} ({kind})", e.name);
            scope.environment = Some(e.name);
            print_services(c.get(&scope.services()).await?, "    ");
        }
    }
    Ok(0)
}

/// The client, the scope `target` names and its services; `None` when it has no
/// services, which it says.
async fn services_of(
    target: ProjectArg,
    remote: Remote,
) -> Result<Option<(Client, Scope, Vec<ServiceView>)>, CliError> {
    let scope = target.resolve()?;
    let c = remote.client()?;
    let services: Vec<ServiceView> = c.get(&scope.services()).await?;
    if services.is_empty() {
        println!("{scope} has no services yet: `wharf deploy` adds one");
        return Ok(None);
    }
    Ok(Some((c, scope, services)))
}

/// `wharf status`: one row per service of the project (or environment).
pub(crate) async fn status(target: ProjectArg, remote: Remote) -> Result<i32, CliError> {
    let Some((c, scope, services)) = services_of(target, remote).await? else {
        return Ok(0);
    };
    let mut rows = Vec::new();
    for s in services {
        let base = scope.service(&s.name);
        let release = match &s.live_deployment {
            Some(id) => live_release(&c, &base, id).await?,
            None => "-".to_owned(),
        };
        let last = last_deployment(&c, &base).await?;
        let url = if s.routed {
            s.url
        } else {
            "(project network only)".into()
        };
        rows.push(vec![s.name, release, last, url]);
    }
    println!("{scope}");
    print_table(
        &["SERVICE", "RELEASE", "LAST DEPLOYMENT", "URL"],
        rows.into_iter(),
    );
    Ok(0)
}

/// `v<number>` of the release that live deployment `id` of the service at `base`
/// runs, `?` if it is not among the service's releases.
async fn live_release(c: &Client, base: &str, id: &DeploymentId) -> Result<String, CliError> {
    let live: Deployment = c.get(&format!("/deployments/{id}")).await?;
    let releases: Vec<ReleaseView> = c.get(&format!("{base}/releases")).await?;
    Ok(releases
        .iter()
        .find(|r| live.release.as_ref() == Some(&r.id))
        .map_or_else(|| "?".to_owned(), |r| format!("v{}", r.number)))
}

/// `state: reason (id)` of the last deployment of the service at `base`.
async fn last_deployment(c: &Client, base: &str) -> Result<String, CliError> {
    let last: Vec<Deployment> = c.get(&format!("{base}/deployments?limit=1")).await?;
    Ok(match last.first() {
        Some(d) => format!("{} ({})", state_line(&d.state), d.id),
        None => "never deployed".to_owned(),
    })
}

/// `wharf services`: name, liveness, URL and dependencies of each service.
pub(crate) async fn services(target: ProjectArg, remote: Remote) -> Result<i32, CliError> {
    let Some((_, _, services)) = services_of(target, remote).await? else {
        return Ok(0);
    };
    let rows = services.into_iter().map(|s| {
        let live = if s.live_deployment.is_some() {
            "yes"
        } else {
            "no"
        };
        let deps = if s.depends_on.is_empty() {
            "-".to_owned()
        } else {
            s.depends_on.join(",")
        };
        vec![s.name, live.to_owned(), s.url, deps]
    });
    print_table(&["SERVICE", "LIVE", "URL", "DEPENDS ON"], rows);
    Ok(0)
}
