//! The command line. The shim has exactly two shapes, `install DIR` and
//! `-- CMD [ARGS...]`, and everything after `--` must reach CMD byte for byte (it is the
//! container's original entrypoint), so this is a small hand parser over `OsString`
//! rather than a general argument parser: nothing after `--` is ever interpreted.
//! Configuration comes from `AEGIS_*` variables only (see [`crate::config`]).

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// What the shim was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Copy the shim's own executable into this directory.
    Install(PathBuf),
    /// Fetch secrets, then become CMD.
    Exec {
        /// CMD as written (a path, or a name looked up in `PATH`); also CMD's `argv[0]`.
        cmd: OsString,
        /// The remaining arguments, unchanged.
        args: Vec<OsString>,
    },
    /// Print [`HELP`].
    Help,
    /// Print the version.
    Version,
}

/// The command line did not match either shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// No arguments at all.
    #[error("missing command: use `aegis-init-shim -- CMD [ARGS...]` or `aegis-init-shim install DIR` (see --help)")]
    Empty,
    /// `--` with nothing after it.
    #[error("missing CMD after `--`: use `aegis-init-shim -- CMD [ARGS...]`")]
    MissingCmd,
    /// `install` without exactly one directory.
    #[error("`install` takes exactly one directory: `aegis-init-shim install DIR`")]
    InstallArgs,
    /// Anything else.
    #[error("unexpected argument {0:?}: put the entrypoint after `--`, e.g. `aegis-init-shim -- /app/server --port 8080` (see --help)")]
    Unexpected(String),
}

/// `--help` text.
pub const HELP: &str = "\
aegis-init-shim: fetch this workload's secrets from the Aegis Safe, then execve CMD.

USAGE:
    aegis-init-shim -- CMD [ARGS...]    fetch secrets, then replace this process with CMD
    aegis-init-shim install DIR         copy this executable to DIR/aegis-init-shim (mode 0555)
    aegis-init-shim --help | --version

CONFIGURATION (environment; every AEGIS_* variable is removed before CMD starts):
    AEGIS_SAFE_URL        https URL of the Safe, e.g. https://aegis-safe.aegis-system.svc:8443 (required)
    AEGIS_SAFE_CA         the Safe's CA certificate(s), PEM (this or AEGIS_SAFE_CA_FILE is required)
    AEGIS_SAFE_CA_FILE    path of a PEM file holding the Safe's CA certificate(s)
    AEGIS_TOKEN_FILE      projected ServiceAccount token [default: /var/run/secrets/aegis/token]
    AEGIS_FETCH_TIMEOUT   give up after this long, e.g. 30s, 2m [default: 60s]
    AEGIS_LOG             error, warn, info or debug [default: warn]; values are never logged

CMD's ENVIRONMENT:
    the container's environment minus AEGIS_*, plus every secret of the workload under
    its own name. A variable whose value is exactly `aegis:KEY` gets the secret KEY; a
    missing KEY is an error. A pod variable wins over a same-named secret (with a warning).

EXIT CODES (only when CMD did not start):
    64 usage  65 missing referenced key  69 Safe unreachable by the deadline
    73 install failed  76 bad response from the Safe  77 denied (401/403)
    78 configuration  79 TLS handshake failed (wrong CA or name)
    126 CMD not executable  127 CMD not found
";

/// Parses the arguments after `argv[0]`.
pub fn parse(args: &[OsString]) -> Result<Command, UsageError> {
    let Some(first) = args.first() else {
        return Err(UsageError::Empty);
    };
    let rest = &args[1..];
    match first.as_os_str() {
        f if f == OsStr::new("--") => match rest.split_first() {
            Some((cmd, args)) => Ok(Command::Exec {
                cmd: cmd.clone(),
                args: args.to_vec(),
            }),
            None => Err(UsageError::MissingCmd),
        },
        f if f == OsStr::new("install") => match rest {
            [dir] => Ok(Command::Install(PathBuf::from(dir))),
            _ => Err(UsageError::InstallArgs),
        },
        f if (f == OsStr::new("--help") || f == OsStr::new("-h")) && rest.is_empty() => {
            Ok(Command::Help)
        }
        f if (f == OsStr::new("--version") || f == OsStr::new("-V")) && rest.is_empty() => {
            Ok(Command::Version)
        }
        other => Err(UsageError::Unexpected(other.to_string_lossy().into_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn everything_after_double_dash_is_cmd_and_args_untouched() {
        let got = parse(&os(&["--", "/bin/sh", "-c", "--help", "", "--", "a b"])).unwrap();
        assert_eq!(
            got,
            Command::Exec {
                cmd: "/bin/sh".into(),
                args: os(&["-c", "--help", "", "--", "a b"])
            }
        );
    }

    #[test]
    fn non_utf8_arguments_pass_through() {
        use std::os::unix::ffi::OsStringExt;
        let raw = OsString::from_vec(vec![0xff, b'x', 0xfe]);
        let got = parse(&[OsString::from("--"), "cmd".into(), raw.clone()]).unwrap();
        assert_eq!(
            got,
            Command::Exec {
                cmd: "cmd".into(),
                args: vec![raw]
            }
        );
    }

    #[test]
    fn install_takes_one_directory() {
        assert_eq!(
            parse(&os(&["install", "/aegis/bin"])),
            Ok(Command::Install("/aegis/bin".into()))
        );
        assert_eq!(parse(&os(&["install"])), Err(UsageError::InstallArgs));
        assert_eq!(
            parse(&os(&["install", "a", "b"])),
            Err(UsageError::InstallArgs)
        );
    }

    #[test]
    fn rejects_missing_or_unmarked_commands() {
        assert_eq!(parse(&[]), Err(UsageError::Empty));
        assert_eq!(parse(&os(&["--"])), Err(UsageError::MissingCmd));
        assert!(matches!(
            parse(&os(&["/app/server"])),
            Err(UsageError::Unexpected(_))
        ));
        assert!(matches!(
            parse(&os(&["--help", "x"])),
            Err(UsageError::Unexpected(_))
        ));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&os(&["--help"])), Ok(Command::Help));
        assert_eq!(parse(&os(&["-h"])), Ok(Command::Help));
        assert_eq!(parse(&os(&["--version"])), Ok(Command::Version));
    }
}
