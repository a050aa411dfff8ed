//! [`RegistryPush`]: the opt-in push of built images to a registry, so that runtimes
//! on other machines (a Kubernetes cluster) can pull them by digest.

use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::{PushImageOptions, TagImageOptions};
use bollard::Docker;
use tokio_util::sync::CancellationToken;
use wharf_core::traits::LogSink;
use wharf_core::{Error, ErrorKind, LogStream, Result, Secret};

use crate::error::{map, next_unless_cancelled, BACKEND};

/// A user name and password (or token) for a registry. The password is a
/// [`Secret`]: it is sent to the engine for the push only, never logged.
/// The derived `Debug` is safe: [`Secret`]'s own `Debug` prints `Secret(***)`.
#[derive(Clone, PartialEq, Eq, Debug)]
struct RegistryCredentials {
    /// The user name.
    username: String,
    /// The password or access token.
    password: Secret,
}

/// Where a [`DockerBuilder`](crate::DockerBuilder) pushes what it builds.
///
/// An image built with the tag `<repo>:<tag>` (the engine tags builds
/// `wharf/<project>-<service>:<deployment>`) is tagged
/// `<registry>/<prefix>/<name>:<tag>`, `<name>` being the last path component of
/// `<repo>`, and pushed; the artifact's image is then the reference by the manifest
/// digest the registry answered, `<registry>/<prefix>/<name>@sha256:...`, which any
/// machine with access to the registry can pull and which never moves.
///
/// ```
/// use wharf_core::Secret;
/// use wharf_docker::RegistryPush;
///
/// let push = RegistryPush::new("registry.example.com:5000")?
///     .prefix("apps")?
///     .credentials("deployer", Secret::new("s3cret"));
/// assert_eq!(
///     push.repository("wharf/shop-web"),
///     "registry.example.com:5000/apps/shop-web"
/// );
/// // The password never shows.
/// assert!(!format!("{push:?}").contains("s3cret"));
/// # Ok::<(), wharf_core::Error>(())
/// ```
///
/// The engine must be able to reach the registry: over HTTPS, or plain HTTP for
/// registries on 127.0.0.0/8 (which dockerd treats as insecure by default) or those
/// listed in the daemon's `insecure-registries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryPush {
    registry: String,
    prefix: String,
    credentials: Option<RegistryCredentials>,
}

impl RegistryPush {
    /// A push to `registry` (`host` or `host:port`, no scheme), without a prefix or
    /// credentials.
    pub fn new(registry: impl Into<String>) -> Result<Self> {
        let registry = registry.into();
        validate_registry(&registry)?;
        Ok(RegistryPush {
            registry,
            prefix: String::new(),
            credentials: None,
        })
    }

