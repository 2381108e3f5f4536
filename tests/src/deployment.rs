//! The README's deployment steps as the tests perform them: the `qam` group, services joining
//! it, and running a program as a service user with the groups its init system would give it.

use std::ffi::OsStr;
use std::process::Command;

/// Runs a sysadmin command from the README; panics with its output when it fails.
pub fn sysadmin(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// README, installing from source: `sudo addgroup --system qam` (the package's sysusers file
/// makes it otherwise). Does nothing when the group exists.
pub fn ensure_qam_group() {
    if nix::unistd::Group::from_name("qam")
        .ok()
        .flatten()
        .is_none()
    {
        sysadmin("addgroup", &["--system", "qam"]);
    }
}

/// README: `sudo adduser SERVICE qam`, after making sure the group exists.
pub fn join_qam(user: &str) {
    ensure_qam_group();
    sysadmin("adduser", &[user, "qam"]);
}

/// `program` run as `user` with that user's primary and supplementary groups (what systemd's
/// `User=` and login give a process; `Command::uid` would drop the supplementary ones).
pub fn as_service_user(user: &str, program: impl AsRef<OsStr>) -> Command {
    let primary = nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("user {user} does not exist"))
        .gid;
    let mut command = Command::new("/usr/bin/setpriv");
    command
        .args(["--reuid", user, "--regid", &primary.to_string()])
        .args(["--init-groups", "--"])
        .arg(program);
    command
}
