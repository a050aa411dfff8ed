//! The Keystone v3 client against a real Keystone (scripts/setup-keystone).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use support::{admin_config, keystone, session, with};
use wharf_core::ErrorKind;
use wharf_openstack::{api_error, ApiError, CloudConfig, Credentials, Interface, Session, Token};

/// A session of the admin in the admin project, and the token it authenticated with.
async fn logged_in() -> (Session, Token) {
    let s = session(admin_config(None));
    let token = s.token().await.unwrap();
    (s, token)
}

#[tokio::test]
async fn password_auth_caches_the_token_and_finds_endpoints() {
    with(keystone(), async |_admin| {
        let (s, a) = logged_in().await;
        let b = s.token().await.unwrap();
        assert_eq!(a.expose(), b.expose(), "a valid token must be reused");
        assert_eq!(s.auth_count(), 1);
        assert!(a.project_id.is_some(), "token must be project-scoped");
        let identity = s.endpoint("identity").await.unwrap();
        assert_eq!(identity.trim_end_matches("/v3"), "http://127.0.0.1:5000");
        let err = s.endpoint("no-such-service").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    })
    .await;
}

#[tokio::test]
async fn the_token_is_renewed_before_it_expires() {
    with(keystone(), async |_admin| {
        // Keystone's tokens live an hour; renewing 2 h ahead means every use renews.
        let s = Session::builder(admin_config(None))
            .renew_before(Duration::from_secs(7200))
            .build()
            .unwrap();
        let a = s.token().await.unwrap();
        let b = s.token().await.unwrap();
        assert_eq!(s.auth_count(), 2);
        assert_ne!(a.expose(), b.expose());
        // With the default margin the token is kept.
        let s = Session::new(admin_config(None)).unwrap();
        s.token().await.unwrap();
        s.token().await.unwrap();
        assert_eq!(s.auth_count(), 1);
    })
    .await;
}

#[tokio::test]
async fn concurrent_callers_share_one_authentication() {
    with(keystone(), async |_admin| {
        let s = session(admin_config(None));
        let tokens = futures::future::join_all((0..8).map(|_| s.token())).await;
        let first = tokens[0].as_ref().unwrap().expose().to_owned();
        for t in tokens {
            assert_eq!(t.unwrap().expose(), first);
        }
        assert_eq!(s.auth_count(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_unauthorized_error() {
    with(keystone(), async |_admin| {
        let mut cfg = admin_config(None);
        if let Credentials::Password { password, .. } = &mut cfg.credentials {
            *password = wharf_core::Secret::new("not-the-password");
        }
        let err = session(cfg).token().await.unwrap_err();
        assert!(
            matches!(api_error(&err), Some(ApiError::Unauthorized(_))),
            "{err:?}"
        );
        assert!(!err.is_retryable());
        assert!(!err.to_string().contains("not-the-password"));
    })
    .await;
}

#[tokio::test]
async fn application_credentials_authenticate() {
    with(keystone(), async |admin| {
        // Application credentials are created with a project-scoped token of their owner.
        let (_owner, token) = logged_in().await;
        let name = wharf_testkit::unique("wharf-test-");
        let resp = reqwest::Client::new()
            .post(format!(
                "{}/users/{}/application_credentials",
                support::keystone_url(),
                admin.user_id
            ))
            .header("X-Auth-Token", token.expose())
            .json(&json!({"application_credential": {"name": name}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        let v: serde_json::Value = resp.json().await.unwrap();
        let id = v["application_credential"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let secret = v["application_credential"]["secret"]
            .as_str()
            .unwrap()
            .to_owned();

        // By id, through OS_* variables as the CLI takes them.
        let vars = HashMap::from([
            ("OS_AUTH_TYPE", "v3applicationcredential".to_owned()),
            ("OS_AUTH_URL", support::keystone_url()),
            ("OS_APPLICATION_CREDENTIAL_ID", id.clone()),
            ("OS_APPLICATION_CREDENTIAL_SECRET", secret.clone()),
        ]);
        let cfg = CloudConfig::from_vars(|k| vars.get(k).cloned()).unwrap();
        let s = session(cfg);
        let t = s.token().await.unwrap();
        assert_eq!(
            t.project_id, token.project_id,
            "scoped to the owner's project"
        );
        assert!(s.endpoint("identity").await.is_ok());

        // By name + user.
        let cfg = CloudConfig {
            auth_url: support::keystone_url(),
            credentials: Credentials::ApplicationCredential {
                id: None,
                name: Some(name),
                username: Some(support::ADMIN_USER.into()),
                user_id: None,
                user_domain_name: Some("Default".into()),
                secret: wharf_core::Secret::new(secret),
            },
            region_name: None,
            interface: Interface::Public,
        };
        session(cfg).token().await.unwrap();

        admin
            .call(
                Method::DELETE,
                &format!("/users/{}/application_credentials/{id}", admin.user_id),
                None,
            )
            .await;
    })
    .await;
}

#[tokio::test]
async fn clouds_yaml_drives_a_real_login() {
    with(keystone(), async |_admin| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clouds.yaml");
        std::fs::write(
            &path,
            format!(
                "clouds:\n  local:\n    auth:\n      auth_url: {}\n      username: admin\n      \
                 project_name: admin\n      user_domain_name: Default\n      project_domain_name: Default\n    \
                 region_name: RegionOne\n    interface: public\n",
                support::keystone_url().trim_end_matches("/v3")
            ),
        )
        .unwrap();
        let vars = HashMap::from([
            ("OS_CLOUD", "local".to_owned()),
            ("OS_CLIENT_CONFIG_FILE", path.display().to_string()),
            ("OS_PASSWORD", support::admin_password()),
        ]);
        let cfg = CloudConfig::load_with(|k| vars.get(k).cloned(), None).unwrap();
        let s = session(cfg);
        assert!(s
            .endpoint("identity")
            .await
            .unwrap()
            .starts_with("http://127.0.0.1:5000"));
    })
    .await;
}

#[tokio::test]
async fn endpoints_follow_region_and_interface() {
    with(keystone(), async |admin| {
        let reg = admin
            .register(
                "wharf-probe",
                "wharf-probe",
                &[
                    ("public", "http://127.0.0.1:1/public/"),
                    ("internal", "http://127.0.0.1:1/internal"),
                ],
            )
            .await;
        let mut cfg = admin_config(Some(&reg.region));
        let public = session(cfg.clone()).endpoint("wharf-probe").await.unwrap();
        assert_eq!(public, "http://127.0.0.1:1/public");
        cfg.interface = Interface::Internal;
        let internal = session(cfg.clone()).endpoint("wharf-probe").await.unwrap();
        assert_eq!(internal, "http://127.0.0.1:1/internal");
        cfg.interface = Interface::Admin;
        let err = session(cfg.clone())
            .endpoint("wharf-probe")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        cfg.interface = Interface::Public;
        cfg.region_name = Some("RegionOne".into());
        assert!(session(cfg).endpoint("wharf-probe").await.is_err());
        admin.unregister(&reg).await;
    })
    .await;
}

#[tokio::test]
async fn a_revoked_token_is_replaced_on_401() {
    with(keystone(), async |admin| {
        let (s, old) = logged_in().await;
        admin.revoke(old.expose()).await;
        let url = format!("{}/auth/projects", s.endpoint("identity").await.unwrap());
        let resp = s
            .request(Method::GET, &url, "keystone: my projects", |rb| rb)
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            200,
            "the session must re-authenticate"
        );
        assert_eq!(s.auth_count(), 2);
        assert_ne!(s.token().await.unwrap().expose(), old.expose());
    })
    .await;
}
