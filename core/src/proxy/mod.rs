//! The built-in reverse proxy (feature `proxy`): a [`ProxyRouter`] that implements
//! [`Router`] and serves the traffic itself, on hyper, so Wharf routes hostnames on a
//! machine with no Caddy or Traefik.
//!
//! - Routes match the request's host (the `Host` header, or the HTTP/2 authority; port
//!   and case ignored) exactly, then as a one-label `*.` wildcard; among routes of a
//!   host, the longest matching path prefix wins. `*.localhost` names work out of the
//!   box (browsers and curl resolve them to loopback).
//! - A route's upstreams share traffic by smooth weighted round robin (as nginx does).
//! - Route changes swap an `Arc`'d table: requests in flight finish where they went.
//! - HTTP/1.1 and HTTP/2 (cleartext, prior knowledge) on one port; WebSocket (HTTP/1.1
//!   `Upgrade`) passes through; `X-Forwarded-For`, `-Host` and `-Proto` and
//!   `X-Real-IP` are set, and what a client claims of itself (`Forwarded`, any other
//!   `X-Forwarded-*`, `X-Url-Scheme`, `True-Client-IP`..., spelt with `-` or `_`) is
//!   dropped unless [`ProxyConfig::trust_forwarded_headers`].
//! - An unknown host gets `404`; an upstream that does not answer gets `502` with a body
//!   saying which upstream failed. A request without a body whose upstream cannot be
//!   reached is retried on a freshly resolved upstream, so a redeploy's switch from old
//!   to new instance loses no request; [`DrainingRuntime`] makes stops wait for the
//!   requests in flight to an instance, so no request of any method is cut short.
//!
//! TLS is not terminated here: the built-in proxy serves plain HTTP (routes with a TLS
//! policy are accepted and served over HTTP).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use wharf_core::proxy::ProxyRouter;
//! use wharf_core::*;
//! let router = ProxyRouter::new();
//! let server = router.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
//! router.upsert(&Route {
//!     id: RouteId::from("web"),
//!     hosts: vec!["web.demo.localhost".into()],
//!     path_prefix: None,
//!     upstreams: vec![Upstream { endpoint: Endpoint { host: "127.0.0.1".into(), port: 8000 }, weight: 100 }],
//!     tls: TlsPolicy::None,
//!     labels: Labels::new(),
//! }).await.unwrap();
//! assert_eq!(router.resolve("web.demo.localhost:8080", "/").unwrap().port, 8000);
//! assert!(router.resolve("other.localhost", "/").is_none());
//! server.shutdown().await;
//! # });
//! ```

mod control;
mod drain;
mod serve;
mod table;

pub use control::{
    restore_routes, save_routes, serve_control, ControlServer, ProxyInfo, RemoteProxy,
};
pub use drain::{Drain, DrainingRuntime};
pub use serve::ProxyServer;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::model::{Endpoint, Route, RouteId};
use crate::traits::Router;
use table::Table;

/// How a [`ProxyRouter`] treats requests.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxyConfig {
    /// Keep the `X-Forwarded-*` headers a client sent (append to `X-Forwarded-For`)
    /// instead of replacing them. Only for a proxy behind another trusted proxy.
    pub trust_forwarded_headers: bool,
    /// How many times a request without a body is sent again (to a freshly resolved
    /// upstream) when its upstream cannot be reached.
    pub retries: u32,
    /// How long connecting to an upstream may take.
    pub connect_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            trust_forwarded_headers: false,
            retries: 3,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ProxyConfig,
    table: RwLock<Arc<Table>>,
    pub(crate) in_flight: Arc<drain::InFlight>,
    /// Serialises writers, so two upserts never lose each other's change.
    write: Mutex<()>,
}

impl Shared {
    pub(crate) fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn change(&self, f: impl FnOnce(&mut Vec<Route>)) {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut routes = self.table().routes();
        f(&mut routes);
        let next = Arc::new(Table::new(routes));
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = next;
    }
}

/// A [`Router`] that is itself the reverse proxy (see the [module docs](self)). Cheap to
/// clone: clones share routes.
#[derive(Debug, Clone)]
pub struct ProxyRouter {
    shared: Arc<Shared>,
}

impl Default for ProxyRouter {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyRouter {
    /// A router with no routes and the default [`ProxyConfig`].
    pub fn new() -> Self {
        Self::with_config(ProxyConfig::default())
    }

    /// A router with no routes.
    pub fn with_config(config: ProxyConfig) -> Self {
        ProxyRouter {
            shared: Arc::new(Shared {
                config,
                table: RwLock::new(Arc::new(Table::new(Vec::new()))),
                in_flight: Default::default(),
                write: Mutex::new(()),
            }),
        }
    }

    /// Serves traffic on `listener` until the returned server is shut down or dropped.
    /// Call it inside a Tokio runtime; one router may serve several listeners.
    pub fn serve(&self, listener: tokio::net::TcpListener) -> ProxyServer {
        serve::spawn(self.shared.clone(), listener)
    }

    /// The upstream a request for `host` (a port is ignored) and `path` would go to now
    /// (advancing the round robin), or `None` for a 404.
    pub fn resolve(&self, host: &str, path: &str) -> Option<Endpoint> {
        self.shared
            .table()
            .resolve(&table::normalize_host(host), path)
            .map(|(_, e)| e)
    }

    /// How many requests this proxy has in flight to `upstream` (until their response
    /// body is done).
    pub fn in_flight(&self, upstream: &Endpoint) -> usize {
        self.shared.in_flight.count(upstream)
    }

    /// Waits until no request is in flight to `upstream`, at most `timeout`; true if
    /// drained.
    pub async fn drained(&self, upstream: &Endpoint, timeout: Duration) -> bool {
        self.shared.in_flight.drained(upstream, timeout).await
    }
}

#[async_trait]
impl Router for ProxyRouter {
    async fn upsert(&self, route: &Route) -> Result<()> {
        route.validate().map_err(|e| e.with_backend("proxy"))?;
        let route = route.clone();
        self.shared.change(|routes| {
            routes.retain(|r| r.id != route.id);
            routes.push(route);
        });
        Ok(())
    }

    async fn remove(&self, id: &RouteId) -> Result<()> {
        self.shared.change(|routes| routes.retain(|r| &r.id != id));
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Route>> {
        Ok(self.shared.table().routes())
    }
}
