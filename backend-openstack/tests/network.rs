//! Neutron security group + floating IP and Designate recordset, on doubles found
//! through the real Keystone's catalog; clean-up when a step fails half-way.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use support::net_double::{NetDoubles, EXTERNAL_NET, ZONE};
use support::{admin_config, keystone, session, with, Cleanup, KeystoneAdmin, Registration};
use wharf_core::ErrorKind;
use wharf_openstack::{api_error, ApiError, NetworkOptions, Networking};

struct Fixture {
    admin: KeystoneAdmin,
    regs: Vec<Registration>,
    doubles: NetDoubles,
    net: Networking,
}

impl Fixture {
    async fn new() -> Option<Self> {
        let admin = keystone().await?;
        let doubles = NetDoubles::start().await;
        // Both services in one region of their own.
        let reg = admin
            .register("network", "neutron", &[("public", &doubles.neutron_url)])
            .await;
        let dns_ep = admin
            .call(
                reqwest::Method::POST,
                "/endpoints",
                Some(serde_json::json!({"endpoint": {
                    "service_id": admin.ensure_service("dns", "designate").await,
                    "interface": "public", "url": doubles.designate_url,
                    "region_id": reg.region, "enabled": true}})),
            )
            .await;
        let dns = Registration {
            region: reg.region.clone(),
            endpoints: vec![dns_ep["endpoint"]["id"].as_str().unwrap().to_owned()],
        };
        let mut opts = NetworkOptions::new(EXTERNAL_NET);
        opts.dns_zone_id = Some(ZONE.into());
        opts.poll_min = Duration::from_millis(20);
        opts.dns_timeout = Duration::from_secs(20);
        let net = Networking::new(session(admin_config(Some(&reg.region))), opts);
        Some(Fixture {
            admin,
            regs: vec![dns, reg],
            doubles,
            net,
        })
    }
}

impl Fixture {
    /// Exposes `shop-web` at `host`, which must fail and leave nothing allocated.
    async fn failed_expose(&self, host: &str) -> wharf_core::Error {
        let err = self
            .net
            .expose("shop-web", 8080, None, Some(host))
            .await
            .unwrap_err();
        assert_eq!(
            self.doubles.allocated(),
            (0, 0, 0, 0),
            "leaked after a failed expose"
        );
        err
    }
}

impl Cleanup for Fixture {
    async fn done(self) {
        for r in &self.regs[..1] {
            for id in &r.endpoints {
                self.admin
                    .call(reqwest::Method::DELETE, &format!("/endpoints/{id}"), None)
                    .await;
            }
        }
        self.admin.unregister(&self.regs[1]).await;
    }
}

/// The object in a double's table that holds one.
fn only(table: &Mutex<BTreeMap<String, Value>>) -> Value {
    table.lock().unwrap().values().next().unwrap().clone()
}

#[tokio::test]
async fn expose_then_teardown() {
    with(Fixture::new(), async |f| {
        let e = f
            .net
            .expose(
                "shop-web",
                8080,
                Some("port-1"),
                Some("shop.apps.example.com"),
            )
            .await
            .unwrap();
        assert_eq!(f.doubles.allocated(), (1, 3, 1, 1));
        // Only the app's port is opened.
        let rules = f.doubles.state.rules.lock().unwrap().clone();
        let ingress: Vec<_> = rules
            .values()
            .filter(|r| r["direction"] == "ingress")
            .collect();
        assert_eq!(ingress.len(), 1);
        assert_eq!(ingress[0]["port_range_min"], 8080);
        assert_eq!(ingress[0]["port_range_max"], 8080);
        assert_eq!(ingress[0]["protocol"], "tcp");
        let fip = only(&f.doubles.state.floating_ips);
        assert_eq!(fip["port_id"], "port-1");
        let rs = only(&f.doubles.state.recordsets);
        assert_eq!(rs["status"], "ACTIVE", "expose must wait out PENDING");
        assert_eq!(rs["name"], "shop.apps.example.com.");
        assert_eq!(rs["records"][0], fip["floating_ip_address"]);
        assert_eq!(
            e.floating_ip_address.as_ref().unwrap(),
            fip["floating_ip_address"].as_str().unwrap()
        );

        f.net.teardown(&e).await.unwrap();
        assert_eq!(f.doubles.allocated(), (0, 0, 0, 0));
        // Tearing down again: everything is already gone, which is fine.
        f.net.teardown(&e).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_floating_ip_quota_failure_removes_the_security_group() {
    with(Fixture::new(), async |f| {
        *f.doubles.state.fip_quota.lock().unwrap() = Some(0);
        let err = f.failed_expose("shop.apps.example.com").await;
        assert!(
            matches!(api_error(&err), Some(ApiError::QuotaExceeded(_))),
            "{err:?}"
        );
        assert_eq!(err.kind(), ErrorKind::Conflict);
    })
    .await;
}

#[tokio::test]
async fn a_recordset_in_error_removes_everything() {
    with(Fixture::new(), async |f| {
        f.doubles.state.dns_error.store(true, Ordering::SeqCst);
        let err = f.failed_expose("shop.apps.example.com").await;
        assert!(err.to_string().contains("ERROR"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_refused_recordset_removes_everything() {
    with(Fixture::new(), async |f| {
        // Outside the zone: Designate refuses with 400.
        let err = f.failed_expose("shop.other.example.org").await;
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        // A bad hostname never reaches any API.
        let err = f.failed_expose("bad host").await;
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    })
    .await;
}
