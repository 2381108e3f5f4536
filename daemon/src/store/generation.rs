//! One generation of the store: a sled db (the engine) with its `users` and `meta` trees and,
//! from store format 2 on, its `KEYS` file. Everything that names sled lives here.

use super::erasure::KeyFile;
use super::error::{EngineResult, StoreError};
use super::layout::{generation_path, read_writes, CURRENT_FILE, WRITES_FILE};
use std::path::{Path, PathBuf};

/// The store format this qamd writes. 1: qam 0.1.0 (plain JSON records keyed by name);
/// 2: sealed records keyed by keyed hashes of names, with `KEYS`.
pub const STORE_FORMAT: u64 = 2;

/// sled's page cache (its default is 1 GiB): reads that need no hash (exists, lookup, list,
/// status) answer from the index, and a verify reads one record beside its argon2 work.
const CACHE_BYTES: u64 = 1024 * 1024;

const USERS_TREE: &str = "users";
/// Invite and reset tokens (see `tokens.rs`).
const TOKENS_TREE: &str = "tokens";
/// The tree of the numbers below, so a generation whose files were emptied is refused
/// instead of opened as an empty store.
const META_TREE: &str = "meta";
/// The generation's own number, written by the migration that made it.
const GENERATION_KEY: &str = "generation";
/// The generation's count of writes, kept here and, once acknowledged, in `WRITES`.
const WRITES_KEY: &str = "writes";
/// The store format; absent in qam 0.1.0's stores (format 1).
const FORMAT_KEY: &str = "format";
/// Slots of `KEYS` that records may reference: a shorter `KEYS` is damaged.
const KEY_SLOTS_KEY: &str = "key_slots";

/// The file of record keys inside a generation.
const KEYS_FILE: &str = "KEYS";

/// The name of the thread that opens sled: its panics (sled panics on some damaged files)
/// become an open error and are kept off stderr; every other thread's panics are reported.
const OPEN_THREAD: &str = "qam-store-open";

/// One sled db: `store-N` (or a 0.1.0 store's files).
pub struct Generation {
    /// N of `store-N`: a migration writes generation N + 1.
    pub number: u64,
    /// Its directory, holding the engine's files and `KEYS`: what full syncs fsync and
    /// erasure audits read.
    pub path: PathBuf,
    /// The engine; flushed by the commit thread.
    db: sled::Db,
    /// Records by engine key.
    pub users: sled::Tree,
    /// The numbers that let damage be detected.
    pub meta: sled::Tree,
    /// Invite and reset tokens by the hash of each token (see `tokens.rs`).
    pub tokens: sled::Tree,
    /// The record keys (format 2); None while a format-1 store is read for its migration.
    pub keys: Option<KeyFile>,
}

/// A transaction over the users and meta trees.
pub type Trees<'a> = (&'a sled::Tree, &'a sled::Tree);
/// A transaction over the users, meta and tokens trees.
pub type TokenTrees<'a> = (&'a sled::Tree, &'a sled::Tree, &'a sled::Tree);
pub type TxResult<T, E = ()> = sled::transaction::ConflictableTransactionResult<T, E>;
pub use sled::transaction::{
    abort, ConflictableTransactionError, TransactionError, TransactionalTree,
};
pub use sled::{Batch, IVec, Transactional};

/// Reads a big-endian number from a transactional `meta` tree.
pub fn tx_number<E>(meta: &TransactionalTree, key: &str) -> TxResult<u64, E> {
    Ok(meta
        .get(key)?
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// Counts one more write in the generation's `meta` tree; returns its number.
pub fn count_write<E>(meta: &TransactionalTree) -> TxResult<u64, E> {
    let writes = tx_number(meta, WRITES_KEY)? + 1;
    meta.insert(WRITES_KEY, &writes.to_be_bytes())?;
    Ok(writes)
}

/// Raises the count of referenced key slots to cover `slot`.
pub fn cover_slot<E>(meta: &TransactionalTree, slot: u64) -> TxResult<(), E> {
    if tx_number(meta, KEY_SLOTS_KEY)? <= slot {
        meta.insert(KEY_SLOTS_KEY, &(slot + 1).to_be_bytes())?;
    }
    Ok(())
}

/// A transaction's failure as the store's error.
pub fn transaction_failed<E>(err: TransactionError<E>) -> StoreError {
    match err {
        TransactionError::Storage(err) => StoreError::Engine(err.to_string()),
        TransactionError::Abort(_) => StoreError::Engine("transaction aborted".into()),
    }
}

/// Installs, once, a panic hook that keeps the open thread's panics off stderr.
fn quiet_open_thread_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() != Some(OPEN_THREAD) {
                report(info);
            }
        }));
    });
}

/// Opens sled at `path` on the open thread; a panic there is "its files are corrupt".
fn open_db(path: &Path) -> Result<sled::Db, String> {
    quiet_open_thread_panics();
    let path = path.to_owned();
    std::thread::Builder::new()
        .name(OPEN_THREAD.into())
        .spawn(move || {
            sled::Config::new()
                .path(path)
                .cache_capacity(CACHE_BYTES)
                .open()
        })
        .map_err(|err| err.to_string())?
        .join()
        .map_err(|_| "its files are corrupt".to_owned())?
        .map_err(|err| err.to_string())
}

