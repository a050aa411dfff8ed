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
use super::routers::{builtin_router, caddy_router, traefik_router, ServesOn};

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
    /// Whether apps run in containers (not as the server's own account).
    pub isolated: bool,
    /// How long the router may take to apply a route change (see
    /// [`wharf_core::EngineConfig::route_settle`]).
    pub route_settle: std::time::Duration,
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

/// Where the runtime chosen is kept (`docker` or `process`), so that `auto` never
/// moves a server's apps to another runtime because Docker was slow to answer once.
pub const RUNTIME_CHOICE: &str = "runtime-choice";

/// Chooses backends from the configuration and what answers on this machine;
/// `has_services`: whether the store already holds services (then `runtime = auto`
/// keeps the runtime they were started on); `key`: the server's secret key (host
/// processes' records are sealed with a key derived from it).
pub async fn select(
    config: &Config,
    has_services: bool,
    key: &[u8; 32],
) -> Result<Backends, ServeError> {
    let mut notes = Vec::new();
    let router_choice = router_choice(config);
    let tls = tls_policy(config, router_choice)?;
    let routing = match router_choice {
        RouterChoice::Caddy => caddy_router(config, &mut notes).await?,
        RouterChoice::Traefik => traefik_router(config, &mut notes).await?,
        _ => builtin_router(config, &mut notes).await?,
    };
    let kept = has_services
        .then(|| std::fs::read_to_string(config.data_dir.join(RUNTIME_CHOICE)).ok())
        .flatten()
        .map(|k| k.trim().to_owned());
    let (builder, runtime, isolated) = runtime(
        config,
        kept.as_deref(),
        routing.builtin.as_ref(),
        key,
        &mut notes,
    )
    .await?;
    let public_url = public_url(config, routing.serves_on, &mut notes);
    Ok(Backends {
        builder,
        runtime,
        router: routing.router,
        public_url,
        notes,
        proxy: routing.proxy,
        caddy: routing.caddy,
        route_settle: routing.route_settle,
        managed_caddy: routing.managed,
        tls,
        isolated,
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

/// The Docker engine, when `runtime` asks for it or (`auto`) when one answers; with
/// `auto` and services already running on a runtime (`kept`), that runtime or an error.
async fn docker(
    config: &Config,
    kept: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<Option<wharf_docker::DockerRuntime>, ServeError> {
    match (config.runtime, kept) {
        (RuntimeChoice::Auto, Some("process")) => {
            notes.push(format!(
                "runtime auto: host processes, which this server's services run on \
                 ({RUNTIME_CHOICE} in data_dir): auto never moves them, set runtime = docker to do so"
            ));
            Ok(None)
        }
        (RuntimeChoice::Auto, Some("docker")) => wharf_docker::DockerRuntime::connect()
            .await
            .map(Some)
            .map_err(|e| {
                ServeError::backend(
                    "docker",
                    format!(
                        "runtime auto: this server's services run on Docker ({RUNTIME_CHOICE} \
                         in data_dir) and no Docker engine answers ({e}); start Docker, or \
                         set runtime = process to move them to host processes"
                    ),
                )
            }),
        _ => docker_fresh(config, notes).await,
    }
}

/// [`docker`] for a server without services on a runtime yet.
async fn docker_fresh(
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
    kept: Option<&str>,
    builtin: Option<&ProxyRouter>,
    key: &[u8; 32],
    notes: &mut Vec<String>,
) -> Result<(DynBuilder, DynRuntime, bool), ServeError> {
    let chosen = docker(config, kept, notes).await?;
    let kind = if chosen.is_some() {
        "docker"
    } else {
        "process"
    };
    let path = config.data_dir.join(RUNTIME_CHOICE);
    std::fs::write(&path, format!("{kind}\n")).map_err(ServeError::io("write", &path))?;
    let images = match &config.base_images {
        Some(m) => ImageMap::parse(m)
            .map_err(|e| ConfigError(format!("bad setting base_images: {}", e.message())))?,
        None => ImageMap::default(),
    };
    if let Some(rt) = chosen {
        notes.push(
            "runtime: Docker engine (containers published on 127.0.0.1, ephemeral ports)".into(),
        );
        let b = wharf_docker::DockerBuilder::connect(images)
            .await
            .map_err(|e| ServeError::backend("docker", format!("docker builder: {e}")))?;
        return Ok((Arc::new(b), Arc::new(rt), true));
    }
    let users = super::host_users::project_users(config, notes)?;
    let state = config.data_dir.join("runtime");
    let mut host_cfg = HostRuntimeConfig::new(&state);
    host_cfg.users = users.clone();
    host_cfg.seal_key = Some(HostRuntimeConfig::derive_seal_key(key));
    let host = HostRuntime::open(host_cfg).await.map_err(|e| {
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
    notes.push(
        "previews of pull requests from forks are refused: on host processes a preview \
         would run as its project's production account"
            .into(),
    );
    let mut builder = HostBuilder::new(builds);
    if let Some(u) = users {
        builder = builder.users(u);
    }
    // Static sites: this binary's own file server, so no busybox is needed.
    match std::env::current_exe() {
        Ok(exe) => {
            builder = builder.static_server(vec![
                exe.to_string_lossy().into_owned(),
                "static-server".into(),
            ])
        }
        Err(e) => notes.push(format!(
            "static sites fall back to busybox httpd: the path of this binary is unknown ({e})"
        )),
    }
    Ok((Arc::new(builder), runtime, false))
}

/// `public_url` when set, else where the router serves (`serves_on`); a note says
/// which URLs users are given and why.
fn public_url(config: &Config, serves_on: ServesOn, notes: &mut Vec<String>) -> PublicUrl {
    let (url, why) = match &config.public_url {
        Some(u) => (u.clone(), "public_url"),
        None => {
            let url = PublicUrl {
                https: serves_on.https,
                host: config.base_domain.clone(),
                port: serves_on.port,
            };
            (url, serves_on.why)
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

#[cfg(test)]
mod tests {
    use super::*;

    const TRAEFIK: ServesOn = ServesOn {
        https: false,
        port: None,
        why: "Traefik's entry point",
    };

    #[test]
    fn urls_follow_the_router_unless_public_url_is_set() {
        let mut config = Config::default();
        let mut notes = Vec::new();
        let url = public_url(&config, TRAEFIK, &mut notes);
        assert_eq!(url.to_string(), "http://localhost");
        assert_eq!(
            notes,
            ["urls: http://<service>.<project>.localhost (Traefik's entry point)"]
        );

        config.public_url = Some(PublicUrl::parse("https://localhost:8443").unwrap());
        let mut notes = Vec::new();
        let url = public_url(&config, TRAEFIK, &mut notes);
        assert_eq!((url.https, url.port), (true, Some(8443)));
        assert_eq!(
            notes,
            ["urls: https://<service>.<project>.localhost:8443 (public_url)"]
        );
    }

    #[tokio::test]
    async fn traefik_urls_do_not_take_proxy_listens_port() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            traefik_dir: Some(dir.path().join("dynamic")),
            ..Config::default()
        };
        assert_eq!(config.proxy_listen.port(), 8080);
        let mut notes = Vec::new();
        let routing = traefik_router(&config, &mut notes).await.unwrap();
        let url = public_url(&config, routing.serves_on, &mut notes);
        assert_eq!(url.to_string(), "http://localhost");
        assert!(notes[1].contains("set public_url"), "{notes:?}");
    }

    #[tokio::test]
    async fn the_builtin_proxy_announces_the_port_it_listens_on() {
        let config = Config {
            proxy_listen: ([127, 0, 0, 1], 0).into(),
            ..Config::default()
        };
        let mut notes = Vec::new();
        let routing = builtin_router(&config, &mut notes).await.unwrap();
        let bound = routing.proxy.as_ref().unwrap().local_addr().port();
        let url = public_url(&config, routing.serves_on, &mut notes);
        assert_eq!(url.port, Some(bound));
    }
}
