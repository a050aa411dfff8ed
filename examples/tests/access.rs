//! A token with a role in one project reaches nothing of another through ids: a
//! service id, a deployment id or a project id of another project answers as if it
//! did not exist.

mod inproc;

use std::collections::BTreeMap;

use axum::http::Method;
use inproc::api;
use serde_json::json;
use wharf_server::auth::Role;

#[tokio::test]
async fn ids_of_another_project_are_absent() {
    let api = api();
    let shop_dep = api.project("shop").await;
    let blog_dep = api.project("blog").await;
    let blog_web = api.id_of("/v1/projects/blog/services/web").await;
    let blog = api.id_of("/v1/projects/blog").await;
    let blog_staging = api
        .id_of("/v1/projects/blog/environments/staging/services/web")
        .await;
    let blog_env = api.id_of("/v1/projects/blog/environments/staging").await;
    let owner = api
        .tokens
        .create("o", false, BTreeMap::from([("shop".into(), Role::Owner)]))
        .unwrap();
    let shop_web = "/v1/projects/shop/services";
    let shop_env = "/v1/projects/shop/environments";
    for (method, path) in [
        // blog's service by its id, through shop's path (and shop's environment).
        (Method::GET, format!("{shop_web}/{blog_web}")),
        (Method::DELETE, format!("{shop_web}/{blog_web}")),
        (
            Method::GET,
            format!("{shop_env}/staging/services/{blog_staging}"),
        ),
        // shop's own environment service id is not a project service either.
        (Method::GET, format!("{shop_web}/{blog_staging}")),
        // blog's environment by its id, through shop's path.
        (Method::GET, format!("{shop_env}/{blog_env}")),
        (Method::DELETE, format!("{shop_env}/{blog_env}")),
        // blog by its id; blog's deployment.
        (Method::GET, format!("/v1/projects/{blog}")),
        (Method::GET, format!("/v1/deployments/{blog_dep}")),
        (Method::POST, format!("/v1/deployments/{blog_dep}/cancel")),
        (Method::GET, format!("/v1/deployments/{blog_dep}/events")),
    ] {
        let (status, body) = api.call(&method, &path, Some(&owner), None).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    // The same requests for shop's own records succeed.
    let (status, body) = api
        .call(
            &Method::GET,
            &format!("/v1/deployments/{shop_dep}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let by_id = format!("/v1/projects/{}", api.id_of("/v1/projects/shop").await);
    let (status, body) = api.call(&Method::GET, &by_id, Some(&owner), None).await;
    assert_eq!((status, &body["name"]), (200, &json!("shop")), "{body}");
    // A name the caller holds no role in answers like one that does not exist.
    let (s1, b1) = api
        .call(&Method::GET, "/v1/projects/blog", Some(&owner), None)
        .await;
    let (s2, b2) = api
        .call(&Method::GET, "/v1/projects/nothing", Some(&owner), None)
        .await;
    assert_eq!((s1, s2), (404, 404));
    assert_eq!(b1["error"]["code"], b2["error"]["code"]);
}

/// A developer deploys a source once; only an owner changes what the service is
/// built from (issue 16, item 10).
#[tokio::test]
async fn a_developers_one_off_source_is_not_saved_but_an_owners_is() {
    let api = api();
    api.project("shop").await;
    let token = |role: Role| {
        api.tokens
            .create("t", false, BTreeMap::from([("shop".into(), role)]))
            .unwrap()
    };
    let (dev, owner) = (token(Role::Developer), token(Role::Owner));
    let deploys = "/v1/projects/shop/services/web/deployments";
    let image_of = |v: &serde_json::Value| v["source"]["image"].as_str().map(str::to_owned);

    let body = json!({"source": {"image": "elsewhere/evil:1"}});
    let (status, dep) = api
        .call(&Method::POST, deploys, Some(&dev), Some(body))
        .await;
    assert_eq!(status, 202, "{dep}");
    assert_eq!(image_of(&dep).as_deref(), Some("elsewhere/evil:1"));
    let (_, svc) = api
        .call(
            &Method::GET,
            "/v1/projects/shop/services/web",
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(image_of(&svc).as_deref(), Some("wharf-test/web:1"), "{svc}");
    // A later deploy without a source builds the service's own again.
    let (_, dep) = api.call(&Method::POST, deploys, Some(&dev), None).await;
    assert_eq!(image_of(&dep).as_deref(), Some("wharf-test/web:1"), "{dep}");

    let body = json!({"source": {"image": "wharf-test/web:2"}});
    let (status, _) = api
        .call(&Method::POST, deploys, Some(&owner), Some(body))
        .await;
    assert_eq!(status, 202);
    let (_, svc) = api
        .call(
            &Method::GET,
            "/v1/projects/shop/services/web",
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(image_of(&svc).as_deref(), Some("wharf-test/web:2"), "{svc}");
}
