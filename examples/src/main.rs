//! `wharf`: the Wharf server and its command-line client.
//!
//! `wharf serve` runs the control plane (HTTP API, dashboard, engine) on its embedded
//! defaults; the other commands talk to a running server (see [`cli`]).

mod cli;

use clap::Parser;

use cli::args::{Cli, Command};
use wharf_server::client::CliError;
use wharf_server::config;

async fn run(cli: Cli) -> Result<i32, CliError> {
    match cli.command {
        Command::Serve { config } => {
            let cfg = config::Config::load(config.as_deref(), std::env::vars())?;
            wharf_server::server::serve(cfg).await?;
            Ok(0)
        }
        Command::Deploy(args) => cli::deploy::run(args).await,
        Command::StaticServer { root } => {
            let port: u16 = std::env::var("PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .ok_or("wharf static-server: PORT must name the port to serve on")?;
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            wharf_server::static_site::serve(root, addr)
                .await
                .map_err(|e| format!("wharf static-server: {e}"))?;
            Ok(0)
        }
        Command::Ls { remote } => cli::status::ls(remote).await,
        Command::Login { server, token } => cli::login::login(&server, token).await,
        Command::Logout => cli::login::logout(),
        Command::Status { target, remote } => cli::status::status(target, remote).await,
        Command::Services { target, remote } => cli::status::services(target, remote).await,
        Command::Logs(args) => cli::logs::run(args).await,
        Command::Rollback(args) => cli::deploy::rollback(args).await,
        Command::Promote(args) => cli::deploy::canary(args, "promote").await,
        Command::Abort(args) => cli::deploy::canary(args, "abort").await,
        Command::Run(args) => cli::run::run(args).await,
        Command::Scale(args) => cli::run::scale(args).await,
        Command::Env { action } => cli::env::run(action).await,
        Command::Domains { action } => cli::domains::run(action).await,
        Command::Previews { action } => cli::previews::run(action).await,
        Command::Webhooks { action } => cli::previews::webhooks(action).await,
        Command::Volumes { action } => cli::volumes::run(action).await,
        Command::Db { action } => cli::db::run(action).await,
        Command::Backup { action } => cli::backup::run(action).await,
        Command::Cron { action } => cli::cron::run(action).await,
        Command::Token {
            name,
            roles,
            expires_days,
            data_dir,
            action,
        } => match action {
            Some(action) => cli::login::token_action(action),
            None => {
                let name = name.ok_or("wharf token: --name is required to make a token")?;
                cli::login::token(&name, roles, expires_days, &data_dir)
            }
        },
    }
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
