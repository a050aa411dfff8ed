//! The command line's shape: commands, their flags, and which service, project or
//! server a command is about.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use wharf_server::client::{CliError, Scope};
use wharf_server::manifest::Manifest;

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "Self-hosted click-to-deploy: server and CLI"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The server's URL when nothing else names one.
pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

/// Which server to talk to, with which token ([`Remote::client`] picks them).
#[derive(clap::Args, Clone)]
pub(crate) struct Remote {
    /// The server's URL (default: the one `wharf login` stored, else
    /// http://127.0.0.1:7070).
    #[arg(long, env = "WHARF_SERVER")]
    pub(crate) server: Option<String>,
    /// API token (default: the one `wharf login` stored for this server, else the
    /// operator token in ./wharf-data/admin-token).
    #[arg(long, env = "WHARF_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

/// Which service (of which project or environment) a command is about.
#[derive(clap::Args, Clone)]
pub(crate) struct Target {
    #[command(flatten)]
    pub(crate) scope: ProjectArg,
    /// Service (default: the one service of the folder's wharf.toml, else the
    /// folder's name, as `wharf deploy` picks it).
    #[arg(long, short)]
    pub(crate) service: Option<String>,
}

/// Which project (or environment of it) a command is about.
#[derive(clap::Args, Clone)]
pub(crate) struct ProjectArg {
    /// Project (default: the folder's wharf.toml, else the parent folder's name, as
    /// `wharf deploy` picks it).
    #[arg(long, short)]
    pub(crate) project: Option<String>,
    /// A standing environment of the project (default: the project's own services).
    #[arg(long, short)]
    pub(crate) environment: Option<String>,
}

impl ProjectArg {
    /// The scope named by the flags, else by the current folder.
    pub(crate) fn resolve(&self) -> Result<Scope, CliError> {
        Ok(Scope {
            project: default_project(self.project.clone(), Path::new("."))?,
            environment: self.environment.clone(),
        })
    }
}

impl Target {
    /// The scope and service named by the flags, else by the current folder.
    pub(crate) fn resolve(&self) -> Result<(Scope, String), CliError> {
        let dir = Path::new(".");
        let scope = self.scope.resolve()?;
        let service = match &self.service {
            Some(s) => s.clone(),
            None => match Manifest::load(dir)? {
                Some(m) if m.services.len() == 1 => {
                    m.services.keys().next().cloned().unwrap_or_default()
                }
                Some(m) => {
                    let names: Vec<&str> = m.services.keys().map(String::as_str).collect();
                    return Err(format!(
                        "this folder's wharf.toml declares several services ({}): pass --service",
                        names.join(", ")
                    )
                    .into());
                }
                None => folder_name(dir).ok_or("cannot name the service: pass --service")?,
            },
        };
        Ok((scope, service))
    }
}

/// The project `wharf deploy DIR` would use: `flag`, else the name in DIR's
/// wharf.toml, else DIR's name if it holds a wharf.toml, else its parent's name.
fn default_project(flag: Option<String>, dir: &Path) -> Result<String, CliError> {
    if let Some(p) = flag {
        return Ok(p);
    }
    let found = match Manifest::load(dir)? {
        Some(m) => m.project.or_else(|| folder_name(dir)),
        None => folder_name(&dir.join("..")),
    };
    found.ok_or_else(|| "cannot name the project: pass --project".into())
}

/// The name of folder `p` (resolved, so `.` and `..` have one), lowercased.
pub(crate) fn folder_name(p: &Path) -> Option<String> {
    let abs = std::fs::canonicalize(p).ok()?;
    Some(abs.file_name()?.to_string_lossy().to_ascii_lowercase())
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the server (API, dashboard, engine) on its embedded defaults.
    Serve {
        /// A TOML configuration file (settings: see the README); WHARF_* variables
        /// override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Deploy a folder (packed and uploaded), a git repository or a prebuilt image, and
    /// follow the deployment.
    Deploy(DeployArgs),
    /// Serve a folder's static files on 127.0.0.1:$PORT (what the host runtime runs
    /// for a static site).
    #[command(hide = true)]
    StaticServer {
        /// The site's folder.
        root: PathBuf,
    },
    /// List projects and their services.
    Ls {
        #[command(flatten)]
        remote: Remote,
    },
    /// Check a token against a server and store both in the user's config folder
    /// (~/.config/wharf/login.toml, private to the user); later commands use them.
    Login {
        /// The server's URL.
        #[arg(long, env = "WHARF_SERVER", default_value = DEFAULT_SERVER)]
        server: String,
        /// The API token (default: read from stdin, so it stays out of the shell's
        /// history).
        #[arg(long)]
        token: Option<String>,
    },
    /// Forget the stored login.
    Logout,
    /// Per service: its live release, the state of its last deployment, its URL.
    Status {
        #[command(flatten)]
        target: ProjectArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the services of a project.
    Services {
        #[command(flatten)]
        target: ProjectArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a service's app output (or, with --deployment, a deployment's events).
    Logs(LogsArgs),
    /// Roll a service back to a release (default: the one before the live release).
    Rollback(RollbackArgs),
    /// Move all of a service's traffic to its canary (`wharf deploy --canary`): it
    /// goes live and the old release stops.
    Promote(CanaryArgs),
    /// Take a service's canary out of the route and stop it: the live release takes
    /// all the traffic back.
    Abort(CanaryArgs),
    /// Run a command once in a fresh instance of a service's live release (its
    /// artifact, env and volumes): `wharf run -s web -- ./manage.py migrate`. Prints
    /// its output and exits with its exit code.
    Run(RunArgs),
    /// Set how many instances process types run (`wharf scale web=3 worker=2`) and
    /// apply it to the live release in place; without counts, show them.
    Scale(ScaleArgs),
    /// Set, unset or list a service's env vars (applied on its next deployment).
    Env {
        #[command(subcommand)]
        action: EnvAction,
    },
    /// A service's custom domains: routed once DNS shows they point here.
    Domains {
        #[command(subcommand)]
        action: DomainsAction,
    },
    /// Pull/merge request previews: list them, say what forks may do, approve a fork's
    /// commit.
    Previews {
        #[command(subcommand)]
        action: PreviewsAction,
    },
    /// The project's volumes: list them, or delete one and its data (owners).
    Volumes {
        #[command(subcommand)]
        action: VolumesAction,
    },
    /// Managed databases (PostgreSQL, MySQL/MariaDB, Redis): create one, list them,
    /// show one's credentials or open its client (owners).
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// A service's cron jobs (declared in wharf.toml as `[[services.x.cron]]`): list
    /// them with their next run, or show the history of their runs.
    Cron {
        #[command(subcommand)]
        action: CronAction,
    },
    /// Backups of the project's volumes: take one now, list them, restore one.
    Backup {
        #[command(subcommand)]
        action: BackupAction,
    },
    /// The project's webhook secret (GitHub and GitLab deliveries signed with it act
    /// on this project only).
    Webhooks {
        #[command(subcommand)]
        action: WebhooksAction,
    },
    /// Create an API token with roles in projects, or list, revoke and rotate tokens
    /// (run on the server's machine; a running server sees the change at once).
    #[command(args_conflicts_with_subcommands = true)]
    Token {
        /// A name for the new token.
        #[arg(long)]
        name: Option<String>,
        /// PROJECT=ROLE (viewer, developer or owner); repeatable.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Days until the new token stops working (default: never).
        #[arg(long)]
        expires_days: Option<u32>,
        /// The server's data folder.
        #[arg(long, env = "WHARF_DATA_DIR", default_value = "wharf-data")]
        data_dir: PathBuf,
        #[command(subcommand)]
        action: Option<TokenAction>,
    },
}

// The structs and enums below that clap reads carry no doc comment of their own:
// clap would take it for the command's description instead of the variant's.

#[derive(clap::Args)]
pub(crate) struct DeployArgs {
    /// The app's folder.
    #[arg(default_value = ".")]
    pub(crate) path: PathBuf,
    /// Deploy this prebuilt image instead of a folder, e.g.
    /// `ghcr.io/acme/shop:1.4` (needs --port for a new service; default service:
    /// the image's name).
    #[arg(long, conflicts_with_all = ["git", "path"])]
    pub(crate) image: Option<String>,
    /// Deploy from this git repository instead of a folder (https://, http://,
    /// ssh:// or git@host:path; the server clones it; default service: the
    /// repository's name).
    #[arg(long, conflicts_with = "path")]
    pub(crate) git: Option<String>,
    /// With --git: a branch, a tag or a full 40-character commit SHA (default:
    /// the repository's default branch).
    #[arg(long = "ref", requires = "git", value_name = "REF")]
    pub(crate) reference: Option<String>,
    /// Project (created if missing); default: the folder's parent's name.
    #[arg(long, short)]
    pub(crate) project: Option<String>,
    /// Deploy into this standing environment of the project (created if missing),
    /// served at `<service>.<environment>.<project>.<base domain>`.
    #[arg(long, short)]
    pub(crate) environment: Option<String>,
    /// Service (created if missing); default: the folder's name.
    #[arg(long, short)]
    pub(crate) service: Option<String>,
    /// The port the app listens on (default: detected).
    #[arg(long)]
    pub(crate) port: Option<u16>,
    /// Return once the deployment is accepted instead of following it.
    #[arg(long)]
    pub(crate) detach: bool,
    /// Deploy as a canary: once healthy, the new release takes this percent of the
    /// traffic (0 to 100; 0 is blue-green) beside the live one until `wharf promote`
    /// or `wharf abort`. One service at a time (not a wharf.toml of several).
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub(crate) canary: Option<u8>,
    #[command(flatten)]
    pub(crate) remote: Remote,
}

/// `wharf promote` and `wharf abort`: the service whose canary they act on.
#[derive(clap::Args)]
pub(crate) struct CanaryArgs {
    #[command(flatten)]
    pub(crate) target: Target,
    #[command(flatten)]
    pub(crate) remote: Remote,
}

#[derive(clap::Args)]
pub(crate) struct LogsArgs {
    /// Follow: keep printing new lines (across redeploys) until interrupted.
    #[arg(long, short)]
    pub(crate) follow: bool,
    /// Lines of past output to show first.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub(crate) tail: usize,
    /// Show this deployment's build and deploy events instead, following it while
    /// it runs.
    #[arg(long, conflicts_with_all = ["project", "environment", "service", "follow"])]
    pub(crate) deployment: Option<String>,
    #[command(flatten)]
    pub(crate) target: Target,
    #[command(flatten)]
    pub(crate) remote: Remote,
}

#[derive(clap::Args)]
pub(crate) struct ScaleArgs {
    /// `TYPE=COUNT` pairs (`web=3`, `worker=0`).
    #[arg(value_name = "TYPE=COUNT")]
    pub(crate) counts: Vec<String>,
    #[command(flatten)]
    pub(crate) target: Target,
    #[command(flatten)]
    pub(crate) remote: Remote,
}

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// Stop it after this many seconds (default 3600).
    #[arg(long, value_name = "SECONDS")]
    pub(crate) timeout: Option<u64>,
    /// Run it in the background and return at once: its output goes nowhere, and it
    /// is removed when it ends or at --timeout.
    #[arg(long)]
    pub(crate) detach: bool,
    /// The program and its arguments, after `--` (no shell: `-- sh -c '...'` for one).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub(crate) command: Vec<String>,
    #[command(flatten)]
    pub(crate) target: Target,
    #[command(flatten)]
    pub(crate) remote: Remote,
}

#[derive(clap::Args)]
pub(crate) struct RollbackArgs {
    /// Project (or --project).
    #[arg(value_name = "PROJECT", conflicts_with = "project")]
    pub(crate) project_arg: Option<String>,
    /// Service (or --service).
    #[arg(value_name = "SERVICE", conflicts_with = "service")]
    pub(crate) service_arg: Option<String>,
    /// Release number.
    #[arg(long)]
    pub(crate) release: Option<u64>,
    /// Run the release's release command again before it starts.
    #[arg(long)]
    pub(crate) run_release: bool,
    #[command(flatten)]
    pub(crate) target: Target,
    #[command(flatten)]
    pub(crate) remote: Remote,
}

#[derive(Subcommand)]
pub(crate) enum DomainsAction {
    /// Claim a domain: routed at once if it already is a CNAME for the service's
    /// hostname, else prints the DNS records that prove it.
    Add {
        /// The domain, e.g. shop.example.com.
        domain: String,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        remote: Remote,
    },
    /// Check a claimed domain's DNS again; routed once proven.
    Verify {
        /// The domain.
        domain: String,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        remote: Remote,
    },
    /// Unroute and release a domain.
    Rm {
        /// The domain.
        domain: String,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the service's domains and whether each is proven.
    Ls {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
pub(crate) enum TokenAction {
    /// Every token: id, name, roles, created, last used, expiry (never the token).
    Ls {
        /// The server's data folder.
        #[arg(long, env = "WHARF_DATA_DIR", default_value = "wharf-data")]
        data_dir: PathBuf,
    },
    /// Revoke the tokens with this id (from `wharf token ls`) or name.
    Revoke {
        /// An id or a name.
        key: String,
        /// The server's data folder.
        #[arg(long, env = "WHARF_DATA_DIR", default_value = "wharf-data")]
        data_dir: PathBuf,
    },
    /// Make a new operator token (written to data_dir/admin-token and printed); the old
    /// one stops working at once. With admin_token set in the configuration, change
    /// that instead.
    RotateOperator {
        /// The server's data folder.
        #[arg(long, env = "WHARF_DATA_DIR", default_value = "wharf-data")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
pub(crate) enum PreviewsAction {
    /// The project's previews and its preview settings.
    Ls {
        #[command(flatten)]
        target: ProjectArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// What previews of pull requests from forks may do: `without-secrets` (the
    /// default: deployed, but without the project's and services' secrets), `approve`
    /// (held until an owner runs `wharf previews approve`), or `off`.
    Forks {
        /// without-secrets, approve or off.
        #[arg(value_parser = ["without-secrets", "approve", "off"])]
        policy: String,
        #[command(flatten)]
        target: ProjectArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// Approve the fork commit waiting in a preview (`wharf previews ls` shows it): it
    /// is deployed, with the secrets.
    Approve {
        /// The pull/merge request number.
        number: u64,
        /// The full commit sha you reviewed; refused unless it is the one waiting.
        #[arg(long)]
        commit: String,
        #[command(flatten)]
        target: ProjectArg,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
pub(crate) enum DbAction {
    /// Create a database from the engine's template and deploy it (owners). Other
    /// services reach it with `${{ NAME.DATABASE_URL }}` (`REDIS_URL` for Redis).
    Create {
        /// Its name (the service's, and the host the project's services reach it by).
        name: String,
        /// postgres, mysql (MariaDB) or redis.
        #[arg(long)]
        engine: String,
        /// The engine's version (default: postgres 15, mariadb 10.11, redis 7).
        #[arg(long)]
        version: Option<String>,
        /// Give it a public route (default: the project network only).
        #[arg(long)]
        public: bool,
        #[command(flatten)]
        target: ProjectArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// The project's databases (no passwords).
    Ls {
        #[command(flatten)]
        target: ProjectArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print a database's user, password, database and URL (owners).
    Credentials {
        /// The database.
        name: String,
        #[command(flatten)]
        target: ProjectArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// Give the database's user a new random password (owners) and redeploy it and
    /// every service referencing it; exits 1 if one does not come back live.
    Rotate {
        /// The database.
        name: String,
        #[command(flatten)]
        target: ProjectArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// Dump the live database to the project's backup destination now (developers;
    /// PostgreSQL and MySQL). Restore with `wharf backup restore ID --confirm NAME`.
    Backup {
        /// The database.
        name: String,
        #[command(flatten)]
        target: ProjectArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// Open the engine's client (psql, mariadb, redis-cli) in the database's
    /// container with `docker exec` (owners; on the Docker engine's machine). The
    /// password goes through the environment, never the command line.
    Connect {
        /// The database.
        name: String,
        /// Print the command instead of running it (the password left out).
        #[arg(long)]
        print: bool,
        #[command(flatten)]
        target: ProjectArg,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
pub(crate) enum VolumesAction {
    /// The volumes of the project (or of `-e ENV`): who mounts them, whether the
    /// runtime holds them.
    Ls {
        #[command(flatten)]
        target: ProjectArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a volume and its data, for good (refused while a live service mounts it).
    Rm {
        /// The volume.
        name: String,
        /// The volume's name again, to confirm.
        #[arg(long, value_name = "NAME")]
        confirm: String,
        /// The scope of a volume left by a deleted environment, as `wharf volumes
        /// ls` shows it.
        #[arg(long, value_name = "SCOPE")]
        scope: Option<String>,
        #[command(flatten)]
        target: ProjectArg,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
pub(crate) enum CronAction {
    /// The service's cron jobs: schedule, concurrency, next run, last outcome.
    Ls {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        remote: Remote,
    },
    /// The service's cron runs, newest first: when, how they ended, exit code; with
    /// --output, what each printed (its last 64 KiB).
    Runs {
        /// Only this job's runs.
        job: Option<String>,
        /// How many (at most 500).
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: usize,
        /// Print each run's output under it.
        #[arg(long)]
        output: bool,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
pub(crate) enum BackupAction {
    /// Back up a volume of the project (or of `-e ENV`) now; exits 1 if it failed.
    Now {
        /// The volume.
        volume: String,
        #[command(flatten)]
        target: ProjectArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// The project's backups, newest first: state, age, size, checksum.
    Ls {
        #[command(flatten)]
        target: ProjectArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// Restore a database dump into a scratch database beside the live one, count
    /// its tables, and drop it again (the live data is not touched); exits 1 if the
    /// dump does not restore.
    Check {
        /// The backup's id (from `wharf backup ls`).
        id: String,
        #[command(flatten)]
        target: ProjectArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// Replace a volume's contents with a backup (owners; refused while a live
    /// service mounts the volume, unless `--restart`).
    Restore {
        /// The backup's id (from `wharf backup ls`).
        id: String,
        /// The name of the volume restored into, to confirm.
        #[arg(long, value_name = "VOLUME")]
        confirm: String,
        /// Restore into this (new) volume instead of the backed-up one.
        #[arg(long, value_name = "VOLUME")]
        into: Option<String>,
        /// Stop the live services that mount the volume, restore, and start their
        /// live releases again.
        #[arg(long)]
        restart: bool,
        #[command(flatten)]
        target: ProjectArg,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
pub(crate) enum WebhooksAction {
    /// Make (or replace) the project's webhook secret and print it once.
    Secret {
        #[command(flatten)]
        target: ProjectArg,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
pub(crate) enum EnvAction {
    /// Set env vars: KEY=VALUE ...
    Set {
        /// KEY=VALUE pairs.
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
        /// Store the values as secrets (sealed at rest, never shown again).
        #[arg(long)]
        secret: bool,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove env vars: KEY ...
    Unset {
        /// Keys.
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        remote: Remote,
    },
    /// List env vars (secret values masked: the API never returns them).
    List {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        remote: Remote,
    },
}
