//! qam-bench: starts a real qamd and holds it against this machine's limits measured in the
//! same run (raw argon2, a tokio echo server, /etc/passwd); prints one Markdown table.

mod baseline;
mod daemon;
mod load;
mod report;
mod scenarios;
mod users;

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Benchmarks qamd: verify ceiling, cheap-op ceiling, isolation, overload, scale, writes,
/// NSS lookups, invite and reset links, legacy logins.
#[derive(Debug, Clone, Parser)]
#[command(version)]
pub struct Options {
    /// The qamd binary [default: `qamd` next to this program, e.g. target/release/qamd].
    #[arg(long)]
    pub qamd: Option<PathBuf>,
    /// Seconds measured per run (after the warm-up).
    #[arg(long, default_value_t = 8.0)]
    pub duration: f64,
    /// Seconds of warm-up before each measured run.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Concurrent clients C: verify, register, change_password, writes, and `exists` vs echo.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Clients of the latency-bound cheap-op runs: `exists` vs echo (besides C and 1),
    /// the isolation scenario's flood of `exists`, `exists`/`lookup` at scale.
    #[arg(long, default_value_t = 4)]
    pub cheap_connections: usize,
    /// argon2id memory cost (KiB).
    #[arg(long, default_value_t = 19456)]
    pub m_cost: u32,
    /// argon2id iterations.
    #[arg(long, default_value_t = 2)]
    pub t_cost: u32,
    /// argon2id lanes.
    #[arg(long, default_value_t = 1)]
    pub p_cost: u32,
    /// qamd's hashing workers W, and the ceiling's threads; 0 = one per core (qamd's default).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// qamd's hashing queue limit.
    #[arg(long, default_value_t = 64)]
    pub queue_limit: usize,
    /// qamd's `hash.niceness`: how much nicer its hashing threads run (the baseline: nice 0).
    #[arg(long, default_value_t = 0)]
    pub hash_niceness: i32,
    /// qamd's `peers.request_cpu_percent` (100: no budget worth the name).
    #[arg(long, default_value_t = 3)]
    pub request_cpu_percent: u32,
    /// Users loaded for the scale scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub users: u64,
    /// Accounts of the NSS scenario's qamd (served to the system through userdb).
    #[arg(long, default_value_t = 100_000)]
    pub nss_users: u64,
    /// Serve the NSS scenario's socket in the bench's temp dir only, never in
    /// /run/systemd/userdb/ (then `getpwnam` through nss-systemd is not measured).
    #[arg(long)]
    pub no_system_nss: bool,
    /// Users loaded for every other scenario (and the scale scenario's comparison).
    #[arg(long, default_value_t = 1000)]
    pub base_users: u64,
    /// Offered verify load in the overload scenario, as a multiple of the measured ceiling.
    #[arg(long, default_value_t = 5.0)]
    pub overload: f64,
    /// Connections offering the overload (qamd's default `max_connections` is 256).
    #[arg(long, default_value_t = 240)]
    pub overload_connections: usize,
    /// `exists` requests per second of the isolation scenario's normal client (beside the
    /// flood, which asks as fast as it is answered).
    #[arg(long, default_value_t = 500.0)]
    pub isolation_rate: f64,
    /// Slices each comparison with raw argon2 is cut into, alternating ceiling and qamd so
    /// noise from other work on the machine hits both alike.
    #[arg(long, default_value_t = 4)]
    pub rounds: u32,
    /// Scenarios to run, by number (1-9).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 3, 4, 5, 6, 7, 8, 9])]
    pub only: Vec<u8>,
    /// Smoke test: tiny sizes, short runs, cheap hashing (overrides those flags).
    #[arg(long)]
    pub quick: bool,
}

impl Options {
    fn effective(mut self) -> Options {
        if self.quick {
            self.duration = 0.5;
            self.warmup = 0.1;
            self.users = 3000;
            self.nss_users = 200;
            self.base_users = 200;
            self.m_cost = 256;
            self.t_cost = 1;
            self.p_cost = 1;
            self.connections = self.connections.min(8);
            self.overload_connections = self.overload_connections.min(64);
        }
        if self.workers == 0 {
            self.workers = std::thread::available_parallelism().map_or(1, usize::from);
        }
        self
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup.max(0.0))
    }

    pub fn measure(&self) -> Duration {
        Duration::from_secs_f64(self.duration.max(0.05))
    }

    pub fn runs(&self, scenario: u8) -> bool {
        self.only.contains(&scenario)
    }

    fn qamd_binary(&self) -> PathBuf {
        self.qamd.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|dir| dir.join("qamd")))
                .unwrap_or_else(|| PathBuf::from("target/release/qamd"))
        })
    }
}

fn main() -> ExitCode {
    let options = Options::parse().effective();
    let started = std::time::Instant::now();
    match scenarios::run_all(&options, &options.qamd_binary()) {
        Ok(report) => {
            let header = format!(
                "{}\n\nqam-bench{}: argon2id m={} t={} p={}, W={} workers at nice +{}, request CPU {} % per peer, C={} hashing / {} cheap \
                 clients, {} s per run (+{} s warm-up), {} users at scale; whole run {:.0} s.",
                report::machine(),
                if options.quick { " --quick" } else { "" },
                options.m_cost,
                options.t_cost,
                options.p_cost,
                options.workers,
                options.hash_niceness,
                options.request_cpu_percent,
                options.connections,
                options.cheap_connections,
                options.duration,
                options.warmup,
                options.users,
                started.elapsed().as_secs_f64()
            );
            print!("{}", report.markdown(&header));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("qam-bench: {err}");
            ExitCode::FAILURE
        }
    }
}
