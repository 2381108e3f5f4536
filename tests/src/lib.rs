//! Shared harness for qam's end-to-end and real-peer tests: starts real `qamd` processes on a
//! temporary socket and data dir with cheap hash parameters, and finds the built binaries.

pub mod container;
pub mod deployment;
pub mod dovecot;
pub mod hooks;
pub mod identity;
pub mod pam;
pub mod readme;
pub mod reliability;
pub mod session;
pub mod sshd;
pub mod web;
pub mod xmpp;

use qam_client::wire::{Done, NameInfo};
use qam_client::{Client, ClientOptions, Password, Request};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Cheap argon2 parameters for tests where the hash cost is not what is tested.
pub const CHEAP_HASH: &str =
    "[hash]\nm_cost = 256\nt_cost = 1\np_cost = 1\nworkers = 2\nqueue_limit = 64\n";

/// Tests of other behaviour use short memorable passwords: no strength check unless a test
/// sets its own `[password]` table.
pub const ANY_STRENGTH: &str = "[password]\nmin_strength = 0\n";

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Cargo's target dir: `CARGO_TARGET_DIR` when set, else the workspace's `target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// A binary built by `cargo build --workspace --bins` (the test command does this first).
pub fn bin(name: &str) -> PathBuf {
    let target = target_dir();
    let profile = std::env::var("QAM_TEST_PROFILE").unwrap_or_else(|_| "debug".into());
    let path = target.join(profile).join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` first (scripts/test-all does)",
        path.display()
    );
    path
}

/// Exit status, stdout and stderr of a command, for failure messages.
pub fn shown(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `command` to completion and asserts that it succeeded; answers its output.
pub fn run_ok(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(out.status.success(), "{command:?}: {}", shown(&out));
    out
}

/// How long a wait sleeps between two looks at its condition.
const POLL: Duration = Duration::from_millis(20);

/// Polls `condition` until it holds or `deadline` passes, and answers whether it held: the one
/// place the tests pause while another process gets somewhere.
pub fn poll_until(deadline: Instant, mut condition: impl FnMut() -> bool) -> bool {
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `condition` until it holds; fails naming `what` once `deadline` passes.
pub fn wait_until(deadline: Instant, what: &str, condition: impl FnMut() -> bool) {
    assert!(
        poll_until(deadline, condition),
        "timed out waiting for {what}"
    );
}

/// An instant `seconds` from now, for `wait_until` and `poll_until`.
pub fn within(seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(seconds)
}

/// True while some connection to the Unix socket `socket` holds bytes its server has not read
/// yet, or waits to be accepted (`ss`'s Recv-Q): a request has reached a server that is stopped.
pub fn unread_on_socket(socket: &Path) -> bool {
    let out = run_ok(Command::new("ss").args(["-x", "-a", "-n", "-H"]));
    let path = socket.display().to_string();
    String::from_utf8_lossy(&out.stdout).lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(4) == Some(&path.as_str())
            && fields.get(2).and_then(|q| q.parse::<u64>().ok()) > Some(0)
    })
}

/// True when a real peer's program exists. Missing under `CI=true` is a failure, not a skip;
/// elsewhere the test prints why it skips and returns early.
pub fn require_peer(program: &str, package: &str) -> bool {
    if Path::new(program).exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{program} is missing under CI=true: install Debian package `{package}`");
    }
    eprintln!("SKIP: {program} missing (Debian package `{package}`; scripts/test-all installs it)");
    false
}

/// A Python `script` run as `nobody` (uid and gid 65534, no supplementary groups) through
/// `setpriv`, stdin and stdout piped: how the tests act as an unprivileged local user.
pub fn python_as_nobody(script: &str) -> Command {
    let mut command = identity::Identity::nobody().command("/usr/bin/python3");
    command
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    command
}

/// A temporary directory readable by service users (peers that run as their own user).
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("qam-test-")
        .tempdir()
        .expect("temp dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    dir
}

