//! Cloud configuration: `clouds.yaml` and `OS_*` environment variables, read the way
//! the OpenStack CLI (openstacksdk / os-client-config) reads them.
//!
//! [`CloudConfig::load`] follows the CLI: with `OS_CLOUD` set, the named cloud comes
//! from the first `clouds.yaml` found in `OS_CLIENT_CONFIG_FILE`, `./clouds.yaml`,
//! `~/.config/openstack/clouds.yaml`, `/etc/openstack/clouds.yaml` (with the `auth`
//! of the same cloud in the first `secure.yaml` found the same way, from
//! `OS_CLIENT_SECURE_FILE` on, merged over it), and `OS_*`
//! variables that are set fill in what it leaves out (`OS_PASSWORD` with a cloud that
//! has none, `OS_REGION_NAME`); without `OS_CLOUD`, everything comes from `OS_*`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use wharf_core::{Error, Result, Secret};

/// How to prove who we are to Keystone.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// User name (or id) and password, scoped to a project.
    Password {
        /// User name (with `user_domain`) or id (`user_id`).
        username: Option<String>,
        /// User id (takes precedence over the name).
        user_id: Option<String>,
        /// The user's domain name (`Default` when neither name nor id is given).
        user_domain_name: Option<String>,
        /// The user's domain id.
        user_domain_id: Option<String>,
        /// The password.
        password: Secret,
        /// The project to scope to, by name (with its domain)...
        project_name: Option<String>,
        /// ... or by id.
        project_id: Option<String>,
        /// The project's domain name.
        project_domain_name: Option<String>,
        /// The project's domain id.
        project_domain_id: Option<String>,
    },
    /// An application credential (already scoped to its project).
    ApplicationCredential {
        /// Its id...
        id: Option<String>,
        /// ... or its name, with the user owning it.
        name: Option<String>,
        /// The owner's name (with a name-only credential).
        username: Option<String>,
        /// The owner's id (with a name-only credential).
        user_id: Option<String>,
        /// The owner's domain name.
        user_domain_name: Option<String>,
        /// The secret.
        secret: Secret,
    },
}

impl fmt::Debug for Credentials {
    // Derived Debug would be fine (Secret redacts itself), but keep it short.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Password {
                username,
                user_id,
                project_name,
                project_id,
                ..
            } => f
                .debug_struct("Password")
                .field("username", username)
                .field("user_id", user_id)
                .field("project_name", project_name)
                .field("project_id", project_id)
                .field("password", &"***")
                .finish(),
            Credentials::ApplicationCredential { id, name, .. } => f
                .debug_struct("ApplicationCredential")
                .field("id", id)
                .field("name", name)
                .field("secret", &"***")
                .finish(),
        }
    }
}

/// Which of a service's endpoints to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interface {
    /// The public endpoint (the CLI's default).
    #[default]
    Public,
    /// The internal endpoint.
    Internal,
    /// The admin endpoint.
    Admin,
}

impl Interface {
    /// Parses `public`, `internal`, `admin` (also `publicURL` style).
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().trim_end_matches("url") {
            "public" => Ok(Interface::Public),
            "internal" => Ok(Interface::Internal),
            "admin" => Ok(Interface::Admin),
            _ => Err(Error::invalid(format!(
                "unknown endpoint interface {s:?} (use public, internal or admin)"
            ))),
        }
    }
    /// The name Keystone's catalog uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Public => "public",
            Interface::Internal => "internal",
            Interface::Admin => "admin",
        }
    }
}

/// Everything needed to reach one cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudConfig {
    /// Keystone's URL (`https://keystone.example:5000` or with `/v3`).
    pub auth_url: String,
    /// The credentials.
    pub credentials: Credentials,
    /// The region whose endpoints to use (`None`: any region, the first listed).
    pub region_name: Option<String>,
    /// Which endpoint of each service to use.
    pub interface: Interface,
}

