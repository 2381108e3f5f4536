//! End-to-end tests of `qamctl` against a real qamd: every subcommand, both output modes, the
//! exit codes (0 ok, 1 refused, 2 usage), and export/import as a backup and restore path.

use qam_client::wire::{Done, ExportRecord};
use qam_client::Request;
use qam_tests::identity::{Identity, SETPRIV};
use qam_tests::{bin, Daemon};
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// What one qamctl run did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs qamctl with `args` against `daemon` (no terminal: stdin is a pipe holding `stdin`).
fn qamctl(daemon: &Daemon, args: &[&str], stdin: &str) -> Run {
    let mut command = Command::new(bin("qamctl"));
    command.arg("--socket").arg(&daemon.socket).args(args);
    run(command, stdin)
}

fn run(mut command: Command, stdin: &str) -> Run {
    let mut child = command
        .env_remove("QAM_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // qamctl may exit without reading (usage errors): a broken pipe here is fine.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// Runs qamctl and asserts it exits 0.
fn ok(daemon: &Daemon, args: &[&str], stdin: &str) -> Run {
    let run = qamctl(daemon, args, stdin);
    assert_eq!(run.code, 0, "qamctl {args:?}: {run:?}");
    run
}

/// Runs qamctl and asserts it exits with `status` and says `needle` on stderr.
fn refused(daemon: &Daemon, args: &[&str], stdin: &str, status: i32, needle: &str) -> Run {
    let run = qamctl(daemon, args, stdin);
    assert_eq!(run.code, status, "qamctl {args:?}: {run:?}");
    assert!(
        run.stderr.contains(needle),
        "qamctl {args:?} should say `{needle}`: {run:?}"
    );
    run
}

/// Runs qamctl and asserts it exits 1 with `qamctl: <code>:` on stderr.
fn fails_with(daemon: &Daemon, args: &[&str], stdin: &str, code: &str) -> Run {
    let prefix = format!("qamctl: {code}: ");
    let run = refused(daemon, args, stdin, 1, &prefix);
    assert!(run.stderr.starts_with(&prefix), "{run:?}");
    run
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|err| panic!("not JSON ({err}): {run:?}"))
}

fn add(daemon: &Daemon, name: &str, password: &str) {
    ok(
        daemon,
        &["user", "add", name, "--password-stdin"],
        &format!("{password}\n"),
    );
}

fn verify(daemon: &Daemon, name: &str, password: &str) -> Run {
    qamctl(
        daemon,
        &["verify", name, "--password-stdin"],
        &format!("{password}\n"),
    )
}

fn user_count(daemon: &Daemon) -> u64 {
    json(&ok(daemon, &["status", "--json"], ""))["users"]
        .as_u64()
        .unwrap()
}

/// The lines of a table row that starts with `field`, e.g. `locked  yes`.
fn field<'a>(run: &'a Run, name: &str) -> &'a str {
    run.stdout
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no `{name}` line: {run:?}"))
}

#[test]
fn user_add_show_and_list_in_both_output_modes() {
    let daemon = Daemon::start();
    let run = ok(
        &daemon,
        &["user", "add", "Alice", "--password-stdin"],
        "correct horse\n",
    );
    assert_eq!(run.stdout, "created user alice\n");
    add(&daemon, "bob", "battery staple");

    let run = ok(&daemon, &["user", "show", "alice"], "");
    assert_eq!(field(&run, "name"), "alice");
    assert_eq!(field(&run, "email"), "alice@localhost");
    assert_eq!(field(&run, "locked"), "no");
    let created = field(&run, "created").to_owned();
    assert_eq!(created.len(), 10, "{run:?}");

    let shown = json(&ok(&daemon, &["user", "show", "alice", "--json"], ""));
    assert_eq!(shown["name"], "alice");
    assert_eq!(shown["email"], "alice@localhost");
    assert_eq!(shown["created"], created.as_str());
    assert_eq!(shown["locked"], false);

    let run = ok(&daemon, &["user", "list"], "");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{run:?}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["NAME", "EMAIL", "CREATED", "LOCKED"]);
    let alice: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(alice, ["alice", "alice@localhost", created.as_str(), "no"]);
    assert!(lines[2].starts_with("bob "), "{run:?}");
    let column = lines[0].find("EMAIL").unwrap();
    assert_eq!(
        lines[2].find("bob@"),
        Some(column),
        "columns align: {run:?}"
    );

    let listed = json(&ok(&daemon, &["user", "list", "--json"], ""));
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|account| account["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
}

