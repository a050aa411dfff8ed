//! What a backup reads and a restore writes: a [`BackupSource`]. Volumes now
//! ([`VolumeSource`], through [`Runtime::export_volume`]); database dumps
//! (`pg_dump`, `mysqldump`, Redis RDB) plug in as further implementations with
//! their own [`SourceKind`].

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use wharf_core::{ByteStream, DynRuntime, Result, VolumeRef};

/// The kind of data a backup holds, recorded in its manifest: a restore goes back
/// through a source of the same kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SourceKind {
    /// A volume's files as a tar archive (entries under `volume/`).
    Volume,
}

impl SourceKind {
    /// Its name in manifests and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Volume => "volume",
        }
    }
}

/// Something a backup can be taken of and restored into.
#[async_trait]
pub trait BackupSource: Send + Sync + std::fmt::Debug {
    /// What kind of data it streams.
    fn kind(&self) -> SourceKind;
    /// Its contents as an uncompressed stream (compression is the caller's).
    async fn read(&self) -> Result<ByteStream>;
    /// Replaces its contents with what [`BackupSource::read`] produced earlier
    /// (already checked against its checksum).
    async fn write(&self, data: ByteStream) -> Result<()>;
}

/// A volume, read and written through its runtime.
#[derive(Debug, Clone)]
pub struct VolumeSource {
    /// The runtime holding it.
    pub runtime: DynRuntime,
    /// Which volume.
    pub volume: VolumeRef,
}

#[async_trait]
impl BackupSource for VolumeSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Volume
    }
    async fn read(&self) -> Result<ByteStream> {
        self.runtime.export_volume(&self.volume).await
    }
    async fn write(&self, data: ByteStream) -> Result<()> {
        self.runtime.import_volume(&self.volume, data).await
    }
}
