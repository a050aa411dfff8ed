//! A Zun test double written from the Zun API reference (api-ref/source/containers.inc
//! and its samples): `/v1/containers` create (202, async `Creating` -> `Created`),
//! start/stop (202, async to `Running`/`Stopped`, 409 in the wrong state), show,
//! list (paginated with `limit`/`marker` and a `next` link), logs, delete (204,
//! `Deleting`, 409 on a running container without `force`/`stop`). Errors use Zun's
//! body: `{"errors": [{"status", "code", "title", "detail", ...}]}`. Tokens are
//! checked against the real Keystone, as keystonemiddleware does.
//!
//! A started container is "run" by serving HTTP on its own loopback address
//! (127.X.Y.Z) at each exposed port, so health probes hit something real. Test hooks:
//! an image named `missing/...` fails to pull (`Error`, "Image ... could not be
//! found."); a command ending in `exit N` exits at start with code N; `quota` caps the
//! number of containers (403 OverQuota); `fail_next` answers that many requests 503
//! (or `fail_status`). Names are unique per project, as with Zun's
//! `unique_container_name_scope = project` (409 ContainerAlreadyExists).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::doubles::{page, quota_reached};

const STEP: Duration = Duration::from_millis(40);

#[derive(Debug, Clone)]
pub struct Container {
    pub uuid: String,
    pub seq: usize,
    pub body: Value,
    pub status: String,
    pub status_reason: Option<String>,
    pub status_detail: Option<String>,
    pub addr: Ipv4Addr,
    pub ports: Vec<u16>,
    pub logs: Vec<String>,
    /// The Cinder volumes mounted (ids).
    pub volumes: Vec<String>,
}

#[derive(Default)]
pub struct Inner {
    pub containers: Mutex<BTreeMap<String, Container>>,
    servers: Mutex<HashMap<String, Vec<tokio::task::JoinHandle<()>>>>,
    valid_tokens: Mutex<HashSet<String>>,
    pub quota: Mutex<Option<usize>>,
    pub fail_next: AtomicU32,
    /// The status of injected failures (0: 503).
    pub fail_status: std::sync::atomic::AtomicU16,
    pub requests: Mutex<Vec<(String, String, Option<String>)>>,
    pub creates: AtomicUsize,
    seq: AtomicUsize,
    pub base_url: Mutex<String>,
    /// The Cinder double `mounts` take volumes from.
    pub cinder: Mutex<Option<Arc<super::cinder_double::CinderState>>>,
    /// A volume another host takes just before the next create is handled (a race
    /// with another start).
    pub race_for_volume: Mutex<Option<String>>,
}

#[derive(Clone)]
pub struct ZunDouble {
    pub inner: Arc<Inner>,
    pub url: String,
}

static NEXT_ADDR: AtomicU32 = AtomicU32::new(1);

fn next_addr() -> Ipv4Addr {
    let n = NEXT_ADDR.fetch_add(1, Ordering::SeqCst);
    let second = 100 + (std::process::id() % 100) as u8;
    Ipv4Addr::new(127, second, (n / 250) as u8, (n % 250 + 1) as u8)
}

fn error(status: StatusCode, code: &str, detail: impl Into<String>) -> Response {
    let body = json!({"errors": [{
        "request_id": format!("req-{}", uuid::Uuid::new_v4()),
        "code": format!("zun.common.exception.{code}"),
        "status": status.as_u16(),
        "title": status.canonical_reason().unwrap_or(""),
        "detail": detail.into(),
        "links": []
    }]});
    (status, Json(body)).into_response()
}

impl ZunDouble {
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        *inner.base_url.lock().unwrap() = url.clone();
        let app = Router::new()
            .route("/v1/containers", post(create).get(list))
            .route("/v1/containers/", post(create).get(list))
            .route("/v1/containers/{id}", get(show).delete(delete))
            .route("/v1/containers/{id}/start", post(start))
            .route("/v1/containers/{id}/stop", post(stop))
            .route("/v1/containers/{id}/logs", get(logs))
            .layer(axum::middleware::from_fn_with_state(inner.clone(), gate))
            .with_state(inner.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        ZunDouble { inner, url }
    }

