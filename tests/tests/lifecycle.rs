//! Deleting and locking an account reach every service: real Prosody, ejabberd and Dovecot with
//! the shipped hooks run by qam-hooks, failed and interrupted deletions, and name quarantine.

use qam_client::wire::NameInfo;
use qam_client::{ClientError, Password, Request};
use qam_tests::dovecot::{self, checkpassword_auth, imap_idle, Dovecot};
use qam_tests::hooks::{add_hook, enable_shipped, hooks_dir, qamd_hooks_table, QamHooks};
use qam_tests::reliability::{figure, files_holding};
use qam_tests::session::Watched;
use qam_tests::xmpp::{extauth_hosts, median, Ejabberd, Prosody, Session};
use qam_tests::{bin, poll_until, require_peer, shown, wait_until, within, Daemon};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Ports and node of this file's servers; its tests run one at a time.
const PROSODY_PORT: u16 = 15391;
const PROSODY_HTTP: u16 = 15392;
const EJABBERD_PORT: u16 = 15393;
const EJABBERD_NODE: &str = "qamlife@localhost";
const IMAP_PORT: u16 = 15394;
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The password every account of this file has.
const PASSWORD: &str = "lifecycle password 1";

/// How long the admin grants a deletion before calling it failed.
const DELETE_WITHIN: u64 = 120;

/// qamd with its `[hooks] dir` at `hooks`. Deviates from README (`/etc/qam/hooks`): a temp
/// dir, so the host's hooks stay untouched and each test has its own.
fn qamd(hooks: &Path) -> Daemon {
    Daemon::start_with(&qamd_hooks_table(hooks))
}

/// qam-hooks with `env` (what `/etc/default/qam-hooks` gives it), once it listens.
fn start_hooks(qamd: &Daemon, hooks: &Path, env: &[(&str, String)]) -> QamHooks {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let runner = QamHooks::start_with(qamd, hooks, &env);
    runner.wait_listening();
    runner
}

/// A live c2s session of `user` on `domain`, watched until the server ends it.
fn live(port: u16, domain: &str, user: &str, password: &str) -> std::io::Result<Watched> {
    Session::open(port, domain, user, password)?.watch()
}

/// `qamctl ARGS`' exit code with its stdout and stderr together.
fn qamctl(qamd: &Daemon, args: &[&str]) -> (Option<i32>, String) {
    let out = qamd.qamctl(args, "");
    (out.status.code(), both(&out))
}

fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What the admin types: `qamctl user del NAME --yes`, timed; answers its exit code and
/// output, the time to its end, and the time until `gone` first held (checked while it ran and
/// once after).
fn timed_delete(
    qamd: &Daemon,
    name: &str,
    mut gone: impl FnMut() -> bool,
) -> (Option<i32>, String, Duration, Option<Duration>) {
    let started = Instant::now();
    let mut child = qamd
        .qamctl_command(&["user", "del", name, "--yes"])
        .spawn()
        .expect("run qamctl");
    let mut gone_after = None;
    let mut ended = None;
    poll_until(within(DELETE_WITHIN), || {
        if gone_after.is_none() && gone() {
            gone_after = Some(started.elapsed());
        }
        if child.try_wait().ok().flatten().is_some() {
            ended = Some(started.elapsed());
        }
        ended.is_some()
    });
    if ended.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("qamctl's output");
    let took = ended.unwrap_or_else(|| started.elapsed());
    if gone_after.is_none() && gone() {
        gone_after = Some(started.elapsed());
    }
    (out.status.code(), both(&out), took, gone_after)
}

/// Whether qamctl's output says `name` was deleted (the contract's line is `deleted NAME`;
/// qamctl prints `deleted user NAME: every hook succeeded`).
fn says_deleted(out: &str, name: &str) -> bool {
    out.lines().any(|line| {
        line.starts_with("deleted ")
            && line
                .split_whitespace()
                .any(|w| w.trim_end_matches(':') == name)
    })
}

/// Asserts that qam keeps no account `name`: no lookup, no `exists`, no `list` line.
fn assert_no_record(qamd: &Daemon, name: &str) {
    assert!(qamd.lookup(name).is_none(), "qam still has {name}");
    assert!(!qamd.client().exists(name).expect("exists"));
    let (code, list) = qamctl(qamd, &["user", "list"]);
    assert_eq!(code, Some(0), "{list}");
    assert!(!list.contains(name), "{list}");
}

/// Files under `dir` that hold `name` (in their bytes or their path), for failure messages.
fn holding(dir: &Path, name: &str) -> Vec<(PathBuf, usize)> {
    files_holding(dir, name.as_bytes())
}

