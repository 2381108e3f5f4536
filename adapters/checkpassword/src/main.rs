//! qam-checkpassword: the DJB checkpassword interface, as Dovecot 2.3 uses it, in front of
//! qamd. Reads `login\0password\0…` from fd 3, asks qamd, and on success execs the reply program.
//!
//! Exit codes: 1 wrong password or unknown user, 2 misuse, 3 unknown user in lookup mode
//! (`AUTHORIZED=1`), 111 temporary failure (qamd unreachable or busy). On success the reply
//! program runs with `USER` set to the account's normalized name (and `AUTHORIZED=2` in lookup
//! mode, as Dovecot requires).

use clap::Parser;
use qam_checkpassword::{ask_qamd, complain, input, read_fd3, Refusal};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

/// Command line: options, then the reply program and its arguments (Dovecot appends the path
/// of `checkpassword-reply` to the words of `passdb { args = … }`).
#[derive(Parser)]
#[command(
    version,
    about = "checkpassword program for qam (Dovecot passdb/userdb checkpassword)"
)]
struct Cli {
    /// qamd's socket.
    #[arg(long, env = qam_client::SOCKET_ENV, default_value = qam_client::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Seconds to wait for qamd before answering 111 (temporary failure).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    timeout: u64,
    /// The program to exec on success, with its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    reply: Vec<OsString>,
}

fn main() -> ExitCode {
    // clap exits with 2 on a bad command line, which is the interface's "misuse" code.
    let cli = Cli::parse();
    let refusal = run(&cli);
    ExitCode::from(refusal as u8)
}

/// Only returns on failure: success replaces this process with the reply program.
fn run(cli: &Cli) -> Refusal {
    let credentials = match read_fd3().and_then(|bytes| {
        input::parse(&bytes).map_err(|err| complain(Refusal::Misuse, &err.to_string()))
    }) {
        Ok(credentials) => credentials,
        Err(refusal) => return refusal,
    };
    let lookup = std::env::var("AUTHORIZED").as_deref() == Ok("1");
    if !lookup && credentials.password.is_empty() {
        return Refusal::Denied;
    }
    let timeout = Duration::from_secs(cli.timeout);
    let name = match ask_qamd(&cli.socket, timeout, &credentials, lookup) {
        Ok(name) => name,
        Err(refusal) => return refusal,
    };
    let (program, args) = match cli.reply.split_first() {
        Some(split) => split,
        None => return Refusal::Misuse,
    };
    let mut reply = Command::new(program);
    reply.args(args).env("USER", &name);
    if lookup {
        reply.env("AUTHORIZED", "2");
    }
    let err = reply.exec();
    complain(
        Refusal::Temporary,
        &format!("cannot run the reply program: {err}"),
    )
}
