//! The webhook's configuration: typed flags, each also read from an `AEGIS_*` variable.
//!
//! This is the operator's (and the Helm chart's) interface; flag names are stable. Tests
//! build [`Config`] directly with [`Config::new`] and adjust fields.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Command line of `aegis-webhook`.
#[derive(Debug, Parser)]
#[command(
    name = "aegis-webhook",
    version,
    about = "Aegis mutating admission webhook: wraps the containers of annotated pods with the \
             init-shim, so they receive their secrets from the Safe at start-up."
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve POST /mutate over HTTPS (and /metrics, /healthz, /readyz over plain HTTP).
    Serve(Config),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Configuration of `aegis-webhook serve`.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address of the HTTPS admission endpoint.
    #[arg(long, env = "AEGIS_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// PEM certificate chain of the webhook (reloaded when the file changes).
    #[arg(long, env = "AEGIS_TLS_CERT", default_value = "/etc/aegis/tls/tls.crt")]
    pub tls_cert: PathBuf,

    /// PEM private key of the webhook (reloaded when the file changes).
    #[arg(long, env = "AEGIS_TLS_KEY", default_value = "/etc/aegis/tls/tls.key")]
    pub tls_key: PathBuf,

    /// How often the certificate and key files are checked for changes, e.g. `10s`.
    #[arg(long, env = "AEGIS_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,

    /// Address of the plain-HTTP /metrics, /healthz and /readyz listener; `off` disables it.
    #[arg(long, env = "AEGIS_METRICS_LISTEN", default_value = "0.0.0.0:9090", value_parser = parse_optional_addr)]
    pub metrics_listen: OptionalAddr,

    /// Base URL of the Safe that injected containers fetch from (AEGIS_SAFE_URL in pods).
    #[arg(long, env = "AEGIS_SAFE_URL")]
    pub safe_url: String,

    /// PEM file of the CA that signs the Safe's certificate; its content is given to
    /// injected containers inline (AEGIS_SAFE_CA).
    #[arg(long, env = "AEGIS_SAFE_CA_FILE")]
    pub safe_ca_file: PathBuf,

    /// Image of the init-shim (built FROM scratch with the binary at /aegis-init-shim).
    #[arg(long, env = "AEGIS_SHIM_IMAGE")]
    pub shim_image: String,

    /// imagePullPolicy of the injected init container.
    #[arg(
        long,
        env = "AEGIS_SHIM_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    pub shim_image_pull_policy: String,

    /// Audience of the projected ServiceAccount token (must match the Safe's).
    #[arg(long, env = "AEGIS_TOKEN_AUDIENCE", default_value = aegis_core::names::DEFAULT_AUDIENCE)]
    pub token_audience: String,

    /// Lifetime of the projected token in seconds (Kubernetes minimum 600).
    #[arg(long, env = "AEGIS_TOKEN_EXPIRATION_SECONDS", default_value_t = aegis_core::names::DEFAULT_TOKEN_EXPIRATION_SECONDS,
          value_parser = clap::value_parser!(i64).range(600..))]
    pub token_expiration_seconds: i64,

    /// sizeLimit of the memory-backed volume that holds the shim.
    #[arg(long, env = "AEGIS_BIN_VOLUME_SIZE", default_value = "8Mi")]
    pub bin_volume_size: String,

    /// Deadline for all registry lookups of one pod; keep it well under the webhook
    /// timeout of the MutatingWebhookConfiguration (10s in the chart).
    #[arg(long, env = "AEGIS_REGISTRY_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub registry_timeout: Duration,

    /// Registry (HOST:PORT, as written in image references) to reach over plain HTTP.
    /// Repeat or comma-separate. Only for local test registries.
    #[arg(long, env = "AEGIS_INSECURE_REGISTRY", value_delimiter = ',')]
    pub insecure_registry: Vec<String>,

    /// Extra PEM CA bundle trusted for registries (besides the system roots).
    #[arg(long, env = "AEGIS_REGISTRY_CA_FILE")]
    pub registry_ca_file: Option<PathBuf>,

    /// Read pods' imagePullSecrets through the Kubernetes API to look up private images
    /// (needs RBAC `get` on `secrets`; see docs/webhook.md).
    #[arg(long, env = "AEGIS_PULL_SECRETS", default_value_t = false)]
    pub pull_secrets: bool,

    /// Maximum number of cached image entrypoints (keyed by manifest digest).
    #[arg(long, env = "AEGIS_ENTRYPOINT_CACHE_SIZE", default_value_t = 1024)]
    pub entrypoint_cache_size: usize,

    /// Lifetime of a cached image entrypoint.
    #[arg(long, env = "AEGIS_ENTRYPOINT_CACHE_TTL", default_value = "1h", value_parser = parse_duration)]
    pub entrypoint_cache_ttl: Duration,

    /// Lifetime of a cached tag → digest resolution (tags can move).
    #[arg(long, env = "AEGIS_REFERENCE_CACHE_TTL", default_value = "60s", value_parser = parse_duration)]
    pub reference_cache_ttl: Duration,

    /// Log format.
    #[arg(long, env = "AEGIS_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "AEGIS_LOG_FILTER", default_value = "warn,aegis=info")]
    pub log_filter: String,
}

