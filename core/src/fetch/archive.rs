//! [`ArchiveFetcher`] and [`unpack_tar_gz`]: hardened unpacking of `.tar.gz` archives.
//!
//! Archives come from users (uploads), so unpacking assumes they are hostile: entry
//! paths are checked, links may not leave the destination, nothing is ever written
//! through a symlink, special files are refused and sizes are counted while streaming
//! (see [`ArchiveLimits`]). Any failure leaves the destination empty.

use std::cell::{Cell, RefCell};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::AtomicBool;

use async_trait::async_trait;
use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};

use super::dir::{lexically_inside, make_symlink, set_create_mode, set_mode};
use super::{clear_dir, hex, is_cancelled, normalized_mode, prepare_dest, run_blocking};
use crate::error::{Error, Result};
use crate::model::{LogStream, SourceSpec};
use crate::traits::{Fetched, LogSink, SourceFetcher};

/// Limits applied while unpacking an archive. Every size is counted on the bytes
/// actually read, never taken from headers alone.
///
/// ```
/// use wharf_core::fetch::ArchiveLimits;
/// let limits = ArchiveLimits::default()
///     .with_max_archive_bytes(64 << 20)
///     .with_max_entries(1_000);
/// assert_eq!(limits.max_entries, 1_000);
/// assert_eq!(limits.max_unpacked_bytes, 2 << 30);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveLimits {
    /// Most compressed bytes read from the archive. Default 512 MiB.
    pub max_archive_bytes: u64,
    /// Most entries (files, folders, links...). Default 100 000.
    pub max_entries: u64,
    /// Most decompressed bytes (file contents plus tar headers). Default 2 GiB.
    pub max_unpacked_bytes: u64,
    /// Most decompressed bytes per compressed byte read so far. Only checked once more
    /// than [`ArchiveLimits::EXPANSION_RATIO_FLOOR`] bytes are decompressed, so tiny
    /// archives (which compress very well) are not flagged. Default 200.
    pub max_expansion_ratio: u64,
}

impl ArchiveLimits {
    /// Decompressed bytes below which the expansion ratio is not checked (1 MiB).
    pub const EXPANSION_RATIO_FLOOR: u64 = 1 << 20;

    setters! {
        /// Sets [`ArchiveLimits::max_archive_bytes`].
        with_max_archive_bytes(bytes: u64) => max_archive_bytes = bytes;
        /// Sets [`ArchiveLimits::max_entries`].
        with_max_entries(entries: u64) => max_entries = entries;
        /// Sets [`ArchiveLimits::max_unpacked_bytes`].
        with_max_unpacked_bytes(bytes: u64) => max_unpacked_bytes = bytes;
        /// Sets [`ArchiveLimits::max_expansion_ratio`].
        with_max_expansion_ratio(ratio: u64) => max_expansion_ratio = ratio;
    }
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_archive_bytes: 512 << 20,
            max_entries: 100_000,
            max_unpacked_bytes: 2 << 30,
            max_expansion_ratio: 200,
        }
    }
}

/// What [`unpack_tar_gz`] unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnpackStats {
    /// Entries read (files, folders, links, extension headers).
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Bytes of file content written.
    pub file_bytes: u64,
    /// Compressed bytes read (the whole archive).
    pub archive_bytes: u64,
    /// `sha256:<hex>` of the archive bytes.
    pub digest: String,
}

/// Unpacks a `.tar.gz` stream into `dest` (created if missing; must be empty).
///
/// Blocking: call it from `spawn_blocking` in async code. Refuses, with
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) naming the entry: `..` components, absolute paths,
/// symlinks and hard links whose target leaves `dest`, writing through a symlink
/// (even one inside `dest`), devices, fifos and other special entries, and archives
/// over any of `limits`. Input that is not a gzip-compressed tar archive is
/// InvalidInput too. On any failure `dest` is left empty.
///
/// Regular files get mode `0o755` if any executable bit is set in the archive, else
/// `0o644`; folder modes, owners and times are not restored.
pub fn unpack_tar_gz(
    reader: impl Read,
    dest: &Path,
    limits: &ArchiveLimits,
) -> Result<UnpackStats> {
    unpack_tar_gz_cancellable(reader, dest, limits, &AtomicBool::new(false))
}

/// [`unpack_tar_gz`], stopping with a Cancelled error once `cancel` is set.
fn unpack_tar_gz_cancellable(
    reader: impl Read,
    dest: &Path,
    limits: &ArchiveLimits,
    cancel: &AtomicBool,
) -> Result<UnpackStats> {
    prepare_dest(dest)?;
    let result = Unpacker::new(dest, limits, cancel).and_then(|u| u.run(reader));
    if result.is_err() {
        clear_dir(dest);
    }
    result
}

