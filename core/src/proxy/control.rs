//! The built-in proxy in a process of its own, so apps outlive the control plane: a
//! crash, restart or upgrade of the process that drives the engine drops no request.
//!
//! The proxy process keeps a [`ProxyRouter`] and serves:
//! - its traffic, on its own listeners;
//! - a control socket ([`serve_control`]): a Unix socket in a folder only its owner
//!   may enter, taking one JSON request per connection (`upsert`, `remove`, `list`,
//!   `drained`, `ping`, `shutdown`) and answering one JSON line;
//! - its table on disk ([`save_routes`] after every change, [`restore_routes`] at
//!   start), so a restarted proxy serves the routes it had before anyone tells it.
//!
//! The control plane drives it through a [`RemoteProxy`], which is a [`Router`] (and
//! a [`Drain`] for [`super::DrainingRuntime`]) like the in-process [`ProxyRouter`].
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use wharf_core::proxy::{serve_control, ProxyRouter, RemoteProxy};
//! use wharf_core::*;
//! let dir = tempfile::tempdir().unwrap();
//! let socket = dir.path().join("proxy.sock");
//! let router = ProxyRouter::new();
//! let control = serve_control(router.clone(), &socket, None, vec![]).unwrap();
//! let remote = RemoteProxy::new(&socket);
//! remote.upsert(&Route {
//!     id: RouteId::from("web"),
//!     hosts: vec!["web.demo.localhost".into()],
//!     path_prefix: None,
//!     upstreams: vec![Upstream { endpoint: Endpoint { host: "127.0.0.1".into(), port: 8000 }, weight: 100 }],
//!     tls: TlsPolicy::None,
//!     labels: Labels::new(),
//! }).await.unwrap();
//! assert_eq!(router.resolve("web.demo.localhost", "/").unwrap().port, 8000);
//! assert_eq!(remote.ping().await.unwrap().pid, std::process::id());
//! control.stop();
//! # });
//! ```

use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::drain::Drain;
use super::ProxyRouter;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Endpoint, Route, RouteId};
use crate::traits::Router;

/// The longest request line the control socket reads (a route with many hosts fits).
const MAX_REQUEST: u64 = 4 << 20;

/// What the proxy process says of itself ([`RemoteProxy::ping`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProxyInfo {
    /// Its process id.
    pub pid: u32,
    /// The addresses it serves traffic on.
    pub listen: Vec<SocketAddr>,
    /// How many routes it has.
    pub routes: usize,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Ping,
    Upsert { route: Route },
    Remove { id: RouteId },
    List,
    Drained { upstream: Endpoint, timeout_ms: u64 },
    Shutdown,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<WireError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    routes: Option<Vec<Route>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    drained: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    info: Option<ProxyInfo>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireError {
    kind: String,
    message: String,
}

/// The control socket of a proxy process, serving until [`ControlServer::stop`] or a
/// `shutdown` request ([`ControlServer::shutdown_requested`]).
pub struct ControlServer {
    stop: CancellationToken,
    shutdown: CancellationToken,
    socket: PathBuf,
}

impl fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlServer")
            .field("socket", &self.socket)
            .finish()
    }
}

impl ControlServer {
    /// Resolves when a client asked the proxy to shut down.
    pub async fn shutdown_requested(&self) {
        self.shutdown.cancelled().await
    }

