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
    /// Log line format.
    #[arg(long, env = "UPDRAFT_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format, "info");
    ota_gateway::serve(args.config).await
}
