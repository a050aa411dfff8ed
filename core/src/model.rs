//! The domain model: what Wharf deploys and what it records.
//!
//! Everything here is plain data (serde), shared by the engine, the stores and the
//! backends. Names that end up in hostnames, container names or labels are checked by
//! [`validate_name`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::state::DeploymentState;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// What every identifier of this kind starts with. Names (of projects,
            /// services, environments) never hold a `_`, so a key with this prefix can
            /// only be an identifier.
            pub const PREFIX: &'static str = concat!($prefix, "_");

            /// A new random identifier.
            pub fn random() -> Self {
                $name(format!(concat!($prefix, "_{}"), uuid::Uuid::new_v4().simple()))
            }
            /// Whether `key` has the shape of such an identifier (its prefix).
            pub fn is_shaped(key: &str) -> bool {
                key.starts_with(Self::PREFIX)
            }
            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }
        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }
    };
}

id_type!(
    /// Identifies a [`Project`].
    ProjectId, "prj"
);
id_type!(
    /// Identifies an [`Environment`].
    EnvironmentId, "env"
);
id_type!(
    /// Identifies a [`Service`].
    ServiceId, "svc"
);
id_type!(
    /// Identifies a [`Deployment`].
    DeploymentId, "dep"
);
id_type!(
    /// Identifies a [`Release`].
    ReleaseId, "rel"
);
id_type!(
    /// Identifies a running [`Instance`] on a runtime (assigned by the runtime).
    InstanceId, "ins"
);
id_type!(
    /// Identifies a [`Route`] on a router.
    RouteId, "rte"
);
id_type!(
    /// Identifies a [`CronRun`].
    CronRunId, "crn"
);

pub use crate::cron::{Concurrency, CronJob, CronOutcome, CronRun};

/// Milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(ms)
    }
}

/// Labels put on every resource Wharf creates, so it only ever touches its own.
pub type Labels = BTreeMap<String, String>;

/// Label keys Wharf puts on instances, images and routes.
pub mod label {
    /// Marks a resource as created by Wharf (`"true"`).
    pub const MANAGED: &str = "wharf.managed";
    /// The project id.
    pub const PROJECT: &str = "wharf.project";
    /// The service id.
    pub const SERVICE: &str = "wharf.service";
    /// The service name (readable).
    pub const SERVICE_NAME: &str = "wharf.service-name";
    /// The deployment id.
    pub const DEPLOYMENT: &str = "wharf.deployment";
    /// The release id (once known).
    pub const RELEASE: &str = "wharf.release";
    /// A volume's name (on the runtime's volume, next to [`PROJECT`]).
    pub const VOLUME: &str = "wharf.volume";
    /// A volume's scope ([`crate::VolumeRef::scope`]).
    pub const VOLUME_SCOPE: &str = "wharf.volume-scope";
    /// The process type an instance runs (`web`, `worker`...).
    pub const PROCESS: &str = "wharf.process";
}

/// Checks a project, environment or service name: 1 to 63 characters of lower-case
/// ASCII letters, digits and `-`, starting with a letter and not ending with `-`,
/// so it is safe in hostnames, container names and labels.
///
/// ```
/// assert!(wharf_core::validate_name("web-1").is_ok());
/// assert!(wharf_core::validate_name("Web").is_err());
/// assert!(wharf_core::validate_name("../etc").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid(format!("invalid name {name:?}: {why}")));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 63 {
        return bad("it is longer than 63 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return bad("it must start with a lower-case letter");
    }
    if name.ends_with('-') {
        return bad("it must not end with '-'");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return bad(&format!("{c:?} is not allowed (use a-z, 0-9 and '-')"));
    }
    Ok(())
}

/// Checks an environment variable key: `[A-Za-z_][A-Za-z0-9_]*`, at most 255 bytes.
pub fn validate_env_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 255
        && key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid environment variable name {key:?}: use letters, digits and '_', not starting with a digit"
        )))
    }
}

/// A secret value: kept out of `Debug` and `Display` so it never reaches a log.
/// Write-only through APIs: a client may send one, the API never returns it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

/// A string marked `writeOnly` (the derive cannot mark a newtype so).
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Secret {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .write_only(true)
            .description(Some(
                "A secret value: write-only, the API never returns it.",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Secret {}

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The plain value, for handing to the runtime. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The value of an environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum EnvValue {
    /// A plain value, shown in listings.
    Plain(String),
    /// A secret: write-only through APIs, redacted in logs.
    Secret(Secret),
}

impl EnvValue {
    /// The value to hand to the runtime.
    pub fn expose(&self) -> &str {
        match self {
            EnvValue::Plain(v) => v,
            EnvValue::Secret(s) => s.expose(),
        }
    }
    /// Whether this is a secret.
    pub fn is_secret(&self) -> bool {
        matches!(self, EnvValue::Secret(_))
    }
}

/// Environment variables by key (sorted, so snapshots are stable).
pub type EnvVars = BTreeMap<String, EnvValue>;

/// Merges env layers in override order (later layers win): project, environment,
/// service. Returns plain `key=value` pairs for the runtime.
pub fn resolve_env<'a>(layers: impl IntoIterator<Item = &'a EnvVars>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for layer in layers {
        for (k, v) in layer {
            out.insert(k.clone(), v.expose().to_owned());
        }
    }
    out
}

/// A project: a group of services deployed together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Project {
    /// Its id.
    pub id: ProjectId,
    /// Its name (see [`validate_name`]); unique among projects.
    pub name: String,
    /// Env vars every service of the project gets (overridden by environment and service).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, EnvValue>))]
    pub env: EnvVars,
    /// How its pull/merge request previews are made.
    #[serde(default, skip_serializing_if = "PreviewSettings::is_default")]
    pub previews: PreviewSettings,
    /// The secret its repositories' webhooks are signed with (GitHub) or carry
    /// (GitLab): a delivery it signs acts on this project only. Sealed at rest like
    /// env secrets; never returned by the API but once, when it is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub webhook_secret: Option<Secret>,
    /// When it was created.
    pub created_at: Timestamp,
}

/// What previews of pull requests from forks (another repository than the
/// service's own) may do. Code from a fork is anyone's: by default it runs without
/// the project's and the service's secrets, the way CI services treat forks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ForkPreviews {
    /// Deployed at once, without the project's and the service's secrets: only the
    /// preview env (see [`PreviewSettings::env`]) adds to their plain variables.
    #[default]
    WithoutSecrets,
    /// Held until an owner approves the pull request's head commit; a deployment of
    /// exactly the approved commit gets the secrets, a later push waits again.
    Approve,
    /// Never deployed.
    Off,
}

