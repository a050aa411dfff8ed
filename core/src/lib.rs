#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[macro_use]
mod macros;

pub mod cron;
pub mod database;
pub mod dbprobe;
pub mod detect;
pub mod engine;
pub mod error;
pub mod fetch;
pub mod hostname;
pub mod memory;
pub mod model;
pub mod planner;
#[cfg(feature = "process")]
pub mod process;
#[cfg(feature = "proxy")]
pub mod proxy;
pub mod refs;
pub mod retry;
pub mod state;
pub mod store;
pub mod traits;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use engine::{
    canary_upstreams, network_name, DeploymentHandle, Engine, EngineBuilder, EngineConfig,
    RolloutHandle, RunOptions, RunOutcome, TaskKind, MAX_LOG_LINE_BYTES, TASK_LABEL,
};
pub use error::{Error, ErrorKind, Result};
pub use hostname::{normalize_hostname, validate_hostname};
pub use model::*;
pub use state::{DeployEvent, DeploymentState, Step};
pub use traits::*;
