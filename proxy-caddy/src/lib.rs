#![doc = include_str!("../README.md")]

mod admin;
mod config;
mod permission;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use wharf_core::{Error, Result, Route, RouteId, Router, TlsPolicy};

use admin::Admin;
pub use permission::{host_matches, on_demand_permission_app, PERMISSION_PATH};

/// Which certificate issuer a TLS policy uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Issuer {
    /// An ACME CA (Caddy's default: Let's Encrypt, then ZeroSSL), with an optional
    /// account email.
    #[default]
    Acme,
    /// An ACME CA with this account email.
    AcmeWithEmail(String),
    /// Caddy's internal CA (tests, private networks).
    Internal,
}

/// How a [`CaddyRouter`] reaches Caddy and what it owns there.
#[derive(Debug, Clone)]
pub struct CaddyOptions {
    /// Base URL of Caddy's admin API, e.g. `http://127.0.0.1:2019`, or
    /// `unix:///path/to/admin.sock` for one on a unix socket (Caddy's `admin.listen`
    /// `unix//path/to/admin.sock`): unlike a loopback port, which every local process
    /// reaches, a socket reaches only who may open it.
    pub admin_url: String,
    /// Name of the HTTP server block Wharf owns under `apps.http.servers`.
    pub server: String,
    /// Plain-HTTP listen address of that server, e.g. `:80` or `127.0.0.1:8080`.
    pub http_listen: String,
    /// HTTPS listen address, e.g. `:443`; `None` serves plain HTTP only, and routes
    /// asking for TLS are refused.
    pub https_listen: Option<String>,
    /// Issuer for [`TlsPolicy::Acme`] routes.
    pub acme_issuer: Issuer,
    /// Issuer for [`TlsPolicy::OnDemand`] routes.
    pub on_demand_issuer: Issuer,
    /// The URL Caddy asks before issuing an on-demand certificate (Caddy 2.11's
    /// `on_demand.permission` `http` module): serve it with
    /// [`on_demand_permission_app`]. Set at bootstrap if Caddy has none.
    pub on_demand_permission: Option<String>,
}

impl CaddyOptions {
    /// Options for a Caddy whose admin API is at `admin_url`, owning server `wharf` on
    /// `:80` and `:443`, with ACME certificates.
    pub fn new(admin_url: impl Into<String>) -> Self {
        CaddyOptions {
            admin_url: admin_url.into().trim_end_matches('/').to_owned(),
            server: "wharf".into(),
            http_listen: ":80".into(),
            https_listen: Some(":443".into()),
            acme_issuer: Issuer::Acme,
            on_demand_issuer: Issuer::Acme,
            on_demand_permission: None,
        }
    }
}

/// A [`Router`] over Caddy's admin API.
///
/// Wharf owns one server block (`apps.http.servers.<server>`), created at the first
/// call if absent; nothing else in Caddy's config is replaced. Each route is one entry
/// of that server's `routes`, addressed by `@id` `wharf.route.<route id>` (upsert
/// patches it in place, remove deletes it), kept ahead of a catch-all route that
/// answers 404 (Caddy would answer an empty 200). Weighted upstreams use Caddy's
/// `weighted_round_robin` selection policy. A route with TLS gets its own automation
/// policy (`@id` `wharf.tls.<route id>`) under `apps.tls.automation.policies`; hosts of
/// plain-HTTP routes are listed in the server's `automatic_https.skip_certificates`
/// so Caddy never tries to get certificates for them.
///
/// Routes are read back from Caddy's config, so [`Router::list`] shows what is
/// applied; the TLS policy and labels travel in a `vars` handler of the route.
#[derive(Debug, Clone)]
pub struct CaddyRouter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    opts: CaddyOptions,
    admin: Admin,
    /// Serialises this router's read-modify-write sequences; `true` once bootstrapped.
    lock: Mutex<bool>,
}

