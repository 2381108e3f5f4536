//! Migration on open: a store of an older format is rewritten, once, into a new generation of
//! today's format; an empty data dir gets its first generation the same way.
//!
//! The older format is qam 0.1.0's plain JSON records keyed by name.
//!
//! Crash-safe: the new generation is written and synced before `CURRENT` switches to it by
//! an atomic rename; a crash before that leaves the old generation in use (the half-written
//! one is removed at the next open), a crash after it leaves old files that open removes.

use super::erasure::{seal, KeyFile, NameKey};
use super::error::{EngineResult, StoreError};
use super::generation::{Batch, Generation};
use super::layout::{remove_other_generations, sync_tree, write_current, write_writes};
use super::record::{decode_v1, encode, Record};
use std::path::Path;

/// Records per engine batch: sled leaves oversized, slow nodes behind a single huge batch.
const BATCH: usize = 1000;

/// A record sealed for the engine: its engine key, key slot and sealed bytes.
pub struct Sealed {
    /// The keyed hash of the record's name, which the users tree stores it under.
    pub key: NameKey,
    /// The `KEYS` slot holding the record's key: the write counts it among the referenced
    /// slots, and a write that does not happen erases and releases it again.
    pub slot: u64,
    /// The encrypted record, written as the value under `key`.
    pub value: Vec<u8>,
}

/// Seals `name`'s record with a fresh key slot.
pub fn seal_record(keys: &KeyFile, name: &str, record: &Record) -> Result<Sealed, StoreError> {
    let key = keys.name_key(name);
    let (slot, record_key) = keys.allocate()?;
    let value = seal(&key, slot, &record_key, &encode(name, record))?;
    Ok(Sealed { key, slot, value })
}

/// Writes generation `from + 1` in today's format with every record of `from` (none for a
/// new store), switches `CURRENT` to it and removes every other generation.
pub fn migrate(dir: &Path, from: Option<Generation>) -> Result<Generation, StoreError> {
    let number = from.as_ref().map_or(0, |old| old.number) + 1;
    let fresh = Generation::create(dir, number)?;
    let keys = fresh.keys()?;
    if let Some(old) = from {
        let mut batch = Batch::default();
        let mut batched = 0;
        for entry in old.users.iter() {
            let (name, value) = entry.engine()?;
            let name = std::str::from_utf8(&name)
                .map_err(|_| StoreError::Corrupt("a stored name is not UTF-8".into()))?;
            let record = decode_v1(&value)
                .map_err(|err| StoreError::Corrupt(format!("record of `{name}`: {err}")))?;
            let sealed = seal_record(keys, name, &record)?;
            batch.insert(&sealed.key, sealed.value);
            batched += 1;
            if batched == BATCH {
                fresh
                    .users
                    .apply_batch(std::mem::take(&mut batch))
                    .engine()?;
                batched = 0;
            }
        }
        fresh.users.apply_batch(batch).engine()?;
        let mut tokens = Batch::default();
        for entry in old.tokens.iter() {
            let (key, value) = entry.engine()?;
            tokens.insert(key, value);
        }
        fresh.tokens.apply_batch(tokens).engine()?;
        tracing::info!(
            from = old.number,
            to = number,
            "store upgraded to the current format"
        );
    }
    fresh.set_key_slots(keys.len())?;
    fresh.flush()?;
    keys.sync()?;
    sync_tree(&fresh.path)?;
    write_writes(dir, number, 0)?;
    write_current(dir, number)?;
    remove_other_generations(dir, number)?;
    Ok(fresh)
}
