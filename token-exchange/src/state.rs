//! The state the exchange needs, behind narrow traits owned by this crate (STYLE §18). The
//! broker implements them over memory, the embedded store or Redis; each has an in-memory
//! implementation here written to the same behaviour.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
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

/// Single-use markers (spent broker nonces, subject-token `jti`s of `single_use` boundaries,
/// DPoP proof `jti`s).
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
    /// Records `key` as revoked at `at`, which is the caller's now: a store may count how
    /// long to keep the entry from it. Revoking again keeps the later time.
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

/// Expiring single-use entries in memory: the spent nonces and replay marks of one process.
///
/// The entries are split over [`SHARDS`] maps by a keyed hash of their key, each behind a
/// lock of its own, so that sweeping the expired entries of one map, or growing its table,
/// holds up only the callers of that map, for a 256th of the work. With all the entries in
/// one map, at 6 000 DPoP marks a second kept 90 s each (the default skew), one mark
/// waited 276 ms while the table grew past 917 000 entries, and every caller on every
/// worker waited with it (133 ms past 459 000, 64 ms past 229 000); split, the longest
/// wait in the same 200 s was 2 to 6.6 ms.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[Mutex<Entries>]>,
    /// Picks the map; independent of the maps' own hashers (with one hash for both, the
    /// keys of a map would all share the bits that picked it, and crowd its buckets).
    router: RandomState,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
struct Entries {
    map: HashMap<String, UnixTime>,
    /// Sweep expired entries when the map reaches this size: twice the live count after the
    /// last sweep (amortised O(1) per write however many entries are live), and never past
    /// `limit`: a map sweeps before it calls itself full.
    sweep_at: usize,
    first_sweep: usize,
    /// Most entries this map holds; past it, writes fail closed (503).
    limit: usize,
    /// Set when a sweep left the map full of live entries: it sweeps again only once the
    /// clock has moved past this second, not once per refused write.
    full_at: Option<UnixTime>,
    /// Sweeps so far (tests).
    sweeps: u64,
}

/// How many maps a [`MemoryStore`] splits its entries over.
const SHARDS: usize = 256;
/// First sweep threshold of the whole store.
const SWEEP_AT: usize = 4096;
/// Most live entries held: past it, writes fail closed (503) instead of growing memory
/// without bound. Each map holds at most its share.
pub const MAX_MEMORY_ENTRIES: usize = 1_000_000;

impl MemoryStore {
    pub fn new() -> Self {
        Self::with_shape(SHARDS, MAX_MEMORY_ENTRIES / SHARDS)
    }

    /// `shards` maps of at most `limit` entries each.
    fn with_shape(shards: usize, limit: usize) -> Self {
        let limit = limit.max(1);
        let first_sweep = (SWEEP_AT / SHARDS).clamp(1, limit);
        let shards = (0..shards.max(1))
            .map(|_| {
                Mutex::new(Entries {
                    map: HashMap::new(),
                    sweep_at: first_sweep,
                    first_sweep,
                    limit,
                    full_at: None,
                    sweeps: 0,
                })
            })
            .collect();
        Self {
            shards,
            router: RandomState::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The map that holds `key` (`with_shape` makes at least one: an error never comes).
    fn shard(&self, key: &str) -> Result<std::sync::MutexGuard<'_, Entries>, StateError> {
        let hash = usize::try_from(self.router.hash_one(key) >> 32).unwrap_or_default();
        self.shards
            .get(hash % self.shards.len().max(1))
            .map(lock)
            .ok_or_else(|| StateError("in-memory store has no maps".into()))
    }
}

fn lock(m: &Mutex<Entries>) -> std::sync::MutexGuard<'_, Entries> {
    // A panic while holding the lock cannot leave the map half-updated (every update is
    // one insert or remove), so a poisoned lock is still consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Entries {
    /// Makes room for one more entry at `now`, or fails closed when full of live ones.
    fn reserve(&mut self, now: UnixTime) -> Result<(), StateError> {
        let swept_full_now = self.full_at.is_some_and(|at| now <= at);
        if self.map.len() >= self.sweep_at && !swept_full_now {
            self.map.retain(|_, exp| *exp > now);
            self.sweeps += 1;
            self.sweep_at = (self.map.len() * 2).clamp(self.first_sweep, self.limit);
            self.full_at = (self.map.len() >= self.limit).then_some(now);
        }
        if self.map.len() >= self.limit {
            return Err(StateError("in-memory store is full".into()));
        }
        Ok(())
    }
}

