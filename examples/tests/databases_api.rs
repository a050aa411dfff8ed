//! The databases API on the in-memory backends: creating a database makes a private
//! service from the engine's template and deploys it, the listing never shows the
//! password, the credentials operation does (owners only: see `authz_matrix.rs`), a
//! service referencing `${{ pg.DATABASE_URL }}` gets the URL, and bad input is refused
//! before anything is stored.

mod inproc;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::Method;
use serde_json::{json, Value};
use wharf_core::{DeploymentState, Store as _, StoreExt as _};
use wharf_server::auth::Role;

struct Env {
    m: inproc::MemoryApp,
    router: axum::Router,
}

impl Env {
    fn new() -> Env {
        let m = inproc::memory_app(None);
        let router = wharf_server::api::router(m.app.clone());
        Env { m, router }
    }

    async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        inproc::call(&self.router, &method, path, Some(token), body).await
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let admin = self.m.admin.clone();
        self.call_as(&admin, method, path, body).await
    }

    /// Waits until deployment `id` is live (or fails the test).
    async fn live(&self, id: &str) {
        for _ in 0..200 {
            let (s, d) = self
                .call(Method::GET, &format!("/v1/deployments/{id}"), None)
                .await;
            assert_eq!(s, 200, "{d}");
            match d["state"]["state"].as_str().or(d["state"].as_str()) {
                Some("live") => return,
                Some("failed") | Some("cancelled") | Some("skipped") => panic!("{d}"),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        panic!("deployment {id} did not go live");
    }
}

#[tokio::test]
async fn a_database_is_made_private_deployed_and_referenced_and_only_owners_see_its_password() {
    let e = Env::new();
    let (s, b) = e
        .call(Method::POST, "/v1/projects", Some(json!({"name": "shop"})))
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, db) = e
        .call(
            Method::POST,
            "/v1/projects/shop/databases",
            Some(json!({"name": "pg", "engine": "postgres"})),
        )
        .await;
    assert_eq!(s, 201, "{db}");
    assert_eq!(db["engine"], "postgres");
    assert_eq!(db["version"], "15");
    assert_eq!(db["image"], "wharf-local/postgres:15");
    assert_eq!(db["port"], 5432);
    assert_eq!(db["public"], false);
    assert_eq!(db["user"], "pg");
    assert_eq!(db["reference"], "${{ pg.DATABASE_URL }}");
    e.live(db["deployment"].as_str().unwrap()).await;

    // Private: no route for its hostname.
    assert!(e.m.router.resolve("pg.shop.localhost", "/").is_none());

    // The password: only through the credentials operation.
    let (s, list) = e
        .call(Method::GET, "/v1/projects/shop/databases", None)
        .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0]["live_deployment"].is_string(), "{list}");
    let (s, creds) = e
        .call(
            Method::GET,
            "/v1/projects/shop/databases/pg/credentials",
            None,
        )
        .await;
    assert_eq!(s, 200, "{creds}");
    let password = creds["password"].as_str().unwrap().to_owned();
    assert_eq!(password.len(), 32);
    assert!(!list.to_string().contains(&password), "{list}");
    assert_eq!(creds["url"], format!("postgres://pg:{password}@pg:5432/pg"));
    // The service view masks it as every secret.
    let (_, svc) = e
        .call(Method::GET, "/v1/projects/shop/services/pg", None)
        .await;
    assert!(!svc.to_string().contains(&password), "{svc}");
    // A developer of the project gets 403 for the credentials.
    let dev =
        e.m.tokens
            .create(
                "d",
                false,
                BTreeMap::from([("shop".to_owned(), Role::Developer)]),
            )
            .unwrap();
    let (s, b) = e
        .call_as(
            &dev,
            Method::GET,
            "/v1/projects/shop/databases/pg/credentials",
            None,
        )
        .await;
    assert_eq!(s, 403, "{b}");
    assert!(!b.to_string().contains(&password));

    // A service referencing it gets the URL, resolved at deploy time.
    let (s, b) = e
        .call(
            Method::PUT,
            "/v1/projects/shop/services/api",
            Some(json!({"source": {"image": "api:1"}, "port": 8000,
                "env": {"DATABASE_URL": "${{ pg.DATABASE_URL }}"}})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, dep) = e
        .call(
            Method::POST,
            "/v1/projects/shop/services/api/deployments",
            None,
        )
        .await;
    assert_eq!(s, 202, "{dep}");
    e.live(dep["id"].as_str().unwrap()).await;
    let project = e.m.store.project_by_name("shop").await.unwrap();
    let api =
        e.m.store
            .service_by_name(&project.id, None, "api")
            .await
            .unwrap();
    let live = e.m.store.live_deployment(&api.id).await.unwrap().unwrap();
    assert_eq!(live.state, DeploymentState::Live);
    let spec = e.m.runtime.spec(&live.instance.unwrap().id).unwrap();
    assert_eq!(
        spec.env["DATABASE_URL"],
        format!("postgres://pg:{password}@pg:5432/pg")
    );
    assert!(e.m.router.resolve("api.shop.localhost", "/").is_some());
}

