//! qam-extauth against a real qamd and a real ejabberd 23.01: the extauth commands, logins,
//! robustness, deletion through the shipped hooks, and login timing.
//!
//! The commands go through ejabberdctl, the logins are SASL PLAIN over c2s, and robustness is
//! tested on pipes.

use qam_client::wire::DeleteInfo;
use qam_client::{Password, Request};
use qam_tests::hooks::{enable_shipped, hooks_dir, qamd_hooks_table, QamHooks};
use qam_tests::identity::Identity;
use qam_tests::xmpp::{
    bench_runs, compare_logins, extauth_hosts, install_extauth, lock_ends_a_session, plain_login,
    Ejabberd, Login, PRODUCTION_HASH,
};
use qam_tests::{bin, require_peer, wait_until, within, Daemon};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// c2s port and node name of this file's ejabberd; its tests run one at a time.
const PORT: u16 = 15323;
const NODE: &str = "qamxmpp@localhost";
static EJABBERD: Mutex<()> = Mutex::new(());

/// qamd as README's ejabberd section runs it: socket group `qam` (the default; ejabberd joins
/// it), ejabberd may register; registration open. Deviates from README: also `set_password`,
/// to test the password change path.
const QAMD_FOR_EJABBERD: &str = "registration_open = true\n\
    [permissions.users]\nejabberd = [\"verify\", \"exists\", \"register\", \"set_password\"]\n";

/// ejabberd with `localhost` authenticated by qam-extauth and `builtin.localhost` by
/// ejabberd's own store.
fn start_ejabberd(qamd: &Daemon) -> Ejabberd {
    Ejabberd::start(PORT, NODE, &extauth_hosts(qamd))
}

/// One test's qamd and ejabberd, holding the file's lock; fields drop in order, so the
/// servers stop before the next test may start its own.
struct Servers {
    ejabberd: Ejabberd,
    qamd: Daemon,
    _serial: MutexGuard<'static, ()>,
}

/// qamd (`QAMD_FOR_EJABBERD` plus `extra`) with `users`, and ejabberd using it; `None` (a
/// skip) when ejabberd is not installed outside CI.
fn servers(extra: &str, users: &[(&str, &str)]) -> Option<Servers> {
    if !require_peer("/usr/sbin/ejabberdctl", "ejabberd") {
        return None;
    }
    let serial = EJABBERD.lock().unwrap_or_else(|e| e.into_inner());
    qam_tests::deployment::join_qam("ejabberd");
    let qamd = Daemon::start_with(&format!("{QAMD_FOR_EJABBERD}{extra}"));
    for (user, password) in users {
        qamd.add_user(user, password);
    }
    Some(Servers {
        ejabberd: start_ejabberd(&qamd),
        qamd,
        _serial: serial,
    })
}

/// True when `ejabberdctl ARGS` succeeded.
fn ctl_ok(ejabberd: &Ejabberd, args: &[&str]) -> bool {
    ejabberd.ctl(args).status.success()
}

fn qam_verifies(qamd: &Daemon, user: &str, password: &str) -> bool {
    qamd.client()
        .verify(user, &Password::from(password))
        .unwrap()
}

