//! qam-client: the wire types of qam's protocol and two clients for it, one blocking (std)
//! and one async (tokio, feature `tokio`), both speaking to qamd over its Unix socket.
//!
//! Every co-hosted service authenticates its users by asking qamd; it never sees a hash.
//!
//! ```no_run
//! use qam_client::{Client, ClientOptions, Password};
//!
//! # fn main() -> Result<(), qam_client::ClientError> {
//! let options = ClientOptions::new("/run/qam/qamd.sock");
//! let mut qam = Client::connect(&options)?;
//! let password = Password::from("correct horse battery staple");
//! if qam.verify("alice", &password)? {
//!     println!("welcome, alice");
//! } else {
//!     println!("wrong user name or password");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Any failure to reach the daemon is an error: callers must deny the login, never allow it.
//! The client checks with SO_PEERCRED that the socket is served by a trusted uid
//! ([`TrustedDaemon`]), so a squatter on the socket path cannot collect passwords.

pub mod blocking;
mod error;
mod ops;
mod ops_macro;
mod secret;
mod trust;
pub mod wire;

#[cfg(feature = "tokio")]
mod async_client;

#[cfg(feature = "tokio")]
pub use async_client::AsyncClient;
pub use blocking::Client;
pub use error::ClientError;
pub use secret::{ClientKey, Password};
pub use trust::{TrustedDaemon, UnknownDaemonUser, TRUSTED_ENV};
pub use wire::{ErrorCode, Request, WireError};

use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::time::Duration;

/// Where qamd listens when nothing else is said.
pub const DEFAULT_SOCKET: &str = "/run/qam/qamd.sock";

/// Environment variable naming the socket, honoured by qamctl and the adapters.
pub const SOCKET_ENV: &str = "QAM_SOCKET";

/// Longest answer line a client accepts (an `export` page of 1000 records fits easily).
pub const MAX_REPLY_LINE: usize = 16 * 1024 * 1024;

/// How to reach the daemon and whom to trust there.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Where qamd listens.
    pub socket: PathBuf,
    /// Bound on connecting and on each request's round trip.
    pub timeout: Duration,
    /// Whose socket this client sends passwords to (checked with SO_PEERCRED).
    pub trusted: TrustedDaemon,
}

impl ClientOptions {
    /// The given socket, a 5 s timeout, and the default trusted daemon uids
    /// (root, the `qam` user, this process's effective uid).
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        ClientOptions {
            socket: socket.into(),
            timeout: Duration::from_secs(5),
            trusted: TrustedDaemon::default_set(),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn with_trusted(mut self, trusted: TrustedDaemon) -> Self {
        self.trusted = trusted;
        self
    }
}

/// Decodes a raw answer line and checks it answers request `id`.
fn finish_call<T: DeserializeOwned>(id: u64, answer: Vec<u8>) -> Result<T, ClientError> {
    let (echoed, body) = wire::decode_reply::<T>(&answer)?;
    match echoed.and_then(|value| value.as_u64()) {
        Some(echoed) if echoed == id => Ok(body),
        _ => Err(ClientError::Protocol(format!(
            "answer does not echo request id {id}"
        ))),
    }
}

/// Checks that a read produced one whole answer line.
fn whole_answer(read: usize, answer: Vec<u8>) -> Result<Vec<u8>, ClientError> {
    if read == 0 {
        return Err(ClientError::Closed);
    }
    if answer.last() != Some(&b'\n') {
        return Err(ClientError::Protocol(
            "answer line too long or cut short".into(),
        ));
    }
    Ok(answer)
}

/// Maps the result of a `verify` call to accepted / denied; other errors stay errors.
fn verdict(result: Result<wire::NameInfo, ClientError>) -> Result<bool, ClientError> {
    match result {
        Ok(_) => Ok(true),
        Err(err) if err.code() == Some(ErrorCode::Denied) => Ok(false),
        Err(err) => Err(err),
    }
}
