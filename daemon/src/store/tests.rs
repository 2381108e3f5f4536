//! The store's unit tests: the API, erasure by raw bytes, what open does with damaged, old and
//! newer stores, and redeeming tokens.
//!
//! Erasure is checked for removed and replaced records; damaged layouts are refused, the 0.1.0
//! fixture is upgraded and a newer format is refused; invites and resets are redeemed.

use super::erasure::key_in;
use super::generation::Generation;
use super::layout::{
    current_generation, generation_dirs, generation_path, read_writes, write_current, write_writes,
    CURRENT_FILE, WRITES_FILE,
};
use super::*;
use std::path::{Path, PathBuf};

fn record(hash: &str) -> Record {
    Record::new(hash.into())
}

/// Opens the store and waits for its index, so dropping it closes every file.
fn open_built(dir: &Path) -> Store {
    let store = Store::open(dir).unwrap();
    store.check().unwrap();
    store
}

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
    assert!(store.facts("alice").unwrap().unwrap().locked);
    assert!(store
        .update("bob", |r| r.locked = true)
        .await
        .unwrap()
        .is_none());
    assert!(!store
        .replace("alice", &record("h1"), &record("h3"))
        .await
        .unwrap());
    assert!(store
        .replace("alice", &locked, &record("h3"))
        .await
        .unwrap());
    assert_eq!(store.get("alice").unwrap().unwrap().hash, "h3");
    assert!(store.remove("alice").await.unwrap());
    assert!(!store.remove("alice").await.unwrap());
    assert!(store.get("alice").unwrap().is_none());
    assert!(!store.contains("alice").unwrap());
}

#[tokio::test]
async fn pages_are_sorted_and_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for name in ["carol", "alice", "bob", "dave"] {
        store.insert_new(name, &record("h")).await.unwrap();
    }
    let names = |page: Vec<(String, Record)>| page.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(names(store.page(None, 2).unwrap()), ["alice", "bob"]);
    assert_eq!(
        names(store.page(Some("bob"), 10).unwrap()),
        ["carol", "dave"]
    );
    assert_eq!(
        store.counts().unwrap(),
        Counts {
            users: 4,
            locked: 0,
            legacy: Default::default(),
            deleting: 0,
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
async fn records_survive_reopen_and_the_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_built(dir.path());
        store.insert_new("alice", &record("h")).await.unwrap();
        store.update("alice", |r| r.locked = true).await.unwrap();
        store.insert_new("bob", &record("h")).await.unwrap();
        store.sync_all(dir.path()).unwrap();
    }
    let store = open_built(dir.path());
    assert_eq!(store.get("alice").unwrap().unwrap().hash, "h");
    assert_eq!(
        store.counts().unwrap(),
        Counts {
            users: 2,
            locked: 1,
            legacy: Default::default(),
            deleting: 0,
        }
    );
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
                    store.update(&name, |r| r.locked = true).await.unwrap();
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
    assert!(err.to_string().contains("restore from backup"), "{err}");
}

/// The salt-and-digest part of a PHC string: what would identify the password.
fn digest(hash: &str) -> &[u8] {
    hash.rsplit('$').next().unwrap().as_bytes()
}

