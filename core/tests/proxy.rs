//! The built-in reverse proxy against real loopback upstreams: the router conformance
//! kit, host and path routing, weights, forwarding headers, 404 and 502, HTTP/2,
//! WebSocket-style upgrades and route changes with requests in flight.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wharf_core::proxy::{
    restore_routes, serve_control, ControlServer, Drain, ProxyRouter, ProxyServer, RemoteProxy,
};
use wharf_core::*;
use wharf_testkit::endpoint;

/// A loopback upstream that says who it is and what it got. `/slow` answers after
/// 500 ms; a request with `Upgrade: echo` switches protocols and echoes bytes.
struct Upstream {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn upstream(name: &'static str) -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |mut req: Request<Incoming>| async move {
                        if req.headers().get("upgrade").is_some_and(|v| v == "echo") {
                            let on = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                let mut io = TokioIo::new(on.await.unwrap());
                                let mut buf = [0u8; 64];
                                while let Ok(n) = io.read(&mut buf).await {
                                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            });
                            let mut r = Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                            r.headers_mut().insert("upgrade", "echo".parse().unwrap());
                            r.headers_mut()
                                .insert("connection", "upgrade".parse().unwrap());
                            return Ok::<_, Infallible>(r);
                        }
                        if req.uri().path() == "/slow" {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        let h = |k: &str| {
                            req.headers()
                                .get(k)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-")
                                .to_owned()
                        };
                        let body = format!(
                            "{name} path={} host={} xff={} xfh={} xfp={} conn={} xri={} fwd={} \
                             claims={},{},{}",
                            req.uri().path(),
                            h("host"),
                            h("x-forwarded-for"),
                            h("x-forwarded-host"),
                            h("x-forwarded-proto"),
                            h("connection"),
                            h("x-real-ip"),
                            h("forwarded"),
                            h("x-forwarded-ssl"),
                            h("x-url-scheme"),
                            h("x_forwarded_for"),
                        );
                        Ok(Response::new(Full::new(Bytes::from(body))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Upstream { addr, task }
}

fn route(id: &str, host: &str, prefix: Option<&str>, ups: &[(SocketAddr, u32)]) -> Route {
    let mut r = wharf_testkit::route(id).host(host);
    if let Some(prefix) = prefix {
        r = r.prefix(prefix);
    }
    for (addr, weight) in ups {
        r = r.upstream(&endpoint(*addr), *weight);
    }
    r.build()
}

async fn proxy() -> (ProxyRouter, ProxyServer) {
    let router = ProxyRouter::new();
    let server = router.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    (router, server)
}

/// GET through the proxy with an HTTP/1.1 connection of its own.
/// A proxy with one route, `id`, sending `host` to upstream "a".
async fn proxy_to_a(id: &str, host: &str) -> (ProxyRouter, ProxyServer, Upstream) {
    let (router, server) = proxy().await;
    let a = upstream("a").await;
    router
        .upsert(&route(id, host, None, &[(a.addr, 1)]))
        .await
        .unwrap();
    (router, server, a)
}

async fn get(proxy: SocketAddr, host: &str, path: &str) -> (StatusCode, String) {
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", host)
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6;proto=https")
        .header("x-forwarded-ssl", "on")
        .header("x-url-scheme", "https")
        .header("x_forwarded_for", "6.6.6.6")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn router_conformance() {
    let (router, _server) = proxy().await;
    let up = upstream("kit").await;
    wharf_core::conformance::router::run_all(&router, "localhost", endpoint(up.addr)).await;
}

#[tokio::test]
async fn routes_by_host_and_longest_prefix_with_forwarding_headers() {
    let (router, server) = proxy().await;
    let (a, b, c) = (
        upstream("a").await,
        upstream("b").await,
        upstream("c").await,
    );
    router
        .upsert(&route("web", "web.demo.localhost", None, &[(a.addr, 1)]))
        .await
        .unwrap();
    router
        .upsert(&route(
            "api",
            "web.demo.localhost",
            Some("/api"),
            &[(b.addr, 1)],
        ))
        .await
        .unwrap();
    router
        .upsert(&route("any", "*.demo.localhost", None, &[(c.addr, 1)]))
        .await
        .unwrap();
    let old = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let old_addr = old.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = old.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold")
                    .await;
            });
        }
    });
    router
        .upsert(&route("old", "old.localhost", None, &[(old_addr, 1)]))
        .await
        .unwrap();
    let addr = server.local_addr();

    let (st, body) = get(addr, "Web.Demo.localhost:8080", "/index").await;
    assert_eq!(st, StatusCode::OK);
    // An HTTP/1.0 upstream does not make the proxy answer in HTTP/1.0.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET /old HTTP/1.1\r\nHost: old.localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("old"), "{answer}");
    assert!(
        body.starts_with("a path=/index host=Web.Demo.localhost:8080"),
        "{body}"
    );
    // The client's own X-Forwarded-For, X-Real-IP and Forwarded are not trusted; the
    // proxy says who connected.
    assert!(body.contains("xff=127.0.0.1 "), "{body}");
    assert!(body.contains("xri=127.0.0.1 fwd=-"), "{body}");
    // Nor its other claims of scheme or address, spelt with `_` included (CGI and WSGI
    // read `X_Forwarded_For` as `X-Forwarded-For`).
    assert!(body.ends_with("claims=-,-,-"), "{body}");
    assert!(
        body.contains("xfh=Web.Demo.localhost:8080 xfp=http"),
        "{body}"
    );
    assert!(
        body.contains("conn=-") || body.contains("conn=keep-alive"),
        "{body}"
    );
    assert!(get(addr, "web.demo.localhost", "/api/v1")
        .await
        .1
        .starts_with("b "));
    assert!(get(addr, "docs.demo.localhost", "/")
        .await
        .1
        .starts_with("c "));

    let (st, body) = get(addr, "nope.localhost", "/").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(body.contains("no route for host nope.localhost"), "{body}");

    router.remove(&RouteId::from("api")).await.unwrap();
    assert!(get(addr, "web.demo.localhost", "/api/v1")
        .await
        .1
        .starts_with("a "));
}

