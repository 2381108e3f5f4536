//! The account store: one record per user (hash, creation date, lock state), sealed with its
//! own key so that removing or replacing it erases the old bytes at once (`erasure.rs`).
//!
//! One file per job: `record.rs` the record and its versions, `erasure.rs` the key file and
//! sealing, `commit.rs` group commit, `layout.rs` the data dir (`CURRENT`, `WRITES`),
//! `generation.rs` the engine (sled), `migrate.rs` upgrades at open, `index.rs` the
//! in-memory index of names, `tokens.rs` invites and password resets. This file is the
//! API the rest of qamd uses; no engine type crosses it, so the engine can change behind it.
//!
//! Every write is durable (and the version it replaced erased) before it returns.

mod commit;
mod erasure;
mod error;
mod generation;
mod index;
mod layout;
mod migrate;
mod record;
mod tokens;

use crate::legacy::LegacyKind;
pub use error::StoreError;
pub use index::Facts;
pub use record::{today, Deletion, Record};
use std::collections::BTreeMap;
pub use tokens::{rfc3339, unix_now, Invite, Redeemed, TokenHash};

use commit::Committer;
use erasure::{open as open_sealed, slot_of, KeyFile, NameKey};
use error::EngineResult;
use generation::{
    abort, count_write, cover_slot, transaction_failed, Generation, IVec, TransactionError,
    Transactional, STORE_FORMAT,
};
use index::{Answer, Index};
use layout::{current_generation, legacy_entries, others_remain, remove_other_generations};
use migrate::{migrate, seal_record, Sealed};
use std::path::Path;
use std::sync::{Arc, Weak};

/// Records the index builder reads per pass (it lets go of the store in between).
const BUILD_CHUNK: usize = 1000;

/// Counts for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every account.
    pub users: u64,
    /// Locked accounts among them.
    pub locked: u64,
    /// Accounts still on a legacy verifier, by kind.
    pub legacy: BTreeMap<LegacyKind, u64>,
    /// Accounts being deleted.
    pub deleting: u64,
}

/// Outcome of writing an import batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    Written {
        /// Records written.
        imported: u64,
        /// Of which replaced an existing record.
        replaced: u64,
    },
    /// The batch names an existing user and replacing was not allowed; nothing written.
    Exists {
        /// Position of that record in the batch.
        index: usize,
    },
}

/// Handle to the open store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// What every clone works on; the index builder holds it only weakly, so the store
    /// closes when the last `Store` is dropped.
    shared: Arc<Shared>,
}

struct Shared {
    /// The generation in use (fixed once open: only migration writes a new one).
    generation: Arc<Generation>,
    /// Writers share it; the index builder takes it alone for a moment at its end, so no
    /// erased slot is handed out while its erasure is still on its way to disk.
    writes: tokio::sync::RwLock<()>,
    /// Makes writes durable, one flush for all writers waiting at once (group commit).
    committer: Committer,
    /// Names and public facts, so reads that need no hash skip the engine.
    index: Arc<Index>,
    /// The soonest expiry among tokens, so pruning before each link made rarely scans.
    prune_hint: std::sync::Mutex<tokens::PruneHint>,
}

fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt(reason.into())
}

/// The public facts of a record.
fn facts_of(record: &Record) -> Result<Facts, StoreError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let created = time::Date::parse(&record.created, &format)
        .map_err(|_| corrupt("a creation date is not YYYY-MM-DD"))?;
    Ok(Facts {
        created,
        locked: record.locked,
        legacy: LegacyKind::of(record.origin.as_deref(), &record.hash),
        deleting: record.deletion.is_some(),
    })
}

