//! Where qam-extauth's log lines go: stderr under ejabberd, syslog in generic mode (whose
//! stderr is the peer's pty). Lines name operations and outcomes, never a password.

use std::io::Write;
use std::os::unix::net::UnixDatagram;

/// The log destination chosen at start.
pub enum Log {
    /// ejabberd passes its own stderr on to the program: lines end up in its log.
    Stderr,
    /// The local syslog socket (`/dev/log`), facility authpriv; `None` when absent.
    Syslog(Option<UnixDatagram>),
    /// Nowhere (tests).
    #[cfg(test)]
    Silent,
}

/// syslog facility authpriv (10) with severity warning (4).
const AUTHPRIV_WARNING: u8 = 10 * 8 + 4;

impl Log {
    /// Connects to `/dev/log`; a missing syslog only loses the lines.
    pub fn syslog() -> Log {
        let socket = UnixDatagram::unbound()
            .and_then(|socket| socket.connect("/dev/log").map(|()| socket))
            .ok();
        Log::Syslog(socket)
    }

    /// Writes one line; failures are ignored (logging must never break the protocol).
    pub fn line(&self, message: &str) {
        match self {
            Log::Stderr => {
                let _ = writeln!(std::io::stderr(), "qam-extauth: {message}");
            }
            Log::Syslog(Some(socket)) => {
                let line = format!(
                    "<{AUTHPRIV_WARNING}>qam-extauth[{}]: {message}",
                    std::process::id()
                );
                let _ = socket.send(line.as_bytes());
            }
            Log::Syslog(None) => {}
            #[cfg(test)]
            Log::Silent => {}
        }
    }
}
