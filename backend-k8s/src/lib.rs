#![doc = include_str!("../README.md")]

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob as K8sCronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{
    Api, DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy, WatchEvent,
    WatchParams,
};
use kube::Client;
use wharf_core::cron::ScheduledRun;
use wharf_core::{
    label, CronJob, Endpoint, Error, ErrorKind, Instance, InstanceId, InstanceSpec, InstanceStatus,
    Labels, LogLine, LogOptions, LogStream, ProjectId, Result, Runtime, Timestamp, VolumeInfo,
    VolumeRef,
};

pub mod cron;
pub mod manifest;
pub use manifest::{Manifests, CONTAINER, INSTANCE_LABEL};

const BACKEND: &str = "kubernetes";

/// How many last lines of a cron run's log are kept with its record.
const RUN_LOG_LINES: i64 = 2000;

/// Where instances go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespacePolicy {
    /// Every instance in this one namespace.
    Fixed(String),
    /// A namespace per project: `<prefix><project id>` (from the instance's
    /// `wharf.project` label), created when missing.
    PerProject {
        /// Prepended to the project id.
        prefix: String,
    },
    /// A namespace per value of an instance label: `<prefix><value>`, created when
    /// missing. E.g. one per environment with a label the platform sets for it.
    ByLabel {
        /// The label whose value names the namespace (an instance without it is
        /// refused).
        label: String,
        /// Prepended to the value.
        prefix: String,
    },
}

/// An Ingress per instance, routing `<service name>.<host_suffix>` to it. Without
/// one, Wharf's own router reaches instances at their Service's cluster address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressConfig {
    /// The `ingressClassName` (the cluster's default class when `None`).
    pub class: Option<String>,
    /// Hosts are `<service name>.<host_suffix>` (validated as hostnames).
    pub host_suffix: String,
    /// A TLS Secret for the hosts, if the ingress controller terminates TLS.
    pub tls_secret: Option<String>,
}

/// How a [`KubernetesRuntime`] lays out instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// Which namespace an instance goes to.
    pub namespace: NamespacePolicy,
    /// An Ingress per instance, or `None` to hand the Service address to Wharf's router.
    pub ingress: Option<IngressConfig>,
    /// A Secret (in each namespace) with credentials for the image registry.
    pub image_pull_secret: Option<String>,
    /// The cluster's DNS domain, for endpoints (`<name>.<namespace>.svc.<domain>`).
    pub cluster_domain: String,
    /// Whether to run images that exist only on the engine that built them
    /// ([`InstanceSpec::image_local_only`]: a builder without a registry push).
    ///
    /// `false` (the default): such an instance is refused before anything is created,
    /// with an error saying to configure a registry push on the builder, since the
    /// cluster's nodes could not pull it. `true` only for a cluster whose nodes see
    /// the build engine's images (minikube on the same Docker engine, or kind after
    /// `kind load docker-image`): the container then gets `imagePullPolicy: Never`,
    /// so the node never asks a registry for the local name (which would resolve to
    /// Docker Hub) and a missing image fails at once with `ErrImageNeverPull`.
    pub allow_local_images: bool,
}

impl Default for KubernetesConfig {
    /// Namespace `default`, no Ingress, no pull secret, domain `cluster.local`, local
    /// images refused.
    fn default() -> Self {
        KubernetesConfig {
            namespace: NamespacePolicy::Fixed("default".into()),
            ingress: None,
            image_pull_secret: None,
            cluster_domain: "cluster.local".into(),
            allow_local_images: false,
        }
    }
}

/// A [`Runtime`] that runs each instance as a Deployment (its
/// [`InstanceSpec::replicas`]) with a Service, a Secret holding its environment and
/// optionally an Ingress, all labelled with Wharf's labels and owned by the
/// Deployment; a task ([`InstanceSpec::run_once`]) as a Job owning its Secret
/// ([`Manifests::job`]); cron jobs as CronJobs owned by the web instance's
/// Deployment ([`Runtime::schedule_cron`]).
///
/// [`Runtime::start`] returns once the pod's container has started, watching the
/// pods (no polling); a rollout that cannot start (image pull failures, a missing
/// config, an unschedulable pod) fails with the pod's reason and is removed.
/// [`KubernetesRuntime::wait_rollout`] waits for the rollout to be complete (ready).
#[derive(Clone)]
pub struct KubernetesRuntime {
    client: Client,
    config: KubernetesConfig,
}

impl fmt::Debug for KubernetesRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesRuntime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Maps a kube error by meaning.
fn kube_error(e: kube::Error) -> Error {
    let err = match &e {
        kube::Error::Api(s) => {
            let msg = format!(
                "the Kubernetes API answered {} {}: {}",
                s.code, s.reason, s.message
            );
            match s.code {
                404 => Error::not_found(msg),
                409 => Error::conflict(msg),
                400 | 422 => Error::invalid(msg),
                401 | 403 => Error::unavailable(msg).with_retryable(false),
                410 => Error::conflict(msg),
                429 | 500..=599 => Error::unavailable(msg),
                _ => Error::internal(msg),
            }
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            Error::unavailable(format!("cannot reach the Kubernetes API: {e}"))
        }
        _ => Error::internal(format!("Kubernetes client failed: {e}")),
    };
    err.with_backend(BACKEND).with_source(e)
}

/// What an instance is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A Deployment (a service's process type): id `namespace/name`.
    Deployment,
    /// A Job (a task: [`InstanceSpec::run_once`]): id `namespace/job/name`.
    Job,
}