    /// Puts the images under `prefix` in the registry (`team/apps`: lower-case path
    /// components of letters, digits and `.`, `_`, `-`; empty for none).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() && !prefix.split('/').all(valid_component) {
            return Err(Error::invalid(format!(
                "{prefix:?} is not a repository prefix (lower-case path components of letters, digits, '.', '_' and '-')"
            )));
        }
        self.prefix = prefix.to_owned();
        Ok(self)
    }

    /// Logs in with `username` and `password` for each push.
    pub fn credentials(mut self, username: impl Into<String>, password: Secret) -> Self {
        self.credentials = Some(RegistryCredentials {
            username: username.into(),
            password,
        });
        self
    }

    /// The registry (`host[:port]`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository an image built as `local_repo` (`wharf/shop-web`) goes to.
    pub fn repository(&self, local_repo: &str) -> String {
        let name = local_repo.rsplit('/').next().unwrap_or(local_repo);
        if self.prefix.is_empty() {
            format!("{}/{name}", self.registry)
        } else {
            format!("{}/{}/{name}", self.registry, self.prefix)
        }
    }

    fn docker_credentials(&self) -> Option<DockerCredentials> {
        self.credentials.as_ref().map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.expose().to_owned()),
            serveraddress: Some(self.registry.clone()),
            ..Default::default()
        })
    }

    /// Tags `image` (`<repo>:<tag>`, already built) for the registry, pushes it and
    /// returns the reference by digest. Push progress goes to `logs`.
    pub(crate) async fn push(
        &self,
        docker: &Docker,
        image: &str,
        logs: &LogSink,
        cancel: &CancellationToken,
    ) -> Result<String> {
        let (local_repo, tag) = split_tag(image);
        let tag = tag.unwrap_or("latest");
        if !valid_tag(tag) {
            return Err(Error::invalid(format!(
                "{tag:?} is not a valid image tag for a registry push"
            )));
        }
        let name = local_repo.rsplit('/').next().unwrap_or(local_repo);
        if !valid_component(name) {
            return Err(Error::invalid(format!(
                "{name:?} is not a valid repository name for a registry push (lower-case letters, digits, '.', '_', '-')"
            )));
        }
        let repo = self.repository(local_repo);
        docker
            .tag_image(
                image,
                Some(TagImageOptions {
                    repo: Some(repo.clone()),
                    tag: Some(tag.to_owned()),
                }),
            )
            .await
            .map_err(|e| map(e, &format!("tag {image} as {repo}:{tag}")))?;
        logs.send(LogStream::System, format!("pushing {repo}:{tag}"));

        let mut stream = docker.push_image(
            &repo,
            Some(PushImageOptions {
                tag: Some(tag.to_owned()),
                ..Default::default()
            }),
            self.docker_credentials(),
        );
        let mut digest = None;
        loop {
            let item = next_unless_cancelled(&mut stream, cancel, logs, "push").await?;
            let info = match item {
                None => break,
                Some(Ok(info)) => info,
                Some(Err(e)) => return Err(push_error(e, &self.registry, &repo, tag)),
            };
            let Some(status) = info.status else { continue };
            // "Pushing" lines carry byte counts, many per layer: leave them out.
            let progress = info
                .progress_detail
                .as_ref()
                .is_some_and(|p| p.current.is_some() || p.total.is_some());
            if !progress && !status.trim().is_empty() {
                logs.send(LogStream::Build, format!("push: {}", status.trim()));
            }
            if let Some(d) = digest_in(&status) {
                digest = Some(d.to_owned());
            }
        }
        let digest = match digest {
            Some(d) => d,
            // Older engines may not print it: the image's RepoDigests have it too.
            None => {
                let inspect = docker
                    .inspect_image(&format!("{repo}:{tag}"))
                    .await
                    .map_err(|e| map(e, &format!("inspect {repo}:{tag}")))?;
                let prefix = format!("{repo}@");
                inspect
                    .repo_digests
                    .unwrap_or_default()
                    .into_iter()
                    .find_map(|r| r.strip_prefix(&prefix).map(str::to_owned))
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::Backend,
                            format!("the push of {repo}:{tag} finished without a manifest digest"),
                        )
                        .with_backend(BACKEND)
                    })?
            }
        };
        let reference = format!("{repo}@{digest}");
        logs.send(LogStream::System, format!("pushed {reference}"));
        Ok(reference)
    }
}

/// `repo` and `tag` of `repo[:tag]` (a `:` in a registry's `host:port` is not a tag).
fn split_tag(image: &str) -> (&str, Option<&str>) {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (&image[..i], Some(&image[i + 1..])),
        _ => (image, None),
    }
}

/// The `sha256:<64 hex>` in an engine's final push line (`<tag>: digest: sha256:... size: 527`).
fn digest_in(status: &str) -> Option<&str> {
    let start = status.find("digest: sha256:")? + "digest: ".len();
    let rest = &status[start..];
    let hex = &rest["sha256:".len()..];
    let len = hex.chars().take_while(|c| c.is_ascii_hexdigit()).count();
    (len == 64).then(|| &rest[..("sha256:".len() + 64)])
}

/// A registry's `host[:port]`: a DNS name or IPv4 address, an optional port.
fn validate_registry(registry: &str) -> Result<()> {
    let (host, port) = match registry.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (registry, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p != 0));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{registry:?} is not a registry address (host or host:port, no scheme or path)"
        )))
    }
}

