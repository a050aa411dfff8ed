//! The accounts host-process builds and apps run as.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The first uid (and gid) [`ProjectUsers`] hands out by default: far above the
/// accounts of people and services (`/etc/login.defs` stops at 60000), the
/// subordinate ranges rootless containers take from 100000 on, and the range systemd
/// gives containers (524288 to 1879048191); below 2^31, which some tools take as
/// negative.
pub const DEFAULT_FIRST_UID: u32 = 1_900_000_000;

/// How many uids [`ProjectUsers`] may hand out by default.
pub const DEFAULT_UID_COUNT: u32 = 1_000_000;

/// The account one project's builds and apps run as: its own uid and gid, no
/// supplementary groups, and a home folder of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    /// The user id.
    pub uid: u32,
    /// The group id (the same number as the uid).
    pub gid: u32,
    /// `HOME` for its builds and apps (owned by it, mode 0700).
    pub home: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Allocations {
    /// The range the offsets count in (`None` only before the first save).
    #[serde(default)]
    range: Option<(u32, u32)>,
    /// The offset (from `first`) the next new project gets.
    next: u32,
    /// Project id to uid.
    projects: BTreeMap<String, u32>,
}

/// Gives every project a uid/gid of its own from a range, so that host-process apps
/// and builds of one project cannot read another's files, `/proc/<pid>/environ` or
/// memory, nor the control plane's data folder. Needs the control plane to run as root
/// (it switches to the project's uid for each build step and app).
///
/// No `/etc/passwd` entry is needed: the numbers are used as they are. A uid is never
/// handed out twice, even after its project is deleted, so a new project never
/// inherits files an old one left. The allocations are kept in one file (mode 0600).
#[derive(Debug)]
pub struct ProjectUsers {
    path: PathBuf,
    first: u32,
    count: u32,
    map: Mutex<Allocations>,
}

impl ProjectUsers {
    /// Opens (or starts) the allocations kept in `path`, handing out uids
    /// `first..first + count`. Refused unless this process runs as root, and for a
    /// range that holds uid 0 or overflows.
    pub fn open(path: impl Into<PathBuf>, first: u32, count: u32) -> Result<Self> {
        if !rustix::process::geteuid().is_root() {
            return Err(Error::unsupported(
                "running each project as its own user needs the control plane to run as root",
            )
            .with_backend("host"));
        }
        if first == 0 || count == 0 || first.checked_add(count).is_none_or(|end| end == u32::MAX) {
            return Err(Error::invalid(format!(
                "uid range {first}:{count}: it must start above 0, hold at least one uid and end below {}",
                u32::MAX
            )));
        }
        let path = path.into();
        let map = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::invalid(format!(
                    "{} is not a uid allocation file: {e}",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Allocations::default(),
            Err(e) => return Err(e.into()),
        };
        let map: Allocations = map;
        if let Some((f, c)) = map.range.filter(|&r| r != (first, count)) {
            // Offsets counted in another range would hand out uids already taken.
            return Err(Error::conflict(format!(
                "{} records uids handed out from {f}:{c}, not {first}:{count}: keep the range \
                 its projects' files and processes already have",
                path.display()
            )));
        }
        if map
            .projects
            .values()
            .any(|&uid| !(first..first + count).contains(&uid))
            || map.projects.len() as u64 > u64::from(map.next)
        {
            return Err(Error::invalid(format!(
                "{} does not match the uids it records: restore it from a backup",
                path.display()
            )));
        }
        Ok(ProjectUsers {
            path,
            first,
            count,
            map: Mutex::new(map),
        })
    }

    /// The uid of `project` (its id), allocated and recorded on first use.
    pub fn uid_of(&self, project: &str) -> Result<u32> {
        if project.is_empty() {
            return Err(Error::invalid(
                "an instance or build without a project label cannot be given a user",
            ));
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(uid) = map.projects.get(project) {
            return Ok(*uid);
        }
        if map.next >= self.count {
            return Err(Error::conflict(format!(
                "all {} uids from {} are handed out: widen the range",
                self.count, self.first
            )));
        }
        let uid = self.first + map.next;
        map.next += 1;
        map.range = Some((self.first, self.count));
        map.projects.insert(project.to_owned(), uid);
        if let Err(e) = save(&self.path, &map) {
            map.next -= 1;
            map.projects.remove(project);
            return Err(e.context("recording a project's uid"));
        }
        Ok(uid)
    }
}

fn save(path: &Path, map: &Allocations) -> Result<()> {
    super::write_private(path, &serde_json::to_vec_pretty(map)?)?;
    Ok(())
}

/// Makes `path` and everything under it owned by `uid:gid`, without following
/// symbolic links (a link in an app's source must not hand it a file outside).
pub(crate) fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for e in std::fs::read_dir(path)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Creates the folder `path` (if missing) owned by `uid:gid` with `mode`.
pub(crate) fn owned_dir(path: &Path, uid: u32, gid: u32, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    if std::fs::symlink_metadata(path)?.file_type().is_symlink() {
        return Err(std::io::Error::other(format!(
            "{} is a symbolic link, not a folder",
            path.display()
        )));
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
