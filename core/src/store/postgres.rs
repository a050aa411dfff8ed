//! A [`Store`] on PostgreSQL (feature `postgres`): the scale-out store, shared by
//! several Wharf control planes.
//!
//! The schema mirrors the SQLite store's (`store/migrations/postgres/*.sql` beside
//! `store/migrations/*.sql`): the full record as JSON text in a `body` column, next to
//! copies of the fields records are looked up by. Migrations are embedded, applied at
//! connect time under an advisory lock (so control planes starting together migrate
//! once), and recorded in `schema_migrations`.
//!
//! Concurrency: every write is one transaction. A deployment update is a single
//! `UPDATE ... WHERE id = $1 AND version = $2`: PostgreSQL makes a concurrent updater
//! wait for the row lock and then re-check the version, so of any number of stores
//! racing to move one deployment exactly one wins and the others get a
//! [`Conflict`](crate::ErrorKind::Conflict). Uniqueness races (names, release numbers)
//! end in a unique-constraint violation, also a Conflict. Event sequence numbers come
//! from a one-row counter updated in the appending transaction, so appends commit in
//! sequence order and a reader following `seq > after` never misses one.
//!
//! Connection failures, a full pool, serialization failures and deadlocks are
//! [`Unavailable`](crate::ErrorKind::Unavailable) (retryable). The connection is
//! plain TCP (no TLS): run the database on loopback or a trusted network.
//!
//! It behaves exactly like [`MemoryStore`](super::MemoryStore): both pass
//! `wharf_core::conformance::store::run_all`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Postgres, Transaction};

use super::sql::encode;
use crate::error::{Error, Result};
use crate::model::*;
use crate::traits::{CronRunFilter, DeploymentFilter, Store};

/// The migrations, in order: `(version, sql)`. Append only; never edit a shipped one.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/postgres/0001_initial.sql")),
    (2, include_str!("migrations/postgres/0002_cron_runs.sql")),
];

/// The advisory lock key migrations hold ("wharf" in ASCII).
const MIGRATION_LOCK: i64 = 0x0077_6861_7266;

const BACKEND: &str = "postgres";

/// How to connect a [`PostgresStore`].
#[derive(Clone)]
pub struct PostgresConfig {
    url: String,
    schema: Option<String>,
    max_connections: u32,
    acquire_timeout: Duration,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

impl PostgresConfig {
    /// A configuration for the database at `url`
    /// (`postgres://user:password@host:port/database`), with 10 connections at most,
    /// waiting up to 10 seconds for a free one.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            schema: None,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
        }
    }

    /// Keeps Wharf's tables in this schema (created if missing) instead of the user's
    /// default one, e.g. to share a database with other applications. A lower-case
    /// SQL identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The most connections the store opens (at least 1).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long an operation waits for a free connection before failing as
    /// Unavailable.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }
}

/// A [`Store`] backed by a PostgreSQL database, which several Wharf control planes
/// may share: deployment updates compare-and-set on their version, so two engines
/// never both move one deployment.
///
/// Cheap to clone: clones share one connection pool.
///
/// ```no_run
/// # async fn demo() -> wharf_core::Result<()> {
/// use std::sync::Arc;
/// use wharf_core::store::{PostgresConfig, PostgresStore};
/// use wharf_core::DynStore;
///
/// let store = PostgresStore::connect_with(
///     PostgresConfig::new("postgres://wharf:secret@127.0.0.1:5432/wharf")
///         .schema("wharf")
///         .max_connections(16),
/// )
/// .await?;
/// let store: DynStore = Arc::new(store);
/// # let _ = store; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    target: String,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("database", &self.target)
            .finish_non_exhaustive()
    }
}

/// `url` with any password replaced by `***`, for messages and Debug.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparsable url>".into();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.into();
    };
    let user = userinfo.split(':').next().unwrap_or_default();
    let tail = tail.split('?').next().unwrap_or_default();
    format!("{scheme}://{user}:***@{host}{tail}")
}