/// Unpacks `.tar.gz` archives ([`SourceSpec::Archive`]) with [`unpack_tar_gz`] under
/// its [`ArchiveLimits`]. The revision is `sha256:<hex>` of the archive file.
#[derive(Debug, Clone, Default)]
pub struct ArchiveFetcher {
    /// The limits archives are unpacked under.
    pub limits: ArchiveLimits,
}

impl ArchiveFetcher {
    /// An archive fetcher with these limits.
    pub fn new(limits: ArchiveLimits) -> Self {
        ArchiveFetcher { limits }
    }
}

#[async_trait]
impl SourceFetcher for ArchiveFetcher {
    async fn fetch(&self, spec: &SourceSpec, dest: &Path, logs: &LogSink) -> Result<Fetched> {
        let SourceSpec::Archive { path } = spec else {
            return Err(super::unsupported("archive", spec));
        };
        logs.send(
            LogStream::System,
            format!("unpacking archive {}", path.display()),
        );
        let (path, dst, limits) = (path.clone(), dest.to_path_buf(), self.limits.clone());
        let stats = run_blocking(move |cancel| {
            let file = match fs::File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Error::not_found(format!(
                        "archive {} does not exist",
                        path.display()
                    )))
                }
                Err(e) => {
                    return Err(Error::from(e).context(format!("cannot open {}", path.display())))
                }
            };
            let meta = file.metadata()?;
            if !meta.is_file() {
                return Err(Error::invalid(format!(
                    "archive {} is not a file",
                    path.display()
                )));
            }
            if meta.len() > limits.max_archive_bytes {
                return Err(Error::invalid(format!(
                    "archive {} is {} bytes, over the limit of {} (max_archive_bytes)",
                    path.display(),
                    meta.len(),
                    limits.max_archive_bytes
                )));
            }
            unpack_tar_gz_cancellable(file, &dst, &limits, cancel)
        })
        .await?;
        logs.send(
            LogStream::System,
            format!(
                "unpacked {} entries ({} files, {} bytes), revision {}",
                stats.entries, stats.files, stats.file_bytes, stats.digest
            ),
        );
        Ok(Fetched {
            dir: dest.to_path_buf(),
            revision: stats.digest,
        })
    }
}

/// Why reading the stream stopped, recorded by the counting readers (an `io::Error`
/// cannot carry it through the gzip and tar layers).
#[derive(Debug, Clone, Copy)]
enum Stop {
    ArchiveBytes,
    UnpackedBytes,
    Ratio,
    Cancelled,
}

/// Counters shared by the reader layers and the unpacker.
#[derive(Default)]
struct Shared {
    compressed: Cell<u64>,
    decompressed: Cell<u64>,
    hasher: RefCell<Sha256>,
    stop: Cell<Option<Stop>>,
}

/// Counts and hashes the compressed bytes.
struct RawReader<'a, R> {
    inner: R,
    shared: Rc<Shared>,
    limits: &'a ArchiveLimits,
}

impl<R: Read> Read for RawReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.shared.hasher.borrow_mut().update(&buf[..n]);
        let total = self.shared.compressed.get() + n as u64;
        self.shared.compressed.set(total);
        if total > self.limits.max_archive_bytes {
            self.shared.stop.set(Some(Stop::ArchiveBytes));
            return Err(io::Error::other("archive size limit exceeded"));
        }
        Ok(n)
    }
}

/// Counts the decompressed bytes and checks the unpacked and ratio limits.
struct InflatedReader<'a, R> {
    inner: R,
    shared: Rc<Shared>,
    limits: &'a ArchiveLimits,
    cancel: &'a AtomicBool,
}

impl<R: Read> Read for InflatedReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if is_cancelled(self.cancel) {
            self.shared.stop.set(Some(Stop::Cancelled));
            return Err(io::Error::other("cancelled"));
        }
        let n = self.inner.read(buf)?;
        let total = self.shared.decompressed.get() + n as u64;
        self.shared.decompressed.set(total);
        let stop = if total > self.limits.max_unpacked_bytes {
            Some(Stop::UnpackedBytes)
        } else if total > ArchiveLimits::EXPANSION_RATIO_FLOOR
            && total / self.shared.compressed.get().max(1) > self.limits.max_expansion_ratio
        {
            Some(Stop::Ratio)
        } else {
            None
        };
        if let Some(stop) = stop {
            self.shared.stop.set(Some(stop));
            return Err(io::Error::other("archive limit exceeded"));
        }
        Ok(n)
    }
}

