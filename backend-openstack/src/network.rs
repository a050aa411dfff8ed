//! Networking and DNS for an instance: a Neutron security group opening only the
//! app's port, a floating IP, and a Designate recordset for the service's hostname
//! (waiting out `PENDING` until `ACTIVE`).
//!
//! [`Networking::expose`] creates them in that order; if a step fails half-way,
//! what was already created is removed before the error is returned, so nothing
//! allocated is leaked. [`Networking::teardown`] removes an [`Exposure`] (each part
//! that is already gone counts as removed).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use wharf_core::{Error, ErrorKind, Result};

use crate::http::{self, ApiError, BACKEND};
use crate::instances::Backoff;
use crate::keystone::Session;

/// Options for [`Networking`].
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    /// The external network floating IPs come from (Neutron id).
    pub floating_network_id: String,
    /// The Designate zone for recordsets (id); `None`: no DNS.
    pub dns_zone_id: Option<String>,
    /// TTL of recordsets, seconds.
    pub dns_ttl: u32,
    /// CIDR allowed to reach the app's port.
    pub allow_from: String,
    /// Longest wait for a recordset to become `ACTIVE` (or to go away).
    pub dns_timeout: Duration,
    /// First pause between recordset polls (doubling up to 2 s).
    pub poll_min: Duration,
}

impl NetworkOptions {
    /// Options with defaults: TTL 300 s, open to `0.0.0.0/0`, 120 s DNS timeout.
    pub fn new(floating_network_id: impl Into<String>) -> Self {
        NetworkOptions {
            floating_network_id: floating_network_id.into(),
            dns_zone_id: None,
            dns_ttl: 300,
            allow_from: "0.0.0.0/0".into(),
            dns_timeout: Duration::from_secs(120),
            poll_min: Duration::from_millis(50),
        }
    }
}

/// What [`Networking::expose`] allocated for one instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Exposure {
    /// The security group (Neutron id).
    pub security_group_id: Option<String>,
    /// The floating IP (Neutron id).
    pub floating_ip_id: Option<String>,
    /// The floating IP address.
    pub floating_ip_address: Option<String>,
    /// The recordset (Designate zone id, recordset id).
    pub recordset: Option<(String, String)>,
}

/// Neutron + Designate for Wharf's instances.
#[derive(Debug, Clone)]
pub struct Networking {
    session: Session,
    opts: NetworkOptions,
}

fn versioned(base: String, version: &str) -> String {
    if base.ends_with(version) {
        base
    } else {
        format!("{base}{version}")
    }
}

impl Networking {
    /// Networking on `session`'s cloud.
    pub fn new(session: Session, opts: NetworkOptions) -> Self {
        Networking { session, opts }
    }

    async fn call(
        &self,
        service: &str,
        method: Method,
        path: &str,
        what: &str,
        body: Option<Value>,
    ) -> Result<reqwest::Response> {
        let base = self.session.endpoint(service).await?;
        let base = match service {
            "network" => versioned(base, "/v2.0"),
            "dns" => versioned(base, "/v2"),
            _ => base,
        };
        let url = format!("{base}{path}");
        self.session
            .request(method, &url, what, |rb| match &body {
                Some(b) => rb.json(b),
                None => rb,
            })
            .await
    }

    async fn call_json(
        &self,
        service: &str,
        method: Method,
        path: &str,
        what: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let resp = self.call(service, method, path, what, body).await?;
        let resp = http::check(resp, what).await?;
        http::json(resp, what).await
    }

    /// Deletes; 404 counts as done.
    async fn delete(&self, service: &str, path: &str, what: &str) -> Result<()> {
        let resp = self.call(service, Method::DELETE, path, what, None).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        http::check(resp, what).await.map(drop)
    }

    /// Creates a security group named `name` that lets TCP `port` in (from
    /// `allow_from`), a floating IP (attached to the Neutron port `port_id` when
    /// given) and, with a DNS zone configured and `hostname` given, an `A` recordset
    /// pointing `hostname` at the floating IP, waited for until `ACTIVE`. On failure,
    /// everything created so far is removed.
    pub async fn expose(
        &self,
        name: &str,
        port: u16,
        port_id: Option<&str>,
        hostname: Option<&str>,
    ) -> Result<Exposure> {
        if let Some(h) = hostname {
            wharf_core::validate_hostname(h)?;
        }
        let mut done = Exposure::default();
        match self
            .expose_steps(&mut done, name, port, port_id, hostname)
            .await
        {
            Ok(()) => Ok(done),
            Err(e) => {
                if let Err(cleanup) = self.teardown(&done).await {
                    tracing::warn!(error = %cleanup, ?done, "openstack: clean-up after a failed expose failed");
                    return Err(e.context(format!(
                        "and clean-up failed too ({cleanup}); left: {done:?}"
                    )));
                }
                Err(e)
            }
        }
    }

