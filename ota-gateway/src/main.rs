//! `ota-gateway`: Updraft's data plane as a process.

#![deny(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;
use updraft_core::telemetry::{self, LogFormat};

/// Caches, verifies and serves firmware from OCI registries to devices.
///
/// Reads one YAML config file (channels, cache, listeners) and reloads it when it
/// changes. Log verbosity follows RUST_LOG (default `info`).
#[derive(Parser, Debug)]
#[command(name = "ota-gateway", version, about, long_about)]
struct Args {
    /// Path of the gateway config file (gateway.yaml); see ota-gateway/README.md.
    #[arg(long, short, env = "UPDRAFT_GATEWAY_CONFIG", value_name = "FILE")]
    config: PathBuf,
    /// Run the forwarding worker (the config's `mirrors`) instead of serving. Exactly
    /// one such process runs per gateway.
    #[arg(long, env = "UPDRAFT_MIRROR_MODE")]
    mirror: bool,
    /// Log line format.
    #[arg(long, env = "UPDRAFT_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format, "info");
    if args.mirror {
        ota_gateway::mirror::run(args.config).await
    } else {
        ota_gateway::serve(args.config).await
    }
}
