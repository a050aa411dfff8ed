//! A [`Runtime`] on OpenStack Nova for clouds without Zun: one server per instance,
//! whose cloud-init user-data runs the app's container with the VM image's
//! container engine (Docker by default).
//!
//! `start` creates the server (`POST /servers`) and polls with back-off until it is
//! `ACTIVE`; `status` probes the app on the server's address once it is; `logs`
//! reads the console output (`os-getConsoleOutput`), where cloud-init and the engine
//! write; `stop` deletes the server and waits until Nova no longer knows it. Wharf's
//! labels are server metadata, so `list` finds instances by them.
//!
//! Volumes are Cinder volumes of the project ([`crate::cinder`]): `start` finds (or
//! makes) each one, and once the server is `ACTIVE` attaches it
//! (`os-volume_attachments`) and waits until it is `in-use`; `stop` detaches each and
//! waits until it is `available` again before deleting the server, so the volume
//! outlives it. The guest sees a block device, not a folder: the user-data lists
//! each volume in `/etc/wharf/volumes` (see [`cloud_init`]) and runs the container
//! with `-v /var/lib/wharf/volumes/<name>:<path>`; formatting the device and mounting
//! it there is the VM image's part (Wharf cannot reach inside the guest).
//!
//! Environment values travel in the user-data (base64, as Nova wants it), which the
//! project's users can read back from the metadata service: give secrets to the app
//! another way on clouds where that matters.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};

use serde::Deserialize;
use serde_json::{json, Value};
use wharf_core::{
    Error, ErrorKind, Instance, InstanceId, InstanceSpec, InstanceStatus, Labels, LogLine,
    LogOptions, LogStream, ProjectId, Result, Runtime, VolumeInfo, VolumeMount, VolumeRef,
};

mod user_data;

pub use user_data::{base64, cloud_init, guest_mount_dir, GUEST_VOLUMES_DIR, GUEST_VOLUMES_FILE};

use crate::cinder::{Cinder, Polling};
use crate::http::BACKEND;
use crate::instances::{self, Backoff, VersionedApi};
use crate::keystone::Session;

/// The service type of Nova in the catalog.
pub const SERVICE_TYPE: &str = "compute";
/// The metadata key holding the app's port.
pub const PORT_KEY: &str = instances::PORT_LABEL;

/// Options of the Nova runtime.
#[derive(Debug, Clone)]
pub struct NovaOptions {
    /// The VM image (Glance id) with cloud-init and a container engine.
    pub image_id: String,
    /// The flavor (id) of the servers.
    pub flavor_id: String,
    /// Networks (Neutron ids) to attach; empty: `"auto"`.
    pub networks: Vec<String>,
    /// Security groups (names); empty: the project's default.
    pub security_groups: Vec<String>,
    /// The container engine command in the VM (`docker` or `podman`).
    pub engine: String,
    /// The compute microversion sent as `OpenStack-API-Version: compute <v>`.
    pub microversion: String,
    /// Longest wait for `ACTIVE`, and for deletion.
    pub state_timeout: Duration,
    /// The first pause between polls (doubling up to `poll_max`).
    pub poll_min: Duration,
    /// The longest pause between polls.
    pub poll_max: Duration,
    /// Timeout of one health probe.
    pub probe_timeout: Duration,
}

