//! Load over raw JSON-lines connections: clients that send prepared request lines, closed-loop
//! or paced, and time each round trip; the same driver serves qamd and the echo baseline.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::time::Instant;

/// Writes the request line (newline included) for connection `conn`'s `seq`-th request.
pub type LineFn = Arc<dyn Fn(usize, u64, &mut Vec<u8>) + Send + Sync>;

/// What went wrong driving load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("connection failed mid-run: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed a connection mid-run")]
    Closed,
    #[error("a load task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// How one answer turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Busy,
    Other,
}

/// Classifies an answer line without parsing it (the client must stay cheap): answers to
/// requests without `id` start with `{"ok":true`.
pub fn classify(answer: &[u8]) -> Outcome {
    if answer.starts_with(br#"{"ok":true"#) {
        Outcome::Ok
    } else if contains(answer, br#""code":"busy""#) {
        Outcome::Busy
    } else {
        Outcome::Other
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Round-trip times (µs) of the answers completed inside the measured window.
#[derive(Debug, Default)]
pub struct Sample {
    pub ok: Vec<u32>,
    pub busy: Vec<u32>,
    /// Every other answer (errors; or, for the echo server, the echoed line).
    pub other: Vec<u32>,
    /// The first unexpected answer, to say what went wrong.
    pub first_other: Option<String>,
    /// Length of the measured window.
    pub seconds: f64,
}

impl Sample {
    fn record(&mut self, outcome: Outcome, micros: u32, answer: &[u8]) {
        match outcome {
            Outcome::Ok => self.ok.push(micros),
            Outcome::Busy => self.busy.push(micros),
            Outcome::Other => {
                self.other.push(micros);
                if self.first_other.is_none() {
                    self.first_other = Some(String::from_utf8_lossy(answer).trim_end().to_owned());
                }
            }
        }
    }

    pub fn merge(&mut self, other: Sample) {
        self.ok.extend(other.ok);
        self.busy.extend(other.busy);
        self.other.extend(other.other);
        if self.first_other.is_none() {
            self.first_other = other.first_other;
        }
    }
}

/// Throughput and latency percentiles of one set of round trips.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

/// Summarizes latencies (µs) completed within `seconds`.
pub fn summarize(latencies: &mut [u32], seconds: f64) -> Summary {
    latencies.sort_unstable();
    let at = |quantile: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = ((latencies.len() as f64) * quantile).ceil() as usize;
        f64::from(latencies[rank.clamp(1, latencies.len()) - 1]) / 1000.0
    };
    Summary {
        per_second: latencies.len() as f64 / seconds.max(f64::EPSILON),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
    }
}

/// A load: how many connections, for how long, closed-loop or at a total request rate.
#[derive(Debug, Clone)]
pub struct Load {
    pub socket: PathBuf,
    pub connections: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// Total requests per second over all connections; `None` sends the next request as soon
    /// as the answer arrives.
    pub rate: Option<f64>,
    /// Connect as this effective uid (another peer than the benchmark's own), if set.
    pub peer_uid: Option<u32>,
}

impl Load {
    pub fn closed(socket: &Path, connections: usize, warmup: Duration, measure: Duration) -> Load {
        Load {
            socket: socket.to_owned(),
            connections,
            warmup,
            measure,
            rate: None,
            peer_uid: None,
        }
    }

    /// Connections made as effective uid `uid`: qamd sees another peer.
    pub fn connecting_as(mut self, uid: u32) -> Load {
        self.peer_uid = Some(uid);
        self
    }

    pub fn paced(mut self, rate: f64) -> Load {
        self.rate = Some(rate);
        self
    }

    /// Opens every connection, then runs the load; answers completed in the window count.
    pub async fn run(&self, lines: LineFn) -> Result<Sample, LoadError> {
        let mut streams = Vec::with_capacity(self.connections);
        let failed = |source| LoadError::Connect {
            path: self.socket.clone(),
            source,
        };
        for _ in 0..self.connections {
            let stream = match self.peer_uid {
                None => UnixStream::connect(&self.socket).await.map_err(failed)?,
                Some(uid) => connect_as(&self.socket, uid)
                    .and_then(UnixStream::from_std)
                    .map_err(failed)?,
            };
            streams.push(stream);
        }
        let start = Instant::now();
        let window = Window {
            start,
            from: start + self.warmup,
            end: start + self.warmup + self.measure,
        };
        let interval = self
            .rate
            .map(|rate| Duration::from_secs_f64(self.connections as f64 / rate.max(0.001)));
        let mut tasks = Vec::with_capacity(self.connections);
        for (conn, stream) in streams.into_iter().enumerate() {
            let lines = Arc::clone(&lines);
            let offset = interval.map(|every| every.mul_f64(conn as f64 / self.connections as f64));
            tasks.push(tokio::spawn(drive(
                stream,
                conn,
                lines,
                window,
                interval.zip(offset),
            )));
        }
        let mut sample = Sample {
            seconds: self.measure.as_secs_f64(),
            ..Sample::default()
        };
        for task in tasks {
            sample.merge(task.await??);
        }
        Ok(sample)
    }
}

/// Connects from a thread of its own whose effective uid is `uid` (the raw syscall changes
/// that thread only; glibc's `seteuid` would change every thread of the process). The
/// peer credentials qamd reads are the effective ids at connect.
fn connect_as(path: &Path, uid: u32) -> std::io::Result<std::os::unix::net::UnixStream> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        use nix::libc::{syscall, SYS_setresuid};
        let keep = u32::MAX; // -1: leave the real and saved uid as they are
                             // SAFETY: a plain syscall on this thread's own credentials; no memory is passed.
        if unsafe { syscall(SYS_setresuid, keep, uid, keep) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = std::os::unix::net::UnixStream::connect(&path)?;
        stream.set_nonblocking(true)?;
        Ok(stream)
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("connecting thread failed")))
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    from: Instant,
    end: Instant,
}

