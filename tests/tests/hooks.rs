//! qam-hooks against a real qamd: a deletion waits for its hooks, a failed hook is retried
//! alone, a qam-hooks killed mid-hook finishes after a restart, no hooks means at once.

use qam_client::wire::{Account, DeleteInfo, LookupInfo};
use qam_client::{Client, Password, Request};
use qam_tests::hooks::{hooks_dir, qamd_hooks_table, QamHooks};
use qam_tests::{shown, wait_until, within, Daemon};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Writes an executable sh hook at `<dir>/<id>`, through a child process: this test process
/// then holds no descriptor on it that a concurrent fork could keep (ETXTBSY at exec).
fn hook(dir: &Path, id: &str, body: &str) {
    let path = dir.join(id);
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg("printf '#!/bin/sh\\nset -eu\\n%s\\n' \"$1\" > \"$2\" && chmod 755 \"$2\"")
        .arg("sh")
        .arg(body)
        .arg(&path)
        .output()
        .expect("run sh");
    assert!(out.status.success(), "writing {id}: {}", shown(&out));
    let mode = fs::metadata(&path).expect("hook").permissions().mode();
    assert_eq!(mode & 0o111, 0o111);
}

/// qamd with `[hooks] dir` at `hooks`.
fn qamd_with_hooks(hooks: &Path) -> Daemon {
    Daemon::start_with(&qamd_hooks_table(hooks))
}

fn account(qamd: &Daemon, user: &str) -> Option<Account> {
    let info: LookupInfo = qamd
        .client()
        .call(&Request::Lookup { user: user.into() })
        .expect("lookup");
    info.account
}

fn delete(qamd: &Daemon, user: &str) -> bool {
    let info: DeleteInfo = qamd
        .client()
        .call(&Request::Delete { user: user.into() })
        .expect("delete");
    info.erased
}

