//! Volume archives of host-process apps: a volume's folder streamed out as a tar
//! archive under [`VOLUME_ARCHIVE_ROOT`]/, and such an archive unpacked into a fresh
//! folder that then replaces the volume's in one rename, so a restore that fails
//! half-way leaves the volume as it was.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::traits::{ByteStream, StreamReader, VOLUME_ARCHIVE_ROOT};

/// Bytes per chunk handed to the stream.
const CHUNK: usize = 64 * 1024;

/// A writer feeding a channel in chunks (from a blocking thread).
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "reader gone"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// The folder `dir` as a tar stream, entries under `volume/`. Symbolic links are
/// archived as links, never followed: a link an app leaves in its volume must not
/// carry a file from outside it into a backup.
pub(crate) fn export(dir: PathBuf) -> ByteStream {
    let (tx, rx) = mpsc::channel::<Result<Bytes>>(4);
    let err_tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let done = (|| -> std::io::Result<()> {
            let mut b = tar::Builder::new(&mut writer);
            b.follow_symlinks(false);
            b.append_dir_all(VOLUME_ARCHIVE_ROOT, &dir)?;
            b.finish()?;
            drop(b);
            writer.flush()
        })();
        if let Err(e) = done {
            let _ =
                err_tx
                    .blocking_send(Err(Error::from(e)
                        .context(format!("archiving volume folder {}", dir.display()))));
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }).boxed()
}

/// Unpacks `tar` into a new folder `staging` (which must not exist): only entries
/// under `volume/` with no absolute or `..` component; returns the unpacked volume's
/// folder (`staging/volume`).
pub(crate) async fn unpack(tar: ByteStream, staging: PathBuf) -> Result<PathBuf> {
    let reader = StreamReader::new(tar);
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir(&staging)?;
        let root = staging.join(VOLUME_ARCHIVE_ROOT);
        std::fs::create_dir(&root)?;
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.into_owned();
            check_entry(&path)?;
            if !entry.unpack_in(&staging)? {
                return Err(Error::invalid(format!(
                    "archive entry {} points outside the volume",
                    path.display()
                )));
            }
        }
        Ok(root)
    })
    .await
    .map_err(|e| Error::internal(format!("volume unpacking stopped: {e}")))?
}

/// An entry is `volume` itself or under it, relative, without `..`.
fn check_entry(path: &Path) -> Result<()> {
    let mut parts = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir));
    let first_ok = matches!(parts.next(), Some(Component::Normal(n)) if n == VOLUME_ARCHIVE_ROOT);
    if !first_ok || parts.any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Error::invalid(format!(
            "archive entry {} is not under {VOLUME_ARCHIVE_ROOT}/ (or climbs out of it): \
             not a volume archive",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_outside_the_volume_are_refused() {
        assert!(check_entry(Path::new("volume")).is_ok());
        assert!(check_entry(Path::new("./volume/a/b")).is_ok());
        for bad in [
            "etc/passwd",
            "/volume/a",
            "volume/../x",
            "volume/a/../../x",
            "",
        ] {
            assert!(check_entry(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
