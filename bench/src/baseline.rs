//! The physical limits qamd is measured against, taken in the same run: raw argon2id verifies
//! on W threads in this process, and a minimal tokio JSON-lines echo server on a Unix socket.

use argon2::Params;
use qamd::hasher::{verify_with, Scratch};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// Verifies `password` against `phc` on `threads` threads for `warmup + measure`; returns
/// the times (µs) of matching verifies completed inside the measured window (as in the
/// socket runs).
pub fn argon2_ceiling(
    threads: usize,
    password: &str,
    phc: &str,
    params: &Params,
    warmup: Duration,
    measure: Duration,
) -> Vec<u32> {
    let start = Instant::now();
    let from = start + warmup;
    let end = from + measure;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || {
                    // Normal priority (nice 0): the most argon2 these cores give.
                    // Memory reused from verify to verify, as qamd's hashing threads do.
                    let mut scratch = Scratch::default();
                    let mut latencies = Vec::new();
                    while Instant::now() < end {
                        let began = Instant::now();
                        let outcome = verify_with(&mut scratch, password.as_bytes(), phc, params);
                        let done = Instant::now();
                        if outcome.matches && done >= from && done <= end {
                            let micros = done.duration_since(began).as_micros();
                            latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                        }
                    }
                    latencies
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap_or_default())
            .collect()
    })
}

/// Binds the echo server at `path` and serves it on the current runtime until the runtime ends:
/// every line read is written back as it is.
pub fn spawn_echo(path: &Path) -> std::io::Result<()> {
    let listener = UnixListener::bind(path)?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut reader = BufReader::new(read);
                let mut line = Vec::with_capacity(256);
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if write.write_all(&line).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(())
}
