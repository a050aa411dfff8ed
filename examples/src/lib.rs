//! The `wharf` server and CLI as a library, in layers:
//!
//! - [`api`]: the HTTP API (one module per resource, extractors that resolve the
//!   caller, project and service with the minimum role in the type, the error type,
//!   the OpenAPI document generated from the handlers and [`dto`]);
//! - [`dto`]: the wire types, shared by the server, the CLI's client and the tests;
//! - [`auth`]: API tokens and roles;
//! - `wharf serve`'s composition ([`server`], [`config`], [`backends`]);
//! - the CLI's client ([`client`]) and the dashboard page ([`dashboard`]).
//!
//! The binary (`src/main.rs`) wires them together; tests drive the pieces directly.

pub mod api;
pub mod auth;
pub mod backends;
pub mod client;
pub mod config;
pub mod dashboard;
pub mod dns;
pub mod dto;
pub mod managed_caddy;
pub mod manifest;
pub mod server;

pub use api::{domains, environments, webhooks};
