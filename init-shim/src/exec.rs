//! Becoming CMD: `PATH` lookup like a shell, then `execve` with the environment the
//! shim built. This is the crate's only `unsafe` code.
//!
//! Why not `execvp`: it searches the *shim's* `PATH` and passes the shim's environment
//! unless one uses the non-portable `execvpe`; doing the search here uses the
//! container's `PATH` and always passes the built `envp`.
//!
//! Lookup rules (POSIX `execvp`, as runc and shells do it): a CMD containing `/` is used
//! as is; otherwise each `PATH` entry is tried in order (an empty entry means the current
//! directory). `ENOENT`/`ENOTDIR` move on to the next entry; `EACCES` is remembered and
//! the search goes on; any other error stops it. There is no `/bin/sh` fallback for
//! `ENOEXEC`, matching container runtimes, which also `execve` directly.
//!
//! Invariants: on success nothing of the shim remains (the kernel replaces the image;
//! every fd the shim opened is close-on-exec, which Rust's std sets). CMD keeps the
//! shim's PID, so signals reach it directly. SIGPIPE is reset to its default first,
//! because Rust's runtime ignores it and ignored signals survive `execve`.
#![allow(unsafe_code)] // execve and signal are syscalls; each call has a SAFETY comment.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

/// `PATH` used when the container has none: the default of Docker, containerd and runc.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// CMD could not be executed. `execve` only returns with one of these.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No file by that name (exit 127).
    #[error("{cmd}: command not found ({where_})")]
    NotFound {
        /// CMD as given.
        cmd: String,
        /// Where it was looked for.
        where_: String,
    },
    /// Found but not executable: permissions, a directory, a bad format (exit 126).
    #[error("{path}: cannot execute: {source}")]
    NotExecutable {
        /// The file that was tried.
        path: String,
        /// The `execve` error.
        #[source]
        source: io::Error,
    },
    /// CMD or an argument contains a NUL byte (cannot come from a real argv; exit 126).
    #[error("CMD or an argument contains a NUL byte")]
    Nul,
}

/// The paths to try for `cmd`, in order, given the container's `PATH`. Pure.
pub fn candidates(cmd: &OsStr, path: Option<&OsStr>) -> Vec<PathBuf> {
    if cmd.is_empty() {
        return Vec::new();
    }
    if cmd.as_bytes().contains(&b'/') {
        return vec![PathBuf::from(cmd)];
    }
    let path = path.unwrap_or(OsStr::new(DEFAULT_PATH));
    path.as_bytes()
        .split(|&b| b == b':')
        .map(|dir| {
            // An empty entry is the current directory (POSIX); `./cmd` makes that explicit.
            let dir = if dir.is_empty() {
                OsStr::new(".")
            } else {
                OsStr::from_bytes(dir)
            };
            PathBuf::from(dir).join(cmd)
        })
        .collect()
}

/// Replaces this process with `cmd args...` and environment `envp`, searching
/// `path` (the container's `PATH`). Returns only on failure.
pub fn exec(cmd: &OsStr, args: &[OsString], envp: &[CString], path: Option<&OsStr>) -> ExecError {
    let mut argv = Vec::with_capacity(args.len() + 1);
    for arg in std::iter::once(cmd).chain(args.iter().map(OsString::as_os_str)) {
        match CString::new(arg.as_bytes()) {
            Ok(c) => argv.push(c),
            Err(_) => return ExecError::Nul,
        }
    }
    let argv_ptrs = null_terminated(&argv);
    let envp_ptrs = null_terminated(envp);
    reset_signals();

    let tried = candidates(cmd, path);
    let searched = !cmd.as_bytes().contains(&b'/');
    let mut denied: Option<(PathBuf, io::Error)> = None;
    for candidate in &tried {
        let Ok(file) = CString::new(candidate.clone().into_os_string().into_vec()) else {
            return ExecError::Nul;
        };
        // SAFETY: `file`, and every pointer in `argv_ptrs` and `envp_ptrs`, point to
        // NUL-terminated strings owned by `file`, `argv` and `envp`, which outlive this
        // call; both arrays end with a null pointer as execve(2) requires. execve only
        // returns on failure, leaving memory untouched.
        unsafe { libc::execve(file.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) if searched => continue,
            Some(libc::EACCES) if searched => {
                denied.get_or_insert((candidate.clone(), err));
            }
            Some(libc::ENOENT) => break,
            _ => return not_executable(candidate, err),
        }
    }
    match denied {
        Some((path, err)) => not_executable(&path, err),
        None => ExecError::NotFound {
            cmd: cmd.to_string_lossy().into_owned(),
            where_: if !searched {
                "no such file".into()
            } else if cmd.is_empty() {
                "empty command".into()
            } else {
                format!(
                    "searched PATH={}",
                    path.map_or(DEFAULT_PATH.into(), OsStr::to_string_lossy)
                )
            },
        },
    }
}

fn not_executable(path: &std::path::Path, source: io::Error) -> ExecError {
    ExecError::NotExecutable {
        path: path.display().to_string(),
        source,
    }
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Restores default dispositions the Rust runtime changed, so CMD starts as it would
/// under the container runtime.
fn reset_signals() {
    // SAFETY: signal(2) with SIG_DFL for SIGPIPE installs no handler and touches no
    // memory of ours; it is async-signal-safe and the shim is single-threaded here.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(v: Vec<PathBuf>) -> Vec<String> {
        v.into_iter().map(|p| p.display().to_string()).collect()
    }

    #[test]
    fn a_command_with_a_slash_is_used_as_is() {
        assert_eq!(
            paths(candidates(OsStr::new("./run"), Some(OsStr::new("/bin")))),
            ["./run"]
        );
        assert_eq!(
            paths(candidates(OsStr::new("/app/server"), None)),
            ["/app/server"]
        );
    }

    #[test]
    fn a_bare_name_is_searched_in_path_order_with_empty_meaning_cwd() {
        let got = candidates(
            OsStr::new("node"),
            Some(OsStr::new("/usr/local/bin::/usr/bin:")),
        );
        assert_eq!(
            paths(got),
            ["/usr/local/bin/node", "./node", "/usr/bin/node", "./node"]
        );
    }

    #[test]
    fn without_path_the_runtime_default_is_used() {
        let got = paths(candidates(OsStr::new("sh"), None));
        assert_eq!(got.first().map(String::as_str), Some("/usr/local/sbin/sh"));
        assert_eq!(got.last().map(String::as_str), Some("/bin/sh"));
    }

    #[test]
    fn an_empty_command_has_no_candidates() {
        assert!(candidates(OsStr::new(""), None).is_empty());
    }
}
