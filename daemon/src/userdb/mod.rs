//! The userdb door (`[nss] enabled`): qamd answers systemd's `io.systemd.UserDatabase` on a
//! socket in /run/systemd/userdb/, so nss-systemd shows qam accounts to getpwnam, id and sshd.
//!
//! Protocol (systemd's docs/USER_GROUP_API.md): Varlink, one JSON object per message ended by
//! a NUL byte; `GetUserRecord`, `GetGroupRecord` and `GetMemberships`, enumeration with
//! `more`. The socket is 0666 because every process resolves users; it serves public facts only.

mod directory;
mod server;
pub mod varlink;

use crate::config::{Config, NssConfig};
use crate::daemon::StartError;
use crate::served::Served;
use crate::shutdown::Shutdown;
use crate::socket;
use crate::state::State;
use crate::uids::SystemIds;
use directory::Directory;
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// Opens the door when `[nss] enabled`: the socket systemd passed (`FileDescriptorName=userdb`,
/// its service name read from its path), else `[nss] socket` bound 0666.
pub fn start(
    config: &Config,
    passed: Option<std::os::unix::net::UnixListener>,
    state: &Arc<State>,
    shutdown: Shutdown,
) -> Result<Served, StartError> {
    if !config.nss.enabled {
        if passed.is_some() {
            // Clients of a socket nobody answers would wait for their timeout on every lookup.
            return Err(StartError::UserdbDisabled);
        }
        return Ok(Served::nothing("userdb"));
    }
    let accounts = &state.accounts;
    accounts.uids().index_store(accounts.store())?;
    let shadowed = accounts.uids().shadowed(&SystemIds::read()?);
    if !shadowed.is_empty() {
        tracing::warn!(
            accounts = ?shadowed,
            "these accounts share a name or uid with /etc/passwd or /etc/group, whose entries win"
        );
    }
    let (std_listener, bound, service) = match passed {
        Some(listener) => {
            let service = passed_service(&listener).ok_or(StartError::UserdbName)?;
            (listener, None, service)
        }
        None => {
            let path = &config.nss.socket;
            let service = config.nss.service().ok_or(StartError::UserdbName)?;
            (
                socket::bind_public(path)?,
                Some(path.clone()),
                service.to_owned(),
            )
        }
    };
    let listener = socket::into_async(std_listener).map_err(StartError::Listen)?;
    tracing::info!(service = %service, "userdb socket open: accounts visible to the system");
    let directory = Directory::new(Arc::clone(state), config.nss.clone(), service);
    let door = server::Listener::new(listener, directory, config.idle_timeout());
    Ok(Served::new(
        tokio::spawn(door.run(shutdown)),
        bound,
        "userdb",
    ))
}

/// The variable nss-systemd reads for services it must not ask (a `:`-separated list).
pub const BYPASS_VARIABLE: &str = "SYSTEMD_BYPASS_USERDB";

/// Adds this door's service to `SYSTEMD_BYPASS_USERDB` in qamd's environment, so lookups qamd
/// itself makes (peer names and groups, the socket group) skip its own socket: a lookup
/// during start-up, before the door serves, would otherwise wait on itself. Call from `main`
/// before any thread exists.
pub fn bypass_own_service(nss: &NssConfig, passed: Option<&std::os::unix::net::UnixListener>) {
    if !nss.enabled {
        return;
    }
    let service = match passed {
        Some(listener) => passed_service(listener),
        None => nss.service().map(str::to_owned),
    };
    let Some(service) = service else { return };
    let value = match std::env::var(BYPASS_VARIABLE) {
        Ok(existing) if !existing.is_empty() => format!("{existing}:{service}"),
        _ => service,
    };
    std::env::set_var(BYPASS_VARIABLE, value);
}

/// The file name of the path a passed socket is bound to: the service name clients send.
fn passed_service(listener: &std::os::unix::net::UnixListener) -> Option<String> {
    let address: nix::sys::socket::UnixAddr =
        nix::sys::socket::getsockname(listener.as_raw_fd()).ok()?;
    Some(address.path()?.file_name()?.to_str()?.to_owned())
}
