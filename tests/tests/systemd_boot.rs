//! qam's Debian package under a real systemd: Debian 12 booted with systemd-nspawn, the .deb
//! from packaging/build-deb installed with `dpkg -i`, then README's install steps run inside.
//!
//! The root filesystem is made once with debootstrap and cached as a tarball in
//! /var/cache/qam-tests (outside the clone, reused by every run; a fresh machine builds it);
//! every boot starts from it clean (`--volatile=overlay`). The 0.1.0 package the upgrade
//! starts from is built once from its commit and cached there too. A unit the package gains
//! is one more row in `UNITS`.

use qam_client::wire::{HelloInfo, NameInfo};
use qam_client::{Client, ClientOptions, Password, Request, TrustedDaemon};
use qam_tests::container::{self, Container, Script};
use qam_tests::deployment::MAX_HOOKS_EXPOSURE;
use qam_tests::identity::Identity;
use qam_tests::xmpp;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The highest `systemd-analyze security` exposure any of qam's services may have.
const MAX_EXPOSURE: f64 = 1.5;

/// What the tests know about one of the package's units.
struct Unit {
    /// The unit's file name.
    name: &'static str,
    /// How the unit is checked.
    kind: Kind,
}

enum Kind {
    /// A socket unit started by `systemctl enable --now` after README's configuration step;
    /// its service starts on the first connection, and `probe` gets an answer through it (a
    /// harmless question).
    Socket {
        /// Where it listens.
        path: &'static str,
        /// The socket file's mode, owner and group, as `stat -c '%a %U:%G'` prints them.
        access: &'static str,
        /// The service systemd starts for it.
        service: &'static str,
        /// README's configuration step before the socket is enabled (a shell script inside).
        setup: &'static str,
        /// Asks something through the socket (reached from the host), returns the answer.
        probe: fn(&Path) -> Result<String, String>,
    },
    /// A long-running service, checked while it runs: the user it runs as, the only paths it
    /// may write (besides its private /tmp and /var/tmp), and `systemd-analyze security`.
    Service {
        /// The unprivileged user it runs as.
        user: &'static str,
        /// The directories it may write.
        writable: &'static [&'static str],
    },
}

/// README "Shell accounts": `[nss] enabled = true` in qamd.toml (Debian's nsswitch.conf
/// already names `systemd`).
const NSS_SETUP: &str = "grep -E '^(passwd|group):.*systemd' /etc/nsswitch.conf \
    && sed -i 's/^#enabled = false/enabled = true/' /etc/qam/qamd.toml \
    && grep -qx 'enabled = true' /etc/qam/qamd.toml";

/// README "The self-service page", steps 1 and 2: `web_url` and the pages' grants in
/// qamd.toml, and /etc/qam/qam-web.toml.
const WEB_SETUP: &str = "echo 'site_name = \"example.org\"' > /etc/qam/qam-web.toml && sed -i -e '1i web_url = \"https://account.example.org\"' \
    -e '/^\\[permissions.users\\]$/a qam-web = [\"status\", \"register\", \"register_invite\", \"invite_info\", \"change_password\", \"reset_info\", \"reset_password\"]' \
    /etc/qam/qamd.toml && grep -q '^qam-web = ' /etc/qam/qamd.toml";

/// Every unit the package ships, in the order README enables them.
const UNITS: &[Unit] = &[
    Unit {
        name: "qamd.socket",
        kind: Kind::Socket {
            path: "/run/qam/qamd.sock",
            access: "660 root:qam",
            service: "qamd.service",
            setup: "",
            probe: probe_qamd,
        },
    },
    Unit {
        name: "qamd-saslauthd.socket",
        kind: Kind::Socket {
            path: "/run/qam/saslauthd/mux",
            access: "660 root:qam",
            service: "qamd.service",
            setup: "",
            probe: probe_saslauthd,
        },
    },
    Unit {
        name: "qam-web.socket",
        kind: Kind::Socket {
            path: "/run/qam-web/web.sock",
            access: "660 root:www-data",
            service: "qam-web.service",
            setup: WEB_SETUP,
            probe: probe_web,
        },
    },
    Unit {
        name: "qamd.service",
        kind: Kind::Service {
            user: "qam",
            writable: &["/var/lib/qam", "/run/qam"],
        },
    },
    Unit {
        name: "qam-web.service",
        kind: Kind::Service {
            user: "qam-web",
            writable: &[],
        },
    },
];

/// The NSS door qamd binds itself with `[nss] enabled`, and the package's link to it where
/// nss-systemd looks.
const USERDB_SOCKET: &str = "/run/qam/io.qam";
const USERDB_LINK: &str = "/run/systemd/userdb/io.qam";

/// How much longer than without the NSS door a restart of qamd may take with it.
const NSS_RESTART_SLACK: Duration = Duration::from_secs(2);

/// What the tests use of a socket unit's row.
struct SocketRow {
    /// The socket unit.
    unit: &'static str,
    /// Where it listens.
    path: &'static str,
    /// Mode, owner and group (`stat -c '%a %U:%G'`).
    access: &'static str,
    /// The service it starts.
    service: &'static str,
    /// README's step before enabling it.
    setup: &'static str,
    /// A harmless question through it.
    probe: fn(&Path) -> Result<String, String>,
}

fn sockets() -> impl Iterator<Item = SocketRow> {
    UNITS.iter().filter_map(|unit| match unit.kind {
        Kind::Socket {
            path,
            access,
            service,
            setup,
            probe,
        } => Some(SocketRow {
            unit: unit.name,
            path,
            access,
            service,
            setup,
            probe,
        }),
        Kind::Service { .. } => None,
    })
}

fn services() -> impl Iterator<Item = (&'static str, &'static str, &'static [&'static str])> {
    UNITS.iter().filter_map(|unit| match unit.kind {
        Kind::Service { user, writable } => Some((unit.name, user, writable)),
        Kind::Socket { .. } => None,
    })
}

/// Client options for qamd's socket as the host sees it (the test is root there and inside:
/// an admin). The listening socket belongs to systemd, so the peer is root.
fn host_options(socket: &Path) -> ClientOptions {
    ClientOptions::new(socket)
        .with_timeout(Duration::from_secs(30))
        .with_trusted(TrustedDaemon::uids([0]))
}

