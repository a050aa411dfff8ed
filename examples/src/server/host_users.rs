//! Which accounts host-process builds and apps run as (`host_users`): when `wharf
//! serve` runs as root, each project gets a uid of its own; what the data folder must
//! then allow, and what it must not.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use wharf_core::process::ProjectUsers;

use super::config::{Config, ConfigError, HostUsersChoice};
use super::error::ServeError;

/// Where the projects' uids are recorded, in `data_dir`.
pub const UIDS_FILE: &str = "host-uids.json";

/// The projects' users, or `None` when apps run as the server's account (said in
/// `notes`, with what that means).
pub fn project_users(
    config: &Config,
    notes: &mut Vec<String>,
) -> Result<Option<Arc<ProjectUsers>>, ServeError> {
    let root = rustix::process::geteuid().is_root();
    match (config.host_users, root) {
        (HostUsersChoice::Server, _) | (HostUsersChoice::Auto, false) => {
            notes.push(format!(
                "host processes run as this server's account ({}): any app can read data_dir \
                 and the other apps; for several teams run wharf serve as root (each project \
                 then runs as its own user) or use Docker",
                if root {
                    "host_users = server"
                } else {
                    "wharf serve does not run as root"
                }
            ));
            return Ok(None);
        }
        (HostUsersChoice::Project, false) => {
            return Err(ConfigError(
                "host_users = project needs wharf serve to run as root (it switches to each \
                 project's uid); run it as root, or set host_users = server"
                    .into(),
            )
            .into())
        }
        _ => {}
    }
    open_to_projects(&config.data_dir)?;
    let (first, count) = config.host_uids;
    let path = config.data_dir.join(UIDS_FILE);
    let users = ProjectUsers::open(&path, first, count)
        .map_err(|e| ServeError::backend("host runtime", format!("{}: {e}", path.display())))?;
    notes.push(format!(
        "host processes: each project builds and runs as a uid of its own, from {first} \
         ({UIDS_FILE} in data_dir)"
    ));
    if config
        .caddy_admin
        .as_deref()
        .is_some_and(|a| !a.starts_with("unix://"))
    {
        notes.push(
            "warning: caddy_admin is a TCP address, which every host-process app can reach: \
             an app could reconfigure Caddy. Put Caddy's admin API on a unix socket \
             (caddy_admin = unix:///path/admin.sock), or let wharf serve run Caddy \
             (caddy_bin), which does"
                .into(),
        );
    }
    Ok(Some(Arc::new(users)))
}

/// Lets projects' users reach their release folders under `data_dir/builds` and
/// nothing else of `data_dir`: every folder above it enterable by others (checked: an
/// operator's folder is not changed behind their back), `data_dir` itself enterable
/// but not listable (0711), every other entry in it the server's alone (files an older
/// version created with the default umask included).
fn open_to_projects(data_dir: &Path) -> Result<(), ServeError> {
    for dir in data_dir.ancestors().skip(1) {
        let meta = std::fs::metadata(dir).map_err(ServeError::io("inspect", dir))?;
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(ConfigError(format!(
                "host_users = project: {} (mode {:o}) must be enterable by other users, so \
                 each project's user reaches its folder under {}; run chmod o+x {0}, move \
                 data_dir, or set host_users = server",
                dir.display(),
                meta.permissions().mode() & 0o7777,
                data_dir.join("builds").display()
            ))
            .into());
        }
    }
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o711))
        .map_err(ServeError::io("set the permissions of", data_dir))?;
    let entries = std::fs::read_dir(data_dir).map_err(ServeError::io("list", data_dir))?;
    for e in entries {
        let e = e.map_err(ServeError::io("list", data_dir))?;
        let path = e.path();
        let meta = std::fs::symlink_metadata(&path).map_err(ServeError::io("inspect", &path))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        if e.file_name() == "builds" {
            open_builds(&path)?;
            continue;
        }
        if e.file_name() == "volumes" {
            // The host runtime gives each project's folder in it its own modes.
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & !0o077))
                .map_err(ServeError::io("restrict the permissions of", &path))?;
        }
    }
    Ok(())
}

/// `builds/` enterable (0711); in it, what is not a project's `u<uid>` folder (release
/// folders built as the server's account before) the server's alone.
fn open_builds(builds: &Path) -> Result<(), ServeError> {
    std::fs::set_permissions(builds, std::fs::Permissions::from_mode(0o711))
        .map_err(ServeError::io("set the permissions of", builds))?;
    for e in std::fs::read_dir(builds).map_err(ServeError::io("list", builds))? {
        let e = e.map_err(ServeError::io("list", builds))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let user_dir = name
            .strip_prefix('u')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let path = e.path();
        let meta = std::fs::symlink_metadata(&path).map_err(ServeError::io("inspect", &path))?;
        if user_dir || meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & !0o077))
            .map_err(ServeError::io("restrict the permissions of", &path))?;
    }
    Ok(())
}