    /// Stops serving and removes the socket file.
    pub fn stop(&self) {
        self.stop.cancel();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves `router`'s control socket at `socket` (its folder should be one only the
/// owner may enter; the socket itself is made `0600`). After each change the table is
/// saved to `table` when given ([`save_routes`]). `listen` is what `ping` reports.
/// A stale socket file is replaced; one a live proxy answers on is refused
/// (`Conflict`): call it inside a Tokio runtime.
pub fn serve_control(
    router: ProxyRouter,
    socket: &Path,
    table: Option<PathBuf>,
    listen: Vec<SocketAddr>,
) -> Result<ControlServer> {
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Err(Error::conflict(format!(
            "a proxy already answers on {}",
            socket.display()
        )));
    }
    match std::fs::symlink_metadata(socket) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(socket)
                .map_err(|e| io_error("remove the stale socket", socket, e))?
        }
        Ok(_) => {
            return Err(Error::invalid(format!(
                "{} exists and is not a socket: not replacing it",
                socket.display()
            )))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(socket).map_err(|e| io_error("bind", socket, e))?;
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| io_error("set the permissions of", socket, e))?;
    let stop = CancellationToken::new();
    let shutdown = CancellationToken::new();
    let ctx = std::sync::Arc::new(Ctx {
        router,
        table,
        listen,
        shutdown: shutdown.clone(),
        write: tokio::sync::Mutex::new(()),
    });
    let stopped = stop.clone();
    tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                _ = stopped.cancelled() => return,
                c = listener.accept() => c,
            };
            match conn {
                Ok((stream, _)) => {
                    let ctx = ctx.clone();
                    tokio::spawn(async move { handle(&ctx, stream).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "proxy control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(ControlServer {
        stop,
        shutdown,
        socket: socket.to_owned(),
    })
}

struct Ctx {
    router: ProxyRouter,
    table: Option<PathBuf>,
    listen: Vec<SocketAddr>,
    shutdown: CancellationToken,
    /// Serialises changes and their saves, so the file on disk is the last table.
    write: tokio::sync::Mutex<()>,
}

async fn handle(ctx: &Ctx, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
    let reply = match reader.read_line(&mut line).await {
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(req) => answer(ctx, req).await,
            Err(e) => Err(Error::invalid(format!("bad proxy control request: {e}"))),
        },
        Err(e) => Err(Error::invalid(format!(
            "unreadable proxy control request: {e}"
        ))),
    };
    let reply = reply.unwrap_or_else(|e| Reply {
        error: Some(WireError {
            kind: e.kind().code().to_owned(),
            message: e.message().to_owned(),
        }),
        ..Reply::default()
    });
    let mut text = serde_json::to_string(&reply).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
}

async fn answer(ctx: &Ctx, req: Request) -> Result<Reply> {
    let router = &ctx.router;
    let mut reply = Reply::default();
    match req {
        Request::Ping => {
            reply.info = Some(ProxyInfo {
                pid: std::process::id(),
                listen: ctx.listen.clone(),
                routes: router.list().await?.len(),
            })
        }
        Request::Upsert { route } => {
            let _w = ctx.write.lock().await;
            router.upsert(&route).await?;
            save(ctx).await?;
        }
        Request::Remove { id } => {
            let _w = ctx.write.lock().await;
            router.remove(&id).await?;
            save(ctx).await?;
        }
        Request::List => reply.routes = Some(router.list().await?),
        Request::Drained {
            upstream,
            timeout_ms,
        } => {
            let timeout = Duration::from_millis(timeout_ms.min(3_600_000));
            reply.drained = Some(router.drained(&upstream, timeout).await)
        }
        Request::Shutdown => ctx.shutdown.cancel(),
    }
    Ok(reply)
}

async fn save(ctx: &Ctx) -> Result<()> {
    match &ctx.table {
        Some(file) => save_routes(&ctx.router.list().await?, file),
        None => Ok(()),
    }
}

/// Writes `routes` to `file` whole or not at all (a temporary file beside it, synced,
/// then renamed over it), readable by its owner only.
pub fn save_routes(routes: &[Route], file: &Path) -> Result<()> {
    let tmp = file.with_extension("tmp");
    let text = serde_json::to_vec_pretty(routes)
        .map_err(|e| Error::internal(format!("cannot encode the proxy's routes: {e}")))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_error("write", &tmp, e))?;
    f.write_all(&text)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_error("write", &tmp, e))?;
    std::fs::rename(&tmp, file).map_err(|e| io_error("replace", file, e))
}

/// Loads the routes saved in `file` into `router`; returns how many. A missing file
/// is an empty table; one that does not parse, or holds a route the router refuses,
/// is an `InvalidInput` error naming the file (nothing is loaded then).
pub async fn restore_routes(router: &ProxyRouter, file: &Path) -> Result<usize> {
    let text = match std::fs::read(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_error("read", file, e)),
    };
    let routes: Vec<Route> = serde_json::from_slice(&text).map_err(|e| {
        Error::invalid(format!(
            "the proxy's saved routes in {} do not parse: {e}",
            file.display()
        ))
    })?;
    for r in &routes {
        r.validate().map_err(|e| {
            Error::invalid(format!(
                "the proxy's saved routes in {} hold a bad route: {e}",
                file.display()
            ))
        })?;
    }
    for r in &routes {
        router.upsert(r).await?;
    }
    Ok(routes.len())
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Backend,
        format!("cannot {what} {}: {e}", path.display()),
    )
    .with_backend("proxy")
}

