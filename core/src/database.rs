//! Managed databases: PostgreSQL, MySQL/MariaDB and Redis made from templates.
//!
//! A managed database is an ordinary [`Service`] with [`Service::database`] set: it
//! runs the engine's image, keeps its data in a named volume, starts with generated
//! credentials held as secrets of that service, is health-checked at the protocol
//! level ([`crate::dbprobe`]) and gets no public route unless asked
//! ([`DatabaseSpec::public`]): other services of the project reach it on the project
//! network, through references such as `${{ db.DATABASE_URL }}`.
//!
//! A database service exports, for [`crate::refs`]: `HOST` and `PORT` (the built-ins),
//! `USER`, `PASSWORD` (a secret), `DATABASE`, and the connection URL (a secret):
//! `DATABASE_URL` for PostgreSQL and MySQL, `REDIS_URL` for Redis, made from the
//! database's address on the project network when the reference is resolved.
//!
//! Images: [`DbEngine::image`] names the production image (`postgres:15`,
//! `mariadb:10.11`, `redis:7`); an operator without a registry maps them to local
//! ones with an [`ImageMap`] such as [`local_images`] (`scripts/base-images` builds
//! `wharf-local/postgres:15`, `wharf-local/mariadb:10.11` and `wharf-local/redis:7`
//! from Debian's packages).
//!
//! ```
//! use wharf_core::database::{self, DatabaseSpec, DbEngine};
//! use wharf_core::{ProjectId, Probe};
//!
//! let spec = DatabaseSpec::new(DbEngine::Postgres, None)?;
//! let svc = database::service(&ProjectId::random(), "db", spec, &database::local_images())?;
//! assert_eq!(svc.port, Some(5432));
//! assert_eq!(svc.health_check.as_ref().unwrap().probe, Probe::Postgres);
//! assert!(svc.env["POSTGRES_PASSWORD"].is_secret());
//! assert!(!svc.routed());
//! let url = database::exports(&svc.env, svc.database.as_ref().unwrap(), "db", 5432);
//! assert!(url["DATABASE_URL"].expose().starts_with("postgres://db:"));
//! # Ok::<(), wharf_core::Error>(())
//! ```

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};

use crate::detect::ImageMap;
use crate::error::{Error, Result};
use crate::model::{
    EnvValue, EnvVars, HealthCheck, Probe, ProjectId, Secret, Service, SourceSpec, VolumeMount,
};

/// The variable holding the database user.
pub const USER: &str = "USER";
/// The variable holding the password (a secret).
pub const PASSWORD: &str = "PASSWORD";
/// The variable holding the database name (`0` for Redis).
pub const DATABASE: &str = "DATABASE";

/// What a URL's user, password and path keep as they are: RFC 3986's unreserved
/// characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A database engine Wharf knows a template for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DbEngine {
    /// PostgreSQL.
    Postgres,
    /// MySQL, served by MariaDB (the image Debian ships).
    Mysql,
    /// Redis.
    Redis,
}

impl DbEngine {
    /// Every engine, in a stable order.
    pub const ALL: [DbEngine; 3] = [DbEngine::Postgres, DbEngine::Mysql, DbEngine::Redis];