#[test]
fn an_empty_list_is_said_and_is_an_empty_json_array() {
    let daemon = Daemon::start();
    assert_eq!(ok(&daemon, &["user", "list"], "").stdout, "no users\n");
    assert_eq!(
        json(&ok(&daemon, &["user", "list", "--json"], "")),
        Value::Array(vec![])
    );
}

#[test]
fn verify_exits_0_when_accepted_and_1_when_denied() {
    let daemon = Daemon::start();
    add(&daemon, "alice", "correct horse");
    let run = verify(&daemon, "alice", "correct horse");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "accepted: alice\n");

    let wrong = verify(&daemon, "alice", "wrong horse");
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(wrong.stderr.starts_with("qamctl: denied: "), "{wrong:?}");
    assert_eq!(wrong.stdout, "");
    let unknown = verify(&daemon, "nobody", "wrong horse");
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert_eq!(
        unknown.stderr, wrong.stderr,
        "unknown user and wrong password look alike"
    );
}

#[test]
fn password_stdin_reads_exactly_one_line() {
    let daemon = Daemon::start();
    // Spaces belong to the password; the line ending (also `\r\n`) does not; nor does line 2.
    ok(
        &daemon,
        &["user", "add", "alice", "--password-stdin"],
        " two words \r\nsecond line\n",
    );
    assert_eq!(verify(&daemon, "alice", " two words ").code, 0);
    assert_eq!(verify(&daemon, "alice", "two words").code, 1);
    // No newline at the end of input is fine too.
    let run = qamctl(
        &daemon,
        &["verify", "alice", "--password-stdin"],
        " two words ",
    );
    assert_eq!(run.code, 0, "{run:?}");
    // An empty password is refused before anything is sent.
    refused(
        &daemon,
        &["user", "add", "bob", "--password-stdin"],
        "\n",
        1,
        "empty",
    );
    assert_eq!(user_count(&daemon), 1);
}

/// Runs qamctl on a terminal: `script` gives it a pseudo-terminal fed from `input`.
fn on_a_terminal(daemon: &Daemon, args: &str, input: &str) -> Run {
    let command_line = format!(
        "{} --socket {} {args}",
        bin("qamctl").display(),
        daemon.socket.display()
    );
    let mut command = Command::new("/usr/bin/script");
    command.args([
        "--quiet",
        "--return",
        "--command",
        &command_line,
        "/dev/null",
    ]);
    run(command, input)
}

#[test]
fn on_a_terminal_new_passwords_are_asked_twice_and_del_asks_first() {
    if !qam_tests::require_peer("/usr/bin/script", "bsdutils") {
        return;
    }
    let daemon = Daemon::start();
    let run = on_a_terminal(&daemon, "user add alice", "correct horse\ncorrect horse\n");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("Password for alice again: "), "{run:?}");
    assert_eq!(verify(&daemon, "alice", "correct horse").code, 0);

    let run = on_a_terminal(
        &daemon,
        "user passwd alice",
        "battery staple\nbattery stable\n",
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("passwords do not match"), "{run:?}");
    assert_eq!(
        verify(&daemon, "alice", "correct horse").code,
        0,
        "unchanged"
    );

    let run = on_a_terminal(&daemon, "verify alice", "correct horse\n");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("again"), "a check asks once: {run:?}");

    let run = on_a_terminal(&daemon, "user del alice", "n\n");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("[y/N]"), "{run:?}");
    assert_eq!(user_count(&daemon), 1);
    let run = on_a_terminal(&daemon, "user del alice", "y\n");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(user_count(&daemon), 0);
}

