//! Conformance kits: public async test functions that every implementation of a trait
//! calls from its own tests. Each panics with a clear message on a violation.
//!
//! A backend's test file enables the `conformance` feature of `wharf-core` in its
//! dev-dependencies and calls the kit, e.g. for a runtime:
//!
//! ```ignore
//! #[tokio::test]
//! async fn conformance() {
//!     let rt = MyRuntime::connect().await.unwrap();
//!     wharf_core::conformance::runtime::run_all(&rt, &my_case()).await;
//! }
//! ```

pub mod builder;
pub mod router;
pub mod runtime;

/// A short random suffix, so kit runs never collide with each other or with real data.
pub(crate) fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &id[..10])
}
