//! Backups of a project's volumes: settings (destination, schedule, retention), the
//! backups taken, and the requests that take and restore one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One backup, from `GET /v1/projects/{project}/backups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupView {
    /// Its id (32 hex digits).
    pub id: String,
    /// The volume backed up.
    pub volume: String,
    /// The environment of the volume (`None`: the project's own, or an environment
    /// since deleted: see `scope`).
    pub environment: Option<String>,
    /// The volume's scope (its project's or environment's network): what tells a
    /// deleted environment's volume from the project's own of the same name.
    pub scope: Option<String>,
    /// What it holds: `volume`, `postgres_dump`, `mysql_dump`.
    pub source: String,
    /// Taken by the schedule (retention applies) rather than on demand.
    pub scheduled: bool,
    /// `running`, `succeeded` or `failed`.
    pub state: String,
    /// Why it failed.
    pub error: Option<String>,
    /// When it started (RFC 3339, UTC).
    pub created_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Seconds since it started.
    pub age_seconds: i64,
    /// Bytes of the compressed object as stored.
    pub size_bytes: Option<u64>,
    /// Hex sha256 of the compressed object as stored.
    pub sha256: Option<String>,
    /// The object's key at the destination (its manifest: the same + `.json`).
    pub key: String,
}

/// `POST /v1/projects/{project}/backups`: back up one volume now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupNow {
    /// The volume's name.
    pub volume: String,
    /// An environment of the project (none: the project's own volume).
    #[serde(default)]
    pub environment: Option<String>,
}

/// `POST /v1/projects/{project}/backups/{backup}/restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRestore {
    /// The name of the volume restored into, again: its contents are replaced.
    pub confirm: String,
    /// Restore into this volume of the same project and environment instead of the
    /// backed-up one (created if missing).
    #[serde(default)]
    pub into: Option<String>,
    /// When live services mount the volume: stop them, restore, and start their live
    /// releases again (as a deploy does for volumes: one writer at a time). Without
    /// it such a restore is refused.
    #[serde(default)]
    pub restart: bool,
}

/// `POST /v1/projects/{project}/backups/{backup}/check`: a dump restored into a scratch
/// database and queried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupCheck {
    /// The backup checked.
    pub backup: String,
    /// The database it is a dump of.
    pub database: String,
    /// The scratch database it was restored into (dropped again).
    pub scratch: String,
    /// Tables the restore made there.
    pub tables: u64,
}

/// Where backups go, as sent: `{"kind": "local"}` or `{"kind": "s3", ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DestinationInput {
    /// The server's own backup folder.
    Local,
    /// A bucket of an S3-compatible store.
    S3 {
        /// The store's URL (none: AWS for the region).
        #[serde(default)]
        endpoint: Option<String>,
        /// The bucket (it must exist).
        bucket: String,
        /// The region (default `us-east-1`).
        #[serde(default)]
        region: Option<String>,
        /// A key prefix in the bucket.
        #[serde(default)]
        prefix: Option<String>,
        /// The access key id.
        access_key_id: String,
        /// The secret access key: write-only, sealed at rest, never shown.
        secret_access_key: wharf_core::Secret,
    },
}

/// A destination as responses show it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DestinationShown {
    /// The server's own backup folder.
    Local,
    /// A bucket.
    S3 {
        /// The store's URL.
        endpoint: Option<String>,
        /// The bucket.
        bucket: String,
        /// The region.
        region: String,
        /// The key prefix.
        prefix: Option<String>,
        /// The access key id.
        access_key_id: String,
    },
}

/// Schedule and retention of one volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeBackupPolicy {
    /// A 5-field cron expression (UTC), e.g. `30 2 * * *`; none: on demand only.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Keep the newest N successful backups; none: no count limit.
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Keep successful backups younger than N days; none: no age limit. With both,
    /// a backup either keeps stays, and the newest successful one always stays.
    #[serde(default)]
    pub keep_days: Option<u32>,
}

/// `PUT /v1/projects/{project}/backups/settings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupSettingsInput {
    /// Where backups go.
    pub destination: DestinationInput,
    /// Per volume: schedule and retention, keyed `NAME` for the project's own volumes and
    /// `ENVIRONMENT/NAME` for an environment's.
    #[serde(default)]
    pub volumes: BTreeMap<String, VolumeBackupPolicy>,
}

/// `GET /v1/projects/{project}/backups/settings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupSettingsView {
    /// Where backups go (`None`: not set; backups are refused).
    pub destination: Option<DestinationShown>,
    /// Per volume: schedule and retention.
    pub volumes: BTreeMap<String, VolumeBackupPolicy>,
}
