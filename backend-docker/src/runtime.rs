//! [`DockerRuntime`]: instances as Docker containers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig, PortBinding, PortMap,
    RestartPolicy as DockerRestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, ListNetworksOptions,
    ListVolumesOptions, LogsOptions, RemoveContainerOptions, RemoveVolumeOptions,
    StopContainerOptions,
};
use bollard::Docker;
use futures::stream::{BoxStream, StreamExt};
use wharf_core::traits::{LogOptions, Runtime};
use wharf_core::{
    label, Endpoint, Error, Instance, InstanceId, InstanceSpec, InstanceStatus, Labels, LogLine,
    LogStream, Probe, ProjectId, Result, VolumeInfo, VolumeMount, VolumeRef,
};

use crate::error::{is_conflict, is_not_found, is_port_taken, map};
use crate::probe;

/// Label keys this runtime keeps for itself on containers (never shown on instances).
pub(crate) mod internal {
    /// Prefix of every internal label.
    pub(crate) const PREFIX: &str = "wharf.docker.";
    /// The port the app listens on inside the container.
    pub(crate) const PORT: &str = "wharf.docker.port";
    /// The health probe, as JSON.
    pub(crate) const PROBE: &str = "wharf.docker.probe";
}

/// What Docker does when a container's process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RestartPolicy {
    /// Never restart.
    No,
    /// Restart after a non-zero exit, at most this many times (0: no limit).
    OnFailure {
        /// Most restarts.
        max_retries: u32,
    },
    /// Restart always, also when the daemon restarts, unless stopped by hand.
    #[default]
    UnlessStopped,
    /// Restart always.
    Always,
}

/// Settings of a [`DockerRuntime`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RuntimeOptions {
    /// Address the app's port is published on (default `127.0.0.1`: only a proxy on
    /// the same machine reaches it).
    pub bind_address: IpAddr,
    /// Host port to publish on; `None` (the default) lets the engine pick a free
    /// ephemeral port for each container. A fixed port suits one instance at a time
    /// only (a second one is refused with `Conflict`).
    pub host_port: Option<u16>,
    /// Restart policy of every container (default: unless-stopped).
    pub restart_policy: RestartPolicy,
    /// The image of the short-lived helper containers that read and replace a
    /// volume's contents (backups and restores): it needs `sh`, `rm` and `cp`. Default
    /// `wharf-local/busybox:1`, which `scripts/base-images` builds.
    pub helper_image: String,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            host_port: None,
            restart_policy: RestartPolicy::default(),
            helper_image: "wharf-local/busybox:1".into(),
        }
    }
}

impl RuntimeOptions {
    /// Sets [`RuntimeOptions::bind_address`].
    pub fn bind_address(mut self, addr: IpAddr) -> Self {
        self.bind_address = addr;
        self
    }
    /// Sets [`RuntimeOptions::host_port`].
    pub fn host_port(mut self, port: Option<u16>) -> Self {
        self.host_port = port;
        self
    }
    /// Sets [`RuntimeOptions::restart_policy`].
    pub fn restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.restart_policy = policy;
        self
    }
    /// Sets [`RuntimeOptions::helper_image`].
    pub fn helper_image(mut self, image: impl Into<String>) -> Self {
        self.helper_image = image.into();
        self
    }
}

/// A [`Runtime`] that runs each instance as a Docker container.
///
/// - The app's port is published on [`RuntimeOptions::bind_address`] (127.0.0.1 by
///   default) on an ephemeral host port; the instance's endpoint is that address and
///   port, where a proxy on the same machine reaches it.
/// - Env, command, memory and CPU limits, restart policy and labels go on the
///   container; named volumes are created (labelled with the project, the volume's
///   name and scope) and mounted as `<network>.<volume>`, so two projects (or two
///   environments) never share one by accident (see `volume_name`); volumes made
///   under the older, ambiguous `<network>-<volume>` naming are adopted by the
///   project their labels name, and by no other.
/// - With [`InstanceSpec::network`] set, the container joins that network (created on
///   first use, labelled) under its [`InstanceSpec::network_alias`], so the services of
///   a project reach each other by service name.
/// - [`Runtime::status`] probes health from the host on the published port (HTTP `GET`,
///   TCP, or none, as the spec says); an OOM-killed or exited container is `Exited`
///   with the reason, a restarting one too.
/// - [`Runtime::stop`] stops with the grace period, then removes the container (its
///   named volumes stay).
/// - [`DockerRuntime::gc`](crate::DockerRuntime::gc) removes only Wharf-labelled
///   resources.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    pub(crate) docker: Docker,
    pub(crate) options: RuntimeOptions,
}