    /// Its name on the wire and in `wharf.toml`: `postgres`, `mysql`, `redis`.
    pub fn as_str(self) -> &'static str {
        match self {
            DbEngine::Postgres => "postgres",
            DbEngine::Mysql => "mysql",
            DbEngine::Redis => "redis",
        }
    }

    /// The version made when none is asked for.
    pub fn default_version(self) -> &'static str {
        match self {
            DbEngine::Postgres => "15",
            DbEngine::Mysql => "10.11",
            DbEngine::Redis => "7",
        }
    }

    /// The production image's repository (`postgres`, `mariadb`, `redis`).
    pub fn repository(self) -> &'static str {
        match self {
            DbEngine::Postgres => "postgres",
            DbEngine::Mysql => "mariadb",
            DbEngine::Redis => "redis",
        }
    }

    /// The production image of `version`: `postgres:15`.
    pub fn image(self, version: &str) -> String {
        format!("{}:{version}", self.repository())
    }

    /// The image `scripts/base-images` builds locally for the default version:
    /// `wharf-local/postgres:15`.
    pub fn local_image(self) -> String {
        format!("wharf-local/{}", self.image(self.default_version()))
    }

    /// The port the server listens on inside its instance.
    pub fn port(self) -> u16 {
        match self {
            DbEngine::Postgres => 5432,
            DbEngine::Mysql => 3306,
            DbEngine::Redis => 6379,
        }
    }

    /// Where the server keeps its data (the volume's mount path).
    pub fn data_path(self) -> &'static str {
        match self {
            DbEngine::Postgres => "/var/lib/postgresql/data",
            DbEngine::Mysql => "/var/lib/mysql",
            DbEngine::Redis => "/data",
        }
    }

    /// Its protocol-level health probe.
    pub fn probe(self) -> Probe {
        match self {
            DbEngine::Postgres => Probe::Postgres,
            DbEngine::Mysql => Probe::Mysql,
            DbEngine::Redis => Probe::Redis,
        }
    }

    /// The variable its connection URL is exported as.
    pub fn url_var(self) -> &'static str {
        match self {
            DbEngine::Postgres | DbEngine::Mysql => "DATABASE_URL",
            DbEngine::Redis => "REDIS_URL",
        }
    }

    /// The variables a reference to such a database may name besides its own env:
    /// the connection URL (HOST and PORT are built-ins of every service).
    pub fn computed_vars(self) -> [&'static str; 1] {
        [self.url_var()]
    }
}

impl std::fmt::Display for DbEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DbEngine {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" | "pg" => Ok(DbEngine::Postgres),
            "mysql" | "mariadb" => Ok(DbEngine::Mysql),
            "redis" => Ok(DbEngine::Redis),
            _ => Err(Error::invalid(format!(
                "unknown database engine {s:?} (known: postgres, mysql, mariadb, redis)"
            ))),
        }
    }
}

/// What makes a service a managed database ([`Service::database`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DatabaseSpec {
    /// Its engine.
    pub engine: DbEngine,
    /// The engine's version (the image tag).
    pub version: String,
    /// Whether it gets a public route (off: reachable on the project network only).
    #[serde(default)]
    pub public: bool,
}

impl DatabaseSpec {
    /// A private database of `engine` at `version` (its default when `None`).
    /// Fails on a version that cannot be an image tag.
    pub fn new(engine: DbEngine, version: Option<&str>) -> Result<Self> {
        let spec = DatabaseSpec {
            engine,
            version: version.unwrap_or(engine.default_version()).to_owned(),
            public: false,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the version is a plausible image tag (`15`, `10.11`, `7.2-alpine`).
    pub fn validate(&self) -> Result<()> {
        let v = &self.version;
        let ok = !v.is_empty()
            && v.len() <= 64
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "invalid {} version {v:?}: use an image tag such as {:?}",
                self.engine,
                self.engine.default_version()
            )))
        }
    }
}

/// An [`ImageMap`] from each engine's production image to the one
/// `scripts/base-images` builds (`postgres:15=wharf-local/postgres:15`, ...).
pub fn local_images() -> ImageMap {
    let mut map = ImageMap::new();
    for e in DbEngine::ALL {
        map.insert(e.image(e.default_version()), e.local_image());
    }
    map
}

/// A database's generated credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user (`default` for Redis).
    pub user: String,
    /// The password: 32 characters from `[A-Za-z0-9]`, drawn from the OS's CSPRNG
    /// (about 190 bits).
    pub password: Secret,
    /// The database name (`0` for Redis).
    pub database: String,
}

