//! Bounded cache of positive authentication results, keyed by the SHA-256 of the token.
//!
//! Invariants: the token itself is never stored (only its digest); an entry is used only
//! strictly before its `valid_until`, which callers set to the earlier of the token's
//! `exp` and now + TTL; the map never grows beyond its capacity (expired entries are swept
//! first, at most once a second, and then new entries are simply not cached).

use crate::Identity;
use dashmap::DashMap;
use ring::digest;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Default number of cached identities (a few MiB at most).
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// SHA-256 of a token: the cache key.
pub(crate) type TokenDigest = [u8; 32];

pub(crate) fn digest_token(token: &str) -> TokenDigest {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[derive(Clone)]
struct Entry {
    identity: Identity,
    valid_until: i64,
}

pub(crate) struct IdentityCache {
    map: DashMap<TokenDigest, Entry>,
    capacity: usize,
    ttl_secs: i64,
    last_sweep: AtomicI64,
}

impl IdentityCache {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            map: DashMap::new(),
            capacity,
            ttl_secs: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
            last_sweep: AtomicI64::new(i64::MIN),
        }
    }

    /// The cached identity for this digest, if still valid at `now`.
    pub(crate) fn get(&self, key: &TokenDigest, now: i64) -> Option<Identity> {
        let hit = self.map.get(key).map(|e| e.clone())?;
        if now < hit.valid_until {
            Some(hit.identity)
        } else {
            self.map.remove_if(key, |_, e| now >= e.valid_until);
            None
        }
    }

    /// Caches `identity` until the earlier of `expires_at` and now + TTL. Returns whether
    /// it was stored (not when the TTL is zero, the entry is already stale, or the cache
    /// is full of live entries).
    pub(crate) fn insert(&self, key: TokenDigest, identity: Identity, now: i64) -> bool {
        let valid_until = identity.expires_at.min(now.saturating_add(self.ttl_secs));
        if valid_until <= now || self.capacity == 0 {
            return false;
        }
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            self.sweep(now);
            if self.map.len() >= self.capacity {
                return false;
            }
        }
        self.map.insert(
            key,
            Entry {
                identity,
                valid_until,
            },
        );
        true
    }

    /// Drops expired entries, at most once per second (a full cache under a flood of new
    /// tokens must not turn every request into a full scan).
    fn sweep(&self, now: i64) {
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now <= last
            || self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.map.retain(|_, e| now < e.valid_until);
    }

    /// The configured TTL, seconds.
    pub(crate) fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_core::Workload;

    fn identity(expires_at: i64) -> Identity {
        Identity {
            workload: Workload::new("demo", "app").unwrap(),
            expires_at,
        }
    }

    #[test]
    fn hit_until_the_earlier_of_exp_and_ttl() {
        let c = IdentityCache::new(Duration::from_secs(60), 10);
        let k = digest_token("a.b.c");
        assert!(c.insert(k, identity(1_030), 1_000));
        assert!(c.get(&k, 1_029).is_some());
        assert!(c.get(&k, 1_030).is_none(), "exp bounds the entry");
        let k2 = digest_token("d.e.f");
        assert!(c.insert(k2, identity(10_000), 1_000));
        assert!(c.get(&k2, 1_059).is_some());
        assert!(c.get(&k2, 1_060).is_none(), "TTL bounds the entry");
    }

    #[test]
    fn full_cache_sweeps_expired_then_refuses_to_grow() {
        let c = IdentityCache::new(Duration::from_secs(60), 2);
        assert!(c.insert(digest_token("1"), identity(1_010), 1_000));
        assert!(c.insert(digest_token("2"), identity(2_000), 1_000));
        assert!(
            !c.insert(digest_token("3"), identity(2_000), 1_001),
            "full of live entries"
        );
        assert_eq!(c.len(), 2);
        assert!(
            c.insert(digest_token("4"), identity(2_000), 1_020),
            "expired entry swept"
        );
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn stale_or_zero_ttl_entries_are_not_cached() {
        let c = IdentityCache::new(Duration::ZERO, 10);
        assert!(!c.insert(digest_token("1"), identity(2_000), 1_000));
        let c = IdentityCache::new(Duration::from_secs(60), 10);
        assert!(!c.insert(digest_token("1"), identity(1_000), 1_000));
    }
}
