//! `jwks` mode: tokens verified locally against the issuer's public keys.
//!
//! The keys come from a JWKS document (bytes, a file) or from the issuer over HTTPS: OIDC
//! discovery (`{issuer}/.well-known/openid-configuration`, then its `jwks_uri`) or a JWKS
//! URL. Remote keys are re-fetched when a token names an unknown `kid` (key rotation), at
//! most once per [`MIN_REFRESH_INTERVAL`], so a flood of made-up `kid`s costs one request a
//! minute. Positive results are cached by token SHA-256 like in `tokenreview` mode.
//! The HTTP client trusts only the configured CA when one is given (else the public web
//! roots), never follows redirects, and sends the optional bearer token only over HTTPS.

use crate::cache::{digest_token, IdentityCache, DEFAULT_CACHE_CAPACITY};
use crate::error::AuthError;
use crate::jwt::{self, Expectations, KeySet, KeySetError};
use crate::Identity;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Unknown `kid`s trigger at most one key refresh per this interval.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Remote keys older than this are re-fetched (keys the issuer withdrew stop working).
pub const MAX_KEY_AGE: Duration = Duration::from_secs(3600);

/// Default lifetime of a cached positive result.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);

/// Discovery documents and JWKS larger than this are refused.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Why a [`JwksVerifier`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The JWKS document is not usable.
    #[error(transparent)]
    KeySet(#[from] KeySetError),
    /// A local file (JWKS, CA, bearer token) could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The CA PEM holds no certificate, or one rustls rejects.
    #[error("the issuer CA PEM is invalid: {0}")]
    BadCa(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// A bearer token file was given for a plain-HTTP URL, where it would travel in clear.
    #[error("refusing to send the bearer token to {0} over plain HTTP; use https")]
    InsecureBearer(String),
    /// A discovery or JWKS request failed.
    #[error("fetching {url} failed: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong (status, transport error, size).
        reason: String,
    },
    /// The discovery document is not OIDC metadata, or names another issuer.
    #[error("OIDC discovery at {url} is unusable: {reason}")]
    Discovery {
        /// The discovery URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// How to reach the issuer over HTTP.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Where to fetch discovery from instead of `{issuer}/.well-known/openid-configuration`
    /// (base URL; the well-known path is appended). For issuers not reachable at their name.
    pub discovery_base_url: Option<String>,
    /// PEM CA certificate(s) to trust for the issuer instead of the public web roots
    /// (in a cluster: `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`).
    pub ca_pem: Option<Vec<u8>>,
    /// File holding a bearer token (in a cluster the pod's own token, for API servers that
    /// do not serve discovery anonymously). Re-read for each request, and sent only over
    /// HTTPS to the origin the verifier was configured with (the discovery base or the JWKS
    /// URL), never to another host a discovery document names.
    pub bearer_token_file: Option<PathBuf>,
    /// Timeout of each request.
    pub timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            discovery_base_url: None,
            ca_pem: None,
            bearer_token_file: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Fetches JWKS documents for refreshes.
struct Remote {
    jwks_uri: String,
    client: HttpClient,
    /// When keys were last fetched; held across the fetch so concurrent misses wait once.
    last_fetch: tokio::sync::Mutex<Instant>,
}

impl Remote {
    /// GETs and parses the JWKS; the error says what failed, for `Unavailable`.
    async fn fetch(&self) -> Result<KeySet, String> {
        let body = self
            .client
            .get(&self.jwks_uri)
            .await
            .map_err(|reason| format!("refreshing keys from {}: {reason}", self.jwks_uri))?;
        KeySet::from_jwks_json(&body)
            .map_err(|e| format!("keys from {} are unusable: {e}", self.jwks_uri))
    }
}

/// Verifies ServiceAccount tokens against an issuer's JWKS.
pub struct JwksVerifier {
    expect: Expectations,
    keys: RwLock<Arc<KeySet>>,
    remote: Option<Remote>,
    refresh_interval: Duration,
    max_key_age: Duration,
    cache: IdentityCache,
}

impl JwksVerifier {
    /// From a JWKS document. `issuer` must equal the tokens' `iss`; `audience` must be in
    /// their `aud`.
    pub fn from_jwks_json(jwks: &[u8], issuer: &str, audience: &str) -> Result<Self, JwksError> {
        let keys = KeySet::from_jwks_json(jwks)?;
        Ok(Self::with_keys(keys, issuer, audience, None))
    }

    /// From a JWKS file (read once).
    pub fn from_file(path: &Path, issuer: &str, audience: &str) -> Result<Self, JwksError> {
        let bytes = read_file(path)?;
        Self::from_jwks_json(&bytes, issuer, audience)
    }

    /// From the issuer's OIDC discovery: `{issuer}/.well-known/openid-configuration` (or
    /// under `options.discovery_base_url`), whose `issuer` must equal `issuer`, then its
    /// `jwks_uri`. Keys are refreshed from `jwks_uri` on unknown `kid`s.
    pub async fn from_discovery(
        issuer: &str,
        audience: &str,
        options: HttpOptions,
    ) -> Result<Self, JwksError> {
        #[derive(Deserialize)]
        struct Metadata {
            issuer: String,
            jwks_uri: String,
        }
        let base = options.discovery_base_url.as_deref().unwrap_or(issuer);
        let client = HttpClient::new(&options, base)?;
        let url = format!(
            "{}/.well-known/openid-configuration",
            base.trim_end_matches('/')
        );
        let body = client.get(&url).await.map_err(|reason| JwksError::Fetch {
            url: url.clone(),
            reason,
        })?;
        let meta: Metadata = serde_json::from_slice(&body).map_err(|e| JwksError::Discovery {
            url: url.clone(),
            reason: format!("not OIDC provider metadata with issuer and jwks_uri: {e}"),
        })?;
        if meta.issuer != issuer {
            return Err(JwksError::Discovery {
                url,
                reason: format!(
                    "it is for issuer {:?}, not {issuer:?}; set the issuer to the API server's --service-account-issuer",
                    meta.issuer
                ),
            });
        }
        Self::from_remote(meta.jwks_uri, client, issuer, audience).await
    }

    /// From a JWKS URL (no discovery); refreshed like [`Self::from_discovery`].
    pub async fn from_jwks_url(
        jwks_url: &str,
        issuer: &str,
        audience: &str,
        options: HttpOptions,
    ) -> Result<Self, JwksError> {
        let client = HttpClient::new(&options, jwks_url)?;
        Self::from_remote(jwks_url.to_string(), client, issuer, audience).await
    }

    async fn from_remote(
        jwks_uri: String,
        client: HttpClient,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, JwksError> {
        let body = client
            .get(&jwks_uri)
            .await
            .map_err(|reason| JwksError::Fetch {
                url: jwks_uri.clone(),
                reason,
            })?;
        let keys = KeySet::from_jwks_json(&body)?;
        let remote = Remote {
            jwks_uri,
            client,
            last_fetch: tokio::sync::Mutex::new(Instant::now()),
        };
        Ok(Self::with_keys(keys, issuer, audience, Some(remote)))
    }

    fn with_keys(keys: KeySet, issuer: &str, audience: &str, remote: Option<Remote>) -> Self {
        Self {
            expect: Expectations::new(issuer, audience),
            keys: RwLock::new(Arc::new(keys)),
            remote,
            refresh_interval: MIN_REFRESH_INTERVAL,
            max_key_age: MAX_KEY_AGE,
            cache: IdentityCache::new(DEFAULT_CACHE_TTL, DEFAULT_CACHE_CAPACITY),
        }
    }

    /// Sets the clock-skew allowance for `exp` and `nbf` (default 30 s).
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.expect.leeway_secs = i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX);
        self
    }

    /// Sets how long, and how many, positive results are cached (default 60 s, 10,000).
    /// A zero TTL disables the cache.
    pub fn with_cache(mut self, ttl: Duration, capacity: usize) -> Self {
        self.cache = IdentityCache::new(ttl, capacity);
        self
    }

    /// Sets the minimum time between key refreshes triggered by unknown `kid`s (default
    /// [`MIN_REFRESH_INTERVAL`]; tests use zero).
    pub fn with_refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// Sets how old remote keys may get before they are re-fetched (default
    /// [`MAX_KEY_AGE`]).
    pub fn with_max_key_age(mut self, age: Duration) -> Self {
        self.max_key_age = age;
        self
    }

    /// The issuer tokens must name.
    pub fn issuer(&self) -> &str {
        &self.expect.issuer
    }

    /// The audience tokens must include.
    pub fn audience(&self) -> &str {
        &self.expect.audience
    }

    fn current_keys(&self) -> Arc<KeySet> {
        // A poisoned lock only means a writer panicked after building a whole KeySet;
        // the Arc inside is still a complete set.
        match self.keys.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Verifies with the current keys at `now`: no cache, no refresh. Pure given the keys.
    pub fn verify(&self, token: &str, now: i64) -> Result<Identity, AuthError> {
        let (claims, workload) = jwt::verify(token, &self.current_keys(), &self.expect, now)?;
        Ok(Identity {
            workload,
            expires_at: claims.exp,
        })
    }

    /// Verifies at `now` using the cache, refreshing remote keys once on an unknown `kid`.
    pub async fn authenticate_at(&self, token: &str, now: i64) -> Result<Identity, AuthError> {
        if token.len() > jwt::MAX_TOKEN_LEN {
            return Err(AuthError::TooLong {
                len: token.len(),
                max: jwt::MAX_TOKEN_LEN,
            });
        }
        let digest = digest_token(token);
        if let Some(hit) = self.cache.get(&digest, now) {
            return Ok(hit);
        }
        self.refresh_if_stale().await;
        let result = match self.verify(token, now) {
            Err(AuthError::UnknownKeyId(kid)) if self.remote.is_some() => {
                self.refresh().await?;
                self.verify(token, now).map_err(|e| match e {
                    AuthError::UnknownKeyId(_) => AuthError::UnknownKeyId(kid),
                    other => other,
                })
            }
            other => other,
        }?;
        self.cache.insert(digest, result.clone(), now);
        Ok(result)
    }

    /// Re-fetches remote keys unless fetched within the refresh interval.
    async fn refresh(&self) -> Result<(), AuthError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let mut last = remote.last_fetch.lock().await;
        if last.elapsed() < self.refresh_interval {
            return Ok(());
        }
        // Rate-limit failures too: a down issuer is asked once a minute, not per request.
        *last = Instant::now();
        let keys = remote.fetch().await.map_err(AuthError::Unavailable)?;
        self.install(keys, &remote.jwks_uri);
        Ok(())
    }

    /// Re-fetches keys older than the maximum key age, so a key the issuer withdrew stops
    /// being trusted. Never fails a request: on error the current keys stay, and the next
    /// attempt waits another interval. Skipped while another fetch is in progress.
    async fn refresh_if_stale(&self) {
        let Some(remote) = &self.remote else { return };
        let Ok(mut last) = remote.last_fetch.try_lock() else {
            return;
        };
        if last.elapsed() < self.max_key_age {
            return;
        }
        *last = Instant::now();
        match remote.fetch().await {
            Ok(keys) => self.install(keys, &remote.jwks_uri),
            Err(reason) => tracing::warn!(%reason, "keeping current issuer keys"),
        }
    }

    fn install(&self, keys: KeySet, jwks_uri: &str) {
        tracing::info!(%jwks_uri, keys = keys.keys().len(), "refreshed issuer keys");
        let fresh = Arc::new(keys);
        match self.keys.write() {
            Ok(mut g) => *g = fresh,
            Err(p) => *p.into_inner() = fresh,
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, JwksError> {
    std::fs::read(path).map_err(|source| JwksError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A small HTTPS GET client with a bounded body.
struct HttpClient {
    client: reqwest::Client,
    /// The bearer token file and the only origin it is sent to.
    bearer: Option<(PathBuf, String)>,
}

/// `scheme://host[:port]` of a URL, `None` if it does not parse.
fn origin(url: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .ok()
        .map(|u| u.origin().ascii_serialization())
}

impl HttpClient {
    /// A client; `trusted_url` is the configured URL whose origin may receive the bearer
    /// token (it must be HTTPS when a token file is set).
    fn new(options: &HttpOptions, trusted_url: &str) -> Result<Self, JwksError> {
        let bearer = match &options.bearer_token_file {
            None => None,
            Some(path) => match origin(trusted_url) {
                Some(o) if o.starts_with("https://") => Some((path.clone(), o)),
                _ => return Err(JwksError::InsecureBearer(trusted_url.to_string())),
            },
        };
        let mut roots = rustls::RootCertStore::empty();
        match &options.ca_pem {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| JwksError::BadCa(e.to_string()))?;
                    roots
                        .add(cert)
                        .map_err(|e| JwksError::BadCa(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(JwksError::BadCa("no CERTIFICATE block found".into()));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| JwksError::Client(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(options.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| JwksError::Client(e.to_string()))?;
        Ok(Self { client, bearer })
    }

    /// GET `url`; the body if the status is 2xx and it fits the size bound.
    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut request = self.client.get(url).header("accept", "application/json");
        let mut withheld = None;
        if let Some((path, trusted)) = &self.bearer {
            if origin(url).as_ref() == Some(trusted) {
                let token = std::fs::read_to_string(path).map_err(|e| {
                    format!("cannot read bearer token file {}: {e}", path.display())
                })?;
                request = request.bearer_auth(token.trim());
            } else {
                withheld = Some(trusted);
            }
        }
        let mut response = request.send().await.map_err(|e| error_chain(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(match withheld {
                Some(trusted) if matches!(status.as_u16(), 401 | 403) => format!(
                    "HTTP status {status}; the bearer token is sent only to {trusted} (for the \
                     in-cluster API server, configure the JWKS URL \
                     https://kubernetes.default.svc/openid/v1/jwks instead of discovery)"
                ),
                _ => format!("HTTP status {status}"),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("response larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// An error with its sources, so "error sending request" says why (refused, TLS, ...).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
