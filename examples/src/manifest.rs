//! `wharf.toml`: several services of one project, deployed by `wharf deploy` in
//! dependency order.
//!
//! ```toml
//! project = "shop"            # default: the folder's name
//!
//! [services.api]
//! path = "api"                # the service's folder, relative to wharf.toml (default ".")
//! port = 8000                 # default: detected
//! depends_on = ["db"]
//! env = { MODE = "prod", DB_HOST = "${{ db.HOST }}" }   # references: see wharf_core::refs
//! health_path = "/health"     # HTTP probe path (default "/")
//! domains = ["api.example.com"]
//!
//! [services.api.processes]    # as in a Procfile, over the app's own
//! web = "gunicorn app:app"    # replaces the start command
//! release = "python3 manage.py migrate"   # runs once per deployment, before it starts
//! worker = "python3 worker.py"            # any other type runs beside web, unrouted
//! [services.api.replicas]     # instances per process type (default 1 each)
//! web = 3                     # routed, evenly
//! worker = 2
//! [services.api.checks.worker]   # a type other than web probed like web, on $PORT
//! probe = "http"              # http (default), tcp or none (running is healthy)
//! path = "/health"            # for http (default "/")
//! interval = "500ms"          # between probes (default 200ms)
//! timeout = "30s"             # to become healthy (default 60s)
//!
//! [services.db]
//! path = "db"
//! volumes = [{ name = "data", mount = "/var/lib/data", size = "10Gi" }]  # size optional
//!
//! [[services.api.cron]]       # a command run on a schedule from the live release
//! name = "cleanup"
//! schedule = "*/5 * * * *"    # cron, UTC; 6 fields: seconds first
//! command = "python3 cleanup.py"   # run as `sh -c COMMAND`
//! concurrency = "forbid"      # forbid (default), allow or replace
//! timeout = "10m"             # default 1h
//! starting_deadline = "15m"   # how late a missed run may still start (default 1h)
//!
//! [databases.pg]              # a managed database (wharf_core::database), made by
//! engine = "postgres"         # `wharf deploy` before the services referencing it:
//! version = "15"              # `${{ pg.DATABASE_URL }}`; postgres, mysql or redis
//! public = false              # default: the project network only
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use wharf_core::planner::DependencyGraph;
use wharf_core::{ProjectId, Service, SourceSpec, VolumeMount};

use crate::client::CliError;
use crate::dto::{EnvInput, ServiceInput};

/// The file's name.
pub const FILE: &str = "wharf.toml";

/// A parsed manifest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The project (default: the folder's name).
    #[serde(default)]
    pub project: Option<String>,
    /// Services by name.
    #[serde(default)]
    pub services: BTreeMap<String, ManifestService>,
    /// Managed databases by name, made (if missing) before the services.
    #[serde(default)]
    pub databases: BTreeMap<String, ManifestDatabase>,
}

/// A managed database of a manifest: `{ engine, version?, public? }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestDatabase {
    /// `postgres`, `mysql` (MariaDB) or `redis`.
    pub engine: String,
    /// The engine's version (its default when absent).
    #[serde(default)]
    pub version: Option<String>,
    /// Whether it gets a public route.
    #[serde(default)]
    pub public: bool,
}

impl ManifestDatabase {
    /// The API body that creates it as `name`; fails on an unknown engine or a bad
    /// version.
    pub fn input(&self, name: &str) -> Result<crate::dto::DatabaseInput, CliError> {
        let engine: wharf_core::database::DbEngine = self
            .engine
            .parse()
            .map_err(|e: wharf_core::Error| format!("database {name}: {}", e.message()))?;
        wharf_core::database::DatabaseSpec::new(engine, self.version.as_deref())
            .map_err(|e| format!("database {name}: {}", e.message()))?;
        Ok(crate::dto::DatabaseInput {
            name: name.to_owned(),
            engine,
            version: self.version.clone(),
            public: self.public,
        })
    }
}

