//! `aegis-safe`: parse the command line, set up logging, run the library.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = aegis_safe::cli::Cli::parse();
    aegis_safe::cli::init_tracing(&cli);
    aegis_safe::cli::run(cli)?;
    Ok(())
}
