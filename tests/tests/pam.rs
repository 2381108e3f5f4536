//! pam_qam.so driven by real PAM applications: Debian's `pamtester` (authenticate, account,
//! chauthtok, daemon down) and Dovecot's PAM passdb (`doveadm auth test`).
//!
//! Each test writes its own /etc/pam.d service (unique name) and removes it when done.

use qam_tests::dovecot::{self, Dovecot, DOVECOT};
use qam_tests::pam::{module_args, pamtester_present, PamService};
use qam_tests::{bin, require_peer, shown, Daemon};
use std::process::Output;
use std::time::{Duration, Instant};

/// Generous failure budget: these tests repeat wrong passwords on purpose.
const CONFIG: &str = "[throttle]\nfree_failures = 1000\n";

fn peers_present() -> bool {
    pamtester_present()
}

/// Asserts pamtester's outcome: success, or failure with libpam's text for the code.
fn expect(output: &Output, success: bool, text: &str) {
    let all = shown(output);
    assert_eq!(output.status.success(), success, "{all}");
    assert!(all.contains(text), "expected `{text}` in:\n{all}");
}

#[test]
fn authenticate_right_wrong_unknown_locked() {
    if !peers_present() {
        return;
    }
    let daemon = Daemon::start_with(CONFIG);
    daemon.add_user("alice", "correct horse");
    daemon.add_user("bob", "battery staple");
    daemon.lock_user("bob");
    let service = PamService::new("auth", &module_args(&daemon));

    expect(
        &service.pamtester("alice", "authenticate", "correct horse\n"),
        true,
        "successfully authenticated",
    );
    // PAM user names are case-sensitive: `Alice` is not the account `alice`.
    expect(
        &service.pamtester("Alice", "authenticate", "correct horse\n"),
        false,
        "User not known",
    );
    expect(
        &service.pamtester("alice", "authenticate", "wrong\n"),
        false,
        "Authentication failure",
    );
    expect(
        &service.pamtester("alice", "authenticate", "\n"),
        false,
        "Authentication failure",
    );
    expect(
        &service.pamtester("nobody-here", "authenticate", "x\n"),
        false,
        "User not known",
    );
    expect(
        &service.pamtester("bob", "authenticate", "battery staple\n"),
        false,
        "Authentication failure",
    );

    expect(
        &service.pamtester("alice", "acct_mgmt", ""),
        true,
        "account management done",
    );
    expect(
        &service.pamtester("bob", "acct_mgmt", ""),
        false,
        "User account has expired",
    );
    expect(
        &service.pamtester("nobody-here", "acct_mgmt", ""),
        false,
        "User not known",
    );
    expect(
        &service.pamtester("alice", "setcred", ""),
        true,
        "credential info has successfully been set",
    );
}

#[test]
fn chauthtok_changes_the_password_and_shows_refusals() {
    if !peers_present() {
        return;
    }
    let daemon = Daemon::start_with(CONFIG);
    daemon.add_user("carol", "first password");
    let service = PamService::new("chauthtok", &module_args(&daemon));

    // libpam asks: current password, new password, new password again.
    let changed = service.pamtester(
        "carol",
        "chauthtok",
        "first password\nsecond password\nsecond password\n",
    );
    expect(&changed, true, "authentication token altered");
    expect(
        &service.pamtester("carol", "authenticate", "second password\n"),
        true,
        "successfully authenticated",
    );
    expect(
        &service.pamtester("carol", "authenticate", "first password\n"),
        false,
        "Authentication failure",
    );

    let wrong_old = service.pamtester(
        "carol",
        "chauthtok",
        "not it\nthird password\nthird password\n",
    );
    expect(&wrong_old, false, "The current password is wrong.");

    // The daemon's policy message reaches the user through the conversation.
    let too_short = service.pamtester("carol", "chauthtok", "second password\nshort\nshort\n");
    expect(&too_short, false, "New password refused:");

    let unknown = service.pamtester("nobody-here", "chauthtok", "a\nb\nb\n");
    expect(&unknown, false, "User not known");
    expect(
        &service.pamtester("carol", "authenticate", "second password\n"),
        true,
        "successfully authenticated",
    );
}

#[test]
fn daemon_down_is_authinfo_unavailable() {
    if !peers_present() {
        return;
    }
    let mut daemon = Daemon::start_with(CONFIG);
    daemon.add_user("dave", "correct horse");
    let service = PamService::new("down", &format!("{} timeout=2", module_args(&daemon)));
    expect(
        &service.pamtester("dave", "authenticate", "correct horse\n"),
        true,
        "successfully authenticated",
    );
    daemon.stop();
    let started = Instant::now();
    let down = service.pamtester("dave", "authenticate", "correct horse\n");
    expect(
        &down,
        false,
        "Authentication service cannot retrieve authentication info",
    );
    expect(
        &service.pamtester("dave", "acct_mgmt", ""),
        false,
        "Authentication service cannot retrieve authentication info",
    );
    let change = service.pamtester(
        "dave",
        "chauthtok",
        "correct horse\nnew password 1\nnew password 1\n",
    );
    expect(&change, false, "unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a down daemon must fail fast"
    );
}

