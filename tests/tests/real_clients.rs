//! Logins with the clients people use, through the README's deployment: OpenSSH, IMAP and SMTP
//! AUTH, each path timed beside the same server on its own password store.
//!
//! `ssh` driven by `sshpass` goes into a real sshd with README's PAM lines, python's imaplib
//! into Dovecot on both passdbs, and python's smtplib (AUTH PLAIN and LOGIN) into Postfix
//! through the saslauthd door.

use qam_tests::deployment::{join_qam, sysadmin};
use qam_tests::dovecot::{self, checkpassword_auth, pam_dovecot_file, pam_passdb, Dovecot};
use qam_tests::hooks::{enable_shipped, hooks_dir, qamd_hooks_table, QamHooks};
use qam_tests::readme;
use qam_tests::sshd::{self, Sshd};
use qam_tests::xmpp::{median, PRODUCTION_HASH};
use qam_tests::{bin, poll_until, require_peer, shared_tempdir, shown, within, Daemon};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

const IMAP: &str = "/usr/lib/dovecot/imap";
const POSTFIX: &str = "/usr/sbin/postfix";
const SASLPASSWD2: &str = "/usr/sbin/saslpasswd2";
const SASLDB: &str = "/usr/lib/x86_64-linux-gnu/sasl2/libsasldb.so";
const PYTHON: &str = "/usr/bin/python3";
/// Logins timed on each side of a comparison.
const TIMED_LOGINS: usize = 15;
/// One test at a time: they add system users and groups, and time logins.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// qamd at its default cost (what users feel), no throttling in the way of the repetitions.
fn qamd() -> Daemon {
    Daemon::start_with(&format!(
        "{PRODUCTION_HASH}[throttle]\nfree_failures = 1000\n"
    ))
}

/// Medians of `qam` and `own` logins, alternated so both see the same machine load.
fn compare(
    mut qam: impl FnMut() -> Duration,
    mut own: impl FnMut() -> Duration,
) -> (Duration, Duration) {
    let (mut through_qam, mut through_own) = (Vec::new(), Vec::new());
    for _ in 0..TIMED_LOGINS {
        through_qam.push(qam());
        through_own.push(own());
    }
    (median(through_qam), median(through_own))
}

fn report(path: &str, (qam, own): (Duration, Duration), own_store: &str) {
    eprintln!("TIMING client={path} through_qam_median={qam:?} {own_store}_median={own:?}");
}

/// A unix account made as README says, removed (with its home) on drop.
struct UnixUser {
    name: String,
}

impl UnixUser {
    /// README: `sudo adduser --disabled-password --gecos '' NAME`.
    fn add(name: &str) -> UnixUser {
        let _ = Command::new("deluser")
            .args(["--remove-home", name])
            .output();
        sysadmin("adduser", &["--disabled-password", "--gecos", "", name]);
        UnixUser {
            name: name.to_owned(),
        }
    }

    /// Gives the account a password in /etc/shadow (`chpasswd`).
    fn set_shadow_password(&self, password: &str) {
        let mut child = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("run chpasswd");
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{}:{password}", self.name).expect("write chpasswd input");
        drop(stdin);
        assert!(child.wait().expect("wait chpasswd").success());
    }
}

impl Drop for UnixUser {
    fn drop(&mut self) {
        let _ = Command::new("deluser")
            .args(["--remove-home", &self.name])
            .output();
    }
}

/// A file the test puts outside its temp dir (/etc/pam.d), removed on drop.
struct SystemFile(PathBuf);

impl SystemFile {
    fn write(path: PathBuf, text: &str) -> SystemFile {
        fs::write(&path, text).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
        SystemFile(path)
    }
}

