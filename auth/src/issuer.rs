//! The dev token issuer: an ES256 (P-256) key that signs tokens shaped exactly like the
//! projected ServiceAccount tokens of a real API server, for `aegis-safe dev`, the demo
//! and tests. The Safe verifies them with the same `jwks` code path as production tokens.
//!
//! Invariants: the private key (PKCS#8) is never logged or printed (`Debug` shows the kid
//! only), is zeroized when dropped, and is saved with mode 0600. The `kid` is the
//! base64url SHA-256 of the public point, so it changes exactly when the key does.

use crate::jwks::{JwksError, JwksVerifier};
use aegis_core::workload::is_dns1123_subdomain;
use aegis_core::{Workload, WorkloadError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

/// Issuer (`iss`) of dev tokens unless configured otherwise.
pub const DEV_ISSUER_URL: &str = "https://aegis-dev.local";

/// Why the dev issuer could not load, save or sign.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// The key file could not be read or written.
    #[error("dev issuer key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a PKCS#8 P-256 private key (as written by [`DevIssuer::save`]).
    #[error("dev issuer key file {0} is not a PKCS#8 ECDSA P-256 key")]
    BadKey(PathBuf),
    /// The system random generator or the signer failed.
    #[error("dev issuer crypto failure: {0}")]
    Crypto(&'static str),
    /// The namespace or ServiceAccount name is not a valid Kubernetes name.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// The pod name is not a valid Kubernetes name.
    #[error("pod name {0:?} is not a valid Kubernetes name")]
    BadPodName(String),
    /// The audience is empty.
    #[error("the token audience must not be empty")]
    EmptyAudience,
    /// The lifetime is zero or does not fit the clock.
    #[error("the token lifetime must be at least one second")]
    BadTtl,
}

/// A pod a token is bound to (`kubernetes.io.pod`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// Pod name.
    pub name: String,
    /// Pod uid; derived from namespace and name when `None`.
    pub uid: Option<String>,
}

/// Signs dev ServiceAccount tokens.
pub struct DevIssuer {
    pkcs8: Zeroizing<Vec<u8>>,
    key_pair: EcdsaKeyPair,
    kid: String,
    issuer: String,
    rng: SystemRandom,
}

impl fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl DevIssuer {
    /// A fresh P-256 key, issuer [`DEV_ISSUER_URL`].
    ///
    /// # Panics
    /// Never in practice: only if the operating system's random generator fails, in
    /// which case nothing secure can be done. Use [`Self::try_generate`] to handle it.
    pub fn generate() -> DevIssuer {
        match Self::try_generate() {
            Ok(issuer) => issuer,
            // The OS RNG failing is not an input error; there is no safe fallback.
            Err(e) => panic!("cannot generate the dev issuer key: {e}"),
        }
    }

