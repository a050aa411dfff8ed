//! Where a project's backups go: the server's local backup folder, or a bucket of
//! any S3-compatible store, both through `object_store`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use serde::{Deserialize, Serialize};
use wharf_core::store::Sealer;
use wharf_core::{Error, Result, Secret};

/// The S3-compatible endpoints a server's operator lets project owners send backups
/// to, by origin (`scheme://host[:port]`). A destination without an endpoint (AWS S3
/// itself) is always allowed; any other must be listed, so that an owner cannot make
/// the server talk to the operator's internal addresses (metadata services, admin
/// ports) through a backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedEndpoints(Vec<String>);

impl AllowedEndpoints {
    /// Parses a comma-separated list of `http(s)://host[:port]` origins (a trailing
    /// `/` is fine; a path, query, user or password is refused).
    pub fn parse(list: &str) -> Result<Self> {
        let mut origins = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            origins.push(origin(item)?);
        }
        Ok(AllowedEndpoints(origins))
    }

    /// Whether `endpoint` (a destination's URL) is on one of the listed origins.
    pub fn allows(&self, endpoint: &str) -> bool {
        origin(endpoint).is_ok_and(|o| self.0.contains(&o))
    }

    /// The origins, as listed.
    pub fn origins(&self) -> &[String] {
        &self.0
    }
}

/// `scheme://host:port` of an http(s) URL that is an origin and nothing more (no
/// credentials, path, query or fragment: object_store appends the bucket and key, so
/// a path or query would let a destination reach other paths of an allowed host),
/// port made explicit.
fn origin(endpoint: &str) -> Result<String> {
    let bad = |why: &str| Error::invalid(format!("endpoint {endpoint:?}: {why}"));
    let u = url::Url::parse(endpoint).map_err(|e| bad(&e.to_string()))?;
    if u.path() != "/" || u.query().is_some() || u.fragment().is_some() {
        return Err(bad(
            "give an origin, scheme://host[:port], with nothing after it",
        ));
    }
    if !matches!(u.scheme(), "http" | "https") {
        return Err(bad("an http or https URL"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad("no credentials in the URL"));
    }
    let host = u.host_str().ok_or_else(|| bad("no host"))?;
    let port = u.port_or_known_default().ok_or_else(|| bad("no port"))?;
    Ok(format!("{}://{host}:{port}", u.scheme()))
}

/// A project's backup destination, as it is set (with its credentials).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Destination {
    /// The server's own backup folder (`<backup_dir>/<project id>/`): the operator
    /// chooses where that is, a project never names a server path.
    Local,
    /// A bucket of an S3-compatible store.
    S3(S3Destination),
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.view())
    }
}

/// An S3-compatible bucket and the credentials to write it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Destination {
    /// The store's URL (`https://s3.eu-west-1.amazonaws.com`, `http://127.0.0.1:29000`);
    /// `None`: AWS for the region.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The bucket (it must exist).
    pub bucket: String,
    /// The region (default `us-east-1`).
    #[serde(default = "default_region")]
    pub region: String,
    /// A key prefix inside the bucket (`a-z`, `0-9`, `-`, `_`, `/`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key: sealed at rest, never logged nor returned.
    pub secret_access_key: Secret,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// A destination as the API shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DestinationView {
    /// The server's backup folder.
    Local,
    /// A bucket.
    S3 {
        /// The store's URL.
        endpoint: Option<String>,
        /// The bucket.
        bucket: String,
        /// The region.
        region: String,
        /// The key prefix.
        prefix: Option<String>,
        /// The access key id (not a secret by itself).
        access_key_id: String,
    },
}

impl Destination {
    /// What the API may show of it.
    pub fn view(&self) -> DestinationView {
        match self {
            Destination::Local => DestinationView::Local,
            Destination::S3(s) => DestinationView::S3 {
                endpoint: s.endpoint.clone(),
                bucket: s.bucket.clone(),
                region: s.region.clone(),
                prefix: s.prefix.clone(),
                access_key_id: s.access_key_id.clone(),
            },
        }
    }

