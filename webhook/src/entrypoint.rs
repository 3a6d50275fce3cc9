//! Original entrypoints from image registries, for containers that set no `command`.
//!
//! A lookup reads the image's manifest (picking the pod's architecture from a multi-arch
//! index), then its config blob, through the OCI distribution API (`oci-client`), with the
//! pod's pull Secrets or anonymously.
//!
//! Two caches keep admission fast and bounded:
//! - reference → manifest digest, keyed also by architecture and by the credential used,
//!   with a short TTL (tags move; and a pod without access must not ride on another
//!   namespace's credentials);
//! - manifest digest → entrypoint, bounded and with a longer TTL (content-addressed, so it
//!   never goes stale; the TTL only returns memory).
//!
//! Invariant: a whole pod's lookups finish within [`ResolverConfig::timeout`]; whatever is
//! unknown by then is recorded as a failure, which denies the pod.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use crate::mutate::{ImageLookup, ResolvedEntrypoints};
use crate::pullsecret::{Credentials, PullSecretSource};

/// How long a pull Secret read from the API is reused (a rotated credential is picked up
/// within this time).
const PULL_SECRET_TTL: Duration = Duration::from_secs(30);

/// Largest image config blob the webhook reads; real ones are a few KiB.
const MAX_CONFIG_BYTES: i64 = 1 << 20;

/// An image's `ENTRYPOINT` and `CMD` (either may be empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageEntrypoint {
    /// `config.Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `config.Cmd`.
    pub cmd: Vec<String>,
}

/// How images are looked up.
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// Deadline for all lookups of one pod (keep it well under the webhook's timeout).
    pub timeout: Duration,
    /// Registries (`host:port` as in image references) reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Extra CA certificates (PEM) trusted for registries, besides the system roots.
    pub extra_ca_pem: Vec<Vec<u8>>,
    /// Maximum entries in the digest → entrypoint cache.
    pub cache_capacity: usize,
    /// Lifetime of a digest → entrypoint entry.
    pub cache_ttl: Duration,
    /// Lifetime of a reference → digest entry (tags can move).
    pub reference_ttl: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(3),
            insecure_registries: Vec::new(),
            extra_ca_pem: Vec::new(),
            cache_capacity: 1024,
            cache_ttl: Duration::from_secs(3600),
            reference_ttl: Duration::from_secs(60),
        }
    }
}

/// Why a resolver could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    /// The registry HTTP client could not be built (bad extra CA, TLS backend).
    #[error("cannot build the registry client: {0}")]
    Client(#[source] OciDistributionError),
}

/// Why one image's entrypoint is unknown. Its message becomes the `reason` of the deny.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    /// The container has no image.
    #[error("the container has no image")]
    NoImage,
    /// The image reference does not parse.
    #[error("the image reference is invalid: {0}")]
    BadReference(String),
    /// Nothing answered in time.
    #[error("the registry did not answer within {0:?}")]
    Timeout(Duration),
    /// The registry could not be reached at all.
    #[error("cannot connect to registry {registry}: {detail}")]
    Connect {
        /// Registry host.
        registry: String,
        /// The transport error.
        detail: String,
    },
    /// The image or tag does not exist, or is hidden from these credentials.
    #[error("image not found in registry {registry}{hint}")]
    NotFound {
        /// Registry host.
        registry: String,
        /// A hint about credentials, when none were used.
        hint: String,
    },
    /// The registry refused the credentials (or their absence).
    #[error("registry {registry} refused access{hint}")]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// A hint about credentials.
        hint: String,
    },
    /// A multi-arch index has no entry for the pod's platform.
    #[error("the image index has no linux/{arch} image (pin another with nodeSelector kubernetes.io/arch)")]
    NoPlatform {
        /// The architecture asked for.
        arch: String,
    },
    /// The image config is missing, too large or not JSON.
    #[error("the image config is unusable: {0}")]
    BadConfig(String),
    /// Any other registry or protocol failure.
    #[error("registry lookup failed: {0}")]
    Registry(String),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
}

/// Counters an operator graphs; also read by tests.
#[derive(Clone, Default)]
struct ResolverMetrics {
    lookups: Family<OutcomeLabels, Counter>,
    cache_hits: Family<CacheLabels, Counter>,
    registry_fetches: Counter,
}

