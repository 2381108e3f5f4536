//! Shared pieces of the reliability tests (`reliability_*.rs`): run size (CI or `QAM_FULL=1`),
//! admin calls, raw socket lines, byte searches in a data dir, and process figures from /proc.

use crate::identity::Identity;
use crate::run_ok;
use qam_client::wire::{ExportPage, ExportRecord, MAX_PAGE};
use qam_client::{Client, Request};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// True for the documented full-size run (`QAM_FULL=1`).
pub fn full() -> bool {
    std::env::var("QAM_FULL").as_deref() == Ok("1")
}

/// `ci` normally, `full_size` under `QAM_FULL=1`.
pub fn size(ci: usize, full_size: usize) -> usize {
    if full() {
        full_size
    } else {
        ci
    }
}

/// Prints a figure a test reports (for BENCHMARKS.md), in one greppable line.
pub fn figure(family: &str, text: impl std::fmt::Display) {
    eprintln!("FIGURE {family}: {text}");
}

/// A small deterministic generator (xorshift64*), so failing runs can be repeated by seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// Seeded from the clock; the seed is printed so a failure can be replayed.
    pub fn from_clock(label: &str) -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        eprintln!("{label}: seed {seed}");
        Rng::new(seed)
    }

    /// The next number of the sequence.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// Every record, page by page, through the admin `export` operation.
pub fn export_all(client: &mut Client) -> Vec<ExportRecord> {
    let mut records = Vec::new();
    let mut after = None;
    loop {
        let page: ExportPage = client
            .call(&Request::Export {
                after: after.take(),
                limit: Some(MAX_PAGE),
            })
            .expect("export page");
        records.extend(page.records);
        match page.next {
            Some(next) => after = Some(next),
            None => return records,
        }
    }
}

/// Sends raw lines on one fresh connection and reads one answer line per request line.
pub fn raw_lines(socket: &Path, lines: &[&[u8]]) -> Vec<serde_json::Value> {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut answers = Vec::new();
    for line in lines {
        stream.write_all(line).expect("write");
        stream.write_all(b"\n").expect("write");
        let mut answer = String::new();
        reader.read_line(&mut answer).expect("read answer");
        answers.push(serde_json::from_str(&answer).expect("answer is JSON"));
    }
    answers
}

/// The `error.code` of an answer, or "ok".
pub fn code_of(answer: &serde_json::Value) -> String {
    if answer["ok"] == serde_json::Value::Bool(true) {
        return "ok".into();
    }
    answer["error"]["code"].as_str().unwrap_or("?").to_owned()
}

/// Every file under `dir` whose raw bytes or path hold `needle`, with how often its bytes do.
pub fn files_holding(dir: &Path, needle: &[u8]) -> Vec<(std::path::PathBuf, usize)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for path in entries.flatten().map(|entry| entry.path()) {
        let in_path = path.file_name().is_some_and(|name| {
            name.as_encoded_bytes()
                .windows(needle.len())
                .any(|w| w == needle)
        });
        if path.is_dir() {
            found.extend(files_holding(&path, needle));
            if in_path {
                found.push((path, 0));
            }
        } else {
            let count = std::fs::read(&path)
                .map(|bytes| bytes.windows(needle.len()).filter(|w| *w == needle).count())
                .unwrap_or(0);
            if count > 0 || in_path {
                found.push((path, count));
            }
        }
    }
    found
}

/// How many times `needle` occurs in the raw bytes of every file under `dir`.
pub fn occurrences(dir: &Path, needle: &[u8]) -> usize {
    assert!(dir.is_dir(), "{} is not a directory", dir.display());
    files_holding(dir, needle).iter().map(|(_, n)| n).sum()
}

/// User + system CPU seconds of a process (from /proc/PID/stat; USER_HZ is 100 on Linux).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// A `/proc/PID/status` field in KiB (e.g. `VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// True once the peer has closed `stream` (EOF or reset), waiting at most `within`.
pub fn closed_within(stream: &UnixStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut sink = [0u8; 65536];
    loop {
        match (&*stream).read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(err)
                if err.kind() == std::io::ErrorKind::WouldBlock
                    || err.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// The value at quantile `q` (0..=1) of `samples`, sorted in place.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[index.min(samples.len() - 1)]
}

/// Sends raw request lines from a socat run as `identity`; one answer per line.
pub fn raw_as(identity: &Identity, socket: &Path, lines: &[&str]) -> Vec<serde_json::Value> {
    let mut child = identity
        .command("socat")
        .args(["-t", "30", "-"])
        .arg(format!("UNIX-CONNECT:{}", socket.display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv and socat (Debian util-linux, socat)");
    let mut input = child.stdin.take().expect("stdin");
    for line in lines {
        input.write_all(line.as_bytes()).expect("write");
        input.write_all(b"\n").expect("write");
    }
    drop(input);
    let output = child.wait_with_output().expect("socat");
    let text = String::from_utf8_lossy(&output.stdout);
    let answers: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("answer is JSON"))
        .collect();
    assert_eq!(
        answers.len(),
        lines.len(),
        "as {identity:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    answers
}

/// The socket's group as a number (an `Identity` with it as its group reaches the socket).
pub fn socket_gid(socket: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(socket).expect("socket").gid().to_string()
}

/// Unix users and groups made for a test (run it under the shared peer-test lock); removed
/// on drop, also when the test fails.
#[derive(Default)]
pub struct UnixAccounts {
    /// Users made, removed first.
    users: Vec<String>,
    /// Groups made (with each user's own group), removed after the users.
    groups: Vec<String>,
}

impl UnixAccounts {
    pub fn group(&mut self, name: &str) {
        run_ok(Command::new("groupadd").arg(name));
        self.groups.push(name.to_owned());
    }

    /// A user with its own group of the same name, plus `groups`.
    pub fn user(&mut self, name: &str, groups: &[&str]) {
        let extra = groups.join(",");
        run_ok(Command::new("useradd").args([
            "-M",
            "-U",
            "-s",
            "/usr/sbin/nologin",
            "-G",
            &extra,
            name,
        ]));
        self.users.push(name.to_owned());
        self.groups.push(name.to_owned());
    }
}

impl Drop for UnixAccounts {
    fn drop(&mut self) {
        for user in &self.users {
            let _ = Command::new("userdel").arg(user).status();
        }
        for group in &self.groups {
            let _ = Command::new("groupdel")
                .arg(group)
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