#[test]
fn passwd_sets_a_new_password() {
    let daemon = Daemon::start();
    add(&daemon, "alice", "correct horse");
    let run = ok(
        &daemon,
        &["user", "passwd", "alice", "--password-stdin"],
        "battery staple\n",
    );
    assert_eq!(run.stdout, "password of alice changed\n");
    assert_eq!(verify(&daemon, "alice", "battery staple").code, 0);
    assert_eq!(verify(&daemon, "alice", "correct horse").code, 1);
}

#[test]
fn lock_refuses_the_password_until_unlock() {
    let daemon = Daemon::start();
    add(&daemon, "alice", "correct horse");
    assert_eq!(
        ok(&daemon, &["user", "lock", "alice"], "").stdout,
        "locked user alice\n"
    );
    assert_eq!(
        field(&ok(&daemon, &["user", "show", "alice"], ""), "locked"),
        "yes"
    );
    let shown = json(&ok(&daemon, &["user", "show", "alice", "--json"], ""));
    assert_eq!(shown["locked"], true);
    let run = verify(&daemon, "alice", "correct horse");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.starts_with("qamctl: denied: "), "{run:?}");

    assert_eq!(
        ok(&daemon, &["user", "unlock", "alice"], "").stdout,
        "unlocked user alice\n"
    );
    assert_eq!(
        field(&ok(&daemon, &["user", "show", "alice"], ""), "locked"),
        "no"
    );
    assert_eq!(verify(&daemon, "alice", "correct horse").code, 0);
}

#[test]
fn del_without_a_terminal_needs_yes() {
    let daemon = Daemon::start();
    add(&daemon, "alice", "correct horse");
    // stdin is a pipe, not a terminal: no question can be asked, so no deletion either,
    // even with a "y" waiting on stdin.
    refused(&daemon, &["user", "del", "alice"], "y\n", 2, "--yes");
    assert_eq!(user_count(&daemon), 1);

    let run = ok(&daemon, &["user", "del", "alice", "--yes"], "");
    assert_eq!(run.stdout, "deleted user alice\n");
    assert_eq!(user_count(&daemon), 0);
    fails_with(&daemon, &["user", "show", "alice"], "", "not_found");
    fails_with(&daemon, &["user", "del", "alice", "-y"], "", "not_found");
}

