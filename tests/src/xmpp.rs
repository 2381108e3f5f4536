//! Real XMPP servers for qam's tests (ejabberd and Prosody, started in temp dirs on 127.0.0.1
//! as their Debian service users) and a minimal client that performs one SASL PLAIN login.

use base64ct::{Base64, Encoding};
use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The answer of a SASL PLAIN exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    Success,
    /// `<failure>` with the server's condition and text.
    Failure(String),
}

/// Opens a c2s stream to `domain` on 127.0.0.1:`port`; returns it with its features.
fn open_stream(port: u16, domain: &str) -> io::Result<(TcpStream, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.set_nodelay(true)?;
    write!(
        stream,
        "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    )?;
    let features = read_until(&mut stream, &["</stream:features>"])?;
    Ok((stream, features))
}

/// Sends SASL PLAIN for `user` on an open stream; returns the server's `<success` or
/// `<failure>` answer.
fn sasl_plain(stream: &mut TcpStream, user: &str, password: &str) -> io::Result<String> {
    let token = Base64::encode_string(format!("\0{user}\0{password}").as_bytes());
    write!(
        stream,
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
    )?;
    read_until(stream, &["<success", "</failure>"])
}

/// Opens a c2s stream to `domain` on 127.0.0.1:`port` and tries SASL PLAIN once.
pub fn plain_login(port: u16, domain: &str, user: &str, password: &str) -> io::Result<Login> {
    let (mut stream, features) = open_stream(port, domain)?;
    if !features.contains(">PLAIN<") {
        return Err(io::Error::other(format!("PLAIN not offered: {features}")));
    }
    let answer = sasl_plain(&mut stream, user, password)?;
    let _ = stream.write_all(b"</stream:stream>");
    if answer.contains("<success") {
        Ok(Login::Success)
    } else {
        let start = answer.find("<failure").unwrap_or(0);
        Ok(Login::Failure(answer[start..].to_owned()))
    }
}

/// A c2s session kept open after SASL PLAIN and resource binding, to watch the server end it.
pub struct Session {
    /// The authenticated stream.
    stream: TcpStream,
}

impl Session {
    /// Logs `user` in on 127.0.0.1:`port` and binds a resource.
    pub fn open(port: u16, domain: &str, user: &str, password: &str) -> io::Result<Session> {
        let (mut stream, _) = open_stream(port, domain)?;
        let answer = sasl_plain(&mut stream, user, password)?;
        if !answer.contains("<success") {
            return Err(io::Error::other(format!("login refused: {answer}")));
        }
        write!(
            stream,
            "<stream:stream to='{domain}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        )?;
        read_until(&mut stream, &["</stream:features>"])?;
        let mut session = Session { stream };
        session.iq(
            "bind",
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
        )?;
        Ok(session)
    }

    /// Sends `<iq id='ID' ...>` and reads until the server's answer to `id` has come (pushes
    /// before it are returned too).
    pub fn iq(&mut self, id: &str, iq: &str) -> io::Result<String> {
        self.stream.write_all(iq.as_bytes())?;
        read_until(
            &mut self.stream,
            &[&format!("id='{id}'"), &format!("id=\"{id}\"")],
        )
    }

    /// Hands the session to a reader thread that records when the server ends it, after
    /// sending presence (so that messages to the bare JID reach it).
    pub fn watch(mut self) -> io::Result<crate::session::Watched> {
        self.stream.write_all(b"<presence/>")?;
        crate::session::Watched::new(self.stream, "</stream:stream>")
    }

    /// Waits for the server to close the stream; returns what it sent last (its stream error).
    pub fn closed_by_server(&mut self) -> io::Result<String> {
        read_until(&mut self.stream, &["</stream:stream>"])
    }
}

/// Locks `user` in `qamd` while a session of theirs is open on `port` (domain `localhost`);
/// answers what the server sent as it closed the session, after unlocking the account again.
pub fn lock_ends_a_session(qamd: &crate::Daemon, port: u16, user: &str, password: &str) -> String {
    let mut session = Session::open(port, "localhost", user, password).expect("a session");
    qamd.lock_user(user);
    let closed = session
        .closed_by_server()
        .expect("the server closes the session");
    qamd.client()
        .call::<qam_client::wire::Done>(&qam_client::Request::Unlock { user: user.into() })
        .expect("unlock");
    closed
}

/// Time from opening a c2s stream to `domain` to receiving its features: how quickly the
/// server's event loop serves a new client.
pub fn stream_open_time(port: u16, domain: &str) -> io::Result<Duration> {
    let start = Instant::now();
    let (mut stream, _) = open_stream(port, domain)?;
    let took = start.elapsed();
    let _ = stream.write_all(b"</stream:stream>");
    Ok(took)
}

/// Reads until the text received holds one of `markers`.
fn read_until(stream: &mut TcpStream, markers: &[&str]) -> io::Result<String> {
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream closed: {}", String::from_utf8_lossy(&text)),
            ));
        }
        text.extend_from_slice(&buf[..n]);
        let seen = String::from_utf8_lossy(&text);
        if markers.iter().any(|marker| seen.contains(marker)) {
            return Ok(seen.into_owned());
        }
    }
}

