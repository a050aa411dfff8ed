//! Stores: [`MemoryStore`] (always) and [`SqliteStore`] (feature `sqlite`, the default).

mod memory;
pub use memory::MemoryStore;
