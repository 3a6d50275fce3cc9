//! Shared helpers of the Safe's integration tests.
#![allow(dead_code)] // Each test binary uses a different subset.

use aegis_safe::client::{Reply, SafeClient};
use aegis_safe::DevSafe;
use std::path::{Path, PathBuf};

/// A dev Safe in a temporary directory with a client and an admin token.
pub struct Env {
    pub safe: DevSafe,
    pub client: SafeClient,
    pub admin: String,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let safe = DevSafe::start(dir.path()).unwrap();
        Self::wrap(safe, dir)
    }

    pub fn wrap(safe: DevSafe, dir: tempfile::TempDir) -> Self {
        let client = SafeClient::new(&safe.url, &safe.ca_pem).unwrap();
        let admin = safe.admin_token().unwrap();
        Self {
            safe,
            client,
            admin,
            dir,
        }
    }

    pub fn token(&self, ns: &str, sa: &str) -> String {
        self.safe.token(ns, sa).unwrap()
    }

    pub async fn req(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        self.client
            .request(method, path, token, body.map(|b| b.as_bytes().to_vec()))
            .await
            .unwrap()
    }

    pub async fn put(&self, ns: &str, sa: &str, key: &str, value: &str) -> Reply {
        let body = serde_json::json!({ "value": value }).to_string();
        let path = format!("/v1/workloads/{ns}/{sa}/secrets/{key}");
        self.req("PUT", &path, Some(&self.admin), Some(&body)).await
    }

    /// Status of `GET /v1/secrets` with `token`.
    pub async fn read_status(&self, token: &str) -> u16 {
        self.req("GET", "/v1/secrets", Some(token), None)
            .await
            .status
    }

    pub async fn secrets(&self, ns: &str, sa: &str) -> serde_json::Value {
        let t = self.token(ns, sa);
        let r = self.req("GET", "/v1/secrets", Some(&t), None).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.json()
    }
}

/// `../shared/fixtures/tokens/<name>` relative to the workspace.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/tokens")
        .join(name)
}

/// Every file under `dir`, recursively, with its bytes.
pub fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            let b = std::fs::read(&p).unwrap();
            out.push((p, b));
        }
    }
    out
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
