//! [`Backups`]: taking, listing, restoring and pruning backups.

use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use wharf_core::store::Sealer;
use wharf_core::{DynRuntime, Error, ErrorKind, Result, VolumeRef};

use crate::destination::AllowedEndpoints;
use crate::pipe::{compress, decompress_file, hex};
use crate::records::{BackupId, BackupRecord, BackupState, Records, Settings, VolumePolicy};
use crate::source::{BackupSource, VolumeSource};

/// Takes, lists, restores and prunes the backups of every project.
///
/// Records live in an index file ([`Backups::open`]); objects and their manifests at
/// each project's [`Destination`](crate::Destination).
#[derive(Debug, Clone)]
pub struct Backups {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    runtime: DynRuntime,
    records: Records,
    sealer: Sealer,
    local_root: PathBuf,
    work_dir: PathBuf,
    endpoints: AllowedEndpoints,
    /// Targets a backup or a restore is running on.
    busy: BusySet,
}

/// A backup's or restore's target: project id, scope, name.
type TargetKey = (String, Option<String>, String);
/// The targets being backed up or restored.
type BusySet = Arc<std::sync::Mutex<std::collections::HashSet<TargetKey>>>;

/// A target marked busy until dropped.
struct Busy {
    set: BusySet,
    key: TargetKey,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// Which of one volume's backups (newest first) `policy` lets go at `now`: successful
/// scheduled ones that neither `keep_last` nor `keep_days` keeps (never the newest
/// successful one; backups taken on demand never), and failed ones older than the
/// oldest kept. Nothing while no successful
/// backup exists, or when the policy sets no limit.
fn expired(
    newest_first: &[BackupRecord],
    policy: &VolumePolicy,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<BackupId> {
    if policy.keep_last.is_none() && policy.keep_days.is_none() {
        return Vec::new();
    }
    let succeeded: Vec<&BackupRecord> = newest_first
        .iter()
        .filter(|r| r.state == BackupState::Succeeded && r.scheduled)
        .collect();
    let kept: Vec<&BackupRecord> = succeeded
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            *i == 0
                || policy.keep_last.is_some_and(|n| *i < n as usize)
                || policy
                    .keep_days
                    .is_some_and(|d| now - r.created_at < chrono::Duration::days(d.into()))
        })
        .map(|(_, r)| *r)
        .collect();
    let Some(oldest_kept) = kept.iter().map(|r| r.created_at).min() else {
        return Vec::new();
    };
    newest_first
        .iter()
        .filter(|r| match r.state {
            BackupState::Succeeded => r.scheduled && !kept.iter().any(|k| k.id == r.id),
            BackupState::Failed => r.created_at < oldest_kept,
            BackupState::Running => false,
        })
        .map(|r| r.id.clone())
        .collect()
}

/// The key of `volume`'s policy in [`Settings::volumes`]: its name for the project's
/// own volumes (network `wharf-<project>`), `<environment>/<name>` for an
/// environment's (network `wharf-<project>_<environment>`).
pub fn policy_key(project_name: &str, volume: &VolumeRef) -> String {
    let own = format!("wharf-{project_name}");
    match volume
        .scope
        .as_deref()
        .and_then(|s| s.strip_prefix(own.as_str()))
        .and_then(|rest| rest.strip_prefix('_'))
    {
        Some(env) => format!("{env}/{}", volume.name),
        None => volume.name.clone(),
    }
}

/// Splits a policy key into (environment, volume name), each checked.
pub fn policy_key_parts(key: &str) -> Result<(Option<&str>, &str)> {
    match key.split_once('/') {
        None => {
            wharf_core::validate_name(key)?;
            Ok((None, key))
        }
        Some((env, name)) => {
            wharf_core::validate_name(env)?;
            wharf_core::validate_name(name)?;
            Ok((Some(env), name))
        }
    }
}

/// A project id or scope safe in an object key: ASCII letters, digits, `-`, `_`.
fn key_part(kind: &str, text: &str) -> Result<()> {
    if text.is_empty()
        || text.len() > 128
        || !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::invalid(format!(
            "{kind} {text:?} cannot name a backup (ASCII letters, digits, - and _ only)"
        )));
    }
    Ok(())
}