/// Host processes cannot run an engine's image: refused with the reason.
#[tokio::test]
async fn without_containers_databases_are_refused() {
    let mut m = inproc::memory_app(None);
    m.app.isolated = false;
    let router = wharf_server::api::router(m.app.clone());
    let e = Env { m, router };
    e.call(Method::POST, "/v1/projects", Some(json!({"name": "shop"})))
        .await;
    let (s, b) = e
        .call(
            Method::POST,
            "/v1/projects/shop/databases",
            Some(json!({"name": "pg", "engine": "postgres"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("container runtime"),
        "{b}"
    );
    let (_, list) = e
        .call(Method::GET, "/v1/projects/shop/databases", None)
        .await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn bad_database_requests_are_refused_before_anything_is_stored() {
    let e = Env::new();
    e.call(Method::POST, "/v1/projects", Some(json!({"name": "shop"})))
        .await;
    let path = "/v1/projects/shop/databases";
    let (s, b) = e
        .call(
            Method::POST,
            path,
            Some(json!({"name": "db", "engine": "oracle"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = e
        .call(
            Method::POST,
            path,
            Some(json!({"name": "db", "engine": "redis", "version": "7; rm -rf /"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("version"),
        "{b}"
    );
    let (s, b) = e
        .call(
            Method::POST,
            path,
            Some(json!({"name": "Bad_Name", "engine": "redis"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (_, list) = e.call(Method::GET, path, None).await;
    assert_eq!(list, json!([]));

    let (s, b) = e
        .call(
            Method::POST,
            path,
            Some(json!({"name": "cache", "engine": "redis"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = e
        .call(
            Method::POST,
            path,
            Some(json!({"name": "cache", "engine": "mysql"})),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    // Redis has no dump (its volume is the backup); a database not yet live has
    // nothing to dump from.
    let (s, b) = e
        .call(
            Method::POST,
            "/v1/projects/shop/databases/cache/backups",
            None,
        )
        .await;
    assert!(s >= 400, "{s} {b}");
    let message = b["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not live") || message.contains("back up its volume"),
        "{b}"
    );
    // A service that is not a database has no credentials here.
    e.call(
        Method::PUT,
        "/v1/projects/shop/services/web",
        Some(json!({"source": {"image": "web:1"}, "port": 8080})),
    )
    .await;
    let (s, b) = e
        .call(
            Method::GET,
            "/v1/projects/shop/databases/web/credentials",
            None,
        )
        .await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = e
        .call(
            Method::POST,
            "/v1/projects/shop/databases/web/backups",
            None,
        )
        .await;
    assert_eq!(s, 404, "{b}");
}

/// A rotation the database's server refuses (here a runtime that cannot run commands
/// in instances) keeps the recorded password: the record never holds a password the
/// server does not.
#[tokio::test]
async fn a_refused_rotation_keeps_the_old_password_recorded() {
    let e = Env::new();
    let (s, b) = e
        .call(Method::POST, "/v1/projects", Some(json!({"name": "shop"})))
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, db) = e
        .call(
            Method::POST,
            "/v1/projects/shop/databases",
            Some(json!({"name": "pg", "engine": "postgres"})),
        )
        .await;
    assert_eq!(s, 201, "{db}");
    e.live(db["deployment"].as_str().unwrap()).await;
    let creds = "/v1/projects/shop/databases/pg/credentials";
    let (_, before) = e.call(Method::GET, creds, None).await;
    let (s, b) = e
        .call(Method::POST, "/v1/projects/shop/databases/pg/rotate", None)
        .await;
    assert_eq!(s, 409, "{b}");
    assert!(b.to_string().contains("kept its password"), "{b}");
    let (_, after) = e.call(Method::GET, creds, None).await;
    assert_eq!(after["password"], before["password"]);
}
