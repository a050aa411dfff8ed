//! In-memory backends: a [`MemoryBuilder`], a [`MemoryRuntime`] and a [`MemoryRouter`],
//! always compiled, used in docs and tests, with fault injection through a shared
//! [`Faults`] handle (fail a build, fail a start, exit at start, fail the health check,
//! fail routing, slow a build down).
//!
//! They keep the real contracts of the traits (labels, idempotent stop and remove,
//! route validation, cancellation), so the conformance kits hold for them, and a test
//! can watch what the engine did through their inspection methods.

mod builder;
mod router;
mod runtime;

pub use builder::MemoryBuilder;
pub use router::MemoryRouter;
pub use runtime::MemoryRuntime;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Faults to inject for one service (by service name), or for every service (`"*"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceFaults {
    /// The build fails with a build error.
    pub fail_build: bool,
    /// The runtime refuses to start the instance.
    pub fail_start: bool,
    /// The instance starts, prints an error and exits with code 1.
    pub exit_at_start: bool,
    /// The instance runs but its health check keeps failing.
    pub fail_health: bool,
    /// Instances of these process types (`web`, `worker`, ...) that have a probe
    /// keep failing it, as an app that never answers on its port would; one without
    /// a probe ([`crate::Probe::None`]) has nothing to fail and is healthy while it
    /// runs.
    pub failing_probes: BTreeSet<String>,
    /// The router refuses routes for the service.
    pub fail_route: bool,
    /// The build takes this long (cancellable, unless `build_ignores_cancel`).
    pub build_delay: Option<Duration>,
    /// The build goes on when cancelled, as a stuck builder would.
    pub build_ignores_cancel: bool,
    /// The build prints this many extra lines of output.
    pub build_output_lines: usize,
    /// The instance becomes healthy only this long after it started.
    pub health_delay: Option<Duration>,
    /// The runtime fails to stop the instance (it keeps running).
    pub fail_stop: bool,
}

/// A shared, cloneable set of faults, read by the in-memory backends at each call.
///
/// ```
/// use wharf_core::memory::Faults;
/// let faults = Faults::default();
/// faults.update("web", |f| f.fail_health = true);
/// assert!(faults.get("web").fail_health);
/// assert!(!faults.get("api").fail_health);
/// faults.clear();
/// assert!(!faults.get("web").fail_health);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<HashMap<String, ServiceFaults>>>,
}

impl Faults {
    /// Changes the faults of `service` (a service name, or `"*"` for all).
    pub fn update(&self, service: &str, f: impl FnOnce(&mut ServiceFaults)) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(g.entry(service.to_owned()).or_default());
    }

    /// The faults in force for `service`: its own, or-ed with the `"*"` ones.
    pub fn get(&self, service: &str) -> ServiceFaults {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let own = g.get(service).cloned().unwrap_or_default();
        let all = g.get("*").cloned().unwrap_or_default();
        ServiceFaults {
            fail_build: own.fail_build || all.fail_build,
            fail_start: own.fail_start || all.fail_start,
            exit_at_start: own.exit_at_start || all.exit_at_start,
            fail_health: own.fail_health || all.fail_health,
            failing_probes: own
                .failing_probes
                .union(&all.failing_probes)
                .cloned()
                .collect(),
            fail_route: own.fail_route || all.fail_route,
            build_delay: own.build_delay.or(all.build_delay),
            build_ignores_cancel: own.build_ignores_cancel || all.build_ignores_cancel,
            build_output_lines: own.build_output_lines.max(all.build_output_lines),
            health_delay: own.health_delay.or(all.health_delay),
            fail_stop: own.fail_stop || all.fail_stop,
        }
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The service name a resource is labelled with (for fault lookup).
fn service_name(labels: &crate::model::Labels) -> &str {
    labels
        .get(crate::model::label::SERVICE_NAME)
        .map(String::as_str)
        .unwrap_or("")
}
