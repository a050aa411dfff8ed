//! A Nova test double written from the compute API reference: `POST /servers` (202,
//! `BUILD` then `ACTIVE` a moment later), show (404 `itemNotFound`), `/servers/detail`
//! paginated with `servers_links`, delete (204, `DELETED`, then gone), the
//! `os-getConsoleOutput` action, errors as `{"badRequest"|"forbidden"|"itemNotFound":
//! {"code", "message"}}`, `OpenStack-API-Version: compute 2.x` required.
//!
//! It reads the server's cloud-init user-data like cloud-init would: base64, the env
//! file from `write_files`, the engine's argv from `runcmd`; an `ACTIVE` server "runs"
//! the container by serving HTTP on its own loopback address at the `-p` port.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::doubles::{page, quota_reached};

pub const VM_IMAGE: &str = "70a599e0-31e7-49b7-b260-868f441e862b";
pub const FLAVOR: &str = "1";
const STEP: Duration = Duration::from_millis(60);

#[derive(Debug, Clone)]
pub struct Server {
    pub id: String,
    pub seq: usize,
    pub body: Value,
    pub status: String,
    pub addr: Ipv4Addr,
    pub argv: Vec<String>,
    pub env_file: String,
    pub console: Vec<String>,
    /// The Cinder volumes attached (ids).
    pub volumes: Vec<String>,
}

#[derive(Default)]
pub struct NovaState {
    pub servers: Mutex<BTreeMap<String, Server>>,
    apps: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    pub quota: Mutex<Option<usize>>,
    seq: AtomicUsize,
    base: Mutex<String>,
    tokens: super::zun_double::Inner,
    /// The Cinder double volumes are attached through.
    pub cinder: Mutex<Option<Arc<super::cinder_double::CinderState>>>,
    /// A volume another server takes just before the next attach is handled (a race
    /// with another start).
    pub race_for_volume: Mutex<Option<String>>,
}

#[derive(Clone)]
pub struct NovaDouble {
    pub state: Arc<NovaState>,
    pub url: String,
}

fn nova_error(status: StatusCode, key: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ key: {"code": status.as_u16(), "message": message.into()} })),
    )
        .into_response()
}

pub fn b64decode(s: &str) -> Vec<u8> {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        let v = T.iter().position(|t| *t == c).expect("base64 character") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

static NEXT: AtomicUsize = AtomicUsize::new(1);

fn next_addr() -> Ipv4Addr {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let second = 20 + (std::process::id() % 60) as u8;
    Ipv4Addr::new(127, second, (n / 250) as u8, (n % 250 + 1) as u8)
}

async fn gate(
    State(st): State<Arc<NovaState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let h = req.headers();
    let token = h
        .get("X-Auth-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let version_ok = h
        .get("OpenStack-API-Version")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("compute 2."));
    match token {
        Some(t) if super::zun_double::validate(&st.tokens, &t).await => {}
        _ => {
            return nova_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication required",
            )
        }
    }
    if !version_ok {
        return nova_error(
            StatusCode::NOT_ACCEPTABLE,
            "computeFault",
            "Version not supported",
        );
    }
    next.run(req).await
}

impl NovaDouble {
    pub async fn start() -> Self {
        let state = Arc::new(NovaState::default());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v2.1", l.local_addr().unwrap());
        *state.base.lock().unwrap() = url.clone();
        let app = Router::new()
            .route("/v2.1/servers", post(create))
            .route("/v2.1/servers/detail", get(list))
            .route("/v2.1/servers/{id}", get(show).delete(delete))
            .route("/v2.1/servers/{id}/action", post(action))
            .route(
                "/v2.1/servers/{id}/os-volume_attachments",
                get(attachments).post(attach),
            )
            .route(
                "/v2.1/servers/{id}/os-volume_attachments/{volume}",
                axum::routing::delete(detach),
            )
            .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        NovaDouble { state, url }
    }
    pub fn servers(&self) -> Vec<Server> {
        self.state
            .servers
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect()
    }
}

fn view(s: &Server) -> Value {
    json!({
        "id": s.id, "name": s.body["name"], "status": s.status,
        "metadata": s.body.get("metadata").cloned().unwrap_or(json!({})),
        "image": {"id": s.body["imageRef"]}, "flavor": {"id": s.body["flavorRef"]},
        "addresses": if s.status == "BUILD" { json!({}) } else { json!({"private": [
            {"addr": s.addr.to_string(), "version": 4, "OS-EXT-IPS:type": "fixed"}]}) },
        "OS-EXT-STS:task_state": if s.status == "BUILD" { json!("spawning") } else { Value::Null },
    })
}