#[tokio::test]
async fn weighted_upstreams_share_traffic() {
    let (router, server) = proxy().await;
    let (a, b) = (upstream("a").await, upstream("b").await);
    router
        .upsert(&route(
            "w",
            "w.localhost",
            None,
            &[(a.addr, 3), (b.addr, 1)],
        ))
        .await
        .unwrap();
    let mut from_a = 0;
    for _ in 0..8 {
        if get(server.local_addr(), "w.localhost", "/")
            .await
            .1
            .starts_with("a ")
        {
            from_a += 1;
        }
    }
    assert_eq!(from_a, 6);
}

#[tokio::test]
async fn a_dead_upstream_is_a_502_that_says_so() {
    let (router, server) = proxy().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    router
        .upsert(&route("d", "dead.localhost", None, &[(dead, 1)]))
        .await
        .unwrap();
    let (st, body) = get(server.local_addr(), "dead.localhost", "/").await;
    assert_eq!(st, StatusCode::BAD_GATEWAY);
    assert!(
        body.contains("the app of host dead.localhost is not answering"),
        "{body}"
    );
    // Where the app lives is the server's business, not the client's.
    assert!(
        !body.contains(&dead.port().to_string()) && !body.contains("127.0.0.1"),
        "{body}"
    );
}

#[tokio::test]
async fn speaks_http2_cleartext() {
    let (_router, server, _a) = proxy_to_a("h2", "h2.localhost").await;
    let stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://h2.localhost/two")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("a path=/two host=h2.localhost"), "{body}");
}

#[tokio::test]
async fn upgrades_pass_through() {
    let (_router, server, _a) = proxy_to_a("ws", "ws.localhost").await;
    let mut s = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for msg in [&b"ping"[..], b"second frame"] {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
    }
}

