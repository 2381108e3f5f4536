//! The account store: one sled tree keyed by normalized username, one small JSON record per
//! user (hash, created, locked). Every write is flushed before it returns.

use qam_client::wire::ExportRecord;
use serde::{Deserialize, Serialize};
use std::ops::Bound;
use std::path::{Path, PathBuf};

/// sled's page cache: a few MiB is plenty for small records (its default is 1 GiB).
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// The name of the tree holding the accounts.
const USERS_TREE: &str = "users";

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store at {dir} cannot be opened: {reason}; restore from backup (see README, \"Backup and restore\")")]
    Open { dir: PathBuf, reason: String },
    #[error("store I/O failed: {0}")]
    Io(#[from] sled::Error),
    #[error("record of `{name}` is unreadable: {reason}")]
    Corrupt { name: String, reason: String },
    #[error("store transaction aborted")]
    Conflict,
}

/// Everything stored about one user besides the name (the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// argon2id PHC string.
    pub hash: String,
    /// Creation date, `YYYY-MM-DD`.
    pub created: String,
    pub locked: bool,
}

impl Record {
    /// A new active record created today.
    pub fn new(hash: String) -> Record {
        Record {
            hash,
            created: today(),
            locked: false,
        }
    }

    fn encode(&self) -> Vec<u8> {
        // A struct of strings and a bool always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn decode(name: &[u8], bytes: &[u8]) -> Result<Record, StoreError> {
        serde_json::from_slice(bytes).map_err(|err| StoreError::Corrupt {
            name: String::from_utf8_lossy(name).into_owned(),
            reason: err.to_string(),
        })
    }

    /// The record as `export` gives it.
    pub fn export(&self, name: String) -> ExportRecord {
        ExportRecord {
            name,
            hash: self.hash.clone(),
            created: self.created.clone(),
            locked: self.locked,
        }
    }
}

/// Today's UTC date as `YYYY-MM-DD` (the only time qam stores).
pub fn today() -> String {
    time::OffsetDateTime::now_utc().date().to_string()
}

/// Counts for `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub users: u64,
    pub locked: u64,
}

/// Outcome of writing an import batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    Written {
        imported: u64,
        replaced: u64,
    },
    /// The batch names an existing user and replacing was not allowed; nothing written.
    Exists {
        index: usize,
    },
}

/// Handle to the open store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    users: sled::Tree,
}

impl Store {
    /// Opens (or creates) the store in `dir`. A store sled cannot read is an error naming the
    /// directory, never a panic and never a silently empty store.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let open_error = |reason: String| StoreError::Open {
            dir: dir.to_owned(),
            reason,
        };
        let config = sled::Config::new().path(dir).cache_capacity(CACHE_BYTES);
        // sled may panic on some corrupt files: turn that into the same clear error.
        let previous_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let db = config.open()?;
            let users = db.open_tree(USERS_TREE)?;
            Ok::<_, sled::Error>((db, users))
        }));
        std::panic::set_hook(previous_hook);
        let (db, users) = match opened {
            Ok(Ok(handles)) => handles,
            Ok(Err(err)) => return Err(open_error(err.to_string())),
            Err(_) => return Err(open_error("its files are corrupt".into())),
        };
        let store = Store { db, users };
        store
            .check_records()
            .map_err(|err| open_error(err.to_string()))?;
        Ok(store)
    }

    /// Reads the first and last records so a store whose files parse but whose contents do
    /// not is refused at start rather than at a user's login.
    fn check_records(&self) -> Result<(), StoreError> {
        for entry in [self.users.first()?, self.users.last()?]
            .into_iter()
            .flatten()
        {
            Record::decode(&entry.0, &entry.1)?;
        }
        Ok(())
    }

    /// The record of `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<Record>, StoreError> {
        match self.users.get(name)? {
            Some(bytes) => Ok(Some(Record::decode(name.as_bytes(), &bytes)?)),
            None => Ok(None),
        }
    }

    pub fn contains(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.users.contains_key(name)?)
    }

    /// Inserts a record unless the name exists; flushed before returning. False if it existed.
    pub async fn insert_new(&self, name: &str, record: &Record) -> Result<bool, StoreError> {
        let swapped = self
            .users
            .compare_and_swap(name, None::<&[u8]>, Some(record.encode()))?;
        if swapped.is_err() {
            return Ok(false);
        }
        self.flush().await?;
        Ok(true)
    }

    /// Replaces `expected` by `new` if the record is still `expected`; flushed. False if the
    /// record changed (or vanished) meanwhile.
    pub async fn replace(
        &self,
        name: &str,
        expected: &Record,
        new: &Record,
    ) -> Result<bool, StoreError> {
        let swapped =
            self.users
                .compare_and_swap(name, Some(expected.encode()), Some(new.encode()))?;
        if swapped.is_err() {
            return Ok(false);
        }
        self.flush().await?;
        Ok(true)
    }

    /// Applies `change` to an existing record atomically; flushed. None if there is no record.
    pub async fn update(
        &self,
        name: &str,
        change: impl Fn(&mut Record),
    ) -> Result<Option<Record>, StoreError> {
        loop {
            let Some(current) = self.get(name)? else {
                return Ok(None);
            };
            let mut changed = current.clone();
            change(&mut changed);
            if self.replace(name, &current, &changed).await? {
                return Ok(Some(changed));
            }
        }
    }

    /// Removes a record; flushed. False if there was none.
    pub async fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let removed = self.users.remove(name)?.is_some();
        if removed {
            self.flush().await?;
        }
        Ok(removed)
    }

    /// Up to `limit` records with names strictly after `after`, in name order.
    pub fn page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        let start = match after {
            Some(after) => Bound::Excluded(after.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut page = Vec::with_capacity(limit.min(1024));
        for entry in self.users.range((start, Bound::Unbounded)).take(limit) {
            let (key, value) = entry?;
            let record = Record::decode(&key, &value)?;
            page.push((String::from_utf8_lossy(&key).into_owned(), record));
        }
        Ok(page)
    }

    /// Counts all users and the locked ones (a full scan: call off the async threads).
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let mut counts = Counts::default();
        for entry in self.users.iter() {
            let (key, value) = entry?;
            counts.users += 1;
            if Record::decode(&key, &value)?.locked {
                counts.locked += 1;
            }
        }
        Ok(counts)
    }

    /// Writes a batch of records atomically, then flushes once. Unless `replace`, any existing
    /// name refuses the whole batch.
    pub async fn import(
        &self,
        records: &[(String, Record)],
        replace: bool,
    ) -> Result<ImportOutcome, StoreError> {
        let outcome = self.users.transaction(|tx| {
            let mut replaced = 0;
            for (index, (name, record)) in records.iter().enumerate() {
                let previous = tx.insert(name.as_bytes(), record.encode())?;
                if previous.is_some() {
                    if !replace {
                        return sled::transaction::abort(index);
                    }
                    replaced += 1;
                }
            }
            Ok(replaced)
        });
        let replaced = match outcome {
            Ok(replaced) => replaced,
            Err(sled::transaction::TransactionError::Abort(index)) => {
                return Ok(ImportOutcome::Exists { index })
            }
            Err(sled::transaction::TransactionError::Storage(err)) => return Err(err.into()),
        };
        self.flush().await?;
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

    /// Flushes every write so far to the files (sled's `sync_file_range`).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Flushes and then fsyncs the store's files, closing the gap sled's flush leaves.
    pub fn sync_all(&self, dir: &Path) -> Result<(), StoreError> {
        self.db.flush()?;
        sync_tree(dir).map_err(|err| StoreError::Io(sled::Error::Io(err)))
    }
}

