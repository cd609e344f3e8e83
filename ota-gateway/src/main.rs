//! `ota-gateway`: Updraft's data plane as a process.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;

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
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_format);
    ota_gateway::serve(args.config).await
}
