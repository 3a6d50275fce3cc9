//! Wiring: configuration → state → listeners. `Server::from_config` gives a ready server
//! whose `router()` tests drive directly; `serve` is the production path (bind first so
//! probes answer, recover, then report ready; drain connections on shutdown).

use crate::commit::Committer;
use crate::crypto::Sealer;
use crate::metrics::Metrics;
use crate::rootkey::RootKeySource;
use crate::store::Store;
use crate::SafeError;
use aegis_core::{Limits, Workload};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;

/// How tokens are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// Local signature verification against a JWKS.
    Jwks {
        /// Where the keys come from.
        source: JwksSource,
        /// Expected `iss`.
        issuer: String,
        /// Expected audience.
        audience: String,
    },
    /// Kubernetes TokenReview through the in-cluster (or kubeconfig) client.
    TokenReview {
        /// Expected audience.
        audience: String,
        /// How long a positive review is cached (bounded by the token's `exp`).
        cache_ttl: Duration,
    },
}

/// Where the JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS JSON file (read once at start-up).
    File(PathBuf),
    /// A JWKS URL, refreshed when a token names an unknown key id.
    Url {
        /// The JWKS URL.
        url: String,
        /// CA certificate(s) (PEM file) to trust for it instead of the public roots.
        ca_file: Option<PathBuf>,
    },
    /// The issuer's OIDC discovery document (`<issuer>/.well-known/openid-configuration`),
    /// then its `jwks_uri`.
    Discovery {
        /// CA certificate(s) (PEM file) to trust for the issuer instead of the public roots.
        ca_file: Option<PathBuf>,
    },
}

/// Everything the Safe needs to run. Built by the CLI, or directly by tests.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTPS API address.
    pub listen: SocketAddr,
    /// Plain-HTTP metrics and probes address.
    pub metrics_listen: SocketAddr,
    /// Data directory (journal and snapshots).
    pub data_dir: PathBuf,
    /// PEM certificate chain of the API.
    pub tls_cert: PathBuf,
    /// PEM private key of the API.
    pub tls_key: PathBuf,
    /// Root key source.
    pub root_key: RootKeySource,
    /// Token verification.
    pub auth: AuthConfig,
    /// ServiceAccounts allowed to write, delete and list.
    pub admins: Vec<Workload>,
    /// Enforced limits.
    pub limits: Limits,
    /// Snapshot and start a new journal once the journal is this large.
    pub journal_rotate_bytes: u64,
}

/// Default journal size that triggers a snapshot.
pub const DEFAULT_JOURNAL_ROTATE_BYTES: u64 = 16 * 1024 * 1024;

/// What exists only once recovery finished.
pub(crate) struct Ready {
    pub(crate) store: Arc<Store>,
    pub(crate) committer: Committer,
    pub(crate) auth: aegis_auth::Authenticator,
}

/// Shared state of the handlers.
pub struct AppState {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) admins: Vec<Workload>,
    pub(crate) limits: Limits,
    ready: OnceLock<Ready>,
    // Serialises `initialize`: two recoveries of one directory must never run at once.
    init: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("admins", &self.admins)
            .field("ready", &self.ready.get().is_some())
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub(crate) fn ready(&self) -> Option<&Ready> {
        self.ready.get()
    }
}

/// The addresses a running Safe listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// HTTPS API.
    pub api: SocketAddr,
    /// Plain-HTTP metrics.
    pub metrics: SocketAddr,
}

/// A Safe: state plus its TLS configuration.
#[derive(Debug, Clone)]
pub struct Server {
    config: Config,
    state: Arc<AppState>,
    tls: Arc<rustls::ServerConfig>,
    cert: Arc<crate::tls::ReloadingCert>,
}

impl Server {
    /// Loads TLS material and creates the (not yet ready) state. No I/O beyond reading
    /// the certificate files.
    pub fn new(config: Config) -> Result<Self, SafeError> {
        let (cert, tls) = crate::tls::server_config(&config.tls_cert, &config.tls_key)?;
        let state = Arc::new(AppState {
            metrics: Arc::new(Metrics::new()),
            admins: config.admins.clone(),
            limits: config.limits,
            ready: OnceLock::new(),
            init: tokio::sync::Mutex::new(()),
        });
        Ok(Self {
            config,
            state,
            tls,
            cert,
        })
    }