/// A proxy in another process, driven through its control socket: a [`Router`] whose
/// changes that process applies (and saves) before answering, and a [`Drain`].
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct RemoteProxy {
    socket: PathBuf,
}

impl RemoteProxy {
    /// The proxy whose control socket is `socket`. Nothing is sent until a call.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        RemoteProxy {
            socket: socket.into(),
        }
    }

    /// Its control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// What the proxy says of itself; `Unavailable` when nothing answers.
    pub async fn ping(&self) -> Result<ProxyInfo> {
        self.call(&Request::Ping, Duration::from_secs(5))
            .await?
            .info
            .ok_or_else(|| Error::internal("the proxy answered a ping without its info"))
    }

    /// Asks the proxy process to finish its requests in flight and exit.
    pub async fn shutdown(&self) -> Result<()> {
        self.call(&Request::Shutdown, Duration::from_secs(5))
            .await
            .map(drop)
    }

    async fn call(&self, req: &Request, timeout: Duration) -> Result<Reply> {
        let unavailable = |what: &str, e: &dyn fmt::Display| {
            Error::unavailable(format!("proxy at {}: {what}: {e}", self.socket.display()))
                .with_backend("proxy")
        };
        let exchange = async {
            let stream = UnixStream::connect(&self.socket)
                .await
                .map_err(|e| unavailable("cannot connect", &e))?;
            let (read, mut write) = stream.into_split();
            let mut line = serde_json::to_string(req)
                .map_err(|e| Error::internal(format!("cannot encode a proxy request: {e}")))?;
            line.push('\n');
            write
                .write_all(line.as_bytes())
                .await
                .map_err(|e| unavailable("cannot send", &e))?;
            let mut answer = String::new();
            BufReader::new(read)
                .read_line(&mut answer)
                .await
                .map_err(|e| unavailable("no answer", &e))?;
            if answer.is_empty() {
                return Err(unavailable("no answer", &"connection closed"));
            }
            serde_json::from_str::<Reply>(&answer)
                .map_err(|e| Error::internal(format!("the proxy's answer does not parse: {e}")))
        };
        let reply = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| {
                Error::timeout(format!(
                    "proxy at {} did not answer within {timeout:?}",
                    self.socket.display()
                ))
                .with_backend("proxy")
            })??;
        match reply.error {
            Some(e) => Err(Error::new(
                ErrorKind::from_code(&e.kind).unwrap_or(ErrorKind::Backend),
                e.message,
            )
            .with_backend("proxy")),
            None => Ok(reply),
        }
    }
}

#[async_trait]
impl Router for RemoteProxy {
    async fn upsert(&self, route: &Route) -> Result<()> {
        route.validate().map_err(|e| e.with_backend("proxy"))?;
        let req = Request::Upsert {
            route: route.clone(),
        };
        self.call(&req, Duration::from_secs(10)).await.map(drop)
    }

    async fn remove(&self, id: &RouteId) -> Result<()> {
        let req = Request::Remove { id: id.clone() };
        self.call(&req, Duration::from_secs(10)).await.map(drop)
    }

    async fn list(&self) -> Result<Vec<Route>> {
        Ok(self
            .call(&Request::List, Duration::from_secs(10))
            .await?
            .routes
            .unwrap_or_default())
    }
}

#[async_trait]
impl Drain for RemoteProxy {
    /// Asks the proxy process; a proxy that does not answer has nothing in flight that
    /// waiting here could save (true after logging).
    async fn drained(&self, upstream: &Endpoint, timeout: Duration) -> bool {
        let req = Request::Drained {
            upstream: upstream.clone(),
            timeout_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
        };
        match self.call(&req, timeout + Duration::from_secs(5)).await {
            Ok(r) => r.drained.unwrap_or(true),
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask the proxy what is in flight");
                true
            }
        }
    }
}
