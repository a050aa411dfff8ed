//! The volumes API on the in-memory backends: listing with mounts and the runtime's
//! view, a deletion that needs its confirmation and waits for no live service to
//! mount the volume, and a project deletion that keeps volumes unless asked.

mod inproc;

use axum::http::Method;
use serde_json::{json, Value};
use wharf_core::traits::Runtime;
use wharf_core::{ProjectId, Store as _, Trigger};

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

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        inproc::call(&self.router, &method, path, Some(&self.m.admin), body).await
    }

    /// Project `name` with a live service `web` mounting volume `data`; its id.
    async fn live_project(&self, name: &str) -> ProjectId {
        let (s, b) = self
            .call(Method::POST, "/v1/projects", Some(json!({"name": name})))
            .await;
        assert_eq!(s, 201, "{b}");
        let svc = json!({"source": {"image": "app:1"}, "port": 8080,
            "volumes": [{"name": "data", "path": "/data", "size": "1Gi"}]});
        let (s, b) = self
            .call(
                Method::PUT,
                &format!("/v1/projects/{name}/services/web"),
                Some(svc),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let project = self.m.store.project_by_name(name).await.unwrap();
        let web = self
            .m
            .store
            .service_by_name(&project.id, None, "web")
            .await
            .unwrap();
        let h = self
            .m
            .app
            .engine
            .deploy(&web.id, Trigger::Manual)
            .await
            .unwrap();
        assert_eq!(
            h.wait().await.unwrap().state,
            wharf_core::DeploymentState::Live
        );
        project.id
    }

    async fn held(&self, project: &ProjectId) -> usize {
        self.m.runtime.volumes(project, &[]).await.unwrap().len()
    }
}

