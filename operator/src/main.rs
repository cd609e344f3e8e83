//! `updraft-operator`: runs Updraft's controllers against the cluster in `KUBECONFIG`
//! (or the in-cluster service account).

#![deny(unsafe_code)]

use clap::Parser;
use updraft_core::telemetry::{self, LogFormat};
use updraft_operator::receiver::WebhookSettings;
use updraft_operator::run::{run, ConfigEndpoint, Settings};

/// Updraft's Kubernetes operator: resolves FirmwareChannel versions from OCI registry
/// metadata and runs an ota-gateway Deployment for every OtaGateway.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Image of the gateway containers, for OtaGateways that name none.
    #[arg(long, env = "UPDRAFT_GATEWAY_IMAGE", default_value = concat!("ghcr.io/updraft-dev/ota-gateway:", env!("CARGO_PKG_VERSION")))]
    gateway_image: String,
    /// Address of the admin server (/metrics, /healthz, /readyz, and the read-only status
    /// page at / and /status).
    #[arg(long, env = "UPDRAFT_ADMIN_ADDR", default_value = "0.0.0.0:8081")]
    admin_addr: std::net::SocketAddr,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "UPDRAFT_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Elect a leader with a Lease so several replicas can run; only the leader reconciles.
    #[arg(long, env = "UPDRAFT_LEADER_ELECT", default_value_t = false)]
    leader_elect: bool,
    /// Namespace of the leader-election Lease (default: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Identity in the Lease and in events (default: the pod name or host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Address of the registry notification receiver (`POST /webhook`); no receiver
    /// when unset. Needs `--webhook-token-secret`.
    #[arg(long, env = "UPDRAFT_WEBHOOK_ADDR", requires = "webhook_token_secret")]
    webhook_addr: Option<std::net::SocketAddr>,
    /// Secret (in the operator's namespace, `POD_NAMESPACE`) whose key `token` every
    /// notification must carry as `Authorization: Bearer <token>`.
    #[arg(long, env = "UPDRAFT_WEBHOOK_TOKEN_SECRET")]
    webhook_token_secret: Option<String>,
    /// Match a notification's registry host too (distribution's `request.host`, the host
    /// of Harbor's `resource_url`), not only its repository, against `source.registry`.
    #[arg(long, env = "UPDRAFT_WEBHOOK_MATCH_HOST", default_value_t = false)]
    webhook_match_host: bool,
    /// How often the device census is read from every gateway replica's admin port and
    /// merged into `status.devices` (e.g. `30s`, `1m`).
    #[arg(long, env = "UPDRAFT_CENSUS_INTERVAL", default_value = "60s", value_parser = parse_interval)]
    census_interval: std::time::Duration,
    /// Gateway replicas to read the census from instead of the gateway Service's
    /// EndpointSlices, for gateways that run without pods:
    /// `namespace/gateway=host:port[,host:port...][;...]` (the admin port).
    #[arg(long, env = "UPDRAFT_CENSUS_REPLICAS", value_parser = updraft_operator::census::parse_overrides)]
    census_replicas: Option<updraft_operator::census::Overrides>,
    /// Address of the gateways' config endpoint (`GET /v1/gateways/NS/NAME/config`,
    /// long-polled by gateway pods so a new release or rollback is served within a
    /// second, not at kubelet's next ConfigMap sync); none when unset. Needs
    /// `--config-url`.
    #[arg(long, env = "UPDRAFT_CONFIG_ADDR", requires = "config_url")]
    config_addr: Option<std::net::SocketAddr>,
    /// The config endpoint's URL as gateway pods reach it, e.g.
    /// `http://updraft-operator.updraft-system.svc:8082`.
    #[arg(long, env = "UPDRAFT_CONFIG_URL", requires = "config_addr")]
    config_url: Option<String>,
    /// Log format.
    #[arg(long, env = "UPDRAFT_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log level, when RUST_LOG is unset (error, warn, info, debug, trace).
    #[arg(long, env = "UPDRAFT_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

/// A census interval: a duration longer than zero.
fn parse_interval(text: &str) -> anyhow::Result<std::time::Duration> {
    let interval = updraft_core::version::parse_duration(text)?;
    anyhow::ensure!(!interval.is_zero(), "must be longer than 0s");
    Ok(interval)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format, &format!("{},kube_runtime=warn", args.log_level));
    let identity = args.identity.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "updraft-operator".into())
    });
    let webhook = match (args.webhook_addr, args.webhook_token_secret) {
        (Some(addr), Some(token_secret)) => Some(WebhookSettings {
            addr,
            token_secret,
            namespace: args.lease_namespace.clone(),
            match_host: args.webhook_match_host,
        }),
        _ => None,
    };
    run(Settings {
        gateway_image: args.gateway_image,
        admin_addr: args.admin_addr,
        namespace: args.namespace,
        leader_election: args.leader_elect.then_some(args.lease_namespace),
        identity,
        webhook,
        census_interval: args.census_interval,
        census_replicas: args.census_replicas.unwrap_or_default(),
        config_endpoint: args.config_addr.zip(args.config_url).map(|(addr, url)| ConfigEndpoint { addr, url }),
    })
    .await?;
    Ok(())
}
