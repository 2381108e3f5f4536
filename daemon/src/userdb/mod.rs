//! The userdb door (`[nss] enabled`): qamd answers systemd's `io.systemd.UserDatabase` on
//! `[nss] socket`, which a symlink in /run/systemd/userdb/ names to nss-systemd.
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
use std::sync::Arc;

/// Opens the door when `[nss] enabled`: `[nss] socket` bound 0666 (a stale socket file
/// replaced), its file name the service name. Never a socket systemd passes: one systemd held
/// while qamd is down would make every lookup (each start of a service with `User=`) wait.
pub fn start(
    config: &Config,
    state: &Arc<State>,
    shutdown: Shutdown,
) -> Result<Served, StartError> {
    if !config.nss.enabled {
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
    let path = &config.nss.socket;
    let service = config
        .nss
        .service()
        .ok_or(StartError::UserdbName)?
        .to_owned();
    let std_listener = socket::bind_public(path)?;
    let listener = socket::into_async(std_listener).map_err(StartError::Listen)?;
    tracing::info!(service = %service, "userdb socket open: accounts visible to the system");
    let directory = Directory::new(Arc::clone(state), config.nss.clone(), service);
    let door = server::Listener::new(listener, directory, config.idle_timeout());
    Ok(Served::new(
        tokio::spawn(door.run(shutdown)),
        Some(path.clone()),
        "userdb",
    ))
}

/// The variable nss-systemd reads for services it must not ask (a `:`-separated list).
pub const BYPASS_VARIABLE: &str = "SYSTEMD_BYPASS_USERDB";

/// Adds this door's service to `SYSTEMD_BYPASS_USERDB` in qamd's environment, so lookups qamd
/// itself makes (peer names and groups, the socket group, names new accounts may take) skip
/// its own socket. Also with `[nss]` disabled: the package's link to the socket then dangles,
/// and where it is the only userdb entry (no systemd as PID 1) nss-systemd reports every group
/// lookup as failed, which would make every name count as the system's. Call from `main`
/// before any thread exists.
pub fn bypass_own_service(nss: &NssConfig) {
    let Some(service) = nss.service() else { return };
    let value = match std::env::var(BYPASS_VARIABLE) {
        Ok(existing) if !existing.is_empty() => format!("{existing}:{service}"),
        _ => service.to_owned(),
    };
    std::env::set_var(BYPASS_VARIABLE, value);
}