/// A project's preview settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreviewSettings {
    /// What previews of forks may do.
    #[serde(default)]
    pub forks: ForkPreviews,
    /// Env vars every preview environment starts with (over the project's, under its
    /// services'): the only secrets an unapproved fork's preview gets.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, EnvValue>))]
    pub env: EnvVars,
}

impl PreviewSettings {
    /// Whether these are the defaults (not stored then).
    pub fn is_default(&self) -> bool {
        *self == PreviewSettings::default()
    }
}

impl Project {
    /// A new project with a random id. Fails on an invalid name.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        validate_name(&name)?;
        Ok(Project {
            id: ProjectId::random(),
            name,
            env: EnvVars::new(),
            previews: PreviewSettings::default(),
            webhook_secret: None,
            created_at: Timestamp::now(),
        })
    }
}

/// What an environment is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EnvironmentKind {
    /// A long-lived environment (production, staging).
    #[default]
    Standing,
    /// A preview for a pull/merge request, torn down when it closes.
    Preview {
        /// The pull/merge request number.
        number: u64,
        /// The branch it tracks.
        branch: String,
        /// Set when the pull request comes from another repository than the
        /// service's (a fork): its code is then not trusted with secrets.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fork: Option<Fork>,
    },
}

/// The fork a preview's code comes from, and what an owner approved of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Fork {
    /// The fork's repository URL, as the forge gave it.
    pub repository: String,
    /// The head commit waiting for an owner's approval ([`ForkPreviews::Approve`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting: Option<String>,
    /// The commit an owner approved: a deployment of exactly it gets the secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<String>,
}

impl EnvironmentKind {
    /// Whether a deployment of `source` here may get the project's and the service's
    /// secrets: always, but in the preview of a fork, where only a deployment of the
    /// very commit an owner approved does.
    pub fn trusts(&self, source: &SourceSpec) -> bool {
        let EnvironmentKind::Preview {
            fork: Some(fork), ..
        } = self
        else {
            return true;
        };
        match (source, &fork.approved) {
            (
                SourceSpec::Git {
                    reference: GitRef::Commit(c),
                    ..
                },
                Some(approved),
            ) => c.eq_ignore_ascii_case(approved),
            _ => false,
        }
    }
}

/// An environment of a project (production, staging, a preview).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Environment {
    /// Its id.
    pub id: EnvironmentId,
    /// The project it belongs to.
    pub project: ProjectId,
    /// Its name, unique in the project.
    pub name: String,
    /// Standing or preview.
    #[serde(default)]
    pub kind: EnvironmentKind,
    /// Env vars for its services (override the project's).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, EnvValue>))]
    pub env: EnvVars,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A git reference to deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum GitRef {
    /// The remote's default branch.
    Default,
    /// A branch name.
    Branch(String),
    /// A tag name.
    Tag(String),
    /// A full or abbreviated commit sha.
    Commit(String),
}

/// Where a service's source comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceSpec {
    /// A git repository at a reference, optionally a sub-folder of it.
    Git {
        /// Clone URL (https, ssh, file or a local path).
        url: String,
        /// What to check out.
        reference: GitRef,
        /// A sub-folder to build from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
        subdir: Option<PathBuf>,
    },
    /// A `.tar.gz` archive on the control plane's disk (e.g. an upload).
    Archive {
        /// Path of the archive.
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        path: PathBuf,
    },
    /// A local folder, copied as it is.
    Dir {
        /// Path of the folder.
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        path: PathBuf,
    },
    /// A prebuilt image: nothing to fetch or build.
    Image {
        /// Image reference (`name:tag` or `name@sha256:...`).
        image: String,
    },
}

impl SourceSpec {
    /// A short name of the source kind (`git`, `archive`, `dir`, `image`).
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Git { .. } => "git",
            SourceSpec::Archive { .. } => "archive",
            SourceSpec::Dir { .. } => "dir",
            SourceSpec::Image { .. } => "image",
        }
    }

    /// This source as responses and logs show it: a git URL's user part (a token,
    /// say) replaced by `***`, an upload's or folder's server-side path reduced to its
    /// last part. Never store the result: it no longer fetches.
    pub fn redacted(&self) -> SourceSpec {
        let last = |p: &std::path::Path| PathBuf::from(p.file_name().unwrap_or_default());
        match self {
            SourceSpec::Git {
                url,
                reference,
                subdir,
            } => SourceSpec::Git {
                url: redact_url(url),
                reference: reference.clone(),
                subdir: subdir.clone(),
            },
            SourceSpec::Archive { path } => SourceSpec::Archive { path: last(path) },
            SourceSpec::Dir { path } => SourceSpec::Dir { path: last(path) },
            SourceSpec::Image { image } => SourceSpec::Image {
                image: redact_url(image),
            },
        }
    }
}