/// Held by every runtime in the process from a network's lookup (and creation) until
/// the container that joins it is created, and by `gc` while it removes networks: see
/// [`DockerRuntime::ensure_network`]. That is milliseconds per start.
pub(crate) static NETWORK_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Connects to the engine as the `docker` CLI would (`DOCKER_HOST`, else the local
/// unix socket), settles the API version with it and checks it answers.
pub(crate) async fn connect() -> Result<Docker> {
    let docker = Docker::connect_with_defaults().map_err(|e| map(e, "connect to Docker"))?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| map(e, "negotiate the Docker API version"))?;
    docker.ping().await.map_err(|e| map(e, "ping Docker"))?;
    Ok(docker)
}

impl DockerRuntime {
    /// Connects to the local engine (see [`crate::probe_engine`] for how) with default
    /// options. `Unavailable` if it does not answer.
    pub async fn connect() -> Result<Self> {
        Ok(Self::with_client(
            connect().await?,
            RuntimeOptions::default(),
        ))
    }

    /// A runtime on an existing bollard client (call `negotiate_version` on it first).
    pub fn with_client(docker: Docker, options: RuntimeOptions) -> Self {
        DockerRuntime { docker, options }
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: RuntimeOptions) -> Self {
        self.options = options;
        self
    }

    /// The options in use.
    pub fn options(&self) -> &RuntimeOptions {
        &self.options
    }

