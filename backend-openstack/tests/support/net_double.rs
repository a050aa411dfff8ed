//! Neutron and Designate test doubles, written from their API references.
//!
//! Neutron (`/v2.0`): security groups (201, the two default egress rules included),
//! security group rules (201; 409 `SecurityGroupRuleExists` on a duplicate), floating
//! IPs (201, `DOWN`; 404 `ExternalNetworkNotFound`-style on an unknown network; 409
//! `OverQuota` past `fip_quota`), deletes (204 / 404). Errors are
//! `{"NeutronError": {"type", "message", "detail"}}`.
//!
//! Designate (`/v2`): recordsets created `PENDING` (202), turning `ACTIVE` (or `ERROR`
//! when `dns_error` is set) a moment later; delete answers 202 `PENDING`/`DELETE` and
//! the recordset disappears a moment later. Errors are `{"code", "type", "message"}`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::doubles::quota_reached;

pub const EXTERNAL_NET: &str = "9e4f5a1c-0000-4000-8000-00000000e47e";
pub const ZONE: &str = "a86dba58-0043-4cc6-a1bb-69d5e86f3ca3";

#[derive(Default)]
pub struct NetState {
    pub security_groups: Mutex<BTreeMap<String, Value>>,
    pub rules: Mutex<BTreeMap<String, Value>>,
    pub floating_ips: Mutex<BTreeMap<String, Value>>,
    pub recordsets: Mutex<BTreeMap<String, Value>>,
    pub fip_quota: Mutex<Option<usize>>,
    pub dns_error: AtomicBool,
    next_ip: AtomicUsize,
    tokens: super::zun_double::Inner,
}

#[derive(Clone)]
pub struct NetDoubles {
    pub state: Arc<NetState>,
    pub neutron_url: String,
    pub designate_url: String,
}

fn neutron_error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"NeutronError": {"type": kind, "message": message.into(), "detail": ""}})),
    )
        .into_response()
}

fn designate_error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(
            json!({"code": status.as_u16(), "type": kind, "message": message.into(),
            "request_id": format!("req-{}", uuid::Uuid::new_v4())}),
        ),
    )
        .into_response()
}

async fn auth(
    State(st): State<Arc<NetState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let token = req
        .headers()
        .get("X-Auth-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match token {
        Some(t) if super::zun_double::validate(&st.tokens, &t).await => next.run(req).await,
        _ => (StatusCode::UNAUTHORIZED, "Authentication required").into_response(),
    }
}

impl NetDoubles {
    pub async fn start() -> Self {
        let state = Arc::new(NetState::default());
        let neutron = Router::new()
            .route("/v2.0/security-groups", post(create_sg))
            .route("/v2.0/security-groups/{id}", delete(delete_sg))
            .route("/v2.0/security-group-rules", post(create_rule))
            .route("/v2.0/floatingips", post(create_fip))
            .route("/v2.0/floatingips/{id}", delete(delete_fip))
            .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
            .with_state(state.clone());
        let designate = Router::new()
            .route("/v2/zones/{zone}/recordsets", post(create_rs))
            .route(
                "/v2/zones/{zone}/recordsets/{id}",
                get(show_rs).delete(delete_rs),
            )
            .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
            .with_state(state.clone());
        let n = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let d = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // Neutron's catalog entry has no version; Designate's neither.
        let neutron_url = format!("http://{}", n.local_addr().unwrap());
        let designate_url = format!("http://{}", d.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(n, neutron).await.unwrap() });
        tokio::spawn(async move { axum::serve(d, designate).await.unwrap() });
        NetDoubles {
            state,
            neutron_url,
            designate_url,
        }
    }

    /// Everything still allocated (groups, rules, floating IPs, recordsets).
    pub fn allocated(&self) -> (usize, usize, usize, usize) {
        let s = &self.state;
        (
            s.security_groups.lock().unwrap().len(),
            s.rules.lock().unwrap().len(),
            s.floating_ips.lock().unwrap().len(),
            s.recordsets.lock().unwrap().len(),
        )
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn create_sg(State(st): State<Arc<NetState>>, Json(body): Json<Value>) -> Response {
    let Some(name) = body["security_group"]["name"].as_str() else {
        return neutron_error(
            StatusCode::BAD_REQUEST,
            "HTTPBadRequest",
            "Invalid input for name",
        );
    };
    let id = new_id();
    let mut rules = Vec::new();
    for eth in ["IPv4", "IPv6"] {
        let r = json!({"id": new_id(), "security_group_id": id, "direction": "egress",
            "ethertype": eth, "protocol": null, "port_range_min": null, "port_range_max": null,
            "remote_ip_prefix": null});
        st.rules
            .lock()
            .unwrap()
            .insert(r["id"].as_str().unwrap().to_owned(), r.clone());
        rules.push(r);
    }
    let sg = json!({"id": id, "name": name,
        "description": body["security_group"]["description"], "stateful": true,
        "security_group_rules": rules});
    st.security_groups.lock().unwrap().insert(id, sg.clone());
    (StatusCode::CREATED, Json(json!({ "security_group": sg }))).into_response()
}

async fn delete_sg(State(st): State<Arc<NetState>>, Path(id): Path<String>) -> Response {
    if st.security_groups.lock().unwrap().remove(&id).is_none() {
        return neutron_error(
            StatusCode::NOT_FOUND,
            "SecurityGroupNotFound",
            format!("Security group {id} does not exist"),
        );
    }
    st.rules
        .lock()
        .unwrap()
        .retain(|_, r| r["security_group_id"] != id.as_str());
    StatusCode::NO_CONTENT.into_response()
}

async fn create_rule(State(st): State<Arc<NetState>>, Json(body): Json<Value>) -> Response {
    let r = &body["security_group_rule"];
    let sg = r["security_group_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if !st.security_groups.lock().unwrap().contains_key(&sg) {
        return neutron_error(
            StatusCode::NOT_FOUND,
            "SecurityGroupNotFound",
            format!("Security group {sg} does not exist"),
        );
    }
    if r["direction"] != "ingress" && r["direction"] != "egress" {
        return neutron_error(
            StatusCode::BAD_REQUEST,
            "HTTPBadRequest",
            "Invalid input for direction",
        );
    }
    let same = |x: &Value| {
        [
            "security_group_id",
            "direction",
            "protocol",
            "port_range_min",
            "port_range_max",
            "remote_ip_prefix",
            "ethertype",
        ]
        .iter()
        .all(|k| x[*k] == r[*k])
    };
    if st.rules.lock().unwrap().values().any(same) {
        return neutron_error(
            StatusCode::CONFLICT,
            "SecurityGroupRuleExists",
            "Security group rule already exists.",
        );
    }
    let mut rule = r.clone();
    let id = new_id();
    rule["id"] = json!(id);
    st.rules.lock().unwrap().insert(id, rule.clone());
    (
        StatusCode::CREATED,
        Json(json!({ "security_group_rule": rule })),
    )
        .into_response()
}

async fn create_fip(State(st): State<Arc<NetState>>, Json(body): Json<Value>) -> Response {
    let f = &body["floatingip"];
    if f["floating_network_id"] != EXTERNAL_NET {
        return neutron_error(
            StatusCode::NOT_FOUND,
            "NetworkNotFound",
            format!("Network {} could not be found.", f["floating_network_id"]),
        );
    }
    if quota_reached(&st.fip_quota, st.floating_ips.lock().unwrap().len()).is_some() {
        return neutron_error(
            StatusCode::CONFLICT,
            "OverQuota",
            "Quota exceeded for resources: ['floatingip'].",
        );
    }
    let n = st.next_ip.fetch_add(1, Ordering::SeqCst);
    let id = new_id();
    let fip = json!({"id": id, "floating_network_id": EXTERNAL_NET,
        "floating_ip_address": format!("203.0.113.{}", n % 250 + 1),
        "port_id": f["port_id"], "status": "DOWN", "description": f["description"]});
    st.floating_ips.lock().unwrap().insert(id, fip.clone());
    (StatusCode::CREATED, Json(json!({ "floatingip": fip }))).into_response()
}

async fn delete_fip(State(st): State<Arc<NetState>>, Path(id): Path<String>) -> Response {
    match st.floating_ips.lock().unwrap().remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => neutron_error(
            StatusCode::NOT_FOUND,
            "FloatingIPNotFound",
            format!("Floating IP {id} could not be found"),
        ),
    }
}

