//! qam-checkpassword: the DJB checkpassword interface, as Dovecot 2.3 uses it, in front of
//! qamd. Reads `login\0password\0…` from fd 3, asks qamd, and on success execs the reply program.
//!
//! Exit codes: 1 wrong password or unknown user, 2 misuse, 3 unknown user in lookup mode
//! (`AUTHORIZED=1`), 111 temporary failure (qamd unreachable or busy). On success the reply
//! program runs with `USER` set to the account's normalized name (and `AUTHORIZED=2` in lookup
//! mode, as Dovecot requires).

mod input;

use clap::Parser;
use qam_client::wire::{LookupInfo, NameInfo};
use qam_client::{Client, ClientError, ClientOptions, ErrorCode, Request, TrustedDaemon};
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;
use zeroize::Zeroizing;

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

/// The interface's exit codes for everything but success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Denied = 1,
    Misuse = 2,
    UnknownUser = 3,
    Temporary = 111,
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
    let name = match ask_qamd(cli, &credentials, lookup) {
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

/// Reads fd 3 to EOF, one byte past the limit so an over-long request is noticed.
fn read_fd3() -> Result<Zeroizing<Vec<u8>>, Refusal> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(input::MAX_INPUT + 1));
    std::fs::File::open("/dev/fd/3")
        .and_then(|fd3| {
            fd3.take(input::MAX_INPUT as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(|err| complain(Refusal::Misuse, &format!("cannot read fd 3: {err}")))?;
    Ok(bytes)
}

/// Verifies (or, in lookup mode, looks up) the user; the account's normalized name on success.
fn ask_qamd(cli: &Cli, credentials: &input::Credentials, lookup: bool) -> Result<String, Refusal> {
    let trusted = TrustedDaemon::from_env_or_default()
        .map_err(|err| complain(Refusal::Temporary, &err.to_string()))?;
    let options = ClientOptions::new(&cli.socket)
        .with_timeout(Duration::from_secs(cli.timeout))
        .with_trusted(trusted);
    let mut client = Client::connect(&options).map_err(|err| refusal_for(&err))?;
    let user = credentials.login.clone();
    if lookup {
        let info: LookupInfo = client
            .call(&Request::Lookup { user })
            .map_err(|err| refusal_for(&err))?;
        return info
            .account
            .map(|account| account.name)
            .ok_or(Refusal::UnknownUser);
    }
    let request = Request::Verify {
        user,
        password: credentials.password.clone(),
    };
    let info: NameInfo = client.call(&request).map_err(|err| refusal_for(&err))?;
    Ok(info.name)
}

/// Denials are quiet (Dovecot logs "Login failed" itself); everything else says why on stderr,
/// which Dovecot copies into its log.
fn refusal_for(err: &ClientError) -> Refusal {
    match err.code() {
        Some(ErrorCode::Denied) => Refusal::Denied,
        Some(ErrorCode::Throttled) => complain(Refusal::Denied, &err.to_string()),
        _ => complain(Refusal::Temporary, &err.to_string()),
    }
}

fn complain(refusal: Refusal, message: &str) -> Refusal {
    eprintln!("qam-checkpassword: {message}");
    refusal
}
