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
    /// A socket unit started by `systemctl enable --now`; its service starts on the first
    /// connection, and `probe` gets an answer through it (a harmless question).
    Socket {
        /// Where it listens (0660, group `qam`).
        path: &'static str,
        /// The service systemd starts for it.
        service: &'static str,
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

/// Every unit the package ships, in the order README enables them.
const UNITS: &[Unit] = &[
    Unit {
        name: "qamd.socket",
        kind: Kind::Socket {
            path: "/run/qam/qamd.sock",
            service: "qamd.service",
            probe: probe_qamd,
        },
    },
    Unit {
        name: "qamd-saslauthd.socket",
        kind: Kind::Socket {
            path: "/run/qam/saslauthd/mux",
            service: "qamd.service",
            probe: probe_saslauthd,
        },
    },
    Unit {
        name: "qamd.service",
        kind: Kind::Service {
            user: "qam",
            writable: &["/var/lib/qam", "/run/qam"],
        },
    },
];

/// Name, path, service and probe of every socket unit.
type SocketRow = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Path) -> Result<String, String>,
);

fn sockets() -> impl Iterator<Item = SocketRow> {
    UNITS.iter().filter_map(|unit| match unit.kind {
        Kind::Socket {
            path,
            service,
            probe,
        } => Some((unit.name, path, service, probe)),
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
    for (socket, path, service, _) in sockets() {
        box_.ok(Script::new(&format!("systemctl enable --now {socket}")));
        assert_eq!(box_.property(socket, "ActiveState"), "active", "{socket}");
        assert_eq!(
            box_.ok(Script::new(&format!("stat -c '%a %U:%G %F' {path}")))
                .trim(),
            "660 root:qam socket",
            "{socket}: {path}"
        );
        assert_eq!(
            box_.property(service, "ActiveState"),
            "inactive",
            "{service} must wait for the first connection"
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
        let probe = places
            .iter()
            .map(|place| {
                format!(
                    "if setpriv --reuid={user} --regid={user} --init-groups \
                       touch '{place}/.qam-write-probe' 2>/dev/null; then \
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

        let security = box_.ok(Script::new(&format!(
            "systemd-analyze security --no-pager {service}"
        )));
        let exposure = security
            .lines()
            .find_map(|line| {
                line.strip_prefix(&format!("→ Overall exposure level for {service}: "))
            })
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{service}: no exposure level in:\n{security}"));
        println!("FIGURE systemd: {service} exposure online {exposure}");
        assert!(
            exposure <= MAX_EXPOSURE,
            "{service}: exposure {exposure} above {MAX_EXPOSURE}:\n{security}"
        );
    }
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
    for (socket_unit, path, _, probe) in sockets() {
        let answer = probe(&box_.host_path(path));
        assert!(answer.is_ok(), "{socket_unit}: {answer:?}");
    }

    add_user(&box_, "alice", "correct horse battery");
    assert!(verify(&box_, "alice", "correct horse battery"));
    assert!(!verify(&box_, "alice", "wrong horse"));
    // Abuse: a user outside group `qam` cannot even reach the sockets.
    for (_, path, _, _) in sockets() {
        let outsider = box_.run(Script::new(&format!(
            "setpriv --reuid=nobody --regid=nogroup --clear-groups test -w {path}"
        )));
        assert!(!outsider.status.success(), "nobody may write to {path}");
    }
    let outsider = box_.run(Script::new(
        "setpriv --reuid=nobody --regid=nogroup --clear-groups qamctl status",
    ));
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

    // A changed setting, applied by `systemctl reload qamd` without a restart.
    let pid = main_pid(&box_, "qamd.service");
    let status = || box_.ok(Script::new("qamctl status"));
    assert!(
        status().contains("registration      closed"),
        "{}",
        status()
    );
    box_.ok(Script::new(
        "sed -i 's/^#registration_open = false/registration_open = true/' /etc/qam/qamd.toml \
         && grep -qx 'registration_open = true' /etc/qam/qamd.toml",
    ));
    box_.ok(Script::new("systemctl reload qamd"));
    box_.wait_for("registration open after the reload", || {
        status().contains("registration      open").then_some(())
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
    let pamtester = |user: &str, password: &str| {
        box_.run(
            Script::new(&format!(
                "setpriv --reuid=qam-pam-client --regid=qam-pam-client --init-groups \
                 pamtester qam-pam-client {user} authenticate acct_mgmt"
            ))
            .stdin(&format!("{password}\n")),
        )
    };
    // Abuse: a service in group `qam` is no admin: it cannot create accounts.
    let mallory = box_.run(
        Script::new(
            "setpriv --reuid=qam-pam-client --regid=qam-pam-client --init-groups \
             qamctl user add mallory --password-stdin",
        )
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
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match xmpp::plain_login(5222, "localhost", "alice", password) {
                    Err(e)
                        if e.kind() == ErrorKind::ConnectionRefused
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    other => break other,
                }
            }
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

    // `dpkg -r` stops qamd and its sockets and removes the programs; the store stays.
    box_.ok(Script::new("dpkg -r qam"));
    for unit in UNITS {
        assert_eq!(
            box_.property(unit.name, "ActiveState"),
            "inactive",
            "{}",
            unit.name
        );
    }
    box_.ok(Script::new(
        "test ! -e /usr/sbin/qamd && test -f /var/lib/qam/CURRENT && test -f /etc/qam/qamd.toml",
    ));

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