fn object_err(e: object_store::Error, what: &str) -> Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => ErrorKind::NotFound,
        _ => ErrorKind::Unavailable,
    };
    Error::new(kind, format!("{what}: {e}")).with_backend("backup")
}

impl Backups {
    /// Backups of `runtime`'s volumes. `index`: the index file (`None`: memory only);
    /// `local_root`: where [`Destination::Local`](crate::Destination::Local) keeps each project's backups;
    /// `work_dir`: where restores download and check an object before touching a
    /// volume; `sealer` seals destinations' secrets at rest. Backups left running by
    /// a stopped server are marked failed.
    pub fn open(
        runtime: DynRuntime,
        index: Option<PathBuf>,
        local_root: PathBuf,
        work_dir: PathBuf,
        sealer: Sealer,
    ) -> Result<Self> {
        let records = Records::load(index)?;
        for mut r in records.running() {
            r.state = BackupState::Failed;
            r.error = Some("interrupted: the server stopped while it ran".into());
            r.finished_at = Some(chrono::Utc::now());
            records.put(&r)?;
        }
        Ok(Backups {
            inner: Arc::new(Inner {
                runtime,
                records,
                sealer,
                local_root,
                work_dir,
                endpoints: AllowedEndpoints::default(),
                busy: Default::default(),
            }),
        })
    }

    /// Marks `target` busy for one backup or restore at a time: a restore never runs
    /// beside another, nor a backup beside a restore (it would keep a half-restored
    /// volume as a good backup). Conflict while one runs.
    fn busy(&self, target: &VolumeRef) -> Result<Busy> {
        let key = (
            target.project.as_str().to_owned(),
            target.scope.clone(),
            target.name.clone(),
        );
        let mut set = self.inner.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(key.clone()) {
            return Err(Error::conflict(format!(
                "a backup or restore of {} is running: try again when it ends",
                target.name
            )));
        }
        Ok(Busy {
            set: self.inner.busy.clone(),
            key,
        })
    }

    /// Lets S3 destinations use these endpoints (by default only AWS S3 itself, which
    /// needs none). Call it before the first clone: it fails on a shared `Backups`.
    pub fn allow_endpoints(self, endpoints: AllowedEndpoints) -> Result<Self> {
        let mut inner = Arc::try_unwrap(self.inner).map_err(|_| {
            Error::internal("allow_endpoints must be called before Backups is shared")
        })?;
        inner.endpoints = endpoints;
        Ok(Backups {
            inner: Arc::new(inner),
        })
    }

    /// Sets (or with `None` clears) a project's settings; the destination is checked
    /// and its secret sealed before it is written.
    pub fn set_settings(&self, project_id: &str, settings: Option<Settings>) -> Result<()> {
        key_part("project", project_id)?;
        let sealed = match settings {
            Some(mut s) => {
                s.destination.validate()?;
                s.destination.check_endpoint(&self.inner.endpoints)?;
                for (name, p) in &s.volumes {
                    policy_key_parts(name)?;
                    if let Some(c) = &p.schedule {
                        crate::schedule::validate_cron(c)?;
                    }
                    if p.keep_last == Some(0) {
                        return Err(Error::invalid("keep_last must be at least 1"));
                    }
                    if p.keep_days == Some(0) {
                        return Err(Error::invalid("keep_days must be at least 1"));
                    }
                }
                s.destination = s.destination.sealed(&self.inner.sealer, project_id)?;
                Some(s)
            }
            None => None,
        };
        self.inner.records.set_settings(project_id, sealed)
    }

    /// A project's settings, the destination's secret opened (never show it: see
    /// [`Destination::view`](crate::Destination::view)).
    pub fn settings(&self, project_id: &str) -> Result<Option<Settings>> {
        match self.inner.records.settings(project_id) {
            None => Ok(None),
            Some(mut s) => {
                s.destination = s.destination.opened(&self.inner.sealer, project_id)?;
                Ok(Some(s))
            }
        }
    }

    /// Every project with settings (for the scheduler).
    pub(crate) fn projects_with_settings(&self) -> Vec<(String, Settings)> {
        self.inner.records.all_settings()
    }

    /// A project's backups, newest first.
    pub fn list(&self, project_id: &str) -> Vec<BackupRecord> {
        self.inner.records.of_project(project_id)
    }

