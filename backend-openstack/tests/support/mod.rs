//! Test support: the real Keystone served by scripts/setup-keystone, and helpers to
//! register test doubles in its catalog.
#![allow(dead_code, unreachable_pub)]

pub mod cinder_double;
pub mod doubles;
pub mod net_double;
pub mod nova_double;
pub mod zun_double;

use std::time::Duration;

use serde_json::{json, Value};
use wharf_core::{ErrorKind, InstanceSpec, Runtime};
use wharf_openstack::{CloudConfig, Credentials, Interface, RetryPolicy, Session};

pub const ADMIN_USER: &str = "admin";

pub fn keystone_url() -> String {
    std::env::var("WHARF_KEYSTONE_URL").unwrap_or_else(|_| "http://127.0.0.1:5000/v3".into())
}

pub fn admin_password() -> String {
    std::env::var("WHARF_KEYSTONE_PASSWORD").unwrap_or_else(|_| "wharf-admin-secret".into())
}

fn client() -> reqwest::Client {
    wharf_testkit::http::client_with_timeout(Duration::from_secs(30))
}

/// Admin access to the real Keystone, or None (the test skips) when it is absent and
/// not required.
pub async fn keystone() -> Option<KeystoneAdmin> {
    let probe = match client().get(keystone_url()).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("{} answered {}", keystone_url(), r.status())),
        Err(e) => Err(format!(
            "{}: {e} (run scripts/setup-keystone)",
            keystone_url()
        )),
    };
    if !wharf_testkit::require("keystone", probe) {
        return None;
    }
    Some(KeystoneAdmin::login().await)
}

/// A password config for the admin user scoped to the admin project.
pub fn admin_config(region: Option<&str>) -> CloudConfig {
    CloudConfig {
        auth_url: keystone_url(),
        credentials: Credentials::Password {
            username: Some(ADMIN_USER.into()),
            user_id: None,
            user_domain_name: Some("Default".into()),
            user_domain_id: None,
            password: wharf_core::Secret::new(admin_password()),
            project_name: Some("admin".into()),
            project_id: None,
            project_domain_name: None,
            project_domain_id: Some("default".into()),
        },
        region_name: region.map(str::to_owned),
        interface: Interface::Public,
    }
}

/// A session with a short retry policy (tests must not wait long on purpose).
pub fn session(config: CloudConfig) -> Session {
    Session::builder(config)
        .client(client())
        .retry(RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(20),
            max: Duration::from_millis(200),
        })
        .build()
        .unwrap()
}

/// A test double whose `url` is registered in the real Keystone's catalog as the public
/// endpoint of a service, in a region of its own; [`Catalogued::done`] removes it.
pub struct Catalogued<D> {
    pub admin: KeystoneAdmin,
    pub reg: Registration,
    pub double: D,
}

impl<D> Catalogued<D> {
    /// Registers the started `double` (reached at `url(&double)`) as `service_type`
    /// `name`; `None` (the test skips) without Keystone.
    pub async fn new(
        service_type: &str,
        name: &str,
        double: impl std::future::Future<Output = D>,
        url: impl Fn(&D) -> String,
    ) -> Option<Self> {
        let admin = keystone().await?;
        let double = double.await;
        let reg = admin
            .register(service_type, name, &[("public", &url(&double))])
            .await;
        Some(Catalogued { admin, reg, double })
    }

    /// A session scoped to the double's region.
    pub fn session(&self) -> Session {
        session(admin_config(Some(&self.reg.region)))
    }
}

impl<D> Cleanup for Catalogued<D> {
    /// Removes the registration.
    async fn done(self) {
        self.admin.unregister(&self.reg).await;
    }
}

/// What a test sets up around the real Keystone and takes down after it.
pub trait Cleanup: Sized {
    /// Takes it down (removes what it registered).
    fn done(self) -> impl std::future::Future<Output = ()>;
}

/// Admin access alone leaves nothing to take down.
impl Cleanup for KeystoneAdmin {
    async fn done(self) {}
}

/// Runs a test: `body` on what `setup` gives, which is then taken down. Without
/// Keystone `setup` gives nothing and the test skips (saying why).
pub async fn with<F: Cleanup>(
    setup: impl std::future::Future<Output = Option<F>>,
    body: impl AsyncFnOnce(&F),
) {
    let Some(f) = setup.await else {
        return;
    };
    body(&f).await;
    f.done().await;
}

pub struct KeystoneAdmin {
    http: reqwest::Client,
    token: String,
    pub user_id: String,
}

