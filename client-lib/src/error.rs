//! `ClientError`: everything that can go wrong between a client and qamd, with messages that
//! tell a sysadmin what to fix. No variant ever carries a password.

use crate::wire::{ErrorCode, ReplyError, WireError};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to qamd at {path}: {source} (is qamd running, and may this user use its socket?)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the process serving the qamd socket runs as uid {uid}, which is not trusted (set {} to allow it)", crate::trust::TRUSTED_ENV)]
    UntrustedDaemon { uid: u32 },
    #[error("qamd did not answer in time")]
    Timeout,
    #[error("qamd closed the connection")]
    Closed,
    #[error("talking to qamd failed: {0}")]
    Io(std::io::Error),
    #[error("qamd's answer is not valid: {0}")]
    Protocol(String),
    #[error("{0}")]
    Server(WireError),
}

impl ClientError {
    /// The daemon's error code, when the daemon answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(err) => Some(err.code),
            _ => None,
        }
    }

    /// True when the daemon could not be reached or did not answer: callers deny and retry later.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::Timeout
                | ClientError::Closed
                | ClientError::Io(_)
                | ClientError::UntrustedDaemon { .. }
        )
    }

    /// After this error the connection's framing is unknown: it must not be used again.
    pub(crate) fn spends_connection(&self) -> bool {
        self.is_unavailable() || matches!(self, ClientError::Protocol(_))
    }

    pub(crate) fn from_io(err: std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ClientError::Timeout,
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionReset => ClientError::Closed,
            _ => ClientError::Io(err),
        }
    }
}

impl From<ReplyError> for ClientError {
    fn from(err: ReplyError) -> Self {
        match err {
            ReplyError::Server(wire) => ClientError::Server(wire),
            ReplyError::Malformed(text) => ClientError::Protocol(text),
        }
    }
}
