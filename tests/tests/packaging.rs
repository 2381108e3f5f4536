//! The Debian package: the shipped default config is valid, and the .deb built by
//! packaging/build-deb installs with `dpkg -i` where Debian expects, works, and purges cleanly.

use qam_tests::{bin, require_peer, shared_tempdir, workspace_root};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const DPKG: &str = "/usr/bin/dpkg";
const ANALYZE: &str = "/usr/bin/systemd-analyze";
const MAN: &str = "/usr/bin/man";

/// Every file the package must install, where Debian expects it.
const PACKAGED: &[&str] = &[
    "/usr/sbin/qamd",
    "/usr/sbin/qamctl",
    "/usr/libexec/qam/qam-extauth",
    "/usr/libexec/qam/qam-checkpassword",
    "/usr/lib/x86_64-linux-gnu/security/pam_qam.so",
    "/usr/lib/prosody/modules/mod_auth_qam.lua",
    "/usr/lib/systemd/system/qamd.service",
    "/usr/lib/systemd/system/qamd.socket",
    "/usr/lib/systemd/system/qamd-saslauthd.socket",
    "/usr/lib/systemd/system/qam-userdb.socket",
    "/usr/lib/sysusers.d/qam.conf",
    "/etc/qam/qamd.toml",
    "/usr/share/man/man8/qamd.8.gz",
    "/usr/share/man/man8/qamctl.8.gz",
    "/usr/share/bash-completion/completions/qamctl",
    "/usr/share/bash-completion/completions/qamd",
    "/usr/share/zsh/vendor-completions/_qamctl",
    "/usr/share/fish/vendor_completions.d/qamctl.fish",
    "/usr/share/doc/qam/copyright",
    "/usr/sbin/qam-hooks",
    "/usr/lib/systemd/system/qam-hooks.service",
    "/etc/default/qam-hooks",
];

/// The shipped hooks, installed executable and disabled (README "Deleting and locking across
/// services").
const HOOKS: &[&str] = &[
    "/usr/share/qam/hooks/delete.d/50-prosody",
    "/usr/share/qam/hooks/delete.d/51-ejabberd",
    "/usr/share/qam/hooks/delete.d/52-dovecot",
    "/usr/share/qam/hooks/lock.d/50-prosody",
    "/usr/share/qam/hooks/lock.d/51-ejabberd",
    "/usr/share/qam/hooks/lock.d/52-dovecot",
    "/usr/share/qam/hooks/password.d/50-prosody",
    "/usr/share/qam/hooks/password.d/51-ejabberd",
    "/usr/share/qam/hooks/password.d/52-dovecot",
];

fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn check_config(path: &Path) -> Output {
    Command::new(bin("qamd"))
        .arg("--check-config")
        .arg("--config")
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn default_config_is_valid_with_and_without_its_comments() {
    let shipped = workspace_root().join("packaging/qamd.toml");
    let out = check_config(&shipped);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Uncommenting every `#key = value` line must still give a valid file: the commented
    // defaults name real keys (qamd refuses unknown ones) with acceptable values.
    let text = fs::read_to_string(&shipped).unwrap();
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest)
                if rest
                    .split_once(" = ")
                    .is_some_and(|(k, _)| !k.contains(' ')) =>
            {
                rest
            }
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(uncommented.contains("\nm_cost = 19456\n"), "{uncommented}");
    let dir = shared_tempdir();
    let path = dir.path().join("qamd.toml");
    fs::write(&path, uncommented).unwrap();
    let out = check_config(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Purges the package when the test ends, also on failure, and removes the accounts its
/// postinst made if they did not exist before (a purge keeps them, as Debian packages do), so
/// the tests that run after this one see the machine as it was.
struct Installed {
    accounts_existed: bool,
}

impl Installed {
    fn new() -> Installed {
        let existed = Command::new("getent").args(["passwd", "qam"]).output();
        Installed {
            accounts_existed: existed.is_ok_and(|out| out.status.success()),
        }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new(DPKG).args(["--purge", "qam"]).output();
        if !self.accounts_existed {
            let _ = Command::new("userdel").arg("qam").output();
            for group in ["qam", "qam-admin"] {
                let _ = Command::new("groupdel").arg(group).output();
            }
        }
    }
}

#[test]
fn deb_installs_where_debian_expects_and_purges() {
    if !require_peer(DPKG, "dpkg") || !require_peer(MAN, "man-db") {
        return;
    }
    // Reuse the test build's profile (debug under scripts/test-all): no release build here.
    let profile = match std::env::var("QAM_TEST_PROFILE").as_deref() {
        Ok("release") => "release",
        _ => "dev",
    };
    let build = run(Command::new(workspace_root().join("packaging/build-deb")).arg(profile));
    let deb = String::from_utf8_lossy(&build.stdout)
        .lines()
        .rev()
        .find(|line| line.ends_with(".deb"))
        .map(|line| line.trim().to_owned())
        .expect("build-deb printed no .deb path");

    let fields = run(Command::new("dpkg-deb").args(["--field", &deb]));
    let fields = String::from_utf8_lossy(&fields.stdout);
    assert!(fields.contains("Package: qam\n"), "{fields}");
    assert!(fields.contains("Section: admin\n"), "{fields}");

    let _installed = Installed::new();
    run(Command::new(DPKG).args(["-i", &deb]));
    for path in PACKAGED {
        assert!(Path::new(path).exists(), "{path} was not installed");
    }
    for hook in HOOKS {
        let mode = fs::metadata(hook)
            .unwrap_or_else(|err| panic!("{hook} was not installed: {err}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{hook} is not executable");
    }
    // The hook directories exist and are empty: qamd erases deleted accounts at once.
    for event in ["delete", "lock", "unlock", "password"] {
        let dir = format!("/etc/qam/hooks/{event}.d");
        let entries = fs::read_dir(&dir).unwrap_or_else(|err| panic!("{dir}: {err}"));
        assert_eq!(entries.count(), 0, "{dir} is not empty");
    }
    let listed = run(Command::new(DPKG).args(["-L", "qam"]));
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains("/usr/bin/"),
        "nothing belongs in /usr/bin"
    );

    // postinst made the accounts (with or without a running systemd).
    run(Command::new("getent").args(["passwd", "qam"]));
    run(Command::new("getent").args(["group", "qam-admin"]));

    let version = run(Command::new("/usr/sbin/qamd").arg("--version"));
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.starts_with("qamd "), "{version}");
    let help = run(Command::new("/usr/sbin/qamctl").arg("--help"));
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage"));
    // A width other than 80 keeps man-db from using (or saving) preformatted cat pages,
    // which could be stale: the package's files all carry the same fixed mtime.
    let page = run(Command::new(MAN)
        .args(["-P", "cat", "8", "qamctl"])
        .env("MANWIDTH", "100"));
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(page.contains("qamctl"), "{page}");
    let page = run(Command::new(MAN)
        .args(["-P", "cat", "8", "qamd"])
        .env("MANWIDTH", "100"));
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(
        page.contains("SIGHUP") && page.contains("--config"),
        "{page}"
    );
    run(Command::new("/usr/sbin/qamd").args(["--check-config", "--config", "/etc/qam/qamd.toml"]));

    if require_peer(ANALYZE, "systemd") {
        // The installed units as they are: ExecStart exists, Documentation= man pages exist.
        let out = run(Command::new(ANALYZE).args([
            "verify",
            "/usr/lib/systemd/system/qamd.service",
            "/usr/lib/systemd/system/qamd.socket",
            "/usr/lib/systemd/system/qamd-saslauthd.socket",
            "/usr/lib/systemd/system/qam-userdb.socket",
            "/usr/lib/systemd/system/qam-hooks.service",
        ]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.trim().is_empty(), "{stderr}");
    }

    // Nothing enabled: no unit of ours is wanted by any target.
    let wants = Command::new("sh")
        .args([
            "-c",
            "ls /etc/systemd/system/*.wants/ 2>/dev/null | grep 'qamd\\|qam-' || true",
        ])
        .output()
        .unwrap();
    assert!(wants.stdout.is_empty(), "install enabled a unit");

    run(Command::new(DPKG).args(["--purge", "qam"]));
    for path in PACKAGED.iter().chain(HOOKS).chain(&["/etc/qam/hooks"]) {
        assert!(
            !Path::new(path).exists(),
            "{path} is still there after purge"
        );
    }
}