fn set(st: &NovaState, id: &str, f: impl FnOnce(&mut Server)) {
    if let Some(s) = st.servers.lock().unwrap().get_mut(id) {
        f(s);
    }
}

async fn create(State(st): State<Arc<NovaState>>, Json(body): Json<Value>) -> Response {
    let s = body["server"].clone();
    if s["imageRef"] != VM_IMAGE {
        return nova_error(
            StatusCode::BAD_REQUEST,
            "badRequest",
            format!("Image {} could not be found.", s["imageRef"]),
        );
    }
    if s["flavorRef"] != FLAVOR {
        return nova_error(
            StatusCode::BAD_REQUEST,
            "badRequest",
            format!("Flavor {} could not be found.", s["flavorRef"]),
        );
    }
    let used = st.servers.lock().unwrap().len();
    if let Some(q) = quota_reached(&st.quota, used) {
        return nova_error(StatusCode::FORBIDDEN, "forbidden",
            format!("Quota exceeded for instances: Requested 1, but already used {used} of {q} instances"));
    }
    // cloud-init's view of the user-data.
    let ud = String::from_utf8(b64decode(s["user_data"].as_str().unwrap_or_default())).unwrap();
    if !ud.starts_with("#cloud-config") {
        return nova_error(
            StatusCode::BAD_REQUEST,
            "badRequest",
            "user_data is not cloud-config",
        );
    }
    let y: serde_yaml::Value = serde_yaml::from_str(&ud).expect("cloud-config is YAML");
    let argv: Vec<String> = serde_yaml::from_value(y["runcmd"][0].clone()).expect("runcmd argv");
    let env_file = String::from_utf8(b64decode(
        y["write_files"][0]["content"].as_str().unwrap_or_default(),
    ))
    .unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    let server = Server {
        id: id.clone(),
        seq: st.seq.fetch_add(1, Ordering::SeqCst),
        body: s,
        status: "BUILD".into(),
        addr: next_addr(),
        argv,
        env_file,
        console: vec![
            "[    0.000000] Linux version 6.1.0".into(),
            "cloud-init: modules:config".into(),
        ],
        volumes: vec![],
    };
    st.servers
        .lock()
        .unwrap()
        .insert(id.clone(), server.clone());
    let st2 = st.clone();
    let id2 = id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(STEP).await;
        let port: u16 = server
            .argv
            .iter()
            .position(|a| a == "-p")
            .and_then(|i| server.argv.get(i + 1))
            .and_then(|p| p.split(':').next()?.parse().ok())
            .unwrap_or(80);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((server.addr, port)))
            .await
            .unwrap();
        let name = server.body["name"].as_str().unwrap_or("app").to_owned();
        let app = Router::new().fallback(move || {
            let n = name.clone();
            async move { format!("hello from {n} on nova") }
        });
        let h = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        st2.apps.lock().unwrap().insert(id2.clone(), h);
        set(&st2, &id2, |s| {
            s.status = "ACTIVE".into();
            s.console
                .push(format!("cloud-init: runcmd: {}", s.argv.join(" ")));
            s.console.push(format!("app listening on {port}"));
        });
    });
    let base = st.base.lock().unwrap().clone();
    (
        StatusCode::ACCEPTED,
        Json(json!({"server": {"id": id, "adminPass": "x7Yz",
        "OS-DCF:diskConfig": "MANUAL", "security_groups": [{"name": "default"}],
        "links": [{"rel": "self", "href": format!("{base}/servers/{id}")}]}})),
    )
        .into_response()
}

fn not_found(id: &str) -> Response {
    nova_error(
        StatusCode::NOT_FOUND,
        "itemNotFound",
        format!("Instance {id} could not be found."),
    )
}

async fn show(State(st): State<Arc<NovaState>>, Path(id): Path<String>) -> Response {
    match st.servers.lock().unwrap().get(&id) {
        Some(s) => Json(json!({ "server": view(s) })).into_response(),
        None => not_found(&id),
    }
}

async fn list(
    State(st): State<Arc<NovaState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let base = st.base.lock().unwrap().clone();
    let g = st.servers.lock().unwrap();
    let p = match page(g.values(), &q, |s| s.seq, |s| &s.id) {
        Ok(p) => p,
        Err(m) => {
            return nova_error(
                StatusCode::BAD_REQUEST,
                "badRequest",
                format!("marker [{m}] not found"),
            )
        }
    };
    let page: Vec<Value> = p.items.iter().map(|s| view(s)).collect();
    let links: Vec<Value> = p
        .next
        .map(|last| {
            let href = format!("{base}/servers/detail?limit={}&marker={}", p.limit, last.id);
            json!({"rel": "next", "href": href})
        })
        .into_iter()
        .collect();
    Json(json!({"servers": page, "servers_links": links})).into_response()
}

