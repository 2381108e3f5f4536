//! qam accounts as system users: qamd serves `[nss]` on its own socket, real glibc +
//! nss-systemd resolve them, and a real sshd lets them log in with README's PAM stack.
//!
//! The socket is linked into /run/systemd/userdb/ as README says, and the lookups (`getent`,
//! `id`, `userdbctl`) go through Debian 12's stock nsswitch.conf.
//!
//! Each test's qamd has its own socket name, uid range and account names, since every socket
//! in that directory answers every lookup on the machine.

use qam_client::wire::{Done, NameInfo};
use qam_client::{ErrorCode, Password, Request};
use qam_tests::identity::SETPRIV;
use qam_tests::sshd::{self, Sshd};
use qam_tests::{bin, require_peer, Daemon, CHEAP_HASH};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

const USERDB_DIR: &str = "/run/systemd/userdb";
/// Where the tests' qamds bind their userdb sockets (README's is /run/qam/io.qam).
const SOCKET_DIR: &str = "/run/qam-tests";
const NSS_SYSTEMD: &str = "/usr/lib/x86_64-linux-gnu/libnss_systemd.so.2";
const USERDBCTL: &str = "/usr/bin/userdbctl";
const PASSWORD: &str = "nss test password";

/// True when this machine resolves users through nss-systemd (a failure under `CI=true`).
fn nss_present() -> bool {
    if !require_peer(NSS_SYSTEMD, "libnss-systemd") || !require_peer(USERDBCTL, "systemd-userdbd") {
        return false;
    }
    let nsswitch = std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default();
    let stock = nsswitch.lines().any(|line| {
        line.starts_with("passwd:") && line.split_whitespace().any(|source| source == "systemd")
    });
    assert!(
        stock,
        "/etc/nsswitch.conf lacks `systemd` on its passwd: line (libnss-systemd adds it)"
    );
    true
}

/// Held shared by every NssDaemon, and alone by the test that leaves its link dead: where
/// nothing else serves userdb (no systemd as PID 1), a dead entry in USERDB_DIR makes
/// nss-systemd fail other processes' group lookups, so other tests' qamds would take every
/// new name for the system's.
static LINKS: RwLock<()> = RwLock::new(());

