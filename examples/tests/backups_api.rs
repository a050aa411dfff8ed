//! The backups API in process (in-memory runtime, which cannot export volumes): a
//! backup that fails is answered and listed as failed with its error, the S3 secret
//! never comes back, and restore needs its confirmation and a succeeded backup.

mod inproc;

use axum::http::Method;
use serde_json::json;

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

    // The in-memory runtime cannot export a volume: the backup fails, recorded.
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
        b["error"].as_str().unwrap().contains("cannot export"),
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