fn probe_qamd(socket: &Path) -> Result<String, String> {
    let mut client = Client::connect(&host_options(socket)).map_err(|e| e.to_string())?;
    let hello: HelloInfo = client.call(&Request::Hello).map_err(|e| e.to_string())?;
    Ok(format!("{hello:?}"))
}

/// One saslauthd request (login, password, service, realm; each a 16-bit length and bytes);
/// returns the answer's text.
fn saslauthd_ask(socket: &Path, user: &str, password: &str) -> Result<String, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut request = Vec::new();
    for field in [user, password, "smtp", ""] {
        let len = u16::try_from(field.len()).map_err(|e| e.to_string())?;
        request.extend_from_slice(&len.to_be_bytes());
        request.extend_from_slice(field.as_bytes());
    }
    stream.write_all(&request).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(answer.get(2..).unwrap_or_default()).into_owned())
}

fn probe_saslauthd(socket: &Path) -> Result<String, String> {
    saslauthd_ask(socket, "nobody-here", "x")
}

/// One varlink call to a userdb socket (NUL-terminated JSON); returns the answer.
fn userdb_ask(socket: &Path, call: &str) -> Result<String, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("{call}\0").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut byte = [0u8];
    loop {
        match stream.read(&mut byte).map_err(|e| e.to_string())? {
            0 => return Err(format!("closed after {answer:?}")),
            _ if byte[0] == 0 => break,
            _ => answer.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn probe_userdb(socket: &Path) -> Result<String, String> {
    let answer = userdb_ask(
        socket,
        r#"{"method":"io.systemd.UserDatabase.GetUserRecord","parameters":{"userName":"nobody-here","service":"io.qam"}}"#,
    )?;
    if answer.contains("io.systemd.UserDatabase.NoRecordFound") {
        Ok(answer)
    } else {
        Err(answer)
    }
}

/// One HTTP/1.1 request to qam-web's Unix socket, as nginx sends it (README's block sets
/// `Host`); a POST says it comes from the page itself. Returns the whole answer.
fn web_request(socket: &Path, method: &str, path: &str, body: &str) -> Result<String, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let form = if method == "POST" {
        "Content-Type: application/x-www-form-urlencoded\r\nSec-Fetch-Site: same-origin\r\n"
    } else {
        ""
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: account.example.org\r\nConnection: close\r\n\
         {form}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    Ok(answer)
}

/// The sign-up page (closed to strangers until an admin opens registration or sends an invite).
fn probe_web(socket: &Path) -> Result<String, String> {
    let answer = web_request(socket, "GET", "/join", "")?;
    if answer.starts_with("HTTP/1.1 403 ") {
        Ok(answer)
    } else {
        Err(answer)
    }
}

/// `qamctl user add NAME` inside, the password on stdin (not a terminal there).
fn add_user(box_: &Container, name: &str, password: &str) {
    box_.ok(
        Script::new(&format!("qamctl user add {name} --password-stdin"))
            .stdin(&format!("{password}\n")),
    );
}

/// `qamctl verify NAME` inside: true when accepted, false when denied (exit 1).
fn verify(box_: &Container, name: &str, password: &str) -> bool {
    let out = box_.run(
        Script::new(&format!("qamctl verify {name} --password-stdin"))
            .stdin(&format!("{password}\n")),
    );
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("qamctl verify {name}: {}", container::shown(&out)),
    }
}

fn main_pid(box_: &Container, service: &str) -> u32 {
    let pid = box_.property(service, "MainPID");
    pid.parse()
        .unwrap_or_else(|_| panic!("{service} MainPID {pid:?}"))
}

/// Waits until `service` runs a main process other than `old` and is active (READY reached).
fn wait_for_new_main_pid(box_: &Container, service: &str, old: u32) -> u32 {
    box_.wait_for(&format!("{service} running again"), || {
        let pid = main_pid(box_, service);
        (pid != 0 && pid != old && box_.property(service, "ActiveState") == "active").then_some(pid)
    })
}

/// README's first steps: the package installed, then `systemctl enable --now` of every socket
/// unit in README's order. Returns the container with qamd not yet started.
fn installed_and_enabled(box_: &Container, debs: &container::Debs) {
    box_.install_deb(&debs.new);
    for unit in UNITS {
        // `indirect`: a service enabled through its socket (`Also=`).
        let state = box_.ok(Script::new(&format!(
            "systemctl is-enabled {} || true",
            unit.name
        )));
        assert!(
            ["disabled", "indirect", "static"].contains(&state.trim()),
            "{}: the package enables nothing by itself, yet it is {state}",
            unit.name
        );
    }
    enable(box_);
}

/// README's configuration step and `systemctl enable --now` for every socket unit; their
/// services wait for the first connection.
fn enable(box_: &Container) {
    for socket in sockets() {
        box_.ok(Script::new(socket.setup));
        box_.ok(Script::new(&format!(
            "systemctl enable --now {}",
            socket.unit
        )));
        assert_eq!(
            box_.property(socket.unit, "ActiveState"),
            "active",
            "{}",
            socket.unit
        );
        assert_eq!(
            box_.ok(Script::new(&format!(
                "stat -c '%a %U:%G %F' {}",
                socket.path
            )))
            .trim(),
            format!("{} socket", socket.access),
            "{}: {}",
            socket.unit,
            socket.path
        );
        assert_eq!(
            box_.property(socket.service, "ActiveState"),
            "inactive",
            "{} must wait for the first connection",
            socket.service
        );
    }
}

/// Every service of the package, running: unprivileged, no new privileges, seccomp, no
/// capabilities, its own network namespace, read-only `/` and nothing writable but its own
/// directories, `systemd-analyze security` exposure at most 1.5.
fn check_running_services(box_: &Container) {
    for (service, user, writable) in services() {
        let pid = main_pid(box_, service);
        assert_ne!(pid, 0, "{service} is not running");
        let status = box_.ok(Script::new(&format!("cat /proc/{pid}/status")));
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{name}:")))
                .map(|value| value.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|| panic!("{service}: no {name} in /proc/{pid}/status"))
        };
        let uid = box_
            .ok(Script::new(&format!("id -u {user}")))
            .trim()
            .to_owned();
        assert_eq!(
            field("Uid"),
            [uid.as_str(); 4].join(" "),
            "{service} runs as {user}"
        );
        assert_eq!(field("NoNewPrivs"), "1", "{service}");
        assert_eq!(field("Seccomp"), "2", "{service}: a seccomp filter");
        for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(field(caps), "0000000000000000", "{service}: {caps}");
        }
        let namespaces = box_.ok(Script::new(&format!(
            "readlink /proc/{pid}/ns/net /proc/1/ns/net"
        )));
        let mut lines = namespaces.lines();
        assert_ne!(
            lines.next(),
            lines.next(),
            "{service}: its own network namespace"
        );

        let mountinfo = box_.ok(Script::new(&format!("cat /proc/{pid}/mountinfo")));
        let mounts = container::mounts(&mountinfo);
        let root = mounts
            .iter()
            .rev()
            .find(|mount| mount.point == "/")
            .unwrap_or_else(|| panic!("{service}: no / in mountinfo"));
        assert!(!root.writable, "{service}: / is mounted read-only");
        // Every mount point, and the usual places beside them, tried with a file created as
        // the service's user in the service's own mount namespace.
        let mut places: Vec<&str> = mounts.iter().map(|mount| mount.point.as_str()).collect();
        places.extend([
            "/etc", "/var", "/var/lib", "/var/log", "/usr", "/root", "/run",
        ]);
        places.sort_unstable();
        places.dedup();
        let as_user = Identity::new(user, user).with_user_groups().shell_prefix();
        let probe = places
            .iter()
            .map(|place| {
                format!(
                    "if {as_user} touch '{place}/.qam-write-probe' 2>/dev/null; then \
                       rm -f '{place}/.qam-write-probe'; echo '{place}'; fi"
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        let written = box_.ok(Script::new(&format!("nsenter -t {pid} -m sh -s")).stdin(&probe));
        for place in written.lines() {
            let private_tmp = mounts
                .iter()
                .rev()
                .find(|mount| mount.point == place)
                .is_some_and(|mount| {
                    (place == "/tmp" || place == "/var/tmp")
                        && mount.root.contains("systemd-private-")
                });
            assert!(
                writable.contains(&place) || private_tmp,
                "{service} can write to {place} (only {writable:?} and its private /tmp, \
                 /var/tmp may be writable)"
            );
        }
        for place in writable.iter() {
            assert!(
                written.lines().any(|line| line == *place),
                "{service} cannot write to its {place}: {written}"
            );
        }

        assert_exposure_at_most(box_, service, MAX_EXPOSURE);
    }
}

/// `systemd-analyze security` of the running `service` is at most `bound`.
fn assert_exposure_at_most(box_: &Container, service: &str, bound: f64) {
    let security = box_.ok(Script::new(&format!(
        "systemd-analyze security --no-pager {service}"
    )));
    let exposure = security
        .lines()
        .find_map(|line| line.strip_prefix(&format!("→ Overall exposure level for {service}: ")))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{service}: no exposure level in:\n{security}"));
    println!("FIGURE systemd: {service} exposure online {exposure}");
    assert!(
        exposure <= bound,
        "{service}: exposure {exposure} above {bound}:\n{security}"
    );
}

/// Lines at priority warning or worse that qam's units logged (after `cursor` when given).
fn unit_warnings(box_: &Container, cursor: Option<&str>) -> String {
    let units: String = UNITS
        .iter()
        .map(|unit| format!(" -u {}", unit.name))
        .collect();
    let after = cursor
        .map(|c| format!(" --after-cursor='{c}'"))
        .unwrap_or_default();
    box_.ok(Script::new(&format!(
        "journalctl -q --no-pager -p warning -o short-monotonic{units}{after}"
    )))
}

/// Writers that keep registering accounts through qamd's socket, each on a new connection,
/// and remember every account qamd acknowledged and every connection that failed.
struct Writers {
    /// Set to end the writers.
    stop: Arc<AtomicBool>,
    /// Accounts whose `register` was answered ok.
    acknowledged: Arc<Mutex<Vec<String>>>,
    /// Connections that could not be made (e.g. "connection refused").
    refused: Arc<Mutex<Vec<String>>>,
    /// Joined by `finish`.
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    fn start(socket: &Path, count: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..count)
            .map(|writer| {
                let (stop, acknowledged, refused) =
                    (stop.clone(), acknowledged.clone(), refused.clone());
                let options = host_options(socket);
                std::thread::spawn(move || {
                    for n in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let name = format!("w{writer}n{n}");
                        let mut client = match Client::connect(&options) {
                            Ok(client) => client,
                            Err(e) => {
                                refused.lock().unwrap().push(e.to_string());
                                continue;
                            }
                        };
                        let request = Request::Register {
                            user: name.clone(),
                            password: Password::from("writer password"),
                            force: false,
                            reuse_name: false,
                        };
                        // A request cut off by the kill is not acknowledged: not counted.
                        if client.call::<NameInfo>(&request).is_ok() {
                            acknowledged.lock().unwrap().push(name);
                        }
                    }
                })
            })
            .collect();
        Writers {
            stop,
            acknowledged,
            refused,
            threads,
        }
    }

    fn acknowledged(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// Ends the writers; returns the acknowledged accounts and the failed connections.
    fn finish(self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        let acknowledged = self.acknowledged.lock().unwrap().clone();
        let refused = self.refused.lock().unwrap().clone();
        (acknowledged, refused)
    }
}

/// True when `user` exists, asked from the host through the socket.
fn exists(socket: &Path, user: &str) -> bool {
    let mut client = Client::connect(&host_options(socket)).expect("connect to qamd");
    client.exists(user).expect("exists")
}

/// The packages and a freshly booted container with the time the test's own part starts, or
/// None (a skip) when the tools are missing outside CI.
fn packages_and_a_boot() -> Option<(&'static container::Debs, Container, Instant)> {
    if !container::peers_present() {
        return None;
    }
    let debs = container::debs();
    let start = Instant::now();
    let (box_, booted) = Container::boot();
    println!("FIGURE systemd: boot to running {booted:?}");
    Some((debs, box_, start))
}

#[test]
fn readme_install_steps_under_a_real_systemd() {
    let Some((debs, box_, start)) = packages_and_a_boot() else {
        return;
    };
    installed_and_enabled(&box_, debs);
    let socket = box_.host_path("/run/qam/qamd.sock");

    // The first connection starts qamd (as `qam`); it answers once READY=1 was sent.
    let first = Instant::now();
    let answer = probe_qamd(&socket).expect("first connection");
    let first_answer = first.elapsed();
    assert!(answer.contains("HelloInfo"), "{answer}");
    let warm = Instant::now();
    probe_qamd(&socket).expect("second connection");
    let warm_answer = warm.elapsed();
    let started = box_.property("qamd.service", "ExecMainStartTimestampMonotonic");
    let ready = box_.property("qamd.service", "ActiveEnterTimestampMonotonic");
    let to_ready = ready
        .parse::<u64>()
        .ok()
        .zip(started.parse::<u64>().ok())
        .and_then(|(ready, started)| ready.checked_sub(started))
        .map(Duration::from_micros)
        .unwrap_or_else(|| panic!("timestamps {started:?} {ready:?}"));
    println!(
        "FIGURE systemd: socket activation to first answer {first_answer:?} \
         (exec to READY=1 {to_ready:?}; a warm answer {warm_answer:?})"
    );
    assert_eq!(box_.property("qamd.service", "Type"), "notify");
    assert_eq!(box_.property("qamd.service", "ActiveState"), "active");
    for socket in sockets() {
        let answer = (socket.probe)(&box_.host_path(socket.path));
        assert!(answer.is_ok(), "{}: {answer:?}", socket.unit);
    }

    add_user(&box_, "alice", "correct horse battery");
    assert!(verify(&box_, "alice", "correct horse battery"));
    assert!(!verify(&box_, "alice", "wrong horse"));
    // Abuse: a user outside a socket's group cannot even reach it.
    let nobody = Identity::new("nobody", "nogroup").shell_prefix();
    for SocketRow { path, .. } in sockets() {
        let outsider = box_.run(Script::new(&format!("{nobody} test -w {path}")));
        assert!(!outsider.status.success(), "nobody may write to {path}");
    }
    let outsider = box_.run(Script::new(&format!("{nobody} qamctl status")));
    assert!(
        !outsider.status.success()
            && String::from_utf8_lossy(&outsider.stderr).contains("Permission denied"),
        "{}",
        container::shown(&outsider)
    );
    let door = box_.host_path("/run/qam/saslauthd/mux");
    assert_eq!(
        saslauthd_ask(&door, "alice", "correct horse battery").as_deref(),
        Ok("OK")
    );

    // The self-service page through its socket: an invite made with qamctl, the sign-up page
    // it links to, an account made there (as nginx would forward it).
    let invite = box_.ok(Script::new("qamctl invite create"));
    let token = invite
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("https://account.example.org/join/")
        })
        .unwrap_or_else(|| panic!("no invite link in {invite}"));
    let page = box_.host_path("/run/qam-web/web.sock");
    let join = format!("/join/{token}");
    let form = web_request(&page, "GET", &join, "").expect("the sign-up page");
    assert!(
        form.starts_with("HTTP/1.1 200 ") && form.contains("name=\"user\""),
        "{form}"
    );
    let joined = web_request(
        &page,
        "POST",
        &join,
        "user=carol&password=violet+kettle+marching+sideways\
         &password_again=violet+kettle+marching+sideways",
    )
    .expect("the sign-up");
    assert!(
        joined.starts_with("HTTP/1.1 201 ") && joined.contains("Welcome, carol."),
        "{joined}"
    );
    assert!(verify(&box_, "carol", "violet kettle marching sideways"));

    // A changed setting, applied by `systemctl reload qamd` without a restart.
    let pid = main_pid(&box_, "qamd.service");
    let status = || box_.ok(Script::new("qamctl status --json"));
    let registration_open = || status().contains("\"registration_open\": true");
    assert!(!registration_open(), "{}", status());
    box_.ok(Script::new(
        "sed -i 's/^#registration_open = false/registration_open = true/' /etc/qam/qamd.toml \
         && grep -qx 'registration_open = true' /etc/qam/qamd.toml",
    ));
    box_.ok(Script::new("systemctl reload qamd"));
    box_.wait_for("registration open after the reload", || {
        registration_open().then_some(())
    });
    assert_eq!(
        main_pid(&box_, "qamd.service"),
        pid,
        "reload kept the process"
    );

    check_running_services(&box_);
    let warnings = unit_warnings(&box_, None);
    assert!(
        warnings.trim().is_empty(),
        "qam's units warned:\n{warnings}"
    );

    // `systemctl restart`: a new process serving the same store.
    box_.ok(Script::new("systemctl restart qamd"));
    let pid = wait_for_new_main_pid(&box_, "qamd.service", pid);
    assert!(verify(&box_, "alice", "correct horse battery"));

    // kill -9 while writers keep registering: systemd restarts qamd (Restart=on-failure),
    // every acknowledged account is there afterwards, and no connection is ever refused.
    let cursor = box_.cursor();
    let writers = Writers::start(&socket, 2);
    box_.wait_for("writes before the kill", || {
        (writers.acknowledged() >= 5).then_some(())
    });
    box_.ok(Script::new(&format!("kill -9 {pid}")));
    let before_restart = writers.acknowledged();
    let pid = wait_for_new_main_pid(&box_, "qamd.service", pid);
    box_.wait_for("writes after the restart", || {
        (writers.acknowledged() >= before_restart + 5).then_some(())
    });
    let (acknowledged, refused) = writers.finish();
    assert!(refused.is_empty(), "connections failed: {refused:?}");
    assert_eq!(box_.property("qamd.service", "NRestarts"), "1");
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|user| !exists(&socket, user))
        .collect();
    assert!(lost.is_empty(), "acknowledged, then lost: {lost:?}");
    println!(
        "FIGURE systemd: kill -9 under {} acknowledged writes, 0 lost, 0 refused",
        acknowledged.len()
    );
    // What systemd says about the kill, and nothing else.
    let warnings = unit_warnings(&box_, Some(&cursor));
    for line in warnings.lines() {
        assert!(
            line.contains("code=killed, status=9/KILL") || line.contains("result 'signal'"),
            "qam's units warned after the kill:\n{warnings}"
        );
    }

    // `systemctl stop`: the socket stays; the store was flushed (the next connection starts
    // qamd again, with every account).
    let cursor = box_.cursor();
    box_.ok(Script::new("systemctl stop qamd"));
    assert_eq!(box_.property("qamd.service", "ActiveState"), "inactive");
    assert_eq!(box_.property("qamd.service", "Result"), "success");
    assert_eq!(box_.property("qamd.service", "ExecMainStatus"), "0");
    assert_eq!(box_.property("qamd.socket", "ActiveState"), "active");
    assert!(socket.exists(), "the socket stays while qamd is stopped");
    assert!(exists(&socket, "alice"), "the next connection starts qamd");
    assert_eq!(box_.property("qamd.service", "ActiveState"), "active");
    assert!(acknowledged.iter().all(|user| exists(&socket, user)));
    assert_ne!(main_pid(&box_, "qamd.service"), pid);
    let warnings = unit_warnings(&box_, Some(&cursor));
    assert!(
        warnings.trim().is_empty(),
        "qam's units warned:\n{warnings}"
    );
    println!("FIGURE systemd: readme test took {:?}", start.elapsed());
}