impl CaddyRouter {
    /// A router with these options. Nothing is sent to Caddy until the first call.
    pub fn new(opts: CaddyOptions) -> Result<Self> {
        for addr in std::iter::once(&opts.http_listen).chain(&opts.https_listen) {
            config::port_of(addr)?;
        }
        config::check_id_text(&opts.server, "server name")?;
        Ok(CaddyRouter {
            inner: Arc::new(Inner {
                admin: Admin::new(&opts.admin_url)?,
                opts,
                lock: Mutex::new(false),
            }),
        })
    }

    /// The options it was made with.
    pub fn options(&self) -> &CaddyOptions {
        &self.inner.opts
    }

    /// Creates Wharf's server block (with its catch-all 404 route) if absent, sets the
    /// HTTP/HTTPS ports and the on-demand permission endpoint if Caddy has none, and
    /// touches nothing else. Called by every other method; idempotent.
    pub async fn bootstrap(&self) -> Result<()> {
        let mut done = self.inner.lock.lock().await;
        self.bootstrap_locked(&mut done).await.map(drop)
    }

    /// [`CaddyRouter::bootstrap`] with the lock held; returns Wharf's server block as
    /// Caddy has it then, split by [`CaddyRouter::split`].
    async fn bootstrap_locked(&self, done: &mut bool) -> Result<(Vec<Value>, Value)> {
        if *done {
            // Caddy may have been restarted with an empty config since: check cheaply,
            // with the read the caller needs anyway.
            let mut server = self.inner.admin.get(&self.server_path()).await?;
            if !server.is_null() {
                return self.split(&mut server);
            }
        }
        let o = &self.inner.opts;
        let a = &self.inner.admin;
        a.ensure(
            &["apps", "http", "http_port"],
            json!(config::port_of(&o.http_listen)?),
        )
        .await?;
        if let Some(https) = &o.https_listen {
            a.ensure(
                &["apps", "http", "https_port"],
                json!(config::port_of(https)?),
            )
            .await?;
        }
        a.ensure(
            &["apps", "http", "servers", &o.server],
            config::server_block(o),
        )
        .await?;
        // The server may exist without its catch-all (made by someone else, or edited).
        let catch_all = config::catch_all_id(&o.server);
        if a.get_id(&catch_all).await?.is_none() {
            a.post(
                &format!("{}/routes", self.server_path()),
                &config::catch_all(&o.server),
            )
            .await?;
        }
        if let Some(url) = &o.on_demand_permission {
            a.ensure(
                &["apps", "tls", "automation", "on_demand", "permission"],
                json!({"module": "http", "endpoint": url}),
            )
            .await?;
        }
        *done = true;
        self.server_block().await
    }

    fn server_path(&self) -> String {
        format!("apps/http/servers/{}", self.inner.opts.server)
    }

    /// Wharf's server block as Caddy has it now, split by [`CaddyRouter::split`].
    async fn server_block(&self) -> Result<(Vec<Value>, Value)> {
        self.split(&mut self.inner.admin.get(&self.server_path()).await?)
    }

    /// Wharf's server block, split into its routes and its `automatic_https` object.
    fn split(&self, server: &mut Value) -> Result<(Vec<Value>, Value)> {
        let automatic_https = server["automatic_https"].take();
        match server["routes"].take() {
            Value::Array(v) => Ok((v, automatic_https)),
            Value::Null => Ok((vec![], automatic_https)),
            other => Err(Error::internal(format!(
                "caddy: routes of server {} is not an array: {other}",
                self.inner.opts.server
            ))
            .with_backend("caddy")),
        }
    }

