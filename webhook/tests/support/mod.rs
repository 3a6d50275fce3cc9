//! Shared harness for the webhook's integration tests: a test PKI (rcgen), the real server
//! on 127.0.0.1:0 over HTTPS, a real `docker-registry` process with images pushed through
//! the distribution HTTP API, and `kubernetes-validate`.
//!
//! Tools are found on PATH; a missing one fails the test with a message naming it.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aegis_webhook::Config;
use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::{json, Value};

pub const SHIM_IMAGE: &str = "registry.example/aegis-init-shim:0.1.0";
pub const SAFE_URL: &str = "https://aegis-safe.aegis-system.svc:8443";

/// Directory of the captured AdmissionReviews.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/admission")
}

/// A captured AdmissionReview, parsed.
pub fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {name} is not JSON: {e}"))
}

/// A CA that issues serving certificates.
pub struct TestCa {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA cert");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `localhost` and 127.0.0.1: (cert PEM, key PEM).
    pub fn issue(&self) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("leaf params");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        (cert.pem(), key.serialize_pem())
    }
}

/// Files the server reads: TLS pair and Safe CA.
pub struct Files {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub safe_ca: PathBuf,
    pub safe_ca_pem: String,
}

impl Files {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new("aegis webhook test CA");
        let (cert_pem, key_pem) = ca.issue();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, cert_pem).expect("write cert");
        std::fs::write(&key, key_pem).expect("write key");
        let safe_ca_pem = TestCa::new("safe CA").pem;
        let safe_ca = dir.path().join("safe-ca.pem");
        std::fs::write(&safe_ca, &safe_ca_pem).expect("write safe ca");
        Self {
            dir,
            ca,
            cert,
            key,
            safe_ca,
            safe_ca_pem,
        }
    }

    pub fn config(&self) -> Config {
        let mut config = Config::new(
            self.cert.clone(),
            self.key.clone(),
            SAFE_URL,
            self.safe_ca.clone(),
            SHIM_IMAGE,
        );
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config
    }
}

/// The real server on a random loopback port, stopped on drop.
pub struct RunningServer {
    pub addr: SocketAddr,
    metrics: axum::Router,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<Result<(), aegis_webhook::WebhookError>>,
}

impl RunningServer {
    pub async fn start(config: Config) -> Self {
        let server = aegis_webhook::Server::from_config(config)
            .await
            .expect("server builds");
        Self::start_server(server).await
    }