impl Drop for SystemFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn wait_for_port(port: u16, what: &str, log: impl Fn() -> String) {
    let listening = poll_until(within(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(listening, "{what} not listening on {port}:\n{}", log());
}

/// The pam_qam module with the test qamd's socket, as the README's PAM lines name it.
fn pam_module(daemon: &Daemon) -> String {
    format!(
        "{} socket={}",
        bin("libpam_qam.so").display(),
        daemon.socket.display()
    )
}

// ---------------------------------------------------------------- sshd

#[test]
fn ssh_password_login_through_the_readme_pam_lines() {
    if !sshd::peers_present() {
        return;
    }
    let _serial = serial();
    let daemon = qamd();
    let suffix = std::process::id() % 100_000;
    let (qam_name, shadow_name) = (format!("qamssh{suffix}"), format!("qamshadow{suffix}"));
    // The qam account first: the unix account of the same name comes after, as README says.
    daemon.add_user(&qam_name, "qam password 1");
    let qam_user = UnixUser::add(&qam_name);
    let shadow_user = UnixUser::add(&shadow_name);
    shadow_user.set_shadow_password("shadow password 1");
    let sshd = Sshd::start(
        "readme",
        &readme::block_after("At the top of").replace("pam_qam.so", &pam_module(&daemon)),
    );

    assert!(
        sshd.login(&qam_user.name, "qam password 1"),
        "{}\n{}",
        sshd.log_text(),
        daemon.log_text()
    );
    assert!(!sshd.login(&qam_user.name, "not the qam password"));
    // The unix password of a qam user is never a way in: a wrong qam password stops there.
    qam_user.set_shadow_password("unix password 1");
    assert!(!sshd.login(&qam_user.name, "unix password 1"));
    // Users qam does not know fall through to Debian's stack and /etc/shadow.
    assert!(sshd.login(&shadow_user.name, "shadow password 1"));
    assert!(!sshd.login(&shadow_user.name, "not the qam password"));
    daemon.lock_user(&qam_name);
    assert!(!sshd.login(&qam_user.name, "qam password 1"));
    daemon
        .client()
        .call::<qam_client::wire::Done>(&qam_client::Request::Unlock {
            user: qam_name.clone(),
        })
        .expect("unlock");

    // The same sshd on Debian's stack alone, for the server's own store; and what README's
    // stack costs a unix-only user (qam's answer for an unknown name comes first).
    let stock = Sshd::start("stock", "");
    let times = compare(
        || sshd.timed_login(&qam_user.name, "qam password 1"),
        || stock.timed_login(&shadow_user.name, "shadow password 1"),
    );
    report("ssh(sshd, PAM)", times, "shadow");
    let times = compare(
        || sshd.timed_login(&shadow_user.name, "shadow password 1"),
        || stock.timed_login(&shadow_user.name, "shadow password 1"),
    );
    report(
        "ssh(sshd, unix-only user on README's stack)",
        times,
        "shadow",
    );
}

// ---------------------------------------------------------------- IMAP

/// Runs the python mail client (`imap`, `smtp-plain` or `smtp-login`) `count` times; returns
/// each login's outcome and time.
fn mail_logins(
    protocol: &str,
    port: u16,
    user: &str,
    password: &str,
    count: usize,
) -> Vec<(bool, Duration)> {
    let script = qam_tests::workspace_root().join("tests/src/mail_login.py");
    let mut child = Command::new(PYTHON)
        .arg(script)
        .args([protocol, &port.to_string(), user, &count.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mail_login.py");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{password}").expect("password to the client");
    drop(stdin);
    let output = child.wait_with_output().expect("wait for mail_login.py");
    assert!(output.status.success(), "{protocol}: {}", shown(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let (outcome, ms) = line.split_once(' ').expect("`ok MS` or `denied MS`");
            let ms: f64 = ms.parse().expect("milliseconds");
            (outcome == "ok", Duration::from_secs_f64(ms / 1000.0))
        })
        .collect()
}

fn mail_login(protocol: &str, port: u16, user: &str, password: &str) -> bool {
    mail_logins(protocol, port, user, password, 1)[0].0
}

fn timed_mail_login(protocol: &str, port: u16, user: &str, password: &str) -> Duration {
    let (accepted, took) = mail_logins(protocol, port, user, password, 1)[0];
    assert!(
        accepted,
        "{protocol} login of {user} on port {port} refused"
    );
    took
}

/// Dovecot on a passwd-file of its own (the same server without qam), user `vera`; the dir
/// holding the file lives as long as the returned one.
fn dovecot_on_passwd_file(port: u16, password: &str) -> (Dovecot, tempfile::TempDir) {
    let scheme = Command::new("/usr/bin/doveadm")
        .args(["pw", "-p", password])
        .output()
        .expect("doveadm pw");
    assert!(scheme.status.success(), "{}", shown(&scheme));
    let hash = String::from_utf8_lossy(&scheme.stdout).trim().to_owned();
    let files = shared_tempdir();
    let users = files.path().join("users");
    fs::write(&users, format!("vera:{hash}\n")).expect("write passwd-file");
    let dovecot = Dovecot::start_imap(
        &format!("qam-imap-own-{}", std::process::id()),
        port,
        &format!(
            "passdb {{\n  driver = passwd-file\n  args = {}\n}}\n",
            users.display()
        ),
    );
    (dovecot, files)
}

fn imap_present() -> bool {
    require_peer(dovecot::DOVECOT, "dovecot-core")
        && require_peer(IMAP, "dovecot-imapd")
        && require_peer(PYTHON, "python3")
}

/// Right, wrong, unknown and locked IMAP logins on `port`, users alice and bob (locked).
fn assert_imap_logins(port: u16, dovecot: &Dovecot, daemon: &Daemon) {
    assert!(
        mail_login("imap", port, "alice", "alice password 1"),
        "{}\n{}",
        dovecot.log_text(),
        daemon.log_text()
    );
    assert!(mail_login("imap", port, "Alice", "alice password 1"));
    assert!(!mail_login("imap", port, "alice", "not the qam password"));
    assert!(!mail_login(
        "imap",
        port,
        "nobody-here",
        "not the qam password"
    ));
    assert!(!mail_login("imap", port, "bob", "bob password 1"));
}

#[test]
fn imap_login_through_checkpassword() {
    if !imap_present() || !require_peer("/usr/lib/dovecot/checkpassword-reply", "dovecot-core") {
        return;
    }
    let _serial = serial();
    join_qam("dovecot");
    let daemon = qamd();
    daemon.add_user("alice", "alice password 1");
    daemon.add_user("bob", "bob password 1");
    daemon.lock_user("bob");
    let programs = shared_tempdir();
    let program = programs.path().join("qam-checkpassword");
    fs::copy(bin("qam-checkpassword"), &program).expect("copy qam-checkpassword");
    let dovecot = Dovecot::start_imap(
        &format!("qam-imap-cp-{}", std::process::id()),
        15643,
        &checkpassword_auth(&program, &daemon.socket),
    );
    assert_imap_logins(15643, &dovecot, &daemon);

    let _own = dovecot_on_passwd_file(15644, "vera password 1");
    let times = compare(
        || timed_mail_login("imap", 15643, "alice", "alice password 1"),
        || timed_mail_login("imap", 15644, "vera", "vera password 1"),
    );
    report("imap(dovecot, checkpassword)", times, "passwd_file");
}

#[test]
fn imap_login_through_pam() {
    if !imap_present() {
        return;
    }
    let _serial = serial();
    let daemon = qamd();
    daemon.add_user("alice", "alice password 1");
    daemon.add_user("bob", "bob password 1");
    daemon.lock_user("bob");
    // README's /etc/pam.d/dovecot, under a name of its own so a host's Dovecot is untouched.
    let service = format!("qam-test-dovecot-{}", std::process::id());
    let _pam = SystemFile::write(
        Path::new("/etc/pam.d").join(&service),
        &pam_dovecot_file(&pam_module(&daemon)),
    );
    let dovecot = Dovecot::start_imap(
        &format!("qam-imap-pam-{}", std::process::id()),
        15645,
        &pam_passdb(&service),
    );
    assert_imap_logins(15645, &dovecot, &daemon);

    let _own = dovecot_on_passwd_file(15646, "vera password 1");
    let times = compare(
        || timed_mail_login("imap", 15645, "alice", "alice password 1"),
        || timed_mail_login("imap", 15646, "vera", "vera password 1"),
    );
    report("imap(dovecot, PAM)", times, "passwd_file");
}

// ---------------------------------------------------------------- SMTP AUTH

/// A real Postfix (`postfix -c DIR start`) with its own config dir, queue and log, and two
/// submission listeners: `door_port` on the README's SASL setup, `sasldb_port` on sasldb2.
struct Postfix {
    dir: tempfile::TempDir,
}

impl Postfix {
    fn start(door_port: u16, sasldb_port: u16, door: &Path, sasldb: &Path) -> Postfix {
        let dir = shared_tempdir();
        let d = dir.path().display().to_string();
        sysadmin(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-keyout",
                &format!("{d}/key.pem"),
                "-out",
                &format!("{d}/cert.pem"),
            ],
        );
        // README's `postconf -e` settings plus what an instance of its own needs: paths, a
        // loopback listener, the TLS README asks for, and a log file instead of syslog.
        let readme_settings: String = readme::block_after("It holds the three lines above, then:")
            .split('\'')
            .skip(1)
            .step_by(2)
            .map(|setting| format!("{setting}\n"))
            .collect();
        assert!(
            readme_settings.contains("smtpd_tls_auth_only = yes"),
            "{readme_settings}"
        );
        fs::write(
            dir.path().join("main.cf"),
            format!(
                "compatibility_level = 3.6\nqueue_directory = {d}/queue\ndata_directory = {d}/data\n\
                 mail_owner = postfix\nsetgid_group = postdrop\ninet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\nmyhostname = localhost\nmydestination =\n\
                 maillog_file = {d}/postfix.log\nmaillog_file_prefixes = {d}\n\
                 smtpd_tls_cert_file = {d}/cert.pem\nsmtpd_tls_key_file = {d}/key.pem\n\
                 smtpd_tls_security_level = may\n{readme_settings}"
            ),
        )
        .expect("write main.cf");
        // The chroot column is `n`, as README says for reaching /run/qam.
        fs::write(
            dir.path().join("master.cf"),
            format!(
                "127.0.0.1:{door_port} inet n - n - - smtpd\n\
                 127.0.0.1:{sasldb_port} inet n - n - - smtpd -o smtpd_sasl_path=sasldb\n\
                 postlog unix-dgram n - n - 1 postlogd\nanvil unix - - n - 1 anvil\n\
                 proxymap unix - - n - - proxymap\ntlsmgr unix - - n 1000? 1 tlsmgr\n\
                 cleanup unix n - n - 0 cleanup\n"
            ),
        )
        .expect("write master.cf");
        // README: `sasl/smtpd.conf` in Postfix's config dir holds the three libsasl2 lines.
        let sasl = dir.path().join("sasl");
        fs::create_dir_all(&sasl).expect("sasl dir");
        fs::write(
            sasl.join("smtpd.conf"),
            readme::block_after("Every libsasl2 client is configured the same way")
                .replace("/run/qam/saslauthd/mux", &door.display().to_string()),
        )
        .expect("write smtpd.conf");
        fs::write(
            sasl.join("sasldb.conf"),
            format!(
                "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {}\nmech_list: PLAIN LOGIN\n",
                sasldb.display()
            ),
        )
        .expect("write sasldb.conf");
        fs::create_dir_all(dir.path().join("queue")).expect("queue dir");
        fs::create_dir_all(dir.path().join("data")).expect("data dir");
        sysadmin("chown", &["postfix", &format!("{d}/data")]);
        let postfix = Postfix { dir };
        let started = postfix.postfix("start");
        assert!(
            started.status.success(),
            "{}\n{}",
            shown(&started),
            postfix.log_text()
        );
        for port in [door_port, sasldb_port] {
            wait_for_port(port, "postfix", || postfix.log_text());
        }
        postfix
    }

    fn postfix(&self, command: &str) -> Output {
        Command::new(POSTFIX)
            .arg("-c")
            .arg(self.dir.path())
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .expect("run postfix")
    }

    fn log_text(&self) -> String {
        fs::read_to_string(self.dir.path().join("postfix.log")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.postfix("stop");
        let pid_file = self.dir.path().join("queue/pid/master.pid");
        poll_until(within(10), || !pid_file.exists());
        qam_tests::keep_log(self.dir.path(), &self.dir.path().join("postfix.log"));
    }
}

#[test]
fn smtp_auth_plain_and_login_through_the_saslauthd_door() {
    if !require_peer(POSTFIX, "postfix")
        || !require_peer(SASLPASSWD2, "sasl2-bin")
        || !require_peer(SASLDB, "libsasl2-modules-db")
        || !require_peer(PYTHON, "python3")
    {
        return;
    }
    let _serial = serial();
    join_qam("postfix");
    let run = shared_tempdir();
    // README's door path below directories qamd has to create (as on a boot without the units).
    let door = run.path().join("run/qam/saslauthd/mux");
    let daemon = Daemon::start_with(&format!(
        "saslauthd_socket = {:?}\n{PRODUCTION_HASH}[throttle]\nfree_failures = 1000\n",
        door.display().to_string()
    ));
    daemon.add_user("alice", "alice password 1");
    daemon.add_user("bob", "bob password 1");
    daemon.lock_user("bob");
    // Postfix's own store: sasldb2 readable by smtpd (user postfix), user vera.
    let sasldb = run.path().join("sasldb2");
    let mut saslpasswd = Command::new(SASLPASSWD2)
        .args(["-p", "-c", "-f"])
        .arg(&sasldb)
        .args(["-u", "localhost", "vera"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run saslpasswd2");
    saslpasswd
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"vera password 1")
        .expect("password to saslpasswd2");
    assert!(saslpasswd.wait().expect("saslpasswd2").success());
    sysadmin("chown", &["postfix", &sasldb.display().to_string()]);
    let postfix = Postfix::start(15625, 15626, &door, &sasldb);

    for protocol in ["smtp-plain", "smtp-login"] {
        assert!(
            mail_login(protocol, 15625, "alice", "alice password 1"),
            "{protocol}:\n{}\n{}",
            postfix.log_text(),
            daemon.log_text()
        );
        assert!(!mail_login(
            protocol,
            15625,
            "alice",
            "not the qam password"
        ));
        assert!(!mail_login(
            protocol,
            15625,
            "nobody-here",
            "not the qam password"
        ));
        assert!(!mail_login(protocol, 15625, "bob", "bob password 1"));
        assert!(
            mail_login(protocol, 15626, "vera", "vera password 1"),
            "{protocol} on sasldb2:\n{}",
            postfix.log_text()
        );
    }

    for protocol in ["smtp-plain", "smtp-login"] {
        let times = compare(
            || timed_mail_login(protocol, 15625, "alice", "alice password 1"),
            || timed_mail_login(protocol, 15626, "vera", "vera password 1"),
        );
        report(
            &format!("{protocol}(postfix, saslauthd door)"),
            times,
            "sasldb2",
        );
    }
}

/// An IMAP session kept open by python3's imaplib: logs in, selects INBOX (Dovecot makes the
/// Maildir), says `in`, then on each line of stdin sends NOOP and says `ok` or `closed`.
const IMAP_SESSION: &str = r#"
import imaplib, sys
m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
m.login(sys.argv[2], sys.stdin.readline().rstrip("\n"))
m.select("INBOX")
print("in", flush=True)
for line in sys.stdin:
    try:
        m.noop()
        print("ok", flush=True)
    except Exception as err:
        print("closed", type(err).__name__, flush=True)
"#;

/// The shipped Dovecot hooks enabled as README says, run by qam-hooks: a deletion kicks the
/// user's IMAP session and removes the home Dovecot's userdb names; qamd then erases her.
#[test]
fn deletion_through_the_shipped_dovecot_hooks_kicks_and_removes_the_home() {
    if !imap_present() || !require_peer("/usr/lib/dovecot/checkpassword-reply", "dovecot-core") {
        return;
    }
    let _serial = serial();
    join_qam("dovecot");
    let hooks = hooks_dir();
    enable_shipped(
        hooks.path(),
        &[
            "lock.d/52-dovecot",
            "delete.d/52-dovecot",
            "password.d/52-dovecot",
        ],
    );
    let daemon = Daemon::start_with(&qamd_hooks_table(hooks.path()));
    daemon.add_user("alice", "alice password 1");
    daemon.add_user("bob", "bob password 1");
    let programs = shared_tempdir();
    let program = programs.path().join("qam-checkpassword");
    fs::copy(bin("qam-checkpassword"), &program).expect("copy qam-checkpassword");
    let dovecot = Dovecot::start_imap(
        &format!("qam-imap-hooks-{}", std::process::id()),
        15645,
        &checkpassword_auth(&program, &daemon.socket),
    );
    let args = format!("-c {}", dovecot.config().display());
    let runner = QamHooks::start_with(&daemon, hooks.path(), &[("QAM_DOVEADM_ARGS", &args)]);
    runner.wait_listening();

    let mut session = Command::new(PYTHON)
        .args(["-c", IMAP_SESSION, "15645", "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run imaplib");
    let mut to_session = session.stdin.take().expect("stdin");
    let mut from_session = std::io::BufReader::new(session.stdout.take().expect("stdout"));
    let mut said = String::new();
    writeln!(to_session, "alice password 1").expect("password");
    std::io::BufRead::read_line(&mut from_session, &mut said).expect("session output");
    assert_eq!(said, "in\n", "the IMAP login failed");
    let home = dovecot.mail_root().expect("IMAP instance").join("alice");
    assert!(
        home.join("Maildir").exists(),
        "no Maildir in {}",
        home.display()
    );
    assert!(mail_login("imap", 15645, "bob", "bob password 1"));
    // Another user's home beside hers, which the hook must leave alone.
    let bob = dovecot.mail_root().expect("IMAP instance").join("bob");
    fs::create_dir_all(bob.join("Maildir")).expect("bob's home");

    let info: qam_client::wire::DeleteInfo = daemon
        .client()
        .call(&qam_client::Request::Delete {
            user: "alice".into(),
        })
        .expect("delete");
    assert!(!info.erased, "the deletion waits for its hooks");
    let erased = poll_until(within(60), || {
        !daemon.client().exists("alice").expect("exists")
    });
    assert!(erased, "alice was not erased:\n{}", runner.log_text());
    assert!(!home.exists(), "{} is still there", home.display());
    assert!(bob.exists(), "bob's home went too");

    writeln!(to_session, "noop").expect("to session");
    said.clear();
    std::io::BufRead::read_line(&mut from_session, &mut said).expect("session output");
    assert!(
        said.starts_with("closed"),
        "the session was not ended: {said}"
    );
    drop(to_session);
    let _ = session.wait();
    let log = runner.log_text();
    assert!(
        log.contains("hook ok hook=lock.d/52-dovecot")
            && log.contains("hook ok hook=delete.d/52-dovecot"),
        "{log}"
    );
}
