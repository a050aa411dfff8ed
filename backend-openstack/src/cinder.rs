//! Project volumes on Cinder (the block-storage v3 API, catalog type `block-storage`,
//! or `volumev3` on older clouds), shared by the Nova and Zun runtimes.
//!
//! A Wharf volume belongs to a project and a scope (the instances' network), never to
//! an instance: it is found by its Cinder metadata (`wharf.managed`, `wharf.project`,
//! `wharf.volume-scope`, `wharf.volume`), made on the first start that mounts it,
//! outlives every instance and is deleted only by [`wharf_core::Runtime::remove_volume`].
//! Cinder names are not unique, so the metadata, not the name, says which volume is
//! which; the name (`<scope>.<volume>`, or `wharf-<volume>` without a scope) is for
//! people reading the cloud's console.
//!
//! A Cinder volume is attached to one server (or Zun host) at a time: a start that
//! finds its volume `in-use` fails with a Conflict naming it, so there is never a
//! second writer.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use wharf_core::{
    label, parse_size, Error, ErrorKind, InstanceSpec, Labels, ProjectId, Result, VolumeInfo,
    VolumeMount, VolumeRef,
};

use crate::http::{self, BACKEND};
use crate::instances::{self, Backoff};
use crate::keystone::Session;

/// The catalog types Cinder v3 is found under, in the order they are tried.
pub const SERVICE_TYPES: [&str; 2] = ["block-storage", "volumev3"];

/// The block-storage microversion sent as `OpenStack-API-Version: volume <v>`
/// (3.27: the attachments API Nova and Zun use, and metadata filters on listings).
pub const MICROVERSION: &str = "3.27";

/// A volume's size in GiB (what Cinder allocates in): `size` rounded up, 1 when no
/// size is asked for.
pub fn size_gib(size: Option<&str>) -> Result<u64> {
    match size {
        None => Ok(1),
        Some(s) => Ok(parse_size(s)?.div_ceil(1 << 30).max(1)),
    }
}

/// A volume's Cinder name: `<scope>.<volume>`, or `wharf-<volume>` without a scope
/// (the Docker backend's volume names, so an operator recognises them).
pub fn volume_name(scope: Option<&str>, volume: &str) -> String {
    match scope {
        Some(s) => format!("{s}.{volume}"),
        None => format!("wharf-{volume}"),
    }
}

/// The Cinder metadata that marks `volume` as Wharf's.
pub fn volume_metadata(volume: &VolumeRef) -> Labels {
    let mut m = Labels::new();
    m.insert(label::MANAGED.into(), "true".into());
    m.insert(label::PROJECT.into(), volume.project.as_str().to_owned());
    m.insert(label::VOLUME.into(), volume.name.clone());
    if let Some(scope) = &volume.scope {
        m.insert(label::VOLUME_SCOPE.into(), scope.clone());
    }
    m
}

/// The volume `mount` of `spec` refers to: the spec's project (its `wharf.project`
/// label), scoped by its network. InvalidInput without a project: a volume must
/// belong to one.
pub fn volume_ref(spec: &InstanceSpec, mount: &VolumeMount) -> Result<VolumeRef> {
    let project = spec.labels.get(label::PROJECT).ok_or_else(|| {
        Error::invalid(format!(
            "instance {}: volume {} needs the instance's {} label (volumes belong to a project)",
            spec.name,
            mount.name,
            label::PROJECT
        ))
        .with_backend(BACKEND)
    })?;
    Ok(VolumeRef {
        project: ProjectId(project.clone()),
        scope: spec.network.clone(),
        name: mount.name.clone(),
    })
}

/// A volume as Cinder describes it (the fields Wharf reads).
#[derive(Debug, Clone, Deserialize)]
pub struct CinderVolume {
    /// Its id.
    pub id: String,
    /// Its name.
    #[serde(default)]
    pub name: Option<String>,
    /// `creating`, `available`, `reserved`, `attaching`, `in-use`, `detaching`,
    /// `deleting`, `error`, ...
    #[serde(default)]
    pub status: String,
    /// Its size in GiB.
    #[serde(default)]
    pub size: u64,
    /// Its metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Where it is attached.
    #[serde(default)]
    pub attachments: Vec<CinderAttachment>,
    /// When it was made (ISO 8601).
    #[serde(default)]
    pub created_at: Option<String>,
}

/// One attachment of a volume.
#[derive(Debug, Clone, Deserialize)]
pub struct CinderAttachment {
    /// The server it is attached to (Nova).
    #[serde(default)]
    pub server_id: Option<String>,
    /// The host it is attached to (Zun).
    #[serde(default)]
    pub host_name: Option<String>,
    /// The device it shows as in the guest (`/dev/vdb`).
    #[serde(default)]
    pub device: Option<String>,
}

