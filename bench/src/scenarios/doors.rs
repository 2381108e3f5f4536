//! The scenarios of the newer doors, each beside what a user would compare it with: NSS
//! lookups (7), invite and reset links (8), and first logins that upgrade a moved-in hash (9).

use super::{ratio, Bench, BenchError};
use crate::daemon::{round_trip, HashSettings, Qamd};
use crate::load::{summarize, LineFn, Load, Sample, Summary};
use crate::users::{self, pick, user, PASSWORD};
use qam_client::Request;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where nss-systemd looks for userdb sockets.
const USERDB_DIR: &str = "/run/systemd/userdb";
/// glibc's module for `passwd: ... systemd`.
const NSS_SYSTEMD: &str = "/usr/lib/x86_64-linux-gnu/libnss_systemd.so.2";
/// The uids of the NSS scenario's accounts: apart from the ranges the test suite uses.
const NSS_UIDS: (u32, u32) = (400_000, 499_999);
/// The /etc/passwd entry every system has, the baseline lookup.
const FILES_USER: &str = "root";

/// Whether `getpwnam` reaches a socket in [`USERDB_DIR`] on this machine: nss-systemd is
/// installed and listed on nsswitch.conf's `passwd:` line, and this process may add a socket.
fn system_nss_available() -> bool {
    let nsswitch = std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default();
    let listed = nsswitch.lines().any(|line| {
        line.starts_with("passwd:") && line.split_whitespace().any(|source| source == "systemd")
    });
    listed
        && Path::new(NSS_SYSTEMD).exists()
        && Path::new(USERDB_DIR).is_dir()
        && nix::unistd::Uid::effective().is_root()
}

/// One lookup, timed by [`timed_calls`]: true when it found what it looked for.
type Call<'a> = Box<dyn FnMut(u64) -> std::io::Result<bool> + 'a>;

/// Latencies (µs) of calls made one after the other for `slice`, and how many failed.
fn timed_calls(slice: Duration, call: &mut Call<'_>) -> std::io::Result<(Vec<u32>, u64)> {
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut failed = 0;
    let mut seq = 0;
    while started.elapsed() < slice {
        let began = Instant::now();
        let found = call(seq)?;
        let micros = began.elapsed().as_micros();
        if found {
            latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
        } else {
            failed += 1;
        }
        seq += 1;
    }
    Ok((latencies, failed))
}

/// A userdb call as nss-systemd sends it, with its NUL.
fn user_record_call(service: &str, name: Option<&str>, more: bool) -> Vec<u8> {
    let mut parameters = serde_json::json!({ "service": service });
    if let Some(name) = name {
        parameters["userName"] = name.into();
    }
    let mut call = serde_json::json!({
        "method": "io.systemd.UserDatabase.GetUserRecord",
        "parameters": parameters,
    });
    if more {
        call["more"] = true.into();
    }
    let mut bytes = call.to_string().into_bytes();
    bytes.push(0);
    bytes
}

/// Sends `call` on a new connection to `door`; every reply until the one without `continues`.
fn userdb_exchange(door: &Path, call: &[u8]) -> std::io::Result<Vec<serde_json::Value>> {
    let mut stream = UnixStream::connect(door)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(call)?;
    let mut reader = BufReader::new(stream);
    let mut replies = Vec::new();
    loop {
        let mut bytes = Vec::new();
        if reader.read_until(0, &mut bytes)? == 0 {
            return Ok(replies);
        }
        bytes.pop();
        let reply: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err))?;
        let more = reply["continues"] == true;
        replies.push(reply);
        if !more {
            return Ok(replies);
        }
    }
}

/// Most tokens or accounts prepared for one run: with cheap hashing (`--quick`) the durable
/// writes, not argon2, bound the rate, far below the estimate from raw argon2.
const MOST_PREPARED: u64 = 5000;

/// Connections preparing tokens: enough writers to share flushes.
const PREPARING_CONNECTIONS: usize = 16;

/// Estimated requests a closed-loop run of one-argon2 requests makes over all its slices,
/// with room for slices luckier than the baseline's: how many tokens or accounts to prepare.
fn needed(bench: &Bench<'_>) -> u64 {
    let rounds = f64::from(bench.options.rounds.max(1));
    let seconds =
        bench.options.measure().as_secs_f64() + rounds * bench.options.warmup().as_secs_f64();
    let rate = bench.ceiling.per_second.max(10.0);
    let estimate =
        (rate * seconds * 3.0) as u64 + (bench.options.connections as u64) * 4 * rounds as u64;
    estimate.min(MOST_PREPARED)
}

