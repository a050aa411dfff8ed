//! The OpenAPI document against the router it is generated with: every documented
//! operation is routed and every other method of a documented path is not (405);
//! each operation's `security` scope is the least role the API really enforces; path
//! parameters are declared, operation ids unique and links point at operations that
//! exist.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::{json, Value};
use tower::ServiceExt;
use wharf_core::memory::{MemoryBuilder, MemoryRouter, MemoryRuntime};
use wharf_core::store::MemoryStore;
use wharf_core::Engine;
use wharf_server::api::{self, App};
use wharf_server::auth::{Role, Tokens};

struct Api {
    router: axum::Router,
    tokens: Arc<Tokens>,
    admin: String,
    _dir: tempfile::TempDir,
}

fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .store(Arc::new(MemoryStore::new()))
        .builder(Arc::new(MemoryBuilder::new()))
        .runtime(Arc::new(MemoryRuntime::new()))
        .router(Arc::new(MemoryRouter::new()))
        .work_dir(dir.path().join("work"))
        .stop_grace(Duration::ZERO)
        .build()
        .unwrap();
    let tokens = Arc::new(Tokens::load(dir.path()).unwrap());
    let admin = tokens.create("operator", true, BTreeMap::new()).unwrap();
    let app = App {
        store: engine.store().clone(),
        engine,
        tokens: tokens.clone(),
        data_dir: dir.path().to_owned(),
        proxy_port: Some(8080),
        https: false,
        webhook_secret: None,
        deliveries: Default::default(),
        domains: Arc::new(
            wharf_server::domains::Domains::load(dir.path(), wharf_server::domains::Check::Off)
                .unwrap(),
        ),
    };
    Api {
        router: api::router(app),
        tokens,
        admin,
        _dir: dir,
    }
}

impl Api {
    async fn call(
        &self,
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
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn document(&self) -> Value {
        let (status, doc) = self.call(&Method::GET, "/openapi.json", None, None).await;
        assert_eq!(status, 200);
        doc
    }

    /// A project `name` with a service `web` (an image), a standing environment
    /// `staging` holding a service `web` too, and one deployment of `web`; its id.
    async fn project(&self, name: &str) -> String {
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

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                out.push((m.to_owned(), path.clone(), op.clone()));
            }
        }
    }
    out
}

fn fill(path: &str, project: &str, deployment: &str) -> String {
    path.replace("{project}", project)
        .replace("{service}", "web")
        .replace("{environment}", "staging")
        .replace("{domain}", "shop.example.com")
        .replace("{id}", deployment)
}

/// The least role an operation's `security` names (empty: any valid token); `None`
/// when it needs no token.
fn scope(op: &Value) -> Option<String> {
    let security = op.get("security")?.as_array()?;
    let bearer = security.iter().find_map(|s| s.get("bearer")?.as_array())?;
    assert!(bearer.len() <= 1, "{op}");
    Some(
        bearer
            .first()
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    )
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_no_other_method_is() {
    let api = api();
    let doc = api.document().await;
    let ops = operations(&doc);
    assert!(ops.len() >= 45, "only {} operations documented", ops.len());
    for (path, item) in doc["paths"].as_object().unwrap() {
        let uri = fill(path, "nobody", "dep_none");
        for m in METHODS {
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            // The operator's token passes the auth layer, so an undocumented method
            // meets the router's 405 rather than the 401 in front of it.
            let token = item.get(m).is_none().then_some(api.admin.as_str());
            let (status, body) = api.call(&method, &uri, token, None).await;
            match item.get(m) {
                // Routed: an API answer (401 without a token, or the public
                // operation's own answer), never the router's 404/405.
                Some(op) => {
                    assert!(
                        body["error"]["code"].is_string() || status < 300,
                        "{m} {path}: {status} {body}"
                    );
                    if scope(op).is_some() {
                        assert_eq!(status, 401, "{m} {path} answered without a token: {body}");
                    }
                }
                None => assert_eq!(status, 405, "{m} {path} is routed but not documented"),
            }
        }
    }
    // What is served besides the API: the document itself and the dashboard.
    for undocumented in ["/openapi.json", "/"] {
        assert!(doc["paths"].get(undocumented).is_none());
        let (status, _) = api.call(&Method::GET, undocumented, None, None).await;
        assert_eq!(status, 200, "{undocumented}");
    }
}

#[tokio::test]
async fn each_operation_needs_exactly_the_role_its_security_names() {
    let api = api();
    let doc = api.document().await;
    let mut checked = 0;
    for (i, (m, path, op)) in operations(&doc).into_iter().enumerate() {
        let Some(role) = scope(&op) else { continue };
        // A project of its own per operation, so what one call changes cannot
        // change what the next sees.
        let project = format!("p{i}");
        let deployment = api.project(&project).await;
        let grant = |r: Role| BTreeMap::from([(project.clone(), r)]);
        let token = |r: Option<Role>| {
            let roles = r.map(grant).unwrap_or_default();
            api.tokens.create("t", false, roles).unwrap()
        };
        let (below, exact) = match role.as_str() {
            // Any valid token; without one, 401.
            "" => ("wharf_not_a_token".to_owned(), token(None)),
            "operator" => (token(Some(Role::Owner)), api.admin.clone()),
            "viewer" => (token(None), token(Some(Role::Viewer))),
            "developer" => (token(Some(Role::Viewer)), token(Some(Role::Developer))),
            "owner" => (token(Some(Role::Developer)), token(Some(Role::Owner))),
            other => panic!("{m} {path}: unknown scope {other}"),
        };
        let uri = fill(&path, &project, &deployment);
        let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
        let (status, body) = api.call(&method, &uri, Some(&below), None).await;
        // Without any role the project is hidden (404); with too small a role, 403.
        let refused = match role.as_str() {
            "" => 401,
            "viewer" => 404,
            _ => 403,
        };
        assert_eq!(
            status, refused,
            "{m} {path} with a role below {role}: {body}"
        );
        let (status, body) = api.call(&method, &uri, Some(&exact), None).await;
        let hidden = status == 404
            && body["error"]["message"]
                .as_str()
                .is_some_and(|s| s.starts_with("no project"));
        assert!(
            ![401, 403].contains(&status) && !hidden,
            "{m} {path} refused {role}: {status} {body}"
        );
        checked += 1;
    }
    assert_eq!(checked, 42, "operations with a role checked");
}

#[tokio::test]
async fn parameters_operation_ids_and_links_hold_together() {
    let doc = api().document().await;
    let ops = operations(&doc);
    let ids: Vec<&str> = ops
        .iter()
        .map(|(_, _, op)| op["operationId"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "operation ids repeat: {ids:?}");
    for (m, path, op) in &ops {
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let in_path: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        assert_eq!(declared, in_path, "{m} {path}");
        for resp in op["responses"].as_object().unwrap().values() {
            for (name, link) in resp["links"].as_object().into_iter().flatten() {
                let target = link["operationId"].as_str().unwrap();
                assert!(
                    unique.contains(target),
                    "{m} {path}: link {name} to unknown {target}"
                );
            }
        }
    }
    let deploy = &doc["paths"]["/v1/projects/{project}/services/{service}/deployments"]["post"];
    assert_eq!(
        deploy["responses"]["202"]["links"]["GetDeployment"]["parameters"]["id"],
        "$response.body#/id"
    );
    // The constraints the API enforces are in the schemas.
    let name = &doc["components"]["schemas"]["NewProject"]["properties"]["name"];
    assert_eq!(name["maxLength"], 63, "{name}");
    assert!(name["pattern"].is_string(), "{name}");
}