#[test]
fn status_in_both_output_modes() {
    let daemon = Daemon::start();
    add(&daemon, "alice", "correct horse");
    add(&daemon, "bob", "battery staple");
    ok(&daemon, &["user", "lock", "bob"], "");
    verify(&daemon, "alice", "correct horse");
    verify(&daemon, "alice", "wrong horse");

    let run = ok(&daemon, &["status"], "");
    assert_eq!(field(&run, "users"), "2");
    assert_eq!(field(&run, "locked"), "1");
    assert_eq!(field(&run, "version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(field(&run, "hash parameters"), "m=256 KiB, t=1, p=1");
    assert_eq!(field(&run, "verify accepted"), "1");
    assert_eq!(field(&run, "verify denied"), "1");
    assert_eq!(field(&run, "registration"), "closed");

    let status = json(&ok(&daemon, &["status", "--json"], ""));
    assert_eq!(status["users"], 2);
    assert_eq!(status["locked"], 1);
    assert_eq!(status["hashing"]["m_cost"], 256);
    assert_eq!(status["verify"]["accepted"], 1);
    assert_eq!(status["verify"]["denied"], 1);
}

#[test]
fn daemon_errors_print_their_code_and_exit_1() {
    let daemon = Daemon::start();
    add(&daemon, "alice", "correct horse");
    let args = ["user", "add", "alice", "--password-stdin"];
    fails_with(&daemon, &args, "battery staple\n", "exists");
    let args = ["user", "add", "bad name!", "--password-stdin"];
    fails_with(&daemon, &args, "battery staple\n", "invalid_username");
    let args = ["user", "add", "root", "--password-stdin"];
    fails_with(&daemon, &args, "battery staple\n", "invalid_username");
    let args = ["user", "add", "bob", "--password-stdin"];
    fails_with(&daemon, &args, "short\n", "invalid_password");
    let args = ["user", "passwd", "nobody", "--password-stdin"];
    fails_with(&daemon, &args, "battery staple\n", "not_found");
    fails_with(&daemon, &["user", "lock", "nobody"], "", "not_found");
    fails_with(&daemon, &["user", "unlock", "nobody"], "", "not_found");
    fails_with(
        &daemon,
        &["user", "show", "nobody", "--json"],
        "",
        "not_found",
    );
    assert_eq!(user_count(&daemon), 1);
}

#[test]
fn usage_errors_exit_2() {
    let daemon = Daemon::start();
    for args in [
        &[][..],
        &["fly"],
        &["user"],
        &["user", "add"],
        &["user", "show", "alice", "--yaml"],
        &["status", "extra"],
        &["import"],
    ] {
        refused(&daemon, args, "", 2, "Usage");
    }
    // Prompting needs a terminal; without one the password must come via --password-stdin.
    let args = ["user", "add", "alice"];
    refused(&daemon, &args, "correct horse\n", 2, "--password-stdin");
    assert_eq!(user_count(&daemon), 0);

    let run = ok(&daemon, &["--version"], "");
    assert_eq!(
        run.stdout,
        format!("qamctl {}\n", env!("CARGO_PKG_VERSION"))
    );
    assert!(ok(&daemon, &["--help"], "").stdout.contains("export"));
}

#[test]
fn socket_comes_from_qam_socket_and_an_absent_daemon_is_an_error() {
    let daemon = Daemon::start();
    let mut command = Command::new(bin("qamctl"));
    command.args(["status", "--json"]);
    let mut child = command
        .env("QAM_SOCKET", &daemon.socket)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "{}",
        String::from_utf8_lossy(&child.stderr)
    );
    let status: Value = serde_json::from_slice(&std::mem::take(&mut child.stdout)).unwrap();
    assert_eq!(status["users"], 0);

    let absent = daemon.dir.path().join("absent.sock");
    let mut command = Command::new(bin("qamctl"));
    command.arg("--socket").arg(&absent).arg("status");
    let absent = run(command, "");
    assert_eq!(absent.code, 1, "{absent:?}");
    assert!(
        absent
            .stderr
            .starts_with("qamctl: cannot connect to qamd at "),
        "{absent:?}"
    );
}

#[test]
fn a_peer_without_admin_rights_gets_forbidden() {
    if !qam_tests::require_peer(SETPRIV, "util-linux") {
        return;
    }
    let daemon = Daemon::start_with("socket_group = \"nogroup\"\n");
    add(&daemon, "alice", "correct horse");
    // A copy nobody may run, beside the socket (the build tree may be closed to others).
    let copy = daemon.dir.path().join("qamctl");
    std::fs::copy(bin("qamctl"), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&str], stdin: &str| {
        let mut command = Identity::new("nobody", "nogroup").command(&copy);
        command.arg("--socket").arg(&daemon.socket).args(args);
        run(command, stdin)
    };
    for args in [&["status"][..], &["user", "lock", "alice"], &["export"]] {
        let refused = as_nobody(args, "");
        assert_eq!(refused.code, 1, "{args:?}: {refused:?}");
        assert!(
            refused.stderr.starts_with("qamctl: forbidden: "),
            "{args:?}: {refused:?}"
        );
    }
    // verify is granted to every peer by default.
    let accepted = as_nobody(&["verify", "alice", "--password-stdin"], "correct horse\n");
    assert_eq!(accepted.code, 0, "{accepted:?}");
    assert_eq!(
        field(&ok(&daemon, &["user", "show", "alice"], ""), "locked"),
        "no"
    );
}

/// A valid argon2id PHC string made by the daemon (register, then export).
fn some_hash(daemon: &Daemon) -> String {
    daemon.add_user("hash-donor", "correct horse");
    let record = daemon
        .export()
        .into_iter()
        .find(|r| r.name == "hash-donor")
        .unwrap();
    daemon
        .client()
        .call::<qam_client::wire::Done>(&Request::Delete {
            user: "hash-donor".into(),
        })
        .unwrap();
    record.hash
}

fn record(name: &str, hash: &str, locked: bool) -> ExportRecord {
    ExportRecord {
        name: name.into(),
        hash: hash.into(),
        created: "2020-02-29".into(),
        locked,
        uid: None,
        origin: None,
        password: None,
    }
}

fn write_records(path: &Path, records: &[ExportRecord]) {
    let text: String = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn export_then_import_restores_every_record() {
    let source = Daemon::start();
    add(&source, "alice", "correct horse");
    add(&source, "bob", "battery staple");
    add(&source, "carol", "staple battery");
    ok(&source, &["user", "lock", "bob"], "");

    let file = source.dir.path().join("backup.jsonl");
    let file_arg = file.to_str().unwrap();
    let run = ok(&source, &["export", file_arg], "");
    assert_eq!(run.stdout, format!("exported 3 user(s) to {file_arg}\n"));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the backup holds hashes");
    let exported = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        ok(&source, &["export"], "").stdout,
        exported,
        "stdout and file agree"
    );
    let records: Vec<ExportRecord> = exported
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    assert!(records.iter().all(|r| r.hash.starts_with("$argon2id$")));
    assert_eq!(
        records.iter().map(|r| r.locked).collect::<Vec<_>>(),
        [false, true, false]
    );

    let target = Daemon::start();
    let run = ok(&target, &["import", file_arg], "");
    assert_eq!(run.stdout, "imported 3 user(s), 0 of them replaced\n");
    assert_eq!(
        ok(&target, &["export"], "").stdout,
        exported,
        "same names, hashes, dates, locks"
    );
    assert_eq!(verify(&target, "alice", "correct horse").code, 0);
    assert_eq!(verify(&target, "carol", "staple battery").code, 0);
    assert_eq!(
        verify(&target, "bob", "battery staple").code,
        1,
        "still locked"
    );

    // Exporting over an existing file replaces it, still 0600.
    std::fs::write(&file, "old").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    ok(&target, &["export", file_arg], "");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), exported);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn import_with_an_invalid_line_names_it_and_writes_nothing() {
    let daemon = Daemon::start();
    let hash = some_hash(&daemon);
    let file = daemon.dir.path().join("broken.jsonl");
    let good = serde_json::to_string(&record("alice", &hash, false)).unwrap();
    let also_good = serde_json::to_string(&record("bob", &hash, false)).unwrap();
    let text = format!("{good}\n{also_good}\n{{\"name\":\"carol\",\"hash\":\"{hash}\"}}\n");
    std::fs::write(&file, text).unwrap();

    let args = ["import", file.to_str().unwrap()];
    let run = refused(&daemon, &args, "", 1, "line 3: missing field `created`");
    assert!(run.stderr.contains("nothing was imported"), "{run:?}");
    assert!(
        !run.stderr.contains("line 1:") && !run.stderr.contains("line 2:"),
        "{run:?}"
    );
    assert_eq!(user_count(&daemon), 0);

    // A line only the daemon can judge (its username rules) is found by the dry run.
    let invalid = serde_json::to_string(&record("-bad-", &hash, false)).unwrap();
    std::fs::write(&file, format!("{good}\n{also_good}\n{invalid}\n")).unwrap();
    let run = refused(&daemon, &args, "", 1, "line 3 of");
    assert!(run.stderr.contains("nothing was imported"), "{run:?}");
    assert_eq!(user_count(&daemon), 0);
}

