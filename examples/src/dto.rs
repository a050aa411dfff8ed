//! The API's wire types, one per shape, shared by the server (which sends and
//! receives them), the CLI's client (which reads and sends them) and the tests. A
//! value has one shape in and out: what a response shows can be sent back.
//!
//! Secrets are write-only: requests carry `{"secret": "value"}`, responses only
//! `{"secret": true}`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_core::{
    BuildSpec, DeploymentId, EnvValue, EnvVars, EnvironmentId, EnvironmentKind, GitRef,
    HealthCheck, InstanceId, InstanceStatus, ProjectId, ReleaseId, Resources, ServiceId,
    SourceSpec, Timestamp, VolumeMount,
};

/// The body of every error: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An error's stable code and message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code: invalid_input, unauthorized, forbidden, not_found, conflict,
    /// domain_unverified, too_large, build_failed, health_check_failed, unavailable,
    /// timeout, backend, internal, ...
    pub code: String,
    /// For humans.
    pub message: String,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// One env var change in a request: a value, `{"secret": "value"}`, or `null` to
/// remove the variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EnvInput {
    /// A plain value.
    Plain(String),
    /// A secret value: sealed at rest, never shown again.
    Secret {
        /// The value.
        secret: String,
    },
    /// Removes the variable.
    Remove(()),
}

/// Env var changes by name.
pub type EnvChanges = BTreeMap<EnvKey, EnvInput>;

/// An env var name: letters, digits and '_', not starting with a digit, at most 255
/// bytes. (A plain string on the wire; the type carries the constraint into the
/// OpenAPI document.)
pub type EnvKey = String;

/// A name of a project, service or environment: a-z, 0-9 and '-', starting with a
/// letter, not ending with '-', at most 63 characters.
#[derive(ToSchema)]
#[schema(value_type = String, pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)]
pub struct Name(pub String);

/// A hostname: labels of a-z, 0-9 and '-' separated by dots, at most 253 characters.
#[derive(ToSchema)]
#[schema(
    value_type = String,
    pattern = "^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\\.?$",
    max_length = 253
)]
pub struct Hostname(pub String);

/// One env var as a response shows it: the value, or `{"secret": true}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EnvShown {
    /// A plain value.
    Plain(String),
    /// A secret: its value is never shown.
    Secret {
        /// Always true.
        secret: bool,
    },
}

/// Env vars as responses show them.
pub type EnvView = BTreeMap<String, EnvShown>;

/// `env` as responses show it.
pub fn env_view(env: &EnvVars) -> EnvView {
    env.iter()
        .map(|(k, v)| {
            let shown = match v {
                EnvValue::Plain(s) => EnvShown::Plain(s.clone()),
                EnvValue::Secret(_) => EnvShown::Secret { secret: true },
            };
            (k.clone(), shown)
        })
        .collect()
}

/// `POST /v1/projects`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    /// The name: a-z, 0-9 and '-', starting with a letter, at most 63 characters.
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)]
    pub name: String,
    /// Project-wide env vars.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: EnvChanges,
}

/// A project.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectView {
    /// Its id.
    pub id: ProjectId,
    /// Its name.
    pub name: String,
    /// Project-wide env vars.
    pub env: EnvView,
    /// Created at (Unix milliseconds).
    pub created_at: Timestamp,
}

/// A source given through the API: a git repository or an image, never a path on
/// the server's disk. Sent as `{"git": {"url", "ref", "subdir"}}` or
/// `{"image": "ref"}`, or in the shape responses show a service's source
/// (`{"kind": "git", "url", "reference": {"kind": "branch", "name"}, "subdir"}`,
/// `{"kind": "image", "image"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SourceInput {
    /// A git repository: https://, http://, ssh:// or git@host:path.
    Git {
        /// The repository URL.
        #[schema(pattern = "^(https://|http://|ssh://|git@)")]
        url: String,
        /// A branch, a tag or a full 40-hex commit; default: the default branch.
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        /// A relative folder inside the repository.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<String>, pattern = "^(?!/)(?!(.*/)?\\.\\.(/|$))")]
        subdir: Option<PathBuf>,
    },
    /// A prebuilt image reference.
    Image(ImageRef),
}

/// An image reference (`registry/name:tag`, `name@sha256:...`): not empty, no spaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, pattern = "^\\S+$")]
pub struct ImageRef(pub String);

/// The response shape of a source, accepted as input too (git and image only).
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum SourceShown {
    Git {
        url: String,
        #[serde(default = "default_ref")]
        reference: GitRef,
        #[serde(default)]
        subdir: Option<PathBuf>,
    },
    Image {
        image: String,
    },
}

fn default_ref() -> GitRef {
    GitRef::Default
}

impl SourceInput {
    /// Reads either accepted shape from JSON.
    fn from_value(v: serde_json::Value) -> Result<SourceInput, String> {
        if v.get("kind").is_none() {
            return serde_json::from_value(v).map_err(|e| format!("bad source: {e}"));
        }
        let shown: SourceShown = serde_json::from_value(v)
            .map_err(|e| format!("bad source (only git and image sources can be given): {e}"))?;
        Ok(match shown {
            SourceShown::Git {
                url,
                reference,
                subdir,
            } => SourceInput::Git {
                url,
                reference: match reference {
                    GitRef::Default => None,
                    GitRef::Branch(r) | GitRef::Tag(r) | GitRef::Commit(r) => Some(r),
                },
                subdir,
            },
            SourceShown::Image { image } => SourceInput::Image(ImageRef(image)),
        })
    }