    /// A fresh P-256 key, reporting a random generator failure instead of panicking.
    pub fn try_generate() -> Result<DevIssuer, IssuerError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| IssuerError::Crypto("key generation failed"))?;
        Self::from_pkcs8(Zeroizing::new(pkcs8.as_ref().to_vec()), rng)
            .map_err(|()| IssuerError::Crypto("generated key did not parse"))
    }

    /// Loads a key saved by [`Self::save`] (PKCS#8 DER).
    pub fn load(path: &Path) -> Result<DevIssuer, IssuerError> {
        let der = Zeroizing::new(std::fs::read(path).map_err(|source| IssuerError::Io {
            path: path.to_path_buf(),
            source,
        })?);
        Self::from_pkcs8(der, SystemRandom::new())
            .map_err(|()| IssuerError::BadKey(path.to_path_buf()))
    }

    fn from_pkcs8(pkcs8: Zeroizing<Vec<u8>>, rng: SystemRandom) -> Result<Self, ()> {
        let key_pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|_| ())?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key_pair.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(digest.as_ref());
        Ok(Self {
            pkcs8,
            key_pair,
            kid,
            issuer: DEV_ISSUER_URL.to_string(),
            rng,
        })
    }

    /// Writes the private key (PKCS#8 DER) to `path` with mode 0600, durably.
    pub fn save(&self, path: &Path) -> Result<(), IssuerError> {
        let io = |source| IssuerError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
            options.mode(0o600);
            let mut file = options.open(path).map_err(io)?;
            // An existing file keeps its mode on open; make sure it is 0600 before writing.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
            file.write_all(&self.pkcs8).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        #[cfg(not(unix))]
        {
            let mut file = options.open(path).map_err(io)?;
            file.write_all(&self.pkcs8).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        Ok(())
    }

    /// Uses `issuer` as the `iss` of issued tokens (and of [`Self::verifier`]).
    pub fn with_issuer_url(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// The `iss` of issued tokens.
    pub fn issuer_url(&self) -> &str {
        &self.issuer
    }

    /// The key id in token headers and the JWKS.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWKS document (what `/openid/v1/jwks` serves).
    pub fn jwks_json(&self) -> String {
        let point = self.key_pair.public_key().as_ref();
        // Uncompressed point: 0x04 || x (32) || y (32).
        let (x, y) = point
            .get(1..33)
            .zip(point.get(33..65))
            .unwrap_or((&[], &[]));
        json!({"keys": [{
            "use": "sig",
            "kty": "EC",
            "crv": "P-256",
            "kid": self.kid,
            "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
        }]})
        .to_string()
    }

    /// A verifier that accepts this issuer's tokens for `audience`.
    pub fn verifier(&self, audience: &str) -> Result<JwksVerifier, JwksError> {
        JwksVerifier::from_jwks_json(self.jwks_json().as_bytes(), &self.issuer, audience)
    }

    /// A token for ServiceAccount `namespace/service_account`, audience `audience`,
    /// valid from `now` for `ttl`, shaped like `kubectl create token`.
    pub fn issue(
        &self,
        namespace: &str,
        service_account: &str,
        audience: &str,
        ttl: Duration,
        now: i64,
    ) -> Result<String, IssuerError> {
        self.issue_inner(namespace, service_account, None, audience, ttl, now)
    }

    /// Like [`Self::issue`], bound to a pod as a projected volume token is.
    pub fn issue_for_pod(
        &self,
        namespace: &str,
        service_account: &str,
        pod: &PodRef,
        audience: &str,
        ttl: Duration,
        now: i64,
    ) -> Result<String, IssuerError> {
        self.issue_inner(namespace, service_account, Some(pod), audience, ttl, now)
    }

    fn issue_inner(
        &self,
        namespace: &str,
        service_account: &str,
        pod: Option<&PodRef>,
        audience: &str,
        ttl: Duration,
        now: i64,
    ) -> Result<String, IssuerError> {
        let workload = Workload::new(namespace, service_account)?;
        if audience.is_empty() {
            return Err(IssuerError::EmptyAudience);
        }
        let ttl = i64::try_from(ttl.as_secs()).map_err(|_| IssuerError::BadTtl)?;
        let exp = now
            .checked_add(ttl)
            .filter(|_| ttl > 0)
            .ok_or(IssuerError::BadTtl)?;
        let mut kubernetes = json!({
            "namespace": workload.namespace,
            "serviceaccount": {
                "name": workload.service_account,
                "uid": derived_uid(&["serviceaccount", namespace, service_account]),
            },
        });
        if let Some(pod) = pod {
            if !is_dns1123_subdomain(&pod.name) {
                return Err(IssuerError::BadPodName(pod.name.clone()));
            }
            let uid = pod
                .uid
                .clone()
                .unwrap_or_else(|| derived_uid(&["pod", namespace, &pod.name]));
            kubernetes["pod"] = json!({ "name": pod.name, "uid": uid });
        }
        // serde_json sorts keys, as the API server's Go encoder does.
        let claims = json!({
            "aud": [audience],
            "exp": exp,
            "iat": now,
            "iss": self.issuer,
            "jti": self.random_uuid()?,
            "kubernetes.io": kubernetes,
            "nbf": now,
            "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
        });
        self.sign_claims(&claims)
    }

    /// Signs arbitrary claims with this key (header `{"alg":"ES256","kid":...}`). For tests
    /// that need validly signed but otherwise wrong tokens; [`Self::issue`] for real ones.
    pub fn sign_claims(&self, claims: &serde_json::Value) -> Result<String, IssuerError> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let mut token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key_pair
            .sign(&self.rng, token.as_bytes())
            .map_err(|_| IssuerError::Crypto("signing failed"))?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        Ok(token)
    }

    /// A random RFC 4122 version-4 UUID (the API server's `jti`).
    fn random_uuid(&self) -> Result<String, IssuerError> {
        let mut b = [0u8; 16];
        self.rng
            .fill(&mut b)
            .map_err(|_| IssuerError::Crypto("random generator failed"))?;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Ok(format_uuid(&b))
    }
}

/// A stable UUID-shaped uid derived from names, so repeated tokens for one
/// ServiceAccount carry the same uid as a real one would.
fn derived_uid(parts: &[&str]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, parts.join("/").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(&b)
}

fn format_uuid(b: &[u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}