/// A URL with a user part in its authority, cut as `(scheme, user part, rest)`:
/// `https://user:token@host/path` is `("https", "user:token", "host/path")`. `None`
/// when the URL has no `scheme://` or no user part.
pub fn split_userinfo(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some((scheme, &rest[..at], &rest[at + 1..]))
}

/// `url` with the user part of its authority (`user:token@`) shown as `***@`, for
/// messages and responses.
pub fn redact_url(url: &str) -> String {
    match split_userinfo(url) {
        Some((scheme, _, rest)) => format!("{scheme}://***@{rest}"),
        None => url.to_owned(),
    }
}

/// How a service is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BuildSpec {
    /// Zero-config: detect the kind of project (see [`crate::detect`]).
    #[default]
    Auto,
    /// Use a Dockerfile at this path in the source.
    Dockerfile {
        /// Path relative to the source root.
        path: String,
    },
    /// An explicit plan.
    Plan {
        /// The plan.
        plan: BuildPlan,
    },
}

/// The kind of project detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProjectKind {
    /// The project has its own Dockerfile.
    Dockerfile,
    /// Node.js (`package.json`).
    Node,
    /// Python (`requirements.txt`, `pyproject.toml`, `app.py`, `main.py`).
    Python,
    /// Go (`go.mod`).
    Go,
    /// Rust (`Cargo.toml`).
    Rust,
    /// A static site (`index.html`).
    Static,
}

impl fmt::Display for ProjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ProjectKind::Dockerfile => "dockerfile",
            ProjectKind::Node => "node",
            ProjectKind::Python => "python",
            ProjectKind::Go => "go",
            ProjectKind::Rust => "rust",
            ProjectKind::Static => "static",
        };
        f.write_str(s)
    }
}

/// How to turn source into a runnable image: the output of detection, or given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BuildPlan {
    /// What kind of project this is.
    pub kind: ProjectKind,
    /// Base image as it would be named in production (remapped by [`crate::detect::ImageMap`]).
    pub base_image: String,
    /// Commands that install dependencies.
    #[serde(default)]
    pub install: Vec<String>,
    /// Commands that build the app.
    #[serde(default)]
    pub build: Vec<String>,
    /// The command that starts the app (exec form).
    #[serde(default)]
    pub start: Vec<String>,
    /// The port the app listens on.
    pub port: u16,
    /// For [`ProjectKind::Dockerfile`]: the Dockerfile's path in the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// The app's other process types, from its `Procfile` (`release`, `worker`, ...;
    /// `web` is [`BuildPlan::start`]), each in exec form. A service's own
    /// [`Service::processes`] take precedence.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub processes: BTreeMap<String, Vec<String>>,
}

/// How to tell a new instance is ready for traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthCheck {
    /// What to probe.
    pub probe: Probe,
    /// Time between probes once the instance has had time to start (the engine
    /// probes sooner at first: 25 ms, then doubling up to this). In milliseconds on
    /// the wire.
    #[serde(with = "duration_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub interval: Duration,
    /// How long the instance may take to become healthy before it is failed. In
    /// milliseconds on the wire.
    #[serde(with = "duration_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub timeout: Duration,
}

impl HealthCheck {
    /// The shortest interval between probes (a shorter one would busy-loop).
    pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
    /// The longest interval between probes.
    pub const MAX_INTERVAL: Duration = Duration::from_secs(600);
    /// The shortest time an instance gets to become healthy.
    pub const MIN_TIMEOUT: Duration = Duration::from_millis(100);
    /// The longest time an instance gets to become healthy.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

    /// Checks the probe's path and that interval and timeout lie within bounds.
    pub fn validate(&self) -> Result<()> {
        if let Probe::Http { path } = &self.probe {
            if !path.starts_with('/') {
                return Err(Error::invalid(format!(
                    "health check path must start with '/', not {path:?}"
                )));
            }
        }
        let within = |d: Duration, lo: Duration, hi: Duration| (lo..=hi).contains(&d);
        if !within(self.interval, Self::MIN_INTERVAL, Self::MAX_INTERVAL) {
            return Err(Error::invalid(format!(
                "health check interval must be from {} ms to {} ms, not {} ms",
                Self::MIN_INTERVAL.as_millis(),
                Self::MAX_INTERVAL.as_millis(),
                self.interval.as_millis()
            )));
        }
        if !within(self.timeout, Self::MIN_TIMEOUT, Self::MAX_TIMEOUT) {
            return Err(Error::invalid(format!(
                "health check timeout must be from {} ms to {} ms, not {} ms",
                Self::MIN_TIMEOUT.as_millis(),
                Self::MAX_TIMEOUT.as_millis(),
                self.timeout.as_millis()
            )));
        }
        Ok(())
    }
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            probe: Probe::Http { path: "/".into() },
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(60),
        }
    }
}

