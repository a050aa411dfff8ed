//! Services: their source, what a request may change, how a response shows them, and
//! their custom domains.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_core::{
    BuildSpec, DeploymentId, EnvironmentId, GitRef, HealthCheck, ProjectId, Resources, ServiceId,
    SourceSpec, Timestamp, VolumeMount,
};

use super::{EnvChanges, EnvView, Hostname, Name};

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
    /// A git source given in the shape responses show it: its reference kept as it
    /// is (a tag stays a tag, a branch a branch). Only made by reading that shape.
    #[serde(skip)]
    Pinned {
        /// The repository URL.
        url: String,
        /// The branch, tag, commit or default branch.
        reference: GitRef,
        /// A relative folder inside the repository.
        subdir: Option<PathBuf>,
    },
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
            } => SourceInput::Pinned {
                url,
                reference,
                subdir,
            },
            SourceShown::Image { image } => SourceInput::Image(ImageRef(image)),
        })
    }

    /// The source as the model holds it, checked: git URLs of a network scheme only,
    /// a relative `subdir` inside the repository, a full 40-hex commit or a non-empty
    /// tag, a non-empty image reference.
    pub fn into_spec(self) -> Result<SourceSpec, String> {
        match self {
            SourceInput::Git {
                url,
                reference,
                subdir,
            } => {
                let reference = match reference {
                    None => GitRef::Default,
                    Some(r) if is_full_sha(&r) => GitRef::Commit(r),
                    Some(r) => GitRef::Branch(r),
                };
                git_spec(url, reference, subdir)
            }
            SourceInput::Pinned {
                url,
                reference,
                subdir,
            } => {
                match &reference {
                    GitRef::Commit(c) if !is_full_sha(c) => {
                        return Err(format!("commit {c:?} must be a full 40-hex SHA"))
                    }
                    GitRef::Tag(t) if t.is_empty() => return Err("empty tag".into()),
                    _ => {}
                }
                git_spec(url, reference, subdir)
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

fn is_full_sha(r: &str) -> bool {
    r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A git source, checked: a network scheme, a relative `subdir` inside the repository.
fn git_spec(url: String, reference: GitRef, subdir: Option<PathBuf>) -> Result<SourceSpec, String> {
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
    Ok(SourceSpec::Git {
        url,
        reference,
        subdir,
    })
}

/// Deserializes an optional [`SourceInput`] in either shape.
pub(super) fn some_source<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SourceInput>, D::Error> {
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
    /// The full list of volumes it mounts (`[{"name", "path", "size"}]`). A volume
    /// left out is unmounted, never deleted: its data stays until
    /// `DELETE /v1/projects/{project}/volumes/{volume}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<VolumeMount>>,
    /// The full set of its process types, as in a `Procfile` (`{"web": "...",
    /// "release": "..."}`); they take precedence over the app's own `Procfile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<BTreeMap<String, String>>,
    /// The full set of its replica counts (`{"web": 3, "worker": 2}`; a type not
    /// named runs one), started by its next deployment; `PUT .../scale` applies
    /// counts to the live release at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<BTreeMap<String, u32>>,
    /// The full set of health checks of its process types other than `web` (`{"worker":
    /// {"probe": {"kind": "http", "path": "/health"}, "interval": 500, "timeout":
    /// 30000}}`), each probed at its instance on `PORT` as `web` is; a type without
    /// one is checked by liveness. Never `web` (`health_check`) or `release`; a type
    /// its next release does not run fails that deployment. `{}` removes them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_checks: Option<BTreeMap<String, HealthCheck>>,
    /// The full list of its cron jobs (`[{"name", "schedule", "command",
    /// "concurrency", "timeout", "starting_deadline"}]`, durations in milliseconds);
    /// an empty list removes them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<Vec<wharf_core::CronJob>>,
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
    /// Its own process types (`web`, `release`, ...), as in a `Procfile`.
    #[serde(default)]
    pub processes: BTreeMap<String, String>,
    /// Replica counts it sets (a process type not named runs one); changed with
    /// `PUT .../scale`.
    #[serde(default)]
    pub replicas: BTreeMap<String, u32>,
    /// Health checks of its process types other than `web`, by type.
    #[serde(default)]
    pub process_checks: BTreeMap<String, HealthCheck>,
    /// Its cron jobs.
    #[serde(default)]
    pub cron: Vec<wharf_core::CronJob>,
    /// Created at (Unix milliseconds).
    pub created_at: Timestamp,
    /// Where it is served (when `routed`).
    pub url: String,
    /// Whether it has a public route: false for a managed database not made public
    /// (reachable on the project network only), whose `url` then leads nowhere.
    pub routed: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: serde_json::Value) -> Result<ServiceInput, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn a_source_as_a_response_shows_it_can_be_sent_back() {
        for given in [
            SourceInput::Git {
                url: "https://example.com/shop.git".into(),
                reference: Some("main".into()),
                subdir: Some("web".into()),
            },
            SourceInput::Git {
                url: "git@example.com:shop.git".into(),
                reference: None,
                subdir: None,
            },
            SourceInput::Image(ImageRef("registry.local/shop:1".into())),
        ] {
            let spec = given.clone().into_spec().unwrap();
            // What a response shows (the model's shape), sent back as a request.
            let shown = serde_json::json!({ "source": spec });
            let back = input(shown).unwrap().source.unwrap();
            assert_eq!(back.into_spec().unwrap(), spec);
            // And the short shape, as the CLI sends it.
            let short = serde_json::json!({ "source": given });
            assert_eq!(input(short).unwrap().source.unwrap(), given);
        }
    }

    #[test]
    fn a_source_pinned_to_a_tag_or_commit_comes_back_pinned() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        for reference in [GitRef::Tag("v1".into()), GitRef::Commit(sha.into())] {
            let spec = SourceSpec::Git {
                url: "https://example.com/shop.git".into(),
                reference,
                subdir: None,
            };
            let back = input(serde_json::json!({ "source": spec })).unwrap();
            assert_eq!(back.source.unwrap().into_spec().unwrap(), spec);
        }
    }

    #[test]
    fn sources_on_the_servers_disk_are_refused_in_either_shape() {
        for bad in [
            serde_json::json!({"source": {"kind": "archive", "path": "/etc/passwd"}}),
            serde_json::json!({"source": {"kind": "dir", "path": "/etc"}}),
            serde_json::json!({"source": {"dir": "/etc"}}),
            serde_json::json!({"source": {"kind": "image", "image": "x", "extra": 1}}),
        ] {
            assert!(input(bad.clone()).is_err(), "{bad}");
        }
        // A shown commit must be a full SHA, like one given in the short shape.
        let short_sha = serde_json::json!({"source": {"kind": "git", "url": "https://e.com/r.git",
            "reference": {"kind": "commit", "name": "abc1234"}}});
        let src = input(short_sha).unwrap().source.unwrap();
        assert!(src.into_spec().is_err());
        let traversal = serde_json::json!({"source": {"kind": "git", "url": "https://e.com/r.git",
            "reference": {"kind": "default"}, "subdir": "../.."}});
        let src = input(traversal).unwrap().source.unwrap();
        assert!(src.into_spec().is_err());
    }
}
