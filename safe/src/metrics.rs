//! Prometheus metrics: what an operator graphs (requests by action and outcome, latency,
//! store size, persistence latency and batch size, snapshots, failure state).

use crate::store::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of request counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `read`, `put`, `delete`, `list`, ...
    pub action: &'static str,
    /// `ok`, `unauthenticated`, `forbidden`, ...
    pub outcome: &'static str,
}

/// Labels of the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// The action.
    pub action: &'static str,
}

/// All metrics of one Safe.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by action and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency by action.
    pub request_seconds: Family<ActionLabels, Histogram>,
    /// Workloads holding at least one secret.
    pub workloads: Gauge,
    /// Secrets stored.
    pub secrets: Gauge,
    /// Time of one batch write + fsync.
    pub commit_seconds: Histogram,
    /// Records per batch.
    pub commit_batch_size: Histogram,
    /// Size of the current journal file.
    pub journal_bytes: Gauge,
    /// Snapshots written since start.
    pub snapshots: Counter,
    /// 1 once persistence failed (writes refused until restart).
    pub persistence_failed: Gauge,
    /// 1 once recovery finished.
    pub ready: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `aegis_safe` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("aegis_safe");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "API requests by action and outcome",
            requests.clone(),
        );
        let request_seconds = Family::<ActionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            "request_duration_seconds",
            "API request latency",
            request_seconds.clone(),
        );
        let workloads = Gauge::default();
        registry.register(
            "workloads",
            "Workloads holding at least one secret",
            workloads.clone(),
        );
        let secrets = Gauge::default();
        registry.register("secrets", "Secrets stored", secrets.clone());
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "journal_commit_duration_seconds",
            "Time to write and fsync one group-commit batch",
            commit_seconds.clone(),
        );
        let commit_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "journal_commit_batch_records",
            "Records written per group-commit batch",
            commit_batch_size.clone(),
        );
        let journal_bytes = Gauge::default();
        registry.register(
            "journal_bytes",
            "Size of the current journal file",
            journal_bytes.clone(),
        );
        let snapshots = Counter::default();
        registry.register(
            "snapshots",
            "Snapshots written since start",
            snapshots.clone(),
        );
        let persistence_failed = Gauge::default();
        registry.register(
            "persistence_failed",
            "1 when a journal write failed and writes are refused until restart",
            persistence_failed.clone(),
        );
        let ready = Gauge::default();
        registry.register("ready", "1 once state is recovered", ready.clone());
        Self {
            registry,
            requests,
            request_seconds,
            workloads,
            secrets,
            commit_seconds,
            commit_batch_size,
            journal_bytes,
            snapshots,
            persistence_failed,
            ready,
        }
    }

    /// Refreshes the store gauges.
    pub fn update_store(&self, store: &Store) {
        let (w, s) = store.counts();
        self.workloads.set(w as i64);
        self.secrets.set(s as i64);
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