/// The kind, namespace and name of an instance id.
fn parse_id(id: &InstanceId) -> Result<(Kind, &str, &str)> {
    let parts: Vec<&str> = id.0.split('/').collect();
    let kind = match parts.as_slice() {
        [ns, name] if !ns.is_empty() && !name.is_empty() => Kind::Deployment,
        [ns, "job", name] if !ns.is_empty() && !name.is_empty() => Kind::Job,
        _ => {
            return Err(Error::not_found(format!(
                "instance {id} not found (not a Kubernetes instance id)"
            )))
        }
    };
    Ok((kind, parts[0], parts[parts.len() - 1]))
}

/// `namespace/name` of a Deployment's instance id (NotFound for a task's).
fn split_id(id: &InstanceId) -> Result<(&str, &str)> {
    match parse_id(id)? {
        (Kind::Deployment, ns, name) => Ok((ns, name)),
        (Kind::Job, ..) => Err(Error::not_found(format!(
            "instance {id} is a task, which runs once: it has no replicas or rollout"
        ))),
    }
}

fn job_id(ns: &str, name: &str) -> InstanceId {
    InstanceId(format!("{ns}/job/{name}"))
}

/// The object that owns the rest of an instance: its Deployment or its Job.
trait Owner:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + fmt::Debug
    + Send
    + Sync
    + 'static
{
}
impl Owner for Deployment {}
impl Owner for Job {}

/// What a pod says about its rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PodState {
    /// Not scheduled or not started yet.
    Pending,
    /// The app container is running; `ready` when it passes its readiness probe.
    Running { ready: bool },
    /// The app container ran and stopped (or keeps crashing).
    Exited { code: Option<i32>, reason: String },
    /// It cannot start until someone fixes something: a bad image, a missing
    /// config, no node to run on.
    Stuck { reason: String },
}

/// Waiting reasons that never resolve by themselves.
const STUCK_WAITING: &[&str] = &[
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

fn with_message(reason: &str, message: Option<&String>) -> String {
    match message.filter(|m| !m.is_empty()) {
        Some(m) => format!("{reason}: {m}"),
        None => reason.to_string(),
    }
}

fn pod_state(pod: &Pod) -> PodState {
    let Some(status) = &pod.status else {
        return PodState::Pending;
    };
    for c in status.conditions.iter().flatten() {
        if c.type_ == "PodScheduled" && c.status == "False" {
            let reason = c.reason.as_deref().unwrap_or("Unschedulable");
            return PodState::Stuck {
                reason: with_message(reason, c.message.as_ref()),
            };
        }
    }
    let Some(cs) = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == CONTAINER)
    else {
        return PodState::Pending;
    };
    let last_exit = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    if let Some(state) = &cs.state {
        if let Some(w) = &state.waiting {
            let reason = w.reason.as_deref().unwrap_or("Waiting");
            if STUCK_WAITING.contains(&reason) {
                return PodState::Stuck {
                    reason: with_message(reason, w.message.as_ref()),
                };
            }
            if reason == "CrashLoopBackOff" {
                let (code, why) = match last_exit {
                    Some(t) => (
                        Some(t.exit_code),
                        format!(
                            "; last exit code {} ({})",
                            t.exit_code,
                            t.reason.as_deref().unwrap_or("Error")
                        ),
                    ),
                    None => (None, String::new()),
                };
                return PodState::Exited {
                    code,
                    reason: format!(
                        "CrashLoopBackOff: the container keeps exiting, restarted {} times{why}",
                        cs.restart_count
                    ),
                };
            }
            return PodState::Pending;
        }
        if let Some(t) = &state.terminated {
            return PodState::Exited {
                code: Some(t.exit_code),
                reason: with_message(
                    t.reason.as_deref().unwrap_or("Terminated"),
                    t.message.as_ref(),
                ),
            };
        }
        if state.running.is_some() {
            return PodState::Running { ready: cs.ready };
        }
    }
    PodState::Pending
}

/// What the watch of an instance's pods waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// The container started (it may exit later).
    Started,
    /// The pod is ready (the rollout is complete).
    Ready,
}

impl KubernetesRuntime {
    /// A runtime on `client` (see [`kube::Client::try_default`] for one from the
    /// kubeconfig or the in-cluster service account).
    pub fn new(client: Client, config: KubernetesConfig) -> Self {
        KubernetesRuntime { client, config }
    }

    /// The objects an instance would get, without creating anything (for review,
    /// dry runs and snapshots).
    pub fn manifests(&self, spec: &InstanceSpec) -> Result<Manifests> {
        manifest::build(spec, &self.config)
    }

    fn endpoint(&self, ns: &str, name: &str, port: u16) -> Endpoint {
        Endpoint {
            host: format!("{name}.{ns}.svc.{}", self.config.cluster_domain),
            port,
        }
    }