#[test]
fn import_refuses_existing_names_unless_replace() {
    let daemon = Daemon::start();
    add(&daemon, "alice", "the old one");
    let source = Daemon::start();
    add(&source, "alice", "correct horse");
    add(&source, "bob", "battery staple");
    let file = source.dir.path().join("backup.jsonl");
    let file_arg = file.to_str().unwrap();
    ok(&source, &["export", file_arg], "");

    let run = fails_with(&daemon, &["import", file_arg], "", "exists");
    assert!(run.stderr.contains("nothing was imported"), "{run:?}");
    assert_eq!(user_count(&daemon), 1, "bob was not written");
    assert_eq!(verify(&daemon, "alice", "the old one").code, 0);

    let run = ok(&daemon, &["import", file_arg, "--replace"], "");
    assert_eq!(run.stdout, "imported 2 user(s), 1 of them replaced\n");
    assert_eq!(verify(&daemon, "alice", "correct horse").code, 0);
    assert_eq!(verify(&daemon, "bob", "battery staple").code, 0);
    assert_eq!(
        ok(&daemon, &["export"], "").stdout,
        std::fs::read_to_string(&file).unwrap()
    );
}

#[test]
fn large_imports_go_in_batches_and_list_pages_through_them() {
    let daemon = Daemon::start();
    let hash = some_hash(&daemon);
    // With their uids, as an export writes them: a fresh host keeps them.
    let records: Vec<ExportRecord> = (0..1500)
        .map(|n| ExportRecord {
            uid: Some(80_000 + n),
            ..record(&format!("user{n:04}"), &hash, n % 7 == 0)
        })
        .collect();
    let file = daemon.dir.path().join("many.jsonl");
    write_records(&file, &records);
    let file_arg = file.to_str().unwrap();
    let run = ok(&daemon, &["import", file_arg], "");
    assert_eq!(run.stdout, "imported 1500 user(s), 0 of them replaced\n");

    let listed = json(&ok(&daemon, &["user", "list", "--json"], ""));
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1500, "list pages past the 1000 limit");
    assert_eq!(listed[1499]["name"], "user1499");
    assert_eq!(
        ok(&daemon, &["user", "list"], "").stdout.lines().count(),
        1501
    );
    assert_eq!(
        ok(&daemon, &["export"], "").stdout,
        std::fs::read_to_string(&file).unwrap()
    );

    // One existing name in the last batch refuses every batch: nothing is half-written.
    let mut more: Vec<ExportRecord> = (0..1500)
        .map(|n| record(&format!("more{n:04}"), &hash, false))
        .collect();
    more.push(record("user0000", &hash, false));
    write_records(&file, &more);
    let run = fails_with(&daemon, &["import", file_arg], "", "exists");
    assert!(run.stderr.contains("nothing was imported"), "{run:?}");
    assert_eq!(user_count(&daemon), 1500);
}

