//! Serving: accepting connections, forwarding requests, passing upgrades through.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::table::normalize_host;
use super::Shared;
use crate::model::Endpoint;

type Body = BoxBody<Bytes, hyper::Error>;

/// A running listener of a [`super::ProxyRouter`]. Dropping it stops accepting
/// connections; [`ProxyServer::shutdown`] also lets open connections finish.
#[derive(Debug)]
pub struct ProxyServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProxyServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, asks open connections to close once their requests are done,
    /// and waits (up to 10 s) for them.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

impl Drop for ProxyServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Debug)]
struct Ctx {
    shared: Arc<Shared>,
    client: Client<HttpConnector, Body>,
}

pub(super) fn spawn(shared: Arc<Shared>, listener: TcpListener) -> ProxyServer {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(shared.config.connect_timeout));
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let ctx = Arc::new(Ctx { shared, client });
    let stop = CancellationToken::new();
    let task = tokio::spawn(accept_loop(ctx, listener, stop.clone()));
    ProxyServer {
        addr,
        stop,
        task: Some(task),
    }
}

async fn accept_loop(ctx: Arc<Ctx>, listener: TcpListener, stop: CancellationToken) {
    let conns = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // Out of file descriptors and the like: wait and go on.
                    tracing::warn!("proxy accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(handle(ctx, req, peer).await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A client gets this long to send a request's headers (slow-loris guard).
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    conns.close();
    conns.wait().await;
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers (and those the `Connection` header names); `Upgrade`
/// too unless the exchange is an upgrade.
fn strip_hop_by_hop(h: &mut HeaderMap, upgrading: bool) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| n != header::UPGRADE)
        .collect();
    for n in named.iter().chain(&HOP_BY_HOP) {
        h.remove(n);
    }
    h.remove(header::PROXY_AUTHORIZATION);
    if upgrading {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(header::UPGRADE);
    }
}

fn wants_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Whether the request can be sent again: it has no body.
fn bodiless(req: &Request<Incoming>) -> bool {
    use hyper::body::Body as _;
    let h = req.headers();
    let declared_empty = !h.contains_key(header::TRANSFER_ENCODING)
        && h.get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0");
    req.body().is_end_stream()
        || (declared_empty && matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS))
}

async fn handle(ctx: Arc<Ctx>, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let Some(host) = host else {
        return text(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: no Host header\n".into(),
        );
    };
    let name = normalize_host(&host);
    let path = req.uri().path().to_owned();
    let Some((_, mut upstream)) = ctx.shared.table().resolve(&name, &path) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("404 Not Found: no route for host {name}\n"),
        );
    };

    let upgrading = wants_upgrade(&req);
    let retry = bodiless(&req) && !upgrading;

    // What goes upstream: the same request, HTTP/1.1, with forwarding headers.
    let on_client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgrading);
    if !parts.headers.contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(&host) {
            parts.headers.insert(header::HOST, v);
        }
    }
    let client_ip = peer.ip().to_string();
    let trust = ctx.shared.config.trust_forwarded_headers;
    if !trust {
        // What a client says about itself is not passed on as if the proxy said it.
        let claims: Vec<HeaderName> = parts
            .headers
            .keys()
            .filter(|name| client_claim(name.as_str()))
            .cloned()
            .collect();
        for name in claims {
            parts.headers.remove(name);
        }
    }
    let xri = HeaderName::from_static("x-real-ip");
    if !parts.headers.contains_key(&xri) {
        if let Ok(v) = HeaderValue::from_str(&client_ip) {
            parts.headers.insert(xri, v);
        }
    }
    let xff = HeaderName::from_static("x-forwarded-for");
    let prior = ctx
        .shared
        .config
        .trust_forwarded_headers
        .then(|| {
            parts
                .headers
                .get(&xff)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .flatten();
    let forwarded_for = match prior {
        Some(p) => format!("{p}, {client_ip}"),
        None => client_ip,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        parts.headers.insert(xff, v);
    }
    let fhost = HeaderName::from_static("x-forwarded-host");
    if !(trust && parts.headers.contains_key(&fhost)) {
        if let Ok(v) = HeaderValue::from_str(&host) {
            parts.headers.insert(fhost, v);
        }
    }
    let fproto = HeaderName::from_static("x-forwarded-proto");
    if !(trust && parts.headers.contains_key(&fproto)) {
        parts
            .headers
            .insert(fproto, HeaderValue::from_static("http"));
    }
    parts.version = Version::HTTP_11;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/".to_owned(), |p| p.to_string());

    if upgrading {
        let req = Request::from_parts(parts, body.boxed());
        return upgrade(req, &upstream, &path_and_query, on_client_upgrade).await;
    }

    let mut body = Some(body.boxed());
    let mut attempt = 0;
    loop {
        let uri: Uri = match format!("http://{upstream}{path_and_query}").parse() {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(host = %name, %upstream, "bad upstream address: {e}");
                return bad_gateway(&name);
            }
        };
        let mut out = Request::new(
            body.take()
                .unwrap_or_else(|| Empty::new().map_err(|n| match n {}).boxed()),
        );
        *out.method_mut() = parts.method.clone();
        *out.uri_mut() = uri;
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = parts.headers.clone();
        let guard = ctx.shared.in_flight.enter(&upstream);
        match ctx.client.request(out).await {
            Ok(resp) => {
                let (mut rp, rb) = resp.into_parts();
                strip_hop_by_hop(&mut rp.headers, false);
                // The client's connection has its own version (an HTTP/1.0 app must not
                // turn the proxy's answer into HTTP/1.0).
                rp.version = Version::default();
                let body = super::drain::Tracked {
                    inner: rb.boxed(),
                    guard: Some(guard),
                };
                return Response::from_parts(rp, body.boxed());
            }
            Err(e) => {
                drop(guard);
                attempt += 1;
                if retry && attempt <= ctx.shared.config.retries {
                    // The table may have moved on (a redeploy): ask it again.
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                    if let Some((_, next)) = ctx.shared.table().resolve(&name, &path) {
                        upstream = next;
                    }
                    continue;
                }
                let why = error_chain(&e);
                tracing::warn!(host = %name, %upstream, "upstream failed: {why}");
                return bad_gateway(&name);
            }
        }
    }
}

