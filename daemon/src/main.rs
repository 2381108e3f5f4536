//! qamd's entry point: parse flags, load and check the config, harden the process, start the
//! runtime and run the daemon; any start-up failure is one line on stderr and exit code 1.

use clap::Parser;
use qamd::cli::Cli;
use qamd::config::Config;
use qamd::log_level::LogLevel;
use qamd::reload::ReloadSource;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(err) => return fail(err),
    };
    if cli.check_config {
        println!(
            "config ok: socket {}, data dir {}, argon2id m={} t={} p={}, {} hashing workers",
            config.socket.display(),
            config.data_dir.display(),
            config.hash.m_cost,
            config.hash.t_cost,
            config.hash.p_cost,
            config.hash.worker_count()
        );
        return ExitCode::SUCCESS;
    }
    let level = qamd::logging::choose_level(cli.log_level.as_deref(), &config.log_level);
    let level_handle = match qamd::logging::init(&level) {
        Ok(handle) => handle,
        Err(err) => return fail(err),
    };
    // Before the runtime starts: taking the sockets clears LISTEN_* from the environment.
    let passed = match qamd::systemd::PassedSockets::take() {
        Ok(passed) => passed,
        Err(err) => return fail(err),
    };
    // Also before any thread: qamd's own user lookups must never wait on its userdb door.
    qamd::userdb::bypass_own_service(&config.nss, passed.userdb.as_ref());
    harden_process();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("qamd")
        .on_thread_start(request_thread_slice)
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(format!("cannot start the async runtime: {err}")),
    };
    // The accept loop runs on this thread (block_on): it serves requests' wake-ups too.
    request_thread_slice();
    match runtime.block_on(qamd::daemon::run(
        config,
        passed,
        ReloadSource::new(cli, Arc::new(LogLevel::new(level_handle, level))),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(err),
    }
}

/// No core dumps (they would hold passwords); files created private to qamd (umask 077).
fn harden_process() {
    if let Err(err) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %err, "could not disable core dumps");
    }
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

fn request_thread_slice() {
    if let Err(err) = qamd::scheduling::shorten_time_slice() {
        tracing::debug!(error = %err, "request thread keeps the default time slice");
    }
}

fn fail(err: impl std::fmt::Display) -> ExitCode {
    eprintln!("qamd: {err}");
    ExitCode::FAILURE
}
