//! Server configuration: built-in defaults, then a TOML file, then `WHARF_*`
//! environment variables, each bad setting reported by name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use super::public_url::PublicUrl;

mod file;

/// Which runtime and builder run the apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeChoice {
    /// Docker when an engine answers, else host processes.
    Auto,
    /// The Docker engine (fails at start-up if none answers).
    Docker,
    /// Host processes: the build plan's commands run on this machine.
    Process,
}

/// Which accounts host-process builds and apps run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostUsersChoice {
    /// `project` when `wharf serve` runs as root, else `server`.
    Auto,
    /// Each project as a uid of its own from `host_uids` (needs root).
    Project,
    /// The server's own account: any app can read the server's data. For one team's
    /// machine only.
    Server,
}

/// Which reverse proxy routes hostnames to the apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouterChoice {
    /// Caddy or Traefik when configured, else the built-in proxy.
    Auto,
    /// The built-in proxy on `proxy_listen`.
    Builtin,
    /// Caddy through its admin API at `caddy_admin`.
    Caddy,
    /// Traefik through a file-provider folder `traefik_dir`.
    Traefik,
}

/// Which certificates apps get (through Caddy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsChoice {
    /// Plain HTTP only.
    None,
    /// Certificates from an ACME CA (Let's Encrypt) for each route's hosts.
    Acme,
    /// Certificates from Caddy's internal CA (private networks, tests).
    Internal,
    /// Certificates issued at the first TLS handshake, for hosts Wharf routes (Caddy
    /// asks Wharf before issuing), from `tls_issuer`.
    OnDemand,
}

/// Every setting of `wharf serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the HTTP API (`listen`, `WHARF_LISTEN`).
    pub listen: SocketAddr,
    /// Folder holding the SQLite database, uploads, builds and tokens (`data_dir`,
    /// `WHARF_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Apps are served at `<service>.<project>.<base_domain>` (`base_domain`,
    /// `WHARF_BASE_DOMAIN`).
    pub base_domain: String,
    /// The scheme and port of apps' URLs, with the base domain as host (`public_url`,
    /// `WHARF_PUBLIC_URL`); when unset, what the chosen router serves on.
    pub public_url: Option<PublicUrl>,
    /// Runtime (`runtime`, `WHARF_RUNTIME`).
    pub runtime: RuntimeChoice,
    /// Router (`router`, `WHARF_ROUTER`).
    pub router: RouterChoice,
    /// Address of the built-in proxy (`proxy_listen`, `WHARF_PROXY_LISTEN`).
    pub proxy_listen: SocketAddr,
    /// Caddy's admin API (`caddy_admin`, `WHARF_CADDY_ADMIN`).
    pub caddy_admin: Option<String>,
    /// A Caddy program for `wharf serve` to start and manage itself when no
    /// `caddy_admin` is given (`caddy_bin`, `WHARF_CADDY_BIN`).
    pub caddy_bin: Option<PathBuf>,
    /// Caddy's HTTPS address for apps (`https_listen`, `WHARF_HTTPS_LISTEN`); needed
    /// when `tls` is not `none`.
    pub https_listen: Option<SocketAddr>,
    /// Certificates for apps (`tls`, `WHARF_TLS`): none, acme, internal or on_demand.
    pub tls: TlsChoice,
    /// Who issues on-demand certificates (`tls_issuer`, `WHARF_TLS_ISSUER`): acme or
    /// internal.
    pub tls_internal_issuer: bool,
    /// The ACME account email (`acme_email`, `WHARF_ACME_EMAIL`).
    pub acme_email: Option<String>,
    /// Traefik's file-provider folder (`traefik_dir`, `WHARF_TRAEFIK_DIR`).
    pub traefik_dir: Option<PathBuf>,
    /// Builds running at once (`max_concurrent_builds`, `WHARF_MAX_CONCURRENT_BUILDS`).
    pub max_concurrent_builds: usize,
    /// The longest a build may run (`build_timeout_minutes`, default 30).
    pub build_timeout: std::time::Duration,
    /// The operator's token (`admin_token`, `WHARF_ADMIN_TOKEN`); generated into
    /// `data_dir/admin-token` when unset.
    pub admin_token: Option<String>,
    /// Base images: `production=local` pairs (`base_images`, `WHARF_BASE_IMAGES`).
    pub base_images: Option<String>,
    /// Managed databases' images: `production=local` pairs mapping the engines'
    /// images (`postgres:15`, `mariadb:10.11`, `redis:7`) to ones the engine has
    /// (`database_images`, `WHARF_DATABASE_IMAGES`; `local` maps each to the
    /// `wharf-local/...` image `scripts/base-images` builds).
    pub database_images: Option<String>,
    /// The key sealing secrets at rest: 64 hex characters (`secret_key`,
    /// `WHARF_SECRET_KEY`); generated into `data_dir/secret-key` when unset.
    pub secret_key: Option<[u8; 32]>,
    /// The secret GitHub and GitLab webhooks are signed with (`webhook_secret`,
    /// `WHARF_WEBHOOK_SECRET`); webhooks are refused while it is unset.
    pub webhook_secret: Option<String>,
    /// Where custom domains are checked (`dns_server`, `WHARF_DNS_SERVER`): `IP:PORT`
    /// of a DNS server, `system` (the first nameserver of /etc/resolv.conf, the
    /// default) or `off` (every domain is taken as proven: only for closed setups).
    pub dns_server: DnsServer,
    /// Which accounts host-process builds and apps run as (`host_users`,
    /// `WHARF_HOST_USERS`): auto, project or server.
    pub host_users: HostUsersChoice,
    /// The uids given to projects, `FIRST:COUNT` (`host_uids`, `WHARF_HOST_UIDS`).
    pub host_uids: (u32, u32),
    /// The S3-compatible endpoints owners may send backups to, comma-separated origins
    /// (`backup_endpoints`, `WHARF_BACKUP_ENDPOINTS`); unset: AWS S3 only.
    pub backup_endpoints: wharf_backup::AllowedEndpoints,
}