/// An NssDaemon's hold on LINKS.
enum Turn {
    /// Its link is always served while other tests run.
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    /// Its link dies while no other test runs.
    Alone(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

/// A qamd serving userdb as `io.qam.test-<test>-<pid>`, uids from `uid_min`, on a socket in
/// SOCKET_DIR and the link to it in USERDB_DIR.
struct NssDaemon {
    /// The qamd.
    daemon: Daemon,
    /// The service name: the socket's file name and its link's.
    service: String,
    /// The first uid it gives.
    uid_min: u32,
    /// Released after the link is removed (fields drop after `drop`).
    _turn: Turn,
}

impl NssDaemon {
    /// A range of 1000 uids from `uid_min`; `extra_nss` goes into `[nss]`.
    fn start(test: &str, uid_min: u32, extra_nss: &str) -> NssDaemon {
        NssDaemon::start_range(test, uid_min, uid_min + 999, extra_nss)
    }

    fn start_range(test: &str, uid_min: u32, uid_max: u32, extra_nss: &str) -> NssDaemon {
        let turn = Turn::Shared(LINKS.read().unwrap_or_else(PoisonError::into_inner));
        NssDaemon::start_in_turn(test, uid_min, uid_max, extra_nss, turn)
    }

    /// One whose link is left dead for a while: started once no other test's qamd runs.
    fn start_alone(test: &str, uid_min: u32) -> NssDaemon {
        let turn = Turn::Alone(LINKS.write().unwrap_or_else(PoisonError::into_inner));
        NssDaemon::start_in_turn(test, uid_min, uid_min + 999, "", turn)
    }

    fn start_in_turn(
        test: &str,
        uid_min: u32,
        uid_max: u32,
        extra_nss: &str,
        turn: Turn,
    ) -> NssDaemon {
        let service = format!("io.qam.test-{test}-{}", std::process::id());
        let config = format!(
            "{CHEAP_HASH}[nss]\nenabled = true\nsocket = \"{SOCKET_DIR}/{service}\"\n\
             uid_min = {uid_min}\nuid_max = {uid_max}\ngroup = \"users\"\n{extra_nss}"
        );
        let daemon = Daemon::start_with(&config);
        // Once qamd serves: a dead link makes nss-systemd fail group lookups of other tests.
        link_into_userdb(&service);
        NssDaemon {
            daemon,
            service,
            uid_min,
            _turn: turn,
        }
    }

    /// The socket qamd binds.
    fn socket(&self) -> PathBuf {
        PathBuf::from(SOCKET_DIR).join(&self.service)
    }

    fn add(&self, name: &str) {
        self.daemon.add_user(name, PASSWORD);
    }

    /// Stops qamd gracefully, its link removed first (no dead link while other tests run).
    fn stop(&mut self) {
        let _ = std::fs::remove_file(PathBuf::from(USERDB_DIR).join(&self.service));
        self.daemon.stop();
    }

    /// Starts qamd again after `stop`, then links it again.
    fn spawn(&mut self) {
        self.daemon.spawn();
        link_into_userdb(&self.service);
    }

    fn delete(&self, name: &str) {
        self.daemon
            .client()
            .call::<Done>(&Request::Delete { user: name.into() })
            .expect("delete");
    }
}

impl Drop for NssDaemon {
    /// The link goes first, so no other test's lookup connects to a qamd being killed
    /// (a connection cut mid-call is a failed lookup, which qamd's own name check reads as
    /// "known to the system").
    fn drop(&mut self) {
        let _ = std::fs::remove_file(PathBuf::from(USERDB_DIR).join(&self.service));
        self.daemon.kill();
        let _ = std::fs::remove_file(self.socket());
    }
}

/// README's step without the package: `mkdir -p /run/systemd/userdb && ln -s SOCKET
/// /run/systemd/userdb/NAME`, the link named like the socket file.
fn link_into_userdb(service: &str) {
    std::fs::create_dir_all(USERDB_DIR).expect("create the userdb directory");
    let link = PathBuf::from(USERDB_DIR).join(service);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(PathBuf::from(SOCKET_DIR).join(service), &link)
        .expect("link the socket into the userdb directory");
}

/// Imports `count` accounts `<prefix>-000000`… (in batches under the request line limit);
/// their names.
fn import_accounts(daemon: &Daemon, prefix: &str, count: usize) -> Vec<String> {
    let hash = "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$YmVuY2htYXJrLWhhc2gtdmFsdWU";
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i:06}")).collect();
    for chunk in names.chunks(300) {
        let records = chunk
            .iter()
            .map(|name| qam_client::wire::ExportRecord {
                name: name.clone(),
                hash: hash.into(),
                created: "2026-01-01".into(),
                locked: false,
                uid: None,
                origin: None,
                password: None,
            })
            .collect();
        daemon
            .client()
            .call::<qam_client::wire::ImportInfo>(&Request::Import {
                records,
                replace: false,
                dry_run: false,
                allow_weak: false,
                system_users: false,
            })
            .expect("import");
    }
    names
}

/// Runs a lookup tool; its exit code and standard output.
fn run(program: &str, args: &[&str]) -> (i32, String) {
    let output = Command::new(program)
        .args(args)
        .env_remove("SYSTEMD_BYPASS_USERDB")
        .output()
        .unwrap_or_else(|err| panic!("run {program}: {err}"));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn getent(database: &str, key: &str) -> (i32, String) {
    run("getent", &[database, key])
}

/// getent's "not found" exit code.
const NOT_FOUND: i32 = 2;

#[test]
fn the_system_sees_qam_accounts_through_nss_systemd() {
    if !nss_present() {
        return;
    }
    let qamd = NssDaemon::start("lookups", 71_000, "");
    qamd.add("nss-alice");
    qamd.add("nss-bob");
    let alice = qamd.uid_min;
    assert_eq!(
        getent("passwd", "nss-alice"),
        (
            0,
            format!("nss-alice:x:{alice}:{alice}:nss-alice:/home/nss-alice:/bin/bash\n")
        )
    );
    let (code, by_uid) = getent("passwd", &alice.to_string());
    assert_eq!(code, 0);
    assert!(by_uid.starts_with("nss-alice:x:"), "{by_uid}");
    let (code, id) = run("id", &["nss-alice"]);
    assert_eq!(code, 0);
    assert_eq!(
        id.trim(),
        format!(
            "uid={alice}(nss-alice) gid={alice}(nss-alice) groups={alice}(nss-alice),100(users)"
        )
    );
    assert_eq!(
        getent("group", "nss-alice"),
        (0, format!("nss-alice:x:{alice}:\n"))
    );
    assert_eq!(getent("group", &alice.to_string()).0, 0);

    // Enumeration: qam accounts come after every /etc/passwd entry.
    let (code, all) = run("getent", &["passwd"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = all.lines().collect();
    let files = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let last_file = files.lines().last().expect("a passwd line");
    let position = |line: &str| lines.iter().position(|l| l.starts_with(line));
    let alice_at = position("nss-alice:").expect("alice enumerated");
    let bob_at = position("nss-bob:").expect("bob enumerated");
    assert!(position(last_file).expect("files enumerated") < alice_at.min(bob_at));
    let (code, groups) = run("getent", &["group"]);
    assert_eq!(code, 0);
    assert!(
        groups.lines().any(|l| l.starts_with("nss-bob:x:")),
        "{groups}"
    );

    let (code, shown) = run(USERDBCTL, &["user", "nss-alice"]);
    assert_eq!(code, 0, "{shown}");
    for expected in [
        format!("UID: {alice}"),
        "Aux. Groups: users".into(),
        "Directory: /home/nss-alice".into(),
        format!("Service: {}", qamd.service),
    ] {
        assert!(shown.contains(&expected), "{expected} missing in\n{shown}");
    }

    // A locked account stays visible, marked locked.
    qamd.daemon.lock_user("nss-bob");
    let (code, shown) = run(USERDBCTL, &["user", "nss-bob"]);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("Locked: yes"), "{shown}");
    assert_eq!(getent("passwd", "nss-bob").0, 0);
}

#[test]
fn a_deleted_account_vanishes_at_once_and_its_uid_is_never_given_again() {
    if !nss_present() {
        return;
    }
    // The name comes back at once (an admin could reuse it with `reuse_name` as well).
    let mut qamd = NssDaemon::start("delete", 72_000, "[accounts]\nname_quarantine_days = 0\n");
    qamd.add("nss-carol");
    let carol = qamd.uid_min;
    assert_eq!(getent("passwd", "nss-carol").0, 0);
    qamd.delete("nss-carol");
    // No waiting: the answer to delete means the system no longer knows the account.
    assert_eq!(getent("passwd", "nss-carol").0, NOT_FOUND);
    assert_eq!(getent("passwd", &carol.to_string()).0, NOT_FOUND);
    assert_eq!(getent("group", &carol.to_string()).0, NOT_FOUND);
    assert_eq!(run("id", &["nss-carol"]).0, 1);

    qamd.add("nss-carol");
    qamd.add("nss-dave");
    let uid_of = |name: &str| {
        let (code, line) = getent("passwd", name);
        assert_eq!(code, 0, "{name}");
        line.split(':')
            .nth(2)
            .expect("uid field")
            .parse::<u32>()
            .expect("uid")
    };
    assert_eq!(
        uid_of("nss-carol"),
        carol + 1,
        "a re-created name gets a new uid"
    );
    assert_eq!(uid_of("nss-dave"), carol + 2);
    qamd.delete("nss-dave");
    qamd.stop();
    qamd.spawn();
    assert_eq!(uid_of("nss-carol"), carol + 1, "uids survive a restart");
    qamd.add("nss-erin");
    // Above the deleted top uid (a restart may skip a few more, never go back).
    assert!(
        uid_of("nss-erin") > carol + 2,
        "the deleted top uid is not reused"
    );
}

/// An account in /etc/passwd, removed on drop.
struct SystemUser(String);

impl SystemUser {
    fn add(name: &str, uid: u32) -> SystemUser {
        let status = Command::new("useradd")
            .args(["-M", "-N", "-s", "/usr/sbin/nologin", "-u"])
            .arg(uid.to_string())
            .arg(name)
            .status()
            .expect("run useradd");
        assert!(status.success(), "useradd {name}");
        SystemUser(name.to_owned())
    }
}

impl Drop for SystemUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.0).status();
    }
}