impl CinderVolume {
    /// Whether its metadata says it is `volume`.
    fn is(&self, volume: &VolumeRef) -> bool {
        let m = &self.metadata;
        m.get(label::MANAGED).map(String::as_str) == Some("true")
            && m.get(label::PROJECT).map(String::as_str) == Some(volume.project.as_str())
            && m.get(label::VOLUME) == Some(&volume.name)
            && m.get(label::VOLUME_SCOPE) == volume.scope.as_ref()
    }

    /// Who holds it, for error messages.
    fn holder(&self) -> String {
        let held: Vec<&str> = self
            .attachments
            .iter()
            .filter_map(|a| a.server_id.as_deref().or(a.host_name.as_deref()))
            .collect();
        if held.is_empty() {
            "another instance".into()
        } else {
            held.join(", ")
        }
    }
}

/// How long and how often volume states are polled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Polling {
    pub(crate) timeout: Duration,
    pub(crate) min: Duration,
    pub(crate) max: Duration,
}

/// A Cinder v3 client for Wharf's project volumes.
#[derive(Debug, Clone)]
pub(crate) struct Cinder {
    session: Session,
    polling: Polling,
}

impl Cinder {
    /// A client reaching Cinder through `session`, polling states per `polling`.
    pub(crate) fn new(session: Session, polling: Polling) -> Self {
        Cinder { session, polling }
    }

