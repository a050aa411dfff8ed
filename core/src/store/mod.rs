//! Stores: [`MemoryStore`] (always), [`SqliteStore`] (feature `sqlite`, the default) and
//! `PostgresStore` (feature `postgres`, for several control planes sharing one database).

mod memory;
pub use memory::MemoryStore;

#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;

#[cfg(feature = "seal")]
mod sealed;
#[cfg(feature = "seal")]
#[cfg_attr(docsrs, doc(cfg(feature = "seal")))]
pub use sealed::{SealedStore, Sealer};

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresConfig, PostgresStore};

use crate::error::Error;
use crate::model::{EnvironmentId, ProjectId};

/// The NotFound of a project looked up by name (shared, so every store says the same).
pub(crate) fn project_name_not_found(name: &str) -> Error {
    Error::not_found(format!("project {name:?} not found"))
}

/// The NotFound of an environment looked up by name in a project.
pub(crate) fn environment_name_not_found(project: &ProjectId, name: &str) -> Error {
    Error::not_found(format!(
        "environment {name:?} not found in project {project}"
    ))
}

/// The NotFound of a service looked up by name in a project (or one of its
/// environments).
pub(crate) fn service_name_not_found(
    project: &ProjectId,
    environment: Option<&EnvironmentId>,
    name: &str,
) -> Error {
    match environment {
        Some(env) => Error::not_found(format!(
            "service {name:?} not found in environment {env} of project {project}"
        )),
        None => Error::not_found(format!("service {name:?} not found in project {project}")),
    }
}
