//! The configuration file's shape: the same keys as the settings, every one optional,
//! unknown keys refused.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// The file's shape: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    base_domain: Option<String>,
    public_url: Option<String>,
    runtime: Option<String>,
    router: Option<String>,
    proxy_listen: Option<String>,
    caddy_admin: Option<String>,
    caddy_bin: Option<PathBuf>,
    https_listen: Option<String>,
    tls: Option<String>,
    tls_issuer: Option<String>,
    acme_email: Option<String>,
    traefik_dir: Option<PathBuf>,
    max_concurrent_builds: Option<usize>,
    build_timeout_minutes: Option<u64>,
    admin_token: Option<String>,
    base_images: Option<String>,
    database_images: Option<String>,
    secret_key: Option<String>,
    webhook_secret: Option<String>,
    dns_server: Option<String>,
    host_users: Option<String>,
    host_uids: Option<String>,
    backup_endpoints: Option<String>,
}

/// The settings a file gives, as (key, value) pairs in the order they are applied.
pub(super) fn settings(path: &Path) -> Result<Vec<(&'static str, String)>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    let f: FileConfig = toml::from_str(&text)
        .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?;
    let path_text = |p: Option<PathBuf>| p.map(|p| p.to_string_lossy().into_owned());
    let pairs = [
        ("listen", f.listen),
        ("base_domain", f.base_domain),
        ("public_url", f.public_url),
        ("runtime", f.runtime),
        ("router", f.router),
        ("proxy_listen", f.proxy_listen),
        ("caddy_admin", f.caddy_admin),
        ("https_listen", f.https_listen),
        ("tls", f.tls),
        ("tls_issuer", f.tls_issuer),
        ("acme_email", f.acme_email),
        ("caddy_bin", path_text(f.caddy_bin)),
        ("admin_token", f.admin_token),
        ("base_images", f.base_images),
        ("database_images", f.database_images),
        ("secret_key", f.secret_key),
        ("webhook_secret", f.webhook_secret),
        ("dns_server", f.dns_server),
        ("host_users", f.host_users),
        ("host_uids", f.host_uids),
        ("backup_endpoints", f.backup_endpoints),
        (
            "max_concurrent_builds",
            f.max_concurrent_builds.map(|n| n.to_string()),
        ),
        (
            "build_timeout_minutes",
            f.build_timeout_minutes.map(|n| n.to_string()),
        ),
        ("data_dir", path_text(f.data_dir)),
        ("traefik_dir", path_text(f.traefik_dir)),
    ];
    Ok(pairs
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect())
}
