//! The Aegis init-shim: runs as the entrypoint of every injected container, fetches the
//! workload's secrets from the Safe over TLS, builds CMD's environment, and `execve`s
//! CMD so that nothing of the shim stays resident and CMD keeps the container's PID.
//!
//! It fails closed: CMD never starts without the secrets it was asked for. Every
//! failure ends the process with a distinct code ([`exit::Exit`]) and one log line. No
//! secret value or token is ever logged, at any level, or written to a file.
//!
//! Blocking I/O only, no async runtime, and a deliberately short dependency list:
//! the static binary has a 2 MiB budget (docs/init-shim.md).
//!
//! Modules, in the order a start goes through them: [`cli`], [`config`], [`tls`],
//! [`token`], [`fetch`] (using [`http`]), [`environment`], [`exec`]; [`install`] is the
//! other subcommand.

pub mod cli;
pub mod config;
pub mod environment;
pub mod exec;
pub mod exit;
pub mod fetch;
pub mod http;
pub mod install;
pub mod log;
pub mod tls;
pub mod token;

use crate::cli::Command;
use crate::config::{Config, EnvMap};
use crate::exit::Exit;
use crate::fetch::{Fetch, FetchError};
use crate::log::{Level, List, Logger};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;
use zeroize::Zeroize;

/// Runs the shim with `args` (without `argv[0]`) and the process environment `env`.
/// For `-- CMD`, returns only if CMD could not be started; the value is the exit code.
pub fn run(args: &[OsString], env: Vec<(OsString, OsString)>) -> i32 {
    let map: EnvMap = env.iter().cloned().collect();
    let log = Logger::new(config::log_level(&map));
    let outcome = match cli::parse(args) {
        Err(e) => Err((Exit::Usage, e.to_string())),
        Ok(Command::Help) => {
            print!("{}", cli::HELP);
            return 0;
        }
        Ok(Command::Version) => {
            println!("aegis-init-shim {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        Ok(Command::Install(dir)) => match install::install(Path::new(install::SELF_EXE), &dir) {
            Ok(target) => {
                log.log(Level::Info, "installed", &[("path", &target.display())]);
                return 0;
            }
            Err(e) => Err((Exit::Install, e.to_string())),
        },
        Ok(Command::Exec { cmd, args }) => start(&cmd, &args, env, &map, &log),
    };
    let (exit, reason) = match outcome {
        Ok(never) => match never {},
        Err(failure) => failure,
    };
    log.log(Level::Error, &reason, &[("exit", &exit.code())]);
    exit.code()
}

/// Fetches, builds the environment and execs CMD. Returns only on failure.
fn start(
    cmd: &OsStr,
    args: &[OsString],
    env: Vec<(OsString, OsString)>,
    map: &EnvMap,
    log: &Logger,
) -> Result<std::convert::Infallible, (Exit, String)> {
    let started = Instant::now();
    let config = Config::from_env(map).map_err(|e| (Exit::Config, e.to_string()))?;
    let (mut envp, path) = {
        let tls = tls::load_ca(&config.ca)
            .and_then(|cas| tls::client_config(&cas))
            .map_err(|e| (Exit::Config, e.to_string()))?;
        let token =
            token::Token::read(&config.token_file).map_err(|e| (Exit::Config, e.to_string()))?;
        let fetch = Fetch {
            tls,
            safe: &config.safe,
            token: &token,
            timeout: config.fetch_timeout,
            log,
        };
        let (response, attempts) = fetch.run().map_err(|e| (fetch_exit(&e), e.to_string()))?;
        let (envp, warnings) = environment::build_env(&env, &response.secrets).map_err(|e| {
            let exit = match e {
                environment::EnvError::MissingKeys(_) => Exit::MissingKey,
                _ => Exit::BadResponse,
            };
            (exit, e.to_string())
        })?;
        for w in &warnings {
            let environment::Warning::PodVariableWins { key } = w;
            log.log(Level::Warn, &w.to_string(), &[("key", key)]);
        }
        let keys: Vec<&str> = response.secrets.keys().map(String::as_str).collect();
        log.log(
            Level::Info,
            "secrets fetched; starting CMD",
            &[
                ("workload", &response.workload),
                ("revision", &response.revision),
                ("keys", &List(&keys)),
                ("attempts", &attempts),
                ("elapsed_ms", &started.elapsed().as_millis()),
                ("cmd", &cmd.to_string_lossy()),
            ],
        );
        // The container's PATH (first occurrence, as getenv would pick), not a secret's.
        let path = env
            .iter()
            .find(|(k, _)| k.as_bytes() == b"PATH")
            .map(|(_, v)| v.clone());
        (envp, path)
        // `response` (zeroizing secret values), `token` and every HTTP buffer drop here,
        // before exec; only `envp` still holds values.
    };
    drop(env);
    let err = exec::exec(cmd, args, &envp, path.as_deref());
    envp.iter_mut().for_each(Zeroize::zeroize);
    let exit = match err {
        exec::ExecError::NotFound { .. } => Exit::NotFound,
        _ => Exit::NotExecutable,
    };
    Err((exit, err.to_string()))
}

fn fetch_exit(e: &FetchError) -> Exit {
    match e {
        FetchError::Denied { .. } => Exit::Denied,
        FetchError::Unreachable { .. } => Exit::Unreachable,
        FetchError::Tls { .. } => Exit::Tls,
        FetchError::BadResponse { .. } => Exit::BadResponse,
    }
}
