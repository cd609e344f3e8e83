//! updraft-core: what Updraft's operator and gateway must agree on, in one place.
//!
//! - [`config`]: the gateway's configuration file, which the operator renders and the
//!   gateway reads;
//! - [`version`]: version policy and [`version::resolve_latest`], the one resolver both
//!   the operator (FirmwareChannel status) and the gateway (standalone channels) call;
//! - [`oci`]: the shared registry client, credentials, and which manifest and layer
//!   hold an artifact;
//! - [`cosign`]: cosign signature verification of a release's manifest digest, which
//!   both sides run before pinning a release;
//! - [`image_metadata`]: `metadata.yaml` of an LXD/Incus image, for the product an
//!   image version belongs to;
//! - [`simplestreams`]: image products, versions, their layout as OCI artifacts and
//!   the filtering of an upstream server, which the gateway indexes with and the
//!   ImageStream controller counts with;
//! - [`notify`]: signed webhooks (body, HMAC signature, delivery with retries), sent
//!   by the gateway and by the operator;
//! - [`mirror`]: a mirror's rules and plan, and the metadata-only listing of its sides,
//!   which the forwarding worker acts on and the operator reports in status;
//! - [`restart`]: which config settings take a gateway restart (the gateway logs them,
//!   the operator rolls the pods on them);
//! - [`secret`]: what a key or token is (trimmed, never empty), for every key either
//!   side reads;
//! - [`telemetry`]: the log set-up both binaries share;
//! - [`backoff`]: the doubling backoff of every retry loop on either side;
//! - [`delta`]: how a delta patch is stored as an OCI artifact (tag, media types,
//!   annotations), which the building worker writes and the operator and gateway read;
//! - [`census`]: the device census, sliding-window HyperLogLog sketches the gateway
//!   records and the operator merges.
//!
//! No server and no Kubernetes client live here: both sides depend on this crate, and it
//! depends on neither.

#![deny(unsafe_code)]

pub mod backoff;
pub mod census;
pub mod config;
pub mod cosign;
pub mod delta;
pub mod image_metadata;
pub mod mirror;
pub mod notify;
pub mod oci;
pub mod restart;
pub mod secret;
pub mod simplestreams;
pub mod telemetry;
pub mod version;
