//! qamd's command line (clap derive). Flags override the TOML config; the same definition
//! feeds the man page and shell completions.

use clap::Parser;
use std::path::PathBuf;

/// The qam credential daemon: one account for every service on a small host.
///
/// qamd owns every user's credentials (a username and an argon2id hash, nothing more) and
/// answers local services over a Unix socket: verify a password, does a user exist, look up
/// the public facts of an account. Services never see a hash. Administrators use qamctl(8).
///
/// Configuration is read from /etc/qam/qamd.toml (see the commented default shipped with the
/// package); command-line flags override it. SIGTERM stops qamd gracefully; SIGHUP reloads the
/// parts of the configuration that can change live. The wire protocol is described in
/// protocol.md.
#[derive(Debug, Parser)]
#[command(name = "qamd", version, about)]
pub struct Cli {
    /// TOML config file (default: /etc/qam/qamd.toml when it exists, else built-in defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Unix socket to listen on (default /run/qam/qamd.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Directory holding the account store (default /var/lib/qam).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Log level or tracing filter: error, warn, info, debug, trace.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Validate the configuration, print a summary and exit (0 valid, 1 invalid).
    #[arg(long)]
    pub check_config: bool,
}
