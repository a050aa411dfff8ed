//! A Cinder (block-storage v3) test double written from the API reference
//! (api-ref/source/v3/volumes-v3-volumes.inc): `POST /v3/{project_id}/volumes` (202,
//! `creating`, then `available` a moment later), show (404 `itemNotFound`),
//! `/volumes/detail` filtered by `?metadata={json}` and paginated with
//! `volumes_links`, delete (202, `deleting`, then gone; 400 `badRequest` unless
//! `available` or `error`). Tokens are checked against the real Keystone, and the
//! `{project_id}` of the path must be the token's project.
//!
//! Attachments go through [`CinderState::attach`] and [`CinderState::detach`], which
//! the Nova and Zun doubles call as those services call Cinder: `available` →
//! `reserved` → `attaching` → `in-use`, and `in-use` → `detaching` → `available`;
//! attaching anything but an `available` volume is refused.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::doubles::page;

const STEP: Duration = Duration::from_millis(40);

#[derive(Debug, Clone)]
pub struct Volume {
    pub id: String,
    pub seq: usize,
    pub project: String,
    pub name: String,
    pub size: u64,
    pub status: String,
    pub metadata: BTreeMap<String, String>,
    /// Who holds it: (server id or None, host name or None).
    pub attachments: Vec<(Option<String>, Option<String>)>,
}

#[derive(Default)]
pub struct CinderState {
    pub volumes: Mutex<BTreeMap<String, Volume>>,
    pub creates: AtomicUsize,
    seq: AtomicUsize,
    base: Mutex<String>,
    tokens: super::zun_double::Inner,
    projects: Mutex<HashMap<String, String>>,
}

#[derive(Clone)]
pub struct CinderDouble {
    pub state: Arc<CinderState>,
    /// The catalog URL without the project id (`http://127.0.0.1:P/v3`).
    pub url: String,
}

fn cinder_error(status: StatusCode, key: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ key: {"code": status.as_u16(), "message": message.into()} })),
    )
        .into_response()
}

/// The token's project, when Keystone accepts the token.
async fn token_project(token: &str) -> Option<String> {
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/auth/tokens", super::keystone_url()))
        .header("X-Auth-Token", token)
        .header("X-Subject-Token", token)
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let v: Value = resp.json().await.ok()?;
    v["token"]["project"]["id"].as_str().map(str::to_owned)
}

async fn gate(
    State(st): State<Arc<CinderState>>,
    Path(params): Path<HashMap<String, String>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let h = req.headers();
    let Some(token) = h.get("X-Auth-Token").and_then(|v| v.to_str().ok()) else {
        return cinder_error(StatusCode::UNAUTHORIZED, "unauthorized", "no token");
    };
    if !super::zun_double::validate(&st.tokens, token).await {
        return cinder_error(StatusCode::UNAUTHORIZED, "unauthorized", "token refused");
    }
    // Cinder serves 3.0 without the header; with it, only 3.x of `volume`.
    if let Some(v) = h.get("OpenStack-API-Version") {
        if !v.to_str().unwrap_or_default().starts_with("volume 3.") {
            return cinder_error(
                StatusCode::NOT_ACCEPTABLE,
                "computeFault",
                "Version not supported",
            );
        }
    }
    let cached = st.projects.lock().unwrap().get(token).cloned();
    let project = match cached {
        Some(p) => Some(p),
        None => token_project(token).await,
    };
    if let Some(p) = &project {
        st.projects
            .lock()
            .unwrap()
            .insert(token.to_owned(), p.clone());
    }
    if params.get("project") != project.as_ref() {
        return cinder_error(
            StatusCode::BAD_REQUEST,
            "badRequest",
            "Malformed request url: project_id in the URL does not match the token's",
        );
    }
    next.run(req).await
}

impl CinderDouble {
    pub async fn start() -> Self {
        let state = Arc::new(CinderState::default());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v3", l.local_addr().unwrap());
        *state.base.lock().unwrap() = url.clone();
        let app = Router::new()
            .route("/v3/{project}/volumes", axum::routing::post(create))
            .route("/v3/{project}/volumes/detail", get(list))
            .route("/v3/{project}/volumes/{id}", get(show).delete(delete))
            .route_layer(axum::middleware::from_fn_with_state(state.clone(), gate))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        CinderDouble { state, url }
    }

    pub fn volumes(&self) -> Vec<Volume> {
        self.state
            .volumes
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect()
    }

    /// The volume `id` (panics when there is none).
    pub fn volume(&self, id: &str) -> Volume {
        self.state.volumes.lock().unwrap()[id].clone()
    }
}

fn set(st: &CinderState, id: &str, f: impl FnOnce(&mut Volume)) {
    if let Some(v) = st.volumes.lock().unwrap().get_mut(id) {
        f(v);
    }
}

impl CinderState {
    /// Attaches `id` to a server or a host (as Nova and Zun do through Cinder's
    /// attachments API): refused unless `available`; `reserved` at once, then
    /// `attaching`, then `in-use`.
    pub fn attach(
        self: &Arc<Self>,
        id: &str,
        server: Option<&str>,
        host: Option<&str>,
    ) -> Result<(), String> {
        {
            let mut g = self.volumes.lock().unwrap();
            let Some(v) = g.get_mut(id) else {
                return Err(format!("Volume {id} could not be found."));
            };
            if v.status != "available" {
                return Err(format!(
                    "Invalid volume: volume {id} status must be available, but current status is: {}",
                    v.status
                ));
            }
            v.status = "reserved".into();
            v.attachments
                .push((server.map(str::to_owned), host.map(str::to_owned)));
        }
        let (st, id) = (self.clone(), id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(STEP).await;
            // Each step only from the one before (a detach may have come between).
            set(&st, &id, |v| {
                if v.status == "reserved" {
                    v.status = "attaching".into();
                }
            });
            tokio::time::sleep(STEP).await;
            set(&st, &id, |v| {
                if v.status == "attaching" {
                    v.status = "in-use".into();
                }
            });
        });
        Ok(())
    }

    /// Detaches `id`: `detaching`, then `available` with no attachment.
    pub fn detach(self: &Arc<Self>, id: &str) {
        set(self, id, |v| {
            if v.status == "in-use" || v.status == "attaching" || v.status == "reserved" {
                v.status = "detaching".into();
            }
        });
        let (st, id) = (self.clone(), id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(STEP).await;
            set(&st, &id, |v| {
                if v.status == "detaching" {
                    v.status = "available".into();
                    v.attachments.clear();
                }
            });
        });
    }
}

