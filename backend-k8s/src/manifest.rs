//! The Kubernetes objects Wharf creates for one instance, built from its
//! [`InstanceSpec`] as plain data (no API calls), so they can be reviewed and
//! snapshot-tested.
//!
//! Per instance: a Deployment (the owner), a Service in front of it, a Secret holding
//! its environment (resolved env may hold secrets, so none of it goes into the pod
//! spec in clear), and optionally an Ingress. The Service, Secret and Ingress carry an
//! owner reference to the Deployment, so deleting the Deployment removes everything
//! else of the instance. Its volumes are PersistentVolumeClaims without an owner: they
//! belong to the project, so stopping or removing an instance never deletes one.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{json, Value};
use wharf_core::{label, Error, InstanceSpec, Labels, Probe, Result};

use crate::{IngressConfig, KubernetesConfig};

/// The label every object of an instance carries, its value the instance name; pods
/// are selected by it.
pub const INSTANCE_LABEL: &str = "wharf.instance";

/// The name of the app container in every pod.
pub const CONTAINER: &str = "app";

/// The objects of one instance. Its `Debug` leaves out the Secret's data.
#[derive(Clone, PartialEq)]
pub struct Manifests {
    /// The namespace they live in.
    pub namespace: String,
    /// Runs the pods; owns the other objects.
    pub deployment: Deployment,
    /// A stable in-cluster address for the pods.
    pub service: Service,
    /// The instance's environment.
    pub secret: Secret,
    /// Routes external hosts to the Service, when an ingress is configured.
    pub ingress: Option<Ingress>,
    /// One claim per volume, created unless it exists and never owned by the
    /// Deployment (see [`claim_name`]).
    pub claims: Vec<PersistentVolumeClaim>,
}

/// The size a volume's claim asks for when its spec names none.
pub const DEFAULT_VOLUME_SIZE: &str = "1Gi";

/// The claim of volume `volume` in `scope` (the instance's network: one per project
/// and per environment): `<scope>.<volume>` with the scope's `_` (which separates an
/// environment, and which claim names cannot hold) as '.', e.g. `wharf-shop.data` or
/// `wharf-shop.staging.data`. Project, environment and volume names hold no '.', so
/// two different volumes never share a claim, even in one namespace (a
/// [`crate::NamespacePolicy::Fixed`] one holds every project). Without a scope:
/// `wharf-<volume>`.
pub fn claim_name(scope: Option<&str>, volume: &str) -> Result<String> {
    wharf_core::validate_name(volume)?;
    let name = match scope {
        None => format!("wharf-{volume}"),
        Some(scope) => {
            let ok = scope.starts_with(|c: char| c.is_ascii_lowercase())
                && scope
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
                && !scope.contains("_-")
                && !scope.ends_with(['-', '_']);
            if !ok {
                return Err(Error::invalid(format!(
                    "network {scope:?} cannot scope a volume claim (lower-case letters, digits, '-' and '_')"
                )));
            }
            format!("{}.{volume}", scope.replace('_', "."))
        }
    };
    if name.len() > 253 {
        return Err(Error::invalid(format!(
            "volume claim name {name:?} is longer than 253 characters"
        )));
    }
    Ok(name)
}

/// The scope [`claim_name`] put into `claim` (volume names hold no '.', so it is
/// all before the last '.', with '.' back to '_'); `None` for a claim without one.
pub fn scope_of_claim(claim: &str) -> Option<String> {
    let (scope, _volume) = claim.rsplit_once('.')?;
    Some(scope.replace('.', "_"))
}

impl std::fmt::Debug for Manifests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&String> = self
            .secret
            .string_data
            .iter()
            .flatten()
            .map(|(k, _)| k)
            .collect();
        f.debug_struct("Manifests")
            .field("namespace", &self.namespace)
            .field("deployment", &self.deployment)
            .field("service", &self.service)
            .field("secret_keys", &keys)
            .field("ingress", &self.ingress)
            .finish()
    }
}

/// Checks a Kubernetes object name (a DNS-1035 label: what Services require).
fn validate_object_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "instance name {name:?} cannot name Kubernetes objects: use 1 to 63 lower-case \
             letters, digits and '-', starting with a letter and not ending with '-'"
        )))
    }
}

/// Checks a label key and value as the API server would, so a bad one is a clear
/// InvalidInput before anything is created.
pub(crate) fn check_label(key: &str, value: &str) -> Result<()> {
    fn segment_ok(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    }
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty()
                || prefix.len() > 253
                || wharf_core::validate_hostname(prefix).is_err()
            {
                return Err(Error::invalid(format!(
                    "invalid label key prefix in {key:?}"
                )));
            }
            name
        }
        None => key,
    };
    if !segment_ok(name) {
        return Err(Error::invalid(format!(
            "invalid label key {key:?} for Kubernetes"
        )));
    }
    if !value.is_empty() && !segment_ok(value) {
        return Err(Error::invalid(format!(
            "invalid value {value:?} of label {key:?} for Kubernetes (at most 63 letters, \
             digits, '-', '_' or '.', starting and ending with a letter or digit)"
        )));
    }
    Ok(())
}