    /// The source as the model holds it, checked: git URLs of a network scheme only,
    /// a relative `subdir` inside the repository, a non-empty image reference.
    pub fn into_spec(self) -> Result<SourceSpec, String> {
        match self {
            SourceInput::Git {
                url,
                reference,
                subdir,
            } => {
                let schemes = ["https://", "http://", "ssh://", "git@"];
                if !schemes.iter().any(|s| url.starts_with(s)) {
                    return Err(format!(
                        "git url {url:?} must be https://, http://, ssh:// or git@host:path"
                    ));
                }
                if subdir.as_ref().is_some_and(|d| {
                    d.is_absolute()
                        || d.components()
                            .any(|c| matches!(c, std::path::Component::ParentDir))
                }) {
                    return Err("subdir must be a relative path inside the repository".into());
                }
                let reference = match reference {
                    None => GitRef::Default,
                    Some(r) if r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()) => {
                        GitRef::Commit(r)
                    }
                    Some(r) => GitRef::Branch(r),
                };
                Ok(SourceSpec::Git {
                    url,
                    reference,
                    subdir,
                })
            }
            SourceInput::Image(ImageRef(image)) => {
                if image.is_empty() || image.contains(char::is_whitespace) {
                    return Err(format!("bad image reference {image:?}"));
                }
                Ok(SourceSpec::Image { image })
            }
        }
    }
}

/// Deserializes an optional [`SourceInput`] in either shape.
fn some_source<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SourceInput>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    SourceInput::from_value(v)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `PUT /v1/projects/{project}/services/{service}`: creates the service or changes
/// the fields given.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceInput {
    /// Where its code comes from.
    #[serde(
        default,
        deserialize_with = "some_source",
        skip_serializing_if = "Option::is_none"
    )]
    pub source: Option<SourceInput>,
    /// How it is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildSpec>,
    /// The port the app listens on (1-65535).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    /// Env var changes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: EnvChanges,
    /// Services of the same project (or environment) it needs first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(inline, value_type = Option<Vec<Name>>)]
    pub depends_on: Option<Vec<String>>,
    /// Its health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Resource limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// The full list of custom domains; each is claimed and routed once DNS proves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(inline, value_type = Option<Vec<Hostname>>)]
    pub domains: Option<Vec<String>>,
}

/// A service with where it is served and what is live.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceView {
    /// Its id.
    pub id: ServiceId,
    /// Its project.
    pub project: ProjectId,
    /// Its environment (none: the project's own services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentId>,
    /// The environment's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_name: Option<String>,
    /// Its name.
    pub name: String,
    /// Where its code comes from.
    pub source: SourceSpec,
    /// How it is built.
    #[serde(default)]
    pub build: BuildSpec,
    /// The port the app listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Its own env vars.
    #[serde(default)]
    pub env: EnvView,
    /// Services it needs first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Its health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Resource limits.
    #[serde(default)]
    pub resources: Resources,
    /// Custom domains it is routed with (proven ones).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Volumes it mounts.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Created at (Unix milliseconds).
    pub created_at: Timestamp,
    /// Where it is served.
    pub url: String,
    /// Its generated hostname.
    pub hostname: String,
    /// The deployment serving it now.
    pub live_deployment: Option<DeploymentId>,
    /// Its custom domain claims.
    #[serde(default)]
    pub custom_domains: Vec<DomainClaim>,
}

/// A DNS record to publish.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CnameRecord {
    /// The record's name (the domain).
    pub name: String,
    /// What it must point at (the service's generated hostname).
    pub target: String,
}

/// A TXT record to publish.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TxtRecord {
    /// The record's name (`_wharf-challenge.<domain>`).
    pub name: String,
    /// Its value (`wharf-verify=<token>`).
    pub value: String,
}

/// What proves a domain: either record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Proof {
    /// A CNAME to the service's hostname (not for apex domains).
    pub cname: CnameRecord,
    /// Or a TXT record with the claim's token.
    pub txt: TxtRecord,
}

/// A custom domain claim of a service.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DomainClaim {
    /// The domain.
    pub domain: String,
    /// Whether DNS proved it (then it is routed).
    pub verified: bool,
    /// What to publish.
    pub verify: Proof,
}

/// `POST .../domains`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    /// The domain.
    #[schema(value_type = Hostname)]
    pub domain: String,
}

/// The answer to claiming a domain.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DomainAdded {
    /// The claim.
    #[serde(flatten)]
    pub claim: DomainClaim,
    /// Why it is not proven yet (null once proven).
    pub reason: Option<String>,
}

/// The answer to checking a domain again: proven.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DomainVerified {
    /// The domain.
    pub domain: String,
    /// Always true (an unproven domain answers 409 `domain_unverified`).
    pub verified: bool,
}

/// `POST .../environments`, `PUT .../environments/{environment}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentInput {
    /// The name (required to create with POST; cannot change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)]
    pub name: Option<String>,
    /// Env var changes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: EnvChanges,
}

/// An environment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentView {
    /// Its id.
    pub id: EnvironmentId,
    /// Its name.
    pub name: String,
    /// Standing, or the preview of a pull request.
    pub kind: EnvironmentKind,
    /// Its env vars (between the project's and its services').
    pub env: EnvView,
    /// Its services' names.
    pub services: Vec<String>,
    /// Created at (Unix milliseconds).
    pub created_at: Timestamp,
}

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
}

/// `POST .../rollback`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// Release number; default: the one before the live release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub release: Option<u64>,
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
