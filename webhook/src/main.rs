//! `aegis-webhook serve`: parse flags, set up logging, serve until SIGTERM/SIGINT.

use anyhow::Context as _;
use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let aegis_webhook::Command::Serve(config) = aegis_webhook::Cli::parse().command;
    aegis_webhook::init_tracing(config.log_format, &config.log_filter)
        .map_err(anyhow::Error::msg)
        .context("invalid --log-filter")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    aegis_webhook::serve(config, listener, aegis_webhook::shutdown_signal()).await?;
    Ok(())
}