/// A health probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Probe {
    /// HTTP GET on the app's port; any 2xx or 3xx passes.
    Http {
        /// Request path, starting with `/`.
        path: String,
    },
    /// A TCP connection to the app's port succeeds.
    Tcp,
    /// No probe: running is healthy.
    None,
    /// PostgreSQL accepts connections (as `pg_isready` tells): see
    /// [`crate::dbprobe::postgres`].
    Postgres,
    /// MySQL or MariaDB greets a new connection (as `mysqladmin ping` tells): see
    /// [`crate::dbprobe::mysql`].
    Mysql,
    /// Redis answers `PING`: see [`crate::dbprobe::redis`].
    Redis,
}

/// Resource limits for an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resources {
    /// Memory limit in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// CPU limit in thousandths of a core (500 = half a core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u32>,
}

/// A named volume mounted into an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VolumeMount {
    /// Volume name (see [`validate_name`]). The volume belongs to the project (or its
    /// environment), not to a release: every service of it naming this volume mounts
    /// the same data, and it outlives redeploys, rollbacks and the service itself.
    pub name: String,
    /// Absolute path inside the instance.
    pub path: String,
    /// The size asked for (`"10Gi"`, `"500Mi"`: see [`parse_size`]). Runtimes that
    /// provision storage (Kubernetes claims) honour it; Docker's local volumes grow
    /// as needed and only record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

impl VolumeMount {
    /// Volume `name` mounted at `path`, with no size asked for.
    pub fn new(name: impl Into<String>, path: impl Into<String>) -> Self {
        VolumeMount {
            name: name.into(),
            path: path.into(),
            size: None,
        }
    }

    /// Sets [`VolumeMount::size`].
    pub fn with_size(mut self, size: impl Into<String>) -> Self {
        self.size = Some(size.into());
        self
    }

    /// Checks every mount of one service ([`VolumeMount::validate`]), and that no
    /// volume is mounted twice and no two share a path.
    pub fn validate_all(mounts: &[VolumeMount]) -> Result<()> {
        for (i, v) in mounts.iter().enumerate() {
            v.validate()?;
            if let Some(other) = mounts[..i]
                .iter()
                .find(|o| o.name == v.name || o.path == v.path)
            {
                return Err(Error::invalid(format!(
                    "volumes {} and {} are the same volume or mount at the same path",
                    other.name, v.name
                )));
            }
        }
        Ok(())
    }

    /// Checks the name ([`validate_name`]), the path (absolute, no `..`, `:` or
    /// control characters: it reaches the runtime's mount syntax) and the size
    /// ([`parse_size`]).
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        let p = &self.path;
        if !p.starts_with('/')
            || p.contains(':')
            || p.chars().any(|c| c.is_control())
            || p.split('/').any(|part| part == "..")
            || p.len() > 4096
        {
            return Err(Error::invalid(format!(
                "volume {} must mount at an absolute path without '..', ':' or control characters, not {p:?}",
                self.name
            )));
        }
        if p.trim_end_matches('/').is_empty() {
            return Err(Error::invalid(format!(
                "volume {} cannot be mounted over the instance's root folder",
                self.name
            )));
        }
        if let Some(size) = &self.size {
            parse_size(size).map_err(|e| e.context(format!("volume {}", self.name)))?;
        }
        Ok(())
    }
}

/// Which volume a runtime is asked about: a project's volume by name, in the scope
/// its instances mount it in ([`InstanceSpec::network`]: one per project and one per
/// environment of it, so an environment's `data` is never production's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VolumeRef {
    /// The project it belongs to (runtimes check their own records of it, so a
    /// volume of another project is never found or removed through this one).
    pub project: ProjectId,
    /// The scope: the network of the instances that mount it (`None`: none).
    pub scope: Option<String>,
    /// The volume's name (see [`validate_name`]).
    pub name: String,
}

/// A volume as a runtime holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    /// Which volume.
    pub volume: VolumeRef,
    /// The runtime's own name for it (a Docker volume, a claim).
    pub runtime_name: String,
    /// Bytes it holds, when the runtime knows (Docker: from its disk-usage report).
    pub size_bytes: Option<u64>,
}

/// Parses a volume size in Kubernetes' binary units: a whole number followed by `Ki`,
/// `Mi`, `Gi` or `Ti` (`"500Mi"`, `"10Gi"`); returns bytes. Zero, other units,
/// fractions and sizes over 1 PiB are refused.
///
/// ```
/// assert_eq!(wharf_core::parse_size("10Gi").unwrap(), 10 << 30);
/// assert!(wharf_core::parse_size("10GB").is_err());
/// ```
pub fn parse_size(size: &str) -> Result<u64> {
    let bad = || {
        Error::invalid(format!(
            "invalid size {size:?}: write a whole number and Ki, Mi, Gi or Ti, e.g. \"10Gi\""
        ))
    };
    let digits = size.len() - size.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = size.split_at(digits);
    let shift = match unit {
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        "Ti" => 40,
        _ => return Err(bad()),
    };
    if number.is_empty() || number.len() > 10 || number.starts_with('0') {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| bad())?;
    let bytes = n
        .checked_shl(shift)
        .filter(|b| *b >> shift == n)
        .ok_or_else(bad)?;
    if bytes > 1 << 50 {
        return Err(Error::invalid(format!(
            "invalid size {size:?}: at most 1 PiB"
        )));
    }
    Ok(bytes)
}

