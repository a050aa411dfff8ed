//! `wharf serve`: opens the data folder, the sealed store and the backends, recovers
//! interrupted deployments and serves the API and dashboard until Ctrl-C.
//!
//! [`config`] reads the settings, [`backends`] picks the builder, runtime and router
//! (set up in `routers`, with a [`managed_caddy`] when asked), [`dns`] is the resolver custom-domain checks
//! use, and [`ServeError`] says why serving could not start.

use std::future::IntoFuture;
use std::path::Path;
use std::sync::Arc;

use crate::{api, auth, domains};

pub mod backends;
pub mod config;
pub mod dns;
mod error;
pub mod host_users;
pub mod managed_caddy;
mod public_url;
mod routers;

pub use error::ServeError;

/// Runs the control plane on `cfg` until Ctrl-C or SIGTERM; a Caddy it started is
/// stopped with it.
pub async fn serve(mut cfg: config::Config) -> Result<(), ServeError> {
    // Whatever the server writes is its own alone unless it says otherwise (apps may
    // run as other users of this machine).
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(ServeError::io("create data_dir", &cfg.data_dir))?;
    // Tokens, the secret key, the database, uploads: the server's account only.
    std::fs::set_permissions(
        &cfg.data_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .map_err(ServeError::io("restrict the permissions of", &cfg.data_dir))?;
    // Release folders and uploads are recorded by path: make it absolute, so records
    // stay valid whatever the working directory of a later start.
    cfg.data_dir = std::fs::canonicalize(&cfg.data_dir)
        .map_err(ServeError::io("resolve data_dir", &cfg.data_dir))?;
    let tokens = Arc::new(operator_tokens(&cfg)?);
    let key = match cfg.secret_key {
        Some(k) => k,
        None => secret_key_file(&cfg.data_dir)?,
    };
    let db = cfg.data_dir.join("wharf.db");
    let sqlite = wharf_core::store::SqliteStore::open(&db)
        .map_err(|source| ServeError::Store { path: db, source })?;
    let store: wharf_core::DynStore =
        Arc::new(wharf_core::store::SealedStore::new(Arc::new(sqlite), &key));
    let backends = backends::select(&cfg, has_services(&store).await?, &key).await?;
    let engine = wharf_core::Engine::builder()
        .store(store.clone())
        .builder(backends.builder)
        .runtime(backends.runtime)
        .router(backends.router)
        .work_dir(cfg.data_dir.join("work"))
        .base_domain(cfg.base_domain.clone())
        .tls(backends.tls.clone())
        // `${{ svc.URL }}` names what `wharf deploy` prints.
        .public_https(backends.public_url.https)
        .public_port(backends.public_url.port)
        .route_settle(backends.route_settle)
        .max_concurrent_builds(cfg.max_concurrent_builds)
        .build_timeout(cfg.build_timeout)
        .build()
        .map_err(ServeError::Engine)?;
    let report = engine.recover().await.map_err(ServeError::Engine)?;
    tracing::info!(?report, "recovered");
    // Backup records and settings in data_dir/backups.json; local destinations in
    // data_dir/backups/<project id>/ (see README "Backups").
    let backups = wharf_backup::Backups::open(
        engine.runtime().clone(),
        Some(cfg.data_dir.join("backups.json")),
        cfg.data_dir.join("backups"),
        cfg.data_dir.join("work").join("restores"),
        wharf_core::store::Sealer::new(&key),
    )
    .and_then(|b| b.allow_endpoints(cfg.backup_endpoints.clone()))
    .map_err(ServeError::Engine)?;
    let _scheduler = scheduled_backups(backups.clone(), store.clone());
    // Cron jobs of services with a live release, each run a task of that release,
    // recorded in the store (README "Cron jobs"). Runs a stop interrupted are failed
    // and their instances stopped first.
    let _cron = wharf_core::cron::CronScheduler::new(
        store.clone(),
        Arc::new(engine.clone()),
        wharf_core::cron::CronConfig::default(),
    )
    .spawn();
    // A web replica that is down (crashed and restarting, failing its probe) leaves
    // its route until it is healthy again.
    let _routes = engine.watch_routes(std::time::Duration::from_secs(2));

    let listener = listen("listen", cfg.listen).await?;
    let domains = domains::Domains::load(&cfg.data_dir, domain_check(&cfg))
        .map_err(ServeError::io("load the custom domains in", &cfg.data_dir))?;
    let metrics = api::metrics::Metrics::watching(&engine);
    let app = api::App {
        engine,
        store,
        tokens,
        data_dir: cfg.data_dir.clone(),
        proxy_port: backends.public_url.port,
        https: backends.public_url.https,
        webhook_secret: cfg.webhook_secret.clone().map(wharf_core::Secret::new),
        deliveries: Arc::new(
            api::webhooks::Deliveries::load(&cfg.data_dir)
                .map_err(ServeError::io("read", cfg.data_dir.join("deliveries.json")))?,
        ),
        domains: Arc::new(domains),
        isolated: backends.isolated,
        metrics,
        backups,
        database_images: database_images(&cfg)?,
    };
    let api_addr = listener.local_addr().map_err(ServeError::Serve)?;
    println!("wharf {} serving", env!("CARGO_PKG_VERSION"));
    println!("  api:       http://{api_addr}/v1");
    println!("  dashboard: http://{api_addr}/");
    println!("  data:      {}", cfg.data_dir.display());
    for n in &backends.notes {
        println!("  {n}");
    }
    let _proxy = backends.proxy;
    let _caddy = backends.managed_caddy;
    let mut routes = api::router(app);
    if let Some(caddy) = backends.caddy {
        // Caddy asks here before issuing an on-demand certificate.
        routes = routes.merge(wharf_caddy::on_demand_permission_app(caddy));
    }
    run_until_stopped(listener, routes).await
}

/// The token store, with the operator's token: `admin_token`, else the one in
/// `data_dir/admin-token` (generated at the first start).
/// A listener on `addr`, which `setting` configures (named when it cannot be bound).
async fn listen(
    setting: &'static str,
    addr: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen {
            setting,
            addr,
            source,
        })
}