struct Unpacker<'a> {
    dest: &'a Path,
    /// `dest`, canonical (for the final symlink check).
    canon_dest: PathBuf,
    limits: &'a ArchiveLimits,
    cancel: &'a AtomicBool,
    shared: Rc<Shared>,
    stats: UnpackStats,
    /// Symlinks written (relative paths and entry names), checked again at the end.
    symlinks: Vec<(PathBuf, String)>,
}

/// An InvalidInput error about an entry.
fn bad_entry(name: &str, why: impl std::fmt::Display) -> Error {
    Error::invalid(format!("archive entry {name:?} {why}"))
}

impl<'a> Unpacker<'a> {
    fn new(dest: &'a Path, limits: &'a ArchiveLimits, cancel: &'a AtomicBool) -> Result<Self> {
        Ok(Unpacker {
            dest,
            canon_dest: fs::canonicalize(dest)?,
            limits,
            cancel,
            shared: Rc::new(Shared::default()),
            stats: UnpackStats {
                entries: 0,
                files: 0,
                file_bytes: 0,
                archive_bytes: 0,
                digest: String::new(),
            },
            symlinks: Vec::new(),
        })
    }

    /// The error for a failed read of the archive stream; `at` says where (e.g.
    /// ` (at entry "x")`) or is empty.
    fn read_error(&self, err: io::Error, at: &str) -> Error {
        let shared = &self.shared;
        let limits = self.limits;
        match shared.stop.get() {
            Some(Stop::ArchiveBytes) => Error::invalid(format!(
                "archive is larger than {} bytes (max_archive_bytes){at}",
                limits.max_archive_bytes
            )),
            Some(Stop::UnpackedBytes) => Error::invalid(format!(
                "archive unpacks to more than {} bytes (max_unpacked_bytes){at}",
                limits.max_unpacked_bytes
            )),
            Some(Stop::Ratio) => Error::invalid(format!(
                "archive expands more than {}x ({} bytes from {} compressed bytes; max_expansion_ratio){at}",
                limits.max_expansion_ratio,
                shared.decompressed.get(),
                shared.compressed.get()
            )),
            Some(Stop::Cancelled) => Error::cancelled("archive unpacking cancelled"),
            None => Error::invalid(format!(
                "not a gzip-compressed tar archive: {}{at}",
                printable(&err.to_string())
            ))
            .with_source(err),
        }
    }

    fn run(mut self, reader: impl Read) -> Result<UnpackStats> {
        let raw = RawReader {
            inner: reader,
            shared: self.shared.clone(),
            limits: self.limits,
        };
        let inflated = InflatedReader {
            inner: GzDecoder::new(raw),
            shared: self.shared.clone(),
            limits: self.limits,
            cancel: self.cancel,
        };
        let mut archive = tar::Archive::new(inflated);
        let mut buf = vec![0u8; 64 * 1024];
        {
            let entries = archive.entries().map_err(|e| self.read_error(e, ""))?;
            let mut last: Option<String> = None;
            for entry in entries {
                let mut entry = entry.map_err(|e| {
                    let at = match &last {
                        Some(name) => format!(" (after entry {name:?})"),
                        None => String::new(),
                    };
                    self.read_error(e, &at)
                })?;
                let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                self.entry(&mut entry, &name, &mut buf)?;
                last = Some(name);
            }
        }
        // Read the rest: the gzip trailer (its checksum is verified) and any bytes
        // after it, so the digest covers the whole archive.
        let mut inflated = archive.into_inner();
        io::copy(&mut inflated, &mut io::sink()).map_err(|e| self.read_error(e, ""))?;
        let gz = inflated.inner;
        if gz.header().is_none() {
            return Err(Error::invalid(
                "not a gzip-compressed tar archive: the input is empty",
            ));
        }
        let mut raw = gz.into_inner();
        io::copy(&mut raw, &mut io::sink()).map_err(|e| self.read_error(e, ""))?;
        self.check_symlinks()?;
        self.stats.archive_bytes = self.shared.compressed.get();
        let digest = self.shared.hasher.replace(Sha256::new()).finalize();
        self.stats.digest = format!("sha256:{}", hex(&digest));
        Ok(self.stats)
    }

