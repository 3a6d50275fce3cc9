//! Shared test helpers: the captured fixtures, a test CA, and a tiny HTTP(S) server on
//! 127.0.0.1:0 whose handler is a closure and which counts the requests it answers.

#![allow(dead_code)] // each test binary uses a different subset of these helpers

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The fixture tree: `<workspace root>/../shared/fixtures` (shared/ sits beside the repo).
pub fn fixtures_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    assert!(
        dir.is_dir(),
        "fixtures not found at {} (the shared/ folder must sit beside the repository)",
        dir.display()
    );
    dir
}

/// A fixture file's bytes.
pub fn fixture(rel: &str) -> Vec<u8> {
    let path = fixtures_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// A fixture token, without trailing whitespace.
pub fn fixture_token(name: &str) -> String {
    String::from_utf8(fixture(&format!("tokens/{name}")))
        .expect("token is UTF-8")
        .trim()
        .to_string()
}

/// The issuer of the captured tokens.
pub const REAL_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A time inside the captured token's validity (iat 1796414535, exp 2111774535).
pub const REAL_NOW: i64 = 1_800_000_000;

/// A CA and a server certificate for 127.0.0.1 and localhost.
pub struct TestPki {
    /// The CA certificate, PEM (what clients trust).
    pub ca_pem: String,
    /// The CA certificate, DER.
    pub ca_der: Vec<u8>,
    /// TLS server configuration (ring provider) presenting the leaf certificate.
    pub server: Arc<rustls::ServerConfig>,
}

pub fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "aegis-auth test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().to_vec(),
        server: Arc::new(server),
    }
}

/// One request as the handler sees it.
pub struct Request {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: Bytes,
}

/// The handler's answer: status, content type JSON, body.
pub type Handler = Arc<dyn Fn(&Request) -> (u16, String) + Send + Sync>;

/// A running server; dropping it stops accepting.
pub struct TestServer {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn base_url(&self, https: bool) -> String {
        format!("{}://{}", if https { "https" } else { "http" }, self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `handler` on 127.0.0.1:0, over TLS when `tls` is given.
pub async fn serve(handler: Handler, tls: Option<Arc<rustls::ServerConfig>>) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let task = tokio::spawn(async move {
        // Connections live in this set, so aborting the server also cuts kept-alive ones.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            while connections.try_join_next().is_some() {}
            let handler = Arc::clone(&handler);
            let counter = Arc::clone(&counter);
            let acceptor = acceptor.clone();
            connections.spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let handler = Arc::clone(&handler);
                    let counter = Arc::clone(&counter);
                    async move {
                        let method = req.method().to_string();
                        let path = req.uri().path().to_string();
                        let authorization = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        let body = req.into_body().collect().await?.to_bytes();
                        counter.fetch_add(1, Ordering::SeqCst);
                        let (status, text) = handler(&Request {
                            method,
                            path,
                            authorization,
                            body,
                        });
                        let response = hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(text)))
                            .unwrap();
                        Ok::<_, hyper::Error>(response)
                    }
                });
                let builder = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                        }
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                }
            });
        }
    });
    TestServer {
        addr,
        requests,
        task,
    }
}

/// An address on which nothing listens (bound, then released).
pub async fn dead_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Signs arbitrary header/payload bytes with a throwaway P-256 key, for tokens the dev
/// issuer would never produce (no kid, invalid JSON payload, odd headers).
pub struct RawSigner {
    key: ring::signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
}

impl RawSigner {
    pub fn new() -> Self {
        use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self { key, rng }
    }

    /// The public key as a JWK object, with `kid` if given.
    pub fn jwk(&self, kid: Option<&str>) -> serde_json::Value {
        use base64::Engine as _;
        use ring::signature::KeyPair as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let point = self.key.public_key().as_ref();
        let mut jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "use": "sig",
            "x": b64.encode(&point[1..33]), "y": b64.encode(&point[33..65]),
        });
        if let Some(kid) = kid {
            jwk["kid"] = kid.into();
        }
        jwk
    }

    /// `b64(header).b64(payload).b64(ES256 signature)`.
    pub fn sign(&self, header: &[u8], payload: &[u8]) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let input = format!("{}.{}", b64.encode(header), b64.encode(payload));
        let sig = self.key.sign(&self.rng, input.as_bytes()).unwrap();
        format!("{input}.{}", b64.encode(sig.as_ref()))
    }
}

/// Claims exactly like a real projected token for `demo/app`, valid [now, now + 600).
pub fn claims(issuer: &str, now: i64) -> serde_json::Value {
    serde_json::json!({
        "aud": ["aegis-safe"],
        "exp": now + 600,
        "iat": now,
        "iss": issuer,
        "jti": "4b8c36f3-0f65-4ab7-a45a-07f342972e1a",
        "kubernetes.io": {
            "namespace": "demo",
            "serviceaccount": {"name": "app", "uid": "ac6ea4b5-2e69-4fcc-aab0-202aeda13dac"}
        },
        "nbf": now,
        "sub": "system:serviceaccount:demo:app"
    })
}

/// Asserts an error's Display and Debug contain no part of `token` (each of its three
/// parts, and any 16-character window of it).
pub fn assert_no_token_in<E: std::fmt::Display + std::fmt::Debug>(err: &E, token: &str) {
    for text in [err.to_string(), format!("{err:?}")] {
        for part in token.split('.').filter(|p| p.len() >= 8) {
            assert!(
                !text.contains(part),
                "error text contains a token part: {text}"
            );
        }
        let bytes = token.as_bytes();
        for window in bytes.windows(16) {
            let w = std::str::from_utf8(window).unwrap_or("");
            assert!(
                w.is_empty() || !text.contains(w),
                "error text contains token bytes: {text}"
            );
        }
    }
}
