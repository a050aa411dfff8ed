//! The `wharf` server and CLI as a library: the HTTP API ([`api`]), its auth
//! ([`auth`]), the configuration ([`config`]), backend selection ([`backends`]), the
//! CLI's client ([`client`]), the OpenAPI document and the dashboard page. The binary
//! (`src/main.rs`) wires them together; tests drive the pieces directly.

pub mod api;
pub mod auth;
pub mod backends;
pub mod client;
pub mod config;
pub mod dashboard;
pub mod dns;
pub mod domains;
pub mod environments;
pub mod managed_caddy;
pub mod manifest;
pub mod openapi;
pub mod server;
pub mod webhooks;
