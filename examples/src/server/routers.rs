//! The three routers `wharf serve` can use, each set up with what comes with it (a
//! managed Caddy, the built-in proxy's server) and where it serves apps, which is what
//! apps' URLs default to.

use std::sync::Arc;

use wharf_core::proxy::{ProxyRouter, ProxyServer};
use wharf_core::DynRouter;

use super::config::{Config, ConfigError, RouterChoice, TlsChoice};
use super::error::ServeError;
use super::managed_caddy::ManagedCaddy;

/// The router chosen and what comes with it.
pub(super) struct Routing {
    pub(super) router: DynRouter,
    /// The built-in proxy's router (the host runtime drains through it).
    pub(super) builtin: Option<ProxyRouter>,
    pub(super) proxy: Option<ProxyServer>,
    pub(super) caddy: Option<wharf_caddy::CaddyRouter>,
    pub(super) managed: Option<ManagedCaddy>,
    pub(super) serves_on: ServesOn,
    /// How long the router may take to apply a route change (see
    /// [`wharf_core::EngineConfig::route_settle`]).
    pub(super) route_settle: std::time::Duration,
}

/// Where a router serves apps, and how Wharf knows.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServesOn {
    pub(super) https: bool,
    /// `None`: the scheme's default port.
    pub(super) port: Option<u16>,
    pub(super) why: &'static str,
}

impl Routing {
    pub(super) fn new(router: DynRouter, serves_on: ServesOn) -> Routing {
        Routing {
            router,
            builtin: None,
            proxy: None,
            caddy: None,
            managed: None,
            serves_on,
            route_settle: std::time::Duration::ZERO,
        }
    }
}

/// `None` for port 80, which URLs leave out.
fn port_of(listen: std::net::SocketAddr) -> Option<u16> {
    Some(listen.port()).filter(|p| *p != 80)
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

/// Caddy through its admin API (`caddy_admin`, or one started from `caddy_bin`),
/// with Wharf's server block set up.
pub(super) async fn caddy_router(
    config: &Config,
    notes: &mut Vec<String>,
) -> Result<Routing, ServeError> {
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
        Some(a) => ServesOn {
            https: true,
            port: Some(a.port()).filter(|p| *p != 443),
            why: "where Caddy serves Wharf's routes over HTTPS: https_listen",
        },
        None => caddy_http(config, caddy_listen(r.options()).await, notes),
    };
    let mut routing = Routing::new(Arc::new(r.clone()), serves_on);
    routing.caddy = Some(r);
    routing.managed = managed;
    Ok(routing)
}

/// The addresses Wharf's server block listens on as Caddy has them now; `None` when
/// Caddy does not say.
async fn caddy_listen(opts: &wharf_caddy::CaddyOptions) -> Option<Vec<String>> {
    let url = format!(
        "{}/config/apps/http/servers/{}/listen",
        opts.admin_url, opts.server
    );
    reqwest::get(url).await.ok()?.json().await.ok()
}

/// Where Caddy serves Wharf's routes over HTTP: `proxy_listen`, unless Wharf's server
/// block predates this start and listens elsewhere (bootstrap leaves an existing block
/// alone), in which case its first address says.
fn caddy_http(config: &Config, listen: Option<Vec<String>>, notes: &mut Vec<String>) -> ServesOn {
    let configured = config.proxy_listen.to_string();
    let elsewhere = listen.filter(|l| !l.contains(&configured)).and_then(|l| {
        let port = l.first()?.rsplit_once(':')?.1.parse::<u16>().ok()?;
        Some((l, port))
    });
    match elsewhere {
        Some((l, port)) => {
            notes.push(format!(
                "caddy: Wharf's server block listens on {}, not on proxy_listen {configured} \
                 (an earlier start made it)",
                l.join(", ")
            ));
            ServesOn {
                https: false,
                port: Some(port).filter(|p| *p != 80),
                why: "where Caddy's server block for Wharf listens",
            }
        }
        None => ServesOn {
            https: false,
            port: port_of(config.proxy_listen),
            why: "where Caddy serves Wharf's routes: proxy_listen",
        },
    }
}

/// Traefik through the file provider: Wharf writes `traefik_dir/wharf.yaml`.
pub(super) async fn traefik_router(
    config: &Config,
    notes: &mut Vec<String>,
) -> Result<Routing, ServeError> {
    let dir = config.traefik_dir.clone().ok_or_else(|| {
        ConfigError("router traefik needs traefik_dir (WHARF_TRAEFIK_DIR)".into())
    })?;
    if !dir.exists() {
        std::fs::create_dir_all(&dir).map_err(ServeError::io("create traefik_dir", &dir))?;
        // Traefik may run as another user (the server's umask is 077).
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(ServeError::io("set the permissions of", &dir))?;
    }
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
    let serves_on = ServesOn {
        https: false,
        port: None,
        why: "Traefik's entry point `web` is taken to be on port 80: Wharf cannot read \
              Traefik's static configuration; set public_url (WHARF_PUBLIC_URL) if it \
              listens elsewhere",
    };
    let mut routing = Routing::new(Arc::new(r), serves_on);
    // Traefik applies a changed file a moment later (~60 ms), or up to its
    // `providersThrottleDuration` (2 s by default) after its previous reload: old
    // instances stop only once it surely routes around them.
    routing.route_settle = TRAEFIK_SETTLE;
    Ok(routing)
}

/// How long Traefik's file provider may take to apply a change: its default
/// `providersThrottleDuration` (2 s) and a margin.
const TRAEFIK_SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

/// The built-in proxy, listening on `proxy_listen` from now on.
pub(super) async fn builtin_router(
    config: &Config,
    notes: &mut Vec<String>,
) -> Result<Routing, ServeError> {
    let r = ProxyRouter::new();
    let listener = super::listen("proxy_listen: the built-in proxy", config.proxy_listen).await?;
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
    let serves_on = ServesOn {
        https: false,
        port: Some(port),
        why: "where the built-in proxy listens: proxy_listen",
    };
    let mut routing = Routing::new(Arc::new(r.clone()), serves_on);
    routing.proxy = Some(server);
    routing.builtin = Some(r);
    Ok(routing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caddy_urls_take_the_port_its_server_block_listens_on() {
        let config = Config {
            proxy_listen: ([127, 0, 0, 1], 20180).into(),
            ..Config::default()
        };
        let mut notes = Vec::new();
        let same = Some(vec!["127.0.0.1:20180".to_owned()]);
        assert_eq!(caddy_http(&config, same, &mut notes).port, Some(20180));
        assert_eq!(caddy_http(&config, None, &mut notes).port, Some(20180));
        assert!(notes.is_empty(), "{notes:?}");
        let other = Some(vec![":8081".to_owned(), ":8443".to_owned()]);
        assert_eq!(caddy_http(&config, other, &mut notes).port, Some(8081));
        assert!(notes[0].contains(":8081, :8443"), "{notes:?}");
    }
}