#[test]
fn names_and_uids_of_the_system_are_never_given() {
    if !nss_present() {
        return;
    }
    let qamd = NssDaemon::start("collide", 73_000, "");
    // `sshd` is a user of /etc/passwd, `users` a group of /etc/group.
    for name in ["sshd", "users"] {
        let refused = qamd
            .daemon
            .client()
            .call::<NameInfo>(&Request::Register {
                user: name.into(),
                password: Password::from(PASSWORD),
                // Even forced: with NSS served, the system's entry would shadow the account.
                force: true,
                reuse_name: false,
            })
            .expect_err("a system name is refused");
        assert_eq!(refused.code(), Some(ErrorCode::InvalidUsername), "{name}");
    }
    let system = format!("qamcollide{}", std::process::id() % 100_000);
    let _system = SystemUser::add(&system, qamd.uid_min);
    qamd.add("nss-frank");
    let (code, line) = getent("passwd", "nss-frank");
    assert_eq!(code, 0);
    assert!(
        line.starts_with(&format!("nss-frank:x:{}:", qamd.uid_min + 1)),
        "the uid /etc/passwd uses is skipped: {line}"
    );
}

#[test]
fn an_older_store_gets_uids_once_and_keeps_them() {
    if !nss_present() {
        return;
    }
    let mut qamd = NssDaemon::start("upgrade", 74_000, "");
    qamd.stop();
    // A store as qamd wrote it before uids: records without the field, no NEXT_UID file.
    std::fs::remove_dir_all(&qamd.daemon.data_dir).expect("empty data dir");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = qamd::store::Store::open(&qamd.daemon.data_dir).expect("open store");
        for name in ["nss-old-b", "nss-old-a"] {
            let record = qamd::store::Record::new(format!(
                "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHQ${name}"
            ));
            assert!(store.insert_new(name, &record).await.expect("insert"));
        }
        store.sync_all(&qamd.daemon.data_dir).expect("sync");
    });
    qamd.spawn();
    let expected = |name: &str, uid: u32| {
        assert_eq!(
            getent("passwd", name),
            (
                0,
                format!("{name}:x:{uid}:{uid}:{name}:/home/{name}:/bin/bash\n")
            )
        );
    };
    expected("nss-old-a", qamd.uid_min);
    expected("nss-old-b", qamd.uid_min + 1);
    qamd.stop();
    qamd.spawn();
    expected("nss-old-a", qamd.uid_min);
    expected("nss-old-b", qamd.uid_min + 1);
}

