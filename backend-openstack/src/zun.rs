//! A [`Runtime`] on OpenStack Zun (the containers service, catalog type `container`).
//!
//! `start` creates the container (`POST /v1/containers`), waits out `Creating`,
//! starts it (`POST /v1/containers/{id}/start`) and polls with back-off until it is
//! `Running`. `status` maps Zun's state and, once running, probes the app's health
//! on the container's address. `stop` stops with the grace period and deletes,
//! waiting until Zun no longer knows the container. Wharf's labels are Zun labels,
//! so `list` (and the engine's recovery) finds instances by them.
//!
//! Volumes are Cinder volumes of the project ([`crate::cinder`]), found (or made)
//! before the container and passed by id in its `mounts`; Zun attaches them to its
//! host and mounts them at the spec's path. Their ids are kept in the
//! [`VOLUMES_LABEL`] label, so `stop` can wait until Zun has detached them
//! (`available`) after deleting the container: the volumes stay, for the next one.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use wharf_core::{
    Error, ErrorKind, Instance, InstanceId, InstanceSpec, InstanceStatus, Labels, LogLine,
    LogOptions, LogStream, ProjectId, Result, Runtime, VolumeInfo, VolumeRef,
};

use crate::cinder::{Cinder, Polling};
use crate::http::{self, BACKEND};
use crate::instances::{self, Backoff, VersionedApi};
use crate::keystone::Session;

/// The service type of Zun in the catalog.
pub const SERVICE_TYPE: &str = "container";

/// Options of the Zun runtime.
#[derive(Debug, Clone)]
pub struct ZunOptions {
    /// The API microversion sent as `OpenStack-API-Version: container <v>`.
    pub microversion: String,
    /// Networks (Neutron ids or names) to attach the container to; empty: Zun's default.
    pub networks: Vec<String>,
    /// Security groups to put the container in; empty: the project's default.
    pub security_groups: Vec<String>,
    /// `image_driver` (`docker` or `glance`); `None`: Zun's default.
    pub image_driver: Option<String>,
    /// Longest wait for `Created` and then `Running` in `start`, and for deletion.
    pub state_timeout: Duration,
    /// The first pause between state polls (doubling up to `poll_max`).
    pub poll_min: Duration,
    /// The longest pause between state polls.
    pub poll_max: Duration,
    /// Timeout of one health probe.
    pub probe_timeout: Duration,
}

impl Default for ZunOptions {
    fn default() -> Self {
        ZunOptions {
            microversion: "1.40".into(),
            networks: Vec::new(),
            security_groups: Vec::new(),
            image_driver: None,
            state_timeout: Duration::from_secs(300),
            poll_min: Duration::from_millis(50),
            poll_max: Duration::from_secs(3),
            probe_timeout: Duration::from_secs(2),
        }
    }
}

/// A container as Zun describes it (the fields Wharf reads).
#[derive(Debug, Clone, Deserialize)]
pub struct ZunContainer {
    /// Its id.
    pub uuid: String,
    /// Its name.
    #[serde(default)]
    pub name: Option<String>,
    /// `Creating`, `Created`, `Running`, `Stopped`, `Error`, `Deleting`, ...
    #[serde(default)]
    pub status: String,
    /// Why it is in its state (errors).
    #[serde(default)]
    pub status_reason: Option<String>,
    /// Docker-style detail (`Exited(1) 2 seconds ago`).
    #[serde(default)]
    pub status_detail: Option<String>,
    /// Its labels.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Addresses by network.
    #[serde(default)]
    pub addresses: Option<BTreeMap<String, Vec<ZunAddress>>>,
    /// Exposed ports.
    #[serde(default)]
    pub ports: Option<Vec<Value>>,
}

/// One address of a container.
#[derive(Debug, Clone, Deserialize)]
pub struct ZunAddress {
    /// The IP address.
    pub addr: String,
    /// 4 or 6.
    #[serde(default)]
    pub version: Option<u8>,
    /// The Neutron port the address is on.
    #[serde(default)]
    pub port: Option<String>,
}

pub use crate::health::PROBE_LABEL;
pub use crate::instances::{PORT_LABEL, VOLUMES_LABEL};

impl ZunContainer {
    /// The address the container is reached on (the first IPv4 one, if any).
    fn preferred_address(&self) -> Option<&ZunAddress> {
        let all = self.addresses.iter().flat_map(|m| m.values()).flatten();
        instances::preferred(all, |a| a.version)
    }

    fn address(&self) -> Option<String> {
        self.preferred_address().map(|a| a.addr.clone())
    }