/// A repository path component: lower-case letters and digits, separated by `.`,
/// `_`, `__` or `-`s (distribution's grammar, simplified to its character set).
fn valid_component(c: &str) -> bool {
    !c.is_empty()
        && c.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
        && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
        && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && !t.starts_with(['.', '-'])
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Maps a failed push. The engine reports registry failures as text in the push
/// stream (no status code reaches the client), so the text decides: a registry that
/// cannot be reached is `Unavailable` and retryable; refused credentials are
/// `Unavailable` but not retryable (the same credentials will be refused again), as
/// wharf-k8s does for a 401/403 from the API server.
fn push_error(err: BollardError, registry: &str, repo: &str, tag: &str) -> Error {
    let what = format!("push {repo}:{tag}");
    let BollardError::DockerStreamError { error } = &err else {
        return map(err, &what);
    };
    let message = error.trim().to_owned();
    let (kind, retryable, hint) = classify(&message);
    let hint = hint.replace("{registry}", registry);
    Error::new(kind, format!("{what}: {message}{hint}"))
        .with_retryable(retryable)
        .with_backend(BACKEND)
        .with_source(err)
}

/// Kind, retryability and a hint for a push failure's message.
fn classify(message: &str) -> (ErrorKind, bool, &'static str) {
    let m = message.to_ascii_lowercase();
    let auth = [
        "unauthorized",
        "authentication required",
        "denied",
        "no basic auth credentials",
        "incorrect username or password",
        "forbidden",
    ];
    let unreachable = [
        "connection refused",
        "no such host",
        "i/o timeout",
        "connection reset",
        "network is unreachable",
        "no route to host",
        "server misbehaving",
        "tls handshake timeout",
        "eof",
        "503 service unavailable",
        "502 bad gateway",
    ];
    if auth.iter().any(|a| m.contains(a)) {
        (
            ErrorKind::Unavailable,
            false,
            "; the registry {registry} refused the push: check the credentials of the builder's RegistryPush",
        )
    } else if unreachable.iter().any(|u| m.contains(u)) {
        (
            ErrorKind::Unavailable,
            true,
            "; the registry {registry} cannot be reached from the Docker engine",
        )
    } else if m.contains("http response to https client") {
        (
            ErrorKind::Unavailable,
            false,
            "; the registry {registry} speaks plain HTTP: list it in the engine's insecure-registries (127.0.0.0/8 is by default) or serve it over TLS",
        )
    } else {
        (ErrorKind::Backend, false, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_from_repositories() {
        assert_eq!(
            split_tag("wharf/shop-web:dep_1"),
            ("wharf/shop-web", Some("dep_1"))
        );
        assert_eq!(
            split_tag("127.0.0.1:25000/a/b"),
            ("127.0.0.1:25000/a/b", None)
        );
        assert_eq!(
            split_tag("127.0.0.1:25000/a/b:7"),
            ("127.0.0.1:25000/a/b", Some("7"))
        );
        assert_eq!(split_tag("web"), ("web", None));
    }

    #[test]
    fn digest_is_read_from_the_final_push_line() {
        let d = "sha256:42d96a01fa32b522aaff9bc8959ca2d5a16b68d029e3977fecdffa971fbeed78";
        assert_eq!(digest_in(&format!("1: digest: {d} size: 527")), Some(d));
        assert_eq!(digest_in("Pushed"), None);
        assert_eq!(digest_in("1: digest: sha256:abc size: 5"), None);
    }

    #[test]
    fn registries_and_prefixes_are_validated() {
        for ok in [
            "127.0.0.1:25000",
            "registry.example.com",
            "localhost:5000",
            "r-1.io:443",
        ] {
            RegistryPush::new(ok).unwrap();
        }
        for bad in [
            "",
            "http://r.io",
            "r.io/path",
            "r.io:",
            "r.io:0",
            "r.io:99999",
            "-r.io",
            "r io",
        ] {
            let e = RegistryPush::new(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}");
        }
        let p = RegistryPush::new("r.io").unwrap();
        assert_eq!(
            p.clone().prefix("").unwrap().repository("wharf/a-b"),
            "r.io/a-b"
        );
        assert_eq!(
            p.clone().prefix("/team/apps/").unwrap().repository("x"),
            "r.io/team/apps/x"
        );
        for bad in ["Team", "a//b", "a b", "-a", "a/../b"] {
            assert!(p.clone().prefix(bad).is_err(), "{bad}");
        }
        assert!(valid_tag("dep_01HZX"));
        assert!(!valid_tag(".x") && !valid_tag("a:b") && !valid_tag(""));
    }

    #[test]
    fn push_failures_map_by_meaning() {
        // (engine message, registry, kind, retryable, words the message must hold)
        let cases = [
            (
                "Get \"http://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused",
                "127.0.0.1:1",
                ErrorKind::Unavailable,
                true,
                "cannot be reached",
            ),
            (
                "unauthorized: authentication required",
                "r.io",
                ErrorKind::Unavailable,
                false,
                "credentials",
            ),
            ("manifest invalid", "r.io", ErrorKind::Backend, false, ""),
        ];
        for (error, registry, kind, retryable, words) in cases {
            let err = push_error(
                BollardError::DockerStreamError {
                    error: error.into(),
                },
                registry,
                &format!("{registry}/wharf/web"),
                "dep_1",
            );
            assert_eq!(err.kind(), kind, "{err}");
            assert_eq!(err.is_retryable(), retryable, "{err}");
            assert!(err.message().contains(words), "{err}");
        }
    }

    #[test]
    fn credentials_never_show() {
        let p = RegistryPush::new("r.io")
            .unwrap()
            .credentials("me", Secret::new("hunter2"));
        assert!(!format!("{p:?}").contains("hunter2"));
        let c = p.docker_credentials().unwrap();
        assert_eq!(c.password.as_deref(), Some("hunter2"));
        assert_eq!(c.serveraddress.as_deref(), Some("r.io"));
    }
}
