#![doc = include_str!("../README.md")]

mod archive;
mod builder;
mod context;
mod error;
mod exec;
mod gc;
mod probe;
mod push;
mod runtime;

pub use archive::HELPER as HELPER_LABEL;
pub use builder::DockerBuilder;
pub use gc::{retained_images, GcReport};
pub use push::RegistryPush;
pub use runtime::{DockerRuntime, RestartPolicy, RuntimeOptions};

/// Checks that a Docker engine answers, for tests and start-up checks: `Ok(())`, or
/// why not (fit for `wharf_core::conformance::require`, behind its `conformance` feature).
///
/// The engine is found as the `docker` CLI finds it: `DOCKER_HOST` if set, else the
/// local unix socket `/var/run/docker.sock`. The API version is negotiated with it
/// (Debian's engine 20.10 speaks 1.41).
pub async fn probe_engine() -> Result<(), String> {
    runtime::connect()
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}