    async fn ensure_namespace(&self, ns: &str) -> Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        if api.get_opt(ns).await.map_err(kube_error)?.is_some() {
            return Ok(());
        }
        let mut nsobj = Namespace::default();
        nsobj.metadata.name = Some(ns.to_string());
        nsobj.metadata.labels = Some([(label::MANAGED.to_string(), "true".to_string())].into());
        match api.create(&PostParams::default(), &nsobj).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(kube_error(e).context(format!("cannot create namespace {ns}"))),
        }
    }

    /// Claims used to be named after the volume alone (`data`) and made by the
    /// operator. In a namespace of one project ([`NamespacePolicy::PerProject`]) such
    /// a claim can only be that project's, so when the scoped claim
    /// ([`manifest::claim_name`]) does not exist yet and the plain one does, the
    /// instance mounts the plain one where it is (never copied, renamed or deleted).
    /// Other namespaces may hold several projects, where a plain name says nothing of
    /// whose it is: never adopted there. Nor by an environment's or a preview's
    /// instance (its network names an environment: `wharf-<project>_<env>`): the plain
    /// claim holds the project's own data, which no environment may mount.
    async fn adopt_plain_claims(&self, spec: &InstanceSpec, m: &mut Manifests) -> Result<()> {
        let own_scope = spec.network.as_deref().is_some_and(|n| !n.contains('_'));
        if !own_scope {
            return Ok(());
        }
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &m.namespace);
        let mut keep = Vec::new();
        for (claim, v) in std::mem::take(&mut m.claims).into_iter().zip(&spec.volumes) {
            let scoped = claim.metadata.name.clone().unwrap_or_default();
            let exists = |name: String| {
                let api = api.clone();
                async move {
                    match api.get_opt(&name).await {
                        Ok(found) => Ok(found.is_some()),
                        Err(e) => Err(kube_error(e)),
                    }
                }
            };
            if scoped == v.name || exists(scoped.clone()).await? || !exists(v.name.clone()).await? {
                keep.push(claim);
                continue;
            }
            let pod_volumes = m
                .deployment
                .spec
                .as_mut()
                .and_then(|s| s.template.spec.as_mut())
                .and_then(|s| s.volumes.as_mut());
            for pv in pod_volumes.into_iter().flatten() {
                if let Some(pvc) = pv.persistent_volume_claim.as_mut() {
                    if pvc.claim_name == scoped {
                        pvc.claim_name = v.name.clone();
                    }
                }
            }
        }
        m.claims = keep;
        Ok(())
    }

    /// Creates the instance's volume claims that do not exist yet. They have no owner:
    /// deleting the instance's Deployment leaves them, and nothing here deletes one.
    async fn ensure_claims(&self, m: &Manifests) -> Result<()> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &m.namespace);
        for claim in &m.claims {
            let name = claim.metadata.name.clone().unwrap_or_default();
            match api.create(&PostParams::default(), claim).await {
                Ok(_) => {}
                // Made by an earlier instance: its data is what we mount, if it was
                // made for this project.
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let found = api.get(&name).await.map_err(kube_error)?;
                    let project = |c: &PersistentVolumeClaim| {
                        c.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(label::PROJECT).cloned())
                    };
                    if project(&found) != project(claim) {
                        return Err(Error::conflict(format!(
                            "volume claim {}/{name} exists but was not made by Wharf for this project",
                            m.namespace
                        ))
                        .with_backend(BACKEND));
                    }
                }
                Err(e) => {
                    return Err(kube_error(e)
                        .context(format!("cannot create volume claim {}/{name}", m.namespace)))
                }
            }
        }
        Ok(())
    }

    /// The instance's objects, with its namespace and volume claims made.
    async fn prepare(&self, spec: &InstanceSpec) -> Result<Manifests> {
        let mut m = manifest::build(spec, &self.config)?;
        if !matches!(self.config.namespace, NamespacePolicy::Fixed(_)) {
            self.ensure_namespace(&m.namespace).await?;
        }
        if matches!(self.config.namespace, NamespacePolicy::PerProject { .. }) {
            self.adopt_plain_claims(spec, &mut m).await?;
        }
        self.ensure_claims(&m).await?;
        Ok(m)
    }

    /// Runs a task ([`InstanceSpec::run_once`]) as a Job ([`Manifests::job`]) with the
    /// instance's Secret, owned by the Job; returns once its pod's container started
    /// (or already ended). A Job that cannot start is removed.
    async fn start_task(&self, spec: &InstanceSpec) -> Result<Instance> {
        let m = self.prepare(spec).await?;
        let ns = m.namespace.clone();
        let name = manifest::object_name(&spec.name)?;
        let mut job = m.job()?;
        // Created suspended (no pod yet), then its Secret owned by it, then let go:
        // the pod never waits for its env, and no Secret is ever left without an
        // owner to take it away.
        if let Some(s) = job.spec.as_mut() {
            s.suspend = Some(true);
        }
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        let created = jobs
            .create(&PostParams::default(), &job)
            .await
            .map_err(|e| kube_error(e).context(format!("cannot create Job {ns}/{name}")))?;
        let uid = created.metadata.uid.clone().unwrap_or_default();
        let started = async {
            let mut secret = m.secret.clone();
            secret.metadata.owner_references =
                Some(vec![manifest::owner("batch/v1", "Job", &name, &uid)]);
            Api::<Secret>::namespaced(self.client.clone(), &ns)
                .create(&PostParams::default(), &secret)
                .await
                .map_err(|e| kube_error(e).context("cannot create the task's Secret"))?;
            let go = serde_json::json!({ "spec": { "suspend": false } });
            jobs.patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&go),
            )
            .await
            .map_err(|e| kube_error(e).context(format!("cannot start Job {ns}/{name}")))?;
            self.watch_pods(&ns, &name, Until::Started, spec.health_check.timeout)
                .await
        }
        .await;
        if let Err(e) = started {
            // The Job owns the rest: removing it removes its Secret and pod.
            let _ = self.delete_all::<Job>(&ns, &name, Duration::ZERO).await;
            return Err(e);
        }
        Ok(Instance {
            id: job_id(&ns, &name),
            endpoint: self.endpoint(&ns, &name, spec.port),
            labels: job.metadata.labels.unwrap_or_default(),
        })
    }

    /// The task's Job, unless it is gone or going.
    async fn job(&self, ns: &str, name: &str) -> Result<Job> {
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        match api.get_opt(name).await.map_err(kube_error)? {
            Some(j) if j.metadata.deletion_timestamp.is_none() => Ok(j),
            _ => Err(Error::not_found(format!("task {ns}/{name} not found"))),
        }
    }

    /// Checks the instance exists (its Deployment or its Job).
    async fn exists(&self, kind: Kind, ns: &str, name: &str) -> Result<()> {
        match kind {
            Kind::Deployment => self.deployment(ns, name).await.map(drop),
            Kind::Job => self.job(ns, name).await.map(drop),
        }
    }

    async fn create_objects(&self, m: &mut Manifests, uid: &str) -> Result<()> {
        m.owned_by(uid);
        let ns = m.namespace.as_str();
        let pp = PostParams::default();
        Api::<Secret>::namespaced(self.client.clone(), ns)
            .create(&pp, &m.secret)
            .await
            .map_err(|e| kube_error(e).context("cannot create the instance's Secret"))?;
        Api::<Service>::namespaced(self.client.clone(), ns)
            .create(&pp, &m.service)
            .await
            .map_err(|e| kube_error(e).context("cannot create the instance's Service"))?;
        if let Some(ing) = &m.ingress {
            Api::<Ingress>::namespaced(self.client.clone(), ns)
                .create(&pp, ing)
                .await
                .map_err(|e| kube_error(e).context("cannot create the instance's Ingress"))?;
        }
        Ok(())
    }

    /// Watches the instance's pods until `until`, a stuck pod, or `timeout`.
    async fn watch_pods(
        &self,
        ns: &str,
        name: &str,
        until: Until,
        timeout: Duration,
    ) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let selector = format!("{INSTANCE_LABEL}={name}");
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = String::from("no pod was created");
        let verdict = |pod: &Pod, last: &mut String| -> Option<Result<()>> {
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() {
                return None;
            }
            let st = pod_state(pod);
            *last = format!("pod {pod_name} is {st:?}");
            match (st, until) {
                (PodState::Stuck { reason }, _) => Some(Err(Error::new(
                    ErrorKind::Backend,
                    format!("the rollout of {ns}/{name} is stuck: pod {pod_name}: {reason}"),
                )
                .with_backend(BACKEND)
                .with_retryable(false))),
                (PodState::Exited { reason, .. }, Until::Ready) => {
                    Some(Err(Error::health_check_failed(format!(
                        "the rollout of {ns}/{name} failed: pod {pod_name}: {reason}"
                    ))
                    .with_backend(BACKEND)))
                }
                (PodState::Running { ready: true }, _) => Some(Ok(())),
                (PodState::Running { .. } | PodState::Exited { .. }, Until::Started) => {
                    Some(Ok(()))
                }
                _ => None,
            }
        };
        loop {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(kube_error)?;
            for p in &list.items {
                if let Some(v) = verdict(p, &mut last) {
                    return v;
                }
            }
            let rv = list.metadata.resource_version.unwrap_or_default();
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let wp = WatchParams::default()
                .labels(&selector)
                .timeout((remaining.as_secs() as u32).clamp(1, 290));
            let mut events = pods.watch(&wp, &rv).await.map_err(kube_error)?.boxed();
            loop {
                let next = tokio::time::timeout_at(deadline, events.try_next()).await;
                match next {
                    Err(_) => {
                        return Err(Error::timeout(format!(
                            "the rollout of {ns}/{name} did not {} within {timeout:?}: {last}",
                            if until == Until::Ready {
                                "become ready"
                            } else {
                                "start"
                            }
                        ))
                        .with_backend(BACKEND))
                    }
                    Ok(Err(e)) => return Err(kube_error(e)),
                    Ok(Ok(None)) => break,
                    Ok(Ok(Some(WatchEvent::Added(p) | WatchEvent::Modified(p)))) => {
                        if let Some(v) = verdict(&p, &mut last) {
                            return v;
                        }
                    }
                    Ok(Ok(Some(WatchEvent::Deleted(_) | WatchEvent::Bookmark(_)))) => {}
                    // Too old a resourceVersion: list again.
                    Ok(Ok(Some(WatchEvent::Error(s)))) if s.code == 410 => break,
                    Ok(Ok(Some(WatchEvent::Error(s)))) => {
                        return Err(kube_error(kube::Error::Api(s)))
                    }
                }
            }
        }
    }

    /// Waits, watching the pods, until the instance's rollout is complete (its pod is
    /// ready). Fails with the pod's reason when it is stuck (image pull failures,
    /// unschedulable) or crashing (CrashLoopBackOff), and with Timeout after `timeout`.
    pub async fn wait_rollout(&self, id: &InstanceId, timeout: Duration) -> Result<()> {
        let (ns, name) = split_id(id)?;
        self.deployment(ns, name).await?;
        self.watch_pods(ns, name, Until::Ready, timeout).await
    }

    async fn deployment(&self, ns: &str, name: &str) -> Result<Deployment> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        match api.get_opt(name).await.map_err(kube_error)? {
            Some(d) if d.metadata.deletion_timestamp.is_none() => Ok(d),
            _ => Err(Error::not_found(format!("instance {ns}/{name} not found"))),
        }
    }

    /// The instance's newest pod that is not being deleted.
    async fn newest_pod(&self, ns: &str, name: &str) -> Result<Option<Pod>> {
        self.newest_pod_of(ns, &format!("{INSTANCE_LABEL}={name}"))
            .await
    }

    /// The newest pod `selector` selects that is not being deleted.
    async fn newest_pod_of(&self, ns: &str, selector: &str) -> Result<Option<Pod>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(kube_error)?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .max_by(|a, b| {
                a.metadata
                    .creation_timestamp
                    .cmp(&b.metadata.creation_timestamp)
                    .then_with(|| a.metadata.name.cmp(&b.metadata.name))
            }))
    }

    /// Deletes the instance's owner object and waits until it is gone (foreground
    /// deletion: once its pods and owned objects are).
    async fn remove<K: Owner>(&self, ns: &str, name: &str, grace: Duration) -> Result<()> {
        if !self.delete_all::<K>(ns, name, grace).await? {
            return Ok(());
        }
        // Foreground deletion: it goes once its pods and owned objects are gone.
        // Watch for that.
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(60);
        loop {
            let list = api
                .list(&ListParams::default().fields(&format!("metadata.name={name}")))
                .await
                .map_err(kube_error)?;
            if list.items.is_empty() {
                return Ok(());
            }
            let rv = list.metadata.resource_version.unwrap_or_default();
            let wp = WatchParams::default()
                .fields(&format!("metadata.name={name}"))
                .timeout(60);
            let mut events = api.watch(&wp, &rv).await.map_err(kube_error)?.boxed();
            loop {
                match tokio::time::timeout_at(deadline, events.try_next()).await {
                    Err(_) => {
                        return Err(Error::timeout(format!(
                            "instance {ns}/{name} was not removed in time"
                        ))
                        .with_backend(BACKEND))
                    }
                    Ok(Ok(Some(WatchEvent::Deleted(_)))) => return Ok(()),
                    Ok(Ok(Some(_))) => {}
                    Ok(Ok(None)) => break,
                    Ok(Err(e)) => return Err(kube_error(e)),
                }
            }
        }
    }

    fn instance_of(&self, d: &Deployment) -> Option<Instance> {
        let ns = d.metadata.namespace.as_deref()?;
        let name = d.metadata.name.as_deref()?;
        let port = d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.containers.iter().find(|c| c.name == CONTAINER))
            .and_then(|c| c.ports.as_ref())
            .and_then(|p| p.first())
            .map(|p| p.container_port as u16)
            .unwrap_or(0);
        Some(Instance {
            id: InstanceId(format!("{ns}/{name}")),
            endpoint: self.endpoint(ns, name, port),
            labels: d.metadata.labels.clone().unwrap_or_default(),
        })
    }

    /// Deletes the instance's owner object `K` (its Deployment or Job) and, through
    /// foreground deletion, everything it owns; false when it was not there.
    async fn delete_all<K: Owner>(&self, ns: &str, name: &str, grace: Duration) -> Result<bool> {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            grace_period_seconds: Some(grace.as_secs().min(u32::MAX as u64) as u32),
            ..DeleteParams::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(kube_error(e)),
        }
    }
}

