//! qam under systemd: the shipped units pass `systemd-analyze verify` and the hardening score,
//! qamd serves a socket passed by `systemd-socket-activate` and says READY=1, SIGHUP reloads.

use qam_client::wire::{HelloInfo, NameInfo};
use qam_client::{Client, ClientOptions, Password, Request};
use qam_tests::deployment::MAX_HOOKS_EXPOSURE;
use qam_tests::identity::{Identity, SETPRIV};
use qam_tests::{
    bin, poll_until, require_peer, shared_tempdir, within, workspace_root, Daemon, CHEAP_HASH,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

const ANALYZE: &str = "/usr/bin/systemd-analyze";
const SOCKET_ACTIVATE: &str = "/usr/bin/systemd-socket-activate";
const SOCAT: &str = "/usr/bin/socat";

/// The highest `systemd-analyze security` exposure qamd.service may have ("OK" ends at 3.9;
/// README promises 1.5 or less).
const MAX_EXPOSURE: f64 = 1.5;

/// The units as shipped, in `systemd/`.
fn units() -> Vec<PathBuf> {
    ["qamd.service", "qamd.socket", "qamd-saslauthd.socket"]
        .iter()
        .map(|name| workspace_root().join("systemd").join(name))
        .collect()
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if !require_peer(ANALYZE, "systemd") {
        return;
    }
    // verify checks that ExecStart exists: point it at the built qamd in a copy of the units.
    // (The package test verifies the installed units as they are, man pages included.)
    let dir = shared_tempdir();
    let qamd = bin("qamd");
    let mut copies = Vec::new();
    for unit in units() {
        let text = fs::read_to_string(&unit).unwrap();
        let copy = dir.path().join(unit.file_name().unwrap());
        fs::write(
            &copy,
            text.replace("/usr/sbin/qamd", qamd.to_str().unwrap()),
        )
        .unwrap();
        copies.push(copy);
    }
    let out = Command::new(ANALYZE)
        .args(["verify", "--man=no"])
        .args(&copies)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned:\n{stderr}"
    );
}

#[test]
fn service_exposure_is_at_most_1_5() {
    if !require_peer(ANALYZE, "systemd") {
        return;
    }
    let service = workspace_root().join("systemd/qamd.service");
    let out = Command::new(ANALYZE)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&service)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze security warned:\n{stderr}"
    );
    let exposure = stdout
        .lines()
        .find_map(|line| line.strip_prefix("→ Overall exposure level for qamd.service: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}"));
    println!("qamd.service exposure: {exposure}");
    assert!(
        exposure <= MAX_EXPOSURE,
        "qamd.service exposure {exposure} is above {MAX_EXPOSURE}:\n{stdout}"
    );
}

