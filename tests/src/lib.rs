//! Support code for the workspace end-to-end tests.
//!
//! [`crash`] holds file-backed runtime and router doubles whose state outlives the
//! process, so a test can SIGKILL a control plane mid-deployment and check what a fresh
//! one recovers (`tests/crash_recovery.rs`, driving the `crash-child` binary).

pub mod crash;
