//! The server's small JSON state files in its data directory (API tokens, custom
//! domain claims): read whole at start-up, absent until first written.

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
