//! mod_auth_qam in a real Prosody 0.12 (as user `prosody`) against a real qamd: logins, qamd
//! restarts, registration, password change, locking, deletion, and login timing.
//!
//! The logins are SASL PLAIN, registration is in-band, and deletion goes through the shipped
//! hooks.

use qam_client::wire::{DeleteInfo, Done};
use qam_client::Request;
use qam_tests::hooks::{enable_shipped, hooks_dir, qamd_hooks_table, QamHooks};
use qam_tests::xmpp::{
    bench_runs, compare_logins, lock_ends_a_session, median, plain_login, stream_open_time,
    xmpp_account, Login, Prosody, Session, PRODUCTION_HASH,
};
use qam_tests::{bin, require_peer, unread_on_socket, wait_until, within, Daemon};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// c2s port of this file's Prosody; its tests run one at a time.
const PORT: u16 = 15322;
static PROSODY: Mutex<()> = Mutex::new(());

/// qamd as README's Prosody section runs it: socket group `qam` (the default; prosody joins
/// it), Prosody may register (in-band registration); registration open. Deviates from README:
/// also `set_password`, to test the password change path over XMPP.
const QAMD_FOR_PROSODY: &str = "registration_open = true\n\
    [permissions.users]\nprosody = [\"verify\", \"exists\", \"register\", \"set_password\"]\n";

fn prosody_present() -> bool {
    require_peer("/usr/bin/prosody", "prosody")
        && require_peer("/usr/share/lua/5.4/socket.lua", "lua-socket")
}

/// Prosody with `localhost` on mod_auth_qam and `builtin.localhost` on its own store.
fn start_prosody(qamd: &Daemon) -> Prosody {
    let hosts = format!(
        "VirtualHost \"localhost\"\n  authentication = \"qam\"\n  qam_socket = \"{}\"\n  qam_timeout = 2\n\
         VirtualHost \"builtin.localhost\"\n  authentication = \"internal_hashed\"\n",
        qamd.socket.display()
    );
    Prosody::start(PORT, &hosts)
}

/// One test's qamd and Prosody, holding the file's lock; fields drop in order, so the servers
/// stop before the next test may start its own.
struct Servers {
    prosody: Prosody,
    qamd: Daemon,
    _serial: MutexGuard<'static, ()>,
}

/// qamd (`top` keys, `QAMD_FOR_PROSODY`, then `tables`) with user alice, and Prosody using it;
/// `None` (a skip) when Prosody or lua-socket is not installed outside CI.
fn servers(top: &str, tables: &str) -> Option<Servers> {
    if !prosody_present() {
        return None;
    }
    let serial = PROSODY.lock().unwrap_or_else(|e| e.into_inner());
    qam_tests::deployment::join_qam("prosody");
    let qamd = Daemon::start_with(&format!("{top}{QAMD_FOR_PROSODY}{tables}"));
    qamd.add_user("alice", "alice's password");
    Some(Servers {
        prosody: start_prosody(&qamd),
        qamd,
        _serial: serial,
    })
}

/// `servers("", "")` when python3-slixmpp (the XEP-0077 client) is there too.
fn slixmpp_servers() -> Option<Servers> {
    if !require_peer("/usr/lib/python3/dist-packages/slixmpp", "python3-slixmpp") {
        return None;
    }
    servers("", "")
}

fn login(user: &str, password: &str) -> Login {
    plain_login(PORT, "localhost", user, password).unwrap()
}

fn failed(outcome: Login) -> bool {
    matches!(outcome, Login::Failure(text) if text.contains("not-authorized"))
}

