//! `wharf`: the Wharf server and its command-line client.
//!
//! `wharf serve` runs the control plane (HTTP API, dashboard, engine) on its embedded
//! defaults; the other commands talk to a running server.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use wharf_server::client::{self, CliError, Client, Scope};
use wharf_server::{auth, config};

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "Self-hosted click-to-deploy: server and CLI"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The server's URL when nothing else names one.
const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

#[derive(clap::Args, Clone)]
struct Remote {
    /// The server's URL (default: the one `wharf login` stored, else
    /// http://127.0.0.1:7070).
    #[arg(long, env = "WHARF_SERVER")]
    server: Option<String>,
    /// API token (default: the one `wharf login` stored for this server, else the
    /// operator token in ./wharf-data/admin-token).
    #[arg(long, env = "WHARF_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Remote {
    /// A client for the server and token chosen in this order: flags, then
    /// `WHARF_SERVER`/`WHARF_TOKEN`, then the login file, then the operator token of a
    /// server whose data folder is `./wharf-data` (or `$WHARF_DATA_DIR`). The login's
    /// token is only sent to the server it was stored for.
    fn client(&self) -> Result<Client, CliError> {
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        if let (Some(server), Some(token)) = (nonempty(&self.server), nonempty(&self.token)) {
            // Both given: the login file is not even read (a broken one is no obstacle).
            return Ok(Client::new(&server, &token));
        }
        let login_path = client::Login::path();
        let login = match &login_path {
            Ok(p) => client::Login::load(p)?,
            Err(_) => None,
        };
        let server = nonempty(&self.server)
            .or_else(|| login.as_ref().map(|l| l.server.clone()))
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        let from_login = login
            .filter(|l| client::same_server(&l.server, &server))
            .map(|l| l.token);
        let token = match nonempty(&self.token).or(from_login) {
            Some(t) => t,
            None => {
                let dir = std::env::var("WHARF_DATA_DIR").unwrap_or_else(|_| "wharf-data".into());
                let path = PathBuf::from(dir).join("admin-token");
                std::fs::read_to_string(&path)
                    .map_err(|e| {
                        let login = match &login_path {
                            Ok(p) => format!("no login for {server} in {}", p.display()),
                            Err(e) => e.to_string(),
                        };
                        format!(
                            "no token: run `wharf login`, or pass --token or WHARF_TOKEN \
                             ({login}; {} unreadable: {e})",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_owned()
            }
        };
        Ok(Client::new(&server, &token))
    }
}

/// Which service (of which project or environment) a command is about.
#[derive(clap::Args, Clone)]
struct Target {
    #[command(flatten)]
    scope: ProjectArg,
    /// Service (default: the one service of the folder's wharf.toml, else the
    /// folder's name, as `wharf deploy` picks it).
    #[arg(long, short)]
    service: Option<String>,
}

/// Which project (or environment of it) a command is about.
#[derive(clap::Args, Clone)]
struct ProjectArg {
    /// Project (default: the folder's wharf.toml, else the parent folder's name, as
    /// `wharf deploy` picks it).
    #[arg(long, short)]
    project: Option<String>,
    /// A standing environment of the project (default: the project's own services).
    #[arg(long, short)]
    environment: Option<String>,
}

impl ProjectArg {
    fn resolve(&self) -> Result<Scope, CliError> {
        Ok(Scope {
            project: default_project(self.project.clone(), std::path::Path::new("."))?,
            environment: self.environment.clone(),
        })
    }
}

impl Target {
    fn resolve(&self) -> Result<(Scope, String), CliError> {
        let dir = std::path::Path::new(".");
        let scope = self.scope.resolve()?;
        let service = match &self.service {
            Some(s) => s.clone(),
            None => match wharf_server::manifest::Manifest::load(dir)? {
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
fn default_project(flag: Option<String>, dir: &std::path::Path) -> Result<String, CliError> {
    if let Some(p) = flag {
        return Ok(p);
    }
    let found = match wharf_server::manifest::Manifest::load(dir)? {
        Some(m) => m.project.or_else(|| folder_name(dir)),
        None => folder_name(&dir.join("..")),
    };
    found.ok_or_else(|| "cannot name the project: pass --project".into())
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (API, dashboard, engine) on its embedded defaults.
    Serve {
        /// A TOML configuration file (settings: see the README); WHARF_* variables
        /// override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Deploy a folder (packed and uploaded), a git repository or a prebuilt image, and
    /// follow the deployment.
    Deploy {
        /// The app's folder.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Deploy this prebuilt image instead of a folder, e.g.
        /// `ghcr.io/acme/shop:1.4` (needs --port for a new service; default service:
        /// the image's name).
        #[arg(long, conflicts_with_all = ["git", "path"])]
        image: Option<String>,
        /// Deploy from this git repository instead of a folder (https://, http://,
        /// ssh:// or git@host:path; the server clones it; default service: the
        /// repository's name).
        #[arg(long, conflicts_with = "path")]
        git: Option<String>,
        /// With --git: a branch, a tag or a full 40-character commit SHA (default:
        /// the repository's default branch).
        #[arg(long = "ref", requires = "git", value_name = "REF")]
        reference: Option<String>,
        /// Project (created if missing); default: the folder's parent's name.
        #[arg(long, short)]
        project: Option<String>,
        /// Deploy into this standing environment of the project (created if missing),
        /// served at `<service>.<environment>.<project>.<base domain>`.
        #[arg(long, short)]
        environment: Option<String>,
        /// Service (created if missing); default: the folder's name.
        #[arg(long, short)]
        service: Option<String>,
        /// The port the app listens on (default: detected).
        #[arg(long)]
        port: Option<u16>,
        /// Return once the deployment is accepted instead of following it.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        remote: Remote,
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
    Logs {
        /// Follow: keep printing new lines (across redeploys) until interrupted.
        #[arg(long, short)]
        follow: bool,
        /// Lines of past output to show first.
        #[arg(long, short = 'n', default_value_t = 100)]
        tail: usize,
        /// Show this deployment's build and deploy events instead, following it while
        /// it runs.
        #[arg(long, conflicts_with_all = ["project", "environment", "service", "follow"])]
        deployment: Option<String>,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        remote: Remote,
    },
    /// Roll a service back to a release (default: the one before the live release).
    Rollback {
        /// Project (or --project).
        #[arg(value_name = "PROJECT", conflicts_with = "project")]
        project_arg: Option<String>,
        /// Service (or --service).
        #[arg(value_name = "SERVICE", conflicts_with = "service")]
        service_arg: Option<String>,
        /// Release number.
        #[arg(long)]
        release: Option<u64>,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        remote: Remote,
    },
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
    /// Create an API token with roles in projects (run on the server's machine).
    Token {
        /// A name for the token.
        #[arg(long)]
        name: String,
        /// PROJECT=ROLE (viewer, developer or owner); repeatable.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// The server's data folder.
        #[arg(long, env = "WHARF_DATA_DIR", default_value = "wharf-data")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum DomainsAction {
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
enum EnvAction {
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

/// What `env list` shows instead of a secret's value.
const MASK: &str = "********";

fn print_env(env: &Value) {
    let Some(vars) = env.as_object().filter(|m| !m.is_empty()) else {
        println!("(no env vars)");
        return;
    };
    for (k, v) in vars {
        match v.as_str() {
            Some(plain) => println!("{k}={plain}"),
            None => println!("{k}={MASK} (secret)"),
        }
    }
}

fn print_event(ev: &Value) {
    let k = &ev["kind"];
    if k["kind"] == "state" {
        let to = &k["to"];
        let extra = to["reason"]
            .as_str()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        println!("==> {}{extra}", to["state"].as_str().unwrap_or("?"));
    } else {
        println!("    {}", k["text"].as_str().unwrap_or(""));
    }
}

fn folder_name(p: &std::path::Path) -> Option<String> {
    let abs = std::fs::canonicalize(p).ok()?;
    Some(abs.file_name()?.to_string_lossy().to_ascii_lowercase())
}

async fn run(cli: Cli) -> Result<i32, CliError> {
    match cli.command {
        Command::Serve { config } => {
            let cfg = config::Config::load(config.as_deref(), std::env::vars())?;
            wharf_server::server::serve(cfg).await?;
            Ok(0)
        }
        Command::Deploy {
            path,
            image,
            git,
            reference,
            project,
            environment,
            service,
            port,
            detach,
            remote,
        } => {
            let c = remote.client()?;
            let remote_source = match (image, git) {
                (Some(image), _) => Some((image.clone(), json!({"image": image}))),
                (None, Some(url)) => {
                    Some((url.clone(), json!({"git": {"url": url, "ref": reference}})))
                }
                (None, None) => None,
            };
            if let Some((what, source)) = remote_source {
                let service = match service {
                    Some(s) => s,
                    None => client::name_from_reference(&what).ok_or_else(|| {
                        format!("cannot name the service after {what:?}: pass --service")
                    })?,
                };
                let project =
                    project.ok_or("deploying an image or a git repository needs --project")?;
                let scope = Scope {
                    project,
                    environment,
                };
                client::ensure(&c, &scope, &service, port).await?;
                let dep = c
                    .send(
                        reqwest::Method::POST,
                        &format!("{}/deployments", scope.service(&service)),
                        &json!({ "source": source }),
                    )
                    .await?;
                return follow_deploy(&c, &scope, &service, &dep, detach).await;
            }
            if service.is_none() {
                if let Some(m) = wharf_server::manifest::Manifest::load(&path)? {
                    return deploy_manifest(&c, &path, m, project, environment, detach).await;
                }
            }
            let service = service
                .or_else(|| folder_name(&path))
                .ok_or("cannot name the service: pass --service")?;
            let project = project
                .or_else(|| folder_name(&path.join("..")))
                .ok_or("cannot name the project: pass --project")?;
            let scope = Scope {
                project,
                environment,
            };
            client::ensure(&c, &scope, &service, port).await?;
            let archive = client::pack(&path)?;
            println!("uploading {} ({} bytes)", path.display(), archive.len());
            let bar = client::Progress::on_tty(&service, archive.len() as u64);
            let dep = c.deploy_archive(&scope, &service, archive, bar).await?;
            follow_deploy(&c, &scope, &service, &dep, detach).await
        }
        Command::Ls { remote } => {
            let c = remote.client()?;
            let print_services = |services: Value, indent: &str| {
                for s in services.as_array().into_iter().flatten() {
                    println!(
                        "{indent}{:<20} {:<45} live: {}",
                        s["name"].as_str().unwrap_or("?"),
                        s["url"].as_str().unwrap_or(""),
                        s["live_deployment"].as_str().unwrap_or("-")
                    );
                }
            };
            for p in c.get("/projects").await?.as_array().into_iter().flatten() {
                let mut scope = Scope {
                    project: p["name"].as_str().unwrap_or("?").to_owned(),
                    environment: None,
                };
                println!("{}", scope.project);
                print_services(c.get(&scope.services()).await?, "  ");
                let envs = c.get(&format!("{}/environments", scope.path())).await?;
                for e in envs.as_array().into_iter().flatten() {
                    let env = e["name"].as_str().unwrap_or("?");
                    let kind = e["kind"]["kind"].as_str().unwrap_or("standing");
                    println!("  environment {env} ({kind})");
                    scope.environment = Some(env.to_owned());
                    print_services(c.get(&scope.services()).await?, "    ");
                }
            }
            Ok(0)
        }
        Command::Login { server, token } => login(&server, token).await,
        Command::Logout => {
            let path = client::Login::path()?;
            if client::Login::remove(&path)? {
                println!("logged out (removed {})", path.display());
            } else {
                println!("not logged in (no {})", path.display());
            }
            Ok(0)
        }
        Command::Status { target, remote } => {
            let scope = target.resolve()?;
            status(&remote.client()?, &scope).await
        }
        Command::Services { target, remote } => {
            let scope = target.resolve()?;
            let c = remote.client()?;
            let services = services_of(&c, &scope).await?;
            if services.is_empty() {
                return Ok(0);
            }
            let rows = services.iter().map(|s| {
                let deps: Vec<&str> = s["depends_on"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                vec![
                    s["name"].as_str().unwrap_or("?").to_owned(),
                    if s["live_deployment"].is_string() {
                        "yes"
                    } else {
                        "no"
                    }
                    .to_owned(),
                    s["url"].as_str().unwrap_or("-").to_owned(),
                    if deps.is_empty() {
                        "-".to_owned()
                    } else {
                        deps.join(",")
                    },
                ]
            });
            print_table(&["SERVICE", "LIVE", "URL", "DEPENDS ON"], rows);
            Ok(0)
        }
        Command::Logs {
            follow,
            tail,
            deployment,
            target,
            remote,
        } => {
            let c = remote.client()?;
            if let Some(id) = deployment {
                let state = c.follow(&id, print_event).await?;
                return Ok(if state == "live" { 0 } else { 1 });
            }
            let (scope, service) = target.resolve()?;
            app_logs(&c, &scope, &service, follow, tail).await
        }
        Command::Rollback {
            project_arg,
            service_arg,
            release,
            target,
            remote,
        } => {
            let (scope, service) = Target {
                scope: ProjectArg {
                    project: project_arg.or(target.scope.project),
                    environment: target.scope.environment,
                },
                service: service_arg.or(target.service),
            }
            .resolve()?;
            let c = remote.client()?;
            let body = match release {
                Some(n) => json!({"release": n}),
                None => json!({}),
            };
            let dep = c
                .send(
                    reqwest::Method::POST,
                    &format!("{}/rollback", scope.service(&service)),
                    &body,
                )
                .await?;
            let id = dep["id"].as_str().unwrap_or_default().to_owned();
            let state = c.follow(&id, print_event).await?;
            Ok(if state == "live" { 0 } else { 1 })
        }
        Command::Env { action } => env(action).await,
        Command::Domains { action } => domains(action).await,
        Command::Token {
            name,
            roles,
            data_dir,
        } => {
            let mut projects = BTreeMap::new();
            for r in roles {
                let (p, role) = r
                    .split_once('=')
                    .ok_or_else(|| format!("expected PROJECT=ROLE, got {r:?}"))?;
                projects.insert(p.to_owned(), role.parse::<auth::Role>()?);
            }
            std::fs::create_dir_all(&data_dir)?;
            let tokens = auth::Tokens::load(&data_dir)?;
            println!("{}", tokens.create(&name, false, projects)?);
            Ok(0)
        }
    }
}

/// Prints what to publish in DNS to prove `claim` (an entry of the domains API).
fn print_proof(claim: &Value) {
    let v = &claim["verify"];
    println!(
        "  either CNAME {} -> {}",
        v["cname"]["name"].as_str().unwrap_or("?"),
        v["cname"]["target"].as_str().unwrap_or("?")
    );
    println!(
        "  or TXT {} = \"{}\"",
        v["txt"]["name"].as_str().unwrap_or("?"),
        v["txt"]["value"].as_str().unwrap_or("?")
    );
}

/// `wharf domains ...`.
async fn domains(action: DomainsAction) -> Result<i32, CliError> {
    let post = reqwest::Method::POST;
    match action {
        DomainsAction::Add {
            domain,
            target,
            remote,
        } => {
            let (scope, service) = target.resolve()?;
            let path = format!("{}/domains", scope.service(&service));
            let c = remote.client()?;
            let claim = c.send(post, &path, &json!({"domain": domain})).await?;
            let name = claim["domain"].as_str().unwrap_or(&domain);
            if claim["verified"] == true {
                println!("{name} is routed to {}", scope.label(&service));
                return Ok(0);
            }
            println!(
                "{name} is claimed but not routed yet: {}",
                claim["reason"]
                    .as_str()
                    .unwrap_or("DNS does not show it points here")
            );
            println!("publish one of these records, then run `wharf domains verify {name}`:");
            print_proof(&claim);
            Ok(2)
        }
        DomainsAction::Verify {
            domain,
            target,
            remote,
        } => {
            let (scope, service) = target.resolve()?;
            let path = format!("{}/domains/{domain}/verify", scope.service(&service));
            remote.client()?.send(post, &path, &json!(null)).await?;
            println!("{domain} is routed to {}", scope.label(&service));
            Ok(0)
        }
        DomainsAction::Rm {
            domain,
            target,
            remote,
        } => {
            let (scope, service) = target.resolve()?;
            let path = format!("{}/domains/{domain}", scope.service(&service));
            remote
                .client()?
                .send(reqwest::Method::DELETE, &path, &json!(null))
                .await?;
            println!("{domain} removed from {}", scope.label(&service));
            Ok(0)
        }
        DomainsAction::Ls { target, remote } => {
            let (scope, service) = target.resolve()?;
            let path = format!("{}/domains", scope.service(&service));
            let list = remote.client()?.get(&path).await?;
            let list = list.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("{} has no custom domains", scope.label(&service));
            }
            for claim in &list {
                let name = claim["domain"].as_str().unwrap_or("?");
                if claim["verified"] == true {
                    println!("{name}  routed");
                } else {
                    println!("{name}  waiting for DNS:");
                    print_proof(claim);
                }
            }
            Ok(0)
        }
    }
}

/// `wharf login`: checks the token (from `--token` or stdin) against the server and
/// stores both only if the server accepts it.
async fn login(server: &str, token: Option<String>) -> Result<i32, CliError> {
    let server = server.trim_end_matches('/').to_owned();
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        return Err(format!("--server {server:?} must be an http:// or https:// URL").into());
    }
    let token = match token {
        Some(t) => t,
        None => {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() {
                eprint!("token for {server}: ");
            }
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the token from stdin: {e}"))?;
            line
        }
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err("no token given: pass --token or write it to stdin".into());
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a token has no spaces or control characters".into());
    }
    let c = Client::new(&server, &token);
    let health = c
        .get("/health")
        .await
        .map_err(|e| format!("{server} does not answer as a wharf server, nothing stored: {e}"))?;
    if health["status"] != "ok" {
        return Err(format!(
            "{server} does not answer as a wharf server (GET /v1/health said {health}), nothing stored"
        )
        .into());
    }
    let projects = c
        .get("/projects")
        .await
        .map_err(|e| format!("{server} refused the token, nothing stored: {e}"))?;
    let path = client::Login::path()?;
    client::Login {
        server: server.clone(),
        token,
    }
    .save(&path)?;
    let n = projects.as_array().map_or(0, Vec::len);
    println!(
        "logged in to {server} ({n} project{} visible); login stored in {}",
        if n == 1 { "" } else { "s" },
        path.display()
    );
    Ok(0)
}

/// Prints `rows` under `header` in left-aligned columns.
fn print_table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let mut all: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    all.extend(rows);
    let mut widths = vec![0; header.len()];
    for row in &all {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &all {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// Prints the deployment's id, then (unless `detach`) follows it: 0 and the service's
/// URL as the last line once live, 1 with how it ended otherwise.
async fn follow_deploy(
    c: &Client,
    scope: &Scope,
    service: &str,
    dep: &Value,
    detach: bool,
) -> Result<i32, CliError> {
    let id = dep["id"].as_str().unwrap_or_default().to_owned();
    println!("deployment {id}");
    if detach {
        return Ok(0);
    }
    let state = c.follow(&id, print_event).await?;
    let svc = c.get(&scope.service(service)).await?;
    if state == "live" {
        println!("live at {}", svc["url"].as_str().unwrap_or("?"));
        Ok(0)
    } else {
        eprintln!("deployment ended {state}");
        Ok(1)
    }
}

/// The services of `scope`; when there are none, says so.
async fn services_of(c: &Client, scope: &Scope) -> Result<Vec<Value>, CliError> {
    let services = c.get(&scope.services()).await?;
    let services = services.as_array().cloned().unwrap_or_default();
    if services.is_empty() {
        println!("{scope} has no services yet: `wharf deploy` adds one");
    }
    Ok(services)
}

/// `wharf status`: one row per service of `scope`.
async fn status(c: &Client, scope: &Scope) -> Result<i32, CliError> {
    let services = services_of(c, scope).await?;
    if services.is_empty() {
        return Ok(0);
    }
    let mut rows = Vec::new();
    for s in &services {
        let name = s["name"].as_str().unwrap_or("?");
        let base = scope.service(name);
        let release = match s["live_deployment"].as_str() {
            Some(id) => {
                let live = c.get(&format!("/deployments/{id}")).await?;
                let releases = c.get(&format!("{base}/releases")).await?;
                releases
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["id"] == live["release"])
                    .and_then(|r| r["number"].as_u64())
                    .map_or_else(|| "?".to_owned(), |n| format!("v{n}"))
            }
            None => "-".to_owned(),
        };
        let last = c.get(&format!("{base}/deployments?limit=1")).await?;
        let last = match last.get(0) {
            Some(d) => {
                let st = &d["state"];
                let reason = st["reason"]
                    .as_str()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                format!(
                    "{}{reason} ({})",
                    st["state"].as_str().unwrap_or("?"),
                    d["id"].as_str().unwrap_or("?")
                )
            }
            None => "never deployed".to_owned(),
        };
        rows.push(vec![
            name.to_owned(),
            release,
            last,
            s["url"].as_str().unwrap_or("-").to_owned(),
        ]);
    }
    println!("{scope}");
    print_table(
        &["SERVICE", "RELEASE", "LAST DEPLOYMENT", "URL"],
        rows.into_iter(),
    );
    Ok(0)
}

/// `wharf env set|unset|list`.
async fn env(action: EnvAction) -> Result<i32, CliError> {
    match action {
        EnvAction::Set {
            pairs,
            secret,
            target,
            remote,
        } => {
            let mut body = serde_json::Map::new();
            for p in &pairs {
                let (k, v) = p
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| format!("expected KEY=VALUE, got {p:?}"))?;
                let v = if secret {
                    json!({"secret": v})
                } else {
                    json!(v)
                };
                body.insert(k.to_owned(), v);
            }
            let (scope, service) = target.resolve()?;
            let env = remote
                .client()?
                .send(
                    reqwest::Method::PUT,
                    &format!("{}/env", scope.service(&service)),
                    &Value::Object(body),
                )
                .await?;
            print_env(&env);
            eprintln!(
                "set on {}; applied on its next deployment",
                scope.label(&service)
            );
            Ok(0)
        }
        EnvAction::Unset {
            keys,
            target,
            remote,
        } => {
            let (scope, service) = target.resolve()?;
            let c = remote.client()?;
            let path = scope.service(&service);
            let svc = c.get(&path).await?;
            let missing: Vec<&str> = keys
                .iter()
                .filter(|k| svc["env"].get(k.as_str()).is_none())
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "{} has no env var {}; nothing removed",
                    scope.label(&service),
                    missing.join(", ")
                )
                .into());
            }
            let body: serde_json::Map<String, Value> =
                keys.iter().map(|k| (k.clone(), Value::Null)).collect();
            let env = c
                .send(
                    reqwest::Method::PUT,
                    &format!("{path}/env"),
                    &Value::Object(body),
                )
                .await?;
            print_env(&env);
            eprintln!(
                "removed from {}; applied on its next deployment",
                scope.label(&service)
            );
            Ok(0)
        }
        EnvAction::List { target, remote } => {
            let (scope, service) = target.resolve()?;
            let svc = remote.client()?.get(&scope.service(&service)).await?;
            print_env(&svc["env"]);
            Ok(0)
        }
    }
}

/// `wharf logs`: the live instance's output; with `follow`, new lines too, moving on
/// to the new instance when a redeploy replaces it.
async fn app_logs(
    c: &Client,
    scope: &Scope,
    service: &str,
    follow: bool,
    tail: usize,
) -> Result<i32, CliError> {
    use std::io::Write;
    let base = scope.service(service);
    let live = |svc: &Value| svc["live_deployment"].as_str().map(str::to_owned);
    let mut attached = live(&c.get(&base).await?);
    if attached.is_none() {
        return Err(format!(
            "{} has no live instance: deploy it first",
            scope.label(service)
        )
        .into());
    }
    let mut tail = tail;
    loop {
        let mut failed = None;
        let mut closed = false;
        c.sse(
            &format!("{base}/logs?follow={follow}&tail={tail}"),
            |event, data| {
                match event {
                    "log" => {
                        let line: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                        let text = line["text"].as_str().unwrap_or(data);
                        // Written, not printed: a reader that went away (`| head`)
                        // ends the command instead of panicking it.
                        let written = if line["stream"] == "stderr" {
                            writeln!(std::io::stderr(), "{text}")
                        } else {
                            let mut out = std::io::stdout().lock();
                            writeln!(out, "{text}").and_then(|()| out.flush())
                        };
                        if written.is_err() {
                            closed = true;
                            return false;
                        }
                    }
                    "error" => failed = Some(data.to_owned()),
                    _ => {}
                }
                true
            },
        )
        .await?;
        if let Some(e) = failed {
            return Err(format!("reading the logs failed: {e}").into());
        }
        if !follow || closed {
            return Ok(0);
        }
        // The instance stopped: wait for the service's next live instance.
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let now = live(&c.get(&base).await?);
            if now.is_some() && now != attached {
                eprintln!(
                    "--- now following deployment {}",
                    now.as_deref().unwrap_or("?")
                );
                attached = now;
                // The new instance's output from its start.
                tail = 10_000;
                break;
            }
        }
    }
}

/// Deploys every service of a `wharf.toml`, wave by wave in dependency order; a
/// failure stops the waves after it.
async fn deploy_manifest(
    c: &Client,
    dir: &std::path::Path,
    m: wharf_server::manifest::Manifest,
    project: Option<String>,
    environment: Option<String>,
    detach: bool,
) -> Result<i32, CliError> {
    let waves = m.waves()?;
    let project = project
        .or_else(|| m.project.clone())
        .or_else(|| folder_name(dir))
        .ok_or("cannot name the project: pass --project")?;
    let scope = Scope {
        project,
        environment,
    };
    client::ensure_scope(c, &scope).await?;
    // Configure every service first, so dependencies are known before any deploy.
    for name in m.services.keys() {
        let mut body = m.service_body(name);
        // Custom domains name the project's own services: an environment's copy of a
        // service must not claim them (it gets its own generated hostname).
        if scope.environment.is_some() {
            let dropped = body.as_object_mut().and_then(|b| b.remove("domains"));
            if dropped.is_some_and(|d| d.as_array().is_some_and(|a| !a.is_empty())) {
                eprintln!(
                    "{name}: the custom domains of wharf.toml stay with the project's own \
                     service, not set in {scope}"
                );
            }
        }
        c.send(reqwest::Method::PUT, &scope.service(name), &body)
            .await?;
    }
    for (i, wave) in waves.iter().enumerate() {
        println!("==> wave {}: {}", i + 1, wave.join(", "));
        let mut started = Vec::new();
        for name in wave {
            let folder = dir.join(m.services[name].path.clone().unwrap_or_default());
            let archive = client::pack(&folder)?;
            println!(
                "uploading {name} from {} ({} bytes)",
                folder.display(),
                archive.len()
            );
            let bar = client::Progress::on_tty(name, archive.len() as u64);
            let dep = c.deploy_archive(&scope, name, archive, bar).await?;
            started.push((
                name.clone(),
                dep["id"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        if detach {
            continue;
        }
        for (name, id) in &started {
            let state = c
                .follow(id, |ev| {
                    print!("[{name}] ");
                    print_event(ev)
                })
                .await?;
            if state != "live" {
                let rest: Vec<String> = waves[i + 1..].iter().flatten().cloned().collect();
                eprintln!("{name}: deployment ended {state}");
                if !rest.is_empty() {
                    eprintln!(
                        "not deployed (they depend on this wave): {}",
                        rest.join(", ")
                    );
                }
                return Ok(1);
            }
        }
    }
    for name in m.services.keys() {
        let svc = c.get(&scope.service(name)).await?;
        println!("{name} live at {}", svc["url"].as_str().unwrap_or("?"));
    }
    Ok(0)
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    match run(Cli::parse()).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("wharf: {e}");
            std::process::exit(1);
        }
    }
}
