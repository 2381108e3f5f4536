//! A real OpenSSH server on 127.0.0.1 for login tests: its own host key, config, free port and
//! PAM service, and password logins through `sshpass`.
//!
//! sshd names its PAM service after the program, so it runs through a link of the service's
//! name and never touches /etc/pam.d/sshd.

use crate::{keep_log, require_peer, shared_tempdir};
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";
pub const SSH: &str = "/usr/bin/ssh";
pub const SSHPASS: &str = "/usr/bin/sshpass";
/// Debian's own PAM service of openssh-server, which README's lines go on top of.
pub const STOCK_PAM: &str = "/etc/pam.d/sshd";

/// True when sshd, ssh and sshpass are installed (a failure under `CI=true`).
pub fn peers_present() -> bool {
    require_peer(SSHD, "openssh-server")
        && require_peer(SSH, "openssh-client")
        && require_peer(SSHPASS, "sshpass")
}

/// `pam_lines` at the top of Debian's own /etc/pam.d/sshd (README: "at the top").
pub fn stock_stack_under(pam_lines: &str) -> String {
    let stock = fs::read_to_string(STOCK_PAM).expect("Debian's /etc/pam.d/sshd");
    format!("{pam_lines}{stock}")
}

/// A running sshd, its process group ended and its PAM service removed on drop.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// /etc/pam.d/<service>, written by `start`.
    pam_service: PathBuf,
    log: PathBuf,
    child: Child,
}

impl Sshd {
    /// sshd on Debian's PAM stack with `pam_lines` at its top. `name` makes the PAM service
    /// unique (`qam-sshd-<name>-<pid>`).
    pub fn start(name: &str, pam_lines: &str) -> Sshd {
        Sshd::start_with(name, &stock_stack_under(pam_lines), "")
    }

    /// sshd whose PAM service holds `pam_stack` whole, with `extra_config` appended to its
    /// sshd_config (password logins through PAM only).
    pub fn start_with(name: &str, pam_stack: &str, extra_config: &str) -> Sshd {
        let dir = shared_tempdir();
        let service = format!("qam-sshd-{name}-{}", std::process::id());
        let pam_service = Path::new("/etc/pam.d").join(&service);
        fs::write(&pam_service, pam_stack).expect("write /etc/pam.d service (tests run as root)");
        let program = dir.path().join(&service);
        symlink(SSHD, &program).expect("link sshd");
        let host_key = dir.path().join("host_key");
        let keygen = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key)
            .status()
            .expect("run ssh-keygen");
        assert!(keygen.success(), "ssh-keygen failed");
        // sshd's privilege separation directory (made by its init script on a booted system).
        fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let port = free_port();
        let config = dir.path().join("sshd_config");
        fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\nPidFile {pid}\n\
                 UsePAM yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication no\nPermitRootLogin no\nStrictModes no\nLogLevel VERBOSE\n\
                 {extra_config}\n",
                key = host_key.display(),
                pid = dir.path().join("sshd.pid").display(),
            ),
        )
        .expect("write sshd_config");
        let log = dir.path().join("sshd.log");
        let child = Command::new(&program)
            .arg("-D")
            .arg("-E")
            .arg(&log)
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start sshd");
        let sshd = Sshd {
            dir,
            port,
            pam_service,
            log,
            child,
        };
        sshd.wait_listening();
        sshd
    }

    fn wait_listening(&self) {
        let listening = crate::poll_until(crate::within(30), || {
            TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
        assert!(listening, "sshd did not listen; log:\n{}", self.log_text());
    }

    /// `ssh user@127.0.0.1 command` with `password` typed by sshpass (passed in the
    /// environment, never on a command line), password authentication only.
    pub fn run(&self, user: &str, password: &str, command: &str) -> Output {
        Command::new(SSHPASS)
            .arg("-e")
            .arg(SSH)
            .args(["-F", "/dev/null", "-T"])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "PreferredAuthentications=password"])
            .args(["-o", "PubkeyAuthentication=no"])
            .args(["-o", "NumberOfPasswordPrompts=1"])
            .args(["-o", "ConnectTimeout=20"])
            .args(["-o", "LogLevel=ERROR"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg(format!("{user}@127.0.0.1"))
            .arg(command)
            .env("SSHPASS", password)
            .stdin(Stdio::null())
            .output()
            .expect("run sshpass ssh")
    }

    /// Whether `user` logs in with `password` (`ssh … true`). A refusal is recognised by
    /// ssh's own exit (sshpass 5 at a second prompt; ssh 255 with "Permission denied"); any
    /// other failure panics with sshd's log.
    pub fn login(&self, user: &str, password: &str) -> bool {
        let output = self.run(user, password, "true");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let refused = output.status.code() == Some(5)
            || (output.status.code() == Some(255) && stderr.contains("Permission denied"));
        if output.status.success() {
            true
        } else if refused {
            false
        } else {
            panic!(
                "ssh failed oddly ({}): {stderr}\nsshd log:\n{}",
                output.status,
                self.log_text()
            )
        }
    }

    /// How long a login that must succeed takes.
    pub fn timed_login(&self, user: &str, password: &str) -> Duration {
        let started = Instant::now();
        assert!(self.login(user, password), "{user}:\n{}", self.log_text());
        started.elapsed()
    }

    /// Everything sshd logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sshd {
    /// Ends sshd's whole process group (its per-connection children too).
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.pam_service);
        keep_log(self.dir.path(), &self.log);
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("find a free port")
}