/// A running qamd with its own socket, data dir, config and log file.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Starts qamd with cheap hash parameters and the default everything else.
    pub fn start() -> Daemon {
        Daemon::start_with("")
    }

    /// Starts qamd with `extra` TOML appended to the test config (top-level keys first, then
    /// tables; `[hash]` is already set to cheap parameters unless `extra` has its own).
    pub fn start_with(extra: &str) -> Daemon {
        Daemon::start_at_level(&test_log_level("debug"), extra)
    }

    /// Like [`Daemon::start_with`], with `level` as the config's `log_level`.
    pub fn start_at_level(level: &str, extra: &str) -> Daemon {
        let dir = shared_tempdir();
        let socket = dir.path().join("qamd.sock");
        let data_dir = dir.path().join("data");
        let config = dir.path().join("qamd.toml");
        let log = dir.path().join("qamd.log");
        let hash = if extra.contains("[hash]") {
            ""
        } else {
            CHEAP_HASH
        };
        let strength = if extra.contains("[password]") {
            ""
        } else {
            ANY_STRENGTH
        };
        let (top, tables) = split_top_level(extra);
        let text = format!(
            "socket = {socket:?}\ndata_dir = {data_dir:?}\nlog_level = {level:?}\n{top}\n{hash}\n{strength}\n{tables}\n",
            socket = socket.display().to_string(),
            data_dir = data_dir.display().to_string(),
        );
        fs::write(&config, text).expect("write config");
        fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).expect("chmod config");
        let mut daemon = Daemon {
            dir,
            socket,
            data_dir,
            config,
            log,
            child: None,
        };
        daemon.spawn();
        daemon
    }

    /// Starts the qamd process again on the same config (after `stop` or `kill`).
    pub fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let child = Command::new(bin("qamd"))
            .arg("--config")
            .arg(&self.config)
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start qamd");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let ready = poll_until(within(20), || {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("qamd exited early ({status}); log:\n{}", self.log_text());
                }
            }
            Client::connect(&self.options()).is_ok_and(|mut client| {
                client
                    .call::<qam_client::wire::HelloInfo>(&Request::Hello)
                    .is_ok()
            })
        });
        assert!(
            ready,
            "qamd did not become ready; log:\n{}",
            self.log_text()
        );
    }

    /// qamd's `status` answer, asked as admin.
    pub fn status(&self) -> qam_client::wire::StatusInfo {
        self.client().call(&Request::Status).expect("status")
    }

    /// Waits until qamd serves no client connection but the one asking (its idle ones closed).
    pub fn wait_connections_closed(&self) {
        wait_until(within(20), "qamd's client connections to close", || {
            self.status().connections <= 1
        });
    }

    /// Client options for this daemon's socket.
    pub fn options(&self) -> ClientOptions {
        ClientOptions::new(&self.socket).with_timeout(Duration::from_secs(30))
    }

    /// A connected blocking client (the test runs as root, so it is an admin).
    pub fn client(&self) -> Client {
        Client::connect(&self.options()).expect("connect to qamd")
    }

    /// Creates an account as admin (register is always allowed to admins).
    pub fn add_user(&self, name: &str, password: &str) {
        let request = Request::Register {
            user: name.into(),
            password: Password::from(password),
            force: false,
            reuse_name: false,
        };
        self.client()
            .call::<NameInfo>(&request)
            .expect("register test user");
    }

    /// `qamctl --socket SOCKET ARGS` against this daemon (run as the test: root, an admin),
    /// stdin closed, output captured.
    pub fn qamctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin("qamctl"));
        command
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs `qamctl ARGS` against this daemon to its end, `input` on its stdin.
    pub fn qamctl(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .qamctl_command(args)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("qamctl {args:?}: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            let _ = std::io::Write::write_all(&mut stdin, input.as_bytes());
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("qamctl {args:?}: {e}"))
    }

    /// The account `name` as an admin's `lookup` shows it (`None`: no such account).
    pub fn lookup(&self, name: &str) -> Option<qam_client::wire::Account> {
        self.client()
            .call::<qam_client::wire::LookupInfo>(&Request::Lookup { user: name.into() })
            .expect("lookup")
            .account
    }

    /// Locks an account as admin.
    pub fn lock_user(&self, name: &str) {
        self.client()
            .call::<Done>(&Request::Lock { user: name.into() })
            .expect("lock test user");
    }

    /// Every account's whole record, via the admin `export` op (first page: up to 100).
    pub fn export(&self) -> Vec<qam_client::wire::ExportRecord> {
        let page: qam_client::wire::ExportPage = self
            .client()
            .call(&Request::Export {
                after: None,
                limit: Some(qam_client::wire::MAX_PAGE),
            })
            .expect("export");
        page.records
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("qamd is running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        child.wait().expect("wait for qamd")
    }

    /// Sends SIGTERM and waits at most `within` for the exit status; past that, kills qamd and
    /// answers `None`.
    pub fn stop_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take().expect("qamd is running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let mut status = None;
        poll_until(Instant::now() + within, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The pid of the running qamd.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("qamd is running")
    }

    /// Everything qamd wrote to stdout and stderr so far.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Daemon {
    /// Kills qamd; with `QAM_KEEP_LOGS=DIR` its log is kept there first (for the secrets grep).
    fn drop(&mut self) {
        self.kill();
        keep_log(self.dir.path(), &self.log);
    }
}

/// The log level of qamd processes the tests start: `QAM_TEST_LOG_LEVEL`, else `default`.
pub fn test_log_level(default: &str) -> String {
    std::env::var("QAM_TEST_LOG_LEVEL").unwrap_or_else(|_| default.into())
}

/// With `QAM_KEEP_LOGS=DIR`, copies `log` (a file of a harness daemon or real peer living in
/// the temp dir `owner`) to DIR as `<owner's name>-<log's name>`, for scripts/secrets-audit.
pub fn keep_log(owner: &Path, log: &Path) {
    let Some(keep) = std::env::var_os("QAM_KEEP_LOGS") else {
        return;
    };
    let name = |path: &Path| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let keep = PathBuf::from(keep);
    if log.exists() && fs::create_dir_all(&keep).is_ok() {
        let _ = fs::copy(log, keep.join(format!("{}-{}", name(owner), name(log))));
    }
}

/// Splits TOML text into its top-level key lines and the part from the first table on.
fn split_top_level(extra: &str) -> (&str, &str) {
    match extra
        .find("\n[")
        .map(|i| i + 1)
        .or_else(|| extra.starts_with('[').then_some(0))
    {
        Some(cut) => (&extra[..cut], &extra[cut..]),
        None => (extra, ""),
    }
}

/// The flooding peer's script (see its docstring).
const PEER_FLOOD_SCRIPT: &str = include_str!("peer_flood.py");

/// What a hostile peer does with its connections (`peer_flood.py`'s modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// Holds connections, sending `hello` every 3 s.
    Hold,
    /// Verifies random unknown names on every connection, one after another.
    Verify,
    /// Opens connections that never send a byte, reopening them when closed.
    Silent,
    /// Pipelines `exists` on every connection as fast as qamd answers.
    Exists,
}

