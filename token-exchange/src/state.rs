//! The state the exchange needs, behind narrow traits owned by this crate (STYLE §18). The
//! broker implements them over memory, the embedded store or Redis; each has an in-memory
//! implementation here written to the same behaviour.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use trust_bundles::{Jwk, UnixTime};

/// A boxed future, so the traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The backend could not answer. Fail closed: no token is issued (SPEC §4, 503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state backend unavailable: {0}")]
pub struct StateError(pub String);

/// Verification keys of the trust domains we accept tokens from (including this broker's
/// own), by configured domain name and `kid`. A key of one domain is never returned for
/// another.
pub trait KeySource: Send + Sync {
    fn jwt_key<'a>(
        &'a self,
        domain: &'a str,
        kid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Jwk>>, StateError>>;
}

/// Broker nonces (SPEC §4, §6): issued here, consumed at most once, anywhere.
pub trait NonceStore: Send + Sync {
    /// Records a nonce issued at `now`, good until `expires_at`.
    fn issue<'a>(
        &'a self,
        nonce: &'a str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<(), StateError>>;

    /// Consumes `nonce`: `true` exactly once for an issued, unexpired nonce, `false` for
    /// unknown, expired or already consumed ones. Atomic across callers.
    fn consume<'a>(
        &'a self,
        nonce: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<bool, StateError>>;
}

/// Single-use markers (subject-token `jti`s of `single_use` boundaries, DPoP proof `jti`s).
pub trait ReplayStore: Send + Sync {
    /// Marks `key` as seen until `expires_at`: `true` if it was not already marked.
    fn check_and_mark<'a>(
        &'a self,
        key: &'a str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<bool, StateError>>;
}

/// Revocations (SPEC §8): storage keys (see [`crate::revocation`]) with the time they were
/// revoked at. An entry is kept until `keep_until`, past which nothing it covers can still
/// be valid.
pub trait RevocationStore: Send + Sync {
    /// Records `key` as revoked at `at`. Revoking again keeps the later time.
    fn revoke<'a>(
        &'a self,
        key: &'a str,
        at: UnixTime,
        keep_until: UnixTime,
    ) -> BoxFuture<'a, Result<(), StateError>>;

    /// When each of `keys` was revoked, in order; `None` for keys never revoked (or whose
    /// entry has lapsed). One round trip for all of them.
    fn revoked_at<'a>(
        &'a self,
        keys: &'a [String],
        now: UnixTime,
    ) -> BoxFuture<'a, Result<Vec<Option<UnixTime>>, StateError>>;
}

/// Static keys per domain, as given in configuration (`bundle_file`, `jwks_file`).
#[derive(Debug, Default, Clone)]
pub struct StaticKeys {
    keys: HashMap<String, HashMap<String, Arc<Jwk>>>,
}

impl StaticKeys {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the keys of `domain` that carry a `kid`; keys without one cannot be selected.
    pub fn insert_domain(&mut self, domain: &str, keys: impl IntoIterator<Item = Jwk>) {
        let entry = self.keys.entry(domain.to_owned()).or_default();
        for jwk in keys {
            if let Some(kid) = jwk.kid.clone() {
                entry.insert(kid.as_str().to_owned(), Arc::new(jwk));
            }
        }
    }
}

impl StaticKeys {
    /// The key `kid` of `domain`, if configured.
    pub fn get(&self, domain: &str, kid: &str) -> Option<Arc<Jwk>> {
        self.keys.get(domain).and_then(|d| d.get(kid)).cloned()
    }
}

impl KeySource for StaticKeys {
    fn jwt_key<'a>(
        &'a self,
        domain: &'a str,
        kid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Jwk>>, StateError>> {
        let found = self.keys.get(domain).and_then(|d| d.get(kid)).cloned();
        Box::pin(async move { Ok(found) })
    }
}

/// Expiring single-use entries in memory: the nonce and replay stores of one process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<String, UnixTime>,
    /// Sweep expired entries when the map reaches this size; doubling it after each sweep
    /// keeps the cost amortised O(1) per write however many entries are live.
    sweep_at: usize,
}

/// First sweep threshold.
const SWEEP_AT: usize = 4096;
/// Most live entries held: past it, writes fail closed (503) instead of growing memory
/// without bound when someone requests nonces and never uses them.
pub const MAX_MEMORY_ENTRIES: usize = 1_000_000;

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock cannot leave the map half-updated (every update
        // is one insert or remove), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Entries {
    /// Makes room for one more entry at `now`, or fails closed when full of live ones.
    fn reserve(&mut self, now: UnixTime) -> Result<(), StateError> {
        if self.map.len() >= self.sweep_at.max(SWEEP_AT) {
            self.map.retain(|_, exp| *exp > now);
            self.sweep_at = (self.map.len() * 2).max(SWEEP_AT);
        }
        if self.map.len() >= MAX_MEMORY_ENTRIES {
            return Err(StateError("in-memory store is full".into()));
        }
        Ok(())
    }
}

