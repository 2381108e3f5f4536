//! qam-checkpassword: the DJB interface exercised directly and by real Dovecot 2.3 running it
//! as user `dovecot`.
//!
//! Directly means fd 3, exit codes, the reply program and its environment; Dovecot runs it
//! through `doveadm auth test` and `doveadm auth lookup`.

use qam_tests::dovecot::{checkpassword_auth, Dovecot, DOVECOT};
use qam_tests::{bin, require_peer, shared_tempdir, shown, Daemon};
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use nix::libc;

/// Dovecot's own reply program.
const REPLY: &str = "/usr/lib/dovecot/checkpassword-reply";

/// The README's socket group (`qam`, the default); no throttling in the way of repeated
/// wrong passwords.
const CONFIG: &str = "[throttle]\nfree_failures = 1000\n";

/// Runs qam-checkpassword with `input` on fd 3 and `reply` as the program to exec.
fn checkpassword(
    daemon_socket: &Path,
    input: &[u8],
    env: &[(&str, &str)],
    reply: &[&str],
) -> Output {
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    let mut writer = fs::File::from(writer);
    writer.write_all(input).expect("write fd 3 input");
    drop(writer);
    let reader: OwnedFd = reader;
    let fd = reader.as_raw_fd();
    let mut command = Command::new(bin("qam-checkpassword"));
    command
        .arg("--socket")
        .arg(daemon_socket)
        .args(reply)
        .env_remove("USER")
        .env_remove("AUTHORIZED")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    // SAFETY: between fork and exec only dup2 and fcntl (async-signal-safe) run; fd 3 must
    // survive the exec even when the pipe already had that number.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().expect("run qam-checkpassword");
    drop(reader);
    output
}

/// A reply program that prints the environment the interface promises.
const SHOW_ENV: [&str; 3] = [
    "/bin/sh",
    "-c",
    "echo \"USER=$USER AUTHORIZED=$AUTHORIZED\"",
];

#[test]
fn the_interface_exit_codes_and_reply_program() {
    let daemon = Daemon::start_with(CONFIG);
    daemon.add_user("alice", "correct horse");
    let socket = &daemon.socket;

    let ok = checkpassword(socket, b"Alice\0correct horse\0\0", &[], &SHOW_ENV);
    assert_eq!(ok.status.code(), Some(0), "{}", shown(&ok));
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "USER=alice AUTHORIZED="
    );

    let wrong = checkpassword(socket, b"alice\0wrong\0\0", &[], &SHOW_ENV);
    assert_eq!(wrong.status.code(), Some(1), "{}", shown(&wrong));
    assert!(wrong.stdout.is_empty(), "the reply program must not run");
    let unknown = checkpassword(socket, b"nobody-here\0x\0\0", &[], &SHOW_ENV);
    assert_eq!(unknown.status.code(), Some(1), "{}", shown(&unknown));
    let empty = checkpassword(socket, b"alice\0\0\0", &[], &SHOW_ENV);
    assert_eq!(empty.status.code(), Some(1), "{}", shown(&empty));

    // Lookup mode: existence only, the program acknowledges with AUTHORIZED=2.
    let lookup = checkpassword(socket, b"alice\0\0\0", &[("AUTHORIZED", "1")], &SHOW_ENV);
    assert_eq!(lookup.status.code(), Some(0), "{}", shown(&lookup));
    assert_eq!(
        String::from_utf8_lossy(&lookup.stdout).trim(),
        "USER=alice AUTHORIZED=2"
    );
    let missing = checkpassword(
        socket,
        b"nobody-here\0\0\0",
        &[("AUTHORIZED", "1")],
        &SHOW_ENV,
    );
    assert_eq!(missing.status.code(), Some(3), "{}", shown(&missing));

    // Misuse: cut-short or over-long input, no reply program.
    let cut = checkpassword(socket, b"alice\0correct horse", &[], &SHOW_ENV);
    assert_eq!(cut.status.code(), Some(2), "{}", shown(&cut));
    let long = [b'a'; 600];
    let too_long = checkpassword(socket, &long, &[], &SHOW_ENV);
    assert_eq!(too_long.status.code(), Some(2), "{}", shown(&too_long));
    let no_program = checkpassword(socket, b"alice\0correct horse\0\0", &[], &[]);
    assert_eq!(no_program.status.code(), Some(2), "{}", shown(&no_program));
}

#[test]
fn daemon_down_is_a_temporary_failure() {
    let dir = shared_tempdir();
    let output = checkpassword(
        &dir.path().join("none.sock"),
        b"alice\0pw\0\0",
        &[],
        &SHOW_ENV,
    );
    assert_eq!(output.status.code(), Some(111), "{}", shown(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot connect to qamd"));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("pw"));
}

#[test]
fn dovecot_authenticates_and_looks_up_through_checkpassword() {
    if !require_peer(DOVECOT, "dovecot-core") || !require_peer(REPLY, "dovecot-core") {
        return;
    }
    // README: `sudo adduser dovecot qam`, and `extra_groups = qam` for Dovecot's auth process.
    qam_tests::deployment::join_qam("dovecot");
    let daemon = Daemon::start_with(CONFIG);
    daemon.add_user("alice", "correct horse");
    daemon.add_user("bob", "battery staple");
    daemon.lock_user("bob");
    // The program is copied where user `dovecot` can run it, wherever the checkout lives.
    let programs = shared_tempdir();
    let program = programs.path().join("qam-checkpassword");
    fs::copy(bin("qam-checkpassword"), &program).expect("copy qam-checkpassword");
    let dovecot = Dovecot::start(
        &format!("qam-checkpassword-{}", std::process::id()),
        &checkpassword_auth(&program, &daemon.socket),
    );

    dovecot.assert_accepts("alice", "correct horse");
    dovecot.assert_refuses("alice", "wrong");
    dovecot.assert_refuses("nobody-here", "x");
    dovecot.assert_refuses("bob", "battery staple");

    let found = dovecot.auth_lookup("alice");
    assert!(
        found.status.success(),
        "{}\n{}",
        shown(&found),
        dovecot.log_text()
    );
    assert!(
        String::from_utf8_lossy(&found.stdout).contains("alice"),
        "{}",
        shown(&found)
    );
    let missing = dovecot.auth_lookup("nobody-here");
    assert!(!missing.status.success(), "{}", shown(&missing));
    assert!(
        dovecot.log_text().contains("User unknown"),
        "{}",
        dovecot.log_text()
    );

    eprintln!(
        "TIMING door=checkpassword peer=dovecot(doveadm auth test) median={:?}",
        dovecot.median_login_time("alice", "correct horse", 15)
    );
}
