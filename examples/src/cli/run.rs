//! `wharf run`: a one-off command in a fresh instance of a service's live release.

use wharf_server::client::CliError;
use wharf_server::dto::{RunRequest, RunResult};

use super::args::RunArgs;
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
    };
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