#[test]
fn qam_hooks_unit_passes_verify_and_keeps_its_hardening() {
    if !require_peer(ANALYZE, "systemd") {
        return;
    }
    let dir = shared_tempdir();
    let text = fs::read_to_string(workspace_root().join("systemd/qam-hooks.service")).unwrap();
    let copy = dir.path().join("qam-hooks.service");
    fs::write(
        &copy,
        text.replace("/usr/sbin/qam-hooks", bin("qam-hooks").to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new(ANALYZE)
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
    for line in [
        "EnvironmentFile=-/etc/default/qam-hooks",
        "Wants=qamd.socket",
        "Restart=on-failure",
        "ExecStart=/usr/sbin/qam-hooks --socket /run/qam/qamd.sock --hooks-dir /etc/qam/hooks",
    ] {
        assert!(
            text.lines()
                .any(|l| l == line || l.starts_with(&format!("{line} "))),
            "{line}"
        );
    }
    let out = Command::new(ANALYZE)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&copy)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let exposure = stdout
        .lines()
        .find_map(|line| line.strip_prefix("→ Overall exposure level for qam-hooks.service: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}"));
    println!("qam-hooks.service exposure: {exposure}");
    assert!(
        exposure <= MAX_HOOKS_EXPOSURE,
        "qam-hooks.service exposure {exposure} is above {MAX_HOOKS_EXPOSURE}:\n{stdout}"
    );
}

/// qamd started by `systemd-socket-activate` the way systemd starts it from qamd.socket and
/// qamd-saslauthd.socket (names `qamd` and `saslauthd`): sockets made by root, qamd itself
/// unprivileged (`nobody`, no new privileges, as qamd.service runs it as `qam`), with a
/// datagram socket standing in for systemd's NOTIFY_SOCKET.
struct Activated {
    /// Removed on drop, with the socket, config, store and log in it.
    dir: tempfile::TempDir,
    socket: PathBuf,
    /// The store, owned by `nobody`.
    data: PathBuf,
    /// The saslauthd door's socket (not in qamd's config: only passed).
    door: PathBuf,
    notify: UnixDatagram,
    log: PathBuf,
    child: Option<Child>,
}

impl Activated {
    fn start() -> Activated {
        let dir = shared_tempdir();
        let socket = dir.path().join("activated.sock");
        let door = dir.path().join("saslauthd.sock");
        let config = dir.path().join("qamd.toml");
        let log = dir.path().join("qamd.log");
        let notify_path = dir.path().join("notify");
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
        let nobody = Some(nix::unistd::Uid::from_raw(65534));
        nix::unistd::chown(&data, nobody, Some(nix::unistd::Gid::from_raw(65534))).unwrap();
        fs::write(
            &config,
            format!(
                "socket = {:?}\ndata_dir = {:?}\nlog_level = {:?}\n{CHEAP_HASH}",
                socket.to_str().unwrap(),
                data.to_str().unwrap(),
                qam_tests::test_log_level("info"),
            ),
        )
        .unwrap();
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        fs::set_permissions(&notify_path, fs::Permissions::from_mode(0o666)).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let child = Command::new(SOCKET_ACTIVATE)
            .arg("--listen")
            .arg(&socket)
            .arg("--listen")
            .arg(&door)
            .arg("--fdname=qamd:saslauthd")
            .arg(format!("--setenv=NOTIFY_SOCKET={}", notify_path.display()))
            .args(Identity::nobody().argv())
            .arg("--no-new-privs")
            .arg(bin("qamd"))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .unwrap();
        let activated = Activated {
            dir,
            socket,
            data,
            door,
            notify,
            log,
            child: Some(child),
        };
        // systemd-socket-activate binds the socket, then execs qamd on the first connection.
        wait_for(
            "systemd-socket-activate made no sockets",
            || activated.socket.exists() && activated.door.exists(),
            || activated.log_text(),
        );
        activated
    }

    /// The next notification datagram, e.g. "READY=1\nSTATUS=...".
    fn next_notification(&self) -> String {
        let mut buf = [0u8; 4096];
        let len = self
            .notify
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no sd_notify message ({e}); log:\n{}", self.log_text()));
        String::from_utf8_lossy(&buf[..len]).into_owned()
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        child.wait().unwrap()
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        qam_tests::keep_log(self.dir.path(), &self.log);
    }
}

#[test]
fn socket_activated_qamd_serves_the_passed_socket_and_notifies() {
    if !require_peer(SOCKET_ACTIVATE, "systemd") || !require_peer(SETPRIV, "util-linux") {
        return;
    }
    let mut qamd = Activated::start();
    let options = ClientOptions::new(&qamd.socket).with_timeout(Duration::from_secs(20));
    // This first connection is what makes systemd-socket-activate start qamd.
    let mut client = Client::connect(&options).unwrap();
    let hello: HelloInfo = client.call(&Request::Hello).unwrap();
    assert!(hello.server.starts_with("qamd "), "{hello:?}");

    let ready = qamd.next_notification();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(
        ready
            .lines()
            .any(|l| l.starts_with("STATUS=serving") && l.contains("socket-activated")),
        "{ready}"
    );
    assert!(qamd
        .log_text()
        .contains("using the socket passed by systemd"));

    let register = Request::Register {
        user: "activated".into(),
        password: Password::from("socket activation works"),
        force: false,
        reuse_name: false,
    };
    let created: NameInfo = client.call(&register).unwrap();
    assert_eq!(created.name, "activated");
    assert!(client
        .verify("activated", &Password::from("socket activation works"))
        .unwrap());
    drop(client);

    // The door is served on its own passed socket: one saslauthd request per connection.
    assert_eq!(
        saslauthd_check(&qamd.door, "activated", "socket activation works"),
        "OK"
    );
    assert_eq!(saslauthd_check(&qamd.door, "activated", "wrong"), "NO");

    let status = qamd.terminate();
    assert!(
        status.success(),
        "qamd exited {status}; log:\n{}",
        qamd.log_text()
    );
    let stopping = qamd.next_notification();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    // qamd wrote its store as the unprivileged user it ran as.
    for entry in fs::read_dir(&qamd.data).unwrap() {
        let meta = entry.unwrap().metadata().unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534);
    }
    // The socket belongs to the service manager: qamd leaves it in place for the next start.
    assert!(qamd.socket.exists(), "qamd removed the passed socket");
}