#[async_trait]
impl Runtime for KubernetesRuntime {
    /// A process type's replicas are its Deployment's `replicas`, behind its Service.
    fn replicates(&self) -> bool {
        true
    }

    /// Patches the instance's Deployment's `replicas` (as `kubectl scale` does).
    async fn set_replicas(&self, id: &InstanceId, replicas: u32) -> Result<()> {
        if replicas == 0 || replicas > wharf_core::MAX_REPLICAS {
            return Err(Error::invalid(format!(
                "{replicas} replicas: 1 to {}",
                wharf_core::MAX_REPLICAS
            )));
        }
        let (ns, name) = split_id(id)?;
        self.deployment(ns, name).await?;
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        api.patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .map_err(|e| kube_error(e).context(format!("cannot scale Deployment {ns}/{name}")))?;
        Ok(())
    }

    /// Cron jobs are CronJobs ([`cron::cron_job_of`]) owned by the web instance's
    /// Deployment: the cluster fires them, with or without a control plane.
    fn schedules_cron(&self) -> bool {
        true
    }

    /// Creates a CronJob per job of the instance's service or takes the existing one
    /// over (replaced in place, owned by the instance's Deployment from then on),
    /// then deletes the service's CronJobs of other jobs. Every job is checked (a
    /// schedule with seconds is Unsupported) before anything changes.
    async fn schedule_cron(&self, id: &InstanceId, jobs: &[CronJob]) -> Result<()> {
        let (ns, name) = split_id(id)?;
        let deployment = self.deployment(ns, name).await?;
        let uid = deployment.metadata.uid.clone().unwrap_or_default();
        let mut wanted = Vec::new();
        for job in jobs {
            let mut c = cron::cron_job_of(job, &deployment)?;
            cron::owned_by(&mut c, name, &uid);
            wanted.push(c);
        }
        let api: Api<K8sCronJob> = Api::namespaced(self.client.clone(), ns);
        let existing = api
            .list(&ListParams::default().labels(&Self::service_cron_selector(&deployment)?))
            .await
            .map_err(|e| kube_error(e).context("cannot list the service's CronJobs"))?;
        for mut c in wanted.iter().cloned() {
            let cname = c.metadata.name.clone().unwrap_or_default();
            let current = existing
                .items
                .iter()
                .find(|o| o.metadata.name.as_ref() == Some(&cname));
            let done = match current {
                None => api.create(&PostParams::default(), &c).await,
                Some(o) => {
                    c.metadata.resource_version = o.metadata.resource_version.clone();
                    api.replace(&cname, &PostParams::default(), &c).await
                }
            };
            done.map_err(|e| kube_error(e).context(format!("cannot write CronJob {ns}/{cname}")))?;
        }
        for old in &existing.items {
            let old_name = old.metadata.name.clone().unwrap_or_default();
            if wanted
                .iter()
                .any(|w| w.metadata.name.as_ref() == Some(&old_name))
            {
                continue;
            }
            match api.delete(&old_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    return Err(
                        kube_error(e).context(format!("cannot delete CronJob {ns}/{old_name}"))
                    )
                }
            }
        }
        Ok(())
    }

    /// The ended Jobs of the CronJobs of the instance's service that the cluster
    /// still keeps (3 of each outcome per CronJob) and that are not in `known`, with
    /// their pods' exit codes and log tails.
    async fn cron_runs(
        &self,
        id: &InstanceId,
        known: &BTreeSet<String>,
    ) -> Result<Vec<ScheduledRun>> {
        let (ns, name) = split_id(id)?;
        let deployment = self.deployment(ns, name).await?;
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let jobs = api
            .list(&ListParams::default().labels(&Self::service_cron_selector(&deployment)?))
            .await
            .map_err(|e| kube_error(e).context("cannot list the service's cron runs"))?;
        let mut out = Vec::new();
        for job in &jobs.items {
            if job.metadata.uid.as_ref().is_some_and(|u| known.contains(u)) {
                continue;
            }
            if let Some(run) = self.ended_run(ns, job).await? {
                out.push(run);
            }
        }
        Ok(out)
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<Instance> {
        if spec.run_once {
            return self.start_task(spec).await;
        }
        let mut m = self.prepare(spec).await?;
        let ns = m.namespace.clone();
        let name = manifest::object_name(&spec.name)?;
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
        let created = api
            .create(&PostParams::default(), &m.deployment)
            .await
            .map_err(|e| kube_error(e).context(format!("cannot create Deployment {ns}/{name}")))?;
        let uid = created.metadata.uid.clone().unwrap_or_default();
        let started = async {
            self.create_objects(&mut m, &uid).await?;
            self.watch_pods(&ns, &name, Until::Started, spec.health_check.timeout)
                .await
        }
        .await;
        if let Err(e) = started {
            // Leave nothing behind: the Deployment owns everything else.
            let _ = self
                .delete_all::<Deployment>(&ns, &name, Duration::ZERO)
                .await;
            return Err(e);
        }
        self.instance_of(&created)
            .ok_or_else(|| Error::internal("the API server returned a Deployment without a name"))
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<()> {
        match parse_id(id) {
            Ok((Kind::Deployment, ns, name)) => self.remove::<Deployment>(ns, name, grace).await,
            Ok((Kind::Job, ns, name)) => self.remove::<Job>(ns, name, grace).await,
            Err(_) => Ok(()),
        }
    }

    async fn status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        let (kind, ns, name) = parse_id(id)?;
        if kind == Kind::Job {
            return self.task_status(ns, name).await;
        }
        let deployment = self.deployment(ns, name).await?;
        let Some(pod) = self.newest_pod(ns, name).await? else {
            return Ok(InstanceStatus::Starting);
        };
        // Healthy once every replica it asks for is ready.
        let wanted = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        let ready = deployment
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        Ok(match pod_state(&pod) {
            PodState::Pending => InstanceStatus::Starting,
            PodState::Running { ready: true } if wanted > 1 && ready < wanted => {
                InstanceStatus::Running
            }
            PodState::Running { ready: true } => InstanceStatus::Healthy,
            PodState::Running { ready: false } => InstanceStatus::Running,
            PodState::Exited { code, reason } => InstanceStatus::Exited { code, reason },
            PodState::Stuck { reason } => InstanceStatus::Exited { code: None, reason },
        })
    }

    async fn logs(
        &self,
        id: &InstanceId,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, Result<LogLine>>> {
        let (kind, ns, name) = parse_id(id)?;
        self.exists(kind, ns, name).await?;
        let Some(pod) = self.newest_pod(ns, name).await? else {
            return Ok(futures::stream::empty().boxed());
        };
        let pod_name = pod.metadata.name.unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let lp = LogParams {
            container: Some(CONTAINER.into()),
            follow: opts.follow,
            tail_lines: opts.tail.map(|t| t.min(i64::MAX as usize) as i64),
            ..LogParams::default()
        };
        let reader = pods.log_stream(&pod_name, &lp).await.map_err(kube_error)?;
        // Kubernetes merges the container's stdout and stderr into one log.
        Ok(reader
            .lines()
            .map(|line| {
                line.map(|text| LogLine::new(LogStream::Stdout, text))
                    .map_err(|e| Error::from(e).with_backend(BACKEND))
            })
            .boxed())
    }

    async fn list(&self, labels: &Labels) -> Result<Vec<Instance>> {
        let mut selector = vec![format!("{}=true", label::MANAGED)];
        for (k, v) in labels {
            manifest::check_label(k, v)?;
            selector.push(format!("{k}={v}"));
        }
        let lp = ListParams::default().labels(&selector.join(","));
        let list = self
            .scoped::<Deployment>()
            .list(&lp)
            .await
            .map_err(kube_error)?;
        let mut out: Vec<Instance> = list
            .items
            .iter()
            .filter(|d| d.metadata.deletion_timestamp.is_none())
            .filter_map(|d| self.instance_of(d))
            .collect();
        // Tasks running (or ended and not removed yet) too: a control plane that
        // restarts finds what it left by listing.
        // Not the Jobs of CronJobs: the cluster runs those, and they are the
        // service's history until recorded.
        let tasks = ListParams::default().labels(&format!(
            "{},!{}",
            selector.join(","),
            cron::CRON_JOB_LABEL
        ));
        let jobs = self
            .scoped::<Job>()
            .list(&tasks)
            .await
            .map_err(kube_error)?;
        out.extend(
            jobs.items
                .iter()
                .filter(|j| j.metadata.deletion_timestamp.is_none())
                .filter_map(|j| {
                    let ns = j.metadata.namespace.as_deref()?;
                    let name = j.metadata.name.as_deref()?;
                    Some(Instance {
                        id: job_id(ns, name),
                        endpoint: self.endpoint(ns, name, 0),
                        labels: j.metadata.labels.clone().unwrap_or_default(),
                    })
                }),
        );
        out.sort_by(|a, b| a.id.0.cmp(&b.id.0));
        Ok(out)
    }

    /// The project's claims (labelled with it), and those of `wanted` that exist
    /// under their claim names (made before claims carried their scope).
    async fn volumes(&self, project: &ProjectId, wanted: &[VolumeRef]) -> Result<Vec<VolumeInfo>> {
        manifest::check_label(label::PROJECT, project.as_str())?;
        let selector = format!("{}=true,{}={}", label::MANAGED, label::PROJECT, project);
        let list = self
            .claims_of(project)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| kube_error(e).context("cannot list volume claims"))?;
        let mut out: Vec<VolumeInfo> = list
            .items
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .filter_map(|c| {
                let labels = c.metadata.labels.as_ref()?;
                let name = c.metadata.name.as_deref().unwrap_or_default();
                Some(VolumeInfo {
                    volume: VolumeRef {
                        project: project.clone(),
                        scope: labels
                            .get(label::VOLUME_SCOPE)
                            .cloned()
                            .or_else(|| manifest::scope_of_claim(name)),
                        name: labels.get(label::VOLUME)?.clone(),
                    },
                    runtime_name: format!(
                        "{}/{}",
                        c.metadata.namespace.as_deref().unwrap_or_default(),
                        c.metadata.name.as_deref().unwrap_or_default()
                    ),
                    size_bytes: None,
                })
            })
            .collect();
        for w in wanted.iter().filter(|w| &w.project == project) {
            if out.iter().any(|o| &o.volume == w) {
                continue;
            }
            if let Some((ns, claim)) = self.find_claim(w).await? {
                out.push(VolumeInfo {
                    volume: w.clone(),
                    runtime_name: format!("{ns}/{}", claim.metadata.name.unwrap_or_default()),
                    size_bytes: None,
                });
            }
        }
        Ok(out)
    }

    /// Deletes the volume's claim (and so, with the usual `Delete` reclaim policy,
    /// its data): NotFound unless this project's claim exists, Conflict while a pod
    /// mounts it.
    async fn remove_volume(&self, volume: &VolumeRef) -> Result<()> {
        let Some((ns, claim)) = self.find_claim(volume).await? else {
            return Err(
                Error::not_found(format!("no volume {}", volume.name)).with_backend(BACKEND)
            );
        };
        let name = claim.metadata.name.clone().unwrap_or_default();
        let pods = Api::<Pod>::namespaced(self.client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| kube_error(e).context("cannot list pods"))?;
        let mounted = pods.items.iter().any(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == name)
                })
        });
        if mounted {
            return Err(Error::conflict(format!(
                "volume {} (claim {ns}/{name}) is mounted by a pod",
                volume.name
            ))
            .with_backend(BACKEND));
        }
        Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &ns)
            .delete(&name, &DeleteParams::default())
            .await
            .map_err(|e| {
                kube_error(e).context(format!("cannot delete volume claim {ns}/{name}"))
            })?;
        Ok(())
    }
}