/// A deployable unit: one app of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Service {
    /// Its id.
    pub id: ServiceId,
    /// Its project.
    pub project: ProjectId,
    /// Its environment, if the project has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentId>,
    /// Its name, unique within project and environment (see [`validate_name`]).
    pub name: String,
    /// Where its source comes from.
    pub source: SourceSpec,
    /// How it is built.
    #[serde(default)]
    pub build: BuildSpec,
    /// The port it listens on (overrides the detected one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Its own env vars (override project and environment).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, EnvValue>))]
    pub env: EnvVars,
    /// Names of services in the same project it depends on.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// How to check it is ready; `None` uses the default HTTP probe on `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Resource limits.
    #[serde(default)]
    pub resources: Resources,
    /// Extra hostnames routed to it (besides the generated one).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Named volumes.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Set when it is a managed database (see [`crate::database`]): made from the
    /// engine's template, private unless [`crate::database::DatabaseSpec::public`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<crate::database::DatabaseSpec>,
    /// Process types as in a `Procfile`: name to command line (shell syntax runs
    /// through `sh -c`). They take precedence over the app's own `Procfile`. `web`
    /// replaces the start command; `release` runs once per deployment, after the
    /// build and before the new release starts ([`crate::Step::Releasing`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub processes: BTreeMap<String, String>,
    /// How many instances each process type runs (`web`: the routed replicas); a
    /// type not named runs one. 0 stops a type other than `web`. See
    /// [`Service::replicas_of`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replicas: BTreeMap<String, u32>,
    /// Health checks of process types other than `web` (whose check is
    /// [`Service::health_check`]), by type. A type named here is probed as the check
    /// says, at its instance's endpoint: an HTTP or TCP check needs the process to
    /// listen on `PORT` (the env var every instance gets, as `web` does). A type not
    /// named is checked by liveness: running, and still running a second later.
    /// Never `web` or `release` (see [`validate_process_checks`]); a type the release
    /// does not run fails its deployment ([`Service::check_process_types`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub process_checks: BTreeMap<String, HealthCheck>,
    /// Commands it runs on a schedule from its live release (see [`crate::cron`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cron: Vec<CronJob>,
    /// When it was created.
    pub created_at: Timestamp,
}

impl Service {
    /// A new service in `project` with a random id and defaults for the rest.
    /// Fails on an invalid name.
    pub fn new(project: &ProjectId, name: impl Into<String>, source: SourceSpec) -> Result<Self> {
        let name = name.into();
        validate_name(&name)?;
        Ok(Service {
            id: ServiceId::random(),
            project: project.clone(),
            environment: None,
            name,
            source,
            build: BuildSpec::Auto,
            port: None,
            env: EnvVars::new(),
            depends_on: Vec::new(),
            health_check: None,
            resources: Resources::default(),
            domains: Vec::new(),
            volumes: Vec::new(),
            database: None,
            processes: BTreeMap::new(),
            replicas: BTreeMap::new(),
            process_checks: BTreeMap::new(),
            cron: Vec::new(),
            created_at: Timestamp::now(),
        })
    }

    /// How many instances process type `process` runs: [`Service::replicas`]' count,
    /// else 1. A managed database runs one `web` instance and nothing else.
    pub fn replicas_of(&self, process: &str) -> u32 {
        if self.database.is_some() {
            return u32::from(process == WEB_PROCESS);
        }
        self.replicas.get(process).copied().unwrap_or(1)
    }

    /// Whether it gets a public route: every service, except a managed database
    /// that was not asked to be public (reachable on the project network only).
    pub fn routed(&self) -> bool {
        self.database.as_ref().is_none_or(|d| d.public)
    }

    /// The variables a reference to it may name besides the built-ins: its own env
    /// and, for a managed database, its connection URL at `address` (host and port
    /// on the project network; when `None`, its name and the engine's port, which
    /// is right for the keys and for runtimes that reach peers by name).
    pub fn referable_env(&self, address: Option<(&str, u16)>) -> EnvVars {
        let mut env = self.env.clone();
        if let Some(db) = &self.database {
            let (host, port) = address.unwrap_or((&self.name, db.engine.port()));
            env.extend(crate::database::exports(&self.env, db, host, port));
        }
        env
    }