/// A line function taking the next of `tokens` for each request.
fn token_lines(tokens: Vec<String>, write: fn(&mut Vec<u8>, &str, u64)) -> LineFn {
    let next = AtomicU64::new(0);
    Arc::new(move |_, _, out| {
        let index = next.fetch_add(1, Ordering::Relaxed);
        let token = usize::try_from(index)
            .ok()
            .and_then(|at| tokens.get(at))
            .map_or("used-up", String::as_str);
        write(out, token, index);
    })
}

impl Bench<'_> {
    /// Runs each of `lines` on `load` in turn, `rounds` times, so noise hits them alike; their
    /// samples in the same order.
    fn alternated<const N: usize>(
        &mut self,
        load: &Load,
        lines: [LineFn; N],
    ) -> Result<[Sample; N], BenchError> {
        let rounds = self.options.rounds.max(1);
        let slice = self.options.measure() / rounds;
        let mut samples: [Sample; N] = std::array::from_fn(|_| Sample::default());
        for _ in 0..rounds {
            for (sample, lines) in samples.iter_mut().zip(&lines) {
                let part = Load {
                    measure: slice,
                    ..load.clone()
                };
                sample.merge(self.measure(&part, Arc::clone(lines))?);
            }
        }
        for sample in &mut samples {
            sample.seconds = (slice * rounds).as_secs_f64();
        }
        Ok(samples)
    }

    /// Scenario 7: record lookups through the userdb door, next to an /etc/passwd lookup and
    /// qamd's own `lookup` op, in interleaved slices; then listing every account.
    pub(super) fn nss(&mut self, binary: &Path, settings: HashSettings) -> Result<(), BenchError> {
        let count = self.options.nss_users;
        let system = !self.options.no_system_nss && system_nss_available();
        let service = format!("io.qam.bench-{}", std::process::id());
        let door: PathBuf = if system {
            Path::new(USERDB_DIR).join(&service)
        } else {
            self.scratch.path().join(&service)
        };
        eprintln!(
            "7: NSS lookups of {count} accounts ({})",
            if system {
                "through nss-systemd too"
            } else {
                "the socket only"
            }
        );
        let extra = format!(
            "\n[nss]\nenabled = true\nsocket = {:?}\nuid_min = {}\nuid_max = {}\n",
            door.display().to_string(),
            NSS_UIDS.0,
            NSS_UIDS.1
        );
        let (qamd, _) = Qamd::start_with(binary, settings, &extra, Some(door.clone()))?;
        let names: Vec<String> = (0..count).map(user).collect();
        let phc = self.phc.clone();
        self.runtime
            .block_on(users::import(qamd.socket(), names, &phc, None, 2))?;
        eprintln!("7: imported; lookups");
        let name = |seq: u64| user(pick(7, seq, count));
        let mut kept = BufReader::new(UnixStream::connect(qamd.socket())?);
        let mut cases: Vec<(String, Call<'_>)> = vec![(
            format!("7 baseline: getpwnam of an /etc/passwd entry ({FILES_USER})"),
            Box::new(|_| {
                Ok(matches!(
                    nix::unistd::User::from_name(FILES_USER),
                    Ok(Some(_))
                ))
            }),
        )];
        if system {
            cases.push((
                format!("7 getpwnam of a qam account through nss-systemd, {count} accounts"),
                Box::new(|seq| {
                    Ok(matches!(
                        nix::unistd::User::from_name(&name(seq)),
                        Ok(Some(_))
                    ))
                }),
            ));
        }
        cases.push((
            "7 qamd userdb GetUserRecord, a connection per call (as nss-systemd makes it)".into(),
            Box::new(|seq| {
                let wanted = name(seq);
                let replies =
                    userdb_exchange(&door, &user_record_call(&service, Some(&wanted), false))?;
                Ok(replies.first().is_some_and(|reply| {
                    reply["parameters"]["record"]["userName"] == wanted.as_str()
                }))
            }),
        ));
        cases.push((
            "7 baseline: qamd `lookup`, a connection per call".into(),
            Box::new(|seq| {
                let line = format!("{{\"op\":\"lookup\",\"user\":\"{}\"}}\n", name(seq));
                let (_, answer) = round_trip(qamd.socket(), &line)?;
                Ok(answer.starts_with("{\"ok\":true"))
            }),
        ));
        cases.push((
            "7 baseline: qamd `lookup` on one open connection".into(),
            Box::new(move |seq| {
                let line = format!("{{\"op\":\"lookup\",\"user\":\"{}\"}}\n", name(seq));
                kept.get_mut().write_all(line.as_bytes())?;
                let mut answer = String::new();
                kept.read_line(&mut answer)?;
                Ok(answer.starts_with("{\"ok\":true"))
            }),
        ));
        let rounds = self.options.rounds.max(1);
        let slice = self.options.measure() / rounds / cases.len() as u32;
        let mut results: Vec<(Vec<u32>, u64)> = cases.iter().map(|_| (Vec::new(), 0)).collect();
        for _ in 0..rounds {
            for ((_, call), (latencies, failed)) in cases.iter_mut().zip(&mut results) {
                let (more, misses) = timed_calls(slice, call)?;
                latencies.extend(more);
                *failed += misses;
            }
        }
        let seconds = (slice * rounds).as_secs_f64();
        let labels: Vec<String> = cases.into_iter().map(|(label, _)| label).collect();
        let summaries: Vec<Summary> = results
            .iter_mut()
            .map(|(latencies, _)| summarize(latencies, seconds))
            .collect();
        let (files, per_connection) = (summaries[0], summaries[summaries.len() - 2]);
        for ((label, summary), (_, failed)) in labels.iter().zip(&summaries).zip(&results) {
            let compared = if label.contains("getpwnam of a qam") {
                Some(ratio(summary, &files))
            } else if label.contains("GetUserRecord") {
                Some(ratio(summary, &per_connection))
            } else {
                None
            };
            self.row(label.clone(), *summary, compared, "(information)", None);
            if *failed > 0 {
                self.report.fact(
                    format!("lookups that found nothing in `{label}`"),
                    failed.to_string(),
                );
            }
        }
        self.list_accounts(&door, &service, count, system)
    }

    /// How long listing every account takes: the door's enumeration, and `getent passwd`.
    fn list_accounts(
        &mut self,
        door: &Path,
        service: &str,
        count: u64,
        system: bool,
    ) -> Result<(), BenchError> {
        let began = Instant::now();
        let replies = userdb_exchange(door, &user_record_call(service, None, true))?;
        let took = began.elapsed();
        self.report.fact(
            format!("7 userdb enumeration of {count} accounts, one connection"),
            format!("{:.2} s, {} records", took.as_secs_f64(), replies.len()),
        );
        if system {
            let began = Instant::now();
            let output = std::process::Command::new("getent")
                .arg("passwd")
                .output()?;
            let took = began.elapsed();
            let listed = String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| line.split(':').nth(2)?.parse::<u32>().ok())
                .filter(|uid| (NSS_UIDS.0..=NSS_UIDS.1).contains(uid))
                .count();
            self.report.fact(
                format!("7 `getent passwd` listing /etc/passwd and {count} qam accounts"),
                format!("{:.2} s, {listed} qam accounts listed", took.as_secs_f64()),
            );
        }
        Ok(())
    }

    /// Scenario 8: accounts made with invite links next to plain `register`, and passwords
    /// set with reset links next to an admin's `set_password` (one argon2 and one durable
    /// write each), alternating in slices.
    pub(super) fn links(&mut self, qamd: &Qamd) -> Result<(), BenchError> {
        let connections = self.options.connections;
        let wanted = needed(self);
        eprintln!("8: {wanted} invites and reset links, then {connections} clients redeem them");
        let socket = qamd.socket().to_owned();
        let began = Instant::now();
        let invites = vec![
            Request::InviteCreate {
                expires_seconds: None,
                uses: None,
                note: None,
            };
            usize::try_from(wanted).unwrap_or(usize::MAX)
        ];
        let invites =
            self.runtime
                .block_on(users::link_tokens(&socket, invites, PREPARING_CONNECTIONS))?;
        let invites_took = began.elapsed();
        let reset_names: Vec<String> = (0..wanted).map(|index| format!("p{index:06}")).collect();
        let phc = self.phc.clone();
        self.runtime
            .block_on(users::import(&socket, reset_names.clone(), &phc, None, 1))?;
        let resets = reset_names
            .into_iter()
            .map(|user| Request::ResetCreate {
                user,
                expires_seconds: None,
            })
            .collect();
        let began = Instant::now();
        let resets =
            self.runtime
                .block_on(users::link_tokens(&socket, resets, PREPARING_CONNECTIONS))?;
        self.report.fact(
            format!(
                "8 making {wanted} invites, then {wanted} reset links \
                 ({PREPARING_CONNECTIONS} connections)"
            ),
            format!(
                "{:.1} s, {:.1} s",
                invites_took.as_secs_f64(),
                began.elapsed().as_secs_f64()
            ),
        );
        eprintln!(
            "8: links made; register vs register_invite, then set_password vs reset_password"
        );

        let registered = Arc::new(AtomicU64::new(0));
        let register: LineFn = Arc::new(move |_, _, out| {
            let index = registered.fetch_add(1, Ordering::Relaxed);
            users::register_line(out, &format!("n{index}"))
        });
        let redeem = token_lines(invites, |out, token, index| {
            users::register_invite_line(out, token, &format!("i{index}"));
        });
        let load = self.closed(&socket, connections);
        let [mut plain, mut invited] = self.alternated(&load, [register, redeem])?;
        let plain = summarize(&mut plain.ok, plain.seconds);
        let invited = summarize(&mut invited.ok, invited.seconds);
        self.row(
            format!("8 baseline: qamd register, {connections} clients"),
            plain,
            None,
            "",
            None,
        );
        self.row(
            format!("8 qamd register_invite (a fresh invite each), {connections} clients"),
            invited,
            Some(ratio(&invited, &plain)),
            "(information)",
            None,
        );

        let count = self.options.base_users;
        let set: LineFn = Arc::new(move |conn, seq, out| {
            users::set_password_line(out, &user(pick(conn, seq, count)));
        });
        let reset = token_lines(resets, |out, token, _| {
            users::reset_password_line(out, token)
        });
        let [mut set, mut reset] = self.alternated(&load, [set, reset])?;
        let set = summarize(&mut set.ok, set.seconds);
        let reset = summarize(&mut reset.ok, reset.seconds);
        self.row(
            format!("8 baseline: qamd set_password (admin), {connections} clients"),
            set,
            None,
            "",
            None,
        );
        self.row(
            format!("8 qamd reset_password (a fresh reset link each), {connections} clients"),
            reset,
            Some(ratio(&reset, &set)),
            "(information)",
            None,
        );
        Ok(())
    }

    /// Scenario 9: the first login of accounts moved in with a Prosody SCRAM-SHA-1 verifier
    /// (checked, then replaced with argon2id in a durable write) next to a normal argon2id
    /// login and the same accounts' later logins, alternating in slices.
    pub(super) fn legacy_logins(&mut self, qamd: &Qamd) -> Result<(), BenchError> {
        let connections = self.options.connections;
        let wanted = needed(self);
        eprintln!("9: {wanted} accounts moved in from Prosody, {connections} clients log in");
        let verifier = users::scram_sha1_verifier()
            .ok_or_else(|| BenchError::Hash("cannot make a SCRAM-SHA-1 verifier".into()))?;
        let names: Vec<String> = (0..wanted).map(|index| format!("g{index:06}")).collect();
        self.runtime.block_on(users::import(
            qamd.socket(),
            names,
            &verifier,
            Some("prosody"),
            2,
        ))?;
        let first_logins = Arc::new(AtomicU64::new(0));
        let first = {
            let first_logins = Arc::clone(&first_logins);
            Arc::new(move |_, _, out: &mut Vec<u8>| {
                let index = first_logins.fetch_add(1, Ordering::Relaxed);
                users::verify_line(out, &format!("g{index:06}"), PASSWORD);
            }) as LineFn
        };
        // Only accounts whose first login has been answered: every slice runs after one of
        // first logins, and a slice ends once all its requests are answered.
        let upgraded: LineFn = Arc::new(move |conn, seq, out| {
            let done = first_logins.load(Ordering::Relaxed).min(wanted);
            users::verify_line(out, &format!("g{:06}", pick(conn, seq, done)), PASSWORD);
        });
        let load = self.closed(qamd.socket(), connections);
        let normal = self.verify_lines();
        let [mut normal, mut first, mut later] =
            self.alternated(&load, [normal, first, upgraded])?;
        let normal = summarize(&mut normal.ok, normal.seconds);
        let first = summarize(&mut first.ok, first.seconds);
        let later = summarize(&mut later.ok, later.seconds);
        self.row(
            format!("9 baseline: qamd verify of an argon2id account, {connections} clients"),
            normal,
            None,
            "",
            None,
        );
        self.row(
            format!(
                "9 qamd first verify of a Prosody SCRAM-SHA-1 account (upgrades it to argon2id), {connections} clients"
            ),
            first,
            Some(ratio(&first, &normal)),
            "(information)",
            None,
        );
        self.row(
            format!("9 qamd verify of those accounts after the upgrade, {connections} clients"),
            later,
            Some(ratio(&later, &normal)),
            "(information)",
            None,
        );
        Ok(())
    }
}
