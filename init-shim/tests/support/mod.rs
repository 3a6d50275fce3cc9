//! Shared test harness: a real dev-mode Safe ([`aegis_safe::DevSafe`], real TLS, real
//! ES256-signed tokens, real durable storage), a scriptable TLS server that speaks the
//! exact v1 JSON for the failure modes the real Safe cannot be made to produce (403,
//! 5xx, malformed bodies, hangs, a foreign certificate), and a runner for the real shim
//! binary with `aegis-envdump` as CMD.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

use aegis_init_shim::tls::{client_config, parse_ca_pem};
use aegis_safe::DevSafe;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use serde::Deserialize;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const SHIM: &str = env!("CARGO_BIN_EXE_aegis-init-shim");
pub const ENVDUMP: &str = env!("CARGO_BIN_EXE_aegis-envdump");

/// A real Safe in a temporary directory, plus files the shim reads (CA, token).
pub struct Safe {
    pub safe: Option<DevSafe>,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub ca_pem: String,
    pub addr: SocketAddr,
}

impl Safe {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let safe = DevSafe::start(dir.path()).expect("dev Safe starts");
        Self {
            url: safe.url.clone(),
            ca_pem: safe.ca_pem.clone(),
            addr: safe.addr,
            safe: Some(safe),
            dir,
        }
    }

    fn running(&self) -> &DevSafe {
        self.safe.as_ref().expect("the Safe is running")
    }

    /// Stores a secret as the admin would (`PUT`, durable before the reply).
    pub fn put(&self, ns: &str, sa: &str, key: &str, value: &str) {
        let admin = self.running().admin_token().expect("admin token");
        let body = serde_json::json!({ "value": value }).to_string();
        let status = raw_request(
            self.addr,
            &self.ca_pem,
            &format!(
                "PUT /v1/workloads/{ns}/{sa}/secrets/{key} HTTP/1.1\r\nHost: {}\r\n\
                 Authorization: Bearer {admin}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                self.addr,
                body.len()
            ),
        );
        assert!(
            status == 200 || status == 201,
            "PUT {key} answered {status}"
        );
    }

    /// A real signed token for `ns/sa`.
    pub fn token(&self, ns: &str, sa: &str) -> String {
        dev_token(self.dir.path(), ns, sa, "aegis-safe")
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.safe.take() {
            s.stop();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.safe = Some(DevSafe::start_on(self.dir.path(), self.addr).expect("restart"));
    }
}

/// A real token signed by the dev issuer of `dir` (created if missing), 600 s.
pub fn dev_token(dir: &Path, ns: &str, sa: &str, audience: &str) -> String {
    aegis_safe::dev::issue_token(dir, ns, sa, audience, Duration::from_secs(600)).expect("token")
}

/// Sends one raw HTTPS request trusting only `ca_pem`; returns the status.
pub fn raw_request(addr: SocketAddr, ca_pem: &str, request: &str) -> u16 {
    let cas = parse_ca_pem(ca_pem.as_bytes(), "test").unwrap();
    let cfg = client_config(&cas).unwrap();
    let conn = rustls::ClientConnection::new(cfg, ServerName::IpAddress(addr.ip().into())).unwrap();
    let mut s = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
    s.write_all(request.as_bytes()).unwrap();
    aegis_init_shim::http::read_response(&mut s, 1 << 20)
        .unwrap()
        .status
}

/// A free loopback port (bound, then released).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// What `aegis-envdump` saw.
#[derive(Debug, Deserialize)]
pub struct Dump {
    pub pid: u32,
    pub ppid: u32,
    pub monotonic_ns: u64,
    pub argv: Vec<Vec<u8>>,
    pub env: Vec<Vec<u8>>,
}

impl Dump {
    pub fn parse(out: &Output) -> Self {
        assert!(
            out.status.success(),
            "shim failed: {:?}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("envdump JSON")
    }

    pub fn env_strings(&self) -> Vec<String> {
        self.env
            .iter()
            .map(|e| String::from_utf8(e.clone()).unwrap())
            .collect()
    }
}

/// One run of the real shim binary: a scratch directory is its cwd, HOME and TMPDIR
/// (the only places it could write), and the token and CA live in `files`.
pub struct Run {
    pub scratch: tempfile::TempDir,
    pub files: tempfile::TempDir,
    pub env: Vec<(OsString, OsString)>,
}

impl Run {
    /// A run against `url` trusting `ca_pem` (inline) with `token`.
    pub fn new(url: &str, ca_pem: &str, token: &str) -> Self {
        let scratch = tempfile::tempdir().unwrap();
        let files = tempfile::tempdir().unwrap();
        let token_file = files.path().join("token");
        std::fs::write(&token_file, token).unwrap();
        let mut run = Self {
            env: Vec::new(),
            scratch,
            files,
        };
        let s = run.scratch.path().to_path_buf();
        run.set("PATH", "/usr/local/bin:/usr/bin:/bin")
            .set("HOME", s.to_str().unwrap())
            .set("TMPDIR", s.to_str().unwrap())
            .set("AEGIS_SAFE_URL", url)
            .set("AEGIS_SAFE_CA", ca_pem)
            .set("AEGIS_TOKEN_FILE", token_file.to_str().unwrap())
            .set("AEGIS_FETCH_TIMEOUT", "20s");
        run
    }

