//! Command line of `aegis-safe`: `serve` (production), `dev` (local mode) and `dev-token`.
//! Every flag can also be set as an `AEGIS_*` environment variable.

use crate::dev::{dev_config, issue_token, url_for};
use crate::rootkey::RootKeySource;
use crate::server::{AuthConfig, Config, JwksSource, DEFAULT_JOURNAL_ROTATE_BYTES};
use crate::SafeError;
use aegis_core::{parse_duration, Limits, Workload};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The Aegis Safe: in-memory secret store with verified workload identity and encrypted,
/// durable persistence.
#[derive(Debug, Parser)]
#[command(name = "aegis-safe", version, about, long_about = None)]
pub struct Cli {
    /// Log output format.
    #[arg(long, env = "AEGIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax). Audit events use the target `aegis::audit`.
    #[arg(
        long,
        env = "AEGIS_LOG",
        default_value = "warn,aegis=info",
        global = true
    )]
    pub log: String,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // Parsed once at start-up; boxing buys nothing.
pub enum Command {
    /// Run the Safe (the production entrypoint used by the Helm chart).
    Serve(ServeArgs),
    /// Run a local Safe with generated root key, TLS certificates and token issuer in DIR.
    Dev(DevArgs),
    /// Print a token signed by the dev issuer of DIR (same claims as a projected token).
    DevToken(DevTokenArgs),
}

/// Token verification modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenAuth {
    /// Verify signatures locally against a JWKS (file, URL, or the issuer's discovery).
    Jwks,
    /// Ask the Kubernetes API server (TokenReview).
    Tokenreview,
}

/// `aegis-safe serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HTTPS address of the API.
    #[arg(long, env = "AEGIS_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain-HTTP address of /metrics, /healthz and /readyz.
    #[arg(long, env = "AEGIS_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Directory of the encrypted journal and snapshots (a PersistentVolume in a cluster).
    #[arg(long, env = "AEGIS_DATA_DIR", default_value = "/var/lib/aegis")]
    pub data_dir: PathBuf,
    /// PEM certificate chain served by the API.
    #[arg(long, env = "AEGIS_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key of the certificate.
    #[arg(long, env = "AEGIS_TLS_KEY")]
    pub tls_key: PathBuf,
    /// Root key file: 32 raw bytes or their base64 (local use).
    #[arg(
        long,
        env = "AEGIS_ROOT_KEY_FILE",
        conflicts_with = "root_key_secret",
        required_unless_present = "root_key_secret"
    )]
    pub root_key_file: Option<PathBuf>,
    /// Name of the Kubernetes Secret holding the root key (data key `root-key`); created with a
    /// random key on first boot if absent, never overwritten.
    #[arg(long, env = "AEGIS_ROOT_KEY_SECRET", value_name = "NAME")]
    pub root_key_secret: Option<String>,
    /// Namespace of the root key Secret (default: the Safe's own namespace).
    #[arg(long, env = "AEGIS_NAMESPACE")]
    pub namespace: Option<String>,
    /// How workload tokens are verified.
    #[arg(long, env = "AEGIS_TOKEN_AUTH", value_enum, default_value_t = TokenAuth::Tokenreview)]
    pub token_auth: TokenAuth,
    /// jwks mode: JWKS file (e.g. from `kubectl get --raw /openid/v1/jwks`).
    #[arg(long, env = "AEGIS_JWKS_FILE", conflicts_with = "jwks_url")]
    pub jwks_file: Option<PathBuf>,
    /// jwks mode: URL of the JWKS (default: OIDC discovery from --issuer).
    #[arg(long, env = "AEGIS_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// jwks mode: PEM CA certificate(s) for fetching the JWKS or discovery document
    /// (default: the in-cluster CA when present, else the public web roots).
    #[arg(long, env = "AEGIS_JWKS_CA_FILE")]
    pub jwks_ca_file: Option<PathBuf>,
    /// Expected token issuer (`iss`), the cluster's --service-account-issuer.
    #[arg(
        long,
        env = "AEGIS_ISSUER",
        default_value = "https://kubernetes.default.svc.cluster.local"
    )]
    pub issuer: String,
    /// Expected token audience.
    #[arg(long, env = "AEGIS_AUDIENCE", default_value = aegis_core::names::DEFAULT_AUDIENCE)]
    pub audience: String,
    /// Administrator ServiceAccount NS/SA (repeatable; the environment variable takes a
    /// comma-separated list). Admins write, delete and list; they never read values.
    #[arg(long = "admin", env = "AEGIS_ADMIN", value_name = "NS/SA", value_delimiter = ',', default_value = aegis_core::names::DEFAULT_ADMIN)]
    pub admins: Vec<Workload>,
    /// tokenreview mode: how long a positive review is cached (never beyond the token's exp).
    #[arg(long, env = "AEGIS_TOKEN_REVIEW_CACHE_TTL", default_value = "2m", value_parser = parse_duration)]
    pub token_review_cache_ttl: Duration,
    /// Write a snapshot and start a new journal once the journal reaches this many bytes.
    #[arg(long, env = "AEGIS_JOURNAL_ROTATE_BYTES", default_value_t = DEFAULT_JOURNAL_ROTATE_BYTES)]
    pub journal_rotate_bytes: u64,
}

