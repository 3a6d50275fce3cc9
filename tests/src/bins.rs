//! The workspace binaries the end-to-end suite runs, found next to the test executable.
//!
//! Invariant: a missing binary is an error that says to run `cargo build --workspace --bins`
//! (CI builds them before the tests); nothing is rebuilt or skipped here.

use std::path::PathBuf;

use crate::tools::{self, ToolError};

/// The Safe (`aegis-safe`).
pub const SAFE: &str = "aegis-safe";
/// The admission webhook (`aegis-webhook`).
pub const WEBHOOK: &str = "aegis-webhook";
/// The init-shim (`aegis-init-shim`).
pub const INIT_SHIM: &str = "aegis-init-shim";
/// The admin CLI (`aegis`).
pub const CLI: &str = "aegis";

/// Path of one workspace binary: `target/<profile>/<name>`.
pub fn binary(name: &str) -> Result<PathBuf, ToolError> {
    tools::workspace_binary(name)
}

/// Paths of all four binaries, in the order [`SAFE`], [`WEBHOOK`], [`INIT_SHIM`], [`CLI`];
/// the first missing one is the error.
pub fn all() -> Result<[PathBuf; 4], ToolError> {
    Ok([
        binary(SAFE)?,
        binary(WEBHOOK)?,
        binary(INIT_SHIM)?,
        binary(CLI)?,
    ])
}