impl KeystoneAdmin {
    async fn login() -> Self {
        let http = client();
        // System scope: Keystone's default policies want it for catalog changes.
        let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": ADMIN_USER, "domain": {"id": "default"}, "password": admin_password()}}},
            "scope": {"system": {"all": true}}}});
        let resp = http
            .post(format!("{}/auth/tokens", keystone_url()))
            .json(&body)
            .send()
            .await
            .expect("keystone login");
        assert_eq!(resp.status().as_u16(), 201, "admin login refused");
        let token = resp.headers()["X-Subject-Token"]
            .to_str()
            .unwrap()
            .to_owned();
        let v: Value = resp.json().await.unwrap();
        let user_id = v["token"]["user"]["id"].as_str().unwrap().to_owned();
        KeystoneAdmin {
            http,
            token,
            user_id,
        }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut rb = self
            .http
            .request(method.clone(), format!("{}{path}", keystone_url()))
            .header("X-Auth-Token", &self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = send_retrying(rb).await;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success() || (method == reqwest::Method::DELETE && status == 404),
            "{method} {path}: {status}: {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Revokes a token (Keystone answers 401 for it from then on).
    pub async fn revoke(&self, token: &str) {
        let resp = self
            .http
            .delete(format!("{}/auth/tokens", keystone_url()))
            .header("X-Auth-Token", &self.token)
            .header("X-Subject-Token", token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204, "revoke");
    }

    /// The id of a service of `service_type` (created if there is none).
    pub async fn ensure_service(&self, service_type: &str, name: &str) -> String {
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/services?type={service_type}"),
                None,
            )
            .await;
        if let Some(s) = v["services"].as_array().and_then(|a| a.first()) {
            return s["id"].as_str().unwrap().to_owned();
        }
        let v = self
            .call(
                reqwest::Method::POST,
                "/services",
                Some(json!({"service": {"type": service_type, "name": name, "enabled": true}})),
            )
            .await;
        v["service"]["id"].as_str().unwrap().to_owned()
    }

    /// Registers `url` for `service_type` in a new region of its own; dropped with the
    /// returned guard's `cleanup`.
    pub async fn register(
        &self,
        service_type: &str,
        name: &str,
        endpoints: &[(&str, &str)],
    ) -> Registration {
        let region = wharf_testkit::unique("wharf-test-");
        self.call(
            reqwest::Method::POST,
            "/regions",
            Some(json!({"region": {"id": region, "description": "wharf-openstack test"}})),
        )
        .await;
        let service = self.ensure_service(service_type, name).await;
        let mut ids = Vec::new();
        for (interface, url) in endpoints {
            let v = self
                .call(
                    reqwest::Method::POST,
                    "/endpoints",
                    Some(
                        json!({"endpoint": {"service_id": service, "interface": interface,
                        "url": url, "region_id": region, "enabled": true}}),
                    ),
                )
                .await;
            ids.push(v["endpoint"]["id"].as_str().unwrap().to_owned());
        }
        Registration {
            region,
            endpoints: ids,
        }
    }

    /// Adds `url` as the public endpoint of `service_type` to the region of `reg`
    /// (a second service beside the registered one; removed with it).
    pub async fn register_also(
        &self,
        reg: &mut Registration,
        service_type: &str,
        name: &str,
        url: &str,
    ) {
        let service = self.ensure_service(service_type, name).await;
        let v = self
            .call(
                reqwest::Method::POST,
                "/endpoints",
                Some(
                    json!({"endpoint": {"service_id": service, "interface": "public",
                    "url": url, "region_id": reg.region, "enabled": true}}),
                ),
            )
            .await;
        reg.endpoints
            .push(v["endpoint"]["id"].as_str().unwrap().to_owned());
    }

    pub async fn unregister(&self, r: &Registration) {
        for id in &r.endpoints {
            self.call(reqwest::Method::DELETE, &format!("/endpoints/{id}"), None)
                .await;
        }
        self.call(
            reqwest::Method::DELETE,
            &format!("/regions/{}", r.region),
            None,
        )
        .await;
    }
}

/// Sends, retrying connection failures (the tests' own helper, not the crate's).
async fn send_retrying(rb: reqwest::RequestBuilder) -> reqwest::Response {
    for attempt in 0.. {
        let err = match rb.try_clone().unwrap().send().await {
            Ok(r) if r.status().is_server_error() && attempt < 4 => format!("{}", r.status()),
            Ok(r) => return r,
            Err(e) if attempt < 4 => e.to_string(),
            Err(e) => panic!("keystone admin call: {e}"),
        };
        eprintln!("keystone admin call failed ({err}), retrying");
        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
    }
    unreachable!()
}

pub struct Registration {
    pub region: String,
    pub endpoints: Vec<String>,
}

/// Checks that `rt` refuses `spec` with an image that exists only where it was built
/// as invalid input that names the registry push it needs.
pub async fn assert_local_only_refused(rt: &dyn Runtime, mut spec: InstanceSpec) {
    spec.image = "wharf/shop-web:dep_1".into();
    spec.image_local_only = true;
    let err = rt.start(&spec).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.message().contains("registry push"), "{err}");
}