/// The namespace an instance goes to under `config`.
pub fn namespace_for(spec: &InstanceSpec, config: &KubernetesConfig) -> Result<String> {
    namespace_of(&spec.labels, &spec.name, config)
}

/// The namespace of whatever carries `labels` (`what` names it in errors), as
/// [`namespace_for`] says.
pub fn namespace_of(labels: &Labels, what: &str, config: &KubernetesConfig) -> Result<String> {
    let (key, prefix) = match &config.namespace {
        crate::NamespacePolicy::Fixed(ns) => {
            validate_object_name(ns)
                .map_err(|e| e.context(format!("namespace {ns:?} is not a valid name")))?;
            return Ok(ns.clone());
        }
        crate::NamespacePolicy::PerProject { prefix } => (label::PROJECT, prefix),
        crate::NamespacePolicy::ByLabel { label: key, prefix } => (key.as_str(), prefix),
    };
    let value = labels.get(key).ok_or_else(|| {
        Error::invalid(format!(
            "instance {what} has no {key} label: its namespace is named by it"
        ))
    })?;
    // Ids hold '_' (`prj_...`), which namespace names cannot.
    let ns = format!("{prefix}{value}")
        .to_ascii_lowercase()
        .replace(|c: char| !(c.is_ascii_alphanumeric() || c == '-'), "-");
    validate_object_name(&ns)
        .map_err(|e| e.context(format!("namespace {ns:?} is not a valid name")))?;
    Ok(ns)
}

/// The name of the objects of the instance named `name`: the name itself when it
/// fits in 63 characters, else its first 52 characters, '-' and 10 hex digits of a
/// hash of the whole name (so long names stay distinct and stable).
pub fn object_name(name: &str) -> Result<String> {
    if name.len() <= 63 {
        validate_object_name(name)?;
        return Ok(name.to_string());
    }
    // FNV-1a: stable across builds and platforms.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let head = name.get(..52).unwrap_or(name).trim_end_matches('-');
    let short = format!("{head}-{:010x}", hash & 0xff_ffff_ffff);
    validate_object_name(&short)?;
    Ok(short)
}

