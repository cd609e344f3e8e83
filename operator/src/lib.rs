//! Updraft's operator: the only writer to the Kubernetes API.
//!
//! Two controllers share one [`context::Context`]: [`channel`] resolves FirmwareChannel
//! versions from registry metadata and writes their status; [`gateway`] renders every
//! OtaGateway's configuration from the channels attached to it and applies its
//! ConfigMap, Deployment and Service.

pub mod admin;
pub mod channel;
pub mod context;
pub mod error;
pub mod gateway;
pub mod leader;
pub mod metrics;
pub mod render;
pub mod resolve;
pub mod run;

pub use error::{Error, Result};