    /// Rewrites the hosts Caddy must not get certificates for (every host of a
    /// plain-HTTP route), unless `current` (the server's `automatic_https`) already
    /// says so. Every write through the admin API reloads Caddy, and a reload resets
    /// connections queued on the listeners it re-binds, so a route switch that changes
    /// no host writes nothing here.
    async fn set_skip_certificates(&self, routes: &[Route], current: &Value) -> Result<()> {
        let mut skip: Vec<&str> = routes
            .iter()
            .filter(|r| r.tls == TlsPolicy::None)
            .flat_map(|r| r.hosts.iter().map(String::as_str))
            .collect();
        skip.sort_unstable();
        skip.dedup();
        let wanted = json!({"disable_redirects": true, "skip_certificates": skip});
        if *current == wanted {
            return Ok(());
        }
        self.inner
            .admin
            .post(&format!("{}/automatic_https", self.server_path()), &wanted)
            .await
    }

    /// Whether Wharf routes `host` with on-demand TLS, i.e. whether the permission
    /// endpoint should let Caddy get a certificate for it.
    pub async fn approves(&self, host: &str) -> Result<bool> {
        let host = host.to_ascii_lowercase();
        Ok(self.list().await?.iter().any(|r| {
            r.tls == TlsPolicy::OnDemand && r.hosts.iter().any(|h| host_matches(h, &host))
        }))
    }
}

#[async_trait]
impl Router for CaddyRouter {
    async fn upsert(&self, route: &Route) -> Result<()> {
        config::check_route(route, &self.inner.opts)?;
        let mut done = self.inner.lock.lock().await;
        // Only what changes is written: each write is a Caddy reload (see
        // `set_skip_certificates`), so switching a route's upstreams is one write.
        let (current, automatic_https) = self.bootstrap_locked(&mut done).await?;
        let a = &self.inner.admin;
        let id = config::route_id(&route.id);

        let mut after: Vec<Route> = current
            .iter()
            .filter_map(config::parse_route)
            .filter(|r| r.id != route.id)
            .collect();
        after.push(route.clone());
        self.set_skip_certificates(&after, &automatic_https).await?;

        let tls_id = config::tls_id(&route.id);
        match config::tls_policy(route, &self.inner.opts) {
            Some(policy) => {
                if let Some(existing) = a.get_id(&tls_id).await? {
                    if existing != policy {
                        a.patch_id(&tls_id, &policy).await?;
                    }
                } else {
                    a.ensure(&["apps", "tls", "automation", "policies"], json!([]))
                        .await?;
                    a.put("apps/tls/automation/policies/0", &policy).await?;
                }
            }
            None => a.delete_id(&tls_id).await?,
        }

        let body = config::route_json(route);
        let rank = config::rank(&body);
        let existing = current.iter().position(|r| r["@id"] == id.as_str());
        match existing {
            Some(i) if current[i] == body => {}
            Some(i) if config::rank(&current[i]) == rank => a.patch_id(&id, &body).await?,
            _ => {
                let mut rest = current;
                if let Some(i) = existing {
                    // Its place in the order changes: take it out, then insert anew.
                    a.delete_id(&id).await?;
                    rest.remove(i);
                }
                let catch_all = config::catch_all_id(&self.inner.opts.server);
                let at = rest
                    .iter()
                    .position(|r| r["@id"] == catch_all.as_str() || config::rank(r) < rank)
                    .unwrap_or(rest.len());
                a.put(&format!("{}/routes/{at}", self.server_path()), &body)
                    .await?;
            }
        }
        Ok(())
    }

    async fn remove(&self, id: &RouteId) -> Result<()> {
        let mut done = self.inner.lock.lock().await;
        self.bootstrap_locked(&mut done).await?;
        let a = &self.inner.admin;
        a.delete_id(&config::route_id(id)).await?;
        a.delete_id(&config::tls_id(id)).await?;
        let (routes, automatic_https) = self.server_block().await?;
        let after: Vec<Route> = routes.iter().filter_map(config::parse_route).collect();
        self.set_skip_certificates(&after, &automatic_https).await
    }

    async fn list(&self) -> Result<Vec<Route>> {
        let mut done = self.inner.lock.lock().await;
        let (routes, _) = self.bootstrap_locked(&mut done).await?;
        Ok(routes.iter().filter_map(config::parse_route).collect())
    }
}
