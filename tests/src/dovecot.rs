//! A real Dovecot 2.3 (Debian `dovecot-core`, `dovecot-imapd`) for the PAM and checkpassword
//! door tests, driven with `doveadm auth` or, with IMAP on, by a real IMAP client.
//!
//! It has its own config, base and state dirs in a temp dir.

use crate::session::Watched;
use crate::{poll_until, readme, shown, within};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const DOVECOT: &str = "/usr/sbin/dovecot";
pub const DOVEADM: &str = "/usr/bin/doveadm";

/// A running `dovecot -F` with one passdb.
pub struct Dovecot {
    pub dir: tempfile::TempDir,
    config: PathBuf,
    child: Option<Child>,
    /// doveadm calls made, for distinct remote IPs.
    calls: AtomicU32,
    /// The vmail homes of an IMAP instance (removed after Dovecot stops).
    mail: Option<tempfile::TempDir>,
}

/// The README's mail user for the static userdb, made as README says when missing: a uid at
/// or above Dovecot's `first_valid_uid` (500), or Dovecot refuses the mail login.
pub fn ensure_vmail_user() {
    if nix::unistd::User::from_name("vmail")
        .ok()
        .flatten()
        .is_none()
    {
        crate::deployment::sysadmin(
            "adduser",
            &[
                "--system",
                "--group",
                "--uid",
                "5000",
                "--home",
                "/var/vmail",
                "vmail",
            ],
        );
    }
}

/// The README's block for Dovecot's checkpassword passdb (and `service auth`, which gives the
/// auth process group `qam`) with the test's program and socket; its userdb comes separately.
pub fn checkpassword_auth(program: &std::path::Path, socket: &std::path::Path) -> String {
    let block = readme::block_after("### checkpassword");
    readme::without_section(&block, "userdb {")
        .replace(
            "/usr/libexec/qam/qam-checkpassword",
            &program.display().to_string(),
        )
        .replace("/run/qam/qamd.sock", &socket.display().to_string())
}

/// The README's Dovecot config for the PAM passdb (passdb and userdb).
fn readme_pam_block() -> String {
    readme::block_after("and in `/etc/dovecot/conf.d/10-auth.conf`")
}

/// The README's static userdb.
fn readme_userdb() -> String {
    readme::section(&readme_pam_block(), "userdb {")
}

/// The README's PAM passdb naming the PAM service `service` instead of `dovecot`.
pub fn pam_passdb(service: &str) -> String {
    readme::section(&readme_pam_block(), "passdb {")
        .replace("args = dovecot", &format!("args = {service}"))
}

/// The README's /etc/pam.d/dovecot with `module` (path and arguments) for `pam_qam.so`.
pub fn pam_dovecot_file(module: &str) -> String {
    readme::block_after("**Dovecot through PAM.**").replace("pam_qam.so", module)
}

impl Dovecot {
    /// Starts Dovecot named `instance` without mail service, with `auth` (the README's
    /// `passdb { … }` block and any `service auth` lines) and the prefetch userdb; returns once
    /// its auth-client socket answers.
    pub fn start(instance: &str, auth: &str) -> Dovecot {
        Dovecot::launch(
            instance,
            "protocols =\n",
            &format!("{auth}\nuserdb {{\n  driver = prefetch\n}}\n"),
        )
    }

