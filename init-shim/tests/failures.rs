//! Failure modes the real Safe cannot be made to produce on demand (403, 5xx, malformed
//! or oversized bodies, a Safe that hangs, a server with a foreign certificate), against
//! a scripted TLS server that speaks the exact v1 JSON; and configuration, usage and
//! exec failures.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const SECRETS: &str = r#"{"workload":{"namespace":"demo","serviceAccount":"app"},"revision":3,"secrets":{"K":"v-123"}}"#;

fn scripted(
    respond: impl Fn(usize, &str) -> Option<Vec<u8>> + Send + Sync + 'static,
) -> (FakeSafe, Run) {
    let fake = FakeSafe::start(Arc::new(respond));
    let run = Run::new(&fake.url, &fake.ca_pem, &claims_token("demo", "app"));
    (fake, run)
}

#[test]
fn sends_the_token_and_reads_a_chunked_v1_response() {
    let (_fake, run) = scripted(|_, head| {
        assert!(head.starts_with("GET /v1/secrets HTTP/1.1\r\n"));
        assert!(head.contains(&format!(
            "Authorization: Bearer {}",
            claims_token("demo", "app")
        )));
        let (a, b) = SECRETS.split_at(20);
        Some(
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                a.len(),
                b.len()
            )
            .into_bytes(),
        )
    });
    let (out, _) = run.envdump(&[]);
    assert!(Dump::parse(&out)
        .env_strings()
        .contains(&"K=v-123".to_string()));
}

#[test]
fn server_errors_are_retried_until_success() {
    let (fake, mut run) = scripted(|n, _| {
        Some(match n {
            0 => json_response(503, &error_body("unavailable", "recovering")),
            1 => json_response(500, &error_body("internal", "oops")),
            _ => json_response(200, SECRETS),
        })
    });
    run.set("AEGIS_LOG", "debug");
    let (out, _) = run.envdump(&[]);
    let dump = Dump::parse(&out);
    assert!(dump.env_strings().contains(&"K=v-123".to_string()));
    assert_eq!(fake.accepted(), 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HTTP 503: recovering") && stderr.contains("attempts=3"),
        "{stderr}"
    );
}

#[test]
fn persistent_server_errors_exit_69_with_the_last_reason() {
    let (_fake, mut run) = scripted(|_, _| {
        Some(json_response(
            503,
            &error_body("unavailable", "journal disk full"),
        ))
    });
    run.set("AEGIS_FETCH_TIMEOUT", "1s");
    let (out, took) = run.envdump(&[]);
    let stderr = expect_exit(&out, 69);
    assert!(stderr.contains("journal disk full"), "{stderr}");
    assert!(took < Duration::from_secs(3));
}

#[test]
fn denied_401_and_403_exit_77_at_once_naming_workload_and_reason() {
    for (status, code, message) in [
        (403, "forbidden", "workload demo/app is suspended"),
        (401, "unauthenticated", "token expired"),
    ] {
        let (fake, run) =
            scripted(move |_, _| Some(json_response(status, &error_body(code, message))));
        let (out, _) = run.envdump(&[]);
        let stderr = expect_exit(&out, 77);
        assert_eq!(fake.accepted(), 1, "{status} is not retried");
        assert!(stderr.contains("workload demo/app"), "{stderr}");
        assert!(
            stderr.contains(&format!("(HTTP {status}): {message}")),
            "{stderr}"
        );
    }
}

