//! A real qamd process for the benchmark: its own temp dir, config, socket and log; start-to-
//! ready timing, memory read from /proc, and a clean stop (SIGTERM) that is also run on drop.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What went wrong running qamd.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot prepare qamd's files: {0}")]
    Files(std::io::Error),
    #[error("cannot start {binary}: {source} (build it: cargo build --release -p qamd)")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("qamd exited before it was ready; its log:\n{0}")]
    Exited(String),
    #[error("qamd was not ready within {0:?}; its log:\n{1}")]
    NotReady(Duration, String),
}

/// argon2 and pool settings written into qamd's `[hash]` table.
#[derive(Debug, Clone, Copy)]
pub struct HashSettings {
    pub m_cost: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    pub workers: usize,
    pub queue_limit: usize,
    /// `hash.niceness`.
    pub niceness: i32,
    /// `peers.request_cpu_percent`.
    pub request_cpu_percent: u32,
}

/// Memory of a process, KiB, from /proc/PID/status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Resident now (VmRSS).
    pub rss_kib: u64,
    /// Peak resident since start (VmHWM).
    pub peak_kib: u64,
}

/// A running qamd; stopped when dropped.
pub struct Qamd {
    binary: PathBuf,
    dir: tempfile::TempDir,
    socket: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    /// A socket qamd serves outside its dir (the userdb door), removed before qamd stops so
    /// no lookup on the machine connects to a qamd going away.
    outside_socket: Option<PathBuf>,
}

impl Qamd {
    /// Writes a config and starts qamd; returns once it answers `hello`.
    pub fn start(binary: &Path, hash: HashSettings) -> Result<(Qamd, Duration), DaemonError> {
        Qamd::start_with(binary, hash, "", None)
    }

    /// As [`Qamd::start`], with `extra` appended to the config (whole tables) and
    /// `outside_socket` the socket path one of them makes qamd serve.
    pub fn start_with(
        binary: &Path,
        hash: HashSettings,
        extra: &str,
        outside_socket: Option<PathBuf>,
    ) -> Result<(Qamd, Duration), DaemonError> {
        let dir = tempfile::Builder::new()
            .prefix("qam-bench-")
            .tempdir()
            .map_err(DaemonError::Files)?;
        let socket = dir.path().join("qamd.sock");
        let config = dir.path().join("qamd.toml");
        let text = format!(
            "socket = {socket:?}\nsocket_group = \"\"\ndata_dir = {data:?}\nlog_level = \"info\"\n\
             idle_timeout_seconds = 120\n\n[hash]\nm_cost = {m}\nt_cost = {t}\np_cost = {p}\n\
             workers = {w}\nqueue_limit = {q}\nniceness = {n}\n\n[peers]\nrequest_cpu_percent = {c}\n{extra}",
            socket = socket.display().to_string(),
            data = dir.path().join("data").display().to_string(),
            m = hash.m_cost,
            t = hash.t_cost,
            p = hash.p_cost,
            w = hash.workers,
            q = hash.queue_limit,
            n = hash.niceness,
            c = hash.request_cpu_percent,
        );
        std::fs::write(&config, text).map_err(DaemonError::Files)?;
        let mut qamd = Qamd {
            binary: binary.to_owned(),
            dir,
            socket,
            config,
            child: None,
            outside_socket,
        };
        let ready = qamd.spawn()?;
        Ok((qamd, ready))
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Starts the process on the existing config and data; the time until `hello` answers.
    pub fn spawn(&mut self) -> Result<Duration, DaemonError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(DaemonError::Files)?;
        let log_too = log.try_clone().map_err(DaemonError::Files)?;
        let started = Instant::now();
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(&self.config)
            .env_remove("JOURNAL_STREAM")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_too)
            .spawn()
            .map_err(|source| DaemonError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        self.child = Some(child);
        let limit = Duration::from_secs(120);
        while started.elapsed() < limit {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return Err(DaemonError::Exited(self.log_text()));
                }
            }
            if hello(&self.socket) {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Err(DaemonError::NotReady(limit, self.log_text()))
    }

    /// SIGTERM, then waits for the graceful stop (the final store sync included).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(outside) = &self.outside_socket {
            let _ = std::fs::remove_file(outside);
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// qamd's memory now (zero when it is not running).
    pub fn memory(&self) -> Memory {
        self.child
            .as_ref()
            .map(|child| memory_of(child.id()))
            .unwrap_or_default()
    }

    /// Bytes of qamd's data dir.
    pub fn data_bytes(&self) -> u64 {
        dir_bytes(&self.dir.path().join("data"))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("qamd.log")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Qamd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True when the socket answers `hello` with success.
fn hello(socket: &Path) -> bool {
    matches!(round_trip(socket, "{\"op\":\"hello\"}\n"), Ok((_, answer)) if answer.starts_with("{\"ok\":true"))
}

/// Sends one request line on a new connection; its answer line and the time it took.
pub fn round_trip(socket: &Path, line: &str) -> std::io::Result<(Duration, String)> {
    let began = Instant::now();
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    Ok((began.elapsed(), answer))
}

/// When one write started and how long it took to answer.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    pub began: Instant,
    pub took: Duration,
}

impl Timed {
    /// Whether this write was waiting at some moment between `from` and `to`.
    pub fn overlaps(&self, from: Instant, to: Instant) -> bool {
        self.began <= to && self.began + self.took >= from
    }
}

/// Sends `line` on one connection again and again until `stop`, counting answers in `done`;
/// every round trip timed.
pub fn repeat_timed(
    socket: &Path,
    lines: [&str; 2],
    stop: &std::sync::atomic::AtomicBool,
    done: &std::sync::atomic::AtomicU64,
) -> std::io::Result<Vec<Timed>> {
    use std::sync::atomic::Ordering;
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut timed = Vec::new();
    let mut answer = String::new();
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        writer.write_all(lines[timed.len() % 2].as_bytes())?;
        answer.clear();
        reader.read_line(&mut answer)?;
        timed.push(Timed {
            began,
            took: began.elapsed(),
        });
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(timed)
}

/// VmRSS and VmHWM of `pid`.
pub fn memory_of(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        peak_kib: field("VmHWM:"),
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}
