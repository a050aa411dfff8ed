//! The API's wire types, one per shape, shared by the server (which sends and
//! receives them), the CLI's client (which reads and sends them) and the tests. A
//! value has one shape in and out: what a response shows can be sent back.
//!
//! Secrets are write-only: requests carry `{"secret": "value"}`, responses only
//! `{"secret": true}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_core::{EnvValue, EnvVars, EnvironmentId, EnvironmentKind, ProjectId, Timestamp};

mod backup;
mod cron;
mod database;
mod deploy;
mod service;
mod volume;

pub use backup::*;
pub use cron::*;
pub use database::*;
pub use deploy::*;
pub use service::*;
pub use volume::*;

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

/// `PUT /v1/projects/{project}/previews`: what previews of pull requests do.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewsInput {
    /// What previews of forks may do (unchanged if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forks: Option<wharf_core::ForkPreviews>,
    /// Changes to the env every new preview environment starts with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: EnvChanges,
}

/// One pull request's preview.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PreviewView {
    /// The pull/merge request number.
    pub number: u64,
    /// The branch it tracks.
    pub branch: String,
    /// The fork its code comes from, if not the project's own repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork: Option<wharf_core::Fork>,
    /// Its services' names.
    pub services: Vec<String>,
}

/// A project's preview settings and its previews.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PreviewsView {
    /// What previews of forks may do.
    pub forks: wharf_core::ForkPreviews,
    /// The env every new preview environment starts with.
    pub env: EnvView,
    /// The previews standing now.
    pub previews: Vec<PreviewView>,
}

/// `POST /v1/projects/{project}/webhook-secret`: the project's new webhook secret,
/// shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookSecretView {
    /// The secret: GitHub's "Secret", GitLab's "Secret token".
    pub secret: String,
    /// The delivery paths on this server, for GitHub and GitLab.
    pub paths: Vec<String>,
}

/// `POST /v1/projects/{project}/previews/{number}/approve`: the commit the owner
/// reviewed; refused unless it is the one waiting (a push meanwhile is not approved).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// The full commit sha that was reviewed.
    #[schema(pattern = "^[0-9a-f]{40}$")]
    pub commit: String,
}
