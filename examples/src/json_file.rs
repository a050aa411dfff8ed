//! The server's small state files in its data directory (API tokens, custom domain
//! claims, seen deliveries): read whole, absent until first written, and written
//! private to the server's account.

use std::path::Path;

use serde::de::DeserializeOwned;

/// What `path` holds, or the empty value when there is no such file yet.
pub(crate) fn load_or_default<T: DeserializeOwned + Default>(path: &Path) -> std::io::Result<T> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `bytes` at once (a new file renamed over it), readable by its
/// owner only from the moment it exists.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // A name of this write's own: another process (`wharf token` beside the server)
    // writing the same file at once never shares the temporary file.
    let tmp = path.with_extension(format!(
        "{}.{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
