//! Durable state on the embedded backend: a redb database (crash-safe, transactional,
//! one writer) under the state directory. Today it holds the signing keys and the bundle
//! sequence; admin objects, nodes and revocations join it as they land.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use token_exchange::keys::KeyRecord;

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("signing_keys");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
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
    #[error("stored signing key is corrupt: {0}")]
    Corrupt(String),
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// The embedded durable store.
#[derive(Debug)]
pub struct DurableStore {
    db: Database,
    path: PathBuf,
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
        let store = Self { db, path };
        // Create the tables so readers never see "table does not exist".
        let tx = store.db.begin_write().map_err(db_err)?;
        tx.open_table(KEYS).map_err(db_err)?;
        tx.open_table(META).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
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
        let tx = self.db.begin_write().map_err(db_err)?;
        let seq = {
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
        Ok(seq)
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

    /// A cheap read that proves the store answers (readiness).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.bundle_sequence().map(|_| ())
    }
}
