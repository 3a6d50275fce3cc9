//! The real shim binary against a real Safe (dev mode: real TLS, ES256-signed tokens,
//! durable storage), with `aegis-envdump` as CMD.

mod support;

use std::os::unix::ffi::OsStringExt;
use std::time::{Duration, Instant, SystemTime};
use support::*;

/// A Safe holding three secrets for demo/app.
fn safe_with_secrets() -> Safe {
    let safe = Safe::start();
    safe.put(
        "demo",
        "app",
        "DB_URL",
        "postgres://app:pa ss@db:5432/x?sslmode=require",
    );
    safe.put(
        "demo",
        "app",
        "API_KEY",
        "k-3b8f\"quoted\" 'single' ünï\nnewline",
    );
    safe.put("demo", "app", "LOG_LEVEL", "info-from-secret");
    safe.put("other", "app", "FOREIGN", "must-not-leak");
    safe
}

fn run_for(safe: &Safe, ns: &str, sa: &str) -> Run {
    Run::new(&safe.url, &safe.ca_pem, &safe.token(ns, sa))
}

#[test]
fn child_sees_exactly_the_expected_environment() {
    let safe = safe_with_secrets();
    let mut run = run_for(&safe, "demo", "app");
    run.set("PLAIN", "kept as is")
        .set("DATABASE_URL", "aegis:DB_URL")
        .set("LOG_LEVEL", "debug")
        .set("AEGIS_LOG", "debug");
    let (out, _) = run.envdump(&[]);
    let dump = Dump::parse(&out);
    let scratch = run.scratch.path().to_str().unwrap();
    // Command::env_clear().envs() hands variables over sorted by name.
    let expected = vec![
        "DATABASE_URL=postgres://app:pa ss@db:5432/x?sslmode=require".to_string(),
        format!("HOME={scratch}"),
        "LOG_LEVEL=debug".into(),
        "PATH=/usr/local/bin:/usr/bin:/bin".into(),
        "PLAIN=kept as is".into(),
        format!("TMPDIR={scratch}"),
        "API_KEY=k-3b8f\"quoted\" 'single' ünï\nnewline".into(),
        "DB_URL=postgres://app:pa ss@db:5432/x?sslmode=require".into(),
    ];
    assert_eq!(dump.env_strings(), expected);

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("level=warn") && stderr.contains("key=LOG_LEVEL"),
        "{stderr}"
    );
    for value in ["pa ss", "k-3b8f", "info-from-secret", "must-not-leak"] {
        assert!(!stderr.contains(value), "a value reached the log: {stderr}");
    }
    assert!(stderr.contains("workload=demo/app"), "{stderr}");
}

#[test]
fn pid_is_preserved_across_exec() {
    let safe = safe_with_secrets();
    let run = run_for(&safe, "demo", "app");
    let child = run.command(&["--".into(), ENVDUMP.into()]).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let dump = Dump::parse(&out);
    assert_eq!(dump.pid, pid, "CMD must be the process the runtime started");
    assert_eq!(dump.ppid, std::process::id());
}

