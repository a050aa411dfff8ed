//! The engine that drives deployments (being written).

/// Placeholder.
#[derive(Debug)]
pub struct Engine;
/// Placeholder.
#[derive(Debug)]
pub struct EngineBuilder;
/// Placeholder.
#[derive(Debug)]
pub struct EngineConfig;
/// Placeholder.
#[derive(Debug)]
pub struct DeploymentHandle;
/// Placeholder.
#[derive(Debug)]
pub struct RolloutHandle;