    /// Unpacks one entry.
    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        buf: &mut [u8],
    ) -> Result<()> {
        if is_cancelled(self.cancel) {
            return Err(Error::cancelled("archive unpacking cancelled"));
        }
        self.stats.entries += 1;
        if self.stats.entries > self.limits.max_entries {
            return Err(bad_entry(
                name,
                format_args!(
                    "is past the limit of {} entries (max_entries)",
                    self.limits.max_entries
                ),
            ));
        }
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let path = entry
            .path()
            .map_err(|e| bad_entry(name, format_args!("has an unreadable path: {e}")))?;
        let rel = clean_path(&path).map_err(|why| bad_entry(name, why))?;
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                if !rel.as_os_str().is_empty() {
                    self.make_dirs(&rel, name)?;
                }
            }
            T::Regular | T::Continuous => {
                let rel = non_empty(rel, name)?;
                let size = entry.size();
                if self.shared.decompressed.get().saturating_add(size)
                    > self.limits.max_unpacked_bytes
                {
                    return Err(bad_entry(
                        name,
                        format_args!(
                            "is {size} bytes: the archive would unpack to more than {} bytes (max_unpacked_bytes)",
                            self.limits.max_unpacked_bytes
                        ),
                    ));
                }
                let mode = normalized_mode(entry.header().mode().unwrap_or(0o644));
                let to = self.prepare_leaf(&rel, name, true)?;
                self.write_file(entry, name, &to, mode, buf)?;
            }
            T::Symlink => {
                let rel = non_empty(rel, name)?;
                let target = link_target(entry, name)?;
                if target.is_absolute() || !lexically_inside(&rel, &target) {
                    return Err(bad_entry(
                        name,
                        format_args!(
                            "is a symlink to {}, which points outside the destination",
                            target.display()
                        ),
                    ));
                }
                let to = self.prepare_leaf(&rel, name, false)?;
                make_symlink(&target, &to)?;
                self.symlinks.push((rel, name.to_owned()));
            }
            T::Link => {
                let rel = non_empty(rel, name)?;
                let target = link_target(entry, name)?;
                let target_rel = clean_path(&target).map_err(|_| {
                    bad_entry(
                        name,
                        format_args!(
                            "is a hard link to {}, which points outside the destination",
                            target.display()
                        ),
                    )
                })?;
                let from = self.existing_file(&target_rel, name)?;
                let to = self.prepare_leaf(&rel, name, false)?;
                fs::hard_link(&from, &to).map_err(|e| {
                    Error::from(e).context(format!("cannot create hard link {}", to.display()))
                })?;
            }
            other => {
                return Err(bad_entry(
                    name,
                    format_args!(
                        "is a {}; only files, folders and links are allowed",
                        describe(other)
                    ),
                ))
            }
        }
        Ok(())
    }

    /// Creates the folders of `rel` under `dest`, refusing to go through a symlink or
    /// a file.
    fn make_dirs(&self, rel: &Path, name: &str) -> Result<()> {
        let mut cur = self.dest.to_path_buf();
        let mut shown = PathBuf::new();
        for component in rel.components() {
            cur.push(component);
            shown.push(component);
            match fs::symlink_metadata(&cur) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(bad_entry(
                        name,
                        format_args!("would be written through the symlink {}", shown.display()),
                    ))
                }
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(bad_entry(
                        name,
                        format_args!("needs folder {}, but it is a file", shown.display()),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&cur).map_err(|e| {
                        Error::from(e).context(format!("cannot create {}", cur.display()))
                    })?;
                }
                Err(e) => {
                    return Err(Error::from(e).context(format!("cannot inspect {}", cur.display())))
                }
            }
        }
        Ok(())
    }

    /// Creates the parent folders of `rel` and makes sure nothing is in the way of
    /// creating it. An earlier regular file may be replaced by a later one (as `tar`
    /// does) when `replace_file`; anything else already there is refused.
    fn prepare_leaf(&self, rel: &Path, name: &str, replace_file: bool) -> Result<PathBuf> {
        if let Some(parent) = rel.parent() {
            self.make_dirs(parent, name)?;
        }
        let path = self.dest.join(rel);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(path),
            Ok(meta) if replace_file && meta.file_type().is_file() => {
                fs::remove_file(&path).map_err(|e| {
                    Error::from(e).context(format!("cannot replace {}", path.display()))
                })?;
                Ok(path)
            }
            Ok(meta) => {
                let what = if meta.file_type().is_symlink() {
                    "a symlink"
                } else if meta.is_dir() {
                    "a folder"
                } else {
                    "a file"
                };
                Err(bad_entry(
                    name,
                    format_args!("would overwrite {what} written by an earlier entry"),
                ))
            }
            Err(e) => Err(Error::from(e).context(format!("cannot inspect {}", path.display()))),
        }
    }

    /// The path of a regular file already unpacked at `rel`, reached without going
    /// through any symlink (the target of a hard link).
    fn existing_file(&self, rel: &Path, name: &str) -> Result<PathBuf> {
        let mut cur = self.dest.to_path_buf();
        let count = rel.components().count();
        for (i, component) in rel.components().enumerate() {
            cur.push(component);
            let meta = fs::symlink_metadata(&cur).ok();
            let ok = match &meta {
                Some(m) if m.file_type().is_symlink() => false,
                Some(m) if i + 1 < count => m.is_dir(),
                Some(m) => m.file_type().is_file(),
                None => false,
            };
            if !ok {
                return Err(bad_entry(
                    name,
                    format_args!(
                        "is a hard link to {}, which is not a file unpacked by an earlier entry (or is reached through a symlink)",
                        rel.display()
                    ),
                ));
            }
        }
        Ok(cur)
    }

    /// Writes a regular file's content, counting it.
    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        to: &Path,
        mode: u32,
        buf: &mut [u8],
    ) -> Result<()> {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        set_create_mode(&mut options, mode);
        let mut file = options
            .open(to)
            .map_err(|e| Error::from(e).context(format!("cannot create {}", to.display())))?;
        loop {
            let n = match entry.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(e, &format!(" (at entry {name:?})"))),
            };
            file.write_all(&buf[..n])
                .map_err(|e| Error::from(e).context(format!("cannot write {}", to.display())))?;
            self.stats.file_bytes += n as u64;
        }
        set_mode(to, mode)?;
        self.stats.files += 1;
        Ok(())
    }

    /// Checks every symlink again now that all are written: resolved through the
    /// others, each must still land inside `dest` (a chain of individually harmless
    /// links can escape).
    fn check_symlinks(&self) -> Result<()> {
        for (rel, name) in &self.symlinks {
            // A dangling link is followed as far as it goes: writing through it later
            // would create its target, wherever that is.
            let inside = resolve(&self.dest.join(rel), 0)
                .is_some_and(|resolved| resolved.starts_with(&self.canon_dest));
            if !inside {
                return Err(bad_entry(
                    name,
                    "is a symlink that, through other symlinks, points outside the destination",
                ));
            }
        }
        Ok(())
    }
}

