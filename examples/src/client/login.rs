//! The stored login of `wharf login`: where it lives, how it is written privately.

use std::path::Path;

use serde_json::Value;

use super::CliError;

/// What `wharf login` keeps: the server and a token for it, in `login.toml` of the
/// user's config folder (`$XDG_CONFIG_HOME/wharf/`, else `~/.config/wharf/`), the
/// folder private to the user (0700) and the file too (0600).
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The server's URL.
    pub server: String,
    /// The API token.
    pub token: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("server", &self.server)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Login {
    /// The login file's path, from `XDG_CONFIG_HOME` (used only when absolute, as the
    /// XDG spec says) or `HOME`, looked up through `var`.
    pub fn path_from(var: impl Fn(&str) -> Option<String>) -> Result<std::path::PathBuf, CliError> {
        let set = |k: &str| var(k).filter(|v| !v.is_empty());
        let base = match set("XDG_CONFIG_HOME").map(std::path::PathBuf::from) {
            Some(p) if p.is_absolute() => p,
            _ => match set("HOME") {
                Some(home) => Path::new(&home).join(".config"),
                None => {
                    return Err("cannot find the config folder: set HOME or XDG_CONFIG_HOME".into())
                }
            },
        };
        Ok(base.join("wharf").join("login.toml"))
    }

    /// The login file's path for this process's environment.
    pub fn path() -> Result<std::path::PathBuf, CliError> {
        Login::path_from(|k| std::env::var(k).ok())
    }

    /// The stored login, `None` if there is none.
    pub fn load(path: &Path) -> Result<Option<Login>, CliError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display()).into()),
        };
        let login: Login = toml::from_str(&text).map_err(|e| {
            format!(
                "{} is not a login file ({e}); run `wharf logout` and log in again",
                path.display()
            )
        })?;
        Ok(Some(login))
    }

    /// Writes the login to `path`: the folder made private (0700), the file written
    /// with mode 0600 from its first byte, under a temporary name then renamed, so a
    /// reader never sees half a file.
    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let dir = path.parent().ok_or("the login file has no folder")?;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {} private: {e}", dir.display()))?;
        let tmp = dir.join(format!(".login.{}.tmp", std::process::id()));
        // A JSON string is a valid TOML basic string (same escapes), which spares the
        // toml crate's serializer feature for two lines.
        let text = format!(
            "server = {}\ntoken = {}\n",
            Value::from(self.server.as_str()),
            Value::from(self.token.as_str())
        );
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                // `mode` applies only to a new file: make sure of 0600 anyway.
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                f.write_all(text.as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("cannot write {}: {e}", path.display()).into());
        }
        Ok(())
    }

    /// Removes the login file; `false` if there was none.
    pub fn remove(path: &Path) -> Result<bool, CliError> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(format!("cannot remove {}: {e}", path.display()).into()),
        }
    }
}

/// Whether two server URLs name the same server (ignoring a trailing `/` and case).
pub fn same_server(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_lives_in_the_xdg_config_folder_else_under_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let p = |pairs| Login::path_from(env(pairs)).map_err(|e| e.to_string());
        assert_eq!(
            p(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")]).unwrap(),
            Path::new("/x/wharf/login.toml")
        );
        assert_eq!(
            p(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/h")]).unwrap(),
            Path::new("/h/.config/wharf/login.toml"),
            "a relative XDG_CONFIG_HOME is ignored"
        );
        assert_eq!(
            p(&[("HOME", "/h")]).unwrap(),
            Path::new("/h/.config/wharf/login.toml")
        );
        assert!(p(&[]).unwrap_err().contains("HOME"));
    }

    #[test]
    fn login_file_is_private_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg/wharf/login.toml");
        assert_eq!(Login::load(&path).unwrap(), None);
        let login = Login {
            server: "http://127.0.0.1:7070".into(),
            token: "t0ken-\"quoted\"-\\-t0ken".into(),
        };
        login.save(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(Login::load(&path).unwrap(), Some(login.clone()));
        assert!(
            !format!("{login:?}").contains("t0ken"),
            "Debug hides the token"
        );
        std::fs::write(&path, "nonsense").unwrap();
        let err = Login::load(&path).unwrap_err().to_string();
        assert!(err.contains("not a login file"), "{err}");
        assert!(Login::remove(&path).unwrap());
        assert!(!Login::remove(&path).unwrap());
        assert!(
            same_server("http://A:1/", "http://a:1") && !same_server("http://a:1", "http://a:2")
        );
    }
}