    /// Mounts volumes from `cinder` from now on.
    pub fn use_cinder(&self, cinder: &super::cinder_double::CinderDouble) {
        *self.inner.cinder.lock().unwrap() = Some(cinder.state.clone());
    }

    pub fn containers(&self) -> Vec<Container> {
        self.inner
            .containers
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect()
    }
}

/// Token check (against the real Keystone), microversion header, injected 503s.
async fn gate(
    State(st): State<Arc<Inner>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = req.headers().clone();
    st.requests.lock().unwrap().push((
        req.method().to_string(),
        req.uri().to_string(),
        headers
            .get("OpenStack-API-Version")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    ));
    if st
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        let status = match st.fail_status.load(Ordering::SeqCst) {
            0 => StatusCode::SERVICE_UNAVAILABLE,
            s => StatusCode::from_u16(s).unwrap(),
        };
        return error(status, "ServiceUnavailable", "injected outage");
    }
    let Some(token) = headers.get("X-Auth-Token").and_then(|v| v.to_str().ok()) else {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized", "no X-Auth-Token");
    };
    if !validate(&st, token).await {
        return error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "the token was refused by Keystone",
        );
    }
    match headers
        .get("OpenStack-API-Version")
        .and_then(|v| v.to_str().ok())
    {
        Some(v) if v.starts_with("container 1.") => {}
        other => {
            return error(
                StatusCode::NOT_ACCEPTABLE,
                "InvalidGlobalAPIVersion",
                format!("Version {other:?} is not supported by the API"),
            )
        }
    }
    next.run(req).await
}

pub async fn validate(st: &Inner, token: &str) -> bool {
    if st.valid_tokens.lock().unwrap().contains(token) {
        return true;
    }
    let ok = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/auth/tokens", super::keystone_url()))
        .header("X-Auth-Token", token)
        .header("X-Subject-Token", token)
        .send()
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false);
    if ok {
        st.valid_tokens.lock().unwrap().insert(token.to_owned());
    }
    ok
}

fn view(c: &Container, base: &str) -> Value {
    let b = &c.body;
    let mut labels = b.get("labels").cloned().unwrap_or(json!({}));
    if labels.is_null() {
        labels = json!({});
    }
    let net = "c0c5f8ed-6654-4d25-b0de-c858b9f620be";
    json!({
        "uuid": c.uuid,
        "name": b.get("name").cloned().unwrap_or(Value::Null),
        "image": b.get("image").cloned().unwrap_or(Value::Null),
        "labels": labels,
        "environment": b.get("environment").cloned().unwrap_or(json!({})),
        "command": b.get("command").cloned().unwrap_or(Value::Null),
        "cpu": b.get("cpu").cloned().unwrap_or(json!(1.0)),
        "memory": b.get("memory").map(|m| json!(format!("{}M", m))).unwrap_or(Value::Null),
        "status": c.status,
        "status_reason": c.status_reason,
        "status_detail": c.status_detail,
        "task_state": Value::Null,
        "addresses": if c.status == "Creating" { json!({}) } else { json!({ net: [{
            "subnet_id": "a3162b3e-2f02-432e-a18c-78fe2774d026", "version": 4,
            "preserve_on_delete": false, "addr": c.addr.to_string(),
            "port": "4b077255-9b4d-4068-b24f-b89594f870c2" }] }) },
        "ports": c.ports,
        "links": [{"href": format!("{base}/containers/{}", c.uuid), "rel": "self"}],
        "restart_policy": b.get("restart_policy").cloned().unwrap_or(Value::Null),
        "auto_remove": false,
        "security_groups": b.get("security_groups").cloned().unwrap_or(json!([])),
        "host": "double",
    })
}

fn set(st: &Inner, id: &str, f: impl FnOnce(&mut Container)) {
    if let Some(c) = st.containers.lock().unwrap().get_mut(id) {
        f(c);
    }
}