fn operator_tokens(cfg: &config::Config) -> Result<auth::Tokens, ServeError> {
    let tokens = auth::Tokens::load(&cfg.data_dir)
        .map_err(ServeError::io("read", cfg.data_dir.join("tokens.json")))?;
    let save = ServeError::io("write", cfg.data_dir.join("tokens.json"));
    // The operator token of this start replaces any earlier one: rotating it (a new
    // admin_token, or a new admin-token file) revokes the old.
    match &cfg.admin_token {
        Some(t) => tokens.set_operator(t).map_err(save)?,
        None => {
            let path = cfg.data_dir.join("admin-token");
            if !path.exists() {
                write_private(&path, &auth::generate())?;
                tracing::info!(path = %path.display(), "created the operator token");
            }
            let t = std::fs::read_to_string(&path).map_err(ServeError::io("read", &path))?;
            tokens.set_operator(t.trim()).map_err(save)?;
        }
    }
    Ok(tokens)
}

/// The key in `data_dir/secret-key`, generated at the first start.
fn secret_key_file(data_dir: &Path) -> Result<[u8; 32], ServeError> {
    let path = data_dir.join("secret-key");
    if !path.exists() {
        let hex: String = (0..2)
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect::<String>();
        // Two v4 UUIDs hold 244 random bits; hash them into a uniform key.
        let digest = <sha2::Sha256 as sha2::Digest>::digest(hex.as_bytes());
        write_private(&path, &auth::hex(&digest))?;
        eprintln!(
            "wharf: generated a secret key in {}; set WHARF_SECRET_KEY and remove the \
             file to keep the key away from the database",
            path.display()
        );
    }
    let text = std::fs::read_to_string(&path).map_err(ServeError::io("read", &path))?;
    wharf_core::store::SealedStore::parse_key(&text)
        .map_err(|source| ServeError::SecretKey { path, source })
}

/// Writes `value` and a newline to `path`, readable by its owner only from the moment
/// it exists.
fn write_private(path: &Path, value: &str) -> Result<(), ServeError> {
    auth::write_private(path, format!("{value}\n").as_bytes())
        .map_err(ServeError::io("write", path))
}

/// Runs scheduled backups (checked once a minute) of the project's own volumes.
fn scheduled_backups(
    backups: wharf_backup::Backups,
    store: wharf_core::DynStore,
) -> tokio::task::JoinHandle<()> {
    wharf_backup::spawn_scheduler(
        backups,
        std::time::Duration::from_secs(60),
        move |project_id, key| {
            let store = store.clone();
            async move { scheduled_volume(&store, project_id, &key).await }
        },
    )
}