    fn port(&self) -> Option<u16> {
        if let Some(p) = self
            .labels
            .as_ref()
            .and_then(|l| l.get(PORT_LABEL))
            .and_then(|p| p.parse().ok())
        {
            return Some(p);
        }
        self.ports.as_ref()?.iter().find_map(|v| match v {
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Value::String(s) => s.split('/').next()?.parse().ok(),
            _ => None,
        })
    }

    fn exit_code(&self) -> Option<i32> {
        let d = self.status_detail.as_deref()?;
        let start = d.find("Exited(")? + "Exited(".len();
        let end = d[start..].find(')')? + start;
        d[start..end].parse().ok()
    }
}

/// Containers on Zun.
#[derive(Debug, Clone)]
pub struct ZunRuntime {
    api: VersionedApi,
    cinder: Cinder,
    opts: ZunOptions,
    probe: reqwest::Client,
}

impl ZunRuntime {
    /// A runtime using `session` to find and reach Zun.
    pub fn new(session: Session, opts: ZunOptions) -> Result<Self> {
        let probe = crate::health::probe_client(opts.probe_timeout)?;
        let polling = Polling {
            timeout: opts.state_timeout,
            min: opts.poll_min,
            max: opts.poll_max,
        };
        Ok(ZunRuntime {
            cinder: Cinder::new(session.clone(), polling),
            api: VersionedApi::new(session, SERVICE_TYPE, opts.microversion.clone()),
            opts,
            probe,
        })
    }

    /// The session.
    pub fn session(&self) -> &Session {
        self.api.session()
    }

    /// The container `id`, or NotFound.
    pub async fn container(&self, id: &str) -> Result<ZunContainer> {
        let what = format!("zun: show container {id}");
        self.api.get(&format!("/containers/{id}"), &what).await
    }

    /// The Neutron port of an instance's (first IPv4) address: what
    /// [`crate::Networking::expose`] attaches the floating IP to.
    pub async fn neutron_port(&self, id: &InstanceId) -> Result<Option<String>> {
        let c = self.container(id.as_str()).await?;
        Ok(c.preferred_address().and_then(|a| a.port.clone()))
    }

    /// Every container of the project (following pagination).
    pub async fn containers(&self) -> Result<Vec<ZunContainer>> {
        #[derive(Deserialize)]
        struct Page {
            containers: Vec<ZunContainer>,
            #[serde(default)]
            next: Option<String>,
        }
        const WHAT: &str = "zun: list containers";
        instances::all_pages("/containers/", "/containers", |path| async move {
            let page: Page = self.api.get(&path, WHAT).await?;
            Ok((page.containers, page.next))
        })
        .await
    }

