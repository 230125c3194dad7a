//! One contract per state trait, run against every backend: in memory, embedded (redb),
//! Redis and a three-node Redis Cluster. The same tests, instantiated four times.

use std::sync::Arc;

use broker::backend::Backend;
use broker::config::{StateConfig, StateKey};
use token_exchange::state::{
    MemoryRevocations, MemoryStore, NonceStore, ReplayStore, RevocationStore,
};
use trust_bundles::{Clock, SystemClock, UnixTime};
use trustbroker_tests::redis::{RedisCluster, RedisServer};

/// The stores under test, and what keeps their backend alive.
struct Stores {
    nonces: Arc<dyn NonceStore>,
    replay: Arc<dyn ReplayStore>,
    single_use: Arc<dyn ReplayStore>,
    revocations: Arc<dyn RevocationStore>,
    _keep: Box<dyn std::any::Any>,
}

fn from_backend(b: Backend, keep: Box<dyn std::any::Any>) -> Stores {
    Stores {
        nonces: b.nonces(),
        replay: b.replay(),
        single_use: b.single_use(),
        revocations: b.revocations(),
        _keep: keep,
    }
}

async fn memory() -> Stores {
    let m = Arc::new(MemoryStore::new());
    Stores {
        nonces: Arc::new(MemoryStore::new()),
        replay: m.clone(),
        single_use: m,
        revocations: Arc::new(MemoryRevocations::new()),
        _keep: Box::new(()),
    }
}

async fn embedded() -> Stores {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(&StateConfig::Embedded {
        path: dir.path().to_path_buf(),
    })
    .await
    .unwrap();
    from_backend(b, Box::new(dir))
}

async fn redis() -> Stores {
    let server = RedisServer::start();
    let b = Backend::open(&StateConfig::Redis {
        url: server.url(),
        key: StateKey([9; 32]),
    })
    .await
    .unwrap();
    from_backend(b, Box::new(server))
}

async fn redis_cluster() -> Stores {
    let cluster = RedisCluster::start();
    let b = Backend::open(&StateConfig::Redis {
        url: cluster.url(),
        key: StateKey([9; 32]),
    })
    .await
    .unwrap();
    from_backend(b, Box::new(cluster))
}

/// Real time: Redis keeps its own clock for reclaiming memory, so entries are written
/// with real expiries; the contract's clock is then moved by the `now` arguments.
fn t0() -> u64 {
    SystemClock.now().as_secs()
}

fn t(s: u64) -> UnixTime {
    UnixTime::from_secs(s)
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

async fn nonces_are_consumed_once_and_expire(s: Stores) {
    let n = t0();
    s.nonces.issue("n1", t(n + 60), t(n)).await.unwrap();
    assert!(s.nonces.consume("n1", t(n + 1)).await.unwrap());
    assert!(
        !s.nonces.consume("n1", t(n + 1)).await.unwrap(),
        "second use"
    );
    s.nonces.issue("n2", t(n + 60), t(n)).await.unwrap();
    assert!(!s.nonces.consume("n2", t(n + 60)).await.unwrap(), "expired");
    assert!(!s.nonces.consume("never-issued", t(n)).await.unwrap());
}

async fn a_nonce_raced_by_fifty_consumers_is_consumed_once(s: Stores) {
    let n = t0();
    s.nonces.issue("race", t(n + 60), t(n)).await.unwrap();
    let wins = futures_util::future::join_all((0..50).map(|_| s.nonces.consume("race", t(n))))
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(wins, 1);
}

async fn replay_marks_hold_until_their_expiry(s: Stores) {
    let n = t0();
    // (On some backends the two are one store: distinct keys keep the cases apart.)
    for (store, k, other) in [
        (&s.replay, "dpop:k", "dpop:o"),
        (&s.single_use, "sub:k", "sub:o"),
    ] {
        assert!(store.check_and_mark(k, t(n + 100), t(n)).await.unwrap());
        assert!(
            !store
                .check_and_mark(k, t(n + 300), t(n + 99))
                .await
                .unwrap()
        );
        assert!(
            store
                .check_and_mark(k, t(n + 300), t(n + 100))
                .await
                .unwrap(),
            "expired"
        );
        assert!(store.check_and_mark(other, t(n + 100), t(n)).await.unwrap());
    }
}

async fn a_mark_raced_by_fifty_callers_is_first_once(s: Stores) {
    let n = t0();
    let firsts = futures_util::future::join_all(
        (0..50).map(|_| s.single_use.check_and_mark("sub:x:jti", t(n + 60), t(n))),
    )
    .await
    .into_iter()
    .filter(|r| *r.as_ref().unwrap())
    .count();
    assert_eq!(firsts, 1);
}

async fn revocations_keep_the_latest_time_until_they_lapse(s: Stores) {
    let n = t0();
    let r = &s.revocations;
    let keys = vec![
        "tok:a".to_owned(),
        "sub:b".to_owned(),
        "tok:never".to_owned(),
    ];
    r.revoke("tok:a", t(n), t(n + 600)).await.unwrap();
    r.revoke("sub:b", t(n + 5), t(n + 600)).await.unwrap();
    assert_eq!(
        r.revoked_at(&keys, t(n + 10)).await.unwrap(),
        vec![Some(t(n)), Some(t(n + 5)), None]
    );
    // Again, later: the later time wins; an earlier one never moves it back.
    r.revoke("sub:b", t(n + 20), t(n + 600)).await.unwrap();
    r.revoke("sub:b", t(n + 1), t(n + 60)).await.unwrap();
    assert_eq!(
        r.revoked_at(&keys[1..2], t(n + 30)).await.unwrap(),
        vec![Some(t(n + 20))]
    );
    // Past their keep time, entries no longer answer.
    assert_eq!(
        r.revoked_at(&keys, t(n + 600)).await.unwrap(),
        vec![None, None, None]
    );
    assert_eq!(
        r.revoked_at(&[], t(n)).await.unwrap(),
        Vec::<Option<UnixTime>>::new()
    );
}

macro_rules! contract {
    ($backend:ident) => {
        mod $backend {
            use super::*;

            #[test]
            fn nonces_are_consumed_once_and_expire() {
                run(async { super::nonces_are_consumed_once_and_expire($backend().await).await })
            }

            #[test]
            fn a_nonce_raced_by_fifty_consumers_is_consumed_once() {
                run(async {
                    super::a_nonce_raced_by_fifty_consumers_is_consumed_once($backend().await).await
                })
            }

            #[test]
            fn replay_marks_hold_until_their_expiry() {
                run(async { super::replay_marks_hold_until_their_expiry($backend().await).await })
            }

            #[test]
            fn a_mark_raced_by_fifty_callers_is_first_once() {
                run(async {
                    super::a_mark_raced_by_fifty_callers_is_first_once($backend().await).await
                })
            }

            #[test]
            fn revocations_keep_the_latest_time_until_they_lapse() {
                run(async {
                    super::revocations_keep_the_latest_time_until_they_lapse($backend().await).await
                })
            }
        }
    };
}

contract!(memory);
contract!(embedded);
contract!(redis);
contract!(redis_cluster);