#[test]
fn cmd_does_not_inherit_an_ignored_sigpipe() {
    // Rust ignores SIGPIPE at start-up and ignored signals survive execve; a C program
    // (grep) shows what CMD really gets.
    let safe = safe_with_secrets();
    let run = run_for(&safe, "demo", "app");
    let (out, _) = run.run(&[
        "--".into(),
        "grep".into(),
        "^SigIgn:".into(),
        "/proc/self/status".into(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let mask = u64::from_str_radix(line.trim_start_matches("SigIgn:").trim(), 16).unwrap();
    assert_eq!(
        mask & (1 << (libc::SIGPIPE - 1)),
        0,
        "SIGPIPE must not stay ignored: {line}"
    );
}

#[test]
fn argv_passes_through_unchanged() {
    let safe = safe_with_secrets();
    let run = run_for(&safe, "demo", "app");
    let args: Vec<std::ffi::OsString> = vec![
        "two words".into(),
        "\"double\"".into(),
        "'single'".into(),
        "".into(),
        "--".into(),
        "--help".into(),
        "$HOME *".into(),
        "tab\there\nnewline".into(),
        "ünï🙂".into(),
        std::ffi::OsString::from_vec(vec![0xff, 0xfe, b'x']),
        "".into(),
    ];
    let mut all = vec!["--".into(), ENVDUMP.into()];
    all.extend(args.iter().cloned());
    let (out, _) = run.run(&all);
    let dump = Dump::parse(&out);
    let mut expected = vec![ENVDUMP.as_bytes().to_vec()];
    expected.extend(args.into_iter().map(|a| a.into_vec()));
    assert_eq!(dump.argv, expected);
}

#[test]
fn a_command_name_is_found_on_the_container_path() {
    let safe = safe_with_secrets();
    let mut run = run_for(&safe, "demo", "app");
    let bin_dir = std::path::Path::new(ENVDUMP)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    run.set("PATH", &format!("/nonexistent:{bin_dir}:/usr/bin"));
    let (out, _) = run.run(&["--".into(), "aegis-envdump".into(), "x".into()]);
    let dump = Dump::parse(&out);
    assert_eq!(
        dump.argv,
        [b"aegis-envdump".to_vec(), b"x".to_vec()],
        "argv[0] as written"
    );
}

#[test]
fn a_workload_without_secrets_starts_with_its_own_environment() {
    let safe = safe_with_secrets();
    let (out, _) = run_for(&safe, "empty", "nobody").envdump(&[]);
    let env = Dump::parse(&out).env_strings();
    assert!(env.iter().all(|e| !e.starts_with("AEGIS_")));
    assert_eq!(env.len(), 3, "PATH, HOME, TMPDIR only: {env:?}");
}

#[test]
fn missing_referenced_key_exits_65_and_names_it() {
    let safe = safe_with_secrets();
    let mut run = run_for(&safe, "demo", "app");
    run.set("PASSWORD", "aegis:DB_PASSWORD");
    let (out, _) = run.envdump(&[]);
    let stderr = expect_exit(&out, 65);
    assert!(stderr.contains("PASSWORD=aegis:DB_PASSWORD"), "{stderr}");
}

#[test]
fn token_from_another_issuer_is_denied_401_with_the_workload_named() {
    let safe = safe_with_secrets();
    let foreign = tempfile::tempdir().unwrap();
    let token = dev_token(foreign.path(), "demo", "app", "aegis-safe");
    let run = Run::new(&safe.url, &safe.ca_pem, &token);
    let t = Instant::now();
    let (out, _) = run.envdump(&[]);
    let stderr = expect_exit(&out, 77);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "401 must not be retried"
    );
    assert!(
        stderr.contains("demo/app") && stderr.contains("HTTP 401"),
        "{stderr}"
    );
}

#[test]
fn token_for_the_wrong_audience_is_denied() {
    let safe = safe_with_secrets();
    let token = dev_token(safe.dir.path(), "demo", "app", "vault");
    let (out, _) = Run::new(&safe.url, &safe.ca_pem, &token).envdump(&[]);
    let stderr = expect_exit(&out, 77);
    assert!(stderr.contains("demo/app"), "{stderr}");
}

#[test]
fn safe_down_then_up_within_the_deadline_succeeds() {
    let mut safe = safe_with_secrets();
    let run = run_for(&safe, "demo", "app");
    safe.stop();
    let child = run.command(&["--".into(), ENVDUMP.into()]).spawn().unwrap();
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    safe.restart();
    let out = child.wait_with_output().unwrap();
    let dump = Dump::parse(&out);
    assert!(t.elapsed() >= Duration::from_millis(1500));
    assert!(dump
        .env_strings()
        .iter()
        .any(|e| e.starts_with("DB_URL=postgres://")));
}

#[test]
fn safe_never_up_exits_69_after_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ca, _) = aegis_safe::dev::ensure_material(dir.path()).unwrap();
    let token = dev_token(dir.path(), "demo", "app", "aegis-safe");
    let mut run = Run::new(&format!("https://{}", free_addr()), &ca, &token);
    run.set("AEGIS_FETCH_TIMEOUT", "1500ms")
        .set("AEGIS_LOG", "debug");
    let (out, took) = run.envdump(&[]);
    let stderr = expect_exit(&out, 69);
    assert!(
        took >= Duration::from_millis(1500),
        "gave up early: {took:?}"
    );
    assert!(took < Duration::from_secs(4), "deadline overrun: {took:?}");
    assert!(
        stderr.contains("within") && stderr.contains("Connection refused"),
        "{stderr}"
    );
    assert!(
        stderr.matches("retrying").count() >= 3,
        "retries are logged at debug: {stderr}"
    );
}

#[test]
fn ca_from_a_file_works_too() {
    let safe = safe_with_secrets();
    let mut run = run_for(&safe, "demo", "app");
    let ca_file = run.files.path().join("ca.pem");
    std::fs::write(&ca_file, &safe.ca_pem).unwrap();
    run.unset("AEGIS_SAFE_CA")
        .set("AEGIS_SAFE_CA_FILE", ca_file.to_str().unwrap());
    let (out, _) = run.envdump(&[]);
    assert!(Dump::parse(&out)
        .env_strings()
        .iter()
        .any(|e| e.starts_with("API_KEY=")));
}

#[test]
fn the_safe_certificate_must_chain_to_the_configured_ca() {
    let safe = safe_with_secrets();
    let (foreign_ca, _) = test_pki();
    let run = Run::new(&safe.url, &foreign_ca, &safe.token("demo", "app"));
    let t = Instant::now();
    let (out, _) = run.envdump(&[]);
    let stderr = expect_exit(&out, 79);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "TLS failure must not be retried"
    );
    assert!(
        stderr.contains("UnknownIssuer") || stderr.contains("unknown issuer"),
        "{stderr}"
    );
}

#[test]
fn no_secret_bytes_are_written_to_any_file_the_shim_could_write() {
    let safe = Safe::start();
    // Unique bytes, so any hit anywhere is ours.
    let marker = format!("S3CR3T-{}-{:?}", std::process::id(), SystemTime::now());
    safe.put("demo", "app", "MARKER", &marker);
    let since = SystemTime::now() - Duration::from_secs(1);
    let mut run = run_for(&safe, "demo", "app");
    run.set("AEGIS_LOG", "debug").set("REF", "aegis:MARKER");
    // CMD is a shell that does not write anything, so only the shim could have.
    let (out, _) = run.run(&["--".into(), "/bin/sh".into(), "-c".into(), "exit 0".into()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&marker));
    let needle = marker.as_bytes();
    for root in [
        run.scratch.path(),
        run.files.path(),
        safe.dir.path(),
        &std::env::temp_dir(),
    ] {
        let hits = files_containing(root, needle, since);
        assert!(hits.is_empty(), "plaintext secret found in {hits:?}");
    }
    let scratch: Vec<_> = std::fs::read_dir(run.scratch.path()).unwrap().collect();
    assert!(
        scratch.is_empty(),
        "the shim wrote into its cwd/HOME/TMPDIR: {scratch:?}"
    );
}
