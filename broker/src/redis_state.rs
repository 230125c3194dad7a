//! State on Redis (or Redis Cluster), shared by every replica (SPEC §3, §9).
//!
//! Every operation is one round trip: nonces are consumed with `GETDEL`, single-use and
//! replay markers are `SET NX GET` with an expiry at the marked thing's `exp`, revocations
//! are read with one `MGET`, and compare-and-set updates run as Lua scripts. `SET` with
//! both `NX` and `GET` needs Redis 7.0; [`RedisState::connect`] tries it, and names the
//! version if it is older. Keys that
//! must change together share a hash tag so they live in one cluster slot. Signing keys
//! and the node CA key are sealed with AES-256-GCM under a key from the environment.
//!
//! Any error — Redis down, a timeout, a cluster resharding — is a [`StoreError`], which
//! the exchange turns into `503 temporarily_unavailable`: nothing is issued on a guess.
//! The connection reconnects by itself when Redis returns.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, RedisFuture, Script, Value};
use token_exchange::keys::KeyRecord;
use token_exchange::nonce::NonceKey;
use token_exchange::state::{BoxFuture, ReplayStore, RevocationStore, StateError};
use trust_bundles::UnixTime;

use crate::store::{
    AdminRecord, AdminWrite, JoinTokenRecord, NodeRecord, Revocation, StoreError, StoredCa,
};

/// How long one operation may take before it counts as an outage.
const OP_TIMEOUT: Duration = Duration::from_secs(1);
/// Compare-and-set attempts before giving up (contention is rare: admin operations).
const CAS_ATTEMPTS: usize = 16;

const KEYS_BLOB: &str = "tb:{keys}:blob";
const KEYS_SEQ: &str = "tb:{keys}:seq";
const NODE_CA: &str = "tb:node_ca";
const NODE_NAMES: &str = "tb:nodes";
const ADMIN_OBJECTS: &str = "tb:{admin}:objects";
const ADMIN_GENERATION: &str = "tb:{admin}:gen";
const ADMIN_FLOOR: &str = "tb:{admin}:floor";

fn node_key(name: &str) -> String {
    format!("tb:{{n:{name}}}:rec")
}
fn node_last_version(name: &str) -> String {
    format!("tb:{{n:{name}}}:last")
}
fn node_joins(name: &str) -> String {
    format!("tb:{{n:{name}}}:joins")
}
fn join_key(digest: &str) -> String {
    format!("tb:join:{digest}")
}
/// Untrusted strings (nonces, `jti`s) become fixed-length keys.
fn hashed(prefix: &str, s: &str) -> String {
    let d = digest::digest(&digest::SHA256, s.as_bytes());
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(d))
}
/// Every revocation lives in one slot, so one `MGET` answers a whole check.
fn revocation_key(storage_key: &str) -> String {
    format!("tb:{{rev}}:{storage_key}")
}

/// A single server through a reconnecting manager, or a cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Seals secrets at rest: AES-256-GCM, a random nonce per write, and the Redis key as
/// associated data so a sealed value cannot be moved to another key.
struct Sealer(LessSafeKey);

impl Sealer {
    fn new(key: &[u8; 32]) -> Result<Self, StoreError> {
        UnboundKey::new(&AES_256_GCM, key)
            .map(|k| Self(LessSafeKey::new(k)))
            .map_err(|_| StoreError::Db("state key rejected".into()))
    }

    fn seal(&self, aad: &str, plain: &[u8]) -> Result<String, StoreError> {
        let nonce: [u8; NONCE_LEN] =
            aws_lc_rs::rand::generate(&aws_lc_rs::rand::SystemRandom::new())
                .map_err(|_| StoreError::Db("no randomness".into()))?
                .expose();
        let mut buf = plain.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut buf,
            )
            .map_err(|_| StoreError::Db("sealing failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("v1.{}", STANDARD.encode(out)))
    }

    fn open(&self, aad: &str, sealed: &str) -> Result<Vec<u8>, StoreError> {
        let corrupt = || {
            StoreError::Corrupt(format!(
                "{aad}: cannot be opened with this state key (wrong key, or tampered)"
            ))
        };
        let raw = sealed
            .strip_prefix("v1.")
            .and_then(|b| STANDARD.decode(b).ok())
            .ok_or_else(corrupt)?;
        let (nonce, ct) = raw.split_at_checked(NONCE_LEN).ok_or_else(corrupt)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt())?;
        let mut buf = ct.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| corrupt())?;
        Ok(plain.to_vec())
    }
}

