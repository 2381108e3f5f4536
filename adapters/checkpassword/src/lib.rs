//! qam-checkpassword as a library: the fd 3 request reader and the question to qamd, with the
//! interface's exit codes (used by main.rs, the fuzz targets and tests).

pub mod input;

use qam_client::wire::{LookupInfo, NameInfo};
use qam_client::{Client, ClientError, ClientOptions, ErrorCode, Password, Request, TrustedDaemon};
use std::path::Path;
use std::time::Duration;

/// The interface's exit codes for everything but success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Denied = 1,
    Misuse = 2,
    UnknownUser = 3,
    Temporary = 111,
}

/// Reads the request from fd 3 (see [`input::read`]); failing that is misuse.
pub fn read_fd3() -> Result<zeroize::Zeroizing<Vec<u8>>, Refusal> {
    std::fs::File::open("/dev/fd/3")
        .and_then(input::read)
        .map_err(|err| complain(Refusal::Misuse, &format!("cannot read fd 3: {err}")))
}

/// Verifies (or, in lookup mode, looks up) the user; the account's normalized name on success.
/// `timeout` bounds the whole exchange with qamd at `socket`.
pub fn ask_qamd(
    socket: &Path,
    timeout: Duration,
    credentials: &input::Credentials,
    lookup: bool,
) -> Result<String, Refusal> {
    let trusted = TrustedDaemon::from_env_or_default()
        .map_err(|err| complain(Refusal::Temporary, &err.to_string()))?;
    let options = ClientOptions::new(socket)
        .with_timeout(timeout)
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
    // Dovecot sets TCPREMOTEIP to the mail client's address: qamd throttles each apart, so a
    // stranger's guesses never lock the owner out of their own mail.
    let request = Request::Verify {
        user,
        password: credentials.password.clone(),
        client: std::env::var("TCPREMOTEIP").ok().map(Password::from),
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

/// Says why on stderr (Dovecot's log) and returns `refusal`.
pub fn complain(refusal: Refusal, message: &str) -> Refusal {
    eprintln!("qam-checkpassword: {message}");
    refusal
}