#[test]
fn ejabberdctl_commands_go_through_qam() {
    let Some(servers) = servers("", &[("alice", "colon:pass:word")]) else {
        return;
    };
    let ctl = |args: &[&str]| ctl_ok(&servers.ejabberd, args);
    let check = |user, password| ctl(&["check_password", user, "localhost", password]);
    let register = |user, password| ctl(&["register", user, "localhost", password]);

    // isuser
    assert!(ctl(&["check_account", "alice", "localhost"]));
    assert!(!ctl(&["check_account", "nobody", "localhost"]));
    // auth, with ':' in the password
    assert!(check("alice", "colon:pass:word"));
    assert!(!check("alice", "colon:pass"));
    assert!(!check("nobody", "whatever1"));
    // setpass (isuser + setpass): the new password is qam's
    assert!(ctl(&[
        "change_password",
        "alice",
        "localhost",
        "new password 2"
    ]));
    assert!(qam_verifies(&servers.qamd, "alice", "new password 2"));
    assert!(check("alice", "new password 2"));
    // tryregister creates a qam account; a taken name is refused
    assert!(register("carol", "carol's password"));
    assert!(qam_verifies(&servers.qamd, "carol", "carol's password"));
    assert!(!register("carol", "another password"));
    assert!(qam_verifies(&servers.qamd, "carol", "carol's password"));
    // removeuser is refused and logged; the account stays
    let _ = servers.ejabberd.ctl(&["unregister", "carol", "localhost"]);
    assert!(servers.qamd.client().exists("carol").unwrap());
    assert!(ctl(&["check_account", "carol", "localhost"]));
    let log = servers.ejabberd.log_text();
    assert!(
        log.contains("removeuser on localhost refused") && !log.contains("carol@"),
        "{log}"
    );
    assert!(
        !log.contains("new password 2") && !log.contains("colon:pass"),
        "{log}"
    );
}

#[test]
fn sasl_plain_login_over_c2s() {
    let users = [
        ("alice", "alice's password"),
        ("mallory", "mallory's password"),
    ];
    let Some(servers) = servers("", &users) else {
        return;
    };
    servers.qamd.lock_user("mallory");
    let login =
        |user: &str, password: &str| plain_login(PORT, "localhost", user, password).unwrap();

    assert_eq!(login("alice", "alice's password"), Login::Success);
    assert!(
        matches!(login("alice", "wrong password"), Login::Failure(f) if f.contains("not-authorized"))
    );
    assert!(matches!(
        login("nobody", "alice's password"),
        Login::Failure(_)
    ));
    assert!(matches!(
        login("mallory", "mallory's password"),
        Login::Failure(_)
    ));
    // The same server still uses its own store for the other host.
    assert!(ctl_ok(
        &servers.ejabberd,
        &["register", "bob", "builtin.localhost", "bob's password"]
    ));
    assert_eq!(
        plain_login(PORT, "builtin.localhost", "bob", "bob's password").unwrap(),
        Login::Success
    );
    assert!(!servers.qamd.client().exists("bob").unwrap());
}

/// qam-extauth on pipes, as ejabberd (or mod_auth_external) runs it.
struct Extauth {
    /// The process, killed when the test drops it.
    child: Child,
    /// Where ejabberd's framed requests are written.
    stdin: ChildStdin,
    /// Where its framed answers are read.
    stdout: ChildStdout,
    /// Started with `--protocol generic`: answers are lines, not ejabberd's frames.
    generic: bool,
}

impl Extauth {
    /// qam-extauth from the build, run as root with `extra` options.
    fn start(qamd: &Daemon, extra: &[&str]) -> Extauth {
        Extauth::spawn(Command::new(bin("qam-extauth")), qamd, extra)
    }

    /// qam-extauth installed as README says, run by `nobody` (a peer without grants).
    /// Deviates from README on purpose: the socket is opened to all so `nobody` can connect.
    fn start_as_nobody(qamd: &Daemon) -> Extauth {
        fs::set_permissions(&qamd.socket, fs::Permissions::from_mode(0o666)).unwrap();
        let program = install_extauth(qamd.dir.path());
        let mut command = Identity::nobody().command(program);
        command.env(qam_client::TRUSTED_ENV, "root");
        Extauth::spawn(command, qamd, &[])
    }

