//! The account store: one sled tree keyed by normalized username, one small JSON record per
//! user (hash, created, locked). Every write is flushed before it returns, and compaction
//! rewrites the store into a fresh sled db so a deleted account leaves no bytes behind.
//!
//! Layout of the data dir: `CURRENT` names the generation in use (`store-N`, a sled db in a
//! directory of that name). Before its first compaction a store is sled's files directly in
//! the data dir (generation 0). Compaction writes generation N+1, fsyncs it, switches
//! `CURRENT` by an atomic rename, then removes generation N; it runs after every delete, so a
//! delete's answer means the account's bytes are gone from the data dir, and at open when a
//! delete's compaction did not finish (its removal left a mark in `meta`).
//! `WRITES` holds the number of the generation's last acknowledged write (the db counts them
//! too): a db that lost its tail to truncation or damage is refused, not opened short.

use qam_client::wire::ExportRecord;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// sled's page cache: a few MiB is plenty for small records (its default is 1 GiB).
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// The name of the tree holding the accounts.
const USERS_TREE: &str = "users";

/// The tree holding the generation marker, so a generation whose files were emptied is
/// refused instead of opened as an empty store.
const META_TREE: &str = "meta";
const GENERATION_KEY: &str = "generation";

/// The generation's count of writes, kept in `meta` and, once acknowledged, in `WRITES_FILE`.
const WRITES_KEY: &str = "writes";
const WRITES_FILE: &str = "WRITES";

/// The file naming the generation in use, and the prefix of generation directories.
const CURRENT_FILE: &str = "CURRENT";
const GENERATION_PREFIX: &str = "store-";

/// sled's own files when the db lives directly in the data dir (generation 0).
const LEGACY_FILES: [&str; 3] = ["conf", "db", "blobs"];
const LEGACY_SNAPSHOT_PREFIX: &str = "snap.";

/// Set in `meta` by every removal, absent from a fresh generation: a store opened with it
/// set lost a compaction (a crash right after a delete) and is compacted at open.
const PENDING_KEY: &str = "compaction_pending";

/// Records per sled batch when compaction copies a generation: one batch of a million
/// records left unsplit nodes (reads 4x slower, 7.6 GiB resident after the next open).
const COMPACTION_BATCH: usize = 1000;

/// How long compaction waits for readers to let go of the old generation before removing it.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

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
    #[error("store compaction failed: {0}")]
    Compaction(String),
}

fn io_failed(err: std::io::Error) -> StoreError {
    StoreError::Io(sled::Error::Io(err))
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
    shared: Arc<Shared>,
}

struct Shared {
    /// The data dir.
    dir: PathBuf,
    /// The generation in use; compaction swaps it.
    current: RwLock<Arc<Generation>>,
    /// Writers share it; compaction holds it alone, so no write lands in a generation
    /// that is being copied.
    writes: tokio::sync::RwLock<()>,
    /// Makes writes durable, one flush for all writers waiting at once (group commit).
    committer: Committer,
}

/// A writer waiting for its write to be durable.
struct Waiter {
    generation: Arc<Generation>,
    /// The write's number in its generation; 0 asks for a flush only.
    number: u64,
    done: tokio::sync::oneshot::Sender<Result<(), sled::Error>>,
}

/// Group commit: one thread flushes sled for every writer that queued while the previous
/// flush ran, then records the highest write number in `WRITES`, then answers them all.
/// It calls sled's blocking `flush`: sled 0.34's `flush_async` never wakes some of several
/// concurrent callers (sled issues 1241 and 1308), which hung every write under load.
struct Committer {
    waiters: mpsc::Sender<Waiter>,
}