    /// One backup.
    pub fn get(&self, id: &BackupId) -> Result<BackupRecord> {
        self.inner
            .records
            .get(id)
            .ok_or_else(|| Error::not_found(format!("no backup {id}")))
    }

    fn destination(&self, project_id: &str) -> Result<(Arc<dyn ObjectStore>, String, Settings)> {
        let settings = self.settings(project_id)?.ok_or_else(|| {
            Error::invalid("the project has no backup destination: set one first")
        })?;
        // Checked again here: the operator may have narrowed the list since.
        settings.destination.check_endpoint(&self.inner.endpoints)?;
        let (store, prefix) = settings
            .destination
            .open(&self.inner.local_root, project_id)?;
        Ok((store, prefix, settings))
    }

    /// Backs up `volume` of project `project_name` now and returns its record:
    /// succeeded, or failed with the error (a failure is recorded, never reported
    /// as success). Err only when nothing could be recorded (bad input, no
    /// destination set).
    pub async fn backup_volume(
        &self,
        project_name: &str,
        volume: &VolumeRef,
    ) -> Result<BackupRecord> {
        let source = VolumeSource {
            runtime: self.inner.runtime.clone(),
            volume: volume.clone(),
        };
        self.backup_with(project_name, volume, &source).await
    }

    /// Backs up `source` (a database dump, say) now, recorded under `target`'s
    /// project, scope and name (the database's), as [`Backups::backup_volume`] does.
    pub async fn backup_with(
        &self,
        project_name: &str,
        target: &VolumeRef,
        source: &dyn BackupSource,
    ) -> Result<BackupRecord> {
        self.take_backup(project_name, target, source, false).await
    }

    /// Backs up `volume` as the schedule does: the backup counts for retention
    /// (see [`VolumePolicy`]), which then runs.
    pub async fn backup_volume_scheduled(
        &self,
        project_name: &str,
        volume: &VolumeRef,
    ) -> Result<BackupRecord> {
        let source = VolumeSource {
            runtime: self.inner.runtime.clone(),
            volume: volume.clone(),
        };
        self.take_backup(project_name, volume, &source, true).await
    }

    async fn take_backup(
        &self,
        project_name: &str,
        target: &VolumeRef,
        source: &dyn BackupSource,
        scheduled: bool,
    ) -> Result<BackupRecord> {
        let volume = target;
        let _busy = self.busy(target)?;
        let project_id = volume.project.as_str().to_owned();
        key_part("project", &project_id)?;
        wharf_core::validate_name(&volume.name)?;
        let scope = volume.scope.clone().unwrap_or_else(|| "_".into());
        key_part("scope", &scope)?;
        let (store, prefix, settings) = self.destination(&project_id)?;
        let id = BackupId::new();
        let mut record = BackupRecord {
            id: id.clone(),
            project_id: project_id.clone(),
            project: project_name.to_owned(),
            scope: volume.scope.clone(),
            volume: volume.name.clone(),
            source: source.kind(),
            created_at: chrono::Utc::now(),
            finished_at: None,
            state: BackupState::Running,
            error: None,
            size_bytes: None,
            content_bytes: None,
            sha256: None,
            key: format!(
                "{prefix}{scope}/{}/{id}.{}.gz",
                volume.name,
                source.kind().extension()
            ),
            compression: "gzip".into(),
            scheduled,
        };
        self.inner.records.put(&record)?;
        match take(source, store.as_ref(), &record.key).await {
            Ok(c) => {
                record.size_bytes = Some(c.size);
                record.content_bytes = Some(c.content_size);
                record.sha256 = Some(c.sha256);
                record.state = BackupState::Succeeded;
                record.finished_at = Some(chrono::Utc::now());
                if let Err(e) = put_manifest(store.as_ref(), &record).await {
                    record.state = BackupState::Failed;
                    record.error = Some(e.to_string());
                }
            }
            Err(e) => {
                record.state = BackupState::Failed;
                record.error = Some(e.to_string());
                record.finished_at = Some(chrono::Utc::now());
                // Whatever part of the object got there is not a backup.
                let _ = store.delete(&ObjectPath::from(record.key.as_str())).await;
            }
        }
        self.inner.records.put(&record)?;
        match record.state {
            BackupState::Succeeded => {
                tracing::info!(project = %project_name, volume = %volume.name, backup = %id, bytes = ?record.size_bytes, "backup succeeded");
                let policy = settings.volumes.get(&policy_key(project_name, volume));
                if let Some(policy) = policy.filter(|_| scheduled) {
                    if let Err(e) = self.prune(volume, source.kind(), policy).await {
                        tracing::warn!(volume = %volume.name, error = %e, "retention could not delete old backups");
                    }
                }
            }
            _ => {
                tracing::warn!(project = %project_name, volume = %volume.name, backup = %id, error = ?record.error, "backup failed")
            }
        }
        Ok(record)
    }