#[test]
fn pam_and_prosody_through_the_packaged_modules() {
    let Some((debs, box_, start)) = packages_and_a_boot() else {
        return;
    };
    installed_and_enabled(&box_, debs);
    add_user(&box_, "alice", "correct horse battery");

    // pamtester as a service user in group `qam`, with README's lines (Dovecot's).
    box_.ok(Script::new(
        "adduser --quiet --system --group qam-pam-client && adduser --quiet qam-pam-client qam \
         && printf 'auth     required pam_qam.so\\naccount  required pam_qam.so\\n' \
            > /etc/pam.d/qam-pam-client",
    ));
    let pam_client = Identity::new("qam-pam-client", "qam-pam-client")
        .with_user_groups()
        .shell_prefix();
    let pamtester = |user: &str, password: &str| {
        box_.run(
            Script::new(&format!(
                "{pam_client} pamtester qam-pam-client {user} authenticate acct_mgmt"
            ))
            .stdin(&format!("{password}\n")),
        )
    };
    // Abuse: a service in group `qam` is no admin: it cannot create accounts.
    let mallory = box_.run(
        Script::new(&format!(
            "{pam_client} qamctl user add mallory --password-stdin"
        ))
        .stdin("mallory password\n"),
    );
    assert!(!mallory.status.success(), "{}", container::shown(&mallory));
    assert!(!verify(&box_, "mallory", "mallory password"));
    let right = pamtester("alice", "correct horse battery");
    assert!(right.status.success(), "{}", container::shown(&right));
    let wrong = pamtester("alice", "wrong horse");
    assert!(!wrong.status.success(), "{}", container::shown(&wrong));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("Authentication failure"),
        "{}",
        container::shown(&wrong)
    );

    // The packaged mod_auth_qam.lua in Debian's Prosody, set up as README says. The test
    // turns TLS off (no certificate in the container) so its client can send PLAIN.
    box_.ok(Script::new(
        "sed -i 's/^authentication = .*/authentication = \"qam\"\\nc2s_require_encryption = false\\nallow_unencrypted_plain_auth = true/' \
           /etc/prosody/prosody.cfg.lua \
         && grep -qx 'authentication = \"qam\"' /etc/prosody/prosody.cfg.lua \
         && adduser --quiet prosody qam && systemctl restart prosody && systemctl reload qamd",
    ));
    let login = |password: &'static str| {
        box_.in_network(move || {
            // Prosody's restart returns before it listens: wait until it stops refusing.
            let mut login = None;
            qam_tests::poll_until(qam_tests::within(30), || {
                let attempt = xmpp::plain_login(5222, "localhost", "alice", password);
                let refused =
                    matches!(&attempt, Err(e) if e.kind() == ErrorKind::ConnectionRefused);
                login = Some(attempt);
                !refused
            });
            login.expect("poll_until looks at least once")
        })
    };
    let right = login("correct horse battery");
    assert_eq!(
        right.ok(),
        Some(xmpp::Login::Success),
        "{}",
        box_.ok(Script::new("journalctl -q --no-pager -u prosody"))
    );
    let wrong = login("wrong horse");
    assert!(
        matches!(wrong, Ok(xmpp::Login::Failure(ref why)) if why.contains("not-authorized")),
        "{wrong:?}"
    );
    println!("FIGURE systemd: pam test took {:?}", start.elapsed());
}