    /// Starts Dovecot named `instance` serving IMAP on 127.0.0.1:`port`, with `auth` and the
    /// README's static userdb (user `vmail`), mail under the temp dir's `vmail/`.
    pub fn start_imap(instance: &str, port: u16, auth: &str) -> Dovecot {
        ensure_vmail_user();
        let vmail = crate::shared_tempdir();
        let home = vmail.path().display().to_string();
        let status = Command::new("chown")
            .arg("vmail:vmail")
            .arg(vmail.path())
            .status()
            .expect("chown vmail home");
        assert!(status.success(), "chown vmail {home}");
        let mut dovecot = Dovecot::launch(
            instance,
            &format!(
                "protocols = imap\nlisten = 127.0.0.1\nmail_location = maildir:~/Maildir\n\
                 service imap-login {{\n  inet_listener imap {{\n    port = {port}\n  }}\n  \
                 inet_listener imaps {{\n    port = 0\n  }}\n}}\n"
            ),
            // Homes live in the test's temp dir instead of /var/vmail, so nothing stays behind.
            &format!(
                "{auth}\n{}",
                readme_userdb().replace("/var/vmail/%u", &format!("{home}/%u"))
            ),
        );
        dovecot.mail = Some(vmail);
        let listening = poll_until(within(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            listening,
            "dovecot not listening on {port}:\n{}",
            dovecot.log_text()
        );
        dovecot
    }

    fn launch(instance: &str, service: &str, auth: &str) -> Dovecot {
        let dir = crate::shared_tempdir();
        let d = dir.path().display().to_string();
        let config = dir.path().join("dovecot.conf");
        // Test-only lines: plaintext on loopback without TLS, no auth cache or failure delay
        // (the tests repeat logins and wrong passwords), verbose auth logs for the assertions.
        let text = format!(
            "{service}base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\n\
             instance_name = {instance}\nssl = no\ndisable_plaintext_auth = no\n\
             auth_mechanisms = plain login\nauth_verbose = yes\nauth_debug = yes\n\
             auth_cache_size = 0\nauth_failure_delay = 0\n{auth}"
        );
        fs::write(&config, text).expect("write dovecot.conf");
        let out = fs::File::create(dir.path().join("foreground.out")).expect("output file");
        let child = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("fd"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("start dovecot");
        let dovecot = Dovecot {
            dir,
            config,
            child: Some(child),
            calls: AtomicU32::new(0),
            mail: None,
        };
        dovecot.wait_ready();
        dovecot
    }

    fn wait_ready(&self) {
        let socket = self.dir.path().join("run/auth-client");
        let ready = poll_until(within(20), || socket.exists());
        assert!(ready, "dovecot not ready:\n{}", self.log_text());
    }

    /// `doveadm auth test USER PASSWORD`: rc 0 accepted, 77 refused. Each call comes from
    /// its own remote IP, so Dovecot's per-IP failure penalty (2 s, doubling) stays out of the way.
    pub fn auth_test(&self, user: &str, password: &str) -> Output {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let rip = format!("rip=127.0.{}.{}", 1 + n / 250 % 250, 1 + n % 250);
        self.doveadm(&["auth", "test", "-x", &rip, user, password])
    }

    /// Asserts that Dovecot accepts the login.
    pub fn assert_accepts(&self, user: &str, password: &str) {
        let output = self.auth_test(user, password);
        let text = shown(&output);
        assert!(
            output.status.success() && text.contains("auth succeeded"),
            "{user} refused:\n{text}\n{}",
            self.log_text()
        );
    }

    /// Asserts that Dovecot refuses the login (`doveadm` exit code 77).
    pub fn assert_refuses(&self, user: &str, password: &str) {
        let output = self.auth_test(user, password);
        assert_eq!(output.status.code(), Some(77), "{user}: {}", shown(&output));
    }

    /// Median time of `count` accepted logins (each a whole `doveadm auth test` run).
    pub fn median_login_time(&self, user: &str, password: &str, count: usize) -> Duration {
        let times = (0..count)
            .map(|_| {
                let started = Instant::now();
                self.assert_accepts(user, password);
                started.elapsed()
            })
            .collect();
        crate::xmpp::median(times)
    }

    /// `doveadm auth lookup USER`: a passdb lookup without a password.
    pub fn auth_lookup(&self, user: &str) -> Output {
        self.doveadm(&["auth", "lookup", user])
    }

    /// `doveadm -c CONFIG ARGS` against this instance.
    pub fn doveadm(&self, args: &[&str]) -> Output {
        Command::new(DOVEADM)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run doveadm")
    }

    /// Its config file (`doveadm -c`).
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Where an IMAP instance keeps the users' homes (`<dir>/<user>`).
    pub fn mail_root(&self) -> Option<&Path> {
        self.mail.as_ref().map(tempfile::TempDir::path)
    }

    /// Dovecot's log (checkpassword's stderr lands here too).
    pub fn log_text(&self) -> String {
        let mut text = fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default();
        text.push_str(
            &fs::read_to_string(self.dir.path().join("foreground.out")).unwrap_or_default(),
        );
        text
    }
}

/// An IMAP session of `user` on 127.0.0.1:`port` (LOGIN, SELECT INBOX, IDLE), watched until
/// the server ends it (`* BYE` or a close).
pub fn imap_idle(port: u16, user: &str, password: &str) -> std::io::Result<Watched> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut seen = Vec::new();
    let mut expect = |stream: &mut std::net::TcpStream, marker: &str| -> std::io::Result<()> {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains(marker) {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::Error::other(format!(
                    "closed before {marker:?}: {}",
                    String::from_utf8_lossy(&seen)
                )));
            }
            seen.extend_from_slice(&buf[..n]);
        }
        Ok(())
    };
    expect(&mut stream, "* OK")?;
    write!(stream, "a1 LOGIN \"{user}\" \"{password}\"\r\n")?;
    expect(&mut stream, "a1 OK")?;
    stream.write_all(b"a2 SELECT INBOX\r\n")?;
    expect(&mut stream, "a2 OK")?;
    stream.write_all(b"a3 IDLE\r\n")?;
    expect(&mut stream, "+ ")?;
    Watched::new(stream, "* BYE")
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
        for log in ["dovecot.log", "foreground.out"] {
            crate::keep_log(self.dir.path(), &self.dir.path().join(log));
        }
    }
}

impl Dovecot {
    /// Stops the whole process group: SIGTERM, then SIGKILL after 10 s.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
            if poll_until(within(10), || matches!(child.try_wait(), Ok(Some(_)))) {
                return;
            }
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}
