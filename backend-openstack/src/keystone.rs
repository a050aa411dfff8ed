//! Keystone v3: authentication, a cached scoped token renewed before it expires, and
//! endpoint discovery from the token's service catalog.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use wharf_core::{Error, Result};

use crate::config::{CloudConfig, Credentials, Interface};
use crate::http::{self, RetryPolicy, BACKEND};

/// One catalog entry: a service and its endpoints.
#[derive(Debug, Clone, Deserialize)]
pub struct CatalogService {
    /// The service type (`identity`, `container`, `compute`, `network`, `dns`).
    #[serde(rename = "type")]
    pub service_type: String,
    /// The service name.
    #[serde(default)]
    pub name: String,
    /// Its endpoints.
    #[serde(default)]
    pub endpoints: Vec<CatalogEndpoint>,
}

/// One endpoint of a catalog entry.
#[derive(Debug, Clone, Deserialize)]
pub struct CatalogEndpoint {
    /// `public`, `internal` or `admin`.
    pub interface: String,
    /// The region id (Keystone also sends the legacy `region` name).
    #[serde(default)]
    pub region_id: Option<String>,
    /// Legacy region name.
    #[serde(default)]
    pub region: Option<String>,
    /// The base URL.
    pub url: String,
}

/// A scoped token with what came with it.
#[derive(Debug, Clone)]
pub struct Token {
    value: String,
    /// When Keystone says it expires, as a local instant.
    pub expires: Instant,
    /// The project it is scoped to (id), if any.
    pub project_id: Option<String>,
    /// The service catalog.
    pub catalog: Arc<Vec<CatalogService>>,
}

impl Token {
    /// The token value for `X-Auth-Token`. Do not log it.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenInner,
}