    /// Starts `command` (a qam-extauth) against `qamd` for domain `localhost`, on pipes.
    fn spawn(mut command: Command, qamd: &Daemon, extra: &[&str]) -> Extauth {
        let mut child = command
            .arg("--socket")
            .arg(&qamd.socket)
            .args(["--domain", "localhost"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Extauth {
            stdin: child.stdin.take().unwrap(),
            stdout: child.stdout.take().unwrap(),
            generic: extra.contains(&"generic"),
            child,
        }
    }

    /// Sends one request and returns its answer.
    fn ask(&mut self, request: &str) -> bool {
        if self.generic {
            self.stdin
                .write_all(format!("{request}\n").as_bytes())
                .unwrap();
            let mut answer = [0u8; 2];
            self.stdout.read_exact(&mut answer).unwrap();
            match &answer {
                b"1\n" => true,
                b"0\n" => false,
                other => panic!("bad generic answer {other:?}"),
            }
        } else {
            let mut frame = (request.len() as u16).to_be_bytes().to_vec();
            frame.extend(request.as_bytes());
            self.stdin.write_all(&frame).unwrap();
            let mut answer = [0u8; 4];
            self.stdout.read_exact(&mut answer).unwrap();
            match answer {
                [0, 2, 0, 1] => true,
                [0, 2, 0, 0] => false,
                other => panic!("bad extauth answer {other:?}"),
            }
        }
    }

    /// Closes stdin and returns the exit code and what went to stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        drop(self.stdin);
        let status = self.child.wait().unwrap();
        let mut rest = Vec::new();
        self.stdout.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "stray output {rest:?}");
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (status.code(), stderr)
    }
}

#[test]
fn extauth_reconnects_after_a_qamd_restart_and_exits_zero_on_eof() {
    let mut qamd = Daemon::start();
    qamd.add_user("alice", "right password");
    for protocol in [vec![], vec!["--protocol", "generic"]] {
        let mut extauth = Extauth::start(&qamd, &protocol);
        assert!(extauth.ask("auth:alice:localhost:right password"));
        assert!(!extauth.ask("auth:alice:localhost:wrong password"));
        qamd.stop();
        assert!(
            !extauth.ask("auth:alice:localhost:right password"),
            "qamd is down: no"
        );
        qamd.spawn();
        assert!(extauth.ask("auth:alice:localhost:right password"));
        assert!(extauth.ask("isuser:alice:localhost"));
        assert!(!extauth.ask("isuser:alice:example.org"));
        let (code, stderr) = extauth.finish();
        assert_eq!(code, Some(0));
        if !protocol.is_empty() {
            assert!(stderr.is_empty(), "generic mode wrote to stderr: {stderr}");
        }
    }
}

#[test]
fn a_connection_qamd_closed_as_idle_is_replaced_at_once() {
    let qamd = Daemon::start_with("idle_timeout_seconds = 1\n");
    qamd.add_user("alice", "right password");
    let mut extauth = Extauth::start(&qamd, &[]);
    assert!(extauth.ask("auth:alice:localhost:right password"));
    qamd.wait_connections_closed();
    let start = Instant::now();
    assert!(extauth.ask("auth:alice:localhost:right password"));
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(extauth.finish().0, Some(0));
}