async fn delete(State(st): State<Arc<NovaState>>, Path(id): Path<String>) -> Response {
    {
        let mut g = st.servers.lock().unwrap();
        let Some(s) = g.get_mut(&id) else {
            return not_found(&id);
        };
        s.status = "DELETED".into();
        // Nova detaches a deleted server's volumes (they are not deleted).
        if let Some(c) = st.cinder.lock().unwrap().as_ref() {
            for v in s.volumes.drain(..) {
                c.detach(&v);
            }
        }
    }
    let st2 = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep(STEP).await;
        if let Some(h) = st2.apps.lock().unwrap().remove(&id) {
            h.abort();
        }
        st2.servers.lock().unwrap().remove(&id);
    });
    StatusCode::NO_CONTENT.into_response()
}

async fn action(
    State(st): State<Arc<NovaState>>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let g = st.servers.lock().unwrap();
    let Some(s) = g.get(&id) else {
        return not_found(&id);
    };
    let Some(a) = body.get("os-getConsoleOutput") else {
        return nova_error(StatusCode::BAD_REQUEST, "badRequest", "unsupported action");
    };
    let lines = &s.console;
    let skip = a["length"]
        .as_u64()
        .map_or(0, |n| lines.len().saturating_sub(n as usize));
    Json(json!({"output": lines[skip..].join("\n") + "\n"})).into_response()
}

impl NovaDouble {
    /// Attaches volumes through `cinder` from now on.
    pub fn use_cinder(&self, cinder: &super::cinder_double::CinderDouble) {
        *self.state.cinder.lock().unwrap() = Some(cinder.state.clone());
    }
}

fn attachment(server: &str, volume: &str) -> Value {
    json!({"id": volume, "serverId": server, "volumeId": volume, "device": "/dev/vdb",
           "tag": null, "delete_on_termination": false})
}

async fn attachments(State(st): State<Arc<NovaState>>, Path(id): Path<String>) -> Response {
    let g = st.servers.lock().unwrap();
    let Some(s) = g.get(&id) else {
        return not_found(&id);
    };
    let list: Vec<Value> = s.volumes.iter().map(|v| attachment(&id, v)).collect();
    Json(json!({ "volumeAttachments": list })).into_response()
}

async fn attach(
    State(st): State<Arc<NovaState>>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let Some(volume) = body["volumeAttachment"]["volumeId"].as_str() else {
        return nova_error(
            StatusCode::BAD_REQUEST,
            "badRequest",
            "volumeId is required",
        );
    };
    let mut g = st.servers.lock().unwrap();
    let Some(s) = g.get_mut(&id) else {
        return not_found(&id);
    };
    if s.status != "ACTIVE" {
        return nova_error(
            StatusCode::CONFLICT,
            "conflictingRequest",
            format!(
                "Cannot 'attach_volume' instance {id} while it is in vm_state {}",
                s.status.to_lowercase()
            ),
        );
    }
    let Some(cinder) = st.cinder.lock().unwrap().clone() else {
        return nova_error(StatusCode::NOT_FOUND, "itemNotFound", "no Cinder");
    };
    if let Some(v) = st.race_for_volume.lock().unwrap().take() {
        cinder.attach(&v, Some("racing-server"), None).unwrap();
    }
    match cinder.attach(volume, Some(&id), None) {
        Ok(()) => {
            s.volumes.push(volume.to_owned());
            Json(json!({ "volumeAttachment": attachment(&id, volume) })).into_response()
        }
        Err(m) if m.contains("could not be found") => {
            nova_error(StatusCode::NOT_FOUND, "itemNotFound", m)
        }
        Err(m) => nova_error(StatusCode::BAD_REQUEST, "badRequest", m),
    }
}

async fn detach(
    State(st): State<Arc<NovaState>>,
    Path((id, volume)): Path<(String, String)>,
) -> Response {
    let mut g = st.servers.lock().unwrap();
    let Some(s) = g.get_mut(&id) else {
        return not_found(&id);
    };
    let Some(i) = s.volumes.iter().position(|v| *v == volume) else {
        return nova_error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            format!("volume_id not found: {volume}"),
        );
    };
    s.volumes.remove(i);
    if let Some(c) = st.cinder.lock().unwrap().as_ref() {
        c.detach(&volume);
    }
    StatusCode::ACCEPTED.into_response()
}