#[derive(Deserialize)]
struct TokenInner {
    expires_at: String,
    issued_at: Option<String>,
    #[serde(default)]
    catalog: Vec<CatalogService>,
    project: Option<IdOnly>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// Seconds since the epoch of an ISO 8601 UTC time as Keystone writes it
/// (`2026-11-23T18:41:50.000000Z`).
pub(crate) fn parse_iso8601(s: &str) -> Option<f64> {
    let s = s.trim().trim_end_matches('Z');
    let s = s.strip_suffix("+00:00").unwrap_or(s);
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let h: i64 = t.next()?.parse().ok()?;
    let mi: i64 = t.next()?.parse().ok()?;
    let sec: f64 = t.next().unwrap_or("0").parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some((days * 86400 + h * 3600 + mi * 60) as f64 + sec)
}

/// A Keystone session: authenticates on first use, keeps the scoped token, renews it
/// `renew_before` ahead of its expiry (or when a service answers 401), and finds
/// endpoints in its catalog. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    config: CloudConfig,
    client: Client,
    retry: RetryPolicy,
    renew_before: Duration,
    token: Mutex<Option<Token>>,
    auths: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("auth_url", &self.inner.config.auth_url)
            .field("region", &self.inner.config.region_name)
            .field("interface", &self.inner.config.interface)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Session`].
#[derive(Debug)]
pub struct SessionBuilder {
    config: CloudConfig,
    client: Option<Client>,
    retry: RetryPolicy,
    renew_before: Duration,
}

impl SessionBuilder {
    /// Uses this HTTP client (timeouts, TLS roots, proxies are the caller's).
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }
    /// How requests are retried (default: 5 tries, 100 ms doubling to 5 s).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
    /// How long before its expiry a token is renewed (default 5 minutes).
    pub fn renew_before(mut self, d: Duration) -> Self {
        self.renew_before = d;
        self
    }
    /// The session.
    pub fn build(self) -> Result<Session> {
        let client = match self.client {
            Some(c) => c,
            None => Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(60))
                .build()
                .map_err(|e| Error::internal(format!("HTTP client: {e}")).with_backend(BACKEND))?,
        };
        Ok(Session {
            inner: Arc::new(Inner {
                config: self.config,
                client,
                retry: self.retry,
                renew_before: self.renew_before,
                token: Mutex::new(None),
                auths: Default::default(),
            }),
        })
    }
}

impl Session {
    /// A builder for a session on `config`.
    pub fn builder(config: CloudConfig) -> SessionBuilder {
        SessionBuilder {
            config,
            client: None,
            retry: RetryPolicy::default(),
            renew_before: Duration::from_secs(300),
        }
    }

    /// A session with defaults.
    pub fn new(config: CloudConfig) -> Result<Self> {
        Self::builder(config).build()
    }

    /// The configuration.
    pub fn config(&self) -> &CloudConfig {
        &self.inner.config
    }
    /// The HTTP client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }
    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }
    /// How many times this session has authenticated (for tests and metrics).
    pub fn auth_count(&self) -> u64 {
        self.inner.auths.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn auth_body(&self) -> Value {
        match &self.inner.config.credentials {
            Credentials::Password {
                username,
                user_id,
                user_domain_name,
                user_domain_id,
                password,
                project_name,
                project_id,
                project_domain_name,
                project_domain_id,
            } => {
                let mut user = by_id_or_name(user_id, username, || {
                    domain(user_domain_id, user_domain_name)
                });
                user["password"] = json!(password.expose());
                let mut body = json!({ "auth": { "identity": {
                    "methods": ["password"], "password": { "user": user } } } });
                if project_id.is_some() || project_name.is_some() {
                    let p = by_id_or_name(project_id, project_name, || {
                        domain(project_domain_id, project_domain_name)
                    });
                    body["auth"]["scope"] = json!({ "project": p });
                }
                body
            }
            Credentials::ApplicationCredential {
                id,
                name,
                username,
                user_id,
                user_domain_name,
                secret,
            } => {
                let mut ac = json!({ "secret": secret.expose() });
                if let Some(id) = id {
                    ac["id"] = json!(id);
                } else {
                    ac["name"] = json!(name);
                    ac["user"] = by_id_or_name(
                        user_id,
                        username,
                        || json!({ "name": user_domain_name.as_deref().unwrap_or("Default") }),
                    );
                }
                json!({ "auth": { "identity": {
                    "methods": ["application_credential"], "application_credential": ac } } })
            }
        }
    }

    async fn authenticate(&self) -> Result<Token> {
        let url = format!("{}/auth/tokens", self.inner.config.identity_v3_url());
        let body = self.auth_body();
        // Issuing a token twice is harmless: authentication counts as idempotent.
        let resp = http::send(&self.inner.retry, "keystone: authenticate", true, || {
            self.inner.client.post(&url).json(&body)
        })
        .await?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(http::classify(status, &text).into_error("keystone: authenticate"));
        }
        let value = resp
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                Error::new(
                    wharf_core::ErrorKind::Backend,
                    "keystone: authenticate: answer has no X-Subject-Token",
                )
                .with_backend(BACKEND)
            })?;
        let body: TokenBody = http::json(resp, "keystone: authenticate").await?;
        self.inner
            .auths
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let expires = parse_iso8601(&body.token.expires_at);
        let issued = body.token.issued_at.as_deref().and_then(parse_iso8601);
        // Measure the lifetime on Keystone's clock (issued -> expires), so a skewed
        // local clock does not matter; fall back to the local clock.
        let lifetime = match (issued, expires) {
            (Some(i), Some(e)) => e - i,
            (None, Some(e)) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                e - now
            }
            _ => 0.0,
        };
        Ok(Token {
            value,
            expires: Instant::now() + Duration::from_secs_f64(lifetime.max(0.0)),
            project_id: body.token.project.map(|p| p.id),
            catalog: Arc::new(body.token.catalog),
        })
    }

    /// The current token, authenticating first if there is none or it expires within
    /// `renew_before`. Concurrent callers share one authentication.
    pub async fn token(&self) -> Result<Token> {
        let mut g = self.inner.token.lock().await;
        if let Some(t) = &*g {
            if Instant::now() + self.inner.renew_before < t.expires {
                return Ok(t.clone());
            }
        }
        let t = self.authenticate().await?;
        *g = Some(t.clone());
        Ok(t)
    }

    /// Drops the cached token (the next call authenticates again).
    pub async fn invalidate(&self) {
        *self.inner.token.lock().await = None;
    }

    /// The base URL (no trailing slash) of the service of type `service_type` in the
    /// configured region and interface.
    pub async fn endpoint(&self, service_type: &str) -> Result<String> {
        let token = self.token().await?;
        find_endpoint(
            &token.catalog,
            service_type,
            self.inner.config.region_name.as_deref(),
            self.inner.config.interface,
        )
    }

    /// Sends a request to a service: `X-Auth-Token` set, retried per the policy (POST
    /// and PATCH only when they cannot have been processed, see [`http::send`]), and
    /// once more with a fresh token on a 401. `build` adds method-specific parts
    /// (headers, body) to the request. The answer's status is not checked.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        what: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response> {
        for fresh in [false, true] {
            let token = self.token().await?;
            let idempotent = !matches!(method, Method::POST | Method::PATCH);
            let resp = http::send(&self.inner.retry, what, idempotent, || {
                build(
                    self.inner
                        .client
                        .request(method.clone(), url)
                        .header("X-Auth-Token", token.expose()),
                )
            })
            .await?;
            if resp.status() == StatusCode::UNAUTHORIZED && !fresh {
                self.invalidate().await;
                continue;
            }
            return Ok(resp);
        }
        unreachable!("the loop returns on its second pass")
    }

    /// [`Session::request`] to `path` under the catalog endpoint of `service_type`, with
    /// the microversion header `OpenStack-API-Version: <api> <microversion>` and an
    /// optional JSON body: the call every microversioned service (Nova, Zun) makes.
    #[allow(clippy::too_many_arguments)]
    pub async fn versioned(
        &self,
        service_type: &str,
        api: &str,
        microversion: &str,
        method: Method,
        path: &str,
        what: &str,
        body: Option<&Value>,
    ) -> Result<Response> {
        let base = self.endpoint(service_type).await?;
        let url = format!("{base}{path}");
        let version = format!("{api} {microversion}");
        self.request(method, &url, what, |rb| {
            let rb = rb.header("OpenStack-API-Version", &version);
            match body {
                Some(b) => rb.json(b),
                None => rb,
            }
        })
        .await
    }
}

/// A domain in an auth request: by id, else by name, else the `default` domain.
/// A Keystone user or project: by `id` when there is one, else by `name` in the domain
/// `domain` gives.
fn by_id_or_name(
    id: &Option<String>,
    name: &Option<String>,
    domain: impl FnOnce() -> Value,
) -> Value {
    match id {
        Some(id) => json!({ "id": id }),
        None => json!({ "name": name, "domain": domain() }),
    }
}

fn domain(id: &Option<String>, name: &Option<String>) -> Value {
    match (id, name) {
        (Some(id), _) => json!({ "id": id }),
        (None, Some(n)) => json!({ "name": n }),
        (None, None) => json!({ "id": "default" }),
    }
}

/// Finds an endpoint URL in a catalog (no trailing slash).
pub fn find_endpoint(
    catalog: &[CatalogService],
    service_type: &str,
    region: Option<&str>,
    interface: Interface,
) -> Result<String> {
    let mut regions_seen = Vec::new();
    for svc in catalog.iter().filter(|s| s.service_type == service_type) {
        for ep in &svc.endpoints {
            let ep_region = ep.region_id.as_deref().or(ep.region.as_deref());
            if let Some(r) = ep_region {
                regions_seen.push(format!("{r}/{}", ep.interface));
            }
            if ep.interface != interface.as_str() {
                continue;
            }
            if region.is_some() && ep_region != region {
                continue;
            }
            return Ok(ep.url.trim_end_matches('/').to_owned());
        }
    }
    Err(Error::not_found(format!(
        "no {} endpoint of service type {service_type:?} in region {} in the catalog (seen: {})",
        interface.as_str(),
        region.unwrap_or("(any)"),
        if regions_seen.is_empty() {
            "none".to_owned()
        } else {
            regions_seen.join(", ")
        }
    ))
    .with_backend(BACKEND))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keystone_times() {
        let a = parse_iso8601("2026-11-23T18:41:50.000000Z").unwrap();
        let b = parse_iso8601("2026-11-23T17:41:50.500000Z").unwrap();
        assert!((a - b - 3599.5).abs() < 1e-6);
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_iso8601("2000-03-01T00:00:00Z"), Some(951868800.0));
        assert_eq!(parse_iso8601("nonsense"), None);
    }

    #[test]
    fn finds_endpoints_by_region_and_interface() {
        let catalog: Vec<CatalogService> = serde_json::from_value(json!([
            {"type": "container", "name": "zun", "endpoints": [
                {"interface": "public", "region_id": "R1", "region": "R1", "url": "http://a/v1/"},
                {"interface": "internal", "region_id": "R2", "region": "R2", "url": "http://b/v1"},
                {"interface": "public", "region_id": "R2", "region": "R2", "url": "http://c/v1"}
            ]}
        ]))
        .unwrap();
        let f = |r, i| find_endpoint(&catalog, "container", r, i);
        assert_eq!(f(Some("R1"), Interface::Public).unwrap(), "http://a/v1");
        assert_eq!(f(Some("R2"), Interface::Internal).unwrap(), "http://b/v1");
        assert_eq!(f(Some("R2"), Interface::Public).unwrap(), "http://c/v1");
        assert_eq!(f(None, Interface::Public).unwrap(), "http://a/v1");
        let e = f(Some("R3"), Interface::Public).unwrap_err();
        assert_eq!(e.kind(), wharf_core::ErrorKind::NotFound);
        assert!(find_endpoint(&catalog, "dns", None, Interface::Public).is_err());
    }
}