impl NonceStore for MemoryStore {
    fn issue<'a>(
        &'a self,
        nonce: &'a str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        let mut e = self.lock();
        let result = e.reserve(now).map(|()| {
            e.map.insert(nonce.to_owned(), expires_at);
        });
        drop(e);
        Box::pin(async move { result })
    }

    fn consume<'a>(
        &'a self,
        nonce: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<bool, StateError>> {
        let mut e = self.lock();
        let fresh = e.map.remove(nonce).is_some_and(|exp| exp > now);
        drop(e);
        Box::pin(async move { Ok(fresh) })
    }
}

impl ReplayStore for MemoryStore {
    fn check_and_mark<'a>(
        &'a self,
        key: &'a str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<bool, StateError>> {
        let mut e = self.lock();
        let result = match e.map.get(key) {
            Some(exp) if *exp > now => Ok(false),
            _ => e.reserve(now).map(|()| {
                e.map.insert(key.to_owned(), expires_at);
                true
            }),
        };
        drop(e);
        Box::pin(async move { result })
    }
}

/// Revocations of one process, in memory.
#[derive(Debug, Default)]
pub struct MemoryRevocations {
    inner: Mutex<HashMap<String, (UnixTime, UnixTime)>>,
}

impl MemoryRevocations {
    pub fn new() -> Self {
        Self::default()
    }
}

impl RevocationStore for MemoryRevocations {
    fn revoke<'a>(
        &'a self,
        key: &'a str,
        at: UnixTime,
        keep_until: UnixTime,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let result = if map.len() >= MAX_MEMORY_ENTRIES && !map.contains_key(key) {
            map.retain(|_, (_, keep)| *keep > at);
            if map.len() >= MAX_MEMORY_ENTRIES {
                Err(StateError("in-memory revocations are full".into()))
            } else {
                Ok(())
            }
        } else {
            Ok(())
        };
        if result.is_ok() {
            let entry = map.entry(key.to_owned()).or_insert((at, keep_until));
            entry.0 = entry.0.max(at);
            entry.1 = entry.1.max(keep_until);
        }
        drop(map);
        Box::pin(async move { result })
    }

    fn revoked_at<'a>(
        &'a self,
        keys: &'a [String],
        now: UnixTime,
    ) -> BoxFuture<'a, Result<Vec<Option<UnixTime>>, StateError>> {
        let map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let found = keys
            .iter()
            .map(|k| {
                map.get(k)
                    .filter(|(_, keep)| *keep > now)
                    .map(|(at, _)| *at)
            })
            .collect();
        drop(map);
        Box::pin(async move { Ok(found) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(f: BoxFuture<'_, T>) -> T {
        let mut f = f;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("memory store futures are always ready"),
        }
    }

    fn t(s: u64) -> UnixTime {
        UnixTime::from_secs(s)
    }

    #[test]
    fn nonces_are_consumed_once_and_expire() {
        let s = MemoryStore::new();
        run(s.issue("n1", t(160), t(100))).unwrap();
        assert!(run(s.consume("n1", t(150))).unwrap());
        assert!(!run(s.consume("n1", t(150))).unwrap());
        run(s.issue("n2", t(160), t(100))).unwrap();
        assert!(!run(s.consume("n2", t(160))).unwrap(), "expired at 160");
        assert!(!run(s.consume("never", t(100))).unwrap());
    }

    #[test]
    fn replay_marks_hold_until_expiry() {
        let s = MemoryStore::new();
        assert!(run(s.check_and_mark("k", t(200), t(100))).unwrap());
        assert!(!run(s.check_and_mark("k", t(300), t(199))).unwrap());
        assert!(run(s.check_and_mark("k", t(300), t(200))).unwrap());
    }

    #[test]
    fn expired_entries_are_swept_and_memory_is_bounded() {
        let s = MemoryStore::new();
        for i in 0..(SWEEP_AT * 3) {
            run(s.issue(&format!("n{i}"), t(10), t(0))).unwrap();
        }
        let peak = s.len();
        assert_eq!(peak, SWEEP_AT * 3);
        // All of them expired at 10. Writes at 50 sweep them once the threshold (twice the
        // live count after the last sweep) is reached, never later.
        let mut swept_after = None;
        for i in 0..(SWEEP_AT * 2) {
            run(s.issue(&format!("late{i}"), t(100), t(50))).unwrap();
            if s.len() < peak {
                swept_after = Some(i);
                break;
            }
        }
        assert!(swept_after.is_some(), "never swept");
        assert!(s.len() <= SWEEP_AT * 2, "{} entries left", s.len());
    }
}
