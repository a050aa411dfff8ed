//! Source fetchers: a local folder, a `.tar.gz` archive, a git repository.
//!
//! Each fetcher implements [`SourceFetcher`] for one kind of [`SourceSpec`] and returns
//! [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) for the others;
//! [`Fetchers`] bundles all three and dispatches by kind.
//!
//! - [`DirFetcher`] copies a local folder ([`SourceSpec::Dir`]).
//! - [`ArchiveFetcher`] unpacks a `.tar.gz` file ([`SourceSpec::Archive`]) with
//!   [`unpack_tar_gz`], which refuses path traversal, escaping links, special files and
//!   archive bombs (see [`ArchiveLimits`]).
//! - [`GitFetcher`] clones a git repository ([`SourceSpec::Git`]) with the `git` program.
//!
//! Every fetcher expects `dest` to be an empty folder (it is created if missing) and
//! leaves it empty again when it fails, so nothing half-fetched remains.

mod archive;
mod dir;
mod git;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::model::SourceSpec;
use crate::traits::{Fetched, LogSink, SourceFetcher};

pub use archive::{unpack_tar_gz, ArchiveFetcher, ArchiveLimits, UnpackStats};
pub use dir::DirFetcher;
pub use git::GitFetcher;

/// Every built-in fetcher behind one [`SourceFetcher`]: folders, archives and git
/// repositories. Prebuilt images ([`SourceSpec::Image`]) are not fetched and get
/// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported).
///
/// ```
/// use wharf_core::fetch::{ArchiveLimits, Fetchers};
/// let fetchers = Fetchers::with_archive_limits(ArchiveLimits::default().with_max_entries(10_000));
/// # let _ = fetchers;
/// ```
#[derive(Debug, Clone, Default)]
pub struct Fetchers {
    /// Handles [`SourceSpec::Dir`].
    pub dir: DirFetcher,
    /// Handles [`SourceSpec::Archive`].
    pub archive: ArchiveFetcher,
    /// Handles [`SourceSpec::Git`].
    pub git: GitFetcher,
}

impl Fetchers {
    /// The default fetchers, with archives unpacked under `limits`.
    pub fn with_archive_limits(limits: ArchiveLimits) -> Self {
        Fetchers {
            archive: ArchiveFetcher::new(limits),
            ..Default::default()
        }
    }
}

#[async_trait]
impl SourceFetcher for Fetchers {
    async fn fetch(&self, spec: &SourceSpec, dest: &Path, logs: &LogSink) -> Result<Fetched> {
        match spec {
            SourceSpec::Dir { .. } => self.dir.fetch(spec, dest, logs).await,
            SourceSpec::Archive { .. } => self.archive.fetch(spec, dest, logs).await,
            SourceSpec::Git { .. } => self.git.fetch(spec, dest, logs).await,
            SourceSpec::Image { image } => Err(Error::unsupported(format!(
                "images are not fetched (source is the prebuilt image {image:?})"
            ))),
        }
    }
}

/// The error a single fetcher returns for a source kind it does not handle.
fn unsupported(fetcher: &str, spec: &SourceSpec) -> Error {
    Error::unsupported(format!(
        "the {fetcher} fetcher does not handle {} sources",
        spec.kind()
    ))
}

/// Makes sure `dest` exists and is an empty folder.
fn prepare_dest(dest: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dest) {
        Ok(meta) if meta.is_dir() => {}
        Ok(meta) if meta.file_type().is_symlink() && dest.is_dir() => {}
        Ok(_) => {
            return Err(Error::invalid(format!(
                "fetch destination {} is not a folder",
                dest.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dest)
                .map_err(|e| Error::from(e).context(format!("cannot create {}", dest.display())))?;
        }
        Err(e) => return Err(Error::from(e).context(format!("cannot inspect {}", dest.display()))),
    }
    let mut entries = std::fs::read_dir(dest)
        .map_err(|e| Error::from(e).context(format!("cannot read {}", dest.display())))?;
    if entries.next().is_some() {
        return Err(Error::invalid(format!(
            "fetch destination {} is not empty",
            dest.display()
        )));
    }
    Ok(())
}

/// Removes everything inside `dest` (never following symlinks), keeping `dest` itself.
/// Best effort: failures are logged, since this already runs on an error path.
fn clear_dir(dest: &Path) {
    let entries = match std::fs::read_dir(dest) {
        Ok(entries) => entries,
        Err(_) => return,
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let result = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot clean up after a failed fetch");
        }
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The mode given to written files: `0o755` if any executable bit is set, else `0o644`.
/// (Other bits such as setuid are never carried over.)
fn normalized_mode(mode: u32) -> u32 {
    if mode & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

/// Sets a flag when dropped: tells blocking work started by a future that the future
/// is gone (cancelled), so it stops instead of writing into a folder nobody owns.
struct CancelOnDrop(Arc<AtomicBool>);

impl CancelOnDrop {
    fn new() -> Self {
        CancelOnDrop(Arc::new(AtomicBool::new(false)))
    }
    fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs blocking fetch work off the async runtime; stops it (via the flag) if the
/// calling future is dropped.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce(&AtomicBool) -> Result<T> + Send + 'static,
) -> Result<T> {
    let guard = CancelOnDrop::new();
    let flag = guard.flag();
    let result = tokio::task::spawn_blocking(move || work(&flag)).await;
    drop(guard);
    match result {
        Ok(r) => r,
        Err(e) => Err(Error::internal(format!("fetch task failed: {e}"))),
    }
}

/// Whether a cancel flag is set.
fn is_cancelled(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed)
}