#[test]
fn a_stalled_qamd_gets_no_at_the_deadline_and_answers_stay_in_step() {
    let qamd = Daemon::start();
    qamd.add_user("alice", "right password");
    let mut extauth = Extauth::start(&qamd, &["--deadline-ms", "1000"]);
    assert!(extauth.ask("auth:alice:localhost:right password"));
    let pid = nix::unistd::Pid::from_raw(qamd.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let start = Instant::now();
    assert!(!extauth.ask("auth:alice:localhost:right password"));
    let took = start.elapsed();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(
        took < Duration::from_millis(1200),
        "answered after {took:?}"
    );
    // The late answer of the stalled request must not be taken for the next ones.
    assert!(!extauth.ask("auth:alice:localhost:wrong password"));
    assert!(extauth.ask("auth:alice:localhost:right password"));
    assert!(!extauth.ask("isuser:nobody:localhost"));
    assert_eq!(extauth.finish().0, Some(0));
}

#[test]
fn setpass_and_tryregister_need_grants_and_are_refused_without() {
    // A qamd whose config grants this (non-admin) peer nothing beyond the defaults.
    let qamd = Daemon::start_with("registration_open = true\n");
    qamd.add_user("alice", "right password");
    let mut extauth = Extauth::start_as_nobody(&qamd);
    assert!(extauth.ask("auth:alice:localhost:right password"));
    assert!(!extauth.ask("setpass:alice:localhost:stolen password"));
    assert!(!extauth.ask("tryregister:eve:localhost:eve's password"));
    assert!(!extauth.ask("removeuser:alice:localhost"));
    let (code, stderr) = extauth.finish();
    assert_eq!(code, Some(0));
    assert!(qam_verifies(&qamd, "alice", "right password"));
    assert!(!qamd.client().exists("eve").unwrap());
    assert!(
        stderr.contains("setpass on localhost refused") && !stderr.contains("alice@"),
        "{stderr}"
    );
    assert!(!stderr.contains("stolen"), "{stderr}");
}

/// Median time of one SASL PLAIN login (TCP connect to `<success/>`) through qam-extauth
/// and through ejabberd's internal store, measured in the same run with qamd's default
/// (production) argon2 parameters. Run:
/// `cargo test -p qam-tests --test xmpp_ejabberd -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: prints login medians"]
fn bench_login_latency() {
    let alice = ("alice", "alice's password");
    let Some(servers) = servers(PRODUCTION_HASH, &[alice]) else {
        return;
    };
    assert!(ctl_ok(
        &servers.ejabberd,
        &["register", alice.0, "builtin.localhost", alice.1]
    ));
    let runs = bench_runs();
    let hosts = ("localhost", "builtin.localhost");
    let (qam, builtin) = compare_logins(runs, PORT, hosts, alice.0, alice.1);
    println!(
        "ejabberd SASL PLAIN login, median of {runs}: qam-extauth {qam:?}, internal {builtin:?}"
    );
}

#[test]
fn generic_mode_on_a_pty_answers_without_echo_and_keeps_stderr_clean() {
    use nix::pty::openpty;
    use nix::sys::termios::{tcgetattr, LocalFlags};
    let qamd = Daemon::start();
    qamd.add_user("alice", "right password");
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let pty = openpty(None, None).unwrap();
    // The child must not inherit the master, or closing ours would not hang up its tty.
    fcntl(&pty.master, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
    fcntl(&pty.slave, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut child = Command::new(bin("qam-extauth"))
        .arg("--socket")
        .arg(&qamd.socket)
        .args(["--domain", "localhost", "--protocol", "generic"])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(pty.master);
    // The program puts the tty in raw mode first (a peer that writes earlier sees its query
    // echoed: the reason mod_auth_external is not the recommended route for Prosody).
    wait_until(within(10), "qam-extauth to turn the tty's echo off", || {
        !tcgetattr(&master)
            .unwrap()
            .local_flags
            .contains(LocalFlags::ECHO)
    });
    let mut answers = Vec::new();
    for query in [
        "auth:alice:localhost:right password\n",
        "auth:alice:localhost:wrong password\n",
        "garbage\n",
        "isuser:alice:localhost\n",
    ] {
        master.write_all(query.as_bytes()).unwrap();
        let mut answer = [0u8; 2];
        master.read_exact(&mut answer).unwrap();
        answers.push(String::from_utf8_lossy(&answer).into_owned());
    }
    assert_eq!(answers, ["1\n", "0\n", "0\n", "1\n"]);
    // EOF on a raw tty is only the end of the peer: hang up by closing the master.
    drop(master);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// removeuser as nobody (default grants only): false for an account, true once qamd is
/// deleting it (qam-hooks' `ejabberdctl unregister` gets through, a user's own does not).
#[test]
fn removeuser_is_true_only_while_qamd_deletes_the_account() {
    let hooks = hooks_dir();
    fs::write(hooks.path().join("delete.d/50-wait"), "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(
        hooks.path().join("delete.d/50-wait"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let qamd = Daemon::start_with(&qamd_hooks_table(hooks.path()));
    qamd.add_user("alice", "alice's password");
    qamd.add_user("bob", "bob's password");
    let mut extauth = Extauth::start_as_nobody(&qamd);
    assert!(!extauth.ask("removeuser:alice:localhost"));
    // No qam-hooks runs: the deletion stays pending.
    let info: DeleteInfo = qamd
        .client()
        .call(&Request::Delete {
            user: "alice".into(),
        })
        .unwrap();
    assert!(!info.erased);
    assert!(extauth.ask("removeuser:alice:localhost"));
    assert!(extauth.ask("removeuser3:alice:localhost:anything"));
    assert!(!extauth.ask("removeuser:bob:localhost"));
    assert!(!extauth.ask("removeuser:nobody:localhost"));
    let (code, stderr) = extauth.finish();
    assert_eq!(code, Some(0));
    assert!(
        stderr.contains("removeuser on localhost refused"),
        "{stderr}"
    );
    assert!(qamd.client().exists("bob").unwrap());
}

/// The shipped ejabberd hooks enabled as README says, run by qam-hooks: a lock kicks alice,
/// a deletion unregisters her through ejabberd (qam-extauth agrees because qamd marks the
/// account deleting), which purges her roster, then qamd erases her.
#[test]
fn shipped_hooks_kick_and_unregister_a_deleted_account_through_ejabberd() {
    let hooks = hooks_dir();
    enable_shipped(
        hooks.path(),
        &[
            "lock.d/51-ejabberd",
            "delete.d/51-ejabberd",
            "password.d/51-ejabberd",
        ],
    );
    let Some(servers) = servers(
        &qamd_hooks_table(hooks.path()),
        &[("alice", "alice's password"), ("bob", "bob's password")],
    ) else {
        return;
    };
    // QAM_EJABBERDCTL is split on spaces: a wrapper carries this node's options.
    let wrapper = hooks.path().join("ejabberdctl");
    let d = servers.ejabberd.dir.path().display().to_string();
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec /usr/sbin/ejabberdctl --config {d}/ejabberd.yml --ctl-config {d}/ejabberdctl.cfg --spool {d}/spool --logs {d}/logs --node {NODE} \"$@\"\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let wrapper = wrapper.display().to_string();
    let runner = QamHooks::start_with(
        &servers.qamd,
        hooks.path(),
        &[
            ("QAM_EJABBERD_HOST", "localhost"),
            ("QAM_EJABBERDCTL", &wrapper),
        ],
    );
    runner.wait_listening();

    let closed = lock_ends_a_session(&servers.qamd, PORT, "alice", "alice's password");
    assert!(closed.contains("kicked"), "{closed}");

    assert!(ctl_ok(
        &servers.ejabberd,
        &[
            "add_rosteritem",
            "alice",
            "localhost",
            "bob",
            "localhost",
            "Bob",
            "Friends",
            "both"
        ]
    ));
    let roster = |user: &str| {
        String::from_utf8_lossy(
            &servers
                .ejabberd
                .ctl(&["get_roster", user, "localhost"])
                .stdout,
        )
        .into_owned()
    };
    assert!(roster("alice").contains("bob@localhost"));

    let info: DeleteInfo = servers
        .qamd
        .client()
        .call(&Request::Delete {
            user: "alice".into(),
        })
        .unwrap();
    assert!(!info.erased, "the deletion waits for its hooks");
    wait_until(within(90), "alice to be erased", || {
        !servers.qamd.client().exists("alice").unwrap()
    });
    assert_eq!(roster("alice").trim(), "", "ejabberd kept alice's roster");
    assert!(servers.qamd.client().exists("bob").unwrap());
    let log = servers.ejabberd.log_text();
    assert!(!log.contains("removeuser on localhost refused"), "{log}");
    wait_until(within(30), "qam-hooks to log the erasure", || {
        runner.log_text().contains("erased")
    });
    let log = runner.log_text();
    assert!(
        log.contains("hook ok hook=lock.d/51-ejabberd")
            && log.contains("hook ok hook=delete.d/51-ejabberd"),
        "{log}"
    );
}
