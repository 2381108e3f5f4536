//! qamd's command line (clap derive). Flags override the TOML config; the same definition
//! feeds the man page and shell completions.

use clap::Parser;
use std::path::PathBuf;

/// qamd — the qam credential daemon: owns every user's password hash and answers
/// verify/lookup requests from local services over a Unix socket.
#[derive(Debug, Parser)]
#[command(name = "qamd", version, about, long_about = None)]
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
