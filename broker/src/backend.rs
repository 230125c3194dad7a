//! The state backend `serve` runs on: the embedded store (one process) or Redis (any
//! number of replicas). One surface for both, so handlers never know which.

use std::sync::Arc;

use token_exchange::keys::KeyRecord;
use token_exchange::nonce::NonceKey;
use token_exchange::state::{MemoryStore, ReplayStore, RevocationStore};

use crate::config::StateConfig;
use crate::redis_state::RedisState;
use crate::store::{
    AdminRecord, AdminWrite, DurableStore, JoinTokenRecord, NodeRecord, Revocation, StoreError,
    StoredCa,
};

/// Where durable state lives, and the ephemeral stores that go with it.
#[derive(Debug, Clone)]
pub enum Backend {
    /// redb on disk; spent nonces and DPoP `jti`s in this process's memory, and nonces
    /// minted under a key of its own.
    Embedded {
        store: Arc<DurableStore>,
        nonce_key: Arc<NonceKey>,
        nonces: Arc<MemoryStore>,
        replay: Arc<MemoryStore>,
    },
    /// Everything in Redis, shared by every replica.
    Redis(Arc<RedisState>),
}

impl Backend {
    /// Opens the backend the config names.
    pub async fn open(cfg: &StateConfig) -> Result<Self, StoreError> {
        match cfg {
            StateConfig::Embedded { path } => Self::embedded(Arc::new(DurableStore::open(path)?)),
            StateConfig::Redis { url, key } => Ok(Self::Redis(Arc::new(
                RedisState::connect(url, &key.0).await?,
            ))),
        }
    }

    pub fn embedded(store: Arc<DurableStore>) -> Result<Self, StoreError> {
        let nonce_key = NonceKey::generate()
            .map_err(|_| StoreError::Db("no randomness for the nonce key".into()))?;
        Ok(Self::Embedded {
            store,
            nonce_key: Arc::new(nonce_key),
            // Separate stores, separate budgets: spent nonces cannot crowd out the DPoP
            // replay marks.
            nonces: Arc::new(MemoryStore::new()),
            replay: Arc::new(MemoryStore::new()),
        })
    }

    /// Where state lives, for the start-up log line.
    pub fn describe(&self) -> String {
        match self {
            Self::Embedded { store, .. } => store.path().display().to_string(),
            Self::Redis(r) => r.describe(),
        }
    }

    /// The key nonces are minted and checked under.
    pub fn nonce_key(&self) -> Arc<NonceKey> {
        match self {
            Self::Embedded { nonce_key, .. } => nonce_key.clone(),
            Self::Redis(r) => r.nonce_key(),
        }
    }

    /// Spent nonces.
    pub fn nonces(&self) -> Arc<dyn ReplayStore> {
        match self {
            Self::Embedded { nonces, .. } => nonces.clone(),
            Self::Redis(r) => r.clone(),
        }
    }

    pub fn replay(&self) -> Arc<dyn ReplayStore> {
        match self {
            Self::Embedded { replay, .. } => replay.clone(),
            Self::Redis(r) => r.clone(),
        }
    }

    /// Single-use subject markers: durable on both (a restart must not reopen a window).
    pub fn single_use(&self) -> Arc<dyn ReplayStore> {
        match self {
            Self::Embedded { store, .. } => store.clone(),
            Self::Redis(r) => r.clone(),
        }
    }

    pub fn revocations(&self) -> Arc<dyn RevocationStore> {
        match self {
            Self::Embedded { store, .. } => store.clone(),
            Self::Redis(r) => r.clone(),
        }
    }

    /// Sizes of the in-process stores (Redis reports none: they live there).
    pub fn memory_sizes(&self) -> Option<(usize, usize)> {
        match self {
            Self::Embedded { nonces, replay, .. } => Some((nonces.len(), replay.len())),
            Self::Redis(_) => None,
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Embedded { store, .. } => store.ping(),
            Self::Redis(r) => r.ping().await,
        }
    }

    /// The stored signing keys and the bundle sequence they were stored at.
    pub async fn load_keys(&self) -> Result<(Vec<KeyRecord>, u64), StoreError> {
        match self {
            Self::Embedded { store, .. } => Ok((store.load_keys()?, store.bundle_sequence()?)),
            Self::Redis(r) => r.load_keys().await,
        }
    }

