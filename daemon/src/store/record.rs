//! One account's record and its byte form: a version byte, then the JSON of `(name, record)`.
//! Every older version decodes into today's [`Record`], so a record can grow field by field.
//!
//! Adding a field (a uid, a legacy verifier, a deletion state):
//! 1. Add it to [`Record`] with `#[serde(default)]` when "absent" has a meaning (no uid yet,
//!    no legacy verifier): records written before still decode, nothing else changes.
//! 2. When old records need a computed value instead, bump [`RECORD_VERSION`], keep the old
//!    body as a private struct, and add an arm to [`decode`] that converts it; then bump
//!    `STORE_FORMAT` in `layout.rs` so `migrate.rs` rewrites every record once at open
//!    (crash-safe: a new generation replaces the old one by one rename of `CURRENT`).
//! 3. Fill it in [`Record::new`] and in `Record::export`/import if it travels in backups.

use qam_client::wire::ExportRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// The version byte written in front of every record body today.
pub const RECORD_VERSION: u8 = 2;

/// Everything stored about one user besides the name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// argon2id PHC string, or a verifier moved in from another store until the first login.
    pub hash: String,
    /// Creation date, `YYYY-MM-DD`.
    pub created: String,
    /// A locked account answers `denied` to every password.
    pub locked: bool,
    /// The account's system uid (see `uids`); absent in records written before uids ("no uid
    /// yet"), which get one once at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The store a legacy verifier in `hash` came from (`prosody`, …), until the first login
    /// replaces it; absent from records that hold an argon2id hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// An admin started deleting the account and hooks are installed: where the deletion
    /// stands, so that a restart of qamd or qam-hooks loses no step; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<Deletion>,
}

/// A deletion waiting for its hooks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deletion {
    /// Hooks that succeeded: a retry does not run them again.
    pub done: Vec<String>,
    /// Hooks that failed in the current round, with the end of their output.
    pub failed: BTreeMap<String, String>,
    /// A round of hooks is under way (false once one ended with failures).
    pub running: bool,
}

/// Why a record's bytes do not decode.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record version {0} is newer than this qamd ({RECORD_VERSION})")]
    Newer(u8),
    #[error("record version {0} is unknown")]
    Unknown(u8),
    #[error("empty record")]
    Empty,
    #[error("record body: {0}")]
    Body(#[from] serde_json::Error),
}

impl Record {
    /// A new active record created today.
    pub fn new(hash: String) -> Record {
        Record {
            hash,
            created: today(),
            locked: false,
            uid: None,
            origin: None,
            deletion: None,
        }
    }

    /// Replaces the verifier with a new argon2id hash; a legacy verifier's origin goes with it.
    pub fn set_hash(&mut self, hash: String) {
        self.hash = hash;
        self.origin = None;
    }

    /// The record as `export` gives it.
    pub fn export(&self, name: String) -> ExportRecord {
        ExportRecord {
            name,
            hash: self.hash.clone(),
            created: self.created.clone(),
            locked: self.locked,
            uid: self.uid,
            origin: self.origin.clone(),
            password: None,
        }
    }
}

/// The bytes of `name`'s record (they hold the hash: wiped when dropped).
pub fn encode(name: &str, record: &Record) -> Zeroizing<Vec<u8>> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(160));
    bytes.push(RECORD_VERSION);
    // A tuple of strings and a bool always serializes.
    let _ = serde_json::to_writer(&mut *bytes, &(name, record));
    bytes
}

/// The name and record in `bytes`, whatever version wrote them.
pub fn decode(bytes: &[u8]) -> Result<(String, Record), RecordError> {
    match bytes.split_first() {
        None => Err(RecordError::Empty),
        Some((&RECORD_VERSION, body)) => Ok(serde_json::from_slice(body)?),
        Some((&version, _)) if version > RECORD_VERSION => Err(RecordError::Newer(version)),
        Some((&version, _)) => Err(RecordError::Unknown(version)),
    }
}

/// A record of version 1 (qam 0.1.0): the JSON of [`Record`] alone, keyed by the plain name.
pub fn decode_v1(body: &[u8]) -> Result<Record, RecordError> {
    Ok(serde_json::from_slice(body)?)
}

/// Today's UTC date as `YYYY-MM-DD` (the only time qam stores).
pub fn today() -> String {
    time::OffsetDateTime::now_utc().date().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_versions() {
        let record = Record::new("h".into());
        let bytes = encode("alice", &record);
        assert_eq!(
            decode(&bytes).unwrap(),
            ("alice".to_owned(), record.clone())
        );
        let mut newer = bytes.to_vec();
        newer[0] = RECORD_VERSION + 1;
        assert!(matches!(decode(&newer), Err(RecordError::Newer(_))));
        let v1 = br#"{"hash":"h","created":"2025-03-14","locked":true}"#;
        let old = decode_v1(v1).unwrap();
        assert_eq!((old.created.as_str(), old.locked), ("2025-03-14", true));
    }
}
