//! One contract per state trait, run against every backend: in memory, embedded (redb),
//! Redis and a three-node Redis Cluster. The same tests, instantiated four times.

use std::sync::Arc;

use broker::backend::Backend;
use broker::config::{StateConfig, StateKey};
use token_exchange::state::{MemoryRevocations, MemoryStore, ReplayStore, RevocationStore};
use trust_bundles::{Clock, SystemClock, UnixTime};
use trustbroker_tests::redis::{RedisCluster, RedisServer};

/// The stores under test, and what keeps their backend alive.
struct Stores {
    nonces: Arc<dyn ReplayStore>,
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

/// The Redis backend at `url`, under the key every contract test uses.
async fn redis_at(url: String) -> Backend {
    Backend::open(&StateConfig::Redis {
        url,
        key: StateKey([9; 32]),
    })
    .await
    .unwrap()
}

async fn redis() -> Stores {
    let server = RedisServer::start();
    let b = redis_at(server.url()).await;
    from_backend(b, Box::new(server))
}

async fn redis_cluster() -> Stores {
    let cluster = RedisCluster::start();
    let b = redis_at(cluster.url()).await;
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

async fn nonces_are_spent_once_until_they_expire(s: Stores) {
    let n = t0();
    // (store, key, kept until, now) → whether the mark was taken.
    let mark = |store: &Arc<dyn ReplayStore>, key: &'static str, until: u64, now: u64| {
        let store = store.clone();
        async move { store.check_and_mark(key, t(until), t(now)).await.unwrap() }
    };
    assert!(mark(&s.nonces, "nonce:n1", n + 60, n + 1).await);
    assert!(
        !mark(&s.nonces, "nonce:n1", n + 60, n + 1).await,
        "second use"
    );
    assert!(
        !mark(&s.nonces, "nonce:n1", n + 60, n + 59).await,
        "second use, just before the mark lapses"
    );
    assert!(
        mark(&s.nonces, "nonce:n1", n + 60, n + 60).await,
        "the mark lapses with the nonce (which no longer opens by then)"
    );
    assert!(mark(&s.nonces, "nonce:n2", n + 60, n + 1).await);
    // A broker whose clock is far behind the state's: its marks still hold for as long
    // as it asked (an expiry read on the state's clock would already be past).
    let behind = n - 10_000;
    for (store, key) in [(&s.nonces, "nonce:n3"), (&s.replay, "dpop:k:j3")] {
        assert!(mark(store, key, behind + 60, behind).await);
        assert!(
            !mark(store, key, behind + 60, behind + 1).await,
            "{key}: a second use by a broker with a clock behind"
        );
    }
}

async fn a_nonce_raced_by_fifty_consumers_is_consumed_once(s: Stores) {
    let n = t0();
    let wins = futures_util::future::join_all(
        (0..50).map(|_| s.nonces.check_and_mark("nonce:race", t(n + 60), t(n))),
    )
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

/// A mark lapsed on the caller's clock but not yet reclaimed by the backend (Redis keeps
/// it until its own clock passes the expiry): fifty callers race to mark it again.
async fn a_lapsed_mark_raced_by_fifty_callers_is_retaken_once(s: Stores) {
    let n = t0();
    // (On some backends the two are one store: distinct keys keep the cases apart.)
    for (store, k) in [(&s.replay, "dpop:lapsed"), (&s.single_use, "sub:lapsed")] {
        assert!(store.check_and_mark(k, t(n + 30), t(n)).await.unwrap());
        let firsts = futures_util::future::join_all(
            (0..50).map(|_| store.check_and_mark(k, t(n + 300), t(n + 30))),
        )
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
        assert_eq!(firsts, 1);
        // Retaken until its new expiry.
        assert!(
            !store
                .check_and_mark(k, t(n + 400), t(n + 299))
                .await
                .unwrap()
        );
    }
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
    // A keep time far out (a boundary's `max_ttl` has no ceiling) is stored and read back
    // as a time, not in Lua's exponent notation.
    r.revoke("tok:far", t(n), t(n + 1_000_000_000_000_000))
        .await
        .unwrap();
    assert_eq!(
        r.revoked_at(&["tok:far".to_owned()], t(n + 10))
            .await
            .unwrap(),
        vec![Some(t(n))]
    );
    // A broker whose clock is far behind the state's: its revocation holds for as long
    // as it asked (a keep time read on the state's clock would already be past).
    let behind = n - 10_000;
    r.revoke("tok:behind", t(behind), t(behind + 600))
        .await
        .unwrap();
    assert_eq!(
        r.revoked_at(&["tok:behind".to_owned()], t(behind + 10))
            .await
            .unwrap(),
        vec![Some(t(behind))]
    );
}

macro_rules! contract {
    ($backend:ident) => {
        mod $backend {
            use super::*;

            #[test]
            fn nonces_are_spent_once_until_they_expire() {
                run(async {
                    super::nonces_are_spent_once_until_they_expire($backend().await).await
                })
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
            fn a_lapsed_mark_raced_by_fifty_callers_is_retaken_once() {
                run(async {
                    super::a_lapsed_mark_raced_by_fifty_callers_is_retaken_once($backend().await)
                        .await
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

// ---- The backend's durable operations: embedded, Redis, Redis Cluster ----------------

use broker::store::{AdminWrite, JoinTokenRecord, NodeCert, NodeRecord, Revocation};

async fn open_embedded() -> (Backend, Box<dyn std::any::Any>) {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(&StateConfig::Embedded {
        path: dir.path().to_path_buf(),
    })
    .await
    .unwrap();
    (b, Box::new(dir))
}

async fn open_redis() -> (Backend, Box<dyn std::any::Any>) {
    let server = RedisServer::start();
    let b = redis_at(server.url()).await;
    (b, Box::new(server))
}

async fn open_redis_cluster() -> (Backend, Box<dyn std::any::Any>) {
    let cluster = RedisCluster::start();
    let b = redis_at(cluster.url()).await;
    (b, Box::new(cluster))
}

fn node(name: &str, version: u64) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        spiffe_id: format!("spiffe://t/enforcer/{name}"),
        enrolled_at: 1,
        version,
        certs: vec![NodeCert {
            sha256: "ab".into(),
            not_after: 2,
        }],
    }
}

async fn a_join_token_is_taken_once_and_revoking_its_node_cancels_it(b: Backend) {
    let rec = JoinTokenRecord {
        node: "n1".into(),
        expires_at: t0() + 600,
    };
    b.put_join_token("d1", &rec).await.unwrap();
    b.put_join_token("d2", &rec).await.unwrap();
    let takes = futures_util::future::join_all((0..20).map(|_| b.take_join_token("d1"))).await;
    assert_eq!(
        takes
            .iter()
            .filter(|t| t.as_ref().unwrap().is_some())
            .count(),
        1
    );
    // The node enrolls (version 1); deleting it with a stale version does nothing, with
    // the current one deletes it, cancels d2 and remembers the version.
    b.update_node("n1", |cur| {
        assert!(cur.is_none());
        Ok((Some(node("n1", 1)), ()))
    })
    .await
    .unwrap();
    assert_eq!(b.nodes().await.unwrap().len(), 1);
    assert!(b.node_has_cert("n1", "ab").await.unwrap());
    assert!(!b.node_has_cert("n1", "cd").await.unwrap());
    assert!(!b.node_has_cert("n2", "ab").await.unwrap());
    assert_eq!(b.revoke_node("n1", "7").await.unwrap(), Revocation::Stale);
    assert!(
        b.node_has_cert("n1", "ab").await.unwrap(),
        "a stale revoke changes nothing"
    );
    assert_eq!(b.revoke_node("n1", "1").await.unwrap(), Revocation::Revoked);
    assert!(!b.node_has_cert("n1", "ab").await.unwrap(), "revoked");
    assert_eq!(b.revoke_node("n1", "1").await.unwrap(), Revocation::Missing);
    assert!(
        b.take_join_token("d2").await.unwrap().is_none(),
        "cancelled"
    );
    assert_eq!(b.last_node_version("n1").await.unwrap(), 1);
    assert!(b.node("n1").await.unwrap().is_none());
    assert!(b.nodes().await.unwrap().is_empty());
}

async fn concurrent_node_updates_are_serialised(b: Backend) {
    b.update_node("n2", |_| Ok((Some(node("n2", 0)), ())))
        .await
        .unwrap();
    futures_util::future::join_all((0..10).map(|_| {
        b.update_node("n2", |cur| {
            let mut rec = cur.unwrap();
            rec.version += 1;
            Ok((Some(rec), ()))
        })
    }))
    .await
    .into_iter()
    .for_each(|r| r.unwrap());
    assert_eq!(
        b.node("n2").await.unwrap().unwrap().version,
        10,
        "no update lost"
    );
}

async fn admin_objects_keep_versions_that_never_repeat(b: Backend) {
    let obj = serde_json::json!({"name": "x", "scopes": ["a"]});
    let g0 = b.admin_generation().await.unwrap();
    let v1 = match b.admin_write("boundary/x", None, Some(&obj)).await.unwrap() {
        AdminWrite::Written { version } => version,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        b.admin_write("boundary/x", None, Some(&obj)).await.unwrap(),
        AdminWrite::Exists
    );
    assert_eq!(
        b.admin_write("boundary/x", Some(v1 + 5), Some(&obj))
            .await
            .unwrap(),
        AdminWrite::Stale
    );
    assert_eq!(
        b.admin_write("boundary/y", Some(1), Some(&obj))
            .await
            .unwrap(),
        AdminWrite::Missing
    );
    let v2 = match b
        .admin_write("boundary/x", Some(v1), Some(&obj))
        .await
        .unwrap()
    {
        AdminWrite::Written { version } => version,
        other => panic!("{other:?}"),
    };
    assert!(v2 > v1);
    // Delete, re-create: the new version is above every earlier one.
    assert_eq!(
        b.admin_write("boundary/x", Some(v2), None).await.unwrap(),
        AdminWrite::Written { version: v2 }
    );
    match b.admin_write("boundary/x", None, Some(&obj)).await.unwrap() {
        AdminWrite::Written { version } => assert!(version > v2),
        other => panic!("{other:?}"),
    }
    let (g, list) = b.admin_list().await.unwrap();
    assert!(g >= g0 + 4, "every change moves the generation");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].object, obj);
}

async fn signing_keys_are_written_only_over_the_sequence_read(b: Backend) {
    let (records, seq) = b.load_keys().await.unwrap();
    assert!(records.is_empty());
    assert_eq!(seq, 0);
    let s1 = b.save_keys(&[], seq).await.unwrap().unwrap();
    assert!(s1 > seq);
    assert_eq!(
        b.save_keys(&[], seq).await.unwrap(),
        None,
        "another replica wrote first"
    );
    assert_eq!(b.load_keys().await.unwrap().1, s1);
}

macro_rules! backend_contract {
    ($name:ident, $open:ident) => {
        mod $name {
            use super::*;

            #[test]
            fn a_join_token_is_taken_once_and_revoking_its_node_cancels_it() {
                run(async {
                    let (b, _keep) = $open().await;
                    super::a_join_token_is_taken_once_and_revoking_its_node_cancels_it(b).await
                })
            }

            #[test]
            fn concurrent_node_updates_are_serialised() {
                run(async {
                    let (b, _keep) = $open().await;
                    super::concurrent_node_updates_are_serialised(b).await
                })
            }

            #[test]
            fn admin_objects_keep_versions_that_never_repeat() {
                run(async {
                    let (b, _keep) = $open().await;
                    super::admin_objects_keep_versions_that_never_repeat(b).await
                })
            }

            #[test]
            fn signing_keys_are_written_only_over_the_sequence_read() {
                run(async {
                    let (b, _keep) = $open().await;
                    super::signing_keys_are_written_only_over_the_sequence_read(b).await
                })
            }
        }
    };
}

backend_contract!(durable_embedded, open_embedded);
backend_contract!(durable_redis, open_redis);
backend_contract!(durable_redis_cluster, open_redis_cluster);

/// `connected_clients` from the server's own count.
fn redis_clients(server: &RedisServer) -> Option<u32> {
    let info = trustbroker_tests::redis::raw_command(server.port, "INFO clients")?;
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Waits (real time, for a real server to see connections come and go) until the
/// server counts `want` clients besides the one asking.
async fn until_clients(server: &RedisServer, want: u32) -> bool {
    for _ in 0..200 {
        if redis_clients(server) == Some(want + 1) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

#[test]
fn a_thread_closes_its_own_connection_of_a_redis_state_that_is_gone() {
    run(async {
        let server = RedisServer::start();
        let open = || async { redis_at(server.url()).await };
        let now = t(t0());

        // A state used on this (current-thread) runtime: its shared connection, and the
        // one this thread opens for it.
        let first = open().await;
        first.nonces().check_and_mark("n", now, now).await.unwrap();
        assert!(
            until_clients(&server, 2).await,
            "{:?}",
            redis_clients(&server)
        );
        assert_eq!(broker::redis_state::thread_connections(), 1);

        // Gone: its shared connection closes with it; this thread's one for it stays
        // until the thread next opens a connection...
        drop(first);
        assert!(
            until_clients(&server, 1).await,
            "{:?}",
            redis_clients(&server)
        );

        // ...which a second state's first use does: the stale one is closed then, so a
        // thread never holds more than one connection per live state.
        let second = open().await;
        second.nonces().check_and_mark("n", now, now).await.unwrap();
        assert_eq!(broker::redis_state::thread_connections(), 1);
        assert!(
            until_clients(&server, 2).await,
            "{:?}",
            redis_clients(&server)
        );
    })
}

/// The embedded backend in `dir`: opened again over the same directory, a restart.
async fn open_embedded_at(dir: &std::path::Path) -> Backend {
    Backend::open(&StateConfig::Embedded {
        path: dir.to_path_buf(),
    })
    .await
    .unwrap()
}

#[test]
fn embedded_revocations_survive_a_restart_and_lapse_on_schedule() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let open = || open_embedded_at(dir.path());
        let n = t0();
        let keys = vec!["tok:a".to_owned(), "sub:b".to_owned()];
        {
            let b = open().await;
            let r = b.revocations();
            r.revoke("tok:a", t(n), t(n + 600)).await.unwrap();
            r.revoke("sub:b", t(n), t(n + 60)).await.unwrap();
        }
        // Reopened (the database is locked to one process at a time): both answer.
        let b = open().await;
        let r = b.revocations();
        assert_eq!(
            r.revoked_at(&keys, t(n + 10)).await.unwrap(),
            vec![Some(t(n)), Some(t(n))]
        );
        // Past `sub:b`'s keep time it no longer answers, here and after a restart (the
        // entry itself goes at the next sweep, once the table has doubled).
        r.revoke("tok:c", t(n + 100), t(n + 700)).await.unwrap();
        assert_eq!(
            r.revoked_at(&keys, t(n + 100)).await.unwrap(),
            vec![Some(t(n)), None]
        );
        drop((r, b));
        let r = open().await.revocations();
        assert_eq!(
            r.revoked_at(&keys, t(n + 100)).await.unwrap(),
            vec![Some(t(n)), None]
        );
        assert_eq!(
            r.revoked_at(&keys, t(n + 600)).await.unwrap(),
            vec![None, None],
            "`tok:a` lapses at its keep time too"
        );
    })
}

#[test]
fn embedded_node_certificates_answer_from_memory_exactly_as_stored() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let open = || open_embedded_at(dir.path());
        {
            let b = open().await;
            b.update_node("n1", |_| Ok((Some(node("n1", 1)), ())))
                .await
                .unwrap();
            b.update_node("n2", |_| Ok((Some(node("n2", 1)), ())))
                .await
                .unwrap();
        }
        // Reopened: what is on disk answers.
        let b = open().await;
        assert!(b.node_has_cert("n1", "ab").await.unwrap());
        assert!(b.node_has_cert("n2", "ab").await.unwrap());
        // A renewal replaces the certificate: the old one no longer answers.
        b.update_node("n1", |cur| {
            let mut rec = cur.unwrap();
            rec.certs[0].sha256 = "cd".into();
            Ok((Some(rec), ()))
        })
        .await
        .unwrap();
        assert!(!b.node_has_cert("n1", "ab").await.unwrap());
        assert!(b.node_has_cert("n1", "cd").await.unwrap());
        // An update its closure refuses changes nothing, here or on disk.
        let refused = b
            .update_node("n1", |_| -> Result<(Option<NodeRecord>, ()), _> {
                Err(broker::store::StoreError::Db("refused".into()))
            })
            .await;
        assert!(refused.is_err());
        assert!(b.node_has_cert("n1", "cd").await.unwrap());
        // Removed by an update, and revoked.
        b.update_node("n2", |_| Ok((None, ()))).await.unwrap();
        assert!(!b.node_has_cert("n2", "ab").await.unwrap());
        assert_eq!(b.revoke_node("n1", "1").await.unwrap(), Revocation::Revoked);
        assert!(!b.node_has_cert("n1", "cd").await.unwrap());
        drop(b);
        let b = open().await;
        assert!(!b.node_has_cert("n1", "cd").await.unwrap());
        assert!(!b.node_has_cert("n2", "ab").await.unwrap());
    })
}

#[test]
fn with_redis_down_a_thread_tries_its_own_connection_once_per_wait() {
    run(async {
        let mut server = RedisServer::start();
        let b = redis_at(server.url()).await;
        // An outage before this thread opened a connection of its own.
        server.stop();
        let opens = broker::redis_state::thread_connection_opens();
        let now = t(t0());
        for _ in 0..6 {
            // No Redis: an error (fail closed), never a "fresh" answer.
            assert!(b.nonces().check_and_mark("n", now, now).await.is_err());
            // Real time, for the real refusal of the open to come back.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            broker::redis_state::thread_connection_opens() - opens,
            1,
            "one attempt, then the shared connection until the wait is over"
        );
    })
}

/// A server on loopback that speaks enough RESP to be connected to: it reports
/// `redis_version` as `version` and answers every `SET` with nil, as a proxy or an old
/// server that ignores `GET` would. Everything else is `+OK`.
fn fake_redis(version: &'static str) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                let mut lines = BufReader::new(stream).lines();
                // Each command is an array: "*N", then "$len" and the argument, N times.
                while let Some(Ok(head)) = lines.next() {
                    let n: usize = head.trim_start_matches('*').parse().unwrap_or(0);
                    let mut args = Vec::new();
                    for _ in 0..n {
                        let _len = lines.next();
                        args.push(lines.next().and_then(Result::ok).unwrap_or_default());
                    }
                    let reply = match args.first().map(|a| a.to_ascii_uppercase()).as_deref() {
                        Some("INFO") => {
                            let text = format!("# Server\r\nredis_version:{version}\r\n");
                            format!("${}\r\n{text}\r\n", text.len())
                        }
                        Some("SET") => "$-1\r\n".to_owned(),
                        _ => "+OK\r\n".to_owned(),
                    };
                    if out.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_server_that_cannot_hold_replay_marks_is_refused_at_start() {
    run(async {
        let open = |url: String| async move {
            Backend::open(&StateConfig::Redis {
                url,
                key: StateKey([9; 32]),
            })
            .await
        };
        let fake = |version| format!("redis://127.0.0.1:{}", fake_redis(version));
        // Older than 7.0: named by its version.
        let Err(e) = open(fake("6.2.14")).await else {
            panic!("Redis 6.2 accepted");
        };
        assert!(e.to_string().contains("Redis 6.2.14"), "{e}");
        assert!(e.to_string().contains("7.0 or later"), "{e}");
        // A 7.x that does not answer `SET NX GET` with what it kept: every replay would
        // pass, so it is refused by what it does, whatever its version says.
        let Err(e) = open(fake("7.2.4")).await else {
            panic!("a server that forgets marks accepted");
        };
        assert!(e.to_string().contains("replay marks would not hold"), "{e}");
        // A real server passes both.
        let server = RedisServer::start();
        assert!(open(server.url()).await.is_ok());
        // One that evicts keys when its memory is full could forget a mark: refused, and
        // told what to set.
        let port: u16 = server.url().rsplit(':').next().unwrap().parse().unwrap();
        for policy in ["allkeys-lru", "volatile-ttl"] {
            assert!(
                trustbroker_tests::redis::raw_command(
                    port,
                    &format!("CONFIG SET maxmemory-policy {policy}")
                )
                .unwrap()
                .starts_with("+OK")
            );
            let Err(e) = open(server.url()).await else {
                panic!("a server with maxmemory-policy {policy} accepted");
            };
            assert!(e.to_string().contains(policy), "{e}");
            assert!(
                e.to_string().contains("set maxmemory-policy to noeviction"),
                "{e}"
            );
        }
    })
}

#[test]
fn a_replay_mark_that_is_not_a_time_fails_closed() {
    use base64::Engine as _;
    run(async {
        let server = RedisServer::start();
        let b = redis_at(server.url()).await;
        // The mark's key as the broker names it, holding something that is not a time.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"dpop:corrupt");
        let key = format!(
            "tb:seen:{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
        );
        let port: u16 = server.url().rsplit(':').next().unwrap().parse().unwrap();
        assert!(
            trustbroker_tests::redis::raw_command(port, &format!("SET {key} not-a-time"))
                .unwrap()
                .starts_with("+OK")
        );
        let n = t0();
        assert!(
            b.replay()
                .check_and_mark("dpop:corrupt", t(n + 60), t(n))
                .await
                .is_err(),
            "neither first nor a replay: an error"
        );
    })
}

/// Nonces are minted without state (a MAC under a key): replicas on one Redis derive the
/// same key from their state key and accept each other's; a broker with another state key,
/// or an embedded one, accepts none of them.
#[test]
fn replicas_on_one_redis_accept_each_others_nonces_and_no_other_broker_does() {
    run(async {
        let server = RedisServer::start();
        let now = t(t0());
        let until = t(t0() + 60);
        let (a, b) = (redis_at(server.url()).await, redis_at(server.url()).await);
        let n = a.nonce_key().mint(until).unwrap();
        assert_eq!(b.nonce_key().open(n.as_str(), now), Some(until));

        let other = Backend::open(&StateConfig::Redis {
            url: server.url(),
            key: StateKey([8; 32]),
        })
        .await
        .unwrap();
        assert_eq!(other.nonce_key().open(n.as_str(), now), None);

        let (e1, _keep1) = open_embedded().await;
        let (e2, _keep2) = open_embedded().await;
        assert_eq!(e1.nonce_key().open(n.as_str(), now), None);
        let m = e1.nonce_key().mint(until).unwrap();
        assert_eq!(e1.nonce_key().open(m.as_str(), now), Some(until));
        assert_eq!(e2.nonce_key().open(m.as_str(), now), None);
    })
}
