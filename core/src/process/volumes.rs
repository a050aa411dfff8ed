//! Volumes of host-process apps: a folder per volume, kept under the runtime's
//! volumes folder as `<project>/<scope>.<name>` (`_` for no scope; neither a scope
//! nor a name holds a `.`), handed to the app as `WHARF_VOLUME_<NAME>`. A process
//! cannot mount a folder at the volume's path, so the path is not used. Nothing but
//! [`crate::Runtime::remove_volume`] deletes one.

use std::path::{Path, PathBuf};

use super::users::{owned_dir, RunAs};
use crate::error::{Error, Result};
use crate::model::{ProjectId, VolumeInfo, VolumeRef};

/// The scope part of a folder name for volumes without a network.
const NO_SCOPE: &str = "_";

/// A project id or scope safe as one path component: ASCII letters, digits, `-`, `_`.
fn component(kind: &str, text: &str) -> Result<()> {
    if text.is_empty()
        || text.len() > 128
        || !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::invalid(format!(
            "{kind} {text:?} cannot name a volume folder (ASCII letters, digits, - and _ only)"
        )));
    }
    Ok(())
}

/// The folder of `volume` under `root`.
pub(crate) fn folder(root: &Path, volume: &VolumeRef) -> Result<PathBuf> {
    component("project", volume.project.as_str())?;
    crate::model::validate_name(&volume.name)?;
    let scope = volume.scope.as_deref().unwrap_or(NO_SCOPE);
    component("network", scope)?;
    Ok(root
        .join(volume.project.as_str())
        .join(format!("{scope}.{}", volume.name)))
}

/// The variable an app finds a volume's folder in: `WHARF_VOLUME_` + the name in
/// upper case, `-` as `_`.
pub(crate) fn env_name(name: &str) -> String {
    format!(
        "WHARF_VOLUME_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// Creates `volume`'s folder if missing (data already in it is kept) and returns it:
/// with `user`, the project's folder is `root:<gid> 0750` and the volume's
/// `<uid>:<gid> 0700` under a `root` of mode 0711; else all 0700.
pub(crate) fn prepare(root: &Path, volume: &VolumeRef, user: Option<&RunAs>) -> Result<PathBuf> {
    let path = folder(root, volume)?;
    let project = path.parent().expect("a project folder");
    let (root_mode, uid, gid, project_mode) = match user {
        Some(u) => (0o711, u.uid, u.gid, 0o750),
        None => (
            0o700,
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
            0o700,
        ),
    };
    let ready = || -> std::io::Result<()> {
        std::fs::create_dir_all(root)?;
        std::fs::set_permissions(
            root,
            std::os::unix::fs::PermissionsExt::from_mode(root_mode),
        )?;
        let owner = rustix::process::geteuid().as_raw();
        owned_dir(project, owner, gid, project_mode)?;
        owned_dir(&path, uid, gid, 0o700)
    };
    ready().map_err(|e| {
        Error::from(e).context(format!(
            "preparing volume {} in {}",
            volume.name,
            path.display()
        ))
    })?;
    Ok(path)
}

/// The volumes of `project` under `root`.
pub(crate) fn list(root: &Path, project: &ProjectId) -> Result<Vec<VolumeInfo>> {
    component("project", project.as_str())?;
    let dir = root.join(project.as_str());
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e?;
        let file_name = e.file_name().to_string_lossy().into_owned();
        let Some((scope, name)) = file_name.rsplit_once('.') else {
            continue;
        };
        if !e.file_type()?.is_dir() {
            continue;
        }
        out.push(VolumeInfo {
            volume: VolumeRef {
                project: project.clone(),
                scope: (scope != NO_SCOPE).then(|| scope.to_owned()),
                name: name.to_owned(),
            },
            runtime_name: e.path().to_string_lossy().into_owned(),
            size_bytes: size_of(&e.path()),
        });
    }
    out.sort_by(|a, b| a.runtime_name.cmp(&b.runtime_name));
    Ok(out)
}

/// Entries [`size_of`] looks at before giving up: an app's folder of millions of
/// files must not hold up a listing.
const SIZE_WALK_LIMIT: usize = 100_000;

/// Bytes of the regular files under `dir`, links not followed; `None` past
/// [`SIZE_WALK_LIMIT`] entries (the size is then unknown, not wrong).
fn size_of(dir: &Path) -> Option<u64> {
    let mut total = 0;
    let mut seen = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > SIZE_WALK_LIMIT {
                return None;
            }
            // The entry's own type (`d_type` / lstat): a link is never followed.
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    Some(total)
}