impl Credentials {
    /// New credentials for the database service `name`: user and database named
    /// after it (`-` becomes `_`; `_app` appended to a name the engine keeps for
    /// itself, such as MariaDB's `mysql` user and system database), a random
    /// password.
    pub fn generate(engine: DbEngine, name: &str) -> Self {
        /// Users and databases MariaDB/MySQL make themselves: a user `mysql` would
        /// lose to the socket-authenticated `mysql@localhost`.
        const MYSQL_RESERVED: [&str; 5] = [
            "mysql",
            "root",
            "sys",
            "information_schema",
            "performance_schema",
        ];
        let mut ident = name.replace('-', "_");
        if engine == DbEngine::Mysql && MYSQL_RESERVED.contains(&ident.as_str()) {
            ident.push_str("_app");
        }
        let (user, database) = match engine {
            DbEngine::Redis => ("default".to_owned(), "0".to_owned()),
            DbEngine::Postgres | DbEngine::Mysql => (ident.clone(), ident),
        };
        Credentials {
            user,
            password: Secret::new(random_password(32)),
            database,
        }
    }

    /// The same user and database with a new random password.
    pub fn rotated(&self) -> Self {
        Credentials {
            user: self.user.clone(),
            password: Secret::new(random_password(32)),
            database: self.database.clone(),
        }
    }

    /// How the running server takes `new`'s password for this user: a command run
    /// inside its instance with `env` (the current password, or none for MariaDB's
    /// socket-authenticated root) and the statement on its standard input, never on
    /// a command line. The password is alphanumeric (as [`Credentials::generate`]
    /// and [`Credentials::rotated`] make it), else `None`; `None` for a user name
    /// that is not a plain identifier.
    pub fn rotate_command(&self, engine: DbEngine, new: &Secret) -> Option<RotateCommand> {
        let pw = new.expose();
        let ident =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if pw.len() < 16 || !pw.bytes().all(|b| b.is_ascii_alphanumeric()) || !ident(&self.user) {
            return None;
        }
        let port = engine.port().to_string();
        Some(match engine {
            // The dump's restore client: psql on the live database, as this user.
            DbEngine::Postgres => {
                let client = self.dump_commands(engine)?;
                RotateCommand {
                    command: client.restore,
                    stdin: format!("ALTER USER \"{}\" WITH PASSWORD '{pw}';\n", self.user),
                    env: client.env,
                }
            }
            DbEngine::Mysql => RotateCommand {
                command: argv(&["mariadb"]),
                stdin: format!(
                    "ALTER USER '{}'@'%' IDENTIFIED BY '{pw}'; FLUSH PRIVILEGES;\n",
                    self.user
                ),
                env: Default::default(),
            },
            DbEngine::Redis => RotateCommand {
                command: argv(&["redis-cli", "-p", &port]),
                stdin: format!("CONFIG SET requirepass {pw}\n"),
                env: [(
                    "REDISCLI_AUTH".to_owned(),
                    self.password.expose().to_owned(),
                )]
                .into(),
            },
        })
    }

    /// The credentials a database service holds in its env (`None` when it holds
    /// none: not a database, or its variables were removed).
    pub fn of(env: &EnvVars) -> Option<Self> {
        Some(Credentials {
            user: env.get(USER)?.expose().to_owned(),
            password: Secret::new(env.get(PASSWORD)?.expose()),
            database: env.get(DATABASE)?.expose().to_owned(),
        })
    }

    /// The connection URL to `host:port`, user and password percent-encoded.
    pub fn url(&self, engine: DbEngine, host: &str, port: u16) -> Secret {
        let enc = |s: &str| utf8_percent_encode(s, UNRESERVED).to_string();
        let scheme = match engine {
            DbEngine::Postgres => "postgres",
            DbEngine::Mysql => "mysql",
            DbEngine::Redis => "redis",
        };
        Secret::new(format!(
            "{scheme}://{}:{}@{host}:{port}/{}",
            enc(&self.user),
            enc(self.password.expose()),
            enc(&self.database)
        ))
    }