/// Snapshot of the resolver's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolverStats {
    /// Lookups answered from the reference cache without any network.
    pub cached: u64,
    /// Lookups that went to a registry and succeeded.
    pub resolved: u64,
    /// Lookups that waited for an identical lookup already in flight and shared its result.
    pub shared: u64,
    /// Lookups that failed.
    pub failed: u64,
    /// HTTP fetches of manifests and config blobs.
    pub registry_fetches: u64,
    /// Config blob fetches avoided by the digest cache.
    pub digest_cache_hits: u64,
}

/// The shared outcome of one in-flight lookup.
type Flight = tokio::sync::OnceCell<Result<ImageEntrypoint, LookupError>>;

/// Looks up original entrypoints; cheap to share (`Arc`) across requests.
pub struct EntrypointResolver {
    /// Anonymous pulls only. `oci-client` remembers the first credentials it is given per
    /// registry, so a client that ever saw credentials is never used for anyone else.
    client: Client,
    /// One client per distinct credential (keyed by its hash).
    credentialed: TtlCache<u64, Client>,
    config: ResolverConfig,
    secrets: Option<Arc<dyn PullSecretSource>>,
    references: TtlCache<String, String>,
    digests: TtlCache<String, ImageEntrypoint>,
    /// Pull Secrets read recently, by `namespace/name` (`None`: absent).
    pull_secrets: TtlCache<String, Option<Secret>>,
    /// Lookups in progress, by reference-cache key, shared by concurrent callers.
    inflight: Mutex<HashMap<String, Arc<Flight>>>,
    metrics: ResolverMetrics,
    /// Keyed hashing of credentials for cache keys; random per process.
    hasher: std::collections::hash_map::RandomState,
}

impl EntrypointResolver {
    /// A resolver that pulls anonymously until [`Self::with_pull_secrets`] is given a source.
    pub fn new(config: ResolverConfig) -> Result<Self, ResolverError> {
        crate::install_crypto_provider();
        let client = build_client(&config).map_err(ResolverError::Client)?;
        Ok(Self {
            client,
            credentialed: TtlCache::new(64, Duration::from_secs(600)),
            references: TtlCache::new(config.cache_capacity, config.reference_ttl),
            digests: TtlCache::new(config.cache_capacity, config.cache_ttl),
            inflight: Mutex::new(HashMap::new()),
            pull_secrets: TtlCache::new(256, PULL_SECRET_TTL),
            config,
            secrets: None,
            metrics: ResolverMetrics::default(),
            hasher: std::collections::hash_map::RandomState::new(),
        })
    }

    /// Reads the pods' `imagePullSecrets` from `source`.
    pub fn with_pull_secrets(mut self, source: Arc<dyn PullSecretSource>) -> Self {
        self.secrets = Some(source);
        self
    }

