//! An in-memory Kubernetes API server with the semantics the runtime relies on, served
//! to a real `kube::Client` through a tower service (no network):
//!
//! - create (409 AlreadyExists; 404 when the namespace does not exist), get (404),
//!   replace with resourceVersion compare-and-set (409 Conflict), JSON merge patch,
//!   delete with garbage collection of dependents through ownerReferences;
//! - list and watch with label selectors (`k=v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
//!   `k notin (a,b)`) and the `metadata.name` field selector; watches replay events
//!   after the given resourceVersion, answer 410 Gone for one older than the history
//!   kept, and end after `timeoutSeconds`;
//! - every write bumps a cluster-wide resourceVersion; `generation` grows on spec
//!   changes; `status` is only written through the `status` subresource;
//! - pod logs (`tailLines`).
//!
//! A simulated controller plus kubelet plays the rest of the cluster: for each new
//! Deployment it creates a pod (owned by the Deployment), then moves it to the
//! outcome a test-chosen function gives for the image (ready, image pull back-off,
//! crash loop, unschedulable, ...), updating the Deployment's status. For each new
//! Job (once not suspended) it creates one pod that runs the container's command as a tiny shell would
//! (see [`Program`]): its `echo`s become the pod's log, it ends with its `exit`
//! code (Succeeded or Failed, and the Job Complete or Failed), or runs until deleted
//! when it `sleep`s. A followed log ends when its pod's container ended.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use k8s_openapi::ByteString;
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// What the simulated kubelet makes of a pod, chosen by image.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Runs and passes its readiness probe.
    Ready,
    /// Runs but never becomes ready.
    NotReady,
    /// The image cannot be pulled.
    ImagePullBackOff,
    /// The container exits with this code, again and again.
    CrashLoop(i32),
    /// No node can take it.
    Unschedulable,
}

type Behaviour = Arc<dyn Fn(&str) -> Outcome + Send + Sync>;

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    resource: String,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    uid: u64,
    /// (resource, namespace, name) -> object.
    objects: BTreeMap<(String, String, String), Value>,
    history: Vec<Change>,
    /// Changes before this resourceVersion were compacted away.
    compacted_before: u64,
    logs: HashMap<(String, String), Vec<String>>,
    requests: Vec<String>,
    /// The next this many watches find their resourceVersion compacted away.
    expire_watches: usize,
}

/// The fake cluster. Cheap to clone.
#[derive(Clone)]
pub(crate) struct FakeCluster {
    state: Arc<Mutex<State>>,
    changes: broadcast::Sender<Change>,
    behaviour: Behaviour,
}

fn status(code: u16, reason: &str, message: String) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

type Body = BoxBody<Bytes, Infallible>;

fn respond(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

fn cluster_scoped(resource: &str) -> bool {
    resource == "namespaces"
}

fn kind_of(resource: &str) -> &'static str {
    match resource {
        "deployments" => "Deployment",
        "pods" => "Pod",
        "services" => "Service",
        "secrets" => "Secret",
        "persistentvolumeclaims" => "PersistentVolumeClaim",
        "ingresses" => "Ingress",
        "cronjobs" => "CronJob",
        "jobs" => "Job",
        "namespaces" => "Namespace",
        _ => "Unknown",
    }
}

/// A parsed request path.
struct Target {
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match parts.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, more @ ..] if !more.is_empty() => (Some(ns.to_string()), more),
        _ => (None, rest),
    };
    let (resource, name, sub) = match rest {
        [r] => (r, None, None),
        [r, n] => (r, Some(n.to_string()), None),
        [r, n, s] => (r, Some(n.to_string()), Some(s.to_string())),
        _ => return None,
    };
    Some(Target {
        resource: resource.to_string(),
        namespace,
        name,
        sub,
    })
}