async fn create(State(st): State<Arc<Inner>>, Json(body): Json<Value>) -> Response {
    st.creates.fetch_add(1, Ordering::SeqCst);
    let Some(image) = body
        .get("image")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidValue",
            "'image' is a required property",
        );
    };
    if quota_reached(&st.quota, st.containers.lock().unwrap().len()).is_some() {
        return error(
            StatusCode::FORBIDDEN,
            "OverQuota",
            "Quota exceeded for resources: ['containers']",
        );
    }
    if let Some(name) = body.get("name").and_then(|v| v.as_str()) {
        if st
            .containers
            .lock()
            .unwrap()
            .values()
            .any(|c| c.body["name"] == name)
        {
            return error(
                StatusCode::CONFLICT,
                "ContainerAlreadyExists",
                format!("A container with name {name} already exists."),
            );
        }
    }
    let ports: Vec<u16> = body
        .get("exposed_ports")
        .and_then(|v| v.as_object())
        .map(|m| {
            m.keys()
                .filter_map(|k| k.split('/').next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    if let Some(v) = st.race_for_volume.lock().unwrap().take() {
        let cinder = st.cinder.lock().unwrap().clone();
        cinder
            .unwrap()
            .attach(&v, None, Some("racing-host"))
            .unwrap();
    }
    // Zun attaches each mounted Cinder volume to its host at create time.
    let mut volumes: Vec<String> = Vec::new();
    for m in body["mounts"].as_array().into_iter().flatten() {
        let source = m["source"].as_str().unwrap_or_default().to_owned();
        let cinder = st.cinder.lock().unwrap().clone();
        let attached = match cinder.as_ref() {
            Some(c) => c.attach(&source, None, Some("zun-double-host")),
            None => Err("no Cinder in this deployment".into()),
        };
        if let Err(m) = attached {
            for v in &volumes {
                cinder.as_ref().unwrap().detach(v);
            }
            return error(StatusCode::BAD_REQUEST, "InvalidVolume", m);
        }
        volumes.push(source);
    }
    let uuid = uuid::Uuid::new_v4().to_string();
    let c = Container {
        uuid: uuid.clone(),
        seq: st.seq.fetch_add(1, Ordering::SeqCst),
        body,
        status: "Creating".into(),
        status_reason: None,
        status_detail: None,
        addr: next_addr(),
        ports,
        logs: vec![],
        volumes,
    };
    let base = st.base_url.lock().unwrap().clone();
    let v = view(&c, &base);
    st.containers.lock().unwrap().insert(uuid.clone(), c);
    let st2 = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep(STEP).await;
        set(&st2, &uuid, |c| {
            if image.starts_with("missing/") {
                c.status = "Error".into();
                c.status_reason = Some(format!("Image {image} could not be found."));
            } else {
                c.status = "Created".into();
                c.logs.push(format!("pulled {image}"));
            }
        });
    });
    (StatusCode::ACCEPTED, Json(v)).into_response()
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "ContainerNotFound",
        format!("Container {id} could not be found."),
    )
}

async fn show(State(st): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    let base = st.base_url.lock().unwrap().clone();
    match st.containers.lock().unwrap().get(&id) {
        Some(c) => Json(view(c, &base)).into_response(),
        None => not_found(&id),
    }
}

async fn list(State(st): State<Arc<Inner>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let base = st.base_url.lock().unwrap().clone();
    // Zun's default page is the configured max_limit; a small one here so clients
    // must follow `next`.
    let g = st.containers.lock().unwrap();
    let p = match page(g.values(), &q, |c| c.seq, |c| &c.uuid) {
        Ok(p) => p,
        Err(m) => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidValue",
                format!("marker {m} not found"),
            )
        }
    };
    let page: Vec<Value> = p.items.iter().map(|c| view(c, &base)).collect();
    let next = match p.next {
        Some(last) => json!(format!(
            "{base}/containers/?limit={}&marker={}",
            p.limit, last.uuid
        )),
        None => Value::Null,
    };
    Json(json!({"containers": page, "next": next})).into_response()
}

fn exit_code(body: &Value) -> Option<i32> {
    let cmd = match body.get("command") {
        Some(Value::Array(a)) => a.last().and_then(|v| v.as_str()).unwrap_or("").to_owned(),
        Some(Value::String(s)) => s.clone(),
        _ => return None,
    };
    cmd.trim().strip_prefix("exit ")?.trim().parse().ok()
}