/// One service of a manifest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestService {
    /// Its folder, relative to the manifest.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The port it listens on.
    #[serde(default)]
    pub port: Option<u16>,
    /// Plain env vars.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Services it needs live first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// HTTP health-check path (of `web`: an HTTP check with the default timing, as
    /// [`ManifestCheck::http`] makes it).
    #[serde(default)]
    pub health_path: Option<String>,
    /// Custom domains.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Named volumes: they belong to the project and outlive every deployment.
    #[serde(default)]
    pub volumes: Vec<ManifestVolume>,
    /// Process types as in a `Procfile` (`web`, `release`, ...), over the app's own.
    #[serde(default)]
    pub processes: BTreeMap<String, String>,
    /// Instances per process type (`{ web = 3, worker = 2 }`; others run one).
    #[serde(default)]
    pub replicas: BTreeMap<String, u32>,
    /// Health checks of process types other than `web` (`[services.x.checks.worker]`);
    /// a type without one is checked by liveness.
    #[serde(default)]
    pub checks: BTreeMap<String, ManifestCheck>,
    /// Cron jobs (`[[services.x.cron]]`).
    #[serde(default)]
    pub cron: Vec<ManifestCron>,
}

/// A health check of a manifest's service: `{ probe?, path?, interval?, timeout? }`,
/// durations as `"500ms"`, `"30s"`, `"1m"`. What is not given is as
/// [`wharf_core::HealthCheck::default`] has it (HTTP on `/`, every 200 ms, 60 s to
/// pass).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestCheck {
    /// `http` (default), `tcp` or `none` (running is healthy).
    #[serde(default)]
    pub probe: Option<String>,
    /// The path an HTTP probe requests (default `/`).
    #[serde(default)]
    pub path: Option<String>,
    /// Time between probes.
    #[serde(default)]
    pub interval: Option<String>,
    /// How long the instance may take to become healthy.
    #[serde(default)]
    pub timeout: Option<String>,
}

impl ManifestCheck {
    /// An HTTP check of `path` with the default timing: what `health_path` means.
    pub fn http(path: &str) -> Self {
        ManifestCheck {
            path: Some(path.to_owned()),
            ..Default::default()
        }
    }

    /// The check as the API takes it; fails on a bad field.
    pub fn check(&self) -> wharf_core::Result<wharf_core::HealthCheck> {
        use wharf_core::{cron::parse_duration, Error, HealthCheck, Probe};
        let probe = match (self.probe.as_deref().unwrap_or("http"), &self.path) {
            ("http", path) => Probe::Http {
                path: path.clone().unwrap_or_else(|| "/".into()),
            },
            ("tcp" | "none", Some(_)) => {
                return Err(Error::invalid("path is only for an http probe"));
            }
            ("tcp", None) => Probe::Tcp,
            ("none", None) => Probe::None,
            (other, _) => {
                return Err(Error::invalid(format!(
                    "probe {other:?}: use http, tcp or none"
                )));
            }
        };
        let mut check = HealthCheck {
            probe,
            ..Default::default()
        };
        if let Some(i) = &self.interval {
            check.interval = parse_duration(i)?;
        }
        if let Some(t) = &self.timeout {
            check.timeout = parse_duration(t)?;
        }
        check.validate()?;
        Ok(check)
    }
}

/// The health checks of `checks` as the API takes them; fails on a bad check or a
/// type that takes none (`web`, `release`), naming it.
fn process_checks(
    checks: &BTreeMap<String, ManifestCheck>,
) -> wharf_core::Result<BTreeMap<String, wharf_core::HealthCheck>> {
    let checks = checks
        .iter()
        .map(|(process, c)| {
            let check = c
                .check()
                .map_err(|e| e.context(format!("checks.{process}")))?;
            Ok((process.clone(), check))
        })
        .collect::<wharf_core::Result<_>>()?;
    wharf_core::validate_process_checks(&checks)?;
    Ok(checks)
}

/// A cron job of a manifest's service: `{ name, schedule, command, concurrency?,
/// timeout?, starting_deadline? }`, durations as `"10m"`, `"90s"`, `"1h30m"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestCron {
    /// Its name (unique in the service).
    pub name: String,
    /// A cron expression (UTC).
    pub schedule: String,
    /// The shell command line.
    pub command: String,
    /// `forbid` (default), `allow` or `replace`.
    #[serde(default)]
    pub concurrency: Option<String>,
    /// How long a run may take (default 1h).
    #[serde(default)]
    pub timeout: Option<String>,
    /// How late a missed run may still start (default 1h).
    #[serde(default)]
    pub starting_deadline: Option<String>,
}