#[test]
fn use_first_pass_takes_the_password_an_earlier_module_read() {
    if !peers_present() {
        return;
    }
    let daemon = Daemon::start_with(CONFIG);
    daemon.add_user("erin", "correct horse");
    let module = bin("libpam_qam.so");
    // pam_unix prompts and stores the token (erin is no system user, so it fails: optional);
    // pam_qam must take that token instead of prompting again (stdin has only one line).
    let stacked = PamService::with_auth_lines(
        "firstpass",
        &format!(
            "auth optional pam_unix.so nodelay\nauth required {} {} use_first_pass\naccount required pam_permit.so\n",
            module.display(),
            module_args(&daemon)
        ),
    );
    expect(
        &stacked.pamtester("erin", "authenticate", "correct horse\n"),
        true,
        "successfully authenticated",
    );
    expect(
        &stacked.pamtester("erin", "authenticate", "wrong\ncorrect horse\n"),
        false,
        "Authentication failure",
    );
    // Alone, use_first_pass finds no earlier token and must fail without prompting.
    let alone = PamService::with_auth_lines(
        "firstpass-alone",
        &format!(
            "auth required {} {} use_first_pass\n",
            module.display(),
            module_args(&daemon)
        ),
    );
    let refused = alone.pamtester("erin", "authenticate", "correct horse\n");
    expect(&refused, false, "Authentication failure");
    assert!(
        !shown(&refused).contains("Password:"),
        "use_first_pass must not prompt: {}",
        shown(&refused)
    );
}

/// The README's sshd lines, with pam_permit standing in for `@include common-auth`/`-account`.
#[test]
fn readme_sshd_stack_falls_through_only_for_unknown_users_and_a_down_daemon() {
    if !peers_present() {
        return;
    }
    let mut daemon = Daemon::start_with(CONFIG);
    daemon.add_user("ivan", "correct horse");
    daemon.add_user("judy", "battery staple");
    daemon.lock_user("judy");
    let module = format!(
        "{} {}",
        bin("libpam_qam.so").display(),
        module_args(&daemon)
    );
    let service = PamService::with_auth_lines(
        "sshd",
        &format!(
            "auth     [success=done user_unknown=ignore authinfo_unavail=ignore default=die] {module}\n\
             auth     required pam_permit.so\n\
             account  [success=ok user_unknown=ignore authinfo_unavail=ignore default=bad] {module}\n\
             account  required pam_permit.so\n"
        ),
    );
    expect(
        &service.pamtester("ivan", "authenticate", "correct horse\n"),
        true,
        "successfully authenticated",
    );
    // A wrong qam password stops there: the permissive stack behind it is never reached.
    expect(
        &service.pamtester("ivan", "authenticate", "wrong\n"),
        false,
        "Authentication failure",
    );
    expect(
        &service.pamtester("judy", "acct_mgmt", ""),
        false,
        "User account has expired",
    );
    // Users qam does not know fall through to the rest of the stack.
    expect(
        &service.pamtester("root", "authenticate", "x\n"),
        true,
        "successfully authenticated",
    );
    expect(
        &service.pamtester("root", "acct_mgmt", ""),
        true,
        "account management done",
    );
    daemon.stop();
    expect(
        &service.pamtester("ivan", "authenticate", "x\n"),
        true,
        "successfully authenticated",
    );
}

#[test]
fn dovecot_logs_users_in_through_pam() {
    if !peers_present() || !require_peer(DOVECOT, "dovecot-core") {
        return;
    }
    let daemon = Daemon::start_with(CONFIG);
    daemon.add_user("frank", "correct horse");
    daemon.add_user("grace", "battery staple");
    daemon.lock_user("grace");
    // README's /etc/pam.d/dovecot and passdb, under a service name of the test's own.
    let service = PamService::with_auth_lines(
        "dovecot",
        &dovecot::pam_dovecot_file(&format!(
            "{} {}",
            bin("libpam_qam.so").display(),
            module_args(&daemon)
        )),
    );
    let dovecot = Dovecot::start(
        &format!("qam-pam-{}", std::process::id()),
        &dovecot::pam_passdb(&service.name),
    );

    dovecot.assert_accepts("frank", "correct horse");
    dovecot.assert_refuses("frank", "wrong");
    dovecot.assert_refuses("nobody-here", "x");
    dovecot.assert_refuses("grace", "battery staple");
    eprintln!(
        "TIMING door=pam peer=dovecot(doveadm auth test) median={:?}",
        dovecot.median_login_time("frank", "correct horse", 15)
    );
}

#[test]
fn pamtester_login_time() {
    if !peers_present() {
        return;
    }
    let daemon = Daemon::start_with(CONFIG);
    daemon.add_user("heidi", "correct horse");
    let service = PamService::new("timing", &format!("socket={}", daemon.socket.display()));
    let times: Vec<Duration> = (0..25)
        .map(|_| {
            let started = Instant::now();
            let output = service.pamtester("heidi", "authenticate", "correct horse\n");
            assert!(output.status.success(), "{}", shown(&output));
            started.elapsed()
        })
        .collect();
    eprintln!(
        "TIMING door=pam peer=pamtester median={:?}",
        qam_tests::xmpp::median(times)
    );
}
