//! Managed databases of a project (`/v1/projects/{project}/databases`): what creating
//! one takes, how a listing shows one, and its credentials (owners only).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_core::database::DbEngine;

/// `POST /v1/projects/{project}/databases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatabaseInput {
    /// Its name: the service's, and the host other services reach it by.
    pub name: String,
    /// `postgres`, `mysql` (MariaDB) or `redis`.
    pub engine: DbEngine,
    /// The engine's version (its image tag); the engine's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Whether it gets a public route (default: reachable on the project network only).
    #[serde(default)]
    pub public: bool,
}

/// A managed database as listings show it (never its password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DatabaseView {
    /// Its name (the service's).
    pub name: String,
    /// Its engine.
    pub engine: DbEngine,
    /// The engine's version.
    pub version: String,
    /// Whether it has a public route.
    pub public: bool,
    /// The image it runs.
    pub image: String,
    /// The port it listens on, on the project network.
    pub port: u16,
    /// The database user.
    pub user: Option<String>,
    /// The database's name (`0` for Redis).
    pub database: Option<String>,
    /// What another service's env writes to connect: `${{ <name>.DATABASE_URL }}`
    /// (`REDIS_URL` for Redis).
    pub reference: String,
    /// The live deployment, if it runs.
    pub live_deployment: Option<String>,
    /// The deployment creating it started (only in the answer to a creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}

/// `GET /v1/projects/{project}/databases/{database}/credentials` (owners only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DatabaseCredentials {
    /// The database's name.
    pub name: String,
    /// Its engine.
    pub engine: DbEngine,
    /// The host other services of the project reach it at.
    pub host: String,
    /// The port there.
    pub port: u16,
    /// The user.
    pub user: String,
    /// The password.
    pub password: String,
    /// The database's name (`0` for Redis).
    pub database: String,
    /// The connection URL at `host:port`.
    pub url: String,
}

/// `POST /v1/projects/{project}/databases/{database}/rotate`: the password changed,
/// and how the redeploys it cascaded to ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DatabaseRotated {
    /// The database.
    pub database: String,
    /// The final state of each service redeployed: the database, then every service
    /// referencing or depending on it.
    pub deployments: std::collections::BTreeMap<String, String>,
}
