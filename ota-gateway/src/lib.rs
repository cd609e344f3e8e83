//! ota-gateway: Updraft's data plane.

pub mod config;
pub mod version;
