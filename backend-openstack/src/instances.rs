//! What the Nova and Zun runtimes share: the spec checks before a start, the labels
//! Wharf keeps on the cloud's side, the address an instance is reached on, polling
//! with back-off, listing across pages, and how a failed build maps to an error.
//!
//! The two services describe their servers and containers differently; the logic
//! around them is the same, so it lives here once.

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use wharf_core::{Endpoint, Error, Instance, InstanceId, InstanceSpec, Labels, Result};

use crate::health::{probe_label, PROBE_LABEL};
use crate::http::{self, ApiError, BACKEND};
use crate::keystone::Session;

/// The label (Zun) or metadata key (Nova) holding the app's port, so `list` can
/// rebuild endpoints.
pub const PORT_LABEL: &str = "wharf.port";

/// The label (Zun) holding the Cinder ids of the volumes a container mounts
/// (comma-separated), so `stop` can wait until they are detached.
pub const VOLUMES_LABEL: &str = "wharf.cinder-volumes";

/// A microversioned service (Nova's `compute`, Zun's `container`) reached through
/// the session: every call carries `OpenStack-API-Version: <service> <microversion>`.
#[derive(Debug, Clone)]
pub(crate) struct VersionedApi {
    session: Session,
    service: &'static str,
    microversion: String,
}

impl VersionedApi {
    /// `service` (its catalog type, also its name in the version header) at
    /// `microversion`.
    pub(crate) fn new(session: Session, service: &'static str, microversion: String) -> Self {
        VersionedApi {
            session,
            service,
            microversion,
        }
    }

    /// The session.
    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    /// Sends `method` to `path` under the service's endpoint, with an optional JSON
    /// body; `what` names the call in errors.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        what: &str,
        body: Option<&Value>,
    ) -> Result<Response> {
        let (service, version) = (self.service, &self.microversion);
        self.session
            .versioned(service, service, version, method, path, what, body)
            .await
    }

    /// GETs `path`: its JSON answer as a `T` (an error answer as an error).
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str, what: &str) -> Result<T> {
        let resp = self.call(Method::GET, path, what, None).await?;
        http::json(http::check(resp, what).await?, what).await
    }

    /// POSTs `body` to `path`: its JSON answer as a `T` (an error answer as an error).
    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
        body: &Value,
    ) -> Result<T> {
        let resp = self.call(Method::POST, path, what, Some(body)).await?;
        http::json(http::check(resp, what).await?, what).await
    }

    /// Deletes `path`; 404 counts as done.
    pub(crate) async fn delete(&self, path: &str, what: &str) -> Result<()> {
        let resp = self.call(Method::DELETE, path, what, None).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        http::check(resp, what).await.map(drop)
    }
}

/// Refuses a spec `runtime` cannot start: no image, an image that exists only on the
/// engine that built it ([`wharf_core::InstanceSpec::image_local_only`]: Zun hosts and
/// Nova servers pull images themselves), or port 0.
pub(crate) fn check_spec(spec: &InstanceSpec, runtime: &str) -> Result<()> {
    if spec.image.is_empty() {
        return Err(Error::invalid("instance spec has no image"));
    }
    if spec.run_once {
        return Err(Error::unsupported(format!(
            "instance {}: {runtime} does not run one-off tasks (release commands, \
             `wharf run`, cron jobs) yet; run them on Docker, Kubernetes or host processes",
            spec.name
        )));
    }
    if spec.image_local_only {
        return Err(Error::invalid(format!(
            "instance {}: the image {} exists only on the Docker engine that built it, so \
             {runtime} cannot pull it; configure a registry push on the builder \
             (wharf_docker::DockerBuilder::push_to) so it runs the pushed image by digest",
            spec.name, spec.image
        ))
        .with_backend(BACKEND));
    }
    if spec.port == 0 {
        return Err(Error::invalid("instance spec has port 0"));
    }
    Ok(())
}

/// The labels stored with an instance: the spec's, plus its port and health probe.
pub(crate) fn stored_labels(spec: &InstanceSpec) -> Labels {
    let mut labels = spec.labels.clone();
    labels.insert(PORT_LABEL.into(), spec.port.to_string());
    labels.insert(PROBE_LABEL.into(), probe_label(&spec.health_check.probe));
    labels
}