/// The test's time past what qam-hooks needs: the admin's 2 s budget of the lock test.
const LOCK_BUDGET: Duration = Duration::from_secs(2);

/// The median time of three runs of `command` (each must succeed): a service's own control
/// call, the floor under what its hook can do.
fn baseline(what: &str, mut command: impl FnMut() -> Output) -> Duration {
    let times = (0..3)
        .map(|_| {
            let started = Instant::now();
            let out = command();
            let took = started.elapsed();
            assert!(out.status.success(), "{what}: {}", shown(&out));
            took
        })
        .collect();
    median(times)
}

// ---------------------------------------------------------------- XMPP stanzas

/// Sends an IQ with `id` and waits for the server's answer to it.
fn iq(session: &mut Watched, id: &str, stanza: &str) -> String {
    session.send(stanza).expect("send iq");
    let single = format!("id='{id}'");
    let double = format!("id=\"{id}\"");
    wait_until(within(20), &format!("the answer to iq {id}"), || {
        let text = session.text();
        text.contains(&single) || text.contains(&double)
    });
    let text = session.text();
    let at = text
        .find(&single)
        .or_else(|| text.find(&double))
        .unwrap_or(0);
    let start = text[..at].rfind("<iq").unwrap_or(at);
    let answer = text[start..].to_owned();
    let opening = answer.split('>').next().unwrap_or_default();
    assert!(
        opening.contains("'result'") || opening.contains("\"result\""),
        "iq {id} failed: {answer}"
    );
    answer
}

/// Puts `contact` on the session's roster.
fn add_contact(session: &mut Watched, id: &str, contact: &str) {
    iq(
        session,
        id,
        &format!(
            "<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'><item jid='{contact}' name='contact {id}'/></query></iq>"
        ),
    );
}

/// Sends a chat message.
fn message(session: &mut Watched, to: &str, body: &str) {
    session
        .send(&format!(
            "<message to='{to}' type='chat'><body>{body}</body></message>"
        ))
        .expect("send message");
}

/// Ends a session from the client's side and waits for the server to close it.
fn log_out(mut session: Watched) {
    session.send("</stream:stream>").expect("close stream");
    assert!(
        session.wait_ended(within(20)).is_some(),
        "the server did not close the stream"
    );
}

/// The text between `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// One HTTP/1.1 request to 127.0.0.1 for `url` (`http://HOST:PORT/PATH`); answers the status
/// code.
fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let port: u16 = authority
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the URL");
    let reply = qam_tests::web::http_to(authority, port, method, path, headers, body);
    assert_ne!(reply.status, 0, "no HTTP status from {url}");
    reply.status
}

/// Uploads `content` as `name` through XEP-0363 to `service`; answers the file's GET URL.
fn upload(session: &mut Watched, service: &str, name: &str, content: &[u8]) -> String {
    let answer = iq(
        session,
        "slot1",
        &format!(
            "<iq type='get' id='slot1' to='{service}'><request xmlns='urn:xmpp:http:upload:0' filename='{name}' size='{}' content-type='text/plain'/></iq>",
            content.len()
        ),
    );
    let put = between(&answer, "<put url='", "'")
        .or_else(|| between(&answer, "<put url=\"", "\""))
        .unwrap_or_else(|| panic!("no put URL: {answer}"))
        .to_owned();
    let get = between(&answer, "<get url='", "'")
        .or_else(|| between(&answer, "<get url=\"", "\""))
        .unwrap_or_else(|| panic!("no get URL: {answer}"))
        .to_owned();
    let authorization = between(&answer, "name='Authorization'>", "</header>")
        .or_else(|| between(&answer, "name=\"Authorization\">", "</header>"))
        .unwrap_or_else(|| panic!("no Authorization header: {answer}"))
        .to_owned();
    let status = http(
        "PUT",
        &put,
        &[
            ("Authorization", &authorization),
            ("Content-Type", "text/plain"),
        ],
        content,
    );
    assert_eq!(status, 201, "upload refused");
    get
}

// ---------------------------------------------------------------- the three services

fn prosody_present() -> bool {
    require_peer("/usr/bin/prosody", "prosody")
        && require_peer("/usr/share/lua/5.4/socket.lua", "lua-socket")
}