    async fn expose_steps(
        &self,
        done: &mut Exposure,
        name: &str,
        port: u16,
        port_id: Option<&str>,
        hostname: Option<&str>,
    ) -> Result<()> {
        let v = self
            .call_json(
                "network",
                Method::POST,
                "/security-groups",
                "neutron: create security group",
                Some(json!({"security_group": {
                    "name": name,
                    "description": format!("wharf: port {port}/tcp of {name}"),
                }})),
            )
            .await?;
        let sg = id_of(&v, "security_group")?;
        done.security_group_id = Some(sg.clone());
        self.call_json(
            "network",
            Method::POST,
            "/security-group-rules",
            "neutron: create security group rule",
            Some(json!({"security_group_rule": {
                "security_group_id": sg,
                "direction": "ingress",
                "ethertype": if self.opts.allow_from.contains(':') { "IPv6" } else { "IPv4" },
                "protocol": "tcp",
                "port_range_min": port,
                "port_range_max": port,
                "remote_ip_prefix": self.opts.allow_from,
            }})),
        )
        .await?;
        let mut fip = json!({
            "floating_network_id": self.opts.floating_network_id,
            "description": format!("wharf: {name}"),
        });
        if let Some(p) = port_id {
            fip["port_id"] = json!(p);
        }
        let v = self
            .call_json(
                "network",
                Method::POST,
                "/floatingips",
                "neutron: create floating IP",
                Some(json!({ "floatingip": fip })),
            )
            .await?;
        done.floating_ip_id = Some(id_of(&v, "floatingip")?);
        let address = v["floatingip"]["floating_ip_address"]
            .as_str()
            .map(str::to_owned);
        done.floating_ip_address = address.clone();
        if let (Some(zone), Some(host)) = (&self.opts.dns_zone_id, hostname) {
            let address = address.ok_or_else(|| {
                Error::new(ErrorKind::Backend, "neutron: floating IP has no address")
                    .with_backend(BACKEND)
            })?;
            let v = self
                .call_json(
                    "dns",
                    Method::POST,
                    &format!("/zones/{zone}/recordsets"),
                    "designate: create recordset",
                    Some(json!({
                        "name": format!("{}.", host.trim_end_matches('.')),
                        "type": "A",
                        "records": [address],
                        "ttl": self.opts.dns_ttl,
                        "description": format!("wharf: {name}"),
                    })),
                )
                .await?;
            let rs: Recordset = serde_json::from_value(v).map_err(|e| {
                Error::new(
                    ErrorKind::Backend,
                    format!("designate: malformed recordset: {e}"),
                )
                .with_backend(BACKEND)
            })?;
            done.recordset = Some((zone.clone(), rs.id.clone()));
            self.wait_recordset(zone, &rs.id, false).await?;
        }
        Ok(())
    }

    async fn wait_recordset(&self, zone: &str, id: &str, gone: bool) -> Result<()> {
        let mut backoff = Backoff::new(
            self.opts.dns_timeout,
            self.opts.poll_min,
            Duration::from_secs(2),
        );
        let what = format!("designate: recordset {id}");
        loop {
            let resp = self
                .call(
                    "dns",
                    Method::GET,
                    &format!("/zones/{zone}/recordsets/{id}"),
                    &what,
                    None,
                )
                .await?;
            if gone && resp.status() == StatusCode::NOT_FOUND {
                return Ok(());
            }
            let resp = http::check(resp, &what).await?;
            let rs: Recordset = http::json(resp, &what).await?;
            match rs.status.as_str() {
                "ACTIVE" if !gone => return Ok(()),
                "ERROR" => {
                    return Err(ApiError::Other {
                        status: 200,
                        message: format!("recordset {id} went to ERROR ({})", rs.action),
                    }
                    .into_error("designate"))
                }
                _ => {}
            }
            backoff.check(|| {
                format!(
                    "{what} still {} after {:?}",
                    rs.status, self.opts.dns_timeout
                )
            })?;
            backoff.pause().await;
        }
    }

    /// Removes the recordset (waiting until Designate has deleted it), the floating
    /// IP and the security group. Parts already gone count as removed; every part is
    /// tried even when an earlier one fails (the first error is returned).
    pub async fn teardown(&self, e: &Exposure) -> Result<()> {
        let mut first: Option<Error> = None;
        let mut keep = |r: Result<()>| {
            if let Err(err) = r {
                first.get_or_insert(err);
            }
        };
        if let Some((zone, id)) = &e.recordset {
            let r = async {
                self.delete(
                    "dns",
                    &format!("/zones/{zone}/recordsets/{id}"),
                    "designate: delete recordset",
                )
                .await?;
                self.wait_recordset(zone, id, true).await
            }
            .await;
            keep(r);
        }
        if let Some(id) = &e.floating_ip_id {
            keep(
                self.delete(
                    "network",
                    &format!("/floatingips/{id}"),
                    "neutron: delete floating IP",
                )
                .await,
            );
        }
        if let Some(id) = &e.security_group_id {
            keep(
                self.delete(
                    "network",
                    &format!("/security-groups/{id}"),
                    "neutron: delete security group",
                )
                .await,
            );
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Recordset {
    id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    action: String,
}

fn id_of(v: &Value, key: &str) -> Result<String> {
    v[key]["id"].as_str().map(str::to_owned).ok_or_else(|| {
        Error::new(ErrorKind::Backend, format!("answer has no {key}.id")).with_backend(BACKEND)
    })
}
