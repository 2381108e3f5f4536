//! Stable uids for accounts, given at creation and never given twice, and the uid → name index
//! behind userdb lookups by uid.
//!
//! A uid is given from `[nss] uid_min..uid_max`, kept in the record, never given twice (a
//! high-water mark on disk), and never one /etc/passwd or /etc/group uses.

use crate::config::NssConfig;
use crate::store::{Record, Store, StoreError};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// The file in the data dir holding the lowest uid never given out, as decimal text.
pub const NEXT_UID_FILE: &str = "NEXT_UID";

/// The system's own account databases, which qam names and uids must never collide with.
pub const PASSWD_FILE: &str = "/etc/passwd";
pub const GROUP_FILE: &str = "/etc/group";

/// uids recorded ahead of the one given, so that most creations write no file: those recorded
/// but never given when qamd stops are skipped, never given later.
const RECORD_AHEAD: u32 = 64;

/// Records per page when the store is scanned, and per batch when an older store gets uids.
const UPGRADE_BATCH: usize = 1000;

/// Why no uid could be given.
#[derive(Debug, thiserror::Error)]
pub enum UidError {
    #[error("no uid left in nss.uid_min..uid_max ({min}..{max}); widen the range (see README, \"Shell accounts\")")]
    Exhausted { min: u32, max: u32 },
    #[error("cannot record the next uid in {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is damaged (it must hold one number); restore it from backup, or set it above every uid ever given")]
    Damaged(PathBuf),
    #[error("cannot read {path}: {source}")]
    System {
        path: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The names and ids /etc/passwd and /etc/group hold right now.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SystemIds {
    /// User and group names: a qam account of one of these names would be shadowed.
    pub names: HashSet<String>,
    /// Uids and gids: never given to an account (its private group has gid = uid).
    pub ids: HashSet<u32>,
}

impl SystemIds {
    /// Reads /etc/passwd and /etc/group.
    pub fn read() -> Result<SystemIds, UidError> {
        let mut ids = SystemIds::default();
        for path in [PASSWD_FILE, GROUP_FILE] {
            let text = std::fs::read_to_string(path)
                .map_err(|source| UidError::System { path, source })?;
            ids.add_lines(&text);
        }
        Ok(ids)
    }

    /// Adds the `name:password:id:…` lines of a passwd or group file (comments and NIS
    /// `+`/`-` lines skipped).
    pub fn add_lines(&mut self, text: &str) {
        for line in text.lines() {
            let mut fields = line.split(':');
            let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if name.is_empty() || name.starts_with(['#', '+', '-']) {
                continue;
            }
            self.names.insert(name.to_owned());
            if let Ok(id) = id.trim().parse() {
                self.ids.insert(id);
            }
        }
    }
}

/// The high-water mark in memory and on disk.
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// The lowest uid never given out.
    next: u32,
    /// The number in `NEXT_UID`: never below `next`, so a restart never goes back.
    recorded: u32,
}

/// The uid allocator and index shared by account creation and the userdb door.
pub struct Uids {
    /// `[nss] uid_min`: giving starts at or above it; named when the range is used up.
    min: u32,
    /// `[nss] uid_max`: no uid above it is given, so creation fails once the range is used
    /// up.
    max: u32,
    /// `NEXT_UID` in the data dir, written ahead of the uids given so a restart never gives
    /// one twice.
    path: PathBuf,
    /// Where giving stands; held while a uid is being given, so none is given twice.
    mark: Mutex<Mark>,
    /// uid → name of every account; answers are checked against the store, so an entry left by
    /// a deletion finds nothing.
    index: RwLock<HashMap<u32, String>>,
}

impl Uids {
    /// Reads the high-water mark of `data_dir` (the range's start when there is none yet).
    pub fn open(data_dir: &Path, nss: &NssConfig) -> Result<Uids, UidError> {
        let path = data_dir.join(NEXT_UID_FILE);
        let next = read_next(&path)?.unwrap_or(nss.uid_min).max(nss.uid_min);
        Ok(Uids {
            min: nss.uid_min,
            max: nss.uid_max,
            path,
            mark: Mutex::new(Mark {
                next,
                recorded: next,
            }),
            index: RwLock::new(HashMap::new()),
        })
    }

    fn mark(&self) -> std::sync::MutexGuard<'_, Mark> {
        self.mark
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Gives `count` uids no account ever had and no system user or group uses; the mark on
    /// disk is above them (durably) before they are returned.
    pub fn allocate(&self, count: usize, system: &SystemIds) -> Result<Vec<u32>, UidError> {
        let mut mark = self.mark();
        let mut candidate = mark.next;
        let given = (0..count)
            .map(|_| self.take_free(&mut candidate, system))
            .collect::<Result<Vec<u32>, UidError>>()?;
        if candidate > mark.recorded {
            let ahead = candidate
                .saturating_add(RECORD_AHEAD)
                .min(self.max.saturating_add(1))
                .max(candidate);
            write_next(&self.path, ahead)?;
            mark.recorded = ahead;
        }
        mark.next = candidate;
        Ok(given)
    }

