//! The backups API in process (in-memory runtime, which keeps a volume's archive): a
//! backup that fails is answered and listed as failed with its error, the S3 secret
//! never comes back, restore needs its confirmation and a succeeded backup, and a
//! restore into a volume a live service mounts stops it and starts it again.

mod inproc;

use axum::http::Method;
use futures::StreamExt as _;
use serde_json::{json, Value};
use wharf_core::traits::Runtime as _;
use wharf_core::{DeploymentState, Store as _, StoreExt as _, Trigger, VolumeRef};

#[tokio::test]
async fn a_failed_backup_is_listed_failed_and_the_destination_secret_never_comes_back() {
    let api = inproc::api();
    api.project("shop").await;
    let admin = Some(api.admin.as_str());
    // No destination yet: refused, nothing recorded.
    let (status, body) = api
        .call(
            &Method::POST,
            "/v1/projects/shop/backups",
            admin,
            Some(json!({"volume": "data"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    let settings = json!({"destination": {"kind": "s3", "endpoint": "http://127.0.0.1:9",
        "bucket": "wharf-b", "access_key_id": "AK", "secret_access_key": "top-secret-key"},
        "volumes": {"data": {"schedule": "0 3 * * *", "keep_last": 3, "keep_days": 14}}});
    let (status, body) = api
        .call(
            &Method::PUT,
            "/v1/projects/shop/backups/settings",
            admin,
            Some(settings),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, shown) = api
        .call(
            &Method::GET,
            "/v1/projects/shop/backups/settings",
            admin,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(!shown.to_string().contains("top-secret-key"), "{shown}");
    assert_eq!(shown["destination"]["bucket"], "wharf-b");
    assert_eq!(shown["volumes"]["data"]["keep_last"], 3);
    assert_eq!(shown["volumes"]["data"]["keep_days"], 14);
    // An endpoint the operator did not list (here the cloud metadata address) is
    // refused, and the stored settings stay as they were.
    let internal = json!({"destination": {"kind": "s3", "endpoint": "http://169.254.169.254",
        "bucket": "wharf-b", "access_key_id": "AK", "secret_access_key": "k"}});
    let (status, text) = api
        .call(
            &Method::PUT,
            "/v1/projects/shop/backups/settings",
            admin,
            Some(internal),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.to_string().contains("backup_endpoints"), "{text}");
    let (_, still) = api
        .call(
            &Method::GET,
            "/v1/projects/shop/backups/settings",
            admin,
            None,
        )
        .await;
    assert_eq!(
        still["destination"]["endpoint"], "http://127.0.0.1:9",
        "{still}"
    );
    // Keeping nothing is not a policy.
    for zero in [json!({"keep_last": 0}), json!({"keep_days": 0})] {
        let body = json!({"destination": {"kind": "local"}, "volumes": {"data": zero}});
        let (status, text) = api
            .call(
                &Method::PUT,
                "/v1/projects/shop/backups/settings",
                admin,
                Some(body),
            )
            .await;
        assert_eq!(status, 400, "{zero}: {text}");
    }
    // A bad cron expression is refused.
    let bad =
        json!({"destination": {"kind": "local"}, "volumes": {"data": {"schedule": "61 * * * *"}}});
    let (status, _) = api
        .call(
            &Method::PUT,
            "/v1/projects/shop/backups/settings",
            admin,
            Some(bad),
        )
        .await;
    assert_eq!(status, 400);

    // No service made volume `data`: the backup fails, recorded.
    let (status, b) = api
        .call(
            &Method::POST,
            "/v1/projects/shop/backups",
            admin,
            Some(json!({"volume": "data"})),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    assert_eq!(b["state"], "failed", "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("no volume data"),
        "{b}"
    );
    assert_eq!(b["sha256"], serde_json::Value::Null);
    let (_, list) = api
        .call(&Method::GET, "/v1/projects/shop/backups", admin, None)
        .await;
    assert_eq!(list[0]["id"], b["id"]);
    assert_eq!(list[0]["state"], "failed");

    let restore = format!(
        "/v1/projects/shop/backups/{}/restore",
        b["id"].as_str().unwrap()
    );
    let (status, _) = api
        .call(
            &Method::POST,
            &restore,
            admin,
            Some(json!({"confirm": "other"})),
        )
        .await;
    assert_eq!(status, 400, "confirmation must name the volume");
    let (status, body) = api
        .call(
            &Method::POST,
            &restore,
            admin,
            Some(json!({"confirm": "data"})),
        )
        .await;
    assert_eq!(status, 409, "a failed backup is never restored: {body}");
    assert!(
        body.to_string().contains("only a succeeded backup"),
        "{body}"
    );
}

/// An archive of a volume holding one file, `file`, with `text`.
fn archive(text: &str) -> bytes::Bytes {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "volume/file", text.as_bytes())
        .unwrap();
    bytes::Bytes::from(b.into_inner().unwrap())
}

async fn contents(rt: &wharf_core::memory::MemoryRuntime, v: &VolumeRef) -> bytes::Bytes {
    let parts: Vec<_> = rt.export_volume(v).await.unwrap().collect().await;
    parts
        .into_iter()
        .map(Result::unwrap)
        .collect::<Vec<_>>()
        .concat()
        .into()
}

/// Project `shop` on the in-memory backends, backing up to the local folder.
struct Shop {
    m: inproc::MemoryApp,
    router: axum::Router,
    project: wharf_core::Project,
}

impl Shop {
    async fn new() -> Shop {
        let m = inproc::memory_app(None);
        let router = wharf_server::api::router(m.app.clone());
        let (s, b) = inproc::call(
            &router,
            &Method::POST,
            "/v1/projects",
            Some(&m.admin),
            Some(json!({"name": "shop"})),
        )
        .await;
        assert_eq!(s, 201, "{b}");
        let project = m.store.project_by_name("shop").await.unwrap();
        let shop = Shop { m, router, project };
        let (s, b) = shop
            .call(
                Method::PUT,
                "/v1/projects/shop/backups/settings",
                Some(json!({"destination": {"kind": "local"}})),
            )
            .await;
        assert_eq!(s, 204, "{b}");
        shop
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        inproc::call(&self.router, &method, path, Some(&self.m.admin), body).await
    }

    /// Service `name` mounting volume `data` (not deployed yet), and that volume.
    async fn service_with_data(&self, name: &str) -> (wharf_core::Service, VolumeRef) {
        let svc = json!({"source": {"image": "app:1"}, "port": 8080,
            "volumes": [{"name": "data", "path": "/data"}]});
        let (s, b) = self
            .call(
                Method::PUT,
                &format!("/v1/projects/shop/services/{name}"),
                Some(svc),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let svc = self
            .m
            .store
            .service_by_name(&self.project.id, None, name)
            .await
            .unwrap();
        let volume = self
            .m
            .app
            .engine
            .volume_refs(&self.project, &svc)
            .await
            .unwrap()
            .remove(0);
        (svc, volume)
    }

    /// Deploys `svc`, which must go live.
    async fn deploy(&self, svc: &wharf_core::Service) -> wharf_core::Deployment {
        let d = self
            .m
            .app
            .engine
            .deploy(&svc.id, Trigger::Manual)
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
        assert_eq!(d.state, DeploymentState::Live);
        d
    }

    /// Backs up volume `data` now, which must succeed; the backup.
    async fn backup_data(&self) -> Value {
        let (s, backup) = self
            .call(
                Method::POST,
                "/v1/projects/shop/backups",
                Some(json!({"volume": "data"})),
            )
            .await;
        assert_eq!(
            (s, backup["state"].as_str()),
            (201, Some("succeeded")),
            "{backup}"
        );
        backup
    }
}

#[tokio::test]
async fn a_restore_under_a_live_service_stops_it_and_starts_its_release_again() {
    let shop = Shop::new().await;
    let m = &shop.m;
    let (web, volume) = shop.service_with_data("web").await;

    // The volume holds A when it is backed up, then B when the service goes live.
    m.runtime
        .import_volume(&volume, futures::stream::iter([Ok(archive("A"))]).boxed())
        .await
        .unwrap();
    let backup = shop.backup_data().await;
    m.runtime
        .import_volume(&volume, futures::stream::iter([Ok(archive("B"))]).boxed())
        .await
        .unwrap();
    let first = shop.deploy(&web).await;
    let old_instance = first.instance.clone().unwrap().id;

    let restore = format!(
        "/v1/projects/shop/backups/{}/restore",
        backup["id"].as_str().unwrap()
    );
    // Without restart: refused, the volume and the service as they were.
    let (s, b) = shop
        .call(Method::POST, &restore, Some(json!({"confirm": "data"})))
        .await;
    assert_eq!(s, 409, "{b}");
    assert!(b.to_string().contains("restart"), "{b}");
    assert_eq!(contents(&m.runtime, &volume).await, archive("B"));
    assert!(m.runtime.instances().iter().any(|i| i.id == old_instance));

    // With restart: stopped, restored, and its release live again on a new instance.
    let (s, b) = shop
        .call(
            Method::POST,
            &restore,
            Some(json!({"confirm": "data", "restart": true})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(contents(&m.runtime, &volume).await, archive("A"));
    let live = m.store.live_deployment(&web.id).await.unwrap().unwrap();
    assert_ne!(live.id, first.id);
    assert_eq!(
        live.trigger,
        Trigger::Rollback {
            release: first.release.clone().unwrap(),
            run_release: false,
        }
    );
    let now = m.runtime.instances();
    assert!(
        !now.iter().any(|i| i.id == old_instance),
        "the old instance still runs"
    );
    assert!(now
        .iter()
        .any(|i| Some(&i.id) == live.instance.as_ref().map(|i| &i.id)));
    // Never two writers: the new instance started after the old one stopped.
    assert_eq!(m.runtime.most_writers(), 1);
}

/// A restore under two live services of which the second cannot be stopped: nothing
/// is restored, and the first, already stopped, is started again on its release.
#[tokio::test]
async fn a_restore_that_cannot_stop_every_service_restores_nothing_and_restarts_the_rest() {
    let shop = Shop::new().await;
    let m = &shop.m;
    let mut first = Vec::new();
    let mut volume = None;
    for name in ["alpha", "zulu"] {
        let (svc, v) = shop.service_with_data(name).await;
        let d = shop.deploy(&svc).await;
        volume = Some(v);
        first.push((svc, d));
    }
    let volume = volume.unwrap();
    let backup = shop.backup_data().await;
    let before = contents(&m.runtime, &volume).await;

    m.faults.update("zulu", |f| f.fail_stop = true);
    let restore = format!(
        "/v1/projects/shop/backups/{}/restore",
        backup["id"].as_str().unwrap()
    );
    let (s, b) = shop
        .call(
            Method::POST,
            &restore,
            Some(json!({"confirm": "data", "restart": true})),
        )
        .await;
    assert!(s >= 500, "{s}: {b}");
    assert!(b.to_string().contains("nothing was restored"), "{b}");
    assert_eq!(contents(&m.runtime, &volume).await, before);
    // alpha was stopped, then started again; zulu never stopped.
    let (alpha, zulu) = (&first[0], &first[1]);
    let live = m.store.live_deployment(&alpha.0.id).await.unwrap().unwrap();
    assert_ne!(live.id, alpha.1.id, "alpha was left stopped");
    assert_eq!(
        live.trigger,
        Trigger::Rollback {
            release: alpha.1.release.clone().unwrap(),
            run_release: false,
        }
    );
    let running: Vec<_> = m.runtime.instances().into_iter().map(|i| i.id).collect();
    assert!(running.contains(&live.instance.clone().unwrap().id));
    assert_eq!(
        m.store
            .live_deployment(&zulu.0.id)
            .await
            .unwrap()
            .unwrap()
            .id,
        zulu.1.id
    );
    assert!(running.contains(&zulu.1.instance.clone().unwrap().id));
}