    /// Registers the lookup counters (`aegis_webhook_registry_lookups`,
    /// `aegis_webhook_entrypoint_cache_hits`, `aegis_webhook_registry_fetches`).
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "aegis_webhook_registry_lookups",
            "Image entrypoint lookups by outcome (cached, resolved, shared, failed)",
            self.metrics.lookups.clone(),
        );
        registry.register(
            "aegis_webhook_entrypoint_cache_hits",
            "Entrypoint cache hits by cache (reference, digest)",
            self.metrics.cache_hits.clone(),
        );
        registry.register(
            "aegis_webhook_registry_fetches",
            "HTTP fetches of manifests and image configs",
            self.metrics.registry_fetches.clone(),
        );
    }

    /// Current counters.
    pub fn stats(&self) -> ResolverStats {
        let outcome = |o| {
            self.metrics
                .lookups
                .get_or_create(&OutcomeLabels { outcome: o })
                .get()
        };
        ResolverStats {
            cached: outcome("cached"),
            resolved: outcome("resolved"),
            shared: outcome("shared"),
            failed: outcome("failed"),
            registry_fetches: self.metrics.registry_fetches.get(),
            digest_cache_hits: self
                .metrics
                .cache_hits
                .get_or_create(&CacheLabels { cache: "digest" })
                .get(),
        }
    }

    /// Resolves every lookup of `pod` concurrently, within the configured timeout.
    /// Failures are recorded per container with their reason; this never fails as a whole.
    pub async fn resolve(&self, pod: &Pod, lookups: &[ImageLookup]) -> ResolvedEntrypoints {
        let mut resolved = ResolvedEntrypoints::new();
        if lookups.is_empty() {
            return resolved;
        }
        let work = async {
            let (credentials, warnings) = self.credentials(pod).await;
            let credentials = &credentials;
            let results = futures_util::future::join_all(lookups.iter().map(|l| async move {
                let outcome = self.lookup_with(credentials, &l.image, &l.arch).await;
                (l, outcome)
            }))
            .await;
            (results, warnings)
        };
        match tokio::time::timeout(self.config.timeout, work).await {
            Ok((results, warnings)) => {
                for (lookup, outcome) in results {
                    let outcome = outcome.map_err(|e| {
                        let mut reason = e.to_string();
                        for w in &warnings {
                            reason.push_str(&format!(" (also: {w})"));
                        }
                        reason
                    });
                    resolved.insert(lookup.container.clone(), outcome);
                }
            }
            Err(_) => {
                for lookup in lookups {
                    self.count("failed");
                    resolved.insert(
                        lookup.container.clone(),
                        Err(LookupError::Timeout(self.config.timeout).to_string()),
                    );
                }
            }
        }
        resolved
    }

    /// Looks up one image with explicit credentials (no timeout of its own; the caller
    /// bounds it). Used by [`Self::resolve`] and by benchmarks.
    pub async fn lookup(
        &self,
        image: &str,
        arch: &str,
        auth: &RegistryAuth,
    ) -> Result<ImageEntrypoint, LookupError> {
        let outcome = self.lookup_inner(image, arch, auth).await;
        if outcome.is_err() {
            self.count("failed");
        }
        outcome
    }

    async fn lookup_with(
        &self,
        credentials: &Credentials,
        image: &str,
        arch: &str,
    ) -> Result<ImageEntrypoint, LookupError> {
        let reference = parse_reference(image)?;
        let auth = credentials.for_image(reference.resolve_registry(), reference.repository());
        self.lookup(image, arch, &auth).await
    }

    async fn lookup_inner(
        &self,
        image: &str,
        arch: &str,
        auth: &RegistryAuth,
    ) -> Result<ImageEntrypoint, LookupError> {
        let credential_id = self.credential_id(auth);
        let key = format!("{image}\n{arch}\n{credential_id:x}");
        if let Some(digest) = self.references.get(&key) {
            if let Some(found) = self.digests.get(&digest) {
                self.count("cached");
                self.hit("reference");
                return Ok(found);
            }
        }
        // Pods created together (a DaemonSet, a scaled Deployment) ask for the same image at
        // once: one registry round trip serves them all.
        let flight = {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(inflight.entry(key.clone()).or_default())
        };
        let mut led = false;
        let outcome = flight
            .get_or_init(|| {
                led = true;
                self.fetch(image, arch, auth, credential_id, key.clone())
            })
            .await
            .clone();
        {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            if inflight.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                inflight.remove(&key);
            }
        }
        if !led && outcome.is_ok() {
            self.count("shared");
        }
        outcome
    }

    /// One registry resolution: manifest (and platform manifest), then config unless cached
    /// by digest.
    async fn fetch(
        &self,
        image: &str,
        arch: &str,
        auth: &RegistryAuth,
        credential_id: u64,
        key: String,
    ) -> Result<ImageEntrypoint, LookupError> {
        let reference = parse_reference(image)?;
        let registry = reference.resolve_registry().to_owned();
        let used_credentials = !matches!(auth, RegistryAuth::Anonymous);
        let classify = |e| classify(e, &registry, used_credentials);
        let client = self.client_for(auth, credential_id)?;

        self.metrics.registry_fetches.inc();
        let (manifest, digest) = client
            .pull_manifest(&reference, auth)
            .await
            .map_err(classify)?;
        let (manifest, digest) = match manifest {
            OciManifest::Image(m) => (m, digest),
            OciManifest::ImageIndex(index) => {
                let entry = index
                    .manifests
                    .iter()
                    .find(|e| {
                        e.platform.as_ref().is_some_and(|p| {
                            p.os.to_string() == "linux" && p.architecture.to_string() == arch
                        })
                    })
                    .ok_or_else(|| LookupError::NoPlatform {
                        arch: arch.to_owned(),
                    })?;
                let platform_ref = reference.clone_with_digest(entry.digest.clone());
                self.metrics.registry_fetches.inc();
                match client
                    .pull_manifest(&platform_ref, auth)
                    .await
                    .map_err(classify)?
                {
                    (OciManifest::Image(m), _) => (m, entry.digest.clone()),
                    (OciManifest::ImageIndex(_), _) => {
                        return Err(LookupError::Registry(
                            "the index entry for this platform is itself an index".to_owned(),
                        ))
                    }
                }
            }
        };
        self.references.insert(key, digest.clone());
        if let Some(found) = self.digests.get(&digest) {
            self.hit("digest");
            self.count("resolved");
            return Ok(found);
        }
        let found = self
            .fetch_config(&client, &reference, &manifest, auth, &classify)
            .await?;
        self.digests.insert(digest, found.clone());
        self.count("resolved");
        Ok(found)
    }

    async fn fetch_config(
        &self,
        client: &Client,
        reference: &Reference,
        manifest: &OciImageManifest,
        auth: &RegistryAuth,
        classify: &impl Fn(OciDistributionError) -> LookupError,
    ) -> Result<ImageEntrypoint, LookupError> {
        if manifest.config.size > MAX_CONFIG_BYTES {
            return Err(LookupError::BadConfig(format!(
                "config blob of {} bytes is larger than {MAX_CONFIG_BYTES}",
                manifest.config.size
            )));
        }
        // `pull_blob` uses the credentials stored by `pull_manifest` for this registry.
        client
            .store_auth_if_needed(reference.resolve_registry(), auth)
            .await;
        self.metrics.registry_fetches.inc();
        let mut blob = Vec::new();
        client
            .pull_blob(reference, &manifest.config, &mut blob)
            .await
            .map_err(classify)?;
        parse_image_config(&blob)
    }

    async fn credentials(&self, pod: &Pod) -> (Credentials, Vec<String>) {
        let Some(source) = &self.secrets else {
            return (Credentials::default(), Vec::new());
        };
        let names: Vec<&str> = pod
            .spec
            .iter()
            .flat_map(|s| s.image_pull_secrets.iter().flatten())
            .map(|r| r.name.as_str())
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return (Credentials::default(), Vec::new());
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let fetched = futures_util::future::join_all(names.iter().map(|name| async move {
            let cache_key = format!("{namespace}/{name}");
            if let Some(found) = self.pull_secrets.get(&cache_key) {
                return (*name, Ok(found));
            }
            let outcome = source.get(namespace, name).await;
            // Reads that failed are retried by the next pod; answers (including "absent")
            // are kept briefly so a burst of pods costs one API read per Secret.
            if let Ok(found) = &outcome {
                self.pull_secrets.insert(cache_key, found.clone());
            }
            (*name, outcome)
        }))
        .await;
        let mut secrets: Vec<(String, Secret)> = Vec::new();
        let mut warnings = Vec::new();
        for (name, outcome) in fetched {
            match outcome {
                Ok(Some(secret)) => secrets.push((name.to_owned(), secret)),
                Ok(None) => {
                    warnings.push(format!("imagePullSecret {namespace}/{name} does not exist"))
                }
                Err(e) => {
                    tracing::warn!(%namespace, secret = %name, error = %e, "cannot read pull secret");
                    warnings.push(e.to_string());
                }
            }
        }
        let (credentials, errors) = Credentials::from_secrets(namespace, &secrets);
        warnings.extend(errors.iter().map(ToString::to_string));
        (credentials, warnings)
    }

    /// The client to use with `auth`: the shared anonymous one, or one dedicated to
    /// exactly this credential.
    fn client_for(&self, auth: &RegistryAuth, credential_id: u64) -> Result<Client, LookupError> {
        if matches!(auth, RegistryAuth::Anonymous) {
            return Ok(self.client.clone());
        }
        if let Some(client) = self.credentialed.get(&credential_id) {
            return Ok(client);
        }
        let client = build_client(&self.config)
            .map_err(|e| LookupError::Registry(format!("cannot build a registry client: {e}")))?;
        self.credentialed.insert(credential_id, client.clone());
        Ok(client)
    }

    fn credential_id(&self, auth: &RegistryAuth) -> u64 {
        let mut h = self.hasher.build_hasher();
        match auth {
            RegistryAuth::Anonymous => 0u8.hash(&mut h),
            RegistryAuth::Basic(user, password) => (1u8, user, password).hash(&mut h),
            RegistryAuth::Bearer(token) => (2u8, token).hash(&mut h),
        }
        h.finish()
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .lookups
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    fn hit(&self, cache: &'static str) {
        self.metrics
            .cache_hits
            .get_or_create(&CacheLabels { cache })
            .inc();
    }
}