impl Flood {
    fn mode(self) -> &'static str {
        match self {
            Flood::Hold => "hold",
            Flood::Verify => "verify",
            Flood::Silent => "silent",
            Flood::Exists => "exists",
        }
    }
}

/// A local peer of its own uid attacking a socket, in its own process (python under setpriv).
pub struct HostilePeer {
    child: Child,
    /// Connections it got open.
    pub opened: usize,
}

impl HostilePeer {
    /// Starts `connections` connections of `flood` to `socket` as `uid`:`gid` (no other
    /// groups) and returns once they are open.
    pub fn start(
        flood: Flood,
        socket: &Path,
        connections: usize,
        uid: u32,
        gid: u32,
    ) -> HostilePeer {
        let mut child = identity::Identity::new(uid, gid)
            .command("/usr/bin/python3")
            .args(["-c", PEER_FLOOD_SCRIPT, flood.mode()])
            .arg(socket)
            .arg(connections.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("setpriv and python3 (Debian util-linux, python3)");
        let mut first = String::new();
        if let Some(stdout) = child.stdout.as_mut() {
            let mut byte = [0u8; 1];
            while stdout.read(&mut byte).map(|n| n == 1).unwrap_or(false) && byte[0] != b'\n' {
                first.push(char::from(byte[0]));
            }
        }
        let opened = first
            .strip_prefix("ready ")
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("hostile peer did not start: {first:?}"));
        HostilePeer { child, opened }
    }

    /// Stops the attack; returns how many answers of each code it received.
    pub fn finish(mut self) -> std::collections::BTreeMap<String, u64> {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        if let Some(stdout) = self.child.stdout.as_mut() {
            let _ = stdout.read_to_string(&mut rest);
        }
        let _ = self.child.wait();
        rest.lines()
            .filter_map(|line| {
                let mut words = line.strip_prefix("answered ")?.split(' ');
                Some((words.next()?.to_owned(), words.next()?.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for HostilePeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