    /// Checks every field a user can set: names, env keys, ports, volumes,
    /// dependencies (not their existence: the planner checks that).
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        for key in self.env.keys() {
            validate_env_key(key)?;
        }
        if let SourceSpec::Image { image } = &self.source {
            // An image reference, never a path: the host runtime runs a release
            // folder as its "image", so a path would run another app's files.
            if image.starts_with(['/', '.', '~'])
                || image.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(Error::invalid(format!(
                    "service {}: {image:?} is not an image reference (a path or a name with spaces is refused)",
                    self.name
                )));
            }
        }
        if self.port == Some(0) {
            return Err(Error::invalid(format!(
                "service {}: port 0 is not a valid port",
                self.name
            )));
        }
        if let Some(db) = &self.database {
            db.validate()?;
        }
        for dep in &self.depends_on {
            validate_name(dep)
                .map_err(|e| e.context(format!("service {}: depends_on", self.name)))?;
            if dep == &self.name {
                return Err(Error::invalid(format!(
                    "service {} depends on itself",
                    self.name
                )));
            }
        }
        if self.processes.len() > MAX_PROCESS_TYPES {
            return Err(Error::invalid(format!(
                "service {}: at most {MAX_PROCESS_TYPES} process types",
                self.name
            )));
        }
        for (name, command) in &self.processes {
            validate_process(name, command)
                .map_err(|e| e.context(format!("service {}", self.name)))?;
        }
        validate_replicas(&self.replicas)
            .map_err(|e| e.context(format!("service {}", self.name)))?;
        VolumeMount::validate_all(&self.volumes)
            .map_err(|e| e.context(format!("service {}", self.name)))?;
        if let Some(h) = &self.health_check {
            h.validate()
                .map_err(|e| e.context(format!("service {}", self.name)))?;
        }
        validate_process_checks(&self.process_checks)
            .map_err(|e| e.context(format!("service {}", self.name)))?;
        if self.database.is_some() && !self.process_checks.is_empty() {
            return Err(Error::invalid(format!(
                "service {}: a managed database runs only its web process: it takes no process checks",
                self.name
            )));
        }
        if let SourceSpec::Image { image } = &self.source {
            // An image brings no `Procfile`: its process types are the service's own,
            // known now rather than at its next deployment.
            if !image.is_empty() {
                let own = crate::detect::processes(None, &self.processes);
                self.check_process_types(&own)?;
            }
        }
        CronJob::validate_all(&self.cron)
            .map_err(|e| e.context(format!("service {}", self.name)))?;
        Ok(())
    }

    /// Checks that every [`Service::process_checks`] entry names a process type a
    /// release runs: one of `processes`, the release's process types as
    /// [`crate::detect::processes`] gives them (the service's own over its
    /// `Procfile`'s). The engine checks this once a deployment knows its build plan,
    /// before anything of it starts; the error names the type and those it runs.
    pub fn check_process_types(&self, processes: &BTreeMap<String, Vec<String>>) -> Result<()> {
        for name in self.process_checks.keys() {
            if !processes.contains_key(name) {
                let runs: Vec<&str> = std::iter::once(WEB_PROCESS)
                    .chain(
                        processes
                            .keys()
                            .map(String::as_str)
                            .filter(|p| *p != RELEASE_PROCESS && *p != WEB_PROCESS),
                    )
                    .collect();
                return Err(Error::invalid(format!(
                    "service {}: process check {name} names no process type the release runs \
                     (it runs {}): declare {name} in its processes or its Procfile, or remove \
                     the check",
                    self.name,
                    runs.join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// Checks process checks ([`Service::process_checks`]): each names a process type
/// (as [`validate_name`]) other than `web` (checked by [`Service::health_check`]) and
/// `release` (a command run once to completion, never probed), and each check is
/// valid ([`HealthCheck::validate`]).
pub fn validate_process_checks(checks: &BTreeMap<String, HealthCheck>) -> Result<()> {
    for (name, check) in checks {
        validate_name(name).map_err(|e| e.context("process check"))?;
        if name == WEB_PROCESS {
            return Err(Error::invalid(
                "process check web: the web process is checked by the service's health check \
                 (health_check), not by a process check",
            ));
        }
        if name == RELEASE_PROCESS {
            return Err(Error::invalid(
                "process check release: the release command runs once to completion and is \
                 never probed",
            ));
        }
        check
            .validate()
            .map_err(|e| e.context(format!("process check {name}")))?;
    }
    Ok(())
}

/// Checks a process type: its name as [`validate_name`] (`web`, `worker`,
/// `release`, ...) and its command line one line of at most 4096 bytes, not empty.
pub fn validate_process(name: &str, command: &str) -> Result<()> {
    validate_name(name).map_err(|e| e.context("process type"))?;
    let why = if command.trim().is_empty() {
        Some("is empty")
    } else if command.len() > 4096 {
        Some("is longer than 4096 bytes")
    } else if command.chars().any(|c| c.is_control() && c != '\t') {
        Some("holds a line break or another control character")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::invalid(format!("process {name}: the command {why}"))),
        None => Ok(()),
    }
}

/// Checks replica counts: valid process type names, `web` at least 1, none above
/// [`MAX_REPLICAS`], and no count for `release` (it runs once per deployment).
pub fn validate_replicas(replicas: &BTreeMap<String, u32>) -> Result<()> {
    for (name, n) in replicas {
        validate_name(name).map_err(|e| e.context("process type"))?;
        if name == RELEASE_PROCESS {
            return Err(Error::invalid(
                "the release process runs once per deployment: it takes no replica count",
            ));
        }
        if *n > MAX_REPLICAS {
            return Err(Error::invalid(format!(
                "process {name}: at most {MAX_REPLICAS} replicas, not {n}"
            )));
        }
        if replicas.values().map(|n| u64::from(*n)).sum::<u64>() > u64::from(MAX_INSTANCES) {
            return Err(Error::invalid(format!(
                "at most {MAX_INSTANCES} instances in all process types together"
            )));
        }
        if name == WEB_PROCESS && *n == 0 {
            return Err(Error::invalid(
                "process web: at least 1 replica (it serves the service's traffic)",
            ));
        }
    }
    Ok(())
}

/// What caused a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// A person or API call.
    Manual,
    /// A push or pull-request webhook.
    Webhook {
        /// `github`, `gitlab`, ...
        provider: String,
        /// The git ref or PR that triggered it.
        reference: String,
    },
    /// A dependency of this service was redeployed.
    Cascade {
        /// The service whose change caused this deployment.
        from: ServiceId,
    },
    /// A rollback to an earlier release.
    Rollback {
        /// The release re-activated.
        release: ReleaseId,
        /// Whether its release command runs again (by default a rollback runs none:
        /// the release already ran it once).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        run_release: bool,
    },
}

/// A built image.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Artifact {
    /// Image reference a runtime can start. When the builder pushed the image to a
    /// registry, a reference by manifest digest there (`host/repo@sha256:...`) that any
    /// machine with access to the registry can pull.
    pub image: String,
    /// Content digest (`sha256:...`) when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Whether the image exists only on the engine that built it (no registry holds
    /// it), so a runtime on other machines (a Kubernetes cluster) cannot pull it.
    /// `false` for pushed builds and for images named by the user (presumed pullable).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local_only: bool,
}

/// A network endpoint where an instance answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Endpoint {
    /// Host or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What a runtime needs to start one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// A readable, unique name (`<project>-<service>-<short id>`).
    pub name: String,
    /// The image to run.
    pub image: String,
    /// Whether `image` exists only on the engine that built it
    /// ([`Artifact::local_only`]): a runtime that pulls images onto other machines
    /// should refuse it with a clear error rather than fail to pull it later.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub image_local_only: bool,
    /// Overrides the image's command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Environment (already resolved; may contain secrets: never log it).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The port the app listens on inside the instance.
    pub port: u16,
    /// Resource limits.
    #[serde(default)]
    pub resources: Resources,
    /// How the runtime decides the instance is healthy.
    pub health_check: HealthCheck,
    /// Named volumes.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Network to join (one per project), so services reach each other by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Name other instances on the network reach this one by (the service name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_alias: Option<String>,
    /// Labels (see [`label`]); the runtime must keep them and list by them.
    #[serde(default)]
    pub labels: Labels,
    /// A task (a release command, a one-off run, a cron job) rather than a server:
    /// the runtime runs its command once and never restarts it, and reports it
    /// [`InstanceStatus::Running`] (not probed) until it exits, then
    /// [`InstanceStatus::Exited`] with its exit code, its output still readable until
    /// it is stopped. A runtime that cannot run tasks refuses the spec with
    /// [`crate::ErrorKind::Unsupported`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub run_once: bool,
    /// How many copies of it to run, for a runtime that runs replicas itself
    /// ([`crate::Runtime::replicates`]: a Kubernetes Deployment's `replicas`) and
    /// balances between them behind the instance's one endpoint. The engine asks for
    /// more than 1 only from such a runtime; others start one instance per replica.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub replicas: u32,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

impl InstanceSpec {
    /// What no runtime can start: a spec without an image, or with port 0
    /// (InvalidInput). Runtimes call it first and add their own refusals.
    pub fn validate(&self) -> Result<()> {
        if self.image.is_empty() {
            return Err(Error::invalid("instance spec has no image"));
        }
        if self.port == 0 {
            return Err(Error::invalid("instance spec has port 0"));
        }
        if self.replicas == 0 || self.replicas > MAX_REPLICAS {
            return Err(Error::invalid(format!(
                "instance spec asks for {} replicas: 1 to {MAX_REPLICAS}",
                self.replicas
            )));
        }
        Ok(())
    }
}

/// A running (or once running) instance on a runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Instance {
    /// Runtime-assigned id.
    pub id: InstanceId,
    /// Where a router reaches it.
    pub endpoint: Endpoint,
    /// The labels it was started with.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub labels: Labels,
}

/// What a runtime says about an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InstanceStatus {
    /// Created, not yet running or not yet probed.
    Starting,
    /// Running; health not (yet) established.
    Running,
    /// Running and passing its health check.
    Healthy,
    /// Running but failing its health check.
    Unhealthy {
        /// Why the probe failed.
        reason: String,
    },
    /// Stopped or crashed.
    Exited {
        /// Exit code, when known.
        code: Option<i32>,
        /// Why it stopped (e.g. `OOM-killed`).
        reason: String,
    },
}

/// A TLS policy for a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TlsPolicy {
    /// Plain HTTP only.
    #[default]
    None,
    /// Certificates from an ACME CA (Let's Encrypt) for the route's hosts.
    Acme,
    /// Certificates from the proxy's internal CA (tests, private networks).
    Internal,
    /// Certificates issued on demand at the first TLS handshake, for hosts Wharf approves.
    OnDemand,
}