/// The spec's labels back from the stored ones (without the port and the probe).
pub(crate) fn spec_labels(mut stored: Labels) -> Labels {
    stored.remove(PORT_LABEL);
    stored.remove(PROBE_LABEL);
    stored.remove(VOLUMES_LABEL);
    stored
}

/// Whether `have` holds every label of `want` (what `list` selects by).
pub(crate) fn has_labels(have: &Labels, want: &Labels) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// The address to reach an instance on: the first that is not IPv6 (by `version`),
/// else the first of all.
pub(crate) fn preferred<'a, A>(
    all: impl IntoIterator<Item = &'a A>,
    version: impl Fn(&A) -> Option<u8>,
) -> Option<&'a A> {
    let all: Vec<&A> = all.into_iter().collect();
    all.iter()
        .find(|a| version(a) != Some(6))
        .or(all.first())
        .copied()
}

/// The instance `id` reached on `host:port` (empty host when it has no address yet).
pub(crate) fn instance(id: &str, host: Option<String>, port: u16, stored: Labels) -> Instance {
    Instance {
        id: InstanceId(id.to_owned()),
        endpoint: Endpoint {
            host: host.unwrap_or_default(),
            port,
        },
        labels: spec_labels(stored),
    }
}

/// The error for an instance that went to an error state instead of coming up:
/// a missing image and an exhausted quota by their kinds, anything else as a backend
/// failure naming the state. `what` names the thing (`server`, `container`),
/// `context` the step that failed.
pub(crate) fn went_to(what: &str, state: &str, reason: String, context: String) -> Error {
    let lower = reason.to_ascii_lowercase();
    let api = if http::image_missing(&lower) {
        ApiError::ImageNotFound(reason)
    } else if lower.contains("quota") {
        ApiError::QuotaExceeded(reason)
    } else {
        ApiError::Other {
            status: 200,
            message: format!("{what} went to {state}: {reason}"),
        }
    };
    api.into_error(context)
}

/// `started` as it is, except that when it failed, the instance `id` is removed by
/// `remove` first (a clean-up that fails is logged), so a failed start leaves
/// nothing behind.
pub(crate) async fn removed_on_error<T>(
    started: Result<T>,
    runtime: &str,
    id: &str,
    remove: impl Future<Output = Result<()>>,
) -> Result<T> {
    if started.is_err() {
        if let Err(cleanup) = remove.await {
            tracing::warn!(instance = %id, error = %cleanup, "{runtime}: clean-up after a failed start failed");
        }
    }
    started
}

/// Pauses between polls of a state, doubling from a first pause up to a longest one,
/// until a deadline.
#[derive(Debug)]
pub(crate) struct Backoff {
    deadline: Instant,
    pause: Duration,
    max: Duration,
}

impl Backoff {
    /// Polls for at most `timeout`, pausing `min` first and at most `max`.
    pub(crate) fn new(timeout: Duration, min: Duration, max: Duration) -> Self {
        Backoff {
            deadline: Instant::now() + timeout,
            pause: min,
            max,
        }
    }

    /// A Timeout error saying `message()` once the deadline has passed.
    pub(crate) fn check(&self, message: impl FnOnce() -> String) -> Result<()> {
        if Instant::now() >= self.deadline {
            return Err(Error::timeout(message()).with_backend(BACKEND));
        }
        Ok(())
    }

    /// Sleeps the current pause, and doubles the next one (up to the longest).
    pub(crate) async fn pause(&mut self) {
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(self.max);
    }
}

/// Every item of a listing that comes in pages: `page(path)` fetches one page (its
/// items and the link to the next page, if any). A link is a full URL; what follows
/// the versioned base, from `marker` on, is the next path. Stops at an empty page, a
/// page without a next link, or after 1000 pages.
pub(crate) async fn all_pages<T, F, Fut>(first: &str, marker: &str, mut page: F) -> Result<Vec<T>>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, Option<String>)>>,
{
    let mut out = Vec::new();
    let mut path = first.to_owned();
    for _ in 0..1000 {
        let (items, next) = page(path).await?;
        let n = items.len();
        out.extend(items);
        let Some(next) = next.filter(|_| n > 0) else {
            break;
        };
        let Some(i) = next.rfind(marker) else {
            break;
        };
        path = next[i..].to_owned();
    }
    Ok(out)
}
