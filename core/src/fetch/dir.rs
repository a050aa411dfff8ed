//! [`DirFetcher`]: copies a local folder.

use std::fs;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::AtomicBool;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{clear_dir, hex, is_cancelled, normalized_mode, prepare_dest, run_blocking};
use crate::error::{Error, Result};
use crate::model::{LogStream, SourceSpec};
use crate::traits::{Fetched, LogSink, SourceFetcher};

/// Copies a local folder ([`SourceSpec::Dir`]) into the destination.
///
/// - `.git` entries (at any depth) are skipped.
/// - Regular files are copied with mode `0o755` if executable, else `0o644`.
/// - Symlinks are copied as symlinks if they resolve inside the source folder (absolute
///   ones are rewritten as relative); a symlink pointing outside is refused with
///   [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput).
/// - Sockets, fifos and devices are skipped (with a note in the logs).
///
/// The revision is `sha256:<hex>`, a digest over the sorted relative paths, the
/// contents and executable bits of files and the targets of symlinks: it is stable
/// across runs and changes whenever any of these does.
#[derive(Debug, Clone, Default)]
pub struct DirFetcher {}

impl DirFetcher {
    /// A folder fetcher.
    pub fn new() -> Self {
        DirFetcher {}
    }
}

#[async_trait]
impl SourceFetcher for DirFetcher {
    async fn fetch(&self, spec: &SourceSpec, dest: &Path, logs: &LogSink) -> Result<Fetched> {
        let SourceSpec::Dir { path } = spec else {
            return Err(super::unsupported("dir", spec));
        };
        let (src, dst, sink) = (path.clone(), dest.to_path_buf(), logs.clone());
        logs.send(
            LogStream::System,
            format!("copying folder {}", path.display()),
        );
        let revision = run_blocking(move |cancel| copy_dir(&src, &dst, &sink, cancel)).await?;
        logs.send(
            LogStream::System,
            format!("copied folder, revision {revision}"),
        );
        Ok(Fetched {
            dir: dest.to_path_buf(),
            revision,
        })
    }
}

/// Copies `src` into `dest` (made empty first); on failure `dest` is left empty.
fn copy_dir(src: &Path, dest: &Path, logs: &LogSink, cancel: &AtomicBool) -> Result<String> {
    let root = match fs::canonicalize(src) {
        Ok(root) => root,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::not_found(format!(
                "source folder {} does not exist",
                src.display()
            )))
        }
        Err(e) => {
            return Err(Error::from(e).context(format!("cannot open {}", src.display())));
        }
    };
    if !root.is_dir() {
        return Err(Error::invalid(format!(
            "source {} is not a folder",
            src.display()
        )));
    }
    prepare_dest(dest)?;
    let canon_dest = fs::canonicalize(dest)?;
    if canon_dest.starts_with(&root) {
        return Err(Error::invalid(format!(
            "fetch destination {} is inside the source folder {}",
            dest.display(),
            src.display()
        )));
    }
    let mut copier = Copier {
        root: &root,
        dest,
        logs,
        cancel,
        hasher: Sha256::new(),
        buf: vec![0; 64 * 1024],
    };
    match copier.copy(Path::new("")) {
        Ok(()) => Ok(format!("sha256:{}", hex(&copier.hasher.finalize()))),
        Err(e) => {
            clear_dir(dest);
            Err(e)
        }
    }
}

struct Copier<'a> {
    /// The canonical source folder.
    root: &'a Path,
    dest: &'a Path,
    logs: &'a LogSink,
    cancel: &'a AtomicBool,
    hasher: Sha256,
    buf: Vec<u8>,
}