#[test]
fn upgrade_from_0_1_0_keeps_accounts_and_removal_keeps_the_store() {
    let Some((debs, box_, start)) = packages_and_a_boot() else {
        return;
    };
    box_.install_deb(&debs.old);
    box_.ok(Script::new("systemctl enable --now qamd.socket"));
    let users = [
        ("alice", "correct horse battery"),
        ("bob", "battery staple one"),
    ];
    for (name, password) in users {
        add_user(&box_, name, password);
    }
    box_.ok(Script::new("qamctl user lock bob"));
    let old_pid = main_pid(&box_, "qamd.service");
    let socket = box_.host_path("/run/qam/qamd.sock");

    // The new package over the old one: postinst restarts the running qamd, which serves the
    // same accounts.
    box_.install_deb(&debs.new);
    let pid = wait_for_new_main_pid(&box_, "qamd.service", old_pid);
    assert!(verify(&box_, "alice", "correct horse battery"));
    assert!(
        !verify(&box_, "bob", "battery staple one"),
        "bob stays locked"
    );
    assert!(exists(&socket, "bob"));
    let version = box_.ok(Script::new("dpkg-query -W -f '${Version}' qam"));
    println!("FIGURE systemd: upgraded 0.1.0 (da0cf3f) to {version}, qamd pid {old_pid} -> {pid}");

    // The saslauthd door enabled later, as README says: not while qamd runs, after a stop.
    let refused = box_.run(Script::new("systemctl enable --now qamd-saslauthd.socket"));
    assert!(!refused.status.success(), "{}", container::shown(&refused));
    box_.ok(Script::new(
        "systemctl stop qamd && systemctl start qamd-saslauthd.socket",
    ));
    let door = box_.host_path("/run/qam/saslauthd/mux");
    assert_eq!(
        saslauthd_ask(&door, "alice", "correct horse battery").as_deref(),
        Ok("OK")
    );

    // The page too, so that removal has every kind of unit running to stop.
    box_.ok(Script::new(&format!(
        "{WEB_SETUP} && systemctl reload qamd"
    )));
    box_.ok(Script::new("systemctl enable --now qam-web.socket"));
    let page = probe_web(&box_.host_path("/run/qam-web/web.sock"));
    assert!(page.is_ok(), "{page:?}");

    // `dpkg -r` stops qamd, qam-web and their sockets and removes the programs and the NSS
    // door's link; the store stays.
    box_.ok(Script::new("dpkg -r qam"));
    for unit in UNITS {
        assert_eq!(
            box_.property(unit.name, "ActiveState"),
            "inactive",
            "{}",
            unit.name
        );
    }
    box_.ok(Script::new(&format!(
        "test ! -e /usr/sbin/qamd && test -f /var/lib/qam/CURRENT && test -f /etc/qam/qamd.toml \
         && test ! -L {USERDB_LINK}"
    )));

    // `dpkg -P`, as README says: the config goes; the store and the qam user stay.
    box_.ok(Script::new("dpkg -P qam"));
    box_.ok(Script::new(
        "test ! -e /etc/qam/qamd.toml && test -f /var/lib/qam/CURRENT && getent passwd qam",
    ));
    let state = box_.ok(Script::new("stat -c '%a %U' /var/lib/qam"));
    assert_eq!(state.trim(), "700 qam");

    // Installed again, the kept store serves the same accounts.
    box_.install_deb(&debs.new);
    box_.ok(Script::new("systemctl enable --now qamd.socket"));
    assert!(verify(&box_, "alice", "correct horse battery"));
    assert!(exists(&socket, "bob"));
    println!("FIGURE systemd: upgrade test took {:?}", start.elapsed());
}