impl ReplayStore for MemoryStore {
    fn check_and_mark<'a>(
        &'a self,
        key: &'a str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<bool, StateError>> {
        let result = self.shard(key).and_then(|mut e| match e.map.get(key) {
            Some(exp) if *exp > now => Ok(false),
            _ => {
                e.reserve(now)?;
                e.map.insert(key.to_owned(), expires_at);
                Ok(true)
            }
        });
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
    fn replay_marks_hold_until_expiry() {
        let s = MemoryStore::new();
        assert!(run(s.check_and_mark("k", t(200), t(100))).unwrap());
        assert!(!run(s.check_and_mark("k", t(300), t(199))).unwrap());
        assert!(run(s.check_and_mark("k", t(300), t(200))).unwrap());
    }

    impl MemoryStore {
        fn sweeps(&self) -> u64 {
            self.shards.iter().map(|s| lock(s).sweeps).sum()
        }
    }

    /// One map of `limit` entries: which map a key lands in is not left to chance.
    fn one_map(limit: usize) -> MemoryStore {
        MemoryStore::with_shape(1, limit)
    }

    #[test]
    fn expired_entries_are_swept_and_memory_is_bounded() {
        let s = one_map(100_000);
        let first = SWEEP_AT / SHARDS;
        for i in 0..(first * 3) {
            run(s.check_and_mark(&format!("n{i}"), t(10), t(0))).unwrap();
        }
        let peak = s.len();
        assert_eq!(peak, first * 3);
        // All of them expired at 10. Writes at 50 sweep them once the threshold (twice the
        // live count after the last sweep) is reached, never later.
        let mut swept_after = None;
        for i in 0..(first * 2) {
            run(s.check_and_mark(&format!("late{i}"), t(100), t(50))).unwrap();
            if s.len() < peak {
                swept_after = Some(i);
                break;
            }
        }
        assert!(swept_after.is_some(), "never swept");
        assert!(s.len() <= first * 2, "{} entries left", s.len());
    }

    /// A sweep that leaves more than half the limit live must not put the next one past
    /// the limit: the store would then refuse every write while full of expired entries,
    /// for good. At 6 000 DPoP marks a second, kept 90 s, the replay store did that after
    /// 166 s.
    #[test]
    fn a_store_full_of_expired_entries_sweeps_them_instead_of_refusing() {
        let s = one_map(100);
        for i in 0..70 {
            assert!(run(s.check_and_mark(&format!("old{i}"), t(100), t(0))).unwrap());
        }
        // The last sweep at 0 left 64 live: the next is due at the limit, not at 128.
        for i in 0..90 {
            assert_eq!(
                run(s.check_and_mark(&format!("new{i}"), t(300), t(200))),
                Ok(true),
                "write {i} at 200, with 70 entries expired at 100"
            );
        }
        assert_eq!(s.len(), 90);
    }

    /// Full of live entries, writes are refused (fail closed) and the map is scanned again
    /// only once the clock moves: not once per refused write.
    #[test]
    fn a_store_full_of_live_entries_refuses_and_sweeps_once_a_second() {
        let s = one_map(100);
        for i in 0..100 {
            run(s.check_and_mark(&format!("n{i}"), t(1000), t(0))).unwrap();
        }
        let before = s.sweeps();
        for i in 0..1000 {
            assert!(run(s.check_and_mark(&format!("more{i}"), t(1000), t(0))).is_err());
        }
        assert_eq!(s.sweeps(), before + 1, "one sweep found it full");
        assert!(run(s.check_and_mark("later", t(1000), t(1))).is_err());
        assert_eq!(s.sweeps(), before + 2, "the clock moved: one more");
        // A key already marked is answered, full or not: a replay is still a replay.
        assert_eq!(run(s.check_and_mark("n7", t(1000), t(1))), Ok(false));
        assert_eq!(s.len(), 100);
    }

    /// The default store spreads keys over its maps, and each behaves as one store would.
    #[test]
    fn keys_spread_over_the_maps_keep_their_meaning() {
        let s = MemoryStore::new();
        for i in 0..2000 {
            assert!(run(s.check_and_mark(&format!("k{i}"), t(200), t(100))).unwrap());
        }
        let used = s.shards.iter().filter(|m| !lock(m).map.is_empty()).count();
        assert!(used > SHARDS / 2, "{used} of {SHARDS} maps used");
        for i in 0..2000 {
            assert!(!run(s.check_and_mark(&format!("k{i}"), t(300), t(150))).unwrap());
        }
        assert_eq!(s.len(), 2000);
    }
}