#[tokio::test]
async fn removed_and_replaced_records_leave_no_bytes_in_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let hashes = [
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$ZXJhc3VyZS10ZXN0LWhhc2g",
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdDJzYWx0$cmVwbGFjZWQtYnktdXBkYXRl",
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdDNzYWx0$cmVwbGFjZWQtYnktcmVwbGFjZQ",
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdDRzYWx0$cmVwbGFjZWQtYnktaW1wb3J0",
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdDVzYWx0$dGhlLWxhc3Qtb25l",
    ];
    let name = "erasable-name";
    store.insert_new(name, &record(hashes[0])).await.unwrap();
    store.insert_new("keeper", &record("kept")).await.unwrap();
    store.sync_all(dir.path()).unwrap();
    // Sealed: neither the name nor the hash is in the files even while the account lives.
    assert!(!files_contain(dir.path(), name.as_bytes()));
    assert!(!files_contain(dir.path(), digest(hashes[0])));
    // Each kind of hash replacement: a password change (update), a rehash (replace), an
    // import with --replace.
    store
        .update(name, |r| r.hash = hashes[1].into())
        .await
        .unwrap();
    let current = store.get(name).unwrap().unwrap();
    store
        .replace(name, &current, &record(hashes[2]))
        .await
        .unwrap();
    store
        .import(&[(name.to_owned(), record(hashes[3]))], true)
        .await
        .unwrap();
    store
        .update(name, |r| r.hash = hashes[4].into())
        .await
        .unwrap();
    // Every replaced version is unreadable: the files hold no key that opens it.
    let opened = readable_plaintexts(&store);
    for hash in &hashes[..4] {
        assert!(!opened.iter().any(|p| contains(p, digest(hash))), "{hash}");
    }
    assert!(opened.iter().any(|p| contains(p, digest(hashes[4]))));
    assert!(store.remove(name).await.unwrap());
    let opened = readable_plaintexts(&store);
    assert!(!opened.iter().any(|p| contains(p, name.as_bytes())));
    assert!(!opened.iter().any(|p| contains(p, digest(hashes[4]))));
    assert_eq!(store.get("keeper").unwrap().unwrap().hash, "kept");
    store.check().unwrap();
    drop(store);
    let reopened = open_built(dir.path());
    assert_eq!(reopened.get("keeper").unwrap().unwrap().hash, "kept");
    assert!(reopened.get(name).unwrap().is_none());
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn readable_plaintexts(store: &Store) -> Vec<Vec<u8>> {
    store.readable(&["erasable-name", "keeper"]).unwrap()
}

#[tokio::test]
async fn damaged_layouts_are_refused_never_opened_empty() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_built(dir.path());
        store.insert_new("alice", &record("h")).await.unwrap();
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
    // The generation's files emptied, its KEYS zeroed or truncated.
    for file in ["db", "KEYS"] {
        let path = generation_dir.join(file);
        let kept = std::fs::read(&path).unwrap();
        std::fs::write(&path, b"").unwrap();
        assert_refused(dir.path());
        std::fs::write(&path, vec![0; kept.len()]).unwrap();
        assert_refused(dir.path());
        std::fs::write(&path, kept).unwrap();
    }
    // The generation dir gone.
    let moved = dir.path().join("elsewhere");
    std::fs::rename(&generation_dir, &moved).unwrap();
    assert_refused(dir.path());
    std::fs::rename(&moved, &generation_dir).unwrap();
    let store = open_built(dir.path());
    assert_eq!(store.get("alice").unwrap().unwrap().hash, "h");
}

fn assert_refused(dir: &Path) {
    let err = Store::open(dir)
        .err()
        .expect("a damaged store must not open");
    let text = err.to_string();
    assert!(text.contains("restore from backup"), "{text}");
    assert!(text.contains(&dir.display().to_string()), "{text}");
}

/// A crash between a write and the erasure of the version it replaced leaves a key slot no
/// record references: the next open erases it.
#[tokio::test]
async fn a_key_left_by_a_crash_is_erased_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let slot = {
        let store = open_built(dir.path());
        store.insert_new("alice", &record("h")).await.unwrap();
        let (slot, _) = store.keys().unwrap().allocate().unwrap();
        store.sync_all(dir.path()).unwrap();
        slot
    };
    let keys_path = |store: &Store| store.generation().path.join("KEYS");
    let store = open_built(dir.path());
    let keys = std::fs::read(keys_path(&store)).unwrap();
    assert!(key_in(&keys, slot).unwrap().is_zero());
    store.insert_new("bob", &record("h")).await.unwrap();
    assert_eq!(store.get("alice").unwrap().unwrap().hash, "h");
}

#[test]
fn a_store_of_a_newer_release_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_built(dir.path());
        store.generation().set_format(STORE_FORMAT + 1).unwrap();
        store.sync_all(dir.path()).unwrap();
    }
    let err = Store::open(dir.path()).err().expect("must fail");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Newer { .. }), "{text}");
    assert!(text.contains("newer qam") && !text.contains('\n'), "{text}");
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
}

/// The data dir qam 0.1.0 wrote, checked in under tests/fixtures.
fn fixture() -> (tempfile::TempDir, PathBuf) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/store-0.1.0");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_dir(&source, &data);
    (dir, data)
}

/// `cp -r from to`: a directory copied whole to a path that does not exist yet.
fn copy_dir(from: &Path, to: &Path) {
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        copied.success(),
        "cp -r {} {}",
        from.display(),
        to.display()
    );
}

