//! qamd's saslauthd-compatible socket: Cyrus SASL's own `testsaslauthd`, real Prosody through
//! libsasl2, malformed and stalled frames from a raw client, and the SO_PEERCRED policy.
//!
//! Prosody runs with `authentication = "cyrus"` and logs in over XMPP.

use qam_tests::identity::Identity;
use qam_tests::xmpp::{median, plain_login, timed_login, Login, Prosody};
use qam_tests::{require_peer, shared_tempdir, Daemon};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const TESTSASLAUTHD: &str = "/usr/sbin/testsaslauthd";
const PROSODY: &str = "/usr/bin/prosody";
const MOD_AUTH_CYRUS: &str = "/usr/lib/prosody/modules/mod_auth_cyrus";
const LUA_CYRUSSASL: &str = "/usr/lib/x86_64-linux-gnu/lua/5.4/cyrussasl.so";
const SASL_PLAIN: &str = "/usr/lib/x86_64-linux-gnu/sasl2/libplain.so";
/// Prosody's c2s port in this file.
const PORT: u16 = 15424;

/// A qamd with the door open on `<dir>/run/qam/saslauthd/mux` (the README's path below a
/// 0755 dir of its own; qamd creates the missing directories), plus `extra` config.
struct QamdWithSaslauthd {
    /// The daemon, with alice and a locked bob.
    qamd: Daemon,
    /// The saslauthd socket the tests' clients connect to.
    socket: PathBuf,
    /// Holds the socket's directories; removed when the test ends.
    _dir: tempfile::TempDir,
}

impl QamdWithSaslauthd {
    fn open(extra: &str) -> QamdWithSaslauthd {
        let dir = shared_tempdir();
        let socket = dir.path().join("run/qam/saslauthd/mux");
        let qamd = Daemon::start_with(&format!(
            "saslauthd_socket = {:?}\nidle_timeout_seconds = 2\n{extra}\n[throttle]\nfree_failures = 1000\n",
            socket.display().to_string()
        ));
        qamd.add_user("alice", "correct horse");
        qamd.add_user("bob", "battery staple");
        qamd.lock_user("bob");
        QamdWithSaslauthd {
            qamd,
            socket,
            _dir: dir,
        }
    }

    /// `testsaslauthd -u U -p P -s xmpp -r REALM -f SOCKET`, optionally as another user.
    fn testsaslauthd(
        &self,
        user: &str,
        password: &str,
        realm: &str,
        run_as: Option<&str>,
    ) -> Output {
        let mut command = match run_as {
            Some(name) => {
                let account = nix::unistd::User::from_name(name).unwrap().unwrap();
                Identity::new(name, account.gid).command(TESTSASLAUTHD)
            }
            None => Command::new(TESTSASLAUTHD),
        };
        command
            .args(["-u", user, "-p", password, "-s", "xmpp", "-f"])
            .arg(&self.socket);
        if !realm.is_empty() {
            command.args(["-r", realm]);
        }
        command.output().expect("run testsaslauthd")
    }

    fn accepts(&self, user: &str, password: &str, realm: &str) -> bool {
        let output = self.testsaslauthd(user, password, realm, None);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            text.contains("OK") || text.contains("NO"),
            "testsaslauthd said: {text}"
        );
        text.contains("OK \"Success.\"")
    }

    /// Sends raw bytes on a fresh connection and reads the answer text (None: closed silently).
    fn raw(&self, bytes: &[u8]) -> Option<String> {
        let mut stream = UnixStream::connect(&self.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // The door may answer and close before a refused frame is fully sent.
        let _ = stream.write_all(bytes);
        read_reply(&mut stream)
    }
}

fn read_reply(stream: &mut UnixStream) -> Option<String> {
    let mut answer = Vec::new();
    // A reset after the answer (the door closed with unread bytes of ours) still ends it.
    if let Err(err) = stream.read_to_end(&mut answer) {
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    }
    if answer.is_empty() {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([answer[0], answer[1]]));
    assert_eq!(answer.len(), 2 + len, "reply frame {answer:?}");
    Some(String::from_utf8(answer[2..].to_vec()).unwrap())
}

fn frame(fields: &[&[u8]]) -> Vec<u8> {
    qamd::saslauthd::encode_fields(fields)
}

fn testsaslauthd_present() -> bool {
    require_peer(TESTSASLAUTHD, "sasl2-bin")
}

