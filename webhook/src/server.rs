//! HTTP wiring: the HTTPS admission listener, the plain-HTTP metrics listener, and the
//! metrics themselves.
//!
//! Routes on the HTTPS listener: `POST /mutate`, `GET /healthz`, `GET /readyz`. On the
//! metrics listener: `GET /metrics` (Prometheus text), `GET /healthz`, `GET /readyz`, so
//! probes need no TLS. Handlers only convert, time and count; the decision is
//! [`crate::admission::review`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::admission;
use crate::config::Config;
use crate::entrypoint::{EntrypointResolver, ResolverConfig, ResolverError};
use crate::mutate::InjectConfig;
use crate::pullsecret::KubeSecrets;
use crate::tls::{ReloadingCert, TlsError};

/// Largest AdmissionReview accepted: two objects of the API server's 1.5 MiB limit plus
/// envelope.
const MAX_REVIEW_BYTES: usize = 4 << 20;

/// Upper bounds (seconds) of the admission latency histogram.
const LATENCY_BUCKETS: [f64; 22] = [
    0.000_025, 0.000_05, 0.000_075, 0.000_1, 0.000_15, 0.000_2, 0.000_3, 0.000_4, 0.000_5,
    0.000_75, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Why the webhook could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The Safe CA file could not be read.
    #[error("cannot read the Safe CA file {path}: {source}")]
    SafeCa {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The Safe CA file holds no PEM certificate.
    #[error("the Safe CA file {0} holds no PEM certificate")]
    SafeCaEmpty(std::path::PathBuf),
    /// The registry CA file could not be read.
    #[error("cannot read the registry CA file {path}: {source}")]
    RegistryCa {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The serving certificate could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// rustls refused the server configuration.
    #[error("cannot configure TLS: {0}")]
    TlsConfig(#[source] rustls::Error),
    /// The registry client could not be built.
    #[error(transparent)]
    Resolver(#[from] ResolverError),
    /// `--pull-secrets` is set but no Kubernetes client could be configured.
    #[error("--pull-secrets needs access to the Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    /// A listener could not be bound or failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Admission counters and latency.
struct Metrics {
    registry: Registry,
    admissions: Family<OutcomeLabels, Counter>,
    latency: Histogram,
}

impl Metrics {
    fn new(resolver: &EntrypointResolver) -> Self {
        let mut registry = Registry::default();
        let admissions = Family::<OutcomeLabels, Counter>::default();
        // Fine below a millisecond (the fast path, and the 1 ms p99 objective), coarse
        // above (registry lookups, bounded by --registry-timeout).
        let latency = Histogram::new(LATENCY_BUCKETS.iter().copied());
        registry.register(
            "aegis_webhook_admissions",
            "Admission reviews by outcome (skipped, injected, denied, malformed)",
            admissions.clone(),
        );
        registry.register(
            "aegis_webhook_admission_duration_seconds",
            "Time to review one AdmissionReview, server side",
            latency.clone(),
        );
        resolver.register_metrics(&mut registry);
        Self {
            registry,
            admissions,
            latency,
        }
    }
}

struct AppState {
    inject: InjectConfig,
    resolver: EntrypointResolver,
    metrics: Metrics,
}

/// A configured webhook, ready to serve.
pub struct Server {
    state: Arc<AppState>,
    cert: Arc<ReloadingCert>,
    reload_interval: Duration,
    metrics_listen: Option<SocketAddr>,
}

impl Server {
    /// Reads the files the configuration names and builds the resolver (with the Kubernetes
    /// client when `--pull-secrets` is on).
    pub async fn from_config(config: Config) -> Result<Server, WebhookError> {
        crate::install_crypto_provider();
        let safe_ca_pem = std::fs::read_to_string(&config.safe_ca_file).map_err(|source| {
            WebhookError::SafeCa {
                path: config.safe_ca_file.clone(),
                source,
            }
        })?;
        if !safe_ca_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(WebhookError::SafeCaEmpty(config.safe_ca_file.clone()));
        }
        let mut extra_ca_pem = Vec::new();
        if let Some(path) = &config.registry_ca_file {
            extra_ca_pem.push(
                std::fs::read(path).map_err(|source| WebhookError::RegistryCa {
                    path: path.clone(),
                    source,
                })?,
            );
        }
        let cert = Arc::new(ReloadingCert::load(&config.tls_cert, &config.tls_key)?);
        let mut resolver = EntrypointResolver::new(ResolverConfig {
            timeout: config.registry_timeout,
            insecure_registries: config.insecure_registry.clone(),
            extra_ca_pem,
            cache_capacity: config.entrypoint_cache_size,
            cache_ttl: config.entrypoint_cache_ttl,
            reference_ttl: config.reference_cache_ttl,
        })?;
        if config.pull_secrets {
            let client = kube::Client::try_default()
                .await
                .map_err(WebhookError::Kube)?;
            resolver = resolver.with_pull_secrets(Arc::new(KubeSecrets::new(client)));
        }
        let inject = InjectConfig {
            shim_image: config.shim_image,
            safe_url: config.safe_url,
            safe_ca_pem,
            token_audience: config.token_audience,
            token_expiration_seconds: config.token_expiration_seconds,
            bin_volume_size_limit: config.bin_volume_size,
            shim_image_pull_policy: config.shim_image_pull_policy,
        };
        Ok(Self::from_parts(inject, resolver, cert)
            .with_reload_interval(config.tls_reload_interval)
            .with_metrics_listen(config.metrics_listen.0))
    }

    /// Assembles a server from already-built parts (tests and embedders that supply their
    /// own resolver, e.g. with a different pull-secret source).
    pub fn from_parts(
        inject: InjectConfig,
        resolver: EntrypointResolver,
        cert: Arc<ReloadingCert>,
    ) -> Server {
        let metrics = Metrics::new(&resolver);
        Server {
            state: Arc::new(AppState {
                inject,
                resolver,
                metrics,
            }),
            cert,
            reload_interval: Duration::from_secs(10),
            metrics_listen: None,
        }
    }

    /// How often the TLS files are polled.
    pub fn with_reload_interval(mut self, interval: Duration) -> Self {
        self.reload_interval = interval;
        self
    }

    /// Where the plain-HTTP metrics listener binds (`None`: no metrics listener).
    pub fn with_metrics_listen(mut self, addr: Option<SocketAddr>) -> Self {
        self.metrics_listen = addr;
        self
    }

    /// The admission router (served over HTTPS).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/mutate", post(mutate))
            .route("/healthz", get(ok))
            .route("/readyz", get(ok))
            .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
            .with_state(Arc::clone(&self.state))
    }

    /// The metrics router (served over plain HTTP).
    pub fn metrics_router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(ok))
            .route("/readyz", get(ok))
            .with_state(Arc::clone(&self.state))
    }

    /// The resolver, e.g. to read its counters.
    pub fn resolver(&self) -> &EntrypointResolver {
        &self.state.resolver
    }

    /// Serves HTTPS on `listener` (and metrics, if configured) until `shutdown` completes,
    /// then lets open connections finish for a bounded time.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), WebhookError> {
        let tls_config = self.cert.server_config().map_err(WebhookError::TlsConfig)?;
        let watcher = self.cert.spawn_watcher(self.reload_interval);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

        let metrics_task = match self.metrics_listen {
            Some(addr) => {
                let metrics_listener =
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| WebhookError::Listen {
                            addr: addr.to_string(),
                            source,
                        })?;
                tracing::info!(%addr, "serving metrics over HTTP");
                Some(tokio::spawn(aegis_net::serve_plain(
                    metrics_listener,
                    self.metrics_router(),
                    stop_rx.clone(),
                )))
            }
            None => None,
        };

        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving admission reviews over HTTPS");
        }
        // The shared loop: TLS handshake and header timeouts, bounded draining on stop.
        let api_task = tokio::spawn(aegis_net::serve_tls(
            listener,
            Arc::new(tls_config),
            self.router(),
            stop_rx,
        ));
        shutdown.await;
        tracing::info!("shutting down: draining open connections");
        let _ = stop_tx.send(true);
        let _ = api_task.await;
        watcher.abort();
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        Ok(())
    }
}

/// Builds the server from `config` and serves HTTPS on `listener` until `shutdown`.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WebhookError> {
    Server::from_config(config)
        .await?
        .serve(listener, shutdown)
        .await
}

async fn mutate(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let started = Instant::now();
    let (body, outcome) = admission::review(&body, &state.inject, &state.resolver).await;
    state
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .admissions
        .get_or_create(&OutcomeLabels {
            outcome: outcome.as_str(),
        })
        .inc();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn ok() -> &'static str {
    "ok"
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.metrics.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
