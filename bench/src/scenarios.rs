//! The scenarios of the benchmark, each measured against a baseline taken in this run.
//!
//! They are verify vs raw argon2, exists vs echo, isolation, overload, scale, durable writes
//! (and in `doors`: NSS lookups, invite and reset links, legacy logins).

mod doors;

use crate::baseline::{argon2_ceiling, spawn_echo};
use crate::daemon::{repeat_timed, round_trip, DaemonError, HashSettings, Qamd};
use crate::load::{summarize, LineFn, Load, LoadError, Sample, Summary};
use crate::report::{mib, Report, Row};
use crate::users::{self, pick, user, user_line, PASSWORD};
use crate::Options;
use argon2::Params;
use qam_client::ClientError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why the benchmark could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("a setup request failed: {0}")]
    Client(#[from] ClientError),
    #[error("argon2: {0}")]
    Hash(String),
    #[error("cannot start the runtime or the echo server: {0}")]
    Io(#[from] std::io::Error),
    #[error("the isolation scenario's normal client failed")]
    Probe,
}

/// State shared by the scenarios of one run.
struct Bench<'a> {
    options: &'a Options,
    runtime: tokio::runtime::Runtime,
    report: Report,
    /// The PHC hash of [`PASSWORD`] every imported user gets.
    phc: String,
    params: Params,
    /// Raw argon2 verifies on W threads, from scenario 1 (sets the overload's rate).
    ceiling: Summary,
    /// Holds the echo server's socket.
    scratch: tempfile::TempDir,
    /// Whether the echo server runs (it is started once, by the first scenario needing it).
    echo_started: bool,
}

/// Runs the selected scenarios and returns what they measured.
pub fn run_all(options: &Options, binary: &Path) -> Result<Report, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let params = Params::new(options.m_cost, options.t_cost, options.p_cost, None)
        .map_err(|err| BenchError::Hash(err.to_string()))?;
    let phc = qamd::hasher::hash_now(PASSWORD.as_bytes(), &params)
        .map_err(|err| BenchError::Hash(err.to_string()))?;
    let mut bench = Bench {
        options,
        runtime,
        report: Report::default(),
        phc,
        params,
        ceiling: Summary::default(),
        scratch: tempfile::tempdir()?,
        echo_started: false,
    };
    let settings = HashSettings {
        m_cost: options.m_cost,
        t_cost: options.t_cost,
        p_cost: options.p_cost,
        workers: options.workers,
        queue_limit: options.queue_limit,
        niceness: options.hash_niceness,
        request_cpu_percent: options.request_cpu_percent,
    };
    if !options.runs(1) && [3, 4, 6, 8, 9].iter().any(|&n| options.runs(n)) {
        bench.standalone_ceiling();
    }
    eprintln!("starting qamd ({})", binary.display());
    let (base, ready) = Qamd::start(binary, settings)?;
    bench.report.fact(
        "qamd start-to-ready, empty store",
        format!("{:.0} ms", ms(ready)),
    );
    bench.load_base(&base)?;
    if options.runs(1) {
        bench.verify(&base)?;
    }
    if options.runs(2) {
        bench.cheap(&base)?;
    }
    if options.runs(3) {
        bench.isolation(&base)?;
    }
    if options.runs(4) {
        bench.overload(&base)?;
    }
    if options.runs(5) {
        bench.scale(&base, binary, settings)?;
    }
    if options.runs(6) {
        bench.writes(&base)?;
    }
    if options.runs(7) {
        bench.nss(binary, settings)?;
    }
    if options.runs(8) {
        bench.links(&base)?;
    }
    if options.runs(9) {
        bench.legacy_logins(&base)?;
    }
    Ok(bench.report)
}

/// The uid the flood of scenario 3 connects as (nobody): a peer other than the benchmark.
const FLOOD_UID: u32 = 65534;