impl ManifestCron {
    /// The job as the API takes it; fails on a bad field.
    pub fn job(&self) -> wharf_core::Result<wharf_core::CronJob> {
        let mut job = wharf_core::CronJob::new(&self.name, &self.schedule, &self.command);
        if let Some(c) = &self.concurrency {
            job.concurrency = c.parse()?;
        }
        if let Some(t) = &self.timeout {
            job.timeout = wharf_core::cron::parse_duration(t)?;
        }
        if let Some(d) = &self.starting_deadline {
            job.starting_deadline = wharf_core::cron::parse_duration(d)?;
        }
        job.validate()?;
        Ok(job)
    }
}

/// A volume of a manifest's service: `{ name, mount, size? }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestVolume {
    /// The volume's name (in the project).
    pub name: String,
    /// The absolute path it is mounted at.
    pub mount: String,
    /// The size asked for (`"10Gi"`, `"500Mi"`).
    #[serde(default)]
    pub size: Option<String>,
}

impl Manifest {
    /// Reads `dir/wharf.toml`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<Manifest>, CliError> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display()).into()),
        };
        let m: Manifest = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if m.services.is_empty() && m.databases.is_empty() {
            return Err(format!(
                "{}: no [services.<name>] or [databases.<name>] declared",
                path.display()
            )
            .into());
        }
        for (name, d) in &m.databases {
            if m.services.contains_key(name) {
                return Err(format!(
                    "{}: {name} is declared both as a service and as a database",
                    path.display()
                )
                .into());
            }
            wharf_core::validate_name(name)
                .map_err(|e| format!("{}: database {name}: {}", path.display(), e.message()))?;
            d.input(name)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        for (name, s) in &m.services {
            if let Some(p) = &s.path {
                if p.is_absolute()
                    || p.components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(format!(
                        "{}: service {name}: path must stay inside the manifest's folder",
                        path.display()
                    )
                    .into());
                }
            }
            for (process, command) in &s.processes {
                wharf_core::validate_process(process, command)
                    .map_err(|e| format!("{}: service {name}: {e}", path.display()))?;
            }
            wharf_core::validate_replicas(&s.replicas)
                .map_err(|e| format!("{}: service {name}: {e}", path.display()))?;
            if let Some(h) = &s.health_path {
                ManifestCheck::http(h).check().map_err(|e| {
                    format!(
                        "{}: service {name}: health_path: {}",
                        path.display(),
                        e.message()
                    )
                })?;
            }
            process_checks(&s.checks)
                .map_err(|e| format!("{}: service {name}: {}", path.display(), e.message()))?;
            let volumes: Vec<VolumeMount> = s.volumes.iter().map(ManifestVolume::mount).collect();
            VolumeMount::validate_all(&volumes)
                .map_err(|e| format!("{}: service {name}: {e}", path.display()))?;
            s.cron
                .iter()
                .map(ManifestCron::job)
                .collect::<wharf_core::Result<Vec<_>>>()
                .and_then(|jobs| wharf_core::CronJob::validate_all(&jobs))
                .map_err(|e| format!("{}: service {name}: {}", path.display(), e.message()))?;
        }
        Ok(Some(m))
    }

    /// The services in waves: each wave's dependencies (through `depends_on` or a
    /// reference `${{ db.URL }}` in its env) are all in earlier waves. A cycle, an
    /// unknown dependency or a malformed reference is an error naming the services.
    /// Databases are not in the waves (they are made before any), but services may
    /// depend on them and reference them.
    pub fn waves(&self) -> Result<Vec<Vec<String>>, CliError> {
        let project = ProjectId::from("prj_manifest");
        let databases = self.databases.keys().map(|name| {
            Service::new(
                &project,
                name,
                SourceSpec::Image {
                    image: "database".into(),
                },
            )
        });
        let services = self
            .services
            .iter()
            .map(|(name, s)| {
                let mut svc = Service::new(
                    &project,
                    name,
                    SourceSpec::Dir {
                        path: PathBuf::from("."),
                    },
                )?;
                svc.depends_on = s.depends_on.clone();
                // References (`${{ db.URL }}`) order services as depends_on does.
                svc.env = s
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), wharf_core::EnvValue::Plain(v.clone())))
                    .collect();
                Ok(svc)
            })
            .chain(databases)
            .collect::<wharf_core::Result<Vec<_>>>()?;
        Ok(DependencyGraph::new(&services)?
            .waves()
            .into_iter()
            .map(|w| {
                w.into_iter()
                    .filter(|s| !self.databases.contains_key(s))
                    .collect::<Vec<_>>()
            })
            .filter(|w| !w.is_empty())
            .collect())
    }

    /// The API body that configures `name`.
    pub fn service_body(&self, name: &str) -> ServiceInput {
        let s = &self.services[name];
        ServiceInput {
            port: s.port,
            env: s
                .env
                .iter()
                .map(|(k, v)| (k.clone(), EnvInput::Plain(v.clone())))
                .collect(),
            depends_on: Some(s.depends_on.clone()),
            // Both checked by `load`.
            health_check: s
                .health_path
                .as_ref()
                .and_then(|h| ManifestCheck::http(h).check().ok()),
            domains: Some(s.domains.clone()),
            volumes: Some(s.volumes.iter().map(ManifestVolume::mount).collect()),
            processes: Some(s.processes.clone()),
            replicas: Some(s.replicas.clone()),
            process_checks: Some(process_checks(&s.checks).unwrap_or_default()),
            // Checked by `load`.
            cron: Some(s.cron.iter().filter_map(|c| c.job().ok()).collect()),
            ..Default::default()
        }
    }
}

