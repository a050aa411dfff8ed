//! `wharf`: the Wharf server and its command-line client.
//!
//! `wharf serve` runs the control plane (HTTP API, dashboard, engine) on its embedded
//! defaults; the other commands talk to a running server.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use wharf_server::client::{self, CliError, Client};
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

#[derive(clap::Args, Clone)]
struct Remote {
    /// The server's URL.
    #[arg(long, env = "WHARF_SERVER", default_value = "http://127.0.0.1:7070")]
    server: String,
    /// API token (default: the operator token in ./wharf-data/admin-token).
    #[arg(long, env = "WHARF_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Remote {
    fn client(&self) -> Result<Client, CliError> {
        let token = match &self.token {
            Some(t) => t.clone(),
            None => {
                let dir = std::env::var("WHARF_DATA_DIR").unwrap_or_else(|_| "wharf-data".into());
                let path = PathBuf::from(dir).join("admin-token");
                std::fs::read_to_string(&path)
                    .map_err(|e| {
                        format!(
                            "no token: pass --token or WHARF_TOKEN ({} unreadable: {e})",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_owned()
            }
        };
        Ok(Client::new(&self.server, &token))
    }
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
    /// Deploy a folder: packs it, uploads it and follows the deployment.
    Deploy {
        /// The app's folder.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Project (created if missing); default: the folder's parent's name.
        #[arg(long, short)]
        project: Option<String>,
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
    /// Show a deployment's events (following it if it is running).
    Logs {
        /// The deployment's id.
        deployment: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Roll a service back to a release (default: the one before the live release).
    Rollback {
        /// Project.
        project: String,
        /// Service.
        service: String,
        /// Release number.
        #[arg(long)]
        release: Option<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Set env vars of a service: KEY=VALUE, or KEY=- to remove; --secret for secrets.
    Env {
        /// Project.
        project: String,
        /// Service.
        service: String,
        /// KEY=VALUE pairs.
        pairs: Vec<String>,
        /// Store the values as secrets (write-only, never shown again).
        #[arg(long)]
        secret: bool,
        #[command(flatten)]
        remote: Remote,
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
            project,
            service,
            port,
            detach,
            remote,
        } => {
            let c = remote.client()?;
            if service.is_none() {
                if let Some(m) = wharf_server::manifest::Manifest::load(&path)? {
                    return deploy_manifest(&c, &path, m, project, detach).await;
                }
            }
            let service = service
                .or_else(|| folder_name(&path))
                .ok_or("cannot name the service: pass --service")?;
            let project = project
                .or_else(|| folder_name(&path.join("..")))
                .ok_or("cannot name the project: pass --project")?;
            client::ensure(&c, &project, &service, port).await?;
            let archive = client::pack(&path)?;
            println!("uploading {} ({} bytes)", path.display(), archive.len());
            let dep = c.deploy_archive(&project, &service, archive).await?;
            let id = dep["id"].as_str().unwrap_or_default().to_owned();
            println!("deployment {id}");
            if detach {
                return Ok(0);
            }
            let state = c.follow(&id, print_event).await?;
            let svc = c
                .get(&format!("/projects/{project}/services/{service}"))
                .await?;
            if state == "live" {
                println!("live at {}", svc["url"].as_str().unwrap_or("?"));
                Ok(0)
            } else {
                eprintln!("deployment ended {state}");
                Ok(1)
            }
        }
        Command::Ls { remote } => {
            let c = remote.client()?;
            for p in c.get("/projects").await?.as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap_or("?");
                println!("{name}");
                for s in c
                    .get(&format!("/projects/{name}/services"))
                    .await?
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    println!(
                        "  {:<20} {:<45} live: {}",
                        s["name"].as_str().unwrap_or("?"),
                        s["url"].as_str().unwrap_or(""),
                        s["live_deployment"].as_str().unwrap_or("-")
                    );
                }
            }
            Ok(0)
        }
        Command::Logs { deployment, remote } => {
            let state = remote.client()?.follow(&deployment, print_event).await?;
            Ok(if state == "live" { 0 } else { 1 })
        }
        Command::Rollback {
            project,
            service,
            release,
            remote,
        } => {
            let c = remote.client()?;
            let body = match release {
                Some(n) => json!({"release": n}),
                None => json!({}),
            };
            let dep = c
                .send(
                    reqwest::Method::POST,
                    &format!("/projects/{project}/services/{service}/rollback"),
                    &body,
                )
                .await?;
            let id = dep["id"].as_str().unwrap_or_default().to_owned();
            let state = c.follow(&id, print_event).await?;
            Ok(if state == "live" { 0 } else { 1 })
        }
        Command::Env {
            project,
            service,
            pairs,
            secret,
            remote,
        } => {
            let mut body = serde_json::Map::new();
            for p in pairs {
                let (k, v) = p
                    .split_once('=')
                    .ok_or_else(|| format!("expected KEY=VALUE, got {p:?}"))?;
                let v = match (v, secret) {
                    ("-", _) => Value::Null,
                    (v, true) => json!({"secret": v}),
                    (v, false) => json!(v),
                };
                body.insert(k.to_owned(), v);
            }
            let env = remote
                .client()?
                .send(
                    reqwest::Method::PUT,
                    &format!("/projects/{project}/services/{service}/env"),
                    &Value::Object(body),
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&env)?);
            Ok(0)
        }
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

/// Deploys every service of a `wharf.toml`, wave by wave in dependency order; a
/// failure stops the waves after it.
async fn deploy_manifest(
    c: &Client,
    dir: &std::path::Path,
    m: wharf_server::manifest::Manifest,
    project: Option<String>,
    detach: bool,
) -> Result<i32, CliError> {
    let waves = m.waves()?;
    let project = project
        .or_else(|| m.project.clone())
        .or_else(|| folder_name(dir))
        .ok_or("cannot name the project: pass --project")?;
    if c.get(&format!("/projects/{project}")).await.is_err() {
        c.send(
            reqwest::Method::POST,
            "/projects",
            &json!({"name": project}),
        )
        .await?;
    }
    // Configure every service first, so dependencies are known before any deploy.
    for name in m.services.keys() {
        c.send(
            reqwest::Method::PUT,
            &format!("/projects/{project}/services/{name}"),
            &m.service_body(name),
        )
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
            let dep = c.deploy_archive(&project, name, archive).await?;
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
        let svc = c
            .get(&format!("/projects/{project}/services/{name}"))
            .await?;
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