/// Builds the objects of the instance `spec` (their owner references are set once
/// the Deployment exists and has a uid: see [`Manifests::owned_by`]).
pub fn build(spec: &InstanceSpec, config: &KubernetesConfig) -> Result<Manifests> {
    let object = object_name(&spec.name)?;
    if spec.image.trim().is_empty() {
        return Err(Error::invalid(format!(
            "instance {} has no image",
            spec.name
        )));
    }
    if spec.port == 0 {
        return Err(Error::invalid(format!("instance {} has port 0", spec.name)));
    }
    if spec.image_local_only && !config.allow_local_images {
        return Err(Error::invalid(format!(
            "instance {}: the image {} exists only on the Docker engine that built it, so \
             the cluster cannot pull it; configure a registry push on the builder \
             (wharf_docker::DockerBuilder::push_to) so it runs the pushed image by digest, \
             or set KubernetesConfig::allow_local_images for a cluster that shares the \
             build engine's images (minikube, kind with `kind load docker-image`)",
            spec.name, spec.image
        )));
    }
    let namespace = namespace_for(spec, config)?;
    for (k, v) in &spec.labels {
        check_label(k, v)?;
    }
    let name = object.as_str();
    let mut labels: BTreeMap<String, String> = spec.labels.clone();
    labels.insert(label::MANAGED.into(), "true".into());
    labels.insert(INSTANCE_LABEL.into(), name.into());
    labels.insert("app.kubernetes.io/managed-by".into(), "wharf".into());
    let selector = json!({ INSTANCE_LABEL: name });
    let meta =
        |kind_name: &str| json!({ "name": kind_name, "namespace": namespace, "labels": labels });

    let mut container = json!({
        "name": CONTAINER,
        "image": spec.image,
        "ports": [{ "name": "http", "containerPort": spec.port, "protocol": "TCP" }],
        "envFrom": [{ "secretRef": { "name": name } }],
    });
    if spec.image_local_only {
        // Allowed above: the node has it or nothing does (see allow_local_images).
        container["imagePullPolicy"] = json!("Never");
    }
    if let Some(cmd) = &spec.command {
        container["command"] = json!(cmd);
    }
    let mut limits = serde_json::Map::new();
    if let Some(mb) = spec.resources.memory_mb {
        limits.insert("memory".into(), json!(format!("{mb}Mi")));
    }
    if let Some(m) = spec.resources.cpu_millis {
        limits.insert("cpu".into(), json!(format!("{m}m")));
    }
    if !limits.is_empty() {
        // Requests equal to limits: the pod gets what it is allowed (Guaranteed QoS
        // when both are set), never scheduled on a node that cannot hold it.
        container["resources"] = json!({ "limits": limits, "requests": limits });
    }
    let handler = match &spec.health_check.probe {
        Probe::Http { path } => Some(json!({ "httpGet": { "path": path, "port": spec.port } })),
        Probe::Tcp => Some(json!({ "tcpSocket": { "port": spec.port } })),
        // The kubelet speaks no database protocol and an exec probe would depend on
        // the image's tools (and the password): a TCP check is what it can do.
        Probe::Postgres | Probe::Mysql | Probe::Redis => {
            Some(json!({ "tcpSocket": { "port": spec.port } }))
        }
        Probe::None => None,
    };
    if let Some(handler) = handler {
        let period = spec.health_check.interval.as_secs().max(1);
        // The instance has `timeout` to become healthy: the startup probe allows that
        // many failures before the kubelet restarts it.
        let startup_failures = spec.health_check.timeout.as_secs().div_ceil(period).max(1);
        let mut readiness = handler.clone();
        readiness["periodSeconds"] = json!(period);
        readiness["failureThreshold"] = json!(1);
        let mut startup = handler.clone();
        startup["periodSeconds"] = json!(period);
        startup["failureThreshold"] = json!(startup_failures);
        let mut liveness = handler;
        liveness["periodSeconds"] = json!(period.max(10));
        liveness["failureThreshold"] = json!(3);
        container["readinessProbe"] = readiness;
        container["startupProbe"] = startup;
        container["livenessProbe"] = liveness;
    }
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut claims = Vec::new();
    for v in &spec.volumes {
        v.validate()?;
        let claim = claim_name(spec.network.as_deref(), &v.name)?;
        volumes.push(json!({ "name": v.name, "persistentVolumeClaim": { "claimName": claim } }));
        mounts.push(json!({ "name": v.name, "mountPath": v.path }));
        // Labelled for the project and the volume, not the instance: it outlives it.
        let mut claim_labels = BTreeMap::from([
            (label::MANAGED.to_owned(), "true".to_owned()),
            (label::VOLUME.to_owned(), v.name.clone()),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                "wharf".to_owned(),
            ),
        ]);
        if let Some(p) = spec.labels.get(label::PROJECT) {
            claim_labels.insert(label::PROJECT.into(), p.clone());
        }
        // The scope (the instance's network), so that listing maps a claim back to
        // its volume (`_` and `-` are fine in label values).
        // Label values hold 63 characters at most: a longer scope is read back from
        // the claim's name instead ([`scope_of_claim`]).
        if let Some(scope) = spec.network.as_ref().filter(|s| s.len() <= 63) {
            claim_labels.insert(label::VOLUME_SCOPE.into(), scope.clone());
        }
        let size = v.size.as_deref().unwrap_or(DEFAULT_VOLUME_SIZE);
        let pvc = json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": { "name": claim, "namespace": namespace, "labels": claim_labels },
            "spec": {
                // One node mounts it: with `Recreate`, one pod at a time writes it.
                "accessModes": ["ReadWriteOnce"],
                "resources": { "requests": { "storage": size } },
            },
        });
        claims.push(serde_json::from_value(pvc.clone()).map_err(|_| {
            Error::internal(format!(
                "the generated PersistentVolumeClaim is malformed: {pvc}"
            ))
        })?);
    }
    if !mounts.is_empty() {
        container["volumeMounts"] = json!(mounts);
    }
    let mut pod_spec = json!({
        "containers": [container],
        "enableServiceLinks": false,
        "automountServiceAccountToken": false,
    });
    if !volumes.is_empty() {
        pod_spec["volumes"] = json!(volumes);
    }
    if let Some(secret) = &config.image_pull_secret {
        pod_spec["imagePullSecrets"] = json!([{ "name": secret }]);
    }
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(name),
        "spec": {
            // Its replicas share the instance's Service.
            "replicas": spec.replicas.max(1),
            "selector": { "matchLabels": selector },
            // One writer per volume: a rollout stops the old pod before the new one
            // starts (the engine does the same across instances).
            "strategy": { "type": if spec.volumes.is_empty() { "RollingUpdate" } else { "Recreate" } },
            "template": {
                "metadata": { "labels": labels },
                "spec": pod_spec,
            },
        },
    });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{ "name": "http", "port": spec.port, "targetPort": spec.port, "protocol": "TCP" }],
        },
    });
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(name),
        "type": "Opaque",
        "stringData": spec.env,
    });
    let ingress = match &config.ingress {
        Some(ic) => Some(ingress(spec, ic, meta(name))?),
        None => None,
    };
    let typed = |what: &str, v: Value| {
        Error::internal(format!("the generated {what} for {name} is malformed: {v}"))
    };
    Ok(Manifests {
        namespace: namespace.clone(),
        deployment: serde_json::from_value(deployment.clone())
            .map_err(|_| typed("Deployment", deployment))?,
        service: serde_json::from_value(service.clone()).map_err(|_| typed("Service", service))?,
        secret: serde_json::from_value(secret).map_err(|_| {
            Error::internal(format!("the generated Secret for {name} is malformed"))
        })?,
        ingress: match ingress {
            Some(i) => Some(serde_json::from_value(i.clone()).map_err(|_| typed("Ingress", i))?),
            None => None,
        },
        claims,
    })
}

