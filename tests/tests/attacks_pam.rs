//! Attacks on unix logins through pam_qam with README's sshd stack, driven by pamtester; each
//! test passes only because the attack fails.
//!
//! The stack runs over Debian's real `common-auth` (pam_unix) and real unix accounts. Creates
//! system users: run under the peer-tests lock.

use qam_client::wire::NameInfo;
use qam_client::{Password, Request};
use qam_tests::pam::{pamtester_present, PamService, UnixUser};
use qam_tests::{shown, wait_until, within, Daemon};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

fn authenticated(output: &Output) -> bool {
    output.status.success() && shown(output).contains("successfully authenticated")
}

/// qamd with registration open to every peer, as README's Prosody example opens it.
const OPEN_REGISTRATION: &str =
    "registration_open = true\n[permissions]\ndefault = [\"verify\", \"exists\", \"lookup\", \"register\"]\n";

#[test]
fn open_registration_cannot_take_over_a_unix_account() {
    if !pamtester_present() {
        return;
    }
    let victim = UnixUser::create("qamvictim", "victim-unix-password");
    let daemon = Daemon::start_with(OPEN_REGISTRATION);
    // The attacker signs up with the victim's unix name (over XMPP, say) ...
    let registered = daemon.client().call::<NameInfo>(&Request::Register {
        user: victim.name.clone(),
        password: Password::from("attacker-password"),
        force: false,
        reuse_name: false,
    });
    // ... and logs in over SSH with that password.
    let service = PamService::readme_sshd("takeover", &daemon);
    let attacker = service.pamtester(&victim.name, "authenticate", "attacker-password\n");
    eprintln!(
        "FIGURE attacks 1 pam: registering a unix user's name {}; attacker's password over the sshd stack {}",
        if registered.is_ok() { "succeeded" } else { "refused" },
        if authenticated(&attacker) { "logged in" } else { "refused" }
    );
    assert!(registered.is_err(), "a stranger registered {}", victim.name);
    assert!(!authenticated(&attacker), "{}", shown(&attacker));
    let owner = service.pamtester(&victim.name, "authenticate", "victim-unix-password\n");
    assert!(authenticated(&owner), "{}", shown(&owner));
}

#[test]
fn other_spellings_of_a_qam_name_do_not_log_in() {
    if !pamtester_present() {
        return;
    }
    let daemon = Daemon::start();
    daemon.add_user("qamkate", "kate-qam-password");
    let service = PamService::readme_sshd("spellings", &daemon);
    assert!(authenticated(&service.pamtester(
        "qamkate",
        "authenticate",
        "kate-qam-password\n"
    )));
    let mut accepted = Vec::new();
    for spelling in ["QAMKATE", "Qamkate", "qam\u{212a}ate"] {
        let output = service.pamtester(spelling, "authenticate", "kate-qam-password\n");
        if authenticated(&output) {
            accepted.push(spelling);
        }
    }
    eprintln!(
        "FIGURE attacks 1 pam: {} of 3 other spellings of a qam name logged in",
        accepted.len()
    );
    assert!(accepted.is_empty(), "logged in as {accepted:?}");
}

#[test]
fn unix_only_users_are_never_locked_out_by_pam_qam() {
    if !pamtester_present() {
        return;
    }
    let unix = UnixUser::create("qamunixonly", "unix-only-password");
    let daemon = Daemon::start();
    let service = PamService::readme_sshd("unixonly", &daemon);
    let logins = 12;
    let accepted = (0..logins)
        .filter(|_| {
            authenticated(&service.pamtester(&unix.name, "authenticate", "unix-only-password\n"))
        })
        .count();
    eprintln!(
        "FIGURE attacks 2 pam: a unix-only user's right unix password logged in {accepted} of {logins} times"
    );
    assert_eq!(accepted, logins);
}

#[test]
fn a_stranger_guessing_from_another_host_cannot_keep_the_owner_out() {
    if !pamtester_present() {
        return;
    }
    let daemon = Daemon::start();
    daemon.add_user("qamowner", "owner-qam-password");
    let service = Arc::new(PamService::readme_sshd("lockout", &daemon));
    let stop = Arc::new(AtomicBool::new(false));
    let guesses = Arc::new(AtomicU64::new(0));
    let stranger = {
        let (service, stop, guesses) = (service.clone(), stop.clone(), guesses.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                service.pamtester_from(Some("203.0.113.66"), "qamowner", "authenticate", "guess\n");
                guesses.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // The stranger's own back-off has started before the owner tries.
    wait_until(within(60), "the stranger to be throttled", || {
        daemon
            .client()
            .call::<qam_client::wire::StatusInfo>(&Request::Status)
            .unwrap()
            .verify
            .throttled
            > 0
    });
    let logins = 20;
    let accepted = (0..logins)
        .filter(|_| {
            authenticated(&service.pamtester_from(
                Some("198.51.100.7"),
                "qamowner",
                "authenticate",
                "owner-qam-password\n",
            ))
        })
        .count();
    stop.store(true, Ordering::Relaxed);
    stranger.join().unwrap();
    eprintln!(
        "FIGURE attacks 2 pam: owner's right password from another host logged in {accepted} of {logins} ({} %) while a stranger sent {} guesses over the same sshd stack",
        accepted * 100 / logins,
        guesses.load(Ordering::Relaxed)
    );
    assert!(accepted * 100 >= logins * 95, "{accepted} of {logins}");
}
