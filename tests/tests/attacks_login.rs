//! Attacks on logins and account names, each performed against a real qamd: every test passes
//! only because the attack fails. Figures (`FIGURE attacks …`) go to stderr for BENCHMARKS.md.

use qam_client::wire::{Done, NameInfo, StatusInfo};
use qam_client::{Client, ClientError, ErrorCode, Password, Request};
use qam_tests::identity::Identity;
use qam_tests::reliability::{code_of, quantile, raw_as, socket_gid};
use qam_tests::{bin, wait_until, within, Daemon};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// The default hash cost, where the time of one verify matters to the attack.
const CURRENT_HASH: &str =
    "[hash]\nm_cost = 19456\nt_cost = 2\np_cost = 1\nworkers = 2\nqueue_limit = 64\n";

fn figure(text: impl std::fmt::Display) {
    eprintln!("FIGURE attacks {text}");
}

/// The error code of a call, or "ok".
fn outcome<T>(result: Result<T, ClientError>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(err) => err
            .code()
            .map_or_else(|| err.to_string(), |c| c.as_str().into()),
    }
}

fn verify(client: &mut Client, user: &str, password: &str, key: Option<&str>) -> String {
    outcome(client.call::<NameInfo>(&Request::Verify {
        user: user.into(),
        password: Password::from(password),
        client: key.map(Password::from),
    }))
}

fn register(client: &mut Client, user: &str, password: &str, force: bool) -> String {
    outcome(client.call::<NameInfo>(&Request::Register {
        user: user.into(),
        password: Password::from(password),
        force,
        reuse_name: false,
    }))
}

fn status(daemon: &Daemon) -> StatusInfo {
    daemon.client().call(&Request::Status).expect("status")
}

/// Waits until `condition` holds, polling; panics with `what` after 30 s.
fn wait_for(what: &str, condition: impl FnMut() -> bool) {
    wait_until(within(30), what, condition);
}

/// Registers `lines` of raw JSON as uid `nobody` (a service granted `register`).
fn as_nobody(daemon: &Daemon, lines: &[String]) -> Vec<serde_json::Value> {
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    raw_as(
        &Identity::new(65534, socket_gid(&daemon.socket)),
        &daemon.socket,
        &lines,
    )
}

/// qamd with registration open to every peer, as README's Prosody example opens it.
fn open_registration() -> Daemon {
    Daemon::start_with(
        "registration_open = true\n[permissions]\ndefault = [\"verify\", \"exists\", \"register\"]\n",
    )
}

