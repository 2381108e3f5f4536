//! Reliability of the account store: acknowledged writes survive SIGKILL, damaged stores are
//! refused loudly, backups round-trip, replaced and deleted hashes are erased.

use qam_client::wire::{Done, ExportRecord, ImportInfo, NameInfo};
use qam_client::{Client, ClientError, Password, Request};
use qam_tests::reliability::{export_all, figure, occurrences, size, Rng};
use qam_tests::{bin, Daemon};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Failure ladder off: the crash test verifies candidate passwords that may be wrong.
const NO_THROTTLE: &str = "[throttle]\nfree_failures = 1000000\n";

/// What a worker did to one of its users and whether qamd acknowledged it.
#[derive(Debug, Clone)]
struct UserState {
    /// The password of the acknowledged state; None: absent (never created, or deleted).
    acked: Option<String>,
    /// A request sent without an answer when qamd died: applied or not, never half.
    pending: Option<Option<String>>,
    /// Written to since the last check: checked by password, not only by its stored hash.
    dirty: bool,
    /// The stored hash seen at the last check.
    hash: Option<String>,
}

/// One worker's users and its count of acknowledged writes.
#[derive(Default)]
struct Ledger {
    users: HashMap<String, UserState>,
    acknowledged: u64,
    next: u64,
}