#[test]
fn testsaslauthd_right_wrong_unknown_locked() {
    if !testsaslauthd_present() {
        return;
    }
    let door = QamdWithSaslauthd::open("");
    assert!(door.accepts("alice", "correct horse", ""));
    assert!(door.accepts("Alice", "correct horse", "localhost"));
    assert!(!door.accepts("alice", "wrong", ""));
    assert!(!door.accepts("nobody-here", "x", ""));
    assert!(!door.accepts("bob", "battery staple", ""));
    let log = door.qamd.log_text();
    assert!(log.contains("saslauthd-compatible socket open"), "{log}");
    assert!(!log.contains("correct horse"), "a password reached the log");

    let times: Vec<Duration> = (0..25)
        .map(|_| {
            let started = Instant::now();
            assert!(door.accepts("alice", "correct horse", ""));
            started.elapsed()
        })
        .collect();
    eprintln!(
        "TIMING door=saslauthd peer=testsaslauthd median={:?}",
        median(times)
    );
}

#[test]
fn realms_are_checked_against_the_configured_list() {
    if !testsaslauthd_present() {
        return;
    }
    let door = QamdWithSaslauthd::open("saslauthd_realms = [\"example.org\"]");
    assert!(door.accepts("alice", "correct horse", "example.org"));
    assert!(door.accepts("alice", "correct horse", "EXAMPLE.org"));
    assert!(!door.accepts("alice", "correct horse", "other.org"));
    assert!(!door.accepts("alice", "correct horse", ""));
    assert_eq!(
        door.raw(&frame(&[b"alice", b"correct horse", b"imap", b"other.org"]))
            .as_deref(),
        Some("NO realm not accepted")
    );
}

#[test]
fn socket_permissions_and_peer_policy_decide_who_may_ask() {
    if !testsaslauthd_present() {
        return;
    }
    // Group `nogroup` owns both sockets: `nobody` may connect, `dovenull` may not.
    let door = QamdWithSaslauthd::open("socket_group = \"nogroup\"");
    let nobody = door.testsaslauthd("alice", "correct horse", "", Some("nobody"));
    assert!(
        String::from_utf8_lossy(&nobody.stdout).contains("OK"),
        "{nobody:?}"
    );
    let outsider = door.testsaslauthd("alice", "correct horse", "", Some("dovenull"));
    assert!(
        !String::from_utf8_lossy(&outsider.stdout).contains("OK"),
        "{outsider:?}"
    );

    // A peer whose grants lack `verify` is refused by SO_PEERCRED policy.
    let door = QamdWithSaslauthd::open(
        "socket_group = \"nogroup\"\n[permissions]\ndefault = [\"exists\"]",
    );
    let refused = door.testsaslauthd("alice", "correct horse", "", Some("nobody"));
    assert!(
        !String::from_utf8_lossy(&refused.stdout).contains("OK"),
        "{refused:?}"
    );
    assert!(door
        .qamd
        .log_text()
        .contains("saslauthd: operation forbidden"));
    assert!(
        door.accepts("alice", "correct horse", ""),
        "root stays an admin"
    );
}

#[test]
fn malformed_frames_get_no_or_a_closed_connection() {
    let door = QamdWithSaslauthd::open("");
    let ok = frame(&[b"alice", b"correct horse", b"smtp", b""]);
    assert_eq!(door.raw(&ok).as_deref(), Some("OK"));
    // A fifth field (client address, newer clients) is ignored.
    let five = frame(&[b"alice", b"correct horse", b"smtp", b"", b"192.0.2.7"]);
    assert_eq!(door.raw(&five).as_deref(), Some("OK"));
    // Zero-length fields, empty login or password.
    let zero = frame(&[b"", b"", b"", b""]);
    assert_eq!(
        door.raw(&zero).as_deref(),
        Some("NO empty login or password")
    );
    assert_eq!(
        door.raw(&frame(&[b"alice", b"", b"", b""])).as_deref(),
        Some("NO empty login or password")
    );
    // Over-long fields are refused from their length alone.
    let long = vec![b'x'; 300];
    let answer = door.raw(&frame(&[b"alice", &long, b"", b""])).unwrap();
    assert!(
        answer.starts_with("NO") && answer.contains("256"),
        "{answer}"
    );
    let answer = door.raw(&[0xff, 0xff]).unwrap();
    assert!(answer.starts_with("NO"), "{answer}");
    // Short frames: the client closes its side before the fourth field.
    let short = frame(&[b"alice", b"correct horse"]);
    let mut stream = UnixStream::connect(&door.socket).unwrap();
    stream.write_all(&short).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_reply(&mut stream), None);
    assert_eq!(door.raw(b"").as_deref(), None);
    // Not UTF-8.
    let answer = door.raw(&frame(&[b"al\xffce", b"pw", b"", b""])).unwrap();
    assert!(answer.starts_with("NO"), "{answer}");
}

