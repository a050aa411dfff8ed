//! A [`Store`] on SQLite: the embedded default (feature `sqlite`).
//!
//! Each table keeps the full record as JSON in a `body` column, next to copies of the
//! fields the store looks records up by (ids, project, service, name, state, version,
//! insertion order). The schema is created and upgraded by the migrations embedded in
//! the binary (`store/migrations/*.sql`), recorded in `schema_migrations`.
//!
//! Writes go through one writer thread per store, which commits the writes of
//! concurrent callers together (group commit: one transaction per batch, each write in
//! a savepoint of its own, so a failing write fails alone); a caller is answered once
//! its write has committed. Reads run on connections of their own, which the database's
//! WAL journal lets read while the writer writes. How durable a commit is on power loss
//! is [`Synchronous`]'s choice (see there); the default loses nothing on a crash of the
//! process and never corrupts the database.
//!
//! Several [`SqliteStore`]s (in one process or several) may share one database file:
//! every batch runs in an `IMMEDIATE` transaction, deployments compare-and-set on their
//! version in SQL, and a busy database is waited on for up to 5 seconds before the
//! store reports [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable).
//!
//! It behaves exactly like [`MemoryStore`](super::MemoryStore): both pass
//! `wharf_core::conformance::store::run_all`.

use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::de::DeserializeOwned;

use super::sql::encode;
use crate::error::{Error, Result};
use crate::model::*;
use crate::traits::{CronRunFilter, DeploymentFilter, Store};

/// The migrations, in order: `(version, sql)`. Append only; never edit a shipped one.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_cron_runs.sql")),
];

/// How long a write waits for another connection's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const BACKEND: &str = "sqlite";

/// Read connections of a store on a file (reads of a database in memory share the
/// writer's one connection).
const READERS: usize = 4;

/// Prepared statements each connection keeps (rusqlite's default, 16, is fewer than
/// the store's distinct statements).
const STATEMENT_CACHE: usize = 128;

mod writer;
use writer::Writer;

/// How durable a committed write is, SQLite's `PRAGMA synchronous` on the writer's
/// connection (the journal is always WAL).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Synchronous {
    /// `synchronous = NORMAL` (the default): a commit is written to the WAL file but
    /// not flushed to the disk; the WAL is flushed at each checkpoint. A crash of the
    /// process loses nothing that was committed (the operating system has the data);
    /// a power loss or kernel crash may lose the last transactions committed before
    /// it, but never corrupts the database: it opens in the state of an earlier
    /// commit. SQLite's recommended setting for WAL.
    #[default]
    Normal,
    /// `synchronous = FULL`: every commit is flushed to the disk (one `fsync` per
    /// batch of writes) before its callers are answered, so a committed write survives
    /// a power loss too. Slower by the cost of an `fsync`.
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Settings of [`SqliteStore::open_with`]; [`SqliteStore::open`] takes the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// How durable a commit is (default [`Synchronous::Normal`]).
    pub synchronous: Synchronous,
}

impl SqliteOptions {
    /// Sets [`SqliteOptions::synchronous`].
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }
}

/// A [`Store`] backed by a SQLite database (a file, or memory).
///
/// Cheap to clone: clones share one writer thread and its read connections. Dropping
/// the last clone waits for the writes already asked for to commit, then closes the
/// database.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    // Dropped first: the writer finishes what was asked and closes its connection.
    writer: Writer,
    readers: Vec<Arc<Mutex<Connection>>>,
    next_reader: AtomicUsize,
    path: Option<PathBuf>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// A connection as the store's operations use it: `execute` and `query_row` prepare
/// their statement once per connection and reuse it (the statement cache), and inside
/// [`SqliteStore::write`] it is within the writer's transaction.
struct Db<'c>(&'c Connection);

impl Db<'_> {
    fn execute<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.0.prepare_cached(sql)?.execute(params)
    }

    fn query_row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.0.prepare_cached(sql)?.query_row(params, f)
    }
}

impl Deref for Db<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.0
    }
}

/// Locks a connection. A panic while it was held left no transaction open (a write's
/// panic is caught and rolled back to its savepoint; a read has none), so poisoning is
/// ignored.
fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|p| p.into_inner())
}