/// `systemctl restart qamd` `count` times inside; how long each took (systemd waits for
/// READY=1). The start rate limit (5 in 2 min) is reset before each, outside the timing.
fn restart_times(box_: &Container, count: usize) -> Vec<Duration> {
    (0..count)
        .map(|_| {
            box_.ok(Script::new("systemctl reset-failed qamd"));
            let started = Instant::now();
            box_.ok(Script::new("systemctl restart qamd"));
            let took = started.elapsed();
            assert_eq!(box_.property("qamd.service", "ActiveState"), "active");
            took
        })
        .collect()
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// README's shell-host recipe under systemd: `[nss] enabled = true` and `systemctl restart
/// qamd`; qam accounts are then system users through nss-systemd, which finds qamd's socket
/// through the package's link. A restart takes no longer with the door than without it, and
/// while qamd is stopped lookups answer at once (the link dangles).
#[test]
fn nss_through_the_userdb_socket() {
    let Some((debs, box_, start)) = packages_and_a_boot() else {
        return;
    };
    installed_and_enabled(&box_, debs);
    let link = Script::new(&format!("readlink {USERDB_LINK}"));
    assert_eq!(box_.ok(link).trim(), USERDB_SOCKET, "the package's link");
    for socket in sockets() {
        let answer = (socket.probe)(&box_.host_path(socket.path));
        assert!(answer.is_ok(), "{}: {answer:?}", socket.unit);
    }
    add_user(&box_, "alice", "correct horse battery");

    // The same restart without and with the door, in the same boot.
    const RESTARTS: usize = 3;
    let without = restart_times(&box_, RESTARTS);
    box_.ok(Script::new(NSS_SETUP));
    box_.ok(Script::new(
        "systemctl reset-failed qamd && systemctl restart qamd",
    ));
    let with = restart_times(&box_, RESTARTS);
    println!(
        "FIGURE systemd: systemctl restart qamd without NSS {without:?} (median {:?}), with NSS \
         {with:?} (median {:?})",
        median(&without),
        median(&with)
    );
    let slowest_without = without.iter().max().copied().unwrap_or_default();
    for took in &with {
        assert!(
            *took <= slowest_without + NSS_RESTART_SLACK,
            "a restart with the NSS door took {took:?}, without it at most {slowest_without:?}"
        );
    }

    let access = box_.ok(Script::new(&format!(
        "stat -c '%a %U:%G %F' {USERDB_SOCKET}"
    )));
    assert_eq!(access.trim(), "666 qam:qam socket", "{USERDB_SOCKET}");
    let answer = probe_userdb(&box_.host_path(USERDB_SOCKET));
    assert!(answer.is_ok(), "{answer:?}");
    // The NSS door: alice is a system user through nss-systemd, as README says, through
    // systemd-userdbd's multiplexer and straight through the link.
    let userdbd = box_.property("systemd-userdbd.socket", "ActiveState");
    println!("FIGURE systemd: systemd-userdbd.socket {userdbd} beside the link");
    for bypass in ["", "SYSTEMD_BYPASS_USERDB=io.systemd.Multiplexer "] {
        let passwd = box_.ok(Script::new(&format!("{bypass}getent passwd alice")));
        assert!(
            passwd.starts_with("alice:x:7") && passwd.trim().ends_with(":/home/alice:/bin/bash"),
            "{bypass}(userdbd's socket {userdbd}): {passwd}"
        );
    }
    let record = box_.ok(Script::new("userdbctl user alice"));
    assert!(record.contains("io.qam"), "{record}");
    // Abuse: what any local user (or root) gets from the public socket holds no hash.
    let nobody = Identity::new("nobody", "nogroup").shell_prefix();
    let as_nobody = box_.ok(Script::new(&format!("{nobody} userdbctl -j user alice")));
    let shadow = box_.run(Script::new("getent shadow alice"));
    for answer in [as_nobody.as_str(), &String::from_utf8_lossy(&shadow.stdout)] {
        assert!(!answer.contains("argon2"), "a hash reached NSS: {answer}");
    }
    assert!(
        as_nobody.contains("userName") && as_nobody.contains("alice"),
        "{as_nobody}"
    );
    check_running_services(&box_);

    // qamd stopped: its socket is gone, the link dangles, and lookups answer at once; alice
    // is simply unknown meanwhile.
    box_.ok(Script::new("systemctl stop qamd"));
    box_.ok(Script::new(&format!(
        "test -L {USERDB_LINK} && ! test -e {USERDB_LINK}"
    )));
    let started = Instant::now();
    let root = box_.ok(Script::new("getent passwd root"));
    let root_took = started.elapsed();
    assert!(root.starts_with("root:x:0:0:"), "{root}");
    let started = Instant::now();
    let alice = box_.run(Script::new("getent passwd alice"));
    let alice_took = started.elapsed();
    assert_eq!(alice.status.code(), Some(2), "{}", container::shown(&alice));
    let started = Instant::now();
    box_.ok(Script::new("id root"));
    let id_took = started.elapsed();
    println!(
        "FIGURE systemd: with qamd stopped, getent passwd root {root_took:?}, getent passwd \
         alice (absent) {alice_took:?}, id root {id_took:?}"
    );
    for took in [root_took, alice_took, id_took] {
        assert!(
            took < NSS_RESTART_SLACK,
            "a lookup waited {took:?} while qamd was stopped"
        );
    }
    assert_eq!(box_.property("qamd.service", "ActiveState"), "inactive");

    let warnings = unit_warnings(&box_, None);
    assert!(
        warnings.trim().is_empty(),
        "qam's units warned:\n{warnings}"
    );
    println!("FIGURE systemd: nss test took {:?}", start.elapsed());
}

/// Seconds each isolation measurement lasts (given to the raw argon2 run inside, too).
const ISOLATION_SECONDS: f64 = 3.0;
/// Set (to ISOLATION_SECONDS) only when the test binary runs inside the container as the raw
/// argon2 baseline.
const RAW_ARGON2_SECONDS: &str = "QAM_RAW_ARGON2_SECONDS";
/// Where the baseline's binary (this test binary) is copied inside.
const RAW_ARGON2_BINARY: &str = "/tmp/qam-raw-argon2";
/// What the baseline prints before its verifies per second.
const RAW_ARGON2_FIGURE: &str = "RAW_ARGON2_PER_SECOND ";

/// The baseline, run inside the container by `isolation_beside_a_cpu_bound_service` as a
/// service of the container's systemd (as qamd is): raw argon2id verifies with qamd's default
/// parameters on one thread per core (qamd's default pool), at nice 0.
#[test]
#[ignore = "the isolation test runs it inside the booted container"]
fn raw_argon2_inside_the_container() {
    let Some(seconds) = std::env::var(RAW_ARGON2_SECONDS)
        .ok()
        .and_then(|seconds| seconds.parse::<f64>().ok())
    else {
        return;
    };
    let params = qamd::hasher::params_of(&qamd::config::HashConfig::default()).unwrap();
    let password = b"raw argon2 password";
    let phc = qamd::hasher::hash_now(password, &params).unwrap();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let verified: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut scratch = qamd::hasher::Scratch::default();
                    let mut count = 0;
                    while Instant::now() < end {
                        let outcome =
                            qamd::hasher::verify_with(&mut scratch, password, &phc, &params);
                        assert!(outcome.matches);
                        count += 1;
                    }
                    count
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap())
            .sum()
    });
    let rate = verified as f64 / start.elapsed().as_secs_f64();
    println!("{RAW_ARGON2_FIGURE}{rate}");
}