/// Prosody as README's Prosody section sets it up (`authentication = "qam"` on `localhost`),
/// plus what the data to delete needs: the admin shell the hooks use (on in Debian's default
/// config), archives (mod_mam, keeping everything), offline messages, an upload component on
/// HTTP (loopback, no TLS: deviates from a host's https), and `other.localhost` on Prosody's
/// own store without archives for the peer who writes to the user (so that none of the user's
/// name lands in another account's data).
fn start_prosody(qamd: &Daemon) -> Prosody {
    qam_tests::deployment::join_qam("prosody");
    let globals = format!(
        "modules_enabled = {{ \"roster\", \"saslauth\", \"disco\", \"ping\", \"register\", \"admin_shell\", \"mam\", \"offline\" }}\n\
         default_archive_policy = true\narchive_expires_after = \"never\"\n\
         http_ports = {{ {PROSODY_HTTP} }}\nhttp_interfaces = {{ \"127.0.0.1\" }}\n"
    );
    let hosts = format!(
        "VirtualHost \"localhost\"\n  authentication = \"qam\"\n  qam_socket = \"{}\"\n  qam_timeout = 2\n\
         VirtualHost \"other.localhost\"\n  authentication = \"internal_hashed\"\n  modules_disabled = {{ \"mam\", \"offline\" }}\n\
         Component \"upload.localhost\" \"http_file_share\"\n",
        qamd.socket.display()
    );
    Prosody::start_with(PROSODY_PORT, &globals, &hosts)
}

/// `/etc/default/qam-hooks` for this Prosody (`QAM_PROSODYCTL` with `--config`, as the file's
/// comment allows for another instance).
fn prosody_defaults(prosody: &Prosody) -> Vec<(&'static str, String)> {
    vec![
        ("QAM_PROSODY_HOST", "localhost".into()),
        ("QAM_PROSODY_UPLOAD_HOST", "upload.localhost".into()),
        (
            "QAM_PROSODYCTL",
            format!("/usr/bin/prosodyctl --config {}", prosody.config.display()),
        ),
    ]
}

fn ejabberd_present() -> bool {
    require_peer("/usr/sbin/ejabberdctl", "ejabberd")
}

/// ejabberd as README's ejabberd section sets it up (qam-extauth for `localhost`), with
/// offline storage, and `builtin.localhost` on ejabberd's own store for the peer who writes.
fn start_ejabberd(qamd: &Daemon) -> Ejabberd {
    qam_tests::deployment::join_qam("ejabberd");
    Ejabberd::start_with(
        EJABBERD_PORT,
        EJABBERD_NODE,
        &extauth_hosts(qamd),
        "  mod_offline: {}\n",
    )
}

/// `/etc/default/qam-hooks` for this ejabberd (`QAM_EJABBERDCTL` with the options naming the
/// test's node, config and spool).
fn ejabberd_defaults(ejabberd: &Ejabberd) -> Vec<(&'static str, String)> {
    vec![
        ("QAM_EJABBERD_HOST", "localhost".into()),
        (
            "QAM_EJABBERDCTL",
            format!("/usr/sbin/ejabberdctl {}", ejabberd.ctl_options().join(" ")),
        ),
    ]
}

fn dovecot_present() -> bool {
    require_peer(dovecot::DOVECOT, "dovecot-core")
        && require_peer("/usr/lib/dovecot/imap", "dovecot-imapd")
        && require_peer("/usr/lib/dovecot/checkpassword-reply", "dovecot-core")
        && require_peer("/usr/lib/dovecot/dovecot-lda", "dovecot-core")
}

/// Dovecot serving IMAP through README's checkpassword passdb and static userdb (mail homes
/// in the test's temp dir instead of /var/vmail).
fn start_dovecot(qamd: &Daemon, name: &str) -> Dovecot {
    qam_tests::deployment::join_qam("dovecot");
    let program = qamd.dir.path().join("qam-checkpassword");
    fs::copy(bin("qam-checkpassword"), &program).expect("copy qam-checkpassword");
    Dovecot::start_imap(
        &format!("qam-life-{name}-{}", std::process::id()),
        IMAP_PORT,
        &checkpassword_auth(&program, &qamd.socket),
    )
}

/// `/etc/default/qam-hooks` for this Dovecot (its `-c` as README's `QAM_DOVEADM_ARGS` says
/// for a non-default instance).
fn dovecot_defaults(dovecot: &Dovecot) -> Vec<(&'static str, String)> {
    vec![
        ("QAM_DOVEADM", dovecot::DOVEADM.into()),
        (
            "QAM_DOVEADM_ARGS",
            format!("-c {}", dovecot.config().display()),
        ),
    ]
}

// ---------------------------------------------------------------- deletion, service by service