/// `aegis-safe dev`
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory for the generated material and the data (created if missing).
    #[arg(long, env = "AEGIS_DEV_DIR")]
    pub dir: PathBuf,
    /// HTTPS address of the API.
    #[arg(long, env = "AEGIS_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Plain-HTTP address of /metrics, /healthz and /readyz (port 0: any free port).
    #[arg(long, env = "AEGIS_METRICS_LISTEN", default_value = "127.0.0.1:0")]
    pub metrics_listen: SocketAddr,
    /// Write a snapshot and start a new journal once the journal reaches this many bytes.
    #[arg(long, env = "AEGIS_JOURNAL_ROTATE_BYTES", default_value_t = DEFAULT_JOURNAL_ROTATE_BYTES)]
    pub journal_rotate_bytes: u64,
}

/// `aegis-safe dev-token`
#[derive(Debug, Args)]
pub struct DevTokenArgs {
    /// The dev directory (its issuer key is created if missing).
    #[arg(long, env = "AEGIS_DEV_DIR")]
    pub dir: PathBuf,
    /// Namespace of the ServiceAccount.
    #[arg(long, env = "AEGIS_TOKEN_NAMESPACE")]
    pub namespace: String,
    /// Name of the ServiceAccount.
    #[arg(long, env = "AEGIS_TOKEN_SERVICE_ACCOUNT")]
    pub service_account: String,
    /// Audience of the token.
    #[arg(long, env = "AEGIS_AUDIENCE", default_value = aegis_core::names::DEFAULT_AUDIENCE)]
    pub audience: String,
    /// Lifetime in seconds.
    #[arg(long, env = "AEGIS_TOKEN_TTL", default_value_t = 600)]
    pub ttl: u64,
}

/// CA of the in-cluster API server, trusted for discovery by default.
const IN_CLUSTER_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

impl ServeArgs {
    fn jwks_ca_file(&self) -> Option<PathBuf> {
        self.jwks_ca_file.clone().or_else(|| {
            let p = PathBuf::from(IN_CLUSTER_CA);
            p.exists().then_some(p)
        })
    }

    /// The typed configuration.
    pub fn to_config(&self) -> Result<Config, SafeError> {
        let root_key = match (&self.root_key_file, &self.root_key_secret) {
            (Some(f), None) => RootKeySource::File(f.clone()),
            (None, Some(name)) => RootKeySource::Secret {
                name: name.clone(),
                namespace: self.namespace.clone(),
            },
            _ => {
                return Err(SafeError::Config(
                    "set exactly one of --root-key-file and --root-key-secret".into(),
                ))
            }
        };
        let auth = match self.token_auth {
            TokenAuth::Jwks => AuthConfig::Jwks {
                source: match (&self.jwks_file, &self.jwks_url) {
                    (Some(f), _) => JwksSource::File(f.clone()),
                    (None, Some(url)) => JwksSource::Url {
                        url: url.clone(),
                        ca_file: self.jwks_ca_file(),
                    },
                    (None, None) => JwksSource::Discovery {
                        ca_file: self.jwks_ca_file(),
                    },
                },
                issuer: self.issuer.clone(),
                audience: self.audience.clone(),
            },
            TokenAuth::Tokenreview => AuthConfig::TokenReview {
                audience: self.audience.clone(),
                cache_ttl: self.token_review_cache_ttl,
            },
        };
        if self.admins.is_empty() {
            return Err(SafeError::Config(
                "at least one --admin NS/SA is required".into(),
            ));
        }
        Ok(Config {
            listen: self.listen,
            metrics_listen: self.metrics_listen,
            data_dir: self.data_dir.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            root_key,
            auth,
            admins: self.admins.clone(),
            limits: Limits::default(),
            journal_rotate_bytes: self.journal_rotate_bytes,
        })
    }
}

