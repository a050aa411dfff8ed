#![doc = include_str!("../README.md")]

pub mod config;
mod health;
pub mod http;
pub mod keystone;
pub mod network;
pub mod nova;
pub mod zun;

pub use config::{CloudConfig, Credentials, Interface};
pub use http::{api_error, ApiError, RetryPolicy};
pub use keystone::{Session, SessionBuilder, Token};
pub use network::{Exposure, NetworkOptions, Networking};
pub use nova::{NovaOptions, NovaRuntime};
pub use zun::{ZunOptions, ZunRuntime};

/// Refuses an image that exists only on the engine that built it
/// ([`wharf_core::InstanceSpec::image_local_only`]): Zun hosts and Nova servers pull
/// images themselves, so it could never start there.
fn refuse_local_image(spec: &wharf_core::InstanceSpec, runtime: &str) -> wharf_core::Result<()> {
    if !spec.image_local_only {
        return Ok(());
    }
    Err(wharf_core::Error::invalid(format!(
        "instance {}: the image {} exists only on the Docker engine that built it, so {runtime} \
         cannot pull it; configure a registry push on the builder \
         (wharf_docker::DockerBuilder::push_to) so it runs the pushed image by digest",
        spec.name, spec.image
    ))
    .with_backend(http::BACKEND))
}