/// Runs a Python script as `nobody` that opens `count` connections to `socket` and holds
/// them, sending nothing, until its stdin closes; returns once they are all open.
fn hold_connections_as_nobody(socket: &Path, count: usize) -> std::process::Child {
    let script = format!(
        "import socket,sys\nheld=[]\nfor _ in range({count}):\n    s=socket.socket(socket.AF_UNIX)\n    s.connect({path:?})\n    held.append(s)\nprint('open',flush=True)\nsys.stdin.read()\n",
        path = socket.display().to_string()
    );
    let mut child = qam_tests::python_as_nobody(&script)
        .spawn()
        .expect("run python3 as nobody");
    let mut opened = [0u8; 5];
    child
        .stdout
        .as_mut()
        .expect("stdout")
        .read_exact(&mut opened)
        .expect("connections opened");
    child
}

#[test]
fn attacker_holding_userdb_connections_cannot_hide_accounts_or_slow_the_main_socket() {
    if !nss_present() || !require_peer(SETPRIV, "util-linux") {
        return;
    }
    let qamd = NssDaemon::start("flood", 75_000, "");
    qamd.add("nss-grace");
    import_accounts(&qamd.daemon, "nss-flood", 900);
    let socket = qamd.socket();
    // Far more idle connections than any uid may hold, all from one local user.
    let mut hostile = hold_connections_as_nobody(&socket, 300);
    // And a client that asks for every account and reads none of the replies.
    let mut stalled = UnixStream::connect(&socket).expect("connect");
    let everything = format!(
        "{{\"method\":\"io.systemd.UserDatabase.GetUserRecord\",\"parameters\":{{\"service\":\"{}\"}},\"more\":true}}\0",
        qamd.service
    );
    stalled.write_all(everything.as_bytes()).expect("send");
    for _ in 0..20 {
        assert_eq!(getent("passwd", "nss-grace").0, 0, "lookups still answered");
    }
    let exists: qam_client::wire::ExistsInfo = qamd
        .daemon
        .client()
        .call(&Request::Exists {
            user: "nss-grace".into(),
        })
        .expect("main socket answers");
    assert!(exists.exists);

    // An over-long message closes that connection, nothing else.
    let mut long = UnixStream::connect(&socket).expect("connect");
    let _ = long.write_all(&vec![b'{'; 64 * 1024]);
    let mut rest = Vec::new();
    long.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    assert_eq!(
        long.read_to_end(&mut rest).map(|_| rest.len()).unwrap_or(0),
        0
    );
    // A wrong service name is refused; the record is never served to it.
    let mut wrong = UnixStream::connect(&socket).expect("connect");
    wrong
        .write_all(b"{\"method\":\"io.systemd.UserDatabase.GetUserRecord\",\"parameters\":{\"userName\":\"nss-grace\",\"service\":\"io.systemd.Home\"}}\0")
        .expect("send");
    let reply = read_reply(&mut wrong);
    assert_eq!(
        reply["error"], "io.systemd.UserDatabase.BadService",
        "{reply}"
    );
    drop(hostile.stdin.take());
    let _ = hostile.wait();
    drop(stalled);
    assert_eq!(getent("passwd", "nss-grace").0, 0);
}

#[test]
fn records_hold_only_public_facts() {
    if !nss_present() {
        return;
    }
    let qamd = NssDaemon::start("facts", 76_000, "");
    qamd.add("nss-heidi");
    qamd.daemon.lock_user("nss-heidi");
    let socket = qamd.socket();
    let mut stream = UnixStream::connect(&socket).expect("connect");
    let call = format!(
        "{{\"method\":\"io.systemd.UserDatabase.GetUserRecord\",\"parameters\":{{\"userName\":\"nss-heidi\",\"service\":\"{}\"}}}}\0",
        qamd.service
    );
    stream.write_all(call.as_bytes()).expect("send");
    let reply = read_reply(&mut stream);
    let record = reply["parameters"]["record"].as_object().expect("a record");
    let mut keys: Vec<&str> = record.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "disposition",
            "gid",
            "homeDirectory",
            "locked",
            "service",
            "shell",
            "uid",
            "userName"
        ]
    );
    assert_eq!(record["locked"], true);
    let text = reply.to_string();
    assert!(!text.contains("argon2") && !text.contains('@'), "{text}");
}

/// Reads one NUL-terminated reply.
fn read_reply(stream: &mut UnixStream) -> serde_json::Value {
    use std::io::BufRead;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut bytes = Vec::new();
    std::io::BufReader::new(stream)
        .read_until(0, &mut bytes)
        .expect("a reply");
    if bytes.last() == Some(&0) {
        bytes.pop();
    }
    serde_json::from_slice(&bytes).expect("a JSON reply")
}

