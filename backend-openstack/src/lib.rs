#![doc = include_str!("../README.md")]

pub mod cinder;
pub mod config;
mod health;
pub mod http;
mod instances;
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