/// Where custom domains are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsServer {
    /// The first nameserver of /etc/resolv.conf.
    System,
    /// This server.
    At(SocketAddr),
    /// No checks: every domain is taken as proven.
    Off,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: ([127, 0, 0, 1], 7070).into(),
            data_dir: PathBuf::from("wharf-data"),
            base_domain: "localhost".into(),
            public_url: None,
            runtime: RuntimeChoice::Auto,
            router: RouterChoice::Auto,
            proxy_listen: ([127, 0, 0, 1], 8080).into(),
            caddy_admin: None,
            caddy_bin: None,
            https_listen: None,
            tls: TlsChoice::None,
            tls_internal_issuer: false,
            acme_email: None,
            traefik_dir: None,
            max_concurrent_builds: 2,
            build_timeout: std::time::Duration::from_secs(30 * 60),
            admin_token: None,
            base_images: None,
            database_images: None,
            secret_key: None,
            webhook_secret: None,
            dns_server: DnsServer::System,
            host_users: HostUsersChoice::Auto,
            host_uids: (
                wharf_core::process::DEFAULT_FIRST_UID,
                wharf_core::process::DEFAULT_UID_COUNT,
            ),
            backup_endpoints: Default::default(),
        }
    }
}

/// A setting that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad(setting: &str, value: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("bad setting {setting} = {value:?}: {why}"))
}

fn addr(setting: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|e| {
        bad(
            setting,
            v,
            format!("{e} (expected IP:PORT, e.g. 127.0.0.1:7070)"),
        )
    })
}

fn choice<T: for<'de> Deserialize<'de>>(
    setting: &str,
    v: &str,
    allowed: &str,
) -> Result<T, ConfigError> {
    serde_json::from_value(serde_json::Value::String(v.to_ascii_lowercase()))
        .map_err(|_| bad(setting, v, format!("expected one of {allowed}")))
}