/// qamd's default (production) argon2id cost, for timing logins as users will see them.
pub const PRODUCTION_HASH: &str = "[hash]\nm_cost = 19456\nt_cost = 2\np_cost = 1\n";

/// Times one login, which must succeed.
pub fn timed_login(login: impl FnOnce() -> io::Result<Login>) -> Duration {
    let start = Instant::now();
    let outcome = login().expect("login exchange");
    let took = start.elapsed();
    assert_eq!(outcome, Login::Success);
    took
}

/// The median of some durations.
pub fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// Medians of `runs` SASL PLAIN logins of the same user on two hosts of one server (through
/// qam, and through the server's own store), alternating so both see the same machine load.
pub fn compare_logins(
    runs: usize,
    port: u16,
    (qam_host, builtin_host): (&str, &str),
    user: &str,
    password: &str,
) -> (Duration, Duration) {
    let mut qam = Vec::with_capacity(runs);
    let mut builtin = Vec::with_capacity(runs);
    for _ in 0..runs {
        qam.push(timed_login(|| plain_login(port, qam_host, user, password)));
        builtin.push(timed_login(|| {
            plain_login(port, builtin_host, user, password)
        }));
    }
    (median(qam), median(builtin))
}

/// Runs from `QAM_BENCH_RUNS`, else 101.
pub fn bench_runs() -> usize {
    std::env::var("QAM_BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(101)
}

/// Waits until something listens on 127.0.0.1:`port`.
fn wait_for_port(port: u16, what: &str, log: &Path) {
    let listening = crate::poll_until(crate::within(30), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(
        listening,
        "{what} did not listen on port {port}; log:\n{}",
        fs::read_to_string(log).unwrap_or_default()
    );
}

/// Gives a directory tree to a service user (`chown -R`).
fn chown_to(dir: &Path, user: &str) {
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:"))
        .arg(dir)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown {user} {}", dir.display());
}

/// Kills a process group started with `process_group(0)`.
fn kill_group(child: &mut Child) {
    let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
    let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
}

/// Copies qam-extauth into `dir` where user `ejabberd` can run it, wherever the checkout lives.
pub fn install_extauth(dir: &Path) -> PathBuf {
    let program = dir.join("qam-extauth");
    fs::copy(crate::bin("qam-extauth"), &program).expect("copy qam-extauth");
    fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod qam-extauth");
    program
}

/// ejabberd's `hosts:` and auth settings as README's ejabberd section gives them: `localhost`
/// authenticated by qam-extauth (`program`, installed from `qamd`'s dir) and
/// `builtin.localhost` by ejabberd's own store.
pub fn extauth_hosts(qamd: &crate::Daemon) -> String {
    let program = install_extauth(qamd.dir.path());
    format!(
        "hosts:\n  - localhost\n  - builtin.localhost\nauth_method: [external]\n\
         extauth_program: \"{} --socket {} --domain localhost\"\nextauth_pool_size: 1\n\
         auth_use_cache: false\nhost_config:\n  builtin.localhost:\n    auth_method: [internal]\n",
        program.display(),
        qamd.socket.display()
    )
}

/// A running ejabberd 23.01 node with its own config, spool and logs.
pub struct Ejabberd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    node: String,
    child: Option<Child>,
}

impl Ejabberd {
    /// Starts ejabberd with a c2s listener on 127.0.0.1:`port` (no TLS) and `hosts_yaml`
    /// (the `hosts:` list and auth settings, e.g. `auth_method: [external]`).
    pub fn start(port: u16, node: &str, hosts_yaml: &str) -> Ejabberd {
        Ejabberd::start_with(port, node, hosts_yaml, "")
    }

    /// `start` with `modules_yaml` (more entries of the `modules:` map, indented two spaces:
    /// `  mod_offline: {}`) beside the test's own.
    pub fn start_with(port: u16, node: &str, hosts_yaml: &str, modules_yaml: &str) -> Ejabberd {
        let dir = crate::shared_tempdir();
        // Deviates from README on purpose: `starttls: false` on loopback (no certificate).
        let config = format!(
            "{hosts_yaml}\nloglevel: info\nlisten:\n  - port: {port}\n    ip: \"127.0.0.1\"\n    module: ejabberd_c2s\n    starttls: false\n\
             modules:\n  mod_disco: {{}}\n  mod_roster: {{}}\n  mod_ping: {{}}\n  mod_admin_extra: {{}}\n{modules_yaml}"
        );
        fs::write(dir.path().join("ejabberd.yml"), config).expect("write ejabberd.yml");
        fs::write(
            dir.path().join("ejabberdctl.cfg"),
            "INET_DIST_INTERFACE=127.0.0.1\nERL_EPMD_ADDRESS=127.0.0.1\n",
        )
        .expect("write ejabberdctl.cfg");
        fs::create_dir_all(dir.path().join("spool")).expect("spool dir");
        fs::create_dir_all(dir.path().join("logs")).expect("logs dir");
        chown_to(dir.path(), "ejabberd");
        let out = fs::File::create(dir.path().join("foreground.out")).expect("output file");
        let mut ejabberd = Ejabberd {
            port,
            node: node.to_owned(),
            child: None,
            dir,
        };
        let child = ejabberd
            .command()
            .arg("foreground")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("fd"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("start ejabberd");
        ejabberd.child = Some(child);
        wait_for_port(port, "ejabberd", &ejabberd.log_path());
        let ready = crate::poll_until(crate::within(30), || {
            ejabberd.ctl(&["status"]).status.success()
        });
        assert!(ready, "ejabberd not ready:\n{}", ejabberd.log_text());
        ejabberd
    }

    /// The options every `ejabberdctl` call against this node starts with.
    pub fn ctl_options(&self) -> Vec<String> {
        let d = self.dir.path();
        let path = |name: &str| d.join(name).display().to_string();
        vec![
            "--config".into(),
            path("ejabberd.yml"),
            "--ctl-config".into(),
            path("ejabberdctl.cfg"),
            "--spool".into(),
            path("spool"),
            "--logs".into(),
            path("logs"),
            "--node".into(),
            self.node.clone(),
        ]
    }

    fn command(&self) -> Command {
        let mut command = Command::new("/usr/sbin/ejabberdctl");
        command.args(self.ctl_options());
        command
    }

    /// The node's Mnesia spool directory.
    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// Runs `ejabberdctl ARGS` against this node.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ejabberdctl")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("logs").join("ejabberd.log")
    }

    /// ejabberd's own log (extauth's stderr lines land in `foreground.out`).
    pub fn log_text(&self) -> String {
        let mut text = fs::read_to_string(self.log_path()).unwrap_or_default();
        text.push_str(
            &fs::read_to_string(self.dir.path().join("foreground.out")).unwrap_or_default(),
        );
        text
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop"]);
        if let Some(mut child) = self.child.take() {
            crate::poll_until(crate::within(15), || {
                matches!(child.try_wait(), Ok(Some(_)))
            });
            kill_group(&mut child);
        }
        // epmd refuses to die while another node is registered with it.
        let _ = Command::new("epmd")
            .arg("-kill")
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let logs = fs::read_dir(self.dir.path().join("logs"))
            .into_iter()
            .flatten();
        for log in logs.flatten().map(|entry| entry.path()) {
            crate::keep_log(self.dir.path(), &log);
        }
        crate::keep_log(self.dir.path(), &self.dir.path().join("foreground.out"));
    }
}

/// A running Prosody 0.12 as user `prosody` (with its groups, as under systemd), with its own
/// config and data dir.
pub struct Prosody {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub config: PathBuf,
    child: Option<Child>,
}

impl Prosody {
    /// Starts Prosody on 127.0.0.1:`port` (no TLS, PLAIN allowed, in-band registration on)
    /// with `hosts_lua` (VirtualHost sections with their `authentication`).
    pub fn start(port: u16, hosts_lua: &str) -> Prosody {
        Prosody::start_with(port, "", hosts_lua)
    }

    /// `start` with `globals` (global Lua lines) after the test's own, which they may override
    /// (a later assignment wins: `modules_enabled`, `http_ports`).
    pub fn start_with(port: u16, globals: &str, hosts_lua: &str) -> Prosody {
        let dir = crate::shared_tempdir();
        let d = dir.path().display().to_string();
        // The module is copied so Prosody's user can read it wherever the checkout lives.
        let plugins = dir.path().join("plugins");
        fs::create_dir_all(&plugins).expect("plugins dir");
        fs::copy(
            crate::workspace_root().join("adapters/prosody/mod_auth_qam.lua"),
            plugins.join("mod_auth_qam.lua"),
        )
        .expect("copy mod_auth_qam.lua");
        let config = dir.path().join("prosody.cfg.lua");
        // Deviates from README on purpose: plaintext c2s on loopback (no certificate to make),
        // registration without rate limit; everything about authentication is README's.
        let text = format!(
            r#"data_path = "{d}/data"
pidfile = "{d}/prosody.pid"
plugin_paths = {{ "{plugins}" }}
log = {{ {{ levels = {{ min = "debug" }}, to = "file", filename = "{d}/prosody.log" }} }}
c2s_ports = {{ {port} }}
c2s_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{}}
http_ports = {{}}
https_ports = {{}}
c2s_direct_tls_ports = {{}}
s2s_direct_tls_ports = {{}}
modules_enabled = {{ "roster", "saslauth", "disco", "ping", "register", "admin_shell" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
allow_registration = true
min_seconds_between_registrations = 0
{globals}
{hosts_lua}
"#,
            plugins = plugins.display()
        );
        fs::write(&config, text).expect("write prosody config");
        fs::create_dir_all(dir.path().join("data")).expect("data dir");
        chown_to(dir.path(), "prosody");
        let mut prosody = Prosody {
            dir,
            port,
            config,
            child: None,
        };
        prosody.spawn();
        prosody
    }

    /// Starts the Prosody process (again) on the same config.
    pub fn spawn(&mut self) {
        let out = fs::File::create(self.dir.path().join("foreground.out")).expect("output file");
        let child = crate::identity::Identity::service_user("prosody")
            .command("/usr/bin/prosody")
            .arg("--config")
            .arg(&self.config)
            .arg("-F")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("fd"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("start prosody");
        self.child = Some(child);
        wait_for_port(self.port, "prosody", &self.dir.path().join("prosody.log"));
    }

    /// Runs `prosodyctl --config FILE ARGS` (it switches to user prosody itself).
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new("/usr/bin/prosodyctl")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run prosodyctl")
    }

    /// Prosody's `data_path`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Prosody's log.
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.dir.path().join("prosody.log")).unwrap_or_default()
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
        for log in ["prosody.log", "foreground.out"] {
            crate::keep_log(self.dir.path(), &self.dir.path().join(log));
        }
    }
}

/// The XEP-0077 client (python3-slixmpp) for registration, password change and removal.
const ACCOUNT_SCRIPT: &str = include_str!("xmpp_account.py");

/// Runs `action` (`register`, `passwd` or `unregister`) for `jid` on 127.0.0.1:`port` with
/// python3-slixmpp; returns its verdict: `OK` or `ERROR <condition>`.
pub fn xmpp_account(
    action: &str,
    port: u16,
    jid: &str,
    password: &str,
    new: Option<&str>,
) -> String {
    let script = tempfile::Builder::new()
        .suffix(".py")
        .tempfile()
        .expect("script file");
    fs::write(script.path(), ACCOUNT_SCRIPT).expect("write script");
    let output = Command::new("/usr/bin/python3")
        .arg(script.path())
        .args([action, &port.to_string(), jid, password])
        .args(new)
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    let verdict = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if verdict.is_empty() {
        return format!("ERROR script: {}", String::from_utf8_lossy(&output.stderr));
    }
    verdict
}
