//! Volumes of a project: what services declare, what the runtime holds, and the
//! confirmation a deletion needs.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One volume of a project (or of one of its environments), from
/// `GET /v1/projects/{project}/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeView {
    /// Its name, as services mount it.
    pub name: String,
    /// The standing or preview environment it belongs to (`None`: the project's own
    /// services'). An environment's volume is never the project's.
    pub environment: Option<String>,
    /// The services that declare it, where they mount it and whether they are live.
    pub mounted_by: Vec<VolumeMountView>,
    /// The size a service asked for (`"10Gi"`), if any.
    pub size: Option<String>,
    /// Whether the runtime holds it (`false` until a service mounting it first starts;
    /// `null` when the runtime cannot tell).
    pub exists: Option<bool>,
    /// The runtime's own name for it (a Docker volume, a claim).
    pub runtime_name: Option<String>,
    /// Bytes it holds, when the runtime reports them.
    pub size_bytes: Option<u64>,
    /// The network it belongs to (`wharf-<project>`, or `wharf-<project>_<env>` for an
    /// environment's).
    pub scope: Option<String>,
    /// Left by an environment since deleted: not the project's own volume of that
    /// name, though `environment` is empty. Only `?scope=<scope>` deletes it.
    #[serde(default)]
    pub orphaned: bool,
}

/// A service's mount of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeMountView {
    /// The service's name.
    pub service: String,
    /// Where it mounts the volume.
    pub path: String,
    /// Whether the service has a live deployment (then the volume cannot be deleted).
    pub live: bool,
}

/// `DELETE /v1/projects/{project}/volumes/{volume}`: the volume's name again, so a
/// slip of the keyboard deletes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeDelete {
    /// Must equal the volume's name.
    pub confirm: String,
}