/// README's sshd PAM lines (pointed at the test's qamd: the socket is not the default one),
/// at the top of Debian's stock /etc/pam.d/sshd, with pam_mkhomedir as README's recipe adds.
fn readme_sshd_stack(qamd_socket: &Path) -> String {
    let module = bin("libpam_qam.so");
    let lines = format!(
        "auth     [success=done user_unknown=ignore authinfo_unavail=ignore default=die] {module} socket={socket}\n\
         account  [success=ok user_unknown=ignore authinfo_unavail=ignore default=bad] {module} socket={socket}\n",
        module = module.display(),
        socket = qamd_socket.display(),
    );
    format!(
        "{}\nsession  required pam_mkhomedir.so umask=0077\n",
        sshd::stock_stack_under(&lines)
    )
}

#[test]
fn a_qam_account_logs_in_over_ssh_without_a_passwd_line() {
    if !nss_present() || !sshd::peers_present() {
        return;
    }
    // Homes under a temp dir instead of /home, so the test leaves nothing behind.
    let homes = qam_tests::shared_tempdir();
    let qamd = NssDaemon::start(
        "ssh",
        77_000,
        &format!("home = \"{}/%u\"\n", homes.path().display()),
    );
    for name in ["nss-ivan", "nss-judy", "nss-mallory"] {
        qamd.add(name);
    }
    let server = Sshd::start_with("nss", &readme_sshd_stack(&qamd.daemon.socket), "");

    let login = server.run("nss-ivan", PASSWORD, "id -u; pwd");
    let stdout = String::from_utf8_lossy(&login.stdout);
    let home = homes.path().join("nss-ivan");
    assert!(
        login.status.success(),
        "login failed: {}\nsshd log:\n{}",
        String::from_utf8_lossy(&login.stderr),
        server.log_text()
    );
    assert_eq!(stdout, format!("{}\n{}\n", qamd.uid_min, home.display()));
    let meta = std::fs::metadata(&home).expect("pam_mkhomedir made the home");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), qamd.uid_min);

    assert!(!server.login("nss-ivan", "wrong password"));
    qamd.daemon.lock_user("nss-judy");
    assert!(!server.login("nss-judy", PASSWORD), "locked");
    qamd.delete("nss-mallory");
    assert!(!server.login("nss-mallory", PASSWORD), "deleted");
    assert!(
        server.log_text().contains("Invalid user nss-mallory"),
        "sshd sees an unknown user:\n{}",
        server.log_text()
    );
    assert!(!homes.path().join("nss-judy").exists() && !homes.path().join("nss-mallory").exists());
}

#[test]
fn readme_ways_to_keep_qam_users_out_of_ssh_work() {
    if !nss_present() || !sshd::peers_present() {
        return;
    }
    let qamd = NssDaemon::start("keepout", 78_000, "");
    qamd.add("nss-kate");
    let stack = readme_sshd_stack(&qamd.daemon.socket);
    // The right password, and pam_qam in the stack: only the README's guard stops the login.
    // (The test's shared group is `users`, standing in for README's `qam-users`.)
    // (sshd may just close the connection: `run` and the log, not `login`'s "Permission denied".)
    let denied = Sshd::start_with("keepout-deny", &stack, "DenyGroups users");
    assert!(!denied.run("nss-kate", PASSWORD, "true").status.success());
    assert!(
        denied.log_text().contains("listed in DenyGroups"),
        "{}",
        denied.log_text()
    );
    let guarded = format!(
        "account required pam_succeed_if.so quiet uid < {}\n{stack}",
        qamd.uid_min
    );
    let by_uid = Sshd::start_with("keepout-uid", &guarded, "");
    assert!(!by_uid.run("nss-kate", PASSWORD, "true").status.success());
    assert!(
        by_uid.log_text().contains("PAM account configuration"),
        "{}",
        by_uid.log_text()
    );
    // The same stack without the guard lets the same login in: the guard is what refused it.
    let open = Sshd::start_with("keepout-open", &stack, "");
    assert!(open.login("nss-kate", PASSWORD), "{}", open.log_text());
}