#[tokio::test]
async fn route_changes_keep_requests_in_flight() {
    let (router, server) = proxy().await;
    let (a, b) = (upstream("a").await, upstream("b").await);
    router
        .upsert(&route("r", "r.localhost", None, &[(a.addr, 1)]))
        .await
        .unwrap();
    let addr = server.local_addr();
    let slow = tokio::spawn(async move { get(addr, "r.localhost", "/slow").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    router
        .upsert(&route("r", "r.localhost", None, &[(b.addr, 1)]))
        .await
        .unwrap();
    assert!(get(addr, "r.localhost", "/").await.1.starts_with("b "));
    let (st, body) = slow.await.unwrap();
    assert_eq!(st, StatusCode::OK);
    assert!(body.starts_with("a path=/slow"), "{body}");
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let (_router, server, _a) = proxy_to_a("s", "s.localhost").await;
    let addr = server.local_addr();
    assert_eq!(get(addr, "s.localhost", "/").await.0, StatusCode::OK);
    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn counts_requests_in_flight_until_their_body_is_done() {
    let (router, server, a) = proxy_to_a("f", "f.localhost").await;
    let addr = server.local_addr();
    assert_eq!(router.in_flight(&endpoint(a.addr)), 0);
    let slow = tokio::spawn(async move { get(addr, "f.localhost", "/slow").await });
    let mut seen = 0;
    for _ in 0..100 {
        seen = router.in_flight(&endpoint(a.addr));
        if seen == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(seen, 1, "the slow request is in flight");
    assert!(
        !router
            .drained(&endpoint(a.addr), Duration::from_millis(10))
            .await
    );
    assert!(
        router
            .drained(&endpoint(a.addr), Duration::from_secs(10))
            .await
    );
    assert_eq!(slow.await.unwrap().0, StatusCode::OK);
    assert_eq!(router.in_flight(&endpoint(a.addr)), 0);
}

/// A proxy serving traffic and its control socket in `dir`, with its table saved in
/// `dir/routes.json`, and a [`RemoteProxy`] driving it: a proxy process in miniature.
async fn remote_proxy(
    dir: &std::path::Path,
) -> (ProxyRouter, ProxyServer, ControlServer, RemoteProxy) {
    let (router, server) = proxy().await;
    let socket = dir.join("proxy.sock");
    let control = serve_control(
        router.clone(),
        &socket,
        Some(dir.join("routes.json")),
        vec![server.local_addr()],
    )
    .unwrap();
    (router, server, control, RemoteProxy::new(&socket))
}

#[tokio::test]
async fn a_remote_proxy_passes_the_router_kit_over_its_control_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (_router, server, _control, remote) = remote_proxy(dir.path()).await;
    let up = upstream("kit").await;
    wharf_core::conformance::router::run_all(&remote, "localhost", endpoint(up.addr)).await;
    let info = remote.ping().await.unwrap();
    assert_eq!(info.pid, std::process::id());
    assert_eq!(info.listen, vec![server.local_addr()]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("proxy.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the control socket is its owner's only"
    );
}

#[tokio::test]
async fn a_restarted_proxy_serves_its_saved_routes_before_anyone_tells_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = upstream("a").await;
    {
        let (_router, _server, _control, remote) = remote_proxy(dir.path()).await;
        remote
            .upsert(&route("kept", "kept.localhost", None, &[(a.addr, 1)]))
            .await
            .unwrap();
        remote
            .upsert(&route("gone", "gone.localhost", None, &[(a.addr, 1)]))
            .await
            .unwrap();
        remote.remove(&RouteId::from("gone")).await.unwrap();
    }
    // A new process: the saved table is served at once.
    let (router, server) = proxy().await;
    let file = dir.path().join("routes.json");
    assert_eq!(restore_routes(&router, &file).await.unwrap(), 1);
    let (status, body) = get(server.local_addr(), "kept.localhost", "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("a path=/ host=kept.localhost"), "{body}");
    assert_eq!(get(server.local_addr(), "gone.localhost", "/").await.0, 404);

    // A table that does not parse is refused by name, and nothing of it is loaded.
    std::fs::write(&file, "[{\"id\": ").unwrap();
    let fresh = ProxyRouter::new();
    let err = restore_routes(&fresh, &file).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("routes.json"), "{err}");
    assert!(fresh.list().await.unwrap().is_empty());
    // No file: an empty table.
    assert_eq!(
        restore_routes(&fresh, &dir.path().join("none.json"))
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn a_remote_proxy_drains_and_refuses_a_second_control_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (router, server, _control, remote) = remote_proxy(dir.path()).await;
    let a = upstream("a").await;
    remote
        .upsert(&route("f", "f.localhost", None, &[(a.addr, 1)]))
        .await
        .unwrap();
    let addr = server.local_addr();
    let slow = tokio::spawn(async move { get(addr, "f.localhost", "/slow").await });
    for _ in 0..100 {
        if router.in_flight(&endpoint(a.addr)) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain: &dyn Drain = &remote;
    assert!(
        !drain
            .drained(&endpoint(a.addr), Duration::from_millis(10))
            .await
    );
    assert!(
        drain
            .drained(&endpoint(a.addr), Duration::from_secs(10))
            .await
    );
    assert_eq!(slow.await.unwrap().0, StatusCode::OK);

    // A second proxy on the same socket would steal the first one's control.
    let err = serve_control(ProxyRouter::new(), remote.socket(), None, vec![]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    // A bad route is refused by the proxy process too, with its kind.
    let mut bad = route("b", "b.localhost", None, &[(a.addr, 1)]);
    bad.hosts = vec!["bad host".into()];
    let err = remote.upsert(&bad).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}

#[tokio::test]
async fn a_stopped_proxy_is_unavailable_not_an_error_of_the_route() {
    let dir = tempfile::tempdir().unwrap();
    let (_router, _server, control, remote) = remote_proxy(dir.path()).await;
    remote.shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), control.shutdown_requested())
        .await
        .expect("the shutdown request reached the proxy");
    control.stop();
    let err = remote.list().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
}