    fn endpoint_host(&self) -> String {
        if self.options.bind_address.is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            self.options.bind_address.to_string()
        }
    }

    /// The containers, running or not, that match `filters` (`None`: all of them);
    /// `what` names the listing in errors.
    pub(crate) async fn containers(
        &self,
        filters: Option<HashMap<String, Vec<String>>>,
        what: &str,
    ) -> Result<Vec<ContainerSummary>> {
        let opts = ListContainersOptions {
            all: true,
            filters,
            ..Default::default()
        };
        self.docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| map(e, what))
    }

    /// How many containers (running or not) are attached to network `id`.
    pub(crate) async fn containers_on(&self, id: &str) -> Result<usize> {
        let on = HashMap::from([("network".to_owned(), vec![id.to_owned()])]);
        let what = format!("list the containers on network {id}");
        Ok(self.containers(Some(on), &what).await?.len())
    }

    /// The ids of the networks named exactly `name`, smallest first (the engine's
    /// `name` filter also matches parts of names).
    async fn networks_named(&self, name: &str) -> Result<Vec<String>> {
        let opts = ListNetworksOptions {
            filters: Some(HashMap::from([("name".to_owned(), vec![name.to_owned()])])),
        };
        let mut ids: Vec<String> = self
            .docker
            .list_networks(Some(opts))
            .await
            .map_err(|e| map(e, &format!("list networks named {name}")))?
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| n.id)
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Creates network `name` (labelled) unless it exists; returns its id, which
    /// containers then join it by (`EndpointSettings::network_id`: the engine resolves
    /// a name at start again, and fails on an ambiguous one).
    ///
    /// Network names are not unique to the engine: before Docker 25, two concurrent
    /// creates of one name both succeed, and every later start on that name fails as
    /// "ambiguous" (seen: 99 of 100 concurrent deploys into a new project failed). So
    /// the lookup and the create are serialized in this process ([`NETWORK_LOCK`]), and
    /// should duplicates exist anyway (another process, an older Wharf), every caller
    /// picks the same one: the one with the most containers (running or not), then the
    /// smallest id. Duplicates no container uses are removed; ones in use stay, split
    /// from the rest of the project, and are reported.
    ///
    /// The caller holds [`NETWORK_LOCK`] until its container is created on the network.
    async fn ensure_network(&self, name: &str, labels: &Labels) -> Result<String> {
        let ids = self.networks_named(name).await?;
        if ids.len() == 1 {
            return Ok(ids[0].clone());
        }
        if !ids.is_empty() {
            let mut used = Vec::new();
            for id in &ids {
                used.push((self.containers_on(id).await?, id.clone()));
            }
            // Most containers first, then the smallest id.
            used.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            let keep = used[0].1.clone();
            for (count, id) in &used[1..] {
                if *count > 0 {
                    tracing::warn!(
                        network = name,
                        duplicate = %id,
                        containers = count,
                        kept = %keep,
                        "a duplicate of a Wharf network is in use: its containers cannot reach \
                         the rest of the project until they are redeployed"
                    );
                    continue;
                }
                match self.docker.remove_network(id).await {
                    Ok(()) => tracing::warn!(
                        network = name,
                        removed = %id,
                        kept = %keep,
                        "removed a duplicate of a Wharf network"
                    ),
                    Err(e) => {
                        tracing::warn!(network = name, id = %id, error = %e, "duplicate network left")
                    }
                }
            }
            return Ok(keep);
        }
        let req = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            labels: Some(owned_labels(labels)),
            ..Default::default()
        };
        match self.docker.create_network(req).await {
            Ok(created) => Ok(created.id),
            // Created meanwhile by another process (Docker 25+ refuses duplicates).
            Err(e) if is_conflict(&e) => self
                .networks_named(name)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| map(e, &format!("create network {name}"))),
            Err(e) => Err(map(e, &format!("create network {name}"))),
        }
    }

    /// The labels of volume `name`, or `None` if there is no such volume.
    async fn volume_labels(&self, name: &str) -> Result<Option<HashMap<String, String>>> {
        match self.docker.inspect_volume(name).await {
            Ok(v) => Ok(Some(v.labels)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(map(e, &format!("inspect volume {name}"))),
        }
    }

    /// The Docker volume that holds `volume` of `project` in `scope`, if any: the one
    /// named by [`volume_name`], else one named by the naming before it
    /// ([`legacy_volume_name`]) when its labels say it was made for this very project.
    ///
    /// Docker cannot rename a volume, and copying one would need a helper container
    /// (an image with a shell the engine may not have), twice the disk and a pause of
    /// the service while it runs; so a volume made under the old name is adopted
    /// where it is: it is mounted under that name from then on and never copied,
    /// moved or deleted. Adopting is safe because no new name can equal an old one
    /// (new names hold a '.', old names never do), and it asks for the project's
    /// label so a namesake of another project (the very collision the new names fix)
    /// is never taken over: that project gets a fresh volume instead.
    pub(crate) async fn find_volume(&self, volume: &VolumeRef) -> Result<Option<String>> {
        let name = volume_name(volume.scope.as_deref(), &volume.name);
        if let Some(labels) = self.volume_labels(&name).await? {
            return Ok(belongs_to(&labels, &volume.project).then_some(name));
        }
        let Some(old) = legacy_volume_name(volume.scope.as_deref(), &volume.name) else {
            return Ok(None);
        };
        match self.volume_labels(&old).await? {
            Some(labels) if belongs_to(&labels, &volume.project) => Ok(Some(old)),
            Some(_) => {
                tracing::warn!(
                    volume = %old,
                    project = %volume.project,
                    "a volume under the old name of this project's volume belongs to \
                     another project: not adopted, this project gets a volume of its own"
                );
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// The Docker volume to mount for `mount` of `spec`: the existing one
    /// ([`Self::find_volume`]) or a new, labelled one.
    async fn ensure_volume(&self, spec: &InstanceSpec, mount: &VolumeMount) -> Result<String> {
        let Some(project) = spec.labels.get(label::PROJECT) else {
            // No project to check ownership against: the plain name, as before.
            let name = volume_name(spec.network.as_deref(), &mount.name);
            self.create_volume(&name, &support_labels(spec)).await?;
            return Ok(name);
        };
        let wanted = VolumeRef {
            project: ProjectId(project.clone()),
            scope: spec.network.clone(),
            name: mount.name.clone(),
        };
        if let Some(found) = self.find_volume(&wanted).await? {
            if found != volume_name(spec.network.as_deref(), &mount.name) {
                tracing::info!(volume = %found, "mounting a volume made under the old naming");
            }
            return Ok(found);
        }
        let name = volume_name(spec.network.as_deref(), &mount.name);
        if self.volume_labels(&name).await?.is_some() {
            // Named as ours, but labelled for someone else: never mount it.
            return Err(Error::conflict(format!(
                "Docker volume {name} exists but was not made by Wharf for this project"
            ))
            .with_backend(crate::error::BACKEND));
        }
        let mut labels = support_labels(spec);
        labels.insert(label::VOLUME.into(), mount.name.clone());
        if let Some(scope) = &spec.network {
            labels.insert(label::VOLUME_SCOPE.into(), scope.clone());
        }
        self.create_volume(&name, &labels).await?;
        Ok(name)
    }

    /// Creates volume `name` (labelled) unless it exists.
    pub(crate) async fn create_volume(&self, name: &str, labels: &Labels) -> Result<()> {
        if self.volume_labels(name).await?.is_some() {
            return Ok(());
        }
        let req = VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(owned_labels(labels)),
            ..Default::default()
        };
        self.docker
            .create_volume(req)
            .await
            .map(drop)
            .map_err(|e| map(e, &format!("create volume {name}")))
    }

    async fn inspect(&self, id: &InstanceId) -> Result<ContainerInspectResponse> {
        if id.as_str().is_empty() {
            return Err(Error::not_found("instance with an empty id"));
        }
        self.docker
            .inspect_container(id.as_str(), None::<InspectContainerOptions>)
            .await
            .map_err(|e| match is_not_found(&e) {
                true => Error::not_found(format!("instance {id} does not exist"))
                    .with_backend(crate::error::BACKEND),
                false => map(e, &format!("inspect container {id}")),
            })
    }

    fn host_port_of(&self, info: &ContainerInspectResponse) -> Option<u16> {
        let labels = info.config.as_ref()?.labels.as_ref()?;
        let port = labels.get(internal::PORT)?;
        let ports = info.network_settings.as_ref()?.ports.as_ref()?;
        let bindings = ports.get(&format!("{port}/tcp"))?.as_ref()?;
        bindings
            .iter()
            .find_map(|b| b.host_port.as_deref()?.parse().ok())
    }

    pub(crate) async fn remove(&self, id: &str) -> Result<()> {
        let opts = RemoveContainerOptions {
            force: true,
            v: false,
            ..Default::default()
        };
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            // Gone already, or being removed by someone else.
            Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
            Err(e) => Err(map(e, &format!("remove container {id}"))),
        }
    }
}

/// A volume's Docker name: `<scope>.<volume>`, the scope being the instance's network
/// (one per project and per environment of it), so the same volume name in two
/// projects never means the same data. A volume name never holds a '.', so the last
/// '.' splits the name back into scope and volume: two different (scope, volume)
/// pairs never share a Docker volume. Without a network: `wharf-<volume>` (no '.',
/// so never a scoped volume's name).
///
/// The naming before this one, `<scope>-<volume>`, was ambiguous: project `shop`'s
/// volume `x-data` and project `shop-x`'s volume `data` were one Docker volume. See
/// [`legacy_volume_name`] for how those volumes are still found.
pub(crate) fn volume_name(scope: Option<&str>, volume: &str) -> String {
    match scope {
        Some(net) => format!("{net}.{volume}"),
        None => format!("wharf-{volume}"),
    }
}

/// A scoped volume's name under the ambiguous naming before [`volume_name`]:
/// `<scope>-<volume>` (unchanged without a scope, so `None`).
pub(crate) fn legacy_volume_name(scope: Option<&str>, volume: &str) -> Option<String> {
    scope.map(|net| format!("{net}-{volume}"))
}

/// Whether a volume with `labels` was made by Wharf for `project`.
fn belongs_to(labels: &HashMap<String, String>, project: &ProjectId) -> bool {
    labels.get(label::MANAGED).map(String::as_str) == Some("true")
        && labels.get(label::PROJECT) == Some(&project.0)
}

fn owned_labels(labels: &Labels) -> HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The labels of a Docker resource, without this runtime's internal ones.
fn public_labels(labels: Option<&HashMap<String, String>>) -> Labels {
    labels
        .into_iter()
        .flatten()
        .filter(|(k, _)| !k.starts_with(internal::PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Labels for resources a container needs (network, volumes): managed, plus the
/// project of the spec if it says one.
fn support_labels(spec: &InstanceSpec) -> Labels {
    let mut l = Labels::new();
    l.insert(label::MANAGED.into(), "true".into());
    if let Some(p) = spec.labels.get(label::PROJECT) {
        l.insert(label::PROJECT.into(), p.clone());
    }
    l
}

/// Docker's rule for container names.
fn check_container_name(name: &str) -> Result<()> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "instance name {name:?} is not a valid container name (letters, digits, '_', '.', '-'; starting with a letter or digit)"
        )))
    }
}

