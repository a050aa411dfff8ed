//! HTTP plumbing shared by every OpenStack service client: API errors mapped to
//! [`wharf_core::Error`] kinds, and retries with back-off on 5xx, 429 and
//! connection errors only.

use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode};
use wharf_core::{Error, ErrorKind};

/// The backend name put on every error of this crate.
pub const BACKEND: &str = "openstack";

/// A refusal or failure answered by an OpenStack API, kept as the source of the
/// [`wharf_core::Error`] this crate returns, so callers can tell the cases apart:
/// `err.source().and_then(|s| s.downcast_ref::<ApiError>())` (see [`api_error`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The project's quota for a resource is used up (Zun/Nova 403 or 413, Neutron
    /// 409, with a message about a quota).
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The image asked for does not exist or cannot be pulled.
    #[error("image not found: {0}")]
    ImageNotFound(String),
    /// The resource asked for does not exist (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The request clashes with the resource's state (409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request is malformed or refused as invalid (400, 406, 413, 422).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Keystone refused the credentials, or a token was refused (401).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Policy refuses the operation (403, not quota).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The service failed or is overloaded (5xx, 429), after retries.
    #[error("service unavailable ({status}): {message}")]
    Unavailable {
        /// The HTTP status.
        status: u16,
        /// The service's message.
        message: String,
    },
    /// Any other answer.
    #[error("unexpected answer ({status}): {message}")]
    Other {
        /// The HTTP status.
        status: u16,
        /// The service's message.
        message: String,
    },
}

impl ApiError {
    /// The [`ErrorKind`] this refusal maps to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApiError::QuotaExceeded(_) | ApiError::Conflict(_) => ErrorKind::Conflict,
            ApiError::ImageNotFound(_) | ApiError::NotFound(_) => ErrorKind::NotFound,
            ApiError::BadRequest(_) => ErrorKind::InvalidInput,
            ApiError::Unauthorized(_) | ApiError::Forbidden(_) | ApiError::Other { .. } => {
                ErrorKind::Backend
            }
            ApiError::Unavailable { .. } => ErrorKind::Unavailable,
        }
    }

    /// Wraps this into a [`wharf_core::Error`] (kind from [`ApiError::kind`]).
    pub fn into_error(self, context: impl std::fmt::Display) -> Error {
        let retry = matches!(self, ApiError::Unavailable { .. });
        Error::new(self.kind(), format!("{context}: {self}"))
            .with_backend(BACKEND)
            .with_retryable(retry)
            .with_source(self)
    }
}

/// The [`ApiError`] behind an error returned by this crate, if it came from an API
/// answer.
pub fn api_error(err: &Error) -> Option<&ApiError> {
    std::error::Error::source(err).and_then(|s| s.downcast_ref::<ApiError>())
}

/// Pulls a readable message out of an OpenStack error body. Handles the shapes the
/// services use: Zun's `{"errors": [{"detail": ..}]}`, Nova/Neutron's
/// `{"itemNotFound": {"message": ..}}` / `{"NeutronError": {"message": ..}}`,
/// Keystone's `{"error": {"message": ..}}`, Designate's `{"message": ..}`.
pub fn error_message(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        let t = body.trim();
        return if t.is_empty() {
            "(empty body)".into()
        } else {
            t.chars().take(500).collect()
        };
    };
    if let Some(e) = v.get("errors").and_then(|e| e.get(0)) {
        for k in ["detail", "title", "message"] {
            if let Some(s) = e.get(k).and_then(|s| s.as_str()) {
                return s.to_owned();
            }
        }
    }
    if let Some(s) = v.get("message").and_then(|s| s.as_str()) {
        return s.to_owned();
    }
    if let Some(obj) = v.as_object() {
        for inner in obj.values() {
            if let Some(s) = inner.get("message").and_then(|s| s.as_str()) {
                return s.to_owned();
            }
        }
    }
    body.chars().take(500).collect()
}

/// Whether a (lower-cased) message says an image is missing.
pub(crate) fn image_missing(lower: &str) -> bool {
    lower.contains("image")
        && (lower.contains("not found")
            || lower.contains("could not be found")
            || lower.contains("does not exist"))
}

/// Maps an error answer to an [`ApiError`] by status (and, for 403/413, whether the
/// service says it is about a quota).
pub fn classify(status: StatusCode, body: &str) -> ApiError {
    let msg = error_message(body);
    let lower = msg.to_ascii_lowercase();
    let quota = lower.contains("quota");
    match status.as_u16() {
        // Nova refuses a missing image with 400, Zun/Glance with 404.
        400 | 404 if image_missing(&lower) => ApiError::ImageNotFound(msg),
        400 | 406 | 422 => ApiError::BadRequest(msg),
        401 => ApiError::Unauthorized(msg),
        // Zun/Nova say 403 or 413, Neutron 409.
        403 | 409 | 413 if quota => ApiError::QuotaExceeded(msg),
        403 => ApiError::Forbidden(msg),
        404 => ApiError::NotFound(msg),
        409 => ApiError::Conflict(msg),
        413 => ApiError::BadRequest(msg),
        429 | 500..=599 => ApiError::Unavailable {
            status: status.as_u16(),
            message: msg,
        },
        s => ApiError::Other {
            status: s,
            message: msg,
        },
    }
}

