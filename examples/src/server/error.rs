//! Why `wharf serve` could not start or stopped: the server's own error type, so the
//! server never borrows the CLI's.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::config::ConfigError;

/// Why `wharf serve` failed. Each variant names what it was doing, so the message
/// alone tells an operator what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A setting, or a combination of settings, cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file or folder of the data folder (or another configured path) could not be
    /// created, read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done: "create", "read", "write"...
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The secret key in a file is not 64 hex characters.
    #[error("bad secret key in {}: {}", path.display(), source.message())]
    SecretKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: wharf_core::Error,
    },
    /// The store could not be opened.
    #[error("cannot open the store {}: {source}", path.display())]
    Store {
        /// The database file.
        path: PathBuf,
        /// The store's error.
        #[source]
        source: wharf_core::Error,
    },
    /// A backend (builder, runtime, router, a managed Caddy) could not be set up.
    #[error("{message}")]
    Backend {
        /// Which backend: "caddy", "traefik", "builtin proxy", "docker", "host runtime".
        backend: &'static str,
        /// What went wrong, naming the setting to look at.
        message: String,
    },
    /// The engine could not be built, or could not recover interrupted deployments.
    #[error("engine: {0}")]
    Engine(#[source] wharf_core::Error),
    /// An address could not be bound.
    #[error("cannot listen on {addr} ({setting}): {source}")]
    Listen {
        /// The setting naming the address (`listen`, `proxy_listen`).
        setting: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Serving the API stopped with an error.
    #[error("serving the API: {0}")]
    Serve(#[source] std::io::Error),
}

impl ServeError {
    /// An I/O error while doing `action` on `path`.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ServeError::Io {
            action,
            path,
            source,
        }
    }

    /// A backend that could not be set up.
    pub fn backend(backend: &'static str, message: impl std::fmt::Display) -> Self {
        ServeError::Backend {
            backend,
            message: message.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_path_and_the_action() {
        let e = ServeError::io("create", "/srv/wharf-data")(std::io::Error::from(
            std::io::ErrorKind::PermissionDenied,
        ));
        let text = e.to_string();
        assert!(
            text.starts_with("cannot create /srv/wharf-data: ") && text.contains("denied"),
            "{text}"
        );
        let e = ServeError::Listen {
            setting: "listen",
            addr: ([127, 0, 0, 1], 7070).into(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert!(e
            .to_string()
            .starts_with("cannot listen on 127.0.0.1:7070 (listen): "));
    }
}
