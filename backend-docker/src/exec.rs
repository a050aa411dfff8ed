//! Commands run inside a running container ([`Runtime::exec`](wharf_core::traits::Runtime::exec)):
//! database dumps and restores.

use std::collections::BTreeMap;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::Docker;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use wharf_core::{ByteStream, Error, ErrorKind, Result};

use crate::error::map;

/// How much of a command's standard error a failure carries (its end).
const STDERR_TAIL: usize = 4096;

/// Runs `command` in container `cid` with `env`, feeding `stdin` if given, and streams
/// its standard output; a non-zero exit ends the stream with an error naming the code
/// and the tail of standard error.
pub(crate) async fn run(
    docker: &Docker,
    cid: &str,
    command: &[String],
    env: &BTreeMap<String, String>,
    stdin: Option<ByteStream>,
) -> Result<ByteStream> {
    let program = command
        .first()
        .cloned()
        .ok_or_else(|| Error::invalid("exec: an empty command"))?;
    // `KEY=VALUE` strings: a key with `=` would set another variable.
    for (k, v) in env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return Err(Error::invalid(format!(
                "exec: bad environment variable {k:?}"
            )));
        }
    }
    let created = docker
        .create_exec(
            cid,
            CreateExecOptions {
                cmd: Some(command.to_vec()),
                env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                attach_stdin: Some(stdin.is_some()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(false),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| map(e, &format!("exec {program} in {cid}")))?;
    let exec_id = created.id;
    let (mut output, mut input) = match docker
        .start_exec(&exec_id, None)
        .await
        .map_err(|e| map(e, &format!("start {program} in {cid}")))?
    {
        StartExecResults::Attached { output, input } => (output, input),
        StartExecResults::Detached => {
            return Err(Error::internal("exec started detached"));
        }
    };
    // Standard input is written by a task of its own (the command may write its
    // output while it reads), then closed: the half-close ends the command's stdin.
    let feeder = stdin.map(|mut data| {
        tokio::spawn(async move {
            while let Some(chunk) = data.next().await {
                let chunk = chunk?;
                input.write_all(&chunk).await?;
            }
            input.shutdown().await?;
            Ok::<(), Error>(())
        })
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(16);
    let docker = docker.clone();
    let cid = cid.to_owned();
    tokio::spawn(async move {
        let mut stderr: Vec<u8> = Vec::new();
        while let Some(frame) = output.next().await {
            match frame {
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    if tx.send(Ok(message)).await.is_err() {
                        // The reader went away: nothing more to deliver.
                        return;
                    }
                }
                Ok(LogOutput::StdErr { message }) => {
                    stderr.extend_from_slice(&message);
                    if stderr.len() > 2 * STDERR_TAIL {
                        stderr.drain(..stderr.len() - STDERR_TAIL);
                    }
                }
                Ok(LogOutput::StdIn { .. }) => {}
                Err(e) => {
                    let _ = tx
                        .send(Err(map(e, &format!("read the output of {program}"))))
                        .await;
                    return;
                }
            }
        }
        let fed = match feeder {
            Some(task) => match task.await {
                Ok(r) => r,
                Err(e) => Err(Error::internal(format!("stdin task: {e}"))),
            },
            None => Ok(()),
        };
        let code = exit_code(&docker, &exec_id).await;
        let tail = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(STDERR_TAIL)..])
            .trim()
            .to_owned();
        let failure = match (code, fed) {
            (Ok(0), Ok(())) => None,
            (Ok(0), Err(e)) => Some(e.context(format!("feeding {program}'s input"))),
            (Ok(c), _) => Some(Error::new(
                ErrorKind::Backend,
                format!("{program} in {cid} exited with code {c}: {tail}"),
            )),
            (Err(e), _) => Some(e),
        };
        if let Some(e) = failure {
            let _ = tx.send(Err(e.with_backend("docker"))).await;
        }
    });
    let mut rx = rx;
    Ok(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed())
}

/// The exec's exit code once Docker says it stopped running (briefly after its
/// output ends).
async fn exit_code(docker: &Docker, exec_id: &str) -> Result<i64> {
    for _ in 0..100 {
        let info = docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| map(e, "inspect exec"))?;
        if info.running != Some(true) {
            return Ok(info.exit_code.unwrap_or(-1));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(Error::new(
        ErrorKind::Backend,
        "the command's output ended but Docker still reports it running",
    ))
}
