//! What a backup reads and a restore writes: a [`BackupSource`]. Volumes
//! ([`VolumeSource`], through [`Runtime::export_volume`]) and commands run inside a
//! live instance ([`ExecSource`], through [`Runtime::exec`]): database dumps
//! (`pg_dump`, `mysqldump`, Redis RDB) and their restores.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use wharf_core::{ByteStream, DynRuntime, InstanceId, Result, VolumeRef};

/// The kind of data a backup holds, recorded in its manifest: a restore goes back
/// through a source of the same kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SourceKind {
    /// A volume's files as a tar archive (entries under `volume/`).
    Volume,
    /// A PostgreSQL database as SQL (`pg_dump`), restored with `psql`.
    PostgresDump,
    /// A MySQL/MariaDB database as SQL (`mysqldump`), restored with `mysql`.
    MysqlDump,
    /// A Redis dataset as an RDB file.
    RedisRdb,
}

impl SourceKind {
    /// Its name in manifests and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Volume => "volume",
            SourceKind::PostgresDump => "postgres_dump",
            SourceKind::MysqlDump => "mysql_dump",
            SourceKind::RedisRdb => "redis_rdb",
        }
    }

    /// The extension of its objects, before `.gz`.
    pub fn extension(self) -> &'static str {
        match self {
            SourceKind::Volume => "tar",
            SourceKind::PostgresDump | SourceKind::MysqlDump => "sql",
            SourceKind::RedisRdb => "rdb",
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

/// A dump read from, and a restore written into, a live instance by commands run
/// inside it (no shell of Wharf's: program and arguments). Credentials go in `env`,
/// never in the commands.
#[derive(Clone)]
pub struct ExecSource {
    /// The runtime running the instance.
    pub runtime: DynRuntime,
    /// The instance (the database's live one).
    pub instance: InstanceId,
    /// What the dump is.
    pub kind: SourceKind,
    /// Writes the dump to its standard output.
    pub dump: Vec<String>,
    /// Reads a dump from its standard input and restores it.
    pub restore: Vec<String>,
    /// Environment for both (passwords).
    pub env: BTreeMap<String, String>,
}

impl ExecSource {
    /// The dump source of managed database `svc` ([`wharf_core::database`]) running
    /// as `instance`: `pg_dump`/`psql` or `mysqldump`/`mysql` over the instance's
    /// loopback with its generated credentials (the password in `env`). InvalidInput
    /// for a service that is not a managed database or has lost its credentials;
    /// Unsupported for Redis (back up its volume: restoring an RDB needs the server
    /// stopped).
    pub fn database(
        runtime: DynRuntime,
        instance: InstanceId,
        svc: &wharf_core::Service,
    ) -> Result<ExecSource> {
        use wharf_core::database::{Credentials, DbEngine};
        let Some(spec) = &svc.database else {
            return Err(wharf_core::Error::invalid(format!(
                "service {} is not a managed database",
                svc.name
            )));
        };
        let creds = Credentials::of(&svc.env).ok_or_else(|| {
            wharf_core::Error::invalid(format!(
                "database {} has lost its USER, PASSWORD or DATABASE variable",
                svc.name
            ))
        })?;
        let kind = match spec.engine {
            DbEngine::Postgres => SourceKind::PostgresDump,
            DbEngine::Mysql => SourceKind::MysqlDump,
            DbEngine::Redis => {
                return Err(wharf_core::Error::unsupported(format!(
                    "database {} is Redis: back up its volume (restoring an RDB dump needs the server stopped)",
                    svc.name
                )))
            }
        };
        let cmds = creds
            .dump_commands(spec.engine)
            .expect("postgres and mysql have dump commands");
        Ok(ExecSource {
            runtime,
            instance,
            kind,
            dump: cmds.dump,
            restore: cmds.restore,
            env: cmds.env,
        })
    }
}

impl std::fmt::Debug for ExecSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSource")
            .field("instance", &self.instance)
            .field("kind", &self.kind)
            .field("dump", &self.dump)
            .field("restore", &self.restore)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[async_trait]
impl BackupSource for ExecSource {
    fn kind(&self) -> SourceKind {
        self.kind
    }
    async fn read(&self) -> Result<ByteStream> {
        self.runtime
            .exec(&self.instance, &self.dump, &self.env, None)
            .await
    }
    async fn write(&self, data: ByteStream) -> Result<()> {
        use futures::StreamExt as _;
        let mut out = self
            .runtime
            .exec(&self.instance, &self.restore, &self.env, Some(data))
            .await?;
        // What the restore prints is drained; its failure is the stream's last item.
        while let Some(item) = out.next().await {
            item?;
        }
        Ok(())
    }
}
