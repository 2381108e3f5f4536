//! Moving in: accounts made by real servers imported with `qamctl import --from`, then logged
//! in with their old passwords through real services, and upgraded to argon2id on that login.
//!
//! The accounts come from Prosody, ejabberd, Dovecot's `doveadm pw`, `useradd` + `chpasswd`
//! and `htpasswd -B`.

use qam_client::wire::ExportRecord;
use qam_tests::pam::{self, PamService};
use qam_tests::xmpp::{median, plain_login, Ejabberd, Login, Prosody, PRODUCTION_HASH};
use qam_tests::{bin, require_peer, shared_tempdir, Daemon};
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Instant;

/// c2s port of this file's Prosody, node and port of its ejabberd; one test at a time uses them.
const PROSODY_PORT: u16 = 15341;
const EJABBERD_PORT: u16 = 15342;
const EJABBERD_NODE: &str = "qammigrate@localhost";
static SERVERS: Mutex<()> = Mutex::new(());

/// Wrong passwords are tried on purpose: a failure budget no test reaches.
const GENEROUS: &str = "[throttle]\nfree_failures = 1000\n";

/// `qamctl --socket … ARGS`, its exit status and output.
fn qamctl(daemon: &Daemon, args: &[&str]) -> Output {
    Command::new(bin("qamctl"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(args)
        .env_remove("QAM_SOCKET")
        .stdin(Stdio::null())
        .output()
        .expect("run qamctl")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a setup command of a real peer; panics with its output when it fails.
fn peer_command(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("run {program}: {err}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        text(&output)
    );
    output
}

fn record(daemon: &Daemon, name: &str) -> ExportRecord {
    daemon
        .export()
        .into_iter()
        .find(|record| record.name == name)
        .unwrap_or_else(|| panic!("{name} is not in qam"))
}

/// The user logs in with their old password through `login`, the record is argon2id
/// afterwards with no trace of the old verifier; a wrong password fails before and after.
fn upgrades_on_first_login(
    daemon: &Daemon,
    name: &str,
    password: &str,
    mut login: impl FnMut(&str, &str) -> bool,
) {
    let before = record(daemon, name);
    assert!(
        !before.hash.starts_with("$argon2"),
        "{name} moved in with its legacy verifier"
    );
    assert!(before.origin.is_some(), "{name} names where it came from");
    assert!(!login(name, "not the password"), "{name}: wrong password");
    assert_eq!(
        record(daemon, name).hash,
        before.hash,
        "a failure changes nothing"
    );
    assert!(
        login(name, password),
        "{name} logs in with the old password"
    );
    let after = record(daemon, name);
    assert!(
        after.hash.starts_with("$argon2id$"),
        "{name}: {}",
        after.hash
    );
    assert_eq!(after.origin, None, "{name}: the legacy origin went with it");
    assert!(login(name, password), "{name} logs in again");
    assert!(!login(name, "not the password"), "{name}: wrong after");
    let data = raw_bytes(&daemon.data_dir);
    assert!(
        !contains(&data, before.hash.as_bytes()),
        "{name}'s legacy verifier is still on disk"
    );
}

fn raw_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            bytes.extend(raw_bytes(&path));
        } else if let Ok(content) = fs::read(&path) {
            bytes.extend(content);
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// pamtester through pam_qam, the way a shell or mail service logs users in.
fn pam_login(service: &PamService) -> impl FnMut(&str, &str) -> bool + '_ {
    move |user, password| {
        service
            .pamtester(user, "authenticate", &format!("{password}\n"))
            .status
            .success()
    }
}

/// A Prosody data directory with `users` registered by `prosodyctl register` under
/// `password_hash = HASH`.
fn prosody_accounts(hash: &str, users: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = shared_tempdir();
    let data = dir.path().join("data");
    fs::create_dir(&data).unwrap();
    peer_command("chown", &["prosody:prosody", &data.display().to_string()]);
    let config = dir.path().join("prosody.cfg.lua");
    fs::write(
        &config,
        format!(
            "data_path = {:?}\npidfile = {:?}\nauthentication = \"internal_hashed\"\n\
             password_hash = {hash:?}\nlog = {{ error = {:?} }}\nVirtualHost \"example.org\"\n",
            data.display().to_string(),
            dir.path().join("prosody.pid").display().to_string(),
            dir.path().join("prosody.err").display().to_string(),
        ),
    )
    .unwrap();
    for (user, password) in users {
        peer_command(
            "/usr/bin/prosodyctl",
            &[
                "--config",
                &config.display().to_string(),
                "register",
                user,
                "example.org",
                password,
            ],
        );
    }
    dir
}

#[test]
fn prosody_accounts_move_in_and_log_in_through_prosody() {
    if !require_peer("/usr/bin/prosodyctl", "prosody") {
        return;
    }
    let _serial = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    let daemon = Daemon::start_with(GENEROUS);
    for (hash, flag, user) in [("SHA-1", "sha-1", "alice"), ("SHA-256", "sha-256", "bob")] {
        let prosody_data = prosody_accounts(hash, &[(user, "old prosody password")]);
        let data = prosody_data.path().join("data").display().to_string();
        let import = [
            "import",
            &data,
            "--from",
            "prosody",
            "--host",
            "example.org",
        ];
        let args = [&import[..], &["--scram-hash", flag]].concat();
        let dry = qamctl(&daemon, &[&args[..], &["--dry-run"]].concat());
        assert!(dry.status.success(), "{}", text(&dry));
        assert!(
            text(&dry).contains(&format!("SCRAM-{hash}: 1")),
            "{}",
            text(&dry)
        );
        assert!(
            daemon.export().iter().all(|r| r.name != user),
            "a dry run writes nothing"
        );
        let done = qamctl(&daemon, &args);
        assert!(done.status.success(), "{}", text(&done));
    }
    let legacy = |daemon: &Daemon| {
        let status = qamctl(daemon, &["status", "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status");
        status["legacy"].clone()
    };
    assert_eq!(
        legacy(&daemon),
        serde_json::json!({"prosody SCRAM-SHA-1": 1, "prosody SCRAM-SHA-256": 1}),
        "status counts what is still on a legacy verifier"
    );
    let listed = qamctl(&daemon, &["user", "list", "--legacy", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("list");
    assert_eq!(listed[0]["legacy"], "prosody SCRAM-SHA-1", "{listed}");
    assert_eq!(listed[1]["legacy"], "prosody SCRAM-SHA-256", "{listed}");
    let shown = text(&qamctl(&daemon, &["user", "show", "alice"]));
    assert!(
        shown.contains("legacy (prosody SCRAM-SHA-1): upgraded at next login"),
        "{shown}"
    );
    let hosts = format!(
        "VirtualHost \"example.org\"\n  authentication = \"qam\"\n  qam_socket = \"{}\"\n",
        daemon.socket.display()
    );
    let prosody = Prosody::start(PROSODY_PORT, &hosts);
    for user in ["alice", "bob"] {
        upgrades_on_first_login(&daemon, user, "old prosody password", |user, password| {
            plain_login(prosody.port, "example.org", user, password).expect("c2s") == Login::Success
        });
    }
    assert_eq!(
        legacy(&daemon),
        serde_json::Value::Null,
        "nothing left on legacy verifiers"
    );
}

#[test]
fn ejabberd_export_moves_in_and_logs_in_through_pam() {
    if !require_peer("/usr/sbin/ejabberdctl", "ejabberd") || !pam::pamtester_present() {
        return;
    }
    let _serial = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    let hosts = "hosts:\n  - example.org\nauth_method: [internal]\nauth_password_format: scram\n\
                 auth_scram_hash: sha256\n";
    let ejabberd = Ejabberd::start(EJABBERD_PORT, EJABBERD_NODE, hosts);
    assert!(ejabberd
        .ctl(&["register", "carol", "example.org", "old ejabberd password"])
        .status
        .success());
    let export = shared_tempdir();
    peer_command("chown", &["ejabberd", &export.path().display().to_string()]);
    assert!(ejabberd
        .ctl(&["export_piefxis", &export.path().display().to_string()])
        .status
        .success());
    drop(ejabberd);
    // export_piefxis writes an index file that includes one file per host.
    let index = fs::read_dir(export.path())
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| !path.display().to_string().contains('_'))
        .expect("the index file");
    let daemon = Daemon::start_with(GENEROUS);
    let done = qamctl(
        &daemon,
        &["import", &index.display().to_string(), "--from", "ejabberd"],
    );
    assert!(done.status.success(), "{}", text(&done));
    assert!(text(&done).contains("SCRAM-SHA-256: 1"), "{}", text(&done));
    let service = PamService::new("migrate-ejabberd", &pam::module_args(&daemon));
    upgrades_on_first_login(
        &daemon,
        "carol",
        "old ejabberd password",
        pam_login(&service),
    );
}

/// `doveadm pw -s SCHEME -p PASSWORD`: the line Dovecot's passwd-file would hold.
fn doveadm_pw(scheme: &str, password: &str) -> String {
    let output = peer_command("/usr/bin/doveadm", &["pw", "-s", scheme, "-p", password]);
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn dovecot_passwd_file_moves_in_each_scheme() {
    if !require_peer("/usr/bin/doveadm", "dovecot-core") || !pam::pamtester_present() {
        return;
    }
    let dir = shared_tempdir();
    let file = dir.path().join("users");
    let users = [
        ("dan", "SHA512-CRYPT"),
        ("erin", "BLF-CRYPT"),
        ("fay", "ARGON2ID"),
        ("gus", "SHA256-CRYPT"),
    ];
    let lines: String = users
        .iter()
        .map(|(user, scheme)| {
            let verifier = doveadm_pw(scheme, &format!("{user}'s dovecot password"));
            format!("{user}:{verifier}:5000:5000::/var/mail/{user}::\n")
        })
        .collect();
    fs::write(&file, lines).unwrap();
    let daemon = Daemon::start_with(GENEROUS);
    let done = qamctl(
        &daemon,
        &["import", &file.display().to_string(), "--from", "dovecot"],
    );
    assert!(done.status.success(), "{}", text(&done));
    for scheme in [
        "SHA512-CRYPT: 1",
        "BLF-CRYPT: 1",
        "SHA256-CRYPT: 1",
        "argon2id: 1",
    ] {
        assert!(text(&done).contains(scheme), "{scheme}: {}", text(&done));
    }
    let service = PamService::new("migrate-dovecot", &pam::module_args(&daemon));
    for (user, _) in &users[..2] {
        upgrades_on_first_login(
            &daemon,
            user,
            &format!("{user}'s dovecot password"),
            pam_login(&service),
        );
    }
    // Dovecot's own argon2id moves in as it is and is rehashed to qam's parameters at login.
    let mut login = pam_login(&service);
    assert!(login("fay", "fay's dovecot password"));
    assert!(!login("fay", "not fay's password"));
    let sha256 = "gus's dovecot password";
    upgrades_on_first_login(&daemon, "gus", sha256, pam_login(&service));
}

/// Real unix accounts made by `useradd` + `chpasswd`, their shadow and passwd lines copied,
/// then removed from the system (as a host does once qam serves them).
fn shadow_entries(users: &[(&str, &str, Option<&str>)]) -> (tempfile::TempDir, String, String) {
    for (user, password, method) in users {
        let _ = Command::new("userdel").arg(user).output();
        peer_command("useradd", &["--no-create-home", user]);
        let mut chpasswd = Command::new("chpasswd");
        if let Some(method) = method {
            chpasswd.args(["-c", method]);
        }
        let mut child = chpasswd
            .stdin(Stdio::piped())
            .spawn()
            .expect("run chpasswd");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{user}:{password}\n").as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
    let pick = |path: &str| -> String {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|line| {
                users
                    .iter()
                    .any(|(user, ..)| line.starts_with(&format!("{user}:")))
            })
            .map(|line| format!("{line}\n"))
            .collect()
    };
    let (shadow, passwd) = (pick("/etc/shadow"), pick("/etc/passwd"));
    for (user, ..) in users {
        peer_command("userdel", &[user]);
    }
    let dir = shared_tempdir();
    fs::write(dir.path().join("shadow"), &shadow).unwrap();
    fs::write(dir.path().join("passwd"), &passwd).unwrap();
    (dir, shadow, passwd)
}

#[test]
fn shadow_yescrypt_and_sha512_entries_move_in() {
    if !pam::pamtester_present() {
        return;
    }
    let (dir, shadow, _) = shadow_entries(&[
        ("qammigy", "yescrypt unix password", None),
        ("qammigs", "sha512 unix password", Some("SHA512")),
    ]);
    assert!(
        shadow.contains(":$y$"),
        "Debian 12 defaults to yescrypt: {shadow}"
    );
    assert!(shadow.contains(":$6$"), "{shadow}");
    let daemon = Daemon::start_with(GENEROUS);
    let file = dir.path().join("shadow").display().to_string();
    let passwd = dir.path().join("passwd").display().to_string();
    let done = qamctl(
        &daemon,
        &["import", &file, "--from", "shadow", "--passwd", &passwd],
    );
    assert!(done.status.success(), "{}", text(&done));
    assert!(text(&done).contains("YESCRYPT: 1"), "{}", text(&done));
    let service = PamService::new("migrate-shadow", &pam::module_args(&daemon));
    upgrades_on_first_login(
        &daemon,
        "qammigy",
        "yescrypt unix password",
        pam_login(&service),
    );
    upgrades_on_first_login(
        &daemon,
        "qammigs",
        "sha512 unix password",
        pam_login(&service),
    );
}

#[test]
fn system_accounts_in_shadow_stay_out() {
    let daemon = Daemon::start_with(GENEROUS);
    let output = qamctl(
        &daemon,
        &["import", "/etc/shadow", "--from", "shadow", "--dry-run"],
    );
    let report = text(&output);
    assert!(
        !report.contains("(root)") || report.contains("outside the people range"),
        "{report}"
    );
    assert!(
        daemon.export().is_empty(),
        "a dry run writes nothing: {report}"
    );
}

#[test]
fn htpasswd_bcrypt_entries_move_in() {
    if !require_peer("/usr/bin/htpasswd", "apache2-utils") || !pam::pamtester_present() {
        return;
    }
    let dir = shared_tempdir();
    let file = dir.path().join("htpasswd").display().to_string();
    peer_command(
        "/usr/bin/htpasswd",
        &["-B", "-b", "-c", &file, "hal", "old web password"],
    );
    let daemon = Daemon::start_with(GENEROUS);
    let done = qamctl(&daemon, &["import", &file, "--from", "htpasswd"]);
    assert!(done.status.success(), "{}", text(&done));
    let service = PamService::new("migrate-htpasswd", &pam::module_args(&daemon));
    upgrades_on_first_login(&daemon, "hal", "old web password", pam_login(&service));
}

#[test]
fn conflicts_malformed_lines_and_crafted_costs_write_nothing() {
    let daemon = Daemon::start_with(GENEROUS);
    daemon.add_user("ivy", "a qam password already");
    let dir = shared_tempdir();
    let file = dir.path().join("users");
    fs::write(
        &file,
        "ivy:{PLAIN}another password\n\
         jon:{PLAIN}jon's plain password\n\
         broken line without a colon\n\
         kim:$6$rounds=999999999$salt$hash\n\
         root:{PLAIN}root's password\n\
         lea:$1$saltsalt$Kk6xBqvI2EBZXV3uMMdDd1\n",
    )
    .unwrap();
    let path = file.display().to_string();
    let refused = qamctl(&daemon, &["import", &path, "--from", "dovecot"]);
    let report = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{report}");
    for expected in [
        "line 1 (ivy): exists",
        "line 3",
        "line 4 (kim)",
        "line 5 (root)",
        "line 6 (lea)",
        "nothing written",
    ] {
        assert!(report.contains(expected), "{expected}: {report}");
    }
    let names: Vec<String> = daemon.export().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["ivy"], "nothing written: {report}");
    let skipped = qamctl(
        &daemon,
        &["import", &path, "--from", "dovecot", "--skip-bad"],
    );
    assert!(skipped.status.success(), "{}", text(&skipped));
    let names: Vec<String> = daemon.export().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["ivy", "jon"], "{}", text(&skipped));
    assert!(
        record(&daemon, "jon").hash.starts_with("$argon2id$"),
        "a plaintext password is hashed at import"
    );
    let weak = qamctl(
        &daemon,
        &[
            "import",
            &path,
            "--from",
            "dovecot",
            "--skip-bad",
            "--allow-weak",
        ],
    );
    assert!(text(&weak).contains("MD5-CRYPT: 1"), "{}", text(&weak));
}

/// Figures: denied verifies of legacy accounts, argon2 accounts and unknown names at the
/// production cost, and a first (upgrading) login against a normal one, same run.
#[test]
fn denied_legacy_verifies_cost_what_argon2_denials_cost() {
    let daemon = Daemon::start_with(&format!("{GENEROUS}{PRODUCTION_HASH}"));
    let dir = shared_tempdir();
    let file = dir.path().join("users");
    let count = 15;
    let lines: String = (0..count)
        .map(|n| {
            format!(
                "old{n}:{}\n",
                sha512_crypt(&format!("moved-in secret {n} of qam"))
            )
        })
        .collect();
    fs::write(&file, lines).unwrap();
    let done = qamctl(
        &daemon,
        &["import", &file.display().to_string(), "--from", "dovecot"],
    );
    assert!(done.status.success(), "{}", text(&done));
    for n in 0..count {
        daemon.add_user(&format!("new{n}"), &format!("moved-in secret {n} of qam"));
    }
    let mut client = daemon.client();
    let mut time = |user: &str, password: &str| {
        let start = Instant::now();
        let _ = client.verify(user, &password.into());
        start.elapsed()
    };
    let mut legacy = Vec::new();
    let mut argon2 = Vec::new();
    let mut unknown = Vec::new();
    for round in 0..3 {
        for n in 0..count {
            legacy.push(time(&format!("old{n}"), "wrong"));
            argon2.push(time(&format!("new{n}"), "wrong"));
            unknown.push(time(&format!("nobody{round}x{n}"), "wrong"));
        }
    }
    let mut upgrading = Vec::new();
    let mut normal = Vec::new();
    for n in 0..count {
        upgrading.push(time(
            &format!("old{n}"),
            &format!("moved-in secret {n} of qam"),
        ));
        normal.push(time(
            &format!("new{n}"),
            &format!("moved-in secret {n} of qam"),
        ));
    }
    let (legacy, argon2, unknown) = (median(legacy), median(argon2), median(unknown));
    println!(
        "FIGURE migrate: denied verify median legacy {legacy:?}, argon2 {argon2:?}, unknown {unknown:?}; \
         first (upgrading) login {:?}, normal login {:?}",
        median(upgrading),
        median(normal)
    );
    // A denied legacy verify pays the current argon2 cost on top of its own: never cheaper.
    assert!(
        legacy >= argon2.mul_f64(0.8),
        "legacy {legacy:?} vs argon2 {argon2:?}"
    );
    assert!(
        unknown >= argon2.mul_f64(0.8),
        "unknown {unknown:?} vs argon2 {argon2:?}"
    );
}

/// A SHA512-CRYPT string of `password` from the system's libcrypt (via `doveadm pw` when
/// Dovecot is there, else `openssl passwd -6`).
fn sha512_crypt(password: &str) -> String {
    let output = Command::new("openssl")
        .args(["passwd", "-6", password])
        .output()
        .expect("run openssl passwd");
    format!(
        "{{SHA512-CRYPT}}{}",
        String::from_utf8_lossy(&output.stdout).trim()
    )
}