impl NovaOptions {
    /// Options for servers of `image_id` and `flavor_id`, with defaults for the rest.
    pub fn new(image_id: impl Into<String>, flavor_id: impl Into<String>) -> Self {
        NovaOptions {
            image_id: image_id.into(),
            flavor_id: flavor_id.into(),
            networks: Vec::new(),
            security_groups: Vec::new(),
            engine: "docker".into(),
            microversion: "2.79".into(),
            state_timeout: Duration::from_secs(600),
            poll_min: Duration::from_millis(100),
            poll_max: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Server {
    id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    addresses: BTreeMap<String, Vec<ServerAddress>>,
    #[serde(default)]
    fault: Option<Fault>,
}

#[derive(Debug, Clone, Deserialize)]
struct ServerAddress {
    addr: String,
    #[serde(default)]
    version: Option<u8>,
}

#[derive(Debug, Clone, Deserialize)]
struct Fault {
    #[serde(default)]
    message: String,
}

impl Server {
    fn address(&self) -> Option<String> {
        instances::preferred(self.addresses.values().flatten(), |a| a.version)
            .map(|a| a.addr.clone())
    }
    fn port(&self) -> Option<u16> {
        self.metadata.get(PORT_KEY)?.parse().ok()
    }
    fn instance(&self) -> Instance {
        instances::instance(
            &self.id,
            self.address(),
            self.port().unwrap_or(0),
            self.metadata.clone(),
        )
    }
}

/// Servers on Nova running one container each.
#[derive(Debug, Clone)]
pub struct NovaRuntime {
    api: VersionedApi,
    cinder: Cinder,
    opts: NovaOptions,
    probe: reqwest::Client,
}

impl NovaRuntime {
    /// A runtime using `session` to find and reach Nova.
    pub fn new(session: Session, opts: NovaOptions) -> Result<Self> {
        let probe = crate::health::probe_client(opts.probe_timeout)?;
        let polling = Polling {
            timeout: opts.state_timeout,
            min: opts.poll_min,
            max: opts.poll_max,
        };
        Ok(NovaRuntime {
            cinder: Cinder::new(session.clone(), polling),
            api: VersionedApi::new(session, SERVICE_TYPE, opts.microversion.clone()),
            opts,
            probe,
        })
    }

    async fn server(&self, id: &str) -> Result<Server> {
        #[derive(Deserialize)]
        struct One {
            server: Server,
        }
        let what = format!("nova: show server {id}");
        let one: One = self.api.get(&format!("/servers/{id}"), &what).await?;
        if one.server.status == "DELETED" {
            return Err(Error::not_found(format!("server {id} is deleted")).with_backend(BACKEND));
        }
        Ok(one.server)
    }

    async fn servers(&self) -> Result<Vec<Server>> {
        #[derive(Deserialize)]
        struct Page {
            servers: Vec<Server>,
            #[serde(default)]
            servers_links: Vec<Link>,
        }
        #[derive(Deserialize)]
        struct Link {
            rel: String,
            href: String,
        }
        const WHAT: &str = "nova: list servers";
        instances::all_pages("/servers/detail", "/servers", |path| async move {
            let page: Page = self.api.get(&path, WHAT).await?;
            let next = page.servers_links.into_iter().find(|l| l.rel == "next");
            Ok((page.servers, next.map(|l| l.href)))
        })
        .await
    }

    /// Attaches `mount`'s Cinder volume `volume` to the server `id` and waits until
    /// Cinder has it `in-use` by that server. Nova refuses (400) a volume another
    /// start attached since [`Cinder::ensure`] found it free: that is a Conflict
    /// naming the volume and its holder.
    async fn attach(&self, id: &str, mount: &VolumeMount, volume: &str) -> Result<()> {
        let what = format!(
            "nova: attach volume {} ({volume}) to server {id}",
            mount.name
        );
        let body = json!({ "volumeAttachment": { "volumeId": volume } });
        let path = format!("/servers/{id}/os-volume_attachments");
        match self.api.post::<Value>(&path, &what, &body).await {
            Err(e) if e.kind() == ErrorKind::InvalidInput => {
                let (mounts, ids) = (std::slice::from_ref(mount), [volume.to_owned()]);
                return Err(self.cinder.explain_refusal(mounts, &ids, e).await);
            }
            r => r?,
        };
        let attached = |v: &crate::cinder::CinderVolume| {
            v.status == "in-use"
                && v.attachments
                    .iter()
                    .any(|a| a.server_id.as_deref() == Some(id))
        };
        self.cinder.wait(volume, "in-use", attached).await.map(drop)
    }

    /// The ids of the volumes attached to the server `id` (none once it is gone).
    async fn attached(&self, id: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct List {
            #[serde(rename = "volumeAttachments")]
            attachments: Vec<Attachment>,
        }
        #[derive(Deserialize)]
        struct Attachment {
            #[serde(rename = "volumeId")]
            volume_id: String,
        }
        let what = format!("nova: volume attachments of server {id}");
        let path = format!("/servers/{id}/os-volume_attachments");
        match self.api.get::<List>(&path, &what).await {
            Ok(l) => Ok(l.attachments.into_iter().map(|a| a.volume_id).collect()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Detaches every volume of the server `id` and waits until each is `available`
    /// again: the volumes outlive the server, ready for the next one.
    async fn detach_all(&self, id: &str) -> Result<()> {
        for volume in self.attached(id).await? {
            let what = format!("nova: detach volume {volume} from server {id}");
            let path = format!("/servers/{id}/os-volume_attachments/{volume}");
            self.api.delete(&path, &what).await?;
            self.cinder.wait_available(&volume).await?;
        }
        Ok(())
    }

    /// Detaches the server's volumes, deletes it and waits until Nova no longer
    /// knows it.
    async fn remove(&self, id: &str) -> Result<()> {
        self.detach_all(id).await?;
        self.delete_now(id).await?;
        self.poll(id, "deletion", |r| match r {
            Err(e) if e.kind() == ErrorKind::NotFound => Some(Ok(())),
            Err(e) => Some(Err(e)),
            Ok(_) => None,
        })
        .await
    }

    async fn delete_now(&self, id: &str) -> Result<()> {
        let what = format!("nova: delete server {id}");
        self.api.delete(&format!("/servers/{id}"), &what).await
    }

    async fn poll<T>(
        &self,
        id: &str,
        what: &str,
        mut step: impl FnMut(Result<Server>) -> Option<Result<T>>,
    ) -> Result<T> {
        let o = &self.opts;
        let mut backoff = Backoff::new(o.state_timeout, o.poll_min, o.poll_max);
        loop {
            if let Some(r) = step(self.server(id).await) {
                return r;
            }
            backoff.check(|| {
                format!(
                    "nova: server {id}: no {what} after {:?}",
                    self.opts.state_timeout
                )
            })?;
            backoff.pause().await;
        }
    }

    fn failed(s: &Server) -> Error {
        let msg = s
            .fault
            .as_ref()
            .map(|f| f.message.clone())
            .unwrap_or_else(|| "no fault given".into());
        instances::went_to(
            "server",
            &s.status,
            msg,
            format!("nova: build server {}", s.id),
        )
    }
}

#[async_trait]
impl Runtime for NovaRuntime {
    async fn start(&self, spec: &InstanceSpec) -> Result<Instance> {
        instances::check_spec(spec, "Nova")?;
        let mut volume_ids = BTreeMap::new();
        for mount in &spec.volumes {
            let id = self.cinder.ensure(spec, mount).await?;
            volume_ids.insert(mount.name.clone(), id);
        }
        let user_data = cloud_init(spec, &self.opts.engine, &volume_ids)?;
        let metadata = instances::stored_labels(spec);
        let networks = if self.opts.networks.is_empty() {
            json!("auto")
        } else {
            Value::Array(
                self.opts
                    .networks
                    .iter()
                    .map(|n| json!({ "uuid": n }))
                    .collect(),
            )
        };
        let mut server = json!({
            "name": spec.name,
            "imageRef": self.opts.image_id,
            "flavorRef": self.opts.flavor_id,
            "networks": networks,
            "metadata": metadata,
            "user_data": base64(user_data.as_bytes()),
        });
        if !self.opts.security_groups.is_empty() {
            server["security_groups"] = Value::Array(
                self.opts
                    .security_groups
                    .iter()
                    .map(|n| json!({ "name": n }))
                    .collect(),
            );
        }
        let what = format!("nova: create server {}", spec.name);
        let body = json!({ "server": server });
        let created: Value = self.api.post("/servers", &what, &body).await?;
        let id = created["server"]["id"]
            .as_str()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Backend,
                    format!("{what}: answer has no server.id"),
                )
                .with_backend(BACKEND)
            })?
            .to_owned();
        let active = self
            .poll(&id, "ACTIVE", |r| match r {
                Ok(s) if s.status == "ACTIVE" => Some(Ok(s)),
                Ok(s) if s.status == "ERROR" => Some(Err(Self::failed(&s))),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .await;
        let attached = match active {
            Ok(server) => {
                async {
                    for mount in &spec.volumes {
                        self.attach(&id, mount, &volume_ids[&mount.name]).await?;
                    }
                    Ok(server)
                }
                .await
            }
            Err(e) => Err(e),
        };
        let attached = instances::removed_on_error(attached, "nova", &id, self.remove(&id)).await;
        Ok(attached?.instance())
    }

    /// Detaches the server's volumes (waiting until they are `available`: they are
    /// the project's and stay), then deletes the server.
    async fn stop(&self, id: &InstanceId, _grace: Duration) -> Result<()> {
        self.remove(id.as_str()).await
    }

    async fn status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        let s = self.server(id.as_str()).await?;
        Ok(match s.status.as_str() {
            "BUILD" | "REBUILD" | "REBOOT" | "HARD_REBOOT" => InstanceStatus::Starting,
            "ACTIVE" => {
                crate::health::running_status(
                    &self.probe,
                    self.opts.probe_timeout,
                    s.address(),
                    s.port(),
                    Some(&s.metadata),
                )
                .await
            }
            "ERROR" => InstanceStatus::Exited {
                code: None,
                reason: s.fault.map(|f| f.message).unwrap_or_else(|| "error".into()),
            },
            other => InstanceStatus::Exited {
                code: None,
                reason: format!("server is {other}"),
            },
        })
    }

    async fn logs(
        &self,
        id: &InstanceId,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, Result<LogLine>>> {
        let what = format!("nova: console output of {id}");
        let mut action = json!({ "os-getConsoleOutput": {} });
        if let Some(n) = opts.tail {
            action["os-getConsoleOutput"]["length"] = json!(n);
        }
        let v: Value = self
            .api
            .post(&format!("/servers/{id}/action"), &what, &action)
            .await?;
        let text = v["output"].as_str().unwrap_or_default();
        let mut lines: Vec<&str> = text.lines().collect();
        if let Some(n) = opts.tail {
            lines = lines.split_off(lines.len().saturating_sub(n));
        }
        let lines: Vec<Result<LogLine>> = lines
            .into_iter()
            .map(|l| Ok(LogLine::new(LogStream::Stdout, l)))
            .collect();
        // Following is not offered by Nova's console API: the lines so far.
        Ok(stream::iter(lines).boxed())
    }

    async fn list(&self, labels: &Labels) -> Result<Vec<Instance>> {
        Ok(self
            .servers()
            .await?
            .into_iter()
            .filter(|s| s.status != "DELETED")
            .filter(|s| instances::has_labels(&s.metadata, labels))
            .map(|s| s.instance())
            .collect())
    }

    /// The project's Cinder volumes (by their Wharf metadata).
    async fn volumes(&self, project: &ProjectId, _wanted: &[VolumeRef]) -> Result<Vec<VolumeInfo>> {
        self.cinder.volumes(project).await
    }

    /// Deletes the project's Cinder volume: NotFound unless it is the project's,
    /// Conflict while it is attached.
    async fn remove_volume(&self, volume: &VolumeRef) -> Result<()> {
        self.cinder.remove(volume).await
    }
}
