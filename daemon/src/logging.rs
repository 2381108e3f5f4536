//! Log set-up: tracing-subscriber to stderr with a reloadable level filter; plain lines without
//! timestamps or colours when the journal captures stderr (`JOURNAL_STREAM` is set).

use std::io::IsTerminal;
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Registry;

/// Changes the log level of the running daemon (config reload).
pub type LevelHandle = reload::Handle<EnvFilter, Registry>;

/// The filter text in force: `--log-level`, else `RUST_LOG`, else the config's `log_level`.
pub fn choose_level(flag: Option<&str>, config: &str) -> String {
    match (flag, std::env::var("RUST_LOG")) {
        (Some(flag), _) => flag.to_owned(),
        (None, Ok(env)) if !env.trim().is_empty() => env,
        _ => config.to_owned(),
    }
}

/// Installs the global subscriber.
pub fn init(level: &str) -> Result<LevelHandle, String> {
    let filter = parse_filter(level)?;
    let (filter, handle) = reload::Layer::new(filter);
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let format = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = if journal {
        registry
            .with(format.without_time().with_ansi(false))
            .try_init()
    } else {
        registry.with(format).try_init()
    };
    installed.map_err(|err| err.to_string())?;
    Ok(handle)
}

/// Parses a level or filter directive such as `info` or `qamd=debug`. sled's own log lines
/// are off unless the filter names sled: a damaged store is reported once, by qamd, in one line.
pub fn parse_filter(level: &str) -> Result<EnvFilter, String> {
    let invalid = |err: &dyn std::fmt::Display| format!("invalid log level `{level}`: {err}");
    let filter = EnvFilter::try_new(level).map_err(|err| invalid(&err))?;
    if level.contains("sled") {
        return Ok(filter);
    }
    let quiet_sled = "sled=off".parse().map_err(|err| invalid(&err))?;
    Ok(filter.add_directive(quiet_sled))
}
