//! Deployments, releases, rollbacks, a live instance's status and what webhooks did.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_core::{
    DeploymentId, HealthCheck, InstanceId, InstanceStatus, ProjectId, ReleaseId, Resources,
    ServiceId, Timestamp,
};

use super::service::some_source;
use super::{env_view, EnvView, SourceInput};

/// `POST .../deployments` with a JSON body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// A new source (default: the service's current one).
    #[serde(
        default,
        deserialize_with = "some_source",
        skip_serializing_if = "Option::is_none"
    )]
    pub source: Option<SourceInput>,
    /// Deploy as a canary taking this percent of the traffic (0 to 100; 0 is
    /// blue-green) beside the live release, until promoted or aborted (also
    /// `?canary=` on the request, for uploads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 100)]
    pub canary: Option<u8>,
}

/// `POST .../rollback`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// Release number; default: the one before the live release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub release: Option<u64>,
    /// Run the release's release command again before it starts (by default a
    /// rollback runs none: the release already ran it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub run_release: bool,
}

/// A release's configuration as responses show it (secrets masked).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReleaseConfigView {
    /// The merged env vars.
    pub env: EnvView,
    /// Resource limits.
    #[serde(default)]
    pub resources: Resources,
    /// The health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

/// A release.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReleaseView {
    /// Its id.
    pub id: ReleaseId,
    /// The project.
    pub project: ProjectId,
    /// The service.
    pub service: ServiceId,
    /// Release number within the service: 1, 2, 3...
    pub number: u64,
    /// The deployment that created it.
    pub deployment: DeploymentId,
    /// The image that ran.
    pub artifact: wharf_core::Artifact,
    /// The port the app listened on.
    pub port: u16,
    /// The source revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// What it ran with besides its artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ReleaseConfigView>,
    /// When it went live (Unix milliseconds).
    pub created_at: Timestamp,
}

impl From<wharf_core::Release> for ReleaseView {
    fn from(r: wharf_core::Release) -> Self {
        ReleaseView {
            id: r.id,
            project: r.project,
            service: r.service,
            number: r.number,
            deployment: r.deployment,
            artifact: r.artifact,
            port: r.port,
            revision: r.revision,
            config: r.config.map(|c| ReleaseConfigView {
                env: env_view(&c.env),
                resources: c.resources,
                health_check: c.health_check,
            }),
            created_at: r.created_at,
        }
    }
}

/// The live instance's state: as the runtime reports it, or missing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum InstanceState {
    /// The runtime's answer, health probed now.
    Runtime(InstanceStatus),
    /// The runtime no longer has the instance.
    Missing {
        /// `missing`.
        kind: String,
        /// Why.
        reason: String,
    },
}

/// `GET .../status`: nulls when nothing is live.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceStatus {
    /// The live deployment.
    pub live_deployment: Option<DeploymentId>,
    /// Its release.
    #[serde(default)]
    pub release: Option<ReleaseId>,
    /// Its instance.
    pub instance: Option<InstanceId>,
    /// The instance's state.
    pub status: Option<InstanceState>,
}

/// `POST /v1/deployments/{id}/cancel`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CancelView {
    /// Whether a running deployment was asked to stop.
    pub cancel_requested: bool,
}

/// One deployment a webhook started or a preview it changed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HookDeployment {
    /// The service.
    pub service: String,
    /// The pull/merge request number, for previews.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<u64>,
    /// The deployment started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentId>,
    /// Whether the preview was torn down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<bool>,
    /// Why nothing was deployed (a fork's preview awaiting approval, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// What a webhook delivery did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HookOutcome {
    /// Nothing, and why.
    Ignored(String),
    /// Pushes: the deployments started.
    Deployments(Vec<HookDeployment>),
    /// Pull/merge requests: the previews deployed or removed.
    Previews(Vec<HookDeployment>),
}

/// `POST .../run`: a one-off command in a fresh instance of the live release.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Program and arguments (no shell: `["sh", "-c", "..."]` for one).
    #[schema(min_items = 1)]
    pub command: Vec<String>,
    /// The longest it may run, in seconds (default 3600, at most 86400); it is then
    /// stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_secs: Option<u64>,
    /// Run it in the background: the answer (202) comes at once, its output goes
    /// nowhere (write what matters to a volume), and its instance is removed when it
    /// ends or at its timeout, its time to live.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detach: bool,
}

/// The answer to a detached `POST .../run`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunDetached {
    /// The most seconds it runs before it is stopped and removed.
    pub ttl_secs: u64,
}

/// How a one-off command ended: the last `event: exit` of `POST .../run`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunResult {
    /// Its exit code, when it ended by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// It ran past its timeout and was stopped.
    pub timed_out: bool,
    /// How it ended, for people.
    pub reason: String,
}

/// `PUT .../scale`: replica counts of process types (`{"replicas": {"web": 3,
/// "worker": 2}}`); types not named keep theirs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// Process type to instance count (`web` at least 1; 0 stops another type).
    pub replicas: BTreeMap<String, u32>,
}

/// The answer to scaling: the counts the service now has and what runs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScaleView {
    /// Every process type's count (those not set: 1).
    pub replicas: BTreeMap<String, u32>,
    /// Instances running per process type, when a release is live.
    #[serde(default)]
    pub running: BTreeMap<String, u32>,
    /// What happened, for people.
    pub message: String,
}