#[test]
fn deleting_a_prosody_user_purges_roster_offline_archive_and_upload() {
    if !prosody_present() {
        return;
    }
    let _serial = serial();
    let name = "adapurge";
    let hooks = hooks_dir();
    enable_shipped(
        hooks.path(),
        &[
            "delete.d/50-prosody",
            "lock.d/50-prosody",
            "password.d/50-prosody",
        ],
    );
    let qamd = qamd(hooks.path());
    qamd.add_user(name, PASSWORD);
    let prosody = start_prosody(&qamd);
    let registered = prosody.ctl(&["register", "bob", "other.localhost", "bob password"]);
    assert!(registered.status.success(), "{}", shown(&registered));

    // The user's data: two contacts, a message they sent (archived), a file they uploaded,
    // and, once they are offline, a message to them (offline store and archive).
    let mut bob =
        live(PROSODY_PORT, "other.localhost", "bob", "bob password").expect("bob's session");
    let mut user = live(PROSODY_PORT, "localhost", name, PASSWORD).unwrap_or_else(|err| {
        panic!(
            "{err}\nprosody:\n{}\nqamd:\n{}",
            prosody.log_text(),
            qamd.log_text()
        )
    });
    add_contact(&mut user, "r1", "friend1@example.net");
    add_contact(&mut user, "r2", "friend2@example.net");
    message(&mut user, "bob@other.localhost", "a note bob gets");
    assert!(bob.wait_for("a note bob gets", within(20)).is_some());
    let content = format!("a file {name} uploaded\n");
    let url = upload(
        &mut user,
        "upload.localhost",
        "note.txt",
        content.as_bytes(),
    );
    assert_eq!(http("GET", &url, &[], b""), 200);
    log_out(user);
    message(&mut bob, &format!("{name}@localhost"), "a note while away");
    let data = prosody.data_dir();
    wait_until(within(20), "the offline message to be stored", || {
        holding(&data, name)
            .iter()
            .any(|(path, _)| path.display().to_string().contains("/offline/"))
    });
    let stored_upload = || {
        files_holding(&data, content.as_bytes())
            .into_iter()
            .map(|(path, _)| path)
            .collect::<Vec<_>>()
    };
    assert_eq!(stored_upload().len(), 1, "the uploaded file is on disk");
    let before = holding(&data, name);
    for store in ["/roster/", "/offline/", "/archive/"] {
        assert!(
            before
                .iter()
                .any(|(path, _)| path.display().to_string().contains(store)),
            "no {store} data of the user before the deletion: {before:?}"
        );
    }

    let _qam_hooks = start_hooks(&qamd, hooks.path(), &prosody_defaults(&prosody));
    let host = data.join("localhost");
    let mut host_gone_after = None;
    let started = Instant::now();
    let (code, out, took, gone_after) = timed_delete(&qamd, name, || {
        let host_gone = holding(&host, name).is_empty();
        if host_gone && host_gone_after.is_none() {
            host_gone_after = Some(started.elapsed());
        }
        host_gone && holding(&data, name).is_empty() && stored_upload().is_empty()
    });
    let left = holding(&data, name);
    let served = http("GET", &url, &[], b"");
    figure(
        "lifecycle delete prosody",
        format!(
            "{} files held the name before; qamctl user del returned {code:?} after {} ms; the user's host (roster, offline, archive) clean after {} ms, the whole data dir and the upload after {} ms; files holding the name after: {left:?}, uploaded file left: {:?} (HTTP GET answers {served})",
            before.len(),
            took.as_millis(),
            host_gone_after.map_or("never".into(), |d| d.as_millis().to_string()),
            gone_after.map_or("never".into(), |d| d.as_millis().to_string()),
            stored_upload()
        ),
    );
    assert_eq!(
        code,
        Some(0),
        "{out}\nqam-hooks:\n{}\nprosody:\n{}",
        _qam_hooks.log_text(),
        prosody.log_text()
    );
    assert!(says_deleted(&out, name), "{out}");
    let on_host = holding(&host, name);
    assert!(
        on_host.is_empty(),
        "the user's host still holds the name: {on_host:?}"
    );
    assert!(
        stored_upload().is_empty(),
        "the uploaded file is still there (README: the hook removes uploads): {left:?}"
    );
    assert!(left.is_empty(), "Prosody still holds the name: {left:?}");
    // Prosody answers 410 Gone for a slot whose file and record are removed.
    assert!(
        matches!(served, 404 | 410),
        "the file is still served: {served}"
    );
    assert_no_record(&qamd, name);
}