    /// Whether `uid` lies in the range and was never given here (a restored backup's uid may
    /// then be kept).
    pub fn never_given(&self, uid: u32) -> bool {
        let next = self.mark().next;
        (next..=self.max).contains(&uid)
    }

    /// Makes sure `uid` is never given: the mark moves above it (durably) if it is not yet.
    pub fn reserve_through(&self, uid: u32) -> Result<(), UidError> {
        let mut mark = self.mark();
        let above = uid.saturating_add(1);
        if above > mark.recorded {
            write_next(&self.path, above)?;
            mark.recorded = above;
        }
        mark.next = mark.next.max(above);
        Ok(())
    }

    /// The first uid from `candidate` on that the system does not use; moves `candidate`
    /// past it.
    fn take_free(&self, candidate: &mut u32, system: &SystemIds) -> Result<u32, UidError> {
        let exhausted = || UidError::Exhausted {
            min: self.min,
            max: self.max,
        };
        loop {
            if *candidate > self.max {
                return Err(exhausted());
            }
            let uid = *candidate;
            *candidate = candidate.checked_add(1).ok_or_else(exhausted)?;
            if !system.ids.contains(&uid) {
                return Ok(uid);
            }
        }
    }

    /// Gives uids to the records of an older store that have none (in name order), once:
    /// after that `NEXT_UID` exists and every creation gives a uid. Run before serving. The
    /// mark is written last, so an upgrade cut short is resumed above the uids it gave.
    pub async fn upgrade(&self, store: &Store) -> Result<u64, UidError> {
        if self.path.exists() {
            return Ok(0);
        }
        let mut highest = None;
        each_record(store, |_, record| highest = highest.max(record.uid))?;
        let start = self.mark().next;
        let mut candidate = highest.map_or(start, |uid| start.max(uid.saturating_add(1)));
        let system = SystemIds::read()?;
        let mut given = 0;
        let mut after: Option<String> = None;
        loop {
            let page = store.page(after.as_deref(), UPGRADE_BATCH)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            let mut missing: Vec<(String, Record)> = page
                .into_iter()
                .filter(|(_, record)| record.uid.is_none())
                .collect();
            for (_, record) in &mut missing {
                record.uid = Some(self.take_free(&mut candidate, &system)?);
            }
            if !missing.is_empty() {
                store.import(&missing, true).await?;
            }
            given += missing.len() as u64;
        }
        write_next(&self.path, candidate)?;
        *self.mark() = Mark {
            next: candidate,
            recorded: candidate,
        };
        Ok(given)
    }

    /// Fills the uid index from the store (a full scan: at start, when NSS is served).
    pub fn index_store(&self, store: &Store) -> Result<(), UidError> {
        let mut index = HashMap::new();
        each_record(store, |name, record| {
            if let Some(uid) = record.uid {
                index.insert(uid, name);
            }
        })?;
        *self
            .index
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = index;
        Ok(())
    }

    /// Notes that `name` has `uid` (an account was created).
    pub fn note(&self, uid: u32, name: &str) {
        self.index
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(uid, name.to_owned());
    }

    /// Forgets `uid` (its account was deleted).
    pub fn forget(&self, uid: u32) {
        self.index
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(&uid);
    }

    /// Accounts the system's own entries shadow (the first answer wins): a name or uid that
    /// /etc/passwd or /etc/group took after the account was made. Sorted names.
    pub fn shadowed(&self, system: &SystemIds) -> Vec<String> {
        let index = self
            .index
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut names: Vec<String> = index
            .iter()
            .filter(|(uid, name)| system.ids.contains(uid) || system.names.contains(*name))
            .map(|(_, name)| name.clone())
            .collect();
        names.sort_unstable();
        names
    }

