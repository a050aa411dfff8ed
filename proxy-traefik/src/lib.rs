#![doc = include_str!("../README.md")]

mod config;
mod file;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::routing::get;
use serde_json::Value;
use wharf_core::{Result, Route, RouteId, Router};

pub use config::{dynamic_config, rule};

/// Where and how Traefik should serve Wharf's routes.
#[derive(Debug, Clone)]
pub struct TraefikOptions {
    /// Entry points of plain-HTTP routers (every route gets one).
    pub entry_points: Vec<String>,
    /// Entry points of TLS routers (routes with a TLS policy get one more router there).
    pub tls_entry_points: Vec<String>,
    /// The certificate resolver (an ACME resolver of Traefik's static config) used for
    /// [`TlsPolicy::Acme`](wharf_core::TlsPolicy) and `OnDemand` routes. Traefik has no
    /// on-demand issuance: both get certificates from the resolver for the route's
    /// hosts when the route appears. `None` refuses such routes.
    pub cert_resolver: Option<String>,
}

impl Default for TraefikOptions {
    /// `web` for HTTP, `websecure` for TLS, no certificate resolver.
    fn default() -> Self {
        TraefikOptions {
            entry_points: vec!["web".into()],
            tls_entry_points: vec!["websecure".into()],
            cert_resolver: None,
        }
    }
}

/// A [`Router`] for Traefik, through its file provider, its HTTP provider, or both.
///
/// Routes live in the router (and, with a file, in a state file beside the dynamic
/// configuration, so a restarted Wharf reads them back). Every change renders the
/// whole dynamic configuration ([`dynamic_config`]): one weighted service per route
/// over one load-balancer service per upstream, and routers whose rules are built only
/// from validated hostnames and paths. With [`TraefikRouter::with_file`] each change is
/// written atomically (temporary file, fsync, rename) where Traefik's file provider
/// watches; [`TraefikRouter::http_provider_app`] serves the same configuration to
/// Traefik's HTTP provider.
#[derive(Debug, Clone)]
pub struct TraefikRouter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    opts: TraefikOptions,
    file: Option<file::Files>,
    routes: Mutex<BTreeMap<RouteId, Route>>,
    /// Serialises writes so files are written in the order changes were made.
    write: tokio::sync::Mutex<()>,
}

/// Path of the dynamic configuration in [`TraefikRouter::http_provider_app`].
pub const HTTP_PROVIDER_PATH: &str = "/traefik/dynamic";

impl TraefikRouter {
    /// A router that keeps routes in memory only: serve them with
    /// [`TraefikRouter::http_provider_app`].
    pub fn new(opts: TraefikOptions) -> Self {
        Self::build(opts, None, BTreeMap::new())
    }

    /// A router that writes Traefik's dynamic configuration to `dynamic_file` (a
    /// `.yaml` file in the directory Traefik's file provider watches; the content is
    /// JSON, which YAML parsers read) and its own records to `dynamic_file` with the
    /// extension `.wharf.json` (Traefik ignores `.json` files). Routes recorded there
    /// by an earlier run are loaded, and the dynamic file is rewritten from them.
    pub async fn with_file(opts: TraefikOptions, dynamic_file: impl AsRef<Path>) -> Result<Self> {
        let files = file::Files::new(dynamic_file.as_ref())?;
        let routes = files.load().await?;
        let router = Self::build(opts, Some(files), routes);
        router.flush().await?;
        Ok(router)
    }

    fn build(
        opts: TraefikOptions,
        file: Option<file::Files>,
        routes: BTreeMap<RouteId, Route>,
    ) -> Self {
        TraefikRouter {
            inner: Arc::new(Inner {
                opts,
                file,
                routes: Mutex::new(routes),
                write: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The dynamic configuration file, if any.
    pub fn dynamic_file(&self) -> Option<&Path> {
        self.inner.file.as_ref().map(|f| f.dynamic.as_path())
    }

    /// Where the router keeps its own records, if it has a file.
    pub fn state_file(&self) -> Option<PathBuf> {
        self.inner.file.as_ref().map(|f| f.state.clone())
    }

    fn snapshot(&self) -> Vec<Route> {
        self.inner
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The dynamic configuration for the current routes.
    pub fn current_config(&self) -> Value {
        dynamic_config(&self.snapshot(), &self.inner.opts)
    }

    /// An axum app serving [`TraefikRouter::current_config`] as JSON at
    /// [`HTTP_PROVIDER_PATH`], for Traefik's HTTP provider (`providers.http.endpoint`).
    pub fn http_provider_app(&self) -> axum::Router {
        let router = self.clone();
        axum::Router::new().route(
            HTTP_PROVIDER_PATH,
            get(move || {
                let config = router.current_config();
                async move { axum::Json(config) }
            }),
        )
    }

    async fn flush(&self) -> Result<()> {
        let Some(files) = &self.inner.file else {
            return Ok(());
        };
        let _g = self.inner.write.lock().await;
        let routes = self.snapshot();
        files
            .store(&routes, &dynamic_config(&routes, &self.inner.opts))
            .await
    }

    fn change(&self, f: impl FnOnce(&mut BTreeMap<RouteId, Route>)) {
        f(&mut self.inner.routes.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

#[async_trait]
impl Router for TraefikRouter {
    async fn upsert(&self, route: &Route) -> Result<()> {
        config::check_route(route, &self.inner.opts)?;
        let old = self
            .inner
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(route.id.clone(), route.clone());
        if let Err(e) = self.flush().await {
            // Not applied: put back what was there.
            self.change(|m| match old {
                Some(o) => {
                    m.insert(route.id.clone(), o);
                }
                None => {
                    m.remove(&route.id);
                }
            });
            return Err(e);
        }
        Ok(())
    }

    async fn remove(&self, id: &RouteId) -> Result<()> {
        let old = self
            .inner
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if old.is_none() {
            return Ok(());
        }
        if let Err(e) = self.flush().await {
            self.change(|m| {
                if let Some(o) = old {
                    m.insert(id.clone(), o);
                }
            });
            return Err(e);
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Route>> {
        Ok(self.snapshot())
    }
}
