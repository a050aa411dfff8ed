//! `wharf logs`: a service's app output, or a deployment's events.

use std::io::Write;

use wharf_core::{DeploymentId, DeploymentState, LogLine, LogStream};

use wharf_server::client::{CliError, Client, Scope};
use wharf_server::dto::ServiceView;

use super::args::LogsArgs;
use super::output::print_event;

/// `wharf logs`.
pub(crate) async fn run(a: LogsArgs) -> Result<i32, CliError> {
    let c = a.remote.client()?;
    if let Some(id) = a.deployment {
        let state = c.follow(&id, print_event).await?;
        return Ok(if state == DeploymentState::Live { 0 } else { 1 });
    }
    let (scope, service) = a.target.resolve()?;
    app_logs(&c, &scope, &service, a.follow, a.tail).await
}

/// The live deployment of the service at `base`, if any.
async fn live(c: &Client, base: &str) -> Result<Option<DeploymentId>, CliError> {
    let svc: ServiceView = c.get(base).await?;
    Ok(svc.live_deployment)
}

/// The live instance's output; with `follow`, new lines too, moving on to the new
/// instance when a redeploy replaces it.
async fn app_logs(
    c: &Client,
    scope: &Scope,
    service: &str,
    follow: bool,
    tail: usize,
) -> Result<i32, CliError> {
    let base = scope.service(service);
    let mut attached = live(c, &base).await?;
    if attached.is_none() {
        return Err(format!(
            "{} has no live instance: deploy it first",
            scope.label(service)
        )
        .into());
    }
    let mut tail = tail;
    loop {
        let closed = print_logs(c, &format!("{base}/logs?follow={follow}&tail={tail}")).await?;
        if !follow || closed {
            return Ok(0);
        }
        // The instance stopped: wait for the service's next live instance.
        attached = next_live(c, &base, attached).await?;
        // The new instance's output from its start.
        tail = 10_000;
    }
}

/// Prints the log lines of the stream at `path` until it ends; `true` if the reader
/// of the output went away (`| head`), which ends the command.
async fn print_logs(c: &Client, path: &str) -> Result<bool, CliError> {
    let mut failed = None;
    let mut closed = false;
    c.sse(path, |event, data| {
        match event {
            "log" if print_log_line(data).is_err() => {
                closed = true;
                return false;
            }
            "error" => failed = Some(data.to_owned()),
            _ => {}
        }
        true
    })
    .await?;
    if let Some(e) = failed {
        return Err(format!("reading the logs failed: {e}").into());
    }
    Ok(closed)
}

/// Writes one `log` event's line to stdout or stderr, as the app did. Written, not
/// printed: a reader that went away (`| head`) ends the command instead of panicking
/// it.
pub(crate) fn print_log_line(data: &str) -> std::io::Result<()> {
    let (stderr, text) = match serde_json::from_str::<LogLine>(data) {
        Ok(line) => (line.stream == LogStream::Stderr, line.text),
        Err(_) => (false, data.to_owned()),
    };
    let text = super::output::printable(&text);
    if stderr {
        writeln!(std::io::stderr(), "{text}")
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}").and_then(|()| out.flush())
    }
}

/// Waits for the service at `base` to have a live deployment other than `attached`,
/// says so and returns it.
async fn next_live(
    c: &Client,
    base: &str,
    attached: Option<DeploymentId>,
) -> Result<Option<DeploymentId>, CliError> {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let now = live(c, base).await?;
        if now.is_some() && now != attached {
            if let Some(id) = &now {
                eprintln!("--- now following deployment {id}");
            }
            return Ok(now);
        }
    }
}
