#![doc = include_str!("../README.md")]

mod build;
mod component;
mod engine;
mod git;
#[cfg(feature = "http")]
pub mod http;
mod logs;
mod net;
mod python;

pub use build::{endpoint, route, route_to, spec, RouteBuilder, SpecBuilder};
pub use component::{
    caddy_admin_url, caddy_bin, caddy_http_port, ci_dir, command_runs, digest_of,
    docker_cli_present, env_or, postgres_url, probe_registry, probe_s3, registry_addr, require,
    root_present, s3_addr, s3_create_bucket, stdout_of, workspace_root, KillOnDrop, STATES_TO_LIVE,
};
pub use engine::{deploy, reach};
pub use git::{bare_clone, git, git_present};
pub use logs::KeptLogs;
pub use net::{curl_https, free_port, free_port_udp, http_get, unique, upstream, HttpAnswer};
pub use python::{hello_app, python_app, python_present, write_hello_app, StaticServer};
