//! The `wharf` server and CLI as a library, in layers:
//!
//! - [`api`]: the HTTP API (one module per resource, extractors that resolve the
//!   caller, project and service with the minimum role in the type, the error type,
//!   the OpenAPI document generated from the handlers and [`dto`]);
//! - [`dto`]: the wire types, shared by the server, the CLI's client and the tests;
//! - [`auth`]: API tokens and roles;
//! - [`server`]: `wharf serve`'s start-up (configuration, backend selection, a managed
//!   Caddy, the DNS checks' resolver, its error type);
//! - the CLI's client ([`client`]) and the dashboard page ([`dashboard`]);
//! - [`static_site`]: the static file server host processes run for static sites.
//!
//! The binary (`src/main.rs`) wires them together; tests drive the pieces directly.

pub mod api;
pub mod auth;
pub mod client;
pub mod dashboard;
pub mod dto;
mod json_file;
pub mod manifest;
pub mod server;
pub mod static_site;

// Old paths keep working (`wharf_server::config`, `wharf_server::domains`, ...).
pub use api::{domains, environments, webhooks};
pub use server::{backends, config, dns, managed_caddy};