const STEP: Duration = Duration::from_millis(60);

async fn create_rs(
    State(st): State<Arc<NetState>>,
    Path(zone): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if zone != ZONE {
        return designate_error(
            StatusCode::NOT_FOUND,
            "zone_not_found",
            "Could not find Zone",
        );
    }
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    if !name.ends_with('.') || !name.ends_with("apps.example.com.") {
        return designate_error(
            StatusCode::BAD_REQUEST,
            "invalid_object",
            "RecordSet is not contained within it's parent zone",
        );
    }
    if st
        .recordsets
        .lock()
        .unwrap()
        .values()
        .any(|r| r["name"] == name.as_str() && r["type"] == body["type"])
    {
        return designate_error(
            StatusCode::CONFLICT,
            "duplicate_recordset",
            "Duplicate RecordSet",
        );
    }
    let id = new_id();
    let rs = json!({"id": id, "zone_id": zone, "name": name, "type": body["type"],
        "records": body["records"], "ttl": body["ttl"], "status": "PENDING", "action": "CREATE",
        "version": 1});
    st.recordsets.lock().unwrap().insert(id.clone(), rs.clone());
    let st2 = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep(STEP).await;
        let failed = st2.dns_error.load(Ordering::SeqCst);
        if let Some(r) = st2.recordsets.lock().unwrap().get_mut(&id) {
            r["status"] = json!(if failed { "ERROR" } else { "ACTIVE" });
            r["action"] = json!("NONE");
        }
    });
    (StatusCode::ACCEPTED, Json(rs)).into_response()
}

async fn show_rs(
    State(st): State<Arc<NetState>>,
    Path((_zone, id)): Path<(String, String)>,
) -> Response {
    match st.recordsets.lock().unwrap().get(&id) {
        Some(r) => Json(r.clone()).into_response(),
        None => designate_error(
            StatusCode::NOT_FOUND,
            "recordset_not_found",
            "Could not find RecordSet",
        ),
    }
}

async fn delete_rs(
    State(st): State<Arc<NetState>>,
    Path((_zone, id)): Path<(String, String)>,
) -> Response {
    let r = {
        let mut g = st.recordsets.lock().unwrap();
        let Some(r) = g.get_mut(&id) else {
            return designate_error(
                StatusCode::NOT_FOUND,
                "recordset_not_found",
                "Could not find RecordSet",
            );
        };
        r["status"] = json!("PENDING");
        r["action"] = json!("DELETE");
        r.clone()
    };
    let st2 = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep(STEP).await;
        st2.recordsets.lock().unwrap().remove(&id);
    });
    (StatusCode::ACCEPTED, Json(r)).into_response()
}