#[derive(Debug, Default, Deserialize)]
struct CloudsFile {
    #[serde(default)]
    clouds: BTreeMap<String, CloudEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct CloudEntry {
    #[serde(default)]
    auth: BTreeMap<String, serde_yaml::Value>,
    auth_type: Option<String>,
    region_name: Option<String>,
    interface: Option<String>,
    endpoint_type: Option<String>,
    #[serde(default)]
    regions: Vec<serde_yaml::Value>,
}

/// The keys of `auth:` in clouds.yaml and their `OS_*` variables.
const AUTH_KEYS: &[(&str, &str)] = &[
    ("auth_url", "OS_AUTH_URL"),
    ("username", "OS_USERNAME"),
    ("user_id", "OS_USER_ID"),
    ("password", "OS_PASSWORD"),
    ("user_domain_name", "OS_USER_DOMAIN_NAME"),
    ("user_domain_id", "OS_USER_DOMAIN_ID"),
    ("project_name", "OS_PROJECT_NAME"),
    ("project_id", "OS_PROJECT_ID"),
    ("project_domain_name", "OS_PROJECT_DOMAIN_NAME"),
    ("project_domain_id", "OS_PROJECT_DOMAIN_ID"),
    ("domain_name", "OS_DOMAIN_NAME"),
    ("domain_id", "OS_DOMAIN_ID"),
    ("application_credential_id", "OS_APPLICATION_CREDENTIAL_ID"),
    (
        "application_credential_name",
        "OS_APPLICATION_CREDENTIAL_NAME",
    ),
    (
        "application_credential_secret",
        "OS_APPLICATION_CREDENTIAL_SECRET",
    ),
];

fn yaml_str(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The first file that exists of: `given` (from an environment variable), `name` in
/// the working directory, in `~/.config/openstack/`, in `/etc/openstack/`: where the
/// OpenStack clients look for `clouds.yaml` and `secure.yaml`.
fn config_file(given: Option<String>, name: &str, home: Option<&Path>) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    candidates.extend(given.map(PathBuf::from));
    candidates.push(PathBuf::from(name));
    if let Some(h) = home {
        candidates.push(h.join(".config/openstack").join(name));
    }
    candidates.push(Path::new("/etc/openstack").join(name));
    candidates.into_iter().find(|p| p.is_file())
}

/// The text of the file at `path`.
fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::from(e).context(format!("reading {}", path.display())))
}