    pub async fn start_server(server: aegis_webhook::Server) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = server.metrics_router();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = rx.await;
        }));
        Self {
            addr,
            metrics,
            stop: Some(tx),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// `GET /metrics` through the real metrics router (its listener is plain HTTP on a
    /// separate port in production; here the router is driven directly).
    pub async fn metrics_text(&self) -> String {
        use tower::ServiceExt as _;
        let request = http::Request::get("/metrics")
            .body(axum::body::Body::empty())
            .expect("request");
        let response = self
            .metrics
            .clone()
            .oneshot(request)
            .await
            .expect("metrics");
        assert_eq!(response.status(), 200);
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body")
            .to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = std::mem::replace(&mut self.task, tokio::spawn(async { Ok(()) }));
        task.await
            .expect("server task")
            .expect("server ran cleanly");
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An HTTPS client trusting only `ca_pems`, resolving `localhost` to the server.
pub fn https_client(ca_pems: &[&str], addr: SocketAddr) -> reqwest::Client {
    aegis_webhook::install_crypto_provider();
    let certs = ca_pems
        .iter()
        .map(|pem| reqwest::Certificate::from_pem(pem.as_bytes()).expect("CA pem"));
    reqwest::Client::builder()
        .tls_certs_only(certs)
        .resolve("localhost", addr)
        .build()
        .expect("client")
}

/// POSTs a review and returns the response review.
pub async fn post_review(
    client: &reqwest::Client,
    server: &RunningServer,
    review: &Value,
) -> Value {
    let response = client
        .post(server.url("/mutate"))
        .json(review)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "reviews are always answered 200");
    response.json().await.expect("JSON review")
}

/// Decodes the base64 JSONPatch of a response review.
pub fn patch_of(response: &Value) -> json_patch::Patch {
    let encoded = response["response"]["patch"]
        .as_str()
        .unwrap_or_else(|| panic!("no patch in {response}"));
    assert_eq!(response["response"]["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("JSON patch")
}

/// Validates an object against the Kubernetes schema of 1.33 with `kubernetes-validate
/// --strict` (unknown fields fail). Panics with the tool's output on failure.
pub fn kubernetes_validate(object: &Value) {
    let mut file = tempfile::Builder::new()
        .suffix(".json")
        .tempfile()
        .expect("temp file");
    file.write_all(object.to_string().as_bytes())
        .expect("write");
    let output = Command::new("kubernetes-validate")
        .args(["-k", "1.33.0", "--strict"])
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `kubernetes-validate` ({e}); install it with `pip install kubernetes-validate`"
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The tool exits 0 even for some failures; its verdict is in the text.
    assert!(
        output.status.success() && stdout.contains("passed") && !stdout.contains("ERROR"),
        "kubernetes-validate rejected the object:\n{stdout}\n{stderr}\n{object:#}"
    );
}

/// A real `docker-registry` (distribution 2.x) on 127.0.0.1, killed on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
    auth: Option<(String, String)>,
    http: reqwest::Client,
}

impl Registry {
    /// Starts a registry; with `auth`, it requires HTTP basic auth (htpasswd, bcrypt).
    pub async fn start(auth: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let hash = bcrypt::hash(password, 4).expect("bcrypt");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: aegis-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `docker-registry` ({e}); install the Debian package docker-registry")
            });
        aegis_webhook::install_crypto_provider();
        let registry = Self {
            child,
            port,
            _dir: dir,
            auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
            http: reqwest::Client::new(),
        };
        registry.wait_ready().await;
        registry
    }

    /// `127.0.0.1:PORT`, as written in image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let url = format!("http://{}/v2/", self.host());
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status() == 200 || r.status() == 401 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("docker-registry did not become ready on {}", self.host());
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, url);
        match &self.auth {
            Some((u, p)) => builder.basic_auth(u, Some(p)),
            None => builder,
        }
    }

    /// Uploads a blob; returns its descriptor parts (digest, size).
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> (String, usize) {
        let digest = sha256(data);
        let start = self
            .request(
                reqwest::Method::POST,
                &format!("http://{}/v2/{repo}/blobs/uploads/", self.host()),
            )
            .send()
            .await
            .expect("start upload");
        assert_eq!(
            start.status(),
            202,
            "blob upload start: {:?}",
            start.text().await
        );
        let location = start
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .expect("upload location")
            .to_owned();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("http://{}{location}", self.host())
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let done = self
            .request(
                reqwest::Method::PUT,
                &format!("{location}{separator}digest={digest}"),
            )
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .expect("finish upload");
        assert_eq!(done.status(), 201, "blob upload: {:?}", done.text().await);
        (digest, data.len())
    }

    /// Pushes a manifest of `media_type` under `reference`; returns (digest, size).
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &Value,
    ) -> (String, usize) {
        let bytes = serde_json::to_vec(body).expect("manifest JSON");
        let response = self
            .request(
                reqwest::Method::PUT,
                &format!("http://{}/v2/{repo}/manifests/{reference}", self.host()),
            )
            .header("content-type", media_type)
            .body(bytes.clone())
            .send()
            .await
            .expect("push manifest");
        assert_eq!(
            response.status(),
            201,
            "manifest push: {:?}",
            response.text().await
        );
        (sha256(&bytes), bytes.len())
    }

    /// Pushes a one-layer single-platform image with the given ENTRYPOINT and CMD.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        arch: &str,
        entrypoint: Option<&[&str]>,
        cmd: Option<&[&str]>,
    ) -> (String, usize) {
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Entrypoint": entrypoint, "Cmd": cmd, "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let (config_digest, config_size) = self
            .push_blob(repo, &serde_json::to_vec(&config).expect("config"))
            .await;
        let layer = format!("layer of {repo}:{tag} for {arch}");
        let (layer_digest, layer_size) = self.push_blob(repo, layer.as_bytes()).await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest, "size": layer_size}],
        });
        self.push_manifest(
            repo,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        )
        .await
    }

    /// Pushes an index of already pushed (digest, size, arch) manifests under `tag`.
    pub async fn push_index(
        &self,
        repo: &str,
        tag: &str,
        entries: &[(String, usize, &str)],
    ) -> (String, usize) {
        let manifests: Vec<Value> = entries
            .iter()
            .map(|(digest, size, arch)| {
                json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": digest, "size": size,
                       "platform": {"architecture": arch, "os": "linux"}})
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        self.push_manifest(repo, tag, "application/vnd.oci.image.index.v1+json", &index)
            .await
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Our own child, by PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (for tools that need a port on the command line).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn sha256(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A `.dockerconfigjson` for one registry.
pub fn docker_config_json(registry: &str, user: &str, password: &str) -> Vec<u8> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    serde_json::to_vec(&json!({"auths": {registry: {"auth": auth}}})).expect("json")
}