/// `qamctl ARGS` against this qamd, with `stdin` as its input; true on exit 0.
fn qamctl(qamd: &Daemon, args: &[&str], stdin: &str) -> bool {
    let mut child = Command::new(bin("qamctl"))
        .arg("--socket")
        .arg(&qamd.socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait().unwrap().success()
}

fn qamctl_verifies(qamd: &Daemon, user: &str, password: &str) -> bool {
    qamctl(
        qamd,
        &["verify", "--password-stdin", user],
        &format!("{password}\n"),
    )
}

#[test]
fn sasl_plain_right_wrong_unknown_and_locked() {
    let Some(servers) = servers("", "") else {
        return;
    };
    servers.qamd.add_user("bob", "pass:with:colons");

    assert_eq!(login("alice", "alice's password"), Login::Success);
    assert_eq!(login("Alice", "alice's password"), Login::Success);
    assert_eq!(login("bob", "pass:with:colons"), Login::Success);
    assert!(failed(login("alice", "wrong password")));
    assert!(failed(login("nobody", "alice's password")));
    assert!(qamctl(&servers.qamd, &["user", "lock", "bob"], ""));
    assert!(failed(login("bob", "pass:with:colons")));
    let log = servers.prosody.log_text();
    assert!(
        !log.contains("alice's password") && !log.contains("pass:with"),
        "{log}"
    );
}

#[test]
fn login_works_again_after_qamd_restarts() {
    let Some(mut servers) = servers("", "") else {
        return;
    };
    assert_eq!(login("alice", "alice's password"), Login::Success);
    servers.qamd.stop();
    assert!(
        failed(login("alice", "alice's password")),
        "qamd down: refused"
    );
    servers.qamd.spawn();
    assert_eq!(login("alice", "alice's password"), Login::Success);
    // Again with the kept connection gone stale under Prosody (restart between two logins).
    servers.qamd.stop();
    servers.qamd.spawn();
    assert_eq!(login("alice", "alice's password"), Login::Success);
    assert!(
        servers
            .prosody
            .log_text()
            .contains("cannot connect to qamd"),
        "the refusal while qamd was down is logged"
    );
}

#[test]
fn connections_qamd_closed_as_idle_are_replaced() {
    let Some(servers) = servers("idle_timeout_seconds = 1\n", "") else {
        return;
    };
    assert_eq!(login("alice", "alice's password"), Login::Success);
    servers.qamd.wait_connections_closed();
    assert_eq!(login("alice", "alice's password"), Login::Success);
    assert!(failed(login("alice", "wrong password")));
}

#[test]
fn in_band_registration_creates_a_qam_account() {
    let Some(servers) = slixmpp_servers() else {
        return;
    };

    let verdict = xmpp_account("register", PORT, "dave@localhost", "dave's password", None);
    assert_eq!(verdict, "OK");
    assert!(qamctl_verifies(&servers.qamd, "dave", "dave's password"));
    assert!(!qamctl_verifies(&servers.qamd, "dave", "other password"));
    assert_eq!(login("dave", "dave's password"), Login::Success);
    // A taken name is refused and keeps its password.
    let verdict = xmpp_account(
        "register",
        PORT,
        "alice@localhost",
        "hijacked password",
        None,
    );
    assert_eq!(verdict, "ERROR conflict");
    assert!(qamctl_verifies(&servers.qamd, "alice", "alice's password"));
}

#[test]
fn password_change_over_xmpp_changes_the_qam_password_and_removal_is_refused() {
    let Some(servers) = slixmpp_servers() else {
        return;
    };

    let verdict = xmpp_account(
        "passwd",
        PORT,
        "alice@localhost",
        "alice's password",
        Some("a brand new password"),
    );
    assert_eq!(verdict, "OK");
    assert!(qamctl_verifies(
        &servers.qamd,
        "alice",
        "a brand new password"
    ));
    assert!(!qamctl_verifies(&servers.qamd, "alice", "alice's password"));
    assert!(failed(login("alice", "alice's password")));
    assert_eq!(login("alice", "a brand new password"), Login::Success);

    let verdict = xmpp_account(
        "unregister",
        PORT,
        "alice@localhost",
        "a brand new password",
        None,
    );
    assert!(verdict.starts_with("ERROR"), "{verdict}");
    assert!(servers.qamd.client().exists("alice").unwrap());
    assert!(servers
        .prosody
        .log_text()
        .contains("refused to delete alice"));
}

/// Median time of one SASL PLAIN login (TCP connect to `<success/>`) through mod_auth_qam and
/// through Prosody's internal_hashed store, alternating in the same run, with qamd's default
/// (production) argon2 parameters. Run:
/// `cargo test -p qam-tests --test xmpp_prosody -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: prints login medians"]
fn bench_login_latency() {
    let Some(servers) = servers("", PRODUCTION_HASH) else {
        return;
    };
    let out = servers
        .prosody
        .ctl(&["register", "alice", "builtin.localhost", "alice's password"]);
    assert!(out.status.success(), "{out:?}");
    let runs = bench_runs();
    let hosts = ("localhost", "builtin.localhost");
    let (qam, builtin) = compare_logins(runs, PORT, hosts, "alice", "alice's password");
    println!(
        "prosody SASL PLAIN login, median of {runs}: mod_auth_qam {qam:?}, internal_hashed {builtin:?}"
    );
    // Another client's wait while two others log in through qam without pause.
    let idle: Vec<_> = (0..runs)
        .map(|_| stream_open_time(PORT, "builtin.localhost").unwrap())
        .collect();
    let verified = |qamd: &Daemon| qamd.status().verify.accepted;
    let verified_before = verified(&servers.qamd);
    let stop = AtomicBool::new(false);
    let busy = std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let _ = plain_login(PORT, "localhost", "alice", "alice's password");
                }
            });
        }
        wait_until(within(30), "the busy clients' logins to reach qamd", || {
            verified(&servers.qamd) >= verified_before + 2
        });
        let busy: Vec<_> = (0..runs)
            .map(|_| stream_open_time(PORT, "builtin.localhost").unwrap())
            .collect();
        stop.store(true, Ordering::Relaxed);
        busy
    });
    let worst = busy.iter().max().copied().unwrap_or_default();
    println!(
        "prosody stream open for another client, median of {runs}: idle {:?}, during qam logins {:?} (max {worst:?})",
        median(idle),
        median(busy)
    );
}

