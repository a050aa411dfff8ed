//! Picks the builder, runtime and router `wharf serve` uses, and says why: the router
//! first (the host runtime drains through the built-in proxy), then the runtime, then
//! the URL base apps are announced with.

use std::sync::Arc;
use std::time::Duration;

use wharf_core::detect::ImageMap;
use wharf_core::process::{HostBuilder, HostRuntime, HostRuntimeConfig};
use wharf_core::proxy::{DrainingRuntime, ProxyRouter, ProxyServer};
use wharf_core::{DynBuilder, DynRouter, DynRuntime};

use super::config::{Config, ConfigError, PublicUrl, RouterChoice, RuntimeChoice, TlsChoice};
use super::error::ServeError;
use super::managed_caddy::ManagedCaddy;

/// The backends chosen, with a line per choice for the start-up banner.
pub struct Backends {
    /// Builds images (or release folders).
    pub builder: DynBuilder,
    /// Runs instances.
    pub runtime: DynRuntime,
    /// Routes hostnames.
    pub router: DynRouter,
    /// Scheme and port of apps' URLs: `public_url`, else what the router serves on.
    pub public_url: PublicUrl,
    /// What was chosen and why.
    pub notes: Vec<String>,
    /// The built-in proxy, when it serves (kept alive as long as this value).
    pub proxy: Option<ProxyServer>,
    /// The Caddy router, when Caddy routes: the API serves its on-demand TLS
    /// permission endpoint.
    pub caddy: Option<wharf_caddy::CaddyRouter>,
    /// The Caddy `wharf serve` started itself (stopped when this value drops).
    pub managed_caddy: Option<ManagedCaddy>,
    /// The certificate policy routes get.
    pub tls: wharf_core::TlsPolicy,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("runtime", &self.runtime)
            .field("router", &self.router)
            .field("public_url", &self.public_url)
            .field("notes", &self.notes)
            .finish_non_exhaustive()
    }
}

