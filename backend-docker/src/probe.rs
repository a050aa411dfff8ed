//! Health probes run from the host against an instance's published port.
//!
//! Docker's port publishing answers on the host port even before the app inside
//! listens (its proxy accepts, then closes the connection when the app refuses), so a
//! bare TCP connect proves nothing: the TCP probe waits briefly for the connection to
//! be closed, and the HTTP probe needs a status line back.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a TCP connection must stay open to count as accepted by the app.
const TCP_SETTLE: Duration = Duration::from_millis(150);

/// `Ok(())` when something accepts and keeps a TCP connection at `host:port`.
pub(crate) async fn tcp(host: &str, port: u16) -> Result<(), String> {
    let attempt = async {
        let mut stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let mut byte = [0u8; 1];
        match tokio::time::timeout(TCP_SETTLE, stream.read(&mut byte)).await {
            // Still open and silent, or the app spoke first: someone listens.
            Err(_) | Ok(Ok(1..)) => Ok(()),
            Ok(Ok(_)) => Err(format!(
                "connection to {host}:{port} was closed at once: nothing listens in the container yet"
            )),
            Ok(Err(e)) => Err(format!("connection to {host}:{port} failed: {e}")),
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from {host}:{port} within {PROBE_TIMEOUT:?}"
            ))
        })
}

/// `Ok(())` when `GET path` at `host:port` answers 2xx or 3xx.
pub(crate) async fn http(host: &str, port: u16, path: &str) -> Result<(), String> {
    let attempt = async {
        let mut stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: wharf-health-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 4096 {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("GET {path}: {e}"))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        let line = line.lines().next().unwrap_or("");
        if line.is_empty() {
            return Err(format!(
                "GET {path}: the connection closed without an answer (is the app listening yet?)"
            ));
        }
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("GET {path}: not an HTTP answer: {line:?}"))?;
        if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("GET {path} answered {code}"))
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("GET {path}: no answer within {PROBE_TIMEOUT:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(answer: &'static str) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(answer.as_bytes()).await;
        });
        port
    }

    #[tokio::test]
    async fn http_probe_reads_the_status() {
        let port = serve_once("HTTP/1.0 200 OK\r\n\r\nhi").await;
        assert_eq!(http("127.0.0.1", port, "/").await, Ok(()));
        let port = serve_once("HTTP/1.1 503 Busy\r\n\r\n").await;
        let err = http("127.0.0.1", port, "/health").await.unwrap_err();
        assert!(err.contains("503"), "{err}");
        let port = serve_once("").await;
        assert!(http("127.0.0.1", port, "/").await.is_err());
    }

    #[tokio::test]
    async fn tcp_probe_needs_a_connection_that_stays() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let keep = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(s);
        });
        assert_eq!(tcp("127.0.0.1", port).await, Ok(()));
        keep.abort();
        // Accepts, then closes at once (what Docker's proxy does with nothing behind).
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            drop(s);
        });
        assert!(tcp("127.0.0.1", port).await.is_err());
    }
}