    /// Applies `policy`'s retention to `volume`'s backups of `kind` (see [`VolumePolicy`]):
    /// deletes the objects, manifests and records of the successful backups it does
    /// not keep, and of failed ones older than the oldest kept. Returns what it deleted.
    pub async fn prune(
        &self,
        volume: &VolumeRef,
        kind: crate::SourceKind,
        policy: &VolumePolicy,
    ) -> Result<Vec<BackupId>> {
        let project_id = volume.project.as_str();
        let (store, _, _) = self.destination(project_id)?;
        // One kind at a time: a database's dumps never count against (or push out)
        // the backups of a volume of the same name.
        let of_volume: Vec<BackupRecord> = self
            .list(project_id)
            .into_iter()
            .filter(|r| r.volume == volume.name && r.scope == volume.scope && r.source == kind)
            .collect();
        let doomed = expired(&of_volume, policy, chrono::Utc::now());
        let mut deleted = Vec::new();
        for r in of_volume.iter().filter(|r| doomed.contains(&r.id)) {
            for key in [r.key.clone(), format!("{}.json", r.key)] {
                match store.delete(&ObjectPath::from(key.as_str())).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(object_err(e, &format!("delete {key}"))),
                }
            }
            self.inner.records.remove(&r.id)?;
            deleted.push(r.id.clone());
        }
        Ok(deleted)
    }

    /// Restores backup `id` into `into` (its own volume or another of the same
    /// project). The object is downloaded and its sha256 checked against the record
    /// and the manifest at the destination before the volume is touched: a mismatch
    /// fails the restore and leaves the volume as it was. The caller makes sure no
    /// live service mounts `into` (runtimes refuse where they can tell).
    pub async fn restore(&self, id: &BackupId, into: &VolumeRef) -> Result<()> {
        let source = VolumeSource {
            runtime: self.inner.runtime.clone(),
            volume: into.clone(),
        };
        self.restore_with(id, into, &source).await
    }

    /// Restores backup `id` through `source` (a database's restore command, say),
    /// checked as [`Backups::restore`] does; `into` names the project, scope and
    /// name restored into. The backup must be of `source`'s kind.
    pub async fn restore_with(
        &self,
        id: &BackupId,
        into: &VolumeRef,
        source: &dyn BackupSource,
    ) -> Result<()> {
        let _busy = self.busy(into)?;
        let record = self.get(id)?;
        if record.source != source.kind() {
            return Err(Error::invalid(format!(
                "backup {id} holds a {} backup: it cannot be restored as a {}",
                record.source.as_str(),
                source.kind().as_str()
            )));
        }
        if record.state != BackupState::Succeeded {
            return Err(Error::conflict(format!(
                "backup {id} is {:?}: only a succeeded backup can be restored",
                record.state
            )));
        }
        if into.project.as_str() != record.project_id {
            return Err(Error::invalid(
                "a backup restores into its own project only",
            ));
        }
        wharf_core::validate_name(&into.name)?;
        let want = record.sha256.clone().unwrap_or_default();
        let (store, _, _) = self.destination(&record.project_id)?;
        let manifest = store
            .get(&ObjectPath::from(format!("{}.json", record.key).as_str()))
            .await
            .map_err(|e| object_err(e, "read the backup's manifest"))?
            .bytes()
            .await
            .map_err(|e| object_err(e, "read the backup's manifest"))?;
        let manifest: BackupRecord = serde_json::from_slice(&manifest)
            .map_err(|e| Error::invalid(format!("the backup's manifest is not valid: {e}")))?;
        if manifest.sha256.as_deref() != Some(want.as_str()) || manifest.id != record.id {
            return Err(Error::conflict(format!(
                "backup {id}: the manifest at the destination does not match the record; \
                 the volume was not touched"
            )));
        }
        tokio::fs::create_dir_all(&self.inner.work_dir).await?;
        let tmp = self
            .inner
            .work_dir
            .join(format!("restore-{}.tar.gz", BackupId::new()));
        let result = async {
            let got = download(store.as_ref(), &record.key, &tmp).await?;
            if got != want {
                return Err(Error::conflict(format!(
                    "backup {id} is corrupt: sha256 {got} at the destination, {want} when it \
                     was taken; the volume was not touched"
                )));
            }
            source.write(decompress_file(tmp.clone())).await
        }
        .await;
        let _ = tokio::fs::remove_file(&tmp).await;
        result?;
        tracing::info!(backup = %id, volume = %into.name, "restored a backup, as asked");
        Ok(())
    }
}

