//! `wharf login` and `wharf logout`: the stored server and token.

use wharf_server::client::{self, CliError, Client};
use wharf_server::dto::{Health, ProjectView};

/// `wharf login`: checks the token (from `--token` or stdin) against the server and
/// stores both only if the server accepts it.
pub(crate) async fn login(server: &str, token: Option<String>) -> Result<i32, CliError> {
    let server = server.trim_end_matches('/').to_owned();
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        return Err(format!("--server {server:?} must be an http:// or https:// URL").into());
    }
    let token = match token {
        Some(t) => t,
        None => read_token(&server)?,
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err("no token given: pass --token or write it to stdin".into());
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a token has no spaces or control characters".into());
    }
    let c = Client::new(&server, &token);
    let health: Health = c
        .get("/health")
        .await
        .map_err(|e| format!("{server} does not answer as a wharf server, nothing stored: {e}"))?;
    if health.status != "ok" {
        let said = serde_json::to_string(&health)?;
        return Err(format!(
            "{server} does not answer as a wharf server (GET /v1/health said {said}), nothing stored"
        )
        .into());
    }
    let projects: Vec<ProjectView> = c
        .get("/projects")
        .await
        .map_err(|e| format!("{server} refused the token, nothing stored: {e}"))?;
    let path = client::Login::path()?;
    client::Login {
        server: server.clone(),
        token,
    }
    .save(&path)?;
    let n = projects.len();
    println!(
        "logged in to {server} ({n} project{} visible); login stored in {}",
        if n == 1 { "" } else { "s" },
        path.display()
    );
    Ok(0)
}

/// A line of stdin, asking for it on a terminal.
fn read_token(server: &str) -> Result<String, CliError> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        eprint!("token for {server}: ");
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the token from stdin: {e}"))?;
    Ok(line)
}

/// `wharf logout`: removes the login file.
pub(crate) fn logout() -> Result<i32, CliError> {
    let path = client::Login::path()?;
    if client::Login::remove(&path)? {
        println!("logged out (removed {})", path.display());
    } else {
        println!("not logged in (no {})", path.display());
    }
    Ok(0)
}

/// `wharf token`: creates an API token in the server's data folder and prints it.
pub(crate) fn token(
    name: &str,
    roles: Vec<String>,
    expires_days: Option<u32>,
    data_dir: &std::path::Path,
) -> Result<i32, CliError> {
    use wharf_server::auth;
    let mut projects = std::collections::BTreeMap::new();
    for r in roles {
        let (p, role) = r
            .split_once('=')
            .ok_or_else(|| format!("expected PROJECT=ROLE, got {r:?}"))?;
        projects.insert(p.to_owned(), role.parse::<auth::Role>()?);
    }
    std::fs::create_dir_all(data_dir)?;
    let tokens = auth::Tokens::load(data_dir)?;
    let expires = expires_days.map(|d| auth::now_ms() + u64::from(d) * 86_400_000);
    println!(
        "{}",
        tokens.create_expiring(name, false, projects, expires)?
    );
    Ok(0)
}

/// `wharf token ls|revoke|rotate-operator`.
pub(crate) fn token_action(action: super::args::TokenAction) -> Result<i32, CliError> {
    use super::args::TokenAction;
    use wharf_server::auth;
    let when = |t: Option<u64>| t.map_or("-".to_owned(), |ms| format!("{}", ms / 1000));
    match action {
        TokenAction::Ls { data_dir } => {
            let tokens = auth::Tokens::load(&data_dir)?;
            println!(
                "{:<12} {:<16} {:<30} {:>11} {:>11} {:>11}",
                "ID", "NAME", "ROLES", "CREATED", "LAST USED", "EXPIRES"
            );
            for r in tokens.list() {
                let roles = if r.admin {
                    "operator".to_owned()
                } else {
                    r.projects
                        .iter()
                        .map(|(p, role)| format!("{p}={role}"))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                println!(
                    "{:<12} {:<16} {:<30} {:>11} {:>11} {:>11}",
                    r.id(),
                    r.name,
                    roles,
                    when(r.created_at),
                    when(r.last_used),
                    when(r.expires_at)
                );
            }
            println!("(times in Unix seconds)");
            Ok(0)
        }
        TokenAction::Revoke { key, data_dir } => {
            let n = auth::Tokens::load(&data_dir)?.revoke(&key)?;
            if n == 0 {
                return Err(format!("no token has the id or name {key:?} (operator tokens are rotated: wharf token rotate-operator)").into());
            }
            eprintln!("revoked {n} token(s)");
            Ok(0)
        }
        TokenAction::RotateOperator { data_dir } => {
            let tokens = auth::Tokens::load(&data_dir)?;
            let token = auth::generate();
            let path = data_dir.join("admin-token");
            auth::write_private(&path, format!("{token}\n").as_bytes())?;
            tokens.set_operator(&token)?;
            eprintln!(
                "new operator token in {}; the old one no longer works",
                path.display()
            );
            println!("{token}");
            Ok(0)
        }
    }
}
