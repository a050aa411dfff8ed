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
//!     image_local_only: false,
//!     command: None,
//!     env: Default::default(),
//!     port: 8080,
//!     resources: Resources::default(),
//!     health_check: HealthCheck { timeout: Duration::from_secs(5), ..HealthCheck::default() },
//!     volumes: vec![],
//!     network: None,
//!     network_alias: None,
//!     labels: Labels::from([(label::MANAGED.to_string(), "true".to_string())]),
//!     run_once: false,
//!     replicas: 1,
//! };
//! run_all(&rt, &RuntimeCase { healthy, exits_at_start: None, task: None }).await;
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

/// Decides whether a test that needs a real component (`docker`, `caddy`, `traefik`,
/// `postgres`, `keystone`, ...) runs.
///
/// `probe` is the outcome of checking for the component: `Ok(())` when it answers,
/// `Err(reason)` when it does not. Returns `true` when the test should go on. When the
/// component is absent the test is skipped with the reason printed, unless the
/// comma-separated `WHARF_REQUIRE` environment variable names the component (or is
/// `all`), in which case this panics: CI sets it so a missing component can never turn
/// into a silent pass.
///
/// ```
/// use wharf_core::conformance::require;
/// // An absent component that nobody requires: the test skips.
/// std::env::remove_var("WHARF_REQUIRE");
/// assert!(!require("example-proxy", Err("nothing listens on 127.0.0.1:1".into())));
/// assert!(require("example-proxy", Ok(())));
/// ```
pub fn require(component: &str, probe: std::result::Result<(), String>) -> bool {
    match probe {
        Ok(()) => true,
        Err(reason) => {
            let required = std::env::var("WHARF_REQUIRE").unwrap_or_default();
            let named = required
                .split(',')
                .map(str::trim)
                .any(|c| c == component || c == "all");
            if named {
                panic!("{component} is required (WHARF_REQUIRE={required}) but absent: {reason}");
            }
            eprintln!("skipping: {component} is absent ({reason}); set WHARF_REQUIRE={component} to make this a failure");
            false
        }
    }
}
