//! systemd integration: the listening sockets systemd passes by socket activation (matched by
//! FileDescriptorName=) and sd_notify messages (READY, STATUS, RELOADING, STOPPING).

use nix::sys::socket::{getsockopt, sockopt, SockType};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

/// FileDescriptorName= of qamd-saslauthd.socket, the saslauthd-compatible door.
pub const SASLAUTHD_FD_NAME: &str = "saslauthd";

/// A socket systemd passed that qamd cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("invalid socket activation environment (LISTEN_FDS/LISTEN_FDNAMES): {0}")]
    Environment(std::io::Error),
    #[error("the socket passed as `{name}` is not a listening Unix stream socket; check ListenStream= in its .socket unit")]
    NotAStreamListener { name: String },
    #[error("cannot use the socket passed as `{name}`: {source}")]
    Unusable {
        name: String,
        source: std::io::Error,
    },
}

/// The listeners systemd passed, by role; `None` means qamd binds that socket itself.
#[derive(Debug, Default)]
pub struct PassedSockets {
    /// The protocol socket (qamd.socket).
    pub main: Option<UnixListener>,
    /// The saslauthd-compatible door (qamd-saslauthd.socket).
    pub saslauthd: Option<UnixListener>,
}

/// The role a passed socket plays, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Main,
    Saslauthd,
}

/// `saslauthd` names the door; anything else (`qamd`, the unit name, or systemd's `unknown`
/// when no name was set) is the main socket.
fn role(name: &str) -> Role {
    match name {
        SASLAUTHD_FD_NAME => Role::Saslauthd,
        _ => Role::Main,
    }
}

impl PassedSockets {
    /// Takes the sockets passed to this process and clears `LISTEN_*` so nothing takes them
    /// twice. Call once from `main`, before the async runtime starts any thread.
    pub fn take() -> Result<PassedSockets, ActivationError> {
        // SAFETY: called from `main` before any other thread exists (the environment is only
        // changed while no other thread can read it).
        let fds = unsafe { sd_notify::listen_fds_with_names_and_unset_env() }
            .map_err(ActivationError::Environment)?;
        let mut passed = PassedSockets::default();
        for (raw, name) in fds {
            // SAFETY: systemd passed this descriptor to this very process (LISTEN_PID), the
            // environment naming it is now cleared, and nothing else in qamd refers to it.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let listener = stream_listener(fd, &name)?;
            let slot = match role(&name) {
                Role::Main => &mut passed.main,
                Role::Saslauthd => &mut passed.saslauthd,
            };
            if slot.is_some() {
                tracing::warn!(name, "ignoring a second passed socket for the same role");
                continue;
            }
            tracing::info!(name, "using the socket passed by systemd");
            *slot = Some(listener);
        }
        Ok(passed)
    }
}

/// Checks that `fd` is a listening stream socket and makes it ready for tokio (non-blocking).
fn stream_listener(fd: OwnedFd, name: &str) -> Result<UnixListener, ActivationError> {
    let unusable = |source| ActivationError::Unusable {
        name: name.to_owned(),
        source,
    };
    let stream =
        getsockopt(&fd, sockopt::SockType).map_err(|e| unusable(e.into()))? == SockType::Stream;
    let listening = getsockopt(&fd, sockopt::AcceptConn).map_err(|e| unusable(e.into()))?;
    if !stream || !listening {
        return Err(ActivationError::NotAStreamListener {
            name: name.to_owned(),
        });
    }
    let listener = UnixListener::from(fd);
    listener.set_nonblocking(true).map_err(unusable)?;
    Ok(listener)
}

/// Tells systemd that qamd serves requests now (Type=notify), with a status line.
pub fn notify_ready(status: &str) {
    send(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// Tells systemd a reload started; `notify_ready` ends it.
pub fn notify_reloading() {
    let mut states = vec![sd_notify::NotifyState::Reloading];
    // systemd 253+ wants the reload's start time (Type=notify-reload); older ones ignore it.
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// Tells systemd qamd is stopping (finishing requests, flushing the store).
pub fn notify_stopping(status: &str) {
    send(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// Sends when NOTIFY_SOCKET is set (a no-op otherwise); a failure is logged, never fatal.
fn send(states: &[sd_notify::NotifyState]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn only_the_door_names_select_the_doors() {
        assert_eq!(role("saslauthd"), Role::Saslauthd);
        for name in ["qamd", "qamd.socket", "unknown", ""] {
            assert_eq!(role(name), Role::Main, "{name}");
        }
    }

    #[test]
    fn a_listening_socket_is_accepted_and_made_non_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("s.sock")).unwrap();
        let listener = stream_listener(OwnedFd::from(listener), "qamd").unwrap();
        assert_eq!(
            listener.accept().unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn a_datagram_socket_is_refused() {
        let (one, _other) = UnixDatagram::pair().unwrap();
        assert!(matches!(
            stream_listener(OwnedFd::from(one), "qamd"),
            Err(ActivationError::NotAStreamListener { .. })
        ));
    }
}
