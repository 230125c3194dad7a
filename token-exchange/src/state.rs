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
    fn issue<'a>(
        &'a self,
        nonce: &'a str,
        expires_at: UnixTime,
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
    entries: Mutex<HashMap<String, UnixTime>>,
}

/// Entries are swept on write once the map holds this many, so memory is bounded by the
/// rate of issue times the lifetime, not by uptime.
const SWEEP_AT: usize = 4096;

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UnixTime>> {
        // A panic while holding the lock cannot leave the map half-updated (every update
        // is one insert or remove), so a poisoned lock is still consistent.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sweep(map: &mut HashMap<String, UnixTime>, now: UnixTime) {
        if map.len() >= SWEEP_AT {
            map.retain(|_, exp| *exp > now);
        }
    }
}

impl NonceStore for MemoryStore {
    fn issue<'a>(
        &'a self,
        nonce: &'a str,
        expires_at: UnixTime,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        let mut map = self.lock();
        map.insert(nonce.to_owned(), expires_at);
        drop(map);
        Box::pin(async { Ok(()) })
    }

    fn consume<'a>(
        &'a self,
        nonce: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<bool, StateError>> {
        let mut map = self.lock();
        let fresh = map.remove(nonce).is_some_and(|exp| exp > now);
        Self::sweep(&mut map, now);
        drop(map);
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
        let mut map = self.lock();
        Self::sweep(&mut map, now);
        let first = match map.get(key) {
            Some(exp) if *exp > now => false,
            _ => {
                map.insert(key.to_owned(), expires_at);
                true
            }
        };
        drop(map);
        Box::pin(async move { Ok(first) })
    }
}
