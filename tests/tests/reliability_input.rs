//! Hostile input: generated and random input for the request decoder, the
//! saslauthd framing, qam-extauth and qam-checkpassword; every protocol error code triggered.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use qam_client::wire::{decode_request, encode_request, ExportRecord, Op};
use qam_client::{ErrorCode, Password, Request};
use qam_tests::reliability::{code_of, figure, raw_lines, size, Rng};
use qam_tests::{bin, Daemon};
use serde_json::Value;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// Failure ladder off: these tests send many wrong passwords on purpose.
const NO_THROTTLE: &str = "[throttle]\nfree_failures = 1000000\n";

fn runner(cases: usize) -> TestRunner {
    TestRunner::new(Config {
        cases: cases as u32,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(".{0,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every operation's wire name, and names of none.
fn op_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = Op::ALL.iter().map(|op| op.as_str()).collect();
    names.extend(["fly", ""]);
    names
}

/// Every field any request takes, and the envelope's `id` and `op`.
fn field_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = Op::ALL.iter().flat_map(|op| op.fields()).copied().collect();
    names.extend(["id", "op"]);
    names.sort_unstable();
    names.dedup();
    names
}

/// Request-shaped objects: real and fake op names, each field absent or of any JSON type.
fn request_object() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(op_names()),
        vec((prop::sample::select(field_names()), json_value()), 0..6),
        any::<bool>(),
    )
        .prop_map(|(op, fields, with_op)| {
            let mut object = serde_json::Map::new();
            if with_op {
                object.insert("op".into(), Value::from(op));
            }
            for (name, value) in fields {
                object.insert(name.into(), value);
            }
            Value::Object(object)
        })
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![".{0,40}", "[a-z0-9._-]{1,32}"]
}

fn secret() -> impl Strategy<Value = Password> {
    ".{0,40}".prop_map(Password::from)
}

fn page() -> impl Strategy<Value = (Option<String>, Option<u32>)> {
    (
        proptest::option::of(name()),
        proptest::option::of(any::<u32>()),
    )
}