/// The Redis backend.
pub struct RedisState {
    conn: Conn,
    /// For a single server: how each event-loop thread opens its own connection.
    per_thread: Option<PerThread>,
    sealer: Sealer,
    /// Derived from the state key, so every replica mints and accepts the same nonces.
    nonce_key: Arc<NonceKey>,
    url: String,
}

/// A connection of its own for every current-thread runtime that uses the state (each
/// actix worker), so a command is written and its answer read on the thread that asked:
/// no hop to the thread the shared connection lives on and back, which costs a wake-up
/// each way on every command. The shared connection answers until the thread's own is
/// ready, and whenever it is not.
struct PerThread {
    id: u64,
    /// Held while the state lives: a thread's connection for a state that is gone is
    /// closed the next time that thread opens one (no connection outlives its state by
    /// more than that).
    alive: Arc<()>,
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// For the log line when a thread cannot open its own.
    redacted_url: String,
}

/// One thread's connection for one state.
struct ThreadConn {
    owner: Weak<()>,
    /// `None` while it is being opened, or until `retry_at` after it failed to open.
    conn: Option<ConnectionManager>,
    retry_at: Option<tokio::time::Instant>,
}

/// How long a thread whose own connection failed to open keeps to the shared one before
/// trying again: with Redis down, not an attempt (and a warning) per command.
const THREAD_CONN_RETRY: Duration = Duration::from_secs(5);

thread_local! {
    /// This thread's connections, by [`PerThread::id`].
    static THREAD_CONNS: RefCell<HashMap<u64, ThreadConn>> = RefCell::new(HashMap::new());
}

/// How many connections of its own this thread holds, states gone included.
#[doc(hidden)]
pub fn thread_connections() -> usize {
    THREAD_CONNS.try_with(|c| c.borrow().len()).unwrap_or(0)
}

thread_local! {
    static THREAD_CONN_OPENS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many times this thread has started opening a connection of its own.
#[doc(hidden)]
pub fn thread_connection_opens() -> u64 {
    THREAD_CONN_OPENS
        .try_with(std::cell::Cell::get)
        .unwrap_or(0)
}

static NEXT_STATE_ID: AtomicU64 = AtomicU64::new(0);

impl PerThread {
    /// This thread's connection, if it has one ready; starts opening it otherwise. Only
    /// on a current-thread runtime, whose tasks all run on this thread.
    fn get(&self) -> Option<ConnectionManager> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread {
            return None;
        }
        // `try_with`: a thread being torn down has no connections, and that is no panic.
        THREAD_CONNS
            .try_with(|conns| {
                let mut conns = conns.borrow_mut();
                match conns.get_mut(&self.id) {
                    Some(ThreadConn {
                        conn: Some(conn), ..
                    }) => return Some(conn.clone()),
                    Some(found) => match found.retry_at {
                        // Failed before: try again once the wait is over.
                        Some(at) if tokio::time::Instant::now() >= at => found.retry_at = None,
                        // Being opened, or waiting to try again.
                        _ => return None,
                    },
                    None => {
                        // Rare (once per thread and state): close what states that are
                        // gone left on this thread.
                        conns.retain(|_, c| c.owner.strong_count() > 0);
                        conns.insert(
                            self.id,
                            ThreadConn {
                                owner: Arc::downgrade(&self.alive),
                                conn: None,
                                retry_at: None,
                            },
                        );
                    }
                }
                let _ = THREAD_CONN_OPENS.try_with(|n| n.set(n.get() + 1));
                let (id, client, config) = (self.id, self.client.clone(), self.config.clone());
                let url = self.redacted_url.clone();
                handle.spawn(async move {
                    let opened = tokio::time::timeout(
                        OP_TIMEOUT * 5,
                        client.get_connection_manager_with_config(config),
                    )
                    .await;
                    let _ = THREAD_CONNS.try_with(|conns| {
                        let mut conns = conns.borrow_mut();
                        // Gone: its state was dropped and pruned meanwhile.
                        let Some(entry) = conns.get_mut(&id) else {
                            return;
                        };
                        match opened {
                            Ok(Ok(conn)) => entry.conn = Some(conn),
                            // The shared connection answers meanwhile.
                            Ok(Err(e)) => {
                                tracing::warn!(redis = %url, error = %e, retry_in = ?THREAD_CONN_RETRY, "this thread's own Redis connection did not open; using the shared one");
                                entry.retry_at =
                                    Some(tokio::time::Instant::now() + THREAD_CONN_RETRY);
                            }
                            Err(_) => {
                                tracing::warn!(redis = %url, retry_in = ?THREAD_CONN_RETRY, "this thread's own Redis connection timed out opening; using the shared one");
                                entry.retry_at =
                                    Some(tokio::time::Instant::now() + THREAD_CONN_RETRY);
                            }
                        }
                    });
                });
                None
            })
            .ok()
            .flatten()
    }
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("url", &redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

/// A URL without its password, for logs. Everything up to the *last* `@` goes: a URL
/// parser ends the user info there, so a password with a raw `@` in it still connects,
/// and a cluster URL may carry credentials for every host. Hosts before the last `@` are
/// lost from the log line; a password never reaches it.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://[redacted]@{host}"),
        None => url.to_owned(),
    }
}