/// Calls as nss-systemd sends them, several to a connection and cut at any byte, each come out
/// of the door's framing and decoding as the query that was sent (or `BadService`).
#[test]
fn calls_split_anywhere_decode_to_the_query_sent() {
    use proptest::prelude::*;
    use qamd::framing::{Framer, Next};
    use qamd::userdb::varlink::{decode_call, Method, VarlinkError, MAX_MESSAGE};
    let query = (
        0..3u8,
        proptest::option::of(any::<u32>()),
        proptest::option::of("[a-z0-9.-]{0,12}"),
        any::<bool>(),
        any::<bool>(),
    );
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 1000,
        ..proptest::test_runner::Config::default()
    });
    runner
        .run(
            &(proptest::collection::vec(query, 1..5), any::<usize>()),
            |(queries, cut)| {
                let mut bytes = Vec::new();
                let mut expected = Vec::new();
                for (kind, id, name, right_service, more) in queries {
                    let (method, id_key, name_key, query) = match kind {
                        0 => (
                            "GetUserRecord",
                            "uid",
                            "userName",
                            Method::User {
                                uid: id,
                                name: name.clone(),
                            },
                        ),
                        1 => (
                            "GetGroupRecord",
                            "gid",
                            "groupName",
                            Method::Group {
                                gid: id,
                                name: name.clone(),
                            },
                        ),
                        _ => (
                            "GetMemberships",
                            "groupName",
                            "userName",
                            Method::Memberships {
                                user: name.clone(),
                                group: id.map(|id| id.to_string()),
                            },
                        ),
                    };
                    let id_value = match kind {
                        2 => id.map(|id| serde_json::Value::from(id.to_string())),
                        _ => id.map(serde_json::Value::from),
                    };
                    let service = if right_service {
                        "io.qam"
                    } else {
                        "io.systemd.Home"
                    };
                    let call = serde_json::json!({
                        "method": format!("io.systemd.UserDatabase.{method}"),
                        "parameters": { id_key: id_value, name_key: name, "service": service },
                        "more": more,
                    });
                    bytes.extend(call.to_string().into_bytes());
                    bytes.push(0);
                    expected.push(if right_service {
                        Ok((query, more))
                    } else {
                        Err(VarlinkError::BadService)
                    });
                }
                let cut = cut % (bytes.len() + 1);
                let mut framer = Framer::new(0, MAX_MESSAGE);
                let mut decoded = Vec::new();
                for piece in [&bytes[..cut], &bytes[cut..]] {
                    framer.push(piece);
                    while let Next::Message(message) = framer.next_message() {
                        decoded.push(
                            decode_call(message, "io.qam").map(|call| (call.method, call.more)),
                        );
                    }
                }
                prop_assert_eq!(decoded, expected);
                Ok(())
            },
        )
        .expect("property holds");
}

/// Lookups through nss-systemd of a name /etc/passwd has, of a qam account and of root's
/// groups (`id`, as systemd's initgroups before a service starts); how long they took.
fn lookups_while_down(account: &str) -> Duration {
    let started = Instant::now();
    assert_eq!(getent("passwd", "root").0, 0);
    assert_eq!(
        getent("passwd", account).0,
        NOT_FOUND,
        "{account} is absent"
    );
    assert_eq!(run("id", &["root"]).0, 0);
    started.elapsed()
}

/// README: while qamd is down nothing waits. With qamd killed (its socket file left, nobody
/// answering) and with the socket gone (the link dangling), lookups answer at once and the
/// account is simply absent; qamd started again replaces the stale socket, and refuses with
/// one line a path that is not a socket.
#[test]
fn lookups_never_wait_while_qamd_is_down_and_a_stale_socket_is_replaced() {
    if !nss_present() {
        return;
    }
    let mut qamd = NssDaemon::start_alone("down", 79_000);
    qamd.add("nss-leo");
    assert_eq!(getent("passwd", "nss-leo").0, 0);
    qamd.daemon.kill();
    assert!(
        qamd.socket().exists(),
        "a killed qamd leaves its socket file"
    );
    let refused = lookups_while_down("nss-leo");
    std::fs::remove_file(qamd.socket()).expect("remove the socket");
    let dangling = lookups_while_down("nss-leo");
    // With `[nss]` disabled (the package's link dangling), new names are still free: qamd
    // never asks its own door.
    let disabled = Daemon::start_with(&format!(
        "[nss]\nenabled = false\nsocket = {:?}\n",
        qamd.socket().display().to_string()
    ));
    disabled.add_user("nss-mia", PASSWORD);
    drop(disabled);
    println!("FIGURE nss: lookups while qamd is down: {refused:?} (stale socket), {dangling:?} (dangling link)");
    for took in [refused, dangling] {
        assert!(took < Duration::from_secs(2), "lookups waited {took:?}");
    }

    // A stale socket (nobody listening) is replaced at the next start.
    drop(std::os::unix::net::UnixListener::bind(qamd.socket()).expect("a stale socket"));
    qamd.daemon.spawn();
    assert_eq!(getent("passwd", "nss-leo").0, 0, "served again");
    qamd.daemon.kill();

    // Anything else at the path stays, and qamd says why in one line.
    std::fs::remove_file(qamd.socket()).expect("remove the socket");
    std::fs::write(qamd.socket(), "not a socket").expect("a file");
    let out = Command::new(bin("qamd"))
        .arg("--config")
        .arg(&qamd.daemon.config)
        .stdin(Stdio::null())
        .output()
        .expect("run qamd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(
        last,
        format!(
            "qamd: {} exists and is not a socket; remove it or choose another socket path",
            qamd.socket().display()
        ),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(qamd.socket()).expect("the file"),
        "not a socket"
    );
}

/// `ci` normally, `full` under the documented full-size run (`QAM_FULL=1`).
fn sized(ci: usize, full: usize) -> usize {
    if std::env::var("QAM_FULL").as_deref() == Ok("1") {
        full
    } else {
        ci
    }
}