/// Raw argon2 verifies per second as a transient service inside the container.
fn raw_argon2_rate(box_: &Container) -> f64 {
    let out = box_.ok(Script::new(&format!(
        "systemd-run --quiet --wait --pipe --collect -E {RAW_ARGON2_SECONDS}={ISOLATION_SECONDS} \
         {RAW_ARGON2_BINARY} --exact raw_argon2_inside_the_container --ignored --nocapture \
         --test-threads=1"
    )));
    out.lines()
        .find_map(|line| line.split(RAW_ARGON2_FIGURE).nth(1))
        .and_then(|rate| rate.trim().parse().ok())
        .unwrap_or_else(|| panic!("no figure from the raw argon2 run:\n{out}"))
}

/// What one isolation measurement through qamd gave.
struct Through {
    /// Matching verifies answered per second.
    verifies_per_second: f64,
    /// Round trips of every `exists` the flooding clients got answered, sorted.
    exists: Vec<Duration>,
}

/// `verifiers` clients verifying alice as fast as qamd answers, beside `flooders` clients
/// asking `exists` as fast as qamd answers, for ISOLATION_SECONDS.
fn through_qamd(socket: &Path, verifiers: usize, flooders: usize) -> Through {
    let end = Instant::now() + Duration::from_secs_f64(ISOLATION_SECONDS);
    let start = Instant::now();
    let (verified, mut exists) = std::thread::scope(|scope| {
        let verifying: Vec<_> = (0..verifiers)
            .map(|_| {
                scope.spawn(|| {
                    let mut client = Client::connect(&host_options(socket)).unwrap();
                    let password = Password::from("correct horse battery");
                    let mut count = 0usize;
                    while Instant::now() < end {
                        assert!(client.verify("alice", &password).unwrap());
                        count += 1;
                    }
                    count
                })
            })
            .collect();
        let flooding: Vec<_> = (0..flooders)
            .map(|_| {
                scope.spawn(|| {
                    let mut client = Client::connect(&host_options(socket)).unwrap();
                    let mut times = Vec::new();
                    while Instant::now() < end {
                        let asked = Instant::now();
                        assert!(client.exists("alice").unwrap());
                        times.push(asked.elapsed());
                    }
                    times
                })
            })
            .collect();
        let verified: usize = verifying.into_iter().map(|t| t.join().unwrap()).sum();
        let exists: Vec<Duration> = flooding
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (verified, exists)
    });
    exists.sort_unstable();
    Through {
        verifies_per_second: verified as f64 / start.elapsed().as_secs_f64(),
        exists,
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).saturating_sub(1);
    sorted.get(index).copied().unwrap_or_default()
}

