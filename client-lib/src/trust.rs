//! Which uids a client accepts as the daemon at the other end of the socket (SO_PEERCRED),
//! so a local user squatting the socket path cannot harvest passwords.

use nix::unistd::{Uid, User};
use std::os::fd::AsFd;

/// Environment variable naming the accepted daemon uids or user names, comma separated.
pub const TRUSTED_ENV: &str = "QAM_DAEMON_USERS";

/// The set of uids a client accepts as the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedDaemon {
    /// Uids accepted as the daemon's; any other peer is refused before a password is sent.
    uids: Vec<u32>,
}

impl TrustedDaemon {
    /// root, the `qam` system user if it exists, and the client's effective uid; or, when
    /// `QAM_DAEMON_USERS` is set, exactly the users it names. In a set-uid or set-gid
    /// program the variable comes from the invoking user and is ignored.
    pub fn from_env_or_default() -> Result<Self, UnknownDaemonUser> {
        if secure_execution() {
            return Ok(Self::default_set());
        }
        match std::env::var(TRUSTED_ENV) {
            Ok(list) if !list.trim().is_empty() => Self::from_names(&list),
            _ => Ok(Self::default_set()),
        }
    }

    /// root, the `qam` system user if it exists, and the client's effective uid: the
    /// identity the process acts as. In a set-uid host (su, passwd) the real uid is the
    /// invoking user, who must not be able to pose as the daemon.
    pub fn default_set() -> Self {
        let mut uids = vec![0, Uid::effective().as_raw()];
        if let Ok(Some(qam)) = User::from_name("qam") {
            uids.push(qam.uid.as_raw());
        }
        uids.sort_unstable();
        uids.dedup();
        TrustedDaemon { uids }
    }

    /// Parses a comma-separated list of user names or numeric uids.
    pub fn from_names(list: &str) -> Result<Self, UnknownDaemonUser> {
        let mut uids = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let uid = match entry.parse::<u32>() {
                Ok(uid) => uid,
                Err(_) => match User::from_name(entry) {
                    Ok(Some(user)) => user.uid.as_raw(),
                    _ => return Err(UnknownDaemonUser(entry.to_owned())),
                },
            };
            uids.push(uid);
        }
        Ok(TrustedDaemon { uids })
    }

    /// Exactly these uids.
    pub fn uids(uids: impl IntoIterator<Item = u32>) -> Self {
        TrustedDaemon {
            uids: uids.into_iter().collect(),
        }
    }

    pub fn accepts(&self, uid: u32) -> bool {
        self.uids.contains(&uid)
    }

    /// Reads the peer's uid from a connected Unix socket and checks it.
    pub fn check(&self, socket: &impl AsFd) -> Result<(), crate::ClientError> {
        let creds =
            nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::PeerCredentials)
                .map_err(|errno| crate::ClientError::Io(std::io::Error::from(errno)))?;
        let uid = creds.uid();
        if self.accepts(uid) {
            Ok(())
        } else {
            Err(crate::ClientError::UntrustedDaemon { uid })
        }
    }
}

/// True in a set-uid, set-gid or capability-raising program (the kernel's `AT_SECURE`), where
/// the environment belongs to a less privileged invoker.
fn secure_execution() -> bool {
    // SAFETY: getauxval only reads the process's auxiliary vector.
    unsafe { nix::libc::getauxval(nix::libc::AT_SECURE) != 0 }
}

/// A name in `QAM_DAEMON_USERS` that is neither a uid nor a known user.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{TRUSTED_ENV} names `{0}`, which is neither a uid nor a known user")]
pub struct UnknownDaemonUser(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_holds_root_and_self() {
        let trusted = TrustedDaemon::default_set();
        assert!(trusted.accepts(0));
        assert!(trusted.accepts(Uid::effective().as_raw()));
    }

    #[test]
    fn a_plain_test_process_is_not_secure_execution() {
        assert!(!secure_execution());
    }

    #[test]
    fn names_and_numbers_parse() {
        let trusted = TrustedDaemon::from_names("root, 4242").unwrap();
        assert!(trusted.accepts(0) && trusted.accepts(4242) && !trusted.accepts(1));
        assert!(TrustedDaemon::from_names("no-such-user-qam").is_err());
    }
}