/// `samples` getpwnam() calls of `name` in this process (real glibc NSS); sorted latencies.
fn getpwnam_latencies(name: &str, samples: usize) -> Vec<Duration> {
    let mut latencies: Vec<Duration> = (0..samples)
        .map(|_| {
            let started = Instant::now();
            let found = nix::unistd::User::from_name(name).expect("getpwnam");
            let elapsed = started.elapsed();
            assert!(found.is_some(), "{name} resolves");
            elapsed
        })
        .collect();
    latencies.sort_unstable();
    latencies
}

fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    sorted[(sorted.len() * percent / 100).min(sorted.len() - 1)]
}

/// The figures BENCHMARKS.md reports (sizes grow under `QAM_FULL=1`): getpwnam through
/// nss-systemd for a qam account next to an /etc/passwd entry in the same run, and the time
/// `getent passwd` takes to list every account.
#[test]
fn figures_getpwnam_latency_and_enumeration() {
    if !nss_present() {
        return;
    }
    let lookups = sized(2_000, 10_000);
    let accounts = sized(2_000, 100_000);
    // A range wide enough for the full-size run, apart from the other tests' ranges.
    let qamd = NssDaemon::start_range("figures", 100_000, 299_999, "");
    let daemon = &qamd.daemon;
    let names = import_accounts(daemon, "nss-fig", accounts);
    // root: a files entry no other test creates or removes while this one runs.
    let files_user = "root".to_owned();
    let qam_user = &names[accounts / 2];
    // Interleaved halves, so both see the same machine load.
    let mut files = Vec::new();
    let mut qam = Vec::new();
    for _ in 0..2 {
        files.extend(getpwnam_latencies(&files_user, lookups / 2));
        qam.extend(getpwnam_latencies(qam_user, lookups / 2));
    }
    files.sort_unstable();
    qam.sort_unstable();
    // qamd's own share: the same call straight to the socket, a connection each as
    // nss-systemd makes it.
    let call = format!(
        "{{\"method\":\"io.systemd.UserDatabase.GetUserRecord\",\"parameters\":{{\"userName\":\"{qam_user}\",\"service\":\"{}\"}}}}\0",
        qamd.service
    );
    let mut direct: Vec<Duration> = (0..lookups)
        .map(|_| {
            let started = Instant::now();
            let mut stream = UnixStream::connect(qamd.socket()).expect("connect");
            stream.write_all(call.as_bytes()).expect("send");
            let reply = read_reply(&mut stream);
            let elapsed = started.elapsed();
            assert_eq!(reply["parameters"]["record"]["userName"], qam_user.as_str());
            elapsed
        })
        .collect();
    direct.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    eprintln!(
        "FIGURE nss: getpwnam over {lookups} lookups: qam account via nss-systemd p50 {:.0} µs, \
         p99 {:.0} µs; /etc/passwd entry ({files_user}) p50 {:.1} µs, p99 {:.1} µs",
        us(percentile(&qam, 50)),
        us(percentile(&qam, 99)),
        us(percentile(&files, 50)),
        us(percentile(&files, 99)),
    );
    eprintln!(
        "FIGURE nss: the same GetUserRecord sent straight to qamd's socket: p50 {:.0} µs, p99 {:.0} µs",
        us(percentile(&direct, 50)),
        us(percentile(&direct, 99)),
    );
    let started = Instant::now();
    let (code, all) = run("getent", &["passwd"]);
    let elapsed = started.elapsed();
    assert_eq!(code, 0);
    let listed = all
        .lines()
        .filter(|line| line.starts_with("nss-fig-"))
        .count();
    assert_eq!(listed, accounts, "every account listed once");
    eprintln!(
        "FIGURE nss: `getent passwd` listed {accounts} qam accounts (and /etc/passwd) in {:.2} s",
        elapsed.as_secs_f64()
    );
}

/// Sends one call and reads its replies: until one without `continues` (or the only one).
fn exchange(socket: &Path, call: serde_json::Value) -> Vec<serde_json::Value> {
    use std::io::BufRead;
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut message = call.to_string().into_bytes();
    message.push(0);
    stream.write_all(&message).expect("send");
    let mut reader = std::io::BufReader::new(stream);
    let mut replies = Vec::new();
    loop {
        let mut bytes = Vec::new();
        reader.read_until(0, &mut bytes).expect("a reply");
        bytes.pop();
        let reply: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        let more = reply["continues"] == true;
        replies.push(reply);
        if !more {
            return replies;
        }
    }
}