    /// Stores `records` if the sequence is still `expected`: the new sequence, or `None`
    /// when another replica wrote first.
    pub async fn save_keys(
        &self,
        records: &[KeyRecord],
        expected: u64,
    ) -> Result<Option<u64>, StoreError> {
        match self {
            Self::Embedded { store, .. } => store.save_keys_if(records, Some(expected)),
            Self::Redis(r) => r.save_keys(records, expected).await,
        }
    }

    pub async fn node_ca(&self) -> Result<Option<StoredCa>, StoreError> {
        match self {
            Self::Embedded { store, .. } => store.node_ca(),
            Self::Redis(r) => r.node_ca().await,
        }
    }

    pub async fn init_node_ca(&self, ca: &StoredCa) -> Result<StoredCa, StoreError> {
        match self {
            Self::Embedded { store, .. } => store.init_node_ca(ca),
            Self::Redis(r) => r.init_node_ca(ca).await,
        }
    }

    pub async fn put_join_token(
        &self,
        digest: &str,
        token: &JoinTokenRecord,
    ) -> Result<(), StoreError> {
        match self {
            Self::Embedded { store, .. } => store.put_join_token(digest, token),
            Self::Redis(r) => r.put_join_token(digest, token).await,
        }
    }

    pub async fn take_join_token(
        &self,
        digest: &str,
    ) -> Result<Option<JoinTokenRecord>, StoreError> {
        match self {
            Self::Embedded { store, .. } => store.take_join_token(digest),
            Self::Redis(r) => r.take_join_token(digest).await,
        }
    }

    pub async fn node(&self, name: &str) -> Result<Option<NodeRecord>, StoreError> {
        match self {
            Self::Embedded { store, .. } => store.node(name),
            Self::Redis(r) => r.node(name).await,
        }
    }

    /// Whether `name` is enrolled with the certificate whose digest is `cert_sha256`.
    pub async fn node_has_cert(&self, name: &str, cert_sha256: &str) -> Result<bool, StoreError> {
        match self {
            Self::Embedded { store, .. } => store.node_has_cert(name, cert_sha256),
            Self::Redis(r) => Ok(r
                .node(name)
                .await?
                .is_some_and(|r| r.certs.iter().any(|c| c.sha256 == cert_sha256))),
        }
    }

    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        match self {
            Self::Embedded { store, .. } => store.nodes(),
            Self::Redis(r) => r.nodes().await,
        }
    }

    pub async fn revoke_node(&self, name: &str, if_match: &str) -> Result<Revocation, StoreError> {
        match self {
            Self::Embedded { store, .. } => store.revoke_node(name, if_match),
            Self::Redis(r) => r.revoke_node(name, if_match).await,
        }
    }

    pub async fn last_node_version(&self, name: &str) -> Result<u64, StoreError> {
        match self {
            Self::Embedded { store, .. } => store.last_node_version(name),
            Self::Redis(r) => r.last_node_version(name).await,
        }
    }

    /// Applies `f` to the node record and writes what it returns, atomically. `f` may run
    /// more than once (Redis retries on contention).
    pub async fn update_node<T>(
        &self,
        name: &str,
        f: impl FnMut(Option<NodeRecord>) -> Result<(Option<NodeRecord>, T), StoreError>,
    ) -> Result<T, StoreError> {
        match self {
            Self::Embedded { store, .. } => store.update_node(name, f),
            Self::Redis(r) => r.update_node(name, f).await,
        }
    }

    /// The admin-object generation (moves on every change, on any replica).
    pub async fn admin_generation(&self) -> Result<u64, StoreError> {
        match self {
            Self::Embedded { store, .. } => store.admin_generation(),
            Self::Redis(r) => r.admin_generation().await,
        }
    }

    pub async fn admin_list(&self) -> Result<(u64, Vec<AdminRecord>), StoreError> {
        match self {
            Self::Embedded { store, .. } => store.admin_list(),
            Self::Redis(r) => r.admin_list().await,
        }
    }

    pub async fn admin_write(
        &self,
        key: &str,
        expected: Option<u64>,
        object: Option<&serde_json::Value>,
    ) -> Result<AdminWrite, StoreError> {
        match self {
            Self::Embedded { store, .. } => store.admin_write(key, expected, object),
            Self::Redis(r) => r.admin_write(key, expected, object).await,
        }
    }
}