fn verifies(qamd: &Daemon, user: &str, password: &str) -> bool {
    let mut client: Client = qamd.client();
    client
        .verify(user, &Password::from(password))
        .unwrap_or(false)
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_failed_hook_keeps_the_account_locked_until_a_retry_runs_it_alone() {
    let hooks = hooks_dir();
    let h = hooks.path();
    let ran = h.join("ran");
    hook(
        h,
        "lock.d/50-kick",
        &format!(
            "echo \"kick $1 $2 $QAM_EVENT $QAM_USER\" >> {}",
            ran.display()
        ),
    );
    hook(
        h,
        "delete.d/50-purge",
        &format!("echo \"purge $1 $2\" >> {}", ran.display()),
    );
    hook(
        h,
        "delete.d/60-mail",
        &format!(
            "echo \"mail $1 $2\" >> {ran}\nif [ ! -e {allow} ]; then echo 'doveadm: mailbox is busy' >&2; exit 1; fi",
            ran = ran.display(),
            allow = h.join("allow").display()
        ),
    );
    let qamd = qamd_with_hooks(h);
    qamd.add_user("alice", "alice's password");
    qamd.add_user("bob", "bob's password");
    let mut runner = QamHooks::start(&qamd, h);

    assert!(!delete(&qamd, "alice"), "erased before its hooks ran");
    let pending = account(&qamd, "alice").expect("alice is still there");
    assert!(pending.locked && pending.deleting, "{pending:?}");
    assert!(!verifies(&qamd, "alice", "alice's password"));

    wait_until(within(30), "the round to end with a failure", || {
        account(&qamd, "alice")
            .and_then(|account| account.deletion)
            .is_some_and(|deletion| !deletion.running)
    });
    let deletion = account(&qamd, "alice")
        .and_then(|account| account.deletion)
        .expect("deletion");
    assert_eq!(deletion.done, ["lock.d/50-kick", "delete.d/50-purge"]);
    let detail = deletion
        .failed
        .get("delete.d/60-mail")
        .expect("60-mail failed");
    assert_eq!(detail, "exit 1: doveadm: mailbox is busy");
    assert_eq!(
        lines(&ran),
        [
            "kick delete alice delete alice",
            "purge delete alice",
            "mail delete alice"
        ],
        "{}",
        runner.log_text()
    );
    assert!(verifies(&qamd, "bob", "bob's password"), "bob is untouched");

    fs::write(h.join("allow"), "").expect("allow");
    assert!(!delete(&qamd, "alice"), "the retry waits for its hooks too");
    wait_until(within(30), "alice to be erased", || {
        account(&qamd, "alice").is_none()
    });
    assert_eq!(
        lines(&ran)[3..],
        ["mail delete alice"],
        "only the failed hook ran again: {}",
        runner.log_text()
    );
    // qamd erases before it answers qam-hooks, which logs the answer.
    wait_until(within(30), "qam-hooks to log the erasure", || {
        runner.log_text().contains("erased")
    });
    runner.kill();
}

#[test]
fn qam_hooks_killed_while_a_hook_runs_finishes_the_deletion_after_a_restart() {
    let hooks = hooks_dir();
    let h = hooks.path();
    let starts = h.join("starts");
    let release = h.join("release");
    // The hook runs until the test releases it (it polls for the file itself).
    hook(
        h,
        "delete.d/50-slow",
        &format!(
            "echo \"$$\" >> {starts}\nwhile [ ! -e {release} ]; do sleep 0.05; done\necho released",
            starts = starts.display(),
            release = release.display()
        ),
    );
    hook(h, "delete.d/60-after", "echo after");
    let qamd = qamd_with_hooks(h);
    qamd.add_user("carol", "carol's password");
    let mut runner = QamHooks::start(&qamd, h);

    assert!(!delete(&qamd, "carol"));
    wait_until(within(30), "the slow hook to start", || {
        lines(&starts).len() == 1
    });
    runner.kill();
    let pending = account(&qamd, "carol").expect("carol is still there");
    assert!(pending.deleting && pending.locked, "{pending:?}");
    assert!(
        pending
            .deletion
            .is_some_and(|deletion| deletion.done.is_empty()),
        "nothing was reported done"
    );

    runner.spawn(&qamd, h);
    wait_until(
        within(30),
        "the restarted qam-hooks to run the hook again",
        || lines(&starts).len() == 2,
    );
    fs::write(&release, "").expect("release");
    wait_until(within(30), "carol to be erased", || {
        account(&qamd, "carol").is_none()
    });
    wait_until(within(30), "qam-hooks to log the last hook", || {
        runner.log_text().contains("delete.d/60-after")
    });
}

#[test]
fn without_hooks_a_deletion_is_immediate_and_qam_hooks_has_nothing_to_do() {
    let hooks = hooks_dir();
    let h = hooks.path();
    // Hooks for other events, and entries run-parts skips, do not make a deletion wait.
    hook(h, "password.d/50-kick", "exit 1");
    hook(h, "delete.d/50-old.dpkg-old", "exit 1");
    let qamd = qamd_with_hooks(h);
    qamd.add_user("dave", "dave's password");
    let runner = QamHooks::start(&qamd, h);
    assert!(delete(&qamd, "dave"), "erased at once");
    assert!(account(&qamd, "dave").is_none());
    assert!(!runner.log_text().contains("hook failed"));
}

#[test]
fn lock_unlock_and_password_run_their_hooks() {
    let hooks = hooks_dir();
    let h = hooks.path();
    let ran = h.join("ran");
    for event in ["lock", "unlock", "password"] {
        hook(
            h,
            &format!("{event}.d/50-record"),
            &format!("echo \"$1 $2\" >> {}", ran.display()),
        );
    }
    let qamd = qamd_with_hooks(h);
    qamd.add_user("erin", "erin's password");
    let runner = QamHooks::start(&qamd, h);
    // Events published before qam-hooks first asked are not replayed: wait until it listens.
    runner.wait_listening();
    qamd.lock_user("erin");
    wait_until(within(30), "the lock hook", || lines(&ran) == ["lock erin"]);
    let _: qam_client::wire::Done = qamd
        .client()
        .call(&Request::Unlock {
            user: "erin".into(),
        })
        .expect("unlock");
    let _: qam_client::wire::Done = qamd
        .client()
        .call(&Request::SetPassword {
            user: "erin".into(),
            password: Password::from("erin's new password"),
        })
        .expect("set_password");
    wait_until(within(30), "the unlock and password hooks", || {
        lines(&ran) == ["lock erin", "unlock erin", "password erin"]
    });
}
