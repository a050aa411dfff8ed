//! Picks the builder, runtime and router `wharf serve` uses, and says why.

use std::sync::Arc;

use wharf_core::{DynBuilder, DynRouter, DynRuntime};

use crate::client::CliError;
use crate::config::Config;

/// The backends chosen, with a line per choice for the start-up banner.
pub struct Backends {
    /// Builds images (or release folders).
    pub builder: DynBuilder,
    /// Runs instances.
    pub runtime: DynRuntime,
    /// Routes hostnames.
    pub router: DynRouter,
    /// The port apps are reached on through the router (`None`: 80).
    pub proxy_port: Option<u16>,
    /// What was chosen and why.
    pub notes: Vec<String>,
}

/// Chooses backends from the configuration and what answers on this machine.
pub async fn select(config: &Config) -> Result<Backends, CliError> {
    let _ = config;
    let notes = vec![
        "runtime: in-memory (no real runtime is wired in yet: apps are not started)".to_owned(),
        "router: in-memory".to_owned(),
    ];
    Ok(Backends {
        builder: Arc::new(wharf_core::memory::MemoryBuilder::new()),
        runtime: Arc::new(wharf_core::memory::MemoryRuntime::new()),
        router: Arc::new(wharf_core::memory::MemoryRouter::new()),
        proxy_port: Some(config.proxy_listen.port()),
        notes,
    })
}
