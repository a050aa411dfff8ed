//! The `wharf` server and CLI as a library: the HTTP API ([`api`]), its auth
//! ([`auth`]), the server's start-up ([`server`]: configuration, backend selection, a
//! managed Caddy, the DNS checks' resolver), the CLI's client ([`client`]), the OpenAPI
//! document and the dashboard page. The binary (`src/main.rs`) wires them together;
//! tests drive the pieces directly.

pub mod api;
pub mod auth;
pub mod client;
pub mod dashboard;
pub mod domains;
pub mod environments;
pub mod manifest;
pub mod openapi;
pub mod server;
pub mod webhooks;

// The server's modules keep their old paths (`wharf_server::config`, ...).
pub use server::{backends, config, dns, managed_caddy};
