//! Durable state on the embedded backend: a redb database (crash-safe, transactional,
//! one writer) under the state directory. Today it holds the signing keys and the bundle
//! sequence; admin objects, nodes and revocations join it as they land.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use token_exchange::keys::KeyRecord;

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("signing_keys");
const NODE_CA: TableDefinition<&str, &[u8]> = TableDefinition::new("node_ca");
const JOIN_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("join_tokens");
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const SINGLE_USE: TableDefinition<&str, u64> = TableDefinition::new("single_use");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Admin objects: "<kind>/<name>" → `{"version": n, "object": {…}}`.
const ADMIN: TableDefinition<&str, &[u8]> = TableDefinition::new("admin_objects");
const ADMIN_GENERATION: &str = "admin_generation";
/// Revocation storage key → (revoked at, kept until), unix seconds.
const REVOCATIONS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("revocations");
const BUNDLE_SEQUENCE: &str = "bundle_sequence";
const FILE: &str = "state.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state database {path} is in use by another trustbroker process")]
    InUse { path: PathBuf },
    #[error("state database: {0}")]
    Db(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// The single-use and revocations tables are first swept when they hold this many entries.
const FIRST_SWEEP: u64 = 256;

/// The embedded durable store.
pub struct DurableStore {
    db: Database,
    path: PathBuf,
    /// Sweep the single-use table when it holds this many marks: twice what the last sweep
    /// left (amortised O(1) per mark however many are live). It was one sweep per 256
    /// marks, each a walk of the whole table: O(n / 256) per mark, over a thousand entries
    /// walked per mark with 300 000 live (single-use tokens live up to their `exp`).
    single_use_sweep_at: std::sync::atomic::AtomicU64,
    /// Sweeps of the single-use table so far (tests).
    single_use_sweeps: std::sync::atomic::AtomicU64,
    /// The same for the revocations table (and its mirror): each revocation walked both.
    revocations_sweep_at: std::sync::atomic::AtomicU64,
    /// The revocations table, in memory: every exchange asks it, and a read transaction
    /// per exchange cost more than the lookups. Exact, because this process is the only
    /// writer (the database is locked to it): loaded at open, and changed under its lock
    /// in the same call that commits the change (just before the commit: a failed commit
    /// leaves it refusing more, never less).
    revocations: RwLock<HashMap<String, (u64, u64)>>,
    /// Each enrolled node's certificate digests, in memory, kept exact the same way:
    /// every attested exchange asks whether its node is still enrolled, and a read
    /// transaction and a JSON parse per exchange cost more than the question.
    node_certs: RwLock<NodeCerts>,
}

/// Node name → the digests of its certificates. `None`: not known, and asking about it is
/// an error — the stored record does not parse (reading it from the database was an error
/// too), or a write to it did not report success (redb warns that a failed commit may be
/// durable all the same).
type NodeCerts = HashMap<String, Option<Vec<String>>>;

fn cert_digests(rec: &NodeRecord) -> Vec<String> {
    rec.certs.iter().map(|c| c.sha256.clone()).collect()
}

impl std::fmt::Debug for DurableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the revocations: a debug line need not carry thousands of entries.
        f.debug_struct("DurableStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DurableStore {
    /// Opens (creating if needed) the store in `dir`, which is made private to its owner:
    /// it holds signing keys.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let dir_err = |source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(dir_err)?;
        }
        let path = dir.join(FILE);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: path.clone() },
            other => db_err(other),
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(dir_err)?;
        }
        Self::with_database(db, path)
    }

    /// The store over an open database: its tables created, its mirrors loaded.
    fn with_database(db: Database, path: PathBuf) -> Result<Self, StoreError> {
        let store = Self {
            db,
            path,
            single_use_sweep_at: std::sync::atomic::AtomicU64::new(0),
            single_use_sweeps: std::sync::atomic::AtomicU64::new(0),
            revocations_sweep_at: std::sync::atomic::AtomicU64::new(0),
            revocations: RwLock::new(HashMap::new()),
            node_certs: RwLock::new(HashMap::new()),
        };
        // Create the tables so readers never see "table does not exist".
        let tx = store.db.begin_write().map_err(db_err)?;
        for t in [KEYS, NODE_CA, JOIN_TOKENS, NODES, ADMIN] {
            tx.open_table(t).map_err(db_err)?;
        }
        tx.open_table(META).map_err(db_err)?;
        tx.open_table(SINGLE_USE).map_err(db_err)?;
        tx.open_table(REVOCATIONS).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        // The mirrors, from one read transaction.
        let tx = store.db.begin_read().map_err(db_err)?;
        let revocations = tx.open_table(REVOCATIONS).map_err(db_err)?;
        let revocations = revocations
            .iter()
            .map_err(db_err)?
            .map(|entry| entry.map(|(k, v)| (k.value().to_owned(), v.value())))
            .collect::<Result<HashMap<_, _>, _>>()
            .map_err(db_err)?;
        let nodes = tx.open_table(NODES).map_err(db_err)?;
        let nodes = nodes
            .iter()
            .map_err(db_err)?
            .map(|entry| {
                entry.map(|(k, v)| {
                    let rec = serde_json::from_slice::<NodeRecord>(v.value()).ok();
                    (k.value().to_owned(), rec.as_ref().map(cert_digests))
                })
            })
            .collect::<Result<NodeCerts, _>>()
            .map_err(db_err)?;
        drop(tx);
        *store.revocations_mut() = revocations;
        *store.node_certs_mut() = nodes;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All stored signing keys.
    pub fn load_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(KEYS).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (_, v) = entry.map_err(db_err)?;
            out.push(
                serde_json::from_slice(v.value())
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
        }
        Ok(out)
    }

    /// Replaces the stored keys with `records` and advances the bundle sequence, in one
    /// transaction. Returns the new sequence.
    pub fn save_keys(&self, records: &[KeyRecord]) -> Result<u64, StoreError> {
        self.save_keys_if(records, None)
            .map(|s| s.unwrap_or_default())
    }

    /// [`DurableStore::save_keys`] if the sequence is still `expected` (when given):
    /// `None` when it moved on.
    pub fn save_keys_if(
        &self,
        records: &[KeyRecord],
        expected: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let seq = {
            if let Some(expected) = expected {
                let meta = tx.open_table(META).map_err(db_err)?;
                let cur = meta
                    .get(BUNDLE_SEQUENCE)
                    .map_err(db_err)?
                    .map_or(0, |v| v.value());
                if cur != expected {
                    return Ok(None);
                }
            }
            let mut keys = tx.open_table(KEYS).map_err(db_err)?;
            keys.retain(|_, _| false).map_err(db_err)?;
            for r in records {
                let bytes = serde_json::to_vec(r).map_err(db_err)?;
                keys.insert(r.kid.as_str(), bytes.as_slice())
                    .map_err(db_err)?;
            }
            let mut meta = tx.open_table(META).map_err(db_err)?;
            let seq = meta
                .get(BUNDLE_SEQUENCE)
                .map_err(db_err)?
                .map_or(0, |v| v.value())
                .saturating_add(1);
            meta.insert(BUNDLE_SEQUENCE, seq).map_err(db_err)?;
            seq
        };
        tx.commit().map_err(db_err)?;
        Ok(Some(seq))
    }

    /// The current bundle sequence (0 before any key was stored).
    pub fn bundle_sequence(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let meta = tx.open_table(META).map_err(db_err)?;
        Ok(meta
            .get(BUNDLE_SEQUENCE)
            .map_err(db_err)?
            .map_or(0, |v| v.value()))
    }

    /// The node CA (PKCS#8 key and certificate), if one was made.
    pub fn node_ca(&self) -> Result<Option<StoredCa>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(NODE_CA).map_err(db_err)?;
        match t.get("ca").map_err(db_err)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| StoreError::Corrupt(e.to_string())),
        }
    }

    /// Stores the node CA unless one exists; returns the one that is stored, so two
    /// processes racing at first start agree.
    pub fn init_node_ca(&self, ca: &StoredCa) -> Result<StoredCa, StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let stored = {
            let mut t = tx.open_table(NODE_CA).map_err(db_err)?;
            let existing = t
                .get("ca")
                .map_err(db_err)?
                .map(|v| serde_json::from_slice::<StoredCa>(v.value()));
            match existing {
                Some(found) => found.map_err(|e| StoreError::Corrupt(e.to_string()))?,
                None => {
                    let bytes = serde_json::to_vec(ca).map_err(db_err)?;
                    t.insert("ca", bytes.as_slice()).map_err(db_err)?;
                    ca.clone()
                }
            }
        };
        tx.commit().map_err(db_err)?;
        Ok(stored)
    }

    /// Records a join token by its digest (the token itself is never stored).
    pub fn put_join_token(&self, digest: &str, token: &JoinTokenRecord) -> Result<(), StoreError> {
        self.put(JOIN_TOKENS, digest, token)
    }

    /// Removes and returns the join token with this digest, in one transaction: of any
    /// number of concurrent callers, exactly one gets it. Unknown digests are answered from
    /// a read transaction, so unauthenticated guesses never cost a durable write.
    pub fn take_join_token(&self, digest: &str) -> Result<Option<JoinTokenRecord>, StoreError> {
        {
            let tx = self.db.begin_read().map_err(db_err)?;
            let t = tx.open_table(JOIN_TOKENS).map_err(db_err)?;
            if t.get(digest).map_err(db_err)?.is_none() {
                return Ok(None);
            }
        }
        let tx = self.db.begin_write().map_err(db_err)?;
        let found = {
            let mut t = tx.open_table(JOIN_TOKENS).map_err(db_err)?;
            let v = t.remove(digest).map_err(db_err)?;
            v.map(|v| serde_json::from_slice(v.value()))
                .transpose()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?
        };
        tx.commit().map_err(db_err)?;
        Ok(found)
    }

    pub fn node(&self, name: &str) -> Result<Option<NodeRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(NODES).map_err(db_err)?;
        t.get(name)
            .map_err(db_err)?
            .map(|v| serde_json::from_slice(v.value()))
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// Whether `name` is enrolled with a certificate whose digest is `cert_sha256`: from
    /// memory, exactly what the database holds.
    pub fn node_has_cert(&self, name: &str, cert_sha256: &str) -> Result<bool, StoreError> {
        let mirror = self
            .node_certs
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match mirror.get(name) {
            None => Ok(false),
            Some(Some(certs)) => Ok(certs.iter().any(|c| c == cert_sha256)),
            Some(None) => Err(StoreError::Corrupt(format!(
                "node record {name} does not parse, or its last write did not complete; a restart reloads it"
            ))),
        }
    }

    /// The node mirror, for writing: taken before the commit and held across it. What the
    /// commit takes away is taken from the mirror before it, and what it grants is granted
    /// only once it reports success, so a commit that fails or panics (and may be durable
    /// all the same) leaves the mirror failing closed. Writers are one at a time already
    /// (a redb write transaction is open), so the mirror changes in commit order.
    fn node_certs_mut(&self) -> std::sync::RwLockWriteGuard<'_, NodeCerts> {
        self.node_certs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(NODES).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(db_err)? {
            let (_, v) = entry.map_err(db_err)?;
            out.push(
                serde_json::from_slice(v.value())
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
        }
        Ok(out)
    }

    /// Deletes a node if its version is `if_match`, cancels every pending join token for
    /// it, and remembers its last version so a re-enrollment never reuses one — all in one
    /// transaction.
    pub fn revoke_node(&self, name: &str, if_match: &str) -> Result<Revocation, StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let outcome = {
            let mut nodes = tx.open_table(NODES).map_err(db_err)?;
            let current = nodes
                .get(name)
                .map_err(db_err)?
                .map(|v| serde_json::from_slice::<NodeRecord>(v.value()))
                .transpose()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            match current {
                None => Revocation::Missing,
                Some(rec) if rec.version.to_string() != if_match => Revocation::Stale,
                Some(rec) => {
                    nodes.remove(name).map_err(db_err)?;
                    let mut meta = tx.open_table(META).map_err(db_err)?;
                    meta.insert(format!("node_version:{name}").as_str(), rec.version)
                        .map_err(db_err)?;
                    let mut tokens = tx.open_table(JOIN_TOKENS).map_err(db_err)?;
                    tokens
                        .retain(|_, v| {
                            serde_json::from_slice::<JoinTokenRecord>(v)
                                .map_or(true, |t| t.node != name)
                        })
                        .map_err(db_err)?;
                    Revocation::Revoked
                }
            }
        };
        let mut mirror = self.node_certs_mut();
        if outcome == Revocation::Revoked {
            mirror.remove(name);
        }
        tx.commit().map_err(db_err)?;
        Ok(outcome)
    }

    /// The last version a deleted node had (0 if it never existed).
    pub fn last_node_version(&self, name: &str) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let meta = tx.open_table(META).map_err(db_err)?;
        Ok(meta
            .get(format!("node_version:{name}").as_str())
            .map_err(db_err)?
            .map_or(0, |v| v.value()))
    }

    /// Applies `f` to the node record (absent: `None`) and writes what it returns, in one
    /// transaction. `f` may refuse by returning `Err`.
    pub fn update_node<T>(
        &self,
        name: &str,
        f: impl FnOnce(Option<NodeRecord>) -> Result<(Option<NodeRecord>, T), StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let out = {
            let mut t = tx.open_table(NODES).map_err(db_err)?;
            let current = t
                .get(name)
                .map_err(db_err)?
                .map(|v| serde_json::from_slice::<NodeRecord>(v.value()))
                .transpose()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let (next, out) = f(current)?;
            let certs = match next {
                Some(rec) => {
                    let bytes = serde_json::to_vec(&rec).map_err(db_err)?;
                    t.insert(name, bytes.as_slice()).map_err(db_err)?;
                    Some(cert_digests(&rec))
                }
                None => {
                    t.remove(name).map_err(db_err)?;
                    None
                }
            };
            (out, certs)
        };
        let (out, certs) = out;
        // Taken after `f` has run (it may read the store), held across the commit. Until
        // the commit reports success the node is not known.
        let mut mirror = self.node_certs_mut();
        mirror.insert(name.to_owned(), None);
        tx.commit().map_err(db_err)?;
        match certs {
            Some(certs) => mirror.insert(name.to_owned(), Some(certs)),
            None => mirror.remove(name),
        };
        Ok(out)
    }

    fn put<T: serde::Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(table).map_err(db_err)?;
            let bytes = serde_json::to_vec(value).map_err(db_err)?;
            t.insert(key, bytes.as_slice()).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    /// Marks `key` as used until `expires_at` (unix seconds), durably: `true` if it was not
    /// already marked. Expired marks are swept in the same transaction now and then.
    pub fn mark_single_use(
        &self,
        key: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let first = {
            let mut t = tx.open_table(SINGLE_USE).map_err(db_err)?;
            let live = t.get(key).map_err(db_err)?.is_some_and(|v| v.value() > now);
            if !live {
                t.insert(key, expires_at).map_err(db_err)?;
                // Write transactions are serialised, so the threshold is read and set
                // under the database's write lock. A commit that fails after a sweep leaves
                // a threshold the table may not match: the next sweep comes earlier or
                // later than due, and takes only lapsed marks all the same.
                use std::sync::atomic::Ordering::Relaxed;
                let due = self.single_use_sweep_at.load(Relaxed).max(FIRST_SWEEP);
                if t.len().map_err(db_err)? >= due {
                    t.retain(|_, exp| exp > now).map_err(db_err)?;
                    let left = t.len().map_err(db_err)?;
                    self.single_use_sweep_at
                        .store(left.saturating_mul(2), Relaxed);
                    self.single_use_sweeps.fetch_add(1, Relaxed);
                }
            }
            !live
        };
        tx.commit().map_err(db_err)?;
        Ok(first)
    }

    /// Records a revocation durably; revoking again keeps the later times. Lapsed entries
    /// are swept in the same transaction once the table has doubled since the last sweep.
    pub fn revoke(&self, key: &str, at: u64, keep_until: u64) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let (entry, swept) = {
            let mut t = tx.open_table(REVOCATIONS).map_err(db_err)?;
            let (old_at, old_keep) = t.get(key).map_err(db_err)?.map_or((0, 0), |v| v.value());
            let entry = (old_at.max(at), old_keep.max(keep_until));
            t.insert(key, entry).map_err(db_err)?;
            // Serialised with every other write transaction, as for single-use marks.
            use std::sync::atomic::Ordering::Relaxed;
            let due = self.revocations_sweep_at.load(Relaxed).max(FIRST_SWEEP);
            let swept = t.len().map_err(db_err)? >= due;
            if swept {
                t.retain(|_, (_, keep)| keep > at).map_err(db_err)?;
                let left = t.len().map_err(db_err)?;
                self.revocations_sweep_at
                    .store(left.saturating_mul(2), Relaxed);
            }
            (entry, swept)
        };
        // In effect before the commit: one that fails may be durable all the same (redb
        // says so), and a revocation that may be on disk is one to honour. So once this
        // returns, every lookup sees it. The mirror's lock is held for the update only, not
        // across the commit: every exchange reads the mirror, and a commit waits for the
        // disk (0.45 ms a revocation at the median here, 5.9 ms at worst). Write
        // transactions are serialised, so revocations reach the mirror in commit order.
        {
            let mut mirror = self.revocations_mut();
            mirror.insert(key.to_owned(), entry);
            if swept {
                mirror.retain(|_, (_, keep)| *keep > at);
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(())
    }

    /// When each key was revoked, if it was and the entry is still kept at `now`.
    pub fn revoked_at(&self, keys: &[String], now: u64) -> Result<Vec<Option<u64>>, StoreError> {
        let mirror = self
            .revocations
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(keys
            .iter()
            .map(|k| {
                mirror
                    .get(k.as_str())
                    .filter(|(_, keep)| *keep > now)
                    .map(|(at, _)| *at)
            })
            .collect())
    }

    /// The mirror, for writing. A revocation goes in just before its commit, by steps that
    /// do not panic: a commit that fails or panics may be durable all the same, and the
    /// mirror then errs towards refusing.
    fn revocations_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, (u64, u64)>> {
        self.revocations
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The admin-object generation: it moves on every change.
    pub fn admin_generation(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let meta = tx.open_table(META).map_err(db_err)?;
        Ok(meta
            .get(ADMIN_GENERATION)
            .map_err(db_err)?
            .map_or(0, |v| v.value()))
    }

    /// Every admin object, with the generation they were read at.
    pub fn admin_list(&self) -> Result<(u64, Vec<AdminRecord>), StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let meta = tx.open_table(META).map_err(db_err)?;
        let generation = meta
            .get(ADMIN_GENERATION)
            .map_err(db_err)?
            .map_or(0, |v| v.value());
        let t = tx.open_table(ADMIN).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.push(AdminRecord::decode(k.value(), v.value())?);
        }
        Ok((generation, out))
    }

    /// Creates (`expected: None`), replaces or deletes (`object: None`) an admin object
    /// if its version is still `expected`; versions never repeat, even across a delete.
    pub fn admin_write(
        &self,
        key: &str,
        expected: Option<u64>,
        object: Option<&serde_json::Value>,
    ) -> Result<AdminWrite, StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let outcome = {
            let mut t = tx.open_table(ADMIN).map_err(db_err)?;
            let current = t
                .get(key)
                .map_err(db_err)?
                .map(|v| AdminRecord::decode(key, v.value()))
                .transpose()?;
            let mut meta = tx.open_table(META).map_err(db_err)?;
            let floor_key = format!("admin_version:{key}");
            let floor = meta
                .get(floor_key.as_str())
                .map_err(db_err)?
                .map_or(0, |v| v.value());
            let check = AdminWrite::check(current.as_ref().map(|c| c.version), expected);
            if check != AdminWrite::Ok {
                return Ok(check);
            }
            let cur_v = current.as_ref().map_or(0, |c| c.version);
            let outcome = match object {
                None => {
                    t.remove(key).map_err(db_err)?;
                    meta.insert(floor_key.as_str(), cur_v).map_err(db_err)?;
                    AdminWrite::Written { version: cur_v }
                }
                Some(obj) => {
                    let version = cur_v.max(floor).saturating_add(1);
                    let bytes =
                        serde_json::to_vec(&serde_json::json!({"version": version, "object": obj}))
                            .map_err(db_err)?;
                    t.insert(key, bytes.as_slice()).map_err(db_err)?;
                    AdminWrite::Written { version }
                }
            };
            let generation = meta
                .get(ADMIN_GENERATION)
                .map_err(db_err)?
                .map_or(0, |v| v.value())
                .saturating_add(1);
            meta.insert(ADMIN_GENERATION, generation).map_err(db_err)?;
            outcome
        };
        tx.commit().map_err(db_err)?;
        Ok(outcome)
    }

    /// A cheap read that proves the store answers (readiness).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.bundle_sequence().map(|_| ())
    }
}

