//! A real OCI registry for the end-to-end suite: Debian's `docker-registry` (the CNCF
//! Distribution registry) on `127.0.0.1:<free port>`, and an image pushed to it through the
//! OCI distribution API (monolithic blob uploads, then the manifest), exactly as `skopeo`
//! or `docker push` would.
//!
//! Invariant: the registry process is killed (by its PID) when [`Registry`] is dropped.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::tools::{self, ToolError};

/// Why the registry could not be started or an image pushed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// `docker-registry` is not installed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// Starting it or writing its configuration failed.
    #[error("docker-registry: {0}")]
    Io(#[source] std::io::Error),
    /// It did not answer `GET /v2/` in time.
    #[error("docker-registry did not become ready at {0}")]
    NotReady(SocketAddr),
    /// A distribution API call failed.
    #[error("registry push: {0}")]
    Push(String),
}

/// A running `docker-registry`.
#[derive(Debug)]
pub struct Registry {
    /// Its address (`127.0.0.1:<port>`), also the image reference prefix.
    pub addr: SocketAddr,
    child: Child,
}

impl Drop for Registry {
    fn drop(&mut self) {
        // The registry may have died already; nothing else to clean up.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain-HTTP client (the registry listens without TLS, as `--insecure-registry` expects).
/// reqwest is built without a default TLS provider, so it gets a ring-backed config that
/// trusts nothing: any TLS use would fail closed.
fn http_client() -> Result<reqwest::blocking::Client, RegistryError> {
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| RegistryError::Push(e.to_string()))?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::blocking::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| RegistryError::Push(e.to_string()))
}

fn sha256(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl Registry {
    /// Starts a registry storing its data under `dir`.
    pub fn start(dir: &Path) -> Result<Registry, RegistryError> {
        let bin = tools::find_tool(
            "docker-registry",
            "apt-get install docker-registry",
            tools::process_path().as_deref(),
        )?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(RegistryError::Io)?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config = dir.join("registry.yml");
        let storage = dir.join("registry-data");
        std::fs::create_dir_all(&storage).map_err(RegistryError::Io)?;
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                storage.display()
            ),
        )
        .map_err(RegistryError::Io)?;
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(RegistryError::Io)?;
        let registry = Registry { addr, child };
        let client = http_client()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if client
                .get(format!("http://{addr}/v2/"))
                .send()
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(registry);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(RegistryError::NotReady(addr))
    }

    /// Pushes a single-layer `linux/amd64` OCI image `repo:tag` whose config has this
    /// `Entrypoint` and `Cmd`; returns its reference (`127.0.0.1:<port>/repo:tag`).
    pub fn push_image(
        &self,
        repo: &str,
        tag: &str,
        entrypoint: &[&str],
        cmd: &[&str],
    ) -> Result<String, RegistryError> {
        let client = http_client()?;
        // An empty tar archive (two zero blocks): the layer's content does not matter here.
        let layer = vec![0u8; 1024];
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": entrypoint,
                "Cmd": cmd,
                "Env": [format!("PATH={}", crate::kubelet::DEFAULT_PATH)],
            },
            "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
        }))
        .map_err(|e| RegistryError::Push(e.to_string()))?;
        self.upload_blob(&client, repo, &layer)?;
        self.upload_blob(&client, repo, &config)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(&config),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": sha256(&layer),
                "size": layer.len(),
            }],
        });
        let response = client
            .put(format!("http://{}/v2/{repo}/manifests/{tag}", self.addr))
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.to_string())
            .send()
            .map_err(|e| RegistryError::Push(e.to_string()))?;
        if response.status().as_u16() != 201 {
            return Err(RegistryError::Push(format!(
                "manifest PUT: {}",
                response.status()
            )));
        }
        Ok(format!("{}/{repo}:{tag}", self.addr))
    }

    fn upload_blob(
        &self,
        client: &reqwest::blocking::Client,
        repo: &str,
        blob: &[u8],
    ) -> Result<(), RegistryError> {
        let push = |e: reqwest::Error| RegistryError::Push(e.to_string());
        let start = client
            .post(format!("http://{}/v2/{repo}/blobs/uploads/", self.addr))
            .send()
            .map_err(push)?;
        if start.status().as_u16() != 202 {
            return Err(RegistryError::Push(format!(
                "upload start: {}",
                start.status()
            )));
        }
        let location = start
            .headers()
            .get("Location")
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| RegistryError::Push("upload start: no Location".into()))?;
        let mut url = if location.starts_with("http") {
            location.to_string()
        } else {
            format!("http://{}{location}", self.addr)
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={}", sha256(blob)));
        let done = client
            .put(url)
            .header("Content-Type", "application/octet-stream")
            .body(blob.to_vec())
            .send()
            .map_err(push)?;
        if done.status().as_u16() != 201 {
            return Err(RegistryError::Push(format!("blob PUT: {}", done.status())));
        }
        Ok(())
    }
}

/// The image config a registry serves for `reference`, for assertions.
pub fn image_config(reference: &str) -> Option<Value> {
    let (host, rest) = reference.split_once('/')?;
    let (repo, tag) = rest.rsplit_once(':')?;
    let client = http_client().ok()?;
    let manifest: Value = client
        .get(format!("http://{host}/v2/{repo}/manifests/{tag}"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .ok()?
        .json()
        .ok()?;
    let digest = manifest["config"]["digest"].as_str()?;
    client
        .get(format!("http://{host}/v2/{repo}/blobs/{digest}"))
        .send()
        .ok()?
        .json()
        .ok()
}