impl Generation {
    fn open_db(path: &Path, number: u64) -> Result<Generation, String> {
        let db = open_db(path)?;
        let users = db.open_tree(USERS_TREE).map_err(|err| err.to_string())?;
        let meta = db.open_tree(META_TREE).map_err(|err| err.to_string())?;
        let tokens = db.open_tree(TOKENS_TREE).map_err(|err| err.to_string())?;
        Ok(Generation {
            number,
            path: path.to_owned(),
            db,
            users,
            meta,
            tokens,
            keys: None,
        })
    }

    /// Creates generation `number` in `dir` in today's format, empty, its marker written.
    pub fn create(dir: &Path, number: u64) -> Result<Generation, StoreError> {
        let path = generation_path(dir, number);
        if path.exists() {
            // Left by a migration interrupted before it switched `CURRENT`.
            std::fs::remove_dir_all(&path)?;
        }
        let mut generation = Generation::open_db(&path, number).map_err(StoreError::Engine)?;
        generation.keys = Some(KeyFile::create(&path.join(KEYS_FILE))?);
        generation.set_number(GENERATION_KEY, number)?;
        generation.set_number(FORMAT_KEY, STORE_FORMAT)?;
        Ok(generation)
    }

    /// Opens generation `number` of the store in `dir`, refusing missing or emptied
    /// generations and a db that lost acknowledged writes. The format is checked by the caller.
    pub fn open(dir: &Path, number: u64) -> Result<Generation, String> {
        let path = generation_path(dir, number);
        if number > 0 && !path.is_dir() {
            return Err(format!(
                "{CURRENT_FILE} names {} which is missing",
                path.display()
            ));
        }
        let generation = Generation::open_db(&path, number)?;
        let marker = generation
            .number_of(GENERATION_KEY)
            .map_err(|e| e.to_string())?;
        if number > 0 && marker != Some(number) {
            return Err(format!("the files of {} are damaged", path.display()));
        }
        let counted = generation.writes().map_err(|err| err.to_string())?;
        match read_writes(dir)? {
            Some((of, acknowledged)) if of == number && acknowledged > counted => {
                return Err(format!(
                    "{} lost {} acknowledged writes (its files are damaged)",
                    path.display(),
                    acknowledged - counted
                ))
            }
            // `WRITES` of another generation: a migration stopped between its two renames.
            Some(_) => {}
            None if number > 0 => return Err(format!("its {WRITES_FILE} file is missing")),
            None => {}
        }
        Ok(generation)
    }

    /// The store format of this generation (1 when unmarked: qam 0.1.0).
    pub fn format(&self) -> Result<u64, StoreError> {
        Ok(self.number_of(FORMAT_KEY)?.unwrap_or(1))
    }

    /// Opens this generation's `KEYS` (format 2).
    pub fn open_keys(&mut self) -> Result<(), String> {
        let slots = self
            .number_of(KEY_SLOTS_KEY)
            .map_err(|err| err.to_string())?
            .unwrap_or(0);
        self.keys = Some(KeyFile::open(&self.path.join(KEYS_FILE), slots)?);
        Ok(())
    }

    /// The key file (present from format 2 on, which every opened store has once migrated).
    pub fn keys(&self) -> Result<&KeyFile, StoreError> {
        self.keys
            .as_ref()
            .ok_or_else(|| StoreError::Corrupt("the store has no key file".into()))
    }

    /// Writes counted in this generation's db.
    pub fn writes(&self) -> Result<u64, StoreError> {
        Ok(self.number_of(WRITES_KEY)?.unwrap_or(0))
    }

    fn number_of(&self, key: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .meta
            .get(key)
            .engine()?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    fn set_number(&self, key: &str, value: u64) -> Result<(), StoreError> {
        self.meta.insert(key, &value.to_be_bytes()).engine()?;
        Ok(())
    }

    /// Sets the count of referenced key slots (a migration that wrote them all at once).
    pub fn set_key_slots(&self, slots: u64) -> Result<(), StoreError> {
        self.set_number(KEY_SLOTS_KEY, slots)
    }

    /// Overwrites the store format (tests that fake a newer release).
    #[cfg(test)]
    pub fn set_format(&self, format: u64) -> Result<(), StoreError> {
        self.set_number(FORMAT_KEY, format)
    }

    pub fn trees(&self) -> Trees<'_> {
        (&self.users, &self.meta)
    }

    pub fn token_trees(&self) -> TokenTrees<'_> {
        (&self.users, &self.meta, &self.tokens)
    }

    /// The meta and tokens trees, for writes that touch no record.
    pub fn meta_and_tokens(&self) -> Trees<'_> {
        (&self.meta, &self.tokens)
    }

    /// sled's flush (`sync_file_range`: survives SIGKILL, not yet power loss).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().engine().map(drop)
    }
}