impl Config {
    /// Loads the defaults, then `file` (if given), then the environment `env`
    /// (`WHARF_*` names; pass `std::env::vars()`).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        let mut base_domain_set = false;
        if let Some(path) = file {
            for (k, v) in file::settings(path)? {
                base_domain_set |= k == "base_domain";
                c.set(k, &v)?;
            }
        }
        for (k, v) in env {
            if let Some(name) = k.strip_prefix("WHARF_") {
                let key = name.to_ascii_lowercase();
                if Self::KEYS.contains(&key.as_str()) {
                    base_domain_set |= key == "base_domain";
                    c.set(&key, &v)
                        .map_err(|e| ConfigError(format!("{e} (from {k})")))?;
                }
            }
        }
        c.agree_on_base_domain(base_domain_set)?;
        Ok(c)
    }

    /// `public_url`'s host is the base domain: it sets one left unset, and must equal
    /// one that is set.
    fn agree_on_base_domain(&mut self, base_domain_set: bool) -> Result<(), ConfigError> {
        let Some(url) = &self.public_url else {
            return Ok(());
        };
        if !base_domain_set {
            self.base_domain = url.host.clone();
        } else if url.host != self.base_domain {
            return Err(ConfigError(format!(
                "bad settings: public_url {url} has host {:?} but base_domain is {:?}; apps \
                 are served at <service>.<project>.<base_domain>, so the two must agree \
                 (or leave base_domain unset)",
                url.host, self.base_domain
            )));
        }
        Ok(())
    }

    /// The settings' names (file keys; environment variables are `WHARF_` + upper case).
    pub const KEYS: [&'static str; 25] = [
        "listen",
        "data_dir",
        "base_domain",
        "public_url",
        "runtime",
        "router",
        "proxy_listen",
        "caddy_admin",
        "caddy_bin",
        "https_listen",
        "tls",
        "tls_issuer",
        "acme_email",
        "traefik_dir",
        "max_concurrent_builds",
        "build_timeout_minutes",
        "admin_token",
        "base_images",
        "database_images",
        "secret_key",
        "webhook_secret",
        "dns_server",
        "host_users",
        "host_uids",
        "backup_endpoints",
    ];

    /// Applies one setting, checked.
    fn set(&mut self, key: &str, v: &str) -> Result<(), ConfigError> {
        match key {
            "listen" => self.listen = addr(key, v)?,
            "data_dir" => {
                if v.is_empty() {
                    return Err(bad(key, v, "must not be empty"));
                }
                self.data_dir = PathBuf::from(v)
            }
            "base_domain" => {
                wharf_core::validate_hostname(v).map_err(|e| bad(key, v, e))?;
                self.base_domain = v.to_ascii_lowercase();
            }
            "runtime" => self.runtime = choice(key, v, "auto, docker, process")?,
            "host_users" => self.host_users = choice(key, v, "auto, project, server")?,
            "host_uids" => {
                let range = v
                    .split_once(':')
                    .and_then(|(a, b)| {
                        Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?))
                    })
                    .filter(|&(first, count)| {
                        first >= 65_536
                            && count >= 1
                            && first.checked_add(count).is_some_and(|e| e < u32::MAX)
                    });
                self.host_uids = range.ok_or_else(|| {
                    bad(key, v, "expected FIRST:COUNT, FIRST at least 65536 (above the accounts of people and services)")
                })?;
            }
            "max_concurrent_builds" => {
                self.max_concurrent_builds = match v.parse::<usize>() {
                    Ok(n) if n >= 1 => n,
                    _ => return Err(bad(key, v, "expected a whole number of at least 1")),
                }
            }
            "build_timeout_minutes" => {
                self.build_timeout = match v.parse::<u64>() {
                    Ok(n) if (1..=24 * 60).contains(&n) => std::time::Duration::from_secs(n * 60),
                    _ => return Err(bad(key, v, "expected minutes, from 1 to 1440")),
                }
            }
            "backup_endpoints" => {
                self.backup_endpoints =
                    wharf_backup::AllowedEndpoints::parse(v).map_err(|e| bad(key, v, e))?;
            }
            "base_images" => {
                wharf_core::detect::ImageMap::parse(v).map_err(|e| bad(key, v, e))?;
                self.base_images = Some(v.to_owned());
            }
            "database_images" => {
                if v != "local" {
                    wharf_core::detect::ImageMap::parse(v).map_err(|e| bad(key, v, e))?;
                }
                self.database_images = Some(v.to_owned());
            }
            "dns_server" => {
                self.dns_server = match v.to_ascii_lowercase().as_str() {
                    "system" => DnsServer::System,
                    "off" => DnsServer::Off,
                    _ => DnsServer::At(v.parse().map_err(|e| {
                        bad(
                            key,
                            v,
                            format!("{e} (expected IP:PORT of a DNS server, system or off)"),
                        )
                    })?),
                }
            }
            _ => return self.set_routing(key, v),
        }
        Ok(())
    }

    /// The router's settings and how apps are reached.
    fn set_routing(&mut self, key: &str, v: &str) -> Result<(), ConfigError> {
        match key {
            "public_url" => {
                self.public_url = Some(PublicUrl::parse(v).map_err(|e| bad(key, v, e))?)
            }
            "router" => self.router = choice(key, v, "auto, builtin, caddy, traefik")?,
            "proxy_listen" => self.proxy_listen = addr(key, v)?,
            "caddy_admin" => {
                let socket = v.strip_prefix("unix://");
                if socket.is_some_and(|p| !p.starts_with('/')) {
                    return Err(bad(key, v, "expected unix:// and an absolute socket path"));
                }
                if socket.is_none() && !v.starts_with("http://") && !v.starts_with("https://") {
                    return Err(bad(
                        key,
                        v,
                        "expected an http:// or https:// URL, or unix:///path/to/admin.sock",
                    ));
                }
                self.caddy_admin = Some(v.trim_end_matches('/').to_owned());
            }
            "caddy_bin" => {
                if v.is_empty() {
                    return Err(bad(key, v, "must not be empty"));
                }
                self.caddy_bin = Some(PathBuf::from(v))
            }
            "traefik_dir" => self.traefik_dir = Some(PathBuf::from(v)),
            "https_listen" => self.https_listen = Some(addr(key, v)?),
            "tls" => self.tls = choice(key, v, "none, acme, internal, on_demand")?,
            "tls_issuer" => {
                self.tls_internal_issuer = match v.to_ascii_lowercase().as_str() {
                    "acme" => false,
                    "internal" => true,
                    _ => return Err(bad(key, v, "expected one of acme, internal")),
                }
            }
            "acme_email" => {
                if !v.contains('@') || v.chars().any(|c| c.is_whitespace() || c == '"') {
                    return Err(bad(key, v, "expected an email address"));
                }
                self.acme_email = Some(v.to_owned())
            }
            _ => return self.set_secret(key, v),
        }
        Ok(())
    }

    /// Tokens and keys: their values are never echoed in errors.
    fn set_secret(&mut self, key: &str, v: &str) -> Result<(), ConfigError> {
        match key {
            "admin_token" => {
                if v.len() < 16 {
                    return Err(ConfigError(format!(
                        "bad setting {key}: a token must be at least 16 characters"
                    )));
                }
                self.admin_token = Some(v.to_owned());
            }
            "secret_key" => {
                // Never echo the value: it is a secret.
                let k = wharf_core::store::SealedStore::parse_key(v)
                    .map_err(|e| ConfigError(format!("bad setting {key}: {}", e.message())))?;
                self.secret_key = Some(k);
            }
            "webhook_secret" => {
                if v.len() < 16 {
                    return Err(ConfigError(format!(
                        "bad setting {key}: a webhook secret must be at least 16 characters"
                    )));
                }
                self.webhook_secret = Some(v.to_owned());
            }
            _ => return Err(ConfigError(format!("unknown setting {key}"))),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_listen_on_loopback() {
        let c = Config::load(None, env(&[])).unwrap();
        assert!(c.listen.ip().is_loopback());
        assert!(c.proxy_listen.ip().is_loopback());
        assert_eq!(c.runtime, RuntimeChoice::Auto);
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("wharf.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:9000\"\nbase_domain = \"apps.example.com\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&f), env(&[("WHARF_LISTEN", "127.0.0.1:9001")])).unwrap();
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.base_domain, "apps.example.com");
    }

    #[test]
    fn each_bad_setting_is_named() {
        for (k, v, needle) in [
            ("WHARF_LISTEN", "localhost", "listen"),
            ("WHARF_RUNTIME", "podman", "runtime"),
            ("WHARF_BASE_DOMAIN", "bad domain", "base_domain"),
            ("WHARF_MAX_CONCURRENT_BUILDS", "0", "max_concurrent_builds"),
            ("WHARF_BUILD_TIMEOUT_MINUTES", "0", "build_timeout_minutes"),
            ("WHARF_CADDY_ADMIN", "127.0.0.1:2019", "caddy_admin"),
            ("WHARF_CADDY_ADMIN", "unix://run/caddy.sock", "caddy_admin"),
            ("WHARF_ADMIN_TOKEN", "short", "admin_token"),
            ("WHARF_SECRET_KEY", "0123", "secret_key"),
            ("WHARF_PUBLIC_URL", "localhost:20280", "public_url"),
            ("WHARF_PUBLIC_URL", "http://apps.test/x", "public_url"),
            ("WHARF_HOST_USERS", "nobody", "host_users"),
            ("WHARF_HOST_UIDS", "1000:10", "host_uids"),
            ("WHARF_HOST_UIDS", "4294967000:1000", "host_uids"),
            ("WHARF_HOST_UIDS", "100000", "host_uids"),
            (
                "WHARF_BACKUP_ENDPOINTS",
                "http://s3.internal/bucket",
                "backup_endpoints",
            ),
        ] {
            let e = Config::load(None, env(&[(k, v)])).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains(k), "{k}: {e}");
        }
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("wharf.toml");
        std::fs::write(&f, "lsiten = \"127.0.0.1:9000\"\n").unwrap();
        let e = Config::load(Some(&f), env(&[])).unwrap_err().to_string();
        assert!(e.contains("lsiten"), "{e}");
    }

    #[test]
    fn public_url_is_read_from_the_file_and_the_environment() {
        let c = Config::load(None, env(&[("WHARF_PUBLIC_URL", "http://localhost:20280")])).unwrap();
        let url = c.public_url.unwrap();
        assert_eq!((url.https, url.port), (false, Some(20280)));
        assert_eq!(c.base_domain, "localhost");

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("wharf.toml");
        std::fs::write(&f, "public_url = \"https://apps.example.com\"\n").unwrap();
        let c = Config::load(Some(&f), env(&[])).unwrap();
        assert_eq!(
            c.public_url.unwrap().to_string(),
            "https://apps.example.com"
        );
        // Its host is the base domain when base_domain is not set.
        assert_eq!(c.base_domain, "apps.example.com");
        assert_eq!(Config::load(None, env(&[])).unwrap().public_url, None);
    }

    #[test]
    fn public_url_and_base_domain_must_agree() {
        let c = Config::load(
            None,
            env(&[
                ("WHARF_BASE_DOMAIN", "apps.example.com"),
                ("WHARF_PUBLIC_URL", "https://apps.example.com:8443"),
            ]),
        )
        .unwrap();
        assert_eq!(c.base_domain, "apps.example.com");
        let e = Config::load(
            None,
            env(&[
                ("WHARF_BASE_DOMAIN", "apps.example.com"),
                ("WHARF_PUBLIC_URL", "https://example.org"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("public_url") && e.contains("base_domain"), "{e}");
    }
}
