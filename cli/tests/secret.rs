//! `aegis secret` against a real Safe (dev mode, real TLS, real signed tokens).

use aegis_safe::DevSafe;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

struct Env {
    safe: DevSafe,
    dir: tempfile::TempDir,
    ca: PathBuf,
    admin_token: PathBuf,
}

fn setup() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let safe = DevSafe::start(&dir.path().join("safe")).unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &safe.ca_pem).unwrap();
    let admin_token = dir.path().join("admin.token");
    std::fs::write(&admin_token, safe.admin_token().unwrap()).unwrap();
    Env {
        safe,
        dir,
        ca,
        admin_token,
    }
}

impl Env {
    fn aegis(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        self.aegis_with_token(&self.admin_token, args, stdin)
    }

    fn aegis_with_token(
        &self,
        token: &std::path::Path,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aegis"));
        cmd.args(args)
            .env("AEGIS_SAFE_URL", &self.safe.url)
            .env("AEGIS_SAFE_CA_FILE", &self.ca)
            .env("AEGIS_TOKEN_FILE", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        {
            // Dropping stdin closes it: a non-terminal, prompt-less stdin.
            let mut si = child.stdin.take().unwrap();
            if let Some(bytes) = stdin {
                // The CLI may refuse before reading stdin (bad key): EPIPE is fine then.
                if let Err(e) = si.write_all(bytes) {
                    assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
                }
            }
        }
        child.wait_with_output().unwrap()
    }

    fn token_file(&self, name: &str, token: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, token).unwrap();
        p
    }
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn fingerprint(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    format!(
        "sha256:{}",
        d.as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn assert_never_shows(o: &Output, secret: &str) {
    let (out, err) = text(o);
    assert!(
        !out.contains(secret) && !err.contains(secret),
        "secret leaked:\n{out}\n{err}"
    );
}

#[test]
fn put_from_piped_stdin_strips_one_newline_and_list_shows_its_fingerprint() {
    let env = setup();
    let o = env.aegis(
        &["secret", "put", "demo/app", "DB_PASSWORD"],
        Some(b"pa55-w0rd\n"),
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.starts_with("created demo/app DB_PASSWORD (version 1, "),
        "{out}"
    );
    assert!(out.contains(&fingerprint(b"pa55-w0rd")), "{out}");
    assert_never_shows(&o, "pa55-w0rd");

    let o = env.aegis(&["secret", "list", "-o", "json"], None);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let w = &v["workloads"][0];
    assert_eq!(w["workload"]["namespace"], "demo");
    assert_eq!(w["secrets"][0]["key"], "DB_PASSWORD");
    assert_eq!(w["secrets"][0]["fingerprint"], fingerprint(b"pa55-w0rd"));
    assert_never_shows(&o, "pa55-w0rd");

    let o = env.aegis(&["secret", "list", "demo/app"], None);
    let (out, _) = text(&o);
    assert!(out.starts_with("WORKLOAD"), "{out}");
    assert!(out.contains("demo/app  DB_PASSWORD  1"), "{out}");
}

#[test]
fn put_from_file_keeps_the_bytes_exactly_and_a_second_put_is_an_update() {
    let env = setup();
    let f = env.dir.path().join("cert.pem");
    std::fs::write(&f, "line one\nline two\n").unwrap();
    let o = env.aegis(
        &[
            "secret",
            "put",
            "demo/app",
            "CERT",
            "--from-file",
            f.to_str().unwrap(),
        ],
        None,
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains(&fingerprint(b"line one\nline two\n")), "{out}");

    let o = env.aegis(&["secret", "put", "demo/app", "CERT"], Some(b"other"));
    let (out, _) = text(&o);
    assert!(
        out.starts_with("updated demo/app CERT (version 2, "),
        "{out}"
    );
}

#[test]
fn value_flag_works_but_warns_about_shell_history() {
    let env = setup();
    let o = env.aegis(
        &["secret", "put", "demo/app", "K", "--value", "v4lue"],
        None,
    );
    let (_, err) = text(&o);
    assert!(o.status.success());
    assert!(err.contains("warning: --value leaks"), "{err}");
}

#[test]
fn empty_piped_stdin_stores_an_empty_value_without_prompting() {
    let env = setup();
    let o = env.aegis(&["secret", "put", "demo/app", "EMPTY"], None);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains(&fingerprint(b"")), "{out}");
}

#[test]
fn delete_removes_the_key_and_a_second_delete_is_not_found_with_a_hint() {
    let env = setup();
    assert!(env
        .aegis(&["secret", "put", "demo/app", "K"], Some(b"v"))
        .status
        .success());
    let o = env.aegis(&["secret", "delete", "demo/app", "K"], None);
    assert!(o.status.success());
    assert_eq!(text(&o).0, "deleted demo/app K\n");
    let o = env.aegis(&["secret", "delete", "demo/app", "K"], None);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("(404)") && err.contains("hint: check the workload"),
        "{err}"
    );
}

#[test]
fn a_workload_token_is_forbidden_and_the_hint_names_the_identity() {
    let env = setup();
    let tok = env.token_file("app.token", &env.safe.token("demo", "app").unwrap());
    let o = env.aegis_with_token(&tok, &["secret", "put", "demo/app", "K"], Some(b"v"));
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("(403)"), "{err}");
    assert!(
        err.contains("hint: demo/app is not allowed") && err.contains("--admin"),
        "{err}"
    );
}