/// The node CA as stored. The key is secret; `Debug` redacts it.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredCa {
    pub pkcs8_b64: String,
    pub cert_der_b64: String,
}

impl std::fmt::Debug for StoredCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCa")
            .field("pkcs8_b64", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// An admin object as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminRecord {
    /// "<kind>/<name>".
    pub key: String,
    pub version: u64,
    pub object: serde_json::Value,
}

impl AdminRecord {
    pub fn decode(key: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        #[derive(serde::Deserialize)]
        struct Stored {
            version: u64,
            object: serde_json::Value,
        }
        let s: Stored =
            serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Self {
            key: key.to_owned(),
            version: s.version,
            object: s.object,
        })
    }
}

/// What an admin write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminWrite {
    /// Written at this version (for a delete: the version deleted).
    Written { version: u64 },
    /// Create, but it exists (409).
    Exists,
    /// Update or delete, but it does not exist (404).
    Missing,
    /// The version moved on (412).
    Stale,
    /// (Internal: the preconditions hold.)
    Ok,
}

impl AdminWrite {
    /// The precondition outcome for `current` against `expected`.
    pub fn check(current: Option<u64>, expected: Option<u64>) -> Self {
        match (current, expected) {
            (Some(_), None) => Self::Exists,
            (None, Some(_)) => Self::Missing,
            (Some(c), Some(e)) if c != e => Self::Stale,
            _ => Self::Ok,
        }
    }
}

