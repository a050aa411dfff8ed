//! Picks the builder, runtime and router `wharf serve` uses, and says why.

use std::sync::Arc;
use std::time::Duration;

use wharf_core::detect::ImageMap;
use wharf_core::process::{HostBuilder, HostRuntime, HostRuntimeConfig};
use wharf_core::proxy::{DrainingRuntime, ProxyRouter, ProxyServer};
use wharf_core::{DynBuilder, DynRouter, DynRuntime};

use crate::client::CliError;
use crate::config::{Config, RouterChoice, RuntimeChoice, TlsChoice};

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
    /// The Caddy router, when Caddy routes: the API serves its on-demand TLS
    /// permission endpoint.
    pub caddy: Option<wharf_caddy::CaddyRouter>,
    /// The Caddy `wharf serve` started itself (stopped when this value drops).
    pub managed_caddy: Option<crate::managed_caddy::ManagedCaddy>,
    /// The certificate policy routes get.
    pub tls: wharf_core::TlsPolicy,
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

fn port_of(listen: std::net::SocketAddr) -> Option<u16> {
    Some(listen.port()).filter(|p| *p != 80)
}

/// Chooses backends from the configuration and what answers on this machine.
pub async fn select(config: &Config) -> Result<Backends, CliError> {
    let mut notes = Vec::new();

    // The router first: the host runtime drains through the built-in proxy.
    let router_choice = match config.router {
        RouterChoice::Auto if config.caddy_admin.is_some() || config.caddy_bin.is_some() => {
            RouterChoice::Caddy
        }
        RouterChoice::Auto if config.traefik_dir.is_some() => RouterChoice::Traefik,
        RouterChoice::Auto => RouterChoice::Builtin,
        other => other,
    };
    let mut builtin: Option<ProxyRouter> = None;
    let mut proxy = None;
    let mut caddy = None;
    let mut managed = None;
    let tls = match config.tls {
        TlsChoice::None => wharf_core::TlsPolicy::None,
        TlsChoice::Acme => wharf_core::TlsPolicy::Acme,
        TlsChoice::Internal => wharf_core::TlsPolicy::Internal,
        TlsChoice::OnDemand => wharf_core::TlsPolicy::OnDemand,
    };
    if config.tls != TlsChoice::None {
        if router_choice != RouterChoice::Caddy {
            return Err(format!(
                "tls = {:?} needs the Caddy router (caddy_admin or caddy_bin)",
                config.tls
            )
            .into());
        }
        if config.https_listen.is_none() {
            return Err("tls needs https_listen (WHARF_HTTPS_LISTEN), e.g. 0.0.0.0:443".into());
        }
    }
    let (router, proxy_port): (DynRouter, Option<u16>) = match router_choice {
        RouterChoice::Caddy => {
            let admin = match (&config.caddy_admin, &config.caddy_bin) {
                (Some(admin), _) => admin.clone(),
                (None, Some(bin)) => {
                    let m = crate::managed_caddy::ManagedCaddy::start(
                        bin,
                        &config.data_dir.join("caddy"),
                    )
                    .await?;
                    notes.push(format!(
                        "caddy: started {} (admin API {}, state in {})",
                        bin.display(),
                        m.admin_url(),
                        config.data_dir.join("caddy").display()
                    ));
                    let url = m.admin_url().to_owned();
                    managed = Some(m);
                    url
                }
                (None, None) => {
                    return Err(
                        "router caddy needs caddy_admin (WHARF_CADDY_ADMIN) or caddy_bin \
                                (WHARF_CADDY_BIN) for a Caddy wharf starts itself"
                            .into(),
                    )
                }
            };
            let mut opts = wharf_caddy::CaddyOptions::new(&admin);
            opts.http_listen = config.proxy_listen.to_string();
            opts.https_listen = config.https_listen.map(|a| a.to_string());
            let acme = match &config.acme_email {
                Some(e) => wharf_caddy::Issuer::AcmeWithEmail(e.clone()),
                None => wharf_caddy::Issuer::Acme,
            };
            opts.acme_issuer = acme.clone();
            opts.on_demand_issuer = if config.tls_internal_issuer {
                wharf_caddy::Issuer::Internal
            } else {
                acme
            };
            if config.tls == TlsChoice::OnDemand {
                // Caddy asks the API before issuing; on loopback when the API listens
                // on every address.
                let mut ask = config.listen;
                if ask.ip().is_unspecified() {
                    ask.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                opts.on_demand_permission =
                    Some(format!("http://{ask}{}", wharf_caddy::PERMISSION_PATH));
            }
            let r = wharf_caddy::CaddyRouter::new(opts)?;
            r.bootstrap()
                .await
                .map_err(|e| format!("cannot set up Caddy at {admin} (caddy_admin): {e}"))?;
            let https = match config.https_listen {
                Some(a) if config.tls != TlsChoice::None => format!(" and HTTPS on {a}"),
                _ => String::new(),
            };
            notes.push(format!(
                "router: Caddy at {admin}, serving apps on {}{https}",
                config.proxy_listen
            ));
            caddy = Some(r.clone());
            let port = match config.https_listen {
                Some(a) if config.tls != TlsChoice::None => Some(a.port()).filter(|p| *p != 443),
                _ => port_of(config.proxy_listen),
            };
            (Arc::new(r), port)
        }
        RouterChoice::Traefik => {
            let dir = config
                .traefik_dir
                .clone()
                .ok_or("router traefik needs traefik_dir (WHARF_TRAEFIK_DIR)")?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create traefik_dir {}: {e}", dir.display()))?;
            let file = dir.join("wharf.yaml");
            let r = wharf_traefik::TraefikRouter::with_file(Default::default(), &file).await?;
            notes.push(format!(
                "router: Traefik file provider {} (entry point `web`; apps on port {})",
                file.display(),
                config.proxy_listen.port()
            ));
            (Arc::new(r), port_of(config.proxy_listen))
        }
        _ => {
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
            proxy = Some(server);
            builtin = Some(r.clone());
            (Arc::new(r), Some(port))
        }
    };

    let images = match &config.base_images {
        Some(m) => ImageMap::parse(m)?,
        None => ImageMap::default(),
    };
    let docker = match config.runtime {
        RuntimeChoice::Process => None,
        RuntimeChoice::Docker => Some(
            wharf_docker::DockerRuntime::connect()
                .await
                .map_err(|e| format!("runtime docker: no Docker engine answers: {e}"))?,
        ),
        RuntimeChoice::Auto => {
            match tokio::time::timeout(
                Duration::from_secs(3),
                wharf_docker::DockerRuntime::connect(),
            )
            .await
            {
                Ok(Ok(rt)) => Some(rt),
                Ok(Err(e)) => {
                    notes.push(format!("docker: not used ({e})"));
                    None
                }
                Err(_) => {
                    notes.push("docker: not used (the engine did not answer within 3 s)".into());
                    None
                }
            }
        }
    };
    let (builder, runtime): (DynBuilder, DynRuntime) = match docker {
        Some(rt) => {
            notes.push(
                "runtime: Docker engine (containers published on 127.0.0.1, ephemeral ports)"
                    .into(),
            );
            let b = wharf_docker::DockerBuilder::connect(images).await?;
            (Arc::new(b), Arc::new(rt))
        }
        None => {
            let state = config.data_dir.join("runtime");
            let host = HostRuntime::open(HostRuntimeConfig::new(&state))
                .await
                .map_err(|e| format!("cannot open the host runtime in {}: {e}", state.display()))?;
            let runtime: DynRuntime = match &builtin {
                Some(p) => Arc::new(DrainingRuntime::new(
                    Arc::new(host),
                    p.clone(),
                    Duration::from_secs(30),
                )),
                None => Arc::new(host),
            };
            notes.push(format!(
                "runtime: host processes (release folders under {})",
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
        caddy,
        managed_caddy: managed,
        tls,
    })
}
