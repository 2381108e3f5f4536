//! qam-hooks: runs the site's hooks (`<hooks dir>/<event>.d/*`, as run-parts would) for the
//! account events qamd publishes, and tells qamd when a deletion's hooks have all run.

mod events;
mod parts;
mod qamd;
mod run;
#[cfg(test)]
mod testing;

use clap::Parser;
use qam_client::ClientOptions;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Runs the hooks of qamd's account events (delete, lock, unlock, password).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// qamd's socket.
    #[arg(long, default_value = "/run/qam/qamd.sock")]
    socket: PathBuf,
    /// The directory holding delete.d, lock.d, unlock.d and password.d (qamd's `[hooks] dir`).
    #[arg(long, default_value = "/etc/qam/hooks")]
    hooks_dir: PathBuf,
    /// Seconds a hook may run before its process group is killed.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    timeout: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    tracing::info!(
        socket = %cli.socket.display(),
        hooks_dir = %cli.hooks_dir.display(),
        timeout = cli.timeout,
        "qam-hooks starting"
    );
    let runner = events::Runner {
        dir: cli.hooks_dir,
        limits: run::Limits::new(Duration::from_secs(cli.timeout)),
    };
    let mut qamd = qamd::SocketQamd::new(ClientOptions::new(cli.socket));
    match runner.serve(&mut qamd) {
        Ok(never) => match never {},
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("qam-hooks: {err}");
            ExitCode::FAILURE
        }
    }
}
