//! Protocol-level health probes for the managed databases ([`crate::database`]).
//!
//! A TCP connect proves little (Docker's port publishing accepts before the server
//! inside listens), and an HTTP probe means nothing to a database. These speak just
//! enough of each wire protocol to tell "the server answers as a database" from
//! "something accepted a connection", the way `pg_isready`, `mysqladmin ping` and
//! `redis-cli ping` do, without a client library and without credentials (a probe's
//! settings are stored in labels, where a password must never be):
//!
//! - PostgreSQL: a StartupMessage; an authentication request or any error other than
//!   `57P03` (the server is starting up) means it accepts connections.
//! - MySQL / MariaDB: the server's greeting packet (protocol version 10); an error
//!   packet instead (too many connections, host blocked) is unhealthy, with its text.
//! - Redis: an inline `PING`; `+PONG`, or `-NOAUTH` (alive, and asking for its
//!   password), is healthy; `-LOADING` (still reading its data set) is not.
//!
//! Every probe gives up after [`PROBE_TIMEOUT`]. Errors are one-line reasons for
//! [`crate::InstanceStatus::Unhealthy`].

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::model::Probe;

/// How long one probe may take, connect included.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The user name the PostgreSQL probe introduces itself with (it never logs in).
const PG_PROBE_USER: &str = "wharf-probe";

/// Runs the database probe `probe` names against `host:port`; `None` when `probe` is
/// not a database probe (HTTP, TCP and none are the runtime's own).
pub async fn check(probe: &Probe, host: &str, port: u16) -> Option<Result<(), String>> {
    Some(match probe {
        Probe::Postgres => postgres(host, port).await,
        Probe::Mysql => mysql(host, port).await,
        Probe::Redis => redis(host, port).await,
        Probe::Http { .. } | Probe::Tcp | Probe::None => return None,
    })
}

/// `Ok(())` when a PostgreSQL server at `host:port` accepts connections.
pub async fn postgres(host: &str, port: u16) -> Result<(), String> {
    bounded(host, port, async {
        let mut s = connect(host, port).await?;
        let mut body = Vec::new();
        body.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
        for (k, v) in [("user", PG_PROBE_USER), ("database", "postgres")] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        s.write_all(&msg)
            .await
            .map_err(|e| format!("postgres {host}:{port}: {e}"))?;
        let mut head = [0u8; 5];
        read_exact(&mut s, &mut head, host, port).await?;
        match head[0] {
            // An authentication request: it would log someone in.
            b'R' => Ok(()),
            b'E' => {
                let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
                let mut fields = vec![0u8; len.saturating_sub(4).min(4096)];
                read_exact(&mut s, &mut fields, host, port).await?;
                let field = |tag: u8| {
                    fields
                        .split(|b| *b == 0)
                        .find(|f| f.first() == Some(&tag))
                        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
                };
                match field(b'C').as_deref() {
                    Some("57P03") => Err(format!(
                        "postgres {host}:{port} is not accepting connections yet: {}",
                        field(b'M').unwrap_or_default()
                    )),
                    // Bad user, bad password method, no such database: it answers.
                    _ => Ok(()),
                }
            }
            other => Err(format!(
                "postgres {host}:{port} answered {:?}, not a PostgreSQL message",
                other as char
            )),
        }
    })
    .await
}

/// `Ok(())` when a MySQL or MariaDB server at `host:port` greets a new connection.
pub async fn mysql(host: &str, port: u16) -> Result<(), String> {
    bounded(host, port, async {
        let mut s = connect(host, port).await?;
        let mut head = [0u8; 4];
        read_exact(&mut s, &mut head, host, port).await?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
        if len == 0 {
            return Err(format!("mysql {host}:{port} sent an empty packet"));
        }
        let mut payload = vec![0u8; len.min(4096)];
        read_exact(&mut s, &mut payload, host, port).await?;
        match payload[0] {
            10 => Ok(()),
            0xff => {
                // Error packet: 0xff, code (u16 LE), then the message (before 4.1
                // servers' greeting there is no `#SQLSTATE`).
                let text = payload.get(3..).unwrap_or_default();
                let text = text
                    .strip_prefix(b"#")
                    .map_or(text, |t| t.get(5..).unwrap_or(t));
                Err(format!(
                    "mysql {host}:{port} refused: {}",
                    String::from_utf8_lossy(text)
                ))
            }
            v => Err(format!(
                "mysql {host}:{port} greeted with protocol {v}, not 10"
            )),
        }
    })
    .await
}

/// `Ok(())` when a Redis server at `host:port` answers `PING` (or asks for its
/// password, which also proves it serves).
pub async fn redis(host: &str, port: u16) -> Result<(), String> {
    bounded(host, port, async {
        let mut s = connect(host, port).await?;
        s.write_all(b"PING\r\n")
            .await
            .map_err(|e| format!("redis {host}:{port}: {e}"))?;
        let mut line = Vec::with_capacity(64);
        let mut buf = [0u8; 256];
        while !line.contains(&b'\n') && line.len() < 1024 {
            let n = s
                .read(&mut buf)
                .await
                .map_err(|e| format!("redis {host}:{port}: {e}"))?;
            if n == 0 {
                break;
            }
            line.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&line);
        let line = line.lines().next().unwrap_or("").trim_end();
        if line == "+PONG" || line.starts_with("-NOAUTH") {
            Ok(())
        } else if line.is_empty() {
            Err(format!(
                "redis {host}:{port} closed the connection without answering PING"
            ))
        } else {
            Err(format!("redis {host}:{port} answered PING with {line:?}"))
        }
    })
    .await
}

async fn bounded(
    host: &str,
    port: u16,
    probe: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from {host}:{port} within {PROBE_TIMEOUT:?}"
            ))
        })
}

async fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))
}

async fn read_exact(
    s: &mut TcpStream,
    buf: &mut [u8],
    host: &str,
    port: u16,
) -> Result<(), String> {
    match s.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(format!(
            "connection to {host}:{port} was closed before the server answered: it is not serving yet"
        )),
        Err(e) => Err(format!("reading from {host}:{port}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A one-connection server on loopback: reads `expect` bytes (when some), checks
    /// what it read with `seen`, answers `answer`, and closes.
    async fn serve(expect: usize, answer: Vec<u8>, seen: fn(&[u8])) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = vec![0u8; expect];
            s.read_exact(&mut got).await.unwrap();
            seen(&got);
            s.write_all(&answer).await.unwrap();
            let _ = s.shutdown().await;
        });
        port
    }

    fn pg_error(code: &str) -> Vec<u8> {
        let mut fields = Vec::new();
        for (tag, v) in [
            (b'S', "FATAL"),
            (b'C', code),
            (b'M', "the database system is starting up"),
        ] {
            fields.push(tag);
            fields.extend_from_slice(v.as_bytes());
            fields.push(0);
        }
        fields.push(0);
        let mut m = vec![b'E'];
        m.extend_from_slice(&((fields.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(&fields);
        m
    }

    fn pg_startup_seen(got: &[u8]) {
        let len = u32::from_be_bytes(got[..4].try_into().unwrap()) as usize;
        assert_eq!(len, got.len(), "the length covers the whole message");
        assert_eq!(&got[4..8], &196_608u32.to_be_bytes(), "protocol 3.0");
        assert!(got.ends_with(b"database\0postgres\0\0"), "{got:?}");
    }

    // user + database pairs: 4 + 4 + "user\0wharf-probe\0database\0postgres\0\0"
    const PG_STARTUP_LEN: usize = 8 + 5 + 12 + 9 + 9 + 1;

    #[tokio::test]
    async fn postgres_probe_reads_the_startup_answer() {
        // SASL authentication request: accepting connections.
        let sasl = [b'R', 0, 0, 0, 8, 0, 0, 0, 10].to_vec();
        let port = serve(PG_STARTUP_LEN, sasl, pg_startup_seen).await;
        postgres("127.0.0.1", port).await.unwrap();

        // A refused login (bad user) still proves the server serves.
        let port = serve(PG_STARTUP_LEN, pg_error("28000"), pg_startup_seen).await;
        postgres("127.0.0.1", port).await.unwrap();

        // Starting up: unhealthy, with the server's reason.
        let port = serve(PG_STARTUP_LEN, pg_error("57P03"), pg_startup_seen).await;
        let why = postgres("127.0.0.1", port).await.unwrap_err();
        assert!(why.contains("starting up"), "{why}");

        // An HTTP server on the port is not PostgreSQL.
        let port = serve(PG_STARTUP_LEN, b"HTTP/1.1 400 Bad\r\n\r\n".to_vec(), |_| {}).await;
        let why = postgres("127.0.0.1", port).await.unwrap_err();
        assert!(why.contains("not a PostgreSQL message"), "{why}");
    }

    #[tokio::test]
    async fn mysql_probe_needs_the_greeting() {
        let mut greeting = vec![10];
        greeting.extend_from_slice(b"10.11.6-MariaDB\0");
        greeting.extend_from_slice(&[1, 0, 0, 0]);
        let mut packet = (greeting.len() as u32).to_le_bytes()[..3].to_vec();
        packet.push(0);
        packet.extend_from_slice(&greeting);
        let port = serve(0, packet, |_| {}).await;
        mysql("127.0.0.1", port).await.unwrap();

        let mut err = vec![0xff, 0x10, 0x04];
        err.extend_from_slice(b"Too many connections");
        let mut packet = (err.len() as u32).to_le_bytes()[..3].to_vec();
        packet.push(0);
        packet.extend_from_slice(&err);
        let port = serve(0, packet, |_| {}).await;
        let why = mysql("127.0.0.1", port).await.unwrap_err();
        assert!(why.ends_with("refused: Too many connections"), "{why}");

        // Accepted and closed at once (Docker's proxy with nothing behind it).
        let port = serve(0, Vec::new(), |_| {}).await;
        let why = mysql("127.0.0.1", port).await.unwrap_err();
        assert!(why.contains("not serving yet"), "{why}");
    }

    #[tokio::test]
    async fn redis_probe_sends_ping() {
        let ping_seen: fn(&[u8]) = |got| assert_eq!(got, b"PING\r\n");
        let port = serve(6, b"+PONG\r\n".to_vec(), ping_seen).await;
        redis("127.0.0.1", port).await.unwrap();

        let noauth = b"-NOAUTH Authentication required.\r\n".to_vec();
        let port = serve(6, noauth, ping_seen).await;
        redis("127.0.0.1", port).await.unwrap();

        let loading = b"-LOADING Redis is loading the dataset in memory\r\n".to_vec();
        let port = serve(6, loading, ping_seen).await;
        let why = redis("127.0.0.1", port).await.unwrap_err();
        assert!(why.contains("LOADING"), "{why}");
    }

    #[tokio::test]
    async fn probes_give_up_on_a_silent_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(PROBE_TIMEOUT * 2).await;
            drop(s);
        });
        let why = mysql("127.0.0.1", port).await.unwrap_err();
        assert!(why.starts_with("no answer from"), "{why}");
        held.abort();
    }

    #[tokio::test]
    async fn check_answers_only_for_database_probes() {
        assert!(check(&Probe::Tcp, "127.0.0.1", 1).await.is_none());
        let refused = check(&Probe::Redis, "127.0.0.1", 1).await.unwrap();
        assert!(refused.unwrap_err().starts_with("cannot connect"));
    }
}