/// Opens `value`, the sealed record stored under `key`, with its key from `key_of`.
fn unseal(
    key: &[u8],
    value: &[u8],
    key_of: impl Fn(u64) -> Result<erasure::RecordKey, StoreError>,
) -> Result<Option<(String, Record)>, StoreError> {
    let slot = slot_of(value).ok_or_else(|| corrupt("a sealed record is malformed"))?;
    match open_sealed(key, &key_of(slot)?, value) {
        Some(plain) => record::decode(&plain)
            .map(Some)
            .map_err(|err| corrupt(err.to_string())),
        None => Ok(None),
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, upgrading an older format once. A store sled
    /// cannot read, a damaged `CURRENT`, `WRITES` or `KEYS`, a missing or emptied generation
    /// or an unreadable record is an error naming the directory, never a panic and never a
    /// silently empty store; a store of a newer format is refused.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let open_error = |reason: String| StoreError::Open {
            dir: dir.to_owned(),
            reason,
        };
        let number = current_generation(dir).map_err(open_error)?;
        let generation = if number == 0 {
            if !legacy_entries(dir)?.is_empty() {
                // sled reads garbage as an empty db: never open such files as a new store.
                return Err(open_error(format!(
                    "it holds sled files but no {} file (damaged, or not a qam store)",
                    layout::CURRENT_FILE
                )));
            }
            migrate(dir, None)?
        } else {
            let mut generation = Generation::open(dir, number).map_err(open_error)?;
            match generation.format() {
                Ok(STORE_FORMAT) => {
                    generation.open_keys().map_err(open_error)?;
                    if others_remain(dir, number)? {
                        remove_other_generations(dir, number)?;
                    }
                    generation
                }
                Ok(1) => migrate(dir, Some(generation)).map_err(|e| open_error(e.to_string()))?,
                Ok(found) if found > STORE_FORMAT => {
                    return Err(StoreError::Newer {
                        dir: dir.to_owned(),
                        found,
                        known: STORE_FORMAT,
                    })
                }
                Ok(other) => return Err(open_error(format!("unknown store format {other}"))),
                Err(err) => return Err(open_error(err.to_string())),
            }
        };
        let generation = Arc::new(generation);
        check_ends(&generation).map_err(|err| open_error(err.to_string()))?;
        let index = Arc::new(Index::new());
        let shared = Arc::new(Shared {
            committer: Committer::start(dir.to_owned(), Arc::clone(&generation))?,
            generation,
            writes: tokio::sync::RwLock::new(()),
            index: Arc::clone(&index),
            prune_hint: std::sync::Mutex::default(),
        });
        let builder = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("qam-index".into())
            .spawn(move || {
                let outcome = build_index(&builder, &index);
                if let Err(reason) = &outcome {
                    tracing::error!(reason = %reason, "store damaged: restore from backup (see README, \"Backup and restore\")");
                }
                index.finish(outcome);
                give_back_free_memory();
            })?;
        Ok(Store { shared })
    }

    fn generation(&self) -> &Generation {
        &self.shared.generation
    }

    fn keys(&self) -> Result<&KeyFile, StoreError> {
        self.generation().keys()
    }

    /// The stored bytes and record of `name`, read from the engine.
    fn read(&self, name: &str) -> Result<Option<(IVec, Record)>, StoreError> {
        match self.read_sealed(&self.keys()?.name_key(name))? {
            Some((_, stored, _)) if stored != name => {
                Err(corrupt("a record is stored under another name"))
            }
            Some((bytes, _, record)) => Ok(Some((bytes, record))),
            None => Ok(None),
        }
    }

    /// The stored bytes, name and record under the keyed hash of a name: how a reset, which
    /// keeps only that hash, finds its account.
    fn read_sealed(&self, key: &NameKey) -> Result<Option<(IVec, String, Record)>, StoreError> {
        let keys = self.keys()?;
        let users = &self.generation().users;
        let mut value = users.get(key).engine()?;
        while let Some(bytes) = value {
            if let Some((stored, record)) = unseal(key, &bytes, |slot| Ok(keys.key(slot)?))? {
                return Ok(Some((bytes, stored, record)));
            }
            // Its key was erased meanwhile by a write replacing it: read the new version.
            let again = users.get(key).engine()?;
            if again.as_ref() == Some(&bytes) {
                return Err(corrupt("a record's key is gone"));
            }
            value = again;
        }
        Ok(None)
    }

    /// The record of `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<Record>, StoreError> {
        match self.shared.index.facts(name) {
            Answer::Known(None) => Ok(None),
            Answer::Damaged(reason) => Err(corrupt(reason)),
            _ => Ok(self.read(name)?.map(|(_, record)| record)),
        }
    }

    /// The public facts of `name` (what `lookup` shows), if there is such an account.
    pub fn facts(&self, name: &str) -> Result<Option<Facts>, StoreError> {
        match self.shared.index.facts(name) {
            Answer::Known(facts) => Ok(facts),
            Answer::Damaged(reason) => Err(corrupt(reason)),
            Answer::Unknown => self.read(name)?.map(|(_, r)| facts_of(&r)).transpose(),
        }
    }

    pub fn contains(&self, name: &str) -> Result<bool, StoreError> {
        match self.shared.index.facts(name) {
            Answer::Known(facts) => Ok(facts.is_some()),
            Answer::Damaged(reason) => Err(corrupt(reason)),
            Answer::Unknown => {
                let key = self.keys()?.name_key(name);
                self.generation().users.contains_key(key).engine()
            }
        }
    }

    /// Inserts a record unless the name exists; durable before returning. False if it existed.
    pub async fn insert_new(&self, name: &str, record: &Record) -> Result<bool, StoreError> {
        self.compare_and_write(name, None, Some(record)).await
    }

    /// Writes `new` (None: removes) for `name` if its stored bytes are still `expected`
    /// (None: no record); durable, and the replaced version erased, before it returns.
    /// False if they were not.
    async fn compare_and_write(
        &self,
        name: &str,
        expected: Option<&IVec>,
        new: Option<&Record>,
    ) -> Result<bool, StoreError> {
        let _writing = self.shared.writes.read().await;
        let keys = self.keys()?;
        let key = keys.name_key(name);
        let facts = new.map(facts_of).transpose()?;
        let sealed = new
            .map(|record| seal_record(keys, name, record))
            .transpose()?;
        let written = self
            .generation()
            .trees()
            .transaction(|(users, meta)| {
                if users.get(key)?.as_ref() != expected {
                    return Ok(None);
                }
                match &sealed {
                    Some(sealed) => {
                        users.insert(&key, sealed.value.as_slice())?;
                        cover_slot(meta, sealed.slot)?;
                    }
                    None => {
                        users.remove(&key)?;
                    }
                }
                Ok(Some(count_write::<()>(meta)?))
            })
            .map_err(transaction_failed)?;
        let Some(number) = written else {
            if let Some(sealed) = sealed {
                keys.erase(sealed.slot)?;
                keys.release([sealed.slot]);
            }
            return Ok(false);
        };
        self.shared.index.set(name, facts);
        let erase = expected.and_then(|old| slot_of(old)).into_iter().collect();
        self.shared.committer.durable(number, erase).await?;
        Ok(true)
    }

    /// Replaces `expected` by `new` if the record is still `expected`; durable. False if the
    /// record changed (or vanished) meanwhile: a compare-and-swap.
    pub async fn replace(
        &self,
        name: &str,
        expected: &Record,
        new: &Record,
    ) -> Result<bool, StoreError> {
        match self.read(name)? {
            Some((bytes, current)) if current == *expected => {
                self.compare_and_write(name, Some(&bytes), Some(new)).await
            }
            _ => Ok(false),
        }
    }

    /// Applies `change` to an existing record atomically (retried if another write got there
    /// first); durable. None if there is no record.
    pub async fn update(
        &self,
        name: &str,
        change: impl Fn(&mut Record),
    ) -> Result<Option<Record>, StoreError> {
        loop {
            let Some((bytes, current)) = self.read(name)? else {
                return Ok(None);
            };
            let mut changed = current;
            change(&mut changed);
            if self
                .compare_and_write(name, Some(&bytes), Some(&changed))
                .await?
            {
                return Ok(Some(changed));
            }
        }
    }

    /// Removes a record; durable and erased (its key slot zeroed) before returning. False if
    /// there was none.
    pub async fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let key = self.keys()?.name_key(name);
        loop {
            let Some(bytes) = self.generation().users.get(key).engine()? else {
                return Ok(false);
            };
            if self.compare_and_write(name, Some(&bytes), None).await? {
                return Ok(true);
            }
        }
    }

    /// Up to `limit` records with names strictly after `after`, in name order.
    pub fn page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        let names = self.shared.index.page(after, limit).map_err(corrupt)?;
        let mut page = Vec::with_capacity(names.len());
        for name in names {
            // A record removed since the index was read is skipped.
            if let Some((_, record)) = self.read(&name)? {
                page.push((name, record));
            }
        }
        Ok(page)
    }

    /// Counts all users and the locked ones (waits for the index: call off the async threads).
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let (users, locked, legacy) = self.shared.index.counts().map_err(corrupt)?;
        let deleting = self.shared.index.deleting().map_err(corrupt)?.len() as u64;
        Ok(Counts {
            users,
            locked,
            legacy,
            deleting,
        })
    }

    /// The names of the accounts being deleted (waits for the index: call off the async
    /// threads).
    pub fn deleting(&self) -> Result<Vec<String>, StoreError> {
        self.shared.index.deleting().map_err(corrupt)
    }

    /// Writes a batch of records atomically, durable once. Unless `replace`, any existing
    /// name refuses the whole batch; replaced versions are erased before it returns.
    pub async fn import(
        &self,
        records: &[(String, Record)],
        replace: bool,
    ) -> Result<ImportOutcome, StoreError> {
        let _writing = self.shared.writes.read().await;
        let keys = self.keys()?;
        let mut sealed: Vec<Sealed> = Vec::with_capacity(records.len());
        let mut facts = Vec::with_capacity(records.len());
        for (name, record) in records {
            facts.push(facts_of(record)?);
            sealed.push(seal_record(keys, name, record)?);
        }
        let outcome = self.generation().trees().transaction(|(users, meta)| {
            let mut erase = Vec::new();
            for (index, record) in sealed.iter().enumerate() {
                let previous = users.insert(&record.key, record.value.as_slice())?;
                cover_slot(meta, record.slot)?;
                if let Some(previous) = previous {
                    if !replace {
                        return abort(index);
                    }
                    erase.extend(slot_of(&previous));
                }
            }
            Ok((erase, count_write(meta)?))
        });
        let (erase, number) = match outcome {
            Ok(written) => written,
            Err(err) => {
                for record in &sealed {
                    keys.erase(record.slot)?;
                }
                keys.release(sealed.iter().map(|record| record.slot));
                return match err {
                    TransactionError::Abort(index) => Ok(ImportOutcome::Exists { index }),
                    other => Err(transaction_failed(other)),
                };
            }
        };
        for ((name, _), facts) in records.iter().zip(facts) {
            self.shared.index.set(name, Some(facts));
        }
        let replaced = erase.len() as u64;
        self.shared.committer.durable(number, erase).await?;
        Ok(ImportOutcome::Written {
            imported: records.len() as u64,
            replaced,
        })
    }

    /// Whether a batch would hit existing names: the index of the first one.
    pub fn first_existing(
        &self,
        names: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<Option<usize>, StoreError> {
        for (index, name) in names.into_iter().enumerate() {
            if self.contains(name.as_ref())? {
                return Ok(Some(index));
            }
        }
        Ok(None)
    }

    /// Flushes and then fsyncs the store's files and the data dir `dir`, closing the gap
    /// sled's flush leaves.
    pub fn sync_all(&self, dir: &Path) -> Result<(), StoreError> {
        let generation = self.generation();
        generation.flush()?;
        self.keys()?.sync()?;
        layout::sync_tree(&generation.path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    /// Every record for one of `names` that the data dir's files and keys, as they are on
    /// disk now, still let anyone decrypt (superseded versions included): see
    /// [`erasure::readable`]. Slow; for erasure tests and audits.
    pub fn readable(&self, names: &[&str]) -> Result<Vec<Vec<u8>>, StoreError> {
        let generation = self.generation();
        let opened = erasure::readable(&generation.path, self.keys()?, names)?;
        Ok(opened.iter().map(|plain| plain.to_vec()).collect())
    }

    /// Waits until the index has read every record; an error if one was unreadable.
    pub fn check(&self) -> Result<Counts, StoreError> {
        self.counts()
    }
}

/// Reads the first and last records, so a store whose files parse but whose records do not
/// is refused at start rather than at a user's login.
fn check_ends(generation: &Generation) -> Result<(), StoreError> {
    let keys = generation.keys()?;
    let ends = [generation.users.first(), generation.users.last()];
    for entry in ends {
        if let Some((key, value)) = entry.engine()? {
            unseal(&key, &value, |slot| Ok(keys.key(slot)?))?
                .ok_or_else(|| corrupt("a record's key is gone"))?;
        }
    }
    Ok(())
}

/// Returns what the build freed (copies of engine pages, decrypted records) to the system:
/// it lies in the build thread's own allocator arena, which the allocator keeps otherwise.
fn give_back_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory of the allocator's own arenas.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Reads every record into the index, then erases key slots no record references (left by a
/// crash between a write and its erasure) and lets allocation reuse them.
fn build_index(store: &Weak<Shared>, index: &Index) -> Result<(), String> {
    let closed = || "the store was closed while its index was built".to_owned();
    let failed = |err: StoreError| err.to_string();
    let scanned_slots = {
        let shared = store.upgrade().ok_or_else(closed)?;
        // Alone among writers: every slot handed out so far belongs to a record already in
        // the engine (or was erased by a `compare_and_write` that found the record changed).
        let _alone = shared.writes.blocking_write();
        shared.generation.keys().map_err(failed)?.len()
    };
    let mut referenced = vec![false; usize::try_from(scanned_slots).map_err(|e| e.to_string())?];
    let mut scanned = Vec::new();
    let mut after: Option<IVec> = None;
    loop {
        let shared = store.upgrade().ok_or_else(closed)?;
        let generation = &shared.generation;
        let keys = generation.keys().map_err(failed)?;
        let range = match &after {
            Some(after) => generation.users.range::<&[u8], _>((
                std::ops::Bound::Excluded(after.as_ref()),
                std::ops::Bound::Unbounded,
            )),
            None => generation.users.iter(),
        };
        let mut read = 0;
        for entry in range.take(BUILD_CHUNK) {
            let (key, value) = entry.map_err(|err| err.to_string())?;
            read += 1;
            match unseal(&key, &value, |slot| Ok(keys.key(slot)?)).map_err(failed)? {
                Some((name, record)) => {
                    scanned.push((name.as_str().into(), facts_of(&record).map_err(failed)?));
                    if let Some(seen) = slot_of(&value)
                        .and_then(|slot| referenced.get_mut(usize::try_from(slot).ok()?))
                    {
                        *seen = true;
                    }
                }
                // Replaced meanwhile (its old key is erased): the writer put the new version
                // into the index itself.
                None if generation.users.get(&key).map_err(|e| e.to_string())? != Some(value) => {}
                None => return Err("a record's key is gone".into()),
            }
            after = Some(key);
        }
        if read < BUILD_CHUNK {
            break;
        }
    }
    index.install(scanned);
    let shared = store.upgrade().ok_or_else(closed)?;
    let keys = shared.generation.keys().map_err(failed)?;
    let unreferenced: Vec<u64> = (1..scanned_slots)
        .filter(|slot| !referenced[*slot as usize])
        .collect();
    let mut orphans = Vec::new();
    for slot in &unreferenced {
        if !keys.key(*slot).map_err(|err| err.to_string())?.is_zero() {
            orphans.push(*slot);
        }
    }
    // No write in flight: a slot erased by one is no longer on its way to disk.
    let _alone = shared.writes.blocking_write();
    for slot in &orphans {
        keys.erase(*slot).map_err(|err| err.to_string())?;
    }
    keys.sync().map_err(|err| err.to_string())?;
    keys.release(unreferenced);
    keys.start_reuse();
    Ok(())
}

#[cfg(test)]
mod tests;