impl Committer {
    fn start(dir: PathBuf) -> std::io::Result<Committer> {
        let (waiters, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("qam-commit".into())
            .spawn(move || commit_loop(&dir, &queue))?;
        Ok(Committer { waiters })
    }

    /// Waits until write `number` of `generation` (0: every write so far) is durable.
    async fn durable(&self, generation: Arc<Generation>, number: u64) -> Result<(), StoreError> {
        let stopped = || StoreError::Io(sled::Error::ReportableBug("commit thread stopped".into()));
        let (done, answer) = tokio::sync::oneshot::channel();
        self.waiters
            .send(Waiter {
                generation,
                number,
                done,
            })
            .map_err(|_| stopped())?;
        Ok(answer.await.map_err(|_| stopped())??)
    }
}

/// The commit thread: runs until every `Store` handle is gone.
fn commit_loop(dir: &Path, queue: &mpsc::Receiver<Waiter>) {
    // (generation, its highest write number recorded in `WRITES`)
    let mut noted: Option<(u64, u64)> = None;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let result = commit(dir, &batch, &mut noted);
        for waiter in batch {
            drop(waiter.generation);
            let _ = waiter.done.send(result.clone());
        }
    }
}

/// Flushes each generation in `batch` once, then notes its highest write number.
fn commit(dir: &Path, batch: &[Waiter], noted: &mut Option<(u64, u64)>) -> Result<(), sled::Error> {
    let mut flushed: Vec<u64> = Vec::with_capacity(1);
    for waiter in batch {
        let generation = &waiter.generation;
        if !flushed.contains(&generation.number) {
            generation.db.flush()?;
            flushed.push(generation.number);
        }
    }
    for number in flushed {
        let highest = batch
            .iter()
            .filter(|waiter| waiter.generation.number == number)
            .map(|waiter| waiter.number)
            .max()
            .unwrap_or(0);
        let already = match *noted {
            Some((generation, writes)) if generation == number => writes,
            _ => 0,
        };
        if highest > already {
            write_writes(dir, number, highest).map_err(sled::Error::Io)?;
            *noted = Some((number, highest));
        }
    }
    Ok(())
}

/// A transaction over the users and meta trees.
type Trees<'a> = (&'a sled::Tree, &'a sled::Tree);
type TxResult<T, E = ()> = sled::transaction::ConflictableTransactionResult<T, E>;

/// Counts one more write in the generation's `meta` tree; returns its number.
fn count_write<E>(meta: &sled::transaction::TransactionalTree) -> TxResult<u64, E> {
    let writes = meta
        .get(WRITES_KEY)?
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
        .map_or(0, u64::from_be_bytes)
        + 1;
    meta.insert(WRITES_KEY, &writes.to_be_bytes())?;
    Ok(writes)
}

fn transaction_failed<E>(err: sled::transaction::TransactionError<E>) -> StoreError {
    match err {
        sled::transaction::TransactionError::Storage(err) => StoreError::Io(err),
        sled::transaction::TransactionError::Abort(_) => StoreError::Conflict,
    }
}

/// One sled db: the data dir itself (number 0) or `store-N`.
struct Generation {
    number: u64,
    path: PathBuf,
    db: sled::Db,
    users: sled::Tree,
    meta: sled::Tree,
}

impl Generation {
    fn open(path: &Path, number: u64) -> Result<Generation, sled::Error> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()?;
        let users = db.open_tree(USERS_TREE)?;
        let meta = db.open_tree(META_TREE)?;
        Ok(Generation {
            number,
            path: path.to_owned(),
            db,
            users,
            meta,
        })
    }

    /// The number written into generation `store-N` by the compaction that made it.
    fn marker(&self) -> Result<Option<u64>, sled::Error> {
        self.meta_number(GENERATION_KEY)
    }

    /// Writes counted in this generation's db.
    fn writes(&self) -> Result<u64, sled::Error> {
        Ok(self.meta_number(WRITES_KEY)?.unwrap_or(0))
    }

    fn meta_number(&self, key: &str) -> Result<Option<u64>, sled::Error> {
        Ok(self
            .meta
            .get(key)?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    fn trees(&self) -> Trees<'_> {
        (&self.users, &self.meta)
    }
}