/// The router chosen and what comes with it.
struct Routing {
    router: DynRouter,
    /// The built-in proxy's router (the host runtime drains through it).
    builtin: Option<ProxyRouter>,
    proxy: Option<ProxyServer>,
    caddy: Option<wharf_caddy::CaddyRouter>,
    managed: Option<ManagedCaddy>,
    /// Where the router serves apps (`None`: the scheme's default port), and why.
    serves_on: (bool, Option<u16>, &'static str),
}

impl Routing {
    fn new(router: DynRouter, serves_on: (bool, Option<u16>, &'static str)) -> Routing {
        Routing {
            router,
            builtin: None,
            proxy: None,
            caddy: None,
            managed: None,
            serves_on,
        }
    }
}

/// `None` for port 80, which URLs leave out.
fn port_of(listen: std::net::SocketAddr) -> Option<u16> {
    Some(listen.port()).filter(|p| *p != 80)
}

/// Chooses backends from the configuration and what answers on this machine.
pub async fn select(config: &Config) -> Result<Backends, ServeError> {
    let mut notes = Vec::new();
    let router_choice = router_choice(config);
    let tls = tls_policy(config, router_choice)?;
    let routing = match router_choice {
        RouterChoice::Caddy => caddy_router(config, &mut notes).await?,
        RouterChoice::Traefik => traefik_router(config, &mut notes).await?,
        _ => builtin_router(config, &mut notes).await?,
    };
    let (builder, runtime) = runtime(config, routing.builtin.as_ref(), &mut notes).await?;
    let public_url = public_url(config, routing.serves_on, &mut notes);
    Ok(Backends {
        builder,
        runtime,
        router: routing.router,
        public_url,
        notes,
        proxy: routing.proxy,
        caddy: routing.caddy,
        managed_caddy: routing.managed,
        tls,
    })
}

/// `router = auto` becomes Caddy when one is configured, else Traefik when configured,
/// else the built-in proxy.
fn router_choice(config: &Config) -> RouterChoice {
    match config.router {
        RouterChoice::Auto if config.caddy_admin.is_some() || config.caddy_bin.is_some() => {
            RouterChoice::Caddy
        }
        RouterChoice::Auto if config.traefik_dir.is_some() => RouterChoice::Traefik,
        RouterChoice::Auto => RouterChoice::Builtin,
        other => other,
    }
}

/// The certificate policy; certificates need Caddy and an HTTPS address.
fn tls_policy(config: &Config, router: RouterChoice) -> Result<wharf_core::TlsPolicy, ConfigError> {
    if config.tls != TlsChoice::None {
        if router != RouterChoice::Caddy {
            return Err(ConfigError(format!(
                "tls = {:?} needs the Caddy router (caddy_admin or caddy_bin)",
                config.tls
            )));
        }
        if config.https_listen.is_none() {
            return Err(ConfigError(
                "tls needs https_listen (WHARF_HTTPS_LISTEN), e.g. 0.0.0.0:443".into(),
            ));
        }
    }
    Ok(match config.tls {
        TlsChoice::None => wharf_core::TlsPolicy::None,
        TlsChoice::Acme => wharf_core::TlsPolicy::Acme,
        TlsChoice::Internal => wharf_core::TlsPolicy::Internal,
        TlsChoice::OnDemand => wharf_core::TlsPolicy::OnDemand,
    })
}

/// The Caddy admin API to use: `caddy_admin`, else a Caddy started from `caddy_bin`.
async fn caddy_admin(
    config: &Config,
    notes: &mut Vec<String>,
) -> Result<(String, Option<ManagedCaddy>), ServeError> {
    match (&config.caddy_admin, &config.caddy_bin) {
        (Some(admin), _) => Ok((admin.clone(), None)),
        (None, Some(bin)) => {
            let dir = config.data_dir.join("caddy");
            let m = ManagedCaddy::start(bin, &dir).await?;
            notes.push(format!(
                "caddy: started {} (admin API {}, state in {})",
                bin.display(),
                m.admin_url(),
                dir.display()
            ));
            Ok((m.admin_url().to_owned(), Some(m)))
        }
        (None, None) => Err(ConfigError(
            "router caddy needs caddy_admin (WHARF_CADDY_ADMIN) or caddy_bin \
             (WHARF_CADDY_BIN) for a Caddy wharf starts itself"
                .into(),
        )
        .into()),
    }
}

/// Wharf's server block in Caddy: its addresses, issuers and on-demand permission URL.
fn caddy_options(config: &Config, admin: &str) -> wharf_caddy::CaddyOptions {
    let mut opts = wharf_caddy::CaddyOptions::new(admin);
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
        // Caddy asks the API before issuing; on loopback when the API listens on every
        // address.
        let mut ask = config.listen;
        if ask.ip().is_unspecified() {
            ask.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        opts.on_demand_permission = Some(format!("http://{ask}{}", wharf_caddy::PERMISSION_PATH));
    }
    opts
}

async fn caddy_router(config: &Config, notes: &mut Vec<String>) -> Result<Routing, ServeError> {
    let (admin, managed) = caddy_admin(config, notes).await?;
    let r = wharf_caddy::CaddyRouter::new(caddy_options(config, &admin))
        .map_err(|e| ServeError::backend("caddy", format!("router caddy: {e}")))?;
    r.bootstrap().await.map_err(|e| {
        ServeError::backend(
            "caddy",
            format!("cannot set up Caddy at {admin} (caddy_admin): {e}"),
        )
    })?;
    let https = config
        .https_listen
        .filter(|_| config.tls != TlsChoice::None);
    let https_note = match https {
        Some(a) => format!(" and HTTPS on {a}"),
        None => String::new(),
    };
    notes.push(format!(
        "router: Caddy at {admin}, serving apps on {}{https_note}",
        config.proxy_listen
    ));
    // Apps are announced where Wharf's server block listens: HTTPS when certificates
    // are issued, else HTTP.
    let serves_on = match https {
        Some(a) => (
            true,
            Some(a.port()).filter(|p| *p != 443),
            "Caddy's https_listen",
        ),
        None => (false, port_of(config.proxy_listen), "Caddy's proxy_listen"),
    };
    let mut routing = Routing::new(Arc::new(r.clone()), serves_on);
    routing.caddy = Some(r);
    routing.managed = managed;
    Ok(routing)
}

async fn traefik_router(config: &Config, notes: &mut Vec<String>) -> Result<Routing, ServeError> {
    let dir = config.traefik_dir.clone().ok_or_else(|| {
        ConfigError("router traefik needs traefik_dir (WHARF_TRAEFIK_DIR)".into())
    })?;
    std::fs::create_dir_all(&dir).map_err(ServeError::io("create traefik_dir", &dir))?;
    let file = dir.join("wharf.yaml");
    let r = wharf_traefik::TraefikRouter::with_file(Default::default(), &file)
        .await
        .map_err(|e| ServeError::backend("traefik", format!("router traefik: {e}")))?;
    notes.push(format!(
        "router: Traefik file provider {} (entry point `web`)",
        file.display()
    ));
    // The file provider cannot tell which address the `web` entry point has (that is
    // Traefik's static configuration): take the conventional :80 unless public_url
    // says otherwise.
    let serves_on = (
        false,
        None,
        "Traefik's entry point `web` is taken to be on port 80: Wharf cannot read \
         Traefik's static configuration; set public_url (WHARF_PUBLIC_URL) if it \
         listens elsewhere",
    );
    Ok(Routing::new(Arc::new(r), serves_on))
}

async fn builtin_router(config: &Config, notes: &mut Vec<String>) -> Result<Routing, ServeError> {
    let r = ProxyRouter::new();
    let listener = tokio::net::TcpListener::bind(config.proxy_listen)
        .await
        .map_err(|source| ServeError::Listen {
            setting: "proxy_listen: the built-in proxy",
            addr: config.proxy_listen,
            source,
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
    let mut routing = Routing::new(
        Arc::new(r.clone()),
        (false, Some(port), "the built-in proxy's port"),
    );
    routing.proxy = Some(server);
    routing.builtin = Some(r);
    Ok(routing)
}

/// The Docker engine, when `runtime` asks for it or (`auto`) when one answers.
async fn docker(
    config: &Config,
    notes: &mut Vec<String>,
) -> Result<Option<wharf_docker::DockerRuntime>, ServeError> {
    match config.runtime {
        RuntimeChoice::Process => Ok(None),
        RuntimeChoice::Docker => wharf_docker::DockerRuntime::connect()
            .await
            .map(Some)
            .map_err(|e| {
                ServeError::backend(
                    "docker",
                    format!("runtime docker: no Docker engine answers: {e}"),
                )
            }),
        RuntimeChoice::Auto => {
            let connect = wharf_docker::DockerRuntime::connect();
            match tokio::time::timeout(Duration::from_secs(3), connect).await {
                Ok(Ok(rt)) => Ok(Some(rt)),
                Ok(Err(e)) => {
                    notes.push(format!("docker: not used ({e})"));
                    Ok(None)
                }
                Err(_) => {
                    notes.push("docker: not used (the engine did not answer within 3 s)".into());
                    Ok(None)
                }
            }
        }
    }
}

/// The builder and runtime: Docker's, else host processes (draining through the
/// built-in proxy when it routes).
async fn runtime(
    config: &Config,
    builtin: Option<&ProxyRouter>,
    notes: &mut Vec<String>,
) -> Result<(DynBuilder, DynRuntime), ServeError> {
    let images = match &config.base_images {
        Some(m) => ImageMap::parse(m)
            .map_err(|e| ConfigError(format!("bad setting base_images: {}", e.message())))?,
        None => ImageMap::default(),
    };
    if let Some(rt) = docker(config, notes).await? {
        notes.push(
            "runtime: Docker engine (containers published on 127.0.0.1, ephemeral ports)".into(),
        );
        let b = wharf_docker::DockerBuilder::connect(images)
            .await
            .map_err(|e| ServeError::backend("docker", format!("docker builder: {e}")))?;
        return Ok((Arc::new(b), Arc::new(rt)));
    }
    let state = config.data_dir.join("runtime");
    let host = HostRuntime::open(HostRuntimeConfig::new(&state))
        .await
        .map_err(|e| {
            ServeError::backend(
                "host runtime",
                format!("cannot open the host runtime in {}: {e}", state.display()),
            )
        })?;
    let runtime: DynRuntime = match builtin {
        Some(p) => Arc::new(DrainingRuntime::new(
            Arc::new(host),
            p.clone(),
            Duration::from_secs(30),
        )),
        None => Arc::new(host),
    };
    let builds = config.data_dir.join("builds");
    notes.push(format!(
        "runtime: host processes (release folders under {})",
        builds.display()
    ));
    Ok((Arc::new(HostBuilder::new(builds)), runtime))
}

/// `public_url` when set, else where the router serves (`serves_on`); a note says
/// which URLs users are given and why.
fn public_url(
    config: &Config,
    serves_on: (bool, Option<u16>, &'static str),
    notes: &mut Vec<String>,
) -> PublicUrl {
    let (url, why) = match &config.public_url {
        Some(u) => (u.clone(), "public_url"),
        None => {
            let (https, port, why) = serves_on;
            let url = PublicUrl {
                https,
                host: config.base_domain.clone(),
                port,
            };
            (url, why)
        }
    };
    let port = url.port.map(|p| format!(":{p}")).unwrap_or_default();
    notes.push(format!(
        "urls: {}://<service>.<project>.{}{port} ({why})",
        url.scheme(),
        url.host
    ));
    url
}