#[test]
fn import_refuses_a_name_twice_in_one_file() {
    let daemon = Daemon::start();
    let hash = some_hash(&daemon);
    let file = daemon.dir.path().join("twice.jsonl");
    write_records(
        &file,
        &[
            record("alice", &hash, false),
            record("bob", &hash, false),
            record("alice", &hash, true),
        ],
    );
    let args = ["import", file.to_str().unwrap()];
    refused(
        &daemon,
        &args,
        "",
        1,
        "line 3: `alice` already appears on line 1",
    );
    assert_eq!(user_count(&daemon), 0);
}

#[test]
fn a_debug_window_ends_by_itself_and_logs_no_password() {
    let daemon = Daemon::start_at_level("info", "");
    daemon.add_user("alice", "Debug-Window-Secret-1");
    let mut client = daemon.client();
    let verify = |client: &mut qam_client::Client, password: &str| {
        client
            .verify("alice", &qam_client::Password::from(password))
            .unwrap()
    };
    let debug_lines = || daemon.log_text().match_indices("verify accepted").count();
    assert!(verify(&mut client, "Debug-Window-Secret-1"));
    assert_eq!(debug_lines(), 0, "{}", daemon.log_text());
    let opened = ok(&daemon, &["debug", "on", "--for", "3s"], "");
    assert!(
        opened.stdout.starts_with("debug logging until "),
        "{opened:?}"
    );
    let status = ok(&daemon, &["status"], "");
    assert!(status.stdout.contains("on until"), "{status:?}");
    assert!(verify(&mut client, "Debug-Window-Secret-1"));
    assert!(!verify(&mut client, "Debug-Window-Secret-2"));
    assert_eq!(debug_lines(), 1, "{}", daemon.log_text());
    assert!(daemon.log_text().contains("verify denied"));
    qam_tests::wait_until(qam_tests::within(30), "the window to end", || {
        daemon.status().debug_until.is_none()
    });
    assert!(verify(&mut client, "Debug-Window-Secret-1"));
    assert_eq!(debug_lines(), 1, "debug lines after the window ended");
    ok(&daemon, &["debug", "on", "--for", "1h"], "");
    let closed = ok(&daemon, &["debug", "off"], "");
    assert!(closed.stdout.contains("configured level"), "{closed:?}");
    assert!(daemon.status().debug_until.is_none());
    fails_with(&daemon, &["debug", "on", "--for", "2d"], "", "bad_request");
    let log = daemon.log_text();
    assert!(
        !log.contains("Debug-Window-Secret"),
        "a password in the log: {log}"
    );
}