async fn start(State(st): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    let (body, addr, ports) = {
        let g = st.containers.lock().unwrap();
        let Some(c) = g.get(&id) else {
            return not_found(&id);
        };
        if c.status != "Created" && c.status != "Stopped" {
            return error(
                StatusCode::CONFLICT,
                "InvalidStateException",
                format!("Cannot start container {id} in {} state.", c.status),
            );
        }
        (c.body.clone(), c.addr, c.ports.clone())
    };
    let st2 = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep(STEP).await;
        if let Some(code) = exit_code(&body) {
            set(&st2, &id, |c| {
                c.logs.push("starting".into());
                c.logs.push(format!("fatal: exiting with code {code}"));
                c.status = "Stopped".into();
                c.status_detail = Some(format!("Exited({code}) 1 second ago"));
            });
            return;
        }
        let name = body["name"].as_str().unwrap_or("app").to_owned();
        let mut handles = Vec::new();
        for port in &ports {
            let listener = match tokio::net::TcpListener::bind(SocketAddr::from((addr, *port)))
                .await
            {
                Ok(l) => l,
                Err(e) => {
                    set(&st2, &id, |c| {
                        c.status = "Error".into();
                        c.status_reason = Some(format!("Docker internal error: port {port}: {e}"));
                    });
                    return;
                }
            };
            let reply = format!("hello from {name}");
            let app = Router::new().fallback(move || {
                let r = reply.clone();
                async move { r }
            });
            handles.push(tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }));
        }
        st2.servers.lock().unwrap().insert(id.clone(), handles);
        set(&st2, &id, |c| {
            c.status = "Running".into();
            c.status_detail = Some("Up 1 second".into());
            c.logs.push("starting".into());
            for p in &c.ports {
                c.logs.push(format!("listening on {}:{p}", c.addr));
            }
        });
    });
    StatusCode::ACCEPTED.into_response()
}

fn kill_servers(st: &Inner, id: &str) {
    if let Some(hs) = st.servers.lock().unwrap().remove(id) {
        for h in hs {
            h.abort();
        }
    }
}

async fn stop(State(st): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    {
        let g = st.containers.lock().unwrap();
        let Some(c) = g.get(&id) else {
            return not_found(&id);
        };
        if c.status != "Running" {
            return error(
                StatusCode::CONFLICT,
                "InvalidStateException",
                format!("Cannot stop container {id} in {} state.", c.status),
            );
        }
    }
    let st2 = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep(STEP).await;
        kill_servers(&st2, &id);
        set(&st2, &id, |c| {
            c.status = "Stopped".into();
            c.status_detail = Some("Exited(0) 1 second ago".into());
            c.logs.push("stopped".into());
        });
    });
    StatusCode::ACCEPTED.into_response()
}

fn truthy(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

async fn delete(
    State(st): State<Arc<Inner>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    {
        let mut g = st.containers.lock().unwrap();
        let Some(c) = g.get_mut(&id) else {
            return not_found(&id);
        };
        let busy = c.status == "Running" || c.status == "Creating";
        if busy && !truthy(&q, "force") && !truthy(&q, "stop") {
            return error(
                StatusCode::CONFLICT,
                "InvalidStateException",
                format!("Cannot delete container {id} in {} state.", c.status),
            );
        }
        c.status = "Deleting".into();
    }
    let st2 = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep(STEP).await;
        kill_servers(&st2, &id);
        let gone = st2.containers.lock().unwrap().remove(&id);
        // Zun detaches the container's volumes once it is deleted (they stay).
        let cinder = st2.cinder.lock().unwrap().clone();
        if let (Some(c), Some(gone)) = (cinder, gone) {
            for v in &gone.volumes {
                c.detach(v);
            }
        }
    });
    StatusCode::NO_CONTENT.into_response()
}

async fn logs(
    State(st): State<Arc<Inner>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let g = st.containers.lock().unwrap();
    let Some(c) = g.get(&id) else {
        return not_found(&id);
    };
    let lines = &c.logs;
    let skip = match q.get("tail").map(String::as_str) {
        None | Some("all") => 0,
        Some(n) => match n.parse::<usize>() {
            Ok(n) => lines.len().saturating_sub(n),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidValue",
                    "tail must be an integer or 'all'",
                )
            }
        },
    };
    let mut text = lines[skip..].join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    // Zun's API returns the log text JSON-encoded.
    Json(Value::String(text)).into_response()
}