    /// Polls `id` with back-off until `done` says it is done (Ok(true)), or fails.
    async fn wait(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&ZunContainer) -> Result<bool>,
    ) -> Result<ZunContainer> {
        let mut backoff = self.backoff();
        loop {
            let c = self.container(id).await?;
            if done(&c)? {
                return Ok(c);
            }
            backoff.check(|| {
                format!(
                    "zun: container {id} still {} after {:?} waiting for {what}",
                    c.status, self.opts.state_timeout
                )
            })?;
            backoff.pause().await;
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(
            self.opts.state_timeout,
            self.opts.poll_min,
            self.opts.poll_max,
        )
    }

    fn failed(c: &ZunContainer, step: &str) -> Error {
        let reason = c
            .status_reason
            .clone()
            .or_else(|| c.status_detail.clone())
            .unwrap_or_else(|| "no reason given".into());
        let context = format!("zun: {step} container {}", c.uuid);
        instances::went_to("container", &c.status, reason, context)
    }

    async fn delete_now(&self, id: &str) -> Result<()> {
        let what = format!("zun: delete container {id}");
        let path = format!("/containers/{id}?force=True&stop=True");
        self.api.delete(&path, &what).await
    }

    async fn wait_gone(&self, id: &str) -> Result<()> {
        let mut backoff = self.backoff();
        loop {
            match self.container(id).await {
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
                Ok(c) => {
                    backoff.check(|| {
                        format!(
                            "zun: container {id} still {} after {:?} waiting for deletion",
                            c.status, self.opts.state_timeout
                        )
                    })?;
                    if c.status == "Error" {
                        // A delete that failed leaves the container in Error: try again.
                        self.delete_now(id).await?;
                    }
                }
            }
            backoff.pause().await;
        }
    }

    /// The create request for `spec`, mounting the Cinder volumes `volume_ids` (in
    /// the order of the spec's volumes).
    fn create_body(&self, spec: &InstanceSpec, volume_ids: &[String]) -> Value {
        let mut labels = instances::stored_labels(spec);
        if !volume_ids.is_empty() {
            labels.insert(VOLUMES_LABEL.into(), volume_ids.join(","));
        }
        let mut body = json!({
            "name": spec.name,
            "image": spec.image,
            "environment": spec.env,
            "labels": labels,
            "exposed_ports": { format!("{}/tcp", spec.port): {} },
            "restart_policy": { "Name": "no", "MaximumRetryCount": 0 },
            "auto_remove": false,
            "interactive": false,
        });
        if let Some(cmd) = &spec.command {
            body["command"] = json!(cmd);
        }
        if let Some(mb) = spec.resources.memory_mb {
            body["memory"] = json!(mb);
        }
        if let Some(m) = spec.resources.cpu_millis {
            body["cpu"] = json!(f64::from(m) / 1000.0);
        }
        if !self.opts.networks.is_empty() {
            body["nets"] = Value::Array(
                self.opts
                    .networks
                    .iter()
                    .map(|n| json!({ "network": n }))
                    .collect(),
            );
        }
        if !self.opts.security_groups.is_empty() {
            body["security_groups"] = json!(self.opts.security_groups);
        }
        if let Some(d) = &self.opts.image_driver {
            body["image_driver"] = json!(d);
        }
        if !spec.volumes.is_empty() {
            body["mounts"] = Value::Array(
                spec.volumes
                    .iter()
                    .zip(volume_ids)
                    .map(|(v, id)| json!({ "source": id, "destination": v.path, "type": "volume" }))
                    .collect(),
            );
        }
        body
    }

    async fn create_and_start(&self, id: &str) -> Result<ZunContainer> {
        self.wait(id, "Created", |c| match c.status.as_str() {
            "Creating" => Ok(false),
            "Created" | "Running" => Ok(true),
            _ => Err(Self::failed(c, "create")),
        })
        .await?;
        let what = format!("zun: start container {id}");
        let resp = self
            .api
            .call(
                Method::POST,
                &format!("/containers/{id}/start"),
                &what,
                None,
            )
            .await?;
        // 409: already running (a retried start, or Zun raced us): fine.
        if resp.status() != StatusCode::CONFLICT {
            http::check(resp, &what).await?;
        }
        self.wait(id, "Running", |c| match c.status.as_str() {
            "Created" | "Creating" | "Restarting" => Ok(false),
            "Running" => Ok(true),
            // Exited right away: the instance exists; status() reports it.
            "Stopped" => Ok(true),
            _ => Err(Self::failed(c, "start")),
        })
        .await
    }

    fn instance(c: &ZunContainer, port: u16) -> Instance {
        let stored = c.labels.clone().unwrap_or_default();
        instances::instance(&c.uuid, c.address(), port, stored)
    }

    async fn fetch_logs(&self, id: &str, tail: Option<usize>) -> Result<String> {
        let tail = tail.map_or("all".to_owned(), |n| n.to_string());
        let what = format!("zun: logs of container {id}");
        let resp = self
            .api
            .call(
                Method::GET,
                &format!(
                    "/containers/{id}/logs?stdout=True&stderr=True&timestamps=False&tail={tail}"
                ),
                &what,
                None,
            )
            .await?;
        let resp = http::check(resp, &what).await?;
        let text = resp.text().await.map_err(|e| {
            Error::unavailable(format!("{what}: reading: {e}")).with_backend(BACKEND)
        })?;
        // Zun answers the logs as a JSON string; accept plain text as well.
        Ok(serde_json::from_str::<String>(&text).unwrap_or(text))
    }
}

fn lines_of(text: &str) -> Vec<Result<LogLine>> {
    text.lines()
        .map(|l| Ok(LogLine::new(LogStream::Stdout, l.trim_end_matches('\r'))))
        .collect()
}