/// `TCP_NODELAY` (redis-rs leaves Nagle's algorithm on): commands from many requests share
/// one connection, and with Nagle a batch written while an earlier one is unanswered
/// would wait for that answer's ACK. No throughput change measured on loopback, where the
/// ACK is quick; it is there for a Redis across a network.
fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// One command on `conn`, within [`OP_TIMEOUT`].
async fn query_on<T: FromRedisValue>(conn: &mut Conn, cmd: &Cmd) -> Result<T, StoreError> {
    within(cmd.query_async(conn)).await
}

/// A Redis operation that counts as an outage if it takes longer than [`OP_TIMEOUT`].
async fn within<T>(
    op: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(OP_TIMEOUT, op)
        .await
        .map_err(|_| StoreError::Db("redis: timed out".into()))?
        .map_err(redis_err)
}

fn redis_err(e: redis::RedisError) -> StoreError {
    StoreError::Db(format!("redis: {e}"))
}

impl RedisState {
    /// Connects to `url` (`redis://…`, `rediss://…`, or `redis+cluster://h1,h2,h3`).
    pub async fn connect(url: &str, key: &[u8; 32]) -> Result<Self, StoreError> {
        let mut per_thread = None;
        let conn = if let Some(hosts) = url.strip_prefix("redis+cluster://") {
            let nodes: Vec<String> = hosts
                .split(',')
                .map(|h| format!("redis://{}", h.trim()))
                .collect();
            let client = redis::cluster::ClusterClient::builder(nodes)
                .tcp_settings(tcp_settings())
                .connection_timeout(OP_TIMEOUT)
                .response_timeout(OP_TIMEOUT)
                .retries(2)
                .build()
                .map_err(redis_err)?;
            Conn::Cluster(
                tokio::time::timeout(OP_TIMEOUT * 5, client.get_async_connection())
                    .await
                    .map_err(|_| StoreError::Db("redis cluster: connect timed out".into()))?
                    .map_err(redis_err)?,
            )
        } else {
            let info = url
                .into_connection_info()
                .map_err(redis_err)?
                .set_tcp_settings(tcp_settings());
            let client = redis::Client::open(info).map_err(redis_err)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(OP_TIMEOUT))
                .set_response_timeout(Some(OP_TIMEOUT))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            let shared = tokio::time::timeout(
                OP_TIMEOUT * 5,
                client.get_connection_manager_with_config(config.clone()),
            )
            .await
            .map_err(|_| StoreError::Db("redis: connect timed out".into()))?
            .map_err(redis_err)?;
            per_thread = Some(PerThread {
                id: NEXT_STATE_ID.fetch_add(1, Ordering::Relaxed),
                alive: Arc::new(()),
                client,
                config,
                redacted_url: redact_url(url),
            });
            Conn::Single(shared)
        };
        let state = Self {
            conn,
            per_thread,
            sealer: Sealer::new(key)?,
            nonce_key: Arc::new(
                NonceKey::derive(key)
                    .map_err(|_| StoreError::Db("the nonce key could not be derived".into()))?,
            ),
            url: url.to_owned(),
        };
        state.check_server().await?;
        Ok(state)
    }

    /// Refuses a server that cannot hold replay marks: one older than Redis 7.0, whose `SET`
    /// takes `NX` or `GET` but not both (every DPoP proof would be refused with 503, one
    /// syntax error at a time), and any server or proxy that does not answer `SET NX GET`
    /// with the value it kept (every replay would pass). The version is read from `INFO`
    /// for a clear message; the behaviour is tried on a key of its own.
    async fn check_server(&self) -> Result<(), StoreError> {
        // On the shared connection: this thread's own is for the requests it will serve.
        let mut conn = self.conn.clone();
        for text in self.info(&mut conn, "server").await {
            if let Some(version) = too_old(&text) {
                return Err(StoreError::Db(format!(
                    "redis: the server is Redis {version}; trustbroker needs Redis 7.0 or later"
                )));
            }
        }
        // Replay marks, spent nonces and revocations are keys with a time to live: a server
        // that evicts under memory pressure would forget them and let what they guard be
        // used again. With `noeviction` a full server refuses the write, and the broker
        // fails closed. Read once, at start, from the primaries that answer `INFO`.
        for text in self.info(&mut conn, "memory").await {
            if let Some(policy) = evicting(&text) {
                return Err(StoreError::Db(format!(
                    "redis: maxmemory-policy is {policy}; replay marks, spent nonces and revocations could be evicted and what they guard used again: set maxmemory-policy to noeviction"
                )));
            }
        }
        let id: [u8; 16] = aws_lc_rs::rand::generate(&aws_lc_rs::rand::SystemRandom::new())
            .map_err(|_| StoreError::Db("no randomness for the probe key".into()))?
            .expose();
        let probe = format!("tb:probe:{}", URL_SAFE_NO_PAD.encode(id));
        let set = |value: &'static str| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&probe)
                .arg(value)
                .arg("EX")
                .arg(60)
                .arg("NX")
                .arg("GET");
            cmd
        };
        let first: Option<String> = query_on(&mut conn, &set("1")).await?;
        let second: Option<String> = query_on(&mut conn, &set("2")).await?;
        let _: Result<i64, _> = query_on(&mut conn, redis::cmd("DEL").arg(&probe)).await;
        if first.is_some() || second.as_deref() != Some("1") {
            return Err(StoreError::Db(format!(
                "redis: `SET … NX GET` answered {first:?} then {second:?} instead of nothing then \"1\"; replay marks would not hold on this server"
            )));
        }
        Ok(())
    }

    /// Every text of `INFO section` (one per node of a cluster); none from a server or
    /// proxy that does not answer it, whose settings then go unread.
    async fn info(&self, conn: &mut Conn, section: &str) -> Vec<String> {
        let mut texts = Vec::new();
        match query_on::<Value>(conn, redis::cmd("INFO").arg(section)).await {
            Ok(info) => collect_text(&info, &mut texts),
            Err(e) => {
                tracing::warn!(redis = %redact_url(&self.url), error = %e, section, "INFO is not answered; the server's settings are not checked");
            }
        }
        texts
    }

    /// The key the replicas on this state mint and check nonces under.
    pub fn nonce_key(&self) -> Arc<NonceKey> {
        self.nonce_key.clone()
    }

    /// The URL, password redacted.
    pub fn describe(&self) -> String {
        redact_url(&self.url)
    }

    /// The connection to ask on: this thread's own when it has one.
    fn conn(&self) -> Conn {
        match self.per_thread.as_ref().and_then(PerThread::get) {
            Some(own) => Conn::Single(own),
            None => self.conn.clone(),
        }
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        query_on(&mut self.conn(), cmd).await
    }

    async fn script<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, StoreError> {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(*k);
        }
        for a in args {
            inv.arg(*a);
        }
        within(inv.invoke_async(&mut self.conn())).await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let pong: String = self.query(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Db(format!("redis: PING answered {pong}")))
        }
    }

    /// The stored signing keys and their sequence (0 before any were stored).
    pub async fn load_keys(&self) -> Result<(Vec<KeyRecord>, u64), StoreError> {
        let (blob, seq): (Option<String>, Option<u64>) = self
            .query(redis::cmd("MGET").arg(KEYS_BLOB).arg(KEYS_SEQ))
            .await?;
        let records = match blob {
            None => Vec::new(),
            Some(b) => {
                let plain = self.sealer.open(KEYS_BLOB, &b)?;
                serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt(e.to_string()))?
            }
        };
        Ok((records, seq.unwrap_or(0)))
    }

    /// Stores `records` if the sequence is still `expected`: `Some(new sequence)`, or
    /// `None` when another replica wrote first.
    pub async fn save_keys(
        &self,
        records: &[KeyRecord],
        expected: u64,
    ) -> Result<Option<u64>, StoreError> {
        let plain = serde_json::to_vec(records).map_err(|e| StoreError::Db(e.to_string()))?;
        let sealed = self.sealer.seal(KEYS_BLOB, &plain)?;
        let script = Script::new(
            r"local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
              if cur ~= tonumber(ARGV[1]) then return -1 end
              redis.call('SET', KEYS[1], ARGV[2])
              return redis.call('INCR', KEYS[2])",
        );
        let seq: i64 = self
            .script(
                &script,
                &[KEYS_BLOB, KEYS_SEQ],
                &[&expected.to_string(), &sealed],
            )
            .await?;
        Ok(u64::try_from(seq).ok())
    }

    pub async fn node_ca(&self) -> Result<Option<StoredCa>, StoreError> {
        let v: Option<String> = self.query(redis::cmd("GET").arg(NODE_CA)).await?;
        v.map(|sealed| {
            let plain = self.sealer.open(NODE_CA, &sealed)?;
            serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .transpose()
    }

    /// Stores the node CA unless one exists; returns the stored one (replicas racing at
    /// first start agree).
    pub async fn init_node_ca(&self, ca: &StoredCa) -> Result<StoredCa, StoreError> {
        let plain = serde_json::to_vec(ca).map_err(|e| StoreError::Db(e.to_string()))?;
        let sealed = self.sealer.seal(NODE_CA, &plain)?;
        let _: Option<String> = self
            .query(redis::cmd("SET").arg(NODE_CA).arg(sealed).arg("NX"))
            .await?;
        self.node_ca()
            .await?
            .ok_or_else(|| StoreError::Db("node CA vanished".into()))
    }

    pub async fn put_join_token(
        &self,
        digest: &str,
        token: &JoinTokenRecord,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(token).map_err(|e| StoreError::Db(e.to_string()))?;
        // Two keys in two cluster slots: two commands. The node's list first, so that a
        // revocation of the node always finds (and cancels) the token.
        let _: i64 = self
            .query(redis::cmd("SADD").arg(node_joins(&token.node)).arg(digest))
            .await?;
        let _: () = self
            .query(
                redis::cmd("SET")
                    .arg(join_key(digest))
                    .arg(json)
                    .arg("EXAT")
                    .arg(token.expires_at.max(1)),
            )
            .await?;
        Ok(())
    }

    /// Removes and returns the join token: of any number of callers, one gets it.
    pub async fn take_join_token(
        &self,
        digest: &str,
    ) -> Result<Option<JoinTokenRecord>, StoreError> {
        let v: Option<String> = self
            .query(redis::cmd("GETDEL").arg(join_key(digest)))
            .await?;
        v.map(|j| serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    async fn node_raw(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.query(redis::cmd("GET").arg(node_key(name))).await
    }

    pub async fn node(&self, name: &str) -> Result<Option<NodeRecord>, StoreError> {
        self.node_raw(name)
            .await?
            .map(|j| serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let names: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(NODE_NAMES)).await?;
        let mut out = Vec::new();
        for n in names {
            if let Some(rec) = self.node(&n).await? {
                out.push(rec);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub async fn last_node_version(&self, name: &str) -> Result<u64, StoreError> {
        let v: Option<u64> = self
            .query(redis::cmd("GET").arg(node_last_version(name)))
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// Replaces the node record if it is still `old` (compare and set).
    async fn cas_node(
        &self,
        name: &str,
        old: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, StoreError> {
        let script = Script::new(
            r"local cur = redis.call('GET', KEYS[1])
              if (cur or '') ~= ARGV[1] then return 0 end
              if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
              return 1",
        );
        let ok: i64 = self
            .script(
                &script,
                &[&node_key(name)],
                &[old.unwrap_or(""), new.unwrap_or("")],
            )
            .await?;
        Ok(ok == 1)
    }

    /// Applies `f` to the node record and writes what it returns, atomically with respect
    /// to every replica (retried on contention).
    pub async fn update_node<T>(
        &self,
        name: &str,
        mut f: impl FnMut(Option<NodeRecord>) -> Result<(Option<NodeRecord>, T), StoreError>,
    ) -> Result<T, StoreError> {
        for _ in 0..CAS_ATTEMPTS {
            let raw = self.node_raw(name).await?;
            let current = raw
                .as_deref()
                .map(|j| serde_json::from_str(j).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()?;
            let (next, out) = f(current)?;
            let next_json = next
                .as_ref()
                .map(|r| serde_json::to_string(r).map_err(|e| StoreError::Db(e.to_string())))
                .transpose()?;
            if self
                .cas_node(name, raw.as_deref(), next_json.as_deref())
                .await?
            {
                let cmd = if next.is_some() { "SADD" } else { "SREM" };
                let _: i64 = self
                    .query(redis::cmd(cmd).arg(NODE_NAMES).arg(name))
                    .await?;
                return Ok(out);
            }
        }
        Err(StoreError::Db("node record: too much contention".into()))
    }

    /// Deletes the node if its version is `if_match`, remembers that version, and cancels
    /// its pending join tokens.
    pub async fn revoke_node(&self, name: &str, if_match: &str) -> Result<Revocation, StoreError> {
        let script = Script::new(
            r"local cur = redis.call('GET', KEYS[1])
              if not cur then return 0 end
              local v = cjson.decode(cur)['version']
              if tostring(v) ~= ARGV[1] then return -1 end
              redis.call('DEL', KEYS[1])
              redis.call('SET', KEYS[2], v)
              return 1",
        );
        let r: i64 = self
            .script(
                &script,
                &[&node_key(name), &node_last_version(name)],
                &[if_match],
            )
            .await?;
        match r {
            1 => {
                let _: i64 = self
                    .query(redis::cmd("SREM").arg(NODE_NAMES).arg(name))
                    .await?;
                let digests: Vec<String> = self
                    .query(redis::cmd("SMEMBERS").arg(node_joins(name)))
                    .await?;
                for d in digests {
                    let _: i64 = self.query(redis::cmd("DEL").arg(join_key(&d))).await?;
                }
                let _: i64 = self.query(redis::cmd("DEL").arg(node_joins(name))).await?;
                Ok(Revocation::Revoked)
            }
            0 => Ok(Revocation::Missing),
            _ => Ok(Revocation::Stale),
        }
    }

    pub async fn admin_generation(&self) -> Result<u64, StoreError> {
        let g: Option<u64> = self.query(redis::cmd("GET").arg(ADMIN_GENERATION)).await?;
        Ok(g.unwrap_or(0))
    }

    /// Every admin object and the generation, read together (one slot, one script).
    pub async fn admin_list(&self) -> Result<(u64, Vec<AdminRecord>), StoreError> {
        let script = Script::new(
            r"return {redis.call('GET', KEYS[2]) or '0', redis.call('HGETALL', KEYS[1])}",
        );
        let (generation, flat): (String, Vec<String>) = self
            .script(&script, &[ADMIN_OBJECTS, ADMIN_GENERATION], &[])
            .await?;
        let mut out = Vec::new();
        for pair in flat.chunks(2) {
            if let [k, v] = pair {
                out.push(AdminRecord::decode(k, v.as_bytes())?);
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((generation.parse().unwrap_or(0), out))
    }

    /// Creates (`expected: None`), replaces or deletes (`object: None`) an admin object
    /// if its version is still `expected`, atomically; versions never repeat.
    pub async fn admin_write(
        &self,
        key: &str,
        expected: Option<u64>,
        object: Option<&serde_json::Value>,
    ) -> Result<AdminWrite, StoreError> {
        let script = Script::new(
            r#"local cur = redis.call('HGET', KEYS[1], ARGV[1])
              local curv = 0
              if cur then curv = cjson.decode(cur)['version'] end
              if ARGV[2] == '' then
                if cur then return -1 end
              else
                if not cur then return -2 end
                if tostring(curv) ~= ARGV[2] then return -3 end
              end
              if ARGV[3] == '' then
                redis.call('HDEL', KEYS[1], ARGV[1])
                redis.call('HSET', KEYS[3], ARGV[1], curv)
                redis.call('INCR', KEYS[2])
                return curv
              end
              local floor = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
              local v = math.max(curv, floor) + 1
              redis.call('HSET', KEYS[1], ARGV[1], '{"version":' .. v .. ',"object":' .. ARGV[3] .. '}')
              redis.call('INCR', KEYS[2])
              return v"#,
        );
        let expected = expected.map(|v| v.to_string()).unwrap_or_default();
        let object = match object {
            Some(o) => serde_json::to_string(o).map_err(|e| StoreError::Db(e.to_string()))?,
            None => String::new(),
        };
        let r: i64 = self
            .script(
                &script,
                &[ADMIN_OBJECTS, ADMIN_GENERATION, ADMIN_FLOOR],
                &[key, &expected, &object],
            )
            .await?;
        Ok(match r {
            -1 => AdminWrite::Exists,
            -2 => AdminWrite::Missing,
            -3 => AdminWrite::Stale,
            v => AdminWrite::Written {
                version: u64::try_from(v).unwrap_or(0),
            },
        })
    }
}

fn state_err(e: StoreError) -> StateError {
    StateError(e.to_string())
}

impl ReplayStore for RedisState {
    fn check_and_mark<'a>(
        &'a self,
        key: &'a str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move {
            // The value is the mark's own expiry, compared on our clock (Redis's expiry
            // only reclaims the memory), so every backend answers alike. The time Redis
            // keeps it is given relative (`EX`): an absolute time would be read on the
            // primary's clock, and one ahead of ours would drop a mark early and let its
            // replay through. (Redis still keeps the expiry as an absolute time: a failover
            // to a replica whose clock is ahead can shorten it.)
            let key = hashed("tb:seen:", key);
            let ttl = expires_at.as_secs().saturating_sub(now.as_secs()).max(1);
            // Every DPoP proof runs this, so the usual case is one native command: `SET NX
            // GET` marks a key nobody marked and answers what was there. A Lua script cost
            // Redis 11.9 µs a call against 1.8 µs for a `SET` (`INFO commandstats`, one
            // attested benchmark phase).
            let found: Option<String> = self
                .query(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(expires_at.as_secs())
                        .arg("EX")
                        .arg(ttl)
                        .arg("NX")
                        .arg("GET"),
                )
                .await
                .map_err(state_err)?;
            match found.as_deref().map(mark_expiry).transpose()? {
                None => Ok(true),
                Some(until) if until > now.as_secs() => Ok(false),
                // A mark already lapsed on our clock that Redis has not reclaimed yet (its
                // clock is behind ours): replaced only if it is still lapsed, atomically,
                // so of callers racing for it one wins.
                Some(_) => {
                    static REMARK: LazyLock<Script> = LazyLock::new(|| {
                        Script::new(
                            r"local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
                              if cur > tonumber(ARGV[2]) then return 0 end
                              redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
                              return 1",
                        )
                    });
                    let first: i64 = self
                        .script(
                            &REMARK,
                            &[&key],
                            &[
                                &expires_at.as_secs().to_string(),
                                &now.as_secs().to_string(),
                                &ttl.to_string(),
                            ],
                        )
                        .await
                        .map_err(state_err)?;
                    Ok(first == 1)
                }
            }
        })
    }
}

/// Every text in an `INFO` answer: one for a server, one per node for a cluster.
fn collect_text(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => out.push(s.clone()),
        Value::Array(items) | Value::Set(items) => {
            items.iter().for_each(|i| collect_text(i, out));
        }
        Value::Map(pairs) => pairs.iter().for_each(|(_, i)| collect_text(i, out)),
        _ => {}
    }
}

/// The `redis_version` an `INFO server` text gives, if it is older than 7.0.
fn too_old(info: &str) -> Option<&str> {
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))?
        .trim();
    let major: u32 = version.split('.').next()?.parse().ok()?;
    (major < 7).then_some(version)
}

/// The `maxmemory_policy` an `INFO memory` text gives, if it is one that evicts keys.
fn evicting(info: &str) -> Option<&str> {
    let policy = info
        .lines()
        .find_map(|l| l.strip_prefix("maxmemory_policy:"))?
        .trim();
    (policy != "noeviction").then_some(policy)
}

/// A replay mark's value: the Unix second it lapses at. Anything else fails closed.
fn mark_expiry(v: &str) -> Result<u64, StateError> {
    v.parse()
        .map_err(|_| StateError("replay mark is corrupt".into()))
}

impl RevocationStore for RedisState {
    fn revoke<'a>(
        &'a self,
        key: &'a str,
        at: UnixTime,
        keep_until: UnixTime,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            // The value is "<revoked at>:<kept until>"; revoking again keeps the later of
            // each. Redis keeps it for a relative time, from `at` (every caller revokes as
            // of its now): an absolute time would be read on Redis's clock, and one ahead
            // of ours would drop the revocation early and let the token through again.
            let script = Script::new(
                r"local old = redis.call('GET', KEYS[1])
                  local now = tonumber(ARGV[1])
                  local at, keep = now, tonumber(ARGV[2])
                  if old then
                    local oa, ok = string.match(old, '^(%d+):(%d+)$')
                    if oa then
                      at = math.max(at, tonumber(oa))
                      keep = math.max(keep, tonumber(ok))
                    end
                  end
                  redis.call('SET', KEYS[1], string.format('%d:%d', at, keep), 'EX', math.max(keep - now, 1))
                  return at",
            );
            let keep = keep_until.as_secs().max(at.as_secs().saturating_add(1));
            let _: i64 = self
                .script(
                    &script,
                    &[&revocation_key(key)],
                    &[&at.as_secs().to_string(), &keep.to_string()],
                )
                .await
                .map_err(state_err)?;
            Ok(())
        })
    }

    fn revoked_at<'a>(
        &'a self,
        keys: &'a [String],
        now: UnixTime,
    ) -> BoxFuture<'a, Result<Vec<Option<UnixTime>>, StateError>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let mut cmd = redis::cmd("MGET");
            for k in keys {
                cmd.arg(revocation_key(k));
            }
            let found: Vec<Option<String>> = self.query(&cmd).await.map_err(state_err)?;
            found
                .into_iter()
                .map(|v| match v {
                    None => Ok(None),
                    Some(v) => {
                        let (at, keep) = v
                            .split_once(':')
                            .and_then(|(a, k)| {
                                Some((a.parse::<u64>().ok()?, k.parse::<u64>().ok()?))
                            })
                            .ok_or_else(|| StateError("revocation entry is corrupt".into()))?;
                        Ok((keep > now.as_secs()).then(|| UnixTime::from_secs(at)))
                    }
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_under_their_key_and_name() {
        let s = Sealer::new(&[7; 32]).unwrap_or_else(|_| unreachable!());
        let sealed = s.seal("tb:{keys}:blob", b"secret").unwrap_or_default();
        assert!(!sealed.contains("secret"));
        assert_eq!(
            s.open("tb:{keys}:blob", &sealed).ok().as_deref(),
            Some(&b"secret"[..])
        );
        assert!(
            s.open("tb:node_ca", &sealed).is_err(),
            "moved to another key"
        );
        let other = Sealer::new(&[8; 32]).unwrap_or_else(|_| unreachable!());
        assert!(
            other.open("tb:{keys}:blob", &sealed).is_err(),
            "another state key"
        );
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('A');
        assert!(s.open("tb:{keys}:blob", &tampered).is_err() || tampered == sealed);
    }

    #[test]
    fn servers_older_than_redis_7_are_named() {
        let info = |v: &str| format!("# Server\r\nredis_version:{v}\r\nredis_mode:standalone\r\n");
        assert_eq!(too_old(&info("6.2.14")), Some("6.2.14"));
        assert_eq!(too_old(&info("5.0.7")), Some("5.0.7"));
        assert_eq!(too_old(&info("7.0.15")), None);
        assert_eq!(too_old(&info("7.2.4")), None);
        assert_eq!(too_old(&info("10.0.0")), None);
        assert_eq!(too_old("# Server\r\nno version here\r\n"), None);
        let memory = |p: &str| format!("# Memory\r\nused_memory:1\r\nmaxmemory_policy:{p}\r\n");
        assert_eq!(evicting(&memory("noeviction")), None);
        assert_eq!(evicting(&memory("allkeys-lru")), Some("allkeys-lru"));
        assert_eq!(evicting(&memory("volatile-ttl")), Some("volatile-ttl"));
        assert_eq!(evicting("# Memory\r\nno policy here\r\n"), None);
        // A cluster answers per node: every node's text is read.
        let mut texts = Vec::new();
        collect_text(
            &Value::Map(vec![
                (
                    Value::SimpleString("a:7000".into()),
                    Value::VerbatimString {
                        format: redis::VerbatimFormat::Text,
                        text: info("7.0.15"),
                    },
                ),
                (
                    Value::SimpleString("b:7001".into()),
                    Value::BulkString(info("6.2.1").into_bytes()),
                ),
            ]),
            &mut texts,
        );
        assert_eq!(
            texts.iter().filter_map(|t| too_old(t)).collect::<Vec<_>>(),
            ["6.2.1"]
        );
    }

    #[test]
    fn replay_marks_that_are_not_numbers_fail_closed() {
        assert_eq!(mark_expiry("1700000000"), Ok(1_700_000_000));
        assert!(mark_expiry("").is_err());
        assert!(mark_expiry("17e8").is_err());
    }

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact_url("redis://user:hunter2@10.0.0.1:6379/0"),
            "redis://[redacted]@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        // A raw `@` in the password: the parser ends the user info at the last one.
        assert_eq!(
            redact_url("rediss://:p@ss@h:6379"),
            "rediss://[redacted]@h:6379"
        );
        // Credentials on every host of a cluster URL.
        let cluster = redact_url("redis+cluster://:s3cret@h1:7000,:s3cret@h2:7001");
        assert!(!cluster.contains("s3cret"), "{cluster}");
        assert_eq!(cluster, "redis+cluster://[redacted]@h2:7001");
    }
}