fn validate_schema(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let ok = schema.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with("pg_");
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid PostgreSQL schema name {schema:?}: use lower-case letters, digits and \
             '_', starting with a letter or '_', at most 63 bytes, not starting with 'pg_'"
        )))
    }
}

impl PostgresStore {
    /// Connects to the database at `url` with the default [`PostgresConfig`] and brings
    /// its schema up to date.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(PostgresConfig::new(url)).await
    }

    /// Connects as `config` says and brings the schema up to date.
    ///
    /// Fails with InvalidInput for a malformed URL or schema name, Unavailable when
    /// the server cannot be reached, and Unsupported when the database's schema is
    /// newer than this version of Wharf knows.
    pub async fn connect_with(config: PostgresConfig) -> Result<Self> {
        let target = redact(&config.url);
        let context = || format!("cannot open the store database {target}");
        let mut options = PgConnectOptions::from_str(&config.url).map_err(|e| {
            Error::invalid(format!("malformed PostgreSQL URL {target}: {e}")).with_backend(BACKEND)
        })?;
        options = options.application_name("wharf");
        if let Some(schema) = &config.schema {
            validate_schema(schema)?;
            options = options.options([("search_path", schema.as_str())]);
        }
        // One direct connection first: the pool retries until its timeout and then
        // reports only that it timed out, hiding why (refused, bad password, no such
        // database).
        let probe = options
            .connect()
            .await
            .map_err(|e| sql_error(e).context(context()))?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|e| sql_error(e).context(context()))?;
        let store = PostgresStore {
            pool,
            target: match &config.schema {
                Some(s) => format!("{target} (schema {s})"),
                None => target.clone(),
            },
        };
        if let Some(schema) = &config.schema {
            // Validated above: a plain identifier, safe to splice.
            sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .execute(&store.pool)
                .await
                .or_else(|e| match e.as_database_error().and_then(|d| d.code()) {
                    // Two stores creating the schema at once: the loser sees a
                    // duplicate; the schema is there either way.
                    Some(code) if code == "23505" || code == "42P06" => Ok(Default::default()),
                    _ => Err(e),
                })
                .map_err(|e| sql_error(e).context(context()))?;
        }
        store.migrate().await.map_err(|e| e.context(context()))?;
        Ok(store)
    }

    /// Closes every connection; later operations on this store (and its clones) fail
    /// as Unavailable.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The schema migrations applied to the database, oldest first.
    pub async fn schema_versions(&self) -> Result<Vec<i64>> {
        sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)
    }

    /// Runs administrative SQL (several statements allowed, no parameters) on the
    /// store's database, in its schema: for maintenance scripts and tests. Never pass
    /// it text from an untrusted source.
    pub async fn execute_unprepared(&self, sql: &str) -> Result<()> {
        sqlx::raw_sql(sql)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(sql_error)
    }

    /// Brings the schema up to date, one migration per transaction, each under an
    /// advisory lock so concurrent starts migrate once.
    async fn migrate(&self) -> Result<()> {
        let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        for &(version, sql) in MIGRATIONS {
            let run = async {
                let mut tx = self.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(MIGRATION_LOCK)
                    .execute(&mut *tx)
                    .await?;
                sqlx::raw_sql(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (
                         version    BIGINT PRIMARY KEY,
                         applied_at BIGINT NOT NULL
                     )",
                )
                .execute(&mut *tx)
                .await?;
                let newest: i64 =
                    sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM schema_migrations")
                        .fetch_one(&mut *tx)
                        .await?;
                if newest > known {
                    return Err(Fail::Wharf(
                        Error::unsupported(format!(
                            "the database schema is at version {newest}, newer than the newest \
                             this version of Wharf knows ({known}); use a newer Wharf"
                        ))
                        .with_backend(BACKEND),
                    ));
                }
                let applied: Option<i32> =
                    sqlx::query_scalar("SELECT 1 FROM schema_migrations WHERE version = $1")
                        .bind(version)
                        .fetch_optional(&mut *tx)
                        .await?;
                if applied.is_none() {
                    sqlx::raw_sql(sql).execute(&mut *tx).await?;
                    sqlx::query(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    )
                    .bind(version)
                    .bind(Timestamp::now().0)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            };
            run.await
                .map_err(|e| Error::from(e).context(format!("schema migration {version}")))?;
        }
        Ok(())
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, Fail> {
        Ok(self.pool.begin().await?)
    }

    /// Runs `f` in a transaction, committing if it succeeds (rolling back otherwise).
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        F: for<'t> FnOnce(&'t mut Transaction<'static, Postgres>) -> BoxFut<'t, T>,
    {
        let run = async {
            let mut tx = self.begin().await?;
            let out = f(&mut tx).await?;
            tx.commit().await?;
            Ok::<T, Fail>(out)
        };
        run.await.map_err(Error::from)
    }
}

type BoxFut<'t, T> = futures::future::BoxFuture<'t, Result<T, Fail>>;

/// A failure inside a store operation (see [`super::sql::Fail`]).
type Fail = super::sql::Fail<sqlx::Error>;

impl super::sql::DbError for sqlx::Error {
    fn into_error(self) -> Error {
        sql_error(self)
    }
}

/// Maps a database error by meaning (SQLSTATE codes where the server sent one):
/// unreachable, overloaded, serialization failures and deadlocks are Unavailable
/// (retryable); constraint violations are Conflicts; text PostgreSQL cannot hold (NUL
/// bytes, bad encoding) is InvalidInput; anything else is Internal.
fn sql_error(e: sqlx::Error) -> Error {
    let err = match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.as_str() {
                "23505" | "23503" | "23514" => {
                    Error::conflict(format!("the change clashes with a stored record: {db}"))
                }
                "40001" | "40P01" | "55P03" => Error::unavailable(format!(
                    "the database could not serialise this change with a concurrent one \
                     (retry it): {db}"
                )),
                "22021" | "22P05" => {
                    Error::invalid(format!("PostgreSQL cannot store this text: {db}"))
                }
                c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57") => {
                    Error::unavailable(format!("the database is unavailable: {db}"))
                }
                "28P01" | "28000" => {
                    Error::unavailable(format!("the database refused the credentials: {db}"))
                        .with_retryable(false)
                }
                "3D000" => Error::unavailable(format!("the database does not exist: {db}"))
                    .with_retryable(false),
                _ => Error::internal(format!("PostgreSQL failed ({code}): {db}")),
            }
        }
        sqlx::Error::Io(io) => Error::unavailable(format!("cannot reach the database: {io}")),
        sqlx::Error::PoolTimedOut => Error::unavailable(
            "no database connection became free in time (the pool is exhausted or the server is \
             unreachable)",
        ),
        sqlx::Error::PoolClosed => {
            Error::unavailable("the store's connection pool is closed").with_retryable(false)
        }
        sqlx::Error::Configuration(c) => {
            Error::invalid(format!("bad PostgreSQL configuration: {c}"))
        }
        other => Error::internal(format!("PostgreSQL client failed: {other}")),
    };
    err.with_backend(BACKEND).with_source(e)
}

