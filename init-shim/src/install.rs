//! `aegis-init-shim install DIR`: copy the running executable into DIR so the shim
//! image can be `FROM scratch` (no shell, no `cp`).
//!
//! Invariants: DIR/aegis-init-shim either does not exist or is a complete copy with mode
//! 0555. The copy goes to a temporary file in DIR first, is flushed, made read-only and
//! executable, and is then renamed over the target, so re-running (a restarted init
//! container) is safe and a crash never leaves a half-written shim behind.

use aegis_core::names::SHIM_BINARY;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The running executable, opened through procfs so it works even if the file on disk
/// was replaced.
pub const SELF_EXE: &str = "/proc/self/exe";

/// Mode of the installed shim: read and execute for everyone, writable by nobody.
pub const INSTALLED_MODE: u32 = 0o555;

/// Why the install failed (exit 73).
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// DIR does not exist.
    #[error("{0}: directory does not exist (mount the aegis-bin volume there first)")]
    NoDir(PathBuf),
    /// DIR exists but is not a directory.
    #[error("{0}: not a directory")]
    NotDir(PathBuf),
    /// The source executable cannot be read.
    #[error("cannot read the shim's own executable {path}: {source}")]
    Source {
        /// Usually /proc/self/exe.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing into DIR failed.
    #[error("cannot write {path}: {source} (is the directory writable by this user?)")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Copies `source` to `dir/aegis-init-shim` with mode 0555; returns the target path.
pub fn install(source: &Path, dir: &Path) -> Result<PathBuf, InstallError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(InstallError::NotDir(dir.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(InstallError::NoDir(dir.to_path_buf()))
        }
        Err(source) => {
            return Err(InstallError::Write {
                path: dir.to_path_buf(),
                source,
            })
        }
    }
    let target = dir.join(SHIM_BINARY);
    let temp = dir.join(format!(".{SHIM_BINARY}.{}.tmp", std::process::id()));
    let result = copy_then_rename(source, &temp, &target);
    if result.is_err() {
        // Best effort: the temp file is ours and useless now.
        let _ = fs::remove_file(&temp);
    }
    result.map(|()| target)
}

fn write(path: &Path) -> impl FnOnce(io::Error) -> InstallError + '_ {
    move |source| InstallError::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn copy_then_rename(source: &Path, temp: &Path, target: &Path) -> Result<(), InstallError> {
    let mut from = File::open(source).map_err(|e| InstallError::Source {
        path: source.to_path_buf(),
        source: e,
    })?;
    let mut to = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o700)
        .open(temp)
        .map_err(write(temp))?;
    io::copy(&mut from, &mut to).map_err(write(temp))?;
    to.set_permissions(Permissions::from_mode(INSTALLED_MODE))
        .map_err(write(temp))?;
    to.sync_all().map_err(write(temp))?;
    drop(to);
    fs::rename(temp, target).map_err(write(target))?;
    // Make the rename itself durable; on tmpfs (the chart's emptyDir) this is a no-op.
    if let Some(dir) = target.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_with_mode_0555_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src-bin");
        fs::write(&src, b"\x7fELF pretend").unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        for _ in 0..2 {
            let target = install(&src, &out).unwrap();
            assert_eq!(target, out.join("aegis-init-shim"));
            assert_eq!(fs::read(&target).unwrap(), b"\x7fELF pretend");
            let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o555);
        }
        let names: Vec<_> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["aegis-init-shim"], "no temp file left behind");
    }

    #[test]
    fn missing_directory_and_file_as_directory_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src-bin");
        fs::write(&src, b"x").unwrap();
        let e = install(&src, &dir.path().join("nope")).unwrap_err();
        assert!(matches!(e, InstallError::NoDir(_)));
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(matches!(install(&src, &src), Err(InstallError::NotDir(_))));
    }

    #[test]
    fn unreadable_source_names_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let e = install(&dir.path().join("missing-src"), dir.path()).unwrap_err();
        assert!(matches!(e, InstallError::Source { .. }), "{e}");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temp file removed"
        );
    }
}
