//! Picks the builder, runtime and router `wharf serve` uses, and says why.

use std::sync::Arc;
use std::time::Duration;

use wharf_core::process::{HostBuilder, HostRuntime, HostRuntimeConfig};
use wharf_core::proxy::{DrainingRuntime, ProxyRouter, ProxyServer};
use wharf_core::{DynBuilder, DynRouter, DynRuntime};

use crate::client::CliError;
use crate::config::{Config, RouterChoice, RuntimeChoice};

/// The backends chosen, with a line per choice for the start-up banner.
pub struct Backends {
    /// Builds images (or release folders).
    pub builder: DynBuilder,
    /// Runs instances.
    pub runtime: DynRuntime,
    /// Routes hostnames.
    pub router: DynRouter,
    /// The port apps are reached on through the router (`None`: 80).
    pub proxy_port: Option<u16>,
    /// What was chosen and why.
    pub notes: Vec<String>,
    /// The built-in proxy, when it serves (kept alive as long as this value).
    pub proxy: Option<ProxyServer>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("runtime", &self.runtime)
            .field("router", &self.router)
            .field("notes", &self.notes)
            .finish_non_exhaustive()
    }
}

/// Chooses backends from the configuration and what answers on this machine.
pub async fn select(config: &Config) -> Result<Backends, CliError> {
    let mut notes = Vec::new();

    // The router first: the host runtime drains through the built-in proxy.
    let (router, proxy, proxy_port, builtin): (DynRouter, _, _, Option<ProxyRouter>) =
        match config.router {
            RouterChoice::Caddy | RouterChoice::Traefik => {
                return Err(format!(
                    "router {:?} is not available in this build of wharf",
                    config.router
                )
                .into())
            }
            RouterChoice::Auto | RouterChoice::Builtin => {
                let r = ProxyRouter::new();
                let listener = tokio::net::TcpListener::bind(config.proxy_listen)
                    .await
                    .map_err(|e| {
                        format!(
                            "cannot start the built-in proxy on {} (proxy_listen): {e}",
                            config.proxy_listen
                        )
                    })?;
                let server = r.serve(listener);
                let why = if config.router == RouterChoice::Auto {
                    " (no caddy_admin or traefik_dir configured)"
                } else {
                    ""
                };
                notes.push(format!(
                    "router: built-in proxy on http://{}{why}",
                    server.local_addr()
                ));
                let port = server.local_addr().port();
                (Arc::new(r.clone()), Some(server), Some(port), Some(r))
            }
        };

    let (builder, runtime): (DynBuilder, DynRuntime) = match config.runtime {
        RuntimeChoice::Docker => {
            return Err("runtime docker is not available in this build of wharf".into())
        }
        RuntimeChoice::Auto | RuntimeChoice::Process => {
            let state = config.data_dir.join("runtime");
            let host = HostRuntime::open(HostRuntimeConfig::new(&state))
                .await
                .map_err(|e| format!("cannot open the host runtime in {}: {e}", state.display()))?;
            let runtime: DynRuntime = match &builtin {
                Some(proxy) => Arc::new(DrainingRuntime::new(
                    Arc::new(host),
                    proxy.clone(),
                    Duration::from_secs(30),
                )),
                None => Arc::new(host),
            };
            let why = if config.runtime == RuntimeChoice::Auto {
                " (no Docker engine is used by this build)"
            } else {
                ""
            };
            notes.push(format!(
                "runtime: host processes, release folders under {}{why}",
                config.data_dir.join("builds").display()
            ));
            (
                Arc::new(HostBuilder::new(config.data_dir.join("builds"))),
                runtime,
            )
        }
    };

    Ok(Backends {
        builder,
        runtime,
        router,
        proxy_port,
        notes,
        proxy,
    })
}
