//! A real Dovecot 2.3 (Debian `dovecot-core`) for the PAM and checkpassword door tests: its own
//! config, base and state dirs in a temp dir, no mail service, driven with `doveadm auth`.
//! Included with `#[path]` by pam.rs and checkpassword.rs, each using part of it.

#![allow(dead_code)]

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
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
}

impl Dovecot {
    /// Starts Dovecot named `instance` with `passdb` (a whole `passdb { … }` block) and the
    /// prefetch userdb; returns once its auth-client socket answers.
    pub fn start(instance: &str, passdb: &str) -> Dovecot {
        let dir = qam_tests::shared_tempdir();
        let d = dir.path().display().to_string();
        let config = dir.path().join("dovecot.conf");
        let text = format!(
            "protocols =\nbase_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\n\
             instance_name = {instance}\nssl = no\ndisable_plaintext_auth = no\n\
             auth_mechanisms = plain login\nauth_verbose = yes\nauth_debug = yes\n\
             auth_cache_size = 0\nauth_failure_delay = 0\n{passdb}\nuserdb {{\n  driver = prefetch\n}}\n"
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
        };
        dovecot.wait_ready();
        dovecot
    }

    fn wait_ready(&self) {
        let socket = self.dir.path().join("run/auth-client");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "dovecot not ready:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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
        qam_tests::xmpp::median(times)
    }

    /// `doveadm auth lookup USER`: a passdb lookup without a password.
    pub fn auth_lookup(&self, user: &str) -> Output {
        self.doveadm(&["auth", "lookup", user])
    }

    fn doveadm(&self, args: &[&str]) -> Output {
        Command::new(DOVEADM)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run doveadm")
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

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
        for log in ["dovecot.log", "foreground.out"] {
            qam_tests::keep_log(self.dir.path(), &self.dir.path().join(log));
        }
    }
}

impl Dovecot {
    /// Stops the whole process group: SIGTERM, then SIGKILL after 10 s.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// Output of a command as one text for assertion messages.
pub fn shown(output: &Output) -> String {
    format!(
        "rc={:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