#[test]
fn a_stalled_qamd_is_refused_at_the_timeout_while_prosody_serves_others() {
    let Some(servers) = servers("", "") else {
        return;
    };
    assert_eq!(login("alice", "alice's password"), Login::Success);
    let pid = nix::unistd::Pid::from_raw(servers.qamd.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let stalled = std::thread::spawn(|| {
        let start = std::time::Instant::now();
        (login("alice", "alice's password"), start.elapsed())
    });
    wait_until(within(10), "the stalled login to reach qamd", || {
        unread_on_socket(&servers.qamd.socket)
    });
    // While that login waits for qamd (qam_timeout = 2 s), Prosody answers other clients.
    let other = stream_open_time(PORT, "builtin.localhost").unwrap();
    let (outcome, took) = stalled.join().unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(
        other < Duration::from_millis(500),
        "other client waited {other:?}"
    );
    assert!(failed(outcome));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // The stalled request's late answer is never taken for a later one.
    assert!(failed(login("alice", "wrong password")));
    assert_eq!(login("alice", "alice's password"), Login::Success);
}

#[test]
fn a_socket_in_a_directory_others_may_write_is_not_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let Some(servers) = servers("", "") else {
        return;
    };
    // Anyone could have put a socket there: the module cannot tell who listens, so it refuses.
    let dir = servers.qamd.dir.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let refused = login("alice", "alice's password");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = servers.prosody.log_text();
    assert_ne!(refused, Login::Success);
    assert!(log.contains("refusing qamd's socket"), "{log}");
    assert_eq!(login("alice", "alice's password"), Login::Success);
}

/// The shipped Prosody hooks enabled as README says, run by qam-hooks: a lock and a password
/// change end alice's session, a deletion goes through the running Prosody (mod_auth_qam agrees because qamd marks
/// the account deleting), which ends the session and purges her roster, then qamd erases her.
#[test]
fn shipped_hooks_end_sessions_and_purge_a_deleted_account_through_prosody() {
    let hooks = hooks_dir();
    enable_shipped(
        hooks.path(),
        &[
            "lock.d/50-prosody",
            "delete.d/50-prosody",
            "password.d/50-prosody",
        ],
    );
    let Some(servers) = servers("", &qamd_hooks_table(hooks.path())) else {
        return;
    };
    let prosodyctl = format!(
        "/usr/bin/prosodyctl --config {}",
        servers.prosody.config.display()
    );
    let runner = QamHooks::start_with(
        &servers.qamd,
        hooks.path(),
        &[
            ("QAM_PROSODY_HOST", "localhost"),
            ("QAM_PROSODYCTL", &prosodyctl),
        ],
    );
    runner.wait_listening();

    let closed = lock_ends_a_session(&servers.qamd, PORT, "alice", "alice's password");
    assert!(closed.contains("Your account was locked"), "{closed}");

    // A password change ends the sessions started with the old one.
    let mut session = Session::open(PORT, "localhost", "alice", "alice's password").unwrap();
    let _: Done = servers
        .qamd
        .client()
        .call(&Request::SetPassword {
            user: "alice".into(),
            password: qam_client::Password::from("alice's new password"),
        })
        .unwrap();
    let closed = session.closed_by_server().unwrap();
    assert!(closed.contains("Your password was changed"), "{closed}");

    let mut session = Session::open(PORT, "localhost", "alice", "alice's new password").unwrap();
    let answer = session
        .iq("r1", "<iq type='set' id='r1'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bob'/></query></iq>")
        .unwrap();
    assert!(answer.contains("r1"), "{answer}");
    let roster = servers
        .prosody
        .dir
        .path()
        .join("data/localhost/roster/alice.dat");
    wait_until(within(10), "alice's roster to be stored", || {
        roster.exists()
    });

    let erased: DeleteInfo = servers
        .qamd
        .client()
        .call(&Request::Delete {
            user: "alice".into(),
        })
        .unwrap();
    assert!(!erased.erased, "the deletion waits for its hooks");
    // lock.d runs first in a deletion: it ends the session.
    let closed = session.closed_by_server().unwrap();
    assert!(closed.contains("Your account is being deleted"), "{closed}");
    wait_until(within(60), "alice to be erased", || {
        !servers.qamd.client().exists("alice").unwrap()
    });
    assert!(!roster.exists(), "Prosody kept alice's roster");
    let log = servers.prosody.log_text();
    assert!(log.contains("letting Prosody purge alice"), "{log}");
    assert!(failed(login("alice", "alice's new password")));
    wait_until(within(30), "qam-hooks to log the erasure", || {
        runner.log_text().contains("erased")
    });
    let log = runner.log_text();
    assert!(
        log.contains("hook ok hook=lock.d/50-prosody")
            && log.contains("hook ok hook=delete.d/50-prosody"),
        "{log}"
    );
}