#[tokio::test]
async fn volumes_are_listed_and_deleted_only_when_confirmed_and_unused() {
    let e = Env::new();
    let id = e.live_project("shop").await;

    let (s, list) = e.call(Method::GET, "/v1/projects/shop/volumes", None).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(
        list,
        json!([{"name": "data", "environment": null, "size": "1Gi", "exists": true,
            "runtime_name": "wharf-shop.data", "size_bytes": 0,
            "scope": "wharf-shop", "orphaned": false,
            "mounted_by": [{"service": "web", "path": "/data", "live": true}]}])
    );

    let path = "/v1/projects/shop/volumes/data";
    let (s, b) = e.call(Method::DELETE, path, None).await;
    assert_eq!(s, 400, "no confirmation: {b}");
    let (s, b) = e
        .call(Method::DELETE, path, Some(json!({"confirm": "dat"})))
        .await;
    assert_eq!(s, 400, "wrong confirmation: {b}");
    let (s, b) = e
        .call(Method::DELETE, path, Some(json!({"confirm": "data"})))
        .await;
    assert_eq!(s, 409, "a live service mounts it: {b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("web"),
        "{b}"
    );
    assert_eq!(e.held(&id).await, 1);

    // Deleting the service keeps the volume; then the confirmed delete removes it.
    let (s, b) = e
        .call(Method::DELETE, "/v1/projects/shop/services/web", None)
        .await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(
        e.held(&id).await,
        1,
        "deleting the service deleted its volume"
    );
    let (s, b) = e
        .call(Method::DELETE, path, Some(json!({"confirm": "data"})))
        .await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(e.held(&id).await, 0);
    let (s, _) = e
        .call(Method::DELETE, path, Some(json!({"confirm": "data"})))
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn bad_volumes_are_refused() {
    let e = Env::new();
    e.call(Method::POST, "/v1/projects", Some(json!({"name": "shop"})))
        .await;
    for bad in [
        json!([{"name": "data", "path": "/data", "size": "1GB"}]),
        json!([{"name": "data", "path": "relative"}]),
        json!([{"name": "../x", "path": "/data"}]),
        json!([{"name": "a", "path": "/d"}, {"name": "b", "path": "/d"}]),
    ] {
        let (s, b) = e
            .call(
                Method::PUT,
                "/v1/projects/shop/services/web",
                Some(json!({"volumes": bad})),
            )
            .await;
        assert_eq!(s, 400, "{bad}: {b}");
    }
    let (s, _) = e
        .call(
            Method::DELETE,
            "/v1/projects/shop/volumes/Bad_Name",
            Some(json!({"confirm": "Bad_Name"})),
        )
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn deleting_a_project_keeps_its_volumes_unless_asked() {
    let e = Env::new();
    let kept = e.live_project("keeps").await;
    let gone = e.live_project("drops").await;
    let (s, b) = e
        .call(Method::DELETE, "/v1/projects/keeps?volumes=maybe", None)
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = e.call(Method::DELETE, "/v1/projects/keeps", None).await;
    assert_eq!(s, 204, "{b}");
    // Deleting data takes the project's name as confirmation, as a volume's does.
    for bad in ["", "&confirm=keeps"] {
        let path = format!("/v1/projects/drops?volumes=delete{bad}");
        let (s, b) = e.call(Method::DELETE, &path, None).await;
        assert_eq!(s, 400, "{path}: {b}");
    }
    assert_eq!(
        e.held(&gone).await,
        1,
        "an unconfirmed delete took the volume"
    );
    let (s, b) = e
        .call(
            Method::DELETE,
            "/v1/projects/drops?volumes=delete&confirm=drops",
            None,
        )
        .await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(
        e.held(&kept).await,
        1,
        "the project's volume went without the flag"
    );
    assert_eq!(e.held(&gone).await, 0, "?volumes=delete left the volume");
}

/// A volume left by a deleted environment is listed as such (not as the project's
/// own `data`), and only `?scope=` deletes it: a plain delete of `data` would name
/// the project's own volume.
#[tokio::test]
async fn a_deleted_environments_volume_is_shown_apart_and_deleted_by_its_scope() {
    let e = Env::new();
    let id = e.live_project("shop").await;
    let (s, b) = e
        .call(
            Method::PUT,
            "/v1/projects/shop/environments/tmp",
            Some(json!({})),
        )
        .await;
    assert!(s < 300, "{b}");
    let svc = json!({"source": {"image": "app:1"}, "port": 8080,
        "volumes": [{"name": "data", "path": "/data"}]});
    let (s, b) = e
        .call(
            Method::PUT,
            "/v1/projects/shop/environments/tmp/services/web",
            Some(svc),
        )
        .await;
    assert!(s < 300, "{b}");
    let env = e.m.store.environment_by_name(&id, "tmp").await.unwrap();
    let web =
        e.m.store
            .service_by_name(&id, Some(&env.id), "web")
            .await
            .unwrap();
    let h =
        e.m.app
            .engine
            .deploy(&web.id, Trigger::Manual)
            .await
            .unwrap();
    h.wait().await.unwrap();
    let (s, b) = e
        .call(Method::DELETE, "/v1/projects/shop/environments/tmp", None)
        .await;
    assert!(s < 300, "{b}");
    assert_eq!(
        e.held(&id).await,
        2,
        "deleting the environment kept its volume"
    );

    let (_, list) = e.call(Method::GET, "/v1/projects/shop/volumes", None).await;
    let left: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["orphaned"] == true)
        .collect();
    assert_eq!(left.len(), 1, "{list}");
    assert_eq!(left[0]["scope"], "wharf-shop_tmp", "{list}");
    assert_eq!(left[0]["environment"], Value::Null, "{list}");

    let confirm = Some(json!({"confirm": "data"}));
    // ?scope= reaches only an orphaned volume: not the project's own.
    let (s, b) = e
        .call(
            Method::DELETE,
            "/v1/projects/shop/volumes/data?scope=wharf-shop",
            confirm.clone(),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = e
        .call(
            Method::DELETE,
            "/v1/projects/shop/volumes/data?scope=wharf-shop_tmp",
            confirm,
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let held = e.m.runtime.volumes(&id, &[]).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(
        held[0].volume.scope.as_deref(),
        Some("wharf-shop"),
        "the project's own stays"
    );
}