/// qamd as packaged, beside a CPU-bound service that keeps every core busy: verify
/// throughput against raw argon2 run as a service of the same systemd in the same boot, and
/// `exists` latency while every hashing thread is busy.
#[test]
fn isolation_beside_a_cpu_bound_service() {
    let Some((debs, box_, start)) = packages_and_a_boot() else {
        return;
    };
    box_.install_deb(&debs.new);
    box_.ok(Script::new("systemctl enable --now qamd.socket"));
    add_user(&box_, "alice", "correct horse battery");
    let socket = box_.host_path("/run/qam/qamd.sock");
    let binary = std::env::current_exe().unwrap();
    std::fs::copy(&binary, box_.host_path(RAW_ARGON2_BINARY)).unwrap();

    let cores: usize = box_.ok(Script::new("nproc")).trim().parse().unwrap();
    box_.ok(Script::new(
        "systemd-run --quiet --unit=cpu-bound \
         sh -c 'for core in $(seq $(nproc)); do while :; do :; done & done; wait'",
    ));
    assert_eq!(box_.property("cpu-bound.service", "ActiveState"), "active");

    // Slices alternate between the baseline and qamd, so other work on the machine hits both.
    let raw_before = raw_argon2_rate(&box_);
    let alone = through_qamd(&socket, 2 * cores, 0);
    let raw_after = raw_argon2_rate(&box_);
    let flooded = through_qamd(&socket, 2 * cores, 2);
    let raw = (raw_before + raw_after) / 2.0;
    let p50 = percentile(&flooded.exists, 0.5);
    let p99 = percentile(&flooded.exists, 0.99);
    println!(
        "FIGURE systemd isolation: beside a busy loop on each of {cores} cores, raw argon2 \
         {raw_before:.1}/s and {raw_after:.1}/s; qamd verify {:.1}/s ({:.2} of raw), with 2 \
         clients flooding exists {:.1}/s ({:.2} of raw); exists {}/s, p50 {p50:?}, p99 {p99:?}",
        alone.verifies_per_second,
        alone.verifies_per_second / raw,
        flooded.verifies_per_second,
        flooded.verifies_per_second / raw,
        (flooded.exists.len() as f64 / ISOLATION_SECONDS) as u64,
    );
    // Generous: qamd's own threads beside its hashing pool must not halve what argon2 gets.
    assert!(
        alone.verifies_per_second >= 0.5 * raw && flooded.verifies_per_second >= 0.5 * raw,
        "qamd's verify throughput fell below half of raw argon2 beside a CPU-bound service"
    );
    box_.ok(Script::new("systemctl stop cpu-bound"));
    println!("FIGURE systemd: isolation test took {:?}", start.elapsed());
}