/// Streams `source` compressed to `key`: returns size and checksum of what was
/// stored.
async fn take(
    source: &dyn BackupSource,
    store: &dyn ObjectStore,
    key: &str,
) -> Result<crate::pipe::Compressed> {
    let data = source.read().await?;
    let (mut chunks, done) = compress(data);
    let upload = store
        .put_multipart(&ObjectPath::from(key))
        .await
        .map_err(|e| object_err(e, "start the upload"))?;
    let mut up = WriteMultipart::new(upload);
    let mut failed: Option<Error> = None;
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(c) => {
                if let Err(e) = up.wait_for_capacity(4).await {
                    failed = Some(object_err(e, "upload"));
                    break;
                }
                up.write(&c);
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(chunks);
    let compressed = done
        .await
        .map_err(|e| Error::internal(format!("compression stopped: {e}")));
    if let Some(e) = failed {
        let _ = up.abort().await;
        return Err(e);
    }
    let compressed = match compressed {
        Ok(Ok(c)) => c,
        Ok(Err(e)) | Err(e) => {
            let _ = up.abort().await;
            return Err(e);
        }
    };
    up.finish()
        .await
        .map_err(|e| object_err(e, "finish the upload"))?;
    Ok(compressed)
}

async fn put_manifest(store: &dyn ObjectStore, record: &BackupRecord) -> Result<()> {
    let json =
        serde_json::to_vec_pretty(record).map_err(|e| Error::internal(format!("manifest: {e}")))?;
    store
        .put(
            &ObjectPath::from(format!("{}.json", record.key).as_str()),
            PutPayload::from(json),
        )
        .await
        .map(drop)
        .map_err(|e| object_err(e, "write the manifest"))
}

/// Downloads `key` to `file`, returning its hex sha256.
async fn download(store: &dyn ObjectStore, key: &str, file: &std::path::Path) -> Result<String> {
    let got = store
        .get(&ObjectPath::from(key))
        .await
        .map_err(|e| object_err(e, &format!("read {key}")))?;
    let mut stream = got.into_stream();
    let mut out = tokio::fs::File::create(file).await?;
    let mut hash = Sha256::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| object_err(e, &format!("read {key}")))?;
        hash.update(&chunk);
        out.write_all(&chunk).await?;
    }
    out.flush().await?;
    Ok(hex(&hash.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Duration, Utc};

    fn at(days_ago: i64, state: BackupState, now: DateTime<Utc>) -> BackupRecord {
        BackupRecord {
            id: BackupId::new(),
            project_id: "p".into(),
            project: "p".into(),
            scope: None,
            volume: "data".into(),
            source: crate::source::SourceKind::Volume,
            created_at: now - Duration::days(days_ago),
            finished_at: None,
            state,
            error: None,
            size_bytes: None,
            content_bytes: None,
            sha256: None,
            key: "k".into(),
            compression: "gzip".into(),
            scheduled: true,
        }
    }

    fn policy(keep_last: Option<u32>, keep_days: Option<u32>) -> VolumePolicy {
        VolumePolicy {
            schedule: None,
            keep_last,
            keep_days,
        }
    }

    /// Indexes (into the newest-first list) of what retention deletes.
    fn gone(list: &[BackupRecord], p: &VolumePolicy, now: DateTime<Utc>) -> Vec<usize> {
        let ids = expired(list, p, now);
        (0..list.len())
            .filter(|i| ids.contains(&list[*i].id))
            .collect()
    }

    #[test]
    fn policy_keys_name_the_environment_of_a_volume() {
        let v = |scope: Option<&str>| VolumeRef {
            project: wharf_core::ProjectId("prj1".into()),
            scope: scope.map(str::to_owned),
            name: "data".into(),
        };
        assert_eq!(policy_key("shop", &v(Some("wharf-shop"))), "data");
        assert_eq!(policy_key("shop", &v(None)), "data");
        assert_eq!(
            policy_key("shop", &v(Some("wharf-shop_staging"))),
            "staging/data"
        );
        // Another project's network whose name starts the same is not an environment.
        assert_eq!(policy_key("shop", &v(Some("wharf-shopfront"))), "data");
        assert_eq!(
            policy_key_parts("staging/data").unwrap(),
            (Some("staging"), "data")
        );
        assert_eq!(policy_key_parts("data").unwrap(), (None, "data"));
        for bad in ["a/b/c", "/data", "staging/", "Data", "a b"] {
            assert!(policy_key_parts(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retention_by_count_by_age_and_by_either() {
        let now = Utc::now();
        use BackupState::*;
        // Newest first: 0 d, 1 d (failed), 2 d, 5 d, 9 d, 20 d (failed), 30 d.
        let list = [
            at(0, Succeeded, now),
            at(1, Failed, now),
            at(2, Succeeded, now),
            at(5, Succeeded, now),
            at(9, Succeeded, now),
            at(20, Failed, now),
            at(30, Succeeded, now),
        ];
        assert!(gone(&list, &policy(None, None), now).is_empty());
        assert_eq!(gone(&list, &policy(Some(2), None), now), vec![3, 4, 5, 6]);
        assert_eq!(gone(&list, &policy(None, Some(7)), now), vec![4, 5, 6]);
        // Either limit keeps: the last 4 reach back to 9 days, further than 7 days.
        assert_eq!(gone(&list, &policy(Some(4), Some(7)), now), vec![5, 6]);
        assert_eq!(gone(&list, &policy(Some(1), Some(7)), now), vec![4, 5, 6]);
    }

    #[test]
    fn one_backup_or_restore_of_a_target_at_a_time() {
        let dir = std::env::temp_dir();
        let b = Backups::open(
            Arc::new(wharf_core::memory::MemoryRuntime::new()),
            None,
            dir.clone(),
            dir,
            Sealer::new(&[3u8; 32]),
        )
        .unwrap();
        let v = |name: &str, scope: &str| VolumeRef {
            project: wharf_core::ProjectId("prj1".into()),
            scope: Some(scope.into()),
            name: name.into(),
        };
        let first = b.busy(&v("data", "wharf-shop")).unwrap();
        let e = b.busy(&v("data", "wharf-shop")).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
        // Another volume, or the same name in another scope, is not held up.
        let _other = b.busy(&v("cache", "wharf-shop")).unwrap();
        let _env = b.busy(&v("data", "wharf-shop_staging")).unwrap();
        drop(first);
        b.busy(&v("data", "wharf-shop")).unwrap();
    }

    #[test]
    fn backups_taken_on_demand_neither_count_nor_go() {
        let now = Utc::now();
        let manual = |days| BackupRecord {
            scheduled: false,
            ..at(days, BackupState::Succeeded, now)
        };
        // Newest first: five on-demand backups (a developer pressing Back up now over
        // corrupted data), then the scheduled ones.
        let mut list: Vec<BackupRecord> = (0..5).map(|_| manual(0)).collect();
        list.push(at(1, BackupState::Succeeded, now));
        list.push(at(2, BackupState::Succeeded, now));
        list.push(at(3, BackupState::Succeeded, now));
        list.push(manual(40));
        assert_eq!(gone(&list, &policy(Some(2), None), now), vec![7]);
        assert_eq!(gone(&list, &policy(None, Some(1)), now), vec![6, 7]);
    }

    #[test]
    fn the_newest_successful_backup_outlives_any_age_limit() {
        let now = Utc::now();
        let list = [
            at(3, BackupState::Failed, now),
            at(40, BackupState::Succeeded, now),
            at(50, BackupState::Succeeded, now),
        ];
        // A schedule that stopped working must not leave the volume with no backup.
        assert_eq!(gone(&list, &policy(None, Some(7)), now), vec![2]);
        let failed_only = [at(40, BackupState::Failed, now)];
        assert!(gone(&failed_only, &policy(Some(1), Some(1)), now).is_empty());
    }
}
