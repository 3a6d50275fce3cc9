//! Group commit: one writer thread owns the journal and is the only mutator of the store.
//!
//! Requests queue on a channel. The writer takes everything queued (up to a bound), decides
//! each mutation against the state as it will be after the earlier ones in the batch,
//! seals the records into one buffer, writes it with one `write` and one `fdatasync`, then
//! publishes the new workload states to the store, in journal order, and answers every
//! caller. Because the store changes only here and only after the fsync, a snapshot taken
//! by this thread between batches is exactly the state at the journal's end.
//!
//! If a write or fsync fails, the outcome of that batch on disk is unknown, so the writer
//! stops accepting writes (every later write gets 503) instead of risking a divergence
//! between memory and disk; reads keep working. Restarting recovers from the files.

use crate::crypto::Sealer;
use crate::format::Record;
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::store::{now_ms, rfc3339, Store, WorkloadState};
use aegis_core::{PutSecretResponse, SecretValue, Workload};
use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// Largest number of mutations in one batch (bounds the write size and the latency of the
/// first caller in the batch).
const MAX_BATCH: usize = 1024;

/// A requested change.
pub enum Mutation {
    /// Create or update `key`.
    Put {
        /// Target workload.
        workload: Workload,
        /// Key (already validated).
        key: String,
        /// Value (already validated).
        value: SecretValue,
    },
    /// Delete `key`.
    Delete {
        /// Target workload.
        workload: Workload,
        /// Key (already validated).
        key: String,
    },
}

/// A durable change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Stored; `created` is true for a new key.
    Put {
        /// Reply body of the API.
        response: PutSecretResponse,
        /// Whether the key was new.
        created: bool,
    },
    /// Deleted.
    Deleted,
}

/// Why a change was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// Delete of a key that does not exist.
    #[error("no secret {key:?} for workload {workload}")]
    NotFound {
        /// Workload.
        workload: String,
        /// Key.
        key: String,
    },
    /// The per-workload quota would be exceeded.
    #[error("{0}")]
    Quota(String),
    /// Persistence is not available (failed earlier, or shutting down).
    #[error("{0}")]
    Unavailable(String),
}

enum Job {
    Mutate(Mutation, oneshot::Sender<Result<Committed, CommitError>>),
    Stop,
}

