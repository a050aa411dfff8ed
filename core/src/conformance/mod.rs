//! Conformance kits: public async test functions that every implementation of a trait
//! calls from its own tests. Each panics with a clear message on a violation.
//!
//! A backend's test file enables the `conformance` feature of `wharf-core` in its
//! dev-dependencies and calls the kit, e.g. for a runtime:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::time::Duration;
//! use wharf_core::{conformance::runtime::{run_all, RuntimeCase}, memory::MemoryRuntime, *};
//! let rt = MemoryRuntime::new();
//! let healthy = InstanceSpec {
//!     name: "kit-web".into(),
//!     image: "example/web:1".into(),
//!     command: None,
//!     env: Default::default(),
//!     port: 8080,
//!     resources: Resources::default(),
//!     health_check: HealthCheck { timeout: Duration::from_secs(5), ..HealthCheck::default() },
//!     volumes: vec![],
//!     network: None,
//!     network_alias: None,
//!     labels: Labels::from([(label::MANAGED.to_string(), "true".to_string())]),
//! };
//! run_all(&rt, &RuntimeCase { healthy, exits_at_start: None }).await;
//! # });
//! ```

pub mod builder;
pub mod router;
pub mod runtime;
pub mod store;

/// A short random suffix, so kit runs never collide with each other or with real data.
pub(crate) fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &id[..10])
}
