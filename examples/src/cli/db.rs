//! `wharf db create|ls|credentials|connect`: a project's managed databases.

use std::io::IsTerminal as _;
use std::process::Command;

use wharf_core::database::DbEngine;
use wharf_server::client::CliError;
use wharf_server::dto::{
    BackupView, DatabaseCredentials, DatabaseInput, DatabaseView, ServiceStatus,
};

use super::args::DbAction;

/// `wharf db ...`.
pub(crate) async fn run(action: DbAction) -> Result<i32, CliError> {
    match action {
        DbAction::Create {
            name,
            engine,
            version,
            public,
            target,
            remote,
        } => {
            let engine: DbEngine = engine
                .parse()
                .map_err(|e: wharf_core::Error| e.message().to_owned())?;
            let mut scope = target.resolve()?;
            // Databases belong to the project's own services.
            if let Some(e) = scope.environment.take() {
                return Err(format!(
                    "databases belong to the project's own services, not to environment {e}"
                )
                .into());
            }
            let client = remote.client()?;
            wharf_server::client::ensure_scope(&client, &scope).await?;
            let body = DatabaseInput {
                name,
                engine,
                version,
                public,
            };
            let v: DatabaseView = client
                .send(
                    reqwest::Method::POST,
                    &format!("/projects/{}/databases", scope.project),
                    &body,
                )
                .await?;
            println!(
                "database {} ({} {}) created in {scope}; deployment {}",
                v.name,
                v.engine,
                v.version,
                v.deployment.as_deref().unwrap_or("-")
            );
            println!("other services connect with {}", v.reference);
            Ok(0)
        }
        DbAction::Ls { target, remote } => {
            let scope = target.resolve()?;
            let all: Vec<DatabaseView> = remote
                .client()?
                .get(&format!("/projects/{}/databases", scope.project))
                .await?;
            if all.is_empty() {
                println!("{scope} has no databases");
            }
            for v in all {
                let state = if v.live_deployment.is_some() {
                    "live"
                } else {
                    "not live"
                };
                let reach = if v.public { "public" } else { "private" };
                println!(
                    "{}  {} {}  {state}  {reach}  {}:{}  {}",
                    v.name, v.engine, v.version, v.name, v.port, v.reference
                );
            }
            Ok(0)
        }
        DbAction::Credentials {
            name,
            target,
            remote,
        } => {
            let scope = target.resolve()?;
            let c: DatabaseCredentials = remote
                .client()?
                .get(&format!(
                    "/projects/{}/databases/{name}/credentials",
                    scope.project
                ))
                .await?;
            println!("host:     {}", c.host);
            println!("port:     {}", c.port);
            println!("user:     {}", c.user);
            println!("password: {}", c.password);
            println!("database: {}", c.database);
            println!("url:      {}", c.url);
            Ok(0)
        }
        DbAction::Rotate {
            name,
            target,
            remote,
        } => {
            let scope = target.resolve()?;
            let r: wharf_server::dto::DatabaseRotated = remote
                .client()?
                .send(
                    reqwest::Method::POST,
                    &format!("/projects/{}/databases/{name}/rotate", scope.project),
                    &serde_json::Value::Null,
                )
                .await?;
            println!("database {name} has a new password (see wharf db credentials {name})");
            let mut all_live = true;
            for (service, state) in &r.deployments {
                println!("  {service}: {state}");
                all_live &= state == "live";
            }
            Ok(if all_live { 0 } else { 1 })
        }
        DbAction::Backup {
            name,
            target,
            remote,
        } => {
            let scope = target.resolve()?;
            let b: BackupView = remote
                .client()?
                .send(
                    reqwest::Method::POST,
                    &format!("/projects/{}/databases/{name}/backups", scope.project),
                    &serde_json::Value::Null,
                )
                .await?;
            if b.state == "succeeded" {
                println!(
                    "backup {} of database {name}: {} ({} bytes)",
                    b.id,
                    b.source,
                    b.size_bytes.unwrap_or_default()
                );
                println!(
                    "restore it with: wharf backup restore {} --confirm {name}",
                    b.id
                );
                Ok(0)
            } else {
                eprintln!(
                    "backup {} of database {name} {}: {}",
                    b.id,
                    b.state,
                    b.error.as_deref().unwrap_or("no reason given")
                );
                Ok(1)
            }
        }
        DbAction::Connect {
            name,
            print,
            target,
            remote,
        } => {
            let scope = target.resolve()?;
            let client = remote.client()?;
            let c: DatabaseCredentials = client
                .get(&format!(
                    "/projects/{}/databases/{name}/credentials",
                    scope.project
                ))
                .await?;
            let status: ServiceStatus = client
                .get(&format!(
                    "/projects/{}/services/{name}/status",
                    scope.project
                ))
                .await?;
            let Some(instance) = status.instance else {
                return Err(format!("database {name} is not live: nothing to connect to").into());
            };
            let (var, argv) = client_command(&c);
            // A terminal only when ours is one: piped SQL works too.
            let tty = std::io::stdin().is_terminal();
            let flags = if tty { "-it" } else { "-i" };
            let mut docker = Command::new("docker");
            docker
                .args(["exec", flags, "-e", var, instance.as_str()])
                .args(&argv);
            if print {
                println!(
                    "{var}=<password from `wharf db credentials {name}`> docker exec {flags} -e {var} {} {}",
                    instance.as_str(),
                    argv.join(" ")
                );
                return Ok(0);
            }
            // The password reaches the client through the environment `docker exec
            // -e VAR` copies from ours: never on a command line.
            let status = docker.env(var, &c.password).status().map_err(|e| {
                format!(
                    "cannot run docker ({e}): on the Docker engine's machine, run `wharf db connect {name} --print` for the command"
                )
            })?;
            Ok(status.code().unwrap_or(1))
        }
    }
}

/// The variable the engine's client reads the password from, and its command line
/// (without the password).
fn client_command(c: &DatabaseCredentials) -> (&'static str, Vec<String>) {
    let port = c.port.to_string();
    match c.engine {
        DbEngine::Postgres => (
            "PGPASSWORD",
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                &c.user,
                "-d",
                &c.database,
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        DbEngine::Mysql => (
            "MYSQL_PWD",
            [
                "mariadb",
                "-h",
                "127.0.0.1",
                "-P",
                &port,
                "-u",
                &c.user,
                &c.database,
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        DbEngine::Redis => (
            "REDISCLI_AUTH",
            ["redis-cli", "-h", "127.0.0.1", "-p", &port]
                .map(str::to_owned)
                .to_vec(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_commands_never_carry_the_password() {
        for engine in DbEngine::ALL {
            let c = DatabaseCredentials {
                name: "db".into(),
                engine,
                host: "db".into(),
                port: engine.port(),
                user: "app".into(),
                password: "s3cretPW".into(),
                database: "app".into(),
                url: "x".into(),
            };
            let (var, argv) = client_command(&c);
            assert!(!argv.join(" ").contains("s3cretPW"), "{engine}: {argv:?}");
            assert!(var.ends_with("PASSWORD") || var.ends_with("PWD") || var.ends_with("AUTH"));
            assert!(argv.contains(&engine.port().to_string()));
        }
    }
}