fn generation_path(dir: &Path, number: u64) -> PathBuf {
    if number == 0 {
        dir.to_owned()
    } else {
        dir.join(format!("{GENERATION_PREFIX}{number}"))
    }
}

/// The generation `CURRENT` names; 0 when there is no `CURRENT` (and no generation dirs).
fn current_generation(dir: &Path) -> Result<u64, String> {
    match std::fs::read(dir.join(CURRENT_FILE)) {
        Ok(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.strip_suffix('\n'))
            .and_then(|text| text.strip_prefix(GENERATION_PREFIX))
            .and_then(|number| number.parse::<u64>().ok())
            .filter(|number| *number > 0)
            .ok_or_else(|| format!("its {CURRENT_FILE} file is damaged")),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            match generation_dirs(dir).map_err(|err| err.to_string())?.first() {
                Some(number) => Err(format!(
                    "{GENERATION_PREFIX}{number} exists but {CURRENT_FILE} is missing"
                )),
                None => Ok(0),
            }
        }
        Err(err) => Err(format!("cannot read {CURRENT_FILE}: {err}")),
    }
}

/// The entries of `dir`; none when it does not exist yet.
fn dir_entries(dir: &Path) -> std::io::Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err),
    }
}

/// Numbers of the `store-N` directories in the data dir.
fn generation_dirs(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in dir_entries(dir)? {
        let name = entry.file_name();
        if let Some(number) = name
            .to_str()
            .and_then(|name| name.strip_prefix(GENERATION_PREFIX))
            .and_then(|number| number.parse::<u64>().ok())
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Opens generation `number` of the store in `dir`, refusing missing or emptied generations.
fn open_generation(dir: &Path, number: u64) -> Result<Generation, String> {
    let path = generation_path(dir, number);
    if number > 0 && !path.is_dir() {
        return Err(format!(
            "{CURRENT_FILE} names {} which is missing",
            path.display()
        ));
    }
    let generation = Generation::open(&path, number).map_err(|err| err.to_string())?;
    if number > 0 && generation.marker().map_err(|err| err.to_string())? != Some(number) {
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
        // `WRITES` of another generation: a compaction stopped between its two renames.
        Some(_) => {}
        None if number > 0 => return Err(format!("its {WRITES_FILE} file is missing")),
        None => {}
    }
    Ok(generation)
}

/// `WRITES`: the generation and the number of its last acknowledged write.
fn read_writes(dir: &Path) -> Result<Option<(u64, u64)>, String> {
    let text = match std::fs::read_to_string(dir.join(WRITES_FILE)) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) => return Err(format!("its {WRITES_FILE} file is damaged")),
    };
    let mut fields = text.trim_end_matches('\n').split(' ');
    let generation = fields
        .next()
        .and_then(|field| field.strip_prefix(GENERATION_PREFIX))
        .and_then(|number| number.parse().ok());
    let writes = fields.next().and_then(|number| number.parse().ok());
    match (generation, writes, fields.next()) {
        (Some(generation), Some(writes), None) => Ok(Some((generation, writes))),
        _ => Err(format!("its {WRITES_FILE} file is damaged")),
    }
}

/// Overwrites `WRITES` in place (fixed width, so no stale tail) and syncs it.
fn write_writes(dir: &Path, generation: u64, writes: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(WRITES_FILE))?;
    let text = format!("{GENERATION_PREFIX}{generation:020} {writes:020}\n");
    file.write_all_at(text.as_bytes(), 0)?;
    file.set_len(text.len() as u64)?;
    file.sync_data()
}

