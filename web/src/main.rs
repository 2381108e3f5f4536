//! qam-web: the self-service page of a qam host (join with an invite, change a password, use
//! a reset link). It holds no state of its own; every form becomes one request to qamd.

mod config;
mod form;
mod guard;
mod pages;
mod qamd;
mod server;
mod throttle;

use clap::Parser;
use config::{Config, Listen};
use qam_client::ClientOptions;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// qam's self-service page, served to a reverse proxy.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (default /etc/qam/qam-web.toml when it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where to listen: unix:PATH or a loopback IP:PORT (overrides `listen`; ignored when
    /// systemd passes a socket).
    #[arg(long)]
    listen: Option<String>,
    /// qamd's socket (overrides `qamd_socket`).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Group given to a Unix socket qam-web binds itself (the reverse proxy's group).
    #[arg(long)]
    socket_group: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("qam-web: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), server::ServeError> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(socket) = cli.socket {
        config.qamd_socket = socket;
    }
    let listen = Listen::parse(&config.listen)?;
    let passed = server::passed_listener()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(server::ServeError::Serve)?;
    runtime.block_on(async move {
        let listener = match passed {
            Some(passed) => passed.into_listener()?,
            None => server::bind(&listen, cli.socket_group.as_deref()).await?,
        };
        let timeout = Duration::from_secs(config.request_timeout_seconds);
        let options = ClientOptions::new(&config.qamd_socket).with_timeout(timeout);
        let pages = pages::Pages {
            qamd: qamd::Qamd::new(options),
            open_registrations: Arc::new(throttle::RateLimit::per_hour(
                config.open_registrations_per_hour,
            )),
            config: Arc::new(config),
        };
        let app = server::app(pages::routes(pages), timeout);
        tracing::info!("qam-web serving");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        server::serve(listener, app).await
    })
}