#[test]
fn the_door_answers_as_protocol_md_says() {
    if !nss_present() {
        return;
    }
    let qamd = NssDaemon::start("protocol", 76_500, "");
    qamd.add("nss-mike");
    qamd.add("nss-nina");
    let (mike, nina) = (qamd.uid_min, qamd.uid_min + 1);
    let socket = qamd.socket();
    let service = qamd.service.as_str();
    let call = |method: &str, parameters: serde_json::Value, more: bool| {
        let mut call = serde_json::json!({
            "method": format!("io.systemd.UserDatabase.{method}"),
            "parameters": parameters,
        });
        if more {
            call["more"] = true.into();
        }
        exchange(&socket, call)
    };
    let error = |replies: Vec<serde_json::Value>| replies[0]["error"].as_str().map(str::to_owned);

    let both = call(
        "GetUserRecord",
        serde_json::json!({"uid": mike, "userName": "nss-mike", "service": service}),
        false,
    );
    assert_eq!(both[0]["parameters"]["record"]["uid"], mike);
    let crossed = call(
        "GetUserRecord",
        serde_json::json!({"uid": nina, "userName": "nss-mike", "service": service}),
        false,
    );
    assert_eq!(
        error(crossed).as_deref(),
        Some("io.systemd.UserDatabase.ConflictingRecordFound")
    );
    let unknown = call(
        "GetGroupRecord",
        serde_json::json!({"gid": nina + 500, "service": service}),
        false,
    );
    assert_eq!(
        error(unknown).as_deref(),
        Some("io.systemd.UserDatabase.NoRecordFound")
    );
    let no_more = call(
        "GetUserRecord",
        serde_json::json!({"service": service}),
        false,
    );
    assert_eq!(
        error(no_more).as_deref(),
        Some("org.varlink.service.ExpectedMore")
    );
    let users = call(
        "GetUserRecord",
        serde_json::json!({"service": service}),
        true,
    );
    assert_eq!(users.len(), 2);
    assert_eq!(
        (users[0]["continues"].clone(), users[1].get("continues")),
        (true.into(), None)
    );
    let members = call(
        "GetMemberships",
        serde_json::json!({"groupName": "users", "service": service}),
        true,
    );
    let pairs: Vec<_> = members
        .iter()
        .map(|m| m["parameters"]["userName"].clone())
        .collect();
    assert_eq!(pairs, ["nss-mike", "nss-nina"]);
    let private = call(
        "GetMemberships",
        serde_json::json!({"groupName": "nss-mike", "service": service}),
        true,
    );
    assert_eq!(
        error(private).as_deref(),
        Some("io.systemd.UserDatabase.NoRecordFound")
    );
    let filtered = call(
        "GetUserRecord",
        serde_json::json!({"uidMin": 1, "service": service}),
        true,
    );
    assert_eq!(filtered[0]["parameters"]["parameter"], "uidMin");
    let other = exchange(
        &socket,
        serde_json::json!({"method": "io.systemd.UserDatabase.Delete", "parameters": {}}),
    );
    assert_eq!(other[0]["error"], "org.varlink.service.MethodNotFound");
    let info = exchange(
        &socket,
        serde_json::json!({"method": "org.varlink.service.GetInfo"}),
    );
    assert_eq!(info[0]["parameters"]["product"], "qamd");
    // A one-way call gets no reply; the next call on the connection is answered.
    let mut stream = UnixStream::connect(&socket).expect("connect");
    let oneway = format!("{{\"method\":\"io.systemd.UserDatabase.GetUserRecord\",\"parameters\":{{\"userName\":\"nss-mike\",\"service\":\"{service}\"}},\"oneway\":true}}\0");
    let asked = format!("{{\"method\":\"io.systemd.UserDatabase.GetUserRecord\",\"parameters\":{{\"userName\":\"nss-nina\",\"service\":\"{service}\"}}}}\0");
    stream
        .write_all(format!("{oneway}{asked}").as_bytes())
        .expect("send");
    assert_eq!(
        read_reply(&mut stream)["parameters"]["record"]["userName"],
        "nss-nina"
    );
}

#[test]
fn a_restored_backup_keeps_uids_never_given_on_the_new_host() {
    if !nss_present() {
        return;
    }
    let old = NssDaemon::start("backup", 80_000, "");
    old.add("nss-olga");
    old.add("nss-pete");
    let backup = old.daemon.export();
    assert_eq!(
        backup.iter().map(|r| r.uid).collect::<Vec<_>>(),
        [Some(80_000), Some(80_001)]
    );
    drop(old);
    let new = NssDaemon::start("backup", 80_000, "");
    // The new host gave 80000 already: olga's old uid goes to no one else's files.
    new.add("nss-quinn");
    new.daemon
        .client()
        .call::<qam_client::wire::ImportInfo>(&Request::Import {
            records: backup,
            replace: false,
            dry_run: false,
            allow_weak: false,
            system_users: false,
        })
        .expect("import");
    let uid_of = |name: &str| {
        let (code, line) = getent("passwd", name);
        assert_eq!(code, 0, "{name}");
        line.split(':').nth(2).map(str::to_owned)
    };
    assert_eq!(uid_of("nss-quinn").as_deref(), Some("80000"));
    assert_eq!(uid_of("nss-pete").as_deref(), Some("80001"), "kept");
    assert_eq!(uid_of("nss-olga").as_deref(), Some("80002"), "given anew");
    new.add("nss-rita");
    assert_eq!(uid_of("nss-rita").as_deref(), Some("80003"));
}
