//! The dynamic configuration file and Wharf's state file beside it, both written
//! atomically: a temporary file in the same directory, fsync, rename over the target.
//! Traefik reads `.yaml`, `.yml` and `.toml` files of its directory (hidden ones too),
//! so temporary files end in `.tmp` and the state file in `.json`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use wharf_core::{Error, Result, Route, RouteId};

#[derive(Debug)]
pub(crate) struct Files {
    pub(crate) dynamic: PathBuf,
    pub(crate) state: PathBuf,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::unavailable(format!("traefik: cannot {what} {}: {e}", path.display()))
        .with_backend("traefik")
        .with_retryable(false)
        .with_source(e)
}

impl Files {
    pub(crate) fn new(dynamic: &Path) -> Result<Files> {
        match dynamic.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => {}
            _ => {
                return Err(Error::invalid(format!(
                    "traefik dynamic file {} must end in .yaml or .yml (the content is JSON, which YAML reads)",
                    dynamic.display()
                )))
            }
        }
        Ok(Files {
            dynamic: dynamic.to_owned(),
            state: dynamic.with_extension("wharf.json"),
        })
    }

    /// Routes recorded by an earlier run (none if there is no state file).
    pub(crate) async fn load(&self) -> Result<BTreeMap<RouteId, Route>> {
        let text = match tokio::fs::read(&self.state).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(io_err("read", &self.state, e)),
        };
        let routes: Vec<Route> = serde_json::from_slice(&text).map_err(|e| {
            Error::internal(format!(
                "traefik: state file {} is not a list of routes: {e}",
                self.state.display()
            ))
            .with_backend("traefik")
        })?;
        Ok(routes.into_iter().map(|r| (r.id.clone(), r)).collect())
    }

    /// Writes the state first, then the dynamic configuration: a crash between the two
    /// leaves a state that the next [`Files::load`] renders again.
    pub(crate) async fn store(&self, routes: &[Route], dynamic: &Value) -> Result<()> {
        let state =
            serde_json::to_vec_pretty(routes).map_err(|e| Error::internal(e.to_string()))?;
        let dynamic =
            serde_json::to_vec_pretty(dynamic).map_err(|e| Error::internal(e.to_string()))?;
        let (s, d) = (self.state.clone(), self.dynamic.clone());
        tokio::task::spawn_blocking(move || {
            write_atomic(&s, &state)?;
            write_atomic(&d, &dynamic)
        })
        .await
        .map_err(|e| Error::internal(format!("traefik: file writer panicked: {e}")))?
    }
}

/// Writes `bytes` to `path` so a reader sees the old or the new content, never a part.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("wharf");
    let tmp = dir.join(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        // Traefik may run as another user: its configuration is readable whatever
        // the writer's umask (routes name hosts and addresses, no secret).
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(|e| io_err("create", &tmp, e))?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(|e| io_err("set the mode of", &tmp, e))?;
        f.write_all(bytes).map_err(|e| io_err("write", &tmp, e))?;
        f.sync_all().map_err(|e| io_err("sync", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_err("rename into", path, e))?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wharf.yaml");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("wharf.yaml")]);
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wharf.yaml");
        write_atomic(&p, b"old").unwrap();
        // Renaming over a directory fails: the old file stays, the temp file goes.
        let sub = dir.path().join("sub.yaml");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("x"), b"x").unwrap();
        assert!(write_atomic(&sub, b"new").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn only_yaml_names() {
        assert!(Files::new(Path::new("/x/wharf.toml")).is_err());
        let f = Files::new(Path::new("/x/wharf.yaml")).unwrap();
        assert_eq!(f.state, Path::new("/x/wharf.wharf.json"));
    }
}