/// fsyncs every file under `dir`, then the directories themselves.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path)?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(hash: &str) -> Record {
        Record::new(hash.into())
    }

    #[tokio::test]
    async fn insert_get_update_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.insert_new("alice", &record("h1")).await.unwrap());
        assert!(!store.insert_new("alice", &record("h2")).await.unwrap());
        assert_eq!(store.get("alice").unwrap().unwrap().hash, "h1");
        let locked = store
            .update("alice", |r| r.locked = true)
            .await
            .unwrap()
            .unwrap();
        assert!(locked.locked);
        assert!(store
            .update("bob", |r| r.locked = true)
            .await
            .unwrap()
            .is_none());
        assert!(!store
            .replace("alice", &record("h1"), &record("h3"))
            .await
            .unwrap());
        assert!(store.remove("alice").await.unwrap());
        assert!(!store.remove("alice").await.unwrap());
        assert!(store.get("alice").unwrap().is_none());
    }

    #[tokio::test]
    async fn pages_are_sorted_and_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for name in ["carol", "alice", "bob", "dave"] {
            store.insert_new(name, &record("h")).await.unwrap();
        }
        let names =
            |page: Vec<(String, Record)>| page.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(names(store.page(None, 2).unwrap()), ["alice", "bob"]);
        assert_eq!(
            names(store.page(Some("bob"), 10).unwrap()),
            ["carol", "dave"]
        );
        assert_eq!(
            store.counts().unwrap(),
            Counts {
                users: 4,
                locked: 0
            }
        );
    }

    #[tokio::test]
    async fn import_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.insert_new("bob", &record("old")).await.unwrap();
        let batch = vec![
            ("alice".to_owned(), record("a")),
            ("bob".to_owned(), record("b")),
        ];
        assert_eq!(
            store.import(&batch, false).await.unwrap(),
            ImportOutcome::Exists { index: 1 }
        );
        assert!(store.get("alice").unwrap().is_none());
        assert_eq!(
            store.import(&batch, true).await.unwrap(),
            ImportOutcome::Written {
                imported: 2,
                replaced: 1
            }
        );
        assert_eq!(store.get("bob").unwrap().unwrap().hash, "b");
    }

    #[tokio::test]
    async fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.insert_new("alice", &record("h")).await.unwrap();
            store.sync_all(dir.path()).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get("alice").unwrap().unwrap().hash, "h");
    }

    #[test]
    fn garbage_store_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("conf"), b"garbage\x00\xff").unwrap();
        std::fs::write(dir.path().join("db"), vec![0xAB; 4096]).unwrap();
        let err = Store::open(dir.path()).err().expect("must fail");
        let text = err.to_string();
        assert!(text.contains("restore from backup"), "{text}");
    }
}