impl CloudConfig {
    /// Reads the configuration from the process environment and `clouds.yaml`, as
    /// the OpenStack CLI does (see the module docs).
    pub fn load() -> Result<Self> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Self::load_with(|k| std::env::var(k).ok(), home.as_deref())
    }

    /// [`CloudConfig::load`] with the variables from `var` and the home folder given.
    pub fn load_with(var: impl Fn(&str) -> Option<String>, home: Option<&Path>) -> Result<Self> {
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        match var("OS_CLOUD") {
            Some(cloud) => {
                let path = config_file(var("OS_CLIENT_CONFIG_FILE"), "clouds.yaml", home)
                    .ok_or_else(|| {
                        Error::not_found(format!(
                            "OS_CLOUD={cloud} but no clouds.yaml found (OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack/clouds.yaml, /etc/openstack/clouds.yaml)"
                        ))
                    })?;
                let text = read(&path)?;
                // secure.yaml holds the secrets of the same clouds, merged over them.
                let secure = config_file(var("OS_CLIENT_SECURE_FILE"), "secure.yaml", home)
                    .map(|p| read(&p))
                    .transpose()?;
                Self::from_clouds_yaml_with(&text, secure.as_deref(), &cloud, var)
            }
            None => Self::from_vars(var),
        }
    }

    /// The cloud named `cloud` in the text of a clouds.yaml.
    pub fn from_clouds_yaml(text: &str, cloud: &str) -> Result<Self> {
        Self::from_clouds_yaml_with(text, None, cloud, |_| None)
    }

    fn from_clouds_yaml_with(
        text: &str,
        secure: Option<&str>,
        cloud: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let mut file: CloudsFile = serde_yaml::from_str(text)
            .map_err(|e| Error::invalid(format!("malformed clouds.yaml: {e}")))?;
        let secure: CloudsFile = match secure {
            Some(t) => serde_yaml::from_str(t)
                .map_err(|e| Error::invalid(format!("malformed secure.yaml: {e}")))?,
            None => CloudsFile::default(),
        };
        let entry = file
            .clouds
            .get_mut(cloud)
            .ok_or_else(|| Error::not_found(format!("cloud {cloud:?} is not in clouds.yaml")))?;
        if let Some(sec) = secure.clouds.get(cloud) {
            entry.auth.extend(sec.auth.clone());
        }
        let entry = &*entry;
        let mut auth = BTreeMap::new();
        for (key, env) in AUTH_KEYS {
            let v = entry.auth.get(*key).and_then(yaml_str).or_else(|| var(env));
            if let Some(v) = v {
                auth.insert(*key, v);
            }
        }
        let region = entry
            .region_name
            .clone()
            .or_else(|| {
                entry.regions.first().and_then(|r| match r {
                    serde_yaml::Value::Mapping(m) => m.get("name").and_then(yaml_str),
                    v => yaml_str(v),
                })
            })
            .or_else(|| var("OS_REGION_NAME"));
        let interface = entry
            .interface
            .clone()
            .or_else(|| entry.endpoint_type.clone())
            .or_else(|| var("OS_INTERFACE"))
            .or_else(|| var("OS_ENDPOINT_TYPE"));
        let auth_type = entry.auth_type.clone().or_else(|| var("OS_AUTH_TYPE"));
        Self::build(auth, auth_type, region, interface)
            .map_err(|e| e.context(format!("cloud {cloud:?}")))
    }

    /// The configuration from `OS_*` variables looked up by `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        let mut auth = BTreeMap::new();
        for (key, env) in AUTH_KEYS {
            if let Some(v) = var(env) {
                auth.insert(*key, v);
            }
        }
        let interface = var("OS_INTERFACE").or_else(|| var("OS_ENDPOINT_TYPE"));
        Self::build(auth, var("OS_AUTH_TYPE"), var("OS_REGION_NAME"), interface)
    }

    fn build(
        mut auth: BTreeMap<&str, String>,
        auth_type: Option<String>,
        region_name: Option<String>,
        interface: Option<String>,
    ) -> Result<Self> {
        let auth_url = auth
            .remove("auth_url")
            .ok_or_else(|| Error::invalid("no auth_url (OS_AUTH_URL) given"))?;
        let is_app_cred = match auth_type.as_deref() {
            Some("v3applicationcredential" | "application_credential") => true,
            Some("password" | "v3password") => false,
            Some(other) => {
                return Err(Error::unsupported(format!(
                    "auth_type {other:?} is not supported (use password or v3applicationcredential)"
                )))
            }
            None => auth.contains_key("application_credential_secret"),
        };
        // `domain_name`/`domain_id` default both user and project domains.
        let domain_name = auth.remove("domain_name");
        let domain_id = auth.remove("domain_id");
        let credentials = if is_app_cred {
            let secret = auth.remove("application_credential_secret").ok_or_else(|| {
                Error::invalid("application credential without a secret (OS_APPLICATION_CREDENTIAL_SECRET)")
            })?;
            let (id, name) = either(
                &mut auth,
                ("application_credential_id", "application_credential_name"),
                "application credential needs an id or a name (OS_APPLICATION_CREDENTIAL_ID)",
            )?;
            Credentials::ApplicationCredential {
                id,
                name,
                username: auth.remove("username"),
                user_id: auth.remove("user_id"),
                user_domain_name: auth.remove("user_domain_name").or(domain_name),
                secret: Secret::new(secret),
            }
        } else {
            let password = auth
                .remove("password")
                .ok_or_else(|| Error::invalid("password auth without a password (OS_PASSWORD)"))?;
            let (username, user_id) = either(
                &mut auth,
                ("username", "user_id"),
                "password auth needs a username or user_id (OS_USERNAME)",
            )?;
            Credentials::Password {
                username,
                user_id,
                user_domain_name: auth.remove("user_domain_name").or(domain_name.clone()),
                user_domain_id: auth.remove("user_domain_id").or(domain_id.clone()),
                password: Secret::new(password),
                project_name: auth.remove("project_name"),
                project_id: auth.remove("project_id"),
                project_domain_name: auth.remove("project_domain_name").or(domain_name),
                project_domain_id: auth.remove("project_domain_id").or(domain_id),
            }
        };
        let interface = match interface {
            Some(i) => Interface::parse(&i)?,
            None => Interface::Public,
        };
        Ok(CloudConfig {
            auth_url,
            credentials,
            region_name,
            interface,
        })
    }

    /// Keystone's v3 base URL (`auth_url` with `/v3` appended when missing, no
    /// trailing slash).
    pub fn identity_v3_url(&self) -> String {
        let u = self.auth_url.trim_end_matches('/');
        if u.ends_with("/v3") {
            u.to_owned()
        } else {
            format!("{u}/v3")
        }
    }
}