/// Installs the tracing subscriber (stderr; stdout is kept for `dev` and `dev-token` output).
pub fn init_tracing(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,aegis=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cli.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Runs the parsed command line to completion.
pub fn run(cli: Cli) -> Result<(), SafeError> {
    match cli.command {
        Command::DevToken(a) => {
            let token = issue_token(
                &a.dir,
                &a.namespace,
                &a.service_account,
                &a.audience,
                Duration::from_secs(a.ttl),
            )?;
            println!("{token}");
            Ok(())
        }
        Command::Serve(a) => {
            let config = a.to_config()?;
            crate::hardening::harden_process();
            runtime()?.block_on(crate::server::serve(config, aegis_net::shutdown_signal()))
        }
        Command::Dev(a) => {
            let (mut config, _ca) = dev_config(&a.dir, a.listen, a.metrics_listen)?;
            config.journal_rotate_bytes = a.journal_rotate_bytes;
            crate::hardening::harden_process();
            let ca_file = a.dir.join("ca.crt");
            runtime()?.block_on(crate::server::serve_notify(config, aegis_net::shutdown_signal(), |l| {
                // Machine-readable lines on stdout (a shell can `eval` them); the log is on stderr.
                println!("AEGIS_SAFE_URL={}", url_for(l.api));
                println!("AEGIS_SAFE_CA_FILE={}", ca_file.display());
                println!("AEGIS_METRICS_URL=http://{}", l.metrics);
                tracing::info!(url = %url_for(l.api), ca = %ca_file.display(), "dev Safe ready");
            }))
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, SafeError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| SafeError::Internal(format!("tokio runtime: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: [&str; 6] = ["aegis-safe", "serve", "--tls-cert", "c", "--tls-key", "k"];

    fn parse(extra: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(BASE.iter().chain(extra)).map_err(|e| e.to_string())?;
        let Command::Serve(a) = cli.command else {
            return Err("not serve".into());
        };
        a.to_config().map_err(|e| e.to_string())
    }

    #[test]
    fn serve_flags_build_the_config() {
        let c = parse(&[
            "--root-key-secret",
            "aegis-root",
            "--token-auth",
            "jwks",
            "--jwks-file",
            "j.json",
            "--admin",
            "a/b",
            "--admin",
            "c/d",
        ])
        .unwrap();
        assert_eq!(c.admins.len(), 2);
        let secret = RootKeySource::Secret {
            name: "aegis-root".into(),
            namespace: None,
        };
        assert_eq!(c.root_key, secret);
        assert!(matches!(
            c.auth,
            AuthConfig::Jwks {
                source: JwksSource::File(_),
                ..
            }
        ));
    }

    #[test]
    fn root_key_sources_are_exclusive_and_required() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--root-key-file", "f", "--root-key-secret", "s"]).is_err());
    }

    #[test]
    fn admin_must_be_namespace_slash_service_account() {
        assert!(parse(&["--root-key-file", "f", "--admin", "nope"]).is_err());
    }

    #[test]
    fn jwks_without_a_file_uses_the_url_or_discovery() {
        let c = parse(&["--root-key-file", "f", "--token-auth", "jwks"]).unwrap();
        assert!(matches!(
            c.auth,
            AuthConfig::Jwks {
                source: JwksSource::Discovery { .. },
                ..
            }
        ));
        let url = [
            "--root-key-file",
            "f",
            "--token-auth",
            "jwks",
            "--jwks-url",
            "https://x/jwks",
        ];
        let c = parse(&url).unwrap();
        assert!(matches!(
            c.auth,
            AuthConfig::Jwks {
                source: JwksSource::Url { .. },
                ..
            }
        ));
    }

    #[test]
    fn defaults_are_tokenreview_and_the_default_admin() {
        let c = parse(&["--root-key-file", "f"]).unwrap();
        assert_eq!(
            c.admins,
            vec!["aegis-system/aegis-sentinel".parse::<Workload>().unwrap()]
        );
        assert!(matches!(c.auth, AuthConfig::TokenReview { .. }));
        assert_eq!(c.listen.port(), 8443);
    }
}
