//! `aegis demo` end to end: the newcomer's first command must work.

use std::process::Command;

#[test]
fn demo_runs_every_step_and_proves_nothing_reached_disk() {
    let aegis = std::path::Path::new(env!("CARGO_BIN_EXE_aegis"));
    let shim = aegis.with_file_name("aegis-init-shim");
    assert!(
        shim.is_file(),
        "{} is missing: build the workspace binaries first (`cargo build --workspace --bins`)",
        shim.display()
    );
    let out = Command::new(aegis)
        .arg("demo")
        .arg("--shim-bin")
        .arg(&shim)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for step in 1..=6 {
        assert!(
            stdout.contains(&format!("[{step}/6]")),
            "missing step {step}:\n{stdout}"
        );
    }
    assert!(stdout.contains("app> app (pid "), "{stdout}");
    assert!(stdout.contains("the secret is in none of them"), "{stdout}");
    assert!(stdout.contains("demo passed"), "{stdout}");
}
