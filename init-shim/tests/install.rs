//! `aegis-init-shim install DIR` with the real binary.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use support::SHIM;

fn install(dir: &std::path::Path) -> std::process::Output {
    Command::new(SHIM)
        .arg("install")
        .arg(dir)
        .env_clear()
        .output()
        .unwrap()
}

#[test]
fn copies_itself_with_mode_0555_and_runs_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let out = install(dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target = dir.path().join("aegis-init-shim");
    assert_eq!(
        std::fs::read(&target).unwrap(),
        std::fs::read(SHIM).unwrap()
    );
    assert_eq!(
        std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
        0o555
    );
    let v = Command::new(&target).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("aegis-init-shim "));
}

#[test]
fn installing_twice_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    assert!(install(dir.path()).status.success());
    assert!(
        install(dir.path()).status.success(),
        "a restarted init container must succeed"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["aegis-init-shim"]);
}

#[test]
fn a_missing_directory_exits_73_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = install(&dir.path().join("missing"));
    assert_eq!(out.status.code(), Some(73));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn a_read_only_directory_exits_73() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let out = install(dir.path());
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // root ignores directory permissions; then the install legitimately succeeds.
    if running_as_root() {
        assert!(out.status.success());
    } else {
        assert_eq!(out.status.code(), Some(73));
        assert!(String::from_utf8_lossy(&out.stderr).contains("writable"));
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}
