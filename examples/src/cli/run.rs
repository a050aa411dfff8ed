//! `wharf run`: a one-off command in a fresh instance of a service's live release;
//! `wharf scale`: replica counts of process types.

use wharf_server::client::CliError;
use wharf_server::dto::{RunDetached, RunRequest, RunResult, ScaleRequest, ScaleView, ServiceView};

use super::args::{RunArgs, ScaleArgs};
use super::logs::print_log_line;

/// The exit code `wharf run` returns when the command ran past its timeout (as
/// coreutils' `timeout` does).
const TIMED_OUT: i32 = 124;

/// `wharf run`: streams the command's output as it comes (its standard error to
/// standard error) and returns its exit code.
pub(crate) async fn run(a: RunArgs) -> Result<i32, CliError> {
    let c = a.remote.client()?;
    let (scope, service) = a.target.resolve()?;
    let body = RunRequest {
        command: a.command,
        timeout_secs: a.timeout,
        detach: a.detach,
    };
    if a.detach {
        let path = format!("{}/run", scope.service(&service));
        let d: RunDetached = c.send(reqwest::Method::POST, &path, &body).await?;
        eprintln!(
            "running in the background; stopped and removed after {} s at the most",
            d.ttl_secs
        );
        return Ok(0);
    }
    let mut result: Option<RunResult> = None;
    let mut failed = None;
    let mut closed = false;
    let path = format!("{}/run", scope.service(&service));
    c.sse_post(&path, &body, |event, data| {
        match event {
            "log" if print_log_line(data).is_err() => {
                closed = true;
                return false;
            }
            "exit" => result = serde_json::from_str(data).ok(),
            "error" => failed = Some(data.to_owned()),
            _ => {}
        }
        true
    })
    .await?;
    if closed {
        return Ok(1);
    }
    if let Some(e) = failed {
        return Err(format!("could not run the command: {e}").into());
    }
    let Some(r) = result else {
        return Err("the server ended the stream before the command ended".into());
    };
    if r.exit_code != Some(0) {
        eprintln!("wharf: the command {}", r.reason);
    }
    Ok(match (r.exit_code, r.timed_out) {
        (_, true) => TIMED_OUT,
        (Some(code), false) => code,
        (None, false) => 1,
    })
}

/// `wharf scale`: sends the `TYPE=COUNT` pairs and prints the counts and what runs;
/// without pairs, prints the service's counts.
pub(crate) async fn scale(a: ScaleArgs) -> Result<i32, CliError> {
    let c = a.remote.client()?;
    let (scope, service) = a.target.resolve()?;
    let base = scope.service(&service);
    if a.counts.is_empty() {
        let svc: ServiceView = c.get(&base).await?;
        println!("web={}", svc.replicas.get("web").copied().unwrap_or(1));
        for (name, _) in svc
            .processes
            .iter()
            .filter(|(n, _)| *n != "web" && *n != "release")
        {
            println!("{name}={}", svc.replicas.get(name).copied().unwrap_or(1));
        }
        return Ok(0);
    }
    let mut replicas = std::collections::BTreeMap::new();
    for pair in &a.counts {
        let parsed = pair
            .split_once('=')
            .and_then(|(t, n)| Some((t.trim().to_owned(), n.trim().parse::<u32>().ok()?)));
        let Some((name, n)) = parsed else {
            return Err(format!("{pair:?} is not TYPE=COUNT (web=3, worker=0)").into());
        };
        replicas.insert(name, n);
    }
    let view: ScaleView = c
        .send(
            reqwest::Method::PUT,
            &format!("{base}/scale"),
            &ScaleRequest { replicas },
        )
        .await?;
    for (name, n) in &view.replicas {
        match view.running.get(name) {
            Some(r) => println!("{name}={n} ({r} running)"),
            None => println!("{name}={n}"),
        }
    }
    eprintln!("{}", view.message);
    Ok(0)
}
