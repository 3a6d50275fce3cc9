//! The `aegis` CLI: the administrator's tool (the Sentinel) and a newcomer's first contact.
//!
//! - `secret put|list|delete` talk to the Safe's admin API ([`client`]);
//! - `inject` runs manifests through the webhook's own mutation code ([`inject`]);
//! - `demo` runs the whole path on one machine with no cluster ([`demo`]).
//!
//! Values never reach a log line, an error message or a file written by the CLI.

pub mod args;
pub mod client;
pub mod demo;
pub mod error;
pub mod inject;
pub mod secret;

pub use args::{Cli, Command};
pub use error::CliError;

use std::process::ExitCode;

/// Sets up `tracing` on stderr: `warn` by default, more with `-v`.
pub fn init_tracing(verbose: u8) {
    let filter = match verbose {
        0 => "warn",
        1 => "warn,aegis=info,aegis_cli=info",
        _ => "info,aegis=debug,aegis_cli=debug",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AEGIS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Version => {
            println!("aegis {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "aegis", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Idle => idle(),
        Command::Secret(args) => runtime()?.block_on(secret::run(args)),
        Command::Inject(cmd) => runtime()?.block_on(inject::run(cmd)),
        Command::Demo(cmd) => demo::run(cmd),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::io("starting the async runtime", e))
}

/// Keeps the sentinel container running (its image has no shell) until SIGTERM/SIGINT.
fn idle() -> Result<ExitCode, CliError> {
    eprintln!("aegis sentinel idle; use `kubectl exec ... -- aegis secret ...`");
    runtime()?.block_on(aegis_net::shutdown_signal());
    Ok(ExitCode::SUCCESS)
}