impl Config {
    /// The defaults of every flag, with the four values that have none.
    pub fn new(
        tls_cert: PathBuf,
        tls_key: PathBuf,
        safe_url: impl Into<String>,
        safe_ca_file: PathBuf,
        shim_image: impl Into<String>,
    ) -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            tls_cert,
            tls_key,
            tls_reload_interval: Duration::from_secs(10),
            metrics_listen: OptionalAddr(None),
            safe_url: safe_url.into(),
            safe_ca_file,
            shim_image: shim_image.into(),
            shim_image_pull_policy: "IfNotPresent".to_owned(),
            token_audience: aegis_core::names::DEFAULT_AUDIENCE.to_owned(),
            token_expiration_seconds: aegis_core::names::DEFAULT_TOKEN_EXPIRATION_SECONDS,
            bin_volume_size: "8Mi".to_owned(),
            registry_timeout: Duration::from_secs(3),
            insecure_registry: Vec::new(),
            registry_ca_file: None,
            pull_secrets: false,
            entrypoint_cache_size: 1024,
            entrypoint_cache_ttl: Duration::from_secs(3600),
            reference_cache_ttl: Duration::from_secs(60),
            log_format: LogFormat::Text,
            log_filter: "warn,aegis=info".to_owned(),
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    aegis_core::parse_duration(s).map_err(|e| e.to_string())
}

/// A listen address that can be turned off (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

fn parse_optional_addr(s: &str) -> Result<OptionalAddr, String> {
    if s == "off" {
        return Ok(OptionalAddr(None));
    }
    s.parse::<SocketAddr>()
        .map(|a| OptionalAddr(Some(a)))
        .map_err(|e| format!("{e} (expected HOST:PORT or `off`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_with_defaults() {
        let cli = Cli::try_parse_from([
            "aegis-webhook",
            "serve",
            "--safe-url",
            "https://safe:8443",
            "--safe-ca-file",
            "/ca.pem",
            "--shim-image",
            "shim:1",
            "--insecure-registry",
            "127.0.0.1:5000,localhost:5001",
            "--registry-timeout",
            "2s",
        ])
        .expect("valid flags");
        let Command::Serve(config) = cli.command;
        assert_eq!(
            config.insecure_registry,
            ["127.0.0.1:5000", "localhost:5001"]
        );
        assert_eq!(config.registry_timeout, Duration::from_secs(2));
        assert_eq!(config.token_audience, "aegis-safe");
        assert_eq!(
            config.metrics_listen,
            OptionalAddr(Some(SocketAddr::from(([0, 0, 0, 0], 9090))))
        );
    }

    #[test]
    fn token_expiration_below_the_kubernetes_minimum_is_rejected() {
        let parsed = Cli::try_parse_from([
            "aegis-webhook",
            "serve",
            "--safe-url",
            "u",
            "--safe-ca-file",
            "c",
            "--shim-image",
            "i",
            "--token-expiration-seconds",
            "60",
        ]);
        assert!(parsed.is_err());
    }
}