/// The accounts the 0.1.0 fixture holds, as `export` gives them.
fn fixture_records() -> Vec<qam_client::wire::ExportRecord> {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/store-0.1.0.jsonl"),
    )
    .unwrap()
    .lines()
    .map(|line| serde_json::from_str(line).unwrap())
    .collect()
}

/// Every record of `store`, as `export` gives them.
fn exported(store: &Store) -> Vec<qam_client::wire::ExportRecord> {
    store
        .page(None, 100)
        .unwrap()
        .into_iter()
        .map(|(name, record)| record.export(name))
        .collect()
}

/// The generation the 0.1.0 fixture's upgrade writes (the fixture holds generation 2).
const UPGRADED_GENERATION: u64 = 3;

/// Puts a data dir in the state a crash at some step of an upgrade leaves.
type LeaveState = fn(&Path);

/// What a crash in the middle of writing the upgraded generation leaves: part of it.
fn half_written_upgrade(data: &Path) {
    let partial = Generation::create(data, UPGRADED_GENERATION).unwrap();
    partial
        .users
        .insert("zed", b"not a sealed record".as_slice())
        .unwrap();
    partial.flush().unwrap();
}

#[tokio::test]
async fn a_store_of_release_0_1_0_is_upgraded_once_and_keeps_every_record() {
    let (_dir, data) = fixture();
    let expected = fixture_records();
    let first = {
        let store = open_built(&data);
        assert_eq!(exported(&store), expected);
        assert_eq!(store.generation().format().unwrap(), STORE_FORMAT);
        store.generation().number
    };
    assert_eq!(first, UPGRADED_GENERATION);
    assert_eq!(
        generation_dirs(&data).unwrap(),
        [UPGRADED_GENERATION],
        "0.1.0's removed"
    );
    assert_eq!(read_writes(&data).unwrap(), Some((UPGRADED_GENERATION, 0)));
    let store = open_built(&data);
    assert_eq!(store.generation().number, first, "upgraded once");
    assert_eq!(exported(&store), expected);
    assert!(store.insert_new("frank", &record("h")).await.unwrap());
    assert!(store.facts("bob").unwrap().unwrap().locked);
}

/// An upgrade cut short at each step (the new generation half-written; written with `WRITES`
/// already naming it; `CURRENT` switched but 0.1.0's files not yet removed) is finished by
/// the next open, every account as 0.1.0 left it.
#[test]
fn an_upgrade_cut_short_at_any_step_is_finished_at_the_next_open() {
    let expected = fixture_records();
    let cuts: [(&str, LeaveState); 3] = [
        ("while the new generation was written", half_written_upgrade),
        ("after WRITES, before CURRENT", |data| {
            half_written_upgrade(data);
            write_writes(data, UPGRADED_GENERATION, 0).unwrap();
        }),
        (
            "after CURRENT, before the old generation's removal",
            |data| {
                let (_upgraded_dir, upgraded) = fixture();
                drop(open_built(&upgraded));
                copy_dir(
                    &generation_path(&upgraded, UPGRADED_GENERATION),
                    &generation_path(data, UPGRADED_GENERATION),
                );
                std::fs::copy(upgraded.join(WRITES_FILE), data.join(WRITES_FILE)).unwrap();
                write_current(data, UPGRADED_GENERATION).unwrap();
            },
        ),
    ];
    for (cut, leave_state) in cuts {
        let (_dir, data) = fixture();
        leave_state(&data);
        assert_eq!(
            generation_dirs(&data).unwrap(),
            [2, UPGRADED_GENERATION],
            "{cut}"
        );
        let store = open_built(&data);
        assert_eq!(store.generation().number, UPGRADED_GENERATION, "{cut}");
        assert_eq!(exported(&store), expected, "{cut}");
        drop(store);
        assert_eq!(
            generation_dirs(&data).unwrap(),
            [UPGRADED_GENERATION],
            "{cut}: one generation left"
        );
        assert!(!files_contain(&data, b"not a sealed record"), "{cut}");
        assert_eq!(
            current_generation(&data).unwrap(),
            UPGRADED_GENERATION,
            "{cut}"
        );
    }
}