#[test]
fn a_deletion_waits_for_its_hooks_and_its_name_is_quarantined() {
    let hooks = qam_tests::shared_tempdir();
    std::fs::create_dir(hooks.path().join("delete.d")).unwrap();
    std::fs::write(hooks.path().join("delete.d/50-service"), "").unwrap();
    let daemon = Daemon::start_with(&format!("[hooks]\ndir = \"{}\"\n", hooks.path().display()));
    add(&daemon, "bob", "bob-password-1");
    // No qam-hooks runs here: the deletion stays pending, and says what it waits for.
    refused(
        &daemon,
        &["user", "del", "bob", "--yes", "--wait", "1s"],
        "",
        3,
        "deletion of `bob` pending: waiting for qam-hooks",
    );
    let shown = ok(&daemon, &["user", "show", "bob"], "");
    assert!(shown.stdout.contains("pending: hooks running"), "{shown:?}");
    fails_with(&daemon, &["user", "unlock", "bob"], "", "deletion_pending");
    // What qam-hooks reports: the hook failed, the round ended.
    let mut client = daemon.client();
    let step = |client: &mut qam_client::Client, ok: bool| {
        client
            .call::<Done>(&Request::DeletionStep {
                user: "bob".into(),
                hook: "delete.d/50-service".into(),
                ok,
                detail: Some("exit status 1: mail home busy".into()),
            })
            .unwrap();
    };
    step(&mut client, false);
    let finish = Request::DeletionFinish { user: "bob".into() };
    client.call::<Done>(&finish).unwrap();
    let shown = ok(&daemon, &["user", "show", "bob"], "");
    assert!(
        shown
            .stdout
            .contains("delete.d/50-service failed: exit status 1: mail home busy"),
        "{shown:?}"
    );
    let listed = ok(&daemon, &["user", "list"], "");
    assert!(listed.stdout.contains("deleting"), "{listed:?}");
    let status = ok(&daemon, &["status"], "");
    assert!(status.stdout.contains("deletions pending"), "{status:?}");
    step(&mut client, true);
    client.call::<Done>(&finish).unwrap();
    refused(
        &daemon,
        &["user", "show", "bob"],
        "",
        1,
        "no user named `bob`",
    );
    fails_with(
        &daemon,
        &["user", "add", "bob", "--password-stdin"],
        "bob-password-2\n",
        "name_quarantined",
    );
    ok(
        &daemon,
        &[
            "user",
            "add",
            "bob",
            "--reuse-deleted-name",
            "--password-stdin",
        ],
        "bob-password-2\n",
    );
}