impl KubernetesRuntime {
    /// `K`s in the namespace every instance lives in, or in all namespaces when the
    /// policy spreads them.
    fn scoped<K: Owner>(&self) -> Api<K> {
        match &self.config.namespace {
            NamespacePolicy::Fixed(ns) => Api::namespaced(self.client.clone(), ns),
            NamespacePolicy::PerProject { .. } | NamespacePolicy::ByLabel { .. } => {
                Api::all(self.client.clone())
            }
        }
    }

    /// A task's status, from its Job's pod: Running until its command ends, then
    /// Exited with its exit code; Exited without one when the Job failed without
    /// a pod to tell (a deadline, a pod deleted by someone).
    async fn task_status(&self, ns: &str, name: &str) -> Result<InstanceStatus> {
        let job = self.job(ns, name).await?;
        let failed = job
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .find(|c| c.type_ == "Failed" && c.status == "True");
        let Some(pod) = self.newest_pod(ns, name).await? else {
            return Ok(match failed {
                Some(c) => InstanceStatus::Exited {
                    code: None,
                    reason: with_message(
                        c.reason.as_deref().unwrap_or("Failed"),
                        c.message.as_ref(),
                    ),
                },
                None => InstanceStatus::Starting,
            });
        };
        Ok(match pod_state(&pod) {
            PodState::Pending => InstanceStatus::Starting,
            PodState::Running { .. } => InstanceStatus::Running,
            PodState::Exited { code, reason } => InstanceStatus::Exited { code, reason },
            PodState::Stuck { reason } => InstanceStatus::Exited { code: None, reason },
        })
    }

