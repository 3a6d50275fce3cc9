//! Finding and running the external tools and workspace binaries that the
//! cross-component tests drive (helm, kubernetes-validate, umoci, the `aegis-*` binaries).
//!
//! Invariant: a missing tool or unbuilt binary is an error that names it and says how to
//! get it. Tests never skip silently because something is not installed: CI installs
//! every tool, and a green run must mean the checks really ran.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Why a tool or binary could not be found or run.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// An external program is not installed where the tests look for it.
    #[error("`{tool}` not found on PATH{extra}: {hint}")]
    Missing {
        /// Program name.
        tool: String,
        /// Other places searched, already formatted.
        extra: String,
        /// How to install it.
        hint: String,
    },
    /// A binary of this workspace has not been built next to the test executable.
    #[error(
        "workspace binary `{name}` not found at {path}: run `cargo build --workspace --bins` first"
    )]
    BinaryNotBuilt {
        /// Binary name.
        name: String,
        /// Where it was expected.
        path: PathBuf,
    },
    /// The test executable's own location is unknown, so the target dir cannot be found.
    #[error("cannot locate the test executable")]
    CurrentExe(#[source] std::io::Error),
    /// A program could not be started.
    #[error("cannot run `{program}`")]
    Spawn {
        /// Program path.
        program: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A program exited unsuccessfully.
    #[error("`{command}` failed ({status}):\n{stderr}{stdout}")]
    Failed {
        /// Command line, for the message.
        command: String,
        /// Exit status.
        status: ExitStatus,
        /// Captured standard error.
        stderr: String,
        /// Captured standard output (often where helm and validators explain).
        stdout: String,
    },
}

/// Root of the repository (the workspace), from this crate's manifest directory.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Searches `path_var` (a `PATH`-style list) for an executable called `name`.
pub fn find_on_path(name: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    let path_var = path_var?;
    std::env::split_paths(path_var)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Finds an external tool: first `$REPO/.tools/bin` (where the install scripts put
/// them), then `path_var`. `hint` says how to install it when it is missing.
pub fn find_tool(name: &str, hint: &str, path_var: Option<&OsStr>) -> Result<PathBuf, ToolError> {
    let local = repo_root().join(".tools/bin").join(name);
    if is_executable(&local) {
        return Ok(local);
    }
    find_on_path(name, path_var).ok_or_else(|| ToolError::Missing {
        tool: name.to_string(),
        extra: format!(" nor at {}", local.display()),
        hint: hint.to_string(),
    })
}

/// The process's `PATH`, for [`find_tool`].
pub fn process_path() -> Option<OsString> {
    std::env::var_os("PATH")
}

/// Real Helm v3 (installed by `scripts/install-helm.sh`).
pub fn helm() -> Result<PathBuf, ToolError> {
    find_tool(
        "helm",
        "run scripts/install-helm.sh (puts Helm v3 at .tools/bin/helm)",
        process_path().as_deref(),
    )
}

/// The offline Kubernetes schema validator from PyPI.
pub fn kubernetes_validate() -> Result<PathBuf, ToolError> {
    find_tool(
        "kubernetes-validate",
        "pip install kubernetes-validate",
        process_path().as_deref(),
    )
}

/// The daemonless OCI image tool used by `make images`.
pub fn umoci() -> Result<PathBuf, ToolError> {
    find_tool("umoci", "apt-get install umoci", process_path().as_deref())
}

/// Directory holding this workspace's binaries for the profile the tests were built
/// with: the test executable lives in `target/<profile>/deps/`, the binaries one level up.
pub fn target_profile_dir() -> Result<PathBuf, ToolError> {
    let exe = std::env::current_exe().map_err(ToolError::CurrentExe)?;
    let deps = exe.parent().unwrap_or(Path::new("."));
    let dir = if deps.file_name() == Some(OsStr::new("deps")) {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    Ok(dir.to_path_buf())
}

/// A binary of this workspace (e.g. `aegis-safe`), built by `cargo build --workspace --bins`.
pub fn workspace_binary(name: &str) -> Result<PathBuf, ToolError> {
    let path = target_profile_dir()?.join(name);
    if is_executable(&path) {
        Ok(path)
    } else {
        Err(ToolError::BinaryNotBuilt {
            name: name.to_string(),
            path,
        })
    }
}

fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` to completion, capturing its output; a non-zero exit is an error that
/// carries the command line and what it printed.
pub fn run(cmd: &mut Command) -> Result<Output, ToolError> {
    let output = run_unchecked(cmd)?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(ToolError::Failed {
            command: describe(cmd),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        })
    }
}

/// Runs `cmd` to completion, capturing its output, whatever its exit status.
pub fn run_unchecked(cmd: &mut Command) -> Result<Output, ToolError> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|source| ToolError::Spawn {
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })
}

/// How a process started by [`run_with_deadline`] ended.
#[derive(Debug)]
pub enum Outcome {
    /// It exited by itself, with this status and standard error.
    Exited(ExitStatus, String),
    /// It was still running at the deadline and was killed (it had accepted its arguments).
    StillRunning(String),
}

/// Runs `cmd` until it exits or `deadline` passes, then kills it (by its own PID only).
pub fn run_with_deadline(cmd: &mut Command, deadline: Duration) -> Result<Outcome, ToolError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ToolError::Spawn {
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Outcome::Exited(status, read_stderr(&mut child))),
            Ok(None) if started.elapsed() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                // Ignoring the result: the child may have exited between try_wait and kill.
                let _ = child.kill();
                let _ = child.wait();
                return Ok(Outcome::StillRunning(read_stderr(&mut child)));
            }
        }
    }
}

fn read_stderr(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        // Best effort: the text is only used to explain a failure.
        let _ = stderr.read_to_string(&mut text);
    }
    text
}