impl SqliteStore {
    /// Opens (creating it and its parent folders if needed) the database at `path`,
    /// in WAL mode with foreign keys on, and brings its schema up to date; with the
    /// default [`SqliteOptions`] (see [`Synchronous::Normal`] for what a power loss
    /// may cost).
    ///
    /// Fails with a clear error if the file is not a SQLite database, or if its schema
    /// is newer than this version of Wharf knows ([`crate::ErrorKind::Unsupported`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// [`SqliteStore::open`] with `options`, e.g.
    /// `SqliteOptions::default().synchronous(Synchronous::Full)` for commits that
    /// survive a power loss.
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let path = path.as_ref();
        let context = || format!("cannot open the store database {}", path.display());
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    Error::from(e).context(format!("cannot create folder {}", parent.display()))
                })?;
            }
        }
        let conn = Connection::open(path).map_err(|e| sql_error(e).context(context()))?;
        Self::init(conn, Some(path.to_path_buf()), &options).map_err(|e| e.context(context()))
    }

    /// A fresh database in memory (lost when the last clone is dropped).
    pub fn open_in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory().map_err(sql_error)?;
        Self::init(conn, None, &SqliteOptions::default())
    }

    fn init(mut conn: Connection, path: Option<PathBuf>, options: &SqliteOptions) -> Result<Self> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        if path.is_some() {
            // Reading the journal mode is the first access to the file: a file that is
            // not a database fails here.
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
                .map_err(sql_error)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(Error::internal(format!(
                    "cannot switch the database to WAL journal mode (it stays in {mode:?} mode)"
                ))
                .with_backend(BACKEND));
            }
        }
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql_error)?;
        conn.pragma_update(None, "synchronous", options.synchronous.pragma())
            .map_err(sql_error)?;
        migrate(&mut conn)?;
        let conn = Arc::new(Mutex::new(conn));
        let readers = match &path {
            Some(path) => (0..READERS)
                .map(|_| open_reader(path).map(|c| Arc::new(Mutex::new(c))))
                .collect::<Result<Vec<_>>>()?,
            None => vec![conn.clone()],
        };
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: Writer::spawn(conn)?,
                readers,
                next_reader: AtomicUsize::new(0),
                path,
            }),
        })
    }

    /// Runs the read `f` on a read connection, in the blocking thread pool: a free one
    /// if there is one, else the next in turn.
    async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T, Fail> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let readers = &inner.readers;
            let conn = readers
                .iter()
                .find_map(|r| r.try_lock().ok())
                .unwrap_or_else(|| {
                    let i = inner.next_reader.fetch_add(1, Ordering::Relaxed);
                    lock(&readers[i % readers.len()])
                });
            f(&Db(&conn)).map_err(Error::from)
        })
        .await
        .map_err(|e| {
            Error::internal(format!("sqlite store task failed: {e}")).with_backend(BACKEND)
        })?
    }

    /// Runs `f` on the writer's connection inside an `IMMEDIATE` transaction (the
    /// write lock is taken up front, so what `f` reads cannot change before it
    /// writes), in a savepoint of its own; answers once that transaction committed.
    /// If `f` fails, its changes are rolled back and nobody else's.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T, Fail> + Send + 'static,
    {
        self.inner.writer.write(move |conn| f(&Db(conn))).await
    }
}

/// A read-only connection to the database at `path` (already migrated).
fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(sql_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "query_only", "ON")
        .map_err(sql_error)?;
    Ok(conn)
}

/// Brings the schema up to date, one migration per transaction.
fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at INTEGER NOT NULL
         )",
    )
    .map_err(sql_error)?;
    let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    for &(version, sql) in MIGRATIONS {
        let mut run = || -> Result<(), Fail> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Checked inside the transaction: another process may be migrating too.
            let newest: i64 = tx.query_row(
                "SELECT ifnull(max(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )?;
            if newest > known {
                return Err(Error::unsupported(format!(
                    "the database schema is at version {newest}, newer than the newest this \
                     version of Wharf knows ({known}); use a newer Wharf"
                ))
                .with_backend(BACKEND)
                .into());
            }
            let applied = tx
                .query_row(
                    "SELECT 1 FROM schema_migrations WHERE version = ?1",
                    [version],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !applied {
                tx.execute_batch(sql)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                    params![version, Timestamp::now().0],
                )?;
            }
            tx.commit()?;
            Ok(())
        };
        run().map_err(|e| Error::from(e).context(format!("schema migration {version}")))?;
    }
    Ok(())
}

