//! `ota-gateway`: Updraft's data plane as a process.

#![deny(unsafe_code)]

use std::path::PathBuf;

use clap::{ArgAction, Parser};
use ota_gateway::census::parse_size;
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
    /// Run the worker instead of serving: it forwards the config's `mirrors` and builds
    /// the channels' delta patches (`deltas.build`). Exactly one such process runs per
    /// gateway.
    #[arg(long, env = "UPDRAFT_MIRROR_MODE")]
    mirror: bool,
    /// Log line format.
    #[arg(long, env = "UPDRAFT_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Count unique devices per channel, version and state (offered, downloaded,
    /// running) over 1 h, 24 h and 7 d, from the `id` devices send; served as sketches
    /// on the admin port's `GET /census` (no device id is stored, logged or exported).
    /// On by default; `--no-census` or UPDRAFT_GATEWAY_CENSUS=false turns it off
    /// (nothing recorded, /census answers 404).
    #[arg(long, env = "UPDRAFT_GATEWAY_CENSUS", default_value_t = true, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    census: bool,
    /// Turn the device census off (same as --census=false).
    #[arg(long)]
    no_census: bool,
    /// Memory the census may hold, e.g. 16MiB (the default) or 64MiB. A series
    /// (channel x version x state) costs 4 bytes per device seen in the week, at most
    /// 3.2 MiB; 16 MiB hold about 4 million, e.g. 100 channels x 5 versions with 10,000
    /// devices a channel (11.6 MiB measured). Past the budget new devices are not counted
    /// (updraft_gateway_census_refused_total) until old ones expire.
    #[arg(long, env = "UPDRAFT_GATEWAY_CENSUS_MEMORY", value_name = "SIZE", default_value = "16MiB",
          value_parser = parse_size)]
    census_memory: usize,
}

impl Args {
    /// The census's budget, `None` when it is off.
    fn census(&self) -> Option<usize> {
        (self.census && !self.no_census).then_some(self.census_memory)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format, "info");
    if args.mirror {
        ota_gateway::mirror::run(args.config).await
    } else {
        ota_gateway::serve(args.config.clone(), args.census()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_gateway::census::DEFAULT_MEMORY;

    fn census(args: &[&str]) -> Option<usize> {
        let mut argv = vec!["ota-gateway", "--config", "gw.yaml"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv).unwrap().census()
    }

    #[test]
    fn the_census_is_on_by_default_with_16_mib() {
        assert_eq!(DEFAULT_MEMORY, 16 << 20);
        assert_eq!(census(&[]), Some(DEFAULT_MEMORY));
        assert_eq!(census(&["--census-memory", "64MiB"]), Some(64 << 20));
        assert_eq!(census(&["--census-memory=1000000"]), Some(1_000_000));
        assert_eq!(census(&["--no-census"]), None);
        assert_eq!(census(&["--census=false"]), None);
        assert_eq!(census(&["--census"]), Some(DEFAULT_MEMORY));
        let bad = Args::try_parse_from(["ota-gateway", "--config", "x", "--census-memory", "16 parsecs"]);
        assert!(bad.unwrap_err().to_string().contains("is not a size"));
        // From the environment (the only test of this binary: nothing else reads it).
        std::env::set_var("UPDRAFT_GATEWAY_CENSUS", "false");
        assert_eq!(census(&[]), None);
        std::env::set_var("UPDRAFT_GATEWAY_CENSUS", "true");
        std::env::set_var("UPDRAFT_GATEWAY_CENSUS_MEMORY", "32MiB");
        assert_eq!(census(&[]), Some(32 << 20));
        std::env::remove_var("UPDRAFT_GATEWAY_CENSUS");
        std::env::remove_var("UPDRAFT_GATEWAY_CENSUS_MEMORY");
    }
}
