//! The API in process (tower `oneshot`, no socket) on the in-memory backends, for
//! tests that call many operations quickly.
#![allow(dead_code)] // each test file that includes this module uses part of it

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::{json, Value};
use tower::ServiceExt;
use wharf_core::memory::{MemoryBuilder, MemoryRouter, MemoryRuntime};
use wharf_core::store::MemoryStore;
use wharf_core::{Engine, Secret};
use wharf_server::api::{self, App};
use wharf_server::auth::Tokens;

/// An [`App`] on new in-memory backends, with handles to them and an operator token.
pub(crate) struct MemoryApp {
    /// The app.
    pub(crate) app: App,
    /// Its store.
    pub(crate) store: Arc<MemoryStore>,
    /// Its router.
    pub(crate) router: Arc<MemoryRouter>,
    /// Its runtime.
    pub(crate) runtime: Arc<MemoryRuntime>,
    /// The faults its runtime injects.
    pub(crate) faults: wharf_core::memory::Faults,
    /// Its tokens.
    pub(crate) tokens: Arc<Tokens>,
    /// The operator's token.
    pub(crate) admin: String,
    /// Its data folder.
    pub(crate) dir: tempfile::TempDir,
}

/// A new [`MemoryApp`]; webhooks are signed with `webhook_secret`, if any.
pub(crate) fn memory_app(webhook_secret: Option<&str>) -> MemoryApp {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let router = Arc::new(MemoryRouter::new());
    let faults = wharf_core::memory::Faults::default();
    let runtime = Arc::new(MemoryRuntime::with_faults(faults.clone()));
    let engine = Engine::builder()
        .store(store.clone())
        .builder(Arc::new(MemoryBuilder::new()))
        .runtime(runtime.clone())
        .router(router.clone())
        .work_dir(dir.path().join("work"))
        .stop_grace(Duration::ZERO)
        .build()
        .unwrap();
    let tokens = Arc::new(Tokens::load(dir.path()).unwrap());
    let admin = tokens.create("operator", true, BTreeMap::new()).unwrap();
    let metrics = wharf_server::api::metrics::Metrics::watching(&engine);
    let app = App {
        engine,
        store: store.clone(),
        tokens: tokens.clone(),
        data_dir: dir.path().to_owned(),
        proxy_port: Some(8080),
        https: false,
        webhook_secret: webhook_secret.map(Secret::new),
        deliveries: Default::default(),
        isolated: true,
        metrics,
        database_images: wharf_core::database::local_images(),
        backups: wharf_backup::Backups::open(
            runtime.clone(),
            None,
            dir.path().join("backups"),
            dir.path().join("restores"),
            wharf_core::store::Sealer::new(&[1u8; 32]),
        )
        .unwrap()
        .allow_endpoints(wharf_backup::AllowedEndpoints::parse("http://127.0.0.1:9").unwrap())
        .unwrap(),
        domains: Arc::new(
            wharf_server::domains::Domains::load(dir.path(), wharf_server::domains::Check::Off)
                .unwrap(),
        ),
    };
    MemoryApp {
        app,
        store,
        router,
        runtime,
        faults,
        tokens,
        admin,
        dir,
    }
}

/// The API in process, with an operator token.
pub(crate) struct Api {
    router: axum::Router,
    /// Its tokens.
    pub(crate) tokens: Arc<Tokens>,
    /// The operator's token.
    pub(crate) admin: String,
    _dir: tempfile::TempDir,
}

/// A new API on empty in-memory backends.
pub(crate) fn api() -> Api {
    api_with(None)
}

/// A new API on empty in-memory backends; webhooks are signed with `webhook_secret`.
pub(crate) fn api_with(webhook_secret: Option<&str>) -> Api {
    let m = memory_app(webhook_secret);
    Api {
        router: api::router(m.app),
        tokens: m.tokens,
        admin: m.admin,
        _dir: m.dir,
    }
}

/// `method path` through `router` with `token` and a JSON `body`; the status and the
/// JSON answer (null if none).
pub(crate) async fn call(
    router: &axum::Router,
    method: &Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    send(router, req.body(body).unwrap()).await
}

/// Sends `req` through `router`; the status and the JSON body (null if none).
pub(crate) async fn send(router: &axum::Router, req: Request<Body>) -> (u16, Value) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

impl Api {
    /// Sends a request; the status and the JSON body (null if none).
    pub(crate) async fn call(
        &self,
        method: &Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        call(&self.router, method, path, token, body).await
    }

    /// `method path` with `headers` and a JSON `body`, no token; the status and the
    /// JSON answer.
    pub(crate) async fn call_with_headers(
        &self,
        method: &Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Value,
    ) -> (u16, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        send(
            &self.router,
            req.body(Body::from(body.to_string())).unwrap(),
        )
        .await
    }

    /// `method path` with `token`; the status and the body as text.
    pub(crate) async fn text(
        &self,
        method: &Method,
        path: &str,
        token: Option<&str>,
    ) -> (u16, String) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The `id` of what `GET path` shows the operator.
    pub(crate) async fn id_of(&self, path: &str) -> String {
        let (status, v) = self.call(&Method::GET, path, Some(&self.admin), None).await;
        v["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: {status} {v}"))
            .to_owned()
    }

    /// A project `name` with a service `web` (an image), a standing environment
    /// `staging` holding a service `web` too, and one deployment of `web`; its id.
    pub(crate) async fn project(&self, name: &str) -> String {
        let admin = Some(self.admin.as_str());
        let put = |path: String, body: Value| async move {
            let (status, b) = self.call(&Method::PUT, &path, admin, Some(body)).await;
            assert!(status < 300, "{path}: {status} {b}");
        };
        let (status, b) = self
            .call(
                &Method::POST,
                "/v1/projects",
                admin,
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(status, 201, "{b}");
        let image = json!({"source": {"image": "wharf-test/web:1"}});
        put(format!("/v1/projects/{name}/services/web"), image.clone()).await;
        put(
            format!("/v1/projects/{name}/environments/staging"),
            json!({}),
        )
        .await;
        put(
            format!("/v1/projects/{name}/environments/staging/services/web"),
            image,
        )
        .await;
        let (status, dep) = self
            .call(
                &Method::POST,
                &format!("/v1/projects/{name}/services/web/deployments"),
                admin,
                None,
            )
            .await;
        assert_eq!(status, 202, "{dep}");
        dep["id"].as_str().unwrap().to_owned()
    }
}