/// A failure inside a store operation (see [`super::sql::Fail`]).
type Fail = super::sql::Fail<rusqlite::Error>;

impl super::sql::DbError for rusqlite::Error {
    fn into_error(self) -> Error {
        sql_error(self)
    }
}

/// Maps a SQLite error by meaning: busy or locked is Unavailable (retryable), a
/// constraint violation is a Conflict, anything else is Internal.
fn sql_error(e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode as C;
    let err = match e.sqlite_error_code() {
        Some(C::DatabaseBusy | C::DatabaseLocked) => Error::unavailable(format!(
            "the database is busy (another writer holds it): {e}"
        )),
        Some(C::ConstraintViolation) => {
            Error::conflict(format!("the change clashes with a stored record: {e}"))
        }
        Some(C::NotADatabase) => {
            Error::internal(format!("the file is not a SQLite database ({e})"))
        }
        Some(C::DatabaseCorrupt) => Error::internal(format!("the database file is corrupt ({e})")),
        _ => Error::internal(format!("SQLite failed: {e}")),
    };
    err.with_backend(BACKEND).with_source(e)
}

fn decode<T: DeserializeOwned>(what: &str, body: &str) -> Result<T, Fail> {
    Ok(super::sql::decode(BACKEND, what, body)?)
}

fn not_found(what: &str, id: impl fmt::Display) -> Fail {
    Fail::Wharf(Error::not_found(format!("{what} {id} not found")))
}

fn exists(tx: &Db<'_>, sql: &str, id: &str) -> Result<bool, Fail> {
    Ok(tx.query_row(sql, [id], |_| Ok(())).optional()?.is_some())
}