    /// The project's endpoint: the catalog's `block-storage` (else `volumev3`) URL,
    /// with the token's project id appended unless the URL already ends with it
    /// (catalogs list `.../v3/%(project_id)s`, which Keystone fills in, or `.../v3`).
    async fn base(&self) -> Result<String> {
        let mut found = None;
        for t in SERVICE_TYPES {
            match self.session.endpoint(t).await {
                Ok(url) => {
                    found = Some(url);
                    break;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        let url = found.ok_or_else(|| {
            Error::unsupported(
                "volumes on OpenStack need Cinder: no block-storage (or volumev3) endpoint \
                 in the catalog",
            )
            .with_backend(BACKEND)
        })?;
        let project = self.session.token().await?.project_id.unwrap_or_default();
        Ok(project_url(&url, &project))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        what: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response> {
        let url = format!("{}{path}", self.base().await?);
        let version = format!("volume {MICROVERSION}");
        self.session
            .request(method, &url, what, |rb| {
                let rb = rb.header("OpenStack-API-Version", &version);
                match body {
                    Some(b) => rb.json(b),
                    None => rb,
                }
            })
            .await
    }

    /// The volume `id`, or NotFound.
    pub(crate) async fn get(&self, id: &str) -> Result<CinderVolume> {
        #[derive(Deserialize)]
        struct One {
            volume: CinderVolume,
        }
        let what = format!("cinder: show volume {id}");
        let resp = self
            .call(Method::GET, &format!("/volumes/{id}"), &what, None)
            .await?;
        let one: One = http::json(http::check(resp, &what).await?, &what).await?;
        Ok(one.volume)
    }

    /// The volumes whose metadata holds all of `metadata` (asked of Cinder as a
    /// filter, and checked again here), following pagination.
    pub(crate) async fn list(&self, metadata: &Labels) -> Result<Vec<CinderVolume>> {
        #[derive(Deserialize)]
        struct Page {
            volumes: Vec<CinderVolume>,
            #[serde(default)]
            volumes_links: Vec<Link>,
        }
        #[derive(Deserialize)]
        struct Link {
            rel: String,
            href: String,
        }
        const WHAT: &str = "cinder: list volumes";
        let filter = serde_json::to_string(metadata)?;
        let first = format!("/volumes/detail?metadata={}", query_escape(&filter));
        let all = instances::all_pages(&first, "/volumes", |path| async move {
            let resp = self.call(Method::GET, &path, WHAT, None).await?;
            let page: Page = http::json(http::check(resp, WHAT).await?, WHAT).await?;
            let next = page.volumes_links.into_iter().find(|l| l.rel == "next");
            Ok((page.volumes, next.map(|l| l.href)))
        })
        .await?;
        Ok(all
            .into_iter()
            .filter(|v| instances::has_labels(&v.metadata, metadata))
            .collect())
    }

    /// Creates a volume of `size` GiB.
    async fn create(&self, name: &str, size: u64, metadata: &Labels) -> Result<CinderVolume> {
        #[derive(Deserialize)]
        struct One {
            volume: CinderVolume,
        }
        let what = format!("cinder: create volume {name}");
        let body = json!({ "volume": {
            "name": name,
            "size": size,
            "description": "Wharf project volume: deleted only by `wharf volumes rm`",
            "metadata": metadata,
        }});
        let resp = self
            .call(Method::POST, "/volumes", &what, Some(&body))
            .await?;
        let one: One = http::json(http::check(resp, &what).await?, &what).await?;
        Ok(one.volume)
    }

    /// Deletes the volume `id` (Cinder refuses one that is not `available` or `error`).
    async fn delete(&self, id: &str, what: &str) -> Result<()> {
        let resp = self
            .call(Method::DELETE, &format!("/volumes/{id}"), what, None)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        http::check(resp, what).await.map(drop)
    }

    /// Polls the volume `id` until `done` says so; `error` (and `error_*`) states
    /// fail, and so does a wait longer than the polling timeout.
    pub(crate) async fn wait(
        &self,
        id: &str,
        wanted: &str,
        done: impl Fn(&CinderVolume) -> bool,
    ) -> Result<CinderVolume> {
        let p = self.polling;
        let mut backoff = Backoff::new(p.timeout, p.min, p.max);
        loop {
            let v = self.get(id).await?;
            if done(&v) {
                return Ok(v);
            }
            if v.status.starts_with("error") {
                return Err(Error::new(
                    ErrorKind::Backend,
                    format!(
                        "cinder: volume {id} went to {} waiting for {wanted}",
                        v.status
                    ),
                )
                .with_backend(BACKEND));
            }
            backoff.check(|| {
                format!(
                    "cinder: volume {id} still {} after {:?} waiting for {wanted}",
                    v.status, p.timeout
                )
            })?;
            backoff.pause().await;
        }
    }

    /// Waits until the volume `id` is `available` (detached); gone counts as done.
    pub(crate) async fn wait_available(&self, id: &str) -> Result<()> {
        match self
            .wait(id, "available", |v| v.status == "available")
            .await
        {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            r => r.map(drop),
        }
    }

    /// The Cinder volume holding `volume`, if any (the oldest, should a race have
    /// made two).
    pub(crate) async fn find(&self, volume: &VolumeRef) -> Result<Option<CinderVolume>> {
        let mut found: Vec<CinderVolume> = self
            .list(&volume_metadata(volume))
            .await?
            .into_iter()
            .filter(|v| v.is(volume) && v.status != "deleting")
            .collect();
        found.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        Ok(found.into_iter().next())
    }

    /// The `available` Cinder volume to attach for `mount` of `spec`: the project's
    /// existing one (waited out of `creating` or `detaching`), else a new one of the
    /// mount's size. Conflict when it is attached elsewhere (one writer at a time).
    pub(crate) async fn ensure(&self, spec: &InstanceSpec, mount: &VolumeMount) -> Result<String> {
        let wanted = volume_ref(spec, mount)?;
        let size = size_gib(mount.size.as_deref())?;
        let v = match self.find(&wanted).await? {
            Some(v) => v,
            None => {
                let name = volume_name(wanted.scope.as_deref(), &wanted.name);
                let v = self.create(&name, size, &volume_metadata(&wanted)).await?;
                tracing::info!(volume = %v.id, %name, size, "cinder: created a project volume");
                v
            }
        };
        if matches!(v.status.as_str(), "in-use" | "reserved" | "attaching") {
            return Err(Error::conflict(format!(
                "volume {} (Cinder {}) is {} by {}: a volume has one writer, stop that \
                 instance first",
                mount.name,
                v.id,
                v.status,
                v.holder()
            ))
            .with_backend(BACKEND));
        }
        self.wait(&v.id, "available", |v| v.status == "available")
            .await
            .map(|v| v.id)
    }

    /// `refusal` of a create that mounts `ids` (the Cinder volumes of `mounts`, in
    /// order) as a Conflict naming the first that is no longer `available` (another
    /// instance took it since [`Cinder::ensure`]), else unchanged.
    pub(crate) async fn explain_refusal(
        &self,
        mounts: &[VolumeMount],
        ids: &[String],
        refusal: Error,
    ) -> Error {
        for (mount, id) in mounts.iter().zip(ids) {
            match self.get(id).await {
                Ok(v) if v.status != "available" => {
                    return Error::conflict(format!(
                        "volume {} (Cinder {id}) is {} by {}: a volume has one writer",
                        mount.name,
                        v.status,
                        v.holder()
                    ))
                    .with_backend(BACKEND)
                    .with_source(refusal);
                }
                _ => {}
            }
        }
        refusal
    }

    /// The project's volumes: every one its metadata gives to `project`, plus those
    /// of `wanted` (found the same way: there is no other naming to fall back on).
    pub(crate) async fn volumes(&self, project: &ProjectId) -> Result<Vec<VolumeInfo>> {
        let filter: Labels = [
            (label::MANAGED.to_owned(), "true".to_owned()),
            (label::PROJECT.to_owned(), project.as_str().to_owned()),
        ]
        .into();
        let mut found = self.list(&filter).await?;
        // Oldest first, so a duplicate from a race reports the volume `find` uses.
        found.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        let mut out: Vec<VolumeInfo> = found
            .into_iter()
            .filter(|v| v.status != "deleting")
            .filter_map(|v| {
                Some(VolumeInfo {
                    volume: VolumeRef {
                        project: project.clone(),
                        scope: v.metadata.get(label::VOLUME_SCOPE).cloned(),
                        name: v.metadata.get(label::VOLUME)?.clone(),
                    },
                    runtime_name: v.id,
                    size_bytes: Some(v.size << 30),
                })
            })
            .collect();
        // A stable sort keeps the oldest first among namesakes, which dedup keeps.
        out.sort_by(|a, b| a.volume.cmp(&b.volume));
        out.dedup_by(|a, b| a.volume == b.volume);
        Ok(out)
    }

    /// Deletes `volume` and its data: NotFound unless the project has it, Conflict
    /// while it is attached (or on its way to or from an attachment).
    pub(crate) async fn remove(&self, volume: &VolumeRef) -> Result<()> {
        let Some(v) = self.find(volume).await? else {
            return Err(Error::not_found(format!(
                "project {} has no volume {} here",
                volume.project, volume.name
            ))
            .with_backend(BACKEND));
        };
        if !matches!(v.status.as_str(), "available" | "error") {
            return Err(Error::conflict(format!(
                "volume {} (Cinder {}) is {} (held by {}): stop the services that mount it \
                 first",
                volume.name,
                v.id,
                v.status,
                v.holder()
            ))
            .with_backend(BACKEND));
        }
        let what = format!("cinder: delete volume {}", v.id);
        self.delete(&v.id, &what).await.map_err(|e| {
            // Cinder answers 400 when the volume was attached in the meantime.
            if e.kind() == ErrorKind::InvalidInput {
                Error::conflict(format!("volume {}: {}", volume.name, e.message()))
                    .with_backend(BACKEND)
            } else {
                e
            }
        })?;
        tracing::info!(volume = %v.id, name = %volume.name, "cinder: removed a volume and its data, as asked");
        Ok(())
    }
}

/// `url` with `project` appended, unless it ends with it already.
fn project_url(url: &str, project: &str) -> String {
    let url = url.trim_end_matches('/');
    if project.is_empty() || url.ends_with(&format!("/{project}")) {
        url.to_owned()
    } else {
        format!("{url}/{project}")
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_to_whole_gib() {
        assert_eq!(size_gib(None).unwrap(), 1);
        assert_eq!(size_gib(Some("500Mi")).unwrap(), 1);
        assert_eq!(size_gib(Some("1Gi")).unwrap(), 1);
        assert_eq!(size_gib(Some("1025Mi")).unwrap(), 2);
        assert_eq!(size_gib(Some("10Gi")).unwrap(), 10);
        assert_eq!(size_gib(Some("1Ti")).unwrap(), 1024);
        assert!(size_gib(Some("10GB")).is_err());
    }

    #[test]
    fn the_project_id_is_appended_once() {
        assert_eq!(project_url("http://c/v3", "p1"), "http://c/v3/p1");
        assert_eq!(project_url("http://c/v3/p1/", "p1"), "http://c/v3/p1");
        assert_eq!(project_url("http://c/v3", ""), "http://c/v3");
    }

    #[test]
    fn metadata_filters_are_escaped() {
        assert_eq!(
            query_escape(r#"{"a.b":"c d"}"#),
            "%7B%22a.b%22%3A%22c%20d%22%7D"
        );
    }

    #[test]
    fn a_volume_is_matched_by_project_scope_and_name() {
        let r = VolumeRef {
            project: ProjectId("shop".into()),
            scope: Some("wharf-shop".into()),
            name: "data".into(),
        };
        let mut v = CinderVolume {
            id: "v1".into(),
            name: None,
            status: "available".into(),
            size: 1,
            metadata: volume_metadata(&r),
            attachments: vec![],
            created_at: None,
        };
        assert!(v.is(&r));
        let unscoped = VolumeRef {
            scope: None,
            ..r.clone()
        };
        assert!(!v.is(&unscoped));
        v.metadata.insert(label::PROJECT.into(), "other".into());
        assert!(!v.is(&r));
        assert_eq!(
            volume_name(Some("wharf-shop_dev"), "data"),
            "wharf-shop_dev.data"
        );
        assert_eq!(volume_name(None, "data"), "wharf-data");
    }
}