/// One connection's loop; `pace` is (interval, this connection's offset).
async fn drive(
    stream: UnixStream,
    conn: usize,
    lines: LineFn,
    window: Window,
    pace: Option<(Duration, Duration)>,
) -> Result<Sample, LoadError> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::with_capacity(256);
    let mut answer = Vec::with_capacity(256);
    let mut sample = Sample::default();
    let mut seq: u64 = 0;
    loop {
        if let Some((every, offset)) = pace {
            let due = window.start + offset + every.mul_f64(seq as f64);
            if due >= window.end {
                break;
            }
            tokio::time::sleep_until(due).await;
        }
        if Instant::now() >= window.end {
            break;
        }
        line.clear();
        lines(conn, seq, &mut line);
        let sent = Instant::now();
        write.write_all(&line).await?;
        answer.clear();
        if reader.read_until(b'\n', &mut answer).await? == 0 {
            return Err(LoadError::Closed);
        }
        let done = Instant::now();
        if done >= window.from && done <= window.end {
            let micros = u32::try_from(done.duration_since(sent).as_micros()).unwrap_or(u32::MAX);
            sample.record(classify(&answer), micros, &answer);
        }
        seq += 1;
    }
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let mut latencies: Vec<u32> = (1..=1000).rev().map(|ms| ms * 1000).collect();
        let summary = summarize(&mut latencies, 2.0);
        assert_eq!(summary.per_second, 500.0);
        assert_eq!(summary.p50_ms, 500.0);
        assert_eq!(summary.p99_ms, 990.0);
        assert_eq!(summary.p999_ms, 999.0);
        assert_eq!(summarize(&mut [], 1.0), Summary::default());
    }

    #[test]
    fn answers_are_classified_without_parsing() {
        assert_eq!(classify(b"{\"ok\":true,\"exists\":true}\n"), Outcome::Ok);
        assert_eq!(
            classify(b"{\"ok\":false,\"error\":{\"code\":\"busy\",\"message\":\"x\"}}\n"),
            Outcome::Busy
        );
        assert_eq!(
            classify(b"{\"ok\":false,\"error\":{\"code\":\"denied\",\"message\":\"x\"}}\n"),
            Outcome::Other
        );
    }
}