    /// The name the index holds for `uid`; check it against the store before answering.
    pub fn name_of(&self, uid: u32) -> Option<String> {
        self.index
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(&uid)
            .cloned()
    }
}

/// Calls `visit` with every record of the store, in name order, a page at a time.
fn each_record(store: &Store, mut visit: impl FnMut(String, Record)) -> Result<(), StoreError> {
    let mut after: Option<String> = None;
    loop {
        let page = store.page(after.as_deref(), UPGRADE_BATCH)?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        after = Some(last.clone());
        for (name, record) in page {
            visit(name, record);
        }
    }
}

/// The high-water mark on disk; `None` when the file does not exist.
fn read_next(path: &Path) -> Result<Option<u32>, UidError> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| UidError::Damaged(path.to_owned())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(UidError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Replaces the high-water mark atomically and durably (temp file, fsync, rename, fsync dir).
fn write_next(path: &Path, next: u32) -> Result<(), UidError> {
    let io = |source| UidError::Io {
        path: path.to_owned(),
        source,
    };
    let temp = path.with_extension("new");
    let mut file = std::fs::File::create(&temp).map_err(io)?;
    file.write_all(format!("{next}\n").as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nss(min: u32, max: u32) -> NssConfig {
        NssConfig {
            uid_min: min,
            uid_max: max,
            ..NssConfig::default()
        }
    }

    #[test]
    fn system_files_parse_names_and_ids() {
        let mut ids = SystemIds::default();
        ids.add_lines(
            "root:x:0:0:root:/root:/bin/bash\n# comment:x:5\n+nis::\nusers:x:100:\nbad\n",
        );
        assert!(ids.names.contains("root") && ids.names.contains("users"));
        assert_eq!(ids.names.len(), 2);
        assert_eq!(ids.ids, HashSet::from([0, 100]));
    }

    #[test]
    fn uids_are_never_given_twice_even_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let none = SystemIds::default();
        let uids = Uids::open(dir.path(), &nss(70_000, 79_999)).unwrap();
        assert_eq!(uids.allocate(2, &none).unwrap(), [70_000, 70_001]);
        assert_eq!(
            uids.allocate(1, &none).unwrap(),
            [70_002],
            "the next one in order"
        );
        drop(uids);
        // A restart resumes above every uid recorded ahead, given or not.
        let uids = Uids::open(dir.path(), &nss(70_000, 79_999)).unwrap();
        let after_restart = uids.allocate(1, &none).unwrap()[0];
        assert!(after_restart > 70_002, "{after_restart}");
        // Lowering the range's start never goes back below the mark.
        let uids = Uids::open(dir.path(), &nss(65_536, 79_999)).unwrap();
        assert!(uids.allocate(1, &none).unwrap()[0] > after_restart);
    }

    #[test]
    fn system_ids_are_skipped_and_the_range_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut system = SystemIds::default();
        system.add_lines("taken:x:70001:70001::/:/bin/sh\n");
        let uids = Uids::open(dir.path(), &nss(70_000, 70_003)).unwrap();
        assert_eq!(uids.allocate(3, &system).unwrap(), [70_000, 70_002, 70_003]);
        assert!(matches!(
            uids.allocate(1, &system),
            Err(UidError::Exhausted { .. })
        ));
    }

    #[test]
    fn a_reserved_uid_and_those_below_it_are_never_given() {
        let dir = tempfile::tempdir().unwrap();
        let uids = Uids::open(dir.path(), &nss(70_000, 70_009)).unwrap();
        assert!(uids.never_given(70_004) && !uids.never_given(70_010));
        uids.reserve_through(70_004).unwrap();
        assert!(!uids.never_given(70_004) && uids.never_given(70_005));
        assert_eq!(uids.allocate(1, &SystemIds::default()).unwrap(), [70_005]);
    }

    #[tokio::test]
    async fn an_upgrade_cut_short_resumes_above_the_uids_it_gave() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = Store::open(&data).unwrap();
        let given = Record {
            uid: Some(70_005),
            ..Record::new("h".into())
        };
        store.insert_new("alice", &given).await.unwrap();
        store
            .insert_new("bob", &Record::new("h".into()))
            .await
            .unwrap();
        let uids = Uids::open(&data, &nss(70_000, 70_009)).unwrap();
        assert_eq!(uids.upgrade(&store).await.unwrap(), 1);
        assert_eq!(store.get("bob").unwrap().unwrap().uid, Some(70_006));
        assert_eq!(store.get("alice").unwrap().unwrap().uid, Some(70_005));
        assert_eq!(uids.allocate(1, &SystemIds::default()).unwrap(), [70_007]);
    }

    #[test]
    fn a_damaged_mark_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(NEXT_UID_FILE), "garbage").unwrap();
        assert!(matches!(
            Uids::open(dir.path(), &nss(70_000, 70_009)),
            Err(UidError::Damaged(_))
        ));
    }

    #[tokio::test]
    async fn an_older_store_gets_uids_once_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = Store::open(&data).unwrap();
        for name in ["carol", "alice", "bob"] {
            store
                .insert_new(name, &Record::new("h".into()))
                .await
                .unwrap();
        }
        let uids = Uids::open(&data, &nss(70_000, 70_009)).unwrap();
        assert_eq!(uids.upgrade(&store).await.unwrap(), 3);
        let uid = |name: &str| store.get(name).unwrap().unwrap().uid;
        assert_eq!(
            [uid("alice"), uid("bob"), uid("carol")],
            [Some(70_000), Some(70_001), Some(70_002)]
        );
        assert_eq!(uids.upgrade(&store).await.unwrap(), 0, "only once");
        uids.index_store(&store).unwrap();
        assert_eq!(uids.name_of(70_001).as_deref(), Some("bob"));
        let mut system = SystemIds::default();
        system.add_lines("carol:x:5000:\nother:x:70000:\n");
        assert_eq!(uids.shadowed(&system), ["alice", "carol"]);
        uids.forget(70_001);
        assert_eq!(uids.name_of(70_001), None);
    }
}