/// The active users of the skewed lookup run (a host's regular users among many accounts).
const ACTIVE_USERS: u64 = 10_000;

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Runs `load` on a thread and runtime of its own, so its latency is the server's and the
/// machine's, not that of the benchmark's threads busy with other load.
fn probe_on_own_thread(
    load: Load,
    lines: LineFn,
) -> std::thread::JoinHandle<Result<Sample, LoadError>> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(LoadError::Io)
            .and_then(|runtime| runtime.block_on(load.run(lines)))
    })
}

fn ratio(part: &Summary, whole: &Summary) -> f64 {
    part.per_second / whole.per_second.max(f64::EPSILON)
}

/// The users of the write scenario: change_password and lock/unlock, one per connection.
fn writer(prefix: char, conn: usize) -> String {
    format!("{prefix}{conn:03}")
}

impl Bench<'_> {
    fn closed(&self, socket: &Path, connections: usize) -> Load {
        Load::closed(
            socket,
            connections,
            self.options.warmup(),
            self.options.measure(),
        )
    }

    fn measure(&mut self, load: &Load, lines: LineFn) -> Result<Sample, BenchError> {
        let sample = self.runtime.block_on(load.run(lines))?;
        self.note_unexpected(&sample);
        Ok(sample)
    }

    /// Unexpected answers make a row suspect: say so next to the table.
    fn note_unexpected(&mut self, sample: &Sample) {
        if let Some(first) = &sample.first_other {
            self.report.fact(
                "unexpected answers in the previous run",
                format!("{} (first: `{first}`)", sample.other.len()),
            );
        }
    }

    fn row(
        &mut self,
        scenario: String,
        summary: Summary,
        ratio: Option<f64>,
        goal: &str,
        met: Option<bool>,
    ) {
        self.report.row(Row {
            scenario,
            summary,
            ratio,
            goal: goal.to_owned(),
            met,
        });
    }

    /// Raw argon2 verifies on W threads for `measure` (after a short warm-up).
    fn raw_argon2(&self, measure: Duration) -> Vec<u32> {
        argon2_ceiling(
            self.options.workers,
            PASSWORD,
            &self.phc,
            &self.params,
            Duration::from_millis(100),
            measure,
        )
    }

    /// The ceiling alone, when scenario 1 (which measures it) is not run.
    fn standalone_ceiling(&mut self) {
        let measure = self.options.measure();
        let mut latencies = self.raw_argon2(measure);
        self.ceiling = summarize(&mut latencies, measure.as_secs_f64());
    }

    /// Runs `load` in `rounds` slices, each after a slice of raw argon2 on W threads, so
    /// noise from other work on the machine hits the baseline and qamd alike. Adds the
    /// baseline's row (scenario `number`) and returns it with qamd's sample.
    fn paired(
        &mut self,
        number: u8,
        load: &Load,
        lines: LineFn,
    ) -> Result<(Summary, Sample), BenchError> {
        let rounds = self.options.rounds.max(1);
        let slice = self.options.measure() / rounds;
        let mut raw = Vec::new();
        let mut sample = Sample::default();
        for _ in 0..rounds {
            raw.extend(self.raw_argon2(slice));
            let part = Load {
                measure: slice,
                ..load.clone()
            };
            sample.merge(self.measure(&part, Arc::clone(&lines))?);
        }
        let seconds = (slice * rounds).as_secs_f64();
        sample.seconds = seconds;
        let ceiling = summarize(&mut raw, seconds);
        self.row(
            format!(
                "{number} baseline: raw argon2id verify, {} threads, nice 0",
                self.options.workers
            ),
            ceiling,
            None,
            "",
            None,
        );
        Ok((ceiling, sample))
    }

    /// The bulk users plus one change_password and one lock user per connection.
    fn load_base(&mut self, qamd: &Qamd) -> Result<(), BenchError> {
        let mut names: Vec<String> = (0..self.options.base_users).map(user).collect();
        for conn in 0..self.options.connections {
            names.push(writer('c', conn));
            names.push(writer('l', conn));
        }
        let phc = self.phc.clone();
        self.runtime
            .block_on(users::import(qamd.socket(), names, &phc, None, 1))?;
        Ok(())
    }

    fn verify_lines(&self) -> LineFn {
        let count = self.options.base_users;
        Arc::new(move |conn, seq, out| {
            users::verify_line(out, &user(pick(conn, seq, count)), PASSWORD)
        })
    }

    fn verify(&mut self, qamd: &Qamd) -> Result<(), BenchError> {
        let connections = self.options.connections;
        eprintln!("1: raw argon2id and qamd verify, {connections} clients");
        let load = self.closed(qamd.socket(), connections);
        let (ceiling, mut sample) = self.paired(1, &load, self.verify_lines())?;
        self.ceiling = ceiling;
        let summary = summarize(&mut sample.ok, sample.seconds);
        let r = ratio(&summary, &ceiling);
        self.row(
            format!("1 qamd verify, {connections} clients"),
            summary,
            Some(r),
            "≥ 0.95 of raw argon2",
            Some(r >= 0.95),
        );
        Ok(())
    }

    fn exists_lines(count: u64, op: &'static str) -> LineFn {
        Arc::new(move |conn, seq, out| user_line(out, op, &user(pick(conn, seq, count))))
    }

    /// `exists` against the echo with C clients (the goal), then with 1 and the cheap-op
    /// client count, where round trips are bound by wake-up latency, not by work.
    /// The echo server's socket, started on first use.
    fn echo(&mut self) -> Result<PathBuf, BenchError> {
        let echo = self.scratch.path().join("echo.sock");
        if !self.echo_started {
            let _inside = self.runtime.enter();
            spawn_echo(&echo)?;
            self.echo_started = true;
        }
        Ok(echo)
    }

    fn cheap(&mut self, qamd: &Qamd) -> Result<(), BenchError> {
        let echo = self.echo()?;
        let mut counts = vec![self.options.connections];
        for count in [1, self.options.cheap_connections] {
            if !counts.contains(&count) {
                counts.push(count);
            }
        }
        for (index, connections) in counts.into_iter().enumerate() {
            eprintln!("2: echo and qamd exists, {connections} clients");
            let lines = Self::exists_lines(self.options.base_users, "exists");
            // Every echoed line is an "other" answer: no check for unexpected ones here.
            let echo_load = self.closed(&echo, connections);
            let mut echoed = self.runtime.block_on(echo_load.run(Arc::clone(&lines)))?;
            let echo_summary = summarize(&mut echoed.other, echoed.seconds);
            self.row(
                format!("2 baseline: tokio JSON-lines echo, {connections} clients"),
                echo_summary,
                None,
                "",
                None,
            );
            let mut sample = self.measure(&self.closed(qamd.socket(), connections), lines)?;
            let summary = summarize(&mut sample.ok, sample.seconds);
            let r = ratio(&summary, &echo_summary);
            let (goal, met) = if index == 0 {
                (
                    "≥ 0.5 of echo, p99 < 1 ms",
                    Some(r >= 0.5 && summary.p99_ms < 1.0),
                )
            } else {
                ("(information)", None)
            };
            self.row(
                format!("2 qamd exists, {connections} clients"),
                summary,
                Some(r),
                goal,
                met,
            );
        }
        Ok(())
    }

    /// Both directions at once: verify clients saturate hashing while another peer floods
    /// `exists` at full speed and a normal client asks `exists` at a modest rate.
    fn isolation(&mut self, qamd: &Qamd) -> Result<(), BenchError> {
        let (hashing, cheap) = (self.options.connections, self.options.cheap_connections);
        let rate = self.options.isolation_rate;
        eprintln!("3: {cheap} clients of another uid flood exists, {hashing} clients verify, one asks exists at {rate}/s");
        let flood_load = self.closed(qamd.socket(), cheap).connecting_as(FLOOD_UID);
        let probe_load = self.closed(qamd.socket(), 1).paced(rate);
        let verify_lines = self.verify_lines();
        let exists_lines = Self::exists_lines(self.options.base_users, "exists");
        let rounds = self.options.rounds.max(1);
        let slice = self.options.measure() / rounds;
        let (mut raw, mut verified, mut flooded, mut probed) = (
            Vec::new(),
            Sample::default(),
            Sample::default(),
            Sample::default(),
        );
        let echo = self.echo()?;
        let echo_probe_load = self.closed(&echo, 1).paced(rate);
        let mut echo_probed = Sample::default();
        for _ in 0..rounds {
            // The baseline: raw argon2 on W threads with the same probe at the echo server,
            // the wake-up latency this machine gives any client beside that much hashing.
            let probe_part = Load {
                measure: slice,
                ..echo_probe_load.clone()
            };
            let echo_probe = probe_on_own_thread(probe_part, Arc::clone(&exists_lines));
            raw.extend(self.raw_argon2(slice));
            echo_probed.merge(echo_probe.join().map_err(|_| BenchError::Probe)??);
            let part = |load: &Load| Load {
                measure: slice,
                ..load.clone()
            };
            let (verify_part, flood_part, probe_part) = (
                part(&self.closed(qamd.socket(), hashing)),
                part(&flood_load),
                part(&probe_load),
            );
            let probe = probe_on_own_thread(probe_part, Arc::clone(&exists_lines));
            let (v, f) = self.runtime.block_on(async {
                tokio::join!(
                    verify_part.run(Arc::clone(&verify_lines)),
                    flood_part.run(Arc::clone(&exists_lines))
                )
            });
            verified.merge(v?);
            flooded.merge(f?);
            let p = probe.join().map_err(|_| BenchError::Probe)?;
            probed.merge(p?);
        }
        let seconds = (slice * rounds).as_secs_f64();
        for sample in [&mut verified, &mut flooded, &mut probed] {
            sample.seconds = seconds;
            self.note_unexpected(sample);
        }
        let ceiling = summarize(&mut raw, seconds);
        self.row(
            format!(
                "3 baseline: raw argon2id verify, {} threads, nice 0",
                self.options.workers
            ),
            ceiling,
            None,
            "",
            None,
        );
        // Every echoed line is an "other" answer.
        let echo_probe = summarize(&mut echo_probed.other, seconds);
        self.row(
            format!("3 baseline: echo asked at {rate}/s meanwhile, one client"),
            echo_probe,
            None,
            "(information)",
            None,
        );
        let verify = summarize(&mut verified.ok, seconds);
        let r = ratio(&verify, &ceiling);
        self.row(
            format!("3 qamd verify, {hashing} clients, while {cheap} clients of another uid flood exists"),
            verify,
            Some(r),
            "≥ 0.9 of raw argon2",
            Some(r >= 0.9),
        );
        let flood = summarize(&mut flooded.ok, seconds);
        self.row(
            format!("3 the flood: exists at full speed, {cheap} clients of uid {FLOOD_UID}"),
            flood,
            None,
            "(information)",
            None,
        );
        let probe = summarize(&mut probed.ok, seconds);
        self.row(
            format!("3 qamd exists at {rate}/s meanwhile, one client of the benchmark's uid"),
            probe,
            Some(probe.p99_ms / echo_probe.p99_ms.max(f64::EPSILON)),
            "p99 < 2 ms",
            Some(probe.p99_ms < 2.0),
        );
        Ok(())
    }

    fn overload(&mut self, qamd: &Qamd) -> Result<(), BenchError> {
        let factor = self.options.overload;
        let rate = factor * self.ceiling.per_second;
        let connections = self.options.overload_connections;
        eprintln!("4: verify offered at {rate:.0}/s ({factor}x) over {connections} clients");
        let before = qamd.memory();
        let load = self.closed(qamd.socket(), connections).paced(rate);
        let (ceiling, mut sample) = self.paired(4, &load, self.verify_lines())?;
        let after = qamd.memory();
        let answered = (sample.ok.len() + sample.busy.len() + sample.other.len()) as f64;
        let accepted = summarize(&mut sample.ok, sample.seconds);
        let busy = summarize(&mut sample.busy, sample.seconds);
        let r = ratio(&accepted, &ceiling);
        self.row(
            format!("4 qamd verify accepted, offered {factor}x"),
            accepted,
            Some(r),
            "≥ 0.95 of raw argon2",
            Some(r >= 0.95),
        );
        self.row(
            "4 qamd `busy` answers meanwhile".into(),
            busy,
            None,
            "fast: p99 < 2 ms",
            Some(busy.per_second > 0.0 && busy.p99_ms < 2.0),
        );
        let offered = answered / sample.seconds / ceiling.per_second.max(f64::EPSILON);
        self.report.fact(
            "4 load actually offered",
            format!("{offered:.1}x the ceiling"),
        );
        let growth = after.peak_kib.saturating_sub(before.peak_kib);
        self.report.fact_with_goal(
            "4 qamd peak RSS (VmHWM) before → after overload",
            format!("{} → {}", mib(before.peak_kib), mib(after.peak_kib)),
            "grows < 32 MiB",
            Some(growth < 32 * 1024),
        );
        Ok(())
    }

    fn scale(
        &mut self,
        base: &Qamd,
        binary: &Path,
        settings: HashSettings,
    ) -> Result<(), BenchError> {
        let count = self.options.users;
        eprintln!("5: importing {count} users into a second qamd");
        let (mut big, _) = Qamd::start(binary, settings)?;
        let began = Instant::now();
        let names: Vec<String> = (0..count).map(user).collect();
        let phc = self.phc.clone();
        let written = self
            .runtime
            .block_on(users::import(big.socket(), names, &phc, None, 2))?;
        let took = began.elapsed().as_secs_f64();
        self.report.fact(
            format!("5 import of {written} users (batches under 64 KiB)"),
            format!("{took:.1} s, {:.0} records/s", written as f64 / took),
        );
        self.report.fact(
            "5 qamd peak RSS during import; data dir",
            format!(
                "{}; {:.0} MiB",
                mib(big.memory().peak_kib),
                big.data_bytes() as f64 / 1048576.0
            ),
        );
        big.stop();
        let ready = big.spawn()?;
        self.report.fact_with_goal(
            format!("5 qamd start-to-ready, {count} users"),
            format!("{:.0} ms", ms(ready)),
            "< 1 s",
            Some(ready < Duration::from_secs(1)),
        );
        // `status` counts users from qamd's index: it answers once the index is built.
        let (built, _) = round_trip(big.socket(), "{\"op\":\"status\"}\n")?;
        self.report.fact(
            format!("5 qamd index built (first `status` answer), {count} users"),
            format!("{:.1} s after ready", built.as_secs_f64()),
        );
        std::thread::sleep(Duration::from_millis(500));
        let fresh = big.memory();
        let connections = self.options.cheap_connections;
        let mut small_lookup = Summary::default();
        for op in ["exists", "lookup"] {
            eprintln!("5: {op}, {} vs {count} users", self.options.base_users);
            let lines = Self::exists_lines(self.options.base_users, op);
            let mut small = self.measure(&self.closed(base.socket(), connections), lines)?;
            let small = summarize(&mut small.ok, small.seconds);
            small_lookup = small;
            self.row(
                format!("5 qamd {op}, {} users", self.options.base_users),
                small,
                None,
                "",
                None,
            );
            let lines = Self::exists_lines(count, op);
            let mut large = self.measure(&self.closed(big.socket(), connections), lines)?;
            let large = summarize(&mut large.ok, large.seconds);
            let r = ratio(&large, &small);
            self.row(
                format!("5 qamd {op}, {count} users"),
                large,
                Some(r),
                "≥ 0.8 of 1,000 users",
                Some(r >= 0.8),
            );
        }
        let skewed: LineFn = Arc::new(move |conn, seq, out| {
            let index = if pick(conn, seq ^ 0x5A5A, 10) < 9 {
                pick(conn, seq, ACTIVE_USERS.min(count))
            } else {
                pick(conn, seq, count)
            };
            user_line(out, "lookup", &user(index))
        });
        let mut sample = self.measure(&self.closed(big.socket(), connections), skewed)?;
        let summary = summarize(&mut sample.ok, sample.seconds);
        self.row(
            format!("5 qamd lookup, {count} users, 90 % of requests on {ACTIVE_USERS} of them"),
            summary,
            Some(ratio(&summary, &small_lookup)),
            "(information)",
            None,
        );
        // Hashing memory counts too: verifies on every worker before the idle reading.
        let burst = Load::closed(
            big.socket(),
            self.options.connections,
            Duration::ZERO,
            self.options.measure().min(Duration::from_secs(2)),
        );
        let count_lines = count;
        let verify_lines: LineFn = Arc::new(move |conn, seq, out| {
            users::verify_line(out, &user(pick(conn, seq, count_lines)), PASSWORD)
        });
        self.measure(&burst, verify_lines)?;
        std::thread::sleep(Duration::from_millis(500));
        let used = big.memory();
        // Idle hashing threads give their argon2 memory back one after the other.
        let settle = if self.options.quick {
            Duration::ZERO
        } else {
            qamd::hasher::IDLE_RELEASE * self.options.workers as u32 + Duration::from_secs(1)
        };
        std::thread::sleep(settle);
        let idle = big.memory();
        self.report.fact_with_goal(
            format!(
                "5 qamd RSS, {count} users: idle after start → right after lookups and \
                 verifies → idle {} s later",
                settle.as_secs()
            ),
            format!(
                "{} → {} → {}",
                mib(fresh.rss_kib),
                mib(used.rss_kib),
                mib(idle.rss_kib)
            ),
            "idle < 150 MiB",
            Some(fresh.rss_kib.max(idle.rss_kib) < 150 * 1024),
        );
        self.delete_beside_writes(&big, count)
    }

    /// One delete at scale while another client keeps writing (lock/unlock): how long the
    /// delete takes, and the slowest of the other writes that were waiting meanwhile.
    fn delete_beside_writes(&mut self, big: &Qamd, count: u64) -> Result<(), BenchError> {
        let lines = [
            format!("{{\"op\":\"lock\",\"user\":\"{}\"}}\n", user(1)),
            format!("{{\"op\":\"unlock\",\"user\":\"{}\"}}\n", user(1)),
        ];
        let delete = format!("{{\"op\":\"delete\",\"user\":\"{}\"}}\n", user(0));
        let stop = AtomicBool::new(false);
        let done = AtomicU64::new(0);
        let wait_for = |writes: u64| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while done.load(Ordering::Relaxed) < writes && Instant::now() < deadline {
                std::thread::yield_now();
            }
        };
        let (timed, deleted) = std::thread::scope(|scope| {
            let writer =
                scope.spawn(|| repeat_timed(big.socket(), [&lines[0], &lines[1]], &stop, &done));
            wait_for(50);
            let began = Instant::now();
            let deleted = round_trip(big.socket(), &delete);
            let ended = Instant::now();
            let after = done.load(Ordering::Relaxed);
            wait_for(after + 50);
            stop.store(true, Ordering::Relaxed);
            (writer.join(), deleted.map(|answer| (began, ended, answer)))
        });
        let timed = timed.map_err(|_| std::io::Error::other("the writer thread panicked"))??;
        let (began, ended, (took, answer)) = deleted?;
        let worst = timed
            .iter()
            .filter(|write| write.overlaps(began, ended))
            .map(|write| write.took)
            .max()
            .unwrap_or_default();
        let before = timed
            .iter()
            .filter(|write| write.began + write.took < began)
            .map(|write| write.took)
            .max()
            .unwrap_or_default();
        self.report.fact_with_goal(
            format!(
                "5 one delete at {count} users; the slowest other write meanwhile (before it: \
                 slowest of the writes before); peak RSS"
            ),
            format!(
                "{:.0} ms (`{}`); {:.1} ms (before: {:.1} ms); {}",
                ms(took),
                answer.trim_end(),
                ms(worst),
                ms(before),
                mib(big.memory().peak_kib)
            ),
            "< 100 ms each",
            Some(took < Duration::from_millis(100) && worst < Duration::from_millis(100)),
        );
        Ok(())
    }

    fn writes(&mut self, qamd: &Qamd) -> Result<(), BenchError> {
        let connections = self.options.connections;
        eprintln!("6: register and change_password, {connections} clients");
        // Names stay unique over the rounds: one counter for every connection.
        let registered = Arc::new(AtomicU64::new(0));
        let register: LineFn = Arc::new(move |_, _, out| {
            let index = registered.fetch_add(1, Ordering::Relaxed);
            users::register_line(out, &format!("r{index}"))
        });
        let load = self.closed(qamd.socket(), connections);
        let (ceiling, mut sample) = self.paired(6, &load, register)?;
        let summary = summarize(&mut sample.ok, sample.seconds);
        let r = ratio(&summary, &ceiling);
        self.row(
            format!("6 qamd register, {connections} clients (1 argon2 each)"),
            summary,
            Some(r),
            "≥ 0.9 of raw argon2",
            Some(r >= 0.9),
        );
        // Each user's current password, kept over the rounds (every change is answered).
        let changed: Arc<Vec<AtomicBool>> =
            Arc::new((0..connections).map(|_| AtomicBool::new(false)).collect());
        let change: LineFn = Arc::new(move |conn, _, out| {
            users::change_password_line(out, &writer('c', conn), &changed[conn])
        });
        let (ceiling, mut sample) = self.paired(6, &load, change)?;
        let summary = summarize(&mut sample.ok, sample.seconds);
        let r = 2.0 * ratio(&summary, &ceiling);
        self.row(
            format!("6 qamd change_password, {connections} clients (2 argon2 each)"),
            summary,
            Some(r),
            "≥ 0.9 of raw argon2 (×2)",
            Some(r >= 0.9),
        );

        eprintln!("6: durable writes without hashing (lock/unlock), 1 and {connections} clients");
        let exists = Self::exists_lines(self.options.base_users, "exists");
        let mut sample = self.measure(&self.closed(qamd.socket(), 1), exists)?;
        let reference = summarize(&mut sample.ok, sample.seconds);
        let lock: LineFn = Arc::new(|conn, seq, out| {
            let op = if seq.is_multiple_of(2) {
                "lock"
            } else {
                "unlock"
            };
            user_line(out, op, &writer('l', conn))
        });
        let mut sample = self.measure(&self.closed(qamd.socket(), 1), Arc::clone(&lock))?;
        let single = summarize(&mut sample.ok, sample.seconds);
        self.row(
            "6 qamd lock/unlock (flushed write), 1 client".into(),
            single,
            None,
            "",
            None,
        );
        let mut sample = self.measure(&self.closed(qamd.socket(), connections), lock)?;
        let many = summarize(&mut sample.ok, sample.seconds);
        let gain = ratio(&many, &single);
        self.row(
            format!("6 qamd lock/unlock (flushed write), {connections} clients"),
            many,
            Some(gain),
            "writers share flushes: ≥ 2× 1 client",
            Some(gain >= 2.0),
        );
        self.report.fact(
            "6 durable flush per write (lock p50 − exists p50, 1 client)",
            format!("{:.3} ms", single.p50_ms - reference.p50_ms),
        );
        Ok(())
    }
}