/// Writes `CURRENT` naming `number`: a temp file, fsync, rename over, fsync of the dir.
fn write_current(dir: &Path, number: u64) -> std::io::Result<()> {
    use std::io::Write;
    let temp = dir.join(format!("{CURRENT_FILE}.new"));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(format!("{GENERATION_PREFIX}{number}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, dir.join(CURRENT_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// sled's files lying directly in the data dir (generation 0).
fn legacy_entries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut legacy = Vec::new();
    for entry in dir_entries(dir)? {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if LEGACY_FILES.contains(&name.as_ref()) || name.starts_with(LEGACY_SNAPSHOT_PREFIX) {
            legacy.push(entry.path());
        }
    }
    Ok(legacy)
}

/// Removes every generation but `keep`: other `store-N` dirs and, once `keep` > 0, sled's
/// files of generation 0.
fn remove_other_generations(dir: &Path, keep: u64) -> std::io::Result<()> {
    for number in generation_dirs(dir)? {
        if number != keep {
            std::fs::remove_dir_all(generation_path(dir, number))?;
        }
    }
    if keep > 0 {
        for path in legacy_entries(dir)? {
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

impl Store {
    /// Opens (or creates) the store in `dir`; compacts it when a removal may have left bytes
    /// behind (see [`Store::needs_compaction`]). A store sled cannot read, a
    /// damaged `CURRENT`, a missing or emptied generation or an unreadable record is an error
    /// naming the directory, never a panic and never a silently empty store.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let open_error = |reason: String| StoreError::Open {
            dir: dir.to_owned(),
            reason,
        };
        // sled may panic on some corrupt files: turn that into the same clear error.
        let previous_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let number = current_generation(dir)?;
            if number == 0
                && !legacy_entries(dir)
                    .map_err(|err| err.to_string())?
                    .is_empty()
            {
                // No CURRENT, yet sled files: never opened and compacted as if it were new
                // (sled reads garbage as an empty db, and compaction would delete the files).
                return Err(format!(
                    "it holds sled files but no {CURRENT_FILE} file (damaged, or not a qam store)"
                ));
            }
            let generation = open_generation(dir, number)?;
            let store = Store {
                shared: Arc::new(Shared {
                    dir: dir.to_owned(),
                    current: RwLock::new(Arc::new(generation)),
                    writes: tokio::sync::RwLock::new(()),
                    committer: Committer::start(dir.to_owned()).map_err(|err| err.to_string())?,
                }),
            };
            if store.needs_compaction().map_err(|err| err.to_string())? {
                store.compact_now().map_err(|err| err.to_string())?;
            } else {
                store.check_ends().map_err(|err| err.to_string())?;
            }
            Ok::<_, String>(store)
        }));
        std::panic::set_hook(previous_hook);
        match opened {
            Ok(Ok(store)) => Ok(store),
            Ok(Err(reason)) => Err(open_error(reason)),
            Err(_) => Err(open_error("its files are corrupt".into())),
        }
    }

    /// Compaction at open is needed for a store not yet in generations (number 0), after a
    /// removal whose compaction did not finish, and when other generations' files remain.
    /// Otherwise it is skipped: copying a million records took 36 s of start-up.
    fn needs_compaction(&self) -> Result<bool, StoreError> {
        let generation = self.generation();
        if generation.number == 0 || generation.meta.contains_key(PENDING_KEY)? {
            return Ok(true);
        }
        let dir = &self.shared.dir;
        let others = generation_dirs(dir).map_err(io_failed)?;
        let legacy = !legacy_entries(dir).map_err(io_failed)?.is_empty();
        Ok(legacy || others.iter().any(|number| *number != generation.number))
    }

    /// Reads the first and last records, so a store whose files parse but whose records do
    /// not is refused at start rather than at a user's login.
    fn check_ends(&self) -> Result<(), StoreError> {
        let generation = self.generation();
        for (key, value) in [generation.users.first()?, generation.users.last()?]
            .into_iter()
            .flatten()
        {
            Record::decode(&key, &value)?;
        }
        Ok(())
    }

    /// The generation in use.
    fn generation(&self) -> Arc<Generation> {
        Arc::clone(
            &self
                .shared
                .current
                .read()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
    }

    /// The record of `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<Record>, StoreError> {
        match self.generation().users.get(name)? {
            Some(bytes) => Ok(Some(Record::decode(name.as_bytes(), &bytes)?)),
            None => Ok(None),
        }
    }

    pub fn contains(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.generation().users.contains_key(name)?)
    }

    /// Inserts a record unless the name exists; flushed before returning. False if it existed.
    pub async fn insert_new(&self, name: &str, record: &Record) -> Result<bool, StoreError> {
        self.swap(name, None, &record.encode()).await
    }

    /// Writes `new` for `name` if its stored bytes are still `expected` (None: no record);
    /// counted and durable before it returns. False if they were not.
    async fn swap(
        &self,
        name: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let _writing = self.shared.writes.read().await;
        let generation = self.generation();
        let written = generation
            .trees()
            .transaction(|(users, meta)| {
                if users.get(name)?.as_deref() != expected {
                    return Ok(None);
                }
                users.insert(name, new)?;
                Ok(Some(count_write::<()>(meta)?))
            })
            .map_err(transaction_failed)?;
        match written {
            Some(number) => self.acknowledge(&generation, number).await.map(|()| true),
            None => Ok(false),
        }
    }

    /// Makes write `number` durable: sled's flush, then `WRITES` (the acknowledged count),
    /// shared with every writer waiting at the same time.
    async fn acknowledge(
        &self,
        generation: &Arc<Generation>,
        number: u64,
    ) -> Result<(), StoreError> {
        self.shared
            .committer
            .durable(Arc::clone(generation), number)
            .await
    }

    /// Replaces `expected` by `new` if the record is still `expected`; flushed. False if the
    /// record changed (or vanished) meanwhile.
    pub async fn replace(
        &self,
        name: &str,
        expected: &Record,
        new: &Record,
    ) -> Result<bool, StoreError> {
        self.swap(name, Some(&expected.encode()), &new.encode())
            .await
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

    /// Removes a record, flushed, then compacts so none of its bytes stay in the data dir.
    /// False if there was none. A failed compaction is logged; the removal stands.
    pub async fn remove(&self, name: &str) -> Result<bool, StoreError> {
        {
            let _writing = self.shared.writes.read().await;
            let generation = self.generation();
            let written = generation
                .trees()
                .transaction(|(users, meta)| match users.remove(name)? {
                    Some(_) => {
                        meta.insert(PENDING_KEY, &[1])?;
                        Ok(Some(count_write::<()>(meta)?))
                    }
                    None => Ok(None),
                })
                .map_err(transaction_failed)?;
            match written {
                Some(number) => self.acknowledge(&generation, number).await?,
                None => return Ok(false),
            }
        }
        if let Err(err) = self.compact().await {
            tracing::error!(error = %err, "removed record may linger in the data dir");
        }
        Ok(true)
    }

    /// Rewrites the store into a fresh generation and removes the old one, waiting for
    /// writes in flight and holding new ones until it is done.
    pub async fn compact(&self) -> Result<(), StoreError> {
        let _alone = self.shared.writes.write().await;
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.compact_now())
            .await
            .map_err(|err| StoreError::Compaction(err.to_string()))?
    }

    /// Compaction itself, on the calling thread; the caller keeps writers out.
    fn compact_now(&self) -> Result<(), StoreError> {
        let dir = &self.shared.dir;
        let old = self.generation();
        let number = old.number + 1;
        let path = generation_path(dir, number);
        if path.exists() {
            // Left by a compaction that was interrupted before switching `CURRENT`.
            std::fs::remove_dir_all(&path).map_err(io_failed)?;
        }
        let fresh = Generation::open(&path, number)?;
        let mut batch = sled::Batch::default();
        let mut batched = 0;
        for entry in old.users.iter() {
            let (key, value) = entry?;
            Record::decode(&key, &value)?;
            batch.insert(key, value);
            batched += 1;
            if batched == COMPACTION_BATCH {
                fresh.users.apply_batch(std::mem::take(&mut batch))?;
                batched = 0;
            }
        }
        fresh.users.apply_batch(batch)?;
        fresh.meta.insert(GENERATION_KEY, &number.to_be_bytes())?;
        fresh.db.flush()?;
        sync_tree(&path).map_err(io_failed)?;
        write_writes(dir, number, 0).map_err(io_failed)?;
        write_current(dir, number).map_err(io_failed)?;
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Arc::new(fresh);
        if !wait_until_released(&old) {
            tracing::warn!(
                generation = old.number,
                "old store generation still in use; it is removed at the next compaction"
            );
            return Ok(());
        }
        drop(old);
        remove_other_generations(dir, number).map_err(io_failed)
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
        let generation = self.generation();
        for entry in generation
            .users
            .range((start, Bound::Unbounded))
            .take(limit)
        {
            let (key, value) = entry?;
            let record = Record::decode(&key, &value)?;
            page.push((String::from_utf8_lossy(&key).into_owned(), record));
        }
        Ok(page)
    }

    /// Counts all users and the locked ones (a full scan: call off the async threads).
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let mut counts = Counts::default();
        for entry in self.generation().users.iter() {
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
        let _writing = self.shared.writes.read().await;
        let generation = self.generation();
        let outcome = generation.trees().transaction(|(users, meta)| {
            let mut replaced = 0;
            for (index, (name, record)) in records.iter().enumerate() {
                let previous = users.insert(name.as_bytes(), record.encode())?;
                if previous.is_some() {
                    if !replace {
                        return sled::transaction::abort(index);
                    }
                    replaced += 1;
                }
            }
            Ok((replaced, count_write(meta)?))
        });
        let (replaced, number) = match outcome {
            Ok(written) => written,
            Err(sled::transaction::TransactionError::Abort(index)) => {
                return Ok(ImportOutcome::Exists { index })
            }
            Err(sled::transaction::TransactionError::Storage(err)) => return Err(err.into()),
        };
        self.acknowledge(&generation, number).await?;
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
        self.shared.committer.durable(self.generation(), 0).await
    }

    /// Flushes and then fsyncs the store's files and the data dir `dir`, closing the gap
    /// sled's flush leaves.
    pub fn sync_all(&self, dir: &Path) -> Result<(), StoreError> {
        let generation = self.generation();
        generation.db.flush()?;
        sync_tree(&generation.path).map_err(io_failed)?;
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_failed)
    }
}