/// The `a` and `b` entries of `auth`, at least one of which must be given (`why`
/// otherwise): an id or a name.
fn either(
    auth: &mut BTreeMap<&str, String>,
    (a, b): (&str, &str),
    why: &str,
) -> Result<(Option<String>, Option<String>)> {
    let (a, b) = (auth.remove(a), auth.remove(b));
    if a.is_none() && b.is_none() {
        return Err(Error::invalid(why));
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const CLOUDS: &str = r#"
clouds:
  prod:
    auth:
      auth_url: https://keystone.example.com:5000
      username: deployer
      password: s3cret
      project_name: apps
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionTwo
    interface: internal
  appcred:
    auth_type: v3applicationcredential
    auth:
      auth_url: https://keystone.example.com/v3/
      application_credential_id: "abc123"
      application_credential_secret: shh
    regions:
      - name: RegionOne
  nopass:
    auth:
      auth_url: https://k.example.com
      username: u
      project_id: p1
"#;

    #[test]
    fn reads_a_password_cloud() {
        let c = CloudConfig::from_clouds_yaml(CLOUDS, "prod").unwrap();
        assert_eq!(c.identity_v3_url(), "https://keystone.example.com:5000/v3");
        assert_eq!(c.region_name.as_deref(), Some("RegionTwo"));
        assert_eq!(c.interface, Interface::Internal);
        match &c.credentials {
            Credentials::Password {
                username,
                password,
                project_name,
                user_domain_name,
                ..
            } => {
                assert_eq!(username.as_deref(), Some("deployer"));
                assert_eq!(password.expose(), "s3cret");
                assert_eq!(project_name.as_deref(), Some("apps"));
                assert_eq!(user_domain_name.as_deref(), Some("Default"));
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{c:?}").contains("s3cret"), "secret in Debug");
    }

    #[test]
    fn reads_an_application_credential_cloud() {
        let c = CloudConfig::from_clouds_yaml(CLOUDS, "appcred").unwrap();
        assert_eq!(c.identity_v3_url(), "https://keystone.example.com/v3");
        assert_eq!(c.region_name.as_deref(), Some("RegionOne"));
        assert!(matches!(
            &c.credentials,
            Credentials::ApplicationCredential { id: Some(id), secret, .. }
                if id == "abc123" && secret.expose() == "shh"
        ));
    }

    #[test]
    fn missing_pieces_are_clear_errors() {
        let e = CloudConfig::from_clouds_yaml(CLOUDS, "nopass").unwrap_err();
        assert!(e.message().contains("OS_PASSWORD"), "{e}");
        let e = CloudConfig::from_clouds_yaml(CLOUDS, "nope").unwrap_err();
        assert_eq!(e.kind(), wharf_core::ErrorKind::NotFound);
    }

    #[test]
    fn secure_yaml_fills_in_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let clouds = dir.path().join("clouds.yaml");
        let secure = dir.path().join("secure.yaml");
        std::fs::write(&clouds, CLOUDS).unwrap();
        std::fs::write(
            &secure,
            "clouds:\n  nopass:\n    auth:\n      password: from-secure\n",
        )
        .unwrap();
        let (c, s) = (clouds.display().to_string(), secure.display().to_string());
        let vars: HashMap<&str, &str> = HashMap::from([
            ("OS_CLOUD", "nopass"),
            ("OS_CLIENT_CONFIG_FILE", c.as_str()),
            ("OS_CLIENT_SECURE_FILE", s.as_str()),
            ("OS_PASSWORD", "from-env"),
        ]);
        let c = CloudConfig::load_with(|k| vars.get(k).map(|s| s.to_string()), None).unwrap();
        assert!(matches!(
            &c.credentials,
            Credentials::Password { password, .. } if password.expose() == "from-secure"
        ));
    }

    #[test]
    fn env_vars_like_the_cli() {
        let vars: HashMap<&str, &str> = HashMap::from([
            ("OS_AUTH_URL", "http://127.0.0.1:5000/v3"),
            ("OS_USERNAME", "admin"),
            ("OS_PASSWORD", "pw"),
            ("OS_PROJECT_NAME", "admin"),
            ("OS_USER_DOMAIN_NAME", "Default"),
            ("OS_PROJECT_DOMAIN_ID", "default"),
            ("OS_REGION_NAME", "RegionOne"),
            ("OS_INTERFACE", "publicURL"),
            ("OS_TENANT_NAME", "ignored"),
        ]);
        let c = CloudConfig::from_vars(|k| vars.get(k).map(|s| s.to_string())).unwrap();
        assert_eq!(c.interface, Interface::Public);
        assert_eq!(c.region_name.as_deref(), Some("RegionOne"));
        assert!(matches!(
            &c.credentials,
            Credentials::Password { project_domain_id: Some(d), .. } if d == "default"
        ));
    }

    #[test]
    fn os_cloud_picks_the_file_and_env_fills_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clouds.yaml");
        std::fs::write(&path, CLOUDS).unwrap();
        let p = path.display().to_string();
        let vars: HashMap<&str, &str> = HashMap::from([
            ("OS_CLOUD", "nopass"),
            ("OS_CLIENT_CONFIG_FILE", p.as_str()),
            ("OS_PASSWORD", "from-env"),
        ]);
        let c = CloudConfig::load_with(|k| vars.get(k).map(|s| s.to_string()), None).unwrap();
        assert!(matches!(
            &c.credentials,
            Credentials::Password { password, project_id: Some(p), .. }
                if password.expose() == "from-env" && p == "p1"
        ));
    }
}