/// One upstream of a route and its share of traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Upstream {
    /// Where to send traffic.
    pub endpoint: Endpoint,
    /// Relative weight (0 takes no new traffic).
    pub weight: u32,
}

/// A hostname (+ path prefix) mapped to weighted upstreams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Route {
    /// Its id (one route per service: the service id).
    pub id: RouteId,
    /// Hostnames it answers for.
    pub hosts: Vec<String>,
    /// Optional path prefix (starting with `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Where traffic goes.
    pub upstreams: Vec<Upstream>,
    /// TLS policy.
    #[serde(default)]
    pub tls: TlsPolicy,
    /// Labels (see [`label`]).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub labels: Labels,
}

impl Route {
    /// Checks the route: at least one host, each a valid hostname; a path prefix that
    /// starts with `/` and has no spaces or backticks; at least one upstream with
    /// weight.
    pub fn validate(&self) -> Result<()> {
        if self.hosts.is_empty() {
            return Err(Error::invalid(format!("route {}: no hosts", self.id)));
        }
        for h in &self.hosts {
            crate::hostname::validate_hostname(h)
                .map_err(|e| e.context(format!("route {}", self.id)))?;
        }
        if let Some(p) = &self.path_prefix {
            if !p.starts_with('/')
                || p.chars()
                    .any(|c| c.is_whitespace() || c == '`' || c.is_control())
            {
                return Err(Error::invalid(format!(
                    "route {}: path prefix {p:?} must start with '/' and hold no spaces, backticks or control characters",
                    self.id
                )));
            }
        }
        if self.upstreams.is_empty() || self.upstreams.iter().all(|u| u.weight == 0) {
            return Err(Error::invalid(format!(
                "route {}: needs at least one upstream with a weight above 0",
                self.id
            )));
        }
        Ok(())
    }
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// The app's standard output.
    Stdout,
    /// The app's standard error.
    Stderr,
    /// Build output.
    Build,
    /// Wharf's own notes about the deployment.
    System,
}