#[test]
fn malformed_json_exits_76_without_quoting_the_body() {
    let (fake, run) = scripted(|_, _| Some(json_response(200, r#"{"secrets":{"K":12345678}}"#)));
    let (out, _) = run.envdump(&[]);
    let stderr = expect_exit(&out, 76);
    assert_eq!(fake.accepted(), 1);
    assert!(!stderr.contains("12345678"), "{stderr}");
}

#[test]
fn unexpected_status_and_garbage_exit_76() {
    let (_f, run) = scripted(|_, _| {
        Some(json_response(
            404,
            &error_body("not_found", "no such route"),
        ))
    });
    let stderr = expect_exit(&run.envdump(&[]).0, 76);
    assert!(stderr.contains("HTTP 404"), "{stderr}");
    let (_f, run) = scripted(|_, _| Some(b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec()));
    expect_exit(&run.envdump(&[]).0, 76);
}

#[test]
fn an_oversized_response_exits_76() {
    let (_f, run) =
        scripted(|_, _| Some(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n".to_vec()));
    let stderr = expect_exit(&run.envdump(&[]).0, 76);
    assert!(stderr.contains("larger than"), "{stderr}");
}

#[test]
fn a_hanging_safe_cannot_hold_the_shim_past_its_deadline() {
    let (_f, mut run) = scripted(|_, _| None);
    run.set("AEGIS_FETCH_TIMEOUT", "1s");
    let (out, took) = run.envdump(&[]);
    let stderr = expect_exit(&out, 69);
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(stderr.contains("timed out"), "{stderr}");
}

#[test]
fn wrong_ca_fails_fast_with_one_connection() {
    let (fake, _) = scripted(|_, _| Some(json_response(200, SECRETS)));
    let (other_ca, _) = test_pki();
    let mut run = Run::new(&fake.url, &other_ca, &claims_token("demo", "app"));
    run.set("AEGIS_FETCH_TIMEOUT", "30s");
    let t = Instant::now();
    let stderr = expect_exit(&run.envdump(&[]).0, 79);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(fake.accepted(), 1, "no retry storm");
    assert!(stderr.contains("AEGIS_SAFE_CA"), "{stderr}");
}

#[test]
fn a_certificate_for_another_name_fails_the_handshake() {
    // The scripted server's certificate names 127.0.0.1 only; `localhost` reaches the
    // same listener but is not in the certificate.
    let (fake, _) = scripted(|_, _| Some(json_response(200, SECRETS)));
    let url = fake.url.replace("127.0.0.1", "localhost");
    let run = Run::new(&url, &fake.ca_pem, &claims_token("demo", "app"));
    let stderr = expect_exit(&run.envdump(&[]).0, 79);
    assert!(
        stderr.contains("NotValidForName") || stderr.contains("not valid for name"),
        "{stderr}"
    );
}

#[test]
fn configuration_errors_exit_78_with_one_line() {
    let fake = FakeSafe::start(Arc::new(|_, _| Some(json_response(200, SECRETS))));
    for (var, value, needle) in [
        ("AEGIS_SAFE_URL", None, "AEGIS_SAFE_URL is not set"),
        ("AEGIS_SAFE_URL", Some("http://insecure:80"), "https://"),
        ("AEGIS_SAFE_CA", None, "no CA"),
        ("AEGIS_SAFE_CA", Some("not pem"), "no CERTIFICATE"),
        (
            "AEGIS_TOKEN_FILE",
            Some("/nonexistent/token"),
            "aegis-token volume",
        ),
        ("AEGIS_FETCH_TIMEOUT", Some("soon"), "AEGIS_FETCH_TIMEOUT"),
    ] {
        let mut run = Run::new(&fake.url, &fake.ca_pem, "t");
        match value {
            Some(v) => run.set(var, v),
            None => run.unset(var),
        };
        let (out, _) = run.envdump(&[]);
        let stderr = expect_exit(&out, 78);
        assert!(stderr.contains(needle), "{var}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    let run = Run::new("https://127.0.0.1:1", "x", "t");
    expect_exit(&run.run(&["/bin/true".into()]).0, 64);
    expect_exit(&run.run(&["--".into()]).0, 64);
    expect_exit(&run.run(&[]).0, 64);
    let (out, _) = run.run(&["--help".into()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("AEGIS_FETCH_TIMEOUT"));
}

#[test]
fn cmd_not_found_exits_127() {
    let (_f, mut run) = scripted(|_, _| Some(json_response(200, SECRETS)));
    let files = run.files.path().to_str().unwrap().to_string();
    run.set("PATH", &files);
    let stderr = expect_exit(&run.run(&["--".into(), "no-such-command".into()]).0, 127);
    assert!(
        stderr.contains("no-such-command: command not found"),
        "{stderr}"
    );
    let stderr = expect_exit(&run.run(&["--".into(), "/nonexistent/app".into()]).0, 127);
    assert!(stderr.contains("no such file"), "{stderr}");
}

#[test]
fn cmd_not_executable_exits_126() {
    use std::os::unix::fs::PermissionsExt;
    let (_f, mut run) = scripted(|_, _| Some(json_response(200, SECRETS)));
    let script = run.files.path().join("app");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let stderr = expect_exit(&run.run(&["--".into(), script.clone().into()]).0, 126);
    assert!(stderr.contains("Permission denied"), "{stderr}");
    // Found on PATH but not executable is 126 too, not 127.
    let files = run.files.path().to_str().unwrap().to_string();
    run.set("PATH", &files);
    expect_exit(&run.run(&["--".into(), "app".into()]).0, 126);
    // A directory.
    expect_exit(&run.run(&["--".into(), run.files.path().into()]).0, 126);
}