#[test]
fn stalled_clients_never_delay_others_and_are_closed_at_the_timeout() {
    let door = QamdWithSaslauthd::open("");
    let mut stalled: Vec<UnixStream> = (0..40)
        .map(|n| {
            let mut stream = UnixStream::connect(&door.socket).unwrap();
            // Each stops somewhere inside its frame and then says nothing more.
            let whole = frame(&[b"alice", b"correct horse", b"smtp", b"realm"]);
            stream
                .write_all(&whole[..1 + n % (whole.len() - 1)])
                .unwrap();
            stream
        })
        .collect();
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(
            door.raw(&frame(&[b"alice", b"correct horse", b"", b""]))
                .as_deref(),
            Some("OK")
        );
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "10 logins took {took:?} beside stalled clients"
    );
    // idle_timeout_seconds = 2: each stalled connection is closed without an answer.
    for stream in &mut stalled {
        stream
            .set_read_timeout(Some(Duration::from_secs(6)))
            .unwrap();
        assert_eq!(read_reply(stream), None);
    }
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[test]
fn a_graceful_stop_is_not_held_up_by_a_stalled_client_and_removes_the_socket() {
    let mut door = QamdWithSaslauthd::open("");
    let mut stalled = UnixStream::connect(&door.socket).unwrap();
    stalled.write_all(&[0, 5, b'a']).unwrap();
    assert_eq!(
        door.raw(&frame(&[b"alice", b"correct horse", b"", b""]))
            .as_deref(),
        Some("OK")
    );
    let started = Instant::now();
    let status = door.qamd.stop();
    assert!(status.success(), "{status}\n{}", door.qamd.log_text());
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "stop took {:?}",
        started.elapsed()
    );
    assert!(
        !door.socket.exists(),
        "the door's socket file is removed at exit"
    );
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(read_reply(&mut stalled), None);
}

/// /etc/sasl2/<app>.conf pointing libsasl2 at the door; removed on drop.
struct SaslConf {
    path: PathBuf,
    created_dir: bool,
}

impl SaslConf {
    fn write(app: &str, socket: &Path) -> SaslConf {
        let dir = Path::new("/etc/sasl2");
        let created_dir = !dir.exists();
        fs::create_dir_all(dir).expect("create /etc/sasl2 (tests run as root)");
        let path = dir.join(format!("{app}.conf"));
        fs::write(
            &path,
            format!(
                "pwcheck_method: saslauthd\nsaslauthd_path: {}\nmech_list: PLAIN\n",
                socket.display()
            ),
        )
        .expect("write sasl2 config");
        SaslConf { path, created_dir }
    }
}

impl Drop for SaslConf {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        if self.created_dir {
            let _ = fs::remove_dir(Path::new("/etc/sasl2"));
        }
    }
}

#[test]
fn prosody_cyrus_logs_in_over_xmpp_through_the_door() {
    if !require_peer(PROSODY, "prosody")
        || !require_peer(MOD_AUTH_CYRUS, "prosody-modules")
        || !require_peer(LUA_CYRUSSASL, "lua-cyrussasl")
        || !require_peer(SASL_PLAIN, "libsasl2-modules")
    {
        return;
    }
    // README: `sudo adduser prosody qam`; the door's socket and directories belong to `qam`.
    qam_tests::deployment::join_qam("prosody");
    let door = QamdWithSaslauthd::open("");
    // An application name of the test's own instead of `prosody`: the host's
    // /etc/sasl2/prosody.conf stays untouched.
    let app = format!("qamtest{}", std::process::id());
    let _conf = SaslConf::write(&app, &door.socket);
    let prosody = Prosody::start(
        PORT,
        &format!(
            "VirtualHost \"localhost\"\n  authentication = \"cyrus\"\n  cyrus_application_name = \"{app}\"\n  cyrus_service_name = \"xmpp\"\n"
        ),
    );
    let login = |user: &str, password: &str| plain_login(PORT, "localhost", user, password);
    assert_eq!(
        login("alice", "correct horse").unwrap(),
        Login::Success,
        "{}\n{}",
        prosody.log_text(),
        door.qamd.log_text()
    );
    assert!(matches!(
        login("alice", "wrong").unwrap(),
        Login::Failure(_)
    ));
    assert!(matches!(
        login("nobody-here", "x").unwrap(),
        Login::Failure(_)
    ));
    assert!(matches!(
        login("bob", "battery staple").unwrap(),
        Login::Failure(_)
    ));
    // libsasl2 passes the service name and the VirtualHost as realm.
    assert!(
        door.qamd
            .log_text()
            .contains("service=xmpp realm=localhost"),
        "{}",
        door.qamd.log_text()
    );

    let times: Vec<Duration> = (0..25)
        .map(|_| timed_login(|| login("alice", "correct horse")))
        .collect();
    eprintln!(
        "TIMING door=saslauthd peer=prosody(mod_auth_cyrus, XMPP PLAIN) median={:?}",
        median(times)
    );
}