/// The volume a schedule's policy key names (`data` or `staging/data`) in a project,
/// with the project's name; `None` when the project or environment is gone.
async fn scheduled_volume(
    store: &wharf_core::DynStore,
    project_id: String,
    key: &str,
) -> Option<(String, wharf_core::VolumeRef)> {
    let project = store
        .project(&wharf_core::ProjectId(project_id))
        .await
        .ok()?;
    let (env, name) = wharf_backup::policy_key_parts(key).ok()?;
    let env = match env {
        Some(e) => Some(store.environment_by_name(&project.id, e).await.ok()?),
        None => None,
    };
    let v = api::backups::volume_ref(&project, env.as_ref(), name).ok()?;
    Some((project.name, v))
}

/// Whether any project of the store has a service.
async fn has_services(store: &wharf_core::DynStore) -> Result<bool, ServeError> {
    for p in store.projects().await.map_err(ServeError::Engine)? {
        if !store
            .services(&p.id)
            .await
            .map_err(ServeError::Engine)?
            .is_empty()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How custom domains are checked, from `dns_server`.
fn domain_check(cfg: &config::Config) -> domains::Check {
    match cfg.dns_server {
        config::DnsServer::Off => {
            tracing::warn!("dns_server = off: custom domains are routed without a DNS check");
            domains::Check::Off
        }
        config::DnsServer::At(a) => domains::Check::Dns(a),
        config::DnsServer::System => match dns::system_server() {
            Some(a) => domains::Check::Dns(a),
            None => {
                tracing::warn!(
                    "no nameserver in /etc/resolv.conf: custom domains cannot be checked \
                     until dns_server (WHARF_DNS_SERVER) is set"
                );
                domains::Check::Unavailable
            }
        },
    }
}

/// Serves `routes` until Ctrl-C or SIGTERM: then stops accepting, lets requests finish,
/// but does not wait more than 10 s for long-lived streams (a `wharf logs -f`, say).
async fn run_until_stopped(
    listener: tokio::net::TcpListener,
    routes: axum::Router,
) -> Result<(), ServeError> {
    let stop = Arc::new(tokio::sync::Notify::new());
    let serving = axum::serve(listener, routes)
        .with_graceful_shutdown({
            let stop = stop.clone();
            async move { stop.notified().await }
        })
        .into_future();
    let signalled = async {
        shutdown_signal().await;
        tracing::info!("shutting down");
        stop.notify_one();
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    };
    tokio::select! {
        r = serving => r.map_err(ServeError::Serve)?,
        _ = signalled => tracing::warn!("connections still open after 10 s; stopping anyway"),
    }
    Ok(())
}

/// Resolves at Ctrl-C, or SIGTERM from a service manager.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
    }
}

/// The managed databases' image map from `database_images` (`local`: the images
/// `scripts/base-images` builds; unset: the engines' production images as they are).
fn database_images(cfg: &config::Config) -> Result<wharf_core::detect::ImageMap, ServeError> {
    match cfg.database_images.as_deref() {
        None => Ok(wharf_core::detect::ImageMap::default()),
        Some("local") => Ok(wharf_core::database::local_images()),
        Some(m) => wharf_core::detect::ImageMap::parse(m).map_err(|e| {
            config::ConfigError(format!("bad setting database_images: {}", e.message())).into()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_core::{Environment, Project};

    #[tokio::test]
    async fn schedules_name_the_projects_and_its_environments_volumes() {
        let store: wharf_core::DynStore = Arc::new(wharf_core::store::MemoryStore::new());
        let project = Project::new("shop").unwrap();
        store.put_project(&project).await.unwrap();
        let staging = Environment {
            id: wharf_core::EnvironmentId::random(),
            project: project.id.clone(),
            name: "staging".into(),
            kind: wharf_core::EnvironmentKind::Standing,
            env: Default::default(),
            created_at: wharf_core::Timestamp::now(),
        };
        store.put_environment(&staging).await.unwrap();
        let id = project.id.to_string();
        let (name, own) = scheduled_volume(&store, id.clone(), "data").await.unwrap();
        assert_eq!(name, "shop");
        assert_eq!(own.scope.as_deref(), Some("wharf-shop"));
        let (_, env) = scheduled_volume(&store, id.clone(), "staging/data")
            .await
            .unwrap();
        assert_eq!(env.scope.as_deref(), Some("wharf-shop_staging"));
        assert_eq!(env.name, "data");
        // An environment since deleted, or a bad key: nothing to back up.
        assert!(scheduled_volume(&store, id.clone(), "gone/data")
            .await
            .is_none());
        assert!(scheduled_volume(&store, id, "a/b/c").await.is_none());
        assert!(scheduled_volume(&store, "prjnope".into(), "data")
            .await
            .is_none());
    }
}
