#![doc = include_str!("../README.md")]

pub mod config;
pub mod http;
pub mod keystone;
pub mod network;
pub mod zun;

pub use config::{CloudConfig, Credentials, Interface};
pub use http::{api_error, ApiError, RetryPolicy};
pub use keystone::{Session, SessionBuilder, Token};
pub use network::{Exposure, NetworkOptions, Networking};
pub use zun::{ZunOptions, ZunRuntime};