/// qam-hooks.service as README's "Deleting and locking across services" sets it up, under its
/// hardening: enabled by hand (the package enables nothing), a deletion waits for an enabled
/// hook that switches users with `su` (as ejabberdctl does) and removes a directory owned by
/// another user under /var (as the Dovecot hook does), then `qamctl user del` reports it erased.
/// The hook writes its findings to /var/local: /tmp and /var/tmp are the unit's own.
#[test]
fn qam_hooks_service_runs_a_deletion_under_its_hardening() {
    let Some((debs, box_, _start)) = packages_and_a_boot() else {
        return;
    };
    installed_and_enabled(&box_, debs);
    let state = box_.ok(Script::new(
        "systemctl is-enabled qam-hooks.service || true",
    ));
    assert_eq!(state.trim(), "disabled", "the package enabled qam-hooks");
    for hook in [
        "delete.d/50-prosody",
        "delete.d/51-ejabberd",
        "delete.d/52-dovecot",
    ] {
        box_.ok(Script::new(&format!("test -x /usr/share/qam/hooks/{hook}")));
    }
    add_user(&box_, "alice", "correct horse battery");
    box_.ok(Script::new(
        "mkdir -p /var/vmail/alice/Maildir && chown -R nobody:nogroup /var/vmail/alice \
         && chmod 700 /var/vmail/alice \
         && printf '%s\\n' '#!/bin/sh' 'set -eu' \
            'su -s /bin/sh -c \"id -un\" nobody > /var/local/qam-hook-su' \
            'rm -rf /var/vmail/alice' \
            'echo \"$1 $2 $QAM_USER\" > /var/local/qam-hook-ran' \
            > /usr/local/sbin/qam-probe-hook \
         && chmod 755 /usr/local/sbin/qam-probe-hook \
         && ln -s /usr/local/sbin/qam-probe-hook /etc/qam/hooks/delete.d/50-probe \
         && systemctl enable --now qam-hooks.service",
    ));
    box_.wait_for("qam-hooks active", || {
        (box_.property("qam-hooks.service", "ActiveState") == "active").then_some(())
    });
    let out = box_.ok(Script::new("qamctl user del alice --yes --wait 60s"));
    assert!(out.contains("deleted") && out.contains("alice"), "{out}");
    assert_eq!(
        box_.ok(Script::new("cat /var/local/qam-hook-ran")).trim(),
        "delete alice alice"
    );
    assert_eq!(
        box_.ok(Script::new("cat /var/local/qam-hook-su")).trim(),
        "nobody"
    );
    box_.ok(Script::new("test ! -e /var/vmail/alice"));
    let pid = main_pid(&box_, "qam-hooks.service");
    let status = box_.ok(Script::new(&format!("cat /proc/{pid}/status")));
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let journal = box_.ok(Script::new(
        "journalctl -u qam-hooks.service --no-pager -o cat",
    ));
    assert!(journal.contains("erased"), "{journal}");
    assert!(!journal.contains("hook failed"), "{journal}");
    assert_exposure_at_most(&box_, "qam-hooks.service", MAX_HOOKS_EXPOSURE);
    // qam-hooks' own lines (`-t`): the probe hook's su logs about this minimal root's locale.
    let warnings = box_.ok(Script::new(
        "journalctl -q --no-pager -p warning -o short-monotonic -u qam-hooks.service -t qam-hooks",
    ));
    assert!(warnings.trim().is_empty(), "qam-hooks warned:\n{warnings}");
}