    /// The selector of the CronJobs (and their Jobs) of the service of the instance
    /// whose Deployment is `deployment`.
    fn service_cron_selector(deployment: &Deployment) -> Result<String> {
        let service = deployment
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(label::SERVICE))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "instance {}: cron jobs need the instance's {} label",
                    deployment.metadata.name.as_deref().unwrap_or_default(),
                    label::SERVICE
                ))
            })?;
        manifest::check_label(label::SERVICE, service)?;
        Ok(format!(
            "{}={service},{}",
            label::SERVICE,
            cron::CRON_JOB_LABEL
        ))
    }

    /// The run a CronJob's `job` made, once it ended (None before).
    async fn ended_run(&self, ns: &str, job: &Job) -> Result<Option<ScheduledRun>> {
        let status = job.status.clone().unwrap_or_default();
        let ended = status
            .conditions
            .iter()
            .flatten()
            .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
        let Some(ended) = ended else {
            return Ok(None);
        };
        let millis = |t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| {
            Timestamp(t.0.as_millisecond())
        };
        let meta = &job.metadata;
        let created = meta
            .creation_timestamp
            .as_ref()
            .map_or(Timestamp::now(), millis);
        let started = status.start_time.as_ref().map_or(created, millis);
        let finished = status
            .completion_time
            .as_ref()
            .or(ended.last_transition_time.as_ref())
            .map_or(Timestamp::now(), millis);
        let name = meta.name.clone().unwrap_or_default();
        let key = meta.uid.clone().unwrap_or_else(|| format!("{ns}-{name}"));
        let cron_job = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(cron::CRON_JOB_LABEL))
            .cloned()
            .unwrap_or_default();
        let mut run = ScheduledRun::new(&key, &cron_job, started, finished.max(started));
        // The controller names the time it was due (Kubernetes 1.28 and later).
        run.scheduled_for = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get("batch.kubernetes.io/cronjob-scheduled-timestamp"))
            .and_then(|t| {
                serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>(
                    serde_json::Value::String(t.clone()),
                )
                .ok()
            })
            .as_ref()
            .map_or(created, millis);
        if ended.type_ == "Failed" {
            run.timed_out = ended.reason.as_deref() == Some("DeadlineExceeded");
            run.reason = with_message(
                ended.reason.as_deref().unwrap_or("Failed"),
                ended.message.as_ref(),
            );
        }
        if let Some(pod) = self.newest_pod_of(ns, &format!("job-name={name}")).await? {
            if let PodState::Exited { code, reason } = pod_state(&pod) {
                run.exit_code = code;
                if run.exit_code != Some(0) && !run.timed_out {
                    run.reason = match code {
                        Some(c) => format!("exited with code {c} ({reason})"),
                        None => reason,
                    };
                }
            }
            let lp = LogParams {
                container: Some(CONTAINER.into()),
                tail_lines: Some(RUN_LOG_LINES),
                ..LogParams::default()
            };
            let pod_name = pod.metadata.name.unwrap_or_default();
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            // Its output is a courtesy: a pod whose log is gone still ran.
            if let Ok(text) = pods.logs(&pod_name, &lp).await {
                run.output = text;
            }
        }
        Ok(Some(run))
    }

    /// Where a project's claims are: its namespace when the policy names it, else
    /// every namespace (found by label).
    fn claims_of(&self, project: &ProjectId) -> Api<PersistentVolumeClaim> {
        match self.project_namespace(project) {
            Some(ns) => Api::namespaced(self.client.clone(), &ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// The namespace of a project's instances, when the policy says it without an
    /// instance's labels.
    fn project_namespace(&self, project: &ProjectId) -> Option<String> {
        match &self.config.namespace {
            NamespacePolicy::Fixed(ns) => Some(ns.clone()),
            NamespacePolicy::PerProject { .. } => {
                let labels = [(label::PROJECT.to_owned(), project.as_str().to_owned())].into();
                manifest::namespace_of(&labels, project.as_str(), &self.config).ok()
            }
            NamespacePolicy::ByLabel { .. } => None,
        }
    }

    /// The claim of `volume` made for its project, with its namespace.
    async fn find_claim(
        &self,
        volume: &VolumeRef,
    ) -> Result<Option<(String, PersistentVolumeClaim)>> {
        let name = manifest::claim_name(volume.scope.as_deref(), &volume.name)?;
        let candidates: Vec<PersistentVolumeClaim> = match self.project_namespace(&volume.project) {
            Some(ns) => Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &ns)
                .get_opt(&name)
                .await
                .map_err(kube_error)?
                .into_iter()
                .collect(),
            None => {
                let selector = format!("{}={}", label::PROJECT, volume.project);
                Api::<PersistentVolumeClaim>::all(self.client.clone())
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(kube_error)?
                    .items
                    .into_iter()
                    .filter(|c| c.metadata.name.as_deref() == Some(name.as_str()))
                    .collect()
            }
        };
        // Only a claim Wharf made for this very project: never another's namesake.
        Ok(candidates.into_iter().find_map(|c| {
            let ours = c.metadata.labels.as_ref().is_some_and(|l| {
                l.get(label::PROJECT).map(String::as_str) == Some(volume.project.as_str())
                    && l.get(label::MANAGED).map(String::as_str) == Some("true")
            });
            let ns = c.metadata.namespace.clone()?;
            ours.then_some((ns, c))
        }))
    }
}
