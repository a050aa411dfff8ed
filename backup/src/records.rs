//! The backup index: one JSON file in the server's data folder (`backups.json`,
//! mode 0600, replaced atomically) holding each project's backup settings (the
//! destination's secret sealed) and every backup's record.
//!
//! Why here and not only at the destination: a backup that fails because its
//! destination is unreachable or refuses the credentials must still be recorded as
//! failed, with its error, where the API lists it; and the state of a running backup
//! is known before anything reaches the destination. Each object still gets its
//! manifest beside it at the destination, so a bucket stays readable (and a restore
//! is checked against it) without this file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use wharf_core::{Error, Result};

use crate::destination::Destination;
use crate::source::SourceKind;

/// A backup's id (32 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BackupId(pub String);

impl BackupId {
    /// A new random id.
    pub fn new() -> Self {
        BackupId(uuid::Uuid::new_v4().simple().to_string())
    }
    /// Parses an id given by a caller (it reaches object keys).
    pub fn parse(s: &str) -> Result<Self> {
        if s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            Ok(BackupId(s.to_owned()))
        } else {
            Err(Error::invalid(format!("{s:?} is not a backup id")))
        }
    }
}

impl Default for BackupId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for BackupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a backup stands. Only [`BackupState::Succeeded`] backups are restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupState {
    /// Being taken.
    Running,
    /// Complete: the object and its manifest are at the destination.
    Succeeded,
    /// Failed (see its error); never restored.
    Failed,
}

/// One backup: its manifest (the same JSON is stored beside the object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// Its id.
    pub id: BackupId,
    /// The project's id.
    pub project_id: String,
    /// The project's name when it was taken.
    pub project: String,
    /// The volume's scope (its project's or environment's network).
    pub scope: Option<String>,
    /// The volume's name.
    pub volume: String,
    /// What it holds.
    pub source: SourceKind,
    /// When it started (RFC 3339, UTC).
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it ended.
    #[serde(default)]
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Where it stands.
    pub state: BackupState,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Bytes of the compressed object as stored.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Bytes of the uncompressed archive.
    #[serde(default)]
    pub content_bytes: Option<u64>,
    /// Hex sha256 of the compressed object as stored.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The object's key at the destination (its manifest: the same + `.json`).
    pub key: String,
    /// Compression of the object.
    pub compression: String,
    /// Taken by the project's schedule. Retention counts and deletes only these: a
    /// backup taken on demand (or recorded before this field) stays until an owner
    /// deletes it, so nobody can push the good backups out by taking new ones.
    #[serde(default)]
    pub scheduled: bool,
}

/// What a project keeps of one volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumePolicy {
    /// A cron expression (5 fields, UTC) for scheduled backups; `None`: on demand only.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Keep the last N successful scheduled backups (older objects and manifests are
    /// deleted); `None`: no count limit. Backups taken on demand are never deleted by
    /// retention.
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Keep successful backups younger than this many days; `None`: no age limit.
    /// With both limits a backup is kept when either keeps it, and the newest
    /// successful backup is always kept.
    #[serde(default)]
    pub keep_days: Option<u32>,
}

/// A project's backup settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where its backups go.
    pub destination: Destination,
    /// Per volume: schedule and retention, keyed by the volume's name for the
    /// project's own volumes and `<environment>/<name>` for an environment's
    /// ([`crate::policy_key`]).
    #[serde(default)]
    pub volumes: BTreeMap<String, VolumePolicy>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// Per project id, with the destination's secret sealed.
    #[serde(default)]
    settings: BTreeMap<String, Settings>,
    #[serde(default)]
    backups: Vec<BackupRecord>,
}

/// The index, in memory and (with a path) on disk.
#[derive(Debug)]
pub(crate) struct Records {
    path: Option<PathBuf>,
    index: Mutex<Index>,
}

impl Records {
    /// Loads `path` (missing: empty); `None`: memory only.
    pub(crate) fn load(path: Option<PathBuf>) -> Result<Self> {
        let index = match &path {
            Some(p) => match std::fs::read(p) {
                Ok(bytes) => serde_json::from_slice(&bytes)
                    .map_err(|e| Error::invalid(format!("backup index {}: {e}", p.display())))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index::default(),
                Err(e) => return Err(e.into()),
            },
            None => Index::default(),
        };
        Ok(Records {
            path,
            index: Mutex::new(index),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Index) -> T) -> Result<T> {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut index);
        if let Some(p) = &self.path {
            let tmp = p.with_extension("json.tmp");
            let bytes = serde_json::to_vec_pretty(&*index)
                .map_err(|e| Error::internal(format!("backup index: {e}")))?;
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, p)?;
        }
        Ok(out)
    }

    pub(crate) fn put(&self, r: &BackupRecord) -> Result<()> {
        self.with(|i| match i.backups.iter_mut().find(|b| b.id == r.id) {
            Some(b) => *b = r.clone(),
            None => i.backups.push(r.clone()),
        })
    }

    pub(crate) fn remove(&self, id: &BackupId) -> Result<()> {
        self.with(|i| i.backups.retain(|b| &b.id != id))
    }

    pub(crate) fn get(&self, id: &BackupId) -> Option<BackupRecord> {
        let i = self.index.lock().unwrap_or_else(|p| p.into_inner());
        i.backups.iter().find(|b| &b.id == id).cloned()
    }

    /// A project's backups, newest first.
    pub(crate) fn of_project(&self, project_id: &str) -> Vec<BackupRecord> {
        let i = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<BackupRecord> = i
            .backups
            .iter()
            .filter(|b| b.project_id == project_id)
            .cloned()
            .collect();
        out.sort_by_key(|b| std::cmp::Reverse(b.created_at));
        out
    }

    /// Running backups (left so by a stopped server: marked failed at start).
    pub(crate) fn running(&self) -> Vec<BackupRecord> {
        let i = self.index.lock().unwrap_or_else(|p| p.into_inner());
        i.backups
            .iter()
            .filter(|b| b.state == BackupState::Running)
            .cloned()
            .collect()
    }

    pub(crate) fn settings(&self, project_id: &str) -> Option<Settings> {
        let i = self.index.lock().unwrap_or_else(|p| p.into_inner());
        i.settings.get(project_id).cloned()
    }

    pub(crate) fn all_settings(&self) -> Vec<(String, Settings)> {
        let i = self.index.lock().unwrap_or_else(|p| p.into_inner());
        i.settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub(crate) fn set_settings(&self, project_id: &str, s: Option<Settings>) -> Result<()> {
        self.with(|i| match s {
            Some(s) => {
                i.settings.insert(project_id.to_owned(), s);
            }
            None => {
                i.settings.remove(project_id);
            }
        })
    }
}