/// Where `path` leads: canonical where it exists; a dangling symlink is followed to
/// its target, and a missing last component is added to its resolved parent. `None`
/// when it cannot be told (a loop, a path ending in `..` that does not exist).
fn resolve(path: &Path, depth: u32) -> Option<PathBuf> {
    if depth > 40 {
        return None;
    }
    if let Ok(p) = fs::canonicalize(path) {
        return Some(p);
    }
    if let Ok(target) = fs::read_link(path) {
        return resolve(&path.parent()?.join(target), depth + 1);
    }
    let name = path.file_name()?;
    Some(resolve(path.parent()?, depth + 1)?.join(name))
}

/// An entry path made of normal components only (`.` dropped), or why it is refused.
fn clean_path(path: &Path) -> std::result::Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err("has a '..' component (path traversal)"),
            Component::RootDir | Component::Prefix(_) => return Err("has an absolute path"),
        }
    }
    Ok(out)
}

fn non_empty(rel: PathBuf, name: &str) -> Result<PathBuf> {
    if rel.as_os_str().is_empty() {
        Err(bad_entry(name, "has an empty path"))
    } else {
        Ok(rel)
    }
}

/// The target of a symlink or hard link entry.
fn link_target<R: Read>(entry: &tar::Entry<'_, R>, name: &str) -> Result<PathBuf> {
    match entry.link_name() {
        Ok(Some(target)) if !target.as_os_str().is_empty() => Ok(target.into_owned()),
        Ok(_) => Err(bad_entry(name, "is a link without a target")),
        Err(e) => Err(bad_entry(
            name,
            format_args!("has an unreadable link target: {e}"),
        )),
    }
}

/// `text` without control characters, cut to 160 characters (tar errors may quote
/// raw header bytes).
fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(160)
        .collect();
    if text.chars().count() > 160 {
        out.push_str("...");
    }
    out
}

/// A readable name for an entry type that is refused.
fn describe(kind: tar::EntryType) -> String {
    use tar::EntryType as T;
    match kind {
        T::Char => "character device".into(),
        T::Block => "block device".into(),
        T::Fifo => "fifo (named pipe)".into(),
        T::GNUSparse => "sparse file (unsupported)".into(),
        other => format!("special entry of type {:?}", other.as_byte() as char),
    }
}
