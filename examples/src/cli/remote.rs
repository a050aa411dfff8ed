//! Which server a command talks to, with which token.

use std::path::PathBuf;

use wharf_server::client::{self, CliError, Client};

use super::args::{Remote, DEFAULT_SERVER};

impl Remote {
    /// A client for the server and token chosen in this order: flags, then
    /// `WHARF_SERVER`/`WHARF_TOKEN`, then the login file, then the operator token of a
    /// server whose data folder is `./wharf-data` (or `$WHARF_DATA_DIR`). The login's
    /// token is only sent to the server it was stored for.
    pub(crate) fn client(&self) -> Result<Client, CliError> {
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
            None => operator_token(&server, &login_path)?,
        };
        Ok(Client::new(&server, &token))
    }
}

/// The operator token of a server whose data folder is `./wharf-data` (or
/// `$WHARF_DATA_DIR`); the error says every place that was looked in.
fn operator_token(
    server: &str,
    login_path: &Result<PathBuf, CliError>,
) -> Result<String, CliError> {
    let dir = std::env::var("WHARF_DATA_DIR").unwrap_or_else(|_| "wharf-data".into());
    let path = PathBuf::from(dir).join("admin-token");
    let token = std::fs::read_to_string(&path).map_err(|e| {
        let login = match login_path {
            Ok(p) => format!("no login for {server} in {}", p.display()),
            Err(e) => e.to_string(),
        };
        format!(
            "no token: run `wharf login`, or pass --token or WHARF_TOKEN \
             ({login}; {} unreadable: {e})",
            path.display()
        )
    })?;
    Ok(token.trim().to_owned())
}