fn build_client(config: &ResolverConfig) -> Result<Client, OciDistributionError> {
    Client::try_from(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(config.insecure_registries.clone()),
        extra_root_certificates: config
            .extra_ca_pem
            .iter()
            .map(|pem| Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.clone(),
            })
            .collect(),
        // Indexes are resolved here, per pod architecture.
        platform_resolver: None,
        connect_timeout: Some(config.timeout),
        read_timeout: Some(config.timeout),
        user_agent: concat!("aegis-webhook/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    })
}

fn parse_reference(image: &str) -> Result<Reference, LookupError> {
    if image.is_empty() {
        return Err(LookupError::NoImage);
    }
    image
        .parse::<Reference>()
        .map_err(|e| LookupError::BadReference(e.to_string()))
}

/// Turns a client error into a reason a user can act on.
fn classify(error: OciDistributionError, registry: &str, used_credentials: bool) -> LookupError {
    let registry = registry.to_owned();
    let hint = if used_credentials {
        " with the pod's imagePullSecrets".to_owned()
    } else {
        " (no imagePullSecret matched this registry; add one if the image is private)".to_owned()
    };
    match error {
        OciDistributionError::RequestError(e) if e.is_timeout() => {
            LookupError::Registry(format!("registry {registry} timed out"))
        }
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_request() => {
            LookupError::Connect {
                registry,
                detail: error_chain(&e),
            }
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
                )
            }) =>
        {
            LookupError::NotFound { registry, hint }
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)) =>
        {
            LookupError::Unauthorized { registry, hint }
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => {
            LookupError::Unauthorized { registry, hint }
        }
        OciDistributionError::ImageManifestNotFoundError(_) => {
            LookupError::NotFound { registry, hint }
        }
        OciDistributionError::ServerError { code: 404, .. } => {
            LookupError::NotFound { registry, hint }
        }
        other => LookupError::Registry(error_chain(&other)),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The parts of an OCI/Docker image config the webhook needs.
#[derive(Deserialize)]
struct ImageConfigFile {
    #[serde(default)]
    config: Option<ImageConfigBody>,
}

#[derive(Deserialize)]
struct ImageConfigBody {
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
}

/// Reads ENTRYPOINT and CMD from an image config blob.
pub fn parse_image_config(blob: &[u8]) -> Result<ImageEntrypoint, LookupError> {
    let file: ImageConfigFile = serde_json::from_slice(blob)
        .map_err(|e| LookupError::BadConfig(format!("not an image config: {e}")))?;
    let body = file.config.unwrap_or(ImageConfigBody {
        entrypoint: None,
        cmd: None,
    });
    Ok(ImageEntrypoint {
        entrypoint: body.entrypoint.unwrap_or_default(),
        cmd: body.cmd.unwrap_or_default(),
    })
}

/// A small map with a capacity bound and per-entry expiry. Inserts are rare (one per
/// registry round trip), so eviction may scan; reads are a lock and a hash lookup.
struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    capacity: usize,
    ttl: Duration,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            ttl,
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        // A panic elsewhere cannot leave the map half-updated (every update is one call).
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(key) {
            Some((value, at)) if at.elapsed() < self.ttl => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(key, (value, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_config_entrypoint_and_cmd_are_read() {
        let blob = br#"{"architecture":"amd64","os":"linux",
            "config":{"Entrypoint":["/bin/app"],"Cmd":["--serve"],"Env":["A=1"]}}"#;
        let found = parse_image_config(blob).expect("valid config");
        assert_eq!(found.entrypoint, vec!["/bin/app"]);
        assert_eq!(found.cmd, vec!["--serve"]);
    }

    #[test]
    fn image_config_without_config_section_has_empty_entrypoint() {
        let found = parse_image_config(br#"{"os":"linux"}"#).expect("valid config");
        assert_eq!(found, ImageEntrypoint::default());
        assert!(parse_image_config(b"not json").is_err());
    }

    #[test]
    fn cache_expires_entries_and_respects_its_bound() {
        let cache = TtlCache::new(2, Duration::from_millis(50));
        cache.insert("a", 1);
        cache.insert("b", 2);
        cache.insert("c", 3);
        assert_eq!(cache.entries.lock().map(|e| e.len()).unwrap_or(0), 2);
        assert_eq!(cache.get(&"a"), None, "oldest evicted");
        assert_eq!(cache.get(&"c"), Some(3));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&"c"), None, "expired");
    }
}
