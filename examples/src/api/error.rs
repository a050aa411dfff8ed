//! The API's one error type: an HTTP status, a stable code and a message, sent as
//! `{"error": {"code", "message"}}` ([`crate::dto::ErrorBody`]). Core errors map by
//! kind, never by message text.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use wharf_core::ErrorKind;

use crate::dto::{ErrorBody, ErrorDetail};

/// An API error: HTTP status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with `status`, the stable `code` and a message for humans.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    /// Its stable code (`not_found`, `bad_signature`...).
    pub fn code(&self) -> &'static str {
        self.code
    }
    /// 400 `invalid_input`.
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }
    /// 404 `not_found`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 403 `forbidden`.
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// 409 `conflict`.
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    /// 401 `unauthorized`.
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
}

impl From<wharf_core::Error> for ApiError {
    fn from(e: wharf_core::Error) -> Self {
        let (status, code) = match e.kind() {
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::InvalidInput => (StatusCode::BAD_REQUEST, "invalid_input"),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ErrorKind::Cancelled => (StatusCode::CONFLICT, "cancelled"),
            ErrorKind::BuildFailed => (StatusCode::UNPROCESSABLE_ENTITY, "build_failed"),
            ErrorKind::HealthCheckFailed => {
                (StatusCode::UNPROCESSABLE_ENTITY, "health_check_failed")
            }
            ErrorKind::Unsupported => (StatusCode::NOT_IMPLEMENTED, "unsupported"),
            ErrorKind::Backend => (StatusCode::BAD_GATEWAY, "backend"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::warn!(error = %e, "request failed");
        }
        ApiError::new(status, code, e.message().to_owned())
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::from(wharf_core::Error::from(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// What handlers return.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// A JSON request body whose rejections (malformed JSON, unknown fields, wrong types,
/// missing content type) are API errors like every other.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(e) => Err(ApiError::bad(e.body_text())),
        }
    }
}