#[test]
fn deleting_an_ejabberd_user_purges_roster_and_offline_messages() {
    if !ejabberd_present() {
        return;
    }
    let _serial = serial();
    let name = "benpurge";
    let hooks = hooks_dir();
    enable_shipped(
        hooks.path(),
        &[
            "delete.d/51-ejabberd",
            "lock.d/51-ejabberd",
            "password.d/51-ejabberd",
        ],
    );
    let qamd = qamd(hooks.path());
    qamd.add_user(name, PASSWORD);
    let ejabberd = start_ejabberd(&qamd);
    let ctl = |args: &[&str]| {
        let out = ejabberd.ctl(args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert!(ctl(&["register", "bob", "builtin.localhost", "bob password"]).0);

    let mut user = live(EJABBERD_PORT, "localhost", name, PASSWORD).expect("session");
    add_contact(&mut user, "r1", "friend1@example.net");
    add_contact(&mut user, "r2", "friend2@example.net");
    log_out(user);
    let mut bob =
        live(EJABBERD_PORT, "builtin.localhost", "bob", "bob password").expect("bob's session");
    message(&mut bob, &format!("{name}@localhost"), "a note while away");
    wait_until(within(20), "the offline message to be stored", || {
        ctl(&["get_offline_count", name, "localhost"]).1.trim() == "1"
    });
    let roster = ctl(&["get_roster", name, "localhost"]).1;
    assert!(roster.contains("friend1@example.net"), "{roster}");
    let spool = ejabberd.spool();
    let before = holding(&spool, name);

    let _qam_hooks = start_hooks(&qamd, hooks.path(), &ejabberd_defaults(&ejabberd));
    let (code, out, took, gone_after) = timed_delete(&qamd, name, || {
        !ctl(&["get_roster", name, "localhost"]).1.contains("friend")
            && ctl(&["get_offline_count", name, "localhost"]).1.trim() == "0"
    });
    // What ejabberd itself still holds: its whole database dumped as text.
    let dump = ejabberd.dir.path().join("dump.txt");
    let dumped = ctl(&["dump", &dump.display().to_string()]);
    let dump_text = fs::read_to_string(&dump).unwrap_or_default();
    let left = holding(&spool, name);
    figure(
        "lifecycle delete ejabberd",
        format!(
            "qamctl user del returned {code:?} after {} ms, roster and offline gone after {} ms; the database dump holds the name {} times; spool files holding the name before: {before:?}, after: {left:?}",
            took.as_millis(),
            gone_after.map_or("never".into(), |d| d.as_millis().to_string()),
            dump_text.matches(name).count()
        ),
    );
    assert_eq!(
        code,
        Some(0),
        "{out}\nqam-hooks:\n{}\nejabberd:\n{}",
        _qam_hooks.log_text(),
        ejabberd.log_text()
    );
    assert!(says_deleted(&out, name), "{out}");
    assert!(gone_after.is_some(), "ejabberd still has roster or offline");
    assert!(dumped.0 && !dump_text.is_empty(), "ejabberdctl dump");
    assert!(
        !dump_text.contains(name),
        "ejabberd's database still holds the name"
    );
    // Mnesia keeps the deleted records' bytes where they were (DETS free space, its transaction
    // log, which also records the deletes) until the space is reused or the log dumped, as README
    // says: no file besides those.
    let new: Vec<_> = left
        .iter()
        .filter(|(path, _)| !before.iter().any(|(was, _)| was == path))
        .filter(|(path, _)| {
            !path
                .file_name()
                .is_some_and(|file| file == "LATEST.LOG" || file == "PREVIOUS.LOG")
        })
        .collect();
    assert!(new.is_empty(), "new files hold the name: {new:?}");
    assert_no_record(&qamd, name);
}

#[test]
fn deleting_a_dovecot_user_removes_their_mail_home() {
    if !dovecot_present() {
        return;
    }
    let _serial = serial();
    let name = "cypurge";
    let hooks = hooks_dir();
    enable_shipped(
        hooks.path(),
        &[
            "delete.d/52-dovecot",
            "lock.d/52-dovecot",
            "password.d/52-dovecot",
        ],
    );
    let qamd = qamd(hooks.path());
    qamd.add_user(name, PASSWORD);
    let dovecot = start_dovecot(&qamd, "del");
    let root = dovecot.mail_root().expect("an IMAP instance").to_owned();

    // Mail delivered as the MTA does it (dovecot-lda), then read over IMAP (indexes too).
    let mut lda = Command::new("/usr/lib/dovecot/dovecot-lda")
        .arg("-c")
        .arg(dovecot.config())
        .args(["-d", name, "-f", "sender@example.org"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dovecot-lda");
    lda.stdin
        .take()
        .expect("stdin")
        .write_all(
            format!(
                "From: sender@example.org\r\nTo: {name}@example.org\r\nSubject: for {name}\r\n\r\nHello {name}.\r\n"
            )
            .as_bytes(),
        )
        .expect("write the message");
    let delivered = lda.wait_with_output().expect("dovecot-lda");
    assert!(
        delivered.status.success(),
        "{}\n{}",
        shown(&delivered),
        dovecot.log_text()
    );
    let reading = imap_idle(IMAP_PORT, name, PASSWORD).expect("IMAP session");
    drop(reading);
    let home = root.join(name);
    assert!(
        home.join("Maildir").is_dir(),
        "no Maildir in {}",
        home.display()
    );
    let before = holding(&root, name);
    assert!(!before.is_empty());

    let _qam_hooks = start_hooks(&qamd, hooks.path(), &dovecot_defaults(&dovecot));
    let (code, out, took, gone_after) = timed_delete(&qamd, name, || {
        !home.exists() && holding(&root, name).is_empty()
    });
    let left = holding(&root, name);
    figure(
        "lifecycle delete dovecot",
        format!(
            "{} files held the name before; qamctl user del returned {code:?} after {} ms, the mail home gone after {} ms; files holding the name after: {left:?}",
            before.len(),
            took.as_millis(),
            gone_after.map_or("never".into(), |d| d.as_millis().to_string())
        ),
    );
    assert_eq!(
        code,
        Some(0),
        "{out}\nqam-hooks:\n{}\ndovecot:\n{}",
        _qam_hooks.log_text(),
        dovecot.log_text()
    );
    assert!(says_deleted(&out, name), "{out}");
    assert!(!home.exists(), "{} is still there", home.display());
    assert!(
        left.is_empty(),
        "the mail root still holds the name: {left:?}"
    );
    assert_no_record(&qamd, name);
}

// ---------------------------------------------------------------- locking ends sessions

#[test]
fn locking_ends_live_sessions_on_prosody_ejabberd_and_dovecot() {
    if !prosody_present() || !ejabberd_present() || !dovecot_present() {
        return;
    }
    let _serial = serial();
    let name = "dalock";
    let hooks = hooks_dir();
    enable_shipped(
        hooks.path(),
        &[
            "lock.d/50-prosody",
            "lock.d/51-ejabberd",
            "lock.d/52-dovecot",
        ],
    );
    let qamd = qamd(hooks.path());
    qamd.add_user(name, PASSWORD);
    let prosody = start_prosody(&qamd);
    let ejabberd = start_ejabberd(&qamd);
    let dovecot = start_dovecot(&qamd, "lock");
    let mut defaults = prosody_defaults(&prosody);
    defaults.extend(ejabberd_defaults(&ejabberd));
    defaults.extend(dovecot_defaults(&dovecot));
    let qam_hooks = start_hooks(&qamd, hooks.path(), &defaults);

    // Each hook's floor: one call of the service's control program, as the hooks make them.
    let prosody_floor = baseline("prosodyctl shell", || {
        prosody.ctl(&["shell", "server", "version"])
    });
    let ejabberd_floor = baseline("ejabberdctl status", || ejabberd.ctl(&["status"]));
    let dovecot_floor = baseline("doveadm who", || dovecot.doveadm(&["who"]));

    let xmpp_prosody = live(PROSODY_PORT, "localhost", name, PASSWORD).expect("Prosody");
    let xmpp_ejabberd = live(EJABBERD_PORT, "localhost", name, PASSWORD).expect("ejabberd");
    let imap = imap_idle(IMAP_PORT, name, PASSWORD).expect("IMAP IDLE");
    let started = Instant::now();
    let (code, out) = qamctl(&qamd, &["user", "lock", name]);
    assert_eq!(code, Some(0), "{out}");
    let ended = |what: &str, session: &Watched| {
        session
            .wait_ended(within(60))
            .map(|at| at.duration_since(started))
            .unwrap_or_else(|| {
                panic!(
                    "{what}: the session is still open a minute after the lock\nqam-hooks:\n{}",
                    qam_hooks.log_text()
                )
            })
    };
    let on_prosody = ended("Prosody", &xmpp_prosody);
    let on_ejabberd = ended("ejabberd", &xmpp_ejabberd);
    let on_dovecot = ended("Dovecot", &imap);
    // The hooks run one after another in run-parts order: each service's session waits for the
    // control calls of the hooks before its own.
    let limits = [
        LOCK_BUDGET + prosody_floor,
        LOCK_BUDGET + prosody_floor + ejabberd_floor,
        LOCK_BUDGET + prosody_floor + ejabberd_floor + dovecot_floor,
    ];
    figure(
        "lifecycle lock",
        format!(
            "sessions ended after qamctl user lock: Prosody {} ms (its shell call {} ms), ejabberd {} ms (ejabberdctl status {} ms), Dovecot IMAP IDLE {} ms (doveadm who {} ms); limits {:?} ms",
            on_prosody.as_millis(),
            prosody_floor.as_millis(),
            on_ejabberd.as_millis(),
            ejabberd_floor.as_millis(),
            on_dovecot.as_millis(),
            dovecot_floor.as_millis(),
            limits.map(|l| l.as_millis())
        ),
    );
    for ((what, took), limit) in [
        ("Prosody", on_prosody),
        ("ejabberd", on_ejabberd),
        ("Dovecot", on_dovecot),
    ]
    .into_iter()
    .zip(limits)
    {
        assert!(
            took <= limit,
            "{what}'s session ended {} ms after the lock, past {} ms",
            took.as_millis(),
            limit.as_millis()
        );
    }
    // Locked means locked: no new session either.
    assert!(live(PROSODY_PORT, "localhost", name, PASSWORD).is_err());
    assert!(live(EJABBERD_PORT, "localhost", name, PASSWORD).is_err());
    assert!(imap_idle(IMAP_PORT, name, PASSWORD).is_err());
}

// ---------------------------------------------------------------- failed and interrupted hooks

/// A hook that records its runs (`<hook> <argv> <QAM_EVENT> <QAM_USER>`) in `runs`.
fn recording(runs: &Path, hook: &str) -> String {
    format!(
        "echo \"{hook} $1 $2 $QAM_EVENT $QAM_USER\" >> '{}'",
        runs.display()
    )
}

/// How many runs of `hook` `runs` records.
fn runs_of(runs: &Path, hook: &str) -> usize {
    fs::read_to_string(runs)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.starts_with(&format!("{hook} ")))
        .count()
}

#[test]
fn a_failed_delete_hook_leaves_the_account_locked_and_a_retry_runs_only_that_hook() {
    let _serial = serial();
    let name = "evefail";
    let hooks = hooks_dir();
    let runs = hooks.path().join("runs");
    let marker = hooks.path().join("refuse");
    add_hook(
        hooks.path(),
        "delete.d/30-steady",
        &recording(&runs, "30-steady"),
    );
    add_hook(
        hooks.path(),
        "delete.d/40-flaky",
        &format!(
            "{}\nif [ -e '{}' ]; then echo 'refusing: the marker is there' >&2; exit 1; fi",
            recording(&runs, "40-flaky"),
            marker.display()
        ),
    );
    fs::write(&marker, "").expect("marker");
    let qamd = qamd(hooks.path());
    qamd.add_user(name, PASSWORD);
    // start_hooks waits until qam-hooks listens: a deletion started while it asks for its
    // first page reaches it twice (among the pending deletions and as the event).
    let qam_hooks = start_hooks(&qamd, hooks.path(), &[]);
    let (code, out) = qamctl(&qamd, &["user", "del", name, "--yes"]);
    assert_eq!(code, Some(3), "{out}\n{}", qam_hooks.log_text());
    // The contract's words are "deletion pending: <hooks>"; qamctl says "deletion of `NAME`
    // pending: <hooks> failed".
    assert!(out.contains("deletion") && out.contains("pending"), "{out}");
    assert!(out.contains("delete.d/40-flaky: failed"), "{out}");
    assert!(out.contains("refusing: the marker is there"), "{out}");
    assert!(out.contains("delete.d/30-steady: ok"), "{out}");
    let account = qamd.lookup(name).expect("the account is still there");
    assert!(account.locked && account.deleting, "{account:?}");
    let (_, list) = qamctl(&qamd, &["user", "list"]);
    assert!(list.contains(name), "{list}");
    let (_, show) = qamctl(&qamd, &["user", "show", name]);
    assert!(
        show.contains("pending") && show.contains("40-flaky"),
        "{show}"
    );
    assert!(!qamd
        .client()
        .verify(name, &Password::from(PASSWORD))
        .expect("verify"));
    assert_eq!(
        fs::read_to_string(&runs).unwrap_or_default().lines().next(),
        Some(format!("30-steady delete {name} delete {name}").as_str()),
        "argv and environment of a delete hook"
    );

    fs::remove_file(&marker).expect("remove the marker");
    let (code, out) = qamctl(&qamd, &["user", "del", name, "--yes"]);
    assert_eq!(code, Some(0), "{out}\n{}", qam_hooks.log_text());
    assert!(says_deleted(&out, name), "{out}");
    assert_eq!(
        runs_of(&runs, "30-steady"),
        1,
        "the hook that succeeded ran once; runs:\n{}\nqam-hooks:\n{}\nqamd:\n{}",
        fs::read_to_string(&runs).unwrap_or_default(),
        qam_hooks.log_text(),
        qamd.log_text()
    );
    assert_eq!(
        runs_of(&runs, "40-flaky"),
        2,
        "the failed hook ran again; runs:\n{}\nqam-hooks:\n{}\nqamd:\n{}",
        fs::read_to_string(&runs).unwrap_or_default(),
        qam_hooks.log_text(),
        qamd.log_text()
    );
    assert_no_record(&qamd, name);
}

#[test]
fn a_deletion_interrupted_by_a_qam_hooks_crash_finishes_after_its_restart() {
    let _serial = serial();
    let name = "finkill";
    let hooks = hooks_dir();
    let runs = hooks.path().join("runs");
    let hold = hooks.path().join("hold");
    add_hook(
        hooks.path(),
        "delete.d/20-first",
        &recording(&runs, "20-first"),
    );
    add_hook(
        hooks.path(),
        "delete.d/30-slow",
        &format!(
            "{}\nwhile [ -e '{}' ]; do sleep 0.05; done",
            recording(&runs, "30-slow"),
            hold.display()
        ),
    );
    fs::write(&hold, "").expect("hold");
    let qamd = qamd(hooks.path());
    qamd.add_user(name, PASSWORD);
    let mut qam_hooks = start_hooks(&qamd, hooks.path(), &[]);
    let admin = qamd
        .qamctl_command(&["user", "del", name, "--yes"])
        .spawn()
        .expect("run qamctl");
    wait_until(within(60), "the slow hook to start", || {
        runs_of(&runs, "30-slow") == 1
    });
    qam_hooks.kill();
    let account = qamd.lookup(name).expect("still there while its hooks run");
    assert!(account.locked && account.deleting, "{account:?}");
    // The killed qam-hooks' hook goes on alone; let it end (a host's unit stop kills it).
    fs::remove_file(&hold).expect("release the slow hook");
    qam_hooks.spawn(&qamd, hooks.path());
    let erased = poll_until(within(60), || qamd.lookup(name).is_none());
    let out = admin.wait_with_output().expect("qamctl");
    assert!(
        erased,
        "{}\nqam-hooks:\n{}",
        both(&out),
        qam_hooks.log_text()
    );
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert_eq!(
        runs_of(&runs, "20-first"),
        1,
        "a done hook is not run again; runs:\n{}\nqam-hooks:\n{}\nqamd:\n{}",
        fs::read_to_string(&runs).unwrap_or_default(),
        qam_hooks.log_text(),
        qamd.log_text()
    );
    assert_eq!(
        runs_of(&runs, "30-slow"),
        2,
        "the interrupted hook ran again; runs:\n{}\nqam-hooks:\n{}\nqamd:\n{}",
        fs::read_to_string(&runs).unwrap_or_default(),
        qam_hooks.log_text(),
        qamd.log_text()
    );
    assert_no_record(&qamd, name);
}

// ---------------------------------------------------------------- the name afterwards

#[test]
fn a_deleted_name_is_quarantined_unless_an_admin_reuses_it() {
    let _serial = serial();
    let name = "gusreuse";
    let hooks = hooks_dir();
    let qamd = qamd(hooks.path());
    qamd.add_user(name, PASSWORD);
    let (code, out) = qamctl(&qamd, &["user", "del", name, "--yes"]);
    assert_eq!(code, Some(0), "{out}");
    assert_no_record(&qamd, name);

    let refused = qamd
        .client()
        .call::<NameInfo>(&Request::Register {
            user: name.into(),
            password: Password::from(PASSWORD),
            force: false,
            reuse_name: false,
        })
        .expect_err("a quarantined name");
    assert!(
        matches!(&refused, ClientError::Server(err) if err.code.to_string() == "name_quarantined"),
        "{refused:?}"
    );
    let password = format!("{PASSWORD}\n");
    let added = qamd.qamctl(&["user", "add", name, "--password-stdin"], &password);
    assert!(!added.status.success(), "{}", shown(&added));
    assert!(both(&added).contains("quarantine"), "{}", shown(&added));
    let added = qamd.qamctl(
        &[
            "user",
            "add",
            name,
            "--password-stdin",
            "--reuse-deleted-name",
        ],
        &password,
    );
    assert!(added.status.success(), "{}", shown(&added));
    assert!(qamd
        .client()
        .verify(name, &Password::from(PASSWORD))
        .expect("verify"));
}
