//! The one error type of Wharf.
//!
//! Every backend converts its own failures into [`Error`], choosing an [`ErrorKind`]
//! by meaning (not by message text) and saying whether a retry could help. Callers
//! decide retries from [`Error::is_retryable`], never by parsing messages.

use std::fmt;

/// What went wrong, by meaning. Match on it; do not parse messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The thing asked for does not exist.
    NotFound,
    /// The request clashes with the current state: a name already taken, a stale
    /// version in a compare-and-set, an illegal state transition.
    Conflict,
    /// The input is malformed or refused (bad name, path traversal, cycle...).
    InvalidInput,
    /// A dependency (daemon, proxy, database) cannot be reached right now.
    Unavailable,
    /// An operation did not finish in the time allowed.
    Timeout,
    /// The operation was cancelled on request.
    Cancelled,
    /// The build of an artifact failed.
    BuildFailed,
    /// The new instance did not pass its health check (or exited at start).
    HealthCheckFailed,
    /// The backend does not support this operation or input.
    Unsupported,
    /// Any other failure inside a backend.
    Backend,
    /// A bug or broken invariant inside Wharf itself.
    Internal,
}

impl ErrorKind {
    /// A stable, lower-case code for the kind (used in APIs and logs).
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::BuildFailed => "build_failed",
            ErrorKind::HealthCheckFailed => "health_check_failed",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Backend => "backend",
            ErrorKind::Internal => "internal",
        }
    }

    /// Every kind, for [`ErrorKind::from_code`].
    const ALL: [ErrorKind; 11] = [
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::InvalidInput,
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::Cancelled,
        ErrorKind::BuildFailed,
        ErrorKind::HealthCheckFailed,
        ErrorKind::Unsupported,
        ErrorKind::Backend,
        ErrorKind::Internal,
    ];

    /// The kind whose [`ErrorKind::code`] is `code` (an error sent over a wire).
    pub fn from_code(code: &str) -> Option<ErrorKind> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// Whether errors of this kind are worth retrying by default.
    fn retryable_by_default(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Timeout)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error type of every Wharf API.
///
/// ```
/// use wharf_core::{Error, ErrorKind};
/// let err = Error::unavailable("docker daemon is not answering").with_backend("docker");
/// assert_eq!(err.kind(), ErrorKind::Unavailable);
/// assert!(err.is_retryable());
/// assert_eq!(err.to_string(), "unavailable (docker): docker daemon is not answering");
/// ```
#[non_exhaustive]
pub struct Error {
    kind: ErrorKind,
    message: String,
    backend: Option<&'static str>,
    retryable: bool,
    source: Option<Source>,
}

/// One constructor per kind: `name(message)` is `Error::new(ErrorKind::Kind, message)`.
macro_rules! kind_constructors {
    ($($(#[$doc:meta])* $name:ident => $kind:ident,)*) => {
        $(
            $(#[$doc])*
            pub fn $name(message: impl Into<String>) -> Self {
                Self::new(ErrorKind::$kind, message)
            }
        )*
    };
}

impl Error {
    /// A new error of `kind`; retryable if the kind usually is.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            backend: None,
            retryable: kind.retryable_by_default(),
            source: None,
        }
    }

    kind_constructors! {
        /// [`ErrorKind::NotFound`].
        not_found => NotFound,
        /// [`ErrorKind::Conflict`].
        conflict => Conflict,
        /// [`ErrorKind::InvalidInput`].
        invalid => InvalidInput,
        /// [`ErrorKind::Unavailable`] (retryable).
        unavailable => Unavailable,
        /// [`ErrorKind::Timeout`] (retryable).
        timeout => Timeout,
        /// [`ErrorKind::Cancelled`].
        cancelled => Cancelled,
        /// [`ErrorKind::BuildFailed`].
        build_failed => BuildFailed,
        /// [`ErrorKind::HealthCheckFailed`].
        health_check_failed => HealthCheckFailed,
        /// [`ErrorKind::Unsupported`].
        unsupported => Unsupported,
        /// [`ErrorKind::Internal`].
        internal => Internal,
    }
    /// [`ErrorKind::Backend`], naming the backend and keeping its error as the source.
    pub fn backend(
        backend: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            kind: ErrorKind::Backend,
            message: source.to_string(),
            backend: Some(backend),
            retryable: false,
            source: Some(Box::new(source)),
        }
    }

    /// Names the backend the error came from.
    pub fn with_backend(mut self, backend: &'static str) -> Self {
        self.backend = Some(backend);
        self
    }
    /// Overrides whether a retry may help.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }
    /// Keeps the underlying error as the source.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
    /// Prefixes the message with context (`"context: message"`), keeping kind and flags.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// The human-readable message (without kind or backend).
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The backend that raised the error, if any.
    pub fn backend_name(&self) -> Option<&'static str> {
        self.backend
    }
    /// Whether retrying the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind)
            .field("message", &self.message)
            .field("retryable", &self.retryable);
        if let Some(b) = self.backend {
            d.field("backend", &b);
        }
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.backend {
            Some(b) => write!(f, "{} ({b}): {}", self.kind, self.message),
            None => write!(f, "{}: {}", self.kind, self.message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match err.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::AlreadyExists => ErrorKind::Conflict,
            K::InvalidInput | K::InvalidData => ErrorKind::InvalidInput,
            K::TimedOut => ErrorKind::Timeout,
            K::ConnectionRefused | K::ConnectionReset | K::ConnectionAborted | K::NotConnected => {
                ErrorKind::Unavailable
            }
            _ => ErrorKind::Internal,
        };
        Error::new(kind, err.to_string()).with_source(err)
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::invalid(format!("malformed JSON: {err}")).with_source(err)
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