#[tokio::test]
async fn invites_make_one_account_per_use_and_resets_erase_the_replaced_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let now = tokens::unix_now();
    let invite = Invite {
        id: "inv1".into(),
        expires: now + 3600,
        uses_left: 1,
        note: String::new(),
    };
    let token_hash = [7u8; 32];
    store.put_invite(&token_hash, &invite).await.unwrap();
    let old = "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$b2xkLWhhc2gtYmVmb3JlLXJlc2V0";
    let made = store
        .redeem_invite(&token_hash, now, "erasable-name", &record(old))
        .await
        .unwrap();
    assert_eq!(made, Redeemed::Made);
    assert_eq!(store.get("erasable-name").unwrap().unwrap().hash, old);
    // The only use is spent: a second redeemer gets no account and no record is written.
    let again = store
        .redeem_invite(&token_hash, now, "keeper", &record("other"))
        .await
        .unwrap();
    assert_eq!(again, Redeemed::NoToken);
    assert!(store.get("keeper").unwrap().is_none());
    let reset_token = [9u8; 32];
    store
        .put_reset(&reset_token, "erasable-name", now + 3600)
        .await
        .unwrap();
    store.sync_all(dir.path()).unwrap();
    // A live reset keeps the name only inside the account's sealed record.
    assert!(!files_contain(dir.path(), b"erasable-name"));
    assert_eq!(
        store.reset(&reset_token, now).unwrap().as_deref(),
        Some("erasable-name")
    );
    let new = "$argon2id$v=19$m=64,t=1,p=1$c2FsdDJzYWx0$bmV3LWhhc2gtYWZ0ZXItcmVzZXQ";
    let user = store.redeem_reset(&reset_token, now, new).await.unwrap();
    assert_eq!(user.as_deref(), Some("erasable-name"));
    assert_eq!(store.get("erasable-name").unwrap().unwrap().hash, new);
    // The token is spent, and the replaced hash is unreadable in the data dir.
    assert!(store
        .redeem_reset(&reset_token, now, old)
        .await
        .unwrap()
        .is_none());
    let opened = readable_plaintexts(&store);
    assert!(!opened.iter().any(|p| contains(p, digest(old))));
    assert!(opened.iter().any(|p| contains(p, digest(new))));
    drop(store);
    let reopened = open_built(dir.path());
    assert_eq!(reopened.get("erasable-name").unwrap().unwrap().hash, new);
}

#[tokio::test]
async fn tokens_are_scanned_for_expiry_only_when_one_may_have_expired() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let now = tokens::unix_now();
    let invite = |id: &str, expires| Invite {
        id: id.into(),
        expires,
        uses_left: 1,
        note: String::new(),
    };
    store
        .put_invite(&[1u8; 32], &invite("soon", now + 100))
        .await
        .unwrap();
    store
        .put_invite(&[2u8; 32], &invite("late", now + 200))
        .await
        .unwrap();
    store
        .put_reset(&[3u8; 32], "someone", now + 50)
        .await
        .unwrap();
    // The first prune after open knows nothing yet; after it, making links costs no scan
    // until the soonest expiry (one scan per link made link-making quadratic).
    for _ in 0..10 {
        store.prune_tokens(now).await.unwrap();
    }
    assert_eq!(store.token_scans(), 1);
    store.prune_tokens(now + 49).await.unwrap();
    assert_eq!(store.token_scans(), 1);
    store.prune_tokens(now + 50).await.unwrap();
    assert_eq!(store.token_scans(), 2);
    assert_eq!(
        store.generation().tokens.len(),
        2,
        "the reset and its index went"
    );
    store.prune_tokens(now + 99).await.unwrap();
    assert_eq!(store.token_scans(), 2);
    store.prune_tokens(now + 100).await.unwrap();
    assert_eq!(store.token_scans(), 3);
    assert_eq!(store.generation().tokens.len(), 1);
    // A new token expiring before the ones left brings the next scan forward.
    store
        .put_invite(&[4u8; 32], &invite("sooner", now + 150))
        .await
        .unwrap();
    store.prune_tokens(now + 149).await.unwrap();
    assert_eq!(store.token_scans(), 3);
    store.prune_tokens(now + 150).await.unwrap();
    assert_eq!(store.token_scans(), 4);
    assert_eq!(store.invites(now).unwrap().len(), 1);
    store.prune_tokens(now + 200).await.unwrap();
    assert_eq!(store.generation().tokens.len(), 0);
    // Nothing left: no scan however late.
    store.prune_tokens(u64::MAX - 1).await.unwrap();
    assert_eq!(store.token_scans(), 5);
}