/// How requests are retried: exponential back-off from `base` doubling up to `max`,
/// at most `attempts` tries in all. Only 5xx, 429 and connection errors are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all (1 = no retry).
    pub attempts: u32,
    /// The first pause.
    pub base: Duration,
    /// The longest pause (also caps a `Retry-After` header).
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The pause before try number `attempt + 1` (`attempt` counts from 0).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let f = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
        self.base.saturating_mul(f).min(self.max)
    }
}

/// Whether an answer is worth retrying. A request that is not idempotent (a POST
/// that creates something) is retried only on answers that say it was not processed
/// (429, 502, 503, 504), never on a 500 after which it may have been.
fn retryable_status(s: StatusCode, idempotent: bool) -> bool {
    match s.as_u16() {
        429 | 502 | 503 | 504 => true,
        _ => idempotent && s.is_server_error(),
    }
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(reqwest::header::RETRY_AFTER)?;
    let secs: u64 = v.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// Whether a transport error is a connection failure worth retrying: refused, timed
/// out, or reset / closed by the server before an answer (a pooled connection the
/// server had closed).
pub fn is_connection_error(e: &reqwest::Error) -> bool {
    if e.is_connect() || e.is_timeout() {
        return true;
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if matches!(
                io.kind(),
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof
            ) {
                return true;
            }
        }
        if s.to_string()
            .contains("connection closed before message completed")
        {
            return true;
        }
        src = s.source();
    }
    false
}

/// Sends the request `make` builds, retrying per `policy` on 5xx, 429 and connection
/// errors. A request that is not `idempotent` is only retried when it cannot have
/// been processed: the connection was never made, or the answer was 429/502/503/504.
/// Returns the first answer that is not retried (any status: the caller checks it),
/// or an error once tries run out or on another transport error.
pub async fn send(
    policy: &RetryPolicy,
    what: &str,
    idempotent: bool,
    make: impl Fn() -> RequestBuilder,
) -> wharf_core::Result<Response> {
    let mut attempt = 0;
    loop {
        let last = attempt + 1 >= policy.attempts.max(1);
        match make().send().await {
            Ok(resp) if retryable_status(resp.status(), idempotent) && !last => {
                let pause = retry_after(&resp)
                    .unwrap_or_else(|| policy.backoff(attempt))
                    .min(policy.max);
                tracing::debug!(status = %resp.status(), what, ?pause, "retrying");
                tokio::time::sleep(pause).await;
            }
            Ok(resp) => return Ok(resp),
            Err(e) if (e.is_connect() || (idempotent && is_connection_error(&e))) && !last => {
                tracing::debug!(error = %e, what, "connection failed, retrying");
                tokio::time::sleep(policy.backoff(attempt)).await;
            }
            Err(e) => {
                let kind = if is_connection_error(&e) {
                    ErrorKind::Unavailable
                } else {
                    ErrorKind::Backend
                };
                return Err(Error::new(kind, format!("{what}: {e}"))
                    .with_backend(BACKEND)
                    .with_source(e));
            }
        }
        attempt += 1;
    }
}

/// Turns a non-success answer into an error (by [`classify`]); passes success on.
pub async fn check(resp: Response, what: &str) -> wharf_core::Result<Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    Err(classify(status, &body).into_error(what))
}

/// Reads a JSON body, mapping a malformed one to a backend error.
pub async fn json<T: serde::de::DeserializeOwned>(
    resp: Response,
    what: &str,
) -> wharf_core::Result<T> {
    let bytes = resp.bytes().await.map_err(|e| {
        Error::unavailable(format!("{what}: reading the answer: {e}")).with_backend(BACKEND)
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::new(ErrorKind::Backend, format!("{what}: malformed answer: {e}"))
            .with_backend(BACKEND)
            .with_source(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_status_and_quota() {
        let zun = r#"{"errors":[{"status":403,"code":"zun.common.exception.OverQuota","title":"Forbidden","detail":"Quota exceeded for resources: ['containers']"}]}"#;
        assert!(matches!(
            classify(StatusCode::FORBIDDEN, zun),
            ApiError::QuotaExceeded(_)
        ));
        assert!(matches!(
            classify(StatusCode::FORBIDDEN, r#"{"error":{"message":"no"}}"#),
            ApiError::Forbidden(m) if m == "no"
        ));
        let nova = r#"{"itemNotFound":{"code":404,"message":"Image abc could not be found."}}"#;
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, nova),
            ApiError::ImageNotFound(_)
        ));
        assert_eq!(
            classify(StatusCode::CONFLICT, "{}").kind(),
            ErrorKind::Conflict
        );
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE, "down").kind(),
            ErrorKind::Unavailable
        );
        let e = classify(StatusCode::FORBIDDEN, zun).into_error("create");
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(!e.is_retryable());
        assert!(matches!(api_error(&e), Some(ApiError::QuotaExceeded(_))));
    }

    #[test]
    fn creations_are_not_retried_after_a_500() {
        assert!(retryable_status(StatusCode::INTERNAL_SERVER_ERROR, true));
        assert!(!retryable_status(StatusCode::INTERNAL_SERVER_ERROR, false));
        assert!(retryable_status(StatusCode::SERVICE_UNAVAILABLE, false));
        assert!(retryable_status(StatusCode::TOO_MANY_REQUESTS, false));
        assert!(!retryable_status(StatusCode::CONFLICT, true));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_millis(350),
        };
        assert_eq!(p.backoff(0), Duration::from_millis(100));
        assert_eq!(p.backoff(1), Duration::from_millis(200));
        assert_eq!(p.backoff(2), Duration::from_millis(350));
        assert_eq!(p.backoff(40), Duration::from_millis(350));
    }
}
