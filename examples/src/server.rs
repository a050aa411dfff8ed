//! `wharf serve`: opens the data folder, the sealed store and the backends, recovers
//! interrupted deployments and serves the API and dashboard until Ctrl-C.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::sync::Arc;

use crate::client::CliError;
use crate::{api, auth, backends, config};

/// Runs the control plane on `cfg` until Ctrl-C or SIGTERM; a Caddy it started is
/// stopped with it.
pub async fn serve(mut cfg: config::Config) -> Result<(), CliError> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| format!("cannot create data_dir {}: {e}", cfg.data_dir.display()))?;
    // Release folders and uploads are recorded by path: make it absolute, so records
    // stay valid whatever the working directory of a later start.
    cfg.data_dir = std::fs::canonicalize(&cfg.data_dir)
        .map_err(|e| format!("cannot resolve data_dir {}: {e}", cfg.data_dir.display()))?;
    let tokens = Arc::new(auth::Tokens::load(&cfg.data_dir)?);
    match &cfg.admin_token {
        Some(t) => tokens.add("operator", t, true, BTreeMap::new())?,
        None => {
            let path = cfg.data_dir.join("admin-token");
            if !path.exists() {
                let t = auth::generate();
                std::fs::write(&path, format!("{t}\n"))?;
                auth::restrict(&path)?;
                tracing::info!(path = %path.display(), "created the operator token");
            }
            let t = std::fs::read_to_string(&path)?;
            tokens.add("operator", t.trim(), true, BTreeMap::new())?;
        }
    }
    let key = match cfg.secret_key {
        Some(k) => k,
        None => {
            let path = cfg.data_dir.join("secret-key");
            if !path.exists() {
                let hex: String = (0..2)
                    .map(|_| uuid::Uuid::new_v4().simple().to_string())
                    .collect::<String>();
                // Two v4 UUIDs hold 244 random bits; hash them into a uniform key.
                let digest = <sha2::Sha256 as sha2::Digest>::digest(hex.as_bytes());
                let key = auth::hex(&digest);
                std::fs::write(&path, format!("{key}\n"))?;
                auth::restrict(&path)?;
                eprintln!(
                    "wharf: generated a secret key in {}; set WHARF_SECRET_KEY and remove the \
                     file to keep the key away from the database",
                    path.display()
                );
            }
            wharf_core::store::SealedStore::parse_key(&std::fs::read_to_string(&path)?)?
        }
    };
    let sqlite = Arc::new(wharf_core::store::SqliteStore::open(
        cfg.data_dir.join("wharf.db"),
    )?);
    let store: wharf_core::DynStore = Arc::new(wharf_core::store::SealedStore::new(sqlite, &key));
    let backends = backends::select(&cfg).await?;
    let builder = wharf_core::Engine::builder()
        .store(store.clone())
        .builder(backends.builder)
        .runtime(backends.runtime)
        .router(backends.router)
        .work_dir(cfg.data_dir.join("work"))
        .base_domain(cfg.base_domain.clone())
        .tls(backends.tls.clone())
        .max_concurrent_builds(cfg.max_concurrent_builds);
    let engine = builder.build()?;
    let report = engine.recover().await?;
    tracing::info!(?report, "recovered");

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let check = match cfg.dns_server {
        config::DnsServer::Off => {
            tracing::warn!("dns_server = off: custom domains are routed without a DNS check");
            crate::domains::Check::Off
        }
        config::DnsServer::At(a) => crate::domains::Check::Dns(a),
        config::DnsServer::System => match crate::dns::system_server() {
            Some(a) => crate::domains::Check::Dns(a),
            None => {
                tracing::warn!(
                    "no nameserver in /etc/resolv.conf: custom domains cannot be checked \
                     until dns_server (WHARF_DNS_SERVER) is set"
                );
                crate::domains::Check::Unavailable
            }
        },
    };
    let domains = Arc::new(crate::domains::Domains::load(&cfg.data_dir, check)?);
    let app = api::App {
        engine,
        store,
        tokens,
        data_dir: cfg.data_dir.clone(),
        proxy_port: backends.proxy_port,
        https: !matches!(backends.tls, wharf_core::TlsPolicy::None),
        webhook_secret: cfg.webhook_secret.clone().map(wharf_core::Secret::new),
        deliveries: Default::default(),
        domains,
    };
    println!("wharf {} serving", env!("CARGO_PKG_VERSION"));
    println!("  api:       http://{}/v1", listener.local_addr()?);
    println!("  dashboard: http://{}/", listener.local_addr()?);
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
    // On Ctrl-C or SIGTERM: stop accepting, let requests finish, but do not wait
    // more than 10 s for long-lived streams (a `wharf logs -f`, say).
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
        r = serving => r?,
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