/// Docker's rule for volume names, for the network a volume is scoped by.
fn check_volume_scope(net: &str) -> Result<()> {
    let ok = net.starts_with(|c: char| c.is_ascii_alphanumeric())
        && net.len() <= 128
        && net
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "network {net:?} cannot scope a volume (letters, digits, '_', '.', '-'; starting with a letter or digit)"
        )))
    }
}

fn restart_policy(p: RestartPolicy) -> DockerRestartPolicy {
    let (name, max) = match p {
        RestartPolicy::No => (RestartPolicyNameEnum::NO, None),
        RestartPolicy::OnFailure { max_retries } => (
            RestartPolicyNameEnum::ON_FAILURE,
            Some(i64::from(max_retries)),
        ),
        RestartPolicy::UnlessStopped => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
        RestartPolicy::Always => (RestartPolicyNameEnum::ALWAYS, None),
    };
    DockerRestartPolicy {
        name: Some(name),
        maximum_retry_count: max,
    }
}

/// Why a container that is not running stopped.
fn exit_reason(info: &ContainerInspectResponse) -> (Option<i32>, String) {
    let state = info.state.as_ref();
    let code = state
        .and_then(|s| s.exit_code)
        .and_then(|c| i32::try_from(c).ok());
    let oom = state.and_then(|s| s.oom_killed).unwrap_or(false);
    let error = state
        .and_then(|s| s.error.clone())
        .filter(|e| !e.is_empty());
    let restarts = info.restart_count.unwrap_or(0);
    let mut reason = if oom {
        "OOM-killed: the memory limit was reached".to_owned()
    } else if let Some(error) = error {
        error
    } else {
        match code {
            Some(c) => format!("exited with code {c}"),
            None => "exited".to_owned(),
        }
    };
    if restarts > 0 {
        reason.push_str(&format!(" (restarted {restarts} times)"));
    }
    (code, reason)
}