    /// A ready server: [`Server::new`] followed by [`Server::initialize`].
    pub async fn from_config(config: Config) -> Result<Self, SafeError> {
        let s = Self::new(config)?;
        s.initialize().await?;
        Ok(s)
    }

    /// Loads the root key, recovers the data directory, sets up token verification, and
    /// marks the server ready. Idempotent.
    pub async fn initialize(&self) -> Result<(), SafeError> {
        let _guard = self.state.init.lock().await;
        if self.state.ready.get().is_some() {
            return Ok(());
        }
        let key = crate::rootkey::load(&self.config.root_key).await?;
        let sealer = Arc::new(Sealer::new(&key));
        drop(key);
        let dir = self.config.data_dir.clone();
        let limits = self.config.limits;
        let rec_sealer = Arc::clone(&sealer);
        let started = std::time::Instant::now();
        let (store, journal, report) = tokio::task::spawn_blocking(move || {
            crate::recovery::recover(&dir, &rec_sealer, limits)
        })
        .await
        .map_err(|e| SafeError::Internal(format!("recovery task: {e}")))??;
        let store = Arc::new(store);
        let (workloads, secrets) = store.counts();
        tracing::info!(
            data_dir = %self.config.data_dir.display(),
            generation = report.generation,
            snapshot_workloads = report.snapshot_workloads,
            journal_records = report.journal_records,
            torn_bytes_dropped = report.torn_bytes,
            workloads,
            secrets,
            millis = started.elapsed().as_millis() as u64,
            "state recovered"
        );
        let auth = build_authenticator(&self.config.auth).await?;
        let metrics = Arc::clone(&self.state.metrics);
        metrics.update_store(&store);
        metrics.journal_bytes.set(journal.len() as i64);
        let committer = Committer::start(
            journal,
            sealer,
            Arc::clone(&store),
            self.config.journal_rotate_bytes,
            Arc::clone(&metrics),
        );
        let ready = Ready {
            store,
            committer,
            auth,
        };
        // Cannot be set already: `init` is held and `ready` was checked under it.
        let _ = self.state.ready.set(ready);
        metrics.ready.set(1);
        Ok(())
    }

    /// The API router (HTTPS side), for `tower::ServiceExt::oneshot` in tests.
    pub fn router(&self) -> axum::Router {
        crate::api::router(Arc::clone(&self.state))
    }

    /// The metrics router (plain-HTTP side).
    pub fn metrics_router(&self) -> axum::Router {
        crate::api::metrics_router(Arc::clone(&self.state))
    }

    /// The TLS configuration of the API.
    pub fn tls_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.tls)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether recovery finished.
    pub fn is_ready(&self) -> bool {
        self.state.ready().is_some()
    }

    /// Stops the journal writer after queued writes (called on shutdown).
    pub fn shutdown_persistence(&self) {
        if let Some(r) = self.state.ready() {
            r.committer.shutdown();
        }
    }
}

async fn build_authenticator(cfg: &AuthConfig) -> Result<aegis_auth::Authenticator, SafeError> {
    let err = |e: &dyn std::fmt::Display| SafeError::Auth(e.to_string());
    Ok(match cfg {
        AuthConfig::Jwks {
            source: JwksSource::File(path),
            issuer,
            audience,
        } => aegis_auth::Authenticator::Jwks(
            aegis_auth::JwksVerifier::from_file(path, issuer, audience).map_err(|e| err(&e))?,
        ),
        AuthConfig::Jwks {
            source: JwksSource::Url { url, ca_file },
            issuer,
            audience,
        } => {
            let options = http_options(url, ca_file.as_deref())?;
            aegis_auth::Authenticator::Jwks(
                aegis_auth::JwksVerifier::from_jwks_url(url, issuer, audience, options)
                    .await
                    .map_err(|e| err(&e))?,
            )
        }
        AuthConfig::Jwks {
            source: JwksSource::Discovery { ca_file },
            issuer,
            audience,
        } => {
            let options = http_options(issuer, ca_file.as_deref())?;
            aegis_auth::Authenticator::Jwks(
                aegis_auth::JwksVerifier::from_discovery(issuer, audience, options)
                    .await
                    .map_err(|e| err(&e))?,
            )
        }
        AuthConfig::TokenReview {
            audience,
            cache_ttl,
        } => {
            let client = kube::Client::try_default().await.map_err(|e| err(&e))?;
            aegis_auth::Authenticator::TokenReview(aegis_auth::TokenReviewer::new(
                client,
                audience.clone(),
                *cache_ttl,
            ))
        }
    })
}