fn query(req: &Request<kube::client::Body>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// One requirement of a label selector.
enum Req {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

fn parse_selector(sel: &str) -> Vec<Req> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in sel.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&sel[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&sel[start..]);
    let set = |s: &str| -> Vec<String> {
        s.trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(',')
            .map(|v| v.trim().to_string())
            .collect()
    };
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            if let Some((k, v)) = p.split_once(" notin ") {
                Req::NotIn(k.trim().into(), set(v))
            } else if let Some((k, v)) = p.split_once(" in ") {
                Req::In(k.trim().into(), set(v))
            } else if let Some((k, v)) = p.split_once("!=") {
                Req::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once("==") {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once('=') {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some(k) = p.strip_prefix('!') {
                Req::NotExists(k.trim().into())
            } else {
                Req::Exists(p.into())
            }
        })
        .collect()
}

fn matches(obj: &Value, labels: &[Req], fields: &[(String, String)]) -> bool {
    let get = |k: &str| obj["metadata"]["labels"][k].as_str().map(str::to_string);
    let labels_ok = labels.iter().all(|r| match r {
        Req::Eq(k, v) => get(k).as_deref() == Some(v.as_str()),
        Req::Ne(k, v) => get(k).as_deref() != Some(v.as_str()),
        Req::Exists(k) => get(k).is_some(),
        Req::NotExists(k) => get(k).is_none(),
        Req::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
        Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(&x)),
    });
    let fields_ok = fields.iter().all(|(k, v)| match k.as_str() {
        "metadata.name" => obj["metadata"]["name"].as_str() == Some(v.as_str()),
        "metadata.namespace" => obj["metadata"]["namespace"].as_str() == Some(v.as_str()),
        _ => false,
    });
    labels_ok && fields_ok
}

fn parse_fields(sel: &str) -> Vec<(String, String)> {
    sel.split(',')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once("==").or_else(|| p.split_once('='))?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = json!({});
        }
        let t = target.as_object_mut().unwrap();
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

fn now() -> String {
    // RFC 3339, second precision, from the system clock.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl FakeCluster {
    /// A cluster with the `default` namespace, whose kubelet makes every pod ready.
    pub(crate) fn new() -> Self {
        Self::with_behaviour(|_| Outcome::Ready)
    }

    /// A cluster whose kubelet gives each pod the outcome `f` chooses for its image.
    pub(crate) fn with_behaviour(f: impl Fn(&str) -> Outcome + Send + Sync + 'static) -> Self {
        let (changes, _) = broadcast::channel(4096);
        let c = FakeCluster {
            state: Arc::new(Mutex::new(State::default())),
            changes,
            behaviour: Arc::new(f),
        };
        c.insert("namespaces", "", json!({"metadata": {"name": "default"}}))
            .unwrap();
        c
    }

    /// A kube client talking to this cluster, default namespace `default`.
    pub(crate) fn client(&self) -> kube::Client {
        let me = self.clone();
        let svc = tower::service_fn(move |req: Request<kube::client::Body>| {
            let me = me.clone();
            async move { Ok::<_, Infallible>(me.handle(req).await) }
        });
        kube::Client::new(svc, "default")
    }

    /// Every object of `resource` in `namespace` ("" for cluster-scoped ones).
    pub(crate) fn objects(&self, resource: &str, namespace: &str) -> Vec<Value> {
        let st = self.state.lock().unwrap();
        st.objects
            .iter()
            .filter(|((r, ns, _), _)| r == resource && ns == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// One object.
    pub(crate) fn object(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let st = self.state.lock().unwrap();
        st.objects
            .get(&(resource.into(), namespace.into(), name.into()))
            .cloned()
    }

    /// `METHOD path?query` of every request served so far.
    pub(crate) fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Forgets the watch history up to now (as etcd compaction does): watches from
    /// an older resourceVersion get 410 Gone.
    pub(crate) fn compact(&self) {
        let mut st = self.state.lock().unwrap();
        st.compacted_before = st.rv + 1;
        st.history.clear();
    }

    /// The next watch finds its resourceVersion compacted away (410 Gone), as
    /// happens when a watcher falls behind etcd's compaction.
    pub(crate) fn expire_next_watch(&self) {
        self.state.lock().unwrap().expire_watches += 1;
    }

    fn record(&self, st: &mut State, resource: &str, ns: &str, kind: &'static str, object: Value) {
        let ch = Change {
            rv: st.rv,
            resource: resource.into(),
            namespace: ns.into(),
            kind,
            object,
        };
        st.history.push(ch.clone());
        let _ = self.changes.send(ch);
    }

    /// Creates an object (server-side fields filled in). Err is (code, reason, message).
    fn insert(
        &self,
        resource: &str,
        ns: &str,
        mut obj: Value,
    ) -> Result<Value, (u16, &'static str, String)> {
        let mut st = self.state.lock().unwrap();
        let mut name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            if let Some(prefix) = obj["metadata"]["generateName"].as_str() {
                name = format!("{prefix}{:05x}", st.uid + 1);
            } else {
                return Err((
                    422,
                    "Invalid",
                    format!("{resource}: metadata.name: Required value"),
                ));
            }
        }
        if !cluster_scoped(resource)
            && !st
                .objects
                .contains_key(&("namespaces".into(), String::new(), ns.into()))
        {
            return Err((404, "NotFound", format!("namespaces \"{ns}\" not found")));
        }
        let key = (resource.to_string(), ns.to_string(), name.clone());
        if st.objects.contains_key(&key) {
            return Err((
                409,
                "AlreadyExists",
                format!("{resource} \"{name}\" already exists"),
            ));
        }
        st.rv += 1;
        st.uid += 1;
        let meta = &mut obj["metadata"];
        meta["name"] = json!(name);
        if !cluster_scoped(resource) {
            meta["namespace"] = json!(ns);
        }
        meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", st.uid));
        meta["resourceVersion"] = json!(st.rv.to_string());
        meta["creationTimestamp"] = json!(now());
        if obj.get("spec").is_some() {
            obj["metadata"]["generation"] = json!(1);
        }
        obj["kind"] = json!(kind_of(resource));
        if resource == "secrets" {
            // stringData is write-only: the API server moves it into data (base64).
            if let Some(Value::Object(sd)) = obj.as_object_mut().unwrap().remove("stringData") {
                for (k, v) in sd {
                    // k8s-openapi's ByteString serializes as the API's base64.
                    let b = ByteString(v.as_str().unwrap_or_default().as_bytes().to_vec());
                    obj["data"][k] = serde_json::to_value(b).unwrap();
                }
            }
        }
        st.objects.insert(key, obj.clone());
        self.record(&mut st, resource, ns, "ADDED", obj.clone());
        drop(st);
        if resource == "deployments" {
            tokio::spawn(self.clone().reconcile_deployment(ns.to_string(), name));
        } else if resource == "jobs" && obj["spec"]["suspend"] != json!(true) {
            tokio::spawn(self.clone().reconcile_job(ns.to_string(), name));
        }
        Ok(obj)
    }

    /// Replaces an object (`status_only`: only its status; otherwise everything but
    /// its status), comparing resourceVersions when the new one carries one.
    fn replace(
        &self,
        resource: &str,
        ns: &str,
        name: &str,
        mut obj: Value,
        status_only: bool,
    ) -> Result<Value, (u16, &'static str, String)> {
        let mut st = self.state.lock().unwrap();
        let key = (resource.to_string(), ns.to_string(), name.to_string());
        let Some(old) = st.objects.get(&key).cloned() else {
            return Err((404, "NotFound", format!("{resource} \"{name}\" not found")));
        };
        if let Some(rv) = obj["metadata"]["resourceVersion"].as_str() {
            if rv
                != old["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
            {
                return Err((
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {resource} \"{name}\": the object has \
                         been modified; please apply your changes to the latest version and try \
                         again"
                    ),
                ));
            }
        }
        let mut new = if status_only {
            let mut n = old.clone();
            n["status"] = obj["status"].take();
            n
        } else {
            obj["status"] = old["status"].clone();
            if obj["status"].is_null() {
                obj.as_object_mut().unwrap().remove("status");
            }
            // Immutable server-side fields.
            for f in [
                "uid",
                "creationTimestamp",
                "namespace",
                "name",
                "generation",
            ] {
                obj["metadata"][f] = old["metadata"][f].clone();
            }
            if obj.get("spec") != old.get("spec") && obj.get("spec").is_some() {
                let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                obj["metadata"]["generation"] = json!(g);
            }
            obj
        };
        st.rv += 1;
        new["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        new["kind"] = json!(kind_of(resource));
        st.objects.insert(key, new.clone());
        self.record(&mut st, resource, ns, "MODIFIED", new.clone());
        Ok(new)
    }

    /// Deletes an object and, transitively, every object it owns.
    fn remove(
        &self,
        resource: &str,
        ns: &str,
        name: &str,
    ) -> Result<Value, (u16, &'static str, String)> {
        let mut st = self.state.lock().unwrap();
        let key = (resource.to_string(), ns.to_string(), name.to_string());
        let Some(obj) = st.objects.remove(&key) else {
            return Err((404, "NotFound", format!("{resource} \"{name}\" not found")));
        };
        let mut doomed = vec![obj["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string()];
        st.rv += 1;
        self.record(&mut st, resource, ns, "DELETED", obj.clone());
        // Garbage collection: dependents of anything deleted go too.
        while let Some(uid) = doomed.pop() {
            let owned: Vec<_> = st
                .objects
                .iter()
                .filter(|(_, v)| {
                    v["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == json!(uid)))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in owned {
                let o = st.objects.remove(&k).unwrap();
                doomed.push(
                    o["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
                st.rv += 1;
                if k.0 == "pods" {
                    st.logs.remove(&(k.1.clone(), k.2.clone()));
                }
                self.record(&mut st, &k.0, &k.1, "DELETED", o);
            }
        }
        Ok(obj)
    }

    fn list(
        &self,
        resource: &str,
        ns: Option<&str>,
        labels: &[Req],
        fields: &[(String, String)],
    ) -> Value {
        let st = self.state.lock().unwrap();
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|((r, n, _), _)| r == resource && ns.is_none_or(|ns| ns == n))
            .filter(|(_, v)| matches(v, labels, fields))
            .map(|(_, v)| v.clone())
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": format!("{}List", kind_of(resource)),
            "metadata": { "resourceVersion": st.rv.to_string() },
            "items": items,
        })
    }

    async fn handle(&self, req: Request<kube::client::Body>) -> Response<Body> {
        let q = query(&req);
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        self.state.lock().unwrap().requests.push(format!(
            "{method} {path}{}",
            req.uri()
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default()
        ));
        let Some(t) = parse_path(&path) else {
            return respond(404, &status(404, "NotFound", format!("no route {path}")));
        };
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let parsed: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return respond(400, &status(400, "BadRequest", e.to_string())),
            }
        };
        let ns = t.namespace.clone().unwrap_or_default();
        let labels = parse_selector(q.get("labelSelector").map(String::as_str).unwrap_or(""));
        let fields = parse_fields(q.get("fieldSelector").map(String::as_str).unwrap_or(""));
        let result = match (&method, &t.name, t.sub.as_deref()) {
            (&Method::GET, None, _) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                return self.watch(t, q, labels, fields);
            }
            (&Method::GET, None, _) => {
                Ok(self.list(&t.resource, t.namespace.as_deref(), &labels, &fields))
            }
            (&Method::GET, Some(name), Some("log")) => {
                return self.logs(&ns, name, &q);
            }
            (&Method::GET, Some(name), _) => self.object(&t.resource, &ns, name).ok_or((
                404,
                "NotFound",
                format!("{} \"{name}\" not found", t.resource),
            )),
            (&Method::POST, None, _) => self
                .insert(&t.resource, &ns, parsed)
                .map(|v| (v, 201))
                .map(|(v, _)| v),
            (&Method::PUT, Some(name), sub) => {
                self.replace(&t.resource, &ns, name, parsed, sub == Some("status"))
            }
            (&Method::PATCH, Some(name), sub) => match self.object(&t.resource, &ns, name) {
                None => Err((
                    404,
                    "NotFound",
                    format!("{} \"{name}\" not found", t.resource),
                )),
                Some(mut cur) => {
                    let status_only = sub == Some("status");
                    let was_ready = cur["status"]["readyReplicas"].as_i64().unwrap_or(0) > 0;
                    let was_suspended = cur["spec"]["suspend"] == json!(true);
                    merge_patch(&mut cur, &parsed);
                    cur["metadata"]
                        .as_object_mut()
                        .unwrap()
                        .remove("resourceVersion");
                    let done = self.replace(&t.resource, &ns, name, cur, status_only);
                    // A Job let go: its controller makes its pod.
                    if t.resource == "jobs"
                        && was_suspended
                        && parsed["spec"]["suspend"] == json!(false)
                        && done.is_ok()
                    {
                        tokio::spawn(self.clone().reconcile_job(ns.clone(), name.clone()));
                    }
                    // A scaled Deployment's controller brings its replicas to the count.
                    if t.resource == "deployments" && !status_only && done.is_ok() {
                        self.set_ready_replicas(&ns, name, was_ready);
                        return respond(200, &self.object("deployments", &ns, name).unwrap());
                    }
                    done
                }
            },
            (&Method::DELETE, Some(name), _) => self.remove(&t.resource, &ns, name),
            _ => Err((405, "MethodNotAllowed", format!("{method} {path}"))),
        };
        match result {
            Ok(v) => respond(if method == Method::POST { 201 } else { 200 }, &v),
            Err((code, reason, msg)) => respond(code, &status(code, reason, msg)),
        }
    }

    fn watch(
        &self,
        t: Target,
        q: HashMap<String, String>,
        labels: Vec<Req>,
        fields: Vec<(String, String)>,
    ) -> Response<Body> {
        let since: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(290u64);
        // Subscribe before reading the history, so nothing falls in between.
        let mut rx = self.changes.subscribe();
        let mut st = self.state.lock().unwrap();
        let expired = st.expire_watches > 0;
        st.expire_watches = st.expire_watches.saturating_sub(1);
        let resource = t.resource.clone();
        let ns = t.namespace.clone();
        let wanted = move |c: &Change| {
            c.resource == resource
                && ns.as_deref().is_none_or(|n| n == c.namespace)
                && matches(&c.object, &labels, &fields)
        };
        let line = |kind: &str, object: &Value| {
            Bytes::from(format!("{}\n", json!({ "type": kind, "object": object })))
        };
        let mut first: Vec<Bytes> = Vec::new();
        let mut last_sent = since;
        if expired || (since != 0 && since + 1 < st.compacted_before) {
            first.push(line(
                "ERROR",
                &status(410, "Expired", format!("too old resource version: {since}")),
            ));
            drop(st);
            let stream = futures::stream::iter(
                first
                    .into_iter()
                    .map(|b| Ok::<_, Infallible>(http_body::Frame::data(b))),
            );
            return Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap();
        }
        if since == 0 {
            // No resourceVersion: synthetic ADDED events for what exists now.
            for ((r, n, _), v) in &st.objects {
                let c = Change {
                    rv: st.rv,
                    resource: r.clone(),
                    namespace: n.clone(),
                    kind: "ADDED",
                    object: v.clone(),
                };
                if wanted(&c) {
                    first.push(line("ADDED", v));
                }
            }
            last_sent = st.rv;
        } else {
            for c in st.history.iter().filter(|c| c.rv > since) {
                if wanted(c) {
                    first.push(line(c.kind, &c.object));
                }
                last_sent = last_sent.max(c.rv);
            }
            last_sent = last_sent.max(st.rv);
        }
        drop(st);
        streamed(
            "application/json",
            move |tx: tokio::sync::mpsc::UnboundedSender<Bytes>| async move {
                for b in first {
                    if tx.send(b).is_err() {
                        return;
                    }
                }
                let end = tokio::time::sleep(Duration::from_secs(timeout));
                tokio::pin!(end);
                loop {
                    tokio::select! {
                        _ = &mut end => return,
                        _ = tx.closed() => return,
                        c = rx.recv() => match c {
                            Ok(c) if c.rv > last_sent => {
                                if wanted(&c) && tx.send(line(c.kind, &c.object)).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(_) => return,
                        }
                    }
                }
            },
        )
    }

    fn logs(&self, ns: &str, pod: &str, q: &HashMap<String, String>) -> Response<Body> {
        let st = self.state.lock().unwrap();
        if !st
            .objects
            .contains_key(&("pods".into(), ns.into(), pod.into()))
        {
            return respond(
                404,
                &status(404, "NotFound", format!("pods \"{pod}\" not found")),
            );
        }
        let lines = st
            .logs
            .get(&(ns.into(), pod.into()))
            .cloned()
            .unwrap_or_default();
        let tail: usize = q
            .get("tailLines")
            .and_then(|v| v.parse().ok())
            .unwrap_or(usize::MAX);
        let skip = lines.len().saturating_sub(tail);
        let text: String = lines[skip..].iter().map(|l| format!("{l}\n")).collect();
        drop(st);
        if q.get("follow").is_none_or(|f| f != "true") {
            return Response::builder()
                .status(200)
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from(text)).boxed())
                .unwrap();
        }
        // follow: what is there, then new lines as they are written, until the pod
        // is deleted.
        let me = self.clone();
        let (ns, pod) = (ns.to_string(), pod.to_string());
        let mut sent = lines.len();
        streamed(
            "text/plain",
            move |tx: tokio::sync::mpsc::UnboundedSender<Bytes>| async move {
                if tx.send(Bytes::from(text)).is_err() {
                    return;
                }
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let st = me.state.lock().unwrap();
                    if !st
                        .objects
                        .contains_key(&("pods".into(), ns.clone(), pod.clone()))
                    {
                        return;
                    }
                    let all = st
                        .logs
                        .get(&(ns.clone(), pod.clone()))
                        .cloned()
                        .unwrap_or_default();
                    let phase = st.objects[&("pods".into(), ns.clone(), pod.clone())]["status"]
                        ["phase"]
                        .clone();
                    drop(st);
                    for l in &all[sent.min(all.len())..] {
                        if tx.send(Bytes::from(format!("{l}\n"))).is_err() {
                            return;
                        }
                    }
                    sent = all.len();
                    if phase == "Succeeded" || phase == "Failed" {
                        return;
                    }
                }
            },
        )
    }

    /// Appends a line to a pod's log (as the app writing output).
    pub(crate) fn append_log(&self, ns: &str, pod: &str, line: &str) {
        self.state
            .lock()
            .unwrap()
            .logs
            .entry((ns.into(), pod.into()))
            .or_default()
            .push(line.into());
    }

    /// The controller's part for a new Deployment or Job (`owner`, of `api_version`):
    /// a pod from its template named `pod_name`, Pending, once the runtime had time
    /// to list and start watching (the rest arrives by watch). Returns the image, or
    /// None when the pod could not be created.
    async fn create_pod(
        &self,
        ns: &str,
        owner: &Value,
        api_version: &str,
        pod_name: &str,
    ) -> Option<String> {
        let template = &owner["spec"]["template"];
        let image = template["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut labels = template["metadata"]["labels"].clone();
        if owner["kind"] == "Job" {
            // As the Job controller labels its pods.
            labels["job-name"] = owner["metadata"]["name"].clone();
            labels["batch.kubernetes.io/job-name"] = owner["metadata"]["name"].clone();
        }
        let pod = json!({
            "apiVersion": "v1",
            "metadata": {
                "name": pod_name,
                "labels": labels,
                "ownerReferences": [{
                    "apiVersion": api_version, "kind": owner["kind"], "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
                }],
            },
            "spec": template["spec"],
            "status": { "phase": "Pending" },
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.insert("pods", ns, pod).ok()?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        Some(image)
    }

    /// The pod status of an outcome that never lets the container start.
    fn stuck_status(outcome: &Outcome, image: &str) -> Option<Value> {
        match outcome {
            Outcome::ImagePullBackOff => Some(json!({
                "phase": "Pending",
                "conditions": [{ "type": "PodScheduled", "status": "True" }],
                "containerStatuses": [{ "name": "app", "image": image, "ready": false, "restartCount": 0,
                    "state": { "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": format!("Back-off pulling image \"{image}\""),
                    } }, "lastState": {} }],
            })),
            Outcome::Unschedulable => Some(json!({
                "phase": "Pending",
                "conditions": [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient memory.",
                }],
            })),
            _ => None,
        }
    }

    fn set_pod_status(&self, ns: &str, pod: &str, status: Value) {
        let _ = self.replace(
            "pods",
            ns,
            pod,
            json!({ "status": status, "metadata": {} }),
            true,
        );
    }

    /// The controller and kubelet: a pod for the Deployment, then its outcome.
    async fn reconcile_deployment(self, ns: String, name: String) {
        let Some(dep) = self.object("deployments", &ns, &name) else {
            return;
        };
        let template = dep["spec"]["template"].clone();
        let pod_name = format!(
            "{name}-7d4b9c8f6-x{:04x}",
            self.state.lock().unwrap().uid % 0xffff
        );
        let Some(image) = self.create_pod(&ns, &dep, "apps/v1", &pod_name).await else {
            return;
        };
        let outcome = (self.behaviour)(&image);
        let container = |state: Value, ready: bool, restarts: u32, last: Value| {
            json!([{ "name": "app", "image": image, "ready": ready, "restartCount": restarts,
                     "state": state, "lastState": last }])
        };
        let (pod_status, ready) = match &outcome {
            Outcome::Ready | Outcome::NotReady => {
                let ready = outcome == Outcome::Ready;
                (
                    json!({
                        "phase": "Running",
                        "conditions": [
                            { "type": "PodScheduled", "status": "True" },
                            { "type": "Ready", "status": if ready { "True" } else { "False" } },
                        ],
                        "containerStatuses": container(json!({ "running": { "startedAt": now() } }), ready, 0, json!({})),
                    }),
                    ready,
                )
            }
            Outcome::CrashLoop(code) => (
                json!({
                    "phase": "Running",
                    "conditions": [{ "type": "PodScheduled", "status": "True" }, { "type": "Ready", "status": "False" }],
                    "containerStatuses": container(
                        json!({ "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container" } }),
                        false, 3,
                        json!({ "terminated": { "exitCode": code, "reason": "Error" } }),
                    ),
                }),
                false,
            ),
            stuck => (Self::stuck_status(stuck, &image).unwrap(), false),
        };
        if matches!(
            outcome,
            Outcome::Ready | Outcome::NotReady | Outcome::CrashLoop(_)
        ) {
            let port = template["spec"]["containers"][0]["ports"][0]["containerPort"]
                .as_i64()
                .unwrap_or(0);
            self.state.lock().unwrap().logs.insert(
                (ns.clone(), pod_name.clone()),
                vec![
                    format!("starting {image}"),
                    format!("listening on :{port}"),
                    "ready".to_string(),
                ],
            );
        }
        self.set_pod_status(&ns, &pod_name, pod_status);
        self.set_ready_replicas(&ns, &name, ready);
    }

    /// The Job controller and kubelet: one pod (never restarted) running the
    /// container's [`Program`], then the Job Complete or Failed.
    async fn reconcile_job(self, ns: String, name: String) {
        let Some(job) = self.object("jobs", &ns, &name) else {
            return;
        };
        let pod_name = format!("{name}-x{:04x}", self.state.lock().unwrap().uid % 0xffff);
        let Some(image) = self.create_pod(&ns, &job, "batch/v1", &pod_name).await else {
            return;
        };
        let outcome = (self.behaviour)(&image);
        if let Some(stuck) = Self::stuck_status(&outcome, &image) {
            self.set_pod_status(&ns, &pod_name, stuck);
            return;
        }
        let c = &job["spec"]["template"]["spec"]["containers"][0];
        let argv: Vec<String> = c["command"]
            .as_array()
            .into_iter()
            .chain(c["args"].as_array())
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        let program = match outcome {
            Outcome::CrashLoop(code) => Program {
                output: Vec::new(),
                exit: Some(code),
            },
            _ => Program::of(&argv),
        };
        let container = |state: Value| {
            json!([{ "name": "app", "image": image, "ready": false, "restartCount": 0,
                     "state": state, "lastState": {} }])
        };
        let started = now();
        self.state
            .lock()
            .unwrap()
            .logs
            .insert((ns.clone(), pod_name.clone()), program.output.clone());
        self.set_pod_status(
            &ns,
            &pod_name,
            json!({
                "phase": "Running",
                "conditions": [{ "type": "PodScheduled", "status": "True" }],
                "containerStatuses": container(json!({ "running": { "startedAt": now() } })),
            }),
        );
        // A command that sleeps runs until its pod is deleted.
        let Some(code) = program.exit else {
            return;
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        if self.object("pods", &ns, &pod_name).is_none() {
            return;
        }
        let ok = code == 0;
        self.set_pod_status(
            &ns,
            &pod_name,
            json!({
                "phase": if ok { "Succeeded" } else { "Failed" },
                "conditions": [{ "type": "PodScheduled", "status": "True" }],
                "containerStatuses": container(json!({ "terminated": {
                    "exitCode": code, "reason": if ok { "Completed" } else { "Error" },
                    "finishedAt": now(),
                } })),
            }),
        );
        let condition = if ok {
            json!({ "type": "Complete", "status": "True", "lastTransitionTime": now() })
        } else {
            json!({ "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                    "lastTransitionTime": now() })
        };
        let mut status = json!({
            "succeeded": i32::from(ok), "failed": i32::from(!ok), "conditions": [condition],
            "startTime": started,
        });
        if ok {
            status["completionTime"] = json!(now());
        }
        let _ = self.replace(
            "jobs",
            &ns,
            &name,
            json!({ "metadata": {}, "status": status }),
            true,
        );
    }

    /// The CronJob controller's part when CronJob `name` falls due: a Job from its
    /// `jobTemplate`, owned by it and annotated with the time it was due (which the
    /// Job controller then runs). Returns the Job's name.
    pub(crate) fn fire_cron_job(&self, ns: &str, name: &str) -> String {
        let cron = self
            .object("cronjobs", ns, name)
            .unwrap_or_else(|| panic!("no CronJob {ns}/{name}"));
        let n = self.state.lock().unwrap().uid + 1;
        let job_name = format!("{name}-{n:08}");
        let mut meta = cron["spec"]["jobTemplate"]["metadata"].clone();
        meta["name"] = json!(job_name);
        meta["annotations"] = json!({ "batch.kubernetes.io/cronjob-scheduled-timestamp": now() });
        meta["ownerReferences"] = json!([{
            "apiVersion": "batch/v1", "kind": "CronJob", "name": name,
            "uid": cron["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
        }]);
        let job = json!({
            "apiVersion": "batch/v1",
            "metadata": meta,
            "spec": cron["spec"]["jobTemplate"]["spec"],
        });
        self.insert("jobs", ns, job).expect("the CronJob's Job");
        job_name
    }

    /// The Deployment's status as its controller reports it: all its `replicas`
    /// ready when its pods are, none when they are not.
    fn set_ready_replicas(&self, ns: &str, name: &str, ready: bool) {
        let Some(dep) = self.object("deployments", ns, name) else {
            return;
        };
        let wanted = dep["spec"]["replicas"].as_i64().unwrap_or(1);
        let n = if ready { wanted } else { 0 };
        let _ = self.replace(
            "deployments",
            ns,
            name,
            json!({ "metadata": {}, "status": {
                "observedGeneration": dep["metadata"]["generation"],
                "replicas": wanted, "updatedReplicas": wanted, "readyReplicas": n, "availableReplicas": n,
                "unavailableReplicas": wanted - n,
            } }),
            true,
        );
    }
}

/// A 200 answer of `content_type` whose body streams what a task `f` sends through
/// a channel (watches, followed logs).
fn streamed<F, Fut>(content_type: &str, f: F) -> Response<Body>
where
    F: FnOnce(tokio::sync::mpsc::UnboundedSender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(f(tx));
    let live = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Response::builder()
        .status(200)
        .header("content-type", content_type)
        .body(BodyExt::boxed(StreamBody::new(
            live.map(|b| Ok::<_, Infallible>(http_body::Frame::data(b))),
        )))
        .unwrap()
}

/// What a Job's container does in the fake kubelet, read from its command (`sh -c
/// SCRIPT`, or the words of the command) as a tiny shell would: `echo WORDS` prints
/// them, `exit N` ends with N, `false` with 1, `sleep ...` runs until the pod is
/// deleted; anything else does nothing; the end of the script exits 0.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Program {
    /// What it prints, line by line.
    pub(crate) output: Vec<String>,
    /// Its exit code, or None while it never ends.
    pub(crate) exit: Option<i32>,
}

impl Program {
    pub(crate) fn of(argv: &[String]) -> Program {
        let script = match argv {
            [sh, c, script, ..] if sh.ends_with("sh") && c == "-c" => script.clone(),
            _ => argv.join(" "),
        };
        let mut output = Vec::new();
        for part in script.split([';', '\n']).flat_map(|p| p.split("&&")) {
            let words: Vec<&str> = part.split_whitespace().collect();
            match words.as_slice() {
                ["echo", rest @ ..] => output.push(
                    rest.join(" ")
                        .trim_matches(|c| c == '"' || c == '\'')
                        .to_string(),
                ),
                ["exit", n] => {
                    return Program {
                        output,
                        exit: Some(n.parse().unwrap_or(2)),
                    }
                }
                ["false"] => {
                    return Program {
                        output,
                        exit: Some(1),
                    }
                }
                ["sleep", ..] => return Program { output, exit: None },
                _ => {}
            }
        }
        Program {
            output,
            exit: Some(0),
        }
    }
}