fn decode<T: DeserializeOwned>(what: &str, body: &str) -> Result<T, Fail> {
    Ok(super::sql::decode(BACKEND, what, body)?)
}

fn decode_all<T: DeserializeOwned>(what: &str, bodies: Vec<String>) -> Result<Vec<T>, Fail> {
    bodies.iter().map(|b| decode(what, b)).collect()
}

fn not_found(what: &str, id: impl fmt::Display) -> Fail {
    Fail::Wharf(Error::not_found(format!("{what} {id} not found")))
}

/// Whether `sql` (with `$1` bound to `id`) returns a row.
async fn exists(
    tx: &mut Transaction<'static, Postgres>,
    sql: &str,
    id: &str,
) -> Result<bool, Fail> {
    let row: Option<i32> = sqlx::query_scalar(sql)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.is_some())
}

/// Deletes the services `where_clause` selects (with `$1` bound to `key`) along with
/// their deployments, releases, events and cron runs.
async fn remove_services(
    tx: &mut Transaction<'static, Postgres>,
    where_clause: &str,
    key: &str,
) -> Result<(), Fail> {
    // Lock the services first: a concurrent insert_deployment or insert_release
    // (which lock their service) then either commits before this delete sees its
    // rows, or waits and finds the service gone. Nothing is left orphaned.
    sqlx::query(&format!(
        "SELECT id FROM services WHERE {where_clause} FOR UPDATE"
    ))
    .bind(key)
    .execute(&mut **tx)
    .await?;
    for table in ["deployments", "events", "releases", "cron_runs"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE service IN (SELECT id FROM services WHERE {where_clause})"
        ))
        .bind(key)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query(&format!("DELETE FROM services WHERE {where_clause}"))
        .bind(key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn read_deployment(body: &str, version: i64) -> Result<Deployment, Fail> {
    let mut d: Deployment = decode("deployment", body)?;
    d.version = version as u64;
    Ok(d)
}

impl PostgresStore {
    async fn body_of(&self, what: &str, sql: &str, id: &str) -> Result<Option<String>> {
        sqlx::query_scalar(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| sql_error(e).context(format!("cannot read {what} {id}")))
    }

    async fn bodies<T: DeserializeOwned>(
        &self,
        what: &str,
        sql: &str,
        key: Option<&str>,
    ) -> Result<Vec<T>> {
        let mut q = sqlx::query_scalar::<_, String>(sql);
        if let Some(key) = key {
            q = q.bind(key.to_owned());
        }
        let rows = q.fetch_all(&self.pool).await.map_err(sql_error)?;
        Ok(decode_all(what, rows)?)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn put_project(&self, project: &Project) -> Result<()> {
        validate_name(&project.name)?;
        let body = encode("project", project)?;
        let (id, name) = (project.id.0.clone(), project.name.clone());
        self.write(move |tx| {
            Box::pin(async move {
                let other: Option<String> =
                    sqlx::query_scalar("SELECT id FROM projects WHERE name = $1 AND id <> $2")
                        .bind(&name)
                        .bind(&id)
                        .fetch_optional(&mut **tx)
                        .await?;
                if let Some(other) = other {
                    return Err(Error::conflict(format!(
                        "project name {name:?} is already used by project {other}"
                    ))
                    .into());
                }
                sqlx::query(
                    "INSERT INTO projects (id, name, body) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, body = excluded.body",
                )
                .bind(&id)
                .bind(&name)
                .bind(&body)
                .execute(&mut **tx)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn project(&self, id: &ProjectId) -> Result<Project> {
        match self
            .body_of("project", "SELECT body FROM projects WHERE id = $1", &id.0)
            .await?
        {
            Some(b) => Ok(decode("project", &b)?),
            None => Err(not_found("project", id).into()),
        }
    }

    async fn project_by_name(&self, name: &str) -> Result<Project> {
        // Indexed: projects_name_unique.
        match self
            .body_of("project", "SELECT body FROM projects WHERE name = $1", name)
            .await?
        {
            Some(b) => Ok(decode("project", &b)?),
            None => Err(super::project_name_not_found(name)),
        }
    }

    async fn projects(&self) -> Result<Vec<Project>> {
        self.bodies("project", "SELECT body FROM projects ORDER BY name", None)
            .await
    }

    async fn delete_project(&self, id: &ProjectId) -> Result<()> {
        let id = id.clone();
        self.write(move |tx| {
            Box::pin(async move {
                if !exists(tx, "SELECT 1 FROM projects WHERE id = $1 FOR UPDATE", &id.0).await? {
                    return Err(not_found("project", &id));
                }
                remove_services(tx, "project = $1", &id.0).await?;
                sqlx::query("DELETE FROM environments WHERE project = $1")
                    .bind(&id.0)
                    .execute(&mut **tx)
                    .await?;
                sqlx::query("DELETE FROM projects WHERE id = $1")
                    .bind(&id.0)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn put_environment(&self, env: &Environment) -> Result<()> {
        validate_name(&env.name)?;
        let body = encode("environment", env)?;
        let env = env.clone();
        self.write(move |tx| {
            Box::pin(async move {
                if !exists(tx, "SELECT 1 FROM projects WHERE id = $1", &env.project.0).await? {
                    return Err(not_found("project", &env.project));
                }
                let taken: Option<i32> = sqlx::query_scalar(
                    "SELECT 1 FROM environments WHERE project = $1 AND name = $2 AND id <> $3",
                )
                .bind(&env.project.0)
                .bind(&env.name)
                .bind(&env.id.0)
                .fetch_optional(&mut **tx)
                .await?;
                if taken.is_some() {
                    return Err(Error::conflict(format!(
                        "environment name {:?} is already used in project {}",
                        env.name, env.project
                    ))
                    .into());
                }
                sqlx::query(
                    "INSERT INTO environments (id, project, name, body) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (id) DO UPDATE
                     SET project = excluded.project, name = excluded.name, body = excluded.body",
                )
                .bind(&env.id.0)
                .bind(&env.project.0)
                .bind(&env.name)
                .bind(&body)
                .execute(&mut **tx)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn environment(&self, id: &EnvironmentId) -> Result<Environment> {
        match self
            .body_of(
                "environment",
                "SELECT body FROM environments WHERE id = $1",
                &id.0,
            )
            .await?
        {
            Some(b) => Ok(decode("environment", &b)?),
            None => Err(not_found("environment", id).into()),
        }
    }

    async fn environment_by_name(&self, project: &ProjectId, name: &str) -> Result<Environment> {
        // Indexed: environments_name_unique (project, name).
        let body: Option<String> =
            sqlx::query_scalar("SELECT body FROM environments WHERE project = $1 AND name = $2")
                .bind(&project.0)
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| sql_error(e).context(format!("cannot read environment {name:?}")))?;
        match body {
            Some(b) => Ok(decode("environment", &b)?),
            None => Err(super::environment_name_not_found(project, name)),
        }
    }

    async fn environments(&self, project: &ProjectId) -> Result<Vec<Environment>> {
        self.bodies(
            "environment",
            r#"SELECT body FROM environments WHERE project = $1 ORDER BY name, id COLLATE "C""#,
            Some(&project.0),
        )
        .await
    }

    async fn delete_environment(&self, id: &EnvironmentId) -> Result<()> {
        let id = id.clone();
        self.write(move |tx| {
            Box::pin(async move {
                if !exists(
                    tx,
                    "SELECT 1 FROM environments WHERE id = $1 FOR UPDATE",
                    &id.0,
                )
                .await?
                {
                    return Err(not_found("environment", &id));
                }
                remove_services(tx, "environment = $1", &id.0).await?;
                sqlx::query("DELETE FROM environments WHERE id = $1")
                    .bind(&id.0)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn put_service(&self, service: &Service) -> Result<()> {
        service.validate()?;
        let body = encode("service", service)?;
        let s = service.clone();
        self.write(move |tx| {
            Box::pin(async move {
                if !exists(tx, "SELECT 1 FROM projects WHERE id = $1", &s.project.0).await? {
                    return Err(not_found("project", &s.project));
                }
                let env = s.environment.as_ref().map(|e| e.0.clone());
                if let Some(env) = &s.environment {
                    let owner: Option<String> =
                        sqlx::query_scalar("SELECT project FROM environments WHERE id = $1")
                            .bind(&env.0)
                            .fetch_optional(&mut **tx)
                            .await?;
                    if owner.as_deref() != Some(s.project.as_str()) {
                        return Err(not_found("environment", env));
                    }
                }
                let taken: Option<i32> = sqlx::query_scalar(
                    "SELECT 1 FROM services
                     WHERE project = $1 AND environment IS NOT DISTINCT FROM $2
                       AND name = $3 AND id <> $4",
                )
                .bind(&s.project.0)
                .bind(&env)
                .bind(&s.name)
                .bind(&s.id.0)
                .fetch_optional(&mut **tx)
                .await?;
                if taken.is_some() {
                    return Err(Error::conflict(format!(
                        "service name {:?} is already used in project {}",
                        s.name, s.project
                    ))
                    .into());
                }
                let old_project: Option<String> =
                    sqlx::query_scalar("SELECT project FROM services WHERE id = $1")
                        .bind(&s.id.0)
                        .fetch_optional(&mut **tx)
                        .await?;
                if old_project.is_some_and(|p| p != s.project.0) {
                    return Err(Error::invalid(format!(
                        "service {} cannot move to another project",
                        s.id
                    ))
                    .into());
                }
                sqlx::query(
                    "INSERT INTO services (id, project, environment, name, body)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (id) DO UPDATE SET
                       environment = excluded.environment, name = excluded.name,
                       body = excluded.body",
                )
                .bind(&s.id.0)
                .bind(&s.project.0)
                .bind(&env)
                .bind(&s.name)
                .bind(&body)
                .execute(&mut **tx)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn service(&self, id: &ServiceId) -> Result<Service> {
        match self
            .body_of("service", "SELECT body FROM services WHERE id = $1", &id.0)
            .await?
        {
            Some(b) => Ok(decode("service", &b)?),
            None => Err(not_found("service", id).into()),
        }
    }

    async fn service_by_name(
        &self,
        project: &ProjectId,
        environment: Option<&EnvironmentId>,
        name: &str,
    ) -> Result<Service> {
        // Indexed: services_by_project (project, name).
        let body: Option<String> = sqlx::query_scalar(
            "SELECT body FROM services
             WHERE project = $1 AND name = $2 AND environment IS NOT DISTINCT FROM $3",
        )
        .bind(&project.0)
        .bind(name)
        .bind(environment.map(|e| e.0.as_str()))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| sql_error(e).context(format!("cannot read service {name:?}")))?;
        match body {
            Some(b) => Ok(decode("service", &b)?),
            None => Err(super::service_name_not_found(project, environment, name)),
        }
    }

    async fn services(&self, project: &ProjectId) -> Result<Vec<Service>> {
        self.bodies(
            "service",
            r#"SELECT body FROM services WHERE project = $1 ORDER BY name, id COLLATE "C""#,
            Some(&project.0),
        )
        .await
    }

    async fn delete_service(&self, id: &ServiceId) -> Result<()> {
        let id = id.clone();
        self.write(move |tx| {
            Box::pin(async move {
                if !exists(tx, "SELECT 1 FROM services WHERE id = $1 FOR UPDATE", &id.0).await? {
                    return Err(not_found("service", &id));
                }
                remove_services(tx, "id = $1", &id.0).await?;
                Ok(())
            })
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
            Box::pin(async move {
                // FOR SHARE: the service cannot be deleted before this commits.
                if !exists(
                    tx,
                    "SELECT 1 FROM services WHERE id = $1 FOR SHARE",
                    &d.service.0,
                )
                .await?
                {
                    return Err(not_found("service", &d.service));
                }
                let inserted = sqlx::query(
                    "INSERT INTO deployments (id, project, service, state, active, version, body)
                     VALUES ($1, $2, $3, $4, $5, 0, $6)
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&d.id.0)
                .bind(&d.project.0)
                .bind(&d.service.0)
                .bind(d.state.name())
                .bind(d.state.is_active())
                .bind(&body)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    return Err(
                        Error::conflict(format!("deployment {} already exists", d.id)).into(),
                    );
                }
                Ok(())
            })
        })
        .await
    }

    async fn deployment(&self, id: &DeploymentId) -> Result<Deployment> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT body, version FROM deployments WHERE id = $1")
                .bind(&id.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(sql_error)?;
        match row {
            Some((body, version)) => Ok(read_deployment(&body, version)?),
            None => Err(not_found("deployment", id).into()),
        }
    }

    async fn deployments(&self, filter: &DeploymentFilter) -> Result<Vec<Deployment>> {
        let limit = filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT body, version FROM deployments
             WHERE ($1::text IS NULL OR project = $1)
               AND ($2::text IS NULL OR service = $2)
               AND (NOT $3 OR active)
             ORDER BY ord DESC
             LIMIT $4",
        )
        .bind(filter.project.as_ref().map(|p| p.0.as_str()))
        .bind(filter.service.as_ref().map(|s| s.0.as_str()))
        .bind(filter.active_only)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error)?;
        rows.iter()
            .map(|(body, version)| read_deployment(body, *version).map_err(Error::from))
            .collect()
    }

    async fn update_deployment(&self, deployment: &Deployment) -> Result<Deployment> {
        let asked = deployment.version;
        let Ok(expected) = i64::try_from(asked) else {
            // No stored version can be this large: stale by definition.
            self.deployment(&deployment.id).await?;
            return Err(Error::conflict(format!(
                "deployment {} was changed concurrently (version {asked} expected)",
                deployment.id
            )));
        };
        let mut next = deployment.clone();
        next.version = asked.saturating_add(1);
        let body = encode("deployment", &next)?;
        // One statement: a racing updater waits for this row lock, then re-checks the
        // version against the committed row and updates nothing.
        let changed = sqlx::query(
            "UPDATE deployments
             SET body = $1, version = version + 1, state = $2, active = $3,
                 project = $4, service = $5
             WHERE id = $6 AND version = $7",
        )
        .bind(&body)
        .bind(next.state.name())
        .bind(next.state.is_active())
        .bind(&next.project.0)
        .bind(&next.service.0)
        .bind(&next.id.0)
        .bind(expected)
        .execute(&self.pool)
        .await
        .map_err(sql_error)?
        .rows_affected();
        if changed == 0 {
            let stored: Option<i64> =
                sqlx::query_scalar("SELECT version FROM deployments WHERE id = $1")
                    .bind(&next.id.0)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(sql_error)?;
            return Err(match stored {
                None => not_found("deployment", &next.id).into(),
                Some(stored) => Error::conflict(format!(
                    "deployment {} was changed concurrently (version {asked} expected, {stored} \
                     stored)",
                    next.id
                )),
            });
        }
        Ok(next)
    }

    async fn insert_release(&self, release: &Release) -> Result<()> {
        let body = encode("release", release)?;
        let r = release.clone();
        self.write(move |tx| {
            Box::pin(async move {
                // FOR UPDATE: concurrent releases of one service take turns, so the
                // "next number" check below sees the latest one.
                if !exists(
                    tx,
                    "SELECT 1 FROM services WHERE id = $1 FOR UPDATE",
                    &r.service.0,
                )
                .await?
                {
                    return Err(not_found("service", &r.service));
                }
                if exists(tx, "SELECT 1 FROM releases WHERE id = $1", &r.id.0).await? {
                    return Err(Error::conflict(format!("release {} already exists", r.id)).into());
                }
                let last: i64 = sqlx::query_scalar(
                    "SELECT coalesce(max(number), 0) FROM releases WHERE service = $1",
                )
                .bind(&r.service.0)
                .fetch_one(&mut **tx)
                .await?;
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
                sqlx::query(
                    "INSERT INTO releases (id, project, service, number, deployment, body)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&r.id.0)
                .bind(&r.project.0)
                .bind(&r.service.0)
                .bind(number)
                .bind(&r.deployment.0)
                .bind(&body)
                .execute(&mut **tx)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn release(&self, id: &ReleaseId) -> Result<Release> {
        match self
            .body_of("release", "SELECT body FROM releases WHERE id = $1", &id.0)
            .await?
        {
            Some(b) => Ok(decode("release", &b)?),
            None => Err(not_found("release", id).into()),
        }
    }

    async fn releases(&self, service: &ServiceId) -> Result<Vec<Release>> {
        self.bodies(
            "release",
            "SELECT body FROM releases WHERE service = $1 ORDER BY number DESC",
            Some(&service.0),
        )
        .await
    }

    async fn append_events(&self, events: Vec<Event>) -> Result<Vec<Event>> {
        if events.is_empty() {
            return Ok(events);
        }
        let count = i64::try_from(events.len())
            .map_err(|_| Error::invalid("too many events in one append"))?;
        self.write(move |tx| {
            Box::pin(async move {
                // Reserves `count` numbers; the row lock is held until commit, so
                // appends commit in sequence order.
                let last: i64 = sqlx::query_scalar(
                    "UPDATE event_seq SET last = last + $1 WHERE one RETURNING last",
                )
                .bind(count)
                .fetch_one(&mut **tx)
                .await?;
                let mut seq = last - count;
                let mut out = Vec::with_capacity(events.len());
                let (mut seqs, mut deps, mut svcs, mut bodies) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for mut e in events {
                    seq += 1;
                    e.seq = seq as u64;
                    bodies.push(encode("event", &e)?);
                    seqs.push(seq);
                    deps.push(e.deployment.0.clone());
                    svcs.push(e.service.0.clone());
                    out.push(e);
                }
                sqlx::query(
                    "INSERT INTO events (seq, deployment, service, body)
                     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])",
                )
                .bind(&seqs)
                .bind(&deps)
                .bind(&svcs)
                .bind(&bodies)
                .execute(&mut **tx)
                .await?;
                Ok(out)
            })
        })
        .await
    }

    async fn events(&self, deployment: &DeploymentId, after: u64) -> Result<Vec<Event>> {
        let Ok(after) = i64::try_from(after) else {
            return Ok(Vec::new());
        };
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, body FROM events WHERE deployment = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(&deployment.0)
        .bind(after)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for (seq, body) in rows {
            let mut e: Event = decode("event", &body)?;
            e.seq = seq as u64;
            out.push(e);
        }
        Ok(out)
    }
    async fn insert_cron_run(&self, run: &CronRun) -> Result<()> {
        run.validate()?;
        let body = encode("cron run", run)?;
        let r = run.clone();
        self.write(move |tx| {
            Box::pin(async move {
                // FOR SHARE: the service cannot be deleted before this commits.
                if !exists(
                    tx,
                    "SELECT 1 FROM services WHERE id = $1 FOR SHARE",
                    &r.service.0,
                )
                .await?
                {
                    return Err(not_found("service", &r.service));
                }
                let inserted = sqlx::query(
                    "INSERT INTO cron_runs (id, project, service, job, outcome, body)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&r.id.0)
                .bind(&r.project.0)
                .bind(&r.service.0)
                .bind(&r.job)
                .bind(r.outcome.as_str())
                .bind(&body)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    return Err(Error::conflict(format!("cron run {} already exists", r.id)).into());
                }
                Ok(())
            })
        })
        .await
    }

    async fn update_cron_run(&self, run: &CronRun) -> Result<()> {
        run.validate()?;
        let r = run.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let stored: Option<String> =
                    sqlx::query_scalar("SELECT body FROM cron_runs WHERE id = $1 FOR UPDATE")
                        .bind(&r.id.0)
                        .fetch_optional(&mut **tx)
                        .await?;
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
                sqlx::query("UPDATE cron_runs SET outcome = $1, body = $2 WHERE id = $3")
                    .bind(next.outcome.as_str())
                    .bind(&body)
                    .bind(&next.id.0)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn cron_runs(&self, filter: &CronRunFilter) -> Result<Vec<CronRun>> {
        let limit = filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM cron_runs
             WHERE ($1::text IS NULL OR project = $1)
               AND ($2::text IS NULL OR service = $2)
               AND ($3::text IS NULL OR job = $3)
               AND ($4::text IS NULL OR outcome = $4)
             ORDER BY ord DESC
             LIMIT $5",
        )
        .bind(filter.project.as_ref().map(|p| p.0.as_str()))
        .bind(filter.service.as_ref().map(|s| s.0.as_str()))
        .bind(filter.job.as_deref())
        .bind(filter.outcome.map(|o| o.as_str()))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(decode_all("cron run", rows)?)
    }

    async fn prune_cron_runs(&self, service: &ServiceId, job: &str, keep: usize) -> Result<u64> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let gone = sqlx::query(
            "DELETE FROM cron_runs
             WHERE service = $1 AND job = $2 AND outcome <> 'running'
               AND ord NOT IN (
                   SELECT ord FROM cron_runs
                   WHERE service = $1 AND job = $2 AND outcome <> 'running'
                   ORDER BY ord DESC LIMIT $3)",
        )
        .bind(&service.0)
        .bind(job)
        .bind(keep)
        .execute(&self.pool)
        .await
        .map_err(sql_error)?
        .rows_affected();
        Ok(gone)
    }
}