/// Registers, changes passwords and deletes its own users until qamd dies under it.
fn work(
    socket_options: qam_client::ClientOptions,
    worker: usize,
    mut ledger: Ledger,
    seed: u64,
) -> Ledger {
    let mut rng = Rng::new(seed);
    let Ok(mut client) = Client::connect(&socket_options) else {
        return ledger;
    };
    loop {
        let present: Vec<String> = ledger
            .users
            .iter()
            .filter(|(_, state)| state.acked.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        ledger.next += 1;
        let serial = ledger.next;
        let choice = rng.below(10);
        let (name, request, outcome) = if present.is_empty() || choice < 5 {
            let name = format!("crash{worker}x{serial}");
            let password = format!("pw-{worker}-{serial}-first");
            let request = Request::Register {
                user: name.clone(),
                password: Password::from(password.as_str()),
                force: false,
                reuse_name: false,
            };
            (name, request, Some(password))
        } else {
            let name = present[rng.below(present.len() as u64) as usize].clone();
            if choice < 8 {
                let old = ledger.users[&name].acked.clone().unwrap_or_default();
                let new = format!("pw-{worker}-{serial}-changed");
                let request = Request::ChangePassword {
                    user: name.clone(),
                    old_password: Password::from(old),
                    new_password: Password::from(new.as_str()),
                };
                (name, request, Some(new))
            } else {
                (name.clone(), Request::Delete { user: name }, None)
            }
        };
        let state = ledger.users.entry(name).or_insert(UserState {
            acked: None,
            pending: None,
            dirty: true,
            hash: None,
        });
        state.dirty = true;
        state.pending = Some(outcome.clone());
        let answer = match &request {
            Request::Register { .. } => client.call::<NameInfo>(&request).map(|_| ()),
            _ => client.call::<Done>(&request).map(|_| ()),
        };
        match answer {
            Ok(()) => {
                state.acked = outcome;
                state.pending = None;
                ledger.acknowledged += 1;
            }
            Err(ClientError::Server(err)) => panic!("qamd refused a valid write: {err}"),
            // qamd died: the write may or may not have happened.
            Err(_) => return ledger,
        }
    }
}

/// Checks every user against the ledgers after a restart; returns (checked, lost, half).
fn check(daemon: &Daemon, ledgers: &mut [Ledger]) -> (u64, u64, u64) {
    let mut client = daemon.client();
    let stored: HashMap<String, ExportRecord> = export_all(&mut client)
        .into_iter()
        .map(|record| (record.name.clone(), record))
        .collect();
    let known: usize = ledgers.iter().map(|l| l.users.len()).sum();
    let phantoms = stored
        .keys()
        .filter(|name| !ledgers.iter().any(|l| l.users.contains_key(*name)))
        .count();
    assert_eq!(phantoms, 0, "records nobody wrote ({known} users known)");
    let (mut checked, mut lost, mut half) = (0, 0, 0);
    for ledger in ledgers.iter_mut() {
        for (name, state) in ledger.users.iter_mut() {
            checked += 1;
            let record = stored.get(name);
            let mut candidates = vec![state.acked.clone()];
            if let Some(pending) = &state.pending {
                candidates.push(pending.clone());
            }
            let actual = match record {
                None => None,
                Some(record) if !state.dirty => {
                    // Untouched since the last check: the very same bytes.
                    if Some(&record.hash) != state.hash.as_ref() {
                        lost += 1;
                    }
                    state.acked.clone()
                }
                Some(_) => candidates
                    .iter()
                    .flatten()
                    .find(|password| {
                        client
                            .verify(name, &Password::from(password.as_str()))
                            .expect("verify")
                    })
                    .cloned()
                    .or_else(|| {
                        // Present, yet no password this ledger allows opens it.
                        half += 1;
                        Some(String::new())
                    }),
            };
            if !candidates.contains(&actual) {
                lost += 1;
            }
            state.acked = actual;
            state.pending = None;
            state.dirty = false;
            state.hash = record.map(|r| r.hash.clone());
        }
    }
    (checked, lost, half)
}

#[test]
fn acknowledged_writes_survive_sigkill_at_random_moments() {
    let rounds = size(6, 25);
    let workers = 3;
    let mut rng = Rng::from_clock("crash durability");
    let mut daemon = Daemon::start_with(NO_THROTTLE);
    let mut ledgers: Vec<Ledger> = (0..workers).map(|_| Ledger::default()).collect();
    let (mut checked, mut lost, mut half) = (0, 0, 0);
    for round in 0..rounds {
        let handles: Vec<_> = ledgers
            .drain(..)
            .enumerate()
            .map(|(worker, ledger)| {
                let options = daemon.options().with_timeout(Duration::from_secs(5));
                let seed = rng.next_u64();
                std::thread::spawn(move || work(options, worker, ledger, seed))
            })
            .collect();
        // The behaviour under test, not a wait: the kill lands at a random moment of the work.
        std::thread::sleep(Duration::from_millis(100 + rng.below(700)));
        daemon.kill();
        ledgers = handles.into_iter().map(|h| h.join().unwrap()).collect();
        // The store opens offline after the kill (this also parses every record).
        let store = qamd::store::Store::open(&daemon.data_dir).expect("store opens after SIGKILL");
        store.check().expect("every record reads after SIGKILL");
        drop(store);
        daemon.spawn();
        let (c, l, h) = check(&daemon, &mut ledgers);
        checked += c;
        lost += l;
        half += h;
        eprintln!("round {round}: {c} users checked, {l} lost, {h} half-present");
    }
    let acknowledged: u64 = ledgers.iter().map(|l| l.acknowledged).sum();
    figure(
        "1 crash durability",
        format!("{rounds} SIGKILLs, {acknowledged} acknowledged writes, {checked} user states checked, {lost} lost, {half} half-present"),
    );
    assert!(acknowledged > 0);
    assert_eq!((lost, half), (0, 0));
}

/// Copies a directory tree (the store) so each damage starts from the same good store.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The generation dir `CURRENT` names.
fn generation_dir(data_dir: &Path) -> std::path::PathBuf {
    let current = std::fs::read_to_string(data_dir.join("CURRENT")).unwrap();
    data_dir.join(current.trim())
}

/// A file of the generation in use.
fn in_generation(data_dir: &Path, file: &str) -> std::path::PathBuf {
    generation_dir(data_dir).join(file)
}

fn truncate_to_half(file: &Path) {
    let len = std::fs::metadata(file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
}

fn zero(file: &Path) {
    let len = std::fs::metadata(file).unwrap().len() as usize;
    std::fs::write(file, vec![0u8; len]).unwrap();
}

/// Overwrites `file` with as many random bytes.
fn scramble(file: &Path, seed: u64) {
    let len = std::fs::metadata(file).unwrap().len() as usize;
    let mut rng = Rng::new(seed);
    let garbage: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(file, garbage).unwrap();
}

/// Runs qamd on `config` until it exits (or 20 s); returns (exit code, stderr).
fn run_qamd(config: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(bin("qamd"))
        .arg("--config")
        .arg(config)
        .arg("--log-level")
        .arg("warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if qam_tests::poll_until(qam_tests::within(20), || {
        child.try_wait().unwrap().is_some()
    }) {
        let output = child.wait_with_output().unwrap();
        return (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        );
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    (None, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_damaged_store_stops_qamd_with_one_clear_line() {
    let mut daemon = Daemon::start();
    for n in 0..40 {
        daemon.add_user(&format!("damage{n}"), "damage-password");
    }
    assert!(daemon.stop().success());
    let pristine = daemon.dir.path().join("pristine");
    copy_tree(&daemon.data_dir, &pristine);
    type Damage = fn(&Path);
    let damages: Vec<(&str, Damage)> = vec![
        ("db truncated to half", |data| {
            truncate_to_half(&in_generation(data, "db"))
        }),
        ("db truncated to zero", |data| {
            std::fs::write(in_generation(data, "db"), b"").unwrap();
        }),
        ("db zeroed", |data| zero(&in_generation(data, "db"))),
        ("db garbage", |data| scramble(&in_generation(data, "db"), 7)),
        ("conf garbage", |data| {
            std::fs::write(in_generation(data, "conf"), b"\xff\xfegarbage\n").unwrap();
        }),
        ("conf zeroed", |data| zero(&in_generation(data, "conf"))),
        ("CURRENT zeroed", |data| {
            std::fs::write(data.join("CURRENT"), [0u8; 8]).unwrap();
        }),
        ("CURRENT garbage", |data| {
            std::fs::write(data.join("CURRENT"), b"store-99\n").unwrap();
        }),
        ("CURRENT removed", |data| {
            std::fs::remove_file(data.join("CURRENT")).unwrap();
        }),
        ("WRITES zeroed", |data| {
            std::fs::write(data.join("WRITES"), [0u8; 48]).unwrap();
        }),
        ("WRITES removed", |data| {
            std::fs::remove_file(data.join("WRITES")).unwrap();
        }),
        ("KEYS truncated to half", |data| {
            truncate_to_half(&in_generation(data, "KEYS"))
        }),
        ("KEYS zeroed", |data| zero(&in_generation(data, "KEYS"))),
        ("KEYS garbage", |data| {
            scramble(&in_generation(data, "KEYS"), 11)
        }),
        ("KEYS removed", |data| {
            std::fs::remove_file(in_generation(data, "KEYS")).unwrap();
        }),
        ("generation removed", |data| {
            std::fs::remove_dir_all(generation_dir(data)).unwrap();
        }),
    ];
    let mut refused = 0;
    let mut started_whole = 0;
    for (what, damage) in &damages {
        std::fs::remove_dir_all(&daemon.data_dir).unwrap();
        copy_tree(&pristine, &daemon.data_dir);
        damage(&daemon.data_dir);
        let (code, stderr) = run_qamd(&daemon.config);
        assert!(!stderr.contains("panicked"), "{what}: panic\n{stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        if code == Some(1) {
            assert_eq!(lines.len(), 1, "{what}: one line expected:\n{stderr}");
            let line = lines[0];
            assert!(
                line.contains(&daemon.data_dir.display().to_string()),
                "{what}: {line}"
            );
            assert!(line.contains("restore from backup"), "{what}: {line}");
            assert!(line.contains("README"), "{what}: {line}");
            eprintln!("{what}: refused: {line}");
            refused += 1;
        } else {
            // sled may recover a damaged tail; then nothing may be missing.
            assert_eq!(code, None, "{what}: unexpected exit\n{stderr}");
            daemon.spawn();
            let users = export_all(&mut daemon.client()).len();
            daemon.kill();
            assert_eq!(
                users, 40,
                "{what}: qamd started on a store missing accounts"
            );
            eprintln!("{what}: started with all 40 accounts");
            started_whole += 1;
        }
    }
    figure(
        "2 store damage",
        format!("{} damages: {refused} refused with one line (exit 1), {started_whole} started with every account, 0 panics, 0 silently empty", damages.len()),
    );
}

/// Runs qamctl against `daemon`'s socket; panics unless it exits 0.
fn qamctl(daemon: &Daemon, args: &[&str]) {
    let output = Command::new(bin("qamctl"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "qamctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn export_then_import_round_trips_users_hashes_and_states() {
    let source = Daemon::start();
    let count = size(60, 2500);
    for n in 0..count {
        source.add_user(&format!("backup{n:05}"), &format!("backup-password-{n}"));
    }
    for n in (0..count).step_by(7) {
        source.lock_user(&format!("backup{n:05}"));
    }
    let before = export_all(&mut source.client());
    let file = source.dir.path().join("backup.jsonl");
    qamctl(&source, &["export", file.to_str().unwrap()]);

    let target = Daemon::start();
    qamctl(&target, &["import", file.to_str().unwrap()]);
    let after = export_all(&mut target.client());
    assert_eq!(after, before, "same names, hashes, dates and lock states");

    // The same round trip through the wire operations alone.
    let wire_target = Daemon::start();
    // In batches that keep each request line under the 64 KiB limit.
    let mut imported = 0;
    for batch in before.chunks(200) {
        let info: ImportInfo = wire_target
            .client()
            .call(&Request::Import {
                records: batch.to_vec(),
                replace: false,
                dry_run: false,
                allow_weak: false,
                system_users: false,
            })
            .unwrap();
        imported += info.imported;
    }
    assert_eq!(imported, count as u64);
    assert_eq!(export_all(&mut wire_target.client()), before);

    let mut client = target.client();
    assert!(client
        .verify("backup00001", &Password::from("backup-password-1"))
        .unwrap());
    assert!(
        !client
            .verify("backup00007", &Password::from("backup-password-7"))
            .unwrap(),
        "locked stays locked"
    );
    figure(
        "2 backup round trip",
        format!("{count} accounts exported and imported (qamctl and wire): identical names, hashes, dates, lock states"),
    );
}

/// The stored hash of `name`.
fn stored_hash(daemon: &Daemon, name: &str) -> String {
    export_all(&mut daemon.client())
        .into_iter()
        .find(|r| r.name == name)
        .expect("the account exists")
        .hash
}

/// Kills qamd right after an answer (what is on disk is what the answer left), then reads
/// the data dir offline as an attacker would: every version of `name`'s record that a key on
/// disk still opens.
fn readable_after_kill(daemon: &mut Daemon, name: &str) -> Vec<Vec<u8>> {
    daemon.kill();
    let store = qamd::store::Store::open(&daemon.data_dir).expect("store opens");
    let readable = store.readable(&[name]).expect("forensic read");
    store.check().expect("every record reads");
    drop(store);
    readable
}

fn any_holds(plaintexts: &[Vec<u8>], needle: &[u8]) -> bool {
    plaintexts
        .iter()
        .any(|plain| plain.windows(needle.len()).any(|window| window == needle))
}

/// The salt and digest part of a PHC string: what would identify the user's password.
fn digest(hash: &str) -> Vec<u8> {
    hash.rsplit('$').next().unwrap().as_bytes().to_vec()
}

#[test]
fn replaced_and_deleted_hashes_leave_no_readable_byte_in_the_data_dir() {
    let mut daemon = Daemon::start();
    let bystanders = size(30, 1000);
    for n in 0..bystanders {
        daemon.add_user(&format!("bystander{n}"), "bystander-password");
    }
    let victim = "erasure-victim-7f3a";
    daemon.add_user(victim, "first-victim-password");
    let mut replaced = Vec::new();
    let mut password = "first-victim-password".to_owned();
    // Every kind of write that replaces a hash: an admin's set_password, the user's own
    // change_password, a restore with --replace.
    for round in 0..3 {
        replaced.push(stored_hash(&daemon, victim));
        let new = format!("victim-password-{round}");
        let request = match round {
            0 => Request::SetPassword {
                user: victim.into(),
                password: Password::from(new.as_str()),
            },
            1 => Request::ChangePassword {
                user: victim.into(),
                old_password: Password::from(password.as_str()),
                new_password: Password::from(new.as_str()),
            },
            _ => {
                let mut record = export_all(&mut daemon.client())
                    .into_iter()
                    .find(|r| r.name == victim)
                    .unwrap();
                record.hash = stored_hash(&daemon, "bystander0");
                let info: ImportInfo = daemon
                    .client()
                    .call(&Request::Import {
                        records: vec![record],
                        replace: true,
                        dry_run: false,
                        allow_weak: false,
                        system_users: false,
                    })
                    .unwrap();
                assert_eq!(info.replaced, 1);
                password = "bystander-password".into();
                let readable = readable_after_kill(&mut daemon, victim);
                daemon.spawn();
                assert_unreadable(&readable, &replaced, round);
                continue;
            }
        };
        daemon.client().call::<Done>(&request).unwrap();
        password = new;
        let readable = readable_after_kill(&mut daemon, victim);
        daemon.spawn();
        assert_unreadable(&readable, &replaced, round);
        assert!(
            any_holds(&readable, &digest(&stored_hash(&daemon, victim))),
            "the live version is readable (the search works)"
        );
    }
    assert!(daemon
        .client()
        .verify(victim, &Password::from(password.as_str()))
        .unwrap());
    let last = stored_hash(&daemon, victim);
    let needles: Vec<Vec<u8>> = std::iter::once(victim.as_bytes().to_vec())
        .chain(replaced.iter().chain([&last]).map(|h| digest(h)))
        .collect();
    let plain_before: usize = needles
        .iter()
        .map(|n| occurrences(&daemon.data_dir, n))
        .sum();

    let deleting = std::time::Instant::now();
    qamctl(&daemon, &["user", "del", victim, "--yes"]);
    let delete_took = deleting.elapsed();
    let readable = readable_after_kill(&mut daemon, victim);
    let plain_after: usize = needles
        .iter()
        .map(|n| occurrences(&daemon.data_dir, n))
        .sum();
    figure(
        "9 erasure",
        format!(
            "name + {} hashes ({} replaced): plaintext bytes in the data dir while live {plain_before}, after delete {plain_after}; versions a key on disk opens after the delete: {}; the delete took {} ms beside {bystanders} accounts",
            replaced.len() + 1,
            replaced.len(),
            readable.len(),
            delete_took.as_millis()
        ),
    );
    assert_eq!(
        (plain_before, plain_after),
        (0, 0),
        "names and hashes are sealed"
    );
    assert!(readable.is_empty(), "a deleted account is unreadable");
    daemon.spawn();
    assert!(daemon.client().exists("bystander0").unwrap());
    assert!(!daemon.client().exists(victim).unwrap());
}

/// None of the `replaced` hashes (those before round `round`'s write) is readable.
fn assert_unreadable(readable: &[Vec<u8>], replaced: &[String], round: usize) {
    for hash in replaced {
        assert!(
            !any_holds(readable, &digest(hash)),
            "round {round}: a replaced hash is still readable"
        );
    }
}

#[test]
fn a_store_written_by_release_0_1_0_opens_upgraded_with_every_account() {
    let fixtures = qam_tests::workspace_root().join("tests/fixtures");
    let expected: Vec<ExportRecord> = std::fs::read_to_string(fixtures.join("store-0.1.0.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let mut daemon = Daemon::start();
    assert!(daemon.stop().success());
    std::fs::remove_dir_all(&daemon.data_dir).unwrap();
    copy_tree(&fixtures.join("store-0.1.0"), &daemon.data_dir);
    let mut generations = Vec::new();
    let mut given_uids = Vec::new();
    for start in ["upgrading", "upgraded"] {
        daemon.spawn();
        let mut client = daemon.client();
        // 0.1.0 records had no uid: the first start gives each one, and they stay.
        let (exported, uids): (Vec<ExportRecord>, Vec<Option<u32>>) = export_all(&mut client)
            .into_iter()
            .map(|record| {
                (
                    ExportRecord {
                        uid: None,
                        ..record.clone()
                    },
                    record.uid,
                )
            })
            .unzip();
        assert_eq!(exported, expected, "{start}: names, hashes, dates, locks");
        assert!(uids.iter().all(Option::is_some), "{start}: {uids:?}");
        given_uids.push(uids);
        for record in &expected {
            let password = format!("fixture-{}-password", record.name);
            let accepted = client
                .verify(&record.name, &Password::from(password.as_str()))
                .unwrap();
            assert_eq!(accepted, !record.locked, "{start}: {}", record.name);
        }
        assert!(daemon.stop().success());
        generations.push(generation_dir(&daemon.data_dir));
    }
    assert_eq!(generations[0], generations[1], "upgraded once");
    assert_eq!(given_uids[0], given_uids[1], "uids given once, kept");
    assert!(
        !daemon.data_dir.join("store-2").exists(),
        "0.1.0's files are gone"
    );
    figure(
        "2 upgrade",
        format!(
            "the 0.1.0 store ({} accounts) opened, upgraded once, verified, dates and locks kept",
            expected.len()
        ),
    );
}
