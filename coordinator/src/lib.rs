//! The Orrery coordinator: the CloudStack-compatible API, persistence, jobs and
//! placement. See ARCHITECTURE.md for the layers.

pub mod agents;
pub mod api;
pub mod ca;
pub mod config;
pub mod console;
pub mod error;
pub mod listener;
pub mod metrics;
pub mod placement;
pub mod service;
pub mod store;

#[cfg(test)]
mod boundary_tests;
