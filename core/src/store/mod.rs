//! Stores: [`MemoryStore`] (always) and [`SqliteStore`] (feature `sqlite`, the default).

mod memory;
pub use memory::MemoryStore;

#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteStore;

#[cfg(feature = "seal")]
mod sealed;
#[cfg(feature = "seal")]
#[cfg_attr(docsrs, doc(cfg(feature = "seal")))]
pub use sealed::SealedStore;