fn ingress(spec: &InstanceSpec, ic: &IngressConfig, meta: Value) -> Result<Value> {
    let service_name = spec
        .labels
        .get(label::SERVICE_NAME)
        .cloned()
        .unwrap_or_else(|| spec.name.clone());
    let host = format!("{service_name}.{}", ic.host_suffix.trim_start_matches('.'));
    wharf_core::validate_hostname(&host)?;
    let mut ing = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta,
        "spec": {
            "rules": [{
                "host": host,
                "http": { "paths": [{
                    "path": "/",
                    "pathType": "Prefix",
                    "backend": { "service": { "name": meta["name"], "port": { "number": spec.port } } },
                }] },
            }],
        },
    });
    if let Some(class) = &ic.class {
        ing["spec"]["ingressClassName"] = json!(class);
    }
    if let Some(tls) = &ic.tls_secret {
        ing["spec"]["tls"] = json!([{ "hosts": [host], "secretName": tls }]);
    }
    Ok(ing)
}

impl Manifests {
    /// Sets the owner reference of the Service, Secret and Ingress to the Deployment
    /// (`uid` is the created Deployment's), so deleting it deletes them.
    pub fn owned_by(&mut self, uid: &str) {
        let name = self.deployment.metadata.name.clone().unwrap_or_default();
        let owner = owner("apps/v1", "Deployment", &name, uid);
        self.service.metadata.owner_references = Some(vec![owner.clone()]);
        self.secret.metadata.owner_references = Some(vec![owner.clone()]);
        if let Some(i) = &mut self.ingress {
            i.metadata.owner_references = Some(vec![owner]);
        }
    }

    /// The Job running the instance once (for an [`InstanceSpec::run_once`] spec: a
    /// release command, `wharf run`, a cron run scheduled by Wharf): one pod from
    /// [`run_once_template`], never retried (`backoffLimit: 0`), removed by
    /// the cluster a day after it ended if nobody removed it before (a control plane
    /// that stopped while it ran). Its pods carry [`INSTANCE_LABEL`] with the Job's
    /// name, which no Service selects.
    pub fn job(&self) -> Result<Job> {
        let meta = serde_json::to_value(&self.deployment.metadata)
            .map_err(|e| Error::internal(format!("cannot read back a Deployment: {e}")))?;
        let object = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": meta,
            "spec": {
                "backoffLimit": 0,
                "ttlSecondsAfterFinished": JOB_TTL_SECS,
                "template": run_once_template(&self.deployment)?,
            },
        });
        serde_json::from_value(object.clone())
            .map_err(|e| Error::internal(format!("the generated Job is malformed ({e}): {object}")))
    }
}

/// The pod template of the instance whose Deployment is `deployment`, made to run
/// its command once: never restarted (`restartPolicy: Never`), not serving (no
/// port) and not probed, with the instance's image, env (its Secret, by reference),
/// volumes and labels. For a task's Job ([`Manifests::job`]) and a cron job's
/// CronJob ([`crate::cron`]).
pub fn run_once_template(deployment: &Deployment) -> Result<Value> {
    let mut template = serde_json::to_value(deployment)
        .map_err(|e| Error::internal(format!("cannot read back a Deployment: {e}")))?["spec"]
        ["template"]
        .take();
    let pod = &mut template["spec"];
    pod["restartPolicy"] = json!("Never");
    if let Some(c) = pod["containers"][0].as_object_mut() {
        // A run serves nothing and is not probed: it ends when its command does.
        for key in ["ports", "readinessProbe", "startupProbe", "livenessProbe"] {
            c.remove(key);
        }
    }
    Ok(template)
}

/// How long the cluster keeps a task's Job after it ended, when Wharf did not remove
/// it (its control plane stopped meanwhile).
pub const JOB_TTL_SECS: u32 = 24 * 3600;

/// A controller owner reference to the object `kind` named `name` with `uid`.
pub fn owner(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}
