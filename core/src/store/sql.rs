//! What the SQL stores (SQLite, PostgreSQL) share: the failure type of their
//! operations and the JSON bodies they keep records in.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// A database client's error, mapped by meaning into a Wharf one.
pub(super) trait DbError {
    /// The Wharf error this database error means.
    fn into_error(self) -> Error;
}

/// A failure inside a store operation: a database error `E` (mapped at the end) or a
/// Wharf one.
pub(super) enum Fail<E> {
    Sql(E),
    Wharf(Error),
}

impl<E: DbError> From<E> for Fail<E> {
    fn from(e: E) -> Self {
        Fail::Sql(e)
    }
}

impl<E> From<Error> for Fail<E> {
    fn from(e: Error) -> Self {
        Fail::Wharf(e)
    }
}

impl<E: DbError> From<Fail<E>> for Error {
    fn from(f: Fail<E>) -> Self {
        match f {
            Fail::Sql(e) => e.into_error(),
            Fail::Wharf(e) => e,
        }
    }
}

/// The JSON body of a record. A record whose JSON does not read back is refused here:
/// stored, it would make every listing that includes it fail.
pub(super) fn encode<T: Serialize + DeserializeOwned>(what: &str, value: &T) -> Result<String> {
    let body = serde_json::to_string(value)
        .map_err(|e| Error::invalid(format!("cannot store {what}: it does not serialise: {e}")))?;
    if let Err(e) = serde_json::from_str::<T>(&body) {
        return Err(Error::invalid(format!(
            "cannot store {what}: its JSON form does not read back ({e})"
        )));
    }
    Ok(body)
}

/// A record read back from its JSON body; Internal (naming `backend`) if it does not
/// read.
pub(super) fn decode<T: DeserializeOwned>(
    backend: &'static str,
    what: &str,
    body: &str,
) -> Result<T> {
    serde_json::from_str(body).map_err(|e| {
        Error::internal(format!("a stored {what} cannot be read back: {e}")).with_backend(backend)
    })
}
