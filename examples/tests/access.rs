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
    let image_of = |v: &serde_json::Value| v["source"]["image"].as_str().map(str::to_owned);
    // Deploys as `who` (with `image` as the source, if any): the image deployed and
    // then the service's own.
    let deploy = |who: String, image: Option<&'static str>| {
        let api = &api;
        async move {
            let body = image.map(|i| json!({"source": {"image": i}}));
            let path = "/v1/projects/shop/services/web";
            let deploys = format!("{path}/deployments");
            let (status, dep) = api.call(&Method::POST, &deploys, Some(&who), body).await;
            assert_eq!(status, 202, "{dep}");
            let (_, svc) = api.call(&Method::GET, path, Some(&who), None).await;
            (image_of(&dep), image_of(&svc))
        }
    };
    let own = Some("wharf-test/web:1".to_owned());
    let evil = Some("elsewhere/evil:1".to_owned());
    assert_eq!(
        deploy(dev.clone(), Some("elsewhere/evil:1")).await,
        (evil, own.clone())
    );
    // A later deploy without a source builds the service's own again.
    assert_eq!(deploy(dev, None).await, (own.clone(), own));
    let v2 = Some("wharf-test/web:2".to_owned());
    assert_eq!(
        deploy(owner, Some("wharf-test/web:2")).await,
        (v2.clone(), v2)
    );
}

/// Roles are held by project name: a project deleted and made again under its name (by
/// another team, say) gives nothing to the tokens that held roles in the old one.
#[tokio::test]
async fn roles_in_a_deleted_project_do_not_pass_to_a_new_one_of_its_name() {
    let api = api();
    api.project("shop").await;
    let dev = api
        .tokens
        .create("d", false, BTreeMap::from([("shop".into(), Role::Owner)]))
        .unwrap();
    let (status, body) = api
        .call(&Method::GET, "/v1/projects/shop", Some(&dev), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api
        .call(&Method::DELETE, "/v1/projects/shop", Some(&dev), None)
        .await;
    assert_eq!(status, 204, "{body}");
    api.project("shop").await;
    let (status, body) = api
        .call(&Method::GET, "/v1/projects/shop", Some(&dev), None)
        .await;
    assert_eq!(status, 404, "the old owner reaches the new shop: {body}");
    let record = api
        .tokens
        .list()
        .into_iter()
        .find(|r| r.name == "d")
        .unwrap();
    assert!(record.projects.is_empty(), "{:?}", record.projects);
}