impl Copier<'_> {
    /// Copies the folder at `rel` (relative to the root; it exists in `dest` already).
    fn copy(&mut self, rel: &Path) -> Result<()> {
        let dir = self.root.join(rel);
        let mut names = fs::read_dir(&dir)
            .map_err(|e| Error::from(e).context(format!("cannot read {}", dir.display())))?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::from(e).context(format!("cannot read {}", dir.display())))?;
        names.sort();
        for name in names {
            if is_cancelled(self.cancel) {
                return Err(Error::cancelled("folder copy cancelled"));
            }
            if name == ".git" {
                continue;
            }
            let rel = rel.join(&name);
            let from = self.root.join(&rel);
            let to = self.dest.join(&rel);
            let meta = fs::symlink_metadata(&from)
                .map_err(|e| Error::from(e).context(format!("cannot read {}", from.display())))?;
            let file_type = meta.file_type();
            if file_type.is_symlink() {
                let target = self.symlink_target(&rel, &from)?;
                self.hash_entry(b'L', &rel);
                self.hasher.update(path_bytes(&target));
                self.hasher.update([0]);
                make_symlink(&target, &to)?;
            } else if file_type.is_dir() {
                self.hash_entry(b'D', &rel);
                fs::create_dir(&to).map_err(|e| {
                    Error::from(e).context(format!("cannot create {}", to.display()))
                })?;
                self.copy(&rel)?;
            } else if file_type.is_file() {
                let mode = normalized_mode(file_mode(&meta));
                self.hash_entry(if mode == 0o755 { b'X' } else { b'F' }, &rel);
                self.copy_file(&from, &to, mode)?;
            } else {
                self.logs.send(
                    LogStream::System,
                    format!(
                        "skipping special file {} (not a file, folder or symlink)",
                        rel.display()
                    ),
                );
            }
        }
        Ok(())
    }

    /// Hashes an entry's kind and relative path.
    fn hash_entry(&mut self, kind: u8, rel: &Path) {
        self.hasher.update([kind]);
        self.hasher.update(path_bytes(rel));
        self.hasher.update([0]);
    }

    /// Copies one file, hashing its length and content.
    fn copy_file(&mut self, from: &Path, to: &Path, mode: u32) -> Result<()> {
        let ctx = |what: &str, p: &Path| format!("cannot {what} {}", p.display());
        let mut input =
            fs::File::open(from).map_err(|e| Error::from(e).context(ctx("open", from)))?;
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        set_create_mode(&mut options, mode);
        let mut output = options
            .open(to)
            .map_err(|e| Error::from(e).context(ctx("create", to)))?;
        let mut content = Sha256::new();
        let mut len: u64 = 0;
        loop {
            if is_cancelled(self.cancel) {
                return Err(Error::cancelled("folder copy cancelled"));
            }
            let n = match input.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::from(e).context(ctx("read", from))),
            };
            content.update(&self.buf[..n]);
            len += n as u64;
            output
                .write_all(&self.buf[..n])
                .map_err(|e| Error::from(e).context(ctx("write", to)))?;
        }
        set_mode(to, mode)?;
        self.hasher.update(len.to_le_bytes());
        self.hasher.update(content.finalize());
        Ok(())
    }

    /// The target to give the copy of the symlink at `rel`, or an error if it points
    /// outside the source folder.
    fn symlink_target(&self, rel: &Path, link: &Path) -> Result<PathBuf> {
        let target = fs::read_link(link)
            .map_err(|e| Error::from(e).context(format!("cannot read {}", link.display())))?;
        let escapes = || {
            Error::invalid(format!(
                "symlink {} points to {}, outside the source folder",
                rel.display(),
                target.display()
            ))
        };
        match fs::canonicalize(link) {
            // It resolves: it must stay inside the root.
            Ok(resolved) => {
                let Ok(inside) = resolved.strip_prefix(self.root) else {
                    return Err(escapes());
                };
                if target.is_absolute() {
                    // Rewrite as relative, so the copy does not point into the source.
                    let depth = rel.components().count().saturating_sub(1);
                    let mut relative: PathBuf = std::iter::repeat_n("..", depth).collect();
                    relative.push(inside);
                    if relative.as_os_str().is_empty() {
                        relative.push(".");
                    }
                    Ok(relative)
                } else {
                    Ok(target)
                }
            }
            // Dangling (or a loop): judge the target lexically.
            Err(_) => {
                if target.is_absolute() || !lexically_inside(rel, &target) {
                    Err(escapes())
                } else {
                    Ok(target)
                }
            }
        }
    }
}

/// Whether `target`, read relative to the folder holding the link at `link_rel`,
/// stays inside the root (without looking at the file system).
pub(super) fn lexically_inside(link_rel: &Path, target: &Path) -> bool {
    let mut depth = link_rel.components().count().saturating_sub(1);
    for component in target.components() {
        match component {
            Component::CurDir => {}
            Component::Normal(_) => depth += 1,
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(unix)]
fn path_bytes(p: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes()
}

#[cfg(not(unix))]
fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_encoded_bytes()
}

#[cfg(unix)]
fn file_mode(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode()
}

#[cfg(not(unix))]
fn file_mode(_meta: &fs::Metadata) -> u32 {
    0o644
}

#[cfg(unix)]
pub(super) fn set_create_mode(options: &mut fs::OpenOptions, mode: u32) {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(mode);
}

#[cfg(not(unix))]
pub(super) fn set_create_mode(_options: &mut fs::OpenOptions, _mode: u32) {}

/// Sets the exact mode (the umask may have removed bits at creation).
#[cfg(unix)]
pub(super) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::from(e).context(format!("cannot set mode of {}", path.display())))
}

/// Sets the exact mode (no-op off Unix).
#[cfg(not(unix))]
pub(super) fn set_mode(_path: &Path, _mode: u32) -> Result<()> {
    Ok(())
}

/// Creates a symlink at `link` pointing to `target`.
#[cfg(unix)]
pub(super) fn make_symlink(target: &Path, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, link)
        .map_err(|e| Error::from(e).context(format!("cannot create symlink {}", link.display())))
}

/// Symlinks are not supported off Unix.
#[cfg(not(unix))]
pub(super) fn make_symlink(_target: &Path, link: &Path) -> Result<()> {
    Err(Error::unsupported(format!(
        "cannot create symlink {}: symlinks are only supported on Unix",
        link.display()
    )))
}
