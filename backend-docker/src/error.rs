//! bollard's errors mapped to wharf-core's error kinds.
//!
//! The engine API answers with an HTTP status and a message. The status decides the
//! kind (404 NotFound, 409 Conflict, 400 InvalidInput...). Two failures the engine
//! reports as a plain 500 are told apart by their message, since the API gives no
//! other signal: a host port already taken (Conflict, so the caller can pick another
//! port) and a daemon that is shutting down (Unavailable). Any failure to reach the
//! daemon at all is Unavailable and retryable.

use bollard::errors::Error as BollardError;
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use wharf_core::traits::LogSink;
use wharf_core::{Error, ErrorKind, LogStream};

/// The backend name put on every error of this crate.
pub(crate) const BACKEND: &str = "docker";

/// Maps a bollard error raised while doing `what` (e.g. `"create container web-1"`).
pub(crate) fn map(err: BollardError, what: &str) -> Error {
    let (kind, message) = match &err {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => {
            let kind = match status_code {
                404 => ErrorKind::NotFound,
                409 => ErrorKind::Conflict,
                400 => ErrorKind::InvalidInput,
                503 => ErrorKind::Unavailable,
                _ if is_port_taken(message) => ErrorKind::Conflict,
                _ => ErrorKind::Backend,
            };
            (kind, message.trim().to_owned())
        }
        BollardError::RequestTimeoutError => (
            ErrorKind::Timeout,
            "the Docker daemon did not answer in time".to_owned(),
        ),
        BollardError::IOError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::HyperLegacyError { .. }
        | BollardError::SocketNotFoundError(_)
        | BollardError::HttpClientError { .. } => (
            ErrorKind::Unavailable,
            format!("cannot reach the Docker daemon: {err}"),
        ),
        _ => (ErrorKind::Backend, err.to_string()),
    };
    Error::new(kind, format!("{what}: {message}"))
        .with_backend(BACKEND)
        .with_source(err)
}

/// Whether an engine message says a host port is already in use.
pub(crate) fn is_port_taken(message: &str) -> bool {
    message.contains("port is already allocated") || message.contains("address already in use")
}

/// Whether `err` is a 404 from the engine.
pub(crate) fn is_not_found(err: &BollardError) -> bool {
    matches!(
        err,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Whether `err` is a 409 from the engine.
pub(crate) fn is_conflict(err: &BollardError) -> bool {
    matches!(
        err,
        BollardError::DockerResponseServerError {
            status_code: 409,
            ..
        }
    )
}

/// The next item of an engine's progress stream (a build's, a push's), or a
/// Cancelled error (and a `"{what} cancelled"` line on `logs`) once `cancel` fires.
/// The caller returning the error drops the stream, which closes the request: the
/// engine then stops the work (a build removes its intermediate containers).
pub(crate) async fn next_unless_cancelled<S: Stream + Unpin>(
    stream: &mut S,
    cancel: &CancellationToken,
    logs: &LogSink,
    what: &str,
) -> wharf_core::Result<Option<S::Item>> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => {
            logs.send(LogStream::System, format!("{what} cancelled"));
            Err(Error::cancelled(format!("the {what} was cancelled")).with_backend(BACKEND))
        }
        item = stream.next() => Ok(item),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status_code: u16, message: &str) -> BollardError {
        BollardError::DockerResponseServerError {
            status_code,
            message: message.into(),
        }
    }

    #[test]
    fn statuses_map_to_kinds() {
        let e = map(server(404, "No such image: x:1"), "create container a");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.backend_name(), Some("docker"));
        assert_eq!(e.message(), "create container a: No such image: x:1");
        assert!(!e.is_retryable());
        assert_eq!(map(server(409, "in use"), "x").kind(), ErrorKind::Conflict);
        assert_eq!(map(server(400, "bad"), "x").kind(), ErrorKind::InvalidInput);
        assert_eq!(map(server(500, "boom"), "x").kind(), ErrorKind::Backend);
        let taken = map(
            server(
                500,
                "driver failed programming external connectivity: Bind for 127.0.0.1:8080 failed: port is already allocated",
            ),
            "start container",
        );
        assert_eq!(taken.kind(), ErrorKind::Conflict);
    }

    #[test]
    fn unreachable_daemon_is_unavailable_and_retryable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = map(BollardError::IOError { err: io }, "ping");
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
        let e = map(BollardError::SocketNotFoundError("/nope".into()), "ping");
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        let e = map(BollardError::RequestTimeoutError, "ping");
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(e.is_retryable());
    }
}
