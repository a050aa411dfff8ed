//! Health probes of instances, shared by the runtimes.

use std::collections::BTreeMap;
use std::time::Duration;

use wharf_core::{InstanceStatus, Probe};

/// The label (Zun) or metadata key (Nova) holding the health probe
/// (`http:/path`, `tcp`, `none`), so `status` can probe without the spec.
pub const PROBE_LABEL: &str = "wharf.probe";

/// The probe as a label value.
pub(crate) fn probe_label(p: &Probe) -> String {
    match p {
        Probe::Tcp => "tcp".into(),
        Probe::None => "none".into(),
        Probe::Postgres => "postgres".into(),
        Probe::Mysql => "mysql".into(),
        Probe::Redis => "redis".into(),
        Probe::Http { path } => format!("http:{path}"),
    }
}

/// The probe from labels (HTTP on `/` when absent).
pub(crate) fn probe_of(labels: Option<&BTreeMap<String, String>>) -> Probe {
    match labels.and_then(|l| l.get(PROBE_LABEL)).map(String::as_str) {
        Some("tcp") => Probe::Tcp,
        Some("none") => Probe::None,
        Some("postgres") => Probe::Postgres,
        Some("mysql") => Probe::Mysql,
        Some("redis") => Probe::Redis,
        Some(p) if p.starts_with("http:") => Probe::Http {
            path: p["http:".len()..].to_owned(),
        },
        _ => Probe::Http { path: "/".into() },
    }
}

/// A client for probes: no proxy, no redirects followed, `timeout` per probe.
pub(crate) fn probe_client(timeout: Duration) -> wharf_core::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| {
            wharf_core::Error::internal(format!("probe client: {e}"))
                .with_backend(crate::http::BACKEND)
        })
}

/// Probes `addr:port` as `probe` says: `Err(reason)` when it fails.
pub(crate) async fn probe(
    client: &reqwest::Client,
    timeout: Duration,
    addr: &str,
    port: u16,
    probe: &Probe,
) -> std::result::Result<(), String> {
    let host = if addr.contains(':') {
        format!("[{addr}]")
    } else {
        addr.to_owned()
    };
    match probe {
        Probe::None => Ok(()),
        Probe::Postgres | Probe::Mysql | Probe::Redis => {
            wharf_core::dbprobe::check(probe, addr, port)
                .await
                .unwrap_or(Ok(()))
        }
        Probe::Tcp => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((addr, port))).await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("TCP connect to {host}:{port}: {e}")),
                Err(_) => Err(format!("TCP connect to {host}:{port} timed out")),
            }
        }
        Probe::Http { path } => {
            let url = format!("http://{host}:{port}{path}");
            match client.get(&url).send().await {
                Ok(r) if r.status().is_success() || r.status().is_redirection() => Ok(()),
                Ok(r) => Err(format!("GET {path} answered {}", r.status().as_u16())),
                Err(e) => Err(format!("GET {path}: {e}")),
            }
        }
    }
}

/// The status of an instance its service reports running: healthy or not as the
/// probe stored in its `labels` finds it on `addr:port`, or just running while its
/// address or port is not known.
pub(crate) async fn running_status(
    client: &reqwest::Client,
    timeout: Duration,
    addr: Option<String>,
    port: Option<u16>,
    labels: Option<&BTreeMap<String, String>>,
) -> InstanceStatus {
    let (Some(addr), Some(port)) = (addr, port) else {
        return InstanceStatus::Running;
    };
    match self::probe(client, timeout, &addr, port, &probe_of(labels)).await {
        Ok(()) => InstanceStatus::Healthy,
        Err(reason) => InstanceStatus::Unhealthy { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_survives_its_label() {
        for p in [
            Probe::Http { path: "/up".into() },
            Probe::Tcp,
            Probe::None,
            Probe::Postgres,
            Probe::Mysql,
            Probe::Redis,
        ] {
            let labels = BTreeMap::from([(PROBE_LABEL.to_owned(), probe_label(&p))]);
            assert_eq!(probe_of(Some(&labels)), p);
        }
    }

    #[tokio::test]
    async fn a_database_probe_speaks_its_protocol() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut s, _) = listener.accept().await.unwrap();
            let mut ping = [0u8; 6];
            s.read_exact(&mut ping).await.unwrap();
            assert_eq!(&ping, b"PING\r\n");
            s.write_all(b"+PONG\r\n").await.unwrap();
        });
        let client = probe_client(Duration::from_secs(2)).unwrap();
        let timeout = Duration::from_secs(2);
        probe(&client, timeout, "127.0.0.1", port, &Probe::Redis)
            .await
            .unwrap();
        // Nothing listening on a closed port: unhealthy, with the reason.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let why = probe(&client, timeout, "127.0.0.1", closed, &Probe::Postgres)
            .await
            .unwrap_err();
        assert!(why.contains("cannot connect"), "{why}");
    }
}