/// One saslauthd-protocol request (login, password, service, realm, each a u16 big-endian
/// length and bytes); returns the answer's first word, `OK` or `NO`.
fn saslauthd_check(door: &std::path::Path, login: &str, password: &str) -> String {
    let mut stream = std::os::unix::net::UnixStream::connect(door).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut request = Vec::new();
    for field in [login, password, "xmpp", ""] {
        request.extend_from_slice(&(field.len() as u16).to_be_bytes());
        request.extend_from_slice(field.as_bytes());
    }
    stream.write_all(&request).unwrap();
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut answer).unwrap();
    assert!(answer.len() >= 2, "short saslauthd answer {answer:?}");
    let text = String::from_utf8_lossy(&answer[2..]).into_owned();
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A line-oriented client that runs as `nobody` (not an admin), so `register` obeys
/// `registration_open`: socat under setpriv, one connection for the whole test.
struct Unprivileged {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Unprivileged {
    fn connect(socket: &std::path::Path) -> Unprivileged {
        let mut child = Identity::nobody()
            .command(SOCAT)
            .arg("-")
            .arg(format!("UNIX-CONNECT:{}", socket.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Unprivileged {
            child,
            input,
            output,
        }
    }

    fn call(&mut self, request: Value) -> Value {
        writeln!(self.input, "{request}").unwrap();
        self.input.flush().unwrap();
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("answer {line:?}: {e}"))
    }

    fn register(&mut self, user: &str) -> Value {
        self.call(serde_json::json!({"op": "register", "user": user, "password": "reloaded config works"}))
    }
}

impl Drop for Unprivileged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn error_code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or("")
}

/// Rewrites `registration_open` in the daemon's config, sends SIGHUP and waits for the log
/// to say the reload happened.
fn reload_with_registration(daemon: &Daemon, open: bool, reloads_before: usize) {
    let text = fs::read_to_string(&daemon.config).unwrap();
    let text = text.replace(
        &format!("registration_open = {}", !open),
        &format!("registration_open = {open}"),
    );
    fs::write(&daemon.config, text).unwrap();
    hangup(daemon, reloads_before);
}

#[test]
fn sighup_toggles_registration_without_dropping_connections() {
    if !require_peer(SETPRIV, "util-linux") || !require_peer(SOCAT, "socat") {
        return;
    }
    let daemon = Daemon::start_with(
        "socket_group = \"nogroup\"\nregistration_open = false\n\
         [permissions]\ndefault = [\"verify\", \"exists\", \"register\"]\n",
    );
    let mut admin = daemon.client();
    let mut service = Unprivileged::connect(&daemon.socket);
    let closed = service.register("before-hup");
    assert_eq!(error_code(&closed), "registration_closed", "{closed}");

    reload_with_registration(&daemon, true, 0);
    let log = daemon.log_text();
    assert!(log.contains("registration_open false -> true"), "{log}");
    let opened = service.register("after-hup");
    assert_eq!(opened["ok"], true, "{opened}");

    reload_with_registration(&daemon, false, 1);
    let closed_again = service.register("after-second-hup");
    assert_eq!(
        error_code(&closed_again),
        "registration_closed",
        "{closed_again}"
    );

    // Both connections lived through both reloads.
    let hello: HelloInfo = admin.call(&Request::Hello).unwrap();
    assert!(hello.server.starts_with("qamd "));
    let exists = service.call(serde_json::json!({"op": "exists", "user": "after-hup"}));
    assert_eq!(exists["exists"], true, "{exists}");
}

/// Polls `done` for up to 10 s; on time-out fails with `what` and the log.
fn wait_for(what: &str, done: impl FnMut() -> bool, log: impl Fn() -> String) {
    assert!(poll_until(within(10), done), "{what}; log:\n{}", log());
}

/// Sends SIGHUP and waits until the log shows `message` more than `before` times.
fn hangup_until(daemon: &Daemon, message: &str, before: usize) {
    let pid = nix::unistd::Pid::from_raw(daemon.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for(
        &format!("no `{message}` after SIGHUP"),
        || daemon.log_text().matches(message).count() > before,
        || daemon.log_text(),
    );
}

/// Sends SIGHUP and waits until the log shows one more "config reloaded" than `before`.
fn hangup(daemon: &Daemon, before: usize) {
    hangup_until(daemon, "config reloaded", before);
}

#[test]
fn sighup_switches_hash_parameters_for_new_hashes_only() {
    let daemon = Daemon::start();
    daemon.add_user("old-params", "hashed before the reload");
    let text = fs::read_to_string(&daemon.config).unwrap();
    fs::write(&daemon.config, text.replace("m_cost = 256", "m_cost = 512")).unwrap();
    hangup(&daemon, 0);
    assert!(daemon
        .log_text()
        .contains("m_cost=256 t_cost=1 p_cost=1 -> m_cost=512"));
    daemon.add_user("new-params", "hashed after the reload");

    let records = daemon.export();
    let hash_of = |name: &str| {
        let record = records.iter().find(|r| r.name == name).unwrap();
        record.hash.clone()
    };
    assert!(
        hash_of("old-params").contains("m=256,"),
        "{}",
        hash_of("old-params")
    );
    assert!(
        hash_of("new-params").contains("m=512,"),
        "{}",
        hash_of("new-params")
    );
}

#[test]
fn invalid_config_on_sighup_keeps_the_running_one() {
    let daemon = Daemon::start_with("registration_open = false\n");
    fs::write(&daemon.config, "this is = not [ toml").unwrap();
    hangup_until(&daemon, "config reload refused", 0);
    let hello: HelloInfo = daemon.client().call(&Request::Hello).unwrap();
    assert!(hello.server.starts_with("qamd "));
}

const STRACE: &str = "/usr/bin/strace";

/// Every system call in a `systemd-analyze syscall-filter` group, nested groups expanded;
/// a plain system call name stands for itself.
fn syscall_group(group: &str) -> BTreeSet<String> {
    if !group.starts_with('@') {
        return BTreeSet::from([group.to_owned()]);
    }
    let out = Command::new(ANALYZE)
        .args(["syscall-filter", group])
        .output()
        .unwrap();
    assert!(out.status.success(), "unknown syscall group {group}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut names = BTreeSet::new();
    for line in text.lines().skip(1).map(str::trim) {
        if line.starts_with('@') {
            names.extend(syscall_group(line));
        } else if !line.is_empty() && !line.starts_with('#') {
            names.insert(line.to_owned());
        }
    }
    names
}

/// What qamd.service's SystemCallFilter= lines allow: the allow-list minus every `~` line.
fn service_syscall_filter() -> BTreeSet<String> {
    let unit = fs::read_to_string(workspace_root().join("systemd/qamd.service")).unwrap();
    let mut allowed = BTreeSet::new();
    for value in unit
        .lines()
        .filter_map(|line| line.strip_prefix("SystemCallFilter="))
    {
        match value.strip_prefix('~') {
            Some(denied) => {
                for group in denied.split_whitespace() {
                    for name in syscall_group(group) {
                        allowed.remove(&name);
                    }
                }
            }
            None => {
                for group in value.split_whitespace() {
                    allowed.extend(syscall_group(group));
                }
            }
        }
    }
    allowed
}

#[test]
fn qamd_stays_within_the_service_syscall_filter() {
    if !require_peer(ANALYZE, "systemd") || !require_peer(STRACE, "strace") {
        return;
    }
    // Without systemd as PID 1 the unit cannot run here: trace a real qamd through start,
    // every kind of work, a reload and a graceful stop, and check each call it made.
    let dir = shared_tempdir();
    let socket = dir.path().join("traced.sock");
    let config = dir.path().join("qamd.toml");
    let trace = dir.path().join("trace");
    let log = dir.path().join("qamd.log");
    fs::write(
        &config,
        format!(
            "socket = {:?}\ndata_dir = {:?}\nsocket_group = \"\"\n{CHEAP_HASH}",
            socket.to_str().unwrap(),
            dir.path().join("data").to_str().unwrap(),
        ),
    )
    .unwrap();
    let mut strace = Command::new(STRACE)
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .arg(bin("qamd"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .env_remove("JOURNAL_STREAM")
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let options = ClientOptions::new(&socket).with_timeout(Duration::from_secs(20));
    let mut connected = None;
    wait_for(
        "traced qamd did not start",
        || {
            connected = Client::connect(&options).ok();
            connected.is_some()
        },
        String::new,
    );
    let mut client = connected.unwrap();
    let password = Password::from("traced and allowed");
    let register = Request::Register {
        user: "traced".into(),
        password: password.clone(),
        force: false,
        reuse_name: false,
    };
    client.call::<NameInfo>(&register).unwrap();
    assert!(client.verify("traced", &password).unwrap());
    assert!(!client.verify("traced", &Password::from("wrong")).unwrap());
    client.call::<serde_json::Value>(&Request::Status).unwrap();
    drop(client);

    // The listening process's pid, from the socket's peer credentials.
    let stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let creds =
        nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials).unwrap();
    drop(stream);
    let qamd = nix::unistd::Pid::from_raw(creds.pid());
    nix::sys::signal::kill(qamd, nix::sys::signal::Signal::SIGHUP).unwrap();
    let log_text = || fs::read_to_string(&log).unwrap_or_default();
    wait_for(
        "no `config reloaded` after SIGHUP",
        || log_text().contains("config reloaded"),
        log_text,
    );
    nix::sys::signal::kill(qamd, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(strace.wait().unwrap().success());

    let allowed = service_syscall_filter();
    assert!(
        allowed.contains("read") && !allowed.contains("chown"),
        "{allowed:?}"
    );
    let traced = fs::read_to_string(&trace).unwrap();
    let used: BTreeSet<&str> = traced
        .lines()
        .filter_map(|line| line.split_once(' ').map(|(_, call)| call.trim_start()))
        .filter_map(|call| call.split_once('(').map(|(name, _)| name))
        .filter(|name| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
        .collect();
    assert!(
        used.contains("accept4") || used.contains("accept"),
        "{used:?}"
    );
    let refused: Vec<&&str> = used
        .iter()
        .filter(|name| !allowed.contains(**name))
        .collect();
    assert!(
        refused.is_empty(),
        "qamd made system calls qamd.service's SystemCallFilter= refuses: {refused:?}"
    );
}
