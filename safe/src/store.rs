//! The in-memory secret store: workload → (revision, key → entry).
//!
//! Invariants:
//! - Only the journal writer (see `commit`) mutates the store, and only after the records
//!   describing the change are on disk; so the store always equals "snapshot + journal".
//! - Each workload's state is an immutable `Arc<WorkloadState>` swapped whole (copy on
//!   write): readers clone the `Arc` under a shard lock held for nanoseconds and never wait
//!   for the disk.
//! - Values are `SecretValue`s (zeroized on drop, redacted in `Debug`).

use crate::crypto::{fingerprint_string, sha256};
use crate::format::Record;
use aegis_core::{KeyMeta, Limits, SecretValue, Workload, WorkloadEntry};
use dashmap::DashMap;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One stored secret.
#[derive(Clone)]
pub struct Entry {
    /// The value.
    pub value: SecretValue,
    /// 1 on creation, +1 on every update.
    pub version: u64,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
    /// Time of this version, Unix milliseconds.
    pub updated_ms: i64,
}

impl Entry {
    /// Builds an entry.
    pub fn new(value: SecretValue, version: u64, created_ms: i64, updated_ms: i64) -> Self {
        Self {
            value,
            version,
            created_ms,
            updated_ms,
        }
    }

    /// `sha256:<hex>` of the value. Computed when asked (listing is rare, and 32 bytes per
    /// secret would be a tenth of the store's memory).
    pub fn fingerprint(&self) -> String {
        fingerprint_string(&sha256(self.value.expose().as_bytes()))
    }

    /// Metadata for the admin API.
    pub fn meta(&self, key: &str) -> KeyMeta {
        KeyMeta {
            key: key.to_string(),
            version: self.version,
            fingerprint: self.fingerprint(),
            created_at: rfc3339(self.created_ms),
            updated_at: rfc3339(self.updated_ms),
        }
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// One workload's secrets. Kept (empty) after its last key is deleted so its revision
/// stays monotonic.
#[derive(Clone, Debug, Default)]
pub struct WorkloadState {
    /// Bumps on every change of this workload.
    pub revision: u64,
    /// Key → entry.
    pub secrets: BTreeMap<String, Entry>,
}

impl WorkloadState {
    /// Applies a journal record for this workload. Fails when the record does not follow
    /// from the state (wrong revision or version, deleting a missing key): during recovery
    /// that means the files are inconsistent and start-up must stop.
    pub fn apply(&mut self, record: &Record) -> Result<(), String> {
        match record {
            Record::Put {
                key,
                revision,
                version,
                created_ms,
                updated_ms,
                value,
                ..
            } => {
                self.expect_revision(*revision)?;
                let expected = self.secrets.get(key).map_or(1, |e| e.version + 1);
                if *version != expected {
                    return Err(format!("key version {version}, expected {expected}"));
                }
                let entry = Entry::new(value.clone(), *version, *created_ms, *updated_ms);
                self.secrets.insert(key.clone(), entry);
            }
            Record::Delete { key, revision, .. } => {
                self.expect_revision(*revision)?;
                if self.secrets.remove(key).is_none() {
                    return Err("delete of a key that does not exist".to_string());
                }
            }
        }
        self.revision += 1;
        Ok(())
    }

    fn expect_revision(&self, revision: u64) -> Result<(), String> {
        if revision == self.revision + 1 {
            Ok(())
        } else {
            Err(format!(
                "workload revision {revision}, expected {}",
                self.revision + 1
            ))
        }
    }

    /// Sum of key and value bytes, the quantity `Limits::max_workload_bytes` bounds.
    pub fn total_bytes(&self) -> usize {
        self.secrets
            .iter()
            .map(|(k, e)| k.len() + e.value.len())
            .sum()
    }
}

/// The store.
#[derive(Debug)]
pub struct Store {
    map: DashMap<Workload, Arc<WorkloadState>>,
    limits: Limits,
    // Kept incrementally so metrics never walk the map.
    workloads: AtomicUsize,
    secrets: AtomicUsize,
}

impl Store {
    /// An empty store enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            map: DashMap::new(),
            limits,
            workloads: AtomicUsize::new(0),
            secrets: AtomicUsize::new(0),
        }
    }

    /// The limits the store enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The current state of a workload, if it ever held a secret.
    pub fn get(&self, workload: &Workload) -> Option<Arc<WorkloadState>> {
        self.map.get(workload).map(|r| Arc::clone(r.value()))
    }

    /// Replaces a workload's state (journal writer and recovery only).
    pub(crate) fn replace(&self, workload: Workload, state: Arc<WorkloadState>) {
        let new_len = state.secrets.len();
        let old_len = self
            .map
            .insert(workload, state)
            .map_or(0, |o| o.secrets.len());
        // Only the single writer (or recovery) calls this, so load+store cannot race.
        let secrets = self.secrets.load(Ordering::Relaxed) + new_len - old_len;
        self.secrets.store(secrets, Ordering::Relaxed);
        match (old_len, new_len) {
            (0, n) if n > 0 => {
                self.workloads.fetch_add(1, Ordering::Relaxed);
            }
            (o, 0) if o > 0 => {
                self.workloads.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Every workload with its state, sorted by workload (snapshots, listing).
    pub fn all(&self) -> Vec<(Workload, Arc<WorkloadState>)> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .map(|r| (r.key().clone(), Arc::clone(r.value())))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// `GET /v1/workloads`: workloads holding at least one secret, metadata only.
    pub fn list(&self) -> Vec<WorkloadEntry> {
        self.all()
            .into_iter()
            .filter(|(_, s)| !s.secrets.is_empty())
            .map(|(w, s)| WorkloadEntry {
                workload: w,
                revision: s.revision,
                secrets: s.secrets.iter().map(|(k, e)| e.meta(k)).collect(),
            })
            .collect()
    }

    /// Number of workloads holding secrets and number of secrets.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.workloads.load(Ordering::Relaxed),
            self.secrets.load(Ordering::Relaxed),
        )
    }
}

/// RFC 3339 UTC text of Unix milliseconds, e.g. `2026-12-04T20:15:00.123Z`.
pub fn rfc3339(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.to_string(),
        Err(_) => "1970-01-01T00:00:00Z".to_string(),
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_debug_hides_the_value() {
        let e = Entry::new(SecretValue::new("hunter2".into()), 1, 0, 0);
        assert!(!format!("{e:?}").contains("hunter2"));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_414_535_123), "2026-12-04T20:02:15.123Z");
    }

    #[test]
    fn list_skips_empty_workloads_and_sorts() {
        let s = Store::new(Limits::default());
        let a = Workload::new("b", "x").unwrap();
        let b = Workload::new("a", "y").unwrap();
        let mut st = WorkloadState {
            revision: 1,
            ..Default::default()
        };
        st.secrets.insert(
            "K".into(),
            Entry::new(SecretValue::new("v".into()), 1, 0, 0),
        );
        s.replace(a.clone(), Arc::new(st.clone()));
        s.replace(b.clone(), Arc::new(st));
        s.replace(
            Workload::new("c", "z").unwrap(),
            Arc::new(WorkloadState::default()),
        );
        let l = s.list();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].workload, b);
        assert_eq!(
            l[0].secrets[0].fingerprint,
            fingerprint_string(&sha256(b"v"))
        );
        assert_eq!(s.counts(), (2, 2));
    }
}