fn view(v: &Volume) -> Value {
    let attachments: Vec<Value> = v
        .attachments
        .iter()
        .map(|(server, host)| {
            json!({"server_id": server, "host_name": host, "volume_id": v.id,
                   "attachment_id": format!("att-{}", v.id), "device": "/dev/vdb"})
        })
        .collect();
    json!({
        "id": v.id, "name": v.name, "size": v.size, "status": v.status,
        "metadata": v.metadata, "attachments": attachments,
        "availability_zone": "nova", "bootable": "false", "encrypted": false,
        "multiattach": false, "volume_type": "lvmdriver-1",
        "created_at": format!("2026-12-03T13:00:{:02}.000000", v.seq % 60),
        "os-vol-tenant-attr:tenant_id": v.project,
    })
}

fn not_found(id: &str) -> Response {
    cinder_error(
        StatusCode::NOT_FOUND,
        "itemNotFound",
        format!("Volume {id} could not be found."),
    )
}

async fn create(
    State(st): State<Arc<CinderState>>,
    Path(project): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let v = &body["volume"];
    let Some(size) = v["size"].as_u64().filter(|s| *s >= 1) else {
        return cinder_error(
            StatusCode::BAD_REQUEST,
            "badRequest",
            "Invalid input for field/attribute size.",
        );
    };
    let metadata: BTreeMap<String, String> =
        serde_json::from_value(v["metadata"].clone()).unwrap_or_default();
    st.creates.fetch_add(1, Ordering::SeqCst);
    let id = uuid::Uuid::new_v4().to_string();
    let vol = Volume {
        id: id.clone(),
        seq: st.seq.fetch_add(1, Ordering::SeqCst),
        project,
        name: v["name"].as_str().unwrap_or_default().to_owned(),
        size,
        status: "creating".into(),
        metadata,
        attachments: vec![],
    };
    let out = view(&vol);
    st.volumes.lock().unwrap().insert(id.clone(), vol);
    let st2 = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep(STEP).await;
        set(&st2, &id, |v| v.status = "available".into());
    });
    (StatusCode::ACCEPTED, Json(json!({ "volume": out }))).into_response()
}

async fn show(
    State(st): State<Arc<CinderState>>,
    Path((project, id)): Path<(String, String)>,
) -> Response {
    match st.volumes.lock().unwrap().get(&id) {
        Some(v) if v.project == project => Json(json!({ "volume": view(v) })).into_response(),
        _ => not_found(&id),
    }
}

async fn list(
    State(st): State<Arc<CinderState>>,
    Path(project): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let filter: BTreeMap<String, String> = match q.get("metadata") {
        None => BTreeMap::new(),
        Some(m) => match serde_json::from_str(m) {
            Ok(f) => f,
            Err(_) => {
                return cinder_error(StatusCode::BAD_REQUEST, "badRequest", "Invalid metadata")
            }
        },
    };
    let base = st.base.lock().unwrap().clone();
    let g = st.volumes.lock().unwrap();
    let matching = g.values().filter(|v| {
        v.project == project
            && filter
                .iter()
                .all(|(k, want)| v.metadata.get(k) == Some(want))
    });
    let p = match page(matching, &q, |v| v.seq, |v| &v.id) {
        Ok(p) => p,
        Err(m) => {
            return cinder_error(
                StatusCode::BAD_REQUEST,
                "badRequest",
                format!("marker [{m}] not found"),
            )
        }
    };
    let items: Vec<Value> = p.items.iter().map(|v| view(v)).collect();
    let links: Vec<Value> = p
        .next
        .map(|last| {
            let mut href = format!(
                "{base}/{project}/volumes/detail?limit={}&marker={}",
                p.limit, last.id
            );
            if let Some(m) = q.get("metadata") {
                href.push_str("&metadata=");
                href.push_str(&escape(m));
            }
            json!({"rel": "next", "href": href})
        })
        .into_iter()
        .collect();
    Json(json!({"volumes": items, "volumes_links": links})).into_response()
}

fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn delete(
    State(st): State<Arc<CinderState>>,
    Path((project, id)): Path<(String, String)>,
) -> Response {
    {
        let mut g = st.volumes.lock().unwrap();
        let Some(v) = g.get_mut(&id).filter(|v| v.project == project) else {
            return not_found(&id);
        };
        if v.status != "available" && v.status != "error" {
            return cinder_error(
                StatusCode::BAD_REQUEST,
                "badRequest",
                format!(
                    "Invalid volume: Volume status must be available or error or \
                     error_restoring or error_extending or error_managing and must not be \
                     migrating, attached, belong to a group, have snapshots, awaiting a \
                     transfer, or be disassociated from snapshots after volume transfer, but \
                     current status is: {}.",
                    v.status
                ),
            );
        }
        v.status = "deleting".into();
    }
    let st2 = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep(STEP).await;
        st2.volumes.lock().unwrap().remove(&id);
    });
    StatusCode::ACCEPTED.into_response()
}