/// Handle to the writer thread.
#[derive(Debug)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Committer {
    /// Starts the writer thread.
    pub fn start(
        journal: Journal,
        sealer: Arc<Sealer>,
        store: Arc<Store>,
        rotate_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let mut w = Writer {
            journal,
            sealer,
            store,
            rotate_bytes,
            metrics,
            failed: None,
        };
        let thread = std::thread::Builder::new()
            .name("aegis-journal".into())
            // Shallow call stack; a small stack keeps the resident set small when memory
            // is locked.
            .stack_size(256 * 1024)
            .spawn(move || w.run(rx))
            .ok();
        Self {
            tx,
            thread: std::sync::Mutex::new(thread),
        }
    }

    /// Submits a change and waits until it is durable (or refused).
    pub async fn commit(&self, m: Mutation) -> Result<Committed, CommitError> {
        let (reply, rx) = oneshot::channel();
        let gone = || CommitError::Unavailable("the journal writer has stopped".into());
        self.tx.send(Job::Mutate(m, reply)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Finishes queued work, stops the writer and waits for it.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Job::Stop);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Writer {
    journal: Journal,
    sealer: Arc<Sealer>,
    store: Arc<Store>,
    rotate_bytes: u64,
    metrics: Arc<Metrics>,
    failed: Option<String>,
}

type Reply = oneshot::Sender<Result<Committed, CommitError>>;

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Job>) {
        let mut stop = false;
        while !stop {
            let Ok(first) = rx.recv() else { break };
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(job) = next {
                match job {
                    Job::Mutate(m, reply) => batch.push((m, reply)),
                    Job::Stop => {
                        stop = true;
                        break;
                    }
                }
                next = if batch.len() < MAX_BATCH {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if !batch.is_empty() {
                self.process(batch);
            }
        }
    }

    fn process(&mut self, batch: Vec<(Mutation, Reply)>) {
        if let Some(reason) = &self.failed {
            for (_, reply) in batch {
                let _ = reply.send(Err(CommitError::Unavailable(reason.clone())));
            }
            return;
        }
        let now = now_ms();
        let mut pending: HashMap<Workload, WorkloadState> = HashMap::new();
        let mut order: Vec<Workload> = Vec::new();
        let mut records = Vec::with_capacity(batch.len());
        let mut answers = Vec::with_capacity(batch.len());
        for (m, reply) in batch {
            let workload = match &m {
                Mutation::Put { workload, .. } | Mutation::Delete { workload, .. } => {
                    workload.clone()
                }
            };
            if !pending.contains_key(&workload) {
                let s = self
                    .store
                    .get(&workload)
                    .map(|s| (*s).clone())
                    .unwrap_or_default();
                pending.insert(workload.clone(), s);
                order.push(workload.clone());
            }
            let Some(state) = pending.get_mut(&workload) else {
                continue;
            };
            let answer = decide(state, m, now, self.store.limits());
            match answer {
                Ok((record, committed)) => {
                    if let Err(e) = state.apply(&record) {
                        // `decide` builds records that follow from `state`; this is a bug.
                        tracing::error!(error = %e, "internal: built a record that does not apply");
                        let _ = reply.send(Err(CommitError::Unavailable("internal error".into())));
                        continue;
                    }
                    records.push(record);
                    answers.push((reply, Ok(committed)));
                }
                Err(e) => answers.push((reply, Err(e))),
            }
        }
        if !records.is_empty() {
            let started = Instant::now();
            if let Err(e) = self.journal.append_batch(&self.sealer, &records) {
                tracing::error!(error = %e, "journal write failed; refusing further writes until restart");
                let reason =
                    format!("persistence failed ({e}); writes are refused until the Safe restarts");
                self.failed = Some(reason.clone());
                self.metrics.persistence_failed.set(1);
                for (reply, _) in answers {
                    let _ = reply.send(Err(CommitError::Unavailable(reason.clone())));
                }
                return;
            }
            self.metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            self.metrics.commit_batch_size.observe(records.len() as f64);
            // Publish in journal order, after the fsync.
            for w in order {
                if let Some(s) = pending.remove(&w) {
                    self.store.replace(w, Arc::new(s));
                }
            }
            self.metrics.journal_bytes.set(self.journal.len() as i64);
            self.metrics.update_store(&self.store);
        }
        drop(records);
        for (reply, a) in answers {
            let _ = reply.send(a);
        }
        if self.journal.len() >= self.rotate_bytes {
            self.rotate();
        }
    }

    fn rotate(&mut self) {
        let started = Instant::now();
        match self.journal.rotate(&self.sealer, &self.store) {
            Ok(()) => {
                self.metrics.snapshots.inc();
                self.metrics.journal_bytes.set(self.journal.len() as i64);
                tracing::info!(
                    generation = self.journal.id(),
                    millis = started.elapsed().as_millis() as u64,
                    "wrote snapshot and started a new journal"
                );
            }
            Err(e) => {
                // The old journal is still complete and durable; stop writing so it stays the
                // truth, and let an operator look.
                tracing::error!(error = %e, "snapshot/rotation failed; refusing further writes until restart");
                self.failed = Some(format!(
                    "snapshot failed ({e}); writes are refused until the Safe restarts"
                ));
                self.metrics.persistence_failed.set(1);
            }
        }
    }
}

/// Decides one mutation against the workload's state as of the earlier mutations in the
/// batch: the record to write and the answer, or why not.
fn decide(
    state: &WorkloadState,
    m: Mutation,
    now: i64,
    limits: &aegis_core::Limits,
) -> Result<(Record, Committed), CommitError> {
    match m {
        Mutation::Put {
            workload,
            key,
            value,
        } => {
            let existing = state.secrets.get(&key);
            let created = existing.is_none();
            if created && state.secrets.len() >= limits.max_secrets_per_workload {
                return Err(CommitError::Quota(format!(
                    "workload {workload} already holds {} secrets, the limit",
                    limits.max_secrets_per_workload
                )));
            }
            let old = existing.map_or(0, |e| key.len() + e.value.len());
            let total = state.total_bytes() - old + key.len() + value.len();
            if total > limits.max_workload_bytes {
                return Err(CommitError::Quota(format!(
                    "workload {workload} would hold {total} bytes of keys and values; the limit is {}",
                    limits.max_workload_bytes
                )));
            }
            let version = existing.map_or(1, |e| e.version + 1);
            let created_ms = existing.map_or(now, |e| e.created_ms);
            let response = PutSecretResponse {
                key: key.clone(),
                version,
                fingerprint: crate::crypto::fingerprint_string(&crate::crypto::sha256(
                    value.expose().as_bytes(),
                )),
                updated_at: rfc3339(now),
            };
            let record = Record::Put {
                workload,
                key,
                revision: state.revision + 1,
                version,
                created_ms,
                updated_ms: now,
                value,
            };
            Ok((record, Committed::Put { response, created }))
        }
        Mutation::Delete { workload, key } => {
            if !state.secrets.contains_key(&key) {
                return Err(CommitError::NotFound {
                    workload: workload.to_string(),
                    key,
                });
            }
            Ok((
                Record::Delete {
                    workload,
                    key,
                    revision: state.revision + 1,
                },
                Committed::Deleted,
            ))
        }
    }
}