#[async_trait]
impl Runtime for ZunRuntime {
    async fn start(&self, spec: &InstanceSpec) -> Result<Instance> {
        instances::check_spec(spec, "Zun")?;
        let mut volume_ids = Vec::new();
        for mount in &spec.volumes {
            volume_ids.push(self.cinder.ensure(spec, mount).await?);
        }
        let body = self.create_body(spec, &volume_ids);
        let what = format!("zun: create container {}", spec.name);
        let created = self
            .api
            .post::<ZunContainer>("/containers", &what, &body)
            .await;
        let created = match created {
            // Zun refuses a volume that another start attached in the meantime.
            Err(e) if e.kind() == ErrorKind::InvalidInput && !volume_ids.is_empty() => Err(self
                .cinder
                .explain_refusal(&spec.volumes, &volume_ids, e)
                .await),
            r => r,
        }?;
        let id = created.uuid.clone();
        let started = self.create_and_start(&id).await;
        let started = instances::removed_on_error(started, "zun", &id, self.delete_now(&id)).await;
        Ok(Self::instance(&started?, spec.port))
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<()> {
        let volumes: Vec<String> = match self.container(id.as_str()).await {
            Ok(c) => c
                .labels
                .as_ref()
                .and_then(|l| l.get(VOLUMES_LABEL))
                .map(|v| v.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let what = format!("zun: stop container {id}");
        let resp = self
            .api
            .call(
                Method::POST,
                &format!("/containers/{id}/stop?timeout={}", grace.as_secs()),
                &what,
                None,
            )
            .await?;
        match resp.status() {
            s if s == StatusCode::NOT_FOUND => return Ok(()),
            // 409: not running (already stopped, or never started): go on to delete.
            s if s == StatusCode::CONFLICT || s.is_success() => {}
            _ => {
                http::check(resp, &what).await?;
            }
        }
        self.delete_now(id.as_str()).await?;
        self.wait_gone(id.as_str()).await?;
        // Zun detaches the volumes once the container is gone; they stay.
        for v in volumes {
            self.cinder.wait_available(&v).await?;
        }
        Ok(())
    }

    async fn status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        let c = self.container(id.as_str()).await?;
        Ok(match c.status.as_str() {
            "Creating" | "Created" | "Restarting" | "Rebuilding" => InstanceStatus::Starting,
            "Running" => {
                // The probe comes from the label we set; list()/recovery find it too.
                crate::health::running_status(
                    &self.probe,
                    self.opts.probe_timeout,
                    c.address(),
                    c.port(),
                    c.labels.as_ref(),
                )
                .await
            }
            "Stopped" => InstanceStatus::Exited {
                code: c.exit_code(),
                reason: c
                    .status_reason
                    .clone()
                    .or(c.status_detail.clone())
                    .unwrap_or_else(|| "stopped".into()),
            },
            "Error" => InstanceStatus::Exited {
                code: None,
                reason: c.status_reason.clone().unwrap_or_else(|| "error".into()),
            },
            "Deleting" => InstanceStatus::Exited {
                code: None,
                reason: "being deleted".into(),
            },
            other => InstanceStatus::Unhealthy {
                reason: format!("zun reports the container {other}"),
            },
        })
    }

    async fn logs(
        &self,
        id: &InstanceId,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, Result<LogLine>>> {
        let text = self.fetch_logs(id.as_str(), opts.tail).await?;
        let first = lines_of(&text);
        if !opts.follow {
            return Ok(stream::iter(first).boxed());
        }
        // Zun has no streaming logs API: follow by polling the whole log and sending
        // what is new, until the container is gone.
        let seen = self.fetch_logs(id.as_str(), None).await?.lines().count();
        let rt = self.clone();
        let id = id.as_str().to_owned();
        let live = stream::unfold((rt, id, seen, false), |(rt, id, seen, done)| async move {
            if done {
                return None;
            }
            loop {
                tokio::time::sleep(rt.opts.poll_max.min(Duration::from_secs(1))).await;
                match rt.fetch_logs(&id, None).await {
                    Ok(text) => {
                        let all: Vec<&str> = text.lines().collect();
                        if all.len() > seen {
                            let new: Vec<Result<LogLine>> = lines_of(&all[seen..].join("\n"));
                            let n = all.len();
                            return Some((stream::iter(new), (rt, id, n, false)));
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => return None,
                    Err(e) => return Some((stream::iter(vec![Err(e)]), (rt, id, seen, true))),
                }
            }
        })
        .flatten();
        Ok(stream::iter(first).chain(live).boxed())
    }

    async fn list(&self, labels: &Labels) -> Result<Vec<Instance>> {
        Ok(self
            .containers()
            .await?
            .into_iter()
            .filter(|c| instances::has_labels(&c.labels.clone().unwrap_or_default(), labels))
            .filter(|c| c.status != "Deleting")
            .map(|c| {
                let port = c.port().unwrap_or(0);
                Self::instance(&c, port)
            })
            .collect())
    }

    /// The project's Cinder volumes (by their Wharf metadata).
    async fn volumes(&self, project: &ProjectId, _wanted: &[VolumeRef]) -> Result<Vec<VolumeInfo>> {
        self.cinder.volumes(project).await
    }

    /// Deletes the project's Cinder volume: NotFound unless it is the project's,
    /// Conflict while a container mounts it.
    async fn remove_volume(&self, volume: &VolumeRef) -> Result<()> {
        self.cinder.remove(volume).await
    }
}