/// Waits until `generation` has no other holder than the caller (readers let go quickly).
fn wait_until_released(generation: &Arc<Generation>) -> bool {
    let deadline = Instant::now() + RELEASE_WAIT;
    while Arc::strong_count(generation) > 1 {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// fsyncs every file under `dir`, then the directories themselves. Files that vanish meanwhile
/// (a compaction removing an old generation) are skipped.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    let skip_vanished = |result: std::io::Result<()>| match result {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            skip_vanished(sync_tree(&path))?;
        } else {
            skip_vanished(std::fs::File::open(&path).and_then(|file| file.sync_all()))?;
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

    #[tokio::test]
    async fn open_compacts_only_when_a_removal_may_linger() {
        let dir = tempfile::tempdir().unwrap();
        let reopen = || {
            let store = Store::open(dir.path()).unwrap();
            (store.generation().number, store)
        };
        let (first, store) = reopen();
        store.insert_new("alice", &record("h")).await.unwrap();
        store.sync_all(dir.path()).unwrap();
        drop(store);
        let (second, store) = reopen();
        assert_eq!(second, first, "nothing removed: no compaction at open");
        // A removal whose compaction never ran (a crash in between) leaves the mark.
        store.generation().meta.insert(PENDING_KEY, &[1]).unwrap();
        store.sync_all(dir.path()).unwrap();
        drop(store);
        let (third, store) = reopen();
        assert_eq!(third, first + 1);
        assert_eq!(store.get("alice").unwrap().unwrap().hash, "h");
        assert!(!store.needs_compaction().unwrap());
    }

    /// Many writers flushing at once all finish (sled 0.34's own `flush_async` can hang here).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_all_get_their_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for round in 0..20 {
            let writers: Vec<_> = (0..32)
                .map(|index| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let name = format!("user{round}-{index}");
                        store.insert_new(&name, &record("h")).await.unwrap();
                    })
                })
                .collect();
            let all = async {
                for writer in writers {
                    writer.await.unwrap();
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(20), all)
                .await
                .expect("every writer's flush finished");
        }
        assert_eq!(store.counts().unwrap().users, 640);
    }

    #[test]
    fn sled_files_without_current_are_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("conf"), b"x\n").unwrap();
        std::fs::write(dir.path().join("db"), b"garbage\n").unwrap();
        let err = Store::open(dir.path()).err().expect("must fail");
        assert!(err.to_string().contains("restore from backup"), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join("db")).unwrap(),
            b"garbage\n",
            "files kept"
        );
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