#[async_trait]
impl Runtime for DockerRuntime {
    async fn start(&self, spec: &InstanceSpec) -> Result<Instance> {
        if spec.image.is_empty() {
            return Err(Error::invalid("instance spec has no image"));
        }
        if spec.port == 0 {
            return Err(Error::invalid("instance spec has port 0"));
        }
        check_container_name(&spec.name)?;
        if spec.labels.keys().any(|k| k.starts_with(internal::PREFIX)) {
            return Err(Error::invalid(format!(
                "labels starting with {:?} are reserved for the Docker runtime",
                internal::PREFIX
            )));
        }
        for v in &spec.volumes {
            v.validate()?;
        }
        if let (Some(net), false) = (&spec.network, spec.volumes.is_empty()) {
            // It becomes part of each volume's name.
            check_volume_scope(net)?;
        }

        // Held until the container exists on the network, so that neither another
        // start nor `gc` (which removes networks no container is on) gets in between.
        let (network_guard, network) = match &spec.network {
            Some(net) => {
                let guard = NETWORK_LOCK.lock().await;
                let id = self.ensure_network(net, &support_labels(spec)).await?;
                (Some(guard), Some(id))
            }
            None => (None, None),
        };
        let mut binds = Vec::new();
        for v in &spec.volumes {
            let name = self.ensure_volume(spec, v).await?;
            binds.push(format!("{name}:{}", v.path));
        }

        let port_key = format!("{}/tcp", spec.port);
        let mut port_bindings = PortMap::new();
        port_bindings.insert(
            port_key.clone(),
            Some(vec![PortBinding {
                host_ip: Some(self.options.bind_address.to_string()),
                host_port: Some(
                    self.options
                        .host_port
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                ),
            }]),
        );
        let mut labels = owned_labels(&spec.labels);
        labels.insert(internal::PORT.into(), spec.port.to_string());
        labels.insert(
            internal::PROBE.into(),
            serde_json::to_string(&spec.health_check.probe)?,
        );
        let networking_config = network.as_ref().map(|net| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                net.clone(),
                EndpointSettings {
                    aliases: spec.network_alias.clone().map(|a| vec![a]),
                    network_id: Some(net.clone()),
                    ..Default::default()
                },
            )])),
        });
        let host_config = HostConfig {
            port_bindings: (!spec.run_once).then_some(port_bindings),
            memory: spec
                .resources
                .memory_mb
                .map(|mb| (mb as i64).saturating_mul(1024 * 1024)),
            nano_cpus: spec.resources.cpu_millis.map(|m| i64::from(m) * 1_000_000),
            // A task runs once; nothing reaches it through a published port.
            restart_policy: Some(restart_policy(if spec.run_once {
                RestartPolicy::No
            } else {
                self.options.restart_policy
            })),
            binds: (!binds.is_empty()).then_some(binds),
            network_mode: network.clone(),
            init: Some(true),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: spec.command.clone(),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            exposed_ports: (!spec.run_once).then(|| vec![port_key]),
            labels: Some(labels),
            host_config: Some(host_config),
            networking_config,
            ..Default::default()
        };
        let opts = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| match &e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                } => Error::not_found(format!(
                    "image {} is not on this Docker engine (build or import it first)",
                    spec.image
                ))
                .with_backend(crate::error::BACKEND)
                .with_source(e),
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                } => Error::conflict(format!("a container named {} already exists", spec.name))
                    .with_backend(crate::error::BACKEND)
                    .with_source(e),
                _ => map(e, &format!("create container {}", spec.name)),
            })?;
        drop(network_guard);
        let id = created.id;
        if let Err(e) = self.docker.start_container(&id, None).await {
            let _ = self.remove(&id).await;
            let err = match &e {
                bollard::errors::Error::DockerResponseServerError { message, .. }
                    if is_port_taken(message) =>
                {
                    Error::conflict(format!(
                        "cannot publish port {} of {} on {}: the host port is taken",
                        spec.port, spec.name, self.options.bind_address
                    ))
                    .with_backend(crate::error::BACKEND)
                    .with_source(e)
                }
                _ => map(e, &format!("start container {}", spec.name)),
            };
            return Err(err);
        }
        let info = self.inspect(&InstanceId(id.clone())).await?;
        let port = self.host_port_of(&info).unwrap_or(0);
        tracing::debug!(container = %id, name = %spec.name, port, "started container");
        Ok(Instance {
            id: InstanceId(id),
            endpoint: Endpoint {
                host: self.endpoint_host(),
                port,
            },
            labels: spec.labels.clone(),
        })
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<()> {
        if id.as_str().is_empty() {
            return Ok(());
        }
        let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let opts = StopContainerOptions {
            t: Some(i32::try_from(secs).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        match self.docker.stop_container(id.as_str(), Some(opts)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => return Err(map(e, &format!("stop container {id}"))),
        }
        self.remove(id.as_str()).await
    }

    async fn status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        let info = self.inspect(id).await?;
        let status = info
            .state
            .as_ref()
            .and_then(|s| s.status)
            .unwrap_or(ContainerStateStatusEnum::EMPTY);
        match status {
            ContainerStateStatusEnum::CREATED | ContainerStateStatusEnum::EMPTY => {
                Ok(InstanceStatus::Starting)
            }
            ContainerStateStatusEnum::PAUSED => Ok(InstanceStatus::Unhealthy {
                reason: "the container is paused".into(),
            }),
            ContainerStateStatusEnum::RUNNING => {
                let labels = info.config.as_ref().and_then(|c| c.labels.as_ref());
                let probe: Probe = labels
                    .and_then(|l| l.get(internal::PROBE))
                    .and_then(|p| serde_json::from_str(p).ok())
                    .unwrap_or(Probe::Tcp);
                let Some(port) = self.host_port_of(&info) else {
                    return Ok(InstanceStatus::Running);
                };
                let host = self.endpoint_host();
                let outcome = match &probe {
                    Probe::None => Ok(()),
                    Probe::Tcp => probe::tcp(&host, port).await,
                    Probe::Postgres | Probe::Mysql | Probe::Redis => {
                        wharf_core::dbprobe::check(&probe, &host, port)
                            .await
                            .unwrap_or(Ok(()))
                    }
                    Probe::Http { path } => probe::http(&host, port, path).await,
                };
                Ok(match outcome {
                    Ok(()) => InstanceStatus::Healthy,
                    Err(reason) => InstanceStatus::Unhealthy { reason },
                })
            }
            // Restarting means it exited (and the policy brings it back): report the
            // exit, so a crash loop is never mistaken for a start.
            ContainerStateStatusEnum::RESTARTING
            | ContainerStateStatusEnum::EXITED
            | ContainerStateStatusEnum::DEAD
            | ContainerStateStatusEnum::STOPPING
            | ContainerStateStatusEnum::REMOVING => {
                let (code, reason) = exit_reason(&info);
                Ok(InstanceStatus::Exited { code, reason })
            }
        }
    }

    async fn logs(
        &self,
        id: &InstanceId,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, Result<LogLine>>> {
        // Inspect first: the log stream itself only fails once read.
        let info = self.inspect(id).await?;
        let cid = info.id.unwrap_or_else(|| id.to_string());
        let options = LogsOptions {
            follow: opts.follow,
            stdout: true,
            stderr: true,
            tail: opts
                .tail
                .map(|n| n.to_string())
                .unwrap_or_else(|| "all".into()),
            ..Default::default()
        };
        let chunks = self.docker.logs(&cid, Some(options)).boxed();
        Ok(lines(chunks, cid).boxed())
    }

    async fn list(&self, labels: &Labels) -> Result<Vec<Instance>> {
        let filters: HashMap<String, Vec<String>> = HashMap::from([(
            "label".to_owned(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        )]);
        // No labels: every container (an empty filter list is not "no filter" on
        // every engine version).
        let containers = self
            .containers((!labels.is_empty()).then_some(filters), "list containers")
            .await?;
        let host = self.endpoint_host();
        let mut out: Vec<Instance> = containers
            .into_iter()
            .filter_map(|c| {
                let id = c.id?;
                let inner: Option<u16> = c
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(internal::PORT))
                    .and_then(|p| p.parse().ok());
                let port = c
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| Some(p.private_port) == inner && p.public_port.is_some())
                    .and_then(|p| p.public_port)
                    .unwrap_or(0);
                Some(Instance {
                    id: InstanceId(id),
                    endpoint: Endpoint {
                        host: host.clone(),
                        port,
                    },
                    labels: public_labels(c.labels.as_ref()),
                })
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Every volume labelled for `project`, plus those of `wanted` found under the
    /// old naming (`find_volume`). Sizes are not reported: the
    /// engine computes them only in its disk-usage report, whose shape differs across
    /// the API versions this runtime speaks.
    async fn volumes(&self, project: &ProjectId, wanted: &[VolumeRef]) -> Result<Vec<VolumeInfo>> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{}=true", label::MANAGED),
                format!("{}={}", label::PROJECT, project),
            ],
        )]);
        let listed = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| map(e, &format!("list the volumes of project {project}")))?;
        let mut out: Vec<VolumeInfo> = listed
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter(|v| belongs_to(&v.labels, project))
            .filter_map(|v| {
                let name = v.labels.get(label::VOLUME)?.clone();
                Some(VolumeInfo {
                    volume: VolumeRef {
                        project: project.clone(),
                        scope: v.labels.get(label::VOLUME_SCOPE).cloned(),
                        name,
                    },
                    runtime_name: v.name,
                    size_bytes: None,
                })
            })
            .collect();
        for w in wanted.iter().filter(|w| &w.project == project) {
            if out.iter().any(|o| &o.volume == w) {
                continue;
            }
            if let Some(found) = self.find_volume(w).await? {
                out.push(VolumeInfo {
                    volume: w.clone(),
                    runtime_name: found,
                    size_bytes: None,
                });
            }
        }
        out.sort_by(|a, b| a.volume.cmp(&b.volume));
        Ok(out)
    }

    async fn remove_volume(&self, volume: &VolumeRef) -> Result<()> {
        let Some(name) = self.find_volume(volume).await? else {
            return Err(Error::not_found(format!(
                "project {} has no volume {} here",
                volume.project, volume.name
            ))
            .with_backend(crate::error::BACKEND));
        };
        match self
            .docker
            .remove_volume(&name, Some(RemoveVolumeOptions { force: false }))
            .await
        {
            Ok(()) => {
                tracing::info!(volume = %name, "removed a volume and its data, as asked");
                Ok(())
            }
            Err(e) if is_conflict(&e) => Err(Error::conflict(format!(
                "volume {} is in use by a container: stop the services that mount it first",
                volume.name
            ))
            .with_backend(crate::error::BACKEND)
            .with_source(e)),
            Err(e) if is_not_found(&e) => Err(Error::not_found(format!(
                "project {} has no volume {} here",
                volume.project, volume.name
            ))
            .with_backend(crate::error::BACKEND)),
            Err(e) => Err(map(e, &format!("remove volume {name}"))),
        }
    }

    /// Containers of a project's network reach each other by network alias (the
    /// service name) on the port the app listens on inside; the published
    /// `127.0.0.1` port of [`Instance::endpoint`] is the host's alone.
    fn peer_address(&self, alias: &str, port: u16, _live: Option<&Instance>) -> Option<Endpoint> {
        Some(Endpoint {
            host: alias.to_owned(),
            port,
        })
    }

    async fn export_volume(&self, volume: &VolumeRef) -> Result<wharf_core::ByteStream> {
        self.export_archive(volume).await
    }

    async fn import_volume(&self, volume: &VolumeRef, tar: wharf_core::ByteStream) -> Result<()> {
        self.import_archive(volume, tar).await
    }

    async fn exec(
        &self,
        id: &InstanceId,
        command: &[String],
        env: &BTreeMap<String, String>,
        stdin: Option<wharf_core::ByteStream>,
    ) -> Result<wharf_core::ByteStream> {
        // Only a container Wharf made, by its full id: never a name, an id prefix, or
        // the operator's own containers on the same engine.
        let info = self.inspect(id).await?;
        let labels = info
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let managed = labels.get(label::MANAGED).map(String::as_str) == Some("true");
        if info.id.as_deref() != Some(id.as_str()) || !managed {
            return Err(Error::not_found(format!("no Wharf instance {id}"))
                .with_backend(crate::error::BACKEND));
        }
        crate::exec::run(&self.docker, id.as_str(), command, env, stdin).await
    }
}