    /// Checks every field that reaches a URL or a key.
    pub fn validate(&self) -> Result<()> {
        let Destination::S3(s) = self else {
            return Ok(());
        };
        if let Some(e) = &s.endpoint {
            let ok = (e.starts_with("http://") || e.starts_with("https://"))
                && !e.contains('@')
                && !e.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err(Error::invalid(format!(
                    "endpoint {e:?}: an http(s) URL without credentials"
                )));
            }
            origin(e)?;
        }
        let bucket_ok = (3..=63).contains(&s.bucket.len())
            && s.bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(Error::invalid(format!(
                "bucket {:?}: 3 to 63 of a-z, 0-9, - and .",
                s.bucket
            )));
        }
        if s.region.is_empty()
            || !s
                .region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(Error::invalid(format!("region {:?}", s.region)));
        }
        if let Some(p) = &s.prefix {
            check_prefix(p)?;
        }
        if s.access_key_id.is_empty() || s.secret_access_key.expose().is_empty() {
            return Err(Error::invalid("S3 credentials are required"));
        }
        Ok(())
    }

    /// Checks that an S3 destination's endpoint is one `allowed` lists.
    pub fn check_endpoint(&self, allowed: &AllowedEndpoints) -> Result<()> {
        match self {
            Destination::S3(S3Destination {
                endpoint: Some(e), ..
            }) if !allowed.allows(e) => Err(Error::invalid(format!(
                "endpoint {e:?} is not one the server's operator allows for backups ({}); \
                 the operator lists them in the backup_endpoints setting",
                if allowed.origins().is_empty() {
                    "none is allowed but AWS S3 itself".to_owned()
                } else {
                    allowed.origins().join(", ")
                }
            ))),
            _ => Ok(()),
        }
    }

    /// The store it names; `local_root` holds local destinations (one folder per
    /// project id, made here).
    pub(crate) fn open(
        &self,
        local_root: &Path,
        project_id: &str,
    ) -> Result<(Arc<dyn ObjectStore>, String)> {
        match self {
            Destination::Local => {
                let dir = local_root.join(project_id);
                std::fs::create_dir_all(&dir)?;
                let store = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| Error::invalid(format!("backup folder {}: {e}", dir.display())))?;
                Ok((Arc::new(store), String::new()))
            }
            Destination::S3(s) => {
                self.validate()?;
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(&s.bucket)
                    .with_region(&s.region)
                    .with_access_key_id(&s.access_key_id)
                    .with_secret_access_key(s.secret_access_key.expose())
                    .with_retry(RetryConfig {
                        max_retries: 2,
                        retry_timeout: Duration::from_secs(20),
                        ..Default::default()
                    })
                    .with_client_options(
                        ClientOptions::new()
                            .with_connect_timeout(Duration::from_secs(5))
                            .with_timeout(Duration::from_secs(300)),
                    );
                if let Some(e) = &s.endpoint {
                    b = b
                        .with_endpoint(e)
                        .with_allow_http(e.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                let store = b
                    .build()
                    .map_err(|e| Error::invalid(format!("S3 destination: {e}")))?;
                let prefix = s
                    .prefix
                    .as_deref()
                    .map(|p| format!("{}/", p.trim_matches('/')))
                    .unwrap_or_default();
                Ok((Arc::new(store), format!("{prefix}{project_id}/")))
            }
        }
    }

    /// The destination with its secret sealed for `owner` (at rest).
    pub(crate) fn sealed(&self, sealer: &Sealer, owner: &str) -> Result<Destination> {
        let mut d = self.clone();
        if let Destination::S3(s) = &mut d {
            s.secret_access_key = sealer.seal(owner, "s3_secret", &s.secret_access_key)?;
        }
        Ok(d)
    }

    /// What [`Destination::sealed`] sealed, opened.
    pub(crate) fn opened(&self, sealer: &Sealer, owner: &str) -> Result<Destination> {
        let mut d = self.clone();
        if let Destination::S3(s) = &mut d {
            let sealed = std::mem::replace(&mut s.secret_access_key, Secret::new(""));
            s.secret_access_key = sealer.open(owner, "s3_secret", sealed)?;
        }
        Ok(d)
    }
}

/// A key prefix: segments of `a-z`, `0-9`, `-`, `_`, separated by `/`.
fn check_prefix(p: &str) -> Result<()> {
    let ok = !p.is_empty()
        && p.len() <= 200
        && p.trim_matches('/').split('/').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "prefix {p:?}: segments of a-z, 0-9, - and _ separated by /"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3() -> S3Destination {
        S3Destination {
            endpoint: Some("http://127.0.0.1:29000".into()),
            bucket: "wharf-backups".into(),
            region: "us-east-1".into(),
            prefix: Some("team/a".into()),
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("very-secret-value"),
        }
    }

    #[test]
    fn bad_fields_are_refused_before_any_request() {
        assert!(Destination::S3(s3()).validate().is_ok());
        let cases: [fn(&mut S3Destination); 6] = [
            |s| s.endpoint = Some("file:///etc".into()),
            |s| s.endpoint = Some("http://user:pw@host".into()),
            |s| s.bucket = "../x".into(),
            |s| s.prefix = Some("a/../b".into()),
            |s| s.prefix = Some("a//b".into()),
            |s| s.secret_access_key = Secret::new(""),
        ];
        for (i, f) in cases.iter().enumerate() {
            let mut s = s3();
            f(&mut s);
            assert!(Destination::S3(s).validate().is_err(), "case {i}");
        }
    }

    #[test]
    fn the_secret_is_sealed_at_rest_and_never_in_views_or_debug() {
        let d = Destination::S3(s3());
        let sealer = Sealer::new(&[3u8; 32]);
        let sealed = d.sealed(&sealer, "p1").unwrap();
        let at_rest = serde_json::to_string(&sealed).unwrap();
        assert!(!at_rest.contains("very-secret-value"), "{at_rest}");
        assert_eq!(sealed.opened(&sealer, "p1").unwrap(), d);
        assert!(sealed.opened(&sealer, "p2").is_err());
        let shown = serde_json::to_string(&d.view()).unwrap();
        assert!(!shown.contains("very-secret-value"));
        assert!(!format!("{d:?}").contains("very-secret-value"));
    }
}