#[cfg(test)]
mod generation_tests {
    use super::*;

    fn files_contain(dir: &Path, needle: &[u8]) -> bool {
        std::fs::read_dir(dir).unwrap().any(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_contain(&path, needle)
            } else {
                let bytes = std::fs::read(&path).unwrap();
                bytes.windows(needle.len()).any(|window| window == needle)
            }
        })
    }

    #[tokio::test]
    async fn a_removed_record_leaves_no_bytes_in_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let hash = "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$ZXJhc3VyZS10ZXN0LWhhc2g";
        store
            .insert_new("erasable-name", &Record::new(hash.into()))
            .await
            .unwrap();
        store
            .insert_new("keeper", &Record::new("kept".into()))
            .await
            .unwrap();
        store.sync_all(dir.path()).unwrap();
        assert!(files_contain(dir.path(), b"erasable-name"));
        assert!(store.remove("erasable-name").await.unwrap());
        assert!(!files_contain(dir.path(), b"erasable-name"));
        assert!(!files_contain(dir.path(), b"ZXJhc3VyZS10ZXN0LWhhc2g"));
        assert_eq!(store.get("keeper").unwrap().unwrap().hash, "kept");
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.get("keeper").unwrap().unwrap().hash, "kept");
        assert!(reopened.get("erasable-name").unwrap().is_none());
    }

    #[tokio::test]
    async fn damaged_layouts_are_refused_never_opened_empty() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.insert_new("alice", &record_of("h")).await.unwrap();
            store.sync_all(dir.path()).unwrap();
        }
        let current = std::fs::read(dir.path().join(CURRENT_FILE)).unwrap();
        let generation = String::from_utf8(current.clone()).unwrap();
        let generation_dir = dir.path().join(generation.trim());
        // A zeroed CURRENT.
        std::fs::write(dir.path().join(CURRENT_FILE), vec![0; current.len()]).unwrap();
        assert_refused(dir.path());
        // A missing CURRENT next to a generation dir.
        std::fs::remove_file(dir.path().join(CURRENT_FILE)).unwrap();
        assert_refused(dir.path());
        std::fs::write(dir.path().join(CURRENT_FILE), &current).unwrap();
        // The generation's files emptied.
        let db = generation_dir.join("db");
        let kept = std::fs::read(&db).unwrap();
        std::fs::write(&db, b"").unwrap();
        assert_refused(dir.path());
        std::fs::write(&db, kept).unwrap();
        // The generation dir gone.
        let moved = dir.path().join("elsewhere");
        std::fs::rename(&generation_dir, &moved).unwrap();
        assert_refused(dir.path());
        std::fs::rename(&moved, &generation_dir).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get("alice").unwrap().unwrap().hash, "h");
    }

    fn record_of(hash: &str) -> Record {
        Record::new(hash.into())
    }

    fn assert_refused(dir: &Path) {
        let err = Store::open(dir)
            .err()
            .expect("a damaged store must not open");
        let text = err.to_string();
        assert!(text.contains("restore from backup"), "{text}");
        assert!(text.contains(&dir.display().to_string()), "{text}");
    }
}