impl ManifestVolume {
    /// The mount as the API takes it.
    pub fn mount(&self) -> VolumeMount {
        VolumeMount {
            name: self.name.clone(),
            path: self.mount.clone(),
            size: self.size.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, CliError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), text).unwrap();
        Ok(Manifest::load(dir.path())?.unwrap())
    }

    #[test]
    fn waves_follow_dependencies() {
        let m = parse(
            "[services.web]\ndepends_on = [\"api\"]\n[services.api]\ndepends_on = [\"db\"]\n[services.db]\n",
        )
        .unwrap();
        assert_eq!(
            m.waves().unwrap(),
            vec![vec!["db"], vec!["api"], vec!["web"]]
        );
    }

    #[test]
    fn references_order_waves_like_depends_on_and_bad_ones_are_refused() {
        let m = parse(
            "[services.web]\nenv = { API = \"${{ api.URL }}\" }\n\
             [services.api]\nenv = { DB = \"${{db.HOST}}:${{ db.PORT }}\" }\n[services.db]\n",
        )
        .unwrap();
        assert_eq!(
            m.waves().unwrap(),
            vec![vec!["db"], vec!["api"], vec!["web"]]
        );
        for (bad, want) in [
            ("[services.a]\nenv = { X = \"${{ b.HOST }}\" }\n", "unknown service b"),
            ("[services.a]\nenv = { X = \"${{ b.HOST\" }\n[services.b]\n", "unterminated"),
            (
                "[services.a]\nenv = { X = \"${{ b.URL }}\" }\n[services.b]\nenv = { Y = \"${{ a.URL }}\" }\n",
                "dependency cycle: a -> b -> a",
            ),
        ] {
            let e = parse(bad).unwrap().waves().unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn service_body_is_the_put_body_of_the_services_api() {
        let m = parse(
            "[services.api]\nport = 8000\ndepends_on = [\"db\"]\nenv = { MODE = \"prod\" }\n\
             health_path = \"/health\"\ndomains = [\"api.example.com\"]\n\
             [services.api.processes]\nrelease = \"./migrate --all\"\n[services.db]\n",
        )
        .unwrap();
        let api = serde_json::to_value(m.service_body("api")).unwrap();
        assert_eq!(api["port"], 8000);
        assert_eq!(api["depends_on"], serde_json::json!(["db"]));
        assert_eq!(api["env"], serde_json::json!({"MODE": "prod"}));
        assert_eq!(api["domains"], serde_json::json!(["api.example.com"]));
        assert_eq!(api["health_check"]["probe"]["path"], "/health");
        assert_eq!(
            api["processes"],
            serde_json::json!({"release": "./migrate --all"})
        );
        // A service declaring nothing still clears what it no longer declares.
        let db = serde_json::to_value(m.service_body("db")).unwrap();
        assert_eq!(
            db,
            serde_json::json!({"cron": [], "depends_on": [], "domains": [], "volumes": [], "processes": {}, "replicas": {}, "process_checks": {}}),
            "{db}"
        );
        // The server reads back what the CLI sends.
        let back: ServiceInput = serde_json::from_value(api).unwrap();
        assert_eq!(back.port, Some(8000));
        assert_eq!(back.env["MODE"], EnvInput::Plain("prod".into()));
    }

    #[test]
    fn process_checks_become_the_services_checks_and_bad_ones_are_refused() {
        let m = parse(
            "[services.api]\nhealth_path = \"/up\"\n\
             [services.api.processes]\nworker = \"python3 worker.py\"\nclock = \"python3 clock.py\"\n\
             [services.api.checks.worker]\npath = \"/health\"\ninterval = \"500ms\"\ntimeout = \"30s\"\n\
             [services.api.checks.clock]\nprobe = \"tcp\"\n",
        )
        .unwrap();
        let body = m.service_body("api");
        let checks = body.process_checks.unwrap();
        assert_eq!(
            checks["worker"],
            wharf_core::HealthCheck {
                probe: wharf_core::Probe::Http {
                    path: "/health".into()
                },
                interval: std::time::Duration::from_millis(500),
                timeout: std::time::Duration::from_secs(30),
            }
        );
        assert_eq!(
            checks["clock"],
            wharf_core::HealthCheck {
                probe: wharf_core::Probe::Tcp,
                ..Default::default()
            }
        );
        // health_path is the same table's `path`, for web.
        assert_eq!(body.health_check, ManifestCheck::http("/up").check().ok());
        // On the wire as the API takes them.
        let json = serde_json::to_value(m.service_body("api")).unwrap();
        assert_eq!(
            json["process_checks"]["worker"],
            serde_json::json!({"probe": {"kind": "http", "path": "/health"}, "interval": 500, "timeout": 30000})
        );

        for (bad, want) in [
            ("[services.a.checks.web]\n", "process check web"),
            ("[services.a.checks.release]\n", "process check release"),
            ("[services.a.checks.Worker]\n", "process check"),
            (
                "[services.a.checks.worker]\nprobe = \"grpc\"\n",
                "checks.worker: probe \"grpc\"",
            ),
            (
                "[services.a.checks.worker]\nprobe = \"tcp\"\npath = \"/\"\n",
                "only for an http probe",
            ),
            (
                "[services.a.checks.worker]\npath = \"health\"\n",
                "must start with '/'",
            ),
            (
                "[services.a.checks.worker]\ntimeout = \"10\"\n",
                "duration \"10\"",
            ),
            (
                "[services.a.checks.worker]\ninterval = \"1ms\"\n",
                "interval must be",
            ),
            (
                "[services.a.checks.worker]\nport = 9000\n",
                "unknown field `port`",
            ),
            ("[services.a]\nhealth_path = \"up\"\n", "health_path"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn cycles_unknown_dependencies_and_escaping_paths_are_errors() {
        let e = parse("[services.a]\ndepends_on = [\"b\"]\n[services.b]\ndepends_on = [\"a\"]\n")
            .unwrap()
            .waves()
            .unwrap_err()
            .to_string();
        assert!(e.contains('a') && e.contains('b'), "{e}");
        let e = parse("[services.a]\ndepends_on = [\"nope\"]\n")
            .unwrap()
            .waves()
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
        assert!(parse("[services.a]\npath = \"../x\"\n").is_err());
        assert!(parse("[services.a]\nprot = 1\n").is_err());
    }

    #[test]
    fn databases_come_before_the_waves_and_bad_ones_are_refused() {
        let m = parse(
            "[services.api]\nenv = { DATABASE_URL = \"${{ pg.DATABASE_URL }}\" }\n\
             [services.web]\ndepends_on = [\"api\", \"cache\"]\n\
             [databases.pg]\nengine = \"postgres\"\n\
             [databases.cache]\nengine = \"redis\"\nversion = \"7\"\npublic = true\n",
        )
        .unwrap();
        assert_eq!(m.waves().unwrap(), vec![vec!["api"], vec!["web"]]);
        let pg = m.databases["pg"].input("pg").unwrap();
        assert_eq!(pg.engine, wharf_core::database::DbEngine::Postgres);
        assert_eq!(pg.version, None);
        assert!(!pg.public);
        assert!(m.databases["cache"].input("cache").unwrap().public);
        // Databases alone make a manifest too.
        assert!(parse("[databases.pg]\nengine = \"mysql\"\n").is_ok());
        for (bad, want) in [
            (
                "[databases.pg]\nengine = \"oracle\"\n",
                "unknown database engine",
            ),
            (
                "[databases.pg]\nengine = \"redis\"\nversion = \"7 x\"\n",
                "version",
            ),
            ("[databases.Pg]\nengine = \"redis\"\n", "invalid name"),
            (
                "[databases.pg]\nengine = \"redis\"\nsize = 1\n",
                "unknown field",
            ),
            (
                "[services.pg]\n[databases.pg]\nengine = \"redis\"\n",
                "both as a service and as a database",
            ),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn volumes_become_the_services_mounts_and_bad_ones_are_refused() {
        let m = parse(
            "[services.db]\nvolumes = [{ name = \"data\", mount = \"/var/lib/data\", size = \"10Gi\" }]\n",
        )
        .unwrap();
        let body = serde_json::to_value(m.service_body("db")).unwrap();
        assert_eq!(
            body["volumes"],
            serde_json::json!([{"name": "data", "path": "/var/lib/data", "size": "10Gi"}])
        );
        for bad in [
            "volumes = [{ name = \"data\", mount = \"relative\" }]",
            "volumes = [{ name = \"Data\", mount = \"/d\" }]",
            "volumes = [{ name = \"data\", mount = \"/d/../etc\" }]",
            "volumes = [{ name = \"data\", mount = \"/d\", size = \"10GB\" }]",
            "volumes = [{ name = \"data\", path = \"/d\" }]",
            "volumes = [{ name = \"a\", mount = \"/d\" }, { name = \"b\", mount = \"/d\" }]",
        ] {
            assert!(parse(&format!("[services.db]\n{bad}\n")).is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_jobs_become_the_services_jobs_and_bad_ones_are_refused() {
        let m = parse(
            "[[services.web.cron]]\nname = \"cleanup\"\nschedule = \"*/5 * * * *\"\n\
             command = \"python3 cleanup.py\"\nconcurrency = \"replace\"\ntimeout = \"10m\"\n\
             [[services.web.cron]]\nname = \"report\"\nschedule = \"0 3 * * *\"\ncommand = \"true\"\n",
        )
        .unwrap();
        let body = serde_json::to_value(m.service_body("web")).unwrap();
        assert_eq!(
            body["cron"],
            serde_json::json!([
                {"name": "cleanup", "schedule": "*/5 * * * *", "command": "python3 cleanup.py",
                 "concurrency": "replace", "timeout": 600_000, "starting_deadline": 3_600_000},
                {"name": "report", "schedule": "0 3 * * *", "command": "true",
                 "concurrency": "forbid", "timeout": 3_600_000, "starting_deadline": 3_600_000},
            ])
        );
        let job = |extra: &str| {
            format!("[[services.web.cron]]\nname = \"a\"\nschedule = \"* * * * *\"\ncommand = \"true\"\n{extra}\n")
        };
        assert!(parse(&job("")).is_ok());
        for bad in [
            "concurrency = \"sometimes\"",
            "timeout = \"10\"",
            "timeout = \"3d\"",
            "starting_deadline = \"1s\"",
            "retries = 3",
        ] {
            assert!(parse(&job(bad)).is_err(), "{bad}");
        }
        for bad in [
            "[[services.web.cron]]\nname = \"a\"\nschedule = \"every day\"\ncommand = \"true\"\n",
            "[[services.web.cron]]\nname = \"A\"\nschedule = \"* * * * *\"\ncommand = \"true\"\n",
            "[[services.web.cron]]\nschedule = \"* * * * *\"\ncommand = \"true\"\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(
            parse(&format!("{}{}", job(""), job(""))).is_err(),
            "a name used twice"
        );
    }
}