/// The 502 a client gets: which host's app does not answer, never where that app
/// lives or why (the server log has both).
fn bad_gateway(host: &str) -> Response<Body> {
    text(
        StatusCode::BAD_GATEWAY,
        format!("502 Bad Gateway: the app of host {host} is not answering\n"),
    )
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

/// Sends an upgrade request on a connection of its own and, on `101`, splices the
/// client's and the upstream's upgraded connections together.
async fn upgrade(
    mut req: Request<Body>,
    upstream: &Endpoint,
    path_and_query: &str,
    on_client: Option<hyper::upgrade::OnUpgrade>,
) -> Response<Body> {
    let fail = |why: String| {
        tracing::warn!(%upstream, "upgrade failed: {why}");
        text(
            StatusCode::BAD_GATEWAY,
            "502 Bad Gateway: the app is not answering the upgrade\n".to_owned(),
        )
    };
    let stream = match tokio::net::TcpStream::connect((upstream.host.as_str(), upstream.port)).await
    {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(v) => v,
        Err(e) => return fail(error_chain(&e)),
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    *req.uri_mut() = match path_and_query.parse() {
        Ok(u) => u,
        Err(e) => return fail(format!("bad path: {e}")),
    };
    let mut resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => return fail(error_chain(&e)),
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut rp, rb) = resp.into_parts();
        strip_hop_by_hop(&mut rp.headers, false);
        rp.version = Version::default();
        return Response::from_parts(rp, rb.boxed());
    }
    let on_upstream = hyper::upgrade::on(&mut resp);
    if let Some(on_client) = on_client {
        tokio::spawn(async move {
            let (Ok(client), Ok(up)) = (on_client.await, on_upstream.await) else {
                return;
            };
            let mut client = TokioIo::new(client);
            let mut up = TokioIo::new(up);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
        });
    }
    let (rp, _) = resp.into_parts();
    Response::from_parts(rp, Empty::new().map_err(|n| match n {}).boxed())
}

/// Whether a request header claims what only a proxy may say: who connected, over
/// which scheme, to which host or port (`Forwarded`, `X-Forwarded-*`, `X-Real-IP` and
/// their kin), spelt with `-` or `_` (CGI and WSGI read both the same).
fn client_claim(name: &str) -> bool {
    let name = name.replace('_', "-");
    name == "forwarded"
        || name.starts_with("x-forwarded-")
        || [
            "x-real-ip",
            "x-client-ip",
            "x-cluster-client-ip",
            "true-client-ip",
            "x-url-scheme",
            "front-end-https",
        ]
        .contains(&name.as_str())
}