#[test]
fn a_bad_token_is_unauthenticated_and_the_hint_names_the_token_file() {
    let env = setup();
    let tok = env.token_file("bad.token", "not-a-jwt");
    let o = env.aegis_with_token(&tok, &["secret", "list"], None);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("(401)") && err.contains(tok.to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn an_unreachable_safe_is_reported_with_a_hint() {
    let env = setup();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = Command::new(env!("CARGO_BIN_EXE_aegis"))
        .args([
            "secret",
            "list",
            "--safe-url",
            &format!("https://127.0.0.1:{port}"),
        ])
        .env("AEGIS_SAFE_CA_FILE", &env.ca)
        .env("AEGIS_TOKEN_FILE", &env.admin_token)
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("could not reach the Safe") && err.contains("hint: check --safe-url"),
        "{err}"
    );
}

#[test]
fn a_safe_signed_by_another_ca_is_refused() {
    let env = setup();
    let other = tempfile::tempdir().unwrap();
    let other_safe = DevSafe::start(other.path()).unwrap();
    let other_ca = env.dir.path().join("other-ca.crt");
    std::fs::write(&other_ca, &other_safe.ca_pem).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_aegis"))
        .args(["secret", "list"])
        .env("AEGIS_SAFE_URL", &env.safe.url)
        .env("AEGIS_SAFE_CA_FILE", &other_ca)
        .env("AEGIS_TOKEN_FILE", &env.admin_token)
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("could not reach the Safe"), "{err}");
}

#[test]
fn bad_names_and_oversized_values_are_refused_before_contacting_the_safe() {
    let env = setup();
    let o = env.aegis(&["secret", "put", "demo/app", "1BAD"], Some(b"v"));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("not a valid environment variable name"));
    let o = env.aegis(&["secret", "put", "Demo/app", "K"], Some(b"v"));
    assert_eq!(o.status.code(), Some(2));
    let big = "x".repeat(64 * 1024 + 1);
    let o = env.aegis(&["secret", "put", "demo/app", "K"], Some(big.as_bytes()));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("the limit is 65536 bytes"));
    assert_never_shows(&o, &big);
}

#[test]
fn missing_token_file_names_the_setting() {
    let env = setup();
    let o = env.aegis_with_token(
        std::path::Path::new("/nonexistent/token"),
        &["secret", "list"],
        None,
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("AEGIS_TOKEN_FILE"), "{err}");
}
