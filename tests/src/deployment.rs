//! The README's deployment steps as the tests perform them: the `qam` group, services joining
//! it, done as a sysadmin would.

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

/// qam-hooks.service's highest `systemd-analyze security` exposure: it runs as root with the
/// capabilities its hooks need to switch users and remove mail homes, keeping what hardening
/// they allow (README, "Deleting and locking across services", says why not more).
pub const MAX_HOOKS_EXPOSURE: f64 = 3.5;
