//! `aegis`: the administrator's CLI (the Sentinel). Parsing and tracing here; logic in the library.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = aegis_cli::Cli::parse();
    aegis_cli::init_tracing(cli.verbose);
    match aegis_cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
