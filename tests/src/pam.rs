//! PAM services written to /etc/pam.d for a test and driven with Debian's `pamtester`, plus
//! real unix accounts for stacks that fall through to pam_unix.

use crate::{bin, require_peer, Daemon};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const PAMTESTER: &str = "/usr/bin/pamtester";

/// A service file in /etc/pam.d, removed on drop.
pub struct PamService {
    pub name: String,
    path: PathBuf,
}

impl PamService {
    /// `qam-test-<test>-<pid>` with the module on auth, account and password lines.
    pub fn new(test: &str, module_args: &str) -> PamService {
        let module = bin("libpam_qam.so");
        let module = module.display();
        PamService::with_auth_lines(
            test,
            &format!(
                "auth     required {module} {module_args}\n\
                 account  required {module} {module_args}\n\
                 password required {module} {module_args}\n"
            ),
        )
    }

    /// A service whose stack is given whole (for stacking tests).
    pub fn with_auth_lines(test: &str, lines: &str) -> PamService {
        let name = format!("qam-test-{test}-{}", std::process::id());
        let path = Path::new("/etc/pam.d").join(&name);
        fs::write(&path, lines).expect("write /etc/pam.d service (tests run as root)");
        PamService { name, path }
    }

    /// README's sshd lines for pam_qam on top of Debian's real `common-auth` and
    /// `common-account` (pam_unix), as /etc/pam.d/sshd has them.
    pub fn readme_sshd(test: &str, daemon: &Daemon) -> PamService {
        let module = format!("{} {}", bin("libpam_qam.so").display(), module_args(daemon));
        PamService::with_auth_lines(
            test,
            &format!(
                "auth     [success=done user_unknown=ignore authinfo_unavail=ignore default=die] {module}\n\
                 @include common-auth\n\
                 account  [success=ok user_unknown=ignore authinfo_unavail=ignore default=bad] {module}\n\
                 @include common-account\n"
            ),
        )
    }

    /// `pamtester -v SERVICE USER OPERATION` with `input` on stdin.
    pub fn pamtester(&self, user: &str, operation: &str, input: &str) -> Output {
        self.pamtester_from(None, user, operation, input)
    }

    /// The same, with PAM_RHOST set as sshd sets it to the client's address.
    pub fn pamtester_from(
        &self,
        rhost: Option<&str>,
        user: &str,
        operation: &str,
        input: &str,
    ) -> Output {
        let mut command = Command::new(PAMTESTER);
        command.arg("-v");
        if let Some(rhost) = rhost {
            command.arg("-I").arg(format!("rhost={rhost}"));
        }
        let mut child = command
            .arg(&self.name)
            .arg(user)
            .arg(operation)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run pamtester");
        // pamtester may finish without reading everything (e.g. a failed first pass).
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes());
        child.wait_with_output().expect("wait for pamtester")
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

pub fn pamtester_present() -> bool {
    require_peer(PAMTESTER, "pamtester")
}

pub fn module_args(daemon: &Daemon) -> String {
    format!("socket={} debug", daemon.socket.display())
}

/// A real unix account with a unix password (no home, no shell), removed on drop.
pub struct UnixUser {
    pub name: String,
}

impl UnixUser {
    pub fn create(name: &str, password: &str) -> UnixUser {
        let _ = Command::new("userdel").arg(name).output();
        let made = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/usr/sbin/nologin", name])
            .output()
            .expect("useradd");
        assert!(made.status.success(), "useradd {name}: {made:?}");
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd");
        chpasswd
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{name}:{password}\n").as_bytes())
            .expect("write chpasswd");
        assert!(chpasswd.wait().expect("chpasswd").success());
        UnixUser {
            name: name.to_owned(),
        }
    }
}

impl Drop for UnixUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}
