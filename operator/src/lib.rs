//! Updraft's operator: the only writer to the Kubernetes API.
//!
//! One controller per kind, all on one `context::Context` and on one shared cache per
//! kind (see [`run`]): `channel` resolves FirmwareChannel versions from registry
//! metadata and writes their status; `gateway` renders every OtaGateway's configuration
//! from the resources attached to it (`attach`, built by the pure builders in `render`)
//! and applies its ConfigMap, Deployment and Service; `stream` observes ImageStream
//! sources (counts, signatures); `notify` sends the webhooks of refused releases. `receiver` turns registry
//! push notifications into immediate reconciles of the objects whose source was
//! pushed. Registry checks and retries run on a per-object `schedule`, generic over
//! the kind; `status` writes every status; `page` is the read-only status page on the admin port.

#![deny(unsafe_code)]

mod admin;
mod attach;
pub mod census;
mod channel;
mod checks;
mod clients;
mod context;
mod delivery;
mod delta;
mod error;
#[cfg(test)]
mod fixtures;
mod gateway;
mod leader;
mod metrics;
mod mirror;
mod notify;
mod page;
pub mod receiver;
mod render;
mod resolve;
mod rollout;
pub mod run;
mod schedule;
mod secrets;
mod serve;
mod status;
mod stream;