    /// Sets (or replaces) a variable.
    pub fn set(&mut self, k: &str, v: &str) -> &mut Self {
        self.unset(k);
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn unset(&mut self, k: &str) -> &mut Self {
        self.env.retain(|(name, _)| name != k);
        self
    }

    pub fn command(&self, args: &[OsString]) -> Command {
        let mut c = Command::new(SHIM);
        c.args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.scratch.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs `aegis-init-shim -- aegis-envdump ARGS...`; returns the output and wall time.
    pub fn envdump(&self, args: &[&str]) -> (Output, Duration) {
        let mut all: Vec<OsString> = vec!["--".into(), ENVDUMP.into()];
        all.extend(args.iter().map(OsString::from));
        self.run(&all)
    }

    pub fn run(&self, args: &[OsString]) -> (Output, Duration) {
        let t = Instant::now();
        let out = self.command(args).output().expect("spawn shim");
        (out, t.elapsed())
    }
}

/// Asserts the shim exited with `code` and returns its stderr.
pub fn expect_exit(out: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "CMD must not have run");
    stderr
}

/// Every regular file below `root` whose content contains `needle`.
pub fn files_containing(root: &Path, needle: &[u8], since: std::time::SystemTime) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            let p = e.path();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file()
                && meta.modified().is_ok_and(|m| m >= since)
                && meta.len() < 64 << 20
            {
                if let Ok(bytes) = std::fs::read(&p) {
                    if bytes.windows(needle.len()).any(|w| w == needle) {
                        hits.push(p);
                    }
                }
            }
        }
    }
    hits
}

/// A TLS server with its own CA that answers each request with whatever `respond`
/// returns for (connection index, request head). `None` holds the connection open and
/// silent. It counts accepted TCP connections.
pub struct FakeSafe {
    pub url: String,
    pub ca_pem: String,
    pub accepted: Arc<AtomicUsize>,
}

pub type Respond = dyn Fn(usize, &str) -> Option<Vec<u8>> + Send + Sync;

impl FakeSafe {
    pub fn start(respond: Arc<Respond>) -> Self {
        let (ca_pem, server_cfg) = test_pki();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let cfg = server_cfg.clone();
                let respond = respond.clone();
                std::thread::spawn(move || serve_one(cfg, tcp, n, &*respond));
            }
        });
        Self {
            url: format!("https://{addr}"),
            ca_pem,
            accepted,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn serve_one(cfg: Arc<rustls::ServerConfig>, tcp: TcpStream, n: usize, respond: &Respond) {
    let Ok(conn) = rustls::ServerConnection::new(cfg) else {
        return;
    };
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return, // handshake failed or the client went away
        }
    }
    match respond(n, &String::from_utf8_lossy(&head)) {
        Some(bytes) => {
            let _ = s.write_all(&bytes);
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        None => std::thread::sleep(Duration::from_secs(30)),
    }
}

/// A fresh CA and a server certificate for 127.0.0.1 (only) signed by it.
pub fn test_pki() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(vec![]).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
        )
        .unwrap();
    (ca_cert.pem(), Arc::new(cfg))
}

/// An HTTP response with a JSON body and Content-Length.
pub fn json_response(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The v1 error shape.
pub fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({ "error": { "code": code, "message": message } }).to_string()
}

/// An unsigned JWT-shaped token whose claims name `ns/sa` (for the scripted server).
pub fn claims_token(ns: &str, sa: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = serde_json::json!({
        "iss": "https://kubernetes.default.svc", "aud": ["aegis-safe"], "exp": 4_000_000_000u64,
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "kubernetes.io": { "namespace": ns, "serviceaccount": { "name": sa, "uid": "u" } }
    });
    format!(
        "{}.{}.c2ln",
        b64.encode(r#"{"alg":"ES256"}"#),
        b64.encode(claims.to_string())
    )
}