/// What `revoke_node` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    Revoked,
    Missing,
    Stale,
}

/// A join token's record, stored under the token's digest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JoinTokenRecord {
    pub node: String,
    pub expires_at: u64,
}

/// A certificate issued to a node's current enrollment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeCert {
    pub sha256: String,
    pub not_after: u64,
}

/// An enrolled node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub spiffe_id: String,
    pub enrolled_at: u64,
    pub version: u64,
    /// Certificates of the current enrollment that may still be valid (the current one
    /// and, across a renewal, its predecessor).
    pub certs: Vec<NodeCert>,
}

impl token_exchange::state::ReplayStore for DurableStore {
    fn check_and_mark<'a>(
        &'a self,
        key: &'a str,
        expires_at: trust_bundles::UnixTime,
        now: trust_bundles::UnixTime,
    ) -> token_exchange::state::BoxFuture<'a, Result<bool, token_exchange::state::StateError>> {
        let r = self
            .mark_single_use(key, expires_at.as_secs(), now.as_secs())
            .map_err(|e| token_exchange::state::StateError(e.to_string()));
        Box::pin(async move { r })
    }
}

impl token_exchange::state::RevocationStore for DurableStore {
    fn revoke<'a>(
        &'a self,
        key: &'a str,
        at: trust_bundles::UnixTime,
        keep_until: trust_bundles::UnixTime,
    ) -> token_exchange::state::BoxFuture<'a, Result<(), token_exchange::state::StateError>> {
        let r = DurableStore::revoke(self, key, at.as_secs(), keep_until.as_secs())
            .map_err(|e| token_exchange::state::StateError(e.to_string()));
        Box::pin(async move { r })
    }

    fn revoked_at<'a>(
        &'a self,
        keys: &'a [String],
        now: trust_bundles::UnixTime,
    ) -> token_exchange::state::BoxFuture<
        'a,
        Result<Vec<Option<trust_bundles::UnixTime>>, token_exchange::state::StateError>,
    > {
        let r = DurableStore::revoked_at(self, keys, now.as_secs())
            .map(|v| {
                v.into_iter()
                    .map(|o| o.map(trust_bundles::UnixTime::from_secs))
                    .collect()
            })
            .map_err(|e| token_exchange::state::StateError(e.to_string()));
        Box::pin(async move { r })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use redb::StorageBackend;
    use redb::backends::InMemoryBackend;

    use super::*;

    /// A database whose syncs fail once told to (a commit that reports failure), and wait
    /// at a gate once it is armed (a commit waiting for the disk).
    #[derive(Debug)]
    struct FailingSync {
        inner: InMemoryBackend,
        fail: Arc<AtomicBool>,
        gate: Arc<Gate>,
    }

    impl StorageBackend for FailingSync {
        fn len(&self) -> Result<u64, std::io::Error> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> Result<(), std::io::Error> {
            self.gate.pass();
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("injected: the disk said no"));
            }
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            self.inner.write(offset, data)
        }
    }

    fn node(name: &str, cert: &str) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            spiffe_id: format!("spiffe://t/enforcer/{name}"),
            enrolled_at: 1,
            version: 1,
            certs: vec![NodeCert {
                sha256: cert.into(),
                not_after: 2,
            }],
        }
    }

    /// A store with node `n1` enrolled (certificate `ab`), and the switch that makes its
    /// next commits fail. A failed commit leaves redb refusing further writes, so each
    /// case gets a store of its own.
    fn store() -> (DurableStore, Arc<AtomicBool>) {
        let fail = Arc::new(AtomicBool::new(false));
        let db = Database::builder()
            .create_with_backend(FailingSync {
                inner: InMemoryBackend::new(),
                fail: fail.clone(),
                gate: Arc::default(),
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let s = DurableStore::with_database(db, PathBuf::from("memory"))
            .unwrap_or_else(|e| panic!("{e}"));
        s.update_node("n1", |_| Ok((Some(node("n1", "ab")), ())))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(s.node_has_cert("n1", "ab"), Ok(true)));
        fail.store(true, Ordering::SeqCst);
        (s, fail)
    }

    // redb: a commit that returns an error may be durable all the same. Each mirror must
    // then refuse at least what the database might.

    #[test]
    fn a_node_revoked_by_a_failed_commit_is_refused() {
        let (s, _fail) = store();
        assert!(s.revoke_node("n1", "1").is_err());
        assert!(matches!(s.node_has_cert("n1", "ab"), Ok(false)));
    }

    #[test]
    fn a_node_renewed_by_a_failed_commit_is_not_known() {
        let (s, _fail) = store();
        let renewed = s.update_node("n1", |cur| {
            let mut rec = cur.ok_or_else(|| StoreError::Db("gone".into()))?;
            rec.certs[0].sha256 = "cd".into();
            Ok((Some(rec), ()))
        });
        assert!(renewed.is_err());
        // Neither certificate answers "enrolled": asking is an error until a restart.
        assert!(s.node_has_cert("n1", "ab").is_err());
        assert!(s.node_has_cert("n1", "cd").is_err());
    }

    #[test]
    fn a_revocation_whose_commit_failed_is_in_effect() {
        let (s, _fail) = store();
        assert!(s.revoke("tok:x", 100, 200).is_err());
        assert_eq!(
            s.revoked_at(&["tok:x".into()], 150).ok(),
            Some(vec![Some(100)])
        );
    }

    fn single_use_marks(s: &DurableStore) -> u64 {
        let tx = s.db.begin_read().unwrap_or_else(|e| panic!("{e}"));
        let t = tx.open_table(SINGLE_USE).unwrap_or_else(|e| panic!("{e}"));
        t.len().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The single-use table is walked when it has doubled since the last walk: with 1 024
    /// marks live, the next 1 024 walk it at most once (one walk per 256 marks was four
    /// walks of the whole table). Lapsed marks still go at the next walk.
    #[test]
    fn single_use_sweeps_are_amortised_over_the_live_marks() {
        let (s, fail) = store();
        fail.store(false, Ordering::SeqCst);
        let mark = |key: &str, exp: u64, now: u64| {
            s.mark_single_use(key, exp, now)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        for i in 0..1024 {
            assert!(mark(&format!("a{i}"), 10_000, 0));
        }
        let before = s.single_use_sweeps.load(Ordering::SeqCst);
        for i in 0..1024 {
            assert!(mark(&format!("b{i}"), 10_000, 0));
        }
        let walks = s.single_use_sweeps.load(Ordering::SeqCst) - before;
        assert!(walks <= 1, "{walks} walks of the table over 1 024 marks");
        assert!(!mark("a7", 10_000, 5), "a live mark holds");
        // Everything lapsed at 10 000; new marks at 20 000 sweep the lapsed ones once the
        // table doubles, never later.
        let mut marked = 0;
        while single_use_marks(&s) > marked {
            assert!(mark(&format!("c{marked}"), 30_000, 20_000));
            marked += 1;
            assert!(marked <= 2048, "never swept");
        }
        assert_eq!(single_use_marks(&s), marked);
        assert!(mark("a7", 30_000, 20_000), "a lapsed mark is taken again");
    }

    /// Where a sync waits, once armed, until the test lets it go.
    #[derive(Debug, Default)]
    struct Gate {
        armed: AtomicBool,
        /// (a sync is waiting, the test has opened the gate)
        state: std::sync::Mutex<(bool, bool)>,
        changed: std::sync::Condvar,
    }

    impl Gate {
        /// Waits here, while armed, until the test opens the gate.
        fn pass(&self) {
            if self.armed.load(Ordering::SeqCst) {
                let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                st.0 = true;
                self.changed.notify_all();
                while !st.1 {
                    st = self
                        .changed
                        .wait(st)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }

    /// Every exchange asks the revocations mirror, and a revocation's commit waits for the
    /// disk: the mirror must answer meanwhile, with the revocation already in it. (It was
    /// held for writing across the commit, and every exchange waited for the disk.)
    #[test]
    fn lookups_answer_while_a_revocation_waits_for_the_disk() {
        let gate = Arc::new(Gate::default());
        let db = Database::builder()
            .create_with_backend(FailingSync {
                inner: InMemoryBackend::new(),
                fail: Arc::default(),
                gate: gate.clone(),
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let s = DurableStore::with_database(db, PathBuf::from("memory"))
            .unwrap_or_else(|e| panic!("{e}"));
        gate.armed.store(true, Ordering::SeqCst);
        std::thread::scope(|scope| {
            let revoking = scope.spawn(|| s.revoke("tok:x", 100, 200));
            {
                // A deadlock guard, as below: a revocation that never reaches the disk fails
                // the test instead of hanging it.
                let st = gate.state.lock().unwrap_or_else(PoisonError::into_inner);
                let (st, _) = gate
                    .changed
                    .wait_timeout_while(st, std::time::Duration::from_secs(30), |st| !st.0)
                    .unwrap_or_else(PoisonError::into_inner);
                assert!(st.0, "the revocation never reached the disk");
            }
            // The commit is waiting on the disk. A lookup from another thread must answer;
            // were it to wait for the commit, the gate would never open (the generous
            // timeout only turns that deadlock into a failure).
            let (tx, rx) = std::sync::mpsc::channel();
            let store = &s;
            scope.spawn(move || {
                let _ = tx.send(
                    store
                        .revoked_at(&["tok:x".into(), "tok:y".into()], 150)
                        .ok(),
                );
            });
            let seen = rx.recv_timeout(std::time::Duration::from_secs(30));
            {
                let mut st = gate.state.lock().unwrap_or_else(PoisonError::into_inner);
                st.1 = true;
                gate.changed.notify_all();
            }
            assert_eq!(
                seen,
                Ok(Some(vec![Some(100), None])),
                "a lookup waited for the revocation's commit"
            );
            assert!(matches!(revoking.join(), Ok(Ok(()))));
        });
        gate.armed.store(false, Ordering::SeqCst);
        assert_eq!(
            s.revoked_at(&["tok:x".into()], 150).ok(),
            Some(vec![Some(100)])
        );
    }

    /// Lapsed revocations leave the table and its mirror once the table has doubled since
    /// the last sweep, not at every revocation (each walked both whole).
    #[test]
    fn lapsed_revocations_are_swept_once_the_table_doubles() {
        let (s, fail) = store();
        fail.store(false, Ordering::SeqCst);
        for i in 0..300 {
            s.revoke(&format!("tok:old{i}"), 100, 200)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        // One revocation past their keep time does not walk the table...
        s.revoke("tok:new0", 300, 900)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((stored(&s), mirrored(&s)), (301, 301));
        assert_eq!(
            s.revoked_at(&["tok:old1".into()], 300).ok(),
            Some(vec![None])
        );
        // ...but the table reaching twice what the last sweep left does, here and in the
        // mirror alike.
        let mut i = 1;
        while stored(&s) > i {
            s.revoke(&format!("tok:new{i}"), 300, 900)
                .unwrap_or_else(|e| panic!("{e}"));
            i += 1;
            assert!(i <= 512, "never swept");
        }
        assert_eq!((stored(&s), mirrored(&s)), (i, i));
    }

    /// Revocations in the committed table.
    fn stored(s: &DurableStore) -> u64 {
        let tx = s.db.begin_read().unwrap_or_else(|e| panic!("{e}"));
        let t = tx.open_table(REVOCATIONS).unwrap_or_else(|e| panic!("{e}"));
        t.len().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Revocations in the mirror.
    fn mirrored(s: &DurableStore) -> u64 {
        s.revocations.read().map_or(0, |m| m.len() as u64)
    }

    #[test]
    fn swept_revocations_stay_gone_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let open = || DurableStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let left = {
            let s = open();
            for i in 0..300 {
                s.revoke(&format!("tok:old{i}"), 100, 200)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            // Revocations past the old ones' keep time, until one sweeps them.
            let mut i = 0;
            while stored(&s) == 300 + i {
                s.revoke(&format!("tok:new{i}"), 300, 900)
                    .unwrap_or_else(|e| panic!("{e}"));
                i += 1;
                assert!(i <= 512, "never swept");
            }
            assert_eq!(stored(&s), i);
            i
        };
        // Reopened: the sweep was committed, not only applied to the mirror. Asked at a
        // time before their keep ended, the old ones would still answer if they were
        // there.
        let s = open();
        assert_eq!((stored(&s), mirrored(&s)), (left, left));
        assert_eq!(
            s.revoked_at(&["tok:old7".into(), "tok:new0".into()], 150)
                .ok(),
            Some(vec![None, Some(300)])
        );
    }
}