/// One line of output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    /// When it was produced (or received).
    pub at: Timestamp,
    /// Which stream.
    pub stream: LogStream,
    /// The text, without trailing newline.
    pub text: String,
}

impl LogLine {
    /// A line stamped now.
    pub fn new(stream: LogStream, text: impl Into<String>) -> Self {
        LogLine {
            at: Timestamp::now(),
            stream,
            text: text.into(),
        }
    }
}

/// One attempt to bring a service to a new version, from request to live (or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deployment {
    /// Its id.
    pub id: DeploymentId,
    /// The project.
    pub project: ProjectId,
    /// The service deployed.
    pub service: ServiceId,
    /// Where it is in its life.
    pub state: DeploymentState,
    /// Bumped on every update; updates compare-and-set on it.
    pub version: u64,
    /// What caused it.
    pub trigger: Trigger,
    /// The source deployed (a snapshot of the service's at request time).
    pub source: SourceSpec,
    /// Resolved revision (commit sha, archive digest, image) once fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The build plan used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<BuildPlan>,
    /// The artifact built (or reused, on rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// The instance started for it: its first `web` instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<Instance>,
    /// Its other instances: `web` replicas past the first, and the instances of its
    /// other process types (`worker`...). See [`Deployment::instances`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_instances: Vec<ProcessInstance>,
    /// The release it created on going live (or on going out as a canary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseId>,
    /// For a canary or blue-green deployment, the percent of the traffic (0 to 100)
    /// it takes beside the live release while it is [`DeploymentState::Canary`],
    /// until promoted or aborted; `None` for a deployment that takes all the traffic
    /// on going live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<u8>,
    /// For a deployment that [`crate::Engine::recover`] requested again because a
    /// restart of the control plane interrupted it: the interrupted one. A retry is
    /// never retried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<DeploymentId>,
    /// When it was requested.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// An instance of one of a deployment's process types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessInstance {
    /// Its process type (`web`, `worker`...).
    pub process: String,
    /// The instance.
    pub instance: Instance,
}

impl Deployment {
    /// A new request, queued, to deploy `service` from its current source for
    /// `trigger`: nothing fetched, built or started yet.
    pub fn queued(service: &Service, trigger: Trigger) -> Self {
        let now = Timestamp::now();
        Deployment {
            id: DeploymentId::random(),
            project: service.project.clone(),
            service: service.id.clone(),
            state: DeploymentState::Queued,
            version: 0,
            trigger,
            source: service.source.clone(),
            revision: None,
            plan: None,
            artifact: None,
            instance: None,
            more_instances: Vec::new(),
            release: None,
            canary: None,
            retry_of: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// Every instance it runs, with its process type: its first `web` instance
    /// ([`Deployment::instance`]) first, then [`Deployment::more_instances`].
    pub fn instances(&self) -> impl Iterator<Item = (&str, &Instance)> {
        self.instance.iter().map(|i| (WEB_PROCESS, i)).chain(
            self.more_instances
                .iter()
                .map(|p| (p.process.as_str(), &p.instance)),
        )
    }

    /// The endpoints of its `web` instances: where its route sends traffic.
    pub fn web_endpoints(&self) -> Vec<Endpoint> {
        self.instances()
            .filter(|(p, _)| *p == WEB_PROCESS)
            .map(|(_, i)| i.endpoint.clone())
            .collect()
    }
}

/// The process type that serves HTTP and is routed.
pub const WEB_PROCESS: &str = "web";
/// The process type that runs once per deployment, before it starts
/// ([`crate::Step::Releasing`]).
pub const RELEASE_PROCESS: &str = "release";
/// The most instances one process type may run.
pub const MAX_REPLICAS: u32 = 100;
/// The most process types a service may declare (its own and its `Procfile`'s).
pub const MAX_PROCESS_TYPES: usize = 16;
/// The most instances one service may run, all process types together.
pub const MAX_INSTANCES: u32 = 100;

/// An immutable record of what went live: artifact and configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Release {
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
    pub artifact: Artifact,
    /// The port the app listened on.
    pub port: u16,
    /// The source revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// What it ran with besides its artifact; a rollback runs it with this again.
    /// `None` for releases recorded before Wharf kept it (they roll back with the
    /// service's current configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ReleaseConfig>,
    /// When it went live.
    pub created_at: Timestamp,
}

/// A release's configuration: the env it ran with (project, environment and service
/// layers merged; secrets stay [`EnvValue::Secret`], so a sealing store seals them)
/// and the service's resources and health check at the time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseConfig {
    /// The merged env vars (without `PORT`, which the engine sets).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, EnvValue>))]
    pub env: EnvVars,
    /// Resource limits.
    #[serde(default)]
    pub resources: Resources,
    /// The health check, if the service had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

/// What an event says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// The deployment moved from one state to another.
    State {
        /// Before.
        from: DeploymentState,
        /// After.
        to: DeploymentState,
    },
    /// A log line (build output, app output, Wharf's notes).
    Log(LogLine),
}

/// Something that happened to a deployment, in order (`seq` grows per store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Position in the store's event log (assigned on append; 0 before).
    pub seq: u64,
    /// The deployment.
    pub deployment: DeploymentId,
    /// The service.
    pub service: ServiceId,
    /// When.
    pub at: Timestamp,
    /// What.
    pub kind: EventKind,
}

pub(crate) mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
