//! Command-line interface of `aegis`. Every connection flag also reads an `AEGIS_*` variable,
//! with defaults that work inside the sentinel pod the Helm chart installs.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// In-cluster default: the chart's Safe Service in `aegis-system`.
pub const DEFAULT_SAFE_URL: &str = "https://aegis-safe.aegis-system.svc:8443";
/// Where the chart mounts the Safe's CA in the sentinel pod.
pub const DEFAULT_SAFE_CA_FILE: &str = "/etc/aegis/safe-ca/ca.crt";

/// aegis: store secrets for Kubernetes workloads and inject them at start-up.
#[derive(Debug, Parser)]
#[command(
    name = "aegis",
    version,
    about = "Aegis admin CLI (the Sentinel): manage secrets, inject manifests, run the local demo",
    after_help = "Examples:\n  aegis demo\n  printf %s \"$PASSWORD\" | aegis secret put demo/app DB_PASSWORD\n  aegis secret list demo/app\n  aegis inject -f deployment.yaml | kubectl apply -f -"
)]
pub struct Cli {
    /// More log output on stderr (-v, -vv). Never prints secret values.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach and authenticate to the Safe.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Base URL of the Safe.
    #[arg(long, global = true, env = "AEGIS_SAFE_URL", default_value = DEFAULT_SAFE_URL)]
    pub safe_url: String,
    /// PEM file with the CA that signed the Safe's certificate (the only CA trusted).
    #[arg(long, global = true, env = "AEGIS_SAFE_CA_FILE", default_value = DEFAULT_SAFE_CA_FILE)]
    pub safe_ca_file: PathBuf,
    /// File holding the ServiceAccount token presented to the Safe (an admin's, for `secret`).
    #[arg(long, global = true, env = "AEGIS_TOKEN_FILE", default_value = aegis_core::names::TOKEN_PATH)]
    pub token_file: PathBuf,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store, list and delete secrets (admin).
    Secret(SecretArgs),
    /// Add the init-shim to pod templates in manifests, exactly as the webhook would.
    Inject(InjectArgs),
    /// Run the whole path locally, with no cluster: Safe, webhook, init-shim, app.
    Demo(DemoArgs),
    /// Print the version.
    Version,
    /// Print shell completions.
    #[command(after_help = "Example:\n  aegis completions bash > /etc/bash_completion.d/aegis")]
    Completions {
        /// Shell to generate completions for.
        shell: clap_complete::Shell,
    },
    /// Wait until terminated (the sentinel container's main process; the image has no shell).
    Idle,
}

/// `aegis secret ...`: connection flags, then the action.
#[derive(Debug, Args)]
pub struct SecretArgs {
    /// Connection to the Safe.
    #[command(flatten)]
    pub connection: Connection,
    /// What to do.
    #[command(subcommand)]
    pub action: SecretCommand,
}

/// The secret actions.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a value for a workload's key. The value comes from stdin, a prompt, or a file.
    #[command(
        after_help = "Examples:\n  aegis secret put demo/app DB_PASSWORD            # prompts, no echo\n  printf %s \"$PW\" | aegis secret put demo/app DB_PASSWORD\n  aegis secret put demo/app TLS_KEY --from-file key.pem"
    )]
    Put {
        /// Workload as NAMESPACE/SERVICEACCOUNT.
        workload: String,
        /// Key (an environment variable name).
        key: String,
        /// Read the value from this file, byte for byte.
        #[arg(long, value_name = "FILE", conflicts_with = "value")]
        from_file: Option<PathBuf>,
        /// The value itself. Leaks into shell history and process listings: prefer stdin.
        #[arg(long)]
        value: Option<String>,
    },
    /// List workloads, keys and fingerprints (never values).
    #[command(after_help = "Examples:\n  aegis secret list\n  aegis secret list demo/app -o json")]
    List {
        /// Only this workload (NAMESPACE/SERVICEACCOUNT).
        workload: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Delete a workload's key.
    #[command(after_help = "Example:\n  aegis secret delete demo/app DB_PASSWORD")]
    Delete {
        /// Workload as NAMESPACE/SERVICEACCOUNT.
        workload: String,
        /// Key.
        key: String,
    },
}

/// Output format of listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A human-readable table.
    Table,
    /// JSON, as the Safe's API returns it.
    Json,
}

/// `aegis inject`
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  aegis inject -f deploy.yaml --safe-ca-file ca.crt | kubectl apply -f -\n  kubectl get deploy web -o yaml | aegis inject -f - --annotate"
)]
pub struct InjectArgs {
    /// Manifest file (YAML or JSON, one or many documents); `-` for stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// Also opt every pod template in (add `aegis.shieldworks.io/inject: "true"`).
    /// Without it, only templates that already carry the annotation are changed, as with the webhook.
    #[arg(long)]
    pub annotate: bool,
    /// Output format; defaults to the input's (YAML unless the input is JSON).
    #[arg(short, long, value_enum)]
    pub output: Option<ManifestFormat>,
    /// Image of the init-shim.
    #[arg(long, env = "AEGIS_SHIM_IMAGE", default_value = concat!("ghcr.io/shieldworks/aegis-init-shim:", env!("CARGO_PKG_VERSION")))]
    pub shim_image: String,
    /// Safe URL the injected containers use.
    #[arg(long = "safe-url", env = "AEGIS_SAFE_URL", default_value = DEFAULT_SAFE_URL)]
    pub safe_url: String,
    /// The Safe's CA certificate (PEM) written into the injected containers.
    #[arg(long = "safe-ca-file", env = "AEGIS_SAFE_CA_FILE", default_value = DEFAULT_SAFE_CA_FILE)]
    pub safe_ca_file: PathBuf,
    /// Audience of the projected token.
    #[arg(long, env = "AEGIS_TOKEN_AUDIENCE", default_value = aegis_core::names::DEFAULT_AUDIENCE)]
    pub token_audience: String,
    /// Namespace for documents that name none (used for registry pull secrets).
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
}

/// Manifest output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ManifestFormat {
    /// YAML documents separated by `---`.
    Yaml,
    /// JSON (one document, or a `v1/List` for several).
    Json,
}

/// `aegis demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The init-shim binary (default: `aegis-init-shim` next to this executable).
    #[arg(long, env = "AEGIS_SHIM_BIN")]
    pub shim_bin: Option<PathBuf>,
    /// Keep the temporary directory for inspection instead of removing it.
    #[arg(long)]
    pub keep: bool,
}
