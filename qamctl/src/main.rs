//! The `qamctl` binary: parses the command line and hands it to the `qamctl` library.
//! Usage errors exit 2 (clap's default); see `qamctl --help`.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    qamctl::run(qamctl::cli::Cli::parse())
}