    /// The variables the database's instance needs to set itself up on first start,
    /// named as the production images read them (`POSTGRES_*`, `MARIADB_*` and
    /// `MYSQL_*`, `REDIS_PASSWORD`), plus [`USER`], [`PASSWORD`] and [`DATABASE`]
    /// for references. The password is a secret everywhere.
    pub fn env(&self, engine: DbEngine) -> EnvVars {
        let plain = |v: &str| EnvValue::Plain(v.to_owned());
        let secret = || EnvValue::Secret(self.password.clone());
        let mut env = EnvVars::new();
        match engine {
            DbEngine::Postgres => {
                env.insert("POSTGRES_USER".into(), plain(&self.user));
                env.insert("POSTGRES_PASSWORD".into(), secret());
                env.insert("POSTGRES_DB".into(), plain(&self.database));
            }
            DbEngine::Mysql => {
                for prefix in ["MARIADB", "MYSQL"] {
                    env.insert(format!("{prefix}_USER"), plain(&self.user));
                    env.insert(format!("{prefix}_PASSWORD"), secret());
                    env.insert(format!("{prefix}_DATABASE"), plain(&self.database));
                }
                env.insert("MARIADB_RANDOM_ROOT_PASSWORD".into(), plain("yes"));
                env.insert("MYSQL_RANDOM_ROOT_PASSWORD".into(), plain("yes"));
            }
            DbEngine::Redis => {
                env.insert("REDIS_PASSWORD".into(), secret());
            }
        }
        env.insert(USER.into(), plain(&self.user));
        env.insert(PASSWORD.into(), secret());
        env.insert(DATABASE.into(), plain(&self.database));
        env
    }
}