/// Reads the `body` column of the one row `sql` returns, if any.
fn one_body(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Option<String>, Fail> {
    let mut stmt = conn.prepare_cached(sql)?;
    Ok(stmt.query_row(params, |r| r.get(0)).optional()?)
}

/// Reads the `body` column of every row `sql` returns.
fn bodies<T: DeserializeOwned>(
    conn: &Connection,
    what: &str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<T>, Fail> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for body in rows {
        out.push(decode(what, &body?)?);
    }
    Ok(out)
}

/// Deletes the services `where_clause` selects (with `?1` bound to `key`) along with
/// their deployments, releases, events and cron runs.
fn remove_services(tx: &Db<'_>, where_clause: &str, key: &str) -> Result<(), Fail> {
    for table in ["deployments", "events", "releases", "cron_runs"] {
        tx.execute(
            &format!(
                "DELETE FROM {table} WHERE service IN (SELECT id FROM services WHERE {where_clause})"
            ),
            [key],
        )?;
    }
    tx.execute(&format!("DELETE FROM services WHERE {where_clause}"), [key])?;
    Ok(())
}

/// A deployment's stored version (`None` if it does not exist).
fn stored_version(tx: &Db<'_>, id: &str) -> Result<Option<i64>, Fail> {
    Ok(tx
        .query_row("SELECT version FROM deployments WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?)
}

fn read_deployment(body: &str, version: i64) -> Result<Deployment, Fail> {
    let mut d: Deployment = decode("deployment", body)?;
    d.version = version as u64;
    Ok(d)
}

#[async_trait]
impl Store for SqliteStore {
    async fn put_project(&self, project: &Project) -> Result<()> {
        validate_name(&project.name)?;
        let body = encode("project", project)?;
        let (id, name) = (project.id.0.clone(), project.name.clone());
        self.write(move |tx| {
            let other: Option<String> = tx
                .query_row(
                    "SELECT id FROM projects WHERE name = ?1 AND id <> ?2",
                    [&name, &id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(other) = other {
                return Err(Error::conflict(format!(
                    "project name {name:?} is already used by project {other}"
                ))
                .into());
            }
            tx.execute(
                "INSERT INTO projects (id, name, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, body = excluded.body",
                [&id, &name, &body],
            )?;
            Ok(())
        })
        .await
    }

    async fn project(&self, id: &ProjectId) -> Result<Project> {
        let id = id.clone();
        self.call(move |conn| {
            let body: Option<String> = conn
                .query_row("SELECT body FROM projects WHERE id = ?1", [&id.0], |r| {
                    r.get(0)
                })
                .optional()?;
            match body {
                Some(b) => decode("project", &b),
                None => Err(not_found("project", &id)),
            }
        })
        .await
    }

    async fn project_by_name(&self, name: &str) -> Result<Project> {
        let name = name.to_owned();
        self.call(move |conn| {
            // Indexed: projects_name_unique.
            match one_body(conn, "SELECT body FROM projects WHERE name = ?1", [&name])? {
                Some(b) => decode("project", &b),
                None => Err(super::project_name_not_found(&name).into()),
            }
        })
        .await
    }

    async fn projects(&self) -> Result<Vec<Project>> {
        self.call(|conn| {
            bodies(
                conn,
                "project",
                "SELECT body FROM projects ORDER BY name",
                [],
            )
        })
        .await
    }

    async fn delete_project(&self, id: &ProjectId) -> Result<()> {
        let id = id.clone();
        self.write(move |tx| {
            if !exists(tx, "SELECT 1 FROM projects WHERE id = ?1", &id.0)? {
                return Err(not_found("project", &id));
            }
            remove_services(tx, "project = ?1", &id.0)?;
            tx.execute("DELETE FROM environments WHERE project = ?1", [&id.0])?;
            tx.execute("DELETE FROM projects WHERE id = ?1", [&id.0])?;
            Ok(())
        })
        .await
    }

    async fn put_environment(&self, env: &Environment) -> Result<()> {
        validate_name(&env.name)?;
        let body = encode("environment", env)?;
        let env = env.clone();
        self.write(move |tx| {
            if !exists(tx, "SELECT 1 FROM projects WHERE id = ?1", &env.project.0)? {
                return Err(not_found("project", &env.project));
            }
            let taken = tx
                .query_row(
                    "SELECT 1 FROM environments WHERE project = ?1 AND name = ?2 AND id <> ?3",
                    [&env.project.0, &env.name, &env.id.0],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if taken {
                return Err(Error::conflict(format!(
                    "environment name {:?} is already used in project {}",
                    env.name, env.project
                ))
                .into());
            }
            tx.execute(
                "INSERT INTO environments (id, project, name, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE
                 SET project = excluded.project, name = excluded.name, body = excluded.body",
                [&env.id.0, &env.project.0, &env.name, &body],
            )?;
            Ok(())
        })
        .await
    }

    async fn environment(&self, id: &EnvironmentId) -> Result<Environment> {
        let id = id.clone();
        self.call(move |conn| {
            match one_body(conn, "SELECT body FROM environments WHERE id = ?1", [&id.0])? {
                Some(b) => decode("environment", &b),
                None => Err(not_found("environment", &id)),
            }
        })
        .await
    }

    async fn environment_by_name(&self, project: &ProjectId, name: &str) -> Result<Environment> {
        let (project, name) = (project.clone(), name.to_owned());
        self.call(move |conn| {
            // Indexed: environments_name_unique (project, name).
            let body = one_body(
                conn,
                "SELECT body FROM environments WHERE project = ?1 AND name = ?2",
                [&project.0, &name],
            )?;
            match body {
                Some(b) => decode("environment", &b),
                None => Err(super::environment_name_not_found(&project, &name).into()),
            }
        })
        .await
    }

    async fn environments(&self, project: &ProjectId) -> Result<Vec<Environment>> {
        let project = project.clone();
        self.call(move |conn| {
            bodies(
                conn,
                "environment",
                "SELECT body FROM environments WHERE project = ?1 ORDER BY name, id",
                [&project.0],
            )
        })
        .await
    }

    async fn delete_environment(&self, id: &EnvironmentId) -> Result<()> {
        let id = id.clone();
        self.write(move |tx| {
            if !exists(tx, "SELECT 1 FROM environments WHERE id = ?1", &id.0)? {
                return Err(not_found("environment", &id));
            }
            remove_services(tx, "environment = ?1", &id.0)?;
            tx.execute("DELETE FROM environments WHERE id = ?1", [&id.0])?;
            Ok(())
        })
        .await
    }

    async fn put_service(&self, service: &Service) -> Result<()> {
        service.validate()?;
        let body = encode("service", service)?;
        let s = service.clone();
        self.write(move |tx| {
            if !exists(tx, "SELECT 1 FROM projects WHERE id = ?1", &s.project.0)? {
                return Err(not_found("project", &s.project));
            }
            let env = s.environment.as_ref().map(|e| e.0.clone());
            if let Some(env) = &s.environment {
                let owner: Option<String> = tx
                    .query_row(
                        "SELECT project FROM environments WHERE id = ?1",
                        [&env.0],
                        |r| r.get(0),
                    )
                    .optional()?;
                if owner.as_deref() != Some(s.project.as_str()) {
                    return Err(not_found("environment", env));
                }
            }
            let taken = tx
                .query_row(
                    "SELECT 1 FROM services
                     WHERE project = ?1 AND environment IS ?2 AND name = ?3 AND id <> ?4",
                    params![s.project.0, env, s.name, s.id.0],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if taken {
                return Err(Error::conflict(format!(
                    "service name {:?} is already used in project {}",
                    s.name, s.project
                ))
                .into());
            }
            let old_project: Option<String> = tx
                .query_row(
                    "SELECT project FROM services WHERE id = ?1",
                    [&s.id.0],
                    |r| r.get(0),
                )
                .optional()?;
            if old_project.is_some_and(|p| p != s.project.0) {
                return Err(Error::invalid(format!(
                    "service {} cannot move to another project",
                    s.id
                ))
                .into());
            }
            tx.execute(
                "INSERT INTO services (id, project, environment, name, body)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET
                   environment = excluded.environment, name = excluded.name, body = excluded.body",
                params![s.id.0, s.project.0, env, s.name, body],
            )?;
            Ok(())
        })
        .await
    }

    async fn service(&self, id: &ServiceId) -> Result<Service> {
        let id = id.clone();
        self.call(move |conn| {
            let body: Option<String> = conn
                .query_row("SELECT body FROM services WHERE id = ?1", [&id.0], |r| {
                    r.get(0)
                })
                .optional()?;
            match body {
                Some(b) => decode("service", &b),
                None => Err(not_found("service", &id)),
            }
        })
        .await
    }

    async fn service_by_name(
        &self,
        project: &ProjectId,
        environment: Option<&EnvironmentId>,
        name: &str,
    ) -> Result<Service> {
        let (project, environment) = (project.clone(), environment.cloned());
        let name = name.to_owned();
        self.call(move |conn| {
            // Indexed: services_by_project (project, name).
            let env = environment.as_ref().map(|e| e.0.as_str());
            let body = one_body(
                conn,
                "SELECT body FROM services WHERE project = ?1 AND name = ?2 AND environment IS ?3",
                params![project.0, name, env],
            )?;
            match body {
                Some(b) => decode("service", &b),
                None => {
                    Err(super::service_name_not_found(&project, environment.as_ref(), &name).into())
                }
            }
        })
        .await
    }

    async fn services(&self, project: &ProjectId) -> Result<Vec<Service>> {
        let project = project.clone();
        self.call(move |conn| {
            bodies(
                conn,
                "service",
                "SELECT body FROM services WHERE project = ?1 ORDER BY name, id",
                [&project.0],
            )
        })
        .await
    }

    async fn delete_service(&self, id: &ServiceId) -> Result<()> {
        let id = id.clone();
        self.write(move |tx| {
            if !exists(tx, "SELECT 1 FROM services WHERE id = ?1", &id.0)? {
                return Err(not_found("service", &id));
            }
            remove_services(tx, "id = ?1", &id.0)?;
            Ok(())
        })
        .await
    }

    async fn insert_deployment(&self, deployment: &Deployment) -> Result<()> {
        if deployment.version != 0 {
            return Err(Error::invalid(format!(
                "a new deployment must have version 0, not {}",
                deployment.version
            )));
        }
        let body = encode("deployment", deployment)?;
        let d = deployment.clone();
        self.write(move |tx| {
            if !exists(tx, "SELECT 1 FROM services WHERE id = ?1", &d.service.0)? {
                return Err(not_found("service", &d.service));
            }
            if exists(tx, "SELECT 1 FROM deployments WHERE id = ?1", &d.id.0)? {
                return Err(Error::conflict(format!("deployment {} already exists", d.id)).into());
            }
            tx.execute(
                "INSERT INTO deployments (id, project, service, state, active, version, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
                params![
                    d.id.0,
                    d.project.0,
                    d.service.0,
                    d.state.name(),
                    d.state.is_active(),
                    body
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn deployment(&self, id: &DeploymentId) -> Result<Deployment> {
        let id = id.clone();
        self.call(move |conn| {
            let row: Option<(String, i64)> = conn
                .query_row(
                    "SELECT body, version FROM deployments WHERE id = ?1",
                    [&id.0],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            match row {
                Some((body, version)) => read_deployment(&body, version),
                None => Err(not_found("deployment", &id)),
            }
        })
        .await
    }

    async fn deployments(&self, filter: &DeploymentFilter) -> Result<Vec<Deployment>> {
        let project = filter.project.as_ref().map(|p| p.0.clone());
        let service = filter.service.as_ref().map(|s| s.0.clone());
        let active_only = filter.active_only;
        let limit = filter
            .limit
            .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT body, version FROM deployments
                 WHERE (?1 IS NULL OR project = ?1)
                   AND (?2 IS NULL OR service = ?2)
                   AND (?3 = 0 OR active = 1)
                 ORDER BY ord DESC
                 LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![project, service, active_only, limit], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (body, version) = row?;
                out.push(read_deployment(&body, version)?);
            }
            Ok(out)
        })
        .await
    }

    async fn update_deployment(&self, deployment: &Deployment) -> Result<Deployment> {
        let asked = deployment.version;
        let expected = i64::try_from(asked).ok();
        let mut next = deployment.clone();
        next.version = deployment.version.saturating_add(1);
        let body = encode("deployment", &next)?;
        self.write(move |tx| {
            let changed = match expected {
                Some(expected) => tx.execute(
                    "UPDATE deployments
                     SET body = ?1, version = version + 1, state = ?2, active = ?3,
                         project = ?4, service = ?5
                     WHERE id = ?6 AND version = ?7",
                    params![
                        body,
                        next.state.name(),
                        next.state.is_active(),
                        next.project.0,
                        next.service.0,
                        next.id.0,
                        expected
                    ],
                )?,
                None => 0,
            };
            if changed == 0 {
                return Err(match stored_version(tx, &next.id.0)? {
                    None => not_found("deployment", &next.id),
                    Some(stored) => Error::conflict(format!(
                        "deployment {} was changed concurrently (version {} expected, {} stored)",
                        next.id, asked, stored
                    ))
                    .into(),
                });
            }
            Ok(next)
        })
        .await
    }

    async fn insert_release(&self, release: &Release) -> Result<()> {
        let body = encode("release", release)?;
        let r = release.clone();
        self.write(move |tx| {
            if !exists(tx, "SELECT 1 FROM services WHERE id = ?1", &r.service.0)? {
                return Err(not_found("service", &r.service));
            }
            if exists(tx, "SELECT 1 FROM releases WHERE id = ?1", &r.id.0)? {
                return Err(Error::conflict(format!("release {} already exists", r.id)).into());
            }
            let last: i64 = tx.query_row(
                "SELECT ifnull(max(number), 0) FROM releases WHERE service = ?1",
                [&r.service.0],
                |row| row.get(0),
            )?;
            let next = last as u64 + 1;
            let number = match i64::try_from(r.number) {
                Ok(n) if r.number == next => n,
                _ => {
                    return Err(Error::conflict(format!(
                        "release number {} for service {} is not the next one ({next})",
                        r.number, r.service
                    ))
                    .into())
                }
            };
            tx.execute(
                "INSERT INTO releases (id, project, service, number, deployment, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    r.id.0,
                    r.project.0,
                    r.service.0,
                    number,
                    r.deployment.0,
                    body
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn release(&self, id: &ReleaseId) -> Result<Release> {
        let id = id.clone();
        self.call(move |conn| {
            match one_body(conn, "SELECT body FROM releases WHERE id = ?1", [&id.0])? {
                Some(b) => decode("release", &b),
                None => Err(not_found("release", &id)),
            }
        })
        .await
    }

    async fn releases(&self, service: &ServiceId) -> Result<Vec<Release>> {
        let service = service.clone();
        self.call(move |conn| {
            bodies(
                conn,
                "release",
                "SELECT body FROM releases WHERE service = ?1 ORDER BY number DESC",
                [&service.0],
            )
        })
        .await
    }

    async fn append_events(&self, events: Vec<Event>) -> Result<Vec<Event>> {
        if events.is_empty() {
            return Ok(events);
        }
        self.write(move |tx| {
            // The highest sequence number ever handed out (AUTOINCREMENT keeps it in
            // sqlite_sequence even after the events are deleted).
            let mut seq: i64 = tx.query_row(
                "SELECT max(
                     ifnull((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
                     ifnull((SELECT max(seq) FROM events), 0))",
                [],
                |r| r.get(0),
            )?;
            let mut out = Vec::with_capacity(events.len());
            for mut e in events {
                seq += 1;
                e.seq = seq as u64;
                let body = encode("event", &e)?;
                tx.execute(
                    "INSERT INTO events (seq, deployment, service, body) VALUES (?1, ?2, ?3, ?4)",
                    params![seq, e.deployment.0, e.service.0, body],
                )?;
                out.push(e);
            }
            Ok(out)
        })
        .await
    }

    async fn events(&self, deployment: &DeploymentId, after: u64) -> Result<Vec<Event>> {
        let deployment = deployment.clone();
        let Ok(after) = i64::try_from(after) else {
            return Ok(Vec::new());
        };
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, body FROM events WHERE deployment = ?1 AND seq > ?2 ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![deployment.0, after], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, body) = row?;
                let mut e: Event = decode("event", &body)?;
                e.seq = seq as u64;
                out.push(e);
            }
            Ok(out)
        })
        .await
    }
    async fn insert_cron_run(&self, run: &CronRun) -> Result<()> {
        run.validate()?;
        let body = encode("cron run", run)?;
        let r = run.clone();
        self.write(move |tx| {
            if !exists(tx, "SELECT 1 FROM services WHERE id = ?1", &r.service.0)? {
                return Err(not_found("service", &r.service));
            }
            if exists(tx, "SELECT 1 FROM cron_runs WHERE id = ?1", &r.id.0)? {
                return Err(Error::conflict(format!("cron run {} already exists", r.id)).into());
            }
            tx.execute(
                "INSERT INTO cron_runs (id, project, service, job, outcome, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    r.id.0,
                    r.project.0,
                    r.service.0,
                    r.job,
                    r.outcome.as_str(),
                    body
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn update_cron_run(&self, run: &CronRun) -> Result<()> {
        run.validate()?;
        let r = run.clone();
        self.write(move |tx| {
            let stored: Option<String> =
                one_body(tx, "SELECT body FROM cron_runs WHERE id = ?1", [&r.id.0])?;
            let Some(stored) = stored else {
                return Err(not_found("cron run", &r.id));
            };
            let stored: CronRun = decode("cron run", &stored)?;
            let next = CronRun {
                project: stored.project,
                service: stored.service,
                job: stored.job,
                ..r
            };
            let body = encode("cron run", &next)?;
            tx.execute(
                "UPDATE cron_runs SET outcome = ?1, body = ?2 WHERE id = ?3",
                params![next.outcome.as_str(), body, next.id.0],
            )?;
            Ok(())
        })
        .await
    }

    async fn cron_runs(&self, filter: &CronRunFilter) -> Result<Vec<CronRun>> {
        let project = filter.project.as_ref().map(|p| p.0.clone());
        let service = filter.service.as_ref().map(|s| s.0.clone());
        let job = filter.job.clone();
        let outcome = filter.outcome.map(|o| o.as_str());
        let limit = filter
            .limit
            .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        self.call(move |conn| {
            bodies(
                conn,
                "cron run",
                "SELECT body FROM cron_runs
                 WHERE (?1 IS NULL OR project = ?1)
                   AND (?2 IS NULL OR service = ?2)
                   AND (?3 IS NULL OR job = ?3)
                   AND (?4 IS NULL OR outcome = ?4)
                 ORDER BY ord DESC
                 LIMIT ?5",
                params![project, service, job, outcome, limit],
            )
        })
        .await
    }

    async fn prune_cron_runs(&self, service: &ServiceId, job: &str, keep: usize) -> Result<u64> {
        let service = service.0.clone();
        let job = job.to_owned();
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.write(move |tx| {
            let gone = tx.execute(
                "DELETE FROM cron_runs
                 WHERE service = ?1 AND job = ?2 AND outcome <> 'running'
                   AND ord NOT IN (
                       SELECT ord FROM cron_runs
                       WHERE service = ?1 AND job = ?2 AND outcome <> 'running'
                       ORDER BY ord DESC LIMIT ?3)",
                params![service, job, keep],
            )?;
            Ok(gone as u64)
        })
        .await
    }
}
