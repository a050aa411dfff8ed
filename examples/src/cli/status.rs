//! What is deployed where: `wharf ls`, `wharf status`, `wharf services`.

use serde_json::Value;

use wharf_server::client::{CliError, Client, Scope};

use super::args::{ProjectArg, Remote};
use super::output::print_table;

/// `wharf ls`: every project visible to the token, its services and its
/// environments' services.
pub(crate) async fn ls(remote: Remote) -> Result<i32, CliError> {
    let c = remote.client()?;
    let print_services = |services: Value, indent: &str| {
        for s in services.as_array().into_iter().flatten() {
            println!(
                "{indent}{:<20} {:<45} live: {}",
                s["name"].as_str().unwrap_or("?"),
                s["url"].as_str().unwrap_or(""),
                s["live_deployment"].as_str().unwrap_or("-")
            );
        }
    };
    for p in c.get("/projects").await?.as_array().into_iter().flatten() {
        let mut scope = Scope {
            project: p["name"].as_str().unwrap_or("?").to_owned(),
            environment: None,
        };
        println!("{}", scope.project);
        print_services(c.get(&scope.services()).await?, "  ");
        let envs = c.get(&format!("{}/environments", scope.path())).await?;
        for e in envs.as_array().into_iter().flatten() {
            let env = e["name"].as_str().unwrap_or("?");
            let kind = e["kind"]["kind"].as_str().unwrap_or("standing");
            println!("  environment {env} ({kind})");
            scope.environment = Some(env.to_owned());
            print_services(c.get(&scope.services()).await?, "    ");
        }
    }
    Ok(0)
}

/// The services of `scope`; when there are none, says so.
async fn services_of(c: &Client, scope: &Scope) -> Result<Vec<Value>, CliError> {
    let services = c.get(&scope.services()).await?;
    let services = services.as_array().cloned().unwrap_or_default();
    if services.is_empty() {
        println!("{scope} has no services yet: `wharf deploy` adds one");
    }
    Ok(services)
}

/// `wharf status`: one row per service of the project (or environment).
pub(crate) async fn status(target: ProjectArg, remote: Remote) -> Result<i32, CliError> {
    let scope = target.resolve()?;
    let c = remote.client()?;
    let services = services_of(&c, &scope).await?;
    if services.is_empty() {
        return Ok(0);
    }
    let mut rows = Vec::new();
    for s in &services {
        let name = s["name"].as_str().unwrap_or("?");
        let base = scope.service(name);
        let release = match s["live_deployment"].as_str() {
            Some(id) => live_release(&c, &base, id).await?,
            None => "-".to_owned(),
        };
        let last = last_deployment(&c, &base).await?;
        rows.push(vec![
            name.to_owned(),
            release,
            last,
            s["url"].as_str().unwrap_or("-").to_owned(),
        ]);
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
async fn live_release(c: &Client, base: &str, id: &str) -> Result<String, CliError> {
    let live = c.get(&format!("/deployments/{id}")).await?;
    let releases = c.get(&format!("{base}/releases")).await?;
    Ok(releases
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["id"] == live["release"])
        .and_then(|r| r["number"].as_u64())
        .map_or_else(|| "?".to_owned(), |n| format!("v{n}")))
}

/// `state: reason (id)` of the last deployment of the service at `base`.
async fn last_deployment(c: &Client, base: &str) -> Result<String, CliError> {
    let last = c.get(&format!("{base}/deployments?limit=1")).await?;
    Ok(match last.get(0) {
        Some(d) => {
            let st = &d["state"];
            let reason = st["reason"]
                .as_str()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            format!(
                "{}{reason} ({})",
                st["state"].as_str().unwrap_or("?"),
                d["id"].as_str().unwrap_or("?")
            )
        }
        None => "never deployed".to_owned(),
    })
}

/// `wharf services`: name, liveness, URL and dependencies of each service.
pub(crate) async fn services(target: ProjectArg, remote: Remote) -> Result<i32, CliError> {
    let scope = target.resolve()?;
    let c = remote.client()?;
    let services = services_of(&c, &scope).await?;
    if services.is_empty() {
        return Ok(0);
    }
    let rows = services.iter().map(|s| {
        let deps: Vec<&str> = s["depends_on"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        vec![
            s["name"].as_str().unwrap_or("?").to_owned(),
            if s["live_deployment"].is_string() {
                "yes"
            } else {
                "no"
            }
            .to_owned(),
            s["url"].as_str().unwrap_or("-").to_owned(),
            if deps.is_empty() {
                "-".to_owned()
            } else {
                deps.join(",")
            },
        ]
    });
    print_table(&["SERVICE", "LIVE", "URL", "DEPENDS ON"], rows);
    Ok(0)
}