/// Turns Docker's log frames into lines, keeping a partial line of each stream until
/// its end arrives.
fn lines(
    chunks: BoxStream<'static, std::result::Result<LogOutput, bollard::errors::Error>>,
    cid: String,
) -> impl futures::Stream<Item = Result<LogLine>> + Send + 'static {
    struct State {
        chunks: BoxStream<'static, std::result::Result<LogOutput, bollard::errors::Error>>,
        partial: BTreeMap<u8, String>,
        ready: VecDeque<Result<LogLine>>,
        done: bool,
        cid: String,
    }
    fn push(state: &mut State, stream: LogStream, key: u8, bytes: &[u8]) {
        let buf = state.partial.entry(key).or_default();
        buf.push_str(&String::from_utf8_lossy(bytes));
        while let Some(i) = buf.find('\n') {
            let line: String = buf.drain(..=i).collect();
            let line = line.trim_end_matches(['\n', '\r']).to_owned();
            state.ready.push_back(Ok(LogLine::new(stream, line)));
        }
    }
    let state = State {
        chunks,
        partial: BTreeMap::new(),
        ready: VecDeque::new(),
        done: false,
        cid,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(item) = state.ready.pop_front() {
                return Some((item, state));
            }
            if state.done {
                return None;
            }
            match state.chunks.next().await {
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                    push(&mut state, LogStream::Stdout, 1, &message)
                }
                Some(Ok(LogOutput::StdErr { message })) => {
                    push(&mut state, LogStream::Stderr, 2, &message)
                }
                Some(Ok(LogOutput::StdIn { .. })) => {}
                Some(Err(e)) => {
                    state.done = true;
                    let cid = state.cid.clone();
                    state
                        .ready
                        .push_back(Err(map(e, &format!("read logs of {cid}"))));
                }
                None => {
                    state.done = true;
                    let rest = std::mem::take(&mut state.partial);
                    for (key, text) in rest {
                        if !text.is_empty() {
                            let stream = if key == 2 {
                                LogStream::Stderr
                            } else {
                                LogStream::Stdout
                            };
                            state.ready.push_back(Ok(LogLine::new(stream, text)));
                        }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn log_frames_become_lines() {
        let frames = vec![
            Ok(LogOutput::StdOut {
                message: "hel".into(),
            }),
            Ok(LogOutput::StdErr {
                message: "oops\n".into(),
            }),
            Ok(LogOutput::StdOut {
                message: "lo\nwor".into(),
            }),
            Ok(LogOutput::StdOut {
                message: "ld".into(),
            }),
        ];
        let out: Vec<_> = lines(futures::stream::iter(frames).boxed(), "c".into())
            .map(|l| l.unwrap())
            .map(|l| (l.stream, l.text))
            .collect()
            .await;
        assert_eq!(
            out,
            [
                (LogStream::Stderr, "oops".to_owned()),
                (LogStream::Stdout, "hello".to_owned()),
                (LogStream::Stdout, "world".to_owned()),
            ]
        );
    }

    #[test]
    fn volume_names_never_collide_across_scopes() {
        // The pair the old naming made one volume.
        assert_ne!(
            volume_name(Some("wharf-shop"), "x-data"),
            volume_name(Some("wharf-shop-x"), "data")
        );
        assert_eq!(
            volume_name(Some("wharf-shop"), "x-data"),
            "wharf-shop.x-data"
        );
        assert_eq!(
            legacy_volume_name(Some("wharf-shop"), "x-data"),
            legacy_volume_name(Some("wharf-shop-x"), "data")
        );
        // No scoped name is ever an unscoped one, nor an old one.
        assert_ne!(
            volume_name(Some("wharf"), "data"),
            volume_name(None, "data")
        );
        assert!(!legacy_volume_name(Some("a"), "b").unwrap().contains('.'));
    }

    #[test]
    fn container_names_follow_docker_rules() {
        assert!(check_container_name("shop-web-1a2b3c4d").is_ok());
        assert!(check_container_name("-x").is_err());
        assert!(check_container_name("a/b").is_err());
        assert!(check_container_name("").is_err());
    }
}