/// Every name the system's user database holds that fits qam's default pattern.
fn unix_user_names() -> Vec<String> {
    std::fs::read_to_string("/etc/passwd")
        .expect("read /etc/passwd")
        .lines()
        .filter_map(|line| line.split(':').next())
        .filter(|name| {
            name.len() <= 32
                && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn open_registration_cannot_claim_system_reserved_or_lookalike_names() {
    let daemon = open_registration();
    let mut names: Vec<String> = [
        "postgres",
        "backup",
        "sshd",
        "git",
        "daemon",
        "root.",
        "admin.",
        "mailer_daemon",
        "mailer.daemon",
        "www_data",
        "Postgres",
        "ROOT",
    ]
    .map(String::from)
    .to_vec();
    names.extend(unix_user_names());
    let lines: Vec<String> = names
        .iter()
        .map(|name| {
            serde_json::json!({"op": "register", "user": name, "password": "attacker-password"})
                .to_string()
        })
        .collect();
    let answers = as_nobody(&daemon, &lines);
    let taken: Vec<&String> = names
        .iter()
        .zip(&answers)
        .filter(|(_, answer)| code_of(answer) != "invalid_username")
        .map(|(name, _)| name)
        .collect();
    figure(format!(
        "1 names: {} of {} system, reserved or lookalike names registered by a stranger",
        taken.len(),
        names.len()
    ));
    assert!(taken.is_empty(), "registered: {taken:?}");
    // A free name still registers.
    let free = as_nobody(
        &daemon,
        &[r#"{"op":"register","user":"newcomer","password":"newcomer-password"}"#.into()],
    );
    assert_eq!(code_of(&free[0]), "ok", "{}", free[0]);
}

#[test]
fn names_outside_ascii_are_refused_not_folded() {
    let daemon = Daemon::start();
    daemon.add_user("kate", "kate-password");
    let mut client = daemon.client();
    // U+212A KELVIN SIGN lowercases to `k`; U+0130 and U+017F fold to ASCII letters too.
    for lookalike in ["\u{212a}ate", "\u{212a}ATE", "ka\u{17f}e", "\u{130}nfo"] {
        assert_eq!(
            verify(&mut client, lookalike, "kate-password", None),
            "denied",
            "{lookalike}"
        );
        assert_eq!(
            register(&mut client, lookalike, "attacker-password", false),
            "invalid_username",
            "{lookalike}"
        );
    }
    // ASCII case is folded: the account answers under its stored name, which pam_qam compares.
    let info: NameInfo = client
        .call(&Request::Verify {
            user: "KATE".into(),
            password: "kate-password".into(),
            client: None,
        })
        .unwrap();
    assert_eq!(info.name, "kate");
}

#[test]
fn only_an_admin_may_force_a_system_name() {
    let daemon = Daemon::start_with(
        "registration_open = true\n[permissions]\ndefault = [\"verify\", \"register\"]\n",
    );
    let mut admin = daemon.client();
    assert_eq!(
        register(&mut admin, "daemon", "admin-password", false),
        "invalid_username"
    );
    assert_eq!(
        register(&mut admin, "daemon", "admin-password", true),
        "invalid_username",
        "reserved names stay reserved even forced"
    );
    // `disk` is a group of every Debian system (base-passwd) and not reserved.
    let name = "disk";
    let stranger = as_nobody(
        &daemon,
        &[
            serde_json::json!({"op": "register", "user": name, "password": "attacker-password"})
                .to_string(),
            serde_json::json!({"op": "register", "user": name, "password": "attacker-password", "force": true})
                .to_string(),
        ],
    );
    let unforced = register(&mut admin, name, "admin-password", false);
    let forced = register(&mut admin, name, "admin-password", true);
    assert_eq!(code_of(&stranger[0]), "invalid_username");
    assert_eq!(code_of(&stranger[1]), "forbidden");
    assert_eq!(unforced, "invalid_username");
    assert_eq!(forced, "ok");
}

/// A stranger guessing one user's password at full speed in a process of its own, as uid
/// `nobody` (another service) or as root with its own client key, until dropped.
struct Stranger {
    child: Child,
    stop: PathBuf,
}

impl Stranger {
    fn start(daemon: &Daemon, user: &str, as_nobody: bool, key: Option<&str>) -> Stranger {
        let stop = daemon.dir.path().join(format!("stop-{user}"));
        let mut request = serde_json::json!({"op": "verify", "user": user, "password": "guess"});
        if let Some(key) = key {
            request["client"] = key.into();
        }
        let script = format!(
            "import socket,os\ns=socket.socket(socket.AF_UNIX)\ns.connect({socket:?})\nf=s.makefile('rwb')\n\
             n=0\nwhile not os.path.exists({stop:?}):\n    f.write(b'{line}\\n'); f.flush(); f.readline(); n+=1\nprint(n)\n",
            socket = daemon.socket.display().to_string(),
            stop = stop.display().to_string(),
            line = request,
        );
        let mut command = if as_nobody {
            Identity::new(65534, socket_gid(&daemon.socket)).command("/usr/bin/python3")
        } else {
            Command::new("/usr/bin/python3")
        };
        let child = command
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        Stranger { child, stop }
    }

    /// Stops guessing; the number of guesses sent.
    fn stop(mut self) -> u64 {
        std::fs::write(&self.stop, "").expect("stop file");
        let mut text = String::new();
        self.child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut text)
            .expect("read count");
        self.child.wait().expect("wait");
        text.trim().parse().expect("guess count")
    }
}

/// The owner's right-password logins while a stranger guesses at full speed: the share that
/// succeeded (the stranger is backed off before the owner starts).
fn owner_success_during_attack(as_nobody: bool, key: Option<&str>, owner_key: Option<&str>) {
    let daemon = Daemon::start();
    daemon.add_user("owner", "owner-password");
    let stranger = Stranger::start(&daemon, "owner", as_nobody, key);
    wait_for("the stranger to be throttled", || {
        status(&daemon).verify.throttled > 0
    });
    let mut client = daemon.client();
    let logins = 40;
    let started = Instant::now();
    let accepted = (0..logins)
        .filter(|_| verify(&mut client, "owner", "owner-password", owner_key) == "ok")
        .count();
    let took = started.elapsed();
    let guesses = stranger.stop();
    let hashed = status(&daemon).verify.denied;
    figure(format!(
        "2 lock-out ({}): owner's right password accepted {accepted} of {logins} ({} %) in {took:?} \
         while a stranger sent {guesses} guesses, {hashed} of them hashed",
        if as_nobody {
            "stranger through another service"
        } else {
            "stranger through the same service, own client key"
        },
        accepted * 100 / logins,
    ));
    assert!(accepted * 100 >= logins * 95, "{accepted} of {logins}");
    assert!(
        hashed < guesses / 4,
        "guessing stays throttled: {hashed} of {guesses} hashed"
    );
}

#[test]
fn a_stranger_guessing_through_another_service_cannot_keep_the_owner_out() {
    owner_success_during_attack(true, None, None);
}

#[test]
fn a_stranger_guessing_through_the_same_service_with_its_own_client_key_cannot_keep_the_owner_out()
{
    owner_success_during_attack(false, Some("203.0.113.66"), Some("198.51.100.7"));
}

#[test]
fn names_qam_does_not_know_are_never_throttled() {
    // No ladder for a name without an account; the daemon-wide bound on hashing such names
    // (attacks_peers covers it) is lifted here so that only the ladders are under test.
    let daemon = Daemon::start_with("[peers]\nunknown_name_verifies_per_second = 100000\n");
    let mut client = daemon.client();
    let answers: Vec<String> = (0..30)
        .map(|_| verify(&mut client, "root", "root's unix password", None))
        .collect();
    let throttled = answers.iter().filter(|code| *code == "throttled").count();
    figure(format!(
        "2 unknown names: {throttled} of 30 logins of a name qam does not know throttled"
    ));
    assert!(answers.iter().all(|code| code == "denied"), "{answers:?}");
}

#[test]
fn simultaneous_guesses_hash_at_most_the_free_failures() {
    let daemon = Daemon::start_with(CURRENT_HASH);
    daemon.add_user("target", "the-right-password");
    let guesses = 80;
    let barrier = Arc::new(Barrier::new(guesses));
    let threads: Vec<_> = (0..guesses)
        .map(|n| {
            let barrier = Arc::clone(&barrier);
            let mut client = daemon.client();
            std::thread::spawn(move || {
                barrier.wait();
                verify(&mut client, "target", &format!("guess-{n}"), None)
            })
        })
        .collect();
    let codes: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let counts = status(&daemon).verify;
    figure(format!(
        "3 simultaneous guesses: {} of {guesses} hashed ({} throttled, {} busy); free failures 5",
        counts.denied, counts.throttled, counts.busy
    ));
    assert!(counts.denied <= 5, "{} hashed: {codes:?}", counts.denied);
    assert_eq!(
        counts.denied + counts.throttled + counts.busy,
        guesses as u64
    );
}

#[test]
fn a_password_change_in_flight_cannot_undo_an_admin_reset() {
    // One hashing worker: jobs run in the order they arrive, so the change's check of the old
    // password runs before the reset's hash, and its own new hash after.
    let daemon = Daemon::start_with(
        "[hash]\nm_cost = 19456\nt_cost = 2\np_cost = 1\nworkers = 1\nqueue_limit = 64\n\
         [throttle]\nfree_failures = 1000\n",
    );
    daemon.add_user("blocker", "blocker-password");
    let (trials, blocking) = (4, 10);
    let (mut restored, mut reset_stands) = (0, 0);
    for trial in 0..trials {
        let user = format!("victim{trial}");
        daemon.add_user(&user, "attacker-knows-this");
        let done_before = status(&daemon).verify.accepted;
        // Work ahead in the queue, so both requests below wait in it in the order sent.
        let blockers: Vec<_> = (0..blocking)
            .map(|_| {
                let mut client = daemon.client();
                std::thread::spawn(move || verify(&mut client, "blocker", "blocker-password", None))
            })
            .collect();
        // Blockers done plus jobs waiting: all blockers but the running one, and then the change.
        let ahead = || {
            let status = status(&daemon);
            status.verify.accepted - done_before + status.hashing.queued as u64
        };
        wait_for("the blockers to queue", || ahead() >= blocking - 1);
        let mut attacker = daemon.client();
        let change_user = user.clone();
        let change = std::thread::spawn(move || {
            outcome(attacker.call::<Done>(&Request::ChangePassword {
                user: change_user,
                old_password: "attacker-knows-this".into(),
                new_password: "attacker-keeps-this".into(),
            }))
        });
        wait_for("the change to queue", || ahead() >= blocking);
        let reset = outcome(daemon.client().call::<Done>(&Request::SetPassword {
            user: user.clone(),
            password: "admin-reset-password".into(),
        }));
        let change = change.join().unwrap();
        for blocker in blockers {
            blocker.join().unwrap();
        }
        assert_eq!(reset, "ok");
        let mut client = daemon.client();
        if verify(&mut client, &user, "attacker-keeps-this", None) == "ok" {
            restored += 1;
        }
        if verify(&mut client, &user, "admin-reset-password", None) == "ok" {
            reset_stands += 1;
        }
        eprintln!("trial {trial}: change answered {change}");
    }
    figure(format!(
        "4 reset race: the attacker's password replaced the admin's reset in {restored} of {trials} trials"
    ));
    assert_eq!(restored, 0);
    assert_eq!(reset_stands, trials);
}

/// Time of one wrong-password verify of `user`.
fn wrong_password_time(client: &mut Client, user: &str) -> Duration {
    let started = Instant::now();
    assert_eq!(verify(client, user, "wrong-password", None), "denied");
    started.elapsed()
}

#[test]
fn a_refusal_costs_the_current_parameters_whatever_the_stored_hash() {
    let cheap = "[hash]\nm_cost = 256\nt_cost = 1\np_cost = 1\nworkers = 2\nqueue_limit = 64\n\
                 [throttle]\nfree_failures = 1000000\n";
    let mut daemon = Daemon::start_with(cheap);
    daemon.add_user("oldcost", "old-password");
    daemon.stop();
    let config = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(
        &daemon.config,
        config.replace("m_cost = 256\nt_cost = 1", "m_cost = 19456\nt_cost = 2"),
    )
    .unwrap();
    daemon.spawn();
    daemon.add_user("current", "current-password");
    let mut client = daemon.client();
    // Alternating one of each, so load from other tests hits both series alike.
    let (mut old, mut current) = (Vec::new(), Vec::new());
    for _ in 0..30 {
        old.push(wrong_password_time(&mut client, "oldcost"));
        current.push(wrong_password_time(&mut client, "current"));
    }
    let (old, current) = (quantile(&mut old, 0.5), quantile(&mut current, 0.5));
    figure(format!(
        "7 timing: a mistyped password for an account hashed at m=256,t=1 {old:?}, at the current m=19456,t=2 {current:?}"
    ));
    // Without the top-up the cheap hash's refusal is a small fraction of the current one's.
    assert!(
        old.as_secs_f64() >= current.as_secs_f64() * 0.5,
        "a cheap hash answers denied in {old:?}, a current one in {current:?}"
    );
}

#[test]
fn a_custom_pattern_is_anchored() {
    let daemon = Daemon::start_with("[username]\npattern = \"[a-z0-9]{1,32}\"\n");
    let mut client = daemon.client();
    let long = "a".repeat(40);
    let names = ["bob\nroot", "../../etc", long.as_str(), "bob root"];
    let registered: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| {
            register(&mut client, name, "attacker-password", false) != "invalid_username"
        })
        .collect();
    figure(format!(
        "10 pattern: {} of {} names outside `[a-z0-9]{{1,32}}` registered",
        registered.len(),
        names.len()
    ));
    assert!(registered.is_empty(), "{registered:?}");
    assert_eq!(register(&mut client, "bob", "bob-password", false), "ok");
}

#[test]
fn throttled_answers_do_not_tell_when_the_back_off_ends() {
    let daemon = Daemon::start_with("[throttle]\nfree_failures = 1\nbase_delay_ms = 60000\n");
    daemon.add_user("watched", "watched-password");
    let mut client = daemon.client();
    assert_eq!(verify(&mut client, "watched", "wrong", None), "denied");
    let answer = client
        .call::<NameInfo>(&Request::Verify {
            user: "watched".into(),
            password: "wrong".into(),
            client: None,
        })
        .unwrap_err();
    assert_eq!(answer.code(), Some(ErrorCode::Throttled));
    let message = answer.to_string();
    assert!(
        !message.chars().any(|c| c.is_ascii_digit()),
        "the answer tells the back-off: {message}"
    );
}

#[test]
fn qamctl_export_to_a_redirected_stdout_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let daemon = Daemon::start();
    daemon.add_user("alice", "alice-password");
    let path = daemon.dir.path().join("backup.jsonl");
    // What `qamctl export > backup.jsonl` gets from a shell with umask 022.
    let file = std::fs::File::create(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let status = Command::new(bin("qamctl"))
        .args(["--socket"])
        .arg(&daemon.socket)
        .arg("export")
        .stdout(file)
        .status()
        .unwrap();
    assert!(status.success());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("$argon2id$"));
    figure(format!("12 export > file: mode {mode:o}"));
    assert_eq!(mode, 0o600, "hashes readable by others: mode {mode:o}");
}

/// One ejabberd extauth frame: 2-byte big-endian length, then the bytes.
fn frame(text: &str) -> Vec<u8> {
    let mut bytes = (text.len() as u16).to_be_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

#[test]
fn qam_extauth_logs_no_attempted_user_names() {
    let daemon = Daemon::start();
    // A password typed into the name field, in requests qamd refuses and qam-extauth logs.
    let typed = "Hunter2 Typed-As-Name";
    let mut child = Command::new(bin("qam-extauth"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["--domain", "localhost"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    for request in [
        format!("tryregister:{typed}:localhost:some-password"),
        format!("removeuser:{typed}:localhost"),
        format!("auth:{typed}:elsewhere.example:pw"),
    ] {
        input.write_all(&frame(&request)).unwrap();
    }
    input.flush().unwrap();
    let mut answers = [0u8; 12];
    child
        .stdout
        .take()
        .unwrap()
        .read_exact(&mut answers)
        .unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("refused"), "the requests were logged: {log}");
    assert!(!log.contains("Hunter2"), "attempted name in the log: {log}");
}

/// The operations README's `[permissions.users]` example grants `user`.
fn readme_grants(user: &str) -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(qam_tests::workspace_root().join("README.md")).unwrap();
    readme
        .lines()
        .filter_map(|line| line.strip_prefix(&format!("{user} = ")))
        .map(|list| serde_json::from_str(list).expect("a JSON-compatible TOML list"))
        .collect()
}

#[test]
fn readme_grants_xmpp_servers_no_password_reset() {
    // A compromised XMPP server (here: uid nobody with README's grant) resets the sysadmin's
    // password, the one pam_qam checks for SSH.
    for server in ["prosody", "ejabberd"] {
        let grants = readme_grants(server);
        assert!(!grants.is_empty(), "README grants {server} something");
        for ops in grants {
            let daemon = Daemon::start_with(&format!(
                "socket_group = \"nogroup\"\n[permissions.users]\nnobody = {}\n",
                serde_json::to_string(&ops).unwrap()
            ));
            daemon.add_user("carol", "carol-password");
            let answer = as_nobody(
                &daemon,
                &[r#"{"op":"set_password","user":"carol","password":"xmpp-server-knows"}"#.into()],
            );
            assert_eq!(
                code_of(&answer[0]),
                "forbidden",
                "README's grant {ops:?} for {server} resets any password"
            );
        }
    }
}