/// Every kind of typed request, with arbitrary strings.
fn typed_request() -> impl Strategy<Value = Request> {
    let record = (
        name(),
        ".{0,60}",
        ".{0,12}",
        any::<bool>(),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(|(name, hash, created, locked, uid)| ExportRecord {
            name,
            hash,
            created,
            locked,
            uid,
            origin: None,
            password: None,
        });
    prop_oneof![
        Just(Request::Hello),
        Just(Request::Status),
        (name(), secret()).prop_map(|(user, password)| Request::Verify {
            user,
            password,
            client: None
        }),
        name().prop_map(|user| Request::Exists { user }),
        name().prop_map(|user| Request::Lookup { user }),
        (name(), secret()).prop_map(|(user, password)| Request::Register {
            user,
            password,
            force: false,
            reuse_name: false,
        }),
        (name(), secret(), secret()).prop_map(|(user, old_password, new_password)| {
            Request::ChangePassword {
                user,
                old_password,
                new_password,
            }
        }),
        (name(), secret()).prop_map(|(user, password)| Request::SetPassword { user, password }),
        name().prop_map(|user| Request::Delete { user }),
        name().prop_map(|user| Request::Lock { user }),
        name().prop_map(|user| Request::Unlock { user }),
        page().prop_map(|(after, limit)| Request::List { after, limit }),
        page().prop_map(|(after, limit)| Request::Export { after, limit }),
        (vec(record, 0..3), any::<bool>(), any::<bool>()).prop_map(
            |(records, replace, dry_run)| Request::Import {
                records,
                replace,
                dry_run,
                allow_weak: false,
                system_users: false,
            }
        ),
    ]
}

#[test]
fn the_request_decoder_survives_anything() {
    let executions = AtomicU64::new(0);
    let cases = size(4_000, 200_000);
    let check_refusal = |line: &[u8]| -> Result<(), TestCaseError> {
        executions.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = decode_request(line) {
            prop_assert!(
                matches!(err.error.code, ErrorCode::BadRequest | ErrorCode::UnknownOp),
                "{:?}",
                err.error.code
            );
        }
        Ok(())
    };
    // Raw bytes.
    runner(cases)
        .run(&vec(any::<u8>(), 0..300), |bytes| check_refusal(&bytes))
        .unwrap();
    // Request-shaped JSON with every field of any type; a password never shows in the error.
    runner(cases)
        .run(&(request_object(), "[A-Za-z]{6}"), |(mut object, tag)| {
            let secret = format!("SeCrEt{tag}");
            object["password"] = Value::from(secret.as_str());
            let line = serde_json::to_vec(&object).unwrap();
            check_refusal(&line)?;
            if let Err(err) = decode_request(&line) {
                prop_assert!(!err.error.message.contains(&secret));
            }
            Ok(())
        })
        .unwrap();
    // Truncations and byte flips of valid lines.
    runner(cases)
        .run(
            &(typed_request(), any::<prop::sample::Index>(), any::<u8>()),
            |(request, at, byte)| {
                let line = encode_request(Some(1), &request);
                let line = &line[..line.len() - 1];
                let cut = at.index(line.len() + 1);
                check_refusal(&line[..cut])?;
                let mut flipped = line.to_vec();
                if !flipped.is_empty() {
                    let i = at.index(flipped.len());
                    flipped[i] ^= byte | 1;
                }
                check_refusal(&flipped)
            },
        )
        .unwrap();
    // Every typed request round-trips through the codec.
    runner(cases)
        .run(&typed_request(), |request| {
            executions.fetch_add(1, Ordering::Relaxed);
            let line = encode_request(Some(9), &request);
            let (id, back) = decode_request(&line[..line.len() - 1]).unwrap();
            prop_assert_eq!(id, Some(Value::from(9)));
            prop_assert_eq!(back, request);
            Ok(())
        })
        .unwrap();
    figure(
        "3 hostile input",
        format!(
            "decode_request: {} generated executions, 0 crashes",
            executions.load(Ordering::Relaxed)
        ),
    );
}

/// A saslauthd request: four fields, each a u16 big-endian length and the bytes.
fn sasl_frame(fields: &[Vec<u8>]) -> Vec<u8> {
    let fields: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
    qamd::saslauthd::encode_fields(&fields)
}

#[test]
fn the_saslauthd_framing_survives_anything() {
    use qamd::saslauthd::{parse_frame, MAX_FIELD};
    let executions = AtomicU64::new(0);
    let cases = size(4_000, 200_000);
    runner(cases)
        .run(&vec(any::<u8>(), 0..1200), |bytes| {
            executions.fetch_add(1, Ordering::Relaxed);
            let _ = parse_frame(&bytes);
            Ok(())
        })
        .unwrap();
    let field = || vec(any::<u8>(), 0..MAX_FIELD + 8);
    runner(cases)
        .run(
            &(vec(field(), 4..6), any::<prop::sample::Index>()),
            |(fields, at)| {
                executions.fetch_add(1, Ordering::Relaxed);
                let frame = sasl_frame(&fields);
                let cut = at.index(frame.len());
                // A prefix never yields a request (it asks for more, or is refused).
                prop_assert!(
                    !matches!(parse_frame(&frame[..cut]), Ok(Some(_)))
                        || cut >= sasl_frame(&fields[..4]).len()
                );
                let whole = parse_frame(&frame);
                let fits = fields[..4].iter().all(|f| f.len() <= MAX_FIELD);
                let text = fields[..4].iter().all(|f| std::str::from_utf8(f).is_ok());
                let filled = !fields[0].is_empty() && !fields[1].is_empty();
                match whole {
                    Ok(Some(request)) => {
                        prop_assert!(fits && text && filled);
                        prop_assert_eq!(request.login.as_bytes(), &fields[0][..]);
                        prop_assert_eq!(request.password.expose().as_bytes(), &fields[1][..]);
                    }
                    Ok(None) => prop_assert!(false, "a whole frame must be decided"),
                    Err(_) => prop_assert!(!(fits && text && filled)),
                }
                Ok(())
            },
        )
        .unwrap();
    figure(
        "3 hostile input",
        format!(
            "saslauthd parse_frame: {} generated executions, 0 crashes",
            executions.load(Ordering::Relaxed)
        ),
    );
}

/// Refuses every extauth command, logging nowhere.
struct RefuseAll(qam_extauth::log::Log);

impl qam_extauth::service::Answer for RefuseAll {
    fn answer(&mut self, _: qam_extauth::command::Command) -> bool {
        false
    }
    fn log(&self) -> &qam_extauth::log::Log {
        &self.0
    }
}

#[test]
fn the_extauth_loop_and_the_checkpassword_reader_survive_anything() {
    use qam_extauth::frame::{Protocol, MAX_REQUEST};
    let executions = AtomicU64::new(0);
    runner(size(2_000, 200_000))
        .run(&vec(any::<u8>(), 0..MAX_REQUEST + 512), |bytes| {
            executions.fetch_add(1, Ordering::Relaxed);
            // Framing, command parsing and answering in memory: never an error, and never
            // more answers than the bytes could hold requests (2-byte frames, lines).
            let mut refuser = RefuseAll(qam_extauth::log::Log::Syslog(None));
            let mut answers = Vec::new();
            let input = &mut std::io::Cursor::new(&bytes);
            qam_extauth::serve(Protocol::Ejabberd, input, &mut answers, &mut refuser).unwrap();
            prop_assert!(answers.len() / 4 <= bytes.len() / 2);
            answers.clear();
            let input = &mut std::io::Cursor::new(&bytes);
            qam_extauth::serve(Protocol::Generic, input, &mut answers, &mut refuser).unwrap();
            let lines = bytes.iter().filter(|b| **b == b'\n').count() + 1;
            prop_assert!(answers.len() / 2 <= lines);
            let read = qam_checkpassword::input::read(&bytes[..]).unwrap();
            prop_assert!(read.len() <= qam_checkpassword::input::MAX_INPUT + 1);
            if let Ok(credentials) = qam_checkpassword::input::parse(&read) {
                prop_assert!(!credentials.login.contains('\0'));
            }
            Ok(())
        })
        .unwrap();
    figure(
        "3 hostile input",
        format!(
            "qam-extauth's read-parse-answer loop (both protocols) and qam-checkpassword's fd 3 reader: {} generated executions, 0 crashes",
            executions.load(Ordering::Relaxed)
        ),
    );
}

#[test]
fn qamd_answers_every_hostile_line_and_keeps_the_connection() {
    let daemon = Daemon::start();
    let mut rng = Rng::from_clock("hostile lines");
    let count = size(1_500, 50_000);
    let mut lines: Vec<Vec<u8>> = Vec::with_capacity(count + 1);
    let ops = op_names();
    for n in 0..count {
        let len = rng.below(200) as usize;
        let mut line: Vec<u8> = (0..len)
            .map(|_| rng.next_u64() as u8)
            .filter(|b| *b != b'\n')
            .collect();
        if n % 3 == 0 {
            // Mostly valid JSON with a random field, so the decoder goes deep.
            line = format!(
                r#"{{"id":{n},"op":"{}","user":{},"password":"{}"}}"#,
                ops[rng.below(ops.len() as u64) as usize],
                ["\"alice\"", "7", "null", "[]", "{}", "\"\\u0000\""][rng.below(6) as usize],
                "p".repeat(rng.below(20) as usize),
            )
            .into_bytes();
        }
        lines.push(line);
    }
    lines.push(br#"{"op":"hello"}"#.to_vec());
    let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    let answers = raw_lines(&daemon.socket, &refs);
    assert_eq!(answers.len(), lines.len());
    assert_eq!(
        code_of(answers.last().unwrap()),
        "ok",
        "connection still usable"
    );
    let log = daemon.log_text();
    assert!(!log.contains("panicked"), "{log}");
    figure(
        "3 hostile input",
        format!(
            "qamd over its socket: {} random lines answered on one connection, 0 crashes",
            lines.len()
        ),
    );
}

/// Runs qam-extauth (ejabberd framing) on `input`; returns (exit ok, answers read, stderr).
fn extauth(socket: &std::path::Path, input: &[u8]) -> (bool, Vec<u8>, String) {
    let mut child = Command::new(bin("qam-extauth"))
        .args(["--domain", "localhost", "--socket"])
        .arg(socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    writer.join().unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        out,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn qam_extauth_answers_every_frame_and_never_desynchronises() {
    let daemon = Daemon::start_with(NO_THROTTLE);
    daemon.add_user("alice", "alice-password");
    // The known request's account: no random frame names it (a random `setpass:alice:…` may
    // change alice's password, as it should).
    daemon.add_user("steady", "steady-password");
    let mut rng = Rng::from_clock("extauth frames");
    let runs = size(100, 2_000);
    let mut frames_sent = 0;
    for _ in 0..runs {
        let mut input = Vec::new();
        let mut frames = 0;
        for _ in 0..rng.below(20) + 1 {
            let body: Vec<u8> = match rng.below(4) {
                0 => (0..rng.below(60)).map(|_| rng.next_u64() as u8).collect(),
                1 => format!(
                    "auth:alice:localhost:{}",
                    "x".repeat(rng.below(30) as usize)
                )
                .into_bytes(),
                2 => {
                    let words = [
                        "auth",
                        "isuser",
                        "setpass",
                        "tryregister",
                        "removeuser",
                        "removeuser3",
                        ":",
                        "alice",
                        "localhost",
                        "\u{0}",
                        "é",
                    ];
                    (0..rng.below(8))
                        .map(|_| words[rng.below(words.len() as u64) as usize])
                        .collect::<Vec<_>>()
                        .join(":")
                        .into_bytes()
                }
                _ => vec![b'a'; 4000 + rng.below(200) as usize],
            };
            input.extend_from_slice(&(body.len() as u16).to_be_bytes());
            input.extend_from_slice(&body);
            frames += 1;
        }
        // The known request last: its answer must be the last one, and true.
        let known = b"auth:steady:localhost:steady-password";
        input.extend_from_slice(&(known.len() as u16).to_be_bytes());
        input.extend_from_slice(known);
        frames += 1;
        let (ok, out, stderr) = extauth(&daemon.socket, &input);
        assert!(ok, "exit status; stderr: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(out.len(), frames * 4, "one 4-byte answer per frame");
        assert_eq!(&out[out.len() - 4..], &[0, 2, 0, 1], "still in step");
        frames_sent += frames;
    }
    // Random bytes as a stream: whatever frames they form get answers, never a crash.
    for _ in 0..runs {
        let input: Vec<u8> = (0..rng.below(400)).map(|_| rng.next_u64() as u8).collect();
        let (ok, out, stderr) = extauth(&daemon.socket, &input);
        assert!(ok && !stderr.contains("panicked"), "{stderr}");
        assert!(out
            .chunks(4)
            .all(|a| a == [0, 2, 0, 0] || a == [0, 2, 0, 1]));
    }
    figure(
        "3 hostile input",
        format!(
            "qam-extauth: {} runs, {frames_sent} hostile frames answered in step, 0 crashes",
            runs * 2
        ),
    );
}

#[test]
fn qam_checkpassword_never_crashes_on_fd3_input() {
    let daemon = Daemon::start_with(NO_THROTTLE);
    daemon.add_user("alice", "alice-password");
    let mut rng = Rng::from_clock("checkpassword input");
    let runs = size(150, 5_000);
    let input_file = daemon.dir.path().join("fd3");
    let mut codes = std::collections::BTreeMap::new();
    for n in 0..runs {
        let input: Vec<u8> = match n % 5 {
            3 => b"alice\0alice-password\0<1@host>\0".to_vec(),
            4 => {
                let mut v = b"alice\0".to_vec();
                v.extend((0..rng.below(40)).map(|_| b'!' + (rng.below(90) as u8)));
                v.extend(b"\0");
                v
            }
            0 => (0..rng.below(600)).map(|_| rng.next_u64() as u8).collect(),
            1 => {
                let mut v = b"alice\0".to_vec();
                v.extend((0..rng.below(40)).map(|_| rng.next_u64() as u8));
                v
            }
            _ => {
                let parts = [
                    "alice",
                    "\0",
                    "alice-password",
                    "ALICE",
                    "",
                    "x".repeat(300).leak(),
                ];
                (0..rng.below(6))
                    .map(|_| parts[rng.below(parts.len() as u64) as usize])
                    .collect::<String>()
                    .into_bytes()
            }
        };
        std::fs::write(&input_file, &input).unwrap();
        let output = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" --socket \"$1\" true 3<\"$2\"")
            .arg(bin("qam-checkpassword"))
            .arg(&daemon.socket)
            .arg(&input_file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        let code = output
            .status
            .code()
            .expect("exited, not killed by a signal");
        assert!([0, 1, 2].contains(&code), "exit {code}: {stderr}");
        if code == 0 {
            // Only the real password passes.
            let text = String::from_utf8_lossy(&input).into_owned();
            assert!(
                text.starts_with("alice\0alice-password\0")
                    || text.starts_with("ALICE\0alice-password\0"),
                "{text:?}"
            );
        }
        *codes.entry(code).or_insert(0) += 1;
    }
    figure(
        "3 hostile input",
        format!("qam-checkpassword: {runs} random fd 3 inputs, exit codes {codes:?}, 0 crashes"),
    );
}

#[test]
fn every_protocol_error_code_is_triggered() {
    use qam_tests::identity::Identity;
    use qam_tests::reliability::{raw_as, socket_gid};
    let daemon = Daemon::start_with(
        "[throttle]\nfree_failures = 2\nbase_delay_ms = 60000\n[permissions.users]\nnobody = [\"register\"]\n",
    );
    daemon.add_user("alice", "alice-password");
    let mut seen = std::collections::BTreeMap::new();
    let mut expect = |code: &str, answer: &Value| {
        assert_eq!(code_of(answer), code, "{answer}");
        *seen.entry(code.to_owned()).or_insert(0) += 1;
    };
    let root = raw_lines(
        &daemon.socket,
        &[
            br#"{"op":"#,
            br#"{"op":"fly"}"#,
            br#"{"op":"verify","user":"alice","password":"wrong-password"}"#,
            br#"{"op":"register","user":"alice","password":"another-password"}"#,
            br#"{"op":"delete","user":"nobody-here"}"#,
            br#"{"op":"register","user":"Bad Name!","password":"long-enough-password"}"#,
            br#"{"op":"register","user":"shortpw","password":"short"}"#,
            br#"{"op":"verify","user":"alice","password":"wrong-again"}"#,
            br#"{"op":"verify","user":"alice","password":"alice-password"}"#,
            br#"{"op":"reset_info","token":"no-such-token"}"#,
        ],
    );
    for (answer, code) in root.iter().zip([
        "bad_request",
        "unknown_op",
        "denied",
        "exists",
        "not_found",
        "invalid_username",
        "invalid_password",
        "denied",
        "throttled",
        "invalid_token",
    ]) {
        expect(code, answer);
    }
    // A deleted account's name, and an account whose deletion waits for its hook.
    let hooks = qam_tests::shared_tempdir();
    std::fs::create_dir(hooks.path().join("delete.d")).unwrap();
    std::fs::write(hooks.path().join("delete.d/50-x"), "").unwrap();
    let hooked = Daemon::start_with(&format!("[hooks]\ndir = \"{}\"\n", hooks.path().display()));
    hooked.add_user("leaving", "leaving-password");
    let pending = raw_lines(
        &hooked.socket,
        &[
            br#"{"op":"delete","user":"leaving"}"#,
            br#"{"op":"unlock","user":"leaving"}"#,
            br#"{"op":"deletion_finish","user":"leaving"}"#,
            br#"{"op":"register","user":"leaving","password":"long-enough-password"}"#,
        ],
    );
    expect("deletion_pending", &pending[1]);
    expect("name_quarantined", &pending[3]);
    // The strength check is off in the harness's default config: on here.
    let strict = Daemon::start_with("[password]\nmin_strength = 3\n");
    let weak = raw_lines(
        &strict.socket,
        &[br#"{"op":"register","user":"weakling","password":"password1"}"#],
    );
    expect("weak_password", &weak[0]);
    // An over-long line: `too_large`, then the connection is closed.
    {
        use std::io::BufRead;
        let mut stream = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
        let mut long = vec![b'x'; 70_000];
        long.push(b'\n');
        let _ = stream.write_all(&long);
        let mut reader = std::io::BufReader::new(stream);
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        expect("too_large", &serde_json::from_str(&answer).unwrap());
        answer.clear();
        // Closed: end of file, or a reset because the rest of the line stayed unread.
        assert!(
            matches!(reader.read_line(&mut answer), Ok(0) | Err(_)),
            "closed after too_large"
        );
    }
    // A peer that is not an admin: outside its grant, and register while registration is closed.
    let nobody = raw_as(
        &Identity::new("nobody", socket_gid(&daemon.socket)).with_user_groups(),
        &daemon.socket,
        &[
            r#"{"op":"status"}"#,
            r#"{"op":"register","user":"newuser","password":"long-enough-password"}"#,
        ],
    );
    expect("forbidden", &nobody[0]);
    expect("registration_closed", &nobody[1]);
    // The store failing under a write: `internal`.
    let writes = daemon.data_dir.join("WRITES");
    std::fs::remove_file(&writes).unwrap();
    std::fs::create_dir(&writes).unwrap();
    let failed = raw_lines(
        &daemon.socket,
        &[br#"{"op":"register","user":"storefail","password":"long-enough-password"}"#],
    );
    expect("internal", &failed[0]);
    std::fs::remove_dir(&writes).unwrap();
    // Beyond max_connections: one `busy` answer.
    let capped = Daemon::start_with("max_connections = 1\n");
    // Held open and known to be served (it answered hello), so the cap is reached.
    let mut held = None;
    qam_tests::wait_until(qam_tests::within(20), "a connection under the cap", || {
        use std::io::BufRead;
        let mut stream = std::os::unix::net::UnixStream::connect(&capped.socket).unwrap();
        // Refused (the cap still counts a closing connection): the write may fail; retry.
        let _ = stream.write_all(b"{\"op\":\"hello\"}\n");
        let mut answer = String::new();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let _ = reader.read_line(&mut answer);
        held = answer.contains("\"ok\":true").then_some(stream);
        held.is_some()
    });
    let mut refused = std::os::unix::net::UnixStream::connect(&capped.socket).unwrap();
    let mut answer = String::new();
    refused.read_to_string(&mut answer).unwrap();
    expect("busy", &serde_json::from_str(answer.trim()).unwrap());

    let all: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    let missing: Vec<_> = all
        .iter()
        .filter(|code| !seen.contains_key(**code))
        .collect();
    assert!(missing.is_empty(), "codes never triggered: {missing:?}");
    figure(
        "3 error codes",
        format!(
            "{} of {} protocol error codes triggered: {seen:?}",
            seen.len(),
            all.len()
        ),
    );
}