/// A password change run inside a database's instance (see
/// [`Credentials::rotate_command`]).
#[derive(Clone)]
pub struct RotateCommand {
    /// Program and arguments: no password.
    pub command: Vec<String>,
    /// The statement, with the new password: fed on standard input.
    pub stdin: String,
    /// The environment (the current password, as the engine's client reads it).
    pub env: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for RotateCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotateCommand")
            .field("command", &self.command)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// How to dump a database and restore a dump, by commands run inside its instance
/// (a backup's `ExecSource`): program and arguments, the password in `env` only.
#[derive(Clone, PartialEq, Eq)]
pub struct DumpCommands {
    /// Writes the dump to standard output.
    pub dump: Vec<String>,
    /// Reads a dump from standard input and restores it (replacing what the dump
    /// holds: the objects it creates are dropped first).
    pub restore: Vec<String>,
    /// The environment of both: the password, as the engine's tools read it.
    pub env: std::collections::BTreeMap<String, String>,
}

/// The commands of a restore check: a dump restored into a scratch database beside
/// the live one in the same server, one query of what it made, and the scratch
/// database dropped again. The live database is never touched.
#[derive(Clone)]
pub struct CheckCommands {
    /// Makes the scratch database.
    pub create: Vec<String>,
    /// Reads a dump from standard input into the scratch database.
    pub restore: Vec<String>,
    /// Prints how many tables the scratch database holds.
    pub query: Vec<String>,
    /// Drops the scratch database (if it exists).
    pub drop: Vec<String>,
    /// The environment of all four (the password, as the engine's tools read it).
    pub env: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for CheckCommands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckCommands")
            .field("create", &self.create)
            .field("restore", &self.restore)
            .field("query", &self.query)
            .field("drop", &self.drop)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Program and arguments as owned strings.
fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// Whether `name` may name a scratch database: `wharf_check_` and lower-case hex
/// (it is spliced into SQL and command lines).
fn scratch_ok(name: &str) -> bool {
    name.strip_prefix("wharf_check_").is_some_and(|hex| {
        !hex.is_empty()
            && hex.len() <= 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

impl std::fmt::Debug for DumpCommands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpCommands")
            .field("dump", &self.dump)
            .field("restore", &self.restore)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Credentials {
    /// The commands that dump and restore this database inside its instance, over
    /// its loopback: `pg_dump --clean --if-exists` and `psql` (`ON_ERROR_STOP`), or
    /// `mysqldump` (which drops each table before making it) and `mysql`. `None` for
    /// Redis, whose dataset is restored by replacing its files with the server
    /// stopped: back up its volume instead.
    pub fn dump_commands(&self, engine: DbEngine) -> Option<DumpCommands> {
        let port = engine.port().to_string();
        let (var, dump, restore) = match engine {
            DbEngine::Postgres => (
                "PGPASSWORD",
                argv(&[
                    "pg_dump",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    &self.user,
                    "-d",
                    &self.database,
                    "--clean",
                    "--if-exists",
                    "--no-owner",
                ]),
                argv(&[
                    "psql",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    &self.user,
                    "-d",
                    &self.database,
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                ]),
            ),
            DbEngine::Mysql => (
                "MYSQL_PWD",
                argv(&[
                    "mysqldump",
                    "-h",
                    "127.0.0.1",
                    "-P",
                    &port,
                    "-u",
                    &self.user,
                    "--single-transaction",
                    "--routines",
                    &self.database,
                ]),
                argv(&[
                    "mysql",
                    "-h",
                    "127.0.0.1",
                    "-P",
                    &port,
                    "-u",
                    &self.user,
                    &self.database,
                ]),
            ),
            DbEngine::Redis => return None,
        };
        let env = [(var.to_owned(), self.password.expose().to_owned())].into();
        Some(DumpCommands { dump, restore, env })
    }

    /// The commands of a restore check into scratch database `scratch` (named
    /// `wharf_check_<hex>`, else `None`): PostgreSQL as this user (the cluster's
    /// owner, who may create databases) over loopback; MariaDB as its root over the
    /// server's socket (the app user may not create databases), which needs the
    /// commands to run as the container's root. `None` for Redis.
    pub fn check_commands(&self, engine: DbEngine, scratch: &str) -> Option<CheckCommands> {
        if !scratch_ok(scratch) {
            return None;
        }
        let port = engine.port().to_string();
        match engine {
            DbEngine::Postgres => {
                let conn = ["-h", "127.0.0.1", "-p", &port, "-U", &self.user];
                let psql = |extra: &[&str]| {
                    let mut v = argv(&["psql"]);
                    v.extend(argv(&conn));
                    v.extend(argv(&["-d", scratch, "-q", "-v", "ON_ERROR_STOP=1"]));
                    v.extend(argv(extra));
                    v
                };
                let with = |program: &str, extra: &[&str]| {
                    let mut v = argv(&[program]);
                    v.extend(argv(&conn));
                    v.extend(argv(extra));
                    v
                };
                Some(CheckCommands {
                    create: with("createdb", &[scratch]),
                    restore: psql(&[]),
                    query: psql(&[
                        "-tAc",
                        "SELECT count(*) FROM pg_catalog.pg_tables                          WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
                    ]),
                    drop: with("dropdb", &["--if-exists", scratch]),
                    env: [("PGPASSWORD".to_owned(), self.password.expose().to_owned())].into(),
                })
            }
            DbEngine::Mysql => Some(CheckCommands {
                create: argv(&["mariadb", "-e", &format!("CREATE DATABASE `{scratch}`")]),
                restore: argv(&["mariadb", scratch]),
                query: argv(&[
                    "mariadb",
                    "-N",
                    "-e",
                    &format!(
                        "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{scratch}'"
                    ),
                ]),
                drop: argv(&["mariadb", "-e", &format!("DROP DATABASE IF EXISTS `{scratch}`")]),
                env: Default::default(),
            }),
            DbEngine::Redis => None,
        }
    }
}

/// `len` characters from `[A-Za-z0-9]`, from the OS's CSPRNG (through `uuid`'s v4,
/// whose bytes other than the version and variant ones are wholly random), with
/// rejection sampling so every character is equally likely.
fn random_password(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let id = uuid::Uuid::new_v4();
        for (i, b) in id.as_bytes().iter().enumerate() {
            // Byte 6 holds the version, byte 8 the variant: not wholly random.
            if i == 6 || i == 8 || *b >= 248 || out.len() == len {
                continue;
            }
            out.push(ALPHABET[(*b % 62) as usize] as char);
        }
    }
    out
}

/// The variables a database service offers references besides its env, for the
/// address `host:port` it is reached at: its connection URL (a secret). Empty when
/// its env holds no credentials.
pub fn exports(env: &EnvVars, spec: &DatabaseSpec, host: &str, port: u16) -> EnvVars {
    let mut out = EnvVars::new();
    if let Some(c) = Credentials::of(env) {
        out.insert(
            spec.engine.url_var().into(),
            EnvValue::Secret(c.url(spec.engine, host, port)),
        );
    }
    out
}

/// How long a database may take to become healthy: a first start initialises its
/// data folder, which takes MariaDB several seconds.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(180);

/// A new managed database service `name` in `project`: `spec`'s image (mapped with
/// `images`), its port, a volume `<name>-data` at its data path, new credentials in
/// its env (the password a secret) and its protocol probe.
pub fn service(
    project: &ProjectId,
    name: &str,
    spec: DatabaseSpec,
    images: &ImageMap,
) -> Result<Service> {
    spec.validate()?;
    let engine = spec.engine;
    let image = images.resolve(&engine.image(&spec.version));
    let mut svc = Service::new(project, name, SourceSpec::Image { image })?;
    svc.port = Some(engine.port());
    svc.env = Credentials::generate(engine, name).env(engine);
    svc.volumes = vec![VolumeMount {
        name: format!("{name}-data"),
        path: engine.data_path().to_owned(),
        size: None,
    }];
    svc.health_check = Some(HealthCheck {
        probe: engine.probe(),
        interval: Duration::from_millis(250),
        timeout: HEALTH_TIMEOUT,
    });
    svc.database = Some(spec);
    svc.validate()?;
    Ok(svc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_keeps_the_new_password_off_argv_and_refuses_odd_input() {
        let c = Credentials::generate(DbEngine::Postgres, "db");
        let new = c.rotated();
        assert_eq!((new.user.as_str(), new.database.as_str()), ("db", "db"));
        assert_ne!(new.password.expose(), c.password.expose());
        for engine in [DbEngine::Postgres, DbEngine::Mysql, DbEngine::Redis] {
            let r = c.rotate_command(engine, &new.password).unwrap();
            assert!(!r.command.join(" ").contains(new.password.expose()));
            assert!(r.stdin.contains(new.password.expose()));
            assert!(!format!("{r:?}").contains(new.password.expose()));
        }
        // A password that could end the quoted string is never spliced in.
        for bad in ["short", "abcdefghijklmnop'; DROP", "abcdefghijklmnopq r"] {
            assert!(
                c.rotate_command(DbEngine::Postgres, &Secret::new(bad))
                    .is_none(),
                "{bad}"
            );
        }
    }

    #[test]
    fn restore_checks_name_only_a_scratch_database_and_keep_the_password_off_argv() {
        let c = Credentials {
            user: "appuser".into(),
            password: Secret::new("pw-not-on-argv"),
            database: "appdb".into(),
        };
        for bad in [
            "appdb",
            "wharf_check_",
            "wharf_check_XYZ",
            "wharf_check_1; DROP",
            "x",
        ] {
            assert!(c.check_commands(DbEngine::Postgres, bad).is_none(), "{bad}");
        }
        assert!(c
            .check_commands(DbEngine::Redis, "wharf_check_1a")
            .is_none());
        for engine in [DbEngine::Postgres, DbEngine::Mysql] {
            let k = c.check_commands(engine, "wharf_check_1a").unwrap();
            for cmd in [&k.create, &k.restore, &k.query, &k.drop] {
                let line = cmd.join(" ");
                assert!(line.contains("wharf_check_1a"), "{line}");
                assert!(!line.contains("pw-not-on-argv"), "{line}");
                // Never the live database.
                assert!(!line.contains("appdb"), "{line}");
            }
        }
        let pg = c
            .check_commands(DbEngine::Postgres, "wharf_check_1a")
            .unwrap();
        assert_eq!(pg.env["PGPASSWORD"], "pw-not-on-argv");
        assert_eq!(pg.create[0], "createdb");
        assert_eq!(pg.drop.last().unwrap(), "wharf_check_1a");
    }

    #[test]
    fn passwords_are_long_alphanumeric_and_differ() {
        let a = random_password(32);
        let b = random_password(32);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
        // Every character class turns up over many draws (no bias to one range).
        let many: String = (0..50).map(|_| random_password(32)).collect();
        assert!(many.chars().any(|c| c.is_ascii_uppercase()));
        assert!(many.chars().any(|c| c.is_ascii_lowercase()));
        assert!(many.chars().any(|c| c.is_ascii_digit()));
    }

    #[test]
    fn engines_parse_and_name_their_templates() {
        assert_eq!(
            "PostgreSQL".parse::<DbEngine>().unwrap(),
            DbEngine::Postgres
        );
        assert_eq!("mariadb".parse::<DbEngine>().unwrap(), DbEngine::Mysql);
        assert_eq!("redis".parse::<DbEngine>().unwrap(), DbEngine::Redis);
        let e = "oracle".parse::<DbEngine>().unwrap_err();
        assert!(e.message().contains("unknown database engine"));
        assert_eq!(DbEngine::Postgres.local_image(), "wharf-local/postgres:15");
        assert_eq!(DbEngine::Mysql.local_image(), "wharf-local/mariadb:10.11");
        assert_eq!(DbEngine::Redis.local_image(), "wharf-local/redis:7");
        let map = local_images();
        assert_eq!(map.resolve("postgres:15"), "wharf-local/postgres:15");
        assert_eq!(
            map.resolve("postgres:16"),
            "postgres:16",
            "only the built version"
        );
        assert_eq!(
            serde_json::to_string(&DbEngine::Mysql).unwrap(),
            "\"mysql\""
        );
    }

    #[test]
    fn versions_must_be_image_tags() {
        assert!(DatabaseSpec::new(DbEngine::Postgres, Some("16.2")).is_ok());
        for bad in ["", "15 ", "../x", "15;rm", ":15", "-15"] {
            assert!(
                DatabaseSpec::new(DbEngine::Postgres, Some(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_postgres_service_from_the_template() {
        let spec = DatabaseSpec::new(DbEngine::Postgres, None).unwrap();
        let svc = service(&ProjectId::random(), "main-db", spec, &local_images()).unwrap();
        assert_eq!(
            svc.source,
            SourceSpec::Image {
                image: "wharf-local/postgres:15".into()
            }
        );
        assert_eq!(svc.port, Some(5432));
        assert_eq!(svc.volumes[0].name, "main-db-data");
        assert_eq!(svc.volumes[0].path, "/var/lib/postgresql/data");
        assert_eq!(svc.env["POSTGRES_USER"].expose(), "main_db");
        assert_eq!(svc.env["POSTGRES_DB"].expose(), "main_db");
        assert!(svc.env["POSTGRES_PASSWORD"].is_secret());
        assert!(svc.env[PASSWORD].is_secret());
        assert_eq!(
            svc.env[PASSWORD].expose(),
            svc.env["POSTGRES_PASSWORD"].expose()
        );
        assert_eq!(svc.health_check.as_ref().unwrap().probe, Probe::Postgres);
        assert!(!svc.routed(), "private unless asked");

        let creds = Credentials::of(&svc.env).unwrap();
        let out = exports(&svc.env, svc.database.as_ref().unwrap(), "main-db", 5432);
        let url = &out["DATABASE_URL"];
        assert!(url.is_secret());
        assert_eq!(
            url.expose(),
            format!(
                "postgres://main_db:{}@main-db:5432/main_db",
                creds.password.expose()
            )
        );

        // Two databases never share a password.
        let spec = DatabaseSpec::new(DbEngine::Postgres, None).unwrap();
        let other = service(&ProjectId::random(), "main-db", spec, &local_images()).unwrap();
        assert_ne!(other.env[PASSWORD].expose(), creds.password.expose());
    }

    #[test]
    fn mysql_and_redis_templates() {
        let spec = DatabaseSpec::new(DbEngine::Mysql, None).unwrap();
        let svc = service(&ProjectId::random(), "shop", spec, &ImageMap::new()).unwrap();
        assert_eq!(
            svc.source,
            SourceSpec::Image {
                image: "mariadb:10.11".into()
            }
        );
        assert_eq!(svc.env["MARIADB_USER"].expose(), "shop");
        assert!(svc.env["MYSQL_PASSWORD"].is_secret());
        let url = exports(&svc.env, svc.database.as_ref().unwrap(), "shop", 3306);
        assert!(url["DATABASE_URL"].expose().starts_with("mysql://shop:"));

        let mut spec = DatabaseSpec::new(DbEngine::Redis, Some("7")).unwrap();
        spec.public = true;
        let svc = service(&ProjectId::random(), "cache", spec, &local_images()).unwrap();
        assert!(svc.routed(), "public when asked");
        assert_eq!(svc.volumes[0].path, "/data");
        assert!(svc.env["REDIS_PASSWORD"].is_secret());
        let pw = svc.env["REDIS_PASSWORD"].expose().to_owned();
        let url = exports(&svc.env, svc.database.as_ref().unwrap(), "cache", 6379);
        assert_eq!(
            url["REDIS_URL"].expose(),
            format!("redis://default:{pw}@cache:6379/0")
        );
    }

    #[test]
    fn dump_commands_keep_the_password_in_the_environment() {
        let spec = DatabaseSpec::new(DbEngine::Postgres, None).unwrap();
        let svc = service(&ProjectId::random(), "pg", spec, &local_images()).unwrap();
        let c = Credentials::of(&svc.env).unwrap();
        let pw = c.password.expose().to_owned();
        let pg = c.dump_commands(DbEngine::Postgres).unwrap();
        assert_eq!(pg.dump[0], "pg_dump");
        assert!(pg.dump.contains(&"--clean".to_owned()));
        assert_eq!(pg.restore[0], "psql");
        assert_eq!(pg.env["PGPASSWORD"], pw);
        let my = c.dump_commands(DbEngine::Mysql).unwrap();
        assert_eq!(
            (my.dump[0].as_str(), my.restore[0].as_str()),
            ("mysqldump", "mysql")
        );
        assert_eq!(my.env["MYSQL_PWD"], pw);
        for cmds in [&pg, &my] {
            let line = format!("{:?} {:?}", cmds.dump, cmds.restore);
            assert!(!line.contains(&pw), "{line}");
            assert!(
                !format!("{cmds:?}").contains(&pw),
                "Debug shows the password"
            );
        }
        assert!(c.dump_commands(DbEngine::Redis).is_none());
    }

    #[test]
    fn names_an_engine_keeps_for_itself_are_not_taken() {
        let c = Credentials::generate(DbEngine::Mysql, "mysql");
        assert_eq!(
            (c.user.as_str(), c.database.as_str()),
            ("mysql_app", "mysql_app")
        );
        let c = Credentials::generate(DbEngine::Mysql, "shop-db");
        assert_eq!(
            (c.user.as_str(), c.database.as_str()),
            ("shop_db", "shop_db")
        );
    }

    #[test]
    fn urls_encode_what_is_not_alphanumeric() {
        let c = Credentials {
            user: "a b".into(),
            password: Secret::new("p@ss/word"),
            database: "d".into(),
        };
        assert_eq!(
            c.url(DbEngine::Postgres, "h", 1).expose(),
            "postgres://a%20b:p%40ss%2Fword@h:1/d"
        );
    }
}