/// How often the certificate and key files are checked for a rotation.
const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// In-cluster ServiceAccount token, sent to an API server that serves discovery only to
/// authenticated clients (the Kubernetes default).
const IN_CLUSTER_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Whether `url` names the cluster's own API server, the only place the Safe's in-cluster
/// ServiceAccount token may be sent: an external OIDC issuer must never receive it.
pub fn is_in_cluster_api_server(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("https://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    matches!(
        host,
        "kubernetes"
            | "kubernetes.default"
            | "kubernetes.default.svc"
            | "kubernetes.default.svc.cluster.local"
    )
}

fn http_options(
    url: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<aegis_auth::HttpOptions, SafeError> {
    let ca_pem = match ca_file {
        Some(p) => Some(std::fs::read(p).map_err(|e| {
            SafeError::Config(format!("reading JWKS CA file {}: {e}", p.display()))
        })?),
        None => None,
    };
    let token = std::path::Path::new(IN_CLUSTER_TOKEN);
    Ok(aegis_auth::HttpOptions {
        ca_pem,
        bearer_token_file: (is_in_cluster_api_server(url) && token.exists())
            .then(|| token.to_path_buf()),
        ..Default::default()
    })
}

/// Production entry point: binds both listeners, recovers, serves until `shutdown`
/// completes, then drains connections and stops the journal writer.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), SafeError> {
    serve_notify(config, shutdown, |l| {
        tracing::info!(api = %l.api, metrics = %l.metrics, "aegis-safe ready");
    })
    .await
}

/// [`serve`], calling `on_ready` with the bound addresses once the Safe is ready.
pub async fn serve_notify(
    config: Config,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(Listening),
) -> Result<(), SafeError> {
    let server = Server::new(config)?;
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| SafeError::Bind { addr, source })
    };
    let api = bind(server.config.listen).await?;
    let metrics = bind(server.config.metrics_listen).await?;
    let listening = Listening {
        api: api.local_addr().map_err(|source| SafeError::Bind {
            addr: server.config.listen,
            source,
        })?,
        metrics: metrics.local_addr().map_err(|source| SafeError::Bind {
            addr: server.config.metrics_listen,
            source,
        })?,
    };
    tracing::info!(api = %listening.api, metrics = %listening.metrics, "listening; recovering state");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Rotated certificates (cert-manager, `helm upgrade`) are served without a restart.
    let cert_watcher = server.cert.spawn_watcher(TLS_RELOAD_INTERVAL);
    let api_task = tokio::spawn(aegis_net::serve_tls(
        api,
        server.tls_config(),
        server.router(),
        stop_rx.clone(),
    ));
    let metrics_task = tokio::spawn(aegis_net::serve_plain(
        metrics,
        server.metrics_router(),
        stop_rx,
    ));
    let result = async {
        server.initialize().await?;
        on_ready(listening);
        shutdown.await;
        Ok(())
    }
    .await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = api_task.await;
        let _ = metrics_task.await;
    })
    .await;
    cert_watcher.abort();
    let s = server.clone();
    let _ = tokio::task::spawn_blocking(move || s.shutdown_persistence()).await;
    tracing::info!("aegis-safe stopped");
    result
}

#[cfg(test)]
mod tests {
    use super::is_in_cluster_api_server;

    #[test]
    fn the_in_cluster_token_goes_only_to_the_clusters_api_server() {
        for url in [
            "https://kubernetes.default.svc/openid/v1/jwks",
            "https://kubernetes.default.svc.cluster.local",
            "https://kubernetes.default.svc:443/openid/v1/jwks",
            "https://kubernetes.default",
        ] {
            assert!(is_in_cluster_api_server(url), "{url}");
        }
        for url in [
            "http://kubernetes.default.svc/openid/v1/jwks",
            "https://oidc.eks.example.com/id/ABC",
            "https://kubernetes.default.svc.evil.example/jwks",
            "https://evil.example/kubernetes.default.svc",
            "kubernetes.default.svc",
        ] {
            assert!(!is_in_cluster_api_server(url), "{url}");
        }
    }
}
