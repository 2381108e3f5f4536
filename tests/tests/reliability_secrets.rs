//! Secrets: at trace log level no password reaches a log, an answer or a
//! tool's output; qamd cannot dump core; no password stays in qamd's memory after use.

use qam_client::wire::{Done, NameInfo};
use qam_client::{Password, Request};
use qam_tests::identity::Identity;
use qam_tests::reliability::{figure, raw_lines};
use qam_tests::{bin, shared_tempdir, wait_until, within, Daemon};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

/// How often `needle` occurs in qamd's writable memory (heap, stacks, anonymous maps).
fn occurrences_in_memory(pid: u32, needle: &[u8]) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut found = 0;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (range, perms) = (fields.next().unwrap(), fields.next().unwrap());
        if !perms.starts_with("rw") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut region = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut region).is_err() {
            continue;
        }
        found += region
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count();
    }
    found
}

/// Holds a quote and a non-ASCII letter, so it travels escaped on the wire.
const ESCAPED: &str = "Mem-Esc\"aped-\u{e9}9";

#[test]
fn no_password_stays_in_qamd_memory_after_use() {
    let daemon = Daemon::start_with("[throttle]\nfree_failures = 1000000\n");
    let right = "Mem-Right-7Qz1x9";
    let wrong = "Mem-Wrong-4Kp8v2";
    let changed = "Mem-Changed-3Jw5";
    {
        let mut client = daemon.client();
        client
            .call::<NameInfo>(&Request::Register {
                user: "memuser".into(),
                password: Password::from(right),
                force: false,
                reuse_name: false,
            })
            .unwrap();
        for _ in 0..20 {
            assert!(client.verify("memuser", &Password::from(right)).unwrap());
            assert!(!client.verify("memuser", &Password::from(wrong)).unwrap());
        }
        client
            .call::<Done>(&Request::ChangePassword {
                user: "memuser".into(),
                old_password: Password::from(right),
                new_password: Password::from(changed),
            })
            .unwrap();
        // A password that JSON must escape (serde_json unescapes it into a scratch buffer).
        let escaped = Password::from(ESCAPED);
        assert!(!client.verify("memuser", &escaped).unwrap());
        // A line that fails to decode, with a password in it.
        raw_lines(
            &daemon.socket,
            &[format!(r#"{{"op":"verify","user":["x"],"password":"{wrong}"}}"#).as_bytes()],
        );
    }
    // Every connection of the block has ended, so its buffers are gone.
    daemon.wait_connections_closed();
    let pid = daemon.pid();
    let counts: Vec<(&str, usize)> = [right, wrong, changed, ESCAPED]
        .iter()
        .map(|p| (*p, occurrences_in_memory(pid, p.as_bytes())))
        .collect();
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    figure(
        "8 secrets in memory",
        format!("copies of 4 used passwords left in qamd's writable memory after the connections closed: {total} ({counts:?})"),
    );
    assert_eq!(total, 0, "{counts:?}");
}

/// Runs `program` with `stdin`; returns stdout and stderr together.
fn output_of(command: &mut Command, stdin: &[u8]) -> String {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let output = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn no_password_reaches_any_log_or_answer_at_trace_level() {
    // The only test in this file that starts daemons from the environment: trace everywhere.
    std::env::set_var("RUST_LOG", "trace");
    let sasl_dir = shared_tempdir();
    let sasl = sasl_dir.path().join("sasl.sock");
    let daemon = Daemon::start_with(&format!(
        "saslauthd_socket = {:?}\n[throttle]\nfree_failures = 3\nbase_delay_ms = 60000\n",
        sasl.display().to_string()
    ));
    std::env::remove_var("RUST_LOG");
    let secret = |n: u32| format!("Tr4ce-Secret-{n:02}-xq");
    let mut seen = String::new();
    let mut client = daemon.client();
    let note = |result: Result<String, qam_client::ClientError>| match result {
        Ok(text) => text,
        Err(err) => format!("{err} {err:?}\n"),
    };
    let register = |c: &mut qam_client::Client, user: &str, pw: &str| {
        c.call::<NameInfo>(&Request::Register {
            user: user.into(),
            password: Password::from(pw),
            force: false,
            reuse_name: false,
        })
        .map(|i| format!("{i:?}"))
    };
    let (p1, p2, p3, p4) = (secret(1), secret(2), secret(3), secret(4));
    seen += &note(register(&mut client, "alice", &p1));
    seen += &note(
        client
            .verify("alice", &Password::from(p1.as_str()))
            .map(|b| b.to_string()),
    );
    seen += &note(
        client
            .verify("alice", &Password::from(p2.as_str()))
            .map(|b| b.to_string()),
    );
    seen += &note(
        client
            .call::<Done>(&Request::ChangePassword {
                user: "alice".into(),
                old_password: Password::from(p1.as_str()),
                new_password: Password::from(p3.as_str()),
            })
            .map(|d| format!("{d:?}")),
    );
    seen += &note(
        client
            .call::<Done>(&Request::SetPassword {
                user: "alice".into(),
                password: Password::from(p4.as_str()),
            })
            .map(|d| format!("{d:?}")),
    );
    // Rule violations, throttling and unknown users, each carrying a password.
    let p5 = secret(5);
    seen += &note(register(&mut client, "Bad Name", &p5));
    seen += &note(register(&mut client, "carol", "Sh0rt-7"));
    let p6 = secret(6);
    for _ in 0..5 {
        seen += &note(
            client
                .verify("dave", &Password::from(p6.as_str()))
                .map(|b| b.to_string()),
        );
    }
    // Lines that fail to decode, and an over-long one, with passwords inside.
    let (p7, p8, p9) = (secret(7), secret(8), secret(9));
    for answer in raw_lines(
        &daemon.socket,
        &[
            format!(r#"{{"op":"verify","user":"alice","password":"{p7}""#).as_bytes(),
            format!(r#"{{"op":"verify","user":["{p8}"],"password":"{p8}"}}"#).as_bytes(),
            format!(r#"{{"op":"verify","user":"alice","password":"{p9}","limit":"{p9}"}}"#)
                .as_bytes(),
        ],
    ) {
        seen += &format!("{answer}\n");
    }
    let p10 = secret(10);
    {
        use std::io::BufRead;
        let mut stream = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
        let mut long =
            format!(r#"{{"op":"verify","user":"alice","password":"{p10}","pad":""#).into_bytes();
        long.resize(70_000, b'x');
        long.push(b'\n');
        let _ = stream.write_all(&long);
        let mut answer = String::new();
        let _ = std::io::BufReader::new(stream).read_line(&mut answer);
        seen += &answer;
    }
    // qamctl, qam-extauth, qam-checkpassword and the saslauthd door.
    let (p11, p12) = (secret(11), secret(12));
    let qamctl = |args: &[&str], stdin: &str| {
        output_of(
            Command::new(bin("qamctl"))
                .arg("--socket")
                .arg(&daemon.socket)
                .args(args),
            stdin.as_bytes(),
        )
    };
    seen += &qamctl(
        &["user", "add", "erin", "--password-stdin"],
        &format!("{p11}\n"),
    );
    seen += &qamctl(&["verify", "erin", "--password-stdin"], &format!("{p12}\n"));
    seen += &qamctl(&["export"], "");
    let (p13, p14) = (secret(13), secret(14));
    let mut frames = Vec::new();
    for request in [
        format!("auth:alice:localhost:{p4}"),
        format!("auth:alice:localhost:{p13}"),
        format!("setpass:alice:localhost:{p14}"),
        format!("tryregister:frank:localhost:{p14}"),
        format!("auth:alice:elsewhere:{p13}"),
        format!("bogus:{p13}"),
    ] {
        frames.extend_from_slice(&(request.len() as u16).to_be_bytes());
        frames.extend_from_slice(request.as_bytes());
    }
    seen += &output_of(
        Command::new(bin("qam-extauth"))
            .args(["--domain", "localhost", "--socket"])
            .arg(&daemon.socket),
        &frames,
    );
    let p15 = secret(15);
    for input in [
        format!("alice\0{p14}\0\0"),
        format!("alice\0{p15}\0\0"),
        format!("{p15}\0"),
    ] {
        let fd3 = sasl_dir.path().join("fd3");
        std::fs::write(&fd3, input).unwrap();
        seen += &output_of(
            Command::new("sh")
                .arg("-c")
                .arg("exec \"$0\" --socket \"$1\" sh -c 'echo reply $USER' 3<\"$2\"")
                .arg(bin("qam-checkpassword"))
                .arg(&daemon.socket)
                .arg(&fd3),
            b"",
        );
    }
    let p16 = secret(16);
    for password in [p14.as_str(), p16.as_str()] {
        let mut stream = std::os::unix::net::UnixStream::connect(&sasl).unwrap();
        for field in ["alice", password, "xmpp", "localhost"] {
            stream
                .write_all(&(field.len() as u16).to_be_bytes())
                .unwrap();
            stream.write_all(field.as_bytes()).unwrap();
        }
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        seen += &String::from_utf8_lossy(&answer);
        seen += "\n";
    }
    let used: Vec<String> = (1..=16).map(secret).chain(["Sh0rt-7".to_owned()]).collect();
    let log = daemon.log_text();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "trace logging was on"
    );
    let everything = format!("{log}\n{seen}");
    let leaks: Vec<(&String, usize)> = used
        .iter()
        .map(|p| (p, everything.matches(p.as_str()).count()))
        .filter(|(_, n)| *n > 0)
        .collect();
    figure(
        "8 secrets in logs",
        format!(
            "{} passwords used across qamd (trace), qamctl, qam-extauth, qam-checkpassword, saslauthd door and {} bytes of logs/answers/outputs: {} occurrences",
            used.len(),
            everything.len(),
            leaks.iter().map(|(_, n)| n).sum::<usize>()
        ),
    );
    assert!(leaks.is_empty(), "{leaks:?}");
}

#[test]
fn qamd_disables_core_dumps_of_itself() {
    // Run as nobody: a process that is not dumpable has its /proc/PID files owned by root.
    let dir = shared_tempdir();
    nix::unistd::chown(dir.path(), Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let config = dir.path().join("qamd.toml");
    std::fs::write(
        &config,
        format!(
            "socket = {:?}\ndata_dir = {:?}\nsocket_group = \"\"\n{}",
            dir.path().join("qamd.sock").display().to_string(),
            dir.path().join("data").display().to_string(),
            qam_tests::CHEAP_HASH
        ),
    )
    .unwrap();
    let mut child = Identity::new("nobody", "nogroup")
        .command(bin("qamd"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_until(within(20), "qamd as nobody to listen", || {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("qamd as nobody exited {status}: {err}");
        }
        dir.path().join("qamd.sock").exists()
    });
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let running_as = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_owned();
    let proc_owner = std::fs::metadata(format!("/proc/{pid}/environ"))
        .unwrap()
        .uid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core_limit = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap()
        .to_owned();
    let _ = child.kill();
    let _ = child.wait();
    figure(
        "8 core dumps",
        format!("qamd running as {running_as:?}: /proc/PID owned by uid {proc_owner} (0 = not dumpable); {core_limit:?}"),
    );
    assert!(running_as.contains("65534"));
    assert_eq!(proc_owner, 0, "PR_SET_DUMPABLE 0");
    assert!(
        core_limit.split_whitespace().filter(|w| *w == "0").count() >= 2,
        "{core_limit}"
    );
}
